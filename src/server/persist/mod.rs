//! Keeping each room's shared state across server restarts (`msxsync serve
//! --state-dir`): one file per room, `DIR/<game>.state` for a game's default room and
//! `DIR/<game>.rooms/<room>.state` for its other rooms.
//!
//! - [`format`](mod@format): the bytes of a state file, encoded and decoded (pure);
//! - [`files`]: file names, atomic replacement, loading with damaged files moved aside,
//!   finding a game's saved rooms, the folder lock and the default folder;
//! - [`saver`]: the thread that writes dirty rooms, at most once a second each, and its
//!   [`Schedule`] (pure: the caller passes the clock);
//! - [`backups`]: every save also kept as a backup, old ones thinned, for the host's
//!   undo (`msxsync restore`).
//!
//! The names below are re-exported so that callers write `persist::load` and
//! `persist::Saver` without knowing which file holds them.

pub mod backups;
pub mod files;
pub mod format;
pub mod saver;

pub use files::{
    default_state_dir, ensure_folder_of, load, load_file, prepare_dir, room_file, room_file_name,
    room_from_file_name, room_label, rooms_dir, save, saved_rooms, state_file, write_atomically,
    DirLock, Origin, LOCK_FILE, ROOMS_SUFFIX, STATE_SUFFIX,
};
pub use format::{decode, encode, layout, Bounds, Saved, FORMAT_VERSION, MAGIC};
pub use saver::{
    channel, Inbox, Notifier, Saver, Schedule, Snapshot, SnapshotFn, StopReport, SAVE_INTERVAL,
};

/// A game and its saved state for the unit tests of the three files.
#[cfg(test)]
mod fixtures {
    use super::format::Saved;
    use crate::catalog::Game;
    use crate::protocol::RegionInfo;

    pub fn region(start: u16, end: u16) -> RegionInfo {
        RegionInfo::bytes(start, end, "r")
    }

    pub fn game() -> Game {
        Game::new(
            "demo",
            "Demo",
            vec![region(0xe000, 0xe003), region(0xc000, 0xc000)],
            vec![1, 2, 3],
        )
    }

    pub fn saved() -> Saved {
        Saved::of(&game(), 123, vec![1, 2, 3, 4, 5])
    }
}
