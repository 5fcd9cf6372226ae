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
        Serve::start_limited(games, state, extra, None)
    }

    /// [`Serve::start`], with the server's limit on open files (soft and hard) set to
    /// `files` when given, as on a machine with a low `ulimit -n`.
    pub fn start_limited(games: &Path, state: &Path, extra: &[&str], files: Option<u64>) -> Serve {
        let port: &[&str] = if extra.contains(&"--port") {
            &[]
        } else {
            &["--port", "0"]
        };
        let mut command = super::play::msxsync_command();
        if let Some(files) = files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and only touches the child.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: files,
                        rlim_max: files,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
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

    /// The server's resident memory now and at its peak (VmRSS, VmHWM), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status is readable");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .expect("a memory field in /proc status")
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
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

/// A real `msxsync serve` of the test game alone, from a games folder of its own, with
/// a state folder and a ROM cache for its players: for tests that kill and restart it.
pub struct TestgameServer {
    pub games: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    pub serve: Serve,
}

impl TestgameServer {
    /// Starts it on a free port.
    pub fn start() -> TestgameServer {
        let games = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        super::e2e::games_folder(games.path());
        let serve = Serve::start(games.path(), state.path(), &[]);
        TestgameServer {
            games,
            state,
            cache,
            serve,
        }
    }

    /// Options for a player `name` of the test game on it.
    pub fn options(&self, name: &str) -> msxsync::play::PlayOptions {
        super::e2e::player_options(&self.serve.addr, "testgame", name, self.cache.path())
    }

    /// Kills the server with SIGKILL (see [`Serve::kill9`]).
    pub fn kill9(&mut self) {
        let _ = self.serve.child.kill();
        let _ = self.serve.child.wait();
    }

    /// Starts another `msxsync serve` of the same folders on the same port, plus
    /// `extra` (once this one was killed).
    pub fn restart(&self, extra: &[&str]) -> Serve {
        let port = self.serve.port().to_string();
        let mut args = vec!["--port", &port];
        args.extend_from_slice(extra);
        Serve::start(self.games.path(), self.state.path(), &args)
    }
}
