//! End-to-end: start-ups and restarts, with real headless openMSX players. The test
//! game's new-game routine sets the mode byte that `sync-when:` reads and then sets up
//! its shared variables in one of five patterns (cleared in the same frame, one frame
//! later, ten frames later, over five frames, or starting values that are not zero).
//! For each pattern: a player joining and starting a new game never changes the
//! group's state and gets it; a player's game over and new game reaches everyone under
//! the default rule (`on-restart: share`) and nobody under `on-restart: keep`, where
//! that player gets the group's state instead. Resets, loadstates and rewinds always
//! take the group's state (docs/architecture.md, "The settle period", "Restarts").

mod common;

use common::e2e::{
    game_does, game_does_seen_by, peek, post, server_state, shared, start_player, wait_ack,
    wait_byte, wait_caught_up, wait_converged, wait_ready, Emulator, World,
};
use common::lines::Lines;
use common::play::msxsync_command;
use common::testrom::*;
use common::{require_openmsx, TIMEOUT};
use msxsync::openmsx::OpenMsx;
use msxsync::play::{Player, Stats};
use std::path::Path;
use std::process::{Child, Stdio};

/// The game that shares restarts (the default rule).
const SHARE: &str = "share";
/// The same game with `on-restart: keep`.
const KEEP: &str = "keep";

/// A server with the test game twice, gated on its mode byte (1 = playing): as
/// [`SHARE`] and as [`KEEP`]. `settle` is what follows the condition (e.g.
/// " for 20 frames"), empty for the default period.
fn two_rules(dir: &Path, settle: &str) -> World {
    std::fs::copy(rom_path(), dir.join("testgame.rom")).unwrap();
    let text = std::fs::read_to_string(common::e2e::testgame_regions()).unwrap();
    let mut games = Vec::new();
    for (name, rule) in [(SHARE, ""), (KEEP, "on-restart: keep\n")] {
        let path = dir.join(format!("{name}.regions"));
        std::fs::write(
            &path,
            format!("{text}\nsync-when: E122 == 01{settle}\n{rule}"),
        )
        .unwrap();
        games.push(msxsync::catalog::load_game(&path).expect("test game loads"));
    }
    let server = msxsync::server::start("127.0.0.1:0".parse().unwrap(), games).expect("server");
    World {
        server,
        cache: tempfile::tempdir().unwrap(),
        games: dir.to_path_buf(),
    }
}

async fn player(world: &World, game: &str, name: &str) -> Player {
    start_player(world.options(game, name)).await
}

/// Times a player started syncing: took the group's state or shared its own.
fn syncs(p: &Player) -> (u64, u64) {
    (
        Stats::get(&p.stats().state_writes),
        Stats::get(&p.stats().shares),
    )
}

/// How a player started syncing after a new game.
#[derive(Debug, PartialEq, Eq)]
enum Synced {
    /// It took the group's state.
    Took,
    /// It sent its own as one change.
    Shared,
}

/// The player's game starts a new game with `pattern`; waits until its gate opened
/// after the settle period and says whether the player took the group's state or
/// shared its own. Nothing else may have started it syncing meanwhile.
async fn new_game(p: &Player, pattern: u8) -> Synced {
    let (took, shared) = syncs(p);
    game_does(p, CMD_NEW_GAME, 0, pattern).await;
    common::poll("the player to sync after its new game", TIMEOUT, || async {
        match syncs(p) {
            (t, s) if (t, s) == (took + 1, shared) => Some(Synced::Took),
            (t, s) if (t, s) == (took, shared + 1) => Some(Synced::Shared),
            (t, s) if (t, s) == (took, shared) => None,
            other => panic!(
                "synced more than once: {other:?} after {:?}",
                (took, shared)
            ),
        }
    })
    .await
}

/// The shared regions right after a new game with `pattern` set them up (in a game
/// whose counters nobody touched).
fn new_game_state(pattern: u8) -> Vec<Vec<u8>> {
    let mut state: Vec<Vec<u8>> = regions().iter().map(|r| vec![0; r.len()]).collect();
    if pattern == NG_STARTING_VALUES {
        state[0][..STARTING_VALUES.len()].copy_from_slice(&STARTING_VALUES);
    }
    state
}

/// Waits until the server holds `want`.
async fn wait_server(world: &World, game: &str, want: &[Vec<u8>], what: &str) {
    common::poll(what, TIMEOUT, || async {
        (server_state(world, game).await == want).then_some(())
    })
    .await;
}

