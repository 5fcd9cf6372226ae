//! Rooms: several groups play the same game on one server, each room with its own
//! shared state, players, saved state and backups; player names are unique within a
//! room; room and player names follow the rules of game names; rooms are capped.

mod common;

use common::e2e::{game_does, peek, server_join_room_at, start_player, wait_byte, World};
use common::play::{msxsync_command, signal, Play};
use common::serve::{Serve, TestgameServer};
use common::testrom::*;
use common::{change, require_openmsx, until, TIMEOUT};
use msxsync::client::{self, Client};
use msxsync::delta::Change;
use msxsync::play::Stats;
use msxsync::protocol::{PlayerId, ServerMsg};
use msxsync::server::limits::RoomLimits;
use msxsync::server::persist::{self, Saved};
use msxsync::server::{self, ServerConfig};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(TIMEOUT * 2).await;
        panic!("test did not finish within {:?}", TIMEOUT * 2);
    }))
}

/// A client in one room that records who sent every update it is sent.
struct Spy {
    /// (seq, player) of every update and counted message, in order.
    seen: Arc<Mutex<Vec<(u64, PlayerId)>>>,
    _task: smol::Task<()>,
}

impl Spy {
    async fn join(addr: &str, room: &str) -> Spy {
        let mut c = client::connect(addr, &common::unique_name("spy"))
            .await
            .expect("spy connects");
        c.join_room("testgame", room, 0).await.expect("spy joins");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let (keep_open, mut rx) = c.split();
        let task = smol::spawn(async move {
            let _keep_open = keep_open;
            while let Ok(msg) = rx.recv().await {
                if let ServerMsg::Update { seq, player, .. }
                | ServerMsg::Counted { seq, player, .. } = msg
                {
                    record.lock().unwrap().push((seq, player));
                }
            }
        });
        Spy { seen, _task: task }
    }

    fn last_seq(&self) -> u64 {
        self.seen.lock().unwrap().last().map_or(0, |s| s.0)
    }

    fn senders(&self) -> Vec<PlayerId> {
        let mut who: Vec<PlayerId> = self.seen.lock().unwrap().iter().map(|s| s.1).collect();
        who.dedup();
        who
    }
}

/// Joins room `room` of the test game as `name`.
async fn join_room(addr: &str, name: &str, room: &str) -> Result<Client, String> {
    let mut c = client::connect(addr, name)
        .await
        .map_err(|e| format!("{e:#}"))?;
    c.join_room("testgame", room, 0)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(c)
}

#[test]
fn two_rooms_of_a_game_never_exchange_a_byte() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let addr = world.addr();
    run(async {
        // A listener in each room, there before anyone plays.
        let spy_own = Spy::join(&addr, "testgame").await;
        let spy_friday = Spy::join(&addr, "friday").await;
        let mut bob = world.options("testgame", "bob");
        bob.room = Some("friday".into());
        let (ann, bob) = smol::future::zip(world.player("ann"), start_player(bob)).await;
        assert_eq!(ann.joined().room.name, "testgame");
        assert_eq!(bob.joined().room.name, "friday");
        let ann_id = ann.joined().player;
        let bob_id = bob.joined().player;

        // The same byte, two values; a byte only ann writes; coins in one room only.
        game_does(&ann, CMD_SET, SHARED0, 0x11).await;
        game_does(&ann, CMD_SET, SHARED0 + 1, 0x33).await;
        game_does(&bob, CMD_SET, SHARED0, 0x22).await;
        game_does(&ann, CMD_COUNT, COINS, 5).await;
        until("both rooms to have their player's changes", async || {
            let own = server_join_room_at(&addr, "testgame", "testgame").await;
            let friday = server_join_room_at(&addr, "testgame", "friday").await;
            own.state[0][..2] == [0x11, 0x33]
                && own.state[2] == [5, 0]
                && friday.state[0][0] == 0x22
        })
        .await;
        // Everyone has received every update of their own room.
        let own = server_join_room_at(&addr, "testgame", "testgame").await;
        let friday = server_join_room_at(&addr, "testgame", "friday").await;
        until("every update to reach its room's players", async || {
            Stats::get(&ann.stats().seq) >= own.seq
                && Stats::get(&bob.stats().seq) >= friday.seq
                && spy_own.last_seq() >= own.seq
                && spy_friday.last_seq() >= friday.seq
        })
        .await;
        wait_byte(&bob, SHARED0, 0x22, "bob's own value").await;
        wait_byte(&ann, SHARED0, 0x11, "ann's own value").await;

        // Nothing of ann's room reached bob's: not her byte, not her coins.
        assert_eq!(peek(&bob, SHARED0 + 1).await, 0);
        assert_eq!(
            [peek(&bob, COINS).await, peek(&bob, COINS + 1).await],
            [0, 0]
        );
        assert_eq!(friday.state[0][1], 0);
        assert_eq!(friday.state[2], [0, 0]);
        assert_eq!(own.state[0][0], 0x11);
        // Each room's updates came from its own player only, numbered on their own.
        assert_eq!(spy_own.senders(), [ann_id]);
        assert_eq!(spy_friday.senders(), [bob_id]);
        assert!(friday.seq < own.seq, "{} {}", friday.seq, own.seq);
        ann.stop().await.unwrap();
        bob.stop().await.unwrap();
    });
}

