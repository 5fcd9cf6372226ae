//! End-to-end: shared play that survives real sessions. Title screens (sync gate), late
//! joiners, rewinds, savestates and power cycles, RAM changed behind the hooks' back,
//! network outages and server restarts, with real headless openMSX players.

mod common;

use common::e2e::{
    cut, game_does, game_does_seen_by, games_folder, peek, player_behind_a_proxy, player_options,
    restore, server_state, shared, start_player, wait_byte, wait_caught_up, wait_converged,
    wait_converged_at, World,
};
use common::proxy::Proxy;
use common::serve::Serve;
use common::testrom::*;
use common::{require_openmsx, until};
use msxsync::play::{Player, Stats};
use std::path::{Path, PathBuf};

/// A games folder with the test game gated on its mode byte (0 title, 1 playing).
fn gated_game(dir: &Path) -> PathBuf {
    std::fs::copy(rom_path(), dir.join("testgame.rom")).unwrap();
    let text = std::fs::read_to_string(common::e2e::testgame_regions()).unwrap();
    let path = dir.join("testgame.regions");
    std::fs::write(&path, format!("{text}\nsync-when: E122 == 01\n")).unwrap();
    path
}

/// Presses the join key in a player's openMSX: checks that F12 is bound to the join
/// request, then runs it (a test cannot make SDL deliver a host key press).
async fn press_join_key(p: &Player) {
    let binding = p.openmsx().command("bind F12").await.unwrap();
    assert!(
        binding.contains("msxsync::join_request"),
        "F12 is bound to {binding:?}"
    );
    p.openmsx().command("msxsync::join_request").await.unwrap();
}

