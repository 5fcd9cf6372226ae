//! `msxsync play` against a broken or hostile server: one that never answers, one
//! that floods it, one that never acknowledges, one whose game changed while the
//! player was away. Fake servers (tests/common/fake_server.rs) speak just enough of the
//! protocol; the player is the real binary or, where openMSX is needed to make
//! changes, a real player with a headless openMSX.

mod common;

use common::e2e::{
    game_does, player_options, server_state_at, start_player, testgame_regions, wait_converged_at,
    World,
};
use common::fake_server::{joined, FakeServer};
use common::play::{alive, signal, Play};
use common::serve::TestgameServer;
use common::testrom::*;
use common::{poll, require_openmsx, until, TIMEOUT};
use msxsync::client::REPLY_TIMEOUT;
use msxsync::play::Stats;
use msxsync::protocol::{ClientMsg, ServerMsg, MAX_ROM_BYTES};
use std::time::{Duration, Instant};

/// A server that says Welcome and then listens without ever answering.
fn silent_server() -> FakeServer {
    FakeServer::start(|mut c| {
        c.welcome("msxsync 0.1.0");
        c.ignore_until_closed();
    })
}

#[test]
fn a_server_that_never_answers_the_join_does_not_hold_play() {
    let server = silent_server();
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start_at(&server.addr(), cache.path(), &["--game", "testgame"]);
    assert_ne!(play.wait_exit(), 0, "{:#?}", play.out.seen);
    let err = play.wait_for("msxsync: error:");
    assert_eq!(
        err,
        format!(
            "msxsync: error: server {} did not send the answer to joining: no answer within \
             {} seconds; is it overloaded or not an msxsync server?",
            server.addr(),
            REPLY_TIMEOUT.as_secs()
        )
    );
}

#[test]
fn ctrl_c_and_sigterm_end_play_while_it_waits_for_the_server() {
    let server = silent_server();
    let cache = tempfile::tempdir().unwrap();
    for sig in ["TERM", "INT"] {
        let mut play = Play::start_at(&server.addr(), cache.path(), &["--game", "testgame"]);
        // Connected: now it waits for the answer to joining, which never comes.
        play.wait_for("connected to ");
        signal(play.child.id() as i32, sig);
        // The answer's time limit would end it too, with an error: this line only
        // comes from the signal.
        assert_eq!(play.wait_exit(), 0, "SIG{sig}: {:#?}", play.out.seen);
        play.wait_for("interrupted while starting: left");
    }
}