/// The saved state of room `room` of the test game in `dir`, if its file decodes.
fn saved(dir: &Path, room: &str) -> Option<Saved> {
    let file = std::fs::read(persist::room_file(dir, "testgame", room)).ok()?;
    persist::decode(&file).ok()
}

/// `msxsync ARGS --server ADDR`; its standard output, after checking it succeeded.
fn msxsync_ok(args: &[&str], addr: &str) -> String {
    let out = msxsync_command()
        .args(args)
        .args(["--server", addr])
        .output()
        .expect("msxsync runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn each_room_keeps_its_state_across_a_server_restart() {
    let mut first = TestgameServer::start();
    let addr = first.serve.addr.clone();
    let state = first.state.path().to_path_buf();
    run(async {
        let mut ann = join_room(&addr, "ann", "testgame").await.unwrap();
        let mut bob = join_room(&addr, "bob", "friday").await.unwrap();
        // A room made and left without a change is not kept.
        let cid = join_room(&addr, "cid", "empty").await.unwrap();
        // Three updates in the own room, two in friday's: a backup of the own room
        // says "update 3", which friday's list must not show.
        assert_eq!(
            change(&mut ann, 1, vec![Change::bytes(0, 0, vec![1])]).await,
            1
        );
        assert_eq!(
            change(&mut ann, 2, vec![Change::bytes(0, 1, vec![7])]).await,
            2
        );
        assert_eq!(
            change(&mut ann, 3, vec![Change::bytes(0, 1, vec![0])]).await,
            3
        );
        assert_eq!(
            change(&mut bob, 1, vec![Change::bytes(0, 0, vec![2, 3])]).await,
            1
        );
        assert_eq!(
            change(&mut bob, 2, vec![Change::bytes(0, 5, vec![4])]).await,
            2
        );
        for c in [ann, bob, cid] {
            c.close().await;
        }
        // Nobody left: both rooms are still listed, the empty one is gone.
        until("everyone to have left", async || {
            let list = {
                let mut c = client::connect(&addr, &common::unique_name("lister"))
                    .await
                    .unwrap();
                c.list_games().await.unwrap()
            };
            let game = list.iter().find(|g| g.name == "testgame").unwrap();
            let rooms = &game.rooms;
            rooms.len() == 2 && rooms.iter().all(|r| r.players.is_empty())
        })
        .await;
    });
    let stdout = msxsync_ok(&["list"], &addr);
    assert!(
        stdout.contains("  room testgame: nobody\n  room friday: nobody\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("room empty"), "{stdout}");
    // Stopping saves every room, each in its own file.
    signal(first.serve.child.id() as i32, "TERM");
    assert!(first.serve.child.wait().unwrap().success());
    let own = saved(&state, "testgame").expect("the own room's file");
    let friday = saved(&state, "friday").expect("friday's file");
    assert_eq!((own.seq, &own.bytes[..6]), (3, &[1, 0, 0, 0, 0, 0][..]));
    assert_eq!(
        (friday.seq, &friday.bytes[..6]),
        (2, &[2, 3, 0, 0, 0, 4][..])
    );
    assert!(saved(&state, "empty").is_none());

    let mut second = first.restart(&[]);
    second.wait_for("testgame, room friday: state loaded from");
    let addr = second.addr.clone();
    let stdout = msxsync_ok(&["list"], &addr);
    assert!(
        stdout.contains("  room testgame: nobody\n  room friday: nobody\n"),
        "{stdout}"
    );
    run(async {
        let own = server_join_room_at(&addr, "testgame", "testgame").await;
        let friday = server_join_room_at(&addr, "testgame", "friday").await;
        assert_eq!((own.seq, &own.state[0][..6]), (3, &[1, 0, 0, 0, 0, 0][..]));
        assert_eq!(
            (friday.seq, &friday.state[0][..6]),
            (2, &[2, 3, 0, 0, 0, 4][..])
        );
    });
    // The host's undo addresses a room: friday's saved states, not the own room's.
    let stdout = msxsync_ok(
        &["restore", "--game", "testgame", "--room", "friday"],
        &addr,
    );
    assert!(
        stdout.starts_with("saved states of room friday of game testgame, newest first"),
        "{stdout}"
    );
    assert!(stdout.contains("update 2"), "{stdout}");
    assert!(!stdout.contains("update 3"), "{stdout}");
    drop(second);
}

#[test]
fn a_taken_name_is_refused_in_its_room_only() {
    let game = msxsync::catalog::load_game(&common::e2e::testgame_regions()).unwrap();
    let server = server::start("127.0.0.1:0".parse().unwrap(), vec![game]).unwrap();
    let addr = server.addr().to_string();
    let _bob = run(async {
        let bob = join_room(&addr, "bob", "testgame").await.unwrap();
        for again in ["bob", "BOB", " bob"] {
            let e = join_room(&addr, again, "testgame").await.err().unwrap();
            assert!(
                e.ends_with(&format!(
                    "the name {again} is taken in game testgame; pick another with --name"
                )),
                "{e}"
            );
        }
        // Another room has its own names.
        let _other_bob = join_room(&addr, "bob", "friday").await.unwrap();
        let e = join_room(&addr, "bob", "friday").await.err().unwrap();
        assert!(
            e.ends_with(
                "the name bob is taken in room friday of game testgame; pick another with --name"
            ),
            "{e}"
        );
        bob
    });
    // msxsync play says so before it starts any emulator.
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start_as(&addr, "bob", cache.path(), &["--game", "testgame"]);
    assert_ne!(play.wait_exit(), 0);
    let out = play.out.all().join("\n");
    assert!(
        out.contains("the name bob is taken in game testgame; pick another with --name"),
        "{out}"
    );
    assert!(!out.contains("openMSX started"), "{out}");
}

#[test]
fn hostile_player_and_room_names_are_refused_with_clear_messages() {
    let game = msxsync::catalog::load_game(&common::e2e::testgame_regions()).unwrap();
    let server = server::start("127.0.0.1:0".parse().unwrap(), vec![game]).unwrap();
    let addr = server.addr().to_string();
    let huge = "x".repeat(10 * 1024);
    run(async {
        // Straight to the server, past msxsync play's own checks.
        let e = format!("{:#}", client::connect(&addr, &huge).await.err().unwrap());
        assert!(
            e.ends_with("player name is 10240 bytes long, the limit is 64"),
            "{e}"
        );
        for (room, why) in [
            (
                huge.as_str(),
                "room name is 10240 bytes long, the limit is 64".to_string(),
            ),
            (
                "fri\u{1b}[2Jday",
                "the room name 'fri\\u{1b}[2Jday' contains control characters; choose another room"
                    .to_string(),
            ),
            (
                "",
                "the room name is empty; choose another room".to_string(),
            ),
        ] {
            let e = join_room(&addr, "ann", room).await.err().unwrap();
            assert!(e.ends_with(&why), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
        // Nothing of those was made.
        let mut c = client::connect(&addr, "lister").await.unwrap();
        let rooms = &c.list_games().await.unwrap()[0].rooms;
        assert_eq!(rooms.len(), 1, "{rooms:?}");
    });
    // msxsync play refuses them itself, saying which option to change.
    let cache = tempfile::tempdir().unwrap();
    for (name, room, why) in [
        (
            "a\u{1b}]0;x\u{7}b",
            "testgame",
            "your player name 'a\\u{1b}]0;x\\u{7}b' contains control characters; give \
             another one with --name",
        ),
        (
            huge.as_str(),
            "testgame",
            "your player name is 10240 bytes long, the limit is 64; give another one with --name",
        ),
        (
            "ann",
            "r\u{7}",
            "the room name 'r\\u{7}' contains control characters; give another one with --room",
        ),
        (
            "ann",
            huge.as_str(),
            "the room name is 10240 bytes long, the limit is 64; give another one with --room",
        ),
    ] {
        let mut play = Play::start_as(
            &addr,
            name,
            cache.path(),
            &["--game", "testgame", "--room", room],
        );
        assert_ne!(play.wait_exit(), 0);
        let out = play.out.all().join("\n");
        assert!(out.contains(why), "{out}");
    }
}

/// A server of the test game with these room caps, keeping state in `state`.
fn capped_server(rooms: RoomLimits, state: &Path) -> server::ServerHandle {
    let game = msxsync::catalog::load_game(&common::e2e::testgame_regions()).unwrap();
    let config = ServerConfig {
        state_dir: Some(state.to_path_buf()),
        rooms,
        ..ServerConfig::default()
    };
    server::start_with("127.0.0.1:0".parse().unwrap(), vec![game], config).unwrap()
}

/// What a hostile client gets that makes room after room, writing into each so it is
/// kept: how many it made, and the refusal that stopped it.
async fn make_rooms(addr: &str) -> (usize, String) {
    let mut made = 0;
    loop {
        match join_room(addr, &format!("p{made}"), &format!("r{made}")).await {
            Ok(mut c) => {
                change(&mut c, 1, vec![Change::bytes(0, 0, vec![1])]).await;
                c.close().await;
                made += 1;
                assert!(made <= 100, "room {made} was made");
            }
            Err(e) => return (made, e),
        }
    }
}

#[test]
fn rooms_are_capped_per_game_in_total_and_in_bytes() {
    let state = tempfile::tempdir().unwrap();
    let server = capped_server(
        RoomLimits {
            per_game: 3,
            ..RoomLimits::default()
        },
        state.path(),
    );
    let addr = server.addr().to_string();
    run(async {
        // A room made and left without a change is dropped and does not count.
        join_room(&addr, "idle", "idle")
            .await
            .unwrap()
            .close()
            .await;
        let (made, refusal) = make_rooms(&addr).await;
        assert_eq!(made, 3);
        assert!(
            refusal.ends_with(
                "game testgame has 3 rooms besides its own, the most this server allows; \
                 join one of them (msxsync list shows them)"
            ),
            "{refusal}"
        );
        // Existing rooms can still be joined; the refused one was not made.
        join_room(&addr, "q", "r0").await.unwrap();
        let mut c = client::connect(&addr, "lister").await.unwrap();
        let rooms = &c.list_games().await.unwrap()[0].rooms;
        let names: Vec<&str> = rooms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["testgame", "r0", "r1", "r2"]);
    });
    // On disk: the kept rooms' files in one folder, nothing for the others.
    let stop = server.stop_and_save().expect("a state folder");
    assert!(stop.errors.is_empty(), "{:?}", stop.errors);
    let dir = persist::rooms_dir(state.path(), "testgame");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".state"))
        .collect();
    files.sort();
    assert_eq!(files, ["r0.state", "r1.state", "r2.state"]);

    // Over all games, in count and in bytes (the test game's room costs its 83 shared
    // bytes plus 1 KiB).
    for (limits, made_then, says) in [
        (
            RoomLimits {
                total: 2,
                ..RoomLimits::default()
            },
            2,
            "this server has 2 rooms besides the games' own, the most it allows; join one \
             of them (msxsync list shows them)",
        ),
        (
            RoomLimits {
                bytes: 3000,
                ..RoomLimits::default()
            },
            2,
            "the rooms of this server hold 2214 bytes and another room of game testgame \
             (1107 bytes) would pass the limit of 3000; join an existing room (msxsync list \
             shows them)",
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let server = capped_server(limits, state.path());
        let (made, refusal) = run(make_rooms(&server.addr().to_string()));
        assert_eq!(made, made_then, "{limits:?}");
        assert!(refusal.ends_with(says), "{refusal}");
    }
}

#[test]
fn msxsync_play_joins_the_room_it_is_given() {
    if !require_openmsx() {
        return;
    }
    let world = World::new();
    let addr = world.addr();
    let cache = tempfile::tempdir().unwrap();
    let mut play = Play::start_as(
        &addr,
        "dan",
        cache.path(),
        &["--game", "testgame", "--room", "friday"],
    );
    let line = play.wait_for("joined testgame");
    assert!(line.contains(" in room friday: "), "{line}");
    let stdout = msxsync_ok(&["list"], &addr);
    assert!(
        stdout.contains("  room friday: 1 playing: dan (#"),
        "{stdout}"
    );
    assert!(stdout.contains("  room testgame: nobody"), "{stdout}");
    signal(play.pid(), "INT");
    play.wait_exit();
}

#[test]
fn a_player_reconnecting_takes_its_own_name_back() {
    let game = msxsync::catalog::load_game(&common::e2e::testgame_regions()).unwrap();
    let server = server::start("127.0.0.1:0".parse().unwrap(), vec![game]).unwrap();
    let addr = server.addr().to_string();
    run(async {
        let mut old = client::connect(&addr, "ann").await.unwrap();
        old.join_room("testgame", "friday", 77).await.unwrap();
        // Its connection died without the server noticing yet; the same session comes
        // back on a new one and replaces it.
        let mut new = client::connect(&addr, "ann").await.unwrap();
        let j = new.join_room("testgame", "friday", 77).await.unwrap();
        let names: Vec<&str> = j.room.players.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ann"]);
        let end = loop {
            match old.recv().await {
                Ok(_) => continue,
                Err(e) => break format!("{e:#}"),
            }
        };
        assert!(
            end.contains("replaced: this player connected again"),
            "{end}"
        );
        // Another session with that name is someone else.
        let mut other = client::connect(&addr, "ann").await.unwrap();
        let e = format!(
            "{:#}",
            other.join_room("testgame", "friday", 78).await.unwrap_err()
        );
        assert!(e.contains("the name ann is taken"), "{e}");
    });
}

#[test]
fn serve_max_rooms_sets_the_rooms_a_game_may_have() {
    let games = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    common::e2e::games_folder(games.path());
    let serve = Serve::start(games.path(), state.path(), &["--max-rooms", "0"]);
    run(async {
        join_room(&serve.addr, "ann", "testgame").await.unwrap();
        let e = join_room(&serve.addr, "bob", "friday").await.err().unwrap();
        assert!(
            e.ends_with(
                "this server has no rooms besides the games' own; join game testgame \
                 without --room"
            ),
            "{e}"
        );
    });
    // A game's rooms must fit in the list players accept.
    let out = msxsync_command()
        .arg("serve")
        .arg("--games")
        .arg(games.path())
        .arg("--state-dir")
        .arg(state.path())
        .args(["--port", "0", "--max-rooms", "1024"])
        .output()
        .expect("msxsync runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-rooms must be below 1024"),
        "{stderr}"
    );
}
