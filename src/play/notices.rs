//! What a player is told on the emulator screen: other players coming and going, the
//! connection dropping and coming back, and the changes other players made, in words
//! ("alice got the boots and the lamp, coins +3"). Pure: it takes events with the time
//! they happened and gives the lines to show now; the session shows them.
//!
//! A player looks at openMSX, not at a terminal, so the lines must be few and short:
//! - a player's changes gather until that player has been still for [`GATHER`] (at
//!   most [`MAX_GATHER`]) and then read as one line, worded by [`labels`];
//! - at most [`LINES_PER_WINDOW`] lines are shown per [`WINDOW`]; while lines wait,
//!   a waiting player's further changes join that player's line;
//! - the player's own changes are never announced (they are still followed, so that
//!   the next change of another player is worded against the right bytes).

use crate::counter::{Count, Counter};
use crate::delta::{apply, Change};
use crate::labels::{self, Event, Names};
use crate::protocol::{Joined, PlayerId};
use crate::text::printable;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A player's changes read as one line once the player made none for this long.
pub const GATHER: Duration = Duration::from_millis(600);
/// ... or at the latest this long after the first of them, for a player who keeps
/// changing things.
pub const MAX_GATHER: Duration = Duration::from_secs(2);
/// At most [`LINES_PER_WINDOW`] lines are shown in any window of this length.
pub const WINDOW: Duration = Duration::from_secs(3);
/// See [`WINDOW`]: openMSX stacks its messages and each stays a few seconds, so more
/// would push the first off before anyone reads it.
pub const LINES_PER_WINDOW: usize = 3;
/// Most lines about players and the connection that wait; the oldest give way.
const MAX_WAITING_LINES: usize = 8;
/// Most events one player's line gathers, so memory stays bounded whatever the games
/// do: a full line is shown at the next free slot, and what that player does until
/// then is left out of it (by then the line says "N bytes changed" anyway).
const MAX_BURST_EVENTS: usize = 4096;
/// Longest game title in "bob joined TITLE", in characters.
const MAX_TITLE_CHARS: usize = 40;

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author<'a> {
    /// This player: never announced.
    Me,
    /// Another player, by name.
    Player(&'a str),
    /// Another player whose name this player was not told: "player N".
    Unknown(PlayerId),
    /// The server itself: the host put back a saved state (`msxsync restore`).
    Server,
}

impl Author<'_> {
    /// The name a change by this author is announced with; `None` for changes not
    /// worded as a player's.
    fn name(&self) -> Option<String> {
        match *self {
            Author::Player(name) => Some(name.to_string()),
            Author::Unknown(id) => Some(format!("player {id}")),
            Author::Me | Author::Server => None,
        }
    }
}

/// What a change by [`Author::Server`] reads as.
const RESTORED: &str = "the host put back a saved state";

/// The notices of one player.
#[derive(Debug)]
pub struct Notices {
    names: Names,
    /// Per region, its counter and width (counters change by totals, not changes).
    counters: Vec<Option<(Counter, usize)>>,
    /// The group's shared state as the updates so far made it: what the next change
    /// is worded against.
    state: Vec<Vec<u8>>,
    /// The game's title, printable and cut.
    title: String,
    /// What waits to be shown, oldest first.
    waiting: VecDeque<Waiting>,
    /// When the lines of the last [`WINDOW`] were shown.
    shown: VecDeque<Instant>,
}

#[derive(Debug)]
enum Waiting {
    /// A line about a player or the connection.
    Line(String),
    /// One player's changes, to be read as one line.
    Burst(Burst),
}

#[derive(Debug)]
struct Burst {
    /// The player's name, as given (made printable when worded).
    player: String,
    events: Vec<Event>,
    first: Instant,
    last: Instant,
}

impl Burst {
    fn full(&self) -> bool {
        self.events.len() >= MAX_BURST_EVENTS
    }

    fn ready(&self, now: Instant) -> bool {
        self.full()
            || now.saturating_duration_since(self.last) >= GATHER
            || now.saturating_duration_since(self.first) >= MAX_GATHER
    }
}

