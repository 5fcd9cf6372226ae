//! The Tcl hooks (`hooks.tcl`) that watch the shared RAM regions inside openMSX, and
//! the Rust side that drives them and decodes what they push.
//!
//! Only numbers formatted here and hex encoded here are ever put into a Tcl command;
//! region descriptions, titles and paths never reach Tcl.
//!
//! Typical use (see `play`):
//! 1. [`Hooks::load`] right after [`OpenMsx::spawn`];
//! 2. [`Hooks::wait_for_cartridge`] powers the machine on and waits for the ROM's INIT;
//! 3. [`Hooks::watch`] the regions;
//! 4. [`Hooks::write_state`] with the server's state;
//! 5. in the event loop, [`Hooks::decode`] each [`Event`]: `LocalChanges` (bits) and
//!    `LocalCounters` (whole counters, before and after) go to the server,
//!    `MachineSwitched` means "write the server's state again"; [`Hooks::apply`] (or
//!    [`Hooks::apply_all`], with counters) the server's updates made by other players.

use super::connection::{Event, OpenMsx, Reply};
use super::xml::Output;
use crate::counter::{Counter, CounterWrite, Flushed};
use crate::delta::Change;
use crate::hex;
use crate::protocol::{RegionInfo, MAX_REGIONS, MAX_SHARED_BYTES};
use crate::sync_when::{Op, SyncWhen};
use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::time::Duration;

/// The hook script, sent to openMSX once per session.
pub const SCRIPT: &str = include_str!("hooks.tcl");

/// The user setting through which the hooks push data (see hooks.tcl for the format).
pub const PUSH_SETTING: &str = "msxsync_out";

/// Declares a constant per Tcl proc and [`procs::ALL`] listing them, from one table.
macro_rules! tcl_procs {
    ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
        $($(#[$doc])* pub const $id: &str = $name;)*
        /// Every proc above: `script_defines_every_proc_rust_calls` checks hooks.tcl
        /// defines each one.
        pub const ALL: &[&str] = &[$($id),*];
    };
}

/// The procs of hooks.tcl that Rust calls. Every call in this file names its proc
/// through this table, so the test that hooks.tcl defines them all covers every call.
pub mod procs {
    tcl_procs! {
        /// Creates the push channel: `setup TOKEN API`.
        SETUP = "msxsync::setup";
        /// Watches regions: `install {START LEN ...}`.
        INSTALL = "msxsync::install";
        /// Names the counters among them: `counters {REGION ENCODING MIN MAX ...}`.
        COUNTERS = "msxsync::counters";
        /// Applies remote changes:
        /// `apply {REGION OFFSET VALUESHEX MASKSHEX ...} {REGION VALUE ...}`.
        APPLY = "msxsync::apply";
        /// Writes whole regions into RAM and shadow: `write_state {HEX ...}`.
        WRITE_STATE = "msxsync::write_state";
        /// Starts syncing with this player's values shared: `share {HEX ...} KEEP`.
        SHARE = "msxsync::share";
        /// The RAM of every region, hex.
        READ = "msxsync::read";
        /// The shadow of every region, hex.
        READ_SHADOW = "msxsync::read_shadow";
        /// Flushes now.
        FLUSH = "msxsync::flush";
        /// Stops reporting and applying.
        HOLD = "msxsync::hold";
        /// 1 while active, 0 while holding.
        IS_ACTIVE = "msxsync::is_active";
        /// Continues emulation after a pause of the hooks.
        RESUME = "msxsync::resume";
        /// Repairs bytes: `force {REGION OFFSET VALUESHEX ...}`.
        FORCE = "msxsync::force";
        /// Installs the sync gate: `gate_setup {ADDRS} {EXPR} CLOSED FRAMES`.
        GATE_SETUP = "msxsync::gate_setup";
        /// The gate: -1, 0 or 1.
        GATE_STATE = "msxsync::gate_state";
        /// Binds the join key: `bind_join KEY`.
        BIND_JOIN = "msxsync::bind_join";
        /// Removes every watchpoint, breakpoint, binding and timer.
        UNINSTALL = "msxsync::uninstall";
        /// The cartridge INIT breakpoint: `arm_init ADDR H0 H1 H2 H3 PAUSE`.
        ARM_INIT = "msxsync::arm_init";
        /// Removes the INIT breakpoint.
        DISARM_INIT = "msxsync::disarm_init";
        /// Shows a notice on the screen: `notice HEX` (UTF-8 text, hex).
        NOTICE = "msxsync::notice";
        /// The last notices shown, one a line.
        NOTICE_LOG = "msxsync::notice_log";
    }
}

/// What the hooks reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// The game changed these bits of shared RAM (one flush, in region order).
    LocalChanges(Vec<Change>),
    /// The game changed these counters (one flush, in region order): each whole,
    /// before and after.
    LocalCounters(Vec<Flushed>),
    /// openMSX switched machine (loadstate, rewind, another machine): the hooks
    /// reinstalled themselves, hold, and paused emulation; write the server's state
    /// back with [`Hooks::write_state`], then [`Hooks::resume`].
    MachineSwitched,
    /// The CPU reached the cartridge's INIT routine: the game (re)started (power-on
    /// or reset). The hooks hold and emulation is paused until [`Hooks::resume`].
    CartridgeStarted,
    /// The sync gate (`sync-when:`) opened (true) or closed (false). When it closes
    /// the hooks already hold; when it opens, emulation is paused: write the server's
    /// state, then [`Hooks::resume`].
    Gate(bool),
    /// The machine was powered on or reset: RAM was re-initialised and the hooks
    /// hold. [`HookEvent::CartridgeStarted`] follows when the cartridge has an INIT.
    Booted,
    /// The player pressed the join key (see [`Hooks::bind_join_key`]); emulation is
    /// paused until [`Hooks::resume`].
    JoinRequested,
    /// The sync gate's condition turned true: its settle period started.
    Settling,
    /// The condition turned false again after this many frames of the settle period;
    /// the period starts again when it is back.
    SettleBroken(u32),
}

