//! The built-in demo: `msxsync serve` with no games folder serves it, and the headless
//! `make demo` session (examples/demo.rs, included here as a module) really carries
//! player 1's items to player 2.

mod common;

// The demo includes tests/common/wait.rs itself, as `common` does: two copies of one
// small function in this test crate.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/demo.rs"]
mod demo;

use common::lines::Lines;
use common::play::{msxsync_command, KillOnDrop};
use common::require_openmsx;
use std::process::Stdio;

#[test]
fn serve_with_no_games_folder_anywhere_serves_the_built_in_demo() {
    let home = tempfile::tempdir().unwrap();
    let empty = home.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // Every default games folder points into the temp folder (and none exists there);
    // the executable's own folder has no games/ either.
    let child = msxsync_command()
        .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
        .current_dir(&empty)
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_DATA_DIRS", home.path().join("share"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msxsync serve starts");
    let mut child = KillOnDrop(child);
    let mut out = Lines::capture(&mut child.0);
    let addr = out
        .wait_for("listening on ")
        .trim_start_matches("listening on ")
        .trim()
        .to_string();
    let seen = &out.seen;
    assert!(
        seen.iter()
            .any(|l| l.contains("demo: msxsync co-op demo (built in) (rom 16384 bytes")),
        "the server says the demo is built in: {seen:#?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("warning")),
        "no warnings: {seen:#?}"
    );

    let out = msxsync_command()
        .args(["list", "--server", &addr])
        .output()
        .expect("msxsync list runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The server's release and protocol come first.
    assert!(
        stdout.starts_with(&format!(
            "{addr} runs msxsync {} (protocol {}) and serves 1 game:",
            msxsync::version::VERSION,
            msxsync::protocol::PROTOCOL_VERSION
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("demo  \"msxsync co-op demo (built in)\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("rom 16384 bytes, 5 shared bytes"),
        "{stdout}"
    );
}

#[test]
fn headless_demo_brings_player_1s_items_to_player_2() {
    if !require_openmsx() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let report = smol::block_on(demo::run_headless(
        out.path(),
        std::path::Path::new("openmsx"),
    ))
    .unwrap_or_else(|e| panic!("the demo failed: {e:#}"));
    // Player 2's shared RAM: items, crown, harp, coins: player 1's items and coins
    // and player 2's own crown.
    assert_eq!(
        report.state,
        [
            vec![demo::EXPECTED_ITEMS],
            vec![1],
            vec![0],
            demo::EXPECTED_COINS.to_vec()
        ]
    );
    // Both screens show the shared things; the steps (private) differ.
    demo::check_screen(&report.screen, "0002").unwrap();
    demo::check_screen(&report.screen_player1, "0000").unwrap();
    assert!(
        report.screen[0].contains("MSXSYNC CO-OP DEMO"),
        "{:?}",
        report.screen
    );
    assert_eq!(report.screenshots.len(), 2);
    for shot in &report.screenshots {
        let bytes = std::fs::read(shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is a PNG",
            shot.display()
        );
        // Width and height from the IHDR chunk: the raw, doubled MSX screen.
        let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((size(16), size(20)), (640, 480), "{}", shot.display());
    }
}
