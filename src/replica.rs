//! The client-side merge rules, pure, shared by `play` and the tests.
//!
//! A client keeps, for every shared region, the emulator's RAM and a *shadow*: the value
//! it last sent or received. The rules:
//!
//! - Local flush (in the emulator): changes = diff(shadow, ram); shadow = ram.
//! - Send (in msxsync, a moment later): the flushed changes go out as batch B, which is
//!   *in flight* until the server echoes it back. Updates can arrive between the flush
//!   and the send; they are applied like any other.
//! - Every update, in sequence order: if it is the player's own, B is acknowledged and
//!   leaves the in-flight set. Then its bits are applied, except bits covered by own
//!   batches still in flight: those were sequenced *after* this update (the server
//!   echoes in sequence order), so our value will win on the server and everywhere.
//!   Own updates are applied too: an earlier-sequenced update that arrived between
//!   the flush and the send may have overwritten the change in RAM. The shadow takes
//!   the applied bits; RAM takes only those the game has not changed since the last
//!   flush (`ram ^ shadow`), so an unflushed local change survives and is sent at the
//!   next flush (I4).
//!
//! At quiescence (everything flushed and delivered) RAM equals shadow equals the
//! server's state on every player (I2); `tests/convergence.rs` checks this on random
//! interleavings.

use crate::delta::{self, Change};
use crate::protocol::PlayerId;
use std::collections::{HashMap, VecDeque};

/// One batch of own changes: what a player sends in one `ClientMsg::Changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The player's number for it, echoed back by the server in its update.
    pub number: u32,
    /// The changes, in flush order.
    pub changes: Vec<Change>,
}

/// Own batches sent but not yet echoed back by the server.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    batches: VecDeque<Batch>,
    /// Per (region, byte): how many in-flight changes cover each of its 8 bits. Keeps
    /// `protect` proportional to the change, not to the number of batches in flight
    /// (a busy player has thousands).
    cover: HashMap<(u16, usize), [u32; 8]>,
}

impl InFlight {
    /// No batch in flight.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// Remembers a batch that was just sent.
    pub fn record(&mut self, batch: u32, changes: &[Change]) {
        for c in changes {
            self.count(c, true);
        }
        self.batches.push_back(Batch {
            number: batch,
            changes: changes.to_vec(),
        });
    }

    fn count(&mut self, c: &Change, add: bool) {
        for (i, &m) in c.masks.iter().enumerate() {
            if m == 0 {
                continue;
            }
            let key = (c.region, c.offset as usize + i);
            let bits = self.cover.entry(key).or_default();
            for (b, n) in bits.iter_mut().enumerate() {
                if m & (1 << b) != 0 {
                    *n = if add { *n + 1 } else { n.saturating_sub(1) };
                }
            }
            if bits.iter().all(|&n| n == 0) {
                self.cover.remove(&key);
            }
        }
    }

