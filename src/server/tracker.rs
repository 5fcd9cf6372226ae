//! The tracker page's data: what each game's players have, who plays, and what just
//! happened, as the JSON the page (`tracker.html`, served by [`super::http`]) shows.
//! Pure: the server passes the clock in (milliseconds since 1970, UTC) and holds the
//! game's lock.
//!
//! Each game room keeps a [`History`] next to its state: the last changes as [`Event`]s
//! (who, when, what) and the players who left. Both are bounded in count and in bytes,
//! whatever players send: at most [`HISTORY_EVENTS`] events of at most
//! [`FACTS_PER_EVENT`] fixed-size facts, one player name and one line of at most
//! [`labels::MAX_LINE_CHARS`] each, and at most [`GONE_PLAYERS`] players who left. A
//! burst of changes by one player (a game writing every frame, an item picked up and
//! dropped again) is one event holding the net effect.
//!
//! Names and words come from [`crate::labels`] alone: the shared state as the game's
//! `item:`/`flag:` names, counters and unnamed bytes ([`Names::inventory`]), and each
//! event as one line ("alice got the boots and the lamp, coins +3").

use crate::counter::Count;
use crate::delta::{self, Change};
use crate::labels::{self, Holding, Names};
use crate::protocol::ServerMsg;
use serde::Serialize;
use std::collections::VecDeque;

/// Events kept per game room, newest first; older ones are forgotten.
pub const HISTORY_EVENTS: usize = 40;

/// Facts (changed bytes, counter amounts) kept per event; what a burst changes beyond
/// them is left out of its line (a restore of a whole region still reads as "REGION:
/// N bytes changed", N counting the kept ones).
pub const FACTS_PER_EVENT: usize = 64;

/// Players who left that a game room remembers (the page shows them as gone).
pub const GONE_PLAYERS: usize = 16;

/// Changes by the same player less than this apart (milliseconds) are one event.
pub const BURST_MS: u64 = 2_000;

/// One thing a change did, after merging: a byte of a bit-merged region, or a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// Byte `offset` of region `region` went from `before` to `after`.
    Byte {
        /// The region's index.
        region: u16,
        /// The byte's offset in the region.
        offset: u16,
        /// Its value before the event.
        before: u8,
        /// Its value after.
        after: u8,
    },
    /// Counter `region` moved by `amount` and is now `total`.
    Count {
        /// The region's index.
        region: u16,
        /// What the event added (negative: spent), after the counter's bounds.
        amount: i64,
        /// The total after the event.
        total: u32,
    },
}

impl Fact {
    /// Whether the fact and `other` are about the same byte or counter.
    fn same_subject(&self, other: &Fact) -> bool {
        match (self, other) {
            (
                Fact::Byte { region, offset, .. },
                Fact::Byte {
                    region: r,
                    offset: o,
                    ..
                },
            ) => region == r && offset == o,
            (Fact::Count { region, .. }, Fact::Count { region: r, .. }) => region == r,
            _ => false,
        }
    }

    /// `self` followed by `later` (about the same subject).
    fn then(&mut self, later: &Fact) {
        match (self, later) {
            (Fact::Byte { after, .. }, Fact::Byte { after: a, .. }) => *after = *a,
            (
                Fact::Count { amount, total, .. },
                Fact::Count {
                    amount: n,
                    total: t,
                    ..
                },
            ) => {
                *amount = amount.saturating_add(*n);
                *total = *t;
            }
            _ => {}
        }
    }

    /// Whether the fact leaves its subject as it was.
    fn is_nothing(&self) -> bool {
        match self {
            Fact::Byte { before, after, .. } => before == after,
            Fact::Count { amount, .. } => *amount == 0,
        }
    }
}

/// What one player changed in one burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When its last change was sequenced (milliseconds since 1970).
    pub at: u64,
    /// The player's name (or "the host" for a restore).
    pub who: String,
    /// What changed, at most [`FACTS_PER_EVENT`], in the order first changed.
    pub facts: Vec<Fact>,
    /// The facts in words, by [`labels::line`]: "alice got the boots, coins +3".
    pub line: String,
    /// Whether `line` says the facts as they are now: wording waits until the page
    /// asks (see [`History::events`]).
    worded: bool,
}

