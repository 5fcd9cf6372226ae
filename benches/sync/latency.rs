//! Section 1: End-to-end latency: a CPU write by the game in player 1's openMSX until the byte
//! is in player 2's RAM; two real `msxsync play` processes at normal speed, one
//! `msxsync serve` process, all on loopback; next to it the floor (a one-line write
//! command sent into a throttled openMSX until it lands), and the way of each change hop
//! by hop.

use crate::emu::{self, clock, peek};
use crate::hops::{self, Call, Pids, Write, HOPS};
use crate::json::Json;
use crate::player::PlayProcess;
use crate::report::{ms, Row, Section};
use crate::stats::percentile_sorted;
use crate::sys::ServeProcess;
use crate::testrom::{self, CMD_EVERY_FRAME, CMD_SET, EF_UNCHANGED, READY, READY_VALUE};
use anyhow::{bail, Context, Result};
use msxsync::hops::now_us;
use msxsync::openmsx::{LaunchOptions, OpenMsx};
use msxsync::play::SOUND_SAMPLES;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The machines measured (the C-BIOS machines openMSX ships with).
const MACHINES: [&str; 2] = ["C-BIOS_MSX1", "C-BIOS_MSX2+"];
/// Fresh pairs of players per machine (MSXSYNC_BENCH_PAIRS overrides, for quick runs).
const PAIRS: usize = 5;
/// Changes measured per pair and kind of byte, after the warm-up ones
/// (MSXSYNC_BENCH_CHANGES overrides).
const CHANGES: usize = 62;
/// Changes made first in each pair and kind of byte and not counted.
const WARMUP: usize = 4;
/// The shared byte the game writes (region 0, offset 5): a region the game writes
/// now and then, so msxsync watches it.
const TARGET: u16 = testrom::SHARED0 + 5;
/// The byte of the busy runs (region 1, offset 5): the game rewrites region 1 every
/// frame (64 writes), so msxsync compares it once a frame instead of watching it.
const BUSY_TARGET: u16 = testrom::SHARED1 + 5;
/// Gap between changes: uniformly spread in this range (ms), so changes fall at every
/// phase of the frame.
const GAP_MS: (u64, u64) = (40, 120);
/// Longest a pair may take.
const PAIR_TIMEOUT: Duration = Duration::from_secs(150);

/// A small deterministic pseudo-random sequence (xorshift), so runs are comparable.
pub struct XorShift(u64);

