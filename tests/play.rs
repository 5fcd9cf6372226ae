//! End-to-end: real headless openMSX players (C-BIOS_MSX1, the test cartridge) and a
//! real server on 127.0.0.1 port 0.

mod common;

use common::e2e::{
    game_does, game_does_seen_by, peek, post, shared, start_player, wait_ack, wait_converged, World,
};
use common::require_openmsx;
use common::testrom::*;
use msxsync::play::{Player, Stats};

/// Ann, bob and cy join the test game at the same time.
async fn three_players(world: &World) -> (Player, Player, Player) {
    let ((a, b), c) = smol::future::zip(
        smol::future::zip(world.player("ann"), world.player("bob")),
        world.player("cy"),
    )
    .await;
    (a, b, c)
}

#[test]
fn a_game_write_reaches_every_other_player_and_back() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (a, b, c) = three_players(&world).await;
        game_does_seen_by(&a, CMD_SET, SHARED0 + 3, 0x42, &[&b, &c], "ann's write").await;
        game_does_seen_by(&c, CMD_SET, SHARED1 + 63, 0x99, &[&a, &b], "cy's write").await;
        // Private RAM is not shared. The game writes a private byte in ann, then a
        // shared one; once bob has the shared one, the private one would be there too.
        const PRIVATE: u16 = 0xE12E;
        let before = peek(&b, PRIVATE).await;
        game_does(&a, CMD_SET, PRIVATE, before ^ 0x5a).await;
        let what = "the barrier write in bob";
        game_does_seen_by(&a, CMD_SET, SHARED0, 0x77, &[&b], what).await;
        assert_eq!(
            peek(&b, PRIVATE).await,
            before,
            "private RAM stayed private"
        );
        assert_eq!(peek(&a, PRIVATE).await, before ^ 0x5a);
        for p in [a, b, c] {
            p.stop().await.expect("player synced without errors");
        }
    });
}

#[test]
fn applied_remote_changes_are_not_sent_back() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (a, b) = smol::future::zip(world.player("ann"), world.player("bob")).await;
        for i in 0..5u8 {
            let addr = SHARED0 + u16::from(i);
            game_does_seen_by(&b, CMD_SET, addr, 0x10 + i, &[&a], "bob's write in ann").await;
        }
        // A change of ann's own, after bob's: once it arrived, anything ann would have
        // echoed would have been sent before it.
        game_does_seen_by(&a, CMD_SET, SHARED0 + 9, 0x99, &[&b], "ann's write in bob").await;
        // Bob counts an update before he writes it, so this read does not race;
        // any echo of ann's would have reached him before her own change.
        assert_eq!(
            Stats::get(&b.stats().updates_from_others),
            1,
            "ann sent only her own change, none of the five she received"
        );
        assert_eq!(Stats::get(&a.stats().updates_applied), 5);
        a.stop().await.expect("ann synced without errors");
        b.stop().await.expect("bob synced without errors");
    });
}

#[test]
fn different_bits_of_one_byte_at_the_same_moment_both_survive() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        // Normal speed: both games act at their next frame and flush a frame later,
        // so each change is made before the other's can have arrived.
        let mut oa = world.options("testgame", "ann");
        let mut ob = world.options("testgame", "bob");
        oa.fast = false;
        ob.fast = false;
        let (a, b) = smol::future::zip(start_player(oa), start_player(ob)).await;
        for r in 0..6u16 {
            let byte = SHARED0 + r;
            let (sa, sb) = smol::future::zip(
                post(&a, CMD_OR, byte, 1 << r),
                post(&b, CMD_OR, byte, 0x80 >> r),
            )
            .await;
            smol::future::zip(wait_ack(&a, sa), wait_ack(&b, sb)).await;
        }
        let state = wait_converged(&world, "testgame", &[&a, &b]).await;
        for (r, &byte) in state[0][..6].iter().enumerate() {
            assert_eq!(
                byte,
                (1u8 << r) | (0x80u8 >> r),
                "byte {r} has both players' bits"
            );
        }
        a.stop().await.expect("ann synced without errors");
        b.stop().await.expect("bob synced without errors");
    });
}

