//! The games a server serves: each one a parsed regions file plus its ROM in memory.
//!
//! Loading from folders (the `--games` search path) lives here too; the server only
//! sees the finished [`Game`] values.

use crate::protocol::{GameInfo, RegionInfo};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One servable game.
#[derive(Debug, Clone)]
pub struct Game {
    /// Name players join it by (the regions file name without `.regions`).
    pub name: String,
    /// Title shown to players.
    pub title: String,
    /// openMSX machine to start, if the game names one.
    pub machine: Option<String>,
    /// openMSX mapper type, if the game names one.
    pub romtype: Option<String>,
    /// `sync-when:` condition as written, if the game has one.
    pub sync_when: Option<String>,
    /// Shared regions, in file order.
    pub regions: Vec<RegionInfo>,
    /// The ROM image.
    pub rom: Arc<Vec<u8>>,
    /// SHA-256 of `rom`.
    pub rom_sha256: [u8; 32],
}

impl Game {
    /// Builds a game from its parts, hashing the ROM.
    pub fn new(
        name: impl Into<String>,
        title: impl Into<String>,
        regions: Vec<RegionInfo>,
        rom: Vec<u8>,
    ) -> Game {
        let rom_sha256 = sha256(&rom);
        Game {
            name: name.into(),
            title: title.into(),
            machine: None,
            romtype: None,
            sync_when: None,
            regions,
            rom: Arc::new(rom),
            rom_sha256,
        }
    }

    /// Total number of shared bytes.
    pub fn shared_bytes(&self) -> usize {
        self.regions.iter().map(RegionInfo::len).sum()
    }

    /// The game as listed to clients, with the given players in it.
    pub fn info(&self, players: Vec<crate::protocol::PlayerInfo>) -> GameInfo {
        GameInfo {
            name: self.name.clone(),
            title: self.title.clone(),
            rom_size: self.rom.len() as u32,
            rom_sha256: self.rom_sha256,
            shared_bytes: self.shared_bytes() as u32,
            machine: self.machine.clone(),
            romtype: self.romtype.clone(),
            sync_when: self.sync_when.clone(),
            players,
        }
    }
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