impl XorShift {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// Next value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

/// A count from the environment (for quick runs while developing), else `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The Tcl that installs a probe on `target`, logging into `::VAR`: every write appends
/// the wall clock in µs, the value, 1 when msxsync wrote it (its hooks set `applying`
/// around their own writes) or 0 when the game's CPU did, and the emulated time.
fn probe_install(var: &str, target: u16) -> String {
    format!(
        "set ::{var} {{}}; debug set_watchpoint write_mem {target} {{}} \
         {{lappend ::{var} [clock microseconds] $::wp_last_value \
         [expr {{[info exists ::msxsync::applying] && $::msxsync::applying}}] \
         [machine_info time]}}"
    )
}

/// Bench-only traces on the hooks' procs (the hooks themselves are not changed): every
/// push in player 1 and every apply in player 2 is logged with the wall clock, the
/// emulated time and its argument (spaces made commas).
const TRACE_PUSH: &str = "set ::bench_push {}; \
    proc ::bench_push_trace {cmd op} {lappend ::bench_push [clock microseconds] \
    [machine_info time] [expr {$::msxsync::seq + 1}] [string map {{ } ,} [lindex $cmd 1]]}; \
    trace add execution ::msxsync::push enter ::bench_push_trace";
const TRACE_APPLY: &str = "set ::bench_apply {}; \
    proc ::bench_apply_trace {cmd op} {lappend ::bench_apply [clock microseconds] \
    [machine_info time] [string map {{ } ,} [lindex $cmd 1]]}; \
    trace add execution ::msxsync::apply enter ::bench_apply_trace";

/// What one run of changes (one kind of byte in one pair) gave.
#[derive(Default)]
struct Run {
    /// End-to-end latency (ms) of each measured change that arrived, by direction:
    /// player 1 to player 2, and back.
    latencies: [Vec<f64>; 2],
    /// Each measured change's hops (ms), `None` where a step was not found.
    hops: Vec<[Option<f64>; 10]>,
    /// Emulated time from the game's write to the push (ms), per measured change.
    settle_emu: Vec<f64>,
    lost: usize,
    game_writes: usize,
}

impl Run {
    /// Both directions' latencies.
    fn all(&self) -> Vec<f64> {
        self.latencies.concat()
    }
}

/// One fresh pair of players (and a floor emulator) on one machine.
struct Pair {
    hz: f64,
    watched: Run,
    busy: Run,
    /// Floor: one-line write command sent -> landed (ms), in an openMSX with its
    /// default sound buffer and in one with the buffer `msxsync play` sets.
    floor: [Vec<f64>; 2],
}

async fn wait_ready(m: &OpenMsx) -> Result<()> {
    emu::poll(
        "the game's start-up in an emulator",
        emu::TIMEOUT,
        || async move { Ok((peek(m, READY).await? == READY_VALUE).then_some(())) },
    )
    .await
}

/// A throttled headless openMSX on `machine` running the test game, controlled through
/// stdio like `msxsync play` controls its own: where the floor is measured; with
/// `samples`, its sound buffer set to that many samples.
async fn start_floor(machine: &str, samples: Option<u32>) -> Result<OpenMsx> {
    let f = OpenMsx::spawn(&LaunchOptions {
        machine: Some(machine.to_string()),
        cart: Some(testrom::rom_path()),
        headless: true,
        ..LaunchOptions::default()
    })
    .await
    .context("starting the floor's openmsx")?;
    f.command("set throttle on").await?;
    if let Some(n) = samples {
        f.command(&format!("set samples {n}")).await?;
    }
    f.power_on().await?;
    Ok(f)
}

/// Everything one run of changes left in the emulators; per player where there are two.
struct Raw {
    /// The probes' logs.
    probes: [Vec<Write>; 2],
    pushes: [Vec<Call>; 2],
    applies: [Vec<Call>; 2],
    floor_sent: [Vec<Write>; 2],
    floor_landed: [Vec<Write>; 2],
}

/// Makes the players' games write `WARMUP + changes` new values into `target` in turn
/// (player 1, player 2, player 1...), one every 40-120 ms, and meanwhile sends as many
/// one-line writes into the floors' emulators at random moments.
async fn changes_run(
    (m, f): ([&OpenMsx; 2], [&OpenMsx; 2]),
    target: u16,
    changes: usize,
    rng: &mut XorShift,
    seqs: &mut [u8; 2],
) -> Result<Raw> {
    for e in [m[0], m[1], f[0], f[1]] {
        e.command(&probe_install("bench_probe", target)).await?;
    }
    for e in m {
        e.command("set ::bench_push {}; set ::bench_apply {}")
            .await?;
    }
    let mut floor_sent: [Vec<Write>; 2] = Default::default();
    let mut last = peek(m[0], target).await?;
    let mut last_floor = [peek(f[0], target).await?, peek(f[1], target).await?];
    for i in 0..(WARMUP + changes) {
        let w = i % 2;
        let mut v = (i % 254) as u8 + 1;
        if v == last {
            v = v.wrapping_add(1).max(1);
        }
        last = v;
        seqs[w] = seqs[w].wrapping_add(1).max(1);
        m[w].command(&testrom::mailbox(seqs[w], CMD_SET, target, v))
            .await?;
        let gap = rng.range(GAP_MS.0, GAP_MS.1);
        let at = rng.range(0, gap);
        smol::Timer::after(Duration::from_millis(at)).await;
        for k in 0..2 {
            let fv = last_floor[k].wrapping_add(1).max(1);
            last_floor[k] = fv;
            let sent = now_us();
            // Not awaited: the reply comes when the command ran; the probe says when.
            drop(f[k].post(&format!("debug write memory {target} {fv}"))?);
            floor_sent[k].push(Write {
                us: sent,
                value: fv,
                by_msxsync: false,
                emu: 0.0,
            });
        }
        smol::Timer::after(Duration::from_millis(gap - at)).await;
        // Normally done long ago; on a loaded machine wait rather than overrun.
        let (mw, s) = (m[w], seqs[w]);
        emu::poll(
            "a game to take a mailbox command",
            emu::TIMEOUT,
            || async move { Ok((peek(mw, testrom::ACK).await? == s).then_some(())) },
        )
        .await?;
    }
    smol::Timer::after(Duration::from_millis(300)).await;
    let list = |e: &OpenMsx, var: &str| {
        let cmd = format!("return ${var}");
        let e = e.clone();
        async move { e.command(&cmd).await }
    };
    let mut raw = Raw {
        probes: Default::default(),
        pushes: Default::default(),
        applies: Default::default(),
        floor_sent,
        floor_landed: [
            hops::parse_probe(&list(f[0], "::bench_probe").await?)?,
            hops::parse_probe(&list(f[1], "::bench_probe").await?)?,
        ],
    };
    for (p, e) in m.iter().enumerate() {
        raw.probes[p] = hops::parse_probe(&list(e, "::bench_probe").await?)?;
        raw.pushes[p] = hops::parse_calls(&list(e, "::bench_push").await?, true)?;
        raw.applies[p] = hops::parse_calls(&list(e, "::bench_apply").await?, false)?;
    }
    for e in [m[0], m[1], f[0], f[1]] {
        e.command("foreach w [debug list_watchpoints] {debug remove_watchpoint [lindex $w 0]}")
            .await
            .ok();
    }
    Ok(raw)
}

/// Turns a run's raw logs into latencies and hops; `before` is the byte's value when
/// the run started, `plays` the two `msxsync play` process ids.
fn analyse(
    raw: &Raw,
    before: u8,
    target: u16,
    log: &[hops::Line],
    (plays, serve): ([u32; 2], u32),
) -> (Run, [Vec<f64>; 2]) {
    let region = if target >= testrom::SHARED1 { 1 } else { 0 };
    let offset = target
        - if region == 1 {
            testrom::SHARED1
        } else {
            testrom::SHARED0
        };
    let mut run = Run::default();
    for from in 0..2 {
        let to = 1 - from;
        let writes = hops::value_changes(&raw.probes[from], before);
        let landed: Vec<Write> = raw.probes[to]
            .iter()
            .filter(|w| w.by_msxsync)
            .copied()
            .collect();
        let matches = hops::pair_up(&writes, &landed);
        run.lost += matches.iter().filter(|m| m.is_none()).count();
        run.game_writes += writes.len();
        let pids = Pids {
            from: plays[from],
            to: plays[to],
            serve,
        };
        let trail = hops::Trail {
            pushes: &raw.pushes[from],
            applies: &raw.applies[to],
            log,
            pids: &pids,
            region,
            offset,
        };
        for (w, m) in writes.iter().zip(&matches).skip(WARMUP / 2) {
            let Some(k) = *m else { continue };
            let land = &landed[k];
            run.latencies[from].push((land.us - w.us) as f64 / 1000.0);
            let t = trail.follow(w, Some(land));
            run.hops.push(hops::hop_times(&t));
            if let Some(p) = raw.pushes[from].iter().find(|p| Some(p.us) == t[1]) {
                run.settle_emu.push((p.emu - w.emu) * 1000.0);
            }
        }
    }
    let floor = |k: usize| -> Vec<f64> {
        let (sent, landed) = (&raw.floor_sent[k], &raw.floor_landed[k]);
        sent.iter()
            .zip(&hops::pair_up(sent, landed))
            .skip(WARMUP)
            .filter_map(|(s, m)| m.map(|j| (landed[j].us - s.us) as f64 / 1000.0))
            .collect()
    };
    (run, [floor(0), floor(1)])
}

/// Waits until msxsync in `m` compares region 1 instead of watching it.
async fn wait_polled(m: &OpenMsx) -> Result<()> {
    emu::poll(
        "region 1 to be compared once a frame",
        emu::TIMEOUT,
        || async move { Ok((m.command("set msxsync::polled(1)").await? == "1").then_some(())) },
    )
    .await
}

async fn measure_pair(machine: &str, n: usize, changes: usize) -> Result<Pair> {
    let games = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/roms");
    let dir = tempfile::tempdir().context("creating a folder for the hop log")?;
    let log_path = dir.path().join("hops.log");
    let serve = ServeProcess::start_with(&games, &[], Some(&log_path))?;
    let start = |name: &str, cache: &Path| {
        PlayProcess::start_on(
            machine,
            &serve.addr,
            "testgame",
            name,
            cache,
            true,
            Some(&log_path),
        )
    };
    let (c1, c2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut rng = XorShift::new(0x5eed_1234 ^ (n as u64) << 20 ^ machine.len() as u64);
    // Player 2 starts once player 1 runs, after a pseudo-random pause longer than a
    // cycle of openMSX's sleeps, as players start at moments of their own. How the two
    // emulators' sleeps fall against each other sets the pair's latency (see
    // docs/benchmarks.md); started together, or right when the bench sees player 1's
    // game running (which it can only see when that openMSX wakes up), they would fall
    // the same way in every pair.
    let mut p1 = start("p1", c1.path())?;
    let f = start_floor(machine, None).await?;
    let f2 = start_floor(machine, Some(SOUND_SAMPLES)).await?;
    let m1 = p1.attach(emu::TIMEOUT).await?;
    wait_ready(&m1).await?;
    smol::Timer::after(Duration::from_micros(rng.range(0, 100_000))).await;
    let mut p2 = start("p2", c2.path())?;
    let m2 = p2.attach(emu::TIMEOUT).await?;
    wait_ready(&m2).await?;
    wait_ready(&f).await?;
    wait_ready(&f2).await?;
    // Both sync: a change by player 1's game shows up in player 2.
    let mut seqs = [0u8; 2];
    emu::game_does(&m1, &mut seqs[0], CMD_SET, TARGET, 0xaa).await?;
    emu::poll("a first change to reach player 2", emu::TIMEOUT, || {
        let m2 = &m2;
        async move { Ok((peek(m2, TARGET).await? == 0xaa).then_some(())) }
    })
    .await
    .with_context(|| format!("player 2 said: {}", p2.stderr_tail()))?;
    // Frame rate of the machine, for latencies in frames.
    let (t0, f0) = clock(&m1).await?;
    smol::Timer::after(Duration::from_millis(500)).await;
    let (t1, f1) = clock(&m1).await?;
    let hz = f1.wrapping_sub(f0) as f64 / (t1 - t0);
    for m in [&m1, &m2] {
        m.command(TRACE_PUSH).await?;
        m.command(TRACE_APPLY).await?;
    }
    let ems = ([&m1, &m2], [&f, &f2]);
    let watched = changes_run(ems, TARGET, changes, &mut rng, &mut seqs).await?;
    // Both games rewrite region 1 every frame; within a second of emulated time
    // msxsync stops watching it and compares it once a frame.
    let busy_before = peek(&m1, BUSY_TARGET).await?;
    emu::game_does(&m1, &mut seqs[0], CMD_EVERY_FRAME, 0, EF_UNCHANGED).await?;
    emu::game_does(&m2, &mut seqs[1], CMD_EVERY_FRAME, 0, EF_UNCHANGED).await?;
    wait_polled(&m1).await?;
    wait_polled(&m2).await?;
    let busy = changes_run(ems, BUSY_TARGET, changes, &mut rng, &mut seqs).await?;
    let ids = ([p1.pid(), p2.pid()], serve.pid());
    drop((m1, m2, f, f2));
    drop((p1, p2));
    drop(serve);
    let log = hops::parse_log(&std::fs::read_to_string(&log_path).unwrap_or_default());
    let (watched, mut floor) = analyse(&watched, 0xaa, TARGET, &log, ids);
    let (busy, floor_busy) = analyse(&busy, busy_before, BUSY_TARGET, &log, ids);
    for (a, b) in floor.iter_mut().zip(floor_busy) {
        a.extend(b);
    }
    Ok(Pair {
        hz,
        watched,
        busy,
        floor,
    })
}

/// Percentile `p` of a sample (ms), NaN when empty.
fn pct(sample: &[f64], p: f64) -> f64 {
    let mut s = sample.to_vec();
    s.sort_by(f64::total_cmp);
    percentile_sorted(&s, p)
}

/// "p50 / p95 / p99 / max" of a sample, in ms.
fn spread(sample: &[f64]) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2} ms",
        pct(sample, 50.0),
        pct(sample, 95.0),
        pct(sample, 99.0),
        pct(sample, 100.0)
    )
}

