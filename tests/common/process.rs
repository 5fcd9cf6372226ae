//! Child processes: `msxsync` as a person runs it (`play` with its output read line by
//! line), signals, liveness and memory from /proc. Every child is killed when its test
//! ends, however it ends, so no test leaves a process behind (a `msxsync play` takes the
//! openMSX it started with it).

use super::lines::{wait_exit, Lines};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A command running the `msxsync` that cargo built for the tests. The child is killed
/// when the thread that starts it (the test's) ends, even if the test process is killed
/// without running any Drop.
pub fn msxsync_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_msxsync"));
    msxsync::openmsx::connection::die_with_parent(&mut cmd);
    cmd
}

/// Kills a child process when the test ends, however it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `msxsync play --headless`.
pub struct Play {
    pub child: Child,
    /// Its output.
    pub out: Lines,
}

impl Play {
    /// Starts `msxsync play --headless --name NAME --server SERVER` plus `extra`, with
    /// `cache` as its ROM cache.
    pub fn start(server: &str, name: &str, cache: &Path, extra: &[&str]) -> Play {
        let mut child = msxsync_command()
            .args(["play", "--headless", "--name", name, "--server", server])
            .args(extra)
            .env("MSXSYNC_CACHE_DIR", cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msxsync play starts");
        let out = Lines::capture(&mut child);
        Play { child, out }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first output line containing `needle`, waiting for it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.out.wait_for(needle)
    }

    /// Waits for the process to end by itself; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let code = wait_exit(&mut self.child).code().unwrap_or(-1);
        self.out.all();
        code
    }

    /// The pid of the openMSX it started, from its "openMSX started (pid N)" line.
    pub fn openmsx_pid(&mut self) -> u32 {
        let line = self.wait_for("openMSX started (pid ");
        line.rsplit("pid ")
            .next()
            .and_then(|p| p.trim_end_matches(')').parse().ok())
            .expect("a pid")
    }
}

impl Drop for Play {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `sig` (e.g. "INT", "TERM") to process `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{path} has no VmRSS line"))
}
