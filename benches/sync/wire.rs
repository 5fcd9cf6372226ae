//! Section 4: Wire size: what one change costs on the wire, measured through a byte-counting
//! TCP proxy between two real clients and a real server, next to a model of what the
//! original openmsx-sync sends for the same change.

use crate::json::Json;
use crate::report::{Row, Section};
use anyhow::{bail, Context, Result};
use msxsync::catalog::Game;
use msxsync::client::{self, ClientReceiver, ClientSender};
use msxsync::delta::{self, Change};
use msxsync::protocol::{self, ClientMsg, RegionInfo, ServerMsg};
use msxsync::server;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Game name used on both sides of the comparison (six letters, as in the
/// side-by-side run of docs/architecture.md, "The original tool", that gave 70 bytes up
/// and 78 down).
const GAME: &str = "sample";
/// The call id the original's client puts in a `notify` call; ids count up from 0
/// per connection, so two digits is the common case once a game runs.
const ORIGINAL_CALL_ID: u32 = 42;

/// WebSocket frame header bytes for a payload of `len` bytes (RFC 6455 5.2): 2 bytes,
/// plus 2 or 8 for extended lengths, plus the 4-byte masking key from client to server.
pub fn ws_header(len: usize, from_client: bool) -> usize {
    let ext = if len < 126 {
        0
    } else if len <= 0xffff {
        2
    } else {
        8
    };
    2 + ext + if from_client { 4 } else { 0 }
}

/// Python's `json.dumps` of a list of small integers (default separators ", ").
fn py_list(bytes: &[u8]) -> String {
    let items: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!("[{}]", items.join(", "))
}

/// The original client's message for a write to the region starting at `start` whose
/// whole content is now `region`: `g.notify(addr, data)`, an RPC call with an id,
/// which python-websocketd sends as `json.dumps(("call", (id, "notify", args, {})))`.
pub fn original_up(start: u16, region: &[u8], call_id: u32) -> usize {
    let text = format!(
        "[\"call\", [{call_id}, \"notify\", [\"{start:04x}\", {}], {{}}]]",
        py_list(region)
    );
    text.len() + ws_header(text.len(), true)
}

/// What the original server broadcasts to every player (the writer included):
/// `server.broadcast.update(game, addr, data)`, an RPC event without id.
pub fn original_down(game: &str, start: u16, region: &[u8]) -> usize {
    let text = format!(
        "[\"call\", [null, \"update\", [\"{game}\", \"{start:04x}\", {}], {{}}]]",
        py_list(region)
    );
    text.len() + ws_header(text.len(), false)
}

/// The original server's answer to the writer's `notify` call: `["return", [id, null]]`.
pub fn original_return(call_id: u32) -> usize {
    let text = format!("[\"return\", [{call_id}, null]]");
    text.len() + ws_header(text.len(), false)
}

/// Bytes counted by the proxy for one client connection.
#[derive(Default)]
struct Counter {
    up: AtomicU64,
    down: AtomicU64,
}

async fn pipe(mut from: TcpStream, mut to: TcpStream, count: Arc<Counter>, up: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Counted before forwarding, so a client that received bytes sees them counted.
        let c = if up { &count.up } else { &count.down };
        c.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.close().await;
}

/// A TCP proxy to `target` that counts bytes per accepted connection, in accept order.
async fn start_proxy(
    target: std::net::SocketAddr,
) -> Result<(String, Arc<Mutex<Vec<Arc<Counter>>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the counting proxy")?;
    let addr = listener.local_addr().context("proxy address")?.to_string();
    let counters: Arc<Mutex<Vec<Arc<Counter>>>> = Arc::default();
    let list = counters.clone();
    smol::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(target).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let c = Arc::new(Counter::default());
            if let Ok(mut l) = list.lock() {
                l.push(c.clone());
            }
            smol::spawn(pipe(client.clone(), upstream.clone(), c.clone(), true)).detach();
            smol::spawn(pipe(upstream, client, c, false)).detach();
        }
    })
    .detach();
    Ok((addr, counters))
}

async fn next_update(rx: &mut ClientReceiver) -> Result<(u32, Vec<Change>)> {
    loop {
        if let ServerMsg::Update { batch, changes, .. } = rx.recv().await? {
            return Ok((batch, changes));
        }
    }
}

