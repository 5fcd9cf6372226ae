//! One room's authoritative shared state on the server. Pure: no I/O, no clocks, no
//! locks; the I/O shell in `server/mod.rs` holds one of these per room of a game under
//! a mutex.

use crate::counter::{Count, Counter, CounterOp};
use crate::delta::{self, Change};
use crate::protocol::{PlayerId, PlayerInfo, RegionInfo, ServerMsg, MAX_SEQ};
use std::collections::HashMap;

/// How many sessions (see `ClientMsg::Join`) a game remembers the last batch of. One
/// entry is 20 bytes; the session heard of longest ago is forgotten first, and a
/// forgotten session that reconnects only sends its batches in flight again.
pub const MAX_SESSIONS: usize = 1024;

/// The shared state of one game and the players in it.
#[derive(Debug, Clone)]
pub struct GameState {
    region_sizes: Vec<usize>,
    /// Per region: its counter, when it is one.
    counters: Vec<Option<Counter>>,
    /// Per region: whether a counter operation changed it since the server started
    /// with this state (a `CounterOp::Seed` counts only before).
    touched: Vec<bool>,
    state: Vec<Vec<u8>>,
    seq: u64,
    in_progress: bool,
    players: Vec<PlayerInfo>,
    /// The session each player joined with (players without one are not listed).
    player_sessions: HashMap<PlayerId, u64>,
    /// Per session: the last batch accepted from it and the update that sequenced it.
    sessions: HashMap<u64, (u32, u64)>,
}

impl GameState {
    /// A fresh game: every shared byte zero, sequence 0, nobody playing.
    pub fn new(regions: &[RegionInfo]) -> GameState {
        let region_sizes: Vec<usize> = regions.iter().map(RegionInfo::len).collect();
        let counters: Vec<Option<Counter>> = regions.iter().map(RegionInfo::counter).collect();
        // A counter starts at its minimum: zero bytes may be below it.
        let state = regions
            .iter()
            .map(|r| match r.counter() {
                Some(c) => c.encode(c.min, r.len()),
                None => vec![0u8; r.len()],
            })
            .collect();
        GameState {
            touched: vec![false; regions.len()],
            region_sizes,
            counters,
            state,
            seq: 0,
            in_progress: false,
            players: Vec::new(),
            player_sessions: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// A game continuing from a saved state: `bytes` holds every region's bytes one
    /// after the other, and `seq` is the last update they include. A game saved after
    /// any change (`seq > 0`) is in progress, so players joining it keep its state,
    /// and its counters are taken as changed (no seed counts any more). A counter's
    /// bytes are read as its number and written back in its encoding between its
    /// bounds: a regions file may have made a region a counter since the state was
    /// saved.
    pub fn restore(regions: &[RegionInfo], seq: u64, bytes: &[u8]) -> Result<GameState, String> {
        let mut game = GameState::new(regions);
        let total: usize = game.region_sizes.iter().sum();
        if bytes.len() != total {
            return Err(format!(
                "saved state has {} bytes, the regions have {total}",
                bytes.len()
            ));
        }
        let mut rest = bytes;
        for (region, counter) in game.state.iter_mut().zip(&game.counters) {
            let (mine, after) = rest.split_at(region.len());
            match counter {
                Some(c) => {
                    let value = c.clamp(i64::from(c.decode(mine)));
                    *region = c.encode(value, mine.len());
                }
                None => region.copy_from_slice(mine),
            }
            rest = after;
        }
        game.seq = seq;
        game.in_progress = seq > 0;
        game.touched.fill(seq > 0);
        Ok(game)
    }

    /// A copy of every region's bytes, one region after the other (what is saved).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.region_sizes.iter().sum());
        for region in &self.state {
            out.extend_from_slice(region);
        }
        out
    }

    /// Validates a batch of changes from `player`, merges it into the state bit by bit
    /// and returns the sequenced [`ServerMsg::Update`] to send to every player.
    ///
    /// Either the whole batch is accepted or none of it: a bad change anywhere rejects
    /// the batch with a lowercase reason and leaves the state untouched.
    pub fn accept(
        &mut self,
        player: PlayerId,
        batch: u32,
        changes: Vec<Change>,
    ) -> Result<ServerMsg, String> {
        if changes.is_empty() {
            return Err(format!("changes message (batch {batch}) has no changes"));
        }
        for c in &changes {
            c.check(&self.region_sizes)?;
            if self.counter(c.region).is_some() {
                return Err(format!(
                    "change to region {}, which is a counter: counters change by amounts",
                    c.region
                ));
            }
        }
        self.next_seq()?;
        for c in &changes {
            // `check` passed, so the region index is valid.
            if let Some(region) = self.state.get_mut(c.region as usize) {
                delta::apply(region, c);
            }
        }
        let seq = self.sequenced(player, batch);
        Ok(ServerMsg::Update {
            seq,
            player,
            batch,
            changes,
        })
    }

    /// Sets every shared byte to `bytes` (every region, one after the other, as
    /// [`GameState::bytes`] gives them) as sequenced messages from `player` that players
    /// apply like any other: an `Update` setting every bit of the bit regions, and a
    /// `Counted` moving each counter that differs to its saved total. Used to put a
    /// saved state back while players play.
    pub fn replace_all(
        &mut self,
        player: PlayerId,
        bytes: &[u8],
    ) -> Result<Vec<ServerMsg>, String> {
        let parts: Vec<Vec<u8>> = self.split(bytes)?.into_iter().map(<[u8]>::to_vec).collect();
        let mut changes = Vec::new();
        let mut ops = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            let region = i as u16;
            match self.counter(region) {
                None => changes.push(Change {
                    region,
                    offset: 0,
                    masks: vec![0xff; part.len()],
                    values: part,
                }),
                Some(c) => {
                    let want = i64::from(c.clamp(i64::from(c.decode(&part))));
                    let now = i64::from(c.decode(&self.state[i]));
                    if want != now {
                        ops.push(CounterOp::Add {
                            region,
                            amount: want - now,
                        });
                    }
                }
            }
        }
        let mut out = Vec::new();
        if !changes.is_empty() {
            out.push(self.accept(player, 0, changes)?);
        }
        if !ops.is_empty() {
            out.push(self.count(player, 0, &ops)?);
        }
        Ok(out)
    }

