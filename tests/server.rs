//! The sync server over real WebSockets on 127.0.0.1 (port 0), driven by the library
//! client: ordering, late joiners, bit merging, bad input, slow players, `msxsync list`.

mod common;

use async_tungstenite::tungstenite::Message;
use common::play::msxsync_command;
use common::serve::Serve;
use msxsync::catalog::{sha256, Game};
use msxsync::client::{self, Client, ClientReceiver};
use msxsync::delta::Change;
use msxsync::protocol::{
    self, ClientMsg, Joined, PlayerId, RegionInfo, ServerMsg, MAX_CLIENT_MESSAGE_BYTES,
};
use msxsync::server::{self, ServerConfig, ServerHandle};
use std::future::Future;
use std::time::Duration;

/// Every test finishes well within this; hitting it means a hang.
const DEADLINE: Duration = common::TIMEOUT;

fn run<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(smol::future::or(fut, async {
        smol::Timer::after(DEADLINE).await;
        panic!("test did not finish within {DEADLINE:?}");
    }))
}

fn region(start: u16, end: u16) -> RegionInfo {
    RegionInfo::bytes(start, end, "")
}

/// A game with an 8-byte region, a 1-byte region and a 4 KiB region.
fn game(name: &str) -> Game {
    let rom: Vec<u8> = (0..32768u32)
        .map(|i| (i * 7 + name.len() as u32) as u8)
        .collect();
    Game::new(
        name,
        format!("The {name} game"),
        vec![
            region(0xe000, 0xe007),
            region(0xe100, 0xe100),
            region(0xc000, 0xcfff),
        ],
        rom,
    )
}

fn start(config: ServerConfig) -> ServerHandle {
    server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        vec![game("beta"), game("alpha")],
        config,
    )
    .expect("server starts")
}

fn addr(s: &ServerHandle) -> String {
    s.addr().to_string()
}

async fn joined(server: &str, name: &str, game: &str) -> (Client, Joined) {
    let mut c = client::connect(server, name).await.expect("connects");
    let j = c.join(game).await.expect("joins");
    (c, j)
}

