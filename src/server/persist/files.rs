//! The state files on disk: where a game's file is, replacing it atomically, loading it
//! (moving a damaged or mismatched file aside as `<game>.state.bad`), and the lock that
//! keeps a second server off the folder.
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

        // A file bigger than any state file is moved aside without being read.
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(1 << 30).unwrap();
        let (s, origin) = load(d, &g).unwrap();
        assert_eq!(s, None);
        let warning = origin.warning("demo").unwrap();
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
