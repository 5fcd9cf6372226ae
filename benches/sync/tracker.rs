//! Section 7: the tracker page: one `msxsync serve` process, N bot players in one game
//! each making R changes a second, and V viewers of the page's event stream
//! (`GET /events`, what the page listens to). How long a change takes to reach the
//! viewers, how often and how big the pushes are, and the server's CPU: how many
//! players and changes per second the page keeps up with.

use crate::fanout::{bot_executor, crowded_server};
use crate::json::Json;
use crate::report::{ms, Row, Section};
use crate::stats::{summarize, Summary};
use crate::sys::cpu_seconds;
use anyhow::{bail, Context, Result};
use msxsync::client;
use msxsync::delta::Change;
use msxsync::protocol::ServerMsg;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Viewers of the page in every step: a screen on the wall and a few phones.
const VIEWERS: usize = 8;

/// The page's promise: a change shows within a second.
const WITHIN_MS: f64 = 1000.0;

/// (players, changes a second per player), in the order they run.
const STEPS: [(usize, u32); 6] = [(8, 10), (32, 10), (128, 10), (32, 60), (64, 60), (128, 60)];

const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

/// One step's figures.
struct Step {
    players: usize,
    rate: u32,
    /// Changes sent during the measured part / pushes received by all viewers.
    changes: usize,
    pushes: usize,
    /// From a change sent to the first push (to each viewer) with it in.
    latency_ms: Option<Summary>,
    /// Changes the viewers never saw (before the stream was closed).
    missed: usize,
    /// Mean size of one push, bytes.
    push_bytes: f64,
    /// Server CPU, share of one core.
    cpu_percent: f64,
    /// Viewers whose stream broke.
    broken: usize,
    /// What it takes chromium to draw one push of the step's state (or why not known).
    draw: Result<f64, String>,
}

impl Step {
    fn keeps_up(&self) -> bool {
        self.missed == 0 && self.broken == 0 && self.latency_ms.is_some_and(|s| s.p99 <= WITHIN_MS)
    }

    fn json(&self) -> Json {
        let lat = self.latency_ms;
        Json::obj()
            .with("players", self.players)
            .with("changes_per_second_per_player", self.rate as u64)
            .with("viewers", VIEWERS)
            .with("changes_measured", self.changes)
            .with("pushes_received", self.pushes)
            .with("pushes_per_second_per_viewer", self.pushes_per_second())
            .with("push_bytes_mean", self.push_bytes)
            .with("latency_p50_ms", lat.map(|s| s.p50))
            .with("latency_p99_ms", lat.map(|s| s.p99))
            .with("latency_max_ms", lat.map(|s| s.max))
            .with("changes_missed", self.missed)
            .with("viewers_broken", self.broken)
            .with("server_cpu_percent_of_one_core", self.cpu_percent)
            .with("keeps_up", self.keeps_up())
            .with("browser_draw_ms", self.draw.as_ref().ok().copied())
    }

    fn pushes_per_second(&self) -> f64 {
        self.pushes as f64 / VIEWERS as f64 / MEASURE.as_secs_f64()
    }
}

/// Every change sent: when, and its seq once its bot had the echo.
type Sent = Arc<Mutex<Vec<(Instant, Option<u64>)>>>;

/// One viewer's pushes: when each arrived, the test game's `seq` in it, its size.
type Pushes = Vec<(Instant, u64, usize)>;

/// Reads `/events` from `addr` until `stop`, noting each push.
fn view(addr: &str, stop: &AtomicBool) -> Result<Pushes> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))?;
    tcp.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut r = BufReader::new(tcp);
    let mut pushes = Vec::new();
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match r.read_line(&mut line) {
            Ok(0) => bail!("the event stream ended"),
            Ok(_) => {}
            // A quiet half second (nothing changed): look at `stop` again; a line cut
            // by the timeout goes on in `line`.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e.into()),
        }
        if !line.ends_with('\n') {
            continue;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let at = Instant::now();
            let v: serde_json::Value = serde_json::from_str(data).context("a push")?;
            let seq = v["state"]["games"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["name"] == "testgame"))
                .and_then(|g| g["rooms"][0]["seq"].as_u64())
                .context("no testgame in a push")?;
            pushes.push((at, seq, line.len()));
        }
        line.clear();
    }
    Ok(pushes)
}

