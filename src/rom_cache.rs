//! The players' ROM cache: ROM files keyed by their SHA-256, so that a second start of
//! the same game downloads nothing.
//!
//! Files are named `<sha256 hex>.rom` and checked against their name when read, so a
//! damaged file is fetched again instead of being started. The cache is kept under
//! [`MAX_CACHE_BYTES`] by removing the ROMs used longest ago ([`RomCache::clean`]).

use crate::catalog::sha256;
use crate::dirs::Xdg;
use crate::hex;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Most bytes of ROMs the cache keeps. A ROM is at most 8 MiB, most are 32-256 KiB:
/// this holds hundreds of games and no more disk than a few photos.
pub const MAX_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// A folder of cached ROMs.
#[derive(Debug, Clone)]
pub struct RomCache {
    dir: PathBuf,
}

/// What [`RomCache::clean`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// ROM files removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl RomCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> RomCache {
        RomCache { dir: dir.into() }
    }

    /// The default cache folder: `$XDG_CACHE_HOME/msxsync/roms`, else
    /// `~/.cache/msxsync/roms` (Windows: `%LOCALAPPDATA%\msxsync\roms`). Without either there is no folder of this user's to
    /// use: a shared temporary folder would let other users of the machine put a file
    /// where we write the ROM.
    pub fn default_dir() -> Result<PathBuf> {
        default_dir_in(&Xdg::from_env())
    }

    /// The folder this cache uses.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the ROM with this hash is (or would be) stored.
    pub fn path_for(&self, sha: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.rom", hex::encode(sha)))
    }

    /// The cached ROM's path if the cache holds an intact copy. Marks it as used now,
    /// so that [`RomCache::clean`] removes it last.
    pub fn lookup(&self, sha: &[u8; 32]) -> Option<PathBuf> {
        let path = self.path_for(sha);
        let data = std::fs::read(&path).ok()?;
        if sha256(&data) != *sha {
            return None;
        }
        // Best effort: a cache on a read-only disk still works, only less fairly.
        let _ = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Some(path)
    }

    /// Stores a ROM after checking it has the expected hash; returns its path.
    /// Writes a temporary file and renames it, so a crash never leaves half a ROM. The
    /// temporary file is created new (never opened through a link someone left there).
    pub fn store(&self, sha: &[u8; 32], data: &[u8]) -> Result<PathBuf> {
        let got = sha256(data);
        if got != *sha {
            anyhow::bail!(
                "the server sent a rom with sha-256 {} but announced {}",
                hex::encode(&got),
                hex::encode(sha)
            );
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("could not create rom cache {}", self.dir.display()))?;
        let path = self.path_for(sha);
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", hex::encode(sha), std::process::id()));
        // Left by a crashed run with our process id: ours to replace.
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(data)
        };
        write().with_context(|| format!("could not write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("could not move rom into {}", path.display()))?;
        Ok(path)
    }

    /// Removes the ROMs used longest ago until the cache holds at most `max_bytes`,
    /// never the one with hash `keep` (the ROM about to run). Only files named like
    /// cache entries are touched, so a folder given with `--cache-dir` that holds other
    /// files keeps them.
    pub fn clean(&self, keep: &[u8; 32], max_bytes: u64) -> Result<Cleaned> {
        let keep = self.path_for(keep);
        let read = std::fs::read_dir(&self.dir)
            .with_context(|| format!("could not list rom cache {}", self.dir.display()))?;
        let mut entries = Vec::new();
        for entry in read.flatten() {
            let path = entry.path();
            if !is_entry_name(&path) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                entries.push((used, meta.len(), path));
            }
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        let mut cleaned = Cleaned::default();
        for (_, len, path) in entries {
            if total <= max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
            total -= len;
            cleaned.files += 1;
            cleaned.bytes += len;
        }
        Ok(cleaned)
    }
}