struct Case {
    what: &'static str,
    region: usize,
    /// (offset, value) bytes written, on top of the current state.
    writes: Vec<(usize, u8)>,
}

struct Measured {
    what: &'static str,
    up: u64,
    down: u64,
    up_computed: usize,
    down_computed: usize,
    orig_up: usize,
    orig_down: usize,
    orig_return: usize,
    region_len: usize,
    changed: usize,
}

async fn measure_all() -> Result<Vec<Measured>> {
    let regions = vec![
        RegionInfo::bytes(0xe000, 0xe007, "8 bytes"),
        RegionInfo::bytes(0xc000, 0xc0ff, "256 bytes"),
    ];
    let game = Game::new(GAME, "wire size", regions.clone(), vec![0xc9; 16384]);
    let srv = server::start("127.0.0.1:0".parse()?, vec![game])?;
    let (proxy, counters) = start_proxy(srv.addr()).await?;
    let connect = |name: &'static str| {
        let proxy = proxy.clone();
        async move {
            let mut c = client::connect(&proxy, name).await?;
            let j = c.join(GAME).await?;
            Ok::<_, anyhow::Error>((c.split(), j))
        }
    };
    let ((mut a_tx, mut a_rx), _) = connect("a").await?;
    let ((_b_tx, mut b_rx), _) = connect("b").await?;
    // A hears that B joined; after that nothing else is in flight.
    loop {
        if let ServerMsg::PlayerJoined(_) = a_rx.recv().await? {
            break;
        }
    }
    let (ca, cb) = {
        let l = counters.lock().map_err(|_| anyhow::anyhow!("proxy lock"))?;
        if l.len() != 2 {
            bail!("proxy saw {} connections, expected 2", l.len());
        }
        (l[0].clone(), l[1].clone())
    };
    let mut state: Vec<Vec<u8>> = regions.iter().map(|r| vec![0u8; r.len()]).collect();
    let cases = [
        Case {
            what: "one byte changed, 8-byte region",
            region: 0,
            writes: vec![(3, 0x01)],
        },
        Case {
            what: "one byte changed, 256-byte region",
            region: 1,
            writes: vec![(100, 0x01)],
        },
        Case {
            what: "all 256 bytes changed, 256-byte region",
            region: 1,
            writes: (0..256).map(|i| (i, (i % 255) as u8 + 2)).collect(),
        },
    ];
    let mut out = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let batch = 1000 + k as u32;
        let old = state[case.region].clone();
        let mut new = old.clone();
        for &(o, v) in &case.writes {
            new[o] = v;
        }
        let changes = delta::diff(case.region as u16, &old, &new);
        let changed = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        state[case.region] = new.clone();
        let up_msg = protocol::encode(&ClientMsg::Changes {
            batch,
            changes: changes.clone(),
        });
        let (a_up0, b_down0) = (ca.up.load(Ordering::SeqCst), cb.down.load(Ordering::SeqCst));
        send(&mut a_tx, batch, changes).await?;
        let (_, echoed) = next_update(&mut a_rx).await?;
        let (_, got) = next_update(&mut b_rx).await?;
        if got != echoed {
            bail!("the two players received different updates");
        }
        let up = ca.up.load(Ordering::SeqCst) - a_up0;
        let down = cb.down.load(Ordering::SeqCst) - b_down0;
        // The server's real sequence number and player id, re-encoded for comparison.
        let down_msg = protocol::encode(&ServerMsg::Update {
            seq: k as u64 + 1,
            player: 1,
            batch,
            changes: got,
        });
        let start = regions[case.region].start;
        out.push(Measured {
            what: case.what,
            up,
            down,
            up_computed: up_msg.len() + ws_header(up_msg.len(), true),
            down_computed: down_msg.len() + ws_header(down_msg.len(), false),
            orig_up: original_up(start, &new, ORIGINAL_CALL_ID),
            orig_down: original_down(GAME, start, &new),
            orig_return: original_return(ORIGINAL_CALL_ID),
            region_len: new.len(),
            changed,
        });
    }
    srv.stop();
    Ok(out)
}

async fn send(tx: &mut ClientSender, batch: u32, changes: Vec<Change>) -> Result<()> {
    tx.send_changes(batch, changes).await
}