/// Parses openMSX's version answer, e.g. "openMSX 18.0" or "openMSX 21.0-123-gabc",
/// into (major, minor).
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().strip_prefix("openMSX")?.trim();
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// openMSX 21 replaced `debug set_watchpoint` with `debug watchpoint create`.
fn uses_new_watchpoint_api(version: (u32, u32)) -> bool {
    version.0 >= 21
}

/// Parses `msxsync::read`'s answer (one hex string per region), checking the count and
/// each region's size.
fn parse_regions(reply: &str, sizes: &[usize]) -> Result<Vec<Vec<u8>>> {
    let parts: Vec<&str> = reply.split_ascii_whitespace().collect();
    if parts.len() != sizes.len() {
        bail!(
            "openmsx returned {} regions, expected {}",
            parts.len(),
            sizes.len()
        );
    }
    parts
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (p, &n))| {
            let bytes = hex::decode(p).with_context(|| format!("region {i} from openmsx"))?;
            if bytes.len() != n {
                bail!("region {i} from openmsx has {} bytes, not {n}", bytes.len());
            }
            Ok(bytes)
        })
        .collect()
}

/// A state query posted with [`Hooks::query_state`], answered later.
pub struct StateQuery {
    active: Reply,
    state: Reply,
    sizes: Vec<usize>,
}

impl StateQuery {
    /// Waits for the answers: whether the hooks were active, and every region's RAM.
    pub async fn answer(self) -> Result<(bool, Vec<Vec<u8>>)> {
        let active = self.active.wait().await?.trim() == "1";
        let reply = self
            .state
            .wait()
            .await
            .with_context(|| format!("reading regions with {}", procs::READ))?;
        Ok((active, parse_regions(&reply, &self.sizes)?))
    }
}

/// Formats changes as the flat Tcl list `REGION OFFSET VALUESHEX MASKSHEX ...` that
/// `msxsync::apply` takes: numbers and hex only.
pub fn format_changes(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(
            out,
            "{} {} {} {}",
            c.region,
            c.offset,
            hex::encode(&c.values),
            hex::encode(&c.masks)
        );
    }
    out
}

/// Parses one value of the push setting. `Ok(None)` for a value that is not from this
/// session (empty, or another token: a stale value openMSX restored); an error for
/// anything malformed or not fitting the regions.
pub fn parse_push(value: &str, token: u32, regions: &[Span]) -> Result<Option<HookEvent>> {
    let mut words = value.split_ascii_whitespace();
    let Some(first) = words.next() else {
        return Ok(None);
    };
    if first.parse::<u32>().ok() != Some(token) {
        return Ok(None);
    }
    let _seq: u64 = words
        .next()
        .context("push without a sequence number")?
        .parse()
        .context("push with a bad sequence number")?;
    let kind = words.next().context("push without a kind")?;
    let rest: Vec<&str> = words.collect();
    let event = match kind {
        "d" => HookEvent::LocalChanges(parse_diffs(&rest, regions)?),
        "n" => HookEvent::LocalCounters(parse_counters(&rest, regions)?),
        "switched" if rest.is_empty() => HookEvent::MachineSwitched,
        "init" if rest.is_empty() => HookEvent::CartridgeStarted,
        "join" if rest.is_empty() => HookEvent::JoinRequested,
        "boot" if rest.is_empty() => HookEvent::Booted,
        "gate" if rest == ["0"] => HookEvent::Gate(false),
        "gate" if rest == ["1"] => HookEvent::Gate(true),
        "wait" if rest.is_empty() => HookEvent::Settling,
        "waited" if rest.len() == 1 => HookEvent::SettleBroken(
            rest[0]
                .parse()
                .with_context(|| format!("bad frame count {:?}", rest[0]))?,
        ),
        other => bail!("unknown push {:?}", other),
    };
    Ok(Some(event))
}

