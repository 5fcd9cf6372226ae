//! The Tcl hooks (`hooks.tcl`) that watch the shared RAM regions inside openMSX, and
//! the Rust side that drives them and decodes what they push.
//!
//! Only numbers formatted here and hex encoded here are ever put into a Tcl command;
//! region descriptions, titles and paths never reach Tcl.
//!
//! Typical use (see `play`):
//! 1. [`Hooks::load`] right after [`OpenMsx::spawn`];
//! 2. [`Hooks::wait_for_cartridge`] powers the machine on and waits for the ROM's INIT;
//! 3. [`Hooks::watch`] the regions (or [`Hooks::install`] = load + watch);
//! 4. [`Hooks::write_state`] with the server's state;
//! 5. in the event loop, [`Hooks::decode`] each [`Event`]: `LocalChanges` go to the
//!    server, `MachineSwitched` means "write the server's state again";
//!    [`Hooks::apply`] the server's updates made by other players.

use super::connection::{Event, OpenMsx, Reply};
use crate::delta::Change;
use crate::protocol::{RegionInfo, MAX_REGIONS, MAX_SHARED_BYTES};
use crate::regions::{Op, SyncWhen};
use anyhow::{anyhow, bail, Context, Result};
use std::fmt::Write as _;
use std::time::Duration;

/// The hook script, sent to openMSX once per session.
pub const SCRIPT: &str = include_str!("hooks.tcl");

/// The user setting through which the hooks push data (see hooks.tcl for the format).
pub const PUSH_SETTING: &str = "msxsync_out";

/// What the hooks reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    /// The game changed these bits of shared RAM (one flush, in region order).
    LocalChanges(Vec<Change>),
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

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes hex (either case); an error for odd lengths or other characters.
pub fn decode_hex(text: &str) -> Result<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        bail!("hex string of odd length {}", digits.len());
    }
    let nibble = |c: u8| -> Result<u8> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| anyhow!("bad hex digit {:?}", c as char))
    };
    digits
        .chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
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
            let bytes = decode_hex(p).with_context(|| format!("region {i} from openmsx"))?;
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
            .context("reading regions with msxsync::read")?;
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
            hex(&c.values),
            hex(&c.masks)
        );
    }
    out
}

/// Parses one value of the push setting. `Ok(None)` for a value that is not from this
/// session (empty, or another token: a stale value openMSX restored); an error for
/// anything malformed or not fitting the regions.
pub fn parse_push(value: &str, token: u32, region_sizes: &[usize]) -> Result<Option<HookEvent>> {
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
        "c" => {
            if rest.is_empty() || !rest.len().is_multiple_of(4) {
                bail!("change push with {} words, not groups of 4", rest.len());
            }
            let mut changes = Vec::with_capacity(rest.len() / 4);
            for g in rest.chunks(4) {
                let change = Change {
                    region: g[0]
                        .parse()
                        .with_context(|| format!("bad region {:?}", g[0]))?,
                    offset: g[1]
                        .parse()
                        .with_context(|| format!("bad offset {:?}", g[1]))?,
                    values: decode_hex(g[2]).context("bad values in push")?,
                    masks: decode_hex(g[3]).context("bad masks in push")?,
                };
                change.check(region_sizes).map_err(|e| anyhow!("{e}"))?;
                changes.push(change);
            }
            HookEvent::LocalChanges(changes)
        }
        "d" => {
            if rest.is_empty() || !rest.len().is_multiple_of(4) {
                bail!("diff push with {} words, not groups of 4", rest.len());
            }
            let mut changes = Vec::new();
            for g in rest.chunks(4) {
                let region: u16 = g[0]
                    .parse()
                    .with_context(|| format!("bad region {:?}", g[0]))?;
                let offset: u16 = g[1]
                    .parse()
                    .with_context(|| format!("bad offset {:?}", g[1]))?;
                let old = decode_hex(g[2]).context("bad old bytes in push")?;
                let new = decode_hex(g[3]).context("bad new bytes in push")?;
                if old.len() != new.len() || old.is_empty() {
                    bail!(
                        "diff push with {} old and {} new bytes",
                        old.len(),
                        new.len()
                    );
                }
                // The span as one change first, to check it fits the region.
                Change::bytes(region, offset, new.clone())
                    .check(region_sizes)
                    .map_err(|e| anyhow!("{e}"))?;
                for mut c in crate::delta::diff(region, &old, &new) {
                    c.offset += offset;
                    changes.push(c);
                }
            }
            if changes.is_empty() {
                bail!("diff push without any changed byte");
            }
            HookEvent::LocalChanges(changes)
        }
        "switched" if rest.is_empty() => HookEvent::MachineSwitched,
        "init" if rest.is_empty() => HookEvent::CartridgeStarted,
        "join" if rest.is_empty() => HookEvent::JoinRequested,
        "boot" if rest.is_empty() => HookEvent::Booted,
        "gate" if rest == ["0"] => HookEvent::Gate(false),
        "gate" if rest == ["1"] => HookEvent::Gate(true),
        other => bail!("unknown push {:?}", other),
    };
    Ok(Some(event))
}

