//! What a player knows about the game's shared state, as plain data: the server's
//! state (mirrored by applying every update in sequence order), its own batches in
//! flight, and which bits of an incoming update may go into the emulator.
//!
//! The emulator side (hooks.tcl) adds the last rule, per byte: bits the game changed
//! but that were not flushed yet stay as the game wrote them (I4); per counter, what
//! the game added and did not flush yet is added to the group's value.

use crate::counter::{Count, Counter, CounterOp, CounterWrite, Flushed};
use crate::delta::{self, Change};
use crate::protocol::{Joined, PlayerId, RegionInfo, RegionKind};
use crate::replica::{InFlight, Payload, Unreceived};
use anyhow::{bail, Context, Result};

/// Most own batches sent and not yet echoed. A player that keeps up has a few; a
/// fast game on a slow link some thousands. A server that stops echoing while it
/// keeps the connection open would make them pile up for ever: past the limit the
/// player takes the connection as broken and reconnects.
pub const MAX_IN_FLIGHT_BATCHES: usize = 65_536;
/// Most memory ([`Change::memory_bytes`]) the changes of those batches may take.
pub const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

/// What the shared bytes mean: the ROM, the regions (where each one is, in order, and
/// whether it holds bits or a counter) and when a player syncs. A server whose game has another layout than the one a player
/// joined cannot take that player's bytes, which would land in the wrong places. Any
/// new property that gives the bytes a meaning belongs here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    rom_sha256: [u8; 32],
    regions: Vec<(u16, u16, RegionKind)>,
    sync_when: Option<String>,
}

impl Layout {
    /// The layout of the game a join answered with.
    pub fn of(joined: &Joined) -> Layout {
        Layout {
            rom_sha256: joined.game.rom_sha256,
            regions: joined
                .regions
                .iter()
                .map(|r| (r.start, r.end, r.kind))
                .collect(),
            sync_when: joined.game.sync_when.clone(),
        }
    }

    /// What differs in `now`, in words; `None` when nothing does.
    pub fn changes_to(&self, now: &Layout) -> Option<String> {
        let describe = |l: &Layout| {
            let bytes: usize = l
                .regions
                .iter()
                .map(|&(s, e, _)| (e - s) as usize + 1)
                .sum();
            format!("{} regions, {bytes} bytes", l.regions.len())
        };
        let mut what = Vec::new();
        if self.rom_sha256 != now.rom_sha256 {
            what.push("the rom".to_string());
        }
        if self.regions != now.regions {
            what.push(format!(
                "the regions (were {}, now {})",
                describe(self),
                describe(now)
            ));
        }
        if self.sync_when != now.sync_when {
            what.push("the sync-when condition".to_string());
        }
        (!what.is_empty()).then(|| what.join(" and "))
    }
}

/// A player's view of the shared state.
#[derive(Debug, Clone)]
pub struct SyncState {
    me: PlayerId,
    /// Per region: its counter, when it is one.
    counters: Vec<Option<Counter>>,
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
            counters: joined.regions.iter().map(RegionInfo::counter).collect(),
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

    /// Says so when the own batches not yet echoed are past [`MAX_IN_FLIGHT_BATCHES`]
    /// or [`MAX_IN_FLIGHT_BYTES`]: the server is not acknowledging them.
    pub fn unacknowledged(&self) -> Option<String> {
        let (n, bytes) = (self.in_flight.len(), self.in_flight.bytes());
        (n > MAX_IN_FLIGHT_BATCHES || bytes > MAX_IN_FLIGHT_BYTES).then(|| {
            format!(
                "has not acknowledged {n} batches of changes ({} KiB)",
                bytes / 1024
            )
        })
    }

    /// Region sizes, in order.
    pub fn region_sizes(&self) -> Vec<usize> {
        self.server.iter().map(Vec::len).collect()
    }

    /// Per region: its counter, when it is one.
    pub fn counters(&self) -> &[Option<Counter>] {
        &self.counters
    }

