//! `msxsync play` as a real process: started against a server, its output read line
//! by line (both pipes drained), killed on drop. And what every `msxsync` child of the
//! tests shares: it is killed when its test ends, however it ends, so no test leaves a
//! process behind (a `msxsync play` takes the openMSX it started with it).

use super::e2e::World;
use super::lines::{wait_exit, Lines, DEADLINE};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running `msxsync play` whose output is read line by line.
pub struct Play {
    pub child: Child,
    pub out: Lines,
}

impl Play {
    /// `msxsync play --headless --name tester` on the world's server, with the ROM
    /// cache in `cache`, plus `extra` (which holds `--game`).
    pub fn start(world: &World, cache: &Path, extra: &[&str]) -> Play {
        Play::start_at(&world.server.addr().to_string(), cache, extra)
    }

    /// `play --game testgame` on the world's server, and the pid of the openMSX it
    /// started.
    pub fn testgame(world: &World, cache: &Path) -> (Play, i32) {
        let mut play = Play::start(world, cache, &["--game", "testgame"]);
        let msx = play.openmsx_pid();
        (play, msx)
    }

    /// The same on the server at `server`.
    pub fn start_at(server: &str, cache: &Path, extra: &[&str]) -> Play {
        Play::start_as(server, "tester", cache, extra)
    }

    /// The same as the player called `name`.
    pub fn start_as(server: &str, name: &str, cache: &Path, extra: &[&str]) -> Play {
        let mut child = msxsync_command()
            .args(["play", "--headless", "--name", name, "--server", server])
            .args(extra)
            .env("MSXSYNC_CACHE_DIR", cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msxsync play starts");
        let out = Lines::capture(&mut child);
        Play { child, out }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The first output line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.out.wait_for(needle)
    }

    /// Waits for the process to end by itself; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let code = wait_exit(&mut self.child).code().unwrap_or(-1);
        self.out.all();
        code
    }

    /// Waits for the process to end by itself (killing it after [`DEADLINE`]); returns
    /// its exit code (-1 when it had to be killed) and the most memory it ever had
    /// resident, in KiB.
    pub fn wait_exit_and_peak_kib(&mut self) -> (i32, u64) {
        let pid = self.child.id() as libc::pid_t;
        let deadline = Instant::now() + DEADLINE;
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: pid is our own child, not yet reaped (std's Child never waited).
            let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if got == pid {
                break;
            }
            assert!(got == 0, "wait4 failed");
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.out.all();
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, usage.ru_maxrss as u64)
    }

    /// The pid of the openMSX it started, from its "openMSX started (pid N)" line.
    pub fn openmsx_pid(&mut self) -> i32 {
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

/// Sends signal `sig` (e.g. "INT", "TERM") to a process.
pub fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Whether a process runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: i32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{path} has no VmRSS line"))
}
