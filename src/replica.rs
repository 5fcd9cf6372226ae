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
//! Counters (regions of kind counter, see [`crate::counter`]) follow the same steps
//! with numbers instead of bits:
//!
//! - Local flush: amount = value(ram) - value(shadow); shadow = ram.
//! - Send: the amount goes out in a batch of its own (`ClientMsg::Counts`), in flight
//!   until echoed.
//! - Every counter update carries the server's total. The group's value *predicted*
//!   for this player is that total with the own amounts still in flight added in
//!   order, each kept in bounds ([`InFlight::predict`]): they were sequenced after the
//!   update. The shadow takes the prediction; RAM takes the prediction plus what the
//!   game added since the last flush (`value(ram) - value(shadow)`, kept in bounds),
//!   so an unflushed pickup survives and is sent at the next flush ([`apply_count`],
//!   the rule of hooks.tcl's `apply_count`).
//!
//! At quiescence (everything flushed and delivered) RAM equals shadow equals the
//! server's state on every player (I2); `tests/convergence.rs` checks this on random
//! interleavings, and that every amount is counted exactly once.

use crate::counter::{Count, Counter, CounterOp};
use crate::delta::{self, Change};
use crate::protocol::PlayerId;
use std::collections::{HashMap, VecDeque};

/// What one batch carries: bit changes (`ClientMsg::Changes`) or counter operations
/// (`ClientMsg::Counts`). One flush that changed both kinds of region makes two batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Bit changes, in flush order.
    Bits(Vec<Change>),
    /// Counter operations, in flush order.
    Counts(Vec<CounterOp>),
}

impl Payload {
    /// Whether it carries nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Payload::Bits(c) => c.is_empty(),
            Payload::Counts(o) => o.is_empty(),
        }
    }

    /// About how many bytes of memory it takes ([`Change::memory_bytes`] for bits).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Payload::Bits(c) => c.iter().map(Change::memory_bytes).sum(),
            Payload::Counts(o) => std::mem::size_of_val(o.as_slice()),
        }
    }
}

/// One batch of own changes: what a player sends in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The player's number for it, echoed back by the server in its update.
    pub number: u32,
    /// The changes.
    pub payload: Payload,
}

/// Own batches sent but not yet echoed back by the server.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    batches: VecDeque<Batch>,
    /// Per (region, byte): how many in-flight changes cover each of its 8 bits. Keeps
    /// `protect` proportional to the change, not to the number of batches in flight
    /// (a busy player has thousands).
    cover: HashMap<(u16, usize), [u32; 8]>,
    /// [`Payload::memory_bytes`] of every batch in flight.
    bytes: usize,
}

impl InFlight {
    /// No batch in flight.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// Remembers a batch that was just sent.
    pub fn record(&mut self, batch: u32, payload: Payload) {
        if let Payload::Bits(changes) = &payload {
            for c in changes {
                self.count(c, true);
            }
        }
        self.bytes += payload.memory_bytes();
        self.batches.push_back(Batch {
            number: batch,
            payload,
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

    /// The server echoed `batch`: forget it. Returns it, when it was in flight.
    pub fn ack(&mut self, batch: u32) -> Option<Batch> {
        // Echoes come in sending order, so this is nearly always the front.
        let i = self.batches.iter().position(|b| b.number == batch)?;
        let b = self.batches.remove(i)?;
        if let Payload::Bits(changes) = &b.payload {
            for c in changes {
                self.count(c, false);
            }
        }
        self.bytes -= b.payload.memory_bytes();
        Some(b)
    }

    /// Every bit change in flight, oldest batch first.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.batches.iter().flat_map(|b| match &b.payload {
            Payload::Bits(c) => c.as_slice(),
            Payload::Counts(_) => &[],
        })
    }

    /// Every counter operation in flight, oldest batch first.
    pub fn ops(&self) -> impl Iterator<Item = &CounterOp> {
        self.batches.iter().flat_map(|b| match &b.payload {
            Payload::Counts(o) => o.as_slice(),
            Payload::Bits(_) => &[],
        })
    }

    /// The value this player should show for the counter of `region`, whose server
    /// total is `total`: the own operations in flight on top, in order, each kept in
    /// bounds as the server will. (A seed in flight is taken to count: it is only sent
    /// to a server that came back empty.)
    pub fn predict(&self, region: u16, total: u32, counter: &Counter) -> u32 {
        self.ops()
            .filter(|op| op.region() == region)
            .fold(total, |v, op| op.apply(counter, v, true))
    }