impl Event {
    /// Adds `fact` as the latest change: merged with an earlier fact about the same
    /// subject, else kept (or left out when the event is full).
    fn add(&mut self, fact: Fact) {
        if let Some(old) = self.facts.iter_mut().find(|f| f.same_subject(&fact)) {
            old.then(&fact);
        } else if self.facts.len() < FACTS_PER_EVENT {
            self.facts.push(fact);
        }
    }
}

/// A player who left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// Their name.
    pub name: String,
    /// When they joined (milliseconds since 1970).
    pub joined: u64,
    /// When they left.
    pub left: u64,
}

/// A game room's recent past, for the page: the last events and who left.
#[derive(Debug, Clone)]
pub struct History {
    /// The game's names, for the events' lines.
    names: Names,
    /// The state as of the last event, to tell which bits a change really flipped.
    shown: Vec<Vec<u8>>,
    /// Newest first.
    events: VecDeque<Event>,
    /// Newest first.
    gone: VecDeque<Gone>,
}

impl History {
    /// An empty history of a game named by `names` whose state is now `state`.
    pub fn new(names: Names, state: &[Vec<u8>]) -> History {
        History {
            names,
            shown: state.to_vec(),
            events: VecDeque::new(),
            gone: VecDeque::new(),
        }
    }

    /// Notes a sequenced `Update` or `Counted` (other messages are ignored) made by
    /// `who` at `at`, after which the game's state is `state`. Bits a change sets to
    /// the value they had are no news.
    pub fn record(&mut self, who: &str, msg: &ServerMsg, at: u64, state: &[Vec<u8>]) {
        let mut facts = Vec::new();
        match msg {
            ServerMsg::Update { changes, .. } => {
                for c in changes {
                    let Some(region) = self.shown.get_mut(usize::from(c.region)) else {
                        continue;
                    };
                    for (offset, (&value, &mask)) in (c.offset..).zip(c.values.iter().zip(&c.masks))
                    {
                        let Some(byte) = region.get_mut(usize::from(offset)) else {
                            break;
                        };
                        let after = delta::merge_byte(*byte, value, mask);
                        if after != *byte {
                            facts.push(Fact::Byte {
                                region: c.region,
                                offset,
                                before: *byte,
                                after,
                            });
                            *byte = after;
                        }
                    }
                }
            }
            ServerMsg::Counted { counts, .. } => {
                for c in counts.iter().filter(|c| c.amount != 0) {
                    // The counter's bytes as they are now, for a later restore's words.
                    let r = usize::from(c.region);
                    if let (Some(shown), Some(now)) = (self.shown.get_mut(r), state.get(r)) {
                        shown.clone_from(now);
                    }
                    facts.push(Fact::Count {
                        region: c.region,
                        amount: c.amount,
                        total: c.total,
                    });
                }
            }
            _ => return,
        }
        if facts.is_empty() {
            return;
        }
        let merge = self
            .events
            .front()
            .is_some_and(|e| e.who == who && at.saturating_sub(e.at) < BURST_MS);
        if !merge {
            self.events.push_front(Event {
                at,
                who: who.to_string(),
                facts: Vec::new(),
                line: String::new(),
                worded: false,
            });
            self.events.truncate(HISTORY_EVENTS);
        }
        let Some(event) = self.events.front_mut() else {
            return;
        };
        event.at = event.at.max(at);
        for fact in facts {
            event.add(fact);
        }
        // A burst that undid itself (picked up and dropped again) is no news.
        event.facts.retain(|f| !f.is_nothing());
        if event.facts.is_empty() {
            self.events.pop_front();
            return;
        }
        // Worded when the page asks, not at every change (a busy game makes thousands
        // a second, and the wording was 5 % of a busy server's time). A byte is worded
        // from its own before and after then just as now; a counter's bytes set by a
        // restore are read against the rest of the counter as it is now, so those
        // are worded now.
        let names = &self.names;
        let now = event
            .facts
            .iter()
            .any(|f| matches!(*f, Fact::Byte { region, .. } if names.is_counter(region)));
        event.worded = false;
        if now {
            match words(names, &mut self.shown, &event.who, &event.facts) {
                Some(line) => {
                    event.line = line;
                    event.worded = true;
                }
                None => {
                    self.events.pop_front();
                }
            }
        }
    }

