//! `msxsync play`: joins a game on a server, starts (or attaches to) openMSX with the
//! game's ROM and keeps the shared RAM regions in sync both ways.
//!
//! The order of start-up matters (docs/architecture.md): connect and join, get the ROM
//! (from the cache when possible), start openMSX with the cartridge, wait until the
//! cartridge's own code runs (so the BIOS's RAM tests are not taken for game writes),
//! watch the regions, write the server's state into RAM, then sync until the game ends.

pub mod notices;
mod session;
mod state;

pub use session::{Ending, CHECK_PERIOD};
pub use state::{Layout, SyncState};

use session::{Identity, Session};

use crate::client;
use crate::hex;
use crate::openmsx::connection::check_name;
use crate::openmsx::{HookEvent, Hooks, LaunchOptions, OpenMsx};
use crate::protocol::{GameInfo, Joined, PlayerInfo, MAX_NAME_BYTES};
use crate::rom_cache::{RomCache, MAX_CACHE_BYTES};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// Everything a player needs to start (`msxsync play`'s arguments, defaults filled in).
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// Server address (see [`client::connect`]).
    pub server: String,
    /// Player name.
    pub name: String,
    /// Game to join.
    pub game: String,
    /// Room of the game to join; `None` for the game's default room (its name).
    pub room: Option<String>,
    /// Machine override.
    pub machine: Option<String>,
    /// openMSX program.
    pub openmsx: PathBuf,
    /// No window, no sound.
    pub headless: bool,
    /// Attach to this openMSX (pid or socket) instead of starting one.
    pub attach: Option<String>,
    /// ROM cache folder; `None` for [`RomCache::default_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Run the emulator as fast as it can (`set throttle off`): for tests and
    /// benchmarks, never for playing.
    pub fast: bool,
    /// Take the shared state at the game's start even when the game is in progress.
    pub join_now: bool,
    /// The server's password, if it has one (also used when reconnecting).
    pub password: Option<crate::auth::Password>,
    /// No notices on the emulator screen ("bob joined", "alice got the boots").
    pub quiet: bool,
}

impl PlayOptions {
    /// Options for `game` on `server` with everything else at its default.
    pub fn new(server: impl Into<String>, game: impl Into<String>) -> PlayOptions {
        PlayOptions {
            server: server.into(),
            name: default_name(),
            game: game.into(),
            room: None,
            machine: None,
            openmsx: PathBuf::from("openmsx"),
            headless: false,
            attach: None,
            cache_dir: None,
            fast: false,
            join_now: false,
            password: None,
            quiet: false,
        }
    }
}

/// The user's login name, or "player".
fn default_name() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "player".into())
}

/// How long to wait for the cartridge's INIT after power-on (real time). C-BIOS shows
/// its logo for a few emulated seconds first.
const CARTRIDGE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// openMSX's sound buffer (`samples`) in the emulators `play` starts. A throttled
/// openMSX emulates until the buffer is full and then sleeps, without reading its
/// control connection, until the buffer has room again: with openMSX 18's default of
/// 1024 samples (23 ms at 44.1 kHz) an update from another player waits up to 23 ms
/// before it can be written into RAM, with 512 at most 12 ms (docs/architecture.md,
/// "The latency floor"). Smaller still would save more but risks drop-outs of the
/// sound on a busy computer.
pub const SOUND_SAMPLES: u32 = 512;

/// Counters of what one player did, for people and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches of local changes sent to the server.
    pub batches_sent: AtomicU64,
    /// Updates received from the server (own echoes included).
    pub updates_received: AtomicU64,
    /// Updates from other players received.
    pub updates_from_others: AtomicU64,
    /// Updates from other players that changed bits in the emulator (the others
    /// were covered by this player's own newer changes).
    pub updates_applied: AtomicU64,
    /// Times the server's whole state was written into the emulator.
    pub state_writes: AtomicU64,
    /// Times this player started syncing by sending its own state to the group (a
    /// fresh group, or a restart under `on-restart: share`).
    pub shares: AtomicU64,
    /// Sequence number of the last update taken into account.
    pub seq: AtomicU64,
    /// Times the connection to the server was lost.
    pub disconnects: AtomicU64,
    /// Times the player got back after losing the connection.
    pub reconnects: AtomicU64,
    /// Shared bytes found wrong by the periodic check and repaired.
    pub repaired_bytes: AtomicU64,
    /// Batches in flight when the connection broke that the server turned out to
    /// have already, so they were not sent again.
    pub batches_not_resent: AtomicU64,
    /// Reconnects that found the game laid out otherwise on the server (another ROM,
    /// other regions or region kinds, another `sync-when:`): syncing stopped then.
    pub layout_changes: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One running player: a server connection and an openMSX, kept in sync by a task.