#[test]
fn the_sync_gate_keeps_title_screens_from_wiping_the_group() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let world = World::with_regions(&gated_game(dir.path()));
    smol::block_on(async {
        let ann = world.player("ann").await;
        // On the title screen, the game's writes stay home.
        game_does(&ann, CMD_SET, SHARED0 + 1, 0xee).await;
        // A new game clears the variables; the gate opens once it has settled, and
        // ann's game, the first in a fresh group, gives the group its values.
        game_does(&ann, CMD_NEW_GAME, 0, NG_SAME_FRAME).await;
        wait_byte(&ann, SHARED0 + 1, 0, "ann's title-screen write cleared").await;
        game_does(&ann, CMD_SET, SHARED0 + 2, 0x42).await;
        game_does(&ann, CMD_OR, SHARED0 + 3, 0x81).await;
        until("ann's items on the server", async || {
            server_state(&world, "testgame").await[0][2..4] == [0x42, 0x81]
        })
        .await;

        // Bob joins late: his start-up cleared his variables, his title screen writes.
        let bob = world.player("bob").await;
        game_does(&bob, CMD_SET, SHARED0 + 2, 0x00).await;
        game_does(&bob, CMD_SET, SHARED0 + 4, 0x99).await;
        // Nothing of it reached ann or the server.
        game_does(&ann, CMD_SET, SHARED0 + 5, 0x55).await;
        wait_converged(&world, "testgame", &[&ann]).await;
        assert_eq!(shared(&ann).await[0][2..6], [0x42, 0x81, 0, 0x55]);
        // Bob starts playing: he gets the group's items and syncs from then on.
        game_does(&bob, CMD_MODE, 0, 1).await;
        wait_converged(&world, "testgame", &[&ann, &bob]).await;
        assert_eq!(shared(&bob).await[0][2..6], [0x42, 0x81, 0, 0x55]);
        let what = "bob's write in ann";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 6, 0x66, &[&ann], what).await;

        // Ann goes back to the title screen, whose attract demo clears the items.
        game_does(&ann, CMD_MODE, 0, 0).await;
        game_does(&ann, CMD_SET, SHARED0 + 2, 0).await;
        game_does(&bob, CMD_SET, SHARED0 + 7, 0x77).await;
        let state = wait_converged(&world, "testgame", &[&bob]).await;
        assert_eq!(
            state[0][2], 0x42,
            "the group kept the item ann's title cleared"
        );
        // Holding means ann got bob's item and did not take it in, not that it is
        // still on its way.
        wait_caught_up(&world.addr(), "testgame", &[&ann]).await;
        assert_eq!(
            peek(&ann, SHARED0 + 7).await,
            0,
            "ann holds while on the title"
        );
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

#[test]
fn a_late_joiner_without_a_gate_waits_for_the_join_key() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let ann = world.player("ann").await;
        game_does(&ann, CMD_SET, SHARED0, 0x11).await;
        game_does(&ann, CMD_SET, SHARED1 + 5, 0x22).await;
        until("ann's items on the server", async || {
            server_state(&world, "testgame").await[0][0] == 0x11
        })
        .await;

        let bob = world.player("bob").await;
        assert!(bob.joined().in_progress);
        // Bob's start-up cleared his copy, and he writes on his own: nothing is sent.
        assert_eq!(peek(&bob, SHARED0).await, 0);
        game_does(&bob, CMD_SET, SHARED1 + 5, 0x99).await;
        game_does(&ann, CMD_SET, SHARED0 + 1, 0x33).await;
        wait_converged(&world, "testgame", &[&ann]).await;
        assert_eq!(peek(&ann, SHARED1 + 5).await, 0x22);
        wait_caught_up(&world.addr(), "testgame", &[&bob]).await;
        assert_eq!(
            peek(&bob, SHARED0 + 1).await,
            0,
            "bob holds until he presses F12"
        );
        assert_eq!(Stats::get(&bob.stats().batches_sent), 0);

        press_join_key(&bob).await;
        wait_converged(&world, "testgame", &[&ann, &bob]).await;
        assert_eq!(shared(&bob).await[0][..2], [0x11, 0x33]);
        let what = "bob's write after joining";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 2, 0x44, &[&ann], what).await;

        // --join-now takes the state at the game's start without a key.
        let mut o = world.options("testgame", "cy");
        o.join_now = true;
        let cy = start_player(o).await;
        let what = "cy's write with --join-now";
        game_does_seen_by(&cy, CMD_SET, SHARED0 + 3, 0x55, &[&ann], what).await;
        for p in [ann, bob, cy] {
            p.stop().await.unwrap();
        }
    });
}

#[test]
fn rewind_and_power_cycles_come_back_to_the_shared_state() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (ann, bob) = smol::future::zip(world.player("ann"), world.player("bob")).await;
        ann.openmsx().command("reverse start").await.unwrap();
        // Bob must have ann's item before he loses it: setting a byte that still
        // holds 0x00 to 0x00 is no change, and ann's 0x10 would then stay for good.
        game_does_seen_by(&ann, CMD_SET, SHARED0, 0x10, &[&bob], "ann's item in bob").await;
        let before = ann.openmsx().command("machine_info time").await.unwrap();
        let before: f64 = before.trim().parse().unwrap();
        // Let some emulated time pass (for the rewind to go back into), then lose
        // the item in the group.
        until("two seconds of emulated time", async || {
            let t = ann.openmsx().command("machine_info time").await.unwrap();
            t.trim().parse::<f64>().unwrap() > before + 2.0
        })
        .await;
        game_does_seen_by(&bob, CMD_SET, SHARED0, 0x00, &[&ann], "bob's loss in ann").await;
        // Ann rewinds to before the loss: the loss stays, for her too.
        ann.openmsx()
            .command(&format!("reverse goto {}", before + 0.5))
            .await
            .unwrap();
        until("ann's rewind to be noticed", async || {
            Stats::get(&ann.stats().state_writes) >= 2
        })
        .await;
        wait_converged(&world, "testgame", &[&ann, &bob]).await;
        assert_eq!(
            peek(&ann, SHARED0).await,
            0,
            "a rewind cannot undo a shared loss"
        );

        // A power cycle restarts the game, whose start-up clears its variables: ann
        // holds (the game is in progress) and the group keeps its state.
        let what = "bob's write in ann";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 1, 0x21, &[&ann], what).await;
        ann.openmsx().command("set power off").await.unwrap();
        ann.openmsx().command("set power on").await.unwrap();
        until("ann's game restarted", async || {
            peek(&ann, READY).await == READY_VALUE && peek(&ann, SHARED0 + 1).await == 0
        })
        .await;
        game_does(&bob, CMD_SET, SHARED0 + 2, 0x22).await;
        let state = wait_converged(&world, "testgame", &[&bob]).await;
        assert_eq!(state[0][1], 0x21, "ann's restart did not wipe the group");
        press_join_key(&ann).await;
        wait_converged(&world, "testgame", &[&ann, &bob]).await;
        // A reset too.
        ann.openmsx().command("reset").await.unwrap();
        until("ann's game reset", async || {
            peek(&ann, READY).await == READY_VALUE && peek(&ann, SHARED0 + 1).await == 0
        })
        .await;
        assert_eq!(server_state(&world, "testgame").await[0][1], 0x21);
        press_join_key(&ann).await;
        wait_converged(&world, "testgame", &[&ann, &bob]).await;
        let what = "ann syncs again after the reset";
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 3, 0x33, &[&bob], what).await;
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

