//! Property test of the sync rules: simulated players (`replica::Replica`) around one
//! server game state (`server::game::GameState`), with random masked writes, flushes and
//! message delays. Whatever the interleaving, once everybody stops writing, flushes and
//! receives everything, every player's RAM equals the server's state (I2), and nobody
//! ever sends a change it did not make (I1).

mod common;

use common::rng::Rng;
use msxsync::protocol::{PlayerId, RegionInfo, ServerMsg};
use msxsync::replica::{Batch, Replica};
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
}

struct Sim {
    server: GameState,
    players: Vec<Player>,
}

impl Sim {
    fn new(regions: &[RegionInfo], n: usize) -> Sim {
        let server = GameState::new(regions);
        let players = (0..n)
            .map(|i| Player {
                replica: Replica::new(i as PlayerId + 1, server.state().to_vec()),
                uplink: VecDeque::new(),
                inbox: VecDeque::new(),
                wrote: false,
                last_seq: 0,
            })
            .collect();
        Sim { server, players }
    }

    fn write(&mut self, p: usize, region: usize, offset: usize, value: u8, mask: u8) {
        self.players[p].replica.write(region, offset, value, mask);
        self.players[p].wrote = true;
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
                out.is_none(),
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
        let Some(Batch { number, changes }) = self.players[p].uplink.pop_front() else {
            return;
        };
        let id = self.players[p].replica.player();
        let update = self
            .server
            .accept(id, number, changes)
            .expect("a replica's changes are valid");
        for q in &mut self.players {
            q.inbox.push_back(update.clone());
        }
    }

    /// Player `p` reads its oldest update.
    fn deliver(&mut self, p: usize) {
        let player = &mut self.players[p];
        let Some(ServerMsg::Update {
            seq,
            player: from,
            batch,
            changes,
        }) = player.inbox.pop_front()
        else {
            return;
        };
        assert_eq!(seq, player.last_seq + 1, "updates arrive in seq order");
        player.last_seq = seq;
        player.replica.receive(from, batch, &changes);
    }

    fn busy(&self) -> bool {
        self.players
            .iter()
            .any(|p| !p.uplink.is_empty() || !p.inbox.is_empty() || p.replica.has_unsent())
    }

    /// Everybody stops writing: flush, deliver everything, until nothing moves.
    fn quiesce(&mut self, rng: &mut Rng) {
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
}

fn regions(sizes: &[usize]) -> Vec<RegionInfo> {
    let mut start = 0xc000u16;
    sizes
        .iter()
        .map(|&n| {
            let r = RegionInfo {
                start,
                end: start + n as u16 - 1,
                description: String::new(),
            };
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
        sim.flush(0);
        sim.flush(1);
        sim.server_reads(first);
        sim.server_reads(1 - first);
        for p in 0..3 {
            sim.deliver(p);
            sim.deliver(p);
        }
        assert_eq!(sim.server.state()[0], vec![0x81]);
        for p in &sim.players {
            assert_eq!(p.replica.ram()[0], vec![0x81]);
        }
        let mut rng = Rng::new(1);
        sim.quiesce(&mut rng);
        sim.assert_converged("i5");
        assert_eq!(sim.server.seq(), 2, "no extra traffic");
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
