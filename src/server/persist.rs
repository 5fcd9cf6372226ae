//! Keeping each game's shared state across server restarts (`msxsync serve --state-dir`).
//!
//! One file per game, `DIR/<game>.state`, in a small versioned binary format (all
//! integers little-endian):
//!
//! | bytes      | what                                                        |
//! |------------|-------------------------------------------------------------|
//! | 8          | magic `MSXSYNCS`                                            |
//! | 4          | format version ([`FORMAT_VERSION`])                         |
//! | 32         | SHA-256 of the game's ROM                                   |
//! | 4          | number of regions N (at most [`MAX_REGIONS`])               |
//! | 4 × N      | each region's start and end address (u16 each, end inclusive)|
//! | 8          | sequence number of the last update in the state             |
//! | sum of len | the shared bytes, region after region                       |
//! | 32         | SHA-256 of everything above, to catch damaged files         |
//!
//! The ROM hash and the region layout tie the file to one version of a game: when the
//! regions file or the ROM changes, the saved bytes would mean something else, so the
//! file is moved aside (`<game>.state.bad`) and the game starts fresh.
//!
//! Files are replaced atomically: written to `<game>.state.tmp` in the same folder,
//! fsynced, renamed over the old file, then the folder is fsynced. A crash leaves either
//! the old or the new file, and at worst a stale `.tmp` that loading never reads.
//!
//! The [`Saver`] thread writes a game at most once per interval (a second by default)
//! while it changes, so thousands of changes per second cost one small write per second,
//! and everything that is still unsaved when the server stops.
//!
//! The format and the schedule are pure functions and structs with unit tests; the file
//! I/O is a thin shell around them.

use crate::catalog::{sha256, Game};
use crate::protocol::{RegionInfo, MAX_REGIONS, MAX_SHARED_BYTES};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First bytes of every state file.
pub const MAGIC: [u8; 8] = *b"MSXSYNCS";
/// Version of the state file format; a file of another version is not loaded.
pub const FORMAT_VERSION: u32 = 1;
/// How often, at most, one game's file is rewritten while the game keeps changing.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Ending of state file names.
pub const STATE_SUFFIX: &str = ".state";

/// Size of everything before the region list.
const HEADER_BYTES: usize = 8 + 4 + 32 + 4;
/// Size of the closing checksum.
const CHECKSUM_BYTES: usize = 32;

/// One game's saved state, as stored in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// SHA-256 of the ROM the state belongs to.
    pub rom_sha256: [u8; 32],
    /// Start and end address (inclusive) of each region, in the game's order.
    pub regions: Vec<(u16, u16)>,
    /// Sequence number of the last update included in `bytes`.
    pub seq: u64,
    /// The shared bytes of every region, one after the other.
    pub bytes: Vec<u8>,
}

impl Saved {
    /// The state of `game` at update `seq`; `bytes` are its regions one after another.
    pub fn of(game: &Game, seq: u64, bytes: Vec<u8>) -> Saved {
        Saved {
            rom_sha256: game.rom_sha256,
            regions: layout(&game.regions),
            seq,
            bytes,
        }
    }

    /// Why this saved state cannot be used for `game`, or `None` when it can.
    pub fn mismatch(&self, game: &Game) -> Option<String> {
        if self.rom_sha256 != game.rom_sha256 {
            return Some(format!(
                "the ROM changed (saved for ROM {}, the game's ROM is {})",
                short_hex(&self.rom_sha256),
                short_hex(&game.rom_sha256)
            ));
        }
        let now = layout(&game.regions);
        if self.regions != now {
            return Some(format!(
                "the regions changed (saved: {}; now: {})",
                describe_layout(&self.regions),
                describe_layout(&now)
            ));
        }
        None
    }
}

/// The start and end of each region.
pub fn layout(regions: &[RegionInfo]) -> Vec<(u16, u16)> {
    regions.iter().map(|r| (r.start, r.end)).collect()
}

