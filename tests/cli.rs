//! `msxsync play` as a person runs it: a real process against a real server, with
//! headless openMSX. Ctrl-C, closing openMSX, the ROM cache, and the errors a player
//! meets first.

mod common;

use common::e2e::World;
use common::require_openmsx;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `msxsync play` whose output is read line by line.
struct Play {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Play {
    fn start(world: &World, cache: &std::path::Path, extra: &[&str]) -> Play {
        let mut child = Command::new(env!("CARGO_BIN_EXE_msxsync"))
            .args(["play", "--headless", "--name", "tester", "--server"])
            .arg(world.server.addr().to_string())
            .args(extra)
            .env("MSXSYNC_CACHE_DIR", cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msxsync play starts");
        let (tx, lines) = mpsc::channel();
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
        Play {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; output: {:#?}", self.seen),
            }
        }
    }

    /// Waits for the process to end by itself; returns its exit code.
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "msxsync play did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the openMSX it started, from its "openMSX started (pid N)" line.
    fn openmsx_pid(&mut self) -> i32 {
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

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn ctrl_c_leaves_the_game_stops_openmsx_and_the_cache_saves_a_download() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let mut first = Play::start(&world, cache.path(), &["--game", "testgame"]);
    first.wait_for("downloaded the rom");
    let msx = first.openmsx_pid();
    first.wait_for("syncing testgame");
    signal(first.child.id() as i32, "INT");
    assert_eq!(first.wait_exit(), 0, "output: {:#?}", first.seen);
    first.wait_for("interrupted: left the game and stopped openMSX");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(msx) {
        assert!(
            Instant::now() < deadline,
            "openMSX {msx} outlived msxsync play"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second start takes the ROM from the cache.
    let mut second = Play::start(&world, cache.path(), &["--game", "testgame"]);
    second.wait_for("from the cache");
    second.wait_for("syncing testgame");
    assert!(!second.seen.iter().any(|l| l.contains("downloaded")));
}

#[test]
fn closing_openmsx_ends_play_with_success() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start(&world, cache.path(), &["--game", "testgame"]);
    let msx = play.openmsx_pid();
    play.wait_for("syncing testgame");
    // What closing the window does: openMSX quits.
    signal(msx, "TERM");
    assert_eq!(play.wait_exit(), 0, "output: {:#?}", play.seen);
    play.wait_for("openMSX closed: left the game");
}

#[test]
fn an_unknown_game_lists_the_server_s_games() {
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start(&world, cache.path(), &["--game", "galiuos"]);
    assert_ne!(play.wait_exit(), 0);
    let err = play.wait_for("error");
    assert!(err.contains("galiuos") && err.contains("testgame"), "{err}");
}

#[test]
fn a_missing_openmsx_says_how_to_install_it() {
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start(
        &world,
        cache.path(),
        &["--game", "testgame", "--openmsx", "/nonexistent/openmsx"],
    );
    assert_ne!(play.wait_exit(), 0);
    let err = play.wait_for("error");
    assert!(
        err.contains("openmsx not found") && err.contains("apt install openmsx cbios"),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Port 9 on loopback: nothing listens there in a test machine.
    let out = Command::new(env!("CARGO_BIN_EXE_msxsync"))
        .args(["play", "--game", "demo", "--server", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to server 127.0.0.1:9"),
        "{err}"
    );
}