/// (seq, player, batch, changes) of the next update, skipping players coming and going.
async fn next_update(rx: &mut ClientReceiver) -> (u64, PlayerId, u32, Vec<Change>) {
    loop {
        match rx.recv().await.expect("receives") {
            ServerMsg::Update {
                seq,
                player,
                batch,
                changes,
            } => return (seq, player, batch, changes),
            ServerMsg::PlayerJoined(_) | ServerMsg::PlayerLeft(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads until the server closes this connection; returns its error text.
async fn closing_reason(rx: &mut ClientReceiver) -> String {
    loop {
        match rx.recv().await {
            Ok(_) => continue,
            Err(e) => return format!("{e:#}"),
        }
    }
}

/// Waits for `PlayerLeft` of `id` on `rx`, ignoring updates.
async fn wait_left(rx: &mut ClientReceiver, id: PlayerId) {
    loop {
        if let ServerMsg::PlayerLeft(p) = rx.recv().await.expect("receives") {
            if p.id == id {
                return;
            }
        }
    }
}

#[test]
fn clients_see_all_changes_in_the_same_order() {
    for n in [2usize, 3] {
        let s = start(ServerConfig::default());
        let server = addr(&s);
        run(async {
            let mut clients = Vec::new();
            for i in 0..n {
                clients.push(joined(&server, &format!("p{i}"), "alpha").await);
            }
            let per_client = 20u32;
            let mut halves = Vec::new();
            for (c, j) in clients {
                let (tx, rx) = c.split();
                halves.push((tx, rx, j.player));
            }
            // Everybody sends at once, before reading anything.
            for (i, (tx, _, _)) in halves.iter_mut().enumerate() {
                for b in 0..per_client {
                    let change = Change::bytes(0, (b % 8) as u16, vec![(i as u8) << 4 | b as u8]);
                    tx.send_changes(b, vec![change]).await.unwrap();
                }
            }
            let total = n * per_client as usize;
            let mut seen = Vec::new();
            for (_, rx, me) in halves.iter_mut() {
                let mut log = Vec::new();
                let mut own = Vec::new();
                for _ in 0..total {
                    let u = next_update(rx).await;
                    if u.1 == *me {
                        own.push(u.2);
                    }
                    log.push(u);
                }
                // The sender's own updates are its acknowledgements, in sending order.
                assert_eq!(own, (0..per_client).collect::<Vec<_>>());
                seen.push(log);
            }
            let seqs: Vec<u64> = seen[0].iter().map(|u| u.0).collect();
            assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
            for log in &seen[1..] {
                assert_eq!(log, &seen[0], "every player sees the same order");
            }
        });
    }
}

#[test]
fn a_session_that_reconnects_learns_which_of_its_batches_the_server_has() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let session = 0xfeed_beef;
        let mut c = client::connect(&server, "ann").await.unwrap();
        let j = c.join_session("alpha", session).await.unwrap();
        assert_eq!(j.last_batch, None, "a session the server never saw");
        let (mut tx, mut rx) = c.split();
        for batch in [7, 8] {
            tx.send_changes(batch, vec![Change::bytes(0, 0, vec![batch as u8])])
                .await
                .unwrap();
        }
        // Both are sequenced once the second echo is back; then the connection drops.
        while next_update(&mut rx).await.2 != 8 {}
        drop((tx, rx));
        let mut c = client::connect(&server, "ann").await.unwrap();
        let j = c.join_session("alpha", session).await.unwrap();
        assert_eq!(j.last_batch, Some(8));
        assert_eq!(j.state[0][0], 8);
        // Another session, or none, learns nothing of ann's.
        let mut other = client::connect(&server, "bob").await.unwrap();
        assert_eq!(
            other
                .join_session("alpha", session + 1)
                .await
                .unwrap()
                .last_batch,
            None
        );
        let (_, none) = joined(&server, "cyd", "alpha").await;
        assert_eq!(none.last_batch, None);
    });
}

#[test]
fn a_late_joiner_receives_the_current_state() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let (a, ja) = joined(&server, "ann", "alpha").await;
        assert_eq!(ja.seq, 0);
        assert!(!ja.in_progress);
        assert_eq!(ja.state, vec![vec![0; 8], vec![0], vec![0; 4096]]);
        assert_eq!(ja.regions.len(), 3);
        let (mut tx, mut rx) = a.split();
        tx.send_changes(1, vec![Change::bytes(0, 2, vec![0xaa, 0xbb])])
            .await
            .unwrap();
        tx.send_changes(2, vec![Change::bytes(2, 4095, vec![0x11])])
            .await
            .unwrap();
        assert_eq!(next_update(&mut rx).await.0, 1);
        assert_eq!(next_update(&mut rx).await.0, 2);

        let (_b, jb) = joined(&server, "bob", "alpha").await;
        assert_eq!(jb.seq, 2);
        assert!(jb.in_progress);
        assert_eq!(jb.state[0], vec![0, 0, 0xaa, 0xbb, 0, 0, 0, 0]);
        assert_eq!(jb.state[2][4095], 0x11);
        let names: Vec<&str> = jb.room.players.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob"]);
        // The first player hears about the second.
        match rx.recv().await.unwrap() {
            ServerMsg::PlayerJoined(p) => assert_eq!((p.id, p.name.as_str()), (jb.player, "bob")),
            other => panic!("unexpected {other:?}"),
        }
        // Another game is untouched.
        let (_c, jc) = joined(&server, "cid", "beta").await;
        assert_eq!(jc.seq, 0);
        assert_eq!(jc.state[0], vec![0; 8]);
    });
}