    /// Notes that `name`, who joined at `joined`, left at `at`.
    pub fn left(&mut self, name: &str, joined: u64, at: u64) {
        self.gone.retain(|g| g.name != name);
        self.gone.push_front(Gone {
            name: name.to_string(),
            joined,
            left: at,
        });
        self.gone.truncate(GONE_PLAYERS);
    }

    /// The events, newest first, in words (those that say nothing are left out).
    pub fn events(&mut self) -> impl Iterator<Item = &Event> {
        let History {
            names,
            shown,
            events,
            ..
        } = self;
        for e in events.iter_mut().filter(|e| !e.worded) {
            e.line = words(names, shown, &e.who, &e.facts).unwrap_or_default();
            e.worded = true;
        }
        events.iter().filter(|e| !e.line.is_empty())
    }

    /// The players who left, most recent first.
    pub fn gone(&self) -> impl Iterator<Item = &Gone> {
        self.gone.iter()
    }
}

/// An event's facts as [`labels::line`] words them; `None` when they say nothing.
/// `shown` is the state after the facts: each byte is set back to its value before
/// for the moment it is worded (labels reads a byte's change against its whole
/// region: a counter's other bytes, an item's neighbours).
fn words(names: &Names, shown: &mut [Vec<u8>], who: &str, facts: &[Fact]) -> Option<String> {
    let mut events = Vec::new();
    for fact in facts {
        match *fact {
            Fact::Byte {
                region,
                offset,
                before,
                after,
            } => {
                let Some(bytes) = shown.get_mut(usize::from(region)) else {
                    continue;
                };
                let Some(now) = bytes.get(usize::from(offset)).copied() else {
                    continue;
                };
                bytes[usize::from(offset)] = before;
                events.extend(names.change(&Change::bytes(region, offset, vec![after]), bytes));
                bytes[usize::from(offset)] = now;
            }
            Fact::Count {
                region,
                amount,
                total,
            } => events.extend(names.count(&Count {
                region,
                amount,
                total,
            })),
        }
    }
    labels::line(who, &events)
}

/// A player in a game room now, as the server knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Present {
    /// The player's name.
    pub name: String,
    /// When they joined (milliseconds since 1970).
    pub joined: u64,
    /// Round trip of the last answered WebSocket ping, if one was answered.
    pub rtt_ms: Option<f64>,
}

/// Everything the page shows, but the time it was sent.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PageState {
    /// Every game served, sorted by name.
    pub games: Vec<GameView>,
}

/// One game on the page.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct GameView {
    /// The name players join it by.
    pub name: String,
    /// Its title.
    pub title: String,
    /// Its groups of players, each with their own state.
    pub rooms: Vec<RoomView>,
}

/// One group of players of a game and their shared state.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RoomView {
    /// The room's name.
    pub name: String,
    /// The last update in `items`.
    pub seq: u64,
    /// Players in the room now, in joining order, then those who left, most recent
    /// first.
    pub players: Vec<PlayerView>,
    /// The shared state, the way a player thinks of it.
    pub items: Vec<ItemView>,
    /// The last changes, newest first.
    pub events: Vec<EventView>,
}

/// A player on the page.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct PlayerView {
    /// Their name.
    pub name: String,
    /// In the room now, or gone.
    pub connected: bool,
    /// When they joined (connected) or left (gone), in milliseconds since 1970.
    pub since: u64,
    /// Gone players: how long they had played, in milliseconds.
    pub played_ms: Option<u64>,
    /// Connected players: the round trip of the server's last answered ping.
    pub rtt_ms: Option<f64>,
}

/// One part of the shared state on the page.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ItemView {
    /// What the player calls it.
    pub name: String,
    /// How it is shown.
    #[serde(flatten)]
    pub shown: Shown,
}

/// How a part of the shared state is shown.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shown {
    /// A named item (`item:`, a whole byte) or flag (`flag:`, one bit): the group has
    /// it or not.
    Have {
        /// Whether the group has it.
        have: bool,
    },
    /// A counter: its amount.
    Count {
        /// The total now.
        value: u32,
    },
    /// A region with bytes that have no name: all its bytes, in hex.
    Bytes {
        /// The bytes, two hex digits each.
        hex: String,
    },
}

/// One event on the page: its line, e.g. "alice got the boots", and when.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct EventView {
    /// When (milliseconds since 1970).
    pub at: u64,
    /// Who made the change.
    pub who: String,
    /// What happened, who first, in [`labels::line`]'s words.
    pub text: String,
}

