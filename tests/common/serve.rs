//! `msxsync serve` as a real process: started with arguments, its output read line by
//! line (both pipes drained, so it can never block on a full pipe), killed on drop.

use super::lines::Lines;
use std::path::Path;
use std::process::{Child, Stdio};

/// A running `msxsync serve`.
pub struct Serve {
    pub child: Child,
    /// Its output.
    pub out: Lines,
    /// The address it printed ("listening on ADDR").
    pub addr: String,
}

impl Serve {
    /// Starts `msxsync serve --games GAMES --state-dir STATE --bind 127.0.0.1` plus
    /// `extra` (which may hold `--port`; port 0 otherwise).
    pub fn start(games: &Path, state: &Path, extra: &[&str]) -> Serve {
        let port: &[&str] = if extra.contains(&"--port") {
            &[]
        } else {
            &["--port", "0"]
        };
        let mut child = super::process::msxsync_command()
            .arg("serve")
            .arg("--games")
            .arg(games)
            .arg("--state-dir")
            .arg(state)
            .args(["--bind", "127.0.0.1"])
            .args(port)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msxsync serve starts");
        let mut out = Lines::capture(&mut child);
        let listening = out.wait_for("listening on ");
        let addr = listening
            .trim_start_matches("listening on ")
            .trim()
            .to_string();
        Serve { child, out, addr }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The first output line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.out.wait_for(needle)
    }

    /// Every line of output, once the process has exited.
    pub fn all_output(&mut self) -> Vec<String> {
        self.out.all()
    }

    /// Kills it the hard way (SIGKILL): nothing gets saved on the way out.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