/// A room writes its updates to its players together, a few milliseconds' worth at a
/// time: a player who joins while updates wait for that write must get each update
/// after its snapshot once, and the others must hear of the join after the updates the
/// snapshot holds.
#[test]
fn a_player_joining_a_busy_room_gets_every_later_update_once_in_order() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let (a, _) = joined(&server, "ann", "alpha").await;
        let (mut tx, mut rx) = a.split();
        let bob_in = std::cell::Cell::new(false);
        // Ann keeps changing things, about 5 a millisecond, until 200 after bob is in.
        let sender = async {
            let mut b = 0u32;
            let mut after = 0;
            while after < 200 {
                tx.send_changes(b, vec![Change::bytes(0, (b % 8) as u16, vec![b as u8])])
                    .await
                    .unwrap();
                b += 1;
                if bob_in.get() {
                    after += 1;
                }
                if b.is_multiple_of(5) {
                    smol::Timer::after(Duration::from_millis(1)).await;
                }
            }
            (tx, b)
        };
        let joiner = async {
            // Join once the flood is under way.
            let mut first = Vec::new();
            while first.len() < 50 {
                first.push(next_update(&mut rx).await.0);
            }
            let joined = joined(&server, "bob", "alpha").await;
            bob_in.set(true);
            (joined, first)
        };
        let ((_tx, flood), ((b, jb), first)) = smol::future::zip(sender, joiner).await;
        assert!(jb.seq < flood as u64, "bob joined during the flood");
        // Ann: every update once, in order, and bob's arrival right after the
        // update his snapshot ends with.
        let mut seqs = first;
        let mut bob_after = None;
        while seqs.len() < flood as usize {
            match rx.recv().await.unwrap() {
                ServerMsg::Update { seq, .. } => seqs.push(seq),
                ServerMsg::PlayerJoined(p) if p.name == "bob" => {
                    bob_after = Some(*seqs.last().unwrap())
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seqs, (1..=flood as u64).collect::<Vec<_>>());
        assert_eq!(
            bob_after,
            Some(jb.seq),
            "ann hears of bob after his snapshot's updates"
        );
        // Bob: from the update after his snapshot on, each once.
        let (_btx, mut brx) = b.split();
        let mut bob = Vec::new();
        while bob.last() != Some(&(flood as u64)) {
            bob.push(next_update(&mut brx).await.0);
        }
        assert_eq!(bob, (jb.seq + 1..=flood as u64).collect::<Vec<_>>());
    });
}

#[test]
fn different_bits_of_one_byte_from_two_players_both_survive() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let (a, _) = joined(&server, "ann", "alpha").await;
        let (b, _) = joined(&server, "bob", "alpha").await;
        let (mut atx, mut arx) = a.split();
        let (mut btx, mut brx) = b.split();
        let bit = |v: u8| Change {
            region: 1,
            offset: 0,
            values: vec![v],
            masks: vec![v],
        };
        // Neither has seen the other's change when sending.
        let (ra, rb) = smol::future::zip(
            atx.send_changes(1, vec![bit(0x01)]),
            btx.send_changes(1, vec![bit(0x80)]),
        )
        .await;
        ra.unwrap();
        rb.unwrap();
        for rx in [&mut arx, &mut brx] {
            next_update(rx).await;
            next_update(rx).await;
        }
        let (_c, jc) = joined(&server, "cid", "alpha").await;
        assert_eq!(jc.state[1], vec![0x81]);
    });
}

