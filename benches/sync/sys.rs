//! The machine and its processes: CPU and openMSX facts for the report, /proc readings,
//! and `msxsync serve` as a child process.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `msxsync` executable cargo built for this bench.
pub fn msxsync_exe() -> &'static str {
    env!("CARGO_BIN_EXE_msxsync")
}

/// Facts about the machine, for the report.
pub struct MachineInfo {
    /// Logical CPUs (`nproc`).
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// `openmsx_info version`-style text from `openmsx -v`.
    pub openmsx: String,
    /// UTC date and time of the run.
    pub date: String,
    /// Kernel release.
    pub kernel: String,
}

/// Reads the facts; missing ones become "unknown".
pub fn machine_info() -> MachineInfo {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let run = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let openmsx = run("openmsx", &["-v"])
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_else(|| "openMSX not found".into());
    let date = run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown".into());
    let kernel = run("uname", &["-r"]).unwrap_or_else(|| "unknown".into());
    MachineInfo {
        nproc,
        cpu,
        openmsx,
        date,
        kernel,
    }
}

/// Asks for a higher scheduling priority for this process and the children it starts
/// from now on (`renice -n -10`, which needs root or CAP_SYS_NICE). On a machine shared
/// with other work the measured programs then get the CPU when they need it, as they
/// would on a player's machine. Returns the niceness in effect afterwards.
pub fn raise_priority() -> i32 {
    let me = std::process::id().to_string();
    let _ = Command::new("renice")
        .args(["-n", "-10", "-p", &me])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(')')?;
            // Field 19 (1-based) is the nice value; `rest` starts at field 3.
            rest.split_whitespace().nth(16)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages (/proc/loadavg), as written there.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Clock ticks per second of /proc/PID/stat times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time (user + system) a process used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("{path}: no ')' after the command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let num = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("{path}: field {i} missing or not a number"))
    };
    Ok((num(14)? + num(15)?) / clock_ticks())
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("{path}: no VmHWM line"))?;
    Ok(kb * 1024)
}

/// Sends a signal with kill(1) (no libc dependency); errors are ignored because the
/// process may have ended by itself.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether a process (not a zombie) with this id exists.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// Ends a child politely (SIGTERM), then by force after `grace`, and reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `msxsync serve` running as its own process on 127.0.0.1 (port chosen by the OS).
pub struct ServeProcess {
    child: Child,
    /// The server's own state folder, so that nothing leaks between runs or into the
    /// user's saved games.
    _state: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl ServeProcess {
    /// Starts the server on the games in `games_dir` and waits for "listening on".
    pub fn start(games_dir: &Path) -> Result<ServeProcess> {
        ServeProcess::start_with(games_dir, &[], None)
    }

    /// [`ServeProcess::start`] with more `serve` arguments (limits, for instance); with
    /// `hop_log`, the server appends its hop timestamps there (MSXSYNC_HOP_LOG).
    pub fn start_with(
        games_dir: &Path,
        extra: &[&str],
        hop_log: Option<&Path>,
    ) -> Result<ServeProcess> {
        let state = tempfile::tempdir().context("creating a state folder for the server")?;
        let mut cmd = Command::new(msxsync_exe());
        if let Some(log) = hop_log {
            cmd.env("MSXSYNC_HOP_LOG", log);
        }
        let mut child = cmd
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--fresh",
                "--games",
            ])
            .arg(games_dir)
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} serve", msxsync_exe()))?;
        let stdout = child.stdout.take().context("serve stdout missing")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout for the server's whole life so it never blocks.
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        let _ = tx.send(a.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => Ok(ServeProcess {
                child,
                _state: state,
                addr,
            }),
            Err(_) => {
                stop_child(&mut child, Duration::from_secs(1));
                bail!("msxsync serve did not print its address within 20 s")
            }
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// Self-checks run by `cargo test --benches`.
pub fn self_check() {
    let me = std::process::id();
    assert!(cpu_seconds(me).is_ok_and(|s| s >= 0.0));
    assert!(peak_rss(me).is_ok_and(|b| b > 0));
    assert!(alive(me));
}