/// A game room as the page shows it: its `state` (sequenced up to `seq`), the players
/// in it now and its history.
pub fn room_view(
    name: &str,
    state: &[Vec<u8>],
    seq: u64,
    present: &[Present],
    history: &mut History,
) -> RoomView {
    let mut players: Vec<PlayerView> = present
        .iter()
        .map(|p| PlayerView {
            name: p.name.clone(),
            connected: true,
            since: p.joined,
            played_ms: None,
            rtt_ms: p.rtt_ms,
        })
        .collect();
    players.extend(
        history
            .gone()
            .filter(|g| !present.iter().any(|p| p.name == g.name))
            .map(|g| PlayerView {
                name: g.name.clone(),
                connected: false,
                since: g.left,
                played_ms: Some(g.left.saturating_sub(g.joined)),
                rtt_ms: None,
            }),
    );
    RoomView {
        name: name.to_string(),
        seq,
        players,
        items: history
            .names
            .inventory(state)
            .into_iter()
            .map(|e| ItemView {
                name: e.name,
                shown: match e.holding {
                    Holding::Item(byte) => Shown::Have { have: byte != 0 },
                    Holding::Flag(have) => Shown::Have { have },
                    Holding::Amount(value) => Shown::Count { value },
                    Holding::Bytes(hex) => Shown::Bytes { hex },
                },
            })
            .collect(),
        events: history
            .events()
            .map(|e| EventView {
                at: e.at,
                who: e.who.clone(),
                text: e.line.clone(),
            })
            .collect(),
    }
}