impl Notices {
    /// The notices of a player who joined with `joined`.
    pub fn new(joined: &Joined) -> Notices {
        let title = printable(&joined.game.title);
        let title = if title.chars().count() > MAX_TITLE_CHARS {
            let kept: String = title.chars().take(MAX_TITLE_CHARS - 1).collect();
            format!("{}…", kept.trim_end())
        } else {
            title
        };
        Notices {
            names: Names::new(&joined.regions, &joined.labels),
            counters: joined
                .regions
                .iter()
                .map(|r| r.counter().map(|c| (c, r.len())))
                .collect(),
            state: joined.state.clone(),
            title,
            waiting: VecDeque::new(),
            shown: VecDeque::new(),
        }
    }

    /// Joined again after an outage: the group's state is the server's now. What
    /// changed meanwhile is not announced (nobody can say who did it).
    pub fn rejoined(&mut self, joined: &Joined) {
        self.state = joined.state.clone();
    }

    /// An update of bit changes, already accepted by the server, made by `by` at `now`.
    pub fn changes(&mut self, now: Instant, by: Author<'_>, changes: &[Change]) {
        match by.name() {
            Some(name) => {
                let events = self.names.changes(&mut self.state, changes);
                self.gather(now, &name, events);
            }
            None => {
                for c in changes {
                    if let Some(bytes) = self.state.get_mut(usize::from(c.region)) {
                        apply(bytes, c);
                    }
                }
                if by == Author::Server {
                    self.say(RESTORED.to_string());
                }
            }
        }
    }

    /// An update of counter operations, already accepted by the server, made by `by`
    /// at `now`.
    pub fn counts(&mut self, now: Instant, by: Author<'_>, counts: &[Count]) {
        for c in counts {
            let region = usize::from(c.region);
            if let (Some(Some((counter, width))), Some(bytes)) =
                (self.counters.get(region), self.state.get_mut(region))
            {
                *bytes = counter.encode(c.total, *width);
            }
        }
        match by.name() {
            Some(name) => {
                let events = counts.iter().filter_map(|c| self.names.count(c)).collect();
                self.gather(now, &name, events);
            }
            None if by == Author::Server => self.say(RESTORED.to_string()),
            None => {}
        }
    }

    /// Another player joined the game.
    pub fn player_joined(&mut self, name: &str) {
        let line = format!("{} joined {}", printable(name), self.title);
        self.say(line);
    }

    /// Another player left the game.
    pub fn player_left(&mut self, name: &str) {
        self.say(format!("{} left", printable(name)));
    }

    /// The connection to the server broke; msxsync reconnects.
    pub fn connection_lost(&mut self) {
        self.say("connection lost, retrying…".to_string());
    }

    /// Connected again after [`Notices::connection_lost`].
    pub fn back_online(&mut self) {
        self.say("back online".to_string());
    }

