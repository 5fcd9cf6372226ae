//! Bit-masked byte changes: how a change to shared RAM is described, computed and merged.
//!
//! A [`Change`] says "in region R, starting at byte OFFSET, set the bits selected by
//! `masks[i]` to the bits of `values[i]`". Bits outside the mask are left alone, which is
//! what lets two players flip different bits of the same byte at the same time and both
//! keep their bit (invariant I5 in docs/architecture.md).
//!
//! Everything here is pure: no I/O, no clocks.

use serde::{Deserialize, Serialize};

/// One run of changed bytes inside one shared region.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Index of the region in the game's region list.
    pub region: u16,
    /// Byte offset of the first changed byte inside the region.
    pub offset: u16,
    /// New bit values; only the bits selected by the mask of the same index count.
    pub values: Vec<u8>,
    /// Which bits of each byte changed. Same length as `values`.
    pub masks: Vec<u8>,
}

impl Change {
    /// About how many bytes of memory this change takes: itself, its two vectors and
    /// an allowance for the allocator's own bytes per vector. For byte budgets.
    pub fn memory_bytes(&self) -> usize {
        const PER_ALLOCATION: usize = 16;
        std::mem::size_of::<Change>() + self.values.len() + self.masks.len() + 2 * PER_ALLOCATION
    }

    /// A change that sets whole bytes (every bit masked).
    pub fn bytes(region: u16, offset: u16, values: Vec<u8>) -> Change {
        let masks = vec![0xff; values.len()];
        Change {
            region,
            offset,
            values,
            masks,
        }
    }

    /// Number of bytes this change covers.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the change covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Checks the change against the sizes of the game's regions.
    /// Returns a lowercase reason when it does not fit.
    pub fn check(&self, region_sizes: &[usize]) -> Result<(), String> {
        let Some(&size) = region_sizes.get(self.region as usize) else {
            return Err(format!(
                "change names region {} but the game has {} regions",
                self.region,
                region_sizes.len()
            ));
        };
        if self.values.len() != self.masks.len() {
            return Err(format!(
                "change to region {} has {} values but {} masks",
                self.region,
                self.values.len(),
                self.masks.len()
            ));
        }
        if self.values.is_empty() {
            return Err(format!("change to region {} is empty", self.region));
        }
        let end = self.offset as usize + self.values.len();
        if end > size {
            return Err(format!(
                "change to region {} covers bytes {}..{} but the region has {} bytes",
                self.region, self.offset, end, size
            ));
        }
        Ok(())
    }
}

/// Merges one masked byte into an old byte: masked bits from `value`, the rest from `old`.
#[inline]
pub fn merge_byte(old: u8, value: u8, mask: u8) -> u8 {
    (old & !mask) | (value & mask)
}

/// Applies a change to a region's bytes. The change must have passed [`Change::check`]
/// for this region; out-of-range bytes are ignored rather than panicking.
pub fn apply(region: &mut [u8], change: &Change) {
    let start = change.offset as usize;
    for (i, (&v, &m)) in change.values.iter().zip(&change.masks).enumerate() {
        if let Some(b) = region.get_mut(start + i) {
            *b = merge_byte(*b, v, m);
        }
    }
}

/// Computes the changes that turn `old` into `new` for one region.
///
/// Runs of changed bytes become one change each; unchanged gaps shorter than
/// `MERGE_GAP` bytes are folded into the run with a zero mask, because a new change
/// costs more on the wire than a few zero-mask bytes.
pub fn diff(region: u16, old: &[u8], new: &[u8]) -> Vec<Change> {
    const MERGE_GAP: usize = 4;
    let n = old.len().min(new.len());
    let mut out: Vec<Change> = Vec::new();
    let mut i = 0;
    while i < n {
        if old[i] == new[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut last_changed = i;
        while i < n && i - last_changed <= MERGE_GAP {
            if old[i] != new[i] {
                last_changed = i;
            }
            i += 1;
        }
        let end = last_changed + 1;
        out.push(Change {
            region,
            offset: start as u16,
            values: new[start..end].to_vec(),
            masks: (start..end).map(|j| old[j] ^ new[j]).collect(),
        });
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_byte_takes_only_masked_bits() {
        assert_eq!(
            merge_byte(0b1010_1010, 0b0101_0101, 0b0000_1111),
            0b1010_0101
        );
        assert_eq!(merge_byte(0xff, 0x00, 0x00), 0xff);
        assert_eq!(merge_byte(0x00, 0xff, 0xff), 0xff);
    }

    #[test]
    fn diff_then_apply_reproduces_new() {
        let old = [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut new = old;
        new[1] = 0x81;
        new[3] = 0x03 | 0x40;
        new[14] = 0;
        let changes = diff(2, &old, &new);
        assert_eq!(changes.len(), 2, "{changes:?}");
        let mut copy = old;
        for c in &changes {
            assert_eq!(c.region, 2);
            c.check(&[0, 0, 16]).unwrap();
            apply(&mut copy, c);
        }
        assert_eq!(copy, new);
    }

    #[test]
    fn diff_masks_only_changed_bits() {
        let changes = diff(0, &[0b0000_0001], &[0b1000_0001]);
        assert_eq!(
            changes,
            vec![Change {
                region: 0,
                offset: 0,
                values: vec![0b1000_0001],
                masks: vec![0b1000_0000]
            }]
        );
        assert!(diff(0, &[1, 2, 3], &[1, 2, 3]).is_empty());
    }

    #[test]
    fn different_bits_of_one_byte_both_survive() {
        // Two players flip different bits of byte 0 starting from the same state.
        let mut state = [0u8; 1];
        let a = diff(0, &[0], &[0b0000_0001]);
        let b = diff(0, &[0], &[0b1000_0000]);
        for c in a.iter().chain(&b) {
            apply(&mut state, c);
        }
        assert_eq!(state[0], 0b1000_0001);
    }

    #[test]
    fn check_rejects_bad_changes() {
        let sizes = [8usize, 4];
        assert!(Change::bytes(0, 7, vec![1]).check(&sizes).is_ok());
        assert!(Change::bytes(0, 8, vec![1]).check(&sizes).is_err());
        assert!(Change::bytes(1, 3, vec![1, 2]).check(&sizes).is_err());
        assert!(Change::bytes(2, 0, vec![1]).check(&sizes).is_err());
        assert!(Change::bytes(0, 0, vec![]).check(&sizes).is_err());
        let uneven = Change {
            region: 0,
            offset: 0,
            values: vec![1, 2],
            masks: vec![1],
        };
        assert!(uneven.check(&sizes).is_err());
        // Huge offsets must not overflow.
        assert!(Change::bytes(0, u16::MAX, vec![1]).check(&sizes).is_err());
    }
}