/// First bytes of a hash in hex, enough for a human to tell two apart.
fn short_hex(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A region layout in a line, cut short when long.
fn describe_layout(regions: &[(u16, u16)]) -> String {
    const SHOWN: usize = 4;
    let mut parts: Vec<String> = regions
        .iter()
        .take(SHOWN)
        .map(|(s, e)| format!("{s:04x}-{e:04x}"))
        .collect();
    if regions.len() > SHOWN {
        parts.push(format!("... ({} regions)", regions.len()));
    }
    if parts.is_empty() {
        return "no regions".into();
    }
    parts.join(" ")
}

/// Encodes a saved state into the file format described in the module docs.
pub fn encode(saved: &Saved) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HEADER_BYTES + 4 * saved.regions.len() + 8 + saved.bytes.len() + CHECKSUM_BYTES,
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&saved.rom_sha256);
    out.extend_from_slice(&(saved.regions.len() as u32).to_le_bytes());
    for (start, end) in &saved.regions {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    out.extend_from_slice(&saved.seq.to_le_bytes());
    out.extend_from_slice(&saved.bytes);
    let sum = sha256(&out);
    out.extend_from_slice(&sum);
    out
}

/// Reads fixed-size pieces off the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err(format!(
                "truncated: the file ends inside the {what} ({} of {n} bytes there)",
                self.rest.len()
            ));
        }
        let (piece, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(piece)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let piece = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(piece);
        Ok(a)
    }
}

/// Decodes a state file. The error says what is wrong, in lowercase, for a warning.
pub fn decode(file: &[u8]) -> Result<Saved, String> {
    let mut r = Reader { rest: file };
    if r.array::<8>("magic")? != MAGIC {
        return Err("not an msxsync state file (wrong magic bytes)".into());
    }
    let version = u32::from_le_bytes(r.array("format version")?);
    if version != FORMAT_VERSION {
        return Err(format!(
            "state file format version {version}; this msxsync reads version {FORMAT_VERSION}"
        ));
    }
    let rom_sha256 = r.array::<32>("rom hash")?;
    let count = u32::from_le_bytes(r.array("region count")?) as usize;
    if count > MAX_REGIONS {
        return Err(format!("{count} regions, the limit is {MAX_REGIONS}"));
    }
    let mut regions = Vec::with_capacity(count);
    let mut total = 0usize;
    for i in 0..count {
        let start = u16::from_le_bytes(r.array("region list")?);
        let end = u16::from_le_bytes(r.array("region list")?);
        if end < start {
            return Err(format!(
                "region {i} ends at {end:#06x}, before its start {start:#06x}"
            ));
        }
        total += end as usize - start as usize + 1;
        regions.push((start, end));
    }
    if total > MAX_SHARED_BYTES {
        return Err(format!(
            "{total} shared bytes, the limit is {MAX_SHARED_BYTES}"
        ));
    }
    let seq = u64::from_le_bytes(r.array("sequence number")?);
    let bytes = r.take(total, "shared bytes")?.to_vec();
    let sum = r.array::<CHECKSUM_BYTES>("checksum")?;
    if !r.rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the checksum",
            r.rest.len()
        ));
    }
    if sum != sha256(&file[..file.len() - CHECKSUM_BYTES]) {
        return Err("damaged: the checksum does not match the contents".into());
    }
    Ok(Saved {
        rom_sha256,
        regions,
        seq,
        bytes,
    })
}

/// The default state folder: `$XDG_STATE_HOME/msxsync`, or `~/.local/state/msxsync`
/// (on Windows, which has no HOME: `%LOCALAPPDATA%\msxsync`).
pub fn default_state_dir() -> Result<PathBuf> {
    let state_home = std::env::var_os("XDG_STATE_HOME");
    #[cfg(windows)]
    let state_home = state_home.or_else(|| std::env::var_os("LOCALAPPDATA"));
    state_dir_from(std::env::var_os("HOME"), state_home).context(
        "no folder for the server state: HOME and XDG_STATE_HOME are unset or relative; \
         give --state-dir",
    )
}

/// [`default_state_dir`] from explicit inputs, so the rules can be tested.
fn state_dir_from(home: Option<OsString>, state_home: Option<OsString>) -> Option<PathBuf> {
    // Per the XDG spec a relative or empty value is invalid and means the default.
    let absolute = |p: PathBuf| Some(p).filter(|p| p.is_absolute());
    state_home
        .and_then(|d| absolute(PathBuf::from(d)))
        .or_else(|| absolute(PathBuf::from(home?)).map(|h| h.join(".local/state")))
        .map(|d| d.join("msxsync"))
}

