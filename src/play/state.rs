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
    pub fn send(&mut self, changes: &[Change]) -> u32 {
        let batch = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.in_flight.record(batch, changes);
        batch
    }

    /// Takes an update from the server and returns what to write into the emulator.
    ///
    /// Every update, the player's own included, goes into the mirror. Into the
    /// emulator go the update's bits except those covered by own batches still in
    /// flight: those batches are sequenced after this update and will win. Own updates
    /// are written too: a change the game made can have been overwritten in RAM by an
    /// earlier-sequenced update that arrived between the hooks' flush and our sending
    /// it, and its echo puts it back.
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
        }
        Ok(changes
            .iter()
            .filter_map(|c| self.in_flight.protect(c))
            .collect())
    }
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
        let b = s.send(&mine);
        // Someone else's update, sequenced before our batch, touches bit 0 and bit 7.
        let out = s.update(11, 1, 5, &[bit(0, 0x80, 0x81)]).unwrap();
        assert_eq!(out, vec![bit(0, 0x80, 0x80)], "bit 0 is ours and will win");
        // Our echo: acknowledged, and written back (it may have been overwritten).
        let out = s.update(12, 7, b, &mine).unwrap();
        assert_eq!(out, mine.to_vec());
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.server_state()[0][0], 0x81);
    }

    #[test]
    fn a_later_own_batch_protects_against_an_earlier_echo() {
        // The game set a bit and cleared it again: two batches. The echo of the first
        // must not flash the bit on again while the second is in flight.
        let mut s = SyncState::new(&joined(vec![vec![0; 1]]));
        let b1 = s.send(&[bit(0, 1, 1)]);
        let b2 = s.send(&[bit(0, 0, 1)]);
        assert!(s.update(11, 7, b1, &[bit(0, 1, 1)]).unwrap().is_empty());
        assert_eq!(
            s.update(12, 7, b2, &[bit(0, 0, 1)]).unwrap(),
            vec![bit(0, 0, 1)]
        );
        assert_eq!(s.server_state()[0][0], 0);
    }
}
