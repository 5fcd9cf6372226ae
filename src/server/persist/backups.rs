//! The host's undo: every saved state of a room is also kept as a backup next to its
//! state file, `<file>.state.<ID>.bak`, where ID is the save time in milliseconds since
//! 1970 (UTC). A backup is a hard link to the file just written (the state file is
//! replaced by a rename, so the link keeps the old bytes): it costs no copy.
//!
//! Old backups are thinned after each save ([`to_delete`], pure): kept are the last 20
//! saves (the last seconds of play), the last save of each of the last 30 minutes that
//! had saves (a mishap noticed a few minutes late, or a griefer who kept writing for
//! longer than 20 saves), and the last save of each of the last 24 hours that had saves.
//! At most 74 files of at most about 17 KiB per room.
//!
//! Every function takes the room's state file (`files::room_file`).

use super::files::with_suffix;
use super::format::{decode, Saved};
use crate::catalog::Game;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Ending of backup file names.
pub const BACKUP_SUFFIX: &str = ".bak";

/// Which backups are kept: per tier, the length of its time buckets in milliseconds (0:
/// every save is its own bucket) and how many of the newest buckets keep their newest
/// save.
pub const TIERS: [(u64, usize); 3] = [(0, 20), (60_000, 30), (3_600_000, 24)];

/// Largest state file read back: the header, 256 regions, 16 KiB of state and the
/// checksum fit with room to spare.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The backup of the state file `state` saved at `id`.
pub fn backup_file(state: &Path, id: u64) -> PathBuf {
    with_suffix(state, &format!(".{id}{BACKUP_SUFFIX}"))
}

/// The ids of the backups of the state file `state`, newest first. No folder: none.
pub fn list(state: &Path) -> Result<Vec<u64>> {
    let dir = match state.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!(
        "{}.",
        state.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut ids = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A room never saved has no folder yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let id = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(BACKUP_SUFFIX))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(id) = id {
            ids.push(id);
        }
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// Of the backups `ids` (newest first), those the [`TIERS`] do not keep.
pub fn to_delete(ids: &[u64]) -> Vec<u64> {
    let mut keep = HashSet::new();
    for (bucket_ms, count) in TIERS {
        let mut last_bucket = None;
        let mut taken = 0;
        for &id in ids {
            if taken == count {
                break;
            }
            let bucket = id.checked_div(bucket_ms).unwrap_or(id);
            if last_bucket != Some(bucket) {
                keep.insert(id);
                taken += 1;
                last_bucket = Some(bucket);
            }
        }
    }
    ids.iter()
        .copied()
        .filter(|id| !keep.contains(id))
        .collect()
}

/// Keeps the state file `state`, just written, as backup `id`, then deletes the
/// backups the tiers no longer keep.
pub fn keep(state: &Path, id: u64) -> Result<()> {
    let backup = backup_file(state, id);
    match std::fs::hard_link(state, &backup) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        // A file system without hard links: a copy does the same.
        Err(_) => {
            std::fs::copy(state, &backup).with_context(|| {
                format!("cannot copy {} to {}", state.display(), backup.display())
            })?;
        }
    }
    for old in to_delete(&list(state)?) {
        let path = backup_file(state, old);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", path.display())),
        }
    }
    Ok(())
}

/// Reads backup `id` of the state file `state` of `game` and checks that it fits the
/// game's ROM and regions; `what` names the room in errors ("game G", "room R of game
/// G").
pub fn read(state: &Path, game: &Game, what: &str, id: u64) -> Result<Saved> {
    let path = backup_file(state, id);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what} has no saved state {id}")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("{} is larger than {MAX_FILE_BYTES} bytes", path.display());
    }
    let saved = decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(why) = saved.mismatch(game) {
        bail!("saved state {id} of {what} no longer fits it: {why}");
    }
    Ok(saved)
}

/// The time now in milliseconds since 1970 (UTC): the id of a backup made now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::persist::fixtures::game;
    use crate::server::persist::{save, state_file};

    #[test]
    fn tiers_keep_recent_saves_one_a_minute_and_one_an_hour() {
        // One save a second for three hours, newest first.
        let hour = 3_600_000u64;
        let t_end = 10 * hour;
        let ids: Vec<u64> = (0..3 * 3600).map(|s| t_end - s * 1000).collect();
        let gone: HashSet<u64> = to_delete(&ids).into_iter().collect();
        let kept: Vec<u64> = ids.iter().copied().filter(|i| !gone.contains(i)).collect();
        // The 20 newest saves.
        assert_eq!(&kept[..20], &ids[..20]);
        // Then the newest of each earlier minute, for 30 minutes in all...
        let minutes: HashSet<u64> = kept.iter().map(|i| i / 60_000).collect();
        assert!(minutes.len() >= 30, "{}", minutes.len());
        // ...and of each of the 3 hours (24 would be kept, there are 3).
        let hours: HashSet<u64> = kept.iter().map(|i| i / hour).collect();
        assert_eq!(
            hours.len(),
            4,
            "9:00-10:00 has one save at 10:00:00 exactly"
        );
        assert!(kept.len() <= 20 + 30 + 24);
        // Deleting is stable: what is kept stays kept when nothing new came in.
        assert!(to_delete(&kept).is_empty());
    }

    #[test]
    fn backups_are_linked_listed_thinned_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let g = game();
        let state = state_file(d, &g.name);
        for id in 1..=25u64 {
            save(d, &g, id, vec![id as u8; 5]).unwrap();
            keep(&state, id * 1000).unwrap();
        }
        let ids = list(&state).unwrap();
        assert_eq!(ids.len(), 20, "{ids:?}");
        assert_eq!(ids[0], 25_000);
        // Each backup has the bytes of its own save, not the latest.
        let saved = read(&state, &g, "game demo", 10_000).unwrap();
        assert_eq!((saved.seq, saved.bytes), (10, vec![10; 5]));
        let err = read(&state, &g, "game demo", 1_000)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "game demo has no saved state 1000");
        // Other games' files and look-alikes are not backups of this game.
        std::fs::write(d.join("demo.state.12x.bak"), b"").unwrap();
        std::fs::write(d.join("demo.state.tmp"), b"").unwrap();
        std::fs::write(d.join("demo2.state.5.bak"), b"").unwrap();
        assert_eq!(list(&state).unwrap().len(), 20);
        // A room that was never saved has no folder, and no backups.
        assert!(list(&d.join("demo.rooms/fri.state")).unwrap().is_empty());
        // A backup of another layout is refused with the reason.
        let mut other = game();
        other.regions.pop();
        let err = format!(
            "{:#}",
            read(&state, &other, "game demo", 25_000).unwrap_err()
        );
        assert!(
            err.contains("no longer fits it: the regions changed"),
            "{err}"
        );
    }
}