/// The words of a `d` push: groups `REGION OFFSET OLDHEX NEWHEX` of byte regions.
fn parse_diffs(words: &[&str], regions: &[Span]) -> Result<Vec<Change>> {
    if words.is_empty() || !words.len().is_multiple_of(4) {
        bail!("diff push with {} words, not groups of 4", words.len());
    }
    let sizes: Vec<usize> = regions.iter().map(|s| s.len).collect();
    let mut changes = Vec::new();
    for g in words.chunks(4) {
        let region = parse_region(g[0], regions, false)?;
        let offset: u16 = g[1]
            .parse()
            .with_context(|| format!("bad offset {:?}", g[1]))?;
        let (old, new) = parse_old_new(g[2], g[3])?;
        // The span as one change first, to check it fits the region.
        Change::bytes(region, offset, new.clone())
            .check(&sizes)
            .map_err(|e| anyhow!("{e}"))?;
        for mut c in crate::delta::diff(region, &old, &new) {
            c.offset += offset;
            changes.push(c);
        }
    }
    if changes.is_empty() {
        bail!("diff push without any changed byte");
    }
    Ok(changes)
}

/// The words of an `n` push: groups `REGION OLDHEX NEWHEX` of whole counters.
fn parse_counters(words: &[&str], regions: &[Span]) -> Result<Vec<Flushed>> {
    if words.is_empty() || !words.len().is_multiple_of(3) {
        bail!("counter push with {} words, not groups of 3", words.len());
    }
    words
        .chunks(3)
        .map(|g| {
            let region = parse_region(g[0], regions, true)?;
            let (old, new) = parse_old_new(g[1], g[2])?;
            let len = regions[region as usize].len;
            if old.len() != len {
                bail!(
                    "counter push with {} bytes for region {region} of {len}",
                    old.len()
                );
            }
            Ok(Flushed { region, old, new })
        })
        .collect()
}

/// A region number of a push, which must name a counter when `counter`, else bytes.
fn parse_region(word: &str, regions: &[Span], counter: bool) -> Result<u16> {
    let region: u16 = word
        .parse()
        .with_context(|| format!("bad region {word:?}"))?;
    match regions.get(region as usize) {
        None => bail!(
            "push names region {region} but there are {} regions",
            regions.len()
        ),
        Some(s) if s.counter.is_some() != counter => bail!(
            "push has region {region} as {}",
            if counter { "a counter" } else { "bytes" }
        ),
        Some(_) => Ok(region),
    }
}

/// The old and new bytes of a push group: hex, as many of one as of the other.
fn parse_old_new(old: &str, new: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let old = hex::decode(old).context("bad old bytes in push")?;
    let new = hex::decode(new).context("bad new bytes in push")?;
    if old.len() != new.len() || old.is_empty() {
        bail!("push with {} old and {} new bytes", old.len(), new.len());
    }
    Ok((old, new))
}

/// A watched region as the hooks take it: first CPU address and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First address.
    pub start: u16,
    /// Number of bytes.
    pub len: usize,
    /// The region's counter, when it is one.
    pub counter: Option<Counter>,
}

/// Checks regions before they go to openMSX and returns their spans.
pub fn region_spans(regions: &[RegionInfo]) -> Result<Vec<Span>> {
    if regions.len() > MAX_REGIONS {
        bail!("{} regions, the limit is {MAX_REGIONS}", regions.len());
    }
    let mut total = 0usize;
    let mut spans = Vec::with_capacity(regions.len());
    for (i, r) in regions.iter().enumerate() {
        if r.end < r.start {
            bail!(
                "region {i} ends at {:#06x} before it starts at {:#06x}",
                r.end,
                r.start
            );
        }
        if let Some(c) = r.counter() {
            c.check(r.len())
                .map_err(|e| anyhow!("counter region {i}: {e}"))?;
        }
        total += r.len();
        spans.push(Span {
            start: r.start,
            len: r.len(),
            counter: r.counter(),
        });
    }
    if total > MAX_SHARED_BYTES {
        bail!("{total} shared bytes, the limit is {MAX_SHARED_BYTES}");
    }
    Ok(spans)
}

/// A session number that tells this session's pushes from stale ones.
fn new_token() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    let mixed = nanos ^ (std::process::id() as u64).wrapping_mul(2_654_435_761);
    (mixed % 999_999_999) as u32 + 1
}

/// The hooks loaded into one openMSX.
#[derive(Clone)]
pub struct Hooks {
    msx: OpenMsx,
    token: u32,
    spans: Vec<Span>,
}

impl Hooks {
    /// Loads the hook script and creates the push channel; watches nothing yet.
    pub async fn load(msx: &OpenMsx) -> Result<Hooks> {
        let version_text = msx
            .command("openmsx_info version")
            .await
            .context("asking openmsx for its version")?;
        let version = parse_version(&version_text)
            .with_context(|| format!("unexpected openmsx version {:?}", version_text))?;
        msx.command(SCRIPT)
            .await
            .context("loading the msxsync hooks into openmsx")?;
        let token = new_token();
        let api = u8::from(uses_new_watchpoint_api(version));
        msx.command(&format!("{} {token} {api}", procs::SETUP))
            .await
            .context("creating the msxsync push channel")?;
        Ok(Hooks {
            msx: msx.clone(),
            token,
            spans: Vec::new(),
        })
    }

