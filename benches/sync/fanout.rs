//! Section 3: Server fan-out: one `msxsync serve` process, N bot players in one game (no
//! emulator), each sending 60 changes per second. Delivery latency from send to receipt
//! at every other player, the server's CPU share and peak RSS.

use crate::json::Json;
use crate::report::{ms, Row, Section};
use crate::stats::{summarize, Summary};
use crate::sys::{cpu_seconds, peak_rss, ServeProcess};
use anyhow::{Context, Result};
use msxsync::client::{self, ClientReceiver, ClientSender};
use msxsync::delta::Change;
use msxsync::protocol::{PlayerId, ServerMsg};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes per second per bot.
const RATE: u32 = 60;
/// Threads of the executor that runs the bots (the machine has two cores, shared with
/// the server process).
const BOT_THREADS: usize = 2;

/// Outcome of one run with a fixed number of players.
pub struct Step {
    pub players: usize,
    pub seconds: f64,
    pub latency_ms: Option<Summary>,
    pub sent: u64,
    pub expected: u64,
    pub received: u64,
    pub errors: usize,
    pub cpu_percent: f64,
    pub peak_rss: u64,
}

impl Step {
    pub fn p99(&self) -> f64 {
        self.latency_ms.map(|s| s.p99).unwrap_or(f64::INFINITY)
    }

    /// Every message delivered, nobody dropped, p99 under `limit_ms`.
    fn passes(&self, limit_ms: f64) -> bool {
        self.errors == 0 && self.received == self.expected && self.p99() < limit_ms
    }

    pub fn json(&self) -> Json {
        let lat = self.latency_ms;
        Json::obj()
            .with("players", self.players)
            .with("measured_seconds", self.seconds)
            .with("changes_sent", self.sent)
            .with("deliveries_expected", self.expected)
            .with("deliveries_received", self.received)
            .with("connection_errors", self.errors)
            .with("latency_samples", lat.map(|s| s.n))
            .with("latency_p50_ms", lat.map(|s| s.p50))
            .with("latency_p99_ms", lat.map(|s| s.p99))
            .with("latency_max_ms", lat.map(|s| s.max))
            .with("server_cpu_percent_of_one_core", self.cpu_percent)
            .with("server_peak_rss_bytes", self.peak_rss)
    }
}

/// `msxsync serve` with the test game, taking every bot from one address, up to 512
/// players in one game: above the default limits.
pub fn crowded_server() -> Result<ServeProcess> {
    ServeProcess::start_with(
        &games_dir(),
        &["--max-per-address", "512", "--max-players", "512"],
        None,
    )
}

pub fn games_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/roms")
}

/// Runs one step: `players` bots, `warmup` then `measure` of sending.
fn run_step(players: usize, warmup: Duration, measure: Duration) -> Result<Step> {
    let serve = crowded_server()?;
    let pid = serve.pid();
    let ex = bot_executor();
    let result = run_bots(&ex.0, &serve.addr, pid, players, warmup, measure);
    drop(ex);
    let mut step = result?;
    step.peak_rss = peak_rss(pid).unwrap_or(0);
    drop(serve);
    Ok(step)
}

