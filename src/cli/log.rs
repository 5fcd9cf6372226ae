//! Logging: how the library's `tracing` events reach the terminal.
//!
//! The level comes from `-v`/`-q` (info by default), `MSXSYNC_TRACE=1` (trace, kept from
//! before the flags existed) or, taking precedence over both, `RUST_LOG` (for example
//! `RUST_LOG=msxsync::server=debug`).

use msxsync::text::printable;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How a command's events look and where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `play`: plain lines on stdout, the player's running commentary.
    Player,
    /// `serve`: lines starting with the time on stderr, for a log that runs for days.
    Server,
    /// `list` and `check`: plain lines on stderr, apart from the result on stdout.
    Tool,
}

/// Installs the subscriber for the whole process. `verbosity` is the number of `-v`
/// minus the number of `-q`.
pub fn init(verbosity: i16, style: Style) {
    let filter = filter(
        verbosity,
        std::env::var("RUST_LOG").ok(),
        std::env::var_os("MSXSYNC_TRACE").is_some_and(|v| v == "1"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(Lines {
            time: style == Style::Server,
        });
    // Fails only when a subscriber is already installed, which then stays.
    let _ = match style {
        Style::Player => builder.with_writer(std::io::stdout).try_init(),
        Style::Server | Style::Tool => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// `RUST_LOG` when it is set; otherwise msxsync's events from the level `verbosity`
/// gives (`trace` raises it to trace) and other crates' warnings.
fn filter(verbosity: i16, rust_log: Option<String>, trace: bool) -> EnvFilter {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        return EnvFilter::new(directives);
    }
    let verbosity = if trace { verbosity.max(2) } else { verbosity };
    let level = match verbosity {
        ..=-2 => Level::ERROR,
        -1 => Level::WARN,
        0 => Level::INFO,
        1 => Level::DEBUG,
        _ => Level::TRACE,
    };
    EnvFilter::new(format!("warn,msxsync={level}"))
}

/// One line per event: the time (when asked for), the level unless it is info (a
/// player's lines read as they always did), then the message through [`printable`].
struct Lines {
    time: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.time {
            SystemTime.format_time(&mut w)?;
            w.write_char(' ')?;
        }
        match *event.metadata().level() {
            Level::INFO => {}
            Level::WARN => w.write_str("warning: ")?,
            level => write!(w, "{}: ", level.as_str().to_ascii_lowercase())?,
        }
        // Messages quote names, titles, reasons and openMSX's log: the line goes out
        // through the one terminal filter.
        let mut line = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut line), event)?;
        w.write_str(&printable(&line))?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What `events` prints with the given settings.
    fn output(verbosity: i16, trace: bool, time: bool, events: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(verbosity, None, trace))
            .event_format(Lines { time })
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn every_level() {
        tracing::error!("e");
        tracing::warn!("w");
        tracing::info!("joined demo");
        tracing::debug!("d");
        tracing::trace!("t");
    }

    #[test]
    fn info_lines_are_plain_and_other_levels_say_their_level() {
        assert_eq!(
            output(0, false, false, every_level),
            "error: e\nwarning: w\njoined demo\n"
        );
        assert_eq!(
            output(2, false, false, every_level),
            "error: e\nwarning: w\njoined demo\ndebug: d\ntrace: t\n"
        );
    }

    #[test]
    fn quiet_and_verbose_move_the_level() {
        assert_eq!(
            output(-1, false, false, every_level),
            "error: e\nwarning: w\n"
        );
        assert_eq!(output(-2, false, false, every_level), "error: e\n");
        assert!(output(1, false, false, every_level).ends_with("debug: d\n"));
        // MSXSYNC_TRACE=1 is -vv, even with -q.
        assert!(output(-1, true, false, every_level).ends_with("trace: t\n"));
    }

    #[test]
    fn text_from_outside_is_escaped() {
        let out = output(0, false, false, || {
            tracing::info!("{} joined the game", "ann\u{9b}2J\u{202e}x\u{1b}[2J");
            tracing::warn!(reason = "a\nb", "refused");
        });
        assert!(
            !out.trim_end().chars().any(|c| c.is_control() && c != '\n'),
            "{out:?}"
        );
        assert!(out.starts_with("ann\\u{9b}2J\\u{202e}x\\"), "{out:?}");
        assert!(
            out.ends_with("\nwarning: refused reason=\"a\\nb\"\n"),
            "{out:?}"
        );
    }

    #[test]
    fn server_lines_start_with_the_time() {
        let out = output(0, false, true, || tracing::warn!("cannot save"));
        // e.g. 2025-01-31T12:34:56.789012Z warning: cannot save
        let (time, rest) = out.split_once(' ').unwrap();
        assert!(
            time.len() > 19 && time.ends_with('Z') && time.contains('T'),
            "{out}"
        );
        assert_eq!(rest, "warning: cannot save\n");
    }

    #[test]
    fn rust_log_takes_precedence() {
        let f = filter(-2, Some("msxsync=debug".into()), false);
        assert_eq!(f.to_string(), "msxsync=debug");
        assert_eq!(
            filter(0, Some(" ".into()), false).to_string(),
            filter(0, None, false).to_string()
        );
    }
}
