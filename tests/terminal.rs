//! Text from other people reaches a terminal only through the one filter
//! (`text::printable`): escape sequences in names, titles, versions, error reasons and
//! regions files come out escaped, and the server refuses player names that hold them.

mod common;

use common::e2e::testgame_regions;
use common::fake_server::FakeServer;
use common::play::Play;
use msxsync::protocol::{ClientMsg, GameInfo, PlayerInfo, RoomInfo, ServerMsg};
use std::process::Command;

/// An escape sequence that retitles a terminal, one that clears it, a C1 control
/// introducer and a bidirectional override.
const EVIL: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31m\u{9b}1m\u{202e}";

/// Whether some output holds a byte or character a terminal would act on.
fn has_controls(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
}

#[test]
fn the_server_refuses_a_player_name_with_an_escape_sequence() {
    let game = msxsync::catalog::load_game(&testgame_regions()).unwrap();
    let server = msxsync::server::start("127.0.0.1:0".parse().unwrap(), vec![game]).unwrap();
    let addr = server.addr().to_string();
    smol::block_on(async {
        for name in ["ann\u{1b}]0;pwned\u{7}", "ann\u{1b}[2J", "a\u{202e}nn"] {
            let e = msxsync::client::connect(&addr, name)
                .await
                .err()
                .unwrap_or_else(|| panic!("{name:?} was accepted"));
            let e = format!("{e:#}");
            assert!(
                e.starts_with(&format!("server {addr} refused this player ("))
                    && e.contains("): the player name '")
                    && e.ends_with("' contains control characters; choose another name"),
                "{e}"
            );
            assert!(!has_controls(e.as_bytes()), "{e:?}");
        }
        // A name from elsewhere in the world is fine.
        let c = msxsync::client::connect(&addr, "Zoë 🎮").await.unwrap();
        c.close().await;
    });
}

#[test]
fn text_from_a_hostile_server_reaches_the_terminal_escaped() {
    let server = FakeServer::start(|mut c| {
        if c.welcome(&format!("msxsync {EVIL}")).is_none() {
            return;
        }
        let answer = match c.recv() {
            Some(ClientMsg::ListGames) => ServerMsg::Games {
                games: vec![GameInfo {
                    name: format!("game{EVIL}"),
                    title: format!("title{EVIL}"),
                    rom_size: 1,
                    rom_sha256: [0; 32],
                    shared_bytes: 1,
                    machine: None,
                    romtype: None,
                    sync_when: None,
                    on_restart: Default::default(),
                    rooms: vec![RoomInfo {
                        name: format!("room{EVIL}"),
                        players: vec![PlayerInfo {
                            id: 1,
                            name: format!("ann{EVIL}"),
                        }],
                    }],
                }],
            },
            _ => ServerMsg::Error {
                reason: format!("no{EVIL}"),
            },
        };
        c.send(&answer);
        c.ignore_until_closed();
    });

    let list = Command::new(env!("CARGO_BIN_EXE_msxsync"))
        .args(["list", "--server", &server.addr()])
        .output()
        .unwrap();
    assert!(list.status.success(), "{list:?}");
    assert!(!has_controls(&list.stdout), "{list:?}");
    assert!(!has_controls(&list.stderr), "{list:?}");
    let shown = String::from_utf8_lossy(&list.stdout);
    assert!(
        shown.contains("game\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
        "{shown}"
    );
    assert!(shown.contains("ann\\u{1b}]0;pwned"), "{shown}");
    assert!(shown.contains("room room\\u{1b}]0;pwned"), "{shown}");

    // play: the version in its progress line, the reason in its error line.
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start_at(&server.addr(), cache.path(), &["--game", "g"]);
    assert_ne!(play.wait_exit(), 0);
    let out = play.out.seen.join("\n");
    assert!(!has_controls(out.as_bytes()), "{out:?}");
    // (tracing escapes the log line in its own way before the filter sees it)
    assert!(
        out.contains("(msxsync \\") && out.contains("]0;pwned"),
        "{out}"
    );
    assert!(
        out.contains("msxsync: error: server ") && out.contains(": no\\u{1b}]0;pwned\\u{7}"),
        "{out}"
    );
}

#[test]
fn check_quotes_a_hostile_regions_file_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.regions");
    std::fs::write(&file, format!("g.rom\n{EVIL}: x\n0 0\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msxsync"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!has_controls(&out.stderr), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "msxsync: error: could not read {} line 2: unknown directive '\\u{{1b}}]0;pwned",
            file.display()
        )),
        "{err}"
    );
}
