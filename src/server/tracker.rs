//! The tracker page's data: what each game's players have, who plays, and what just
//! happened, as the JSON the page (`tracker.html`, served by [`super::http`]) shows.
//! Pure: the server passes the clock in (milliseconds since 1970, UTC) and holds the
//! game's lock.
//!
//! Each game room keeps a [`History`] next to its state: the last changes as [`Event`]s
//! (who, when, what) and the players who left. Both are bounded in count and in bytes,
//! whatever players send: at most [`HISTORY_EVENTS`] events of at most
//! [`FACTS_PER_EVENT`] fixed-size facts and one player name each, at most
//! [`GONE_PLAYERS`] players who left. A burst of changes by one player (a game writing
//! every frame, an item picked up and dropped again) is one event holding the net
//! effect.
//!
//! What the page calls each part of the shared state comes from [`names`] alone.

use crate::delta;
use crate::protocol::{RegionInfo, ServerMsg};
use serde::Serialize;
use std::collections::VecDeque;

/// Events kept per game room, newest first; older ones are forgotten.
pub const HISTORY_EVENTS: usize = 40;

/// Facts (changed bytes, counter amounts) kept per event; the rest are only counted.
pub const FACTS_PER_EVENT: usize = 24;

/// Players who left that a game room remembers (the page shows them as gone).
pub const GONE_PLAYERS: usize = 16;

/// Changes by the same player less than this apart (milliseconds) are one event.
pub const BURST_MS: u64 = 2_000;

/// Longest text of one event on the page, in bytes; longer ones are cut with "…".
pub const EVENT_TEXT_BYTES: usize = 300;

/// Longest name of a part of the state (from a region's description), in characters.
pub const NAME_CHARS: usize = 40;

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
    /// Facts that did not fit.
    pub more: u32,
}