#[test]
fn ram_changed_behind_the_hooks_back_is_repaired() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (ann, bob) = smol::future::zip(world.player("ann"), world.player("bob")).await;
        let what = "bob's write in ann";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 5, 0x55, &[&ann], what).await;
        // "Main RAM" is the physical RAM: writes there trigger no watchpoint. Written
        // and read back in one command: the periodic check could repair it between two.
        let written = ann
            .openmsx()
            .command(&format!(
                "debug write {{Main RAM}} {0} 171; debug read memory {0}",
                SHARED0 + 5
            ))
            .await
            .unwrap();
        assert_eq!(written, "171");
        wait_byte(&ann, SHARED0 + 5, 0x55, "the repair").await;
        // Repaired by the periodic check (how fast is for `make bench`), and counted.
        until("the repair to be counted", async || {
            Stats::get(&ann.stats().repaired_bytes) >= 1
        })
        .await;
        assert_eq!(server_state(&world, "testgame").await[0][5], 0x55);
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

#[test]
fn a_network_outage_loses_nothing() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (proxy, ann, bob) = ann_behind_a_proxy(&world).await;

        cut(&proxy, &ann).await;
        // Both keep playing: ann offline, bob online.
        game_does(&ann, CMD_OR, SHARED0 + 1, 0x0f).await;
        game_does(&ann, CMD_SET, SHARED1 + 9, 0x99).await;
        game_does(&bob, CMD_OR, SHARED0 + 1, 0xf0).await;
        game_does(&bob, CMD_SET, SHARED0 + 2, 0x22).await;
        restore(&proxy, &ann).await;
        let state = wait_converged(&world, "testgame", &[&ann, &bob]).await;
        assert_eq!(state[0][..3], [0x01, 0xff, 0x22]);
        assert_eq!(state[1][9], 0x99);
        let what = "ann's write after reconnecting";
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 3, 0x33, &[&bob], what).await;
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

#[test]
fn a_reconnect_does_not_undo_what_others_did_after_our_lost_acknowledgement() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (proxy, ann, bob) = ann_behind_a_proxy(&world).await;

        // The server gets ann's next change, but ann never hears back: her batch is
        // still in flight for her when the connection drops.
        proxy.stall_downstream();
        let what = "ann's stalled write in bob";
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 4, 0x41, &[&bob], what).await;
        // Bob uses the item after her: the later change must stay.
        game_does(&bob, CMD_SET, SHARED0 + 4, 0x42).await;
        until("bob's change at the server", async || {
            server_state(&world, "testgame").await[0][4] == 0x42
        })
        .await;
        cut(&proxy, &ann).await;
        restore(&proxy, &ann).await;
        let state = wait_converged(&world, "testgame", &[&ann, &bob]).await;
        assert_eq!(
            state[0][4], 0x42,
            "ann's batch, which the server had, was sent again and undid bob's change"
        );
        assert_eq!(Stats::get(&ann.stats().batches_not_resent), 1);
        // Batches the server did not get still travel: ann's sync goes on.
        let what = "ann's write after reconnecting";
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 3, 0x33, &[&bob], what).await;
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