#[test]
fn many_concurrent_random_changes_converge() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (a, b, c) = three_players(&world).await;
        async fn run(p: &msxsync::play::Player, seed: u64) {
            {
                let mut x = seed;
                for _ in 0..60 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let cmd = [CMD_SET, CMD_OR, CMD_AND_NOT, CMD_ADD][(x % 4) as usize];
                    // Mostly a few hot bytes, so players collide often.
                    let addr = if x.is_multiple_of(3) {
                        SHARED1 + ((x >> 8) % 64) as u16
                    } else {
                        SHARED0 + ((x >> 8) % 4) as u16
                    };
                    game_does(p, cmd, addr, (x >> 20) as u8).await;
                }
            }
        }
        smol::future::zip(smol::future::zip(run(&a, 1), run(&b, 2)), run(&c, 3)).await;
        let state = wait_converged(&world, "testgame", &[&a, &b, &c]).await;
        assert_ne!(
            state,
            shared(&a)
                .await
                .iter()
                .map(|r| vec![0; r.len()])
                .collect::<Vec<_>>()
        );
        for p in [a, b, c] {
            p.stop().await.expect("player synced without errors");
        }
    });
}

#[test]
fn loadstate_brings_the_player_back_to_the_shared_state() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The path reaches Tcl hex-encoded, never pasted.
    let state = msxsync::hex::encode(dir.path().join("s").to_str().unwrap().as_bytes());
    smol::block_on(async {
        let world = World::new();
        let (a, b) = smol::future::zip(world.player("ann"), world.player("bob")).await;
        a.openmsx()
            .command(&format!("savestate [binary decode hex {state}]"))
            .await
            .unwrap();
        game_does_seen_by(&b, CMD_SET, SHARED0 + 5, 0x55, &[&a], "bob's write in ann").await;
        a.openmsx()
            .command(&format!("loadstate [binary decode hex {state}]"))
            .await
            .unwrap();
        // The saved state predates bob's write; the shared state wins.
        wait_converged(&world, "testgame", &[&a, &b]).await;
        assert_eq!(peek(&a, SHARED0 + 5).await, 0x55);
        // And ann keeps syncing both ways.
        let what = "ann's write after loadstate in bob";
        game_does_seen_by(&a, CMD_SET, SHARED0 + 6, 0x66, &[&b], what).await;
        let what = "bob's write after loadstate in ann";
        game_does_seen_by(&b, CMD_SET, SHARED0 + 7, 0x77, &[&a], what).await;
        a.stop().await.expect("ann synced without errors");
        b.stop().await.expect("bob synced without errors");
    });
}

#[test]
fn attach_to_a_running_openmsx_through_its_control_socket() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        // An openMSX the player started themselves, with no cartridge.
        let owner = msxsync::openmsx::OpenMsx::spawn(&launch(None))
            .await
            .unwrap();
        owner.command("set throttle off").await.unwrap();
        let pid = owner.pid().unwrap();
        let mut o = world.options("testgame", "ann");
        o.attach = Some(pid.to_string());
        let ann = common::e2e::start_player(o).await;
        let bob = world.player("bob").await;
        let what = "the attached player's write in bob";
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 1, 0x31, &[&bob], what).await;
        let what = "bob's write in the attached openMSX";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 2, 0x32, &[&ann], what).await;
        ann.stop().await.expect("ann synced without errors");
        // Leaving does not stop the player's own openMSX, and leaves no hooks behind.
        assert_eq!(
            owner
                .command("debug list_watchpoints")
                .await
                .unwrap()
                .trim(),
            ""
        );
        assert_eq!(owner.command("debug list_bp").await.unwrap().trim(), "");
        assert_eq!(owner.command("debug breaked").await.unwrap(), "0");
        bob.stop().await.expect("bob synced without errors");
        owner.shutdown().await.unwrap();
    });
}