/// Runs the section.
pub fn run() -> Section {
    let title = "4. Wire size of one change";
    let result = smol::block_on(smol::future::or(measure_all(), async {
        smol::Timer::after(Duration::from_secs(30)).await;
        bail!("timed out after 30 s")
    }));
    let measured = match result {
        Ok(m) => m,
        Err(e) => return Section::failed("wire", title, format!("{e:#}")),
    };
    let mut rows = Vec::new();
    let mut json_cases = Vec::new();
    for m in &measured {
        rows.push(Row::info(
            format!("{}: msxsync up / down per player", m.what),
            format!("{} B / {} B", m.up, m.down),
        ));
        rows.push(Row::info(
            format!("{}: original (model) up / down per player", m.what),
            format!(
                "{} B / {} B (+{} B reply to the writer)",
                m.orig_up, m.orig_down, m.orig_return
            ),
        ));
        json_cases.push(
            Json::obj()
                .with("case", m.what)
                .with("region_bytes", m.region_len)
                .with("changed_bytes", m.changed)
                .with("msxsync_up_bytes", m.up)
                .with("msxsync_down_bytes_per_player", m.down)
                .with("msxsync_up_bytes_computed", m.up_computed)
                .with("msxsync_down_bytes_computed", m.down_computed)
                .with("original_up_bytes", m.orig_up)
                .with("original_down_bytes_per_player", m.orig_down)
                .with("original_return_bytes_to_writer", m.orig_return),
        );
    }
    let mut notes = Vec::new();
    let mismatched: Vec<&Measured> = measured
        .iter()
        .filter(|m| m.up as usize != m.up_computed || m.down as usize != m.down_computed)
        .collect();
    if mismatched.is_empty() {
        notes.push(
            "The bytes counted on the socket equal the encoded message plus the WebSocket \
             frame header computed from RFC 6455 for every case (no other frames were sent)."
                .into(),
        );
    } else {
        for m in mismatched {
            notes.push(format!(
                "{}: counted {} B up / {} B down, computed {} / {}: something else was sent \
                 in the window (a ping?) or a message was split.",
                m.what, m.up, m.down, m.up_computed, m.down_computed
            ));
        }
    }
    let method = format!(
        "Two library clients talk to an in-process server through a TCP proxy on 127.0.0.1 \
         that counts the bytes of each connection in each direction. After both joined, \
         player A sends one change and the bench waits until A got its echo and B the \
         update; **up** is what A's connection carried to the server, **down** what B's \
         connection carried back (every player gets the same update, A included as its \
         acknowledgement). That is the encoded bincode message plus the WebSocket frame \
         header (2 bytes, +2 for payloads of 126 bytes or more, +4 mask key from client \
         to server); TCP/IP headers are not counted on either side.\n\n\
         **Model of the original openmsx-sync** (from its client and server sources and \
         python-websocketd's RPC framing): on every write the client sends the *whole \
         region* as `[\"call\", [ID, \"notify\", [\"e000\", [0, 0, 1, ...]], {{}}]]` \
         (Python `json.dumps`, decimal bytes separated by \", \"); the server broadcasts \
         `[\"call\", [null, \"update\", [\"GAME\", \"e000\", [...]], {{}}]]` to every player \
         and answers the writer `[\"return\", [ID, null]]`. With a two-digit call id \
         ({ORIGINAL_CALL_ID}) and a six-letter game name (`{GAME}`) this gives 70 bytes up and 78 \
         down for one changed byte of an 8-byte region, the figures measured side by side \
         in docs/architecture.md (\"The original tool\"), which is what calibrates the model."
    );
    Section {
        key: "wire",
        title,
        method,
        rows,
        notes,
        json: Json::obj()
            .with("original_model_call_id", ORIGINAL_CALL_ID as u64)
            .with("original_model_game_name", GAME)
            .with("cases", json_cases),
    }
}

/// Self-checks run by `cargo test --benches`.
pub fn self_check() {
    assert_eq!(ws_header(10, false), 2);
    assert_eq!(ws_header(10, true), 6);
    assert_eq!(ws_header(126, false), 4);
    assert_eq!(ws_header(70_000, true), 14);
    // The calibration from docs/architecture.md: one changed byte of an 8-byte region.
    let region = [0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(original_up(0xe000, &region, ORIGINAL_CALL_ID), 70);
    assert_eq!(original_down(GAME, 0xe000, &region), 78);
}