#[test]
fn ctrl_c_while_openmsx_starts_stops_it_too() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    let (mut play, msx) = Play::testgame(&world, cache.path());
    // C-BIOS shows its logo for seconds of emulated time before the cartridge starts,
    // but a starved test could signal only after that: stop the emulation (through
    // openMSX's control socket) so that play is certainly still waiting for it.
    let paused = smol::block_on(poll("openMSX's control socket", TIMEOUT, || async {
        msxsync::openmsx::OpenMsx::attach(&msx.to_string())
            .await
            .ok()
    }));
    smol::block_on(paused.command("debug break")).unwrap();
    signal(play.child.id() as i32, "INT");
    assert_eq!(play.wait_exit(), 0, "{:#?}", play.out.seen);
    play.wait_for("interrupted while starting: left");
    let deadline = Instant::now() + TIMEOUT;
    while alive(msx) {
        assert!(Instant::now() < deadline, "openMSX {msx} outlived play");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flood_while_play_waits_for_an_answer_is_refused_within_a_memory_bound() {
    // 24 ROM-sized messages where the answer to joining should be: 200 MB that the
    // client used to keep, counted as 24 messages of its 16,384.
    const FLOOD: usize = 24;
    let server = FakeServer::start(|mut c| {
        if c.welcome("msxsync 0.1.0").is_none() {
            return;
        }
        if !matches!(c.recv(), Some(ClientMsg::Join { .. })) {
            return;
        }
        let rom = msxsync::protocol::encode(&ServerMsg::Rom {
            data: vec![0x41; MAX_ROM_BYTES],
        });
        for _ in 0..FLOOD {
            if !c.send_bytes(rom.clone()) {
                return;
            }
        }
        c.ignore_until_closed();
    });
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start_at(&server.addr(), cache.path(), &["--game", "testgame"]);
    let (code, peak_kib) = play.wait_exit_and_peak_kib();
    assert_eq!(code, 1, "{:#?}", play.out.seen);
    let err = play.wait_for("msxsync: error:");
    assert_eq!(
        err,
        format!(
            "msxsync: error: server {} sent more than 16 MiB of other messages while we \
             waited for the answer to joining",
            server.addr()
        )
    );
    eprintln!("play's peak resident memory under the flood: {peak_kib} KiB");
    // Two ROM messages kept or on their way, and the program itself: far below the
    // 24 of the flood.
    assert!(
        peak_kib < 100 * 1024,
        "play grew to {} MiB",
        peak_kib / 1024
    );
}

#[test]
fn a_server_restarted_with_other_regions_gets_none_of_the_old_bytes() {
    if !require_openmsx() {
        return;
    }
    let mut first = TestgameServer::start();
    smol::block_on(async {
        let addr = first.serve.addr.clone();
        let ann = start_player(first.options("ann")).await;
        game_does(&ann, CMD_SET, SHARED0, 0x11).await;
        game_does(&ann, CMD_SET, SHARED1 + 3, 0x22).await;
        wait_converged_at(&addr, "testgame", &[&ann]).await;
        first.kill9();
        until("ann to notice", async || {
            Stats::get(&ann.stats().disconnects) == 1
        })
        .await;

        // The host moves the first region by one byte and starts the server again: the
        // saved state no longer fits and is moved aside, the game starts empty. Ann's
        // 0x11 at E000 would land at E001 if she seeded it as before.
        let regions = first.games.path().join("testgame.regions");
        let text = std::fs::read_to_string(&regions).unwrap();
        std::fs::write(&regions, text.replace("\nE000 E00F", "\nE001 E00F")).unwrap();
        let second = first.restart(&[]);
        until("ann to see the game changed", async || {
            Stats::get(&ann.stats().layout_changes) == 1
        })
        .await;
        // She leaves the server's game without having sent anything into it.
        until("ann to leave the new server", async || {
            let mut c = msxsync::client::connect(&second.addr, &common::unique_name("observer"))
                .await
                .unwrap();
            let j = c.join("testgame").await.unwrap();
            c.close().await;
            j.room.players.iter().all(|p| p.name != "ann")
        })
        .await;
        let state = server_state_at(&second.addr, "testgame").await;
        assert!(
            state.iter().flatten().all(|&b| b == 0),
            "old bytes reached the new layout: {state:02x?}"
        );
        assert_eq!(Stats::get(&ann.stats().reconnects), 0);
        ann.stop().await.unwrap();
    });
}

#[test]
fn a_server_that_never_acknowledges_is_taken_as_broken_and_rejoined() {
    if !require_openmsx() {
        return;
    }
    // Answers joins and ROM requests like a server, and swallows changes without ever
    // sending them back.
    let game = msxsync::catalog::load_game(&testgame_regions()).unwrap();
    let server = FakeServer::start(move |mut c| {
        if c.welcome("msxsync 0.1.0").is_none() {
            return;
        }
        loop {
            let answer = match c.recv() {
                None => return,
                Some(ClientMsg::Join { .. }) => {
                    ServerMsg::Joined(Box::new(joined(&game, 1 + c.number as u32)))
                }
                Some(ClientMsg::FetchRom) => ServerMsg::Rom {
                    data: game.rom.to_vec(),
                },
                Some(_) => continue,
            };
            if !c.send(&answer) {
                return;
            }
        }
    });
    let cache = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let ann = start_player(player_options(
            &server.addr(),
            "testgame",
            "ann",
            cache.path(),
        ))
        .await;
        // A batch every frame, unthrottled: thousands a second, none acknowledged.
        game_does(&ann, CMD_EVERY_FRAME, 0, EF_CHANGING).await;
        // Some 65,536 batches first: give it time on a loaded machine.
        poll(
            "ann to give the connection up and join again",
            Duration::from_secs(120),
            || async {
                (Stats::get(&ann.stats().disconnects) >= 1 && server.connections() >= 2)
                    .then_some(())
            },
        )
        .await;
        ann.stop().await.unwrap();
    });
}
