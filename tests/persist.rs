//! The server keeps each game's shared state across restarts: real `msxsync serve`
//! processes on 127.0.0.1 (port 0) with a state folder, killed with SIGKILL or stopped
//! with SIGTERM, and the library server's final save.

mod common;

use common::change;

use common::lines::wait_exit;
use common::play::{msxsync_command, KillOnDrop};
use common::serve::Serve;
use msxsync::catalog::{self, Game};
use msxsync::client::{self, Client};
use msxsync::delta::Change;
use msxsync::protocol::Joined;
use msxsync::server::persist::{self, Saved};
use msxsync::server::{self, ServerConfig};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every step finishes well within this; hitting it means a hang.
const DEADLINE: Duration = common::TIMEOUT;

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(DEADLINE).await;
        panic!("test did not finish within {DEADLINE:?}");
    }))
}

/// Writes game `name` into `dir`: a 16 KiB ROM and two regions (8 and 256 bytes).
fn write_game(dir: &Path, name: &str, regions: &str) -> PathBuf {
    let rom: Vec<u8> = (0..16384u32).map(|i| (i * 13) as u8).collect();
    std::fs::write(dir.join(format!("{name}.rom")), rom).unwrap();
    let path = dir.join(format!("{name}.regions"));
    std::fs::write(&path, format!("{name}.rom\ntitle: {name}\n{regions}")).unwrap();
    path
}

const DEMO_REGIONS: &str = "e000 e007 items\nc000 c0ff map\n";

/// A folder with the game "demo".
fn games_dir() -> (tempfile::TempDir, Game) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_game(dir.path(), "demo", DEMO_REGIONS);
    let game = catalog::load_game(&path).unwrap();
    (dir, game)
}

async fn join(server: &str, name: &str) -> (Client, Joined) {
    let mut c = client::connect(server, name).await.expect("connects");
    let j = c.join("demo").await.expect("joins");
    (c, j)
}

/// The saved state in `dir` for game "demo", if its file decodes.
fn saved(dir: &Path) -> Option<Saved> {
    let file = std::fs::read(dir.join("demo.state")).ok()?;
    persist::decode(&file).ok()
}