/// Checks regions before they go to openMSX and returns (start, length) pairs.
pub fn region_spans(regions: &[RegionInfo]) -> Result<Vec<(u16, usize)>> {
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
        total += r.len();
        spans.push((r.start, r.len()));
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
    spans: Vec<(u16, usize)>,
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
        msx.command(&format!("msxsync::setup {token} {api}"))
            .await
            .context("creating the msxsync push channel")?;
        Ok(Hooks {
            msx: msx.clone(),
            token,
            spans: Vec::new(),
        })
    }

    /// Loads the hooks and watches `regions` ([`Hooks::load`] then [`Hooks::watch`]).
    pub async fn install(msx: &OpenMsx, regions: &[RegionInfo]) -> Result<Hooks> {
        let mut hooks = Hooks::load(msx).await?;
        hooks.watch(regions).await?;
        Ok(hooks)
    }

    /// Watches `regions` (replacing any earlier ones). The shadow starts as the current
    /// RAM, so only writes from now on are reported.
    pub async fn watch(&mut self, regions: &[RegionInfo]) -> Result<()> {
        let spans = region_spans(regions)?;
        let list: Vec<String> = spans.iter().map(|(s, n)| format!("{s} {n}")).collect();
        self.msx
            .command(&format!("msxsync::install {{{}}}", list.join(" ")))
            .await
            .context("installing the msxsync watchpoints")?;
        self.spans = spans;
        Ok(())
    }

    /// The connection these hooks live in.
    pub fn openmsx(&self) -> &OpenMsx {
        &self.msx
    }

    /// Byte sizes of the watched regions, in order.
    pub fn region_sizes(&self) -> Vec<usize> {
        self.spans.iter().map(|&(_, n)| n).collect()
    }

    /// Interprets an event: `None` when it is not a push of these hooks (logs, other
    /// settings, stale values), else the decoded push or why it is malformed.
    pub fn decode(&self, event: &Event) -> Option<Result<HookEvent>> {
        match event {
            Event::Update {
                kind,
                name,
                machine: None,
                value,
            } if kind == "setting" && name == PUSH_SETTING => {
                parse_push(value, self.token, &self.region_sizes())
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
        if changes.is_empty() {
            return Ok(());
        }
        self.post_apply(changes)?
            .wait()
            .await
            .context("applying changes in openmsx")?;
        Ok(())
    }

    /// Like [`Hooks::apply`] without waiting for openMSX: the command runs in order
    /// with every other command; look at the returned reply for failures. Lets a busy
    /// player keep up instead of waiting a round trip per update.
    pub fn post_apply(&self, changes: &[Change]) -> Result<Reply> {
        let sizes = self.region_sizes();
        for c in changes {
            c.check(&sizes)
                .map_err(|e| anyhow!("not applying a change: {e}"))?;
        }
        self.msx
            .post(&format!("msxsync::apply {{{}}}", format_changes(changes)))
    }

    /// Writes whole regions into RAM and shadow (bringing a player to the server's
    /// state). Local changes not flushed yet are dropped.
    pub async fn write_state(&self, state: &[Vec<u8>]) -> Result<()> {
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
        let hexes: Vec<String> = state.iter().map(|s| hex(s)).collect();
        self.msx
            .command(&format!("msxsync::write_state {{{}}}", hexes.join(" ")))
            .await
            .context("writing the shared state into openmsx")?;
        Ok(())
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
            active: self.msx.post("msxsync::is_active")?,
            state: self.msx.post("msxsync::read")?,
            sizes: self.region_sizes(),
        })
    }

    /// The current RAM of every watched region.
    pub async fn read_state(&self) -> Result<Vec<Vec<u8>>> {
        self.read_hex_list("msxsync::read").await
    }

    /// The hooks' shadow of every region (what was last synced); for tests and checks.
    pub async fn read_shadow(&self) -> Result<Vec<Vec<u8>>> {
        self.read_hex_list("msxsync::read_shadow").await
    }

    /// Flushes now instead of at the next scheduled flush (e.g. before quitting).
    pub async fn flush(&self) -> Result<()> {
        self.msx.command("msxsync::flush").await.map(|_| ())
    }

    /// Reinstalls the watchpoints and takes RAM as the shadow. The hooks do this by
    /// themselves on a machine switch; call it after anything else that changes RAM
    /// behind their back, then [`Hooks::write_state`].
    pub async fn reinstall(&self) -> Result<()> {
        self.msx
            .command("msxsync::reinstall")
            .await
            .map(|_| ())
            .context("reinstalling the msxsync watchpoints")
    }

    /// Stops reporting game writes and applying remote changes until the next
    /// [`Hooks::write_state`]. What the game changed before is flushed first.
    pub async fn hold(&self) -> Result<()> {
        self.msx.command("msxsync::hold").await.map(|_| ())
    }

    /// Whether the hooks are syncing (true) or holding (false).
    pub async fn is_active(&self) -> Result<bool> {
        Ok(self.msx.command("msxsync::is_active").await?.trim() == "1")
    }

    /// Continues emulation after the pause at the cartridge's INIT (no-op otherwise).
    pub async fn resume(&self) -> Result<()> {
        self.msx
            .command("msxsync::resume")
            .await
            .map(|_| ())
            .context("resuming emulation")
    }

    /// Writes bytes into RAM and shadow whatever the game did to them: repairs bytes
    /// that changed behind the watchpoints' back. Masks are ignored.
    pub async fn force(&self, changes: &[Change]) -> Result<()> {
        let sizes = self.region_sizes();
        let mut cmd = String::from("msxsync::force {");
        for c in changes {
            c.check(&sizes).map_err(|e| anyhow!("not repairing: {e}"))?;
            let _ = write!(cmd, "{} {} {} ", c.region, c.offset, hex(&c.values));
        }
        cmd.push('}');
        self.msx
            .command(&cmd)
            .await
            .context("repairing shared ram in openmsx")?;
        Ok(())
    }

    /// Installs the sync gate for `cond` and returns whether it is open now. While it
    /// is closed the hooks hold; it reports [`HookEvent::Gate`] when it flips. With
    /// `closed` it starts closed whatever RAM says (right at the cartridge's INIT,
    /// RAM holds leftovers) and opens at the game's first write that makes it true.
    pub async fn set_gate(&self, cond: &SyncWhen, closed: bool) -> Result<bool> {
        let (addrs, expr) = gate_expression(cond);
        let closed = u8::from(closed);
        let reply = self
            .msx
            .command(&format!(
                "msxsync::gate_setup {{{addrs}}} {{{expr}}} {closed}"
            ))
            .await
            .context("installing the sync-when gate")?;
        Ok(reply.trim() == "1")
    }

    /// The gate: `None` without one, else whether it is open.
    pub async fn gate_state(&self) -> Result<Option<bool>> {
        let reply = self.msx.command("msxsync::gate_state").await?;
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
            .command(&format!("msxsync::bind_join {JOIN_KEY}"))
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
                hex(text.as_bytes())
            ))
            .await
            .map(|_| ())
    }

    /// Removes the watchpoints and breakpoints (leaves an attached openMSX clean).
    pub async fn uninstall(&self) -> Result<()> {
        self.msx.command("msxsync::uninstall").await.map(|_| ())
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
                "msxsync::arm_init {init} {} {} {} {} 1",
                rom[0], rom[1], rom[2], rom[3]
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
            let _ = self.msx.command("msxsync::disarm_init").await;
        }
        outcome
    }
}

