//! Section 5: Join time: from starting `msxsync play` to the first change of another player
//! showing in its emulator, with a 512 KiB ROM not cached and cached.

use crate::json::Json;
use crate::player::PlayProcess;
use crate::report::{ms, Row, Section};
use crate::stats::median;
use crate::sys::ServeProcess;
use crate::testrom::{self, READY, READY_VALUE};
use anyhow::{bail, Context, Result};
use msxsync::client;
use msxsync::delta::Change;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of the padded test ROM.
const ROM_BYTES: usize = 512 * 1024;
/// Runs per case (uncached, cached).
const REPS: usize = 3;
/// The shared byte the bot player keeps changing (region 0, offset 6).
const TARGET: u16 = testrom::SHARED0 + 6;
/// The bot's change interval.
const BOT_PERIOD: Duration = Duration::from_millis(10);

/// Writes `big.rom` (the test cartridge padded with 0xFF to 512 KiB) and
/// `big.regions` (the test game's regions naming it) into `dir`.
fn make_game(dir: &Path) -> Result<()> {
    let rom_path = testrom::rom_path();
    let mut rom =
        std::fs::read(&rom_path).with_context(|| format!("reading {}", rom_path.display()))?;
    if rom.len() > ROM_BYTES {
        bail!("the test rom is larger than {ROM_BYTES} bytes");
    }
    rom.resize(ROM_BYTES, 0xff);
    std::fs::write(dir.join("big.rom"), &rom).context("writing big.rom")?;
    let regions_path = rom_path.with_extension("regions");
    let text = std::fs::read_to_string(&regions_path)
        .with_context(|| format!("reading {}", regions_path.display()))?;
    // The first line that is not a comment names the ROM.
    let mut out = String::new();
    let mut replaced = false;
    for line in text.lines() {
        if !replaced && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            out.push_str("big.rom\n");
            replaced = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dir.join("big.regions"), out).context("writing big.regions")?;
    Ok(())
}

/// A bot player that changes `TARGET` to a new non-zero value every `BOT_PERIOD`.
fn start_bot(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        smol::block_on(async move {
            let mut c = client::connect(&addr, "bot").await?;
            c.join("big").await?;
            let (mut tx, mut rx) = c.split();
            let drain = smol::spawn(async move { while rx.recv().await.is_ok() {} });
            let mut k: u32 = 0;
            while !stop.load(Ordering::SeqCst) {
                k += 1;
                let v = (k % 255) as u8 + 1;
                tx.send_changes(k, vec![Change::bytes(0, 6, vec![v])])
                    .await?;
                smol::Timer::after(BOT_PERIOD).await;
            }
            drain.cancel().await;
            Ok(())
        })
    })
}

/// One join; returns (total, to "joined", to "openMSX started", whether the ROM came
/// from the cache).
struct Join {
    total: Duration,
    to_joined: Option<Duration>,
    to_openmsx: Option<Duration>,
    from_cache: bool,
}

async fn one_join(addr: &str, cache: &Path, n: usize) -> Result<Join> {
    let mut p = PlayProcess::start(addr, "big", &format!("joiner{n}"), cache, true)?;
    let t0 = p.spawned;
    let m = p.attach(Duration::from_secs(60)).await?;
    let cmd = format!("list [debug read memory {READY}] [debug read memory {TARGET}]");
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let reply = m.command(&cmd).await?;
        let v: Vec<u8> = reply
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if v.len() == 2 && v[0] == READY_VALUE && v[1] != 0 {
            break Instant::now();
        }
        if Instant::now() >= deadline {
            bail!(
                "no change of the bot reached the joining player within 60 s; it said: {}",
                p.stderr_tail()
            );
        }
        smol::Timer::after(Duration::from_millis(2)).await;
    };
    let since = |t: Option<Instant>| t.map(|t| t.duration_since(t0));
    let to_joined = since(p.line_time("joined "));
    let to_openmsx = since(p.line_time("openMSX started"));
    let from_cache = p.line_time("from the cache").is_some();
    drop(m);
    drop(p);
    Ok(Join {
        total: end.duration_since(t0),
        to_joined,
        to_openmsx,
        from_cache,
    })
}

