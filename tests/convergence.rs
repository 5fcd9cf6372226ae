//! Property test of the sync rules: simulated players (`replica::Replica`) around one
//! server game state (`server::game::GameState`), with random masked writes, counter
//! pickups and spends, flushes, message delays and reconnects. Whatever the
//! interleaving, once everybody stops writing, flushes and receives everything, every
//! player's RAM equals the server's state (I2), nobody ever sends a change it did not
//! make (I1), and every amount a game added to a counter is counted exactly once.

mod common;

use common::rng::Rng;
use msxsync::counter::{Counter, CounterOp, Encoding};
use msxsync::protocol::{PlayerId, PlayerInfo, RegionInfo, RegionKind, ServerMsg};
use msxsync::replica::{Batch, Payload, Replica};
use msxsync::server::game::GameState;
use std::collections::VecDeque;

struct Player {
    replica: Replica,
    /// Batches sent but not yet read by the server (a connection keeps their order).
    uplink: VecDeque<Batch>,
    /// Updates sent by the server but not yet read by this player (in seq order).
    inbox: VecDeque<ServerMsg>,
    /// Whether the game wrote since the last flush (a flush without it must send nothing).
    wrote: bool,
    last_seq: u64,
    /// The player's session (`ClientMsg::Join`), the same across reconnects.
    session: u64,
    /// Per region: what the game itself added to the counter.
    added: Vec<i64>,
}

struct Sim {
    server: GameState,
    players: Vec<Player>,
    next_id: PlayerId,
    /// Every counter operation the server took, in the order it took them.
    log: Vec<CounterOp>,
}

impl Sim {
    fn new(regions: &[RegionInfo], n: usize) -> Sim {
        Sim::with_server(GameState::new(regions), regions, n)
    }

    fn with_server(mut server: GameState, regions: &[RegionInfo], n: usize) -> Sim {
        let counters: Vec<Option<Counter>> = regions.iter().map(RegionInfo::counter).collect();
        let players = (0..n)
            .map(|i| {
                let id = i as PlayerId + 1;
                let session = 1000 + i as u64;
                server.add_player(player_info(id), session);
                Player {
                    replica: Replica::with_counters(id, server.state().to_vec(), counters.clone()),
                    uplink: VecDeque::new(),
                    inbox: VecDeque::new(),
                    wrote: false,
                    last_seq: server.seq(),
                    session,
                    added: vec![0; regions.len()],
                }
            })
            .collect();
        Sim {
            server,
            players,
            next_id: n as PlayerId + 1,
            log: Vec::new(),
        }
    }

    fn write(&mut self, p: usize, region: usize, offset: usize, value: u8, mask: u8) {
        self.players[p].replica.write(region, offset, value, mask);
        self.players[p].wrote = true;
    }

    /// The game adds `amount` to a counter (negative: spends).
    fn add(&mut self, p: usize, region: usize, amount: i64) {
        let player = &mut self.players[p];
        player.added[region] += player.replica.add(region, amount);
        player.wrote = true;
    }

    /// The emulator flushes but msxsync has not sent yet: updates can arrive between.
    fn flush_only(&mut self, p: usize) {
        let player = &mut self.players[p];
        let any = player.replica.flush_only();
        if !player.wrote {
            assert!(!any, "player {p} flushed changes without writing (echo)");
        }
        player.wrote = false;
    }

    /// msxsync sends what the emulator flushed.
    fn send(&mut self, p: usize) {
        let player = &mut self.players[p];
        if let Some(batch) = player.replica.send() {
            player.uplink.push_back(batch);
        }
    }

    fn flush(&mut self, p: usize) {
        let player = &mut self.players[p];
        if player.replica.has_unsent() {
            self.send(p);
            return;
        }
        let out = player.replica.flush();
        if !player.wrote {
            assert!(
                out.is_none() && !player.replica.has_unsent(),
                "player {p} sent {out:?} without writing (echo)"
            );
        }
        player.wrote = false;
        if let Some(batch) = out {
            player.uplink.push_back(batch);
        }
    }