/// Ann plays through a proxy a test can cut or stall, Bob directly; ann has set the
/// first shared byte to 1, bob has it, and ann has the server's acknowledgement (else
/// her batch would still be in flight when the test stalls or cuts her connection).
async fn ann_behind_a_proxy(world: &World) -> (Proxy, Player, Player) {
    let (proxy, ann) = player_behind_a_proxy(world, "ann").await;
    let bob = world.player("bob").await;
    game_does_seen_by(&ann, CMD_SET, SHARED0, 0x01, &[&bob], "ann's first write").await;
    wait_caught_up(&world.addr(), "testgame", &[&ann]).await;
    (proxy, ann, bob)
}

/// Kills a real `msxsync serve` with SIGKILL mid-game, changes RAM on both players
/// while it is down, and restarts it on the same port: with its saved state (`fresh`
/// false) or with none (`fresh` true, then a player seeds it). Nothing earned is lost.
fn server_restart(fresh: bool) {
    let games = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    games_folder(games.path());
    smol::block_on(async {
        let first = Serve::start(games.path(), state.path(), &[]);
        let addr = first.addr.clone();
        let port = first.port().to_string();
        let ann = start_player(player_options(&addr, "testgame", "ann", cache.path())).await;
        let bob = start_player(player_options(&addr, "testgame", "bob", cache.path())).await;
        game_does(&ann, CMD_SET, SHARED0, 0x11).await;
        game_does(&bob, CMD_SET, SHARED1, 0x12).await;
        let seq = wait_converged_at(&addr, "testgame", &[&ann, &bob]).await;
        assert_eq!((seq[0][0], seq[1][0]), (0x11, 0x12));
        // The server saves within a second of a change; wait until it did.
        let file = state.path().join("testgame.state");
        until("the state file", async || {
            std::fs::read(&file)
                .ok()
                .and_then(|b| msxsync::server::persist::decode(&b).ok())
                .is_some_and(|saved| saved.seq == 2)
        })
        .await;
        first.kill9();
        until("both players to notice", async || {
            Stats::get(&ann.stats().disconnects) == 1 && Stats::get(&bob.stats().disconnects) == 1
        })
        .await;
        // Both keep playing while the server is away.
        game_does(&ann, CMD_SET, SHARED0 + 1, 0x21).await;
        game_does(&bob, CMD_SET, SHARED0 + 2, 0x22).await;

        let extra: Vec<&str> = if fresh {
            vec!["--port", &port, "--fresh"]
        } else {
            vec!["--port", &port]
        };
        let mut second = Serve::start(games.path(), state.path(), &extra);
        if !fresh {
            second.wait_for("update 2");
        }
        until("both players to reconnect", async || {
            Stats::get(&ann.stats().reconnects) == 1 && Stats::get(&bob.stats().reconnects) == 1
        })
        .await;
        let state = wait_converged_at(&second.addr, "testgame", &[&ann, &bob]).await;
        assert_eq!(state[0][..3], [0x11, 0x21, 0x22], "nothing earned was lost");
        assert_eq!(state[1][0], 0x12);
        let what = "bob's write after the restart";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 3, 0x33, &[&ann], what).await;
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

#[test]
fn a_killed_server_comes_back_with_its_saved_state() {
    if !require_openmsx() {
        return;
    }
    server_restart(false);
}

#[test]
fn a_server_that_comes_back_empty_is_seeded_by_its_players() {
    if !require_openmsx() {
        return;
    }
    server_restart(true);
}