    /// Watches `regions` (replacing any earlier ones). The shadow starts as the current
    /// RAM, so only writes from now on are reported.
    pub async fn watch(&mut self, regions: &[RegionInfo]) -> Result<()> {
        let spans = region_spans(regions)?;
        let list: Vec<String> = spans
            .iter()
            .map(|s| format!("{} {}", s.start, s.len))
            .collect();
        self.msx
            .command(&format!("{} {{{}}}", procs::INSTALL, list.join(" ")))
            .await
            .context("installing the msxsync watchpoints")?;
        let counters: Vec<String> = spans
            .iter()
            .enumerate()
            .filter_map(|(r, s)| {
                let c = s.counter?;
                Some(format!("{r} {} {} {}", c.encoding.tcl_code(), c.min, c.max))
            })
            .collect();
        self.msx
            .command(&format!("{} {{{}}}", procs::COUNTERS, counters.join(" ")))
            .await
            .context("telling the msxsync hooks which regions are counters")?;
        self.spans = spans;
        Ok(())
    }

    /// The connection these hooks live in.
    pub fn openmsx(&self) -> &OpenMsx {
        &self.msx
    }

    /// Byte sizes of the watched regions, in order.
    pub fn region_sizes(&self) -> Vec<usize> {
        self.spans.iter().map(|s| s.len).collect()
    }

    /// Interprets an event: `None` when it is not a push of these hooks (logs, other
    /// settings, stale values), else the decoded push or why it is malformed.
    pub fn decode(&self, event: &Event) -> Option<Result<HookEvent>> {
        match event {
            Event::Said(Output::Update {
                kind,
                name,
                machine: None,
                value,
            }) if kind == "setting" && name == PUSH_SETTING => {
                parse_push(value, self.token, &self.spans)
                    .with_context(|| format!("malformed push from the openmsx hooks: {value:?}"))
                    .transpose()
            }
            _ => None,
        }
    }

    /// Applies other players' changes: masked bits go into RAM and shadow in one Tcl
    /// command without being reported back (I1); bits the game changed and that were
    /// not flushed yet stay and are reported at the next flush (I4).
    pub async fn apply(&self, changes: &[Change]) -> Result<()> {
        self.apply_all(changes, &[]).await
    }

    /// Like [`Hooks::apply`], with counters: each takes the group's value plus what
    /// the game added and did not flush yet (see `apply_count` in hooks.tcl), once
    /// the CPU waits in HALT, so that the game cannot be between its read and its
    /// write of the number (at once when it waits now; `apply_counts` in hooks.tcl).
    pub async fn apply_all(&self, changes: &[Change], counters: &[CounterWrite]) -> Result<()> {
        if changes.is_empty() && counters.is_empty() {
            return Ok(());
        }
        self.post_apply(changes, counters)?
            .wait()
            .await
            .context("applying changes in openmsx")?;
        Ok(())
    }

    /// Like [`Hooks::apply_all`] without waiting for openMSX: the command runs in order
    /// with every other command; look at the returned reply for failures. Lets a busy
    /// player keep up instead of waiting a round trip per update.
    pub fn post_apply(&self, changes: &[Change], counters: &[CounterWrite]) -> Result<Reply> {
        let sizes = self.region_sizes();
        for c in changes {
            c.check(&sizes)
                .map_err(|e| anyhow!("not applying a change: {e}"))?;
        }
        let mut counts = String::new();
        for w in counters {
            let counter = self.spans.get(w.region as usize).and_then(|s| s.counter);
            match counter {
                Some(c) if (c.min..=c.max).contains(&w.value) => {
                    let _ = write!(counts, "{} {} ", w.region, w.value);
                }
                _ => bail!(
                    "not applying a counter: region {} cannot hold {}",
                    w.region,
                    w.value
                ),
            }
        }
        self.msx.post(&format!(
            "{} {{{}}} {{{}}}",
            procs::APPLY,
            format_changes(changes),
            counts.trim_end()
        ))
    }

    /// Writes whole regions into RAM and shadow (bringing a player to the server's
    /// state). Local changes not flushed yet are dropped.
    pub async fn write_state(&self, state: &[Vec<u8>]) -> Result<()> {
        let hexes = self.state_hex(state)?;
        self.msx
            .command(&format!("{} {{{hexes}}}", procs::WRITE_STATE))
            .await
            .context("writing the shared state into openmsx")?;
        Ok(())
    }