/// The player's game picks up `n` coins, one a frame (the coins are a counter).
async fn pick_up_coins(p: &Player, n: u8) {
    game_does(p, CMD_COUNT, COINS, n).await;
    common::poll("the coins to be picked up", TIMEOUT, || async {
        (peek(p, COUNT_LEFT).await == 0).then_some(())
    })
    .await;
}

/// Index of the coins among the regions.
const COINS_REGION: usize = 2;

/// Updates from other players a player received.
fn received(p: &Player) -> u64 {
    Stats::get(&p.stats().updates_from_others)
}

/// Ann and bob start the [`SHARE`] game with `pattern`: ann's new game, the first,
/// gives the fresh group its values. They collect items; cy joins and starts a new
/// game: the group keeps everything and cy gets it, then all three sync both ways.
/// Then ann goes to game over and starts again: her new game reaches everyone, in one
/// change (and one of counter amounts), and what bob found while she was away stays.
async fn join_then_restart_shared(world: &World, pattern: u8) {
    let start = new_game_state(pattern);
    let (ann, bob) =
        smol::future::zip(player(world, SHARE, "ann"), player(world, SHARE, "bob")).await;
    assert_eq!(new_game(&ann, pattern).await, Synced::Shared, "ann seeds");
    wait_server(world, SHARE, &start, "ann's starting values on the server").await;
    // Bob's new game after ann's: the group has hers (only zero patterns leave it
    // with nothing, then bob shares nothing). Bob must have heard of it first: a
    // player who knows of no update takes the group for a fresh one and shares.
    wait_caught_up(&world.addr(), SHARE, &[&bob]).await;
    let bob_synced = new_game(&bob, pattern).await;
    if pattern == NG_STARTING_VALUES {
        assert_eq!(bob_synced, Synced::Took);
    }
    game_does(&ann, CMD_SET, SHARED0 + 2, 0x42).await;
    game_does(&bob, CMD_OR, SHARED0 + 3, 0x81).await;
    game_does(&ann, CMD_SET, SHARED1 + 7, 0x77).await;
    // A starting value changed too: a life lost.
    game_does(&bob, CMD_SET, SHARED0, 0x02).await;
    let earned = wait_converged(world, SHARE, &[&ann, &bob]).await;
    assert_eq!(earned[0][..4], [0x02, start[0][1], 0x42, 0x81]);
    assert_eq!(earned[1][7], 0x77);

    let cy = player(world, SHARE, "cy").await;
    // Cy's title screen writes stay home.
    game_does(&cy, CMD_SET, SHARED0 + 2, 0xcc).await;
    assert_eq!(new_game(&cy, pattern).await, Synced::Took, "cy joins");
    assert_eq!(
        wait_converged(world, SHARE, &[&ann, &bob, &cy]).await,
        earned,
        "the group kept everything"
    );
    assert_eq!(Stats::get(&cy.stats().batches_sent), 0);
    game_does_seen_by(&cy, CMD_SET, SHARED0 + 4, 0x44, &[&ann, &bob], "cy's write").await;
    let what = "bob's write in cy";
    game_does_seen_by(&bob, CMD_SET, SHARED1 + 9, 0x99, &[&cy], what).await;
    let what = "ann's write in cy";
    game_does_seen_by(&ann, CMD_SET, SHARED0 + 5, 0x55, &[&cy], what).await;
    pick_up_coins(&ann, 7).await;
    // Ann has seen all of it: what she restarts from is the group's state.
    wait_converged(world, SHARE, &[&ann, &bob, &cy]).await;

    game_does(&ann, CMD_MODE, 0, MODE_GAME_OVER).await;
    // While ann is on her game-over screen, bob finds something: her new game did
    // not change that byte since she last synced, so it stays.
    game_does(&bob, CMD_SET, SHARED1 + 20, 0x20).await;
    pick_up_coins(&bob, 5).await;
    wait_byte(&cy, SHARED1 + 20, 0x20, "bob's find in cy").await;
    wait_byte(&cy, COINS, 0x12, "bob's coins in cy").await;
    // Ann's new game also resets her coins: it spends the 7 she had. (Merged bit by
    // bit like bytes, 0x12 over her 0x07 would give 10, not 5.)
    game_does(&ann, CMD_SPEND, COINS, 0x07).await;
    let (bob_got, cy_got) = (received(&bob), received(&cy));
    assert_eq!(
        new_game(&ann, pattern).await,
        Synced::Shared,
        "ann restarts"
    );
    let mut want = start.clone();
    want[1][20] = 0x20;
    want[COINS_REGION][0] = 0x05;
    assert_eq!(
        wait_converged(world, SHARE, &[&ann, &bob, &cy]).await,
        want,
        "everyone has ann's new game, and bob's find and coins"
    );
    assert_eq!(
        (received(&bob) - bob_got, received(&cy) - cy_got),
        (2, 2),
        "the new game travelled as one change of bytes and one of amounts"
    );
    // And the game goes on together.
    let what = "cy's write in ann after her restart";
    game_does_seen_by(&cy, CMD_SET, SHARED0 + 6, 0x66, &[&ann], what).await;
    let what = "ann's write in bob after her restart";
    game_does_seen_by(&ann, CMD_SET, SHARED0 + 7, 0x77, &[&bob], what).await;
    for p in [ann, bob, cy] {
        p.stop().await.expect("synced without errors");
    }
}