    /// Records local changes about to be sent; returns their batch number.
    /// `overtaken` says that updates written into the emulator may have landed after
    /// the hooks flushed these changes (see [`SyncState::update`]).
    pub fn send(&mut self, changes: &[Change], overtaken: bool) -> u32 {
        self.record(Payload::Bits(changes.to_vec()), overtaken)
    }

    /// Records counter operations about to be sent, like [`SyncState::send`].
    pub fn send_ops(&mut self, ops: &[CounterOp], overtaken: bool) -> u32 {
        self.record(Payload::Counts(ops.to_vec()), overtaken)
    }

    /// Records the amounts of a flush of counters about to be sent (see
    /// [`SyncState::amounts`]); returns their batch number and operations, or `None`
    /// when no value changed. When the game left a counter at a value the server will
    /// not keep (beyond its bounds), the echo is written back as if `overtaken`: the
    /// emulator shows that value, and nothing else would correct it.
    pub fn send_flushed(
        &mut self,
        flushed: &[Flushed],
        overtaken: bool,
    ) -> Option<(u32, Vec<CounterOp>)> {
        let ops = self.amounts(flushed);
        if ops.is_empty() {
            return None;
        }
        let batch = self.send_ops(&ops, overtaken);
        let beyond = flushed.iter().any(|f| {
            let r = f.region as usize;
            let shown = self
                .counters
                .get(r)
                .copied()
                .flatten()
                .map(|c| c.decode(&f.new));
            shown.is_some() && shown != self.predicted(r)
        });
        if beyond {
            self.rewrite.insert(batch);
        }
        Some((batch, ops))
    }

    fn record(&mut self, payload: Payload, overtaken: bool) -> u32 {
        let batch = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.in_flight.record(batch, payload);
        if overtaken {
            self.rewrite.insert(batch);
        }
        batch
    }

