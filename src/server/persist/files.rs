//! The state files on disk: where a room's file is, replacing it atomically, loading it
//! (moving a damaged or mismatched file aside as `<file>.bad`), finding the saved rooms
//! of a game, and the lock that keeps a second server off the folder.
//!
//! A game's default room (named after the game) is `DIR/<game>.state`, the file a
//! server without rooms used; every other room is `DIR/<game>.rooms/<room>.state`, with
//! the room's name encoded by [`room_file_name`] so that no name can leave the folder,
//! hide the file or share it with another room.
//!
//! Files are replaced atomically: written to `<game>.state.tmp` in the same folder,
//! fsynced, renamed over the old file, then the folder is fsynced. A crash leaves either
//! the old or the new file, and at worst a stale `.tmp` that loading never reads.

use super::format::{decode, encode, Saved, MAX_FILE_BYTES};
use crate::catalog::Game;
use crate::dirs::Xdg;
use anyhow::{bail, Context, Result};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Ending of state file names.
pub const STATE_SUFFIX: &str = ".state";

/// Ending of the folder holding a game's rooms other than its default room.
pub const ROOMS_SUFFIX: &str = ".rooms";

/// The default state folder: `$XDG_STATE_HOME/msxsync`, or `~/.local/state/msxsync`
/// (Windows: `%LOCALAPPDATA%\msxsync`).
pub fn default_state_dir() -> Result<PathBuf> {
    Xdg::from_env()
        .state_home()
        .map(|d| d.join("msxsync"))
        .context(
            "no folder for the server state: HOME and XDG_STATE_HOME are unset or \
             relative; give --state-dir",
        )
}

/// The file holding the state of the game `name` in `dir`. Game names come from file
/// names, but a server embedding msxsync may use any name: characters that could make a
/// path escape the folder, hide the file or confuse a shell are written as `%XX`.
pub fn state_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(escape_game(name) + STATE_SUFFIX)
}

/// The folder holding the rooms of game `name` other than its default room. No game's
/// state file can be named like it: those end in [`STATE_SUFFIX`].
pub fn rooms_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(escape_game(name) + ROOMS_SUFFIX)
}

/// The file holding the state of room `room` of game `game` in `dir`: the game's own
/// [`state_file`] for its default room (the room named like the game), so that state
/// saved before there were rooms loads as that room.
pub fn room_file(dir: &Path, game: &str, room: &str) -> PathBuf {
    if room == game {
        return state_file(dir, game);
    }
    rooms_dir(dir, game).join(room_file_name(room) + STATE_SUFFIX)
}

/// How a room is named in messages: "game G" for the default room, "room R of game G"
/// for the others.
pub fn room_label(game: &str, room: &str) -> String {
    if room == game {
        format!("game {game}")
    } else {
        format!("room {room} of game {game}")
    }
}

/// Names that Windows reserves in every folder, whatever the ending.
const RESERVED: [&str; 22] = [
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// A room's name as a file name (without the ending): `a`-`z`, `0`-`9`, `-` and `_`
/// stay, every other byte of its UTF-8 is written `%XX` (upper-case hex), and so is
/// the first letter of a name Windows reserves (`con`, `lpt1`). So no name can hold a
/// path separator, start with a dot or be `..`, and two rooms never share a file, not
/// even on a file system that ignores case (`Friday` is `%46riday`).
pub fn room_file_name(room: &str) -> String {
    let mut out = String::with_capacity(room.len());
    let reserved = RESERVED.contains(&room);
    for (i, b) in room.bytes().enumerate() {
        let plain = matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_');
        if plain && !(reserved && i == 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The room whose [`room_file_name`] is `file`, or `None` when `file` is not one (a
/// file someone else put there, or a name written another way than ours).
pub fn room_from_file_name(file: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(file.len());
    let mut rest = file.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(b);
            rest = after;
        }
    }
    let room = String::from_utf8(bytes).ok()?;
    // Only our own spelling: one room, one file.
    (room_file_name(&room) == file).then_some(room)
}

/// The rooms of game `name` that have a state file in `dir` (its default room not
/// included), sorted, and the files in its rooms folder that are not a room's state
/// file (a room name written another way, a stray file), which are left alone.
pub fn saved_rooms(dir: &Path, name: &str) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let folder = rooms_dir(dir, name);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", folder.display())),
    };
    let (mut rooms, mut strays) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", folder.display()))?;
        let file = entry.file_name();
        // Backups, temporary and moved-aside files have other endings.
        let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(STATE_SUFFIX)) else {
            continue;
        };
        match room_from_file_name(stem) {
            Some(room) if room != name => rooms.push(room),
            _ => strays.push(entry.path()),
        }
    }
    rooms.sort();
    strays.sort();
    Ok((rooms, strays))
}

/// Creates the folder `path` is in when it is missing (a game's rooms folder, at its
/// first room's first save), and makes its entry in the parent survive a crash.
pub fn ensure_folder_of(path: &Path) -> Result<()> {
    let Some(folder) = path.parent() else {
        return Ok(());
    };
    if folder.as_os_str().is_empty() || folder.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create the folder {}", folder.display()))?;
    if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync folder {}", parent.display()))?;
    }
    Ok(())
}

/// A game name as the start of a file name: characters that could make a path escape
/// the folder, hide the file or confuse a shell are written as `%XX`.
fn escape_game(name: &str) -> String {
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
    file
}

/// `path` with `suffix` added to its file name.
pub(super) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
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