/// The file holding the state of the game `name` in `dir`. Game names come from file
/// names, but a server embedding msxsync may use any name: characters that could make a
/// path escape the folder, hide the file or confuse a shell are written as `%XX`.
pub fn state_file(dir: &Path, name: &str) -> PathBuf {
    let mut file = String::with_capacity(name.len() + STATE_SUFFIX.len());
    for (i, c) in name.chars().enumerate() {
        let escape =
            matches!(c, '/' | '\\' | '%' | ':' | '\0') || c.is_control() || (i == 0 && c == '.');
        if escape {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                file.push_str(&format!("%{b:02X}"));
            }
        } else {
            file.push(c);
        }
    }
    file.push_str(STATE_SUFFIX);
    dir.join(file)
}

/// `path` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same folder is
/// written and fsynced, renamed over `path`, and the folder is fsynced so the rename
/// itself survives a crash.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))?;
    Ok(())
}

/// Where a game's state came from when the server started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Persistence is off (a server started without a state folder).
    NotKept,
    /// Loaded from `path`.
    Loaded {
        /// The state file.
        path: PathBuf,
        /// Sequence number the game continues from.
        seq: u64,
    },
    /// There was no saved state at `path`.
    NoFile {
        /// Where the state will be saved.
        path: PathBuf,
    },
    /// `--fresh`: any saved state at `path` is ignored and will be overwritten.
    Ignored {
        /// The state file.
        path: PathBuf,
    },
    /// The file at `path` was unusable; it was moved to `moved_to` (if that worked).
    Discarded {
        /// The state file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
        /// Where it was moved, or why moving failed.
        moved_to: Result<PathBuf, String>,
    },
}

impl Origin {
    /// A warning to show, for a discarded file.
    pub fn warning(&self, game: &str) -> Option<String> {
        let Origin::Discarded {
            path,
            reason,
            moved_to,
        } = self
        else {
            return None;
        };
        let moved = match moved_to {
            Ok(to) => format!("moved it to {}", to.display()),
            Err(e) => format!("could not move it aside ({e}); it will be overwritten"),
        };
        Some(format!(
            "state file {} cannot be used for game {game}: {reason}; {moved}; the game \
             starts fresh",
            path.display()
        ))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::NotKept => write!(f, "fresh state (not kept across restarts)"),
            Origin::Loaded { path, seq } => {
                write!(f, "state loaded from {}, update {seq}", path.display())
            }
            Origin::NoFile { path } => {
                write!(
                    f,
                    "fresh state (none saved yet; saving to {})",
                    path.display()
                )
            }
            Origin::Ignored { path } => write!(
                f,
                "fresh state (--fresh: {} will be overwritten)",
                path.display()
            ),
            Origin::Discarded { path, .. } => write!(
                f,
                "fresh state (the saved state in {} was unusable, see the warning)",
                path.display()
            ),
        }
    }
}

/// Loads the saved state of `game` from `dir`. A missing file gives `Ok(None)`; a
/// damaged or mismatched file is moved aside and also gives `None`, with the reason in
/// the returned [`Origin`]. Only a file that exists but cannot be read is an error.
pub fn load(dir: &Path, game: &Game) -> Result<(Option<Saved>, Origin)> {
    let path = state_file(dir, &game.name);
    let file = match std::fs::read(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, Origin::NoFile { path }))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let reason = match decode(&file) {
        Ok(saved) => match saved.mismatch(game) {
            None => {
                let seq = saved.seq;
                return Ok((Some(saved), Origin::Loaded { path, seq }));
            }
            Some(why) => why,
        },
        Err(why) => why,
    };
    let bad = with_suffix(&path, ".bad");
    let moved_to = std::fs::rename(&path, &bad)
        .map(|()| bad)
        .map_err(|e| e.to_string());
    Ok((
        None,
        Origin::Discarded {
            path,
            reason,
            moved_to,
        },
    ))
}

/// Writes the state of `game` to its file in `dir`.
pub fn save(dir: &Path, game: &Game, seq: u64, bytes: Vec<u8>) -> Result<()> {
    let file = encode(&Saved::of(game, seq, bytes));
    write_atomically(&state_file(dir, &game.name), &file)
}