    /// The server reads player `p`'s oldest batch and fans the update out.
    fn server_reads(&mut self, p: usize) {
        let Some(Batch { number, payload }) = self.players[p].uplink.pop_front() else {
            return;
        };
        let id = self.players[p].replica.player();
        let update = match payload {
            Payload::Bits(changes) => self.server.accept(id, number, changes),
            Payload::Counts(ops) => {
                self.log.extend(&ops);
                self.server.count(id, number, &ops)
            }
        }
        .expect("a replica's changes are valid");
        for q in &mut self.players {
            if !q.replica.is_offline() {
                q.inbox.push_back(update.clone());
            }
        }
    }

    /// Player `p` reads its oldest update.
    fn deliver(&mut self, p: usize) {
        let player = &mut self.players[p];
        let Some(update) = player.inbox.pop_front() else {
            return;
        };
        let (seq, from, batch) = match &update {
            ServerMsg::Update {
                seq, player, batch, ..
            }
            | ServerMsg::Counted {
                seq, player, batch, ..
            } => (*seq, *player, *batch),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(seq, player.last_seq + 1, "updates arrive in seq order");
        player.last_seq = seq;
        match update {
            ServerMsg::Update { changes, .. } => player.replica.receive(from, batch, &changes),
            ServerMsg::Counted { counts, .. } => {
                player.replica.receive_counts(from, batch, &counts)
            }
            _ => unreachable!(),
        }
    }

    /// Player `p`'s connection breaks: the server gets some of what was on its way up
    /// (the rest is lost), and nothing more comes down.
    fn disconnect(&mut self, p: usize, rng: &mut Rng) {
        if self.players[p].replica.is_offline() {
            return;
        }
        for _ in 0..rng.below(self.players[p].uplink.len() + 1) {
            self.server_reads(p);
        }
        let player = &mut self.players[p];
        player.uplink.clear();
        player.inbox.clear();
        player.replica.disconnect();
        self.server.remove_player(player.replica.player());
    }

    /// Player `p` joins again with its session, as a new player id.
    fn reconnect(&mut self, p: usize) {
        if !self.players[p].replica.is_offline() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let player = &mut self.players[p];
        let last_batch = self.server.add_player(player_info(id), player.session);
        let again = player
            .replica
            .reconnect(id, self.server.state(), last_batch);
        player.uplink.extend(again);
        player.last_seq = self.server.seq();
    }

    /// Players 0 and 1 flush what their games wrote; the server reads `first`'s batch,
    /// then the other's; every player receives both updates.
    fn both_at_once(&mut self, first: usize) {
        self.flush(0);
        self.flush(1);
        self.server_reads(first);
        self.server_reads(1 - first);
        for p in 0..self.players.len() {
            self.deliver(p);
            self.deliver(p);
        }
    }

    /// After [`Sim::both_at_once`]: everybody converges, and nobody sends anything
    /// more.
    fn settles_without_more_traffic(&mut self, context: &str) {
        let mut rng = Rng::new(1);
        self.quiesce(&mut rng);
        self.assert_converged(context);
        assert_eq!(self.server.seq(), 2, "{context}: no extra traffic");
    }

    fn busy(&self) -> bool {
        self.players
            .iter()
            .any(|p| !p.uplink.is_empty() || !p.inbox.is_empty() || p.replica.has_unsent())
    }

    /// Everybody stops writing and is connected: flush, deliver everything, until
    /// nothing moves.
    fn quiesce(&mut self, rng: &mut Rng) {
        for p in 0..self.players.len() {
            self.reconnect(p);
        }
        for _round in 0..10 {
            for p in 0..self.players.len() {
                self.flush(p);
            }
            if !self.busy() {
                return;
            }
            // Drain in a random interleaving too.
            while self.busy() {
                let p = rng.below(self.players.len());
                match rng.below(3) {
                    0 => self.server_reads(p),
                    1 => self.deliver(p),
                    _ => self.send(p),
                }
            }
        }
        panic!("no quiescence after 10 rounds");
    }

    fn assert_converged(&self, context: &str) {
        for (i, p) in self.players.iter().enumerate() {
            assert_eq!(
                p.replica.ram(),
                self.server.state(),
                "{context}: player {i} ram differs from the server"
            );
            assert_eq!(
                p.replica.shadow(),
                self.server.state(),
                "{context}: player {i} shadow differs from the server"
            );
            assert!(p.replica.in_flight().is_empty(), "{context}: player {i}");
        }
    }

    /// The counter of region `r`: every amount the players' flushes found reached the
    /// server exactly once, and the total is what the server's order gives: each
    /// operation in the order the server took them, the total kept in bounds after
    /// each (`start` is the total before the first).
    fn assert_counted(&self, r: usize, start: u32, context: &str) {
        let counter = self.server.counter(r as u16).expect("a counter");
        let ops: Vec<&CounterOp> = self
            .log
            .iter()
            .filter(|op| op.region() == r as u16)
            .collect();
        let received: i64 = ops
            .iter()
            .map(|op| match op {
                CounterOp::Add { amount, .. } => *amount,
                CounterOp::Seed { .. } => panic!("{context}: nobody seeds here"),
            })
            .sum();
        let flushed: i64 = self.players.iter().map(|p| p.replica.flushed(r)).sum();
        assert_eq!(received, flushed, "{context}: amounts lost or repeated");
        let total = ops.iter().fold(start, |v, op| op.apply(&counter, v, false));
        assert_eq!(
            counter.decode(&self.server.state()[r]),
            total,
            "{context}: the total is not the server-order sum"
        );
    }
}

fn player_info(id: PlayerId) -> PlayerInfo {
    PlayerInfo {
        id,
        name: format!("p{id}"),
    }
}

fn regions(sizes: &[usize]) -> Vec<RegionInfo> {
    let mut start = 0xc000u16;
    sizes
        .iter()
        .map(|&n| {
            let r = RegionInfo::bytes(start, start + n as u16 - 1, "");
            start += 0x100;
            r
        })
        .collect()
}

fn random_mask(rng: &mut Rng) -> u8 {
    match rng.below(4) {
        // One bit: the case where whole-byte merging loses data.
        0 | 1 => 1 << rng.below(8),
        2 => rng.next() as u8 | 1,
        _ => 0xff,
    }
}

#[test]
fn random_interleavings_converge() {
    let mut steps_total = 0u64;
    let mut updates_total = 0u64;
    for seed in 1..=3000u64 {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(4);
        // Few bytes, so that players collide on the same bytes and bits often.
        let sizes: Vec<usize> = (0..1 + rng.below(3)).map(|_| 1 + rng.below(4)).collect();
        let mut sim = Sim::new(&regions(&sizes), n);
        let steps = 20 + rng.below(300);
        for _ in 0..steps {
            let p = rng.below(n);
            match rng.below(11) {
                0..=3 => {
                    let region = rng.below(sizes.len());
                    let offset = rng.below(sizes[region]);
                    let value = rng.next() as u8;
                    let mask = random_mask(&mut rng);
                    sim.write(p, region, offset, value, mask);
                }
                4 => sim.flush(p),
                5 => sim.flush_only(p),
                6 => sim.send(p),
                7 | 8 => sim.server_reads(p),
                _ => sim.deliver(p),
            }
        }
        steps_total += steps as u64;
        sim.quiesce(&mut rng);
        updates_total += sim.server.seq();
        sim.assert_converged(&format!("seed {seed}"));
    }
    // The runs must have exercised the server, not just local writes.
    assert!(updates_total > steps_total / 20, "{updates_total} updates");
}

#[test]
fn two_players_set_different_bits_of_one_byte_at_once() {
    // I5, for both orders in which the server can receive the two batches.
    for first in 0..2 {
        let mut sim = Sim::new(&regions(&[1]), 3);
        sim.write(0, 0, 0, 0x01, 0x01);
        sim.write(1, 0, 0, 0x80, 0x80);
        sim.both_at_once(first);
        assert_eq!(sim.server.state()[0], vec![0x81]);
        for p in &sim.players {
            assert_eq!(p.replica.ram()[0], vec![0x81]);
        }
        sim.settles_without_more_traffic("i5");
    }
}

#[test]
fn a_local_change_made_while_a_remote_one_arrives_is_kept() {
    // I4: player 0 changes bit 0 but has not flushed when player 1's change of bit 1 of
    // the same byte arrives; player 0's change must still reach everybody.
    let mut sim = Sim::new(&regions(&[1]), 2);
    sim.write(1, 0, 0, 0x02, 0x02);
    sim.flush(1);
    sim.server_reads(1);
    sim.write(0, 0, 0, 0x01, 0x01);
    sim.deliver(0);
    assert_eq!(sim.players[0].replica.ram()[0], vec![0x03]);
    let mut rng = Rng::new(2);
    sim.quiesce(&mut rng);
    sim.assert_converged("i4");
    assert_eq!(sim.server.state()[0], vec![0x03]);
}

#[test]
fn the_later_sequenced_value_wins_everywhere() {
    // Diffs against a common base cannot disagree on one bit, but a player flipping a bit
    // twice can: player 0 clears then sets bit 0 again while player 1 clears it. The
    // server takes 0's two batches first, so player 1's clear is last and wins on every
    // player, including player 0 whose own last write lost.
    let mut sim = Sim::new(&regions(&[1]), 2);
    sim.write(0, 0, 0, 0x01, 0x01);
    sim.flush(0);
    sim.server_reads(0);
    sim.deliver(0);
    sim.deliver(1);
    sim.write(0, 0, 0, 0x00, 0x01);
    sim.flush(0);
    sim.write(0, 0, 0, 0x01, 0x01);
    sim.flush(0);
    sim.write(1, 0, 0, 0x00, 0x01);
    sim.flush(1);
    sim.server_reads(0);
    sim.server_reads(0);
    sim.server_reads(1);
    let mut rng = Rng::new(3);
    sim.quiesce(&mut rng);
    sim.assert_converged("last writer wins");
    assert_eq!(sim.server.state()[0], vec![0x00]);
}

#[test]
fn an_unflushed_change_survives_a_remote_write_of_the_same_bit() {
    // Player 2 sets bit 0; player 0 sees it and clears the bit again, but has not flushed
    // when player 1 (who had not seen player 2's change yet) sets the bit too. Player 0's
    // clear was made later than anything it has seen, so it stays in its RAM and is sent
    // at the next flush, where it is sequenced last and wins everywhere (I4).
    let mut sim = Sim::new(&regions(&[1]), 3);
    sim.write(2, 0, 0, 0x01, 0x01);
    sim.flush(2);
    sim.server_reads(2);
    sim.deliver(0);
    sim.write(0, 0, 0, 0x00, 0x01);
    sim.write(1, 0, 0, 0x01, 0x01);
    sim.flush(1);
    sim.server_reads(1);
    sim.deliver(0);
    assert_eq!(
        sim.players[0].replica.ram()[0],
        vec![0x00],
        "local clear kept"
    );
    let mut rng = Rng::new(4);
    sim.quiesce(&mut rng);
    sim.assert_converged("unflushed");
    assert_eq!(sim.server.state()[0], vec![0x00]);
}

/// A byte region (2 bytes), coins (4 BCD digits, low byte first) and arrows (one
/// binary byte of at most `arrows_max`).
fn with_counters(arrows_max: u32) -> Vec<RegionInfo> {
    let coins = Counter::full(Encoding::Bcd, 2);
    let arrows = Counter {
        max: arrows_max,
        ..Counter::full(Encoding::Binary, 1)
    };
    let mut r = regions(&[2]);
    r.push(RegionInfo {
        kind: RegionKind::Counter(coins),
        ..RegionInfo::bytes(0xd000, 0xd001, "coins")
    });
    r.push(RegionInfo {
        kind: RegionKind::Counter(arrows),
        ..RegionInfo::bytes(0xd002, 0xd002, "arrows")
    });
    r
}

/// A game in progress with `coins` and `arrows` (and the byte region zero).
fn server_with(regions: &[RegionInfo], coins: u32, arrows: u32) -> GameState {
    let mut bytes = vec![0, 0];
    bytes.extend(regions[1].counter().unwrap().encode(coins, 2));
    bytes.push(arrows as u8);
    GameState::restore(regions, 0, &bytes).unwrap()
}

fn coins(sim: &Sim) -> u32 {
    sim.server
        .counter(1)
        .unwrap()
        .decode(&sim.server.state()[1])
}

#[test]
fn counter_amounts_from_many_players_are_counted_exactly_once() {
    // Coins: pickups and spends far from the bounds, so the total must be the start
    // plus every amount any game added. Arrows: at most 20, so the bounds cut amounts
    // off often and the order matters: the total must be what the server's order
    // gives. Players drop their connection at random (the server gets part of what was
    // on its way) and come back with their session; bytes change meanwhile too.
    let regions = with_counters(20);
    let (mut reconnects, mut clamped_runs, mut ops_total) = (0u64, 0u64, 0usize);
    for seed in 1..=2000u64 {
        let mut rng = Rng::new(seed);
        let n = 2 + rng.below(3);
        let mut sim = Sim::with_server(server_with(&regions, 5000, 10), &regions, n);
        let steps = 20 + rng.below(300);
        for _ in 0..steps {
            let p = rng.below(n);
            match rng.below(15) {
                0 | 1 => {
                    let (offset, value) = (rng.below(2), rng.byte());
                    sim.write(p, 0, offset, value, random_mask(&mut rng));
                }
                2..=4 => {
                    // Mostly single pickups, as a game collecting coins.
                    let amount = match rng.below(4) {
                        0 => -(1 + rng.below(5) as i64),
                        1 => 1 + rng.below(9) as i64,
                        _ => 1,
                    };
                    sim.add(p, 1, amount);
                }
                5 => {
                    let amount = rng.below(7) as i64 - 3;
                    sim.add(p, 2, amount);
                }
                6 => sim.flush(p),
                7 => sim.flush_only(p),
                8 => sim.send(p),
                9 | 10 => sim.server_reads(p),
                11 | 12 => sim.deliver(p),
                13 => {
                    if rng.below(3) == 0 {
                        sim.disconnect(p, &mut rng);
                    }
                }
                _ => {
                    if sim.players[p].replica.is_offline() {
                        reconnects += 1;
                    }
                    sim.reconnect(p);
                }
            }
        }
        sim.quiesce(&mut rng);
        let context = format!("seed {seed}");
        sim.assert_converged(&context);
        sim.assert_counted(1, 5000, &context);
        sim.assert_counted(2, 10, &context);
        let added = |r: usize| sim.players.iter().map(|p| p.added[r]).sum::<i64>();
        assert_eq!(
            i64::from(coins(&sim)),
            5000 + added(1),
            "{context}: every coin exactly once"
        );
        let arrows = sim
            .server
            .counter(2)
            .unwrap()
            .decode(&sim.server.state()[2]);
        if i64::from(arrows) != 10 + added(2) {
            clamped_runs += 1;
        }
        ops_total += sim.log.len();
    }
    eprintln!(
        "{reconnects} reconnects, {clamped_runs} runs where the bounds cut, \
         {ops_total} counter operations"
    );
    // The runs must have exercised reconnects and the bounds, not just local adds.
    assert!(reconnects > 1000, "{reconnects} reconnects");
    assert!(
        clamped_runs > 100,
        "{clamped_runs} runs where the bounds cut"
    );
    assert!(ops_total > 20_000, "{ops_total} counter operations");
}

#[test]
fn two_players_picking_up_a_coin_at_once_both_count() {
    // The case bit merging gets wrong: both games write 5001 over 5000.
    for first in 0..2 {
        let regions = with_counters(20);
        let mut sim = Sim::with_server(server_with(&regions, 5000, 10), &regions, 3);
        sim.add(0, 1, 1);
        sim.add(1, 1, 1);
        sim.both_at_once(first);
        assert_eq!(coins(&sim), 5002);
        sim.settles_without_more_traffic("two pickups");
    }
}

#[test]
fn spending_below_the_minimum_stops_at_it_in_server_order() {
    // Two players spend 8 of the 10 arrows each at once: the first the server reads
    // leaves 2, the second would go below 0 and leaves 0. A pickup of 10 read after
    // them gives 10; read before them, it would have given 10 + 10 - 16 = 4: the
    // server's order decides, and every player ends with its result.
    let regions = with_counters(20);
    let mut sim = Sim::with_server(server_with(&regions, 0, 10), &regions, 3);
    sim.add(0, 2, -8);
    sim.add(1, 2, -8);
    sim.add(2, 2, 10);
    sim.flush(0);
    sim.flush(1);
    sim.flush(2);
    sim.server_reads(0);
    sim.server_reads(1);
    assert_eq!(sim.server.state()[2], vec![0]);
    sim.server_reads(2);
    let mut rng = Rng::new(6);
    sim.quiesce(&mut rng);
    sim.assert_converged("spend below zero");
    assert_eq!(sim.server.state()[2], vec![10]);
    sim.assert_counted(2, 10, "spend below zero");
}

#[test]
fn a_pickup_made_while_the_others_total_arrives_is_kept() {
    // Player 0 picks up a coin and has not flushed when player 1's coin arrives: the
    // group's value is written, and the unflushed coin stays on top of it.
    let regions = with_counters(20);
    let mut sim = Sim::with_server(server_with(&regions, 5000, 10), &regions, 2);
    sim.add(1, 1, 1);
    sim.flush(1);
    sim.server_reads(1);
    sim.add(0, 1, 1);
    sim.deliver(0);
    let c = sim.server.counter(1).unwrap();
    assert_eq!(c.decode(&sim.players[0].replica.ram()[1]), 5002);
    assert_eq!(c.decode(&sim.players[0].replica.shadow()[1]), 5001);
    let mut rng = Rng::new(7);
    sim.quiesce(&mut rng);
    sim.assert_converged("unflushed pickup");
    assert_eq!(coins(&sim), 5002);
}

#[test]
fn a_reconnect_sends_offline_pickups_once_and_not_what_the_server_had() {
    let regions = with_counters(20);
    let mut sim = Sim::with_server(server_with(&regions, 5000, 10), &regions, 2);
    // Two batches on their way; the server gets the first, the connection breaks.
    sim.add(0, 1, 3);
    sim.flush(0);
    sim.add(0, 1, 4);
    sim.flush(0);
    sim.server_reads(0);
    let p = &mut sim.players[0];
    p.uplink.pop_back();
    p.inbox.clear();
    p.replica.disconnect();
    let id = p.replica.player();
    sim.server.remove_player(id);
    // Offline: two pickups and a spend, flushed separately, and a coin from player 1.
    for amount in [2, 5, -1] {
        sim.add(0, 1, amount);
        sim.flush(0);
    }
    sim.add(1, 1, 1);
    sim.flush(1);
    sim.server_reads(1);
    assert_eq!(coins(&sim), 5004);
    sim.reconnect(0);
    // The lost batch of 4 and one net batch of the offline 6, in one message.
    let again: Vec<Payload> = sim.players[0]
        .uplink
        .iter()
        .map(|b| b.payload.clone())
        .collect();
    assert_eq!(
        again,
        vec![Payload::Counts(vec![
            CounterOp::Add {
                region: 1,
                amount: 4
            },
            CounterOp::Add {
                region: 1,
                amount: 6
            }
        ])]
    );
    let mut rng = Rng::new(8);
    sim.quiesce(&mut rng);
    sim.assert_converged("reconnect");
    assert_eq!(coins(&sim), 5000 + 3 + 4 + 6 + 1);
}