/// The executor the bots run on, with its threads; they stop when it is dropped.
pub struct BotExecutor(
    pub Arc<smol::Executor<'static>>,
    Option<async_channel::Sender<()>>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Drop for BotExecutor {
    fn drop(&mut self) {
        if let Some(stop) = self.1.take() {
            stop.close();
        }
        for t in self.2.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts [`BOT_THREADS`] threads running one executor for the bots.
pub fn bot_executor() -> BotExecutor {
    let ex = Arc::new(smol::Executor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let threads: Vec<_> = (0..BOT_THREADS)
        .map(|_| {
            let ex = ex.clone();
            let stop = stop_rx.clone();
            std::thread::spawn(move || {
                let _ = smol::block_on(ex.run(stop.recv()));
            })
        })
        .collect();
    BotExecutor(ex, Some(stop_tx), threads)
}

/// Joins `players` bots to the test game on `addr` and has each send [`RATE`] changes
/// a second for `warmup` + `measure`; measures delivery latency and the server's CPU.
pub fn run_bots(
    ex: &Arc<smol::Executor<'static>>,
    addr: &str,
    pid: u32,
    players: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Step> {
    // Connect and join everyone first, a few at a time.
    let mut bots: Vec<(ClientSender, ClientReceiver, PlayerId)> = Vec::with_capacity(players);
    for chunk_start in (0..players).step_by(16) {
        let tasks: Vec<_> = (chunk_start..(chunk_start + 16).min(players))
            .map(|i| {
                let addr = addr.to_string();
                ex.spawn(async move {
                    let mut c = client::connect(&addr, &format!("bot{i}")).await?;
                    let j = c.join("testgame").await.context("joining testgame")?;
                    let (tx, rx) = c.split();
                    Ok::<_, anyhow::Error>((tx, rx, j.player))
                })
            })
            .collect();
        for t in tasks {
            bots.push(smol::block_on(t)?);
        }
    }
    let ids: Arc<HashMap<PlayerId, usize>> =
        Arc::new(bots.iter().enumerate().map(|(i, b)| (b.2, i)).collect());
    let period = Duration::from_secs(1) / RATE;
    let total = ((warmup + measure).as_secs_f64() * RATE as f64).round() as usize;
    let warm_batches = (warmup.as_secs_f64() * RATE as f64).round() as u32;
    let t0 = Instant::now();
    let start_at = t0 + Duration::from_millis(200);
    // sent[i][k]: nanoseconds after t0 at which bot i sent batch k, 0 = not sent.
    let sent: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..players)
            .map(|_| (0..total).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let sent_count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let end = start_at + warmup + measure;
    let recv_deadline = end + Duration::from_secs(3);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, (mut tx, mut rx, me)) in bots.into_iter().enumerate() {
        let sent_w = sent.clone();
        let count = sent_count.clone();
        let errs = errors.clone();
        // Spread the bots' send times over the period, as independent players would be.
        let phase = period.mul_f64(i as f64 / players as f64);
        senders.push(ex.spawn(async move {
            for k in 0..total {
                smol::Timer::at(start_at + phase + period * k as u32).await;
                let change = Change {
                    region: 1,
                    offset: (i % 64) as u16,
                    values: vec![k as u8],
                    masks: vec![0xff],
                };
                sent_w[i][k].store(t0.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
                if tx.send_changes(k as u32, vec![change]).await.is_err() {
                    errs.fetch_add(1, Ordering::SeqCst);
                    return tx;
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
            tx
        }));
        let sent_r = sent.clone();
        let ids = ids.clone();
        let errs = errors.clone();
        let expected = (players as u64 - 1) * total as u64;
        receivers.push(ex.spawn(async move {
            let mut lat_us: Vec<u32> = Vec::with_capacity(expected as usize);
            let mut got = 0u64;
            while got < expected {
                let msg = smol::future::or(async { Some(rx.recv().await) }, async {
                    smol::Timer::at(recv_deadline).await;
                    None
                })
                .await;
                match msg {
                    None => break,
                    Some(Err(_)) => {
                        errs.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Some(Ok(ServerMsg::Update { player, batch, .. })) if player != me => {
                        let now = t0.elapsed().as_nanos() as u64 + 1;
                        got += 1;
                        let Some(&from) = ids.get(&player) else {
                            continue;
                        };
                        let Some(at) = sent_r[from].get(batch as usize) else {
                            continue;
                        };
                        let at = at.load(Ordering::SeqCst);
                        if batch >= warm_batches && at != 0 {
                            lat_us.push(((now.saturating_sub(at)) / 1000) as u32);
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
            (lat_us, got, rx)
        }));
    }
    // Server CPU over the measured part only.
    std::thread::sleep((start_at + warmup).saturating_duration_since(Instant::now()));
    let cpu0 = cpu_seconds(pid)?;
    let w0 = Instant::now();
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let cpu1 = cpu_seconds(pid)?;
    let wall = w0.elapsed().as_secs_f64();
    let mut all: Vec<f64> = Vec::new();
    let mut received = 0u64;
    // Connections stay open until every receiver finished, so that no bot's leaving
    // shows up as an error at another.
    let mut open_rx = Vec::new();
    for r in receivers {
        let (lat, got, rx) = smol::block_on(r);
        received += got;
        all.extend(lat.iter().map(|&u| u as f64 / 1000.0));
        open_rx.push(rx);
    }
    let open_tx: Vec<ClientSender> = senders.into_iter().map(smol::block_on).collect();
    drop((open_rx, open_tx));
    Ok(Step {
        players,
        seconds: measure.as_secs_f64(),
        latency_ms: summarize(&all),
        sent: sent_count.load(Ordering::SeqCst),
        expected: (players as u64 - 1) * players as u64 * total as u64,
        received,
        errors: errors.load(Ordering::SeqCst),
        cpu_percent: 100.0 * (cpu1 - cpu0) / wall,
        peak_rss: 0,
    })
}

/// Runs the section.
pub fn run() -> Section {
    let title = "3. Server fan-out";
    let main = match run_step(64, Duration::from_secs(2), Duration::from_secs(20)) {
        Ok(s) => s,
        Err(e) => return Section::failed("fanout", title, format!("{e:#}")),
    };
    // The largest player count whose p99 stays under 20 ms: step up from 64 while it
    // passes, or down from 64 when 64 already fails. Short runs keep the total bounded.
    let limit = 20.0;
    let mut scale: Vec<Step> = Vec::new();
    let short = |n| run_step(n, Duration::from_secs(1), Duration::from_secs(4));
    let mut best: Option<usize> = None;
    let mut scale_error = None;
    if main.passes(limit) {
        best = Some(64);
        for n in [96, 128, 192, 256] {
            match short(n) {
                Ok(s) => {
                    let ok = s.passes(limit);
                    scale.push(s);
                    if !ok {
                        break;
                    }
                    best = Some(n);
                }
                Err(e) => {
                    scale_error = Some(format!("{n} players: {e:#}"));
                    break;
                }
            }
        }
    } else {
        for n in [48, 32, 16, 8] {
            match short(n) {
                Ok(s) => {
                    let ok = s.passes(limit);
                    scale.push(s);
                    if ok {
                        best = Some(n);
                        break;
                    }
                }
                Err(e) => {
                    scale_error = Some(format!("{n} players: {e:#}"));
                    break;
                }
            }
        }
    }
    let lat = main.latency_ms;
    let p50 = lat.map(|s| s.p50).unwrap_or(f64::NAN);
    let p99 = main.p99();
    let rss_mb = main.peak_rss as f64 / (1024.0 * 1024.0);
    let mut rows = vec![
        Row::info(
            "64 players x 60 changes/s, 20 s: changes sent / deliveries received",
            format!("{} / {} of {}", main.sent, main.received, main.expected),
        ),
        Row::info("delivery latency p50", ms(p50)),
        Row::target("delivery latency p99", ms(p99), "< 5 ms", p99 < 5.0),
        Row::info(
            "delivery latency max",
            ms(lat.map(|s| s.max).unwrap_or(f64::NAN)),
        ),
        Row::target(
            "server CPU (share of one core)",
            format!("{:.1} %", main.cpu_percent),
            "< 25 %",
            main.cpu_percent < 25.0,
        ),
        Row::target(
            "server peak RSS (VmHWM)",
            format!("{rss_mb:.1} MB"),
            "< 30 MB",
            rss_mb < 30.0,
        ),
    ];
    for s in &scale {
        rows.push(Row::info(
            format!("{} players (5 s): p50 / p99, server CPU", s.players),
            format!(
                "{} / {}, {:.0} %{}",
                ms(s.latency_ms.map(|l| l.p50).unwrap_or(f64::NAN)),
                ms(s.p99()),
                s.cpu_percent,
                if s.received < s.expected || s.errors > 0 {
                    format!(
                        ", {} of {} delivered, {} errors",
                        s.received, s.expected, s.errors
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    rows.push(Row::info(
        "largest player count with p99 < 20 ms (tried)",
        match best {
            Some(n) => format!("{n}"),
            None => "none of those tried".into(),
        },
    ));
    let mut notes = Vec::new();
    if let Some(e) = &scale_error {
        notes.push(format!("The scaling run stopped on an error: {e}."));
    }
    if main.errors > 0 || main.received < main.expected {
        notes.push(format!(
            "Not every update arrived: {} of {} deliveries, {} connection errors.",
            main.received, main.expected, main.errors
        ));
    }
    let method = format!(
        "`msxsync serve` runs as its own process (release build) on 127.0.0.1 with the \
         test game. N bot players (library clients, async tasks on a {BOT_THREADS}-thread \
         smol executor in the bench process) join the game; each sends one one-byte \
         change {RATE} times per second, the bots' send times spread evenly over the \
         1/60 s period. The sender notes the time just before writing the message; every \
         other bot notes when the update carrying that (player, batch) arrives. Latency \
         is that difference, over all receivers, after a warm-up (2 s for the main run) \
         that is not counted. Server CPU is utime+stime from /proc/PID/stat over the \
         measured part divided by wall time; RSS is VmHWM from /proc/PID/status. The \
         bots run on the same two cores as the server, so the latency includes the \
         bench's own scheduling and decoding of {} updates per second at 64 players. \
         The scaling runs last 1 s + 4 s each and stop at the first count that misses \
         p99 < 20 ms or loses a delivery.",
        64 * 63 * RATE
    );
    Section {
        key: "fanout",
        title,
        method,
        rows,
        notes,
        json: Json::obj()
            .with("rate_per_player_per_second", RATE as u64)
            .with("bot_executor_threads", BOT_THREADS)
            .with("main", main.json())
            .with("scaling", scale.iter().map(Step::json).collect::<Vec<_>>())
            .with("largest_players_p99_under_20ms", best)
            .with("scaling_error", scale_error),
    }
}