#[test]
fn bad_input_closes_only_that_client_with_a_reason() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let (good, _) = joined(&server, "good", "alpha").await;
        let (mut gtx, mut grx) = good.split();
        let mut batch = 0;
        let cases: Vec<(&str, Message, &str)> = vec![
            (
                "garbage",
                Message::Binary(vec![0xde, 0xad, 0xbe, 0xef, 0xff].into()),
                "bad message",
            ),
            ("text", Message::text("hello"), "text messages are not part"),
            (
                "out of range",
                Message::Binary(
                    protocol::encode(&ClientMsg::Changes {
                        batch: 1,
                        changes: vec![Change::bytes(0, 7, vec![1, 2])],
                    })
                    .into(),
                ),
                "region has 8 bytes",
            ),
            (
                "unknown region",
                Message::Binary(
                    protocol::encode(&ClientMsg::Changes {
                        batch: 1,
                        changes: vec![Change::bytes(9, 0, vec![1])],
                    })
                    .into(),
                ),
                "the game has 3 regions",
            ),
            (
                "too large",
                Message::Binary(vec![0u8; MAX_CLIENT_MESSAGE_BYTES + 1].into()),
                "message too large",
            ),
            (
                "second hello",
                Message::Binary(
                    protocol::encode(&ClientMsg::Hello {
                        version: protocol::PROTOCOL_VERSION,
                        name: "x".into(),
                    })
                    .into(),
                ),
                "hello was already sent",
            ),
        ];
        for (what, msg, expected) in cases {
            let (bad, jb) = joined(&server, what, "alpha").await;
            let (mut btx, mut brx) = bad.split();
            btx.send_raw(msg).await.unwrap();
            let reason = closing_reason(&mut brx).await;
            assert!(reason.contains(expected), "{what}: {reason}");
            wait_left(&mut grx, jb.player).await;
            // The good client still works.
            batch += 1;
            gtx.send_changes(batch, vec![Change::bytes(0, 0, vec![batch as u8])])
                .await
                .unwrap();
            let (_, _, b, _) = next_update(&mut grx).await;
            assert_eq!(b, batch, "{what}");
        }
        // Messages in the wrong state, before joining.
        let mut c = client::connect(&server, "early").await.unwrap();
        c.send_changes(1, vec![Change::bytes(0, 0, vec![1])])
            .await
            .unwrap();
        let reason = format!("{:#}", c.recv().await.unwrap_err());
        assert!(reason.contains("changes before joining"), "{reason}");
        let mut c = client::connect(&server, "early").await.unwrap();
        let err = format!("{:#}", c.fetch_rom().await.unwrap_err());
        assert!(err.contains("fetchrom before joining"), "{err}");
        // The server is still fine for newcomers.
        let (_late, jl) = joined(&server, "late", "alpha").await;
        assert_eq!(jl.state[0][0], batch as u8);
    });
}

#[test]
fn wrong_protocol_version_and_missing_hello_are_refused_clearly() {
    let s = start(ServerConfig::default());
    let url = format!("ws://{}/", s.addr());
    run(async {
        let release = msxsync::version::VERSION;
        let server = format!("the server runs msxsync {release} (protocol 3)");
        for (first, expected) in [
            (
                ClientMsg::Hello {
                    version: 1,
                    name: "old".into(),
                },
                format!(
                    "protocol version mismatch: this player's msxsync is older (protocol 1), \
                     {server}: update msxsync on the player's machine to the server's \
                     release, {release}"
                ),
            ),
            (
                ClientMsg::Hello {
                    version: 4,
                    name: "new".into(),
                },
                format!(
                    "protocol version mismatch: this player's msxsync is newer (protocol 4), \
                     {server}: update msxsync on the server's machine, or play with the \
                     server's release, {release}"
                ),
            ),
            (
                ClientMsg::ListGames,
                "the first message must be hello, not listgames".into(),
            ),
            (
                ClientMsg::Hello {
                    version: protocol::PROTOCOL_VERSION,
                    name: " ".into(),
                },
                "the player name is empty; give a name".into(),
            ),
        ] {
            let (mut ws, _) = async_tungstenite::smol::connect_async(url.as_str())
                .await
                .unwrap();
            ws.send(Message::Binary(protocol::encode(&first).into()))
                .await
                .unwrap();
            use futures_util::StreamExt;
            let reply = ws.next().await.unwrap().unwrap();
            let Message::Binary(bytes) = reply else {
                panic!("{reply:?}")
            };
            let msg: ServerMsg = protocol::decode(&bytes).unwrap();
            assert_eq!(msg, ServerMsg::Error { reason: expected });
            // Then the server closes.
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
                Some(Ok(m)) => panic!("after the error: {m:?}"),
            }
        }
        // And it still serves.
        client::connect(&s.addr().to_string(), "fine")
            .await
            .unwrap();
    });
}