    /// After an outage: what of the batches in flight the server does not have,
    /// oldest first, and how many batches it does have. It has every batch up to
    /// `last_batch` (the server's `Joined::last_batch`); when it does not know
    /// (`None`), all are sent again, since losing a change is worse than repeating one.
    pub fn unreceived(&self, last_batch: Option<u32>) -> Unreceived {
        let mut out = Unreceived::default();
        for b in &self.batches {
            // Batch numbers wrap: compare by distance, which is correct for any window
            // of fewer than 2^31 batches.
            let lost = last_batch.is_none_or(|last| (b.number.wrapping_sub(last) as i32) > 0);
            match (&b.payload, lost) {
                (_, false) => out.received_batches += 1,
                (Payload::Bits(c), true) => out.changes.extend(c.iter().cloned()),
                (Payload::Counts(o), true) => out.ops.extend(o.iter().copied()),
            }
        }
        out
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

    /// Memory the batches in flight take ([`Payload::memory_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets every batch (after a reconnect the server state is taken as it is).
    pub fn clear(&mut self) {
        self.batches.clear();
        self.cover.clear();
        self.bytes = 0;
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

/// What [`InFlight::unreceived`] found after an outage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unreceived {
    /// The bit changes of own batches the server does not have, oldest first: to send
    /// again.
    pub changes: Vec<Change>,
    /// The counter operations of own batches the server does not have, oldest first.
    pub ops: Vec<CounterOp>,
    /// How many batches in flight the server does have (not sent again).
    pub received_batches: usize,
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

/// Writes the group's `value` of a counter into one region's RAM and shadow: the
/// shadow takes `value`, RAM takes `value` plus what the game added or spent since the
/// last flush (`value(ram) - value(shadow)`), kept in bounds, so that amount survives
/// and is sent at the next flush. The rule of hooks.tcl's `apply_count`.
pub fn apply_count(ram: &mut [u8], shadow: &mut [u8], counter: &Counter, value: u32) {
    let unflushed = counter.amount(shadow, ram);
    let local = counter.clamp(i64::from(value) + unflushed);
    let width = ram.len().min(shadow.len());
    ram[..width].copy_from_slice(&counter.encode(local, width));
    shadow[..width].copy_from_slice(&counter.encode(value, width));
}

/// Changes the game made while the player was not connected: bits merged bit by bit,
/// so that a long outage costs memory for the shared bytes only, not per change, and
/// one net amount per counter.
#[derive(Debug, Clone)]
pub struct Offline {
    values: Vec<Vec<u8>>,
    masks: Vec<Vec<u8>>,
    amounts: Vec<i64>,
}

impl Offline {
    /// Nothing changed yet, for regions of these sizes.
    pub fn new(sizes: &[usize]) -> Offline {
        Offline {
            values: sizes.iter().map(|&n| vec![0; n]).collect(),
            masks: sizes.iter().map(|&n| vec![0; n]).collect(),
            amounts: vec![0; sizes.len()],
        }
    }

    /// Records what a flush sent; later bit changes win bit by bit, amounts add up.
    /// Out-of-range bytes and regions are ignored.
    pub fn add(&mut self, payload: &Payload) {
        match payload {
            Payload::Bits(changes) => self.add_changes(changes),
            Payload::Counts(ops) => {
                for op in ops {
                    // Flushes make only additions.
                    if let CounterOp::Add { region, amount } = *op {
                        if let Some(sum) = self.amounts.get_mut(region as usize) {
                            *sum = sum.saturating_add(amount);
                        }
                    }
                }
            }
        }
    }

    fn add_changes(&mut self, changes: &[Change]) {
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

    /// Merges the recorded bits into `state` (bit by bit) and forgets them.
    pub fn drain_into(&mut self, state: &mut [Vec<u8>]) {
        for ((vals, masks), bytes) in self.values.iter().zip(&mut self.masks).zip(state) {
            for ((b, &v), m) in bytes.iter_mut().zip(vals).zip(masks.iter_mut()) {
                *b = delta::merge_byte(*b, v, *m);
                *m = 0;
            }
        }
    }

    /// The net amount of every counter that changed, as operations, and forgets them.
    pub fn take_amounts(&mut self) -> Vec<CounterOp> {
        self.amounts
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| **a != 0)
            .map(|(r, a)| CounterOp::Add {
                region: r as u16,
                amount: std::mem::take(a),
            })
            .collect()
    }
}

/// What to send after reconnecting, given the server's `state` (from `Joined`): a
/// batch of bit changes and one of counter operations (either may be empty).
///
/// `known` is what the shared state should be: the server's `state` itself, or, when
/// the server came back empty, the state this player knew, which then seeds it (bits
/// as changes, each counter as a [`CounterOp::Seed`], which counts only for the first
/// player to seed). On top go the own batches the server never got (`unreceived`)
/// and what the game did offline, later and so winning bit by bit, amounts added.
pub fn catch_up(
    state: &[Vec<u8>],
    known: &[Vec<u8>],
    counters: &[Option<Counter>],
    unreceived: &Unreceived,
    offline: &mut Offline,
) -> (Vec<Change>, Vec<CounterOp>) {
    let mut wanted = known.to_vec();
    for c in &unreceived.changes {
        if let Some(region) = wanted.get_mut(c.region as usize) {
            delta::apply(region, c);
        }
    }
    offline.drain_into(&mut wanted);
    let mut changes = Vec::new();
    let mut ops = Vec::new();
    for (r, ((now, want), counter)) in state.iter().zip(&wanted).zip(counters).enumerate() {
        match counter {
            None => changes.extend(delta::diff(r as u16, now, want)),
            Some(c) if now != want => ops.push(CounterOp::Seed {
                region: r as u16,
                total: c.decode(want),
            }),
            Some(_) => {}
        }
    }
    ops.extend(unreceived.ops.iter().copied());
    ops.extend(offline.take_amounts());
    (changes, ops)
}

/// One player's view of a game, for tests and simulations: RAM as the game sees it,
/// the shadow, the own batches in flight, and what the game did while offline.
#[derive(Debug, Clone)]
pub struct Replica {
    player: PlayerId,
    /// Per region: its counter, when it is one.
    counters: Vec<Option<Counter>>,
    ram: Vec<Vec<u8>>,
    shadow: Vec<Vec<u8>>,
    in_flight: InFlight,
    next_batch: u32,
    /// Flushed in the emulator but not sent yet, oldest first.
    outbox: VecDeque<Payload>,
    /// While not connected: what was flushed meanwhile.
    offline: Option<Offline>,
    /// Per region: the sum of every amount a flush found (for tests).
    flushed: Vec<i64>,
}

impl Replica {
    /// A player that joined as `player` and received `state` (from `Joined`); every
    /// region is bytes.
    pub fn new(player: PlayerId, state: Vec<Vec<u8>>) -> Replica {
        let counters = vec![None; state.len()];
        Replica::with_counters(player, state, counters)
    }

    /// Like [`Replica::new`], with `counters[r]` the counter of region `r`, if any.
    pub fn with_counters(
        player: PlayerId,
        state: Vec<Vec<u8>>,
        counters: Vec<Option<Counter>>,
    ) -> Replica {
        Replica {
            player,
            ram: state.clone(),
            shadow: state,
            in_flight: InFlight::new(),
            next_batch: 1,
            outbox: Default::default(),
            offline: None,
            flushed: vec![0; counters.len()],
            counters,
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

    /// The game adds `amount` to the counter of `region` (negative: spends), keeping
    /// it in the counter's bounds as a game does. Returns what it really added; 0 for a
    /// region that is not a counter.
    pub fn add(&mut self, region: usize, amount: i64) -> i64 {
        let (Some(Some(c)), Some(ram)) = (self.counters.get(region), self.ram.get_mut(region))
        else {
            return 0;
        };
        let old = c.decode(ram);
        let new = c.clamp(i64::from(old) + amount);
        let width = ram.len();
        ram.copy_from_slice(&c.encode(new, width));
        i64::from(new) - i64::from(old)
    }

    /// Flushes and sends at once: returns the batch to send, or `None` when RAM
    /// equals the shadow and nothing waits to be sent.
    pub fn flush(&mut self) -> Option<Batch> {
        self.flush_only();
        self.send()
    }

    /// The emulator's flush: diffs RAM against the shadow, takes RAM as the shadow and
    /// queues the bit changes and the counter amounts for [`Self::send`]. Returns
    /// whether there were any.
    pub fn flush_only(&mut self) -> bool {
        let mut changes = Vec::new();
        let mut ops = Vec::new();
        for (i, ((ram, shadow), counter)) in self
            .ram
            .iter()
            .zip(&mut self.shadow)
            .zip(&self.counters)
            .enumerate()
        {
            match counter {
                None => changes.extend(delta::diff(i as u16, shadow, ram)),
                Some(c) => {
                    let amount = c.amount(shadow, ram);
                    if amount != 0 {
                        ops.push(CounterOp::Add {
                            region: i as u16,
                            amount,
                        });
                        self.flushed[i] += amount;
                    }
                }
            }
            shadow.copy_from_slice(ram);
        }
        let before = self.outbox.len();
        for payload in [Payload::Bits(changes), Payload::Counts(ops)] {
            if !payload.is_empty() {
                self.outbox.push_back(payload);
            }
        }
        self.outbox.len() > before
    }

    /// Sends the oldest flushed changes: records them as in flight and returns them
    /// with their batch number; `None` when nothing was flushed, or while offline
    /// (they are kept for [`Self::reconnect`] then).
    pub fn send(&mut self) -> Option<Batch> {
        let payload = self.outbox.pop_front()?;
        if let Some(offline) = &mut self.offline {
            offline.add(&payload);
            return None;
        }
        Some(self.record(payload))
    }

    fn record(&mut self, payload: Payload) -> Batch {
        let number = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.in_flight.record(number, payload.clone());
        Batch { number, payload }
    }

    /// The sum of every amount this player's flushes found for the counter of
    /// `region`: what it told (or will tell) the server its game added.
    pub fn flushed(&self, region: usize) -> i64 {
        self.flushed.get(region).copied().unwrap_or(0)
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
        self.apply_bits(changes);
    }

    /// Writes bit changes from the server, except the bits own batches in flight cover.
    fn apply_bits(&mut self, changes: &[Change]) {
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

    /// Receives a counter update from the server (in sequence order): every counter
    /// it names takes the predicted value ([`InFlight::predict`], [`apply_count`]).
    pub fn receive_counts(&mut self, player: PlayerId, batch: u32, counts: &[Count]) {
        if player == self.player {
            self.in_flight.ack(batch);
        }
        for count in counts {
            self.show_total(count.region as usize, count.total);
        }
    }

    /// Writes the counter of `region` from the server's `total`.
    fn show_total(&mut self, region: usize, total: u32) {
        let (Some(Some(c)), Some(ram), Some(shadow)) = (
            self.counters.get(region),
            self.ram.get_mut(region),
            self.shadow.get_mut(region),
        ) else {
            return;
        };
        let value = self.in_flight.predict(region as u16, total, c);
        apply_count(ram, shadow, c, value);
    }

    /// The connection broke: what is flushed from now on is kept instead of sent, and
    /// nothing is received, until [`Self::reconnect`].
    pub fn disconnect(&mut self) {
        let sizes: Vec<usize> = self.ram.iter().map(Vec::len).collect();
        self.offline.get_or_insert_with(|| Offline::new(&sizes));
    }

    /// Whether the player is disconnected.
    pub fn is_offline(&self) -> bool {
        self.offline.is_some()
    }

    /// Back online as `player` (a new connection, a new id), with the server's `state`
    /// and the `last_batch` of ours it has (both from `Joined`). As `play` does after
    /// an outage: the batches in flight the server lacks and what the game did offline
    /// are sent again ([`catch_up`]; the returned batches, now in flight), and the
    /// server's state is written into RAM and shadow through the usual rules.
    pub fn reconnect(
        &mut self,
        player: PlayerId,
        state: &[Vec<u8>],
        last_batch: Option<u32>,
    ) -> Vec<Batch> {
        let unreceived = self.in_flight.unreceived(last_batch);
        self.in_flight.clear();
        let sizes: Vec<usize> = self.ram.iter().map(Vec::len).collect();
        let mut offline = self.offline.take().unwrap_or_else(|| Offline::new(&sizes));
        let (changes, ops) = catch_up(state, state, &self.counters, &unreceived, &mut offline);
        self.player = player;
        let sent: Vec<Batch> = [Payload::Bits(changes), Payload::Counts(ops)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| self.record(p))
            .collect();
        for (r, bytes) in state.iter().enumerate() {
            match self.counters.get(r).copied().flatten() {
                None => self.apply_bits(&[Change::bytes(r as u16, 0, bytes.clone())]),
                Some(c) => self.show_total(r, c.decode(bytes)),
            }
        }
        sent
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
        f.record(
            1,
            Payload::Bits(vec![bits(0, 2, vec![0xff, 0x01], vec![0xff, 0x01])]),
        );
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
        assert!(f.ack(1).is_some());
        assert!(f.ack(1).is_none());
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
        let Batch { number, payload } = r.flush().unwrap();
        assert_eq!(number, 1);
        let changes = vec![bits(0, 1, vec![0x03], vec![0x03])];
        assert_eq!(payload, Payload::Bits(changes.clone()));
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
        let payload = r.flush().unwrap().payload;
        assert_eq!(
            payload,
            Payload::Bits(vec![bits(0, 0, vec![0b1011], vec![0b1100])])
        );
    }
}