pub struct Player {
    msx: OpenMsx,
    hooks: Hooks,
    joined: Joined,
    stats: Arc<Stats>,
    done: async_channel::Receiver<Result<Ending>>,
    stop: async_channel::Sender<()>,
    task: smol::Task<()>,
}

impl Player {
    /// Connects, joins, starts openMSX with the game and starts syncing. Returns once
    /// the server's state is in the emulator and the hooks watch the regions.
    pub async fn start(opts: PlayOptions) -> Result<Player> {
        // Said here, before the server refuses it for the same reason.
        crate::text::check_name("your player name", &opts.name, MAX_NAME_BYTES)
            .map_err(|why| anyhow::anyhow!("{why}; give another one with --name"))?;
        let room = opts.room.clone().unwrap_or_else(|| opts.game.clone());
        crate::text::check_name("the room name", &room, MAX_NAME_BYTES)
            .map_err(|why| anyhow::anyhow!("{why}; give another one with --room"))?;
        let cache = match &opts.cache_dir {
            Some(dir) => RomCache::new(dir),
            None => RomCache::new(RomCache::default_dir()?),
        };
        let mut conn =
            client::connect_with_password(&opts.server, &opts.name, opts.password.as_ref()).await?;
        info!(
            "connected to {} ({}) as {}",
            conn.server(),
            conn.software(),
            opts.name
        );
        let session = new_session_id();
        let joined = conn.join_room(&opts.game, &room, session).await?;
        let game = joined.game.clone();
        let in_room = if joined.room.name == game.name {
            String::new()
        } else {
            format!(" in room {}", joined.room.name)
        };
        info!(
            "joined {} ({}){in_room}: {} shared bytes in {} regions; {}",
            game.name,
            game.title,
            game.shared_bytes,
            joined.regions.len(),
            players_line(&joined.room.players, joined.player)
        );

        let rom_path = match cache.lookup(&game.rom_sha256) {
            Some(p) => {
                info!("rom {} from the cache", short_hash(&game));
                p
            }
            None => {
                let data = conn.fetch_rom().await?;
                let p = cache.store(&game.rom_sha256, &data)?;
                info!(
                    "downloaded the rom ({} KiB) into {}",
                    data.len() / 1024,
                    cache.dir().display()
                );
                p
            }
        };
        let rom = std::fs::read(&rom_path)
            .with_context(|| format!("could not read the rom {}", rom_path.display()))?;
        match cache.clean(&game.rom_sha256, MAX_CACHE_BYTES) {
            Ok(c) if c.files > 0 => info!(
                "removed {} rom(s) used longest ago ({} KiB) from the cache, which keeps {} MiB",
                c.files,
                c.bytes / 1024,
                MAX_CACHE_BYTES >> 20
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e:#}"),
        }

        let machine = opts.machine.clone().or_else(|| game.machine.clone());
        for (what, v) in [("machine", &machine), ("romtype", &game.romtype)] {
            if let Some(v) = v {
                check_name(what, v)?;
            }
        }
        let msx = match &opts.attach {
            None => {
                let launch = LaunchOptions {
                    program: opts.openmsx.clone(),
                    machine,
                    cart: Some(rom_path.clone()),
                    romtype: game.romtype.clone(),
                    headless: opts.headless,
                };
                let msx = OpenMsx::spawn(&launch).await?;
                // Settings are not saved on exit (`OpenMsx::spawn`), so the player's
                // own choice comes back next time they start openMSX themselves.
                if let Err(e) = msx.command(&format!("set samples {SOUND_SAMPLES}")).await {
                    tracing::warn!("could not set openMSX's sound buffer: {e:#}");
                }
                msx
            }
            Some(target) => {
                let msx = OpenMsx::attach(target).await?;
                insert_cartridge(&msx, &rom_path, game.romtype.as_deref()).await?;
                msx
            }
        };
        info!(
            "openMSX started{}",
            msx.pid().map(|p| format!(" (pid {p})")).unwrap_or_default()
        );

        if opts.fast {
            msx.command("set throttle off").await?;
        }
        let mut hooks = Hooks::load(&msx).await?;
        let mut early = Vec::new();
        let started = hooks
            .wait_for_cartridge(&rom, CARTRIDGE_START_TIMEOUT, |ev| {
                // The power-on we just caused is not news.
                if !matches!(hooks.decode(&ev), Some(Ok(HookEvent::Booted))) {
                    early.push(ev);
                }
            })
            .await?;
        if !started {
            info!("the cartridge start was not seen; syncing from now on");
        }
        // Emulation is paused at the cartridge's INIT (when it was seen): nothing the
        // game does can slip between watching and deciding whether to sync.
        hooks.watch(&joined.regions).await?;
        let (sender, receiver) = conn.split();
        let who = Identity {
            server: opts.server.clone(),
            name: opts.name.clone(),
            game: game.name.clone(),
            room: joined.room.name.clone(),
            layout: Layout::of(&joined),
            session,
            password: opts.password.clone(),
        };
        let mut session = Session::new(hooks.clone(), &joined, sender, who, started, !opts.quiet)?;
        let stats = session.stats();
        let in_progress = joined.in_progress && !opts.join_now;
        session.game_started(started, in_progress).await?;
        hooks.resume().await?;

        let (done_tx, done_rx) = async_channel::bounded(1);
        let (stop_tx, stop_rx) = async_channel::bounded(1);
        let events = msx.events();
        let task = smol::spawn(async move {
            let result = session.run(receiver, events, early, stop_rx).await;
            if let Err(e) = &result {
                // Also returned by `wait_done` and `stop`; this is for the log.
                tracing::debug!("syncing stopped: {e:#}");
            }
            let _ = done_tx.send(result).await;
        });
        Ok(Player {
            msx,
            hooks,
            joined,
            stats,
            done: done_rx,
            stop: stop_tx,
            task,
        })
    }

    /// The player's openMSX (for tests and tools: read RAM, press keys).
    pub fn openmsx(&self) -> &OpenMsx {
        &self.msx
    }

    /// The hooks inside the player's openMSX.
    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// What the server said when the player joined.
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The player's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Waits until the session ends by itself (openMSX closed) or fails.
    pub async fn wait_done(&self) -> Result<Ending> {
        match self.done.recv().await {
            Ok(r) => r,
            Err(_) => Ok(Ending::Interrupted),
        }
    }

    /// Leaves the game and stops openMSX (an attached openMSX keeps running, with the
    /// hooks removed). Returns the error that stopped syncing earlier, if one did.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.try_send(());
        // The task ends at the stop request; don't wait forever if it is stuck.
        let _ = smol::future::or(self.task, async {
            smol::Timer::after(Duration::from_secs(2)).await;
        })
        .await;
        if !self.msx.is_closed() {
            // Leaves an attached openMSX clean; a child is shut down right after.
            let _ = self.hooks.uninstall().await;
        }
        let _ = self.msx.shutdown().await;
        match self.done.try_recv() {
            Ok(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Inserts the cartridge into an attached openMSX and resets it so the game starts.
/// The path reaches Tcl only hex-encoded; the rom type is a checked plain name, also
/// hex-encoded.
async fn insert_cartridge(
    msx: &OpenMsx,
    rom: &std::path::Path,
    romtype: Option<&str>,
) -> Result<()> {
    let path = rom
        .to_str()
        .with_context(|| format!("the rom path {} is not valid unicode", rom.display()))?;
    let mut cmd = format!("carta [binary decode hex {}]", hex::encode(path.as_bytes()));
    if let Some(t) = romtype {
        cmd.push_str(&format!(
            " -romtype [binary decode hex {}]",
            hex::encode(t.as_bytes())
        ));
    }
    msx.command(&cmd)
        .await
        .context("inserting the cartridge into openmsx")?;
    msx.command("reset").await.context("resetting openmsx")?;
    Ok(())
}

/// A session number for this run (see `ClientMsg::Join`): random and never 0. Std's
/// hasher keys are random per process, which is all a session number needs: two
/// players of one game picking the same number is what must not happen.
fn new_session_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn short_hash(game: &GameInfo) -> String {
    hex::encode(&game.rom_sha256[..6])
}

fn players_line(players: &[PlayerInfo], me: u32) -> String {
    let others: Vec<&str> = players
        .iter()
        .filter(|p| p.id != me)
        .map(|p| p.name.as_str())
        .collect();
    if others.is_empty() {
        "no other players yet".into()
    } else {
        format!("also here: {}", others.join(", "))
    }
}