/// The page's data as one line of JSON (no newline inside: it travels as one
/// server-sent event).
pub fn page_json(state: &PageState) -> String {
    // Strings and numbers only: serializing cannot fail.
    serde_json::to_string(state).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::CounterOp;
    use crate::protocol::{PlayerInfo, RegionInfo};
    use crate::server::game::GameState;
    use serde_json::{json, Value};

    /// Items as flags (two named bits of six), a crown item, coins (a BCD counter) and
    /// a map without names.
    const GAME: &str = "r
E010 E010 items
E011 E011 crown
counter: E020 E021 bcd coins
E030 E033 map
flag: E010 bit 0 sword
flag: E010 bit 5 boots
item: E011 crown
";

    fn game() -> (Vec<RegionInfo>, Names) {
        let def = crate::regions::parse("g", GAME).unwrap();
        let regions: Vec<RegionInfo> = def.regions.iter().map(|r| r.info()).collect();
        let names = Names::new(&regions, &def.labels());
        (regions, names)
    }

    fn player(id: u32, name: &str) -> PlayerInfo {
        PlayerInfo {
            id,
            name: name.into(),
        }
    }

    /// `change`, made by `who` at `at`.
    fn set(g: &mut GameState, h: &mut History, who: &str, change: Change, at: u64) {
        let u = g.accept(1, 0, vec![change]).unwrap();
        h.record(who, &u, at, g.state());
    }

    fn coins(g: &mut GameState, h: &mut History, who: &str, amount: i64, at: u64) {
        let u = g
            .count(1, 0, &[CounterOp::Add { region: 2, amount }])
            .unwrap();
        h.record(who, &u, at, g.state());
    }

    /// alice got the boots and 3 coins, bob the crown and a map byte; carol left.
    fn played() -> (GameState, History) {
        let (regions, names) = game();
        let mut g = GameState::new(&regions);
        let mut h = History::new(names, g.state());
        g.add_player(player(1, "alice"), 0);
        g.add_player(player(2, "bob"), 0);
        set(
            &mut g,
            &mut h,
            "alice",
            Change::bytes(0, 0, vec![0b10_0000]),
            1_000,
        );
        coins(&mut g, &mut h, "alice", 3, 1_500);
        set(&mut g, &mut h, "bob", Change::bytes(1, 0, vec![1]), 9_000);
        set(
            &mut g,
            &mut h,
            "bob",
            Change::bytes(3, 2, vec![0x42]),
            9_100,
        );
        h.left("carol", 100, 800);
        (g, h)
    }

    fn page(room: RoomView) -> String {
        page_json(&PageState {
            games: vec![GameView {
                name: "demo".into(),
                title: "The demo".into(),
                rooms: vec![room],
            }],
        })
    }

    #[test]
    fn the_page_json_is_made_from_a_game_state() {
        let (g, mut h) = played();
        let present = [
            Present {
                name: "alice".into(),
                joined: 500,
                rtt_ms: Some(1.25),
            },
            Present {
                name: "bob".into(),
                joined: 600,
                rtt_ms: None,
            },
        ];
        let text = page(room_view("demo", g.state(), g.seq(), &present, &mut h));
        assert!(!text.contains('\n'), "one line: {text}");
        let got: Value = serde_json::from_str(&text).unwrap();
        let want = json!({
            "games": [{
                "name": "demo",
                "title": "The demo",
                "rooms": [{
                    "name": "demo",
                    "seq": 4,
                    "players": [
                        {"name": "alice", "connected": true, "since": 500,
                         "played_ms": null, "rtt_ms": 1.25},
                        {"name": "bob", "connected": true, "since": 600,
                         "played_ms": null, "rtt_ms": null},
                        {"name": "carol", "connected": false, "since": 800,
                         "played_ms": 700, "rtt_ms": null},
                    ],
                    // Flags and items have or not, counters their amount, the bytes
                    // without names (the items byte's other bits, the map) in hex.
                    "items": [
                        {"name": "sword", "kind": "have", "have": false},
                        {"name": "boots", "kind": "have", "have": true},
                        {"name": "items", "kind": "bytes", "hex": "20"},
                        {"name": "crown", "kind": "have", "have": true},
                        {"name": "coins", "kind": "count", "value": 3},
                        {"name": "map", "kind": "bytes", "hex": "00004200"},
                    ],
                    "events": [
                        {"at": 9_100, "who": "bob",
                         "text": "bob got the crown, map byte 2 = 0x42"},
                        {"at": 1_500, "who": "alice",
                         "text": "alice got the boots, coins +3"},
                    ],
                }],
            }],
        });
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_private_reaches_the_page() {
        let (g, mut h) = played();
        let text = page(room_view("demo", g.state(), 3, &[], &mut h));
        // Every field there is: the page gets no player ids, sessions, network
        // addresses, file paths or rom, and a new field is a decision to make here.
        fn keys(v: &Value, out: &mut std::collections::BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        out.insert(k.clone());
                        keys(v, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut found = std::collections::BTreeSet::new();
        keys(&serde_json::from_str(&text).unwrap(), &mut found);
        let allowed = [
            "games",
            "name",
            "title",
            "rooms",
            "seq",
            "players",
            "connected",
            "since",
            "played_ms",
            "rtt_ms",
            "items",
            "kind",
            "hex",
            "value",
            "events",
            "at",
            "who",
            "text",
            "have",
        ];
        for k in &found {
            assert!(allowed.contains(&k.as_str()), "the page gets {k:?}");
        }
    }

    #[test]
    fn a_burst_is_one_event_with_its_net_effect() {
        let (regions, names) = game();
        let mut g = GameState::new(&regions);
        let mut h = History::new(names, g.state());
        let map = |v: u8| Change::bytes(3, 0, vec![v]);
        for (i, v) in (1..=5u8).enumerate() {
            set(&mut g, &mut h, "alice", map(v), 100 * (i as u64 + 1));
        }
        let events: Vec<&Event> = h.events().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].at, 500);
        assert_eq!(events[0].line, "alice: map byte 0 = 0x05");
        // Back to where it started: the burst did nothing, and goes.
        set(&mut g, &mut h, "alice", map(0), 600);
        assert_eq!(h.events().count(), 0);
        // Boots picked up and dropped again, coins got and spent: no news either.
        let boots = |v: u8| Change::bytes(0, 0, vec![v]);
        set(&mut g, &mut h, "alice", boots(0b10_0000), 700);
        coins(&mut g, &mut h, "alice", 5, 700);
        set(&mut g, &mut h, "alice", boots(0), 800);
        coins(&mut g, &mut h, "alice", -5, 800);
        assert_eq!(h.events().count(), 0);
        // Another player, or a pause, starts a new event.
        set(&mut g, &mut h, "alice", map(7), 900);
        set(&mut g, &mut h, "bob", map(8), 1_000);
        set(&mut g, &mut h, "bob", map(9), 1_000 + BURST_MS);
        let lines: Vec<&str> = h.events().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "bob: map byte 0 = 0x09",
                "bob: map byte 0 = 0x08",
                "alice: map byte 0 = 0x07"
            ]
        );
        // Writing a byte's own value again is no news.
        set(&mut g, &mut h, "carol", map(9), 5_000);
        assert_eq!(h.events().count(), 3);
    }

    /// Events are worded when the page asks: the words must be those the event had
    /// when it happened, however much changed since.
    #[test]
    fn words_asked_for_late_are_those_of_the_moment() {
        let (regions, names) = game();
        let mut at_once_g = GameState::new(&regions);
        let mut at_once = History::new(names.clone(), at_once_g.state());
        let mut late_g = GameState::new(&regions);
        let mut late = History::new(names, late_g.state());
        let boots = |v: u8| Change::bytes(0, 0, vec![v]);
        let map = |v: u8| Change::bytes(3, 0, vec![v]);
        let steps: Vec<(&str, Option<Change>, i64)> = vec![
            ("alice", Some(boots(0b10_0000)), 0),
            ("bob", Some(boots(0)), 0),
            ("alice", None, 5),
            ("carol", Some(map(3)), 0),
            ("bob", Some(boots(0b10_0000)), -2),
            ("carol", Some(map(0)), 0),
        ];
        let mut asked = Vec::new();
        for (i, (who, change, amount)) in steps.into_iter().enumerate() {
            let t = 10 * BURST_MS * (i as u64 + 1);
            for (g, h) in [(&mut at_once_g, &mut at_once), (&mut late_g, &mut late)] {
                if let Some(c) = &change {
                    set(g, h, who, c.clone(), t);
                }
                if amount != 0 {
                    coins(g, h, who, amount, t);
                }
            }
            asked = at_once.events().map(|e| e.line.clone()).collect::<Vec<_>>();
        }
        let late_lines: Vec<String> = late.events().map(|e| e.line.clone()).collect();
        assert_eq!(late_lines, asked);
        assert_eq!(late_lines.len(), 6, "{late_lines:?}");
    }

    #[test]
    fn a_restore_reads_as_what_it_changed() {
        let (regions, names) = game();
        let mut g = GameState::new(&regions);
        let mut h = History::new(names, g.state());
        coins(&mut g, &mut h, "alice", 7, 0);
        // The host puts back a state with 120 coins (BCD 0x20 0x01) and the crown.
        let mut saved: Vec<Vec<u8>> = g.state().to_vec();
        saved[2] = vec![0x20, 0x01];
        saved[1] = vec![1];
        for msg in g.replace_all(0, &saved.concat()).unwrap() {
            h.record("the host", &msg, 10_000, g.state());
        }
        let newest = h.events().next().unwrap();
        assert_eq!(newest.line, "the host got the crown, coins +113");
        assert_eq!(h.events().count(), 2);
    }

    #[test]
    fn the_history_is_bounded_whatever_players_send() {
        let regions = vec![RegionInfo::bytes(0xc000, 0xcfff, "")];
        let mut g = GameState::new(&regions);
        let mut h = History::new(Names::new(&regions, &[]), g.state());
        let long = "n".repeat(crate::protocol::MAX_NAME_BYTES);
        for i in 0..200u64 {
            let change = Change::bytes(0, 0, vec![(i as u8) ^ 0xff; 4096]);
            set(&mut g, &mut h, &format!("{long}{i}"), change, i * 10);
            h.left(&format!("p{i}"), 0, i);
        }
        assert_eq!(h.events().count(), HISTORY_EVENTS);
        assert_eq!(h.gone().count(), GONE_PLAYERS);
        let newest = h.events().next().unwrap();
        assert!(newest.who.ends_with("199"));
        assert_eq!(newest.facts.len(), FACTS_PER_EVENT);
        for e in h.events() {
            assert!(
                e.line.chars().count() <= labels::MAX_LINE_CHARS,
                "{}",
                e.line
            );
        }
        // A region without a description is called by its addresses.
        let (g, mut h) = {
            let mut g = GameState::new(&regions);
            let mut h = History::new(Names::new(&regions, &[]), g.state());
            set(&mut g, &mut h, "p", Change::bytes(0, 3, vec![1, 2]), 0);
            (g, h)
        };
        assert_eq!(g.seq(), 1);
        assert_eq!(
            h.events().next().unwrap().line,
            "p: c000-cfff: 2 bytes changed"
        );
    }
}