    /// Starts syncing with this player's own values shared with the group: `state` is
    /// the group's state as the player expects it, and what RAM holds on top of it
    /// leaves as one flush: [`HookEvent::LocalChanges`] for the bits and
    /// [`HookEvent::LocalCounters`] for the counters (nothing when RAM equals it). With
    /// `keep_since_sync` false (a fresh group) all of RAM that differs from `state` is
    /// sent; with true (a restart) only what the game changed since this player last
    /// synced, the rest of RAM taking `state` (what the others did meanwhile).
    pub async fn share(&self, state: &[Vec<u8>], keep_since_sync: bool) -> Result<()> {
        let hexes = self.state_hex(state)?;
        let keep = u8::from(keep_since_sync);
        self.msx
            .command(&format!("{} {{{hexes}}} {keep}", procs::SHARE))
            .await
            .context("sharing this player's state from openmsx")?;
        Ok(())
    }

    /// A whole state as the Tcl list of one hex string per region, checked against
    /// the watched regions.
    fn state_hex(&self, state: &[Vec<u8>]) -> Result<String> {
        let sizes = self.region_sizes();
        if state.len() != sizes.len() {
            bail!(
                "state for {} regions, but {} regions are watched",
                state.len(),
                sizes.len()
            );
        }
        for (i, (s, &n)) in state.iter().zip(&sizes).enumerate() {
            if s.len() != n {
                bail!("state of region {i} has {} bytes, the region {n}", s.len());
            }
        }
        let hexes: Vec<String> = state.iter().map(|s| hex::encode(s)).collect();
        Ok(hexes.join(" "))
    }

    async fn read_hex_list(&self, proc_name: &str) -> Result<Vec<Vec<u8>>> {
        let reply = self
            .msx
            .command(proc_name)
            .await
            .with_context(|| format!("reading regions with {proc_name}"))?;
        parse_regions(&reply, &self.region_sizes())
    }

    /// Asks whether the hooks are active and what every region holds, without waiting:
    /// openMSX answers only between its bursts of emulation, and the sync loop goes on
    /// meanwhile. Both run in openMSX after every command posted before.
    pub fn query_state(&self) -> Result<StateQuery> {
        Ok(StateQuery {
            active: self.msx.post(procs::IS_ACTIVE)?,
            state: self.msx.post(procs::READ)?,
            sizes: self.region_sizes(),
        })
    }

    /// The current RAM of every watched region.
    pub async fn read_state(&self) -> Result<Vec<Vec<u8>>> {
        self.read_hex_list(procs::READ).await
    }

    /// The hooks' shadow of every region (what was last synced); for tests and checks.
    pub async fn read_shadow(&self) -> Result<Vec<Vec<u8>>> {
        self.read_hex_list(procs::READ_SHADOW).await
    }

    /// Flushes now instead of at the next scheduled flush (e.g. before quitting).
    pub async fn flush(&self) -> Result<()> {
        self.msx.command(procs::FLUSH).await.map(|_| ())
    }

    /// Stops reporting game writes and applying remote changes until the next
    /// [`Hooks::write_state`]. What the game changed before is flushed first.
    pub async fn hold(&self) -> Result<()> {
        self.msx.command(procs::HOLD).await.map(|_| ())
    }

    /// Whether the hooks are syncing (true) or holding (false).
    pub async fn is_active(&self) -> Result<bool> {
        Ok(self.msx.command(procs::IS_ACTIVE).await?.trim() == "1")
    }

    /// Continues emulation after the pause at the cartridge's INIT (no-op otherwise).
    pub async fn resume(&self) -> Result<()> {
        self.msx
            .command(procs::RESUME)
            .await
            .map(|_| ())
            .context("resuming emulation")
    }

    /// Writes bytes into RAM and shadow whatever the game did to them: repairs bytes
    /// that changed behind the watchpoints' back. Masks are ignored.
    pub async fn force(&self, changes: &[Change]) -> Result<()> {
        let sizes = self.region_sizes();
        let mut cmd = format!("{} {{", procs::FORCE);
        for c in changes {
            c.check(&sizes).map_err(|e| anyhow!("not repairing: {e}"))?;
            let _ = write!(cmd, "{} {} {} ", c.region, c.offset, hex::encode(&c.values));
        }
        cmd.push('}');
        self.msx
            .command(&cmd)
            .await
            .context("repairing shared ram in openmsx")?;
        Ok(())
    }

    /// Installs the sync gate for `cond` and returns whether it is open now (only
    /// possible without a settle period). While it is closed the hooks hold; it opens
    /// once the condition has held for `cond.frames` frames without a break, and
    /// reports [`HookEvent::Gate`] when it opens or closes. With `closed` no settle
    /// period starts now whatever RAM says (right at the cartridge's INIT, RAM holds
    /// leftovers): it starts at the game's first write that makes the condition true.
    pub async fn set_gate(&self, cond: &SyncWhen, closed: bool) -> Result<bool> {
        let GateTcl { addrs, expr } = gate_expression(cond);
        let closed = u8::from(closed);
        let reply = self
            .msx
            .command(&format!(
                "{} {{{addrs}}} {{{expr}}} {closed} {}",
                procs::GATE_SETUP,
                cond.frames
            ))
            .await
            .context("installing the sync-when gate")?;
        Ok(reply.trim() == "1")
    }