/// Dan and eve play the [`KEEP`] game with `pattern` and collect items; dan goes to
/// game over and starts again: the group keeps its state and dan gets it.
async fn restart_kept(world: &World, pattern: u8) {
    let (dan, eve) =
        smol::future::zip(player(world, KEEP, "dan"), player(world, KEEP, "eve")).await;
    assert_eq!(new_game(&dan, pattern).await, Synced::Shared, "dan seeds");
    wait_server(
        world,
        KEEP,
        &new_game_state(pattern),
        "dan's values on the server",
    )
    .await;
    wait_caught_up(&world.addr(), KEEP, &[&eve]).await;
    new_game(&eve, pattern).await;
    game_does(&dan, CMD_SET, SHARED0 + 2, 0x42).await;
    game_does(&eve, CMD_SET, SHARED1 + 3, 0x33).await;
    game_does(&eve, CMD_SET, SHARED0, 0x02).await;
    pick_up_coins(&eve, 4).await;
    let earned = wait_converged(world, KEEP, &[&dan, &eve]).await;
    assert_eq!(earned[COINS_REGION][0], 0x04);

    let (dan_sent, eve_got) = (Stats::get(&dan.stats().batches_sent), received(&eve));
    game_does(&dan, CMD_MODE, 0, MODE_GAME_OVER).await;
    // Dan's new game resets his coins too; the group keeps them.
    game_does(&dan, CMD_SPEND, COINS, 0x04).await;
    assert_eq!(new_game(&dan, pattern).await, Synced::Took, "dan restarts");
    assert_eq!(
        wait_converged(world, KEEP, &[&dan, &eve]).await,
        earned,
        "the group kept its state"
    );
    assert_eq!(Stats::get(&dan.stats().batches_sent), dan_sent);
    assert_eq!(received(&eve), eve_got);
    let what = "dan's write in eve after his restart";
    game_does_seen_by(&dan, CMD_SET, SHARED0 + 8, 0x88, &[&eve], what).await;
    for p in [dan, eve] {
        p.stop().await.expect("synced without errors");
    }
}

/// Both rules for one new-game pattern, side by side.
fn new_game_pattern(pattern: u8, settle: &str) {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let world = two_rules(dir.path(), settle);
    smol::block_on(smol::future::zip(
        join_then_restart_shared(&world, pattern),
        restart_kept(&world, pattern),
    ));
}

#[test]
fn a_new_game_that_clears_in_the_same_frame() {
    new_game_pattern(NG_SAME_FRAME, "");
}

#[test]
fn a_new_game_that_clears_one_frame_later() {
    new_game_pattern(NG_NEXT_FRAME, "");
}

#[test]
fn a_new_game_that_clears_ten_frames_later() {
    new_game_pattern(NG_TEN_FRAMES, "");
}

#[test]
fn a_new_game_that_clears_over_five_frames_with_a_settle_period_of_its_own() {
    new_game_pattern(NG_SPREAD, " for 20 frames");
}

#[test]
fn a_new_game_with_starting_values() {
    new_game_pattern(NG_STARTING_VALUES, "");
}

/// Emulated seconds since the machine started.
async fn emulated_time(p: &Player) -> f64 {
    let t = p.openmsx().command("machine_info time").await.unwrap();
    t.trim().parse().unwrap()
}