/// Name of the lock file inside a state folder.
pub const LOCK_FILE: &str = ".lock";

/// Holds the state folder for one server: a second server on the same folder would
/// overwrite the first one's files with its own state. The lock is an advisory file
/// lock, so the kernel releases it when the process dies, even by SIGKILL.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Creates the state folder if needed and locks it for this server.
pub fn prepare_dir(dir: &Path) -> Result<DirLock> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("the state folder {} is not a folder", dir.display());
    }
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another msxsync serve is using the state folder {}; stop it or give another \
             --state-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// When each dirty game is due to be saved: a game is written at once when it was not
/// written within the last interval, otherwise one interval after its last write.
/// Pure: the caller passes the clock.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    /// Per game: when it was last written.
    last_saved: Vec<Option<Instant>>,
    /// Per game: when it is due, if it is dirty.
    due: Vec<Option<Instant>>,
}

impl Schedule {
    /// A schedule for `games` games, none dirty.
    pub fn new(games: usize, interval: Duration) -> Schedule {
        Schedule {
            interval,
            last_saved: vec![None; games],
            due: vec![None; games],
        }
    }

    /// Game `g` changed at `now`.
    pub fn dirty(&mut self, g: usize, now: Instant) {
        let Some(due) = self.due.get_mut(g) else {
            return;
        };
        if due.is_none() {
            let earliest = self.last_saved[g].map_or(now, |t| t + self.interval);
            *due = Some(earliest.max(now));
        }
    }

    /// The earliest due time, if any game is dirty.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.iter().flatten().min().copied()
    }

    /// The games due at `now`; they count as written at `now` (clean again).
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut games = Vec::new();
        for (g, due) in self.due.iter_mut().enumerate() {
            if due.is_some_and(|d| d <= now) {
                *due = None;
                self.last_saved[g] = Some(now);
                games.push(g);
            }
        }
        games
    }

    /// Every dirty game, due or not (for the final save); they count as written.
    pub fn take_all(&mut self, now: Instant) -> Vec<usize> {
        let mut games = Vec::new();
        for (g, due) in self.due.iter_mut().enumerate() {
            if due.take().is_some() {
                self.last_saved[g] = Some(now);
                games.push(g);
            }
        }
        games
    }
}

/// A copy of one game's state, taken under its lock.
pub type Snapshot = (u64, Vec<u8>);

/// Takes a snapshot of game `g` and marks it clean, or `None` if it is clean already.
pub type SnapshotFn = dyn Fn(usize) -> Option<Snapshot> + Send + Sync;

enum SaverMsg {
    Dirty(usize),
    Stop,
}

/// What the final save at stop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// The state folder.
    pub dir: PathBuf,
    /// Games written at stop.
    pub written: usize,
    /// Games with nothing new to save (saved already, or never changed).
    pub unchanged: usize,
    /// Errors of writes that failed at stop.
    pub errors: Vec<String>,
}

impl fmt::Display for StopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saved the state of every game in {} ({} written now, {} unchanged)",
            self.dir.display(),
            self.written,
            self.unchanged
        )
    }
}

/// The saver's end of [`channel`], handed to [`Saver::start`].
pub struct Inbox {
    rx: mpsc::Receiver<SaverMsg>,
    tx: mpsc::Sender<SaverMsg>,
}

/// A channel to a saver that is not started yet: the rooms get the [`Notifier`] before
/// the saver gets the function that reads them.
pub fn channel() -> (Notifier, Inbox) {
    let (tx, rx) = mpsc::channel();
    (Notifier(tx.clone()), Inbox { rx, tx })
}

/// The thread that writes dirty games to their files. Rooms tell it when a game turns
/// dirty (through a [`Notifier`]); it takes a snapshot through the given function (which
/// copies under the game's lock) and writes the file with no lock held.
pub struct Saver {
    tx: mpsc::Sender<SaverMsg>,
    thread: Option<JoinHandle<StopReport>>,
}

/// Tells the saver that a game turned dirty. Cheap; safe to call under a game's lock.
#[derive(Clone)]
pub struct Notifier(mpsc::Sender<SaverMsg>);

