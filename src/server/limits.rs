//! Who may connect, how long an address that gave wrong passwords waits, and how many
//! rooms players may make. Pure: the caller passes the clock and holds the lock.
//!
//! - [`Registry`]: open connections in total and per [`Source`]. When the server is
//!   full, the oldest connection that has not joined a game is closed to make room
//!   (idle connections cannot lock out `msxsync list` or a new player); players in a
//!   game are never closed for a newcomer.
//! - [`Failures`]: after a wrong password, an address waits 4 s, then 8, 16, ... up to
//!   a minute before its next password is even checked.
//! - [`Rooms`]: rooms besides the games' default rooms, capped per game, in total and
//!   in bytes (each room holds its game's shared state in memory, and on disk a state
//!   file and up to 74 backups of it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The address limits count by: an IPv4 address, or the /64 network of an IPv6 address
/// (a home or an office gets a whole /64, so one IPv6 attacker has more addresses than
/// the server has memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 addresses count as the IPv4 address).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Source {
    /// The source a connection from `ip` counts against.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Net((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6Net(n) => {
                let ip = std::net::Ipv6Addr::from(u128::from(*n) << 64);
                write!(f, "{ip}/64")
            }
        }
    }
}

/// Connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in total.
    pub total: usize,
    /// Open connections from one [`Source`].
    pub per_source: usize,
    /// Connections closed to make room may still hold their socket for a moment (the
    /// closing message gets up to `CLOSE_TIMEOUT`); this many more may be open in all.
    pub closing_slack: usize,
}

/// What [`Registry::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// Let in as connection `id`. `evicted` is the oldest connection that had not joined
    /// a game, which the caller must now close to make room.
    Admitted {
        /// The connection's number, for [`Registry::joined`] and [`Registry::release`].
        id: u64,
        /// The handle of a connection to close, if one had to make room.
        evicted: Option<K>,
    },
    /// Not let in, and why (lowercase, for the log).
    Refused(String),
}

/// The open connections; `K` is whatever the caller needs to close one.
#[derive(Debug)]
pub struct Registry<K> {
    limits: Limits,
    /// Open sockets, closing ones included.
    open: usize,
    per_source: HashMap<Source, usize>,
    /// Connections that have not joined a game, oldest first.
    pending: BTreeMap<u64, K>,
    /// Connections closed to make room whose socket is not released yet.
    evicted: HashSet<u64>,
    next: u64,
}

