//! Timestamps of a change's hops, for the latency benchmark (docs/benchmarks.md).
//!
//! With `MSXSYNC_HOP_LOG=FILE` in the environment, `play` and `serve` append one line per
//! step a change takes through them to FILE: `MICROSECONDS PID WHAT`, the time read from
//! the system's real-time clock, the one openMSX's `clock microseconds` reads, so that
//! the lines of several processes and the emulators' own timestamps line up. Without the
//! variable nothing is written and each call costs one check of a set-once flag.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

static LOG: OnceLock<Option<Mutex<File>>> = OnceLock::new();

fn file() -> Option<&'static Mutex<File>> {
    LOG.get_or_init(|| {
        let path = std::env::var_os("MSXSYNC_HOP_LOG")?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

/// Whether hop lines are written (the variable is set and the file could be opened).
pub fn enabled() -> bool {
    file().is_some()
}

/// Microseconds since the Unix epoch on the real-time clock.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The SEQ of a push from the openMSX hooks (`TOKEN SEQ ...`), by which the benchmark
/// follows it; "-" when it has none.
pub fn push_seq(value: &str) -> &str {
    value.split_whitespace().nth(1).unwrap_or("-")
}

/// Appends `MICROSECONDS PID WHAT` when hop logging is on. One `write` per line on a
/// file opened for appending, so lines of several processes do not mix.
pub fn log(what: std::fmt::Arguments) {
    if let Some(f) = file() {
        let line = format!("{} {} {what}\n", now_us(), std::process::id());
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