    /// The server echoed `batch`: forget it. Returns whether it was in flight.
    pub fn ack(&mut self, batch: u32) -> bool {
        // Echoes come in sending order, so this is nearly always the front.
        match self.batches.iter().position(|b| b.number == batch) {
            Some(i) => {
                if let Some(b) = self.batches.remove(i) {
                    for c in &b.changes {
                        self.count(c, false);
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Every change in flight, oldest batch first.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.batches.iter().flat_map(|b| b.changes.iter())
    }

    /// Every batch in flight with its number, oldest first.
    pub fn batches(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter()
    }

    /// Whether no batch is in flight.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Number of batches in flight.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Forgets every batch (after a reconnect the server state is taken as it is).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.cover.clear();
    }

    /// The bits of one byte that own in-flight changes cover.
    fn covered(&self, region: u16, byte: usize) -> u8 {
        self.cover.get(&(region, byte)).map_or(0, |bits| {
            bits.iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .fold(0u8, |m, (b, _)| m | (1 << b))
        })
    }

    /// Removes from a remote change the bits that own in-flight changes cover (those are
    /// sequenced after it and win). Bytes left without any bit are trimmed from both
    /// ends; `None` when nothing is left.
    pub fn protect(&self, change: &Change) -> Option<Change> {
        let start = change.offset as usize;
        let len = change.values.len().min(change.masks.len());
        let masks: Vec<u8> = change.masks[..len]
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                if self.cover.is_empty() {
                    m
                } else {
                    m & !self.covered(change.region, start + i)
                }
            })
            .collect();
        let first = masks.iter().position(|&m| m != 0)?;
        let last = masks.iter().rposition(|&m| m != 0)?;
        Some(Change {
            region: change.region,
            offset: (start + first) as u16,
            values: change.values[first..=last].to_vec(),
            masks: masks[first..=last].to_vec(),
        })
    }
}

/// Applies a remote change (already passed through [`InFlight::protect`]) to one
/// region's RAM and shadow: the shadow takes every masked bit; RAM takes the masked bits
/// the game has not changed since the last flush. Out-of-range bytes are ignored.
pub fn apply_remote(ram: &mut [u8], shadow: &mut [u8], change: &Change) {
    let start = change.offset as usize;
    for (i, (&v, &m)) in change.values.iter().zip(&change.masks).enumerate() {
        let (Some(r), Some(s)) = (ram.get_mut(start + i), shadow.get_mut(start + i)) else {
            continue;
        };
        let unflushed = *r ^ *s;
        *s = delta::merge_byte(*s, v, m);
        *r = delta::merge_byte(*r, v, m & !unflushed);
    }
}

/// One player's view of a game, for tests and simulations: RAM as the game sees it,
/// the shadow, and the own batches in flight.
#[derive(Debug, Clone)]
pub struct Replica {
    player: PlayerId,
    ram: Vec<Vec<u8>>,
    shadow: Vec<Vec<u8>>,
    in_flight: InFlight,
    next_batch: u32,
    /// Flushed in the emulator but not sent yet, oldest first.
    outbox: std::collections::VecDeque<Vec<Change>>,
}

impl Replica {
    /// A player that joined as `player` and received `state` (from `Joined`).
    pub fn new(player: PlayerId, state: Vec<Vec<u8>>) -> Replica {
        Replica {
            player,
            ram: state.clone(),
            shadow: state,
            in_flight: InFlight::new(),
            next_batch: 1,
            outbox: Default::default(),
        }
    }

    /// The player's id.
    pub fn player(&self) -> PlayerId {
        self.player
    }

    /// RAM as the game sees it, per region.
    pub fn ram(&self) -> &[Vec<u8>] {
        &self.ram
    }

    /// The shadow, per region.
    pub fn shadow(&self) -> &[Vec<u8>] {
        &self.shadow
    }

    /// Own batches in flight.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The game writes the bits `mask` of `value` into one byte (not sent until
    /// [`Self::flush`]). Out-of-range writes are ignored.
    pub fn write(&mut self, region: usize, offset: usize, value: u8, mask: u8) {
        if let Some(b) = self.ram.get_mut(region).and_then(|r| r.get_mut(offset)) {
            *b = delta::merge_byte(*b, value, mask);
        }
    }

    /// Flushes and sends at once: returns the batch number and changes to send, or
    /// `None` when RAM equals the shadow and nothing waits to be sent.
    pub fn flush(&mut self) -> Option<Batch> {
        self.flush_only();
        self.send()
    }

    /// The emulator's flush: diffs RAM against the shadow, takes RAM as the shadow and
    /// queues the changes for [`Self::send`]. Returns whether there were changes.
    pub fn flush_only(&mut self) -> bool {
        let mut changes = Vec::new();
        for (i, (ram, shadow)) in self.ram.iter().zip(&mut self.shadow).enumerate() {
            changes.extend(delta::diff(i as u16, shadow, ram));
            shadow.copy_from_slice(ram);
        }
        let any = !changes.is_empty();
        if any {
            self.outbox.push_back(changes);
        }
        any
    }

    /// Sends the oldest flushed changes: records them as in flight and returns them
    /// with their batch number, or `None` when nothing was flushed.
    pub fn send(&mut self) -> Option<Batch> {
        let changes = self.outbox.pop_front()?;
        let number = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.in_flight.record(number, &changes);
        Some(Batch { number, changes })
    }

