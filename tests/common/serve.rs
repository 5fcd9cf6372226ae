//! `msxsync serve` as a real process: started with arguments, its output read line by
//! line (both pipes drained, so it can never block on a full pipe), killed on drop.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long to wait for a line of output.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `msxsync serve`.
pub struct Serve {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_msxsync"))
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
        let (tx, lines) = mpsc::channel::<String>();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut serve = Serve {
            child,
            lines,
            seen: Vec::new(),
            addr: String::new(),
        };
        let listening = serve.wait_for("listening on ");
        serve.addr = listening
            .trim_start_matches("listening on ")
            .trim()
            .to_string();
        serve
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The next output line containing `needle` (earlier lines included).
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output so far: {:#?}", self.seen),
            }
        }
    }

    /// Every line of output, once the process has exited and its pipes are drained.
    pub fn all_output(&mut self) -> Vec<String> {
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        self.seen.clone()
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
