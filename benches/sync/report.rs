//! Results of one bench section: table rows for the terminal and the markdown page,
//! free-text notes (why a target was missed and what would fix it), and JSON.

use crate::json::Json;

/// One line of a results table.
pub struct Row {
    /// What was measured.
    pub what: String,
    /// The figure, formatted with its unit.
    pub value: String,
    /// The target, or "" when there is none.
    pub target: String,
    /// Whether the target was met; `None` without a target.
    pub met: Option<bool>,
}

impl Row {
    /// A row without a target.
    pub fn info(what: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            what: what.into(),
            value: value.into(),
            target: String::new(),
            met: None,
        }
    }

    /// A row with a target and whether it was met.
    pub fn target(
        what: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) -> Row {
        Row {
            what: what.into(),
            value: value.into(),
            target: target.into(),
            met: Some(met),
        }
    }

    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        }
    }
}

/// The outcome of one section.
pub struct Section {
    /// Key in results.json, e.g. "latency".
    pub key: &'static str,
    /// Heading, e.g. "1. End-to-end latency".
    pub title: &'static str,
    /// How it was measured (markdown).
    pub method: String,
    /// The figures.
    pub rows: Vec<Row>,
    /// Observations, and for every missed target why and what would fix it (markdown).
    pub notes: Vec<String>,
    /// Machine-readable figures.
    pub json: Json,
}

impl Section {
    /// A section that could not run, with the reason (e.g. openMSX missing).
    pub fn failed(key: &'static str, title: &'static str, why: String) -> Section {
        Section {
            key,
            title,
            method: String::new(),
            rows: vec![Row::info("not measured", why.clone())],
            notes: Vec::new(),
            json: Json::obj().with("error", why),
        }
    }

    /// The table for the terminal.
    pub fn terminal(&self) -> String {
        let mut out = format!("\n{}\n", self.title);
        let w0 = self.rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
        for r in &self.rows {
            let tgt = if r.target.is_empty() {
                String::new()
            } else {
                format!("  (target {}: {})", r.target, r.verdict())
            };
            out.push_str(&format!(
                "  {:<w0$}  {:>w1$}{}\n",
                r.what,
                r.value,
                tgt,
                w0 = w0,
                w1 = w1
            ));
        }
        out
    }

    /// The markdown for docs/benchmarks.md.
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        if !self.method.is_empty() {
            out.push_str(self.method.trim());
            out.push_str("\n\n");
        }
        out.push_str("| Measured | Value | Target | |\n|---|---:|---|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.what,
                r.value,
                r.target,
                r.verdict()
            ));
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(&format!("- {}\n", n.trim()));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// Milliseconds with two decimals.
pub fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

/// Microseconds with one decimal.
pub fn us(v: f64) -> String {
    format!("{v:.1} µs")
}