impl Notifier {
    /// Game `g` has unsaved changes.
    pub fn dirty(&self, g: usize) {
        let _ = self.0.send(SaverMsg::Dirty(g));
    }
}

impl Saver {
    /// Starts the saver thread for `games` (in the order `snapshot` numbers them).
    pub fn start(
        inbox: Inbox,
        dir: PathBuf,
        games: Vec<Game>,
        interval: Duration,
        snapshot: Box<SnapshotFn>,
    ) -> Result<Saver> {
        let Inbox { rx, tx } = inbox;
        let thread = std::thread::Builder::new()
            .name("msxsync-saver".into())
            .spawn(move || saver_loop(&dir, &games, interval, &*snapshot, rx))
            .context("cannot start the state saver thread")?;
        Ok(Saver {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle for rooms to report dirty games.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.tx.clone())
    }

    /// Writes every game with unsaved changes, stops the thread and says what it did.
    pub fn stop(mut self) -> Option<StopReport> {
        self.finish()
    }

    fn finish(&mut self) -> Option<StopReport> {
        let thread = self.thread.take()?;
        let _ = self.tx.send(SaverMsg::Stop);
        thread.join().ok()
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.finish();
    }
}

fn saver_loop(
    dir: &Path,
    games: &[Game],
    interval: Duration,
    snapshot: &SnapshotFn,
    rx: mpsc::Receiver<SaverMsg>,
) -> StopReport {
    let mut schedule = Schedule::new(games.len(), interval);
    // The last error per game, so a full disk is reported once, not every second.
    let mut last_error: Vec<Option<String>> = vec![None; games.len()];
    // Per game: a copy whose write failed. Taking a copy marks the game clean, so
    // without this a failed write would be forgotten until the next change.
    let mut unsaved: Vec<Option<Snapshot>> = vec![None; games.len()];
    let mut write = |g: usize| -> Option<Result<(), String>> {
        let game = games.get(g)?;
        let (seq, bytes) = snapshot(g).or_else(|| unsaved[g].take())?;
        let saved = Saved::of(game, seq, bytes);
        let result = write_atomically(&state_file(dir, &game.name), &encode(&saved))
            .map_err(|e| format!("{e:#}"));
        match (&result, &last_error[g]) {
            (Err(e), last) if last.as_ref() != Some(e) => {
                eprintln!(
                    "msxsync: warning: cannot save the state of game {} (will retry): {e}",
                    game.name
                );
            }
            (Ok(()), Some(_)) => {
                eprintln!("msxsync: the state of game {} is saved again", game.name)
            }
            _ => {}
        }
        last_error[g] = result.as_ref().err().cloned();
        if result.is_err() {
            unsaved[g] = Some((saved.seq, saved.bytes));
        }
        Some(result)
    };
    loop {
        let received = match schedule.next_due() {
            None => match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => break,
            },
            Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        match received {
            Some(SaverMsg::Dirty(g)) => schedule.dirty(g, Instant::now()),
            Some(SaverMsg::Stop) => break,
            None => {}
        }
        for g in schedule.take_due(Instant::now()) {
            if let Some(Err(_)) = write(g) {
                // Retried one interval later, changed or not.
                schedule.dirty(g, Instant::now());
            }
        }
    }
    // Final save: changes may have come in after the last notification was handled, so
    // every game is asked for a snapshot; clean ones answer `None`.
    let _ = schedule.take_all(Instant::now());
    let mut report = StopReport {
        dir: dir.to_path_buf(),
        written: 0,
        unchanged: 0,
        errors: Vec::new(),
    };
    for g in 0..games.len() {
        match write(g) {
            None => report.unchanged += 1,
            Some(Ok(())) => report.written += 1,
            Some(Err(e)) => report.errors.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u16, end: u16) -> RegionInfo {
        RegionInfo {
            start,
            end,
            description: "r".into(),
        }
    }

    fn game() -> Game {
        Game::new(
            "demo",
            "Demo",
            vec![region(0xe000, 0xe003), region(0xc000, 0xc000)],
            vec![1, 2, 3],
        )
    }

    fn saved() -> Saved {
        Saved::of(&game(), 123, vec![1, 2, 3, 4, 5])
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = saved();
        let file = encode(&s);
        assert_eq!(file.len(), HEADER_BYTES + 2 * 4 + 8 + 5 + CHECKSUM_BYTES);
        assert_eq!(&file[..8], b"MSXSYNCS");
        assert_eq!(decode(&file), Ok(s.clone()));
        assert_eq!(s.mismatch(&game()), None);
        // The largest allowed state survives too.
        let regions: Vec<_> = (0..MAX_REGIONS as u16)
            .map(|i| region(i * 64, i * 64 + 63))
            .collect();
        let big = Game::new("big", "Big", regions, vec![0]);
        let bytes: Vec<u8> = (0..MAX_SHARED_BYTES).map(|i| (i * 31) as u8).collect();
        let s = Saved::of(&big, u64::MAX, bytes);
        assert_eq!(decode(&encode(&s)), Ok(s));
    }

    #[test]
    fn every_truncation_is_refused_with_a_reason() {
        let file = encode(&saved());
        for n in 0..file.len() {
            let err = decode(&file[..n]).unwrap_err();
            assert!(
                err.starts_with("truncated: the file ends inside the"),
                "{n}: {err}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer).unwrap_err(),
            "1 unexpected bytes after the checksum"
        );
    }

    #[test]
    fn damage_anywhere_is_caught() {
        let file = encode(&saved());
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipped a bit of byte {i}");
        }
        let err = decode(b"#!/bin/sh\necho this is not a state file\n").unwrap_err();
        assert!(err.contains("wrong magic"), "{err}");
    }

    #[test]
    fn hostile_headers_do_not_allocate_or_panic() {
        let mut file = encode(&saved());
        file[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(decode(&file).unwrap_err().contains("format version 2"));
        let mut file = encode(&saved());
        file[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&file).unwrap_err().contains("the limit is 256"));
        // A region ending before its start.
        let mut s = saved();
        s.regions[1] = (0xc001, 0xc000);
        assert!(decode(&encode(&s))
            .unwrap_err()
            .contains("before its start"));
        // Too many shared bytes in total.
        let s = Saved {
            regions: vec![(0, 0xffff)],
            bytes: vec![],
            ..saved()
        };
        assert!(decode(&encode(&s))
            .unwrap_err()
            .contains("65536 shared bytes"));
    }

    #[test]
    fn a_changed_rom_or_layout_is_a_mismatch() {
        let s = saved();
        let mut other_rom = game();
        other_rom.rom_sha256 = sha256(b"another rom");
        let why = s.mismatch(&other_rom).unwrap();
        assert!(why.starts_with("the ROM changed (saved for ROM "), "{why}");
        let mut moved = game();
        moved.regions[1].end = 0xc001;
        assert_eq!(
            s.mismatch(&moved).unwrap(),
            "the regions changed (saved: e000-e003 c000-c000; now: e000-e003 c000-c001)"
        );
        // Descriptions are not part of the layout.
        let mut renamed = game();
        renamed.regions[0].description = "other".into();
        assert_eq!(s.mismatch(&renamed), None);
    }

    #[test]
    fn state_file_names_stay_in_the_folder() {
        let d = Path::new("/s");
        assert_eq!(state_file(d, "demo"), Path::new("/s/demo.state"));
        assert_eq!(
            state_file(d, "Maze of Galious"),
            Path::new("/s/Maze of Galious.state")
        );
        assert_eq!(state_file(d, "../x"), Path::new("/s/%2E.%2Fx.state"));
        assert_eq!(state_file(d, ".hidden"), Path::new("/s/%2Ehidden.state"));
        assert_eq!(state_file(d, "a%b\\c"), Path::new("/s/a%25b%5Cc.state"));
        assert_eq!(state_file(d, "é"), Path::new("/s/é.state"));
    }

    #[test]
    fn default_dir_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            state_dir_from(os("/home/u"), None),
            Some(PathBuf::from("/home/u/.local/state/msxsync"))
        );
        assert_eq!(
            state_dir_from(os("/home/u"), os("/st")),
            Some(PathBuf::from("/st/msxsync"))
        );
        assert_eq!(
            state_dir_from(os("/home/u"), os("relative")),
            Some(PathBuf::from("/home/u/.local/state/msxsync"))
        );
        assert_eq!(state_dir_from(None, os("")), None);
        assert_eq!(state_dir_from(os("rel"), None), None);
    }

