//! When a room writes its players' sockets (pure).
//!
//! A busy room gets an update every fraction of a millisecond (64 players at 60 changes
//! a second: one every 0.26 ms). Writing each one to every player would cost a system
//! call per update per player, and most of the server's time is system calls and the
//! wake-ups they cause (docs/benchmarks.md, "Server fan-out"). So a room gathers its
//! updates and writes them to all its players together, at most once per interval,
//! packed into one message encoded once: a write per player per interval, one timer
//! per room instead of one per player. The first update after a quiet interval goes out
//! at once: a quiet game never waits, and a busy one waits at most the interval.

use std::time::{Duration, Instant};

/// Shortest time between two writes of a room's updates: at most this much latency,
/// in exchange for one write per player per interval instead of one per update.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(3);

/// What a room does with an update it has just queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Write what is queued now.
    Now,
    /// Ask for a write at this time (nobody has been asked yet).
    At(Instant),
    /// A write is already asked for: it takes this update along.
    Later,
}

/// One room's write timing.
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the room last wrote its queued updates.
    last: Option<Instant>,
    /// Whether a write was asked for and has not happened yet.
    asked: bool,
}

impl Pacer {
    /// An update was queued at `now`: when to write it.
    pub fn queued(&mut self, now: Instant) -> Write {
        if self.asked {
            return Write::Later;
        }
        match self.last {
            Some(last) if now < last + WRITE_INTERVAL => {
                self.asked = true;
                Write::At(last + WRITE_INTERVAL)
            }
            _ => Write::Now,
        }
    }

    /// The queued updates were written at `now` (whether asked for, or early because
    /// something else had to go out after them).
    pub fn wrote(&mut self, now: Instant) {
        self.last = Some(now);
        self.asked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_room_writes_at_once() {
        let t = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.queued(t), Write::Now);
        p.wrote(t);
        // Long after the last write: at once again.
        assert_eq!(p.queued(t + ms(10)), Write::Now);
    }

    #[test]
    fn a_busy_room_writes_once_per_interval() {
        let t = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.queued(t), Write::Now);
        p.wrote(t);
        // Within the interval: one write asked for, at its end; the next updates ride
        // along with it.
        assert_eq!(p.queued(t + ms(1)), Write::At(t + WRITE_INTERVAL));
        assert_eq!(p.queued(t + ms(2)), Write::Later);
        assert_eq!(p.queued(t + ms(4)), Write::Later);
        p.wrote(t + ms(4));
        assert_eq!(p.queued(t + ms(5)), Write::At(t + ms(4) + WRITE_INTERVAL));
    }

    #[test]
    fn an_early_write_cancels_the_wait_and_restarts_the_interval() {
        let t = Instant::now();
        let mut p = Pacer::default();
        p.wrote(t);
        assert_eq!(p.queued(t + ms(1)), Write::At(t + WRITE_INTERVAL));
        // Someone joined: the queue went out early, so the next update waits a whole
        // interval from then, and asks anew.
        p.wrote(t + ms(2));
        assert_eq!(p.queued(t + ms(3)), Write::At(t + ms(2) + WRITE_INTERVAL));
    }
}