fn run_step(players: usize, rate: u32) -> Result<Step> {
    let serve = crowded_server()?;
    let pid = serve.pid();
    let addr = serve.addr.clone();
    let ex = bot_executor();
    // Every bot's (send time, seq) per batch: the seq from its own echo.
    let sent: Sent = Arc::default();
    let mut bots = Vec::new();
    for i in 0..players {
        let mut c = smol::block_on(client::connect(&addr, &format!("bot{i}")))?;
        let joined = smol::block_on(c.join("testgame")).context("joining testgame")?;
        let (tx, rx) = c.split();
        bots.push((tx, rx, joined.player));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let addr = addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || view(&addr, &stop))
        })
        .collect();
    let period = Duration::from_secs(1) / rate;
    let total = ((WARMUP + MEASURE).as_secs_f64() * f64::from(rate)).round() as usize;
    let start_at = Instant::now() + Duration::from_millis(300);
    let measure_from = start_at + WARMUP;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, (mut tx, mut rx, me)) in bots.into_iter().enumerate() {
        let sent = sent.clone();
        let stop = stop.clone();
        let phase = period.mul_f64(i as f64 / players as f64);
        // (bot, batch) -> index in `sent`.
        let mine: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
        let mine_rx = mine.clone();
        let sent_rx = sent.clone();
        senders.push(ex.0.spawn(async move {
            for k in 0..total {
                smol::Timer::at(start_at + phase + period * k as u32).await;
                let change = Change::bytes(1, (i % 64) as u16, vec![k as u8 ^ 0x55]);
                let at = Instant::now();
                let index = {
                    let mut s = sent.lock().unwrap();
                    s.push((at, None));
                    s.len() - 1
                };
                mine.lock().unwrap().insert(k as u32, index);
                if tx.send_changes(k as u32, vec![change]).await.is_err() {
                    break;
                }
            }
            tx
        }));
        receivers.push(ex.0.spawn(async move {
            // Drain everything (a player that does not read is closed as too slow),
            // noting the seq of this bot's own echoes.
            while !stop.load(Ordering::SeqCst) {
                let msg = smol::future::or(async { Some(rx.recv().await) }, async {
                    smol::Timer::after(Duration::from_millis(200)).await;
                    None
                })
                .await;
                match msg {
                    Some(Ok(ServerMsg::Update {
                        player, batch, seq, ..
                    })) if player == me => {
                        // One lock at a time (the sender takes them the other way).
                        let at = mine_rx.lock().unwrap().get(&batch).copied();
                        if let Some(at) = at {
                            sent_rx.lock().unwrap()[at].1 = Some(seq);
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(_)) => break,
                }
            }
            rx
        }));
    }
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let cpu0 = cpu_seconds(pid)?;
    let w0 = Instant::now();
    let end = measure_from + MEASURE;
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let cpu1 = cpu_seconds(pid)?;
    let wall = w0.elapsed().as_secs_f64();
    // The page in a real browser, with the step's players and changes going on.
    let draw = smol::block_on(draw_ms(&addr)).map_err(|e| format!("{e:#}"));
    // Time for the last changes to show, then stop everything.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let mut views = Vec::new();
    let mut broken = 0;
    for v in viewers {
        match v.join() {
            Ok(Ok(p)) => views.push(p),
            _ => broken += 1,
        }
    }
    // The connections close once both halves are back and dropped.
    let open: Vec<_> = senders.into_iter().map(smol::block_on).collect();
    let open_rx: Vec<_> = receivers.into_iter().map(smol::block_on).collect();
    drop((open, open_rx));
    drop(ex);
    drop(serve);
    let sent = sent.lock().unwrap().clone();
    let measured: Vec<(Instant, u64)> = sent
        .iter()
        .filter(|(at, _)| *at >= measure_from && *at < end)
        .filter_map(|&(at, seq)| seq.map(|s| (at, s)))
        .collect();
    let unechoed = sent
        .iter()
        .filter(|(at, seq)| *at >= measure_from && *at < end && seq.is_none())
        .count();
    let mut latency = Vec::new();
    let mut missed = unechoed;
    let mut pushes = 0;
    let mut bytes = 0usize;
    for p in &views {
        pushes += p
            .iter()
            .filter(|(at, _, _)| *at >= measure_from && *at < end)
            .count();
        bytes += p.iter().map(|(_, _, b)| b).sum::<usize>();
        for &(at, seq) in &measured {
            // Pushes come in seq order: the first with this change in.
            let i = p.partition_point(|&(_, s, _)| s < seq);
            match p.get(i) {
                Some(&(shown, _, _)) => {
                    latency.push(shown.saturating_duration_since(at).as_secs_f64() * 1e3)
                }
                None => missed += 1,
            }
        }
    }
    let all_pushes: usize = views.iter().map(Vec::len).sum();
    Ok(Step {
        players,
        rate,
        changes: measured.len() + unechoed,
        pushes,
        latency_ms: summarize(&latency),
        missed,
        push_bytes: if all_pushes == 0 {
            0.0
        } else {
            bytes as f64 / all_pushes as f64
        },
        cpu_percent: 100.0 * (cpu1 - cpu0) / wall,
        broken,
        draw,
    })
}