/// The file at `path` if it has at most `limit` bytes, `None` if it has more: a file
/// that size is not what it should be, and is not read whole.
fn read_at_most(path: &Path, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
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
    /// A warning to show, for a discarded file of room `room` of game `game`.
    pub fn warning(&self, game: &str, room: &str) -> Option<String> {
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
        let which = if room == game { "game" } else { "room" };
        Some(format!(
            "state file {} cannot be used for {}: {reason}; {moved}; the {which} starts \
             fresh",
            path.display(),
            room_label(game, room)
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

/// Loads the saved state of `game`'s default room from `dir` (see [`load_file`]).
pub fn load(dir: &Path, game: &Game) -> Result<(Option<Saved>, Origin)> {
    load_file(state_file(dir, &game.name), game)
}

/// Loads a saved state of `game` from `path`. A missing file gives `Ok(None)`; a
/// damaged or mismatched file is moved aside and also gives `None`, with the reason in
/// the returned [`Origin`]. Only a file that exists but cannot be read is an error.
pub fn load_file(path: PathBuf, game: &Game) -> Result<(Option<Saved>, Origin)> {
    let file = match read_at_most(&path, MAX_FILE_BYTES) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, Origin::NoFile { path }))
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let reason = match file.map(|file| decode(&file)) {
        None => Err(format!(
            "it is larger than any state file ({MAX_FILE_BYTES} bytes at most)"
        )),
        Some(decoded) => decoded,
    };
    let reason = match reason {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::persist::fixtures::game;

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
    fn room_files_stay_in_the_rooms_folder_and_never_clash() {
        let d = Path::new("/s");
        // The default room keeps the file of a server without rooms.
        assert_eq!(room_file(d, "demo", "demo"), Path::new("/s/demo.state"));
        assert_eq!(
            room_file(d, "demo", "friday"),
            Path::new("/s/demo.rooms/friday.state")
        );
        assert_eq!(
            room_file(d, "../x", "a"),
            Path::new("/s/%2E.%2Fx.rooms/a.state")
        );
        for (room, file) in [
            ("friday", "friday"),
            ("Friday", "%46riday"),
            ("..", "%2E%2E"),
            ("../../etc/passwd", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
            (".hidden", "%2Ehidden"),
            ("a\\b:c", "a%5Cb%3Ac"),
            ("50%", "50%25"),
            ("my room", "my%20room"),
            ("é", "%C3%A9"),
            ("con", "%63on"),
            ("lpt1", "%6Cpt1"),
            ("console", "console"),
            ("x_y-z", "x_y-z"),
        ] {
            assert_eq!(room_file_name(room), file, "{room:?}");
            assert_eq!(room_from_file_name(file).as_deref(), Some(room), "{file}");
            let path = room_file(d, "g", room);
            assert_eq!(path.parent(), Some(Path::new("/s/g.rooms")), "{room:?}");
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(!name.starts_with('.'), "{name}");
            assert!(!name.contains(['/', '\\', ':']), "{name}");
        }
        // Every other spelling of a name is not ours, so one room has one file.
        for other in [
            "%61", "%2e%2e", "%4", "%zz", "Friday", "a b", "%FF", "con", "%",
        ] {
            assert_eq!(room_from_file_name(other), None, "{other}");
        }
        // Different names, different files, whatever the case.
        let names: Vec<String> = (0u32..2000)
            .map(|i| {
                let c = char::from_u32(0x20 + i % 300).unwrap_or('?');
                format!("{c}{}", i / 300)
            })
            .collect();
        let mut files: Vec<String> = names
            .iter()
            .map(|n| room_file_name(n).to_lowercase())
            .collect();
        files.sort();
        files.dedup();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(files.len(), distinct.len());
    }

    #[test]
    fn saved_rooms_are_found_by_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(saved_rooms(d, "demo").unwrap(), (vec![], vec![]));
        let g = game();
        for room in ["friday", "Sat urday"] {
            let path = room_file(d, "demo", room);
            ensure_folder_of(&path).unwrap();
            write_atomically(&path, b"x").unwrap();
        }
        let rooms = rooms_dir(d, "demo");
        for other in ["friday.state.1.bak", "friday.state.tmp", "x.state.bad"] {
            std::fs::write(rooms.join(other), b"").unwrap();
        }
        std::fs::write(rooms.join("%61.state"), b"").unwrap();
        std::fs::write(rooms.join("demo.state"), b"").unwrap();
        let (found, strays) = saved_rooms(d, &g.name).unwrap();
        assert_eq!(found, ["Sat urday", "friday"]);
        assert_eq!(
            strays,
            [rooms.join("%61.state"), rooms.join("demo.state")],
            "another spelling, and the default room's name"
        );
        assert_eq!(room_label("demo", "demo"), "game demo");
        assert_eq!(room_label("demo", "fri"), "room fri of game demo");
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
        let warning = origin.warning("demo", "demo").unwrap();
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

        // A file bigger than any state file is moved aside without being read.
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(1 << 30).unwrap();
        let (s, origin) = load(d, &g).unwrap();
        assert_eq!(s, None);
        let warning = origin.warning("demo", "demo").unwrap();
        assert!(
            warning.contains(&format!(
                "it is larger than any state file ({MAX_FILE_BYTES} bytes at most)"
            )),
            "{warning}"
        );
        assert!(!path.exists());
        std::fs::remove_file(d.join("demo.state.bad")).unwrap();

        std::fs::create_dir(&path).unwrap();
        let err = format!("{:#}", load(d, &g).unwrap_err());
        assert!(
            err.starts_with(&format!("cannot read {}", path.display())),
            "{err}"
        );
    }
}