    /// The counter amounts of a flush: what the game added to (or spent from) each
    /// counter, from the bytes before and after. Unchanged values give nothing.
    pub fn amounts(&self, flushed: &[Flushed]) -> Vec<CounterOp> {
        flushed
            .iter()
            .filter_map(|f| {
                let c = self.counters.get(f.region as usize).copied().flatten()?;
                let amount = c.amount(&f.old, &f.new);
                (amount != 0).then_some(CounterOp::Add {
                    region: f.region,
                    amount,
                })
            })
            .collect()
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
    /// flight on top (bits applied, amounts added). RAM that differs from it for long
    /// changed behind the hooks' back.
    pub fn expected(&self) -> Vec<Vec<u8>> {
        let mut out = self.state_to_write();
        for c in self.in_flight.changes() {
            if let Some(region) = out.get_mut(c.region as usize) {
                delta::apply(region, c);
            }
        }
        out
    }

    /// What to write into the emulator when a player starts syncing: the server's
    /// state, with every counter at its predicted value (own amounts in flight added:
    /// the server will add them, and a shown total without them would be written over
    /// by nothing, since their echoes only acknowledge).
    pub fn state_to_write(&self) -> Vec<Vec<u8>> {
        let mut out = self.server.clone();
        for (r, region) in out.iter_mut().enumerate() {
            if let (Some(value), Some(c)) = (self.predicted(r), self.counters[r]) {
                *region = c.encode(value, region.len());
            }
        }
        out
    }

    /// Everything to write into the emulator to bring it to the server's state
    /// without losing what it has not sent yet: every byte region whole, less the bits
    /// own batches in flight cover ([`SyncState::unprotected`]), and every counter at
    /// its predicted value.
    pub fn writes_for_state(&self) -> (Vec<Change>, Vec<CounterWrite>) {
        let mut changes = Vec::new();
        let mut counters = Vec::new();
        for (r, bytes) in self.server.iter().enumerate() {
            match self.predicted(r) {
                Some(value) => counters.push(CounterWrite {
                    region: r as u16,
                    value,
                }),
                None => changes.push(Change::bytes(r as u16, 0, bytes.clone())),
            }
        }
        (self.unprotected(&changes), counters)
    }

    /// The value region `r`'s counter should show: the server's total with own
    /// operations in flight on top. `None` when the region is not a counter.
    fn predicted(&self, r: usize) -> Option<u32> {
        let c = self.counters.get(r).copied().flatten()?;
        let total = c.decode(self.server.get(r)?);
        Some(self.in_flight.predict(r as u16, total, &c))
    }

    /// Every change in flight, oldest first.
    pub fn in_flight_changes(&self) -> Vec<Change> {
        self.in_flight.changes().cloned().collect()
    }

    /// After an outage: what of the own batches in flight the server does not have
    /// (see [`InFlight::unreceived`]).
    pub fn unreceived(&self, last_batch: Option<u32>) -> Unreceived {
        self.in_flight.unreceived(last_batch)
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

    /// Fails unless `seq` is the update right after the last one taken. A server's
    /// numbers are at most `protocol::MAX_SEQ`, but this state may not come from one:
    /// nothing here wraps or panics.
    fn follows(&self, seq: u64) -> Result<()> {
        let next = self
            .seq
            .checked_add(1)
            .context("server sent an update after the last possible sequence number")?;
        if seq != next {
            bail!(
                "server sent update {seq} after {}: updates were lost",
                self.seq
            );
        }
        Ok(())
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
        self.follows(seq)?;
        let sizes = self.region_sizes();
        for c in changes {
            if let Err(e) = c.check(&sizes) {
                bail!("server sent a bad change in update {seq}: {e}");
            }
            if self.counters[c.region as usize].is_some() {
                bail!(
                    "server sent a bit change to counter region {} in update {seq}",
                    c.region
                );
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

    /// Takes a counter update from the server and returns the counter values to write
    /// into the emulator ([`CounterWrite`]: the hooks keep what the game added and did
    /// not flush yet on top).
    ///
    /// Every update goes into the mirror; a total that does not follow from the
    /// mirror and the update's amount means the mirror went wrong, and is refused like
    /// a gap in `seq`. Another player's update is written as the new total with own
    /// amounts in flight on top. An own update changes nothing the emulator does not
    /// show already, unless the server did something else than this player expected
    /// (an amount cut off at a bound, a seed another player's came before) or the
    /// batch was sent `overtaken` (as in [`SyncState::update`]).
    pub fn count(
        &mut self,
        seq: u64,
        player: PlayerId,
        batch: u32,
        counts: &[Count],
    ) -> Result<Vec<CounterWrite>> {
        self.follows(seq)?;
        let mut mirror = self.server.clone();
        let mut expected = Vec::with_capacity(counts.len());
        for count in counts {
            let r = count.region as usize;
            let (Some(Some(c)), Some(bytes)) = (self.counters.get(r), mirror.get_mut(r)) else {
                bail!(
                    "server sent a count for region {} in update {seq}, which is not a counter",
                    count.region
                );
            };
            let before = c.decode(bytes);
            // The amount is the server's: checked, so no number it sends can overflow.
            if i64::from(before).checked_add(count.amount) != Some(i64::from(count.total))
                || count.total < c.min
                || count.total > c.max
            {
                bail!(
                    "server sent counter region {} going from {before} by {} to {} in update {seq}",
                    count.region,
                    count.amount,
                    count.total
                );
            }
            *bytes = c.encode(count.total, bytes.len());
            expected.push(before);
        }
        self.seq = seq;
        self.server = mirror;
        if player == self.me {
            let ops = match self.in_flight.ack(batch).map(|b| b.payload) {
                Some(Payload::Counts(ops)) => ops,
                _ => Vec::new(),
            };
            // What this player predicted each operation to give, from the totals
            // before the update.
            let surprise = ops.len() != counts.len()
                || ops
                    .iter()
                    .zip(counts)
                    .zip(&expected)
                    .any(|((op, count), &before)| {
                        let c = self.counters[count.region as usize];
                        c.is_some_and(|c| op.apply(&c, before, true) != count.total)
                    });
            if !self.rewrite.remove(&batch) && !surprise {
                return Ok(Vec::new());
            }
        }
        let mut writes: Vec<CounterWrite> = Vec::new();
        for count in counts {
            if writes.iter().any(|w| w.region == count.region) {
                continue;
            }
            if let Some(value) = self.predicted(count.region as usize) {
                writes.push(CounterWrite {
                    region: count.region,
                    value,
                });
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GameInfo, RegionInfo, RoomInfo};

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
                on_restart: Default::default(),
                rooms: vec![],
            },
            room: RoomInfo {
                name: "g".into(),
                players: vec![],
            },
            regions: state
                .iter()
                .map(|s| RegionInfo::bytes(0xe000, 0xe000 + s.len() as u16 - 1, ""))
                .collect(),
            state,
            seq: 10,
            in_progress: false,
            last_batch: None,
            labels: vec![],
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
    fn sequence_numbers_never_wrap() {
        let mut j = joined(vec![vec![0; 4]]);
        j.seq = u64::MAX;
        let mut s = SyncState::new(&j);
        let e = s.update(0, 1, 1, &[bit(0, 1, 1)]).unwrap_err();
        assert!(
            e.to_string().contains("last possible sequence number"),
            "{e}"
        );
        assert_eq!(s.seq(), u64::MAX);
        let mut c = with_coins();
        c.seq = u64::MAX;
        assert!(c.count(0, 1, 1, &[count(1, 11)]).is_err());
    }

    #[test]
    fn batches_piling_up_unacknowledged_are_noticed() {
        let mut s = SyncState::new(&joined(vec![vec![0; 4]]));
        for _ in 0..MAX_IN_FLIGHT_BATCHES {
            s.send(&[bit(0, 1, 1)], false);
        }
        assert_eq!(s.unacknowledged(), None);
        s.send(&[bit(0, 1, 1)], false);
        let why = s.unacknowledged().unwrap();
        assert!(
            why.starts_with("has not acknowledged 65537 batches"),
            "{why}"
        );
        // An echo brings it back under the limit.
        s.update(11, 7, 1, &[bit(0, 1, 1)]).unwrap();
        assert_eq!(s.unacknowledged(), None);
        // Big batches count by their bytes (masks of 0 keep the test quick).
        let mut s = SyncState::new(&joined(vec![vec![0; 4096]]));
        let whole = [Change {
            region: 0,
            offset: 0,
            values: vec![1; 4096],
            masks: vec![0; 4096],
        }];
        while s.unacknowledged().is_none() {
            s.send(&whole, false);
        }
        assert!(
            s.in_flight() <= MAX_IN_FLIGHT_BYTES / 8192 + 1,
            "{}",
            s.in_flight()
        );
    }

    #[test]
    fn a_changed_layout_is_described() {
        let before = joined(vec![vec![0; 4], vec![0; 2]]);
        let l = Layout::of(&before);
        assert_eq!(l.changes_to(&Layout::of(&before)), None);
        let mut moved = before.clone();
        moved.regions[1].start -= 1;
        moved.state[1].push(0);
        assert_eq!(
            l.changes_to(&Layout::of(&moved)).unwrap(),
            "the regions (were 2 regions, 6 bytes, now 2 regions, 7 bytes)"
        );
        let mut other = before.clone();
        other.game.rom_sha256 = [1; 32];
        other.game.sync_when = Some("e000 == 01".into());
        assert_eq!(
            l.changes_to(&Layout::of(&other)).unwrap(),
            "the rom and the sync-when condition"
        );
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
            ops: vec![],
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
                ops: vec![],
                received_batches: 1
            }
        );
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

    /// Region 0 four bytes, region 1 coins: 3-digit BCD, at 10 of at most 999.
    fn with_coins() -> SyncState {
        let mut j = joined(vec![vec![0; 4], vec![0x10, 0x00]]);
        j.regions[1].kind = crate::protocol::RegionKind::Counter(Counter {
            encoding: crate::counter::Encoding::Bcd,
            min: 0,
            max: 999,
        });
        SyncState::new(&j)
    }

    fn add(amount: i64) -> CounterOp {
        CounterOp::Add { region: 1, amount }
    }

    fn count(amount: i64, total: u32) -> Count {
        Count {
            region: 1,
            amount,
            total,
        }
    }

    fn write(value: u32) -> Vec<CounterWrite> {
        vec![CounterWrite { region: 1, value }]
    }

    #[test]
    fn counters_show_the_total_with_own_amounts_in_flight() {
        let mut s = with_coins();
        let flushed = Flushed {
            region: 1,
            old: vec![0x10, 0x00],
            new: vec![0x12, 0x00],
        };
        let ops = s.amounts(std::slice::from_ref(&flushed));
        assert_eq!(ops, vec![add(2)]);
        // A rewrite of the same value is no amount.
        let same = Flushed {
            new: flushed.old.clone(),
            ..flushed
        };
        assert!(s.amounts(&[same]).is_empty());
        let mine = s.send_ops(&ops, false);
        assert_eq!(s.expected()[1], vec![0x12, 0x00]);
        assert_eq!(s.state_to_write()[1], vec![0x12, 0x00]);
        // Another player's 5 coins, sequenced before ours: 15 on the server, 17 here.
        assert_eq!(s.count(11, 1, 1, &[count(5, 15)]).unwrap(), write(17));
        assert_eq!(s.server_state()[1], vec![0x15, 0x00]);
        // Our echo: the emulator shows 17 already.
        assert!(s.count(12, 7, mine, &[count(2, 17)]).unwrap().is_empty());
        assert_eq!(s.in_flight(), 0);
        // Spending 15 of 17 coins while another player spends 10: the server keeps
        // the total at 0, which this player shows from the other's update on.
        let mine = s.send_ops(&[add(-15)], false);
        assert_eq!(s.count(13, 1, 2, &[count(-10, 7)]).unwrap(), write(0));
        assert!(s.count(14, 7, mine, &[count(-7, 0)]).unwrap().is_empty());
        assert_eq!(s.server_state()[1], vec![0x00, 0x00]);
        // An echo of a batch that may have been overtaken is written back.
        let mine = s.send_ops(&[add(3)], true);
        assert_eq!(s.count(15, 7, mine, &[count(3, 3)]).unwrap(), write(3));
        // The game went past the maximum (1005 of 999): the server keeps 999, and the
        // echo writes it over the game's 1005.
        let past = Flushed {
            region: 1,
            old: vec![0x03, 0x00],
            new: vec![0x05, 0x10],
        };
        let (mine, ops) = s.send_flushed(&[past], false).unwrap();
        assert_eq!(ops, vec![add(1002)]);
        assert_eq!(
            s.count(16, 7, mine, &[count(996, 999)]).unwrap(),
            write(999)
        );
        // Within bounds, the echo only acknowledges.
        let within = Flushed {
            region: 1,
            old: vec![0x99, 0x09],
            new: vec![0x98, 0x09],
        };
        let (mine, _) = s.send_flushed(&[within], false).unwrap();
        assert!(s.count(17, 7, mine, &[count(-1, 998)]).unwrap().is_empty());
    }

    #[test]
    fn a_seed_someone_else_made_first_is_written_back() {
        let mut s = with_coins();
        let mine = s.send_ops(
            &[CounterOp::Seed {
                region: 1,
                total: 50,
            }],
            false,
        );
        assert_eq!(s.expected()[1], vec![0x50, 0x00]);
        // Another player seeded 40 first: ours changed nothing.
        assert_eq!(s.count(11, 1, 1, &[count(30, 40)]).unwrap(), write(50));
        assert_eq!(s.count(12, 7, mine, &[count(0, 40)]).unwrap(), write(40));
    }

    #[test]
    fn counter_updates_that_do_not_follow_are_refused() {
        let mut s = with_coins();
        for bad in [
            vec![count(5, 16)],
            vec![count(1000, 1010)],
            // Numbers a hostile server picks to overflow the check.
            vec![count(i64::MAX, 5)],
            vec![count(i64::MIN, 5)],
            vec![Count {
                region: 0,
                amount: 1,
                total: 1,
            }],
        ] {
            assert!(s.count(11, 1, 1, &bad).is_err(), "{bad:?}");
        }
        assert!(s.count(12, 1, 1, &[count(1, 11)]).is_err(), "a gap");
        assert!(s
            .update(11, 1, 1, &[Change::bytes(1, 0, vec![0x11])])
            .is_err());
        assert_eq!(s.seq(), 10);
        assert_eq!(s.server_state()[1], vec![0x10, 0x00]);
    }
}