    /// `bytes` (every region's bytes, one region after the other) cut into regions.
    fn split<'a>(&self, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
        let total: usize = self.region_sizes.iter().sum();
        if bytes.len() != total {
            return Err(format!(
                "saved state has {} bytes, the regions have {total}",
                bytes.len()
            ));
        }
        let mut rest = bytes;
        let mut parts = Vec::with_capacity(self.region_sizes.len());
        for &len in &self.region_sizes {
            let (mine, after) = rest.split_at(len);
            parts.push(mine);
            rest = after;
        }
        Ok(parts)
    }

    /// Validates a batch of counter operations from `player`, applies them in order
    /// (each total kept between its counter's bounds) and returns the sequenced
    /// [`ServerMsg::Counted`] to send to every player. All or nothing, like
    /// [`GameState::accept`].
    pub fn count(
        &mut self,
        player: PlayerId,
        batch: u32,
        ops: &[CounterOp],
    ) -> Result<ServerMsg, String> {
        if ops.is_empty() {
            return Err(format!("counts message (batch {batch}) has no operations"));
        }
        for op in ops {
            if self.counter(op.region()).is_none() {
                return Err(format!(
                    "counter operation on region {}, which is not a counter",
                    op.region()
                ));
            }
        }
        self.next_seq()?;
        let mut counts = Vec::with_capacity(ops.len());
        for op in ops {
            let r = op.region() as usize;
            // Checked above: the region is a counter.
            let (Some(counter), Some(bytes)) = (self.counter(op.region()), self.state.get_mut(r))
            else {
                continue;
            };
            let old = counter.decode(bytes);
            let total = op.apply(&counter, old, !self.touched[r]);
            *bytes = counter.encode(total, bytes.len());
            self.touched[r] = true;
            counts.push(Count {
                region: op.region(),
                amount: i64::from(total) - i64::from(old),
                total,
            });
        }
        let seq = self.sequenced(player, batch);
        Ok(ServerMsg::Counted {
            seq,
            player,
            batch,
            counts,
        })
    }

    /// The counter of region `region`, when it is one.
    pub fn counter(&self, region: u16) -> Option<Counter> {
        self.counters.get(region as usize).copied().flatten()
    }

    /// The number the next accepted batch gets. Sequence numbers stay at most
    /// `MAX_SEQ` (state files are checked for it): this fails only for a state built by
    /// hand, and then refuses the batch instead of wrapping to 0 or panicking.
    fn next_seq(&self) -> Result<u64, String> {
        self.seq
            .checked_add(1)
            .filter(|&s| s <= MAX_SEQ)
            .ok_or_else(|| {
                "this game has used up its update numbers; restart it with --fresh".into()
            })
    }

    /// Gives an accepted batch its sequence number (checked with [`Self::next_seq`]
    /// before anything changed) and remembers it for the player's session; returns the
    /// number.
    fn sequenced(&mut self, player: PlayerId, batch: u32) -> u64 {
        self.seq = self.next_seq().unwrap_or(self.seq);
        self.in_progress = true;
        if let Some(&session) = self.player_sessions.get(&player) {
            self.remember(session, batch);
        }
        self.seq
    }

    /// Adds a player to the game, joining as `session` (0: none). Returns the last
    /// batch of that session the state includes, if the game remembers one.
    pub fn add_player(&mut self, player: PlayerInfo, session: u64) -> Option<u32> {
        let last = if session == 0 {
            None
        } else {
            self.player_sessions.insert(player.id, session);
            self.sessions.get(&session).map(|&(batch, _)| batch)
        };
        self.players.push(player);
        last
    }

    /// Removes a player; returns it if it was in the game. Its session's last batch
    /// stays remembered for when it reconnects.
    pub fn remove_player(&mut self, id: PlayerId) -> Option<PlayerInfo> {
        self.player_sessions.remove(&id);
        let i = self.players.iter().position(|p| p.id == id)?;
        Some(self.players.remove(i))
    }

    /// Notes `batch` as the last one accepted from `session`, forgetting the session
    /// heard of longest ago when there are too many.
    fn remember(&mut self, session: u64, batch: u32) {
        self.sessions.insert(session, (batch, self.seq));
        if self.sessions.len() > MAX_SESSIONS {
            // A linear scan, only when over the limit: once per new session then.
            let oldest = self.sessions.iter().min_by_key(|(_, &(_, seq))| seq);
            if let Some((&old, _)) = oldest {
                self.sessions.remove(&old);
            }
        }
    }

    /// The session player `id` joined with, if it gave one.
    pub fn session_of(&self, id: PlayerId) -> Option<u64> {
        self.player_sessions.get(&id).copied()
    }

    /// The players in the game, in joining order.
    pub fn players(&self) -> &[PlayerInfo] {
        &self.players
    }

    /// The current shared state, one byte vector per region.
    pub fn state(&self) -> &[Vec<u8>] {
        &self.state
    }

    /// Sequence number of the last accepted update (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether any change was accepted since the game started.
    pub fn in_progress(&self) -> bool {
        self.in_progress
    }

    /// Size in bytes of each region.
    pub fn region_sizes(&self) -> &[usize] {
        &self.region_sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<RegionInfo> {
        vec![
            RegionInfo::bytes(0xe000, 0xe003, "items"),
            RegionInfo::bytes(0xe100, 0xe100, "flags"),
        ]
    }

    /// Items, then coins: 3-digit BCD with a minimum of 10, then a byte of arrows.
    fn with_counters() -> Vec<RegionInfo> {
        let coins = Counter {
            encoding: crate::counter::Encoding::Bcd,
            min: 10,
            max: 999,
        };
        let arrows = Counter::full(crate::counter::Encoding::Binary, 1);
        vec![
            RegionInfo::bytes(0xe000, 0xe003, "items"),
            RegionInfo {
                kind: crate::protocol::RegionKind::Counter(coins),
                ..RegionInfo::bytes(0xe048, 0xe049, "coins")
            },
            RegionInfo {
                kind: crate::protocol::RegionKind::Counter(arrows),
                ..RegionInfo::bytes(0xe046, 0xe046, "arrows")
            },
        ]
    }

    fn add(region: u16, amount: i64) -> CounterOp {
        CounterOp::Add { region, amount }
    }

    #[test]
    fn counters_add_in_order_and_stay_in_bounds() {
        let mut g = GameState::new(&with_counters());
        // A counter starts at its minimum.
        assert_eq!(g.state()[1], vec![0x10, 0x00]);
        g.add_player(player(1), 0);
        let u = g.count(1, 4, &[add(1, 95), add(2, -1)]).unwrap();
        assert_eq!(
            u,
            ServerMsg::Counted {
                seq: 1,
                player: 1,
                batch: 4,
                counts: vec![
                    Count {
                        region: 1,
                        amount: 95,
                        total: 105
                    },
                    Count {
                        region: 2,
                        amount: 0,
                        total: 0
                    },
                ]
            }
        );
        assert_eq!(g.state()[1], vec![0x05, 0x01], "BCD, low byte first");
        // Past the maximum, then below the minimum: kept at the bound, and the
        // broadcast amount says what really changed.
        let ServerMsg::Counted { counts, .. } = g.count(2, 1, &[add(1, 5000)]).unwrap() else {
            panic!()
        };
        assert_eq!((counts[0].amount, counts[0].total), (894, 999));
        let ServerMsg::Counted { counts, .. } = g.count(2, 2, &[add(1, -2000)]).unwrap() else {
            panic!()
        };
        assert_eq!((counts[0].amount, counts[0].total), (-989, 10));
        // Bits and counters share one sequence.
        let u = g.accept(1, 5, vec![Change::bytes(0, 0, vec![1])]).unwrap();
        assert!(matches!(u, ServerMsg::Update { seq: 4, .. }));
        assert_eq!(g.add_player(player(3), 0), None);
    }

    #[test]
    fn counters_refuse_bit_changes_and_bytes_refuse_amounts() {
        let mut g = GameState::new(&with_counters());
        let err = g
            .accept(1, 1, vec![Change::bytes(1, 0, vec![0x99])])
            .unwrap_err();
        assert_eq!(
            err,
            "change to region 1, which is a counter: counters change by amounts"
        );
        let err = g.count(1, 2, &[add(1, 1), add(0, 1)]).unwrap_err();
        assert_eq!(err, "counter operation on region 0, which is not a counter");
        assert!(g.count(1, 3, &[add(7, 1)]).is_err());
        assert!(g.count(1, 4, &[]).is_err());
        assert_eq!(g.seq(), 0, "nothing applied");
        assert_eq!(g.state()[1], vec![0x10, 0x00]);
    }

    #[test]
    fn a_seed_counts_only_on_a_counter_nobody_changed() {
        let seed = |total| CounterOp::Seed { region: 1, total };
        let mut g = GameState::new(&with_counters());
        g.count(1, 1, &[seed(300), add(1, 2)]).unwrap();
        // A second player seeding at the same moment changes nothing.
        let ServerMsg::Counted { counts, .. } = g.count(2, 1, &[seed(300)]).unwrap() else {
            panic!()
        };
        assert_eq!((counts[0].amount, counts[0].total), (0, 302));
        // The other counter is still untouched; a seed is kept in bounds.
        g.count(
            2,
            2,
            &[CounterOp::Seed {
                region: 2,
                total: 999,
            }],
        )
        .unwrap();
        assert_eq!(g.state()[2], vec![255]);
        // A restored game in progress has every counter changed already.
        let mut r = GameState::restore(&with_counters(), g.seq(), &g.bytes()).unwrap();
        r.count(1, 3, &[seed(500)]).unwrap();
        assert_eq!(r.state()[1], vec![0x02, 0x03]);
    }

    #[test]
    fn restored_counters_are_valid_numbers_in_bounds() {
        // Saved when these bytes were not a counter yet: 0x0a0b is not BCD, and 5 is
        // below the minimum of 10.
        let bytes = [0, 0, 0, 0, 0x0b, 0x0a, 7];
        let g = GameState::restore(&with_counters(), 3, &bytes).unwrap();
        // 0x0a0b reads as 10 * 100 + 11 = 1011, above the maximum.
        assert_eq!(g.state()[1], vec![0x99, 0x09]);
        let low = GameState::restore(&with_counters(), 3, &[0, 0, 0, 0, 5, 0, 7]).unwrap();
        assert_eq!(low.state()[1], vec![0x10, 0x00]);
        assert_eq!(low.state()[2], vec![7]);
    }

    #[test]
    fn starts_zeroed_and_idle() {
        let g = GameState::new(&regions());
        assert_eq!(g.state(), &[vec![0; 4], vec![0; 1]]);
        assert_eq!(g.seq(), 0);
        assert!(!g.in_progress());
        assert_eq!(g.region_sizes(), &[4, 1]);
    }

    #[test]
    fn accept_merges_bits_and_sequences() {
        let mut g = GameState::new(&regions());
        let a = Change {
            region: 1,
            offset: 0,
            values: vec![0x01],
            masks: vec![0x01],
        };
        let b = Change {
            region: 1,
            offset: 0,
            values: vec![0x80],
            masks: vec![0x80],
        };
        let u1 = g.accept(7, 1, vec![a.clone()]).unwrap();
        assert_eq!(
            u1,
            ServerMsg::Update {
                seq: 1,
                player: 7,
                batch: 1,
                changes: vec![a]
            }
        );
        let u2 = g.accept(8, 1, vec![b]).unwrap();
        assert!(matches!(
            u2,
            ServerMsg::Update {
                seq: 2,
                player: 8,
                ..
            }
        ));
        // Different bits of one byte from two players both survive (I5).
        assert_eq!(g.state()[1], vec![0x81]);
        assert!(g.in_progress());
        g.accept(7, 2, vec![Change::bytes(0, 1, vec![5, 6, 7])])
            .unwrap();
        assert_eq!(g.state()[0], vec![0, 5, 6, 7]);
        assert_eq!(g.seq(), 3);
    }

    #[test]
    fn a_bad_change_rejects_the_whole_batch() {
        let mut g = GameState::new(&regions());
        let good = Change::bytes(0, 0, vec![9]);
        let bad = Change::bytes(0, 3, vec![1, 2]);
        let err = g.accept(1, 1, vec![good, bad]).unwrap_err();
        assert!(err.contains("region has 4 bytes"), "{err}");
        assert_eq!(g.state()[0], vec![0; 4], "nothing applied");
        assert_eq!(g.seq(), 0);
        assert!(!g.in_progress());
        assert!(g.accept(1, 2, vec![Change::bytes(2, 0, vec![1])]).is_err());
        assert!(g.accept(1, 3, vec![]).is_err());
    }

    #[test]
    fn restore_continues_from_a_saved_state() {
        let mut g = GameState::new(&regions());
        g.accept(1, 1, vec![Change::bytes(0, 1, vec![5, 6])])
            .unwrap();
        g.accept(1, 2, vec![Change::bytes(1, 0, vec![9])]).unwrap();
        let bytes = g.bytes();
        assert_eq!(bytes, vec![0, 5, 6, 0, 9]);
        let mut r = GameState::restore(&regions(), g.seq(), &bytes).unwrap();
        assert_eq!(r.state(), g.state());
        assert_eq!(r.seq(), 2);
        assert!(r.in_progress());
        // Sequence numbers go on from the saved one.
        let u = r.accept(3, 1, vec![Change::bytes(0, 0, vec![1])]).unwrap();
        assert!(matches!(u, ServerMsg::Update { seq: 3, .. }));
        // A state saved before any change is not in progress.
        let z = GameState::restore(&regions(), 0, &[0; 5]).unwrap();
        assert!(!z.in_progress());
        // The last update number: the next batch is refused, nothing wraps.
        let mut last = GameState::restore(&regions(), MAX_SEQ, &[0; 5]).unwrap();
        let e = last
            .accept(1, 1, vec![Change::bytes(0, 0, vec![1])])
            .unwrap_err();
        assert!(e.contains("used up its update numbers"), "{e}");
        assert_eq!((last.seq(), last.state()[0][0]), (MAX_SEQ, 0));
        assert_eq!(
            GameState::restore(&regions(), 1, &[0; 4]).unwrap_err(),
            "saved state has 4 bytes, the regions have 5"
        );
    }

    fn player(id: PlayerId) -> PlayerInfo {
        PlayerInfo {
            id,
            name: format!("p{id}"),
        }
    }

    #[test]
    fn replace_all_sets_every_bit_in_one_update() {
        let mut g = GameState::new(&regions());
        g.accept(1, 1, vec![Change::bytes(0, 0, vec![0xff, 0xff])])
            .unwrap();
        let mut all = g.replace_all(0, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(all.len(), 1, "no counters: one update");
        let u = all.remove(0);
        let ServerMsg::Update {
            seq,
            player,
            changes,
            ..
        } = u
        else {
            panic!("{u:?}")
        };
        assert_eq!((seq, player), (2, 0));
        assert!(changes.iter().all(|c| c.masks.iter().all(|&m| m == 0xff)));
        assert_eq!(g.bytes(), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            g.replace_all(0, &[1]).unwrap_err(),
            "saved state has 1 bytes, the regions have 5"
        );
    }

    #[test]
    fn players_come_and_go() {
        let mut g = GameState::new(&regions());
        assert_eq!(g.add_player(player(1), 0), None);
        assert_eq!(g.add_player(player(2), 0), None);
        assert_eq!(g.remove_player(1).map(|p| p.name), Some("p1".into()));
        assert_eq!(g.remove_player(1), None);
        assert_eq!(g.players().len(), 1);
        assert_eq!(g.players()[0].name, "p2");
    }

    #[test]
    fn a_session_that_comes_back_learns_its_last_accepted_batch() {
        let mut g = GameState::new(&regions());
        assert_eq!(g.add_player(player(1), 77), None, "a new session");
        g.add_player(player(2), 0);
        g.accept(1, 5, vec![Change::bytes(0, 0, vec![1])]).unwrap();
        g.accept(1, 6, vec![Change::bytes(0, 0, vec![2])]).unwrap();
        g.accept(2, 9, vec![Change::bytes(0, 0, vec![3])]).unwrap();
        // A rejected batch is not the last accepted one.
        assert!(g.accept(1, 7, vec![]).is_err());
        g.remove_player(1);
        // The same session on a new connection, with a new player id.
        assert_eq!(g.add_player(player(3), 77), Some(6));
        assert_eq!((g.session_of(3), g.session_of(2)), (Some(77), None));
        g.accept(3, 7, vec![Change::bytes(0, 0, vec![4])]).unwrap();
        g.remove_player(3);
        assert_eq!(g.add_player(player(4), 77), Some(7));
        // Session 0 means none: nothing is remembered for it.
        assert_eq!(g.add_player(player(5), 0), None);
    }

    #[test]
    fn the_session_heard_of_longest_ago_is_forgotten_first() {
        let mut g = GameState::new(&regions());
        let sessions = MAX_SESSIONS as u64 + 1;
        for s in 1..=sessions {
            let id = s as PlayerId;
            g.add_player(player(id), s);
            g.accept(id, 1, vec![Change::bytes(0, 0, vec![s as u8])])
                .unwrap();
            if s == 2 {
                // Session 1 is heard of again: session 2 is now the oldest.
                g.accept(1, 2, vec![Change::bytes(0, 1, vec![1])]).unwrap();
            }
        }
        assert_eq!(g.sessions.len(), MAX_SESSIONS);
        let back = sessions as PlayerId + 1;
        assert_eq!(g.add_player(player(back), 2), None, "forgotten");
        assert_eq!(g.add_player(player(back + 1), 1), Some(2));
        assert_eq!(g.add_player(player(back + 2), sessions), Some(1));
    }
}
