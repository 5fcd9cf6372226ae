//! The tracker page on the players' port: a real server on 127.0.0.1 (port 0), bot
//! players (library clients), plain HTTP requests, the server-sent event stream, and
//! the page itself in a real headless chromium.

mod common;

use common::chromium::Chromium;
use msxsync::client::{self, ClientSender};
use msxsync::counter::CounterOp;
use msxsync::delta::Change;
use msxsync::labels;
use msxsync::protocol::ServerMsg;
use msxsync::server::{self, http, ServerConfig, ServerHandle};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Every test finishes well within this; hitting it means a hang.
const DEADLINE: Duration = Duration::from_secs(120);

/// How long the page may take to show a change (the promise).
const SHOWN_WITHIN_MS: u64 = 1_000;

/// The built-in demo (items, crown, harp, a coins counter) on 127.0.0.1, port 0.
fn demo_server(config: ServerConfig) -> ServerHandle {
    server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        msxsync::builtin::games(),
        config,
    )
    .expect("server starts")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A bot in the demo: its sender; what it receives is read (and dropped) by a task of
/// its own, so that it answers the server's pings like a real player.
async fn bot(server: &str, name: &str) -> ClientSender {
    let mut c = client::connect(server, name).await.expect("connects");
    c.join("demo").await.expect("joins");
    let (tx, mut rx) = c.split();
    smol::spawn(async move { while rx.recv().await.is_ok() {} }).detach();
    tx
}

/// Sends `request` on a new connection and reads the whole answer (the server closes
/// after it): status line, headers, body.
fn http_exchange(addr: &str, request: &[u8]) -> (String, String, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(request).unwrap();
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).unwrap();
    let end = http::head_end(&all).expect("a whole response head");
    let head = String::from_utf8(all[..end].to_vec()).unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_string(), headers.to_string(), all[end..].to_vec())
}

fn get(addr: &str, path: &str) -> (String, String, Vec<u8>) {
    http_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

/// The server-sent event stream of `/events`, read event by event.
struct Events(BufReader<TcpStream>);

impl Events {
    fn open(addr: &str) -> Events {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut r = BufReader::new(tcp);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK\r\n");
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Events(r)
    }

    /// The next data event, and when it arrived.
    fn next(&mut self) -> (Value, Instant) {
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "the stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                return (serde_json::from_str(data).unwrap(), Instant::now());
            }
        }
    }
}

/// The demo room of a page state.
fn demo_room(sent: &Value) -> &Value {
    &sent["state"]["games"][0]["rooms"][0]
}

/// The part of the shared state called `name` in a room on the page.
fn item<'a>(room: &'a Value, name: &str) -> &'a Value {
    room["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {room}"))
}

/// Whether the group has the demo's flag or item `name` (page data).
fn has(room: &Value, name: &str) -> bool {
    item(room, name)["have"] == true
}

#[test]
fn browsers_get_the_page_its_data_or_a_clear_no_while_players_play() {
    let s = demo_server(ServerConfig::default());
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        let mut alice = bot(&addr, "alice").await;
        alice
            .send_changes(1, vec![Change::bytes(0, 0, vec![0x05])])
            .await
            .unwrap();
        let (status, headers, body) = get(&addr, "/");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.contains("Content-Type: text/html"), "{headers}");
        assert!(headers.contains("Content-Security-Policy: default-src 'none'"));
        assert_eq!(body, http::PAGE.as_bytes());
        common::until("alice's change in /state.json", async || {
            let (status, headers, body) = get(&addr, "/state.json");
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(
                headers.contains("Content-Type: application/json"),
                "{headers}"
            );
            let v: Value = serde_json::from_slice(&body).unwrap();
            let room = demo_room(&v);
            // 0x05: bits 0 and 2, the sword and the key.
            has(room, "sword")
                && has(room, "key")
                && !has(room, "shield")
                && room["players"][0]["name"] == "alice"
        })
        .await;
        let text = String::from_utf8(get(&addr, "/state.json").2).unwrap();
        for private in ["rom", "session", "127.0.0.1", "sha256", "password"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
        assert_eq!(get(&addr, "/nothing-here").0, "HTTP/1.1 404 Not Found");
        assert_eq!(
            http_exchange(&addr, b"POST /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            http_exchange(&addr, b"BREW /pot HTCPCP/1.0\r\n\r\n").0,
            "HTTP/1.1 400 Bad Request"
        );
        let huge = format!(
            "GET / HTTP/1.1\r\nCookie: {}\r\n\r\n",
            "x".repeat(http::MAX_HEAD_BYTES)
        );
        assert_eq!(
            http_exchange(&addr, huge.as_bytes()).0,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // Players kept playing through all of it, on the same port.
        let mut bob = client::connect(&addr, "bob").await.unwrap();
        let joined = bob.join("demo").await.unwrap();
        assert_eq!(joined.state[0], vec![0x05]);
        assert_eq!(joined.room.players.len(), 2);
        // Another room of the game, with its own state, shows after the game's own.
        let mut carol = client::connect(&addr, "carol").await.unwrap();
        carol.join_room("demo", "blue", 0).await.unwrap();
        let (mut carol, _rx) = carol.split();
        carol
            .send_changes(1, vec![Change::bytes(1, 0, vec![1])])
            .await
            .unwrap();
        common::until("carol's room on the page", async || {
            let v: Value = serde_json::from_slice(&get(&addr, "/state.json").2).unwrap();
            let rooms = &v["state"]["games"][0]["rooms"];
            rooms[0]["name"] == "demo"
                && rooms[1]["name"] == "blue"
                && rooms[1]["players"][0]["name"] == "carol"
                && has(&rooms[1], "crown")
                && !has(&rooms[0], "crown")
                && rooms[1]["events"][0]["text"] == "carol got the crown"
        })
        .await;
    });
}

