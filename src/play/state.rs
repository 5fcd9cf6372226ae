//! What a player knows about the game's shared state, as plain data: the server's
//! state (mirrored by applying every update in sequence order), its own batches in
//! flight, and which bits of an incoming update may go into the emulator.
//!
//! The emulator side (hooks.tcl) adds the last rule, per byte: bits the game changed
//! but that were not flushed yet stay as the game wrote them (I4).

use crate::delta::{self, Change};
use crate::protocol::{Joined, PlayerId};
use crate::replica::InFlight;
use anyhow::{bail, Result};

/// A player's view of the shared state.
#[derive(Debug, Clone)]
pub struct SyncState {
    me: PlayerId,
    server: Vec<Vec<u8>>,
    seq: u64,
    in_flight: InFlight,
    next_batch: u32,
    /// Own batches whose echo must be written back into the emulator.
    rewrite: std::collections::HashSet<u32>,
}

impl SyncState {
    /// Starts from the state the server sent on joining.
    pub fn new(joined: &Joined) -> SyncState {
        SyncState {
            me: joined.player,
            server: joined.state.clone(),
            seq: joined.seq,
            in_flight: InFlight::new(),
            next_batch: 1,
            rewrite: Default::default(),
        }
    }

    /// The server's state as of [`SyncState::seq`].
    pub fn server_state(&self) -> &[Vec<u8>] {
        &self.server
    }

    /// Sequence number of the last update applied to the mirror.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This player's id.
    pub fn me(&self) -> PlayerId {
        self.me
    }

    /// Number of own batches sent and not yet echoed by the server.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Region sizes, in order.
    pub fn region_sizes(&self) -> Vec<usize> {
        self.server.iter().map(Vec::len).collect()
    }

    /// Records local changes about to be sent; returns their batch number.
    /// `overtaken` says that updates written into the emulator may have landed after
    /// the hooks flushed these changes (see [`SyncState::update`]).
    pub fn send(&mut self, changes: &[Change], overtaken: bool) -> u32 {
        let batch = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.in_flight.record(batch, changes);
        if overtaken {
            self.rewrite.insert(batch);
        }
        batch
    }

    /// The bits of `changes` that may be written into the emulator now: all but those
    /// covered by own batches in flight (they are sequenced later and will win).
    pub fn unprotected(&self, changes: &[Change]) -> Vec<Change> {
        changes
            .iter()
            .filter_map(|c| self.in_flight.protect(c))
            .collect()
    }

    /// What the hooks' shadow should hold: the server's state with the own batches in
    /// flight on top. RAM that differs from it for long changed behind the hooks' back.
    pub fn expected(&self) -> Vec<Vec<u8>> {
        let mut out = self.server.clone();
        for c in self.in_flight.changes() {
            if let Some(region) = out.get_mut(c.region as usize) {
                delta::apply(region, c);
            }
        }
        out
    }

    /// Every change in flight, oldest first.
    pub fn in_flight_changes(&self) -> Vec<Change> {
        self.in_flight.changes().cloned().collect()
    }

    /// After an outage: the changes of own batches in flight that the server does not
    /// have, oldest first, and how many batches it does have. It has every batch up to
    /// `last_batch` (the server's [`Joined::last_batch`]); when it does not know
    /// (`None`), all are sent again, since losing a change is worse than repeating one.
    pub fn unreceived(&self, last_batch: Option<u32>) -> Unreceived {
        let (lost, received): (Vec<_>, Vec<_>) =
            self.in_flight.batches().partition(|b| match last_batch {
                // Batch numbers wrap: compare by distance, which is correct for any
                // window of fewer than 2^31 batches.
                Some(last) => (b.number.wrapping_sub(last) as i32) > 0,
                None => true,
            });
        let changes = lost
            .into_iter()
            .flat_map(|b| b.changes.iter().cloned())
            .collect();
        Unreceived {
            changes,
            received_batches: received.len(),
        }
    }

    /// Starts over from a new join after an outage. Batch numbers go on from this
    /// state's, so that the server's [`Joined::last_batch`] of a later reconnect never
    /// names a batch of an earlier connection.
    pub fn rejoined(&self, joined: &Joined) -> SyncState {
        SyncState {
            next_batch: self.next_batch,
            ..SyncState::new(joined)
        }
    }