#[test]
fn unknown_game_error_lists_the_games() {
    let s = start(ServerConfig::default());
    run(async {
        let mut c = client::connect(&addr(&s), "ann").await.unwrap();
        let err = format!("{:#}", c.join("gamma").await.unwrap_err());
        assert!(
            err.contains("unknown game \"gamma\"; this server has: alpha, beta"),
            "{err}"
        );
    });
}

#[test]
fn list_games_and_fetch_rom() {
    let s = start(ServerConfig::default());
    run(async {
        let (mut a, j) = joined(&addr(&s), "ann", "beta").await;
        let games = a.list_games().await.unwrap();
        let names: Vec<&str> = games.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        assert_eq!(games[1].rooms.len(), 1);
        assert_eq!(games[1].rooms[0].players.len(), 1);
        assert_eq!(games[1].shared_bytes, 8 + 1 + 4096);
        let rom = a.fetch_rom().await.unwrap();
        assert_eq!(rom.len(), 32768);
        assert_eq!(rom, *game("beta").rom);
        assert_eq!(sha256(&rom), j.game.rom_sha256);
        assert_eq!(j.game.rom_size, 32768);
    });
}

#[test]
fn updates_sent_while_a_request_waits_are_not_lost() {
    let s = start(ServerConfig::default());
    run(async {
        let (mut a, _) = joined(&addr(&s), "ann", "alpha").await;
        let (b, _) = joined(&addr(&s), "bob", "alpha").await;
        let (mut btx, mut brx) = b.split();
        btx.send_changes(5, vec![Change::bytes(0, 0, vec![1])])
            .await
            .unwrap();
        // The update must be on its way to ann before her request. The server queues
        // an update for every player at once, so once bob has his echo, ann's copy is
        // queued too. (A round trip on another connection would prove nothing: the
        // server handles connections independently.)
        assert_eq!(next_update(&mut brx).await.2, 5);
        let rom = a.fetch_rom().await.unwrap();
        assert_eq!(rom.len(), 32768);
        let (_, rx) = a.split();
        let mut rx = rx;
        let (seq, _, batch, _) = next_update(&mut rx).await;
        assert_eq!((seq, batch), (1, 5));
    });
}