impl<K> Registry<K> {
    /// An empty registry.
    pub fn new(limits: Limits) -> Registry<K> {
        Registry {
            limits,
            open: 0,
            per_source: HashMap::new(),
            pending: BTreeMap::new(),
            evicted: HashSet::new(),
            next: 1,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Open connections (closing ones included).
    pub fn open(&self) -> usize {
        self.open
    }

    /// A new connection from `source`, closable through `handle` until it joins a game.
    pub fn admit(&mut self, source: Source, handle: K) -> Admission<K> {
        let mine = self.per_source.get(&source).copied().unwrap_or(0);
        if mine >= self.limits.per_source {
            return Admission::Refused(format!(
                "too many connections from {source} ({mine}, the limit is {})",
                self.limits.per_source
            ));
        }
        if self.open >= self.limits.total + self.limits.closing_slack {
            return Admission::Refused(format!(
                "the server is full ({} connections, some still closing)",
                self.open
            ));
        }
        let mut evicted = None;
        if self.open - self.evicted.len() >= self.limits.total {
            let Some((old, k)) = self.pending.pop_first() else {
                return Admission::Refused(format!(
                    "the server is full ({} connections, all of them players in a game)",
                    self.limits.total
                ));
            };
            self.evicted.insert(old);
            evicted = Some(k);
        }
        let id = self.next;
        self.next += 1;
        self.open += 1;
        *self.per_source.entry(source).or_insert(0) += 1;
        self.pending.insert(id, handle);
        Admission::Admitted { id, evicted }
    }

    /// Connection `id` joined a game: it is no longer closed to make room.
    pub fn joined(&mut self, id: u64) {
        self.pending.remove(&id);
    }

    /// Connection `id` from `source` closed its socket.
    pub fn release(&mut self, id: u64, source: Source) {
        self.pending.remove(&id);
        self.evicted.remove(&id);
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// Wrong passwords remembered per source, and how long each must wait.
#[derive(Debug, Default)]
pub struct Failures {
    entries: HashMap<Source, Strikes>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    locked_until: Instant,
    last: Instant,
}

/// A source with no wrong password for this long starts again from a clean slate.
pub const FORGET_FAILURES_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest wait after a wrong password.
pub const MAX_LOCK: Duration = Duration::from_secs(60);
/// At most this many sources are remembered (about 50 bytes each); beyond it the one
/// heard of longest ago is forgotten.
pub const MAX_TRACKED_SOURCES: usize = 4096;

impl Failures {
    /// How long `source` must still wait before its next password is checked, if at all.
    pub fn locked(&mut self, source: Source, now: Instant) -> Option<Duration> {
        let s = self.entries.get(&source)?;
        if now.saturating_duration_since(s.last) >= FORGET_FAILURES_AFTER {
            self.entries.remove(&source);
            return None;
        }
        let left = s.locked_until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// A wrong password from `source` at `now`; returns how long it must now wait:
    /// 4 s after the first (3 s after the refusal, which comes after a second), doubling
    /// with each one up to [`MAX_LOCK`].
    pub fn failed(&mut self, source: Source, now: Instant) -> Duration {
        if self.locked(source, now).is_none() && !self.entries.contains_key(&source) {
            self.make_room(now);
        }
        let s = self.entries.entry(source).or_insert(Strikes {
            count: 0,
            locked_until: now,
            last: now,
        });
        s.count = s.count.saturating_add(1);
        let lock = Duration::from_secs(1u64 << (s.count + 1).min(6)).min(MAX_LOCK);
        s.locked_until = now + lock;
        s.last = now;
        lock
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < MAX_TRACKED_SOURCES {
            return;
        }
        self.entries
            .retain(|_, s| now.saturating_duration_since(s.last) < FORGET_FAILURES_AFTER);
        while self.entries.len() >= MAX_TRACKED_SOURCES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }
}

/// Default cap on the rooms of one game besides its default room.
pub const MAX_ROOMS_PER_GAME: usize = 32;
/// Default cap on the rooms besides the default rooms, over all games.
pub const MAX_ROOMS: usize = 256;
/// Default cap on what the rooms besides the default rooms cost together, in bytes
/// ([`Rooms::cost`]): 2 MiB, 120 rooms of the largest game there can be (16 KiB
/// shared). In memory that is their state; on disk each room also keeps up to 74
/// backups, so at most about 150 MB.
pub const MAX_ROOM_BYTES: usize = 2 * 1024 * 1024;
/// What a room costs besides its shared bytes: its name, tables, the state file's
/// header. A game with few shared bytes is capped by the counts.
pub const ROOM_OVERHEAD_BYTES: usize = 1024;
const _: () = assert!(MAX_ROOMS_PER_GAME < crate::protocol::MAX_ROOMS);

/// Caps on rooms besides the default rooms (those exist for every game served, and
/// their number is the host's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms of one game.
    pub per_game: usize,
    /// Rooms over all games.
    pub total: usize,
    /// Bytes over all rooms ([`Rooms::cost`] each).
    pub bytes: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            per_game: MAX_ROOMS_PER_GAME,
            total: MAX_ROOMS,
            bytes: MAX_ROOM_BYTES,
        }
    }
}

/// The rooms besides the default rooms that exist now, over all games, and what they
/// cost.
#[derive(Debug)]
pub struct Rooms {
    limits: RoomLimits,
    count: usize,
    bytes: usize,
}

impl Rooms {
    /// No rooms yet. A game never gets more rooms than a games list can carry
    /// (`protocol::MAX_ROOMS`, its own included), whatever `limits` says.
    pub fn new(limits: RoomLimits) -> Rooms {
        Rooms {
            limits: RoomLimits {
                per_game: limits.per_game.min(crate::protocol::MAX_ROOMS - 1),
                ..limits
            },
            count: 0,
            bytes: 0,
        }
    }

    /// What a room of a game with `shared_bytes` shared bytes costs.
    pub fn cost(shared_bytes: usize) -> usize {
        shared_bytes + ROOM_OVERHEAD_BYTES
    }

    /// Counts one more room of `game`, which has `in_game` rooms besides its default
    /// room now, costing `cost`; or says (lowercase, for the player) why it cannot be.
    pub fn take(&mut self, game: &str, in_game: usize, cost: usize) -> Result<(), String> {
        let l = self.limits;
        if l.per_game == 0 {
            return Err(format!(
                "this server has no rooms besides the games' own; join game {game} \
                 without --room"
            ));
        }
        if in_game >= l.per_game {
            return Err(format!(
                "game {game} has {in_game} rooms besides its own, the most this server \
                 allows; join one of them (msxsync list shows them)"
            ));
        }
        if self.count >= l.total {
            return Err(format!(
                "this server has {} rooms besides the games' own, the most it allows; join \
                 one of them (msxsync list shows them)",
                self.count
            ));
        }
        if self.bytes + cost > l.bytes {
            return Err(format!(
                "the rooms of this server hold {} bytes and another room of game {game} \
                 ({cost} bytes) would pass the limit of {}; join an existing room \
                 (msxsync list shows them)",
                self.bytes, l.bytes
            ));
        }
        self.count += 1;
        self.bytes += cost;
        Ok(())
    }

    /// A room costing `cost` is gone.
    pub fn give(&mut self, cost: usize) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn sources_count_ipv4_addresses_and_ipv6_networks() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        assert_eq!(Source::of(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Source::of(mapped), v4(1));
        assert_eq!(v4(1).to_string(), "10.0.0.1");
    }

    #[test]
    fn a_full_server_closes_the_oldest_connection_that_has_not_joined() {
        let mut r = Registry::new(Limits {
            total: 3,
            per_source: 2,
            closing_slack: 1,
        });
        fn id(a: Admission<&'static str>) -> (u64, Option<&'static str>) {
            match a {
                Admission::Admitted { id, evicted } => (id, evicted),
                Admission::Refused(why) => panic!("refused: {why}"),
            }
        }
        let (p1, _) = id(r.admit(v4(1), "p1"));
        let (i1, _) = id(r.admit(v4(1), "i1"));
        match r.admit(v4(1), "x") {
            Admission::Refused(why) => {
                assert_eq!(
                    why,
                    "too many connections from 10.0.0.1 (2, the limit is 2)"
                )
            }
            other => panic!("{other:?}"),
        }
        r.joined(p1);
        let (i2, none) = id(r.admit(v4(2), "i2"));
        assert_eq!(none, None);
        // Full: the oldest connection that has not joined makes room, never the player.
        let (i3, evicted) = id(r.admit(v4(3), "i3"));
        assert_eq!(evicted, Some("i1"));
        assert_eq!(r.open(), 4, "the evicted socket is still open");
        // Full again, and the one slot for closing sockets is taken: refused.
        assert!(matches!(r.admit(v4(4), "i4"), Admission::Refused(_)));
        r.release(i1, v4(1));
        let (i4, evicted) = id(r.admit(v4(4), "i4"));
        assert_eq!(evicted, Some("i2"));
        r.release(i2, v4(2));
        r.joined(i3);
        r.joined(i4);
        // Everyone left is a player: a newcomer is refused instead.
        match r.admit(v4(5), "i5") {
            Admission::Refused(why) => assert!(why.contains("all of them players"), "{why}"),
            other => panic!("{other:?}"),
        }
        r.release(p1, v4(1));
        assert!(matches!(
            r.admit(v4(1), "again"),
            Admission::Admitted { evicted: None, .. }
        ));
    }

    #[test]
    fn wrong_passwords_cost_an_address_more_and_more_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = Failures::default();
        assert_eq!(f.locked(v4(1), t0), None);
        assert_eq!(f.failed(v4(1), t0), s(4));
        assert_eq!(f.locked(v4(1), t0 + s(1)), Some(s(3)));
        assert_eq!(
            f.locked(v4(2), t0),
            None,
            "other addresses are not affected"
        );
        assert_eq!(f.locked(v4(1), t0 + s(4)), None);
        assert_eq!(f.failed(v4(1), t0 + s(4)), s(8));
        let mut t = t0 + s(12);
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = f.failed(v4(1), t);
            waits.push(w.as_secs());
            t += w;
        }
        assert_eq!(waits, [16, 32, 60, 60, 60, 60, 60, 60]);
        // Quiet for long enough: forgotten.
        assert_eq!(f.locked(v4(1), t + FORGET_FAILURES_AFTER), None);
        assert_eq!(f.failed(v4(1), t + FORGET_FAILURES_AFTER), s(4));
        // Memory stays bounded whatever the number of addresses.
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 10) {
            f.failed(Source::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(f.entries.len() <= MAX_TRACKED_SOURCES);
    }

    #[test]
    fn rooms_are_capped_per_game_in_total_and_in_bytes() {
        let mut r = Rooms::new(RoomLimits {
            per_game: 2,
            total: 3,
            bytes: 10_000,
        });
        let cost = Rooms::cost(2000);
        assert_eq!(cost, 3024);
        r.take("a", 0, cost).unwrap();
        r.take("a", 1, cost).unwrap();
        let e = r.take("a", 2, cost).unwrap_err();
        assert_eq!(
            e,
            "game a has 2 rooms besides its own, the most this server allows; join one \
             of them (msxsync list shows them)"
        );
        // 6048 bytes taken: a third room of 3024 fits, a fourth would pass.
        let e = r.take("b", 0, 4000).unwrap_err();
        assert!(e.contains("hold 6048 bytes and another room of game b (4000 bytes) would pass the limit of 10000"), "{e}");
        r.take("b", 0, cost).unwrap();
        let e = r.take("c", 0, 1).unwrap_err();
        assert!(e.starts_with("this server has 3 rooms besides"), "{e}");
        // A room that goes makes room.
        r.give(cost);
        r.take("c", 0, cost).unwrap();
        // A server without rooms says so; no game gets more than a list can carry.
        let e = Rooms::new(RoomLimits {
            per_game: 0,
            ..RoomLimits::default()
        })
        .take("a", 0, 1)
        .unwrap_err();
        assert_eq!(
            e,
            "this server has no rooms besides the games' own; join game a without --room"
        );
        let huge = Rooms::new(RoomLimits {
            per_game: usize::MAX,
            ..RoomLimits::default()
        });
        assert_eq!(huge.limits.per_game, crate::protocol::MAX_ROOMS - 1);
    }
}