/// Each change's hops (ms; null where a step was not found), for results.json.
fn hop_rows(run: &Run) -> Vec<Json> {
    run.hops
        .iter()
        .map(|h| Json::Arr(h.iter().map(|&x| x.into()).collect()))
        .collect()
}

/// The rows and JSON of one machine.
fn machine_report(machine: &str, pairs: &[Pair]) -> (Vec<Row>, Json, bool) {
    let hz = crate::stats::median(&pairs.iter().map(|p| p.hz).collect::<Vec<_>>());
    let frame = 1000.0 / hz;
    let all = |f: &dyn Fn(&Pair) -> Vec<f64>| -> Vec<f64> { pairs.iter().flat_map(f).collect() };
    let lat = all(&|p| p.watched.all());
    let busy = all(&|p| p.busy.all());
    let floor = all(&|p| p.floor[0].clone());
    let floor_own = all(&|p| p.floor[1].clone());
    let lost: usize = pairs.iter().map(|p| p.watched.lost + p.busy.lost).sum();
    let game_writes: usize = pairs
        .iter()
        .map(|p| p.watched.game_writes + p.busy.game_writes)
        .sum();
    let (p50, p99, max) = (pct(&lat, 50.0), pct(&lat, 99.0), pct(&lat, 100.0));
    let (f50, f99, fmax) = (pct(&floor, 50.0), pct(&floor, 99.0), pct(&floor, 100.0));
    let b99 = pct(&busy, 99.0);
    let met = [
        p50 <= f50 + 1.0,
        p99 <= f99 + 2.0,
        max <= fmax + frame,
        b99 <= 2.0 * frame,
    ];
    let m = |what: &str| format!("{machine}: {what}");
    let pair_p50s =
        |f: &dyn Fn(&Pair) -> String| pairs.iter().map(f).collect::<Vec<_>>().join(", ");
    let p50_of = |v: &[f64]| format!("{:.1}", pct(v, 50.0));
    let mut rows = vec![
        Row::info(
            m("game writes / measured (watched + busy) / lost"),
            format!(
                "{game_writes} / {} + {} in {} fresh pairs / {lost}",
                lat.len(),
                busy.len(),
                pairs.len()
            ),
        ),
        Row::info(m("end to end p50 / p95 / p99 / max"), spread(&lat)),
        Row::info(m("floor p50 / p95 / p99 / max"), spread(&floor)),
        Row::info(
            m(&format!(
                "floor with play's sound buffer ({SOUND_SAMPLES} samples) p50 / p95 / p99 / max"
            )),
            spread(&floor_own),
        ),
        Row::info(
            m("each pair's p50, end to end (1 to 2 / 2 to 1)"),
            format!(
                "{} ms",
                pair_p50s(&|p| format!(
                    "{} ({} / {})",
                    p50_of(&p.watched.all()),
                    p50_of(&p.watched.latencies[0]),
                    p50_of(&p.watched.latencies[1])
                ))
            ),
        ),
        Row::info(
            m("each pair's p50, floor"),
            format!("{} ms", pair_p50s(&|p| p50_of(&p.floor[0]))),
        ),
        Row::target(
            m("p50"),
            format!("{} = floor p50 {:+.2} ms", ms(p50), p50 - f50),
            "<= floor + 1 ms",
            met[0],
        ),
        Row::target(
            m("p99"),
            format!("{} = floor p99 {:+.2} ms", ms(p99), p99 - f99),
            "<= floor + 2 ms",
            met[1],
        ),
        Row::target(
            m("max"),
            format!("{} = floor max {:+.2} ms", ms(max), max - fmax),
            format!("<= floor + 1 frame ({frame:.1} ms)"),
            met[2],
        ),
        Row::target(
            m("busy region p99"),
            format!(
                "{} = {:.2} frames (p50 {}, max {})",
                ms(b99),
                b99 / frame,
                ms(pct(&busy, 50.0)),
                ms(pct(&busy, 100.0))
            ),
            "<= 2 frames",
            met[3],
        ),
    ];
    let hop_samples = |i: usize| -> Vec<f64> {
        pairs
            .iter()
            .flat_map(|p| p.watched.hops.iter().filter_map(move |h| h[i]))
            .collect()
    };
    let mut hop_json = Vec::new();
    for (i, name) in HOPS.iter().enumerate() {
        let s = hop_samples(i);
        rows.push(Row::info(
            m(&format!("hop {}: {name}", i + 1)),
            format!(
                "{:.2} / {:.2} / {:.2} ms ({} of {})",
                pct(&s, 50.0),
                pct(&s, 99.0),
                pct(&s, 100.0),
                s.len(),
                lat.len()
            ),
        ));
        hop_json.push(
            Json::obj()
                .with("hop", *name)
                .with("n", s.len())
                .with("p50_ms", pct(&s, 50.0))
                .with("p99_ms", pct(&s, 99.0))
                .with("max_ms", pct(&s, 100.0)),
        );
    }
    let settle = all(&|p| p.watched.settle_emu.clone());
    let late = pairs
        .iter()
        .flat_map(|p| p.watched.hops.iter())
        .filter(|h| h[0].is_some_and(|v| v > 2.0))
        .count();
    rows.push(Row::info(
        m("write -> push in emulated time, p50 / max; pushes over 2 ms after the write"),
        format!(
            "{:.2} / {:.2} ms; {late} of {}",
            pct(&settle, 50.0),
            pct(&settle, 100.0),
            lat.len()
        ),
    ));
    let nums = |v: &[f64]| v.iter().map(|&x| Json::Num(x)).collect::<Vec<_>>();
    let summary = |v: &[f64]| {
        Json::obj()
            .with("n", v.len())
            .with("p50_ms", pct(v, 50.0))
            .with("p95_ms", pct(v, 95.0))
            .with("p99_ms", pct(v, 99.0))
            .with("max_ms", pct(v, 100.0))
    };
    let json = Json::obj()
        .with("frame_rate_hz", hz)
        .with("pairs", pairs.len())
        .with("lost", lost)
        .with("end_to_end", summary(&lat))
        .with("floor", summary(&floor))
        .with("floor_play_sound_buffer", summary(&floor_own))
        .with("busy_region", summary(&busy))
        .with(
            "pair_p50_ms",
            nums(
                &pairs
                    .iter()
                    .map(|p| pct(&p.watched.all(), 50.0))
                    .collect::<Vec<_>>(),
            ),
        )
        .with(
            "pair_floor_p50_ms",
            nums(
                &pairs
                    .iter()
                    .map(|p| pct(&p.floor[0], 50.0))
                    .collect::<Vec<_>>(),
            ),
        )
        .with("hops", hop_json)
        .with(
            "targets_met",
            Json::obj()
                .with("p50", met[0])
                .with("p99", met[1])
                .with("max", met[2])
                .with("busy_p99", met[3]),
        )
        .with(
            "pairs_raw",
            pairs
                .iter()
                .map(|p| {
                    Json::obj()
                        .with("latencies_1to2_ms", nums(&p.watched.latencies[0]))
                        .with("latencies_2to1_ms", nums(&p.watched.latencies[1]))
                        .with("busy_latencies_ms", nums(&p.busy.all()))
                        .with("floor_ms", nums(&p.floor[0]))
                        .with("floor_play_sound_buffer_ms", nums(&p.floor[1]))
                        .with("hops_ms", hop_rows(&p.watched))
                        .with("busy_hops_ms", hop_rows(&p.busy))
                })
                .collect::<Vec<_>>(),
        );
    (rows, json, met.iter().all(|&x| x))
}

