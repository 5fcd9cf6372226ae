//! The players' ROM cache: ROM files keyed by their SHA-256, so that a second start of
//! the same game downloads nothing.
//!
//! Files are named `<sha256 hex>.rom` and checked against their name when read, so a
//! damaged file is fetched again instead of being started.

use crate::catalog::sha256;
use crate::dirs::Xdg;
use crate::hex;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A folder of cached ROMs.
#[derive(Debug, Clone)]
pub struct RomCache {
    dir: PathBuf,
}

impl RomCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> RomCache {
        RomCache { dir: dir.into() }
    }

    /// The default cache folder: `$XDG_CACHE_HOME/msxsync/roms`, else
    /// `~/.cache/msxsync/roms` (Windows: `%LOCALAPPDATA%\msxsync\roms`), else a folder
    /// under the system's temporary folder.
    pub fn default_dir() -> PathBuf {
        Xdg::from_env()
            .cache_home()
            .unwrap_or_else(std::env::temp_dir)
            .join("msxsync")
            .join("roms")
    }

    /// The folder this cache uses.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the ROM with this hash is (or would be) stored.
    pub fn path_for(&self, sha: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.rom", hex::encode(sha)))
    }

    /// The cached ROM's path if the cache holds an intact copy.
    pub fn lookup(&self, sha: &[u8; 32]) -> Option<PathBuf> {
        let path = self.path_for(sha);
        let data = std::fs::read(&path).ok()?;
        (sha256(&data) == *sha).then_some(path)
    }

    /// Stores a ROM after checking it has the expected hash; returns its path.
    /// Writes a temporary file and renames it, so a crash never leaves half a ROM.
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
        std::fs::write(&tmp, data).with_context(|| format!("could not write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("could not move rom into {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