    /// The gate: `None` without one, else whether it is open.
    pub async fn gate_state(&self) -> Result<Option<bool>> {
        let reply = self.msx.command(procs::GATE_STATE).await?;
        Ok(match reply.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        })
    }

    /// Binds [`JOIN_KEY`] in openMSX so that pressing it reports
    /// [`HookEvent::JoinRequested`].
    pub async fn bind_join_key(&self) -> Result<()> {
        self.msx
            .command(&format!("{} {JOIN_KEY}", procs::BIND_JOIN))
            .await
            .map(|_| ())
            .context("binding the join key")
    }

    /// Shows `text` on the emulator's screen (and in its log). The text reaches Tcl
    /// hex-encoded, so it can hold anything.
    pub async fn show(&self, text: &str) -> Result<()> {
        self.msx
            .command(&format!(
                "message [binary decode hex {}] info",
                hex::encode(text.as_bytes())
            ))
            .await
            .map(|_| ())
    }

    /// Shows a notice ("alice got the boots") on the emulator's screen and keeps
    /// it in the hooks' notice log, without waiting: the reply says whether it worked.
    /// The text reaches Tcl hex-encoded.
    pub fn post_notice(&self, text: &str) -> Result<Reply> {
        self.msx.post(&format!(
            "{} {}",
            procs::NOTICE,
            hex::encode(text.as_bytes())
        ))
    }

    /// The last notices shown (at most 20), oldest first.
    pub async fn notice_log(&self) -> Result<Vec<String>> {
        let log = self.msx.command(procs::NOTICE_LOG).await?;
        Ok(log.lines().map(str::to_string).collect())
    }

    /// Removes the watchpoints and breakpoints (leaves an attached openMSX clean).
    pub async fn uninstall(&self) -> Result<()> {
        self.msx.command(procs::UNINSTALL).await.map(|_| ())
    }

    /// Waits until the CPU reaches the cartridge's INIT routine, powering the machine
    /// on if it is off. Emulation then stays paused at INIT, before the game's own
    /// start-up code runs, until [`Hooks::resume`]; the breakpoint stays armed, so
    /// every later start of the game (reset, power cycle) reports
    /// [`HookEvent::CartridgeStarted`] and pauses again. `rom` is the ROM image (at least its first 4 bytes: "AB" and
    /// the INIT address). Returns true when INIT was reached, false when the ROM has no
    /// INIT or `timeout` (real time) passed first (e.g. attached after the game
    /// started): then go on anyway. Events that are not this wait's are handed to
    /// `other`, so nothing is lost.
    pub async fn wait_for_cartridge(
        &self,
        rom: &[u8],
        timeout: Duration,
        mut other: impl FnMut(Event),
    ) -> Result<bool> {
        let Some(init) = init_address(rom)? else {
            return Ok(false);
        };
        self.msx
            .command(&format!(
                "{} {init} {} {} {} {} 1",
                procs::ARM_INIT,
                rom[0],
                rom[1],
                rom[2],
                rom[3]
            ))
            .await
            .context("setting the cartridge start breakpoint")?;
        if self.msx.command("set power").await?.trim() != "true" {
            self.msx.power_on().await?;
        }
        let events = self.msx.events();
        let deadline = smol::Timer::after(timeout);
        let outcome = smol::future::or(
            async {
                loop {
                    let Ok(ev) = events.recv().await else {
                        bail!("openmsx closed while waiting for the cartridge to start");
                    };
                    match self.decode(&ev) {
                        Some(Ok(HookEvent::CartridgeStarted)) => return Ok(true),
                        _ if ev == Event::Closed => {
                            bail!("openmsx closed while waiting for the cartridge to start")
                        }
                        _ => other(ev),
                    }
                }
            },
            async {
                deadline.await;
                Ok(false)
            },
        )
        .await;
        if !matches!(outcome, Ok(true)) {
            let _ = self.msx.command(procs::DISARM_INIT).await;
        }
        outcome
    }
}

/// The key a player presses in openMSX to join a game already in progress.
pub const JOIN_KEY: &str = "F12";

/// A `sync-when:` condition as `msxsync::gate_setup` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateTcl {
    /// The byte addresses the condition reads, decimal, space-separated.
    pub addrs: String,
    /// A Tcl expression over `[debug read memory ADDR]` terms and decimal numbers.
    pub expr: String,
}