/// Runs the section.
pub fn run() -> Section {
    let title = "1. End-to-end latency";
    let pairs_per_machine = env_count("MSXSYNC_BENCH_PAIRS", PAIRS);
    let changes = env_count("MSXSYNC_BENCH_CHANGES", CHANGES);
    let mut rows = Vec::new();
    let mut json = Json::obj();
    let mut all_met = true;
    for machine in MACHINES {
        let mut pairs = Vec::new();
        let mut failure = None;
        for n in 0..pairs_per_machine {
            let t = Instant::now();
            let result =
                smol::block_on(smol::future::or(measure_pair(machine, n, changes), async {
                    smol::Timer::after(PAIR_TIMEOUT).await;
                    bail!("timed out after {} s", PAIR_TIMEOUT.as_secs())
                }));
            match result {
                Ok(p) => {
                    println!(
                        "  {machine} pair {}: p50 {:.1} ms, floor p50 {:.1} ms ({:.0} s)",
                        n + 1,
                        pct(&p.watched.all(), 50.0),
                        pct(&p.floor[0], 50.0),
                        t.elapsed().as_secs_f64()
                    );
                    pairs.push(p);
                }
                Err(e) => {
                    failure = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        if let Some(why) = failure {
            rows.push(Row::info(format!("{machine}: not measured"), why.clone()));
            json.set(machine, Json::obj().with("error", why));
            all_met = false;
            continue;
        }
        let (r, j, met) = machine_report(machine, &pairs);
        rows.extend(r);
        json.set(machine, j);
        all_met &= met;
    }
    let mut notes = Vec::new();
    if !all_met {
        notes.push("A latency target is missed: see the analysis below the generated part.".into());
    }
    let method = format!(
        "For each of {} on its own: {pairs_per_machine} fresh pairs of players, each a new \
         `msxsync serve` and two `msxsync play --headless --machine M` processes (release \
         build), openMSX at normal speed (throttle on), everything on 127.0.0.1; player 2 \
         starts once player 1's game runs (players start at moments of their own, and \
         that decides how their emulators' sleeps fall against each other: see the \
         analysis). The bench opens a second control connection to each player's openMSX \
         (its Unix socket) and installs a probe watchpoint on the shared byte in both: on \
         every write it appends `[clock microseconds]`, the value, whether msxsync wrote \
         it, and `[machine_info time]` to a Tcl list inside openMSX. In the writer it \
         fires when the game's CPU writes the byte; in the other player when msxsync \
         writes the update into RAM. Every process reads the same system clock, so the \
         difference is the latency, free of any polling delay. In each pair the bench \
         makes the games write a new value {} times through the test cartridge's mailbox, \
         player 1 and player 2 in turn (the game performs the write at its next frame, \
         like a real game would), {}-{} ms apart (pseudo-random, so writes fall at every \
         point of the frame); the first {WARMUP} are warm-up and not counted. It does so \
         for the byte {TARGET:#06x}, in a region the games write now and then (msxsync \
         watches it), then for the byte {BUSY_TARGET:#06x} (rows \"busy region\") while \
         both games rewrite its region every frame, first byte to last (msxsync compares it \
         instead of watching it: when the game writes its last byte, and at the start of \
         every vertical blank). **Floor**: a third throttled headless openMSX on the same \
         machine runs next to each pair; between two changes, at a random moment, the \
         bench writes `debug write memory ADDR V` to its stdio control connection, the way \
         `msxsync play` writes into its emulator, and a probe watchpoint there logs when \
         it lands: sent to landed is what any write from outside waits for a throttled \
         openMSX (openMSX's default sound buffer, as the issue defines the floor; the \
         targets compare with it). A fourth one, with the sound buffer `msxsync play` sets \
         ({SOUND_SAMPLES} samples), gets the same writes at the same moments: the row \
         \"floor with play's sound buffer\" is the floor msxsync's players actually sit \
         on. **Hops**: `play` and `serve` run with MSXSYNC_HOP_LOG (a line with the \
         real-time clock at each step of a change; off by default), and bench-only Tcl \
         traces on the hooks' `push` and `apply` log when those run; the rows \"hop N\" \
         split the watched byte's latency into these steps (p50 / p99 / max of each, and \
         in how many changes the step was found). Frames are of the emulated machine \
         (frame rate measured from the game's frame counter).",
        MACHINES.join(" and "),
        WARMUP + changes,
        GAP_MS.0,
        GAP_MS.1
    );
    Section {
        key: "latency",
        title,
        method,
        rows,
        notes,
        json,
    }
}

/// Self-checks run by `cargo test --benches`.
pub fn self_check() {
    let mut r = XorShift::new(1);
    assert!((0..100).all(|_| (40..=120).contains(&r.range(40, 120))));
    assert!(probe_install("x", 5).contains("write_mem 5 {}"));
    assert_eq!(pct(&[3.0, 1.0, 2.0], 50.0), 2.0);
    assert!(spread(&[1.0]).starts_with("1.00 / 1.00"));
}