#[test]
fn a_player_that_never_reads_is_dropped_without_stalling_the_others() {
    let s = start(ServerConfig {
        queue_bytes: 64 * 1024,
        ..ServerConfig::default()
    });
    let server = addr(&s);
    run(async {
        let (slow, js) = joined(&server, "slow", "alpha").await;
        let (fast, _) = joined(&server, "fast", "alpha").await;
        let (watcher, _) = joined(&server, "watcher", "alpha").await;
        let (mut ftx, mut frx) = fast.split();
        let (_, mut wrx) = watcher.split();
        // Big updates fill the slow player's socket buffers quickly; then its queue.
        let mut sent = 0u32;
        let mut left = [false, false];
        let mut watcher_seq = 0;
        while !(left[0] && left[1]) {
            assert!(sent < 20_000, "the slow player was never dropped");
            sent += 1;
            let values = vec![sent as u8; 4000];
            ftx.send_changes(sent, vec![Change::bytes(2, 0, values)])
                .await
                .unwrap();
            // The fast player and the watcher keep getting every update promptly, and
            // in order; both hear that the slow player left.
            for (i, rx) in [&mut frx, &mut wrx].into_iter().enumerate() {
                loop {
                    match rx.recv().await.unwrap() {
                        ServerMsg::Update { batch, seq, .. } if batch == sent => {
                            if i == 1 {
                                assert_eq!(seq, watcher_seq + 1);
                                watcher_seq = seq;
                            }
                            break;
                        }
                        ServerMsg::PlayerLeft(p) if p.id == js.player => left[i] = true,
                        ServerMsg::PlayerJoined(_) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
        // The slow player, reading at last, finds its connection closed.
        let (_, mut srx) = slow.split();
        let reason = closing_reason(&mut srx).await;
        assert!(
            reason.contains("too slow") || reason.contains("closed") || reason.contains("failed"),
            "{reason}"
        );
        eprintln!("slow player dropped after {sent} updates of 4000 bytes: {reason}");
    });
}

#[test]
fn stopping_the_server_closes_connections() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    run(async {
        let (c, _) = joined(&server, "ann", "alpha").await;
        s.stop();
        let (_, mut rx) = c.split();
        let reason = closing_reason(&mut rx).await;
        assert!(reason.contains("server"), "{reason}");
        assert!(client::connect(&server, "bob").await.is_err());
    });
}

#[test]
fn msxsync_list_prints_games_and_players() {
    let s = start(ServerConfig::default());
    let server = addr(&s);
    let _players = run(async {
        let mut cid = client::connect(&server, "cid").await.expect("connects");
        cid.join_room("beta", "friday", 0).await.expect("joins");
        (
            joined(&server, "ann", "beta").await,
            joined(&server, "bob", "beta").await,
            cid,
        )
    });
    let out = msxsync_command()
        .args(["list", "--server", &server])
        .output()
        .expect("msxsync runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("serves 2 games"), "{stdout}");
    assert!(stdout.contains("alpha  \"The alpha game\""), "{stdout}");
    assert!(
        stdout.contains("rom 32768 bytes, 4105 shared bytes"),
        "{stdout}"
    );
    // Each game lists its own room first, then the others, with who is in each.
    assert!(stdout.contains("  room alpha: nobody\n"), "{stdout}");
    assert!(
        stdout.contains("  room beta: 2 playing: ann (#"),
        "{stdout}"
    );
    assert!(stdout.contains("bob (#"), "{stdout}");
    let beta = stdout.find("  room beta: ").expect("beta's own room");
    let friday = stdout
        .find("  room friday: 1 playing: cid (#")
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(beta < friday, "{stdout}");

    // A server that is not there: a clear error naming it.
    drop(s);
    let out = msxsync_command()
        .args(["list", "--server", &server])
        .output()
        .expect("msxsync runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot connect to server {server}")),
        "{stderr}"
    );
}

#[test]
fn one_byte_change_wire_size() {
    // What a one-byte change costs, payload plus WebSocket frame header (2 bytes, plus a
    // 4-byte mask key from client to server). docs/protocol.md quotes these figures.
    let change = Change {
        region: 0,
        offset: 5,
        values: vec![0x01],
        masks: vec![0x01],
    };
    let sizes = |n: u32| {
        let up = protocol::encode(&ClientMsg::Changes {
            batch: n,
            changes: vec![change.clone()],
        });
        let down = protocol::encode(&ServerMsg::Update {
            seq: n as u64,
            player: 3,
            batch: n,
            changes: vec![change.clone()],
        });
        (up.len() + 6, down.len() + 2)
    };
    assert_eq!(sizes(7), (15, 13));
    assert_eq!(sizes(1000), (17, 17));
    eprintln!(
        "one-byte change: {:?} bytes (up, down) with small numbers, {:?} at 1000",
        sizes(7),
        sizes(1000)
    );
}

#[test]
fn msxsync_serve_process_serves_a_games_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.rom"), vec![0x41u8; 16384]).unwrap();
    std::fs::write(
        dir.path().join("tiny.regions"),
        "tiny.rom\ntitle: Tiny\n# items\ne000 e007 items\n",
    )
    .unwrap();
    let mut serve = Serve::start(dir.path(), &dir.path().join("state"), &[]);
    let served = serve.wait_for("tiny: ");
    assert!(
        served.contains("tiny: Tiny (rom 16384 bytes, 8 shared bytes"),
        "{served}"
    );
    run(async {
        let (_c, j) = joined(&serve.addr, "ann", "tiny").await;
        assert_eq!(j.state, vec![vec![0; 8]]);
    });
    serve.wait_for("player \"ann\"");
    serve.wait_for("joined game tiny");
    serve.wait_for("left game tiny");
}

/// A game whose only region is a counter: coins, 3 BCD digits, low byte first.
fn coin_game() -> Game {
    use msxsync::counter::{Counter, Encoding};
    let coins = RegionInfo {
        kind: protocol::RegionKind::Counter(Counter {
            max: 999,
            ..Counter::full(Encoding::Bcd, 2)
        }),
        ..region(0xe048, 0xe049)
    };
    Game::new("coins", "Coins", vec![coins], vec![0x41; 16384])
}

#[test]
fn counter_amounts_sent_at_once_add_up_and_bit_changes_to_a_counter_are_refused() {
    use msxsync::counter::{Count, CounterOp};
    let s = server::start("127.0.0.1:0".parse().unwrap(), vec![coin_game()]).unwrap();
    let server = addr(&s);
    run(async {
        let (a, _) = joined(&server, "ann", "coins").await;
        let (b, _) = joined(&server, "bob", "coins").await;
        let (mut a_tx, mut a_rx) = a.split();
        let (mut b_tx, mut b_rx) = b.split();
        // Both pick up a coin at once; the server counts both.
        let one = vec![CounterOp::Add {
            region: 0,
            amount: 1,
        }];
        a_tx.send_counts(1, one.clone()).await.unwrap();
        b_tx.send_counts(1, one).await.unwrap();
        let mut totals = Vec::new();
        while totals.len() < 2 {
            match a_rx.recv().await.unwrap() {
                ServerMsg::Counted { counts, .. } => totals.extend(counts),
                ServerMsg::PlayerJoined(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let count = |total| Count {
            region: 0,
            amount: 1,
            total,
        };
        assert_eq!(totals, vec![count(1), count(2)]);
        let (_, joined) = joined(&server, "carl", "coins").await;
        assert_eq!(joined.state, vec![vec![0x02, 0x00]], "BCD, low byte first");
        // Bits of a counter would bypass the sum: refused, that connection closed.
        b_tx.send_changes(2, vec![Change::bytes(0, 0, vec![0x99])])
            .await
            .unwrap();
        let reason = closing_reason(&mut b_rx).await;
        assert!(
            reason.contains("change to region 0, which is a counter"),
            "{reason}"
        );
    });
}

#[test]
fn one_counter_change_wire_size() {
    // What one pickup costs, payload plus WebSocket frame header (2 bytes, plus a
    // 4-byte mask key from client to server). docs/protocol.md quotes these figures.
    use msxsync::counter::{Count, CounterOp};
    let sizes = |n: u32, total: u32| {
        let up = protocol::encode(&ClientMsg::Counts {
            batch: n,
            ops: vec![CounterOp::Add {
                region: 2,
                amount: 1,
            }],
        });
        let down = protocol::encode(&ServerMsg::Counted {
            seq: n as u64,
            player: 3,
            batch: n,
            counts: vec![Count {
                region: 2,
                amount: 1,
                total,
            }],
        });
        (up.len() + 6, down.len() + 2)
    };
    assert_eq!(sizes(7, 42), (12, 10));
    assert_eq!(sizes(7, 999), (12, 12));
    assert_eq!(sizes(1000, 999), (14, 16));
    eprintln!(
        "one-counter change: {:?} bytes (up, down) with small numbers, {:?} with a total \
         above 250, {:?} at 1000",
        sizes(7, 42),
        sizes(7, 999),
        sizes(1000, 999)
    );
}
