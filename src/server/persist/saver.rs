//! The saver thread and its schedule. A room reports itself dirty under its lock
//! (cheap), by the number the server gave it when it first changed; the thread copies
//! the state under the lock and writes the file with no lock held, at most once per
//! interval (a second by default) while the room changes, so thousands of changes per
//! second cost one small write per second, and at stop it writes everything that is
//! still unsaved.

use super::backups;
use super::files::{ensure_folder_of, room_file, room_label, write_atomically};
use super::format::{encode, Saved};
use crate::catalog::Game;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often, at most, one room's file is rewritten while the room keeps changing.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// When each dirty room is due to be saved: a room is written at once when it was not
/// written within the last interval, otherwise one interval after its last write.
/// Rooms are numbered from 0 by the server, densely (a room gets its number when it
/// first changes), so the schedule grows with them. Pure: the caller passes the clock.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    /// Per room: when it was last written.
    last_saved: Vec<Option<Instant>>,
    /// Per room: when it is due, if it is dirty.
    due: Vec<Option<Instant>>,
}

impl Schedule {
    /// A schedule for `rooms` rooms (more are added as they turn dirty), none dirty.
    pub fn new(rooms: usize, interval: Duration) -> Schedule {
        Schedule {
            interval,
            last_saved: vec![None; rooms],
            due: vec![None; rooms],
        }
    }

    /// The number of rooms known: every room ever reported dirty is below it.
    pub fn rooms(&self) -> usize {
        self.due.len()
    }

    /// Room `g` changed at `now`.
    pub fn dirty(&mut self, g: usize, now: Instant) {
        if g >= self.due.len() {
            self.due.resize(g + 1, None);
            self.last_saved.resize(g + 1, None);
        }
        let due = &mut self.due[g];
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

/// A copy of one room's state, taken under its lock, and which room it is.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room's game.
    pub game: Game,
    /// The room's name (the game's name for its default room).
    pub room: String,
    /// Sequence number of the last update in `bytes`.
    pub seq: u64,
    /// The shared bytes of every region, one after the other.
    pub bytes: Vec<u8>,
}

/// Takes a snapshot of room `g` and marks it clean, or `None` if it is clean already.
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
    /// Rooms written at stop.
    pub written: usize,
    /// Rooms that ever changed with nothing new to save.
    pub unchanged: usize,
    /// Errors of writes that failed at stop.
    pub errors: Vec<String>,
}

impl fmt::Display for StopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "saved the state of every room in {} ({} written now, {} unchanged)",
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

/// The thread that writes dirty rooms to their files. Rooms tell it when they turn
/// dirty (through a [`Notifier`]); it takes a snapshot through the given function (which
/// copies under the room's lock) and writes the file with no lock held.
pub struct Saver {
    tx: mpsc::Sender<SaverMsg>,
    thread: Option<JoinHandle<StopReport>>,
}

/// Tells the saver that a room turned dirty. Cheap; safe to call under a room's lock.
#[derive(Clone)]
pub struct Notifier(mpsc::Sender<SaverMsg>);

impl Notifier {
    /// Room `g` has unsaved changes.
    pub fn dirty(&self, g: usize) {
        let _ = self.0.send(SaverMsg::Dirty(g));
    }
}

impl Saver {
    /// Starts the saver thread writing into `dir`; `snapshot` copies a room by its
    /// number.
    pub fn start(
        inbox: Inbox,
        dir: PathBuf,
        interval: Duration,
        snapshot: Box<SnapshotFn>,
    ) -> Result<Saver> {
        let Inbox { rx, tx } = inbox;
        let thread = std::thread::Builder::new()
            .name("msxsync-saver".into())
            .spawn(move || saver_loop(&dir, interval, &*snapshot, rx))
            .context("cannot start the state saver thread")?;
        Ok(Saver {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle for rooms to report that they are dirty.
    pub fn notifier(&self) -> Notifier {
        Notifier(self.tx.clone())
    }

    /// Writes every room with unsaved changes, stops the thread and says what it did.
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

/// What the saver remembers of one room between its saves.
#[derive(Default)]
struct Room {
    /// The last error, so a full disk is reported once, not every second.
    last_error: Option<String>,
    /// A copy whose write failed. Taking a copy marks the room clean, so without this
    /// a failed write would be forgotten until the next change.
    unsaved: Option<Snapshot>,
    /// The id of the last backup, and the last backup error (said once).
    last_backup: u64,
    backup_error: Option<String>,
}

fn saver_loop(
    dir: &Path,
    interval: Duration,
    snapshot: &SnapshotFn,
    rx: mpsc::Receiver<SaverMsg>,
) -> StopReport {
    let mut schedule = Schedule::new(0, interval);
    let mut rooms: HashMap<usize, Room> = HashMap::new();
    let mut write = |g: usize| -> Option<Result<(), String>> {
        let mine = rooms.entry(g).or_default();
        let Snapshot {
            game,
            room,
            seq,
            bytes,
        } = snapshot(g).or_else(|| mine.unsaved.take())?;
        let what = room_label(&game.name, &room);
        let path = room_file(dir, &game.name, &room);
        let saved = Saved::of(&game, seq, bytes);
        let result = ensure_folder_of(&path)
            .and_then(|()| write_atomically(&path, &encode(&saved)))
            .map_err(|e| format!("{e:#}"));
        match (&result, &mine.last_error) {
            (Err(e), last) if last.as_ref() != Some(e) => {
                tracing::warn!("cannot save the state of {what} (will retry): {e}");
            }
            (Ok(()), Some(_)) => tracing::info!("the state of {what} is saved again"),
            _ => {}
        }
        mine.last_error = result.as_ref().err().cloned();
        if result.is_ok() {
            // Ids are times in ms; two saves within one ms still get two ids.
            let id = backups::now_ms().max(mine.last_backup + 1);
            mine.last_backup = id;
            let kept = backups::keep(&path, id).map_err(|e| format!("{e:#}"));
            if let Err(e) = &kept {
                if mine.backup_error.as_ref() != Some(e) {
                    tracing::warn!("cannot keep a backup of {what}: {e}");
                }
            }
            mine.backup_error = kept.err();
        } else {
            mine.unsaved = Some(Snapshot {
                game,
                room,
                seq: saved.seq,
                bytes: saved.bytes,
            });
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
    // every room that ever changed is asked for a snapshot; clean ones answer `None`.
    let _ = schedule.take_all(Instant::now());
    let mut report = StopReport {
        dir: dir.to_path_buf(),
        written: 0,
        unchanged: 0,
        errors: Vec::new(),
    };
    for g in 0..schedule.rooms() {
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
        // Rooms numbered later are added as they come.
        sch.dirty(7, t0 + ms(6000));
        assert_eq!(sch.rooms(), 8);
        assert_eq!(sch.take_due(t0 + ms(6000)), vec![7]);
    }
}