#[test]
fn a_request_that_never_ends_is_closed_and_holds_up_nobody() {
    let s = demo_server(ServerConfig {
        hello_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    });
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        let mut slow = TcpStream::connect(&addr).unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x").unwrap();
        // Meanwhile a player changes the crown and gets it sequenced (its echo)...
        let mut alice = client::connect(&addr, "alice").await.unwrap();
        alice.join("demo").await.unwrap();
        let (mut tx, mut rx) = alice.split();
        tx.send_changes(1, vec![Change::bytes(1, 0, vec![1])])
            .await
            .unwrap();
        while !matches!(rx.recv().await.unwrap(), ServerMsg::Update { .. }) {}
        // ...and another one joins with it.
        let mut bob = client::connect(&addr, "bob").await.unwrap();
        assert_eq!(bob.join("demo").await.unwrap().state[1], [1]);
        // The unfinished request is closed once its time is up: read returns 0.
        slow.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(slow.read_to_end(&mut rest).unwrap(), 0);
    });
}

#[test]
fn events_push_the_latest_state_at_most_ten_times_a_second() {
    let s = demo_server(ServerConfig::default());
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        let mut events = Events::open(&addr);
        // The state as the stream opens.
        let (first, _) = events.next();
        assert!(!has(demo_room(&first), "sword"));
        assert!(first["now"].as_u64().unwrap() > 1_600_000_000_000);
        let mut alice = bot(&addr, "alice").await;
        // A burst: 200 batches, each a new value of items and one more coin.
        let burst = 200u32;
        let start = Instant::now();
        for b in 1..=burst {
            alice
                .send_changes(2 * b, vec![Change::bytes(0, 0, vec![b as u8])])
                .await
                .unwrap();
            alice
                .send_counts(
                    2 * b + 1,
                    vec![CounterOp::Add {
                        region: 3,
                        amount: 1,
                    }],
                )
                .await
                .unwrap();
        }
        let mut pushes = Vec::new();
        loop {
            let (sent, at) = events.next();
            let room = demo_room(&sent).clone();
            pushes.push(at);
            // The last value, 200 = 0xc8: bits 3, 6 and 7.
            let last = ["lamp", "ring", "potion"].iter().all(|n| has(&room, n));
            if item(&room, "coins")["value"] == burst && last && !has(&room, "sword") {
                let last = &room["events"][0];
                assert_eq!(last["who"], "alice");
                assert!(last["text"].as_str().unwrap().contains("coins +"), "{last}");
                break;
            }
        }
        // Pushes are at least PUSH_INTERVAL apart, however fast the changes came.
        let span = pushes.last().unwrap().duration_since(start);
        let most = span.as_millis() / http::PUSH_INTERVAL.as_millis() + 2;
        assert!(
            pushes.len() as u128 <= most,
            "{} pushes in {span:?}",
            pushes.len()
        );
        for pair in pushes.windows(2) {
            // A little slack for when the reader took each one off the socket.
            assert!(
                pair[1].duration_since(pair[0]) >= http::PUSH_INTERVAL / 2,
                "pushes {:?} apart",
                pair[1].duration_since(pair[0])
            );
        }
    });
}

#[test]
fn viewers_beyond_the_limit_are_told_to_come_back_later() {
    let s = demo_server(ServerConfig::default());
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        let mut open: Vec<Events> = (0..http::MAX_VIEWERS)
            .map(|_| Events::open(&addr))
            .collect();
        // Each has had its first push: all are counted.
        for e in &mut open {
            e.next();
        }
        let (status, headers, _) = get(&addr, "/events");
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert!(headers.contains("Retry-After: 10"), "{headers}");
        // The page itself, its data and players are still served.
        assert_eq!(get(&addr, "/state.json").0, "HTTP/1.1 200 OK");
        let mut c = client::connect(&addr, "alice").await.unwrap();
        c.join("demo").await.unwrap();
        // A viewer that goes frees its place.
        drop(open.pop());
        common::until("a place for a viewer again", async || {
            let mut tcp = TcpStream::connect(&addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            tcp.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .unwrap();
            let mut status = String::new();
            BufReader::new(tcp).read_line(&mut status).unwrap();
            status == "HTTP/1.1 200 OK\r\n"
        })
        .await;
    });
}