/// Turns a `sync-when:` condition into the byte addresses it reads and a Tcl
/// expression over them. Only numbers formatted here go into the expression.
pub fn gate_expression(cond: &SyncWhen) -> GateTcl {
    let mut addrs: Vec<u16> = cond.addresses();
    addrs.sort_unstable();
    addrs.dedup();
    let groups: Vec<String> = cond
        .any_of
        .iter()
        .map(|group| {
            let terms: Vec<String> = group
                .iter()
                .map(|t| {
                    let byte = format!("[debug read memory {}]", t.addr);
                    let v = t.value;
                    match t.op {
                        Op::Eq => format!("({byte} == {v})"),
                        Op::Ne => format!("({byte} != {v})"),
                        Op::Lt => format!("({byte} < {v})"),
                        Op::Gt => format!("({byte} > {v})"),
                        Op::Le => format!("({byte} <= {v})"),
                        Op::Ge => format!("({byte} >= {v})"),
                        Op::BitAnd => format!("(({byte} & {v}) != 0)"),
                    }
                })
                .collect();
            format!("({})", terms.join(" && "))
        })
        .collect();
    let addrs: Vec<String> = addrs.iter().map(u16::to_string).collect();
    GateTcl {
        addrs: addrs.join(" "),
        expr: groups.join(" || "),
    }
}