    #[test]
    fn one_server_per_state_folder() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("a/b");
        let lock = prepare_dir(&inner).unwrap();
        let err = prepare_dir(&inner).unwrap_err().to_string();
        assert!(
            err.starts_with("another msxsync serve is using the state folder"),
            "{err}"
        );
        drop(lock);
        prepare_dir(&inner).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(prepare_dir(&file).is_err());
    }

    #[test]
    fn schedule_writes_at_once_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let ms = Duration::from_millis;
        let mut sch = Schedule::new(2, s);
        assert_eq!(sch.next_due(), None);
        sch.dirty(0, t0);
        assert_eq!(sch.next_due(), Some(t0), "first change: saved at once");
        assert_eq!(sch.take_due(t0), vec![0]);
        assert_eq!(sch.next_due(), None);
        // Changes right after a write wait for the interval, however many there are.
        sch.dirty(0, t0 + ms(10));
        sch.dirty(0, t0 + ms(20));
        assert_eq!(sch.next_due(), Some(t0 + s));
        assert!(sch.take_due(t0 + ms(999)).is_empty());
        // Another game is independent.
        sch.dirty(1, t0 + ms(30));
        assert_eq!(sch.next_due(), Some(t0 + ms(30)));
        assert_eq!(sch.take_due(t0 + ms(30)), vec![1]);
        assert_eq!(sch.take_due(t0 + s), vec![0]);
        // After a quiet period a change is saved at once again.
        sch.dirty(0, t0 + ms(5000));
        assert_eq!(sch.take_due(t0 + ms(5000)), vec![0]);
        // The final save takes dirty games whether due or not.
        sch.dirty(1, t0 + ms(5001));
        sch.dirty(0, t0 + ms(5002));
        assert_eq!(sch.take_all(t0 + ms(5003)), vec![0, 1]);
        assert_eq!(sch.next_due(), None);
        sch.dirty(7, t0); // an unknown game is ignored
        assert_eq!(sch.next_due(), None);
    }

    #[test]
    fn load_handles_missing_good_bad_and_leftover_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let g = game();
        let path = d.join("demo.state");
        let (s, origin) = load(d, &g).unwrap();
        assert_eq!((s, origin), (None, Origin::NoFile { path: path.clone() }));

        save(d, &g, 7, vec![9, 8, 7, 6, 5]).unwrap();
        // A leftover temporary file from a crash in the middle of a write is ignored.
        std::fs::write(d.join("demo.state.tmp"), b"half a fi").unwrap();
        let (s, origin) = load(d, &g).unwrap();
        assert_eq!(s.unwrap().bytes, vec![9, 8, 7, 6, 5]);
        assert_eq!(
            origin.to_string(),
            format!("state loaded from {}, update 7", path.display())
        );
        // ...and the next save replaces it.
        save(d, &g, 8, vec![0; 5]).unwrap();
        assert!(!d.join("demo.state.tmp").exists());

        let file = std::fs::read(&path).unwrap();
        std::fs::write(&path, &file[..file.len() - 1]).unwrap();
        let (s, origin) = load(d, &g).unwrap();
        assert_eq!(s, None);
        let warning = origin.warning("demo").unwrap();
        assert_eq!(
            warning,
            format!(
                "state file {} cannot be used for game demo: truncated: the file ends \
                 inside the checksum (31 of 32 bytes there); moved it to {}.bad; the game \
                 starts fresh",
                path.display(),
                path.display()
            )
        );
        assert!(!path.exists());
        assert_eq!(
            std::fs::read(d.join("demo.state.bad")).unwrap(),
            &file[..file.len() - 1]
        );
        assert_eq!(
            load(d, &g).unwrap().1,
            Origin::NoFile { path: path.clone() }
        );

        std::fs::create_dir(&path).unwrap();
        let err = format!("{:#}", load(d, &g).unwrap_err());
        assert!(
            err.starts_with(&format!("cannot read {}", path.display())),
            "{err}"
        );
    }
}