    /// The lines to show at `now`, oldest first; what must wait (a player still
    /// changing things, or too many lines shown lately) stays for a later call.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        while let Some(&t) = self.shown.front() {
            if now.saturating_duration_since(t) < WINDOW {
                break;
            }
            self.shown.pop_front();
        }
        let mut lines = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() && self.shown.len() < LINES_PER_WINDOW {
            let ready = match &self.waiting[i] {
                Waiting::Line(_) => true,
                Waiting::Burst(b) => b.ready(now),
            };
            if !ready {
                i += 1;
                continue;
            }
            let text = match self.waiting.remove(i) {
                Some(Waiting::Line(text)) => Some(text),
                Some(Waiting::Burst(b)) => labels::line(&b.player, &b.events),
                None => None,
            };
            // A burst whose amounts cancelled out says nothing and takes no slot.
            if let Some(text) = text {
                self.shown.push_back(now);
                lines.push(text);
            }
        }
        lines
    }

    /// Whether nothing waits to be shown.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Adds a line about a player or the connection (the same line already waiting is
    /// not added again).
    fn say(&mut self, line: String) {
        let waits = self
            .waiting
            .iter()
            .any(|w| matches!(w, Waiting::Line(l) if *l == line));
        if waits {
            return;
        }
        let lines = self
            .waiting
            .iter()
            .filter(|w| matches!(w, Waiting::Line(_)))
            .count();
        if lines >= MAX_WAITING_LINES {
            if let Some(oldest) = self
                .waiting
                .iter()
                .position(|w| matches!(w, Waiting::Line(_)))
            {
                self.waiting.remove(oldest);
            }
        }
        self.waiting.push_back(Waiting::Line(line));
    }

    /// Adds `player`'s events to the line that player's changes wait in, or starts one.
    fn gather(&mut self, now: Instant, player: &str, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let open = self.waiting.iter_mut().find_map(|w| match w {
            Waiting::Burst(b) if b.player == player => Some(b),
            _ => None,
        });
        match open {
            Some(b) => {
                let room = MAX_BURST_EVENTS - b.events.len();
                b.events.extend(events.into_iter().take(room));
                b.last = now;
            }
            None => {
                let mut events = events;
                events.truncate(MAX_BURST_EVENTS);
                self.waiting.push_back(Waiting::Burst(Burst {
                    player: player.to_string(),
                    events,
                    first: now,
                    last: now,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GameInfo, Label, OnRestart, RegionInfo, RegionKind, RoomInfo};

    /// A game with a byte of named flags (sword, lamp), a named item (boots), a byte
    /// without a name and a BCD counter of coins.
    fn joined() -> Joined {
        let flag = |bit, name: &str| Label {
            region: 0,
            offset: 0,
            bit: Some(bit),
            name: name.into(),
        };
        Joined {
            player: 1,
            game: GameInfo {
                name: "maze".into(),
                title: "The Maze of Galious".into(),
                rom_size: 0,
                rom_sha256: [0; 32],
                shared_bytes: 5,
                machine: None,
                romtype: None,
                sync_when: None,
                on_restart: OnRestart::Share,
                rooms: vec![],
            },
            room: RoomInfo {
                name: "maze".into(),
                players: vec![],
            },
            regions: vec![
                RegionInfo::bytes(0xe000, 0xe001, "items"),
                RegionInfo::bytes(0xe002, 0xe002, "map"),
                RegionInfo {
                    kind: RegionKind::Counter(Counter::full(crate::counter::Encoding::Bcd, 2)),
                    ..RegionInfo::bytes(0xe003, 0xe004, "coins")
                },
            ],
            state: vec![vec![0, 0], vec![0], vec![0, 0]],
            seq: 0,
            in_progress: false,
            last_batch: None,
            labels: vec![
                flag(0, "sword"),
                flag(1, "lamp"),
                Label {
                    region: 0,
                    offset: 1,
                    bit: None,
                    name: "boots".into(),
                },
            ],
        }
    }

    fn set(region: u16, offset: u16, value: u8) -> Change {
        Change::bytes(region, offset, vec![value])
    }

    fn coins(amount: i64, total: u32) -> Count {
        Count {
            region: 2,
            amount,
            total,
        }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn another_players_change_is_one_line_once_the_player_is_still() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        n.changes(t0, Author::Player("alice"), &[set(0, 1, 1)]);
        assert!(n.due(ms(t0, 100)).is_empty(), "alice may do more");
        n.changes(ms(t0, 200), Author::Player("alice"), &[set(0, 0, 0b10)]);
        n.counts(ms(t0, 300), Author::Player("alice"), &[coins(3, 3)]);
        assert!(n.due(ms(t0, 800)).is_empty(), "600 ms after her last only");
        assert_eq!(
            n.due(ms(t0, 900)),
            ["alice got the boots and the lamp, coins +3"]
        );
        assert!(n.is_idle());
        assert!(n.due(ms(t0, 5000)).is_empty());
    }

    #[test]
    fn own_changes_are_never_announced_but_still_count() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        n.changes(t0, Author::Me, &[set(0, 1, 1), set(0, 0, 1)]);
        n.counts(t0, Author::Me, &[coins(5, 5)]);
        assert!(n.due(ms(t0, 10_000)).is_empty());
        assert!(n.is_idle());
        // Bob uses the boots the player got: worded against the player's change.
        n.changes(ms(t0, 10_000), Author::Player("bob"), &[set(0, 1, 0)]);
        assert_eq!(n.due(ms(t0, 11_000)), ["bob used the boots"]);
    }

    #[test]
    fn a_player_who_keeps_changing_things_is_shown_every_two_seconds() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        let mut lines = Vec::new();
        for i in 0..30u64 {
            let now = ms(t0, i * 100);
            n.counts(now, Author::Player("carol"), &[coins(1, i as u32 + 1)]);
            lines.extend(n.due(now));
        }
        // Her first 2 s (and the coin of the moment it is shown) in one line.
        assert_eq!(lines, ["carol: coins +21"]);
        assert_eq!(n.due(ms(t0, 3500)), ["carol: coins +9"]);
    }

    #[test]
    fn lines_are_rate_limited_and_what_waits_keeps_merging() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        for name in ["a", "b", "c", "d"] {
            n.player_joined(name);
        }
        let first = n.due(t0);
        assert_eq!(
            first,
            [
                "a joined The Maze of Galious",
                "b joined The Maze of Galious",
                "c joined The Maze of Galious"
            ]
        );
        n.changes(ms(t0, 100), Author::Player("a"), &[set(0, 0, 1)]);
        assert!(n.due(ms(t0, 1000)).is_empty(), "three lines in the window");
        // Still waiting: a's next change joins the same line.
        n.changes(ms(t0, 2000), Author::Player("a"), &[set(0, 1, 1)]);
        assert!(n.due(ms(t0, 2999)).is_empty());
        assert_eq!(
            n.due(ms(t0, 3000)),
            [
                "d joined The Maze of Galious",
                "a got the sword and the boots"
            ]
        );
    }

    #[test]
    fn players_and_the_connection() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        n.player_left("bob");
        n.connection_lost();
        n.connection_lost();
        n.back_online();
        assert_eq!(
            n.due(t0),
            ["bob left", "connection lost, retrying…", "back online"]
        );
        // Lines about players wait in order, at most a few: the oldest give way.
        for i in 0..20 {
            n.player_left(&format!("p{i}"));
        }
        let mut shown = Vec::new();
        for s in 1..10 {
            shown.extend(n.due(t0 + WINDOW * s));
        }
        assert_eq!(shown.len(), MAX_WAITING_LINES);
        assert_eq!(shown[0], "p12 left");
        assert_eq!(shown.last().unwrap(), "p19 left");
    }

    #[test]
    fn names_and_titles_from_outside_are_made_printable() {
        let mut j = joined();
        j.game.title = format!("evil\u{1b}[2J{}", "x".repeat(100));
        let mut n = Notices::new(&j);
        n.player_joined("m\u{7}e");
        n.changes(Instant::now(), Author::Player("\n"), &[set(1, 0, 0x42)]);
        let lines = n.due(Instant::now() + MAX_GATHER);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("m\\u{7}e joined evil\\u{1b}[2Jxxx"));
        assert!(lines[0].ends_with('…'));
        assert!(lines[0].chars().count() < 60, "{}", lines[0]);
        assert_eq!(lines[1], "\\n: map = 0x42");
        assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
    }

    #[test]
    fn a_restore_is_one_line_and_moves_the_state() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        n.changes(t0, Author::Server, &[set(0, 1, 1)]);
        n.counts(t0, Author::Server, &[coins(120, 120)]);
        assert_eq!(n.due(t0), ["the host put back a saved state"]);
        // The boots came back with the restore: using them now is news.
        n.changes(t0, Author::Player("bob"), &[set(0, 1, 0)]);
        // The counter holds 120 now (BCD 0x20 0x01): bytes writing 120 again say nothing.
        n.changes(
            t0,
            Author::Player("bob"),
            &[Change::bytes(2, 0, vec![0x20, 0x01])],
        );
        assert_eq!(n.due(t0 + WINDOW + GATHER), ["bob used the boots"]);
    }

    #[test]
    fn amounts_that_cancel_take_no_slot() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        n.counts(t0, Author::Player("bob"), &[coins(1, 1)]);
        n.counts(t0, Author::Player("bob"), &[coins(-1, 0)]);
        n.player_left("carol");
        assert_eq!(n.due(ms(t0, 700)), ["carol left"]);
        assert!(n.is_idle());
    }

    #[test]
    fn a_huge_burst_is_bounded_and_shown_at_once() {
        let mut n = Notices::new(&joined());
        let t0 = Instant::now();
        let changes: Vec<Change> = (0..MAX_BURST_EVENTS as u32 + 10)
            .map(|i| set(1, 0, (i % 200 + 1) as u8))
            .collect();
        n.changes(t0, Author::Player("bob"), &changes);
        // The last event that fitted: change 4095.
        assert_eq!(n.due(t0), ["bob: map = 0x60"]);
        // Bob's next change starts his next line.
        n.changes(t0, Author::Player("bob"), &[set(0, 0, 1)]);
        assert_eq!(n.due(ms(t0, 600)), ["bob got the sword"]);
    }
}