    /// Takes an update from the server and returns what to write into the emulator.
    ///
    /// Every update, the player's own included, goes into the mirror. Into the
    /// emulator go the update's bits except those covered by own batches still in
    /// flight: those batches are sequenced after this update and will win. An own
    /// update is written back when its batch was sent `overtaken`: an earlier-sequenced
    /// update may have overwritten the change in RAM between the hooks' flush and our
    /// sending it, and the echo puts it back. Otherwise RAM has it already.
    pub fn update(
        &mut self,
        seq: u64,
        player: PlayerId,
        batch: u32,
        changes: &[Change],
    ) -> Result<Vec<Change>> {
        if seq != self.seq + 1 {
            bail!(
                "server sent update {seq} after {}: updates were lost",
                self.seq
            );
        }
        let sizes = self.region_sizes();
        for c in changes {
            if let Err(e) = c.check(&sizes) {
                bail!("server sent a bad change in update {seq}: {e}");
            }
        }
        self.seq = seq;
        for c in changes {
            delta::apply(&mut self.server[c.region as usize], c);
        }
        if player == self.me {
            self.in_flight.ack(batch);
            if !self.rewrite.remove(&batch) {
                return Ok(Vec::new());
            }
        }
        Ok(self.unprotected(changes))
    }
}

/// What [`SyncState::unreceived`] found after an outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreceived {
    /// The changes of own batches the server does not have, oldest first: to send
    /// again.
    pub changes: Vec<Change>,
    /// How many batches in flight the server does have (not sent again).
    pub received_batches: usize,
}

/// Changes the game made while the player was not connected, merged bit by bit so
/// that a long outage costs memory for the shared bytes only, not per change.
#[derive(Debug, Clone)]
pub struct Offline {
    values: Vec<Vec<u8>>,
    masks: Vec<Vec<u8>>,
}

impl Offline {
    /// Nothing changed yet, for regions of these sizes.
    pub fn new(sizes: &[usize]) -> Offline {
        Offline {
            values: sizes.iter().map(|&n| vec![0; n]).collect(),
            masks: sizes.iter().map(|&n| vec![0; n]).collect(),
        }
    }

    /// Records changes; later ones win bit by bit. Out-of-range bytes are ignored.
    pub fn add(&mut self, changes: &[Change]) {
        for c in changes {
            let r = c.region as usize;
            let (Some(vals), Some(masks)) = (self.values.get_mut(r), self.masks.get_mut(r)) else {
                continue;
            };
            for (i, (&v, &m)) in c.values.iter().zip(&c.masks).enumerate() {
                let j = c.offset as usize + i;
                if let (Some(val), Some(mask)) = (vals.get_mut(j), masks.get_mut(j)) {
                    *val = delta::merge_byte(*val, v, m);
                    *mask |= m;
                }
            }
        }
    }

    /// Merges what was recorded into `state` (bit by bit) and forgets it.
    pub fn drain_into(&mut self, state: &mut [Vec<u8>]) {
        for ((vals, masks), bytes) in self.values.iter().zip(&mut self.masks).zip(state) {
            for ((b, &v), m) in bytes.iter_mut().zip(vals).zip(masks.iter_mut()) {
                *b = delta::merge_byte(*b, v, *m);
                *m = 0;
            }
        }
    }
}