/// The key a player presses in openMSX to join a game already in progress.
pub const JOIN_KEY: &str = "F12";

/// Turns a `sync-when:` condition into the byte addresses it reads and a Tcl
/// expression over them. Only numbers formatted here go into the expression.
pub fn gate_expression(cond: &SyncWhen) -> (String, String) {
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
    (addrs.join(" "), groups.join(" || "))
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

    #[test]
    fn gate_expressions_hold_only_numbers() {
        let cond =
            crate::regions::parse_sync_when("e122 == 01 and $e001 & 80 or e000 >= 0x10").unwrap();
        let (addrs, expr) = gate_expression(&cond);
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
        let got = parse_push("7 1 d 1 3 001122 0111a2", 7, &[4, 8]).unwrap();
        assert_eq!(
            got,
            Some(HookEvent::LocalChanges(vec![Change {
                region: 1,
                offset: 3,
                values: vec![0x01, 0x11, 0xa2],
                masks: vec![0x01, 0x00, 0x80],
            }]))
        );
        // Out of the region, uneven, unchanged or garbage: refused.
        assert!(parse_push("7 2 d 1 7 0011 0112", 7, &[4, 8]).is_err());
        assert!(parse_push("7 2 d 0 0 00 0011", 7, &[4, 8]).is_err());
        assert!(parse_push("7 2 d 0 0 11 11", 7, &[4, 8]).is_err());
        assert!(parse_push("7 2 d 0 0 zz 11", 7, &[4, 8]).is_err());
        assert!(parse_push("7 2 d 0 0 00", 7, &[4, 8]).is_err());
    }

    #[test]
    fn gate_and_join_pushes_parse() {
        assert_eq!(
            parse_push("5 1 gate 1", 5, &[1]).unwrap(),
            Some(HookEvent::Gate(true))
        );
        assert_eq!(
            parse_push("5 2 gate 0", 5, &[1]).unwrap(),
            Some(HookEvent::Gate(false))
        );
        assert_eq!(
            parse_push("5 3 join", 5, &[1]).unwrap(),
            Some(HookEvent::JoinRequested)
        );
        assert!(parse_push("5 4 gate 2", 5, &[1]).is_err());
        assert!(parse_push("5 4 join now", 5, &[1]).is_err());
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
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(
            decode_hex(&hex(&[0, 1, 0xab, 0xff])).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        assert_eq!(decode_hex("ABcd").unwrap(), [0xab, 0xcd]);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert!(decode_hex("+1").is_err());
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
        let sizes = [16, 64];
        assert_eq!(
            parse_push("77 2 c 0 3 21 21 1 60 0102 ff01", 77, &sizes).unwrap(),
            Some(HookEvent::LocalChanges(vec![
                Change {
                    region: 0,
                    offset: 3,
                    values: vec![0x21],
                    masks: vec![0x21]
                },
                Change {
                    region: 1,
                    offset: 60,
                    values: vec![1, 2],
                    masks: vec![0xff, 0x01]
                },
            ]))
        );
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
        assert_eq!(parse_push("76 9 c 0 0 01 01", 77, &sizes).unwrap(), None);
        assert_eq!(parse_push("hello", 77, &sizes).unwrap(), None);
    }

    #[test]
    fn garbage_pushes_are_rejected() {
        let sizes = [16, 64];
        for bad in [
            "77",
            "77 x c 0 0 01 01",
            "77 1",
            "77 1 c",
            "77 1 c 0 0 01",
            "77 1 c 0 0 01 0101",
            "77 1 c 2 0 01 01",
            "77 1 c 0 16 01 01",
            "77 1 c 0 15 0101 0101",
            "77 1 c 0 0 zz 01",
            "77 1 c -1 0 01 01",
            "77 1 c 0 0 \u{0}1 01",
            "77 1 switched now",
            "77 1 exit",
        ] {
            assert!(parse_push(bad, 77, &sizes).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn regions_are_checked() {
        let r = |start, end| RegionInfo {
            start,
            end,
            description: "]; exit; [".into(),
        };
        assert_eq!(
            region_spans(&[r(0xe000, 0xe00f), r(0xffff, 0xffff)]).unwrap(),
            vec![(0xe000, 16), (0xffff, 1)]
        );
        assert!(region_spans(&[r(2, 1)]).is_err());
        assert!(region_spans(&[r(0, 0xffff)]).is_err());
        assert!(region_spans(&vec![r(0, 0); MAX_REGIONS + 1]).is_err());
    }

    #[test]
    fn cartridge_headers() {
        assert_eq!(init_address(b"AB\x10\x40rest").unwrap(), Some(0x4010));
        assert_eq!(init_address(b"AB\x00\x00").unwrap(), None);
        assert!(init_address(b"AB").is_err());
        assert!(init_address(b"XY\x10\x40").is_err());
    }

    #[test]
    fn script_has_the_procs_rust_calls() {
        for p in [
            "proc msxsync::setup",
            "proc msxsync::install",
            "proc msxsync::apply",
            "proc msxsync::write_state",
            "proc msxsync::read ",
            "proc msxsync::read_shadow",
            "proc msxsync::flush",
            "proc msxsync::reinstall",
            "proc msxsync::uninstall",
            "proc msxsync::arm_init",
            "proc msxsync::disarm_init",
        ] {
            assert!(SCRIPT.contains(p), "hooks.tcl lacks {p}");
        }
    }
}