#[test]
fn the_tracker_can_be_turned_off_and_players_do_not_notice() {
    let s = demo_server(ServerConfig {
        tracker: false,
        ..ServerConfig::default()
    });
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        for path in ["/", "/state.json", "/events"] {
            assert_eq!(get(&addr, path).0, "HTTP/1.1 404 Not Found", "{path}");
        }
        let mut c = client::connect(&addr, "alice").await.unwrap();
        c.join("demo").await.unwrap();
    });
}

#[test]
fn serve_prints_where_the_tracker_page_is() {
    let games = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    common::e2e::games_folder(games.path());
    let mut serve = common::serve::Serve::start(games.path(), state.path(), &[]);
    let line = serve.wait_for("tracker page: ");
    assert_eq!(
        line,
        format!("tracker page: http://127.0.0.1:{}/", serve.port())
    );
    let (status, _, _) = get(&serve.addr, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let other_state = tempfile::tempdir().unwrap();
    let mut off = common::serve::Serve::start(games.path(), other_state.path(), &["--no-tracker"]);
    off.wait_for("tracker page: off (--no-tracker)");
}

/// Where screenshots go: target/ (next to target/tmp, whatever CARGO_TARGET_DIR says).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_page_in_a_real_browser_shows_a_change_within_a_second_without_reloading() {
    if !common::require_program("chromium") {
        return;
    }
    let s = demo_server(ServerConfig::default());
    let addr = s.addr().to_string();
    common::run_within(DEADLINE, async {
        let mut alice = bot(&addr, "alice").await;
        let mut bob = bot(&addr, "bob").await;
        // Something to see: alice took the sword and the key, bob the harp and three
        // coins; carol came and went.
        alice
            .send_changes(1, vec![Change::bytes(0, 0, vec![0b101])])
            .await
            .unwrap();
        bob.send_changes(1, vec![Change::bytes(2, 0, vec![1])])
            .await
            .unwrap();
        bob.send_counts(
            2,
            vec![CounterOp::Add {
                region: 3,
                amount: 3,
            }],
        )
        .await
        .unwrap();
        let mut carol = client::connect(&addr, "carol").await.unwrap();
        carol.join("demo").await.unwrap();
        carol.close().await;

        let mut browser = Chromium::start().await.expect("chromium starts");
        browser.screen(1000, 800, false).await.unwrap();
        browser.open(&format!("http://{addr}/")).await.unwrap();
        let text = "document.body.innerText";
        // Both players, with the latency of their first ping; carol gone; what the
        // group has by name (the sword and key flags, the harp item, not the crown);
        // the coins' amount; bob's change in words.
        let have = "[...document.querySelectorAll('.item.have')].map(e => e.textContent)";
        let lack = "[...document.querySelectorAll('.item.lack')].map(e => e.textContent)";
        browser
            .wait_until(
                "the page to show the players, their latency, the items and the coins",
                &format!(
                    "{text}.includes('alice') && {text}.includes('bob') && \
                     {text}.includes('gone') && \
                     ({text}.match(/latency [0-9.]+ ms/g) || []).length === 2 && \
                     {have}.join() === 'sword,key,harp' && {lack}.includes('crown') && \
                     {text}.includes('coins 3') && \
                     {text}.includes('bob got the harp, coins +3, ')"
                ),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|e| panic!("{e:#}\nchromium: {}", browser.log()));

        // A marker that a reload would wipe, and the moment the change shows, noted by
        // the page itself (not when this test happens to look).
        // The line as labels.rs words it, and its age after it.
        let line = labels::line("alice", &[labels::Event::Got("crown".into())]).unwrap();
        assert_eq!(line, "alice got the crown");
        let shown = format!("{line}, ");
        browser
            .eval(&format!(
                "window.msxsyncMarker = 42; window.shownAt = null; \
                 new MutationObserver(() => {{ \
                   if (window.shownAt === null && \
                       document.body.innerText.includes({shown:?})) \
                     window.shownAt = Date.now(); \
                 }}).observe(document.body, {{subtree: true, childList: true, characterData: true}}); \
                 true"
            ))
            .await
            .unwrap();
        let sent_at = now_ms();
        alice
            .send_changes(2, vec![Change::bytes(1, 0, vec![1])])
            .await
            .unwrap();
        browser
            .wait_until(
                "the page to show alice's crown",
                "window.shownAt !== null",
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let shown_at = browser
            .eval("window.shownAt")
            .await
            .unwrap()
            .as_u64()
            .unwrap();
        let took = shown_at.saturating_sub(sent_at);
        assert!(
            took <= SHOWN_WITHIN_MS,
            "the page showed the change {took} ms after it was sent"
        );
        assert_eq!(
            browser.eval("window.msxsyncMarker").await.unwrap(),
            Value::from(42),
            "the page was reloaded"
        );

        let shot = target_dir().join("tracker.png");
        browser.screenshot(&shot).await.unwrap();
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");

        // A phone: nothing wider than the screen.
        browser.screen(360, 740, true).await.unwrap();
        browser
            .wait_until(
                "the page to fit a phone's width",
                "document.documentElement.scrollWidth <= window.innerWidth",
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        browser
            .screenshot(&target_dir().join("tracker-phone.png"))
            .await
            .unwrap();
    });
}
