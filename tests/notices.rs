//! End-to-end: the notices on the emulator screen. A change one player's game makes
//! reaches another player's screen worded with the item names of the regions file
//! (tests/roms/testgame.regions: `item: E00A sword`, `flag: E00B bit 0 lamp`...), and
//! never the screen of the player who made it; `-q` shows none. What a screen showed
//! is read back through the control connection from the hooks' notice log: openMSX's
//! message boxes fade after a few seconds.

mod common;

use common::e2e::{
    cut, game_does, game_does_seen_by, player_behind_a_proxy, restore, wait_ready, Emulator, World,
};
use common::play::Play;
use common::testrom::*;
use common::{require_openmsx, until};
use msxsync::openmsx::hooks::procs::NOTICE_LOG;
use msxsync::openmsx::OpenMsx;

/// The notices the screen of `p` showed so far (the hooks' log, one a line).
async fn notices(p: &impl Emulator) -> Vec<String> {
    let log = p.msx().command(NOTICE_LOG).await.expect("notice log");
    log.lines().map(str::to_string).collect()
}

/// Waits until the screen of `p` showed a notice containing `text`.
async fn wait_notice(p: &impl Emulator, text: &str) {
    until(&format!("the notice {text:?}"), async || {
        notices(p).await.iter().any(|n| n.contains(text))
    })
    .await;
}

/// The notices of `p`'s screen that name `name` as the one who did something.
async fn about(p: &impl Emulator, name: &str) -> Vec<String> {
    let said =
        |n: &String| n.starts_with(&format!("{name} ")) || n.starts_with(&format!("{name}:"));
    notices(p).await.into_iter().filter(said).collect()
}

/// The amounts of "NAME: coins +N" lines.
fn coin_lines(lines: &[String]) -> Vec<i64> {
    lines
        .iter()
        .filter_map(|n| n.split_once(": coins ")?.1.parse().ok())
        .collect()
}

#[test]
fn a_change_by_one_player_is_a_notice_on_the_others_screen_only() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (ann, bob) = world.ann_and_bob().await;
        // Ann's game picks up the sword (item: E00A sword).
        game_does_seen_by(&ann, CMD_SET, SWORD, 1, &[&bob], "ann's sword at bob").await;
        wait_notice(&bob, "ann got the sword").await;
        // Bob's game lights the lamp and gets the key (flag: E00B bit 0 lamp, bit 1
        // key) in one write: one line.
        let both = (1 << LAMP_BIT) | (1 << KEY_BIT);
        game_does_seen_by(&bob, CMD_OR, FLAGS, both, &[&ann], "bob's flags at ann").await;
        wait_notice(&ann, "bob got the lamp and the key").await;
        // Ann uses the sword: worded against the state it changed.
        game_does_seen_by(&ann, CMD_SET, SWORD, 0, &[&bob], "ann's sword gone at bob").await;
        wait_notice(&bob, "ann used the sword").await;
        // Ann's screen showed bob's line after her own first change came back to her
        // (the server sequenced it first), and her second is older than bob's screen
        // showing it; neither screen ever named its own player.
        assert_eq!(about(&ann, "ann").await, Vec::<String>::new());
        assert_eq!(about(&bob, "bob").await, Vec::<String>::new());
        let sword: Vec<String> = about(&bob, "ann")
            .await
            .into_iter()
            .filter(|n| n.contains("sword"))
            .collect();
        assert_eq!(sword, ["ann got the sword", "ann used the sword"]);
    });
}

#[test]
fn coins_and_players_coming_and_going_are_notices_too() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let ann = world.player("ann").await;
        let bob = world.player("bob").await;
        wait_notice(&ann, "bob joined msxsync test game").await;
        // Three coins, one a frame: one line once bob's game is done ("bob: coins
        // +3"), or more when ann's player was too busy to see them as one burst.
        game_does(&bob, CMD_COUNT, COINS, 3).await;
        until("ann's screen to show bob's 3 coins", async || {
            coin_lines(&about(&ann, "bob").await).iter().sum::<i64>() == 3
        })
        .await;
        bob.stop().await.expect("bob leaves");
        wait_notice(&ann, "bob left").await;
        let lines = about(&ann, "bob").await;
        assert_eq!(lines.first().unwrap(), "bob joined msxsync test game");
        assert_eq!(lines.last().unwrap(), "bob left");
        let coins = coin_lines(&lines);
        assert_eq!(lines.len(), 2 + coins.len(), "{lines:?}");
    });
}

#[test]
fn a_quiet_player_is_shown_no_notices() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let cache = tempfile::tempdir().unwrap();
    // `msxsync -q play` as a person runs it, attached to an openMSX of the test's own,
    // whose screen the test reads.
    let quiet = smol::block_on(async {
        let msx = OpenMsx::spawn(&launch(None)).await.expect("openmsx starts");
        msx.command("set throttle off").await.unwrap();
        msx
    });
    let pid = quiet.pid().unwrap().to_string();
    let extra = ["-q", "--game", "testgame", "--attach", &pid];
    let mut play = Play::start_as(&world.addr(), "quiet", cache.path(), &extra);
    play.wait_for("playing testgame");
    smol::block_on(async {
        wait_ready(&quiet).await;
        // Ann joining, and ann's sword, would each be a notice on quiet's screen.
        let ann = world.player("ann").await;
        let ann = ann.openmsx();
        game_does_seen_by(ann, CMD_SET, SWORD, 1, &[&quiet], "ann's sword at quiet").await;
        // Quiet's lamp reaches ann's screen after her gathering time: quiet had its
        // own notices due well before that, had it shown any. Twice, to be sure.
        let lamp = 1 << LAMP_BIT;
        game_does_seen_by(&quiet, CMD_OR, FLAGS, lamp, &[ann], "quiet's lamp at ann").await;
        wait_notice(ann, "quiet got the lamp").await;
        game_does_seen_by(
            ann,
            CMD_SET,
            SWORD,
            0,
            &[&quiet],
            "ann's sword gone at quiet",
        )
        .await;
        let key = 1 << KEY_BIT;
        game_does_seen_by(&quiet, CMD_OR, FLAGS, key, &[ann], "quiet's key at ann").await;
        wait_notice(ann, "quiet got the key").await;
        assert_eq!(notices(&quiet).await, Vec::<String>::new());
    });
}

#[test]
fn losing_the_connection_and_getting_it_back_are_notices() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let world = World::new();
        let (proxy, ann) = player_behind_a_proxy(&world, "ann").await;
        cut(&proxy, &ann).await;
        // The "…" is UTF-8 on its way into Tcl and back.
        wait_notice(&ann, "connection lost, retrying…").await;
        restore(&proxy, &ann).await;
        wait_notice(&ann, "back online").await;
        let log = notices(&ann).await;
        let at = |line: &str| log.iter().position(|n| n == line).expect(line);
        assert!(
            at("connection lost, retrying…") < at("back online"),
            "{log:?}"
        );
    });
}
