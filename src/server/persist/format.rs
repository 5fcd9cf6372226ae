//! The state file format: one game's shared state in a small versioned binary format
//! (all integers little-endian). Pure: bytes in, bytes out.
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
//! regions file or the ROM changes, the saved bytes would mean something else
//! ([`Saved::mismatch`]), and the game starts fresh.

use crate::catalog::{sha256, Game};
use crate::hex;
use crate::protocol::{RegionInfo, MAX_REGIONS, MAX_SEQ, MAX_SHARED_BYTES};

/// First bytes of every state file.
pub const MAGIC: [u8; 8] = *b"MSXSYNCS";
/// Version of the state file format; a file of another version is not loaded.
pub const FORMAT_VERSION: u32 = 1;

/// Size of everything before the region list.
const HEADER_BYTES: usize = 8 + 4 + 32 + 4;
/// Size of the closing checksum.
const CHECKSUM_BYTES: usize = 32;
/// The largest state file there can be: every region listed and every shared byte.
/// Anything bigger is not a state file and is not read whole.
pub const MAX_FILE_BYTES: usize =
    HEADER_BYTES + 4 * MAX_REGIONS + 8 + MAX_SHARED_BYTES + CHECKSUM_BYTES;

/// One game's saved state, as stored in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// SHA-256 of the ROM the state belongs to.
    pub rom_sha256: [u8; 32],
    /// Start and end address (inclusive) of each region, in the game's order.
    pub regions: Vec<Bounds>,
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

/// A region's first and last address, as a state file records it: the file's region
/// layout, without the descriptions, which do not change what the bytes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// First address.
    pub start: u16,
    /// Last address (inclusive).
    pub end: u16,
}

/// The bounds of each region.
pub fn layout(regions: &[RegionInfo]) -> Vec<Bounds> {
    regions
        .iter()
        .map(|r| Bounds {
            start: r.start,
            end: r.end,
        })
        .collect()
}

/// First bytes of a hash in hex, enough for a human to tell two apart.
fn short_hex(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..6])
}

/// A region layout in a line, cut short when long.
fn describe_layout(regions: &[Bounds]) -> String {
    const SHOWN: usize = 4;
    let mut parts: Vec<String> = regions
        .iter()
        .take(SHOWN)
        .map(|b| format!("{:04x}-{:04x}", b.start, b.end))
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
    for b in &saved.regions {
        out.extend_from_slice(&b.start.to_le_bytes());
        out.extend_from_slice(&b.end.to_le_bytes());
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
        regions.push(Bounds { start, end });
    }
    if total > MAX_SHARED_BYTES {
        return Err(format!(
            "{total} shared bytes, the limit is {MAX_SHARED_BYTES}"
        ));
    }
    let seq = u64::from_le_bytes(r.array("sequence number")?);
    if seq > MAX_SEQ {
        // No game gets there; adding one to it would overflow.
        return Err(format!(
            "sequence number {seq} is larger than any game reaches (limit {MAX_SEQ})"
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::persist::fixtures::{game, region, saved};

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
        let s = Saved::of(&big, MAX_SEQ, bytes);
        let file = encode(&s);
        assert_eq!(file.len(), MAX_FILE_BYTES);
        assert_eq!(decode(&file), Ok(s));
    }

    #[test]
    fn a_sequence_number_no_game_reaches_is_refused() {
        // Checksum and all: a file made by hand, not damaged by chance.
        let mut s = saved();
        s.seq = u64::MAX;
        assert_eq!(
            decode(&encode(&s)).unwrap_err(),
            format!(
                "sequence number {} is larger than any game reaches (limit {MAX_SEQ})",
                u64::MAX
            )
        );
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
        s.regions[1] = Bounds {
            start: 0xc001,
            end: 0xc000,
        };
        assert!(decode(&encode(&s))
            .unwrap_err()
            .contains("before its start"));
        // Too many shared bytes in total.
        let s = Saved {
            regions: vec![Bounds {
                start: 0,
                end: 0xffff,
            }],
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
}