#[test]
fn resets_loadstates_and_rewinds_take_the_groups_state() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let world = two_rules(dir.path(), "");
    // The path reaches Tcl hex-encoded, never pasted.
    let savestate = msxsync::hex::encode(dir.path().join("s").to_str().unwrap().as_bytes());
    smol::block_on(async {
        let (ann, bob) =
            smol::future::zip(player(&world, SHARE, "ann"), player(&world, SHARE, "bob")).await;
        new_game(&ann, NG_TEN_FRAMES).await;
        wait_caught_up(&world.addr(), SHARE, &[&bob]).await;
        new_game(&bob, NG_TEN_FRAMES).await;
        game_does(&ann, CMD_SET, SHARED0 + 1, 0x11).await;
        game_does(&bob, CMD_SET, SHARED1, 0x10).await;
        wait_converged(&world, SHARE, &[&ann, &bob]).await;

        // A reset: ann's game starts from its title again, and its new game only takes.
        ann.openmsx().command("reset").await.unwrap();
        common::poll("ann's game to restart", TIMEOUT, || async {
            (peek(&ann, READY).await == READY_VALUE && peek(&ann, SHARED0 + 1).await == 0)
                .then_some(())
        })
        .await;
        game_does(&bob, CMD_SET, SHARED0 + 2, 0x22).await;
        assert_eq!(
            new_game(&ann, NG_TEN_FRAMES).await,
            Synced::Took,
            "after a reset"
        );
        let state = wait_converged(&world, SHARE, &[&ann, &bob]).await;
        assert_eq!(
            state[0][1..3],
            [0x11, 0x22],
            "ann's reset did not wipe the group"
        );

        // A state saved just as a new game starts, its set-up still to come: the
        // loaded game clears its variables ten frames after the load.
        let ann_sent = Stats::get(&ann.stats().batches_sent);
        let msx = ann.openmsx();
        msx.command("debug break").await.unwrap();
        let seq = post(&ann, CMD_NEW_GAME, 0, NG_TEN_FRAMES).await;
        msx.command(&format!("savestate [binary decode hex {savestate}]"))
            .await
            .unwrap();
        // Take the command back before ann's game sees it.
        msx.command(&format!(
            "debug write memory {MB_SEQ} {}",
            seq.wrapping_sub(1)
        ))
        .await
        .unwrap();
        msx.command("debug cont").await.unwrap();
        let what = "bob's write in ann";
        game_does_seen_by(&bob, CMD_SET, SHARED0 + 3, 0x33, &[&ann], what).await;
        let (took, shared) = syncs(&ann);
        msx.command(&format!("loadstate [binary decode hex {savestate}]"))
            .await
            .unwrap();
        wait_ack(&ann, seq).await;
        common::poll("ann to take the state", TIMEOUT, || async {
            (syncs(&ann) != (took, shared)).then_some(())
        })
        .await;
        assert_eq!(syncs(&ann), (took + 1, shared), "after a loadstate");
        let state = wait_converged(&world, SHARE, &[&ann, &bob]).await;
        assert_eq!(
            state[0][1..4],
            [0x11, 0x22, 0x33],
            "the loaded start-up stayed home"
        );
        assert_eq!(Stats::get(&ann.stats().batches_sent), ann_sent);

        // A rewind between a game over and a new game: that new game is no restart of
        // the shared game (it follows a rewind), so it takes the group's state. (The
        // loaded state is a new machine: its rewind history starts now.)
        ann.openmsx().command("reverse start").await.unwrap();
        game_does(&ann, CMD_MODE, 0, MODE_GAME_OVER).await;
        let over = emulated_time(&ann).await;
        common::poll("some emulated time", TIMEOUT, || async {
            (emulated_time(&ann).await > over + 1.0).then_some(())
        })
        .await;
        game_does(&bob, CMD_SET, SHARED0 + 4, 0x44).await;
        // The rewind pauses ann's game until her msxsync has handled it, so the new
        // game below comes after it.
        ann.openmsx()
            .command(&format!("reverse goto {}", over + 0.5))
            .await
            .unwrap();
        assert_eq!(
            new_game(&ann, NG_TEN_FRAMES).await,
            Synced::Took,
            "after a rewind"
        );
        let state = wait_converged(&world, SHARE, &[&ann, &bob]).await;
        assert_eq!(state[0][1..5], [0x11, 0x22, 0x33, 0x44]);
        assert_eq!(Stats::get(&ann.stats().batches_sent), ann_sent);
        game_does_seen_by(&ann, CMD_SET, SHARED0 + 5, 0x55, &[&bob], "ann syncs again").await;
        ann.stop().await.expect("ann synced without errors");
        bob.stop().await.expect("bob synced without errors");
    });
}

