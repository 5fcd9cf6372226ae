//! Section 6: Under attack: the fan-out of section 3 (64 bots, 60 changes a second
//! each) while 1,000 idle connections hold the server, each having said Hello and then
//! nothing. The players' latency must stay within the fan-out targets and the server's
//! memory under 100 MB.

use crate::fanout::{bot_executor, games_dir, run_bots};
use crate::idle::{idle_connection, Idle};
use crate::json::Json;
use crate::report::{ms, Row, Section};
use crate::sys::{peak_rss, ServeProcess};
use anyhow::Result;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Idle connections opened before the players join.
const IDLE: usize = 1000;
/// Loopback addresses they come from (50 each, within the default 64 per address).
const IDLE_SOURCES: usize = 20;
/// Players, all from 127.0.0.1 (the default cap per address is 64).
const PLAYERS: usize = 64;

/// Resident memory of a process now (VmRSS), in bytes.
fn rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Opens the idle connections, a few dozen at a time.
fn open_idle(ex: &smol::Executor<'static>, server: SocketAddr) -> Vec<Idle> {
    let mut held = Vec::with_capacity(IDLE);
    for chunk in (0..IDLE).collect::<Vec<_>>().chunks(50) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let source = Ipv4Addr::new(127, 0, 1, 1 + (i % IDLE_SOURCES) as u8);
                ex.spawn(idle_connection(server, source))
            })
            .collect();
        held.extend(tasks.into_iter().filter_map(smol::block_on));
    }
    held
}

struct Outcome {
    idle: usize,
    /// The server's VmRSS before the idle connections, and with them.
    rss_before: u64,
    rss_idle: u64,
    setup_seconds: f64,
    step: crate::fanout::Step,
}

fn measure() -> Result<Outcome> {
    msxsync::server::raise_file_limit();
    // The default limits, except the total: the idle connections must all be held.
    let serve = ServeProcess::start_with(&games_dir(), &["--max-connections", "1200"], None)?;
    let pid = serve.pid();
    let server: SocketAddr = serve.addr.parse()?;
    let ex = bot_executor();
    let rss_before = rss(pid).unwrap_or(0);
    let t0 = Instant::now();
    let idle = open_idle(&ex.0, server);
    let setup_seconds = t0.elapsed().as_secs_f64();
    let rss_idle = rss(pid).unwrap_or(0);
    // The idle connections are closed 60 s after their Hello (they never join): the
    // measured part ends well before.
    let step = run_bots(
        &ex.0,
        &serve.addr,
        pid,
        PLAYERS,
        Duration::from_secs(2),
        Duration::from_secs(20),
    );
    drop(ex);
    let mut step = step?;
    step.peak_rss = peak_rss(pid).unwrap_or(0);
    let held = idle.len();
    drop(idle);
    Ok(Outcome {
        idle: held,
        rss_before,
        rss_idle,
        setup_seconds,
        step,
    })
}

/// Runs the section.
pub fn run() -> Section {
    let title = "6. Under attack: 1,000 idle connections and 64 players";
    let o = match measure() {
        Ok(o) => o,
        Err(e) => return Section::failed("hostile", title, format!("{e:#}")),
    };
    let s = &o.step;
    let lat = s.latency_ms;
    let p99 = s.p99();
    let peak = mb(s.peak_rss);
    let mut notes = Vec::new();
    if s.errors > 0 || s.received < s.expected {
        notes.push(format!(
            "Not every update arrived: {} of {} deliveries, {} connection errors.",
            s.received, s.expected, s.errors
        ));
    }
    let rows = vec![
        Row::info(
            format!("idle connections held (of {IDLE}), opened in"),
            format!("{} in {:.1} s", o.idle, o.setup_seconds),
        ),
        Row::info(
            "server memory before and with them (VmRSS), per idle connection",
            format!(
                "{:.1} MB, {:.1} MB, {:.1} KiB",
                mb(o.rss_before),
                mb(o.rss_idle),
                o.rss_idle.saturating_sub(o.rss_before) as f64 / 1024.0 / o.idle.max(1) as f64
            ),
        ),
        Row::info(
            "64 players x 60 changes/s, 20 s: changes sent / deliveries received",
            format!("{} / {} of {}", s.sent, s.received, s.expected),
        ),
        Row::info(
            "delivery latency p50",
            ms(lat.map(|l| l.p50).unwrap_or(f64::NAN)),
        ),
        Row::target("delivery latency p99", ms(p99), "< 5 ms", p99 < 5.0),
        Row::info(
            "server CPU (share of one core)",
            format!("{:.1} %", s.cpu_percent),
        ),
        Row::target(
            "server peak RSS (VmHWM)",
            format!("{peak:.1} MB"),
            "< 100 MB",
            peak < 100.0,
        ),
    ];
    let method = format!(
        "As section 3, with `msxsync serve --max-connections 1200` (its other limits at \
         their defaults). First {IDLE} WebSocket connections from {IDLE_SOURCES} loopback \
         addresses (127.0.1.x, {} each) say Hello and then neither read nor write; then \
         {PLAYERS} bots from 127.0.0.1 join the test game and send 60 one-byte changes a \
         second each for 2 s of warm-up and 20 s measured. The idle connections stay \
         open throughout (the server closes them 60 s after their Hello). Memory with the \
         idle connections is VmRSS just before the players join, and the peak is VmHWM \
         at the end.",
        IDLE / IDLE_SOURCES
    );
    Section {
        key: "hostile",
        title,
        method,
        rows,
        notes,
        json: Json::obj()
            .with("idle_connections", o.idle)
            .with("idle_setup_seconds", o.setup_seconds)
            .with("server_rss_before_idle_bytes", o.rss_before)
            .with("server_rss_with_idle_bytes", o.rss_idle)
            .with("players", s.json()),
    }
}