impl Event {
    /// Adds `fact` as the latest change: merged with an earlier fact about the same
    /// subject, else kept (or counted in `more` when the event is full).
    fn add(&mut self, fact: Fact) {
        if let Some(old) = self.facts.iter_mut().find(|f| f.same_subject(&fact)) {
            old.then(&fact);
        } else if self.facts.len() < FACTS_PER_EVENT {
            self.facts.push(fact);
        } else {
            self.more = self.more.saturating_add(1);
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
    /// The state as of the last event, to tell which bits a change really flipped.
    shown: Vec<Vec<u8>>,
    /// Newest first.
    events: VecDeque<Event>,
    /// Newest first.
    gone: VecDeque<Gone>,
}

impl History {
    /// An empty history of a game whose state is now `state`.
    pub fn new(state: &[Vec<u8>]) -> History {
        History {
            shown: state.to_vec(),
            events: VecDeque::new(),
            gone: VecDeque::new(),
        }
    }

    /// Notes a sequenced `Update` or `Counted` (other messages are ignored) made by
    /// `who` at `at`. Bits a change sets to the value they had are no news.
    pub fn record(&mut self, who: &str, msg: &ServerMsg, at: u64) {
        let mut facts = Vec::new();
        match msg {
            ServerMsg::Update { changes, .. } => {
                for c in changes {
                    let Some(region) = self.shown.get_mut(c.region as usize) else {
                        continue;
                    };
                    for (i, (&value, &mask)) in c.values.iter().zip(&c.masks).enumerate() {
                        let offset = c.offset as usize + i;
                        let Some(byte) = region.get_mut(offset) else {
                            break;
                        };
                        let after = delta::merge_byte(*byte, value, mask);
                        if after != *byte {
                            facts.push(Fact::Byte {
                                region: c.region,
                                offset: offset as u16,
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
                more: 0,
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
        if event.facts.is_empty() && event.more == 0 {
            self.events.pop_front();
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

    /// The events, newest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// The players who left, most recent first.
    pub fn gone(&self) -> impl Iterator<Item = &Gone> {
        self.gone.iter()
    }
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
    /// The shared state, part by part.
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
    /// A named item or flag: the group has it or not.
    Have {
        /// Whether the group has it.
        have: bool,
    },
    /// A counter: its amount.
    Count {
        /// The total now.
        value: u32,
        /// The largest total it can reach.
        max: u32,
    },
    /// Bytes without names, in hex.
    Bytes {
        /// The first byte's CPU address, 4 hex digits.
        address: String,
        /// The bytes, two hex digits each.
        hex: String,
    },
}

/// One event on the page: "`who` `text`", `at`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct EventView {
    /// When (milliseconds since 1970).
    pub at: u64,
    /// Who made the change.
    pub who: String,
    /// What they did, e.g. "set items to 0x29, coins +3 (105)".
    pub text: String,
}

/// A game room as the page shows it: its `state` (sequenced up to `seq`), the players
/// in it now and its history.
pub fn room_view(
    name: &str,
    regions: &[RegionInfo],
    state: &[Vec<u8>],
    seq: u64,
    present: &[Present],
    history: &History,
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
        items: names::items(regions, state),
        events: history
            .events()
            .map(|e| EventView {
                at: e.at,
                who: e.who.clone(),
                text: names::describe(regions, e),
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

/// Names: everything the page calls a part of the shared state comes from this module.
/// Until games name their items and flags, a region is called by its description (the
/// words before a colon), a counter shows its amount and other bytes show in hex. This
/// is the one place to take names, items and event phrases from the game's labels
/// instead.
pub mod names {
    use super::{Event, Fact, ItemView, Shown, EVENT_TEXT_BYTES, NAME_CHARS};
    use crate::protocol::RegionInfo;

    /// What the players call region `r`: its description up to a colon ("coins: 4-digit
    /// BCD" is "coins"), at most [`NAME_CHARS`] characters; its address when it has no
    /// description.
    pub fn region_name(r: &RegionInfo) -> String {
        let head = r.description.split(':').next().unwrap_or("").trim();
        if head.is_empty() {
            return format!("{:04x}", r.start);
        }
        match head.char_indices().nth(NAME_CHARS) {
            Some((cut, _)) => format!("{}…", &head[..cut]),
            None => head.to_string(),
        }
    }

    /// The shared state, part by part: one item per region.
    pub fn items(regions: &[RegionInfo], state: &[Vec<u8>]) -> Vec<ItemView> {
        regions
            .iter()
            .zip(state)
            .map(|(r, bytes)| ItemView {
                name: region_name(r),
                shown: match r.counter() {
                    Some(c) => Shown::Count {
                        value: c.decode(bytes),
                        max: c.max,
                    },
                    None => Shown::Bytes {
                        address: format!("{:04x}", r.start),
                        hex: crate::hex::encode(bytes),
                    },
                },
            })
            .collect()
    }

    /// What an event did, in words: "set items to 0x29, coins +3 (105)".
    pub fn describe(regions: &[RegionInfo], event: &Event) -> String {
        let name = |region: u16| {
            regions
                .get(region as usize)
                .map_or_else(|| format!("region {region}"), region_name)
        };
        let mut parts: Vec<String> = event
            .facts
            .iter()
            .map(|f| match *f {
                Fact::Byte {
                    region,
                    offset,
                    after,
                    ..
                } => {
                    let single = regions.get(region as usize).is_some_and(|r| r.len() == 1);
                    if single {
                        format!("set {} to 0x{after:02x}", name(region))
                    } else {
                        format!("set {} byte {offset} to 0x{after:02x}", name(region))
                    }
                }
                Fact::Count {
                    region,
                    amount,
                    total,
                } => format!("{} {amount:+} ({total})", name(region)),
            })
            .collect();
        if event.more > 0 {
            parts.push(format!("{} more", event.more));
        }
        cut(parts.join(", "), EVENT_TEXT_BYTES)
    }

    /// `text` cut to at most `max` bytes on a character boundary, "…" marking the cut.
    fn cut(text: String, max: usize) -> String {
        if text.len() <= max {
            return text;
        }
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::{Counter, CounterOp, Encoding};
    use crate::delta::Change;
    use crate::protocol::{PlayerInfo, RegionKind};
    use crate::server::game::GameState;
    use serde_json::{json, Value};

    /// items (4 bytes), crown (1 byte), coins (2-byte BCD counter).
    fn regions() -> Vec<RegionInfo> {
        vec![
            RegionInfo::bytes(0xe010, 0xe013, "items: bit 0 sword, 1 shield"),
            RegionInfo::bytes(0xe030, 0xe030, "crown"),
            RegionInfo {
                kind: RegionKind::Counter(Counter {
                    encoding: Encoding::Bcd,
                    min: 0,
                    max: 9999,
                }),
                ..RegionInfo::bytes(0xe020, 0xe021, "coins: 4-digit BCD")
            },
        ]
    }

    fn player(id: u32, name: &str) -> PlayerInfo {
        PlayerInfo {
            id,
            name: name.into(),
        }
    }

    /// A game where alice set items byte 1 and added 3 coins, bob set the crown.
    fn played() -> (GameState, History) {
        let regions = regions();
        let mut game = GameState::new(&regions);
        let mut history = History::new(game.state());
        game.add_player(player(1, "alice"), 0);
        game.add_player(player(2, "bob"), 0);
        let u = game
            .accept(1, 1, vec![Change::bytes(0, 1, vec![0x29])])
            .unwrap();
        history.record("alice", &u, 1_000);
        let u = game
            .count(
                1,
                2,
                &[CounterOp::Add {
                    region: 2,
                    amount: 3,
                }],
            )
            .unwrap();
        history.record("alice", &u, 1_500);
        let u = game
            .accept(2, 1, vec![Change::bytes(1, 0, vec![0x01])])
            .unwrap();
        history.record("bob", &u, 9_000);
        history.left("carol", 100, 800);
        (game, history)
    }

    #[test]
    fn the_page_json_is_made_from_a_game_state() {
        let (game, history) = played();
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
        let room = room_view(
            "demo",
            &regions(),
            game.state(),
            game.seq(),
            &present,
            &history,
        );
        let page = PageState {
            games: vec![GameView {
                name: "demo".into(),
                title: "The demo".into(),
                rooms: vec![room],
            }],
        };
        let text = page_json(&page);
        assert!(!text.contains('\n'), "one line: {text}");
        let got: Value = serde_json::from_str(&text).unwrap();
        let want = json!({
            "games": [{
                "name": "demo",
                "title": "The demo",
                "rooms": [{
                    "name": "demo",
                    "seq": 3,
                    "players": [
                        {"name": "alice", "connected": true, "since": 500,
                         "played_ms": null, "rtt_ms": 1.25},
                        {"name": "bob", "connected": true, "since": 600,
                         "played_ms": null, "rtt_ms": null},
                        {"name": "carol", "connected": false, "since": 800,
                         "played_ms": 700, "rtt_ms": null},
                    ],
                    "items": [
                        {"name": "items", "kind": "bytes", "address": "e010",
                         "hex": "00290000"},
                        {"name": "crown", "kind": "bytes", "address": "e030", "hex": "01"},
                        {"name": "coins", "kind": "count", "value": 3, "max": 9999},
                    ],
                    "events": [
                        {"at": 9_000, "who": "bob", "text": "set crown to 0x01"},
                        {"at": 1_500, "who": "alice",
                         "text": "set items byte 1 to 0x29, coins +3 (3)"},
                    ],
                }],
            }],
        });
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_private_reaches_the_page() {
        let (game, history) = played();
        let room = room_view("demo", &regions(), game.state(), 3, &[], &history);
        let text = page_json(&PageState {
            games: vec![GameView {
                name: "demo".into(),
                title: "t".into(),
                rooms: vec![room],
            }],
        });
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
            "address",
            "hex",
            "value",
            "max",
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
        let regions = regions();
        let mut game = GameState::new(&regions);
        let mut h = History::new(game.state());
        let mut at = 0;
        let set = |game: &mut GameState, h: &mut History, who: &str, v: u8, at: u64| {
            let u = game
                .accept(1, 0, vec![Change::bytes(0, 0, vec![v])])
                .unwrap();
            h.record(who, &u, at);
        };
        for v in 1..=5u8 {
            at += 100;
            set(&mut game, &mut h, "alice", v, at);
        }
        let events: Vec<&Event> = h.events().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].at, 500);
        assert_eq!(
            events[0].facts,
            [Fact::Byte {
                region: 0,
                offset: 0,
                before: 0,
                after: 5
            }]
        );
        // Back to where it started: the burst did nothing, and goes.
        set(&mut game, &mut h, "alice", 0, 600);
        assert_eq!(h.events().count(), 0);
        // Another player, or a pause, starts a new event.
        set(&mut game, &mut h, "alice", 7, 700);
        set(&mut game, &mut h, "bob", 8, 800);
        set(&mut game, &mut h, "bob", 9, 800 + BURST_MS);
        let who: Vec<&str> = h.events().map(|e| e.who.as_str()).collect();
        assert_eq!(who, ["bob", "bob", "alice"]);
        // Writing a byte's own value again is no news.
        let u = game
            .accept(1, 0, vec![Change::bytes(0, 0, vec![9])])
            .unwrap();
        h.record("carol", &u, 5_000);
        assert_eq!(h.events().count(), 3);
    }

    #[test]
    fn the_history_is_bounded_whatever_players_send() {
        let regions = vec![RegionInfo::bytes(0xc000, 0xcfff, "")];
        let mut game = GameState::new(&regions);
        let mut h = History::new(game.state());
        for i in 0..200u64 {
            let u = game
                .accept(
                    1,
                    0,
                    vec![Change::bytes(0, 0, vec![(i as u8) ^ 0xff; 4096])],
                )
                .unwrap();
            h.record(&format!("p{i}"), &u, i * 10);
            h.left(&format!("p{i}"), 0, i);
        }
        assert_eq!(h.events().count(), HISTORY_EVENTS);
        assert_eq!(h.gone().count(), GONE_PLAYERS);
        let newest = h.events().next().unwrap();
        assert_eq!(newest.who, "p199");
        assert_eq!(newest.facts.len(), FACTS_PER_EVENT);
        assert_eq!(newest.more as usize, 4096 - FACTS_PER_EVENT);
        let text = names::describe(&regions, newest);
        assert!(text.len() <= EVENT_TEXT_BYTES, "{}", text.len());
        assert!(text.ends_with('…'), "{text}");
        // A region without a description is called by its address.
        assert!(text.starts_with("set c000 byte 0 to 0x"), "{text}");
    }

    #[test]
    fn names_come_from_descriptions() {
        let r = |d: &str| names::region_name(&RegionInfo::bytes(0xe046, 0xe046, d));
        assert_eq!(r("arrows coins keys"), "arrows coins keys");
        assert_eq!(r("coins: 4-digit BCD"), "coins");
        assert_eq!(r("  "), "e046");
        assert_eq!(r(": odd"), "e046");
        let long = r(&"é".repeat(100));
        assert_eq!(long.chars().count(), NAME_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