/// The changes that turn `from` into `to`, region by region.
pub fn diff_state(from: &[Vec<u8>], to: &[Vec<u8>]) -> Vec<Change> {
    from.iter()
        .zip(to)
        .enumerate()
        .flat_map(|(r, (a, b))| delta::diff(r as u16, a, b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GameInfo, RegionInfo};

    fn joined(state: Vec<Vec<u8>>) -> Joined {
        Joined {
            player: 7,
            game: GameInfo {
                name: "g".into(),
                title: "g".into(),
                rom_size: 0,
                rom_sha256: [0; 32],
                shared_bytes: 0,
                machine: None,
                romtype: None,
                sync_when: None,
                players: vec![],
            },
            regions: state
                .iter()
                .map(|s| RegionInfo {
                    start: 0xe000,
                    end: 0xe000 + s.len() as u16 - 1,
                    description: String::new(),
                })
                .collect(),
            state,
            seq: 10,
            in_progress: false,
            last_batch: None,
        }
    }

    fn bit(offset: u16, value: u8, mask: u8) -> Change {
        Change {
            region: 0,
            offset,
            values: vec![value],
            masks: vec![mask],
        }
    }

    #[test]
    fn mirror_follows_every_update_in_order() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        let out = s.update(11, 1, 1, &[bit(0, 0xff, 0x0f)]).unwrap();
        assert_eq!(out, vec![bit(0, 0xff, 0x0f)]);
        s.update(12, 7, 99, &[bit(1, 0x80, 0x80)]).unwrap();
        assert_eq!(s.server_state(), &[vec![0x0f, 0x80, 0, 0]]);
        assert_eq!(s.seq(), 12);
    }

    #[test]
    fn a_gap_in_sequence_numbers_is_an_error() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        let err = s.update(12, 1, 1, &[bit(0, 1, 1)]).unwrap_err();
        assert!(err.to_string().contains("lost"), "{err}");
    }

    #[test]
    fn bad_changes_from_the_server_are_refused() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        assert!(s.update(11, 1, 1, &[bit(4, 1, 1)]).is_err());
        assert_eq!(s.seq(), 10, "a refused update is not applied");
    }

    #[test]
    fn own_batches_in_flight_protect_their_bits() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        let mine = [bit(0, 0x01, 0x01)];
        let b = s.send(&mine, true);
        // Someone else's update, sequenced before our batch, touches bit 0 and bit 7.
        let out = s.update(11, 1, 5, &[bit(0, 0x80, 0x81)]).unwrap();
        assert_eq!(out, vec![bit(0, 0x80, 0x80)], "bit 0 is ours and will win");
        // Our echo: acknowledged, and written back (it may have been overwritten).
        let out = s.update(12, 7, b, &mine).unwrap();
        assert_eq!(out, mine.to_vec());
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.server_state()[0][0], 0x81);
        // A batch nothing could overtake: its echo only acknowledges it.
        let b = s.send(&[bit(1, 0x02, 0x02)], false);
        assert!(s
            .update(13, 7, b, &[bit(1, 0x02, 0x02)])
            .unwrap()
            .is_empty());
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.server_state()[0][1], 0x02);
    }

    #[test]
    fn expected_state_is_the_server_with_own_batches_on_top() {
        let mut s = SyncState::new(&joined(vec![vec![0; 2]]));
        s.update(11, 1, 1, &[bit(0, 0xf0, 0xf0)]).unwrap();
        s.send(&[bit(1, 0x01, 0x01)], false);
        s.send(&[bit(0, 0x00, 0x10)], false);
        assert_eq!(s.expected(), vec![vec![0xe0, 0x01]]);
        assert_eq!(s.server_state(), &[vec![0xf0, 0x00]]);
        assert_eq!(s.in_flight_changes().len(), 2);
    }

    #[test]
    fn after_an_outage_only_batches_the_server_lacks_are_sent_again() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        let b1 = s.send(&[bit(0, 1, 0xff)], false);
        let b2 = s.send(&[bit(1, 2, 0xff)], false);
        let b3 = s.send(&[bit(2, 3, 0xff)], false);
        let unreceived = |changes, received_batches| Unreceived {
            changes,
            received_batches,
        };
        assert_eq!(
            s.unreceived(None).changes.len(),
            3,
            "unknown: everything again"
        );
        assert_eq!(
            s.unreceived(Some(b1)),
            unreceived(vec![bit(1, 2, 0xff), bit(2, 3, 0xff)], 1)
        );
        assert_eq!(s.unreceived(Some(b3)), unreceived(vec![], 3));
        assert_eq!(
            s.unreceived(Some(b1 - 1)),
            unreceived(s.in_flight_changes(), 0)
        );
        // Numbering goes on across the reconnect.
        let mut t = s.rejoined(&joined(vec![vec![9; 4]]));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.server_state(), &[vec![9; 4]]);
        assert!(t.send(&[bit(3, 4, 0xff)], false) > b2.max(b3));
    }

    #[test]
    fn batch_numbers_that_wrap_still_compare() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        s.next_batch = u32::MAX;
        let last = s.send(&[bit(0, 1, 0xff)], false);
        let after = s.send(&[bit(1, 2, 0xff)], false);
        assert_eq!(after, 0);
        assert_eq!(
            s.unreceived(Some(last)),
            Unreceived {
                changes: vec![bit(1, 2, 0xff)],
                received_batches: 1
            }
        );
    }

    #[test]
    fn offline_changes_merge_bitwise_and_only_differences_travel() {
        let mut o = Offline::new(&[4]);
        o.add(&[bit(0, 0x01, 0x01), bit(0, 0x80, 0x80), bit(0, 0x00, 0x01)]);
        o.add(&[bit(2, 0x42, 0xff)]);
        // The server already has byte 2 as 0x42; byte 0 wants bit 7 set, bit 0 clear.
        let server = vec![vec![0x01, 0, 0x42, 0]];
        let mut wanted = server.clone();
        o.drain_into(&mut wanted);
        assert_eq!(wanted, vec![vec![0x80, 0, 0x42, 0]]);
        let out = diff_state(&server, &wanted);
        assert_eq!(out.len(), 1, "only byte 0 travels: {out:?}");
        let mut again = server.clone();
        o.drain_into(&mut again);
        assert_eq!(again, server);
    }

    #[test]
    fn a_later_own_batch_protects_against_an_earlier_echo() {
        // The game set a bit and cleared it again: two batches. The echo of the first
        // must not flash the bit on again while the second is in flight.
        let mut s = SyncState::new(&joined(vec![vec![0; 1]]));
        let b1 = s.send(&[bit(0, 1, 1)], true);
        let b2 = s.send(&[bit(0, 0, 1)], true);
        assert!(s.update(11, 7, b1, &[bit(0, 1, 1)]).unwrap().is_empty());
        assert_eq!(
            s.update(12, 7, b2, &[bit(0, 0, 1)]).unwrap(),
            vec![bit(0, 0, 1)]
        );
        assert_eq!(s.server_state()[0][0], 0);
    }
}