async fn measure() -> Result<Vec<(Join, bool)>> {
    let dir = tempfile::tempdir().context("creating a games folder")?;
    make_game(dir.path())?;
    let serve = ServeProcess::start(dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let bot = start_bot(serve.addr.clone(), stop.clone());
    let caches = tempfile::tempdir().context("creating the cache folders")?;
    let mut out = Vec::new();
    let result = async {
        for rep in 0..REPS {
            let cache = caches.path().join(format!("cache{rep}"));
            // First with an empty cache (download), then the same cache (no download).
            for cached in [false, true] {
                let j = one_join(&serve.addr, &cache, out.len()).await?;
                out.push((j, cached));
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    let bot_result = bot.join();
    result?;
    match bot_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("the bot player failed")),
        Err(_) => bail!("the bot player panicked"),
    }
    Ok(out)
}

/// Runs the section.
pub fn run() -> Section {
    let title = "5. Join time";
    let result = smol::block_on(smol::future::or(measure(), async {
        smol::Timer::after(Duration::from_secs(240)).await;
        bail!("timed out after 240 s")
    }));
    let joins = match result {
        Ok(j) => j,
        Err(e) => return Section::failed("join", title, format!("{e:#}")),
    };
    let secs = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut jcases = Json::obj();
    for (cached, label, key) in [
        (false, "ROM not cached (downloaded)", "not_cached"),
        (true, "ROM cached", "cached"),
    ] {
        let runs: Vec<&Join> = joins
            .iter()
            .filter(|(_, c)| *c == cached)
            .map(|(j, _)| j)
            .collect();
        let total: Vec<f64> = runs.iter().map(|j| secs(j.total)).collect();
        let joined: Vec<f64> = runs.iter().filter_map(|j| j.to_joined.map(secs)).collect();
        let started: Vec<f64> = runs.iter().filter_map(|j| j.to_openmsx.map(secs)).collect();
        rows.push(Row::info(
            format!("{label}: start to first synced change, median (runs)"),
            format!(
                "{} ({})",
                ms(median(&total)),
                total
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        rows.push(Row::info(
            format!("{label}: ... to joined / to openMSX started, median"),
            format!("{} / {}", ms(median(&joined)), ms(median(&started))),
        ));
        let wrong = runs.iter().filter(|j| j.from_cache != cached).count();
        if wrong > 0 {
            notes.push(format!(
                "{wrong} run(s) of \"{label}\" did not take the ROM where expected (cache hit: {})",
                !cached
            ));
        }
        jcases.set(
            key,
            Json::obj()
                .with(
                    "total_ms",
                    total.iter().map(|&v| Json::Num(v)).collect::<Vec<_>>(),
                )
                .with("total_ms_median", median(&total))
                .with("to_joined_ms_median", median(&joined))
                .with("to_openmsx_started_ms_median", median(&started)),
        );
    }
    let method = format!(
        "The test cartridge padded with 0xFF to 512 KiB ({ROM_BYTES} bytes, a plain ROM \
         openMSX accepts; its mapper is guessed) is served as game `big` from a temporary \
         games folder by a `msxsync serve` process. A bot player (library client) keeps \
         changing one shared byte every {} ms, so the game is in progress. Each run \
         starts `msxsync play --headless --machine C-BIOS_MSX1 --join-now` with its own \
         `--cache-dir`: first empty (the ROM is downloaded), then the same folder again \
         (the ROM comes from the cache), {REPS} times. Time zero is the process spawn; the \
         end is the first moment the bench, polling the player's openMSX every 2 ms \
         through a second control connection, sees the game running (its start-up flag \
         set) and the shared byte holding a value the bot sent. openMSX runs at normal \
         speed, so the C-BIOS boot (logo) is part of it. The times at which play printed \
         \"joined\" and \"openMSX started\" give the breakdown.",
        BOT_PERIOD.as_millis()
    );
    Section {
        key: "join",
        title,
        method,
        rows,
        notes,
        json: Json::obj()
            .with("rom_bytes", ROM_BYTES)
            .with("reps", REPS)
            .with("cases", jcases),
    }
}