/// Polls until the saved state of "demo" satisfies `ok`; returns it.
fn wait_saved(dir: &Path, ok: impl Fn(&Saved) -> bool) -> Saved {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = saved(dir).filter(|s| ok(s)) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "state file never matched; last: {:?}",
            saved(dir)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state "demo" is in after the changes of `make_changes`.
fn expected_state() -> Vec<Vec<u8>> {
    let mut items = vec![0u8; 8];
    items[..3].copy_from_slice(&[1, 2, 3]);
    items[7] = 0x81;
    let mut map = vec![0u8; 256];
    map[255] = 0xee;
    vec![items, map]
}

async fn make_changes(c: &mut Client) -> u64 {
    change(c, 1, vec![Change::bytes(0, 0, vec![1, 2, 3])]).await;
    // Bits of one byte in two updates, to check masks are merged before saving.
    let bit = |v: u8| Change {
        region: 0,
        offset: 7,
        values: vec![v],
        masks: vec![v],
    };
    change(c, 2, vec![bit(0x01)]).await;
    change(c, 3, vec![bit(0x80), Change::bytes(1, 255, vec![0xee])]).await
}

#[test]
fn state_survives_sigkill_and_a_restart_continues_the_sequence() {
    let (games, _) = games_dir();
    let state = tempfile::tempdir().unwrap();
    let mut a = Serve::start(games.path(), state.path(), &[]);
    let line = a.wait_for("demo: ");
    assert!(line.contains("demo: demo (rom 16384 bytes"), "{line}");
    let line = a.wait_for("demo: fresh state");
    assert!(line.contains("none saved yet"), "{line}");
    // A second server on the same state folder would overwrite this one's files.
    let second = msxsync_command()
        .arg("serve")
        .arg("--games")
        .arg(games.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut second = KillOnDrop(second);
    let status = wait_exit(&mut second.0);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.trim(),
        format!(
            "msxsync: error: another msxsync serve is using the state folder {}; stop it or \
             give another --state-dir",
            state.path().display()
        )
    );
    let seq = run(async {
        let (mut c, j) = join(&a.addr, "ann").await;
        assert_eq!((j.seq, j.in_progress), (0, false));
        assert_eq!(j.state, vec![vec![0; 8], vec![0; 256]]);
        make_changes(&mut c).await
    });
    assert_eq!(seq, 3);
    let s = wait_saved(state.path(), |s| s.seq == 3);
    assert_eq!(s.bytes, expected_state().concat());
    // No chance to save anything more: the file must already have everything.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    // A write that was cut short by a crash leaves a temporary file; it is ignored.
    std::fs::write(state.path().join("demo.state.tmp"), b"MSXSYNCS half").unwrap();

    let mut b = Serve::start(games.path(), state.path(), &[]);
    let line = b.wait_for("demo: state loaded");
    assert_eq!(
        line.trim(),
        format!(
            "demo: state loaded from {}, update 3",
            state.path().join("demo.state").display()
        )
    );
    run(async {
        let (mut c, j) = join(&b.addr, "bob").await;
        assert_eq!(j.state, expected_state());
        assert_eq!(j.seq, 3);
        assert!(j.in_progress, "a restored game is in progress");
        // Sequence numbers go on from the saved one.
        assert_eq!(
            change(&mut c, 9, vec![Change::bytes(0, 0, vec![7])]).await,
            4
        );
    });
    let s = wait_saved(state.path(), |s| s.seq == 4);
    assert_eq!(s.bytes[0], 7);
}

#[test]
fn sigterm_saves_the_latest_change_and_exits_0() {
    let (games, _) = games_dir();
    let state = tempfile::tempdir().unwrap();
    let mut a = Serve::start(games.path(), state.path(), &[]);
    run(async {
        let (mut c, _) = join(&a.addr, "ann").await;
        change(&mut c, 1, vec![Change::bytes(0, 0, vec![1])]).await;
        // The first change is written at once; the next within the second after it
        // waits for the interval, so only the save on SIGTERM writes it.
        wait_saved(state.path(), |s| s.seq == 1);
        assert_eq!(
            change(&mut c, 2, vec![Change::bytes(0, 1, vec![2])]).await,
            2
        );
        let status = Command::new("kill")
            .args(["-TERM", &a.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    });
    let status = wait_exit(&mut a.child);
    assert_eq!(status.code(), Some(0), "{:#?}", a.all_output());
    let out = a.all_output();
    assert!(
        out.iter().any(|l| l.starts_with(&format!(
            "stopped: saved the state of every room in {}",
            state.path().display()
        ))),
        "{out:#?}"
    );
    let s = saved(state.path()).expect("state file");
    assert_eq!(s.seq, 2);
    assert_eq!(&s.bytes[..3], &[1, 2, 0]);
}

#[test]
fn fresh_starts_from_zeros_and_overwrites_the_saved_state() {
    let (games, game) = games_dir();
    let state = tempfile::tempdir().unwrap();
    let bytes = expected_state().concat();
    persist::save(state.path(), &game, 41, bytes.clone()).unwrap();

    let mut a = Serve::start(games.path(), state.path(), &["--fresh"]);
    let line = a.wait_for("demo: fresh state");
    assert!(line.contains("--fresh"), "{line}");
    run(async {
        let (_c, j) = join(&a.addr, "ann").await;
        assert_eq!(j.state, vec![vec![0; 8], vec![0; 256]]);
        assert_eq!((j.seq, j.in_progress), (0, false));
    });
    // The old state is overwritten even though nobody changed anything.
    let s = wait_saved(state.path(), |s| s.seq == 0);
    assert_eq!(s.bytes, vec![0; bytes.len()]);
}

#[test]
fn bad_state_files_are_moved_aside_with_a_warning_and_the_game_starts_fresh() {
    let games = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut good = Vec::new();
    for name in ["garbage", "short", "moved", "newrom"] {
        let path = write_game(games.path(), name, DEMO_REGIONS);
        let game = catalog::load_game(&path).unwrap();
        let file = persist::encode(&Saved::of(&game, 5, vec![1; 264]));
        good.push((name, game, file));
    }
    let file_of = |name: &str| state.path().join(format!("{name}.state"));
    std::fs::write(file_of("garbage"), b"\x00\x01garbage, not a state file").unwrap();
    let short = &good[1].2;
    std::fs::write(file_of("short"), &short[..short.len() / 2]).unwrap();
    // Saved before the regions file changed.
    std::fs::write(file_of("moved"), &good[2].2).unwrap();
    write_game(games.path(), "moved", "e000 e007 items\nc000 c0fe map\n");
    // Saved for another ROM.
    let mut other = good[3].1.clone();
    other.rom_sha256 = catalog::sha256(b"another rom");
    let mismatched = persist::encode(&Saved::of(&other, 5, vec![1; 264]));
    std::fs::write(file_of("newrom"), mismatched).unwrap();

    let mut a = Serve::start(games.path(), state.path(), &[]);
    for (name, why) in [
        ("garbage", "not an msxsync state file"),
        ("short", "truncated: the file ends inside the shared bytes"),
        (
            "moved",
            "the regions changed (saved: e000-e007 c000-c0ff; now: e000-e007 c000-c0fe)",
        ),
        ("newrom", "the ROM changed"),
    ] {
        let path = file_of(name);
        let warning = a.wait_for(&format!("state file {} ", path.display()));
        assert!(
            // The server's log lines start with the time.
            warning.contains(&format!(
                " warning: state file {} cannot be used for game {name}: {why}",
                path.display()
            )),
            "{warning}"
        );
        assert!(
            warning.ends_with(&format!(
                "moved it to {}.bad; the game starts fresh",
                path.display()
            )),
            "{warning}"
        );
        assert!(!path.exists(), "{name}");
        assert!(state.path().join(format!("{name}.state.bad")).exists());
        let line = a.wait_for(&format!("{name}: fresh state"));
        assert!(line.contains("unusable"), "{line}");
    }
    run(async {
        let mut c = client::connect(&a.addr, "ann").await.unwrap();
        let j = c.join("moved").await.unwrap();
        assert_eq!(j.state, vec![vec![0; 8], vec![0; 255]]);
        assert_eq!((j.seq, j.in_progress), (0, false));
    });
}

#[test]
fn stopping_the_library_server_saves_what_the_interval_held_back() {
    let (_games, game) = games_dir();
    let state = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        state_dir: Some(state.path().to_path_buf()),
        // Nothing but the first change and the final save can write the file.
        save_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let s = server::start_with("127.0.0.1:0".parse().unwrap(), vec![game], config).unwrap();
    let addr = s.addr().to_string();
    run(async {
        let (mut c, _) = join(&addr, "ann").await;
        change(&mut c, 1, vec![Change::bytes(0, 0, vec![1])]).await;
        wait_saved(state.path(), |s| s.seq == 1);
        for b in 2..=50 {
            change(&mut c, b, vec![Change::bytes(1, b as u16, vec![b as u8])]).await;
        }
        assert_eq!(
            saved(state.path()).unwrap().seq,
            1,
            "held back by the interval"
        );
    });
    let report = s.stop_and_save().expect("state is kept");
    assert_eq!((report.written, report.unchanged), (1, 0));
    assert!(report.errors.is_empty());
    let s = saved(state.path()).unwrap();
    assert_eq!(s.seq, 50);
    assert_eq!(s.bytes[8 + 50], 50);
}

#[test]
fn a_failed_write_is_warned_about_and_retried_without_a_new_change() {
    let (games, _) = games_dir();
    let state = tempfile::tempdir().unwrap();
    let mut a = Serve::start(games.path(), state.path(), &[]);
    // A folder where the file should be: renaming the new file over it fails.
    let blocker = state.path().join("demo.state");
    std::fs::create_dir(&blocker).unwrap();
    run(async {
        let (mut c, _) = join(&a.addr, "ann").await;
        change(&mut c, 1, vec![Change::bytes(0, 0, vec![1])]).await;
        let warning = a.wait_for("cannot save");
        assert!(
            warning.contains(
                " warning: cannot save the state of game demo (will retry): cannot rename"
            ),
            "{warning}"
        );
        // The way is cleared and nothing else changes: the retry alone saves it.
        std::fs::remove_dir(&blocker).unwrap();
    });
    let saved = wait_saved(state.path(), |s| s.seq == 1);
    assert_eq!(saved.bytes[0], 1);
    a.wait_for("the state of game demo is saved again");
}
