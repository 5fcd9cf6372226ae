//! `msxsync play` as a child process, and a second control connection to its openMSX.

use crate::sys::{alive, msxsync_exe, signal, stop_child};
use anyhow::{anyhow, bail, Context, Result};
use msxsync::openmsx::OpenMsx;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `msxsync play --headless` process.
pub struct PlayProcess {
    child: Child,
    /// When the process was spawned.
    pub spawned: Instant,
    lines: Receiver<(Instant, String)>,
    /// Lines seen so far, with when they arrived.
    pub seen: Vec<(Instant, String)>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    openmsx_pid: Option<u32>,
}

impl PlayProcess {
    /// Starts `msxsync play` for `game` on `server` on C-BIOS_MSX1 with its own ROM
    /// cache folder.
    pub fn start(
        server: &str,
        game: &str,
        name: &str,
        cache_dir: &Path,
        join_now: bool,
    ) -> Result<PlayProcess> {
        Self::start_on("C-BIOS_MSX1", server, game, name, cache_dir, join_now, None)
    }

    /// Like [`PlayProcess::start`] on `machine`; with `hop_log`, the process appends
    /// its hop timestamps there (MSXSYNC_HOP_LOG).
    pub fn start_on(
        machine: &str,
        server: &str,
        game: &str,
        name: &str,
        cache_dir: &Path,
        join_now: bool,
        hop_log: Option<&Path>,
    ) -> Result<PlayProcess> {
        let mut cmd = Command::new(msxsync_exe());
        cmd.args(["play", "--headless", "--machine", machine])
            .args(["--game", game, "--server", server, "--name", name])
            .arg("--cache-dir")
            .arg(cache_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if join_now {
            cmd.arg("--join-now");
        }
        if let Some(log) = hop_log {
            cmd.env("MSXSYNC_HOP_LOG", log);
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} play", msxsync_exe()))?;
        let stdout = child.stdout.take().context("play stdout missing")?;
        let stderr = child.stderr.take().context("play stderr missing")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let tail: Arc<Mutex<Vec<String>>> = Arc::default();
        let t = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut t) = t.lock() {
                    t.push(line);
                    let n = t.len();
                    if n > 20 {
                        t.drain(..n - 20);
                    }
                }
            }
        });
        Ok(PlayProcess {
            child,
            spawned,
            lines: rx,
            seen: Vec::new(),
            stderr_tail: tail,
            openmsx_pid: None,
        })
    }

    /// The `msxsync play` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr last, for error messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.join(" / "))
            .unwrap_or_default()
    }

    /// Takes the lines printed so far (non-blocking).
    pub fn pump(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// When a line containing `text` was printed, if it was.
    pub fn line_time(&mut self, text: &str) -> Option<Instant> {
        self.pump();
        self.seen
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, _)| *t)
    }

    /// Waits for "openMSX started (pid N)" and returns N.
    pub fn wait_openmsx_pid(&mut self, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.seen.iter().find_map(|(_, l)| {
                l.split_once("openMSX started (pid ")
                    .and_then(|(_, r)| r.trim_end_matches(')').parse::<u32>().ok())
            }) {
                self.openmsx_pid = Some(pid);
                return Ok(pid);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "msxsync play did not start openmsx within {timeout:?}; it said: {}",
                        self.stderr_tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("msxsync play exited early: {}", self.stderr_tail())
                }
            }
        }
    }

    /// A control connection of our own to the player's openMSX (through its socket),
    /// for reading RAM and poking the test game's mailbox.
    pub async fn attach(&mut self, timeout: Duration) -> Result<OpenMsx> {
        let pid = self.wait_openmsx_pid(timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            match OpenMsx::attach(&pid.to_string()).await {
                Ok(m) => return Ok(m),
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow!(e).context(format!("attaching to openmsx {pid}")))
                }
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

impl Drop for PlayProcess {
    fn drop(&mut self) {
        // SIGTERM lets play leave the game and stop its openMSX; then make sure.
        stop_child(&mut self.child, Duration::from_secs(4));
        if let Some(pid) = self.openmsx_pid {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if alive(pid) && comm.trim() == "openmsx" {
                signal(pid, "KILL");
            }
        }
    }
}