/// The INIT address from a cartridge header ("AB", INIT little endian at 2..3), or
/// `None` when INIT is zero (BASIC or device ROMs).
pub fn init_address(rom: &[u8]) -> Result<Option<u16>> {
    if rom.len() < 4 || &rom[..2] != b"AB" {
        bail!("the rom has no cartridge header (\"AB\" at the start)");
    }
    let init = u16::from_le_bytes([rom[2], rom[3]]);
    Ok((init != 0).then_some(init))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte regions of these sizes, as spans.
    fn spans(sizes: &[usize]) -> Vec<Span> {
        sizes
            .iter()
            .map(|&len| Span {
                start: 0xe000,
                len,
                counter: None,
            })
            .collect()
    }

    #[test]
    fn counter_pushes_carry_whole_counters() {
        let mut regions = spans(&[4, 2]);
        regions[1].counter = Some(Counter::full(crate::counter::Encoding::Bcd, 2));
        assert_eq!(
            parse_push("7 3 n 1 9900 0001", 7, &regions).unwrap(),
            Some(HookEvent::LocalCounters(vec![Flushed {
                region: 1,
                old: vec![0x99, 0x00],
                new: vec![0x00, 0x01],
            }]))
        );
        for bad in [
            // Not the whole counter, not a counter, bits of a counter, malformed.
            "7 4 n 1 99 00",
            "7 4 n 0 00000000 00000001",
            "7 4 d 1 0 99 00",
            "7 4 n 1 9900",
            "7 4 n 1 9900 000",
            "7 4 n 2 9900 0001",
            "7 4 n",
        ] {
            assert!(
                parse_push(bad, 7, &regions).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn gate_expressions_hold_only_numbers() {
        let cond =
            crate::sync_when::parse_sync_when("e122 == 01 and $e001 & 80 or e000 >= 0x10").unwrap();
        let GateTcl { addrs, expr } = gate_expression(&cond);
        assert_eq!(addrs, "57344 57345 57634");
        assert_eq!(
            expr,
            "(([debug read memory 57634] == 1) && (([debug read memory 57345] & 128) != 0)) \
             || (([debug read memory 57344] >= 16))"
        );
    }

    #[test]
    fn diff_pushes_become_masked_changes() {
        // Region 1, span from byte 3: 00 11 22 -> 01 11 a2.
        let got = parse_push("7 1 d 1 3 001122 0111a2", 7, &spans(&[4, 8])).unwrap();
        assert_eq!(
            got,
            Some(HookEvent::LocalChanges(vec![Change {
                region: 1,
                offset: 3,
                values: vec![0x01, 0x11, 0xa2],
                masks: vec![0x01, 0x00, 0x80],
            }]))
        );
        // Several spans in one push, each in its own region; bytes that did not
        // change inside a span are no change.
        assert_eq!(
            parse_push("7 2 d 0 3 21 00 1 6 0000 0201", 7, &spans(&[4, 8])).unwrap(),
            Some(HookEvent::LocalChanges(vec![
                Change {
                    region: 0,
                    offset: 3,
                    values: vec![0x00],
                    masks: vec![0x21],
                },
                Change {
                    region: 1,
                    offset: 6,
                    values: vec![0x02, 0x01],
                    masks: vec![0x02, 0x01],
                },
            ]))
        );
        // Out of the region, uneven, unchanged or garbage: refused.
        for bad in [
            "7 2 d 1 7 0011 0112",
            "7 2 d 2 0 00 01",
            "7 2 d 0 0 00 0011",
            "7 2 d 0 0 11 11",
            "7 2 d 0 0 zz 11",
            "7 2 d 0 0 00",
            "7 2 d -1 0 00 01",
            "7 2 d 0 x 00 01",
            "7 2 d 0 0 \u{0}0 01",
            "7 2 d",
        ] {
            assert!(
                parse_push(bad, 7, &spans(&[4, 8])).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn gate_and_join_pushes_parse() {
        assert_eq!(
            parse_push("5 1 gate 1", 5, &spans(&[1])).unwrap(),
            Some(HookEvent::Gate(true))
        );
        assert_eq!(
            parse_push("5 2 gate 0", 5, &spans(&[1])).unwrap(),
            Some(HookEvent::Gate(false))
        );
        assert_eq!(
            parse_push("5 3 join", 5, &spans(&[1])).unwrap(),
            Some(HookEvent::JoinRequested)
        );
        assert_eq!(
            parse_push("5 4 wait", 5, &spans(&[1])).unwrap(),
            Some(HookEvent::Settling)
        );
        assert_eq!(
            parse_push("5 5 waited 12", 5, &spans(&[1])).unwrap(),
            Some(HookEvent::SettleBroken(12))
        );
        assert!(parse_push("5 6 waited", 5, &spans(&[1])).is_err());
        assert!(parse_push("5 6 waited -1", 5, &spans(&[1])).is_err());
        assert!(parse_push("5 6 wait 1", 5, &spans(&[1])).is_err());
        assert!(parse_push("5 4 gate 2", 5, &spans(&[1])).is_err());
        assert!(parse_push("5 4 join now", 5, &spans(&[1])).is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("openMSX 18.0"), Some((18, 0)));
        assert_eq!(parse_version("openMSX 21.0-42-gabcdef"), Some((21, 0)));
        assert_eq!(parse_version("openMSX 0.15.0"), Some((0, 15)));
        assert_eq!(parse_version("fMSX 3"), None);
        assert!(!uses_new_watchpoint_api((18, 0)));
        assert!(uses_new_watchpoint_api((21, 0)));
    }

    #[test]
    fn changes_format_as_numbers_and_hex() {
        let changes = [
            Change::bytes(0, 3, vec![0x21]),
            Change {
                region: 1,
                offset: 2,
                values: vec![1, 2],
                masks: vec![0x0f, 0xf0],
            },
        ];
        assert_eq!(format_changes(&changes), "0 3 21 ff 1 2 0102 0ff0");
    }

    #[test]
    fn pushes_parse() {
        let sizes = spans(&[16, 64]);
        assert_eq!(
            parse_push("77 3 switched", 77, &sizes).unwrap(),
            Some(HookEvent::MachineSwitched)
        );
        assert_eq!(
            parse_push("77 4 init", 77, &sizes).unwrap(),
            Some(HookEvent::CartridgeStarted)
        );
        // Stale values of an earlier session, and the reset value, are not ours.
        assert_eq!(parse_push("", 77, &sizes).unwrap(), None);
        assert_eq!(parse_push("76 9 d 0 0 00 01", 77, &sizes).unwrap(), None);
        assert_eq!(parse_push("hello", 77, &sizes).unwrap(), None);
    }

    #[test]
    fn garbage_pushes_are_rejected() {
        let sizes = spans(&[16, 64]);
        for bad in [
            "77",
            "77 x d 0 0 00 01",
            "77 1",
            "77 1 switched now",
            "77 1 exit",
            // hooks.tcl sends only `d` for changes.
            "77 1 c 0 3 21 21",
        ] {
            assert!(parse_push(bad, 77, &sizes).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn regions_are_checked() {
        let r = |start, end| RegionInfo::bytes(start, end, "]; exit; [");
        assert_eq!(
            region_spans(&[r(0xe000, 0xe00f), r(0xffff, 0xffff)]).unwrap(),
            vec![
                Span {
                    start: 0xe000,
                    len: 16,
                    counter: None,
                },
                Span {
                    start: 0xffff,
                    len: 1,
                    counter: None,
                }
            ]
        );
        assert!(region_spans(&[r(2, 1)]).is_err());
        assert!(region_spans(&[r(0, 0xffff)]).is_err());
        assert!(region_spans(&vec![r(0, 0); MAX_REGIONS + 1]).is_err());
        // A counter that does not fit its bytes never reaches Tcl.
        let mut wide = r(0xe000, 0xe004);
        wide.kind = crate::protocol::RegionKind::Counter(Counter::full(
            crate::counter::Encoding::Binary,
            4,
        ));
        assert!(region_spans(&[wide]).is_err());
    }

    #[test]
    fn cartridge_headers() {
        assert_eq!(init_address(b"AB\x10\x40rest").unwrap(), Some(0x4010));
        assert_eq!(init_address(b"AB\x00\x00").unwrap(), None);
        assert!(init_address(b"AB").is_err());
        assert!(init_address(b"XY\x10\x40").is_err());
    }

    #[test]
    fn script_defines_every_proc_rust_calls() {
        // The names hooks.tcl defines: every proc is declared as `proc NAME ARGS {`
        // at the start of a line.
        let defined: Vec<&str> = SCRIPT
            .lines()
            .filter_map(|l| l.strip_prefix("proc "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(defined.len() > procs::ALL.len(), "{defined:?}");
        for p in procs::ALL {
            assert!(defined.contains(p), "hooks.tcl does not define {p}");
        }
        // Every proc this file calls is in the table: its name appears in a string
        // literal only there (the needle is split so this line does not count).
        let literal = concat!("\"msxsync", "::");
        let source = include_str!("hooks.rs");
        assert_eq!(
            source.matches(literal).count(),
            procs::ALL.len(),
            "a call to a hooks.tcl proc in hooks.rs does not go through `procs`"
        );
    }
}