/// How long chromium takes to draw the page's data of the server at `addr`: the
/// page's own drawing functions (its scripts' globals) run on the state `/state.json`
/// gives, 20 times, each followed by a layout; the median. `Err` without chromium.
async fn draw_ms(addr: &str) -> Result<f64> {
    if !std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("chromium").is_file()))
    {
        bail!("chromium is not installed");
    }
    let mut browser = crate::chromium::Chromium::start().await?;
    browser.screen(1000, 800, false).await?;
    browser.open(&format!("http://{addr}/")).await?;
    let took = browser
        .eval(
            "(async () => { \
               const sent = await (await fetch('state.json')).json(); \
               const times = []; \
               for (let i = 0; i < 20; i++) { \
                 const t0 = performance.now(); \
                 games.replaceChildren(...sent.state.games.map(game)); \
                 document.body.offsetHeight; \
                 times.push(performance.now() - t0); \
               } \
               times.sort((a, b) => a - b); \
               return times[10]; \
             })()",
        )
        .await?;
    took.as_f64().context("no time from the page")
}

/// Runs the section.
pub fn run() -> Section {
    let title = "7. Tracker page";
    let mut steps = Vec::new();
    let mut error = None;
    for (players, rate) in STEPS {
        match run_step(players, rate) {
            Ok(s) => steps.push(s),
            Err(e) => {
                error = Some(format!("{players} players x {rate}/s: {e:#}"));
                break;
            }
        }
    }
    if steps.is_empty() {
        return Section::failed("tracker", title, error.unwrap_or_default());
    }
    let mut rows = Vec::new();
    for s in &steps {
        let lat = s.latency_ms;
        rows.push(Row::target(
            format!(
                "{} players x {} changes/s = {} changes/s, {VIEWERS} viewers: change to viewer p50 / p99 / max",
                s.players,
                s.rate,
                s.players as u32 * s.rate
            ),
            format!(
                "{} / {} / {}",
                ms(lat.map_or(f64::NAN, |l| l.p50)),
                ms(lat.map_or(f64::NAN, |l| l.p99)),
                ms(lat.map_or(f64::NAN, |l| l.max))
            ),
            "p99 <= 1 s, none missed",
            s.keeps_up(),
        ));
        rows.push(Row::info(
            "  pushes per viewer per second, mean push size, server CPU, missed, browser draw",
            format!(
                "{:.1}/s, {:.1} KiB, {:.0} % of a core, {} missed{}; chromium draws one \
                 push in {}",
                s.pushes_per_second(),
                s.push_bytes / 1024.0,
                s.cpu_percent,
                s.missed,
                if s.broken > 0 {
                    format!(", {} viewers broke", s.broken)
                } else {
                    String::new()
                },
                match &s.draw {
                    Ok(t) => ms(*t),
                    Err(e) => format!("(not measured: {e})"),
                }
            ),
        ));
    }
    let best = steps
        .iter()
        .filter(|s| s.keeps_up())
        .map(|s| s.players * s.rate as usize)
        .max();
    rows.push(Row::info(
        "most changes/s the page kept up with (of those tried)",
        best.map_or("none of those tried".into(), |n| format!("{n}")),
    ));
    let mut notes = Vec::new();
    if let Some(e) = &error {
        notes.push(format!("A step could not run: {e}."));
    }
    let method = format!(
        "`msxsync serve` runs as its own process (release build) on 127.0.0.1 with the \
         test game. N bot players (library clients on a 2-thread executor in the bench \
         process, like section 3) join it; each changes one byte R times a second (the \
         send times spread evenly), and reads everything the server sends (each bot \
         notes the seq of its own echo). {VIEWERS} viewers (threads of the bench) read \
         `GET /events`, the stream the page listens to, and note when each push arrives \
         and the game's `seq` in it. A change's latency is from just before its bot sent \
         it to the first push (to each viewer) whose `seq` includes it: it counts the \
         server's sequencing, the wait for the next push (at most 10 a second) and \
         making and sending the page's data; the browser drawing it is measured \
         apart: after the measured part, with the bots still playing, a headless \
         chromium opens the page and runs its own drawing functions on the state of \
         `/state.json` 20 times, each followed by a layout (the median is shown). \
         {}s of warm-up, then {} s measured per step; server CPU is utime+stime of \
         the server over the measured part. Everything shares the machine's two cores, \
         so the bots' own fan-out traffic (N x (N-1) x R updates a second) weighs on \
         the figures.",
        WARMUP.as_secs(),
        MEASURE.as_secs()
    );
    Section {
        key: "tracker",
        title,
        method,
        rows,
        notes,
        json: Json::obj()
            .with("viewers", VIEWERS)
            .with("steps", steps.iter().map(Step::json).collect::<Vec<_>>())
            .with("most_changes_per_second_kept_up", best)
            .with("error", error),
    }
}