/// `msxsync play --attach` into an openMSX this test drives (the test cartridge goes
/// in and the machine resets), with its output captured.
struct CliPlayer {
    msx: OpenMsx,
    child: Child,
    out: Lines,
}

impl CliPlayer {
    async fn start(world: &World, game: &str, name: &str) -> CliPlayer {
        let msx = OpenMsx::spawn(&launch(None)).await.unwrap();
        msx.command("set throttle off").await.unwrap();
        let mut child = msxsync_command()
            .args(["play", "--headless", "--game", game, "--name", name])
            .arg("--server")
            .arg(world.server.addr().to_string())
            .arg("--attach")
            .arg(msx.pid().unwrap().to_string())
            .arg("--cache-dir")
            .arg(world.cache.path())
            .env_remove("RUST_LOG")
            .env_remove("MSXSYNC_TRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msxsync play starts");
        let out = Lines::capture(&mut child);
        let mut p = CliPlayer { msx, child, out };
        p.out
            .wait_for("waiting for the game to reach the shared part");
        wait_ready(&p).await;
        p
    }

    /// Waits for the output line containing `needle`; returns it.
    fn says(&mut self, needle: &str) -> String {
        self.out.wait_for(needle)
    }
}

impl Emulator for CliPlayer {
    fn msx(&self) -> &OpenMsx {
        &self.msx
    }
}

impl Drop for CliPlayer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn play_says_in_one_line_why_it_takes_or_shares() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let world = two_rules(dir.path(), "");
    smol::block_on(async {
        // Share: ann is the first (a fresh group), then restarts.
        let mut ann = CliPlayer::start(&world, SHARE, "ann").await;
        game_does(&ann, CMD_NEW_GAME, 0, NG_STARTING_VALUES).await;
        ann.says("the group has no shared state yet: sharing this game's starting values");
        wait_server(
            &world,
            SHARE,
            &new_game_state(NG_STARTING_VALUES),
            "ann's values",
        )
        .await;
        game_does(&ann, CMD_MODE, 0, MODE_GAME_OVER).await;
        ann.says(
            "holding: the game left the shared part (sync-when is false: the title or game over)",
        );
        game_does(&ann, CMD_NEW_GAME, 0, NG_SAME_FRAME).await;
        ann.says(
            "game restarted (it went back through the title or game over): sharing its new \
             game with the group (on-restart: share)",
        );
        wait_server(
            &world,
            SHARE,
            &new_game_state(NG_SAME_FRAME),
            "ann's new game",
        )
        .await;

        // Keep: dan gives the group its values, bob joins, then restarts.
        let dan = player(&world, KEEP, "dan").await;
        new_game(&dan, NG_STARTING_VALUES).await;
        wait_server(
            &world,
            KEEP,
            &new_game_state(NG_STARTING_VALUES),
            "dan's values",
        )
        .await;
        let mut bob = CliPlayer::start(&world, KEEP, "bob").await;
        game_does(&bob, CMD_NEW_GAME, 0, NG_SAME_FRAME).await;
        let line = bob.says("joined the shared state of keep at update ");
        assert!(
            line.ends_with(": this game's start-up stays here"),
            "{line}"
        );
        game_does(&bob, CMD_MODE, 0, MODE_GAME_OVER).await;
        bob.says("holding: the game left the shared part");
        game_does(&bob, CMD_NEW_GAME, 0, NG_SAME_FRAME).await;
        let line = bob.says("game restarted (it went back through the title or game over): it takes the group's state of update ");
        assert!(line.ends_with(" (on-restart: keep)"), "{line}");
        // One line for each decision, none for anything else.
        let decisions = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| {
                    l.contains("sharing")
                        || l.contains("takes the group")
                        || l.contains("joined the shared")
                })
                .count()
        };
        assert_eq!(decisions(&ann.out.seen), 2, "{:#?}", ann.out.seen);
        assert_eq!(decisions(&bob.out.seen), 2, "{:#?}", bob.out.seen);
        assert_eq!(
            shared(&bob).await,
            new_game_state(NG_STARTING_VALUES),
            "bob got dan's values back"
        );
        dan.stop().await.expect("dan synced without errors");
    });
}