    /// Whether flushed changes wait to be sent.
    pub fn has_unsent(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Receives an update from the server (in sequence order).
    pub fn receive(&mut self, player: PlayerId, batch: u32, changes: &[Change]) {
        if player == self.player {
            self.in_flight.ack(batch);
        }
        for c in changes {
            let Some(c) = self.in_flight.protect(c) else {
                continue;
            };
            let region = c.region as usize;
            if let (Some(ram), Some(shadow)) =
                (self.ram.get_mut(region), self.shadow.get_mut(region))
            {
                apply_remote(ram, shadow, &c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(region: u16, offset: u16, values: Vec<u8>, masks: Vec<u8>) -> Change {
        Change {
            region,
            offset,
            values,
            masks,
        }
    }

    #[test]
    fn protect_removes_in_flight_bits_and_trims() {
        let mut f = InFlight::new();
        f.record(1, &[bits(0, 2, vec![0xff, 0x01], vec![0xff, 0x01])]);
        // Remote change covering bytes 0..4 of region 0.
        let remote = bits(0, 0, vec![1, 2, 3, 4], vec![0xff, 0, 0xff, 0xff]);
        let p = f.protect(&remote).unwrap();
        // Byte 2 fully protected, byte 3 loses bit 0, byte 1 had no bits: byte 0..=3 stays
        // (only the ends are trimmed), with the masks cut.
        assert_eq!(p, bits(0, 0, vec![1, 2, 3, 4], vec![0xff, 0, 0, 0xfe]));
        // Fully covered -> nothing left; trimmed at the front.
        assert_eq!(f.protect(&bits(0, 2, vec![9], vec![0xf0])), None);
        assert_eq!(
            f.protect(&bits(0, 2, vec![9, 9], vec![0xff, 0x03])),
            Some(bits(0, 3, vec![9], vec![0x02]))
        );
        // Other regions are untouched.
        let other = bits(1, 2, vec![5], vec![0xff]);
        assert_eq!(f.protect(&other), Some(other));
        // After the ack nothing is protected.
        assert!(f.ack(1));
        assert!(!f.ack(1));
        assert!(f.is_empty());
        assert_eq!(f.protect(&remote), Some(remote));
    }

    #[test]
    fn apply_remote_keeps_unflushed_bits() {
        let mut ram = vec![0b0000_0001];
        let mut shadow = vec![0b0000_0000];
        // Remote sets bits 0 and 7 to 0 and 1; bit 0 was changed locally and not flushed.
        apply_remote(&mut ram, &mut shadow, &bits(0, 0, vec![0x80], vec![0x81]));
        assert_eq!(shadow, vec![0x80]);
        assert_eq!(ram, vec![0x81], "local bit 0 kept, remote bit 7 taken");
    }

    #[test]
    fn flush_sends_the_diff_once() {
        let mut r = Replica::new(1, vec![vec![0; 4]]);
        assert!(r.flush().is_none());
        r.write(0, 1, 0x0f, 0x03);
        let Batch { number, changes } = r.flush().unwrap();
        assert_eq!(number, 1);
        assert_eq!(changes, vec![bits(0, 1, vec![0x03], vec![0x03])]);
        assert!(r.flush().is_none(), "already sent");
        assert_eq!(r.in_flight().len(), 1);
        r.receive(1, number, &changes);
        assert!(r.in_flight().is_empty());
        assert_eq!(r.ram()[0], vec![0, 3, 0, 0]);
    }

    #[test]
    fn remote_update_does_not_override_in_flight_bits() {
        let mut r = Replica::new(1, vec![vec![0]]);
        r.write(0, 0, 0x01, 0x01);
        let b = r.flush().unwrap().number;
        // Player 2's update was sequenced before our batch: bit 0 is ours, bit 1 theirs.
        r.receive(2, 7, &[bits(0, 0, vec![0x02], vec![0x03])]);
        assert_eq!(r.ram()[0], vec![0x03]);
        assert_eq!(r.shadow()[0], vec![0x03]);
        r.receive(1, b, &[]);
        // Now an update sequenced after ours may clear bit 0.
        r.receive(2, 8, &[bits(0, 0, vec![0x00], vec![0x01])]);
        assert_eq!(r.ram()[0], vec![0x02]);
        assert!(r.flush().is_none(), "nothing local left to send");
    }

    #[test]
    fn unflushed_change_is_sent_after_remote_overwrite() {
        let mut r = Replica::new(1, vec![vec![5]]);
        // 5 -> 9 flips bits 2 and 3; then a remote update writes 7 over the byte.
        r.write(0, 0, 9, 0xff);
        r.receive(2, 1, &[Change::bytes(0, 0, vec![7])]);
        // Bits 2 and 3 keep the game's values, the untouched bits take the remote ones.
        assert_eq!(r.ram()[0][0], 0b1011);
        assert_eq!(r.shadow()[0][0], 7);
        let changes = r.flush().unwrap().changes;
        assert_eq!(changes, vec![bits(0, 0, vec![0b1011], vec![0b1100])]);
    }
}
