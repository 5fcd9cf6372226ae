//! `msxsync play` as a person runs it: a real process against a real server, with
//! headless openMSX. Ctrl-C, closing openMSX, the ROM cache, and the errors a player
//! meets first.

mod common;

use common::e2e::World;
use common::play::{alive, msxsync_command, signal, Play};
use common::require_openmsx;
use std::time::{Duration, Instant};

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
    // Syncing starts inside play's start-up; a signal before it is over would
    // interrupt the start (tests/hostile_server.rs covers that), not the game.
    first.wait_for("playing testgame: Ctrl-C here leaves the game");
    signal(first.child.id() as i32, "INT");
    assert_eq!(first.wait_exit(), 0, "output: {:#?}", first.out.seen);
    first.wait_for("interrupted: left the game and stopped openMSX");
    let deadline = Instant::now() + common::TIMEOUT;
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
    assert!(!second.out.seen.iter().any(|l| l.contains("downloaded")));
}

#[test]
fn closing_openmsx_ends_play_with_success() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let (mut play, msx) = Play::testgame(&world, cache.path());
    play.wait_for("playing testgame");
    // What closing the window does: openMSX quits.
    signal(msx, "TERM");
    assert_eq!(play.wait_exit(), 0, "output: {:#?}", play.out.seen);
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
fn an_unreachable_server_is_said_once_with_what_to_do() {
    // Port 9 on loopback: nothing listens there in a test machine.
    for args in [
        &["play", "--game", "demo", "--server", "127.0.0.1:9"][..],
        &["list", "--server", "127.0.0.1:9"],
    ] {
        let out = msxsync_command().args(args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "msxsync: error: cannot connect to server 127.0.0.1:9: connection refused; \
                 is `msxsync serve` running there? use --server HOST[:PORT]"
            ),
            "{args:?}: {err}"
        );
        // Once: not again from each link of the error chain.
        assert_eq!(err.to_lowercase().matches("refused").count(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn version_names_the_release_the_protocol_and_the_target() {
    let out = msxsync_command().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "msxsync {} (protocol {}, {})\n",
        msxsync::version::VERSION,
        msxsync::protocol::PROTOCOL_VERSION,
        msxsync::version::TARGET
    );
    assert_eq!(text, expected);
}