/// [`RomCache::default_dir`] for the given XDG folders.
fn default_dir_in(xdg: &Xdg) -> Result<PathBuf> {
    xdg.cache_home().map(|d| d.join("msxsync/roms")).context(
        "no folder for the rom cache: HOME and XDG_CACHE_HOME are unset or relative; \
         give --cache-dir (or set MSXSYNC_CACHE_DIR)",
    )
}

/// Whether a file name is `<64 hex digits>.rom`.
fn is_entry_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_suffix(".rom")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stores_and_finds_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RomCache::new(dir.path().join("roms"));
        let rom = vec![0x41, 0x42, 1, 2, 3];
        let sha = sha256(&rom);
        assert_eq!(cache.lookup(&sha), None);
        let path = cache.store(&sha, &rom).unwrap();
        assert_eq!(cache.lookup(&sha), Some(path.clone()));
        assert_eq!(std::fs::read(&path).unwrap(), rom);
    }

    #[test]
    fn refuses_wrong_hash_and_ignores_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RomCache::new(dir.path());
        let rom = vec![1u8; 100];
        let sha = sha256(&rom);
        let err = cache.store(&[0; 32], &rom).unwrap_err().to_string();
        assert!(err.contains("sha-256"), "{err}");
        std::fs::write(cache.path_for(&sha), b"damaged").unwrap();
        assert_eq!(cache.lookup(&sha), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_left_at_the_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RomCache::new(dir.path().join("roms"));
        std::fs::create_dir_all(cache.dir()).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let rom = vec![7u8; 10];
        let sha = sha256(&rom);
        let tmp = cache
            .dir()
            .join(format!(".{}.{}.tmp", hex::encode(&sha), std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        cache.store(&sha, &rom).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(cache.lookup(&sha), Some(cache.path_for(&sha)));
    }

    #[test]
    fn clean_removes_the_roms_used_longest_ago_but_never_the_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RomCache::new(dir.path());
        let now = SystemTime::now();
        // Four ROMs of 1000 bytes, used 4, 3, 2 and 1 hours ago.
        let roms: Vec<[u8; 32]> = (0..4u8)
            .map(|i| {
                let rom = vec![i; 1000];
                let sha = sha256(&rom);
                let path = cache.store(&sha, &rom).unwrap();
                let used = now - Duration::from_secs(3600 * (4 - i as u64));
                std::fs::File::options()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_modified(used)
                    .unwrap();
                sha
            })
            .collect();
        std::fs::write(dir.path().join("notes.txt"), vec![b'x'; 5000]).unwrap();
        // The oldest one is the one about to run: it stays, the next oldest go.
        let cleaned = cache.clean(&roms[0], 2000).unwrap();
        assert_eq!(
            cleaned,
            Cleaned {
                files: 2,
                bytes: 2000
            }
        );
        let left: Vec<bool> = roms.iter().map(|s| cache.path_for(s).exists()).collect();
        assert_eq!(left, [true, false, false, true]);
        assert!(dir.path().join("notes.txt").exists(), "not a cache entry");
        // Under the limit: nothing to do.
        assert_eq!(cache.clean(&roms[0], 2000).unwrap(), Cleaned::default());
        // A lookup marks a ROM as used now: the other one is older.
        cache.lookup(&roms[0]).unwrap();
        assert_eq!(cache.clean(&[9; 32], 1000).unwrap().files, 1);
        assert!(cache.path_for(&roms[0]).exists());
        assert!(!cache.path_for(&roms[3]).exists());
    }

    #[test]
    fn without_a_home_there_is_no_default_folder_and_no_temporary_one() {
        let e = default_dir_in(&Xdg::from_vars(|_| None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no folder for the rom cache: HOME and XDG_CACHE_HOME are unset or relative; \
             give --cache-dir (or set MSXSYNC_CACHE_DIR)"
        );
        let home = Xdg::from_vars(|v| (v == "HOME").then(|| "/home/u".into()));
        assert_eq!(
            default_dir_in(&home).unwrap(),
            Path::new("/home/u/.cache/msxsync/roms")
        );
    }
}
