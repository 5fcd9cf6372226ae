//! Names for what players do: a game's shared bytes, bits and counters as a person
//! calls them, and changes to them as short events ("got the boots", "coins +3"),
//! merged into one line per burst ("alice got the boots and the lamp, coins +3"). The
//! notices on the emulator screen and the tracker page both word changes here and
//! nowhere else. Everything here is pure.
//!
//! The names come from the regions file (`regions::ITEM`, `regions::FLAG`, sent to
//! players as [`Label`]s); what a change means:
//!
//! - an `item:` byte: zero to non-zero is "got", non-zero to zero "used", one non-zero
//!   value to another "NAME set to V" (V in decimal: such bytes are strengths or counts,
//!   like the shield of Galious, whose byte holds its strength);
//! - a `flag:` bit: set is "got", cleared "used";
//! - a counter, named by its region's description: its amount, "coins +3" or
//!   "coins -10"; when its bytes change as bytes (a restored saved state), "coins set
//!   to 120";
//! - any other byte, named by its region's description (or its addresses when it has
//!   none): its new value in hex, "items byte 3 = 0x42", or "crown = 0x01" for a region
//!   of one byte.
//!
//! Every text in the result went through [`printable`]: names and descriptions come
//! from a file or the network.

use crate::counter::{Count, Counter};
use crate::delta::{apply, merge_byte, Change};
use crate::protocol::{Label, RegionInfo};
use crate::text::printable;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Longest line [`line()`] makes, in characters: a notice must fit a few lines of an
/// emulator screen, and a tracker line one line of a phone.
pub const MAX_LINE_CHARS: usize = 100;

/// Longest region description used as a name, in characters; longer ones are cut
/// (descriptions may be long explanations, up to `MAX_TEXT_BYTES`).
pub const MAX_TITLE_CHARS: usize = 40;

/// One thing a player's change did, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An item byte became non-zero, or a flag bit was set.
    Got(String),
    /// An item byte became zero, or a flag bit was cleared.
    Used(String),
    /// A counter changed by an amount (negative: spent).
    Amount {
        /// The counter's name (its region's description).
        name: String,
        /// What the total changed by.
        amount: i64,
        /// The total afterwards.
        total: u32,
    },
    /// An item byte went from one non-zero value to another, or a counter's bytes
    /// were written as bytes.
    Set {
        /// The item's or counter's name.
        name: String,
        /// The new value.
        value: u32,
    },
    /// A byte without a name changed.
    Unnamed {
        /// The region's name (its description, or its addresses).
        region: String,
        /// The byte's offset in the region; `None` when the region has one byte.
        offset: Option<u16>,
        /// The byte's new value.
        value: u8,
    },
}

/// What the group has of one named thing, for a list of the shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// An item byte: not zero means the group has it.
    Item(u8),
    /// A flag bit: set means the group has it.
    Flag(bool),
    /// A counter's total.
    Amount(u32),
    /// A region with bytes that have no name: all its bytes, in hex.
    Bytes(String),
}

/// One line of a list of the shared state: a name and what the group has of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The item's, flag's, counter's or region's name.
    pub name: String,
    /// What the group has.
    pub holding: Holding,
}

/// The names of one game's shared bytes, built once from its regions and labels.
#[derive(Debug, Clone, Default)]
pub struct Names {
    regions: Vec<RegionNames>,
}

#[derive(Debug, Clone)]
struct RegionNames {
    /// The region's name: its description (cut), or its addresses.
    title: String,
    len: usize,
    counter: Option<Counter>,
    /// Named bytes by offset, in order (for [`Names::inventory`]).
    bytes: BTreeMap<u16, ByteNames>,
}

#[derive(Debug, Clone)]
enum ByteNames {
    Item(String),
    Bits([Option<String>; 8]),
}

impl ByteNames {
    /// Whether every bit of the byte has a name.
    fn is_whole(&self) -> bool {
        match self {
            ByteNames::Item(_) => true,
            ByteNames::Bits(bits) => bits.iter().all(Option::is_some),
        }
    }
}

impl Names {
    /// The names of a game with these regions and labels. Labels that do not fit (a
    /// region it does not have, a counter, a second name for a byte or bit) are left
    /// out: the first name of a byte or bit counts.
    pub fn new(regions: &[RegionInfo], labels: &[Label]) -> Names {
        let mut names: Vec<RegionNames> = regions
            .iter()
            .map(|r| RegionNames {
                title: if r.description.trim().is_empty() {
                    if r.start == r.end {
                        format!("{:04x}", r.start)
                    } else {
                        format!("{:04x}-{:04x}", r.start, r.end)
                    }
                } else {
                    cut(&printable(&r.description), MAX_TITLE_CHARS)
                },
                len: r.len(),
                counter: r.counter(),
                bytes: BTreeMap::new(),
            })
            .collect();
        for label in labels {
            let Some(region) = names.get_mut(usize::from(label.region)) else {
                continue;
            };
            if region.counter.is_some() || usize::from(label.offset) >= region.len {
                continue;
            }
            let name = printable(&label.name);
            let byte = region.bytes.entry(label.offset);
            match label.bit {
                None => {
                    byte.or_insert(ByteNames::Item(name));
                }
                Some(bit @ 0..=7) => {
                    let named = byte.or_insert_with(|| ByteNames::Bits(Default::default()));
                    if let ByteNames::Bits(bits) = named {
                        bits[usize::from(bit)].get_or_insert(name);
                    }
                }
                Some(_) => {}
            }
        }
        Names { regions: names }
    }

    /// Whether region `region` is a counter (its changes are read against all its
    /// bytes, not one at a time).
    pub fn is_counter(&self, region: u16) -> bool {
        self.regions
            .get(usize::from(region))
            .is_some_and(|r| r.counter.is_some())
    }

    /// What `change` did, given `before`, the bytes of its region before it. Bytes the
    /// change leaves as they were say nothing.
    pub fn change(&self, change: &Change, before: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(region) = self.regions.get(usize::from(change.region)) else {
            return events;
        };
        if let Some(counter) = region.counter {
            let mut after = before.to_vec();
            apply(&mut after, change);
            let value = counter.decode(&after);
            if value != counter.decode(before) {
                events.push(Event::Set {
                    name: region.title.clone(),
                    value,
                });
            }
            return events;
        }
        let bytes = change.values.iter().zip(&change.masks);
        for (offset, (&value, &mask)) in (change.offset..).zip(bytes) {
            let Some(&old) = before.get(usize::from(offset)) else {
                break;
            };
            let new = merge_byte(old, value, mask);
            if new == old {
                continue;
            }
            let unnamed = match region.bytes.get(&offset) {
                Some(ByteNames::Item(name)) => {
                    events.push(match (old, new) {
                        (0, _) => Event::Got(name.clone()),
                        (_, 0) => Event::Used(name.clone()),
                        _ => Event::Set {
                            name: name.clone(),
                            value: u32::from(new),
                        },
                    });
                    false
                }
                Some(ByteNames::Bits(bits)) => {
                    let mut unnamed = false;
                    for (bit, name) in bits.iter().enumerate() {
                        let mask = 1u8 << bit;
                        match name {
                            _ if (old ^ new) & mask == 0 => {}
                            Some(name) if new & mask != 0 => events.push(Event::Got(name.clone())),
                            Some(name) => events.push(Event::Used(name.clone())),
                            None => unnamed = true,
                        }
                    }
                    unnamed
                }
                None => true,
            };
            if unnamed {
                events.push(Event::Unnamed {
                    region: region.title.clone(),
                    offset: (region.len > 1).then_some(offset),
                    value: new,
                });
            }
        }
        events
    }

    /// What `changes` did, applied in order to `state` (one byte vector per region,
    /// updated in place). Changes that do not fit the state are skipped.
    pub fn changes(&self, state: &mut [Vec<u8>], changes: &[Change]) -> Vec<Event> {
        let mut events = Vec::new();
        for change in changes {
            if let Some(bytes) = state.get_mut(usize::from(change.region)) {
                events.extend(self.change(change, bytes));
                apply(bytes, change);
            }
        }
        events
    }

    /// What a counter operation did; nothing when it changed nothing (the bounds cut
    /// it off) or the region is not a counter.
    pub fn count(&self, count: &Count) -> Option<Event> {
        let region = self.regions.get(usize::from(count.region))?;
        (region.counter.is_some() && count.amount != 0).then(|| Event::Amount {
            name: region.title.clone(),
            amount: count.amount,
            total: count.total,
        })
    }

    /// The shared state `state` (one byte vector per region) the way a player thinks of
    /// it, region by region: counters with their totals, named items and flags with
    /// whether the group has them, and for each region with bytes or bits that have no
    /// name, the region's bytes in hex.
    pub fn inventory(&self, state: &[Vec<u8>]) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (region, bytes) in self.regions.iter().zip(state) {
            if let Some(counter) = region.counter {
                entries.push(Entry {
                    name: region.title.clone(),
                    holding: Holding::Amount(counter.decode(bytes)),
                });
                continue;
            }
            for (&offset, named) in &region.bytes {
                let byte = bytes.get(usize::from(offset)).copied().unwrap_or(0);
                match named {
                    ByteNames::Item(name) => entries.push(Entry {
                        name: name.clone(),
                        holding: Holding::Item(byte),
                    }),
                    ByteNames::Bits(bits) => {
                        for (bit, name) in bits.iter().enumerate() {
                            if let Some(name) = name {
                                entries.push(Entry {
                                    name: name.clone(),
                                    holding: Holding::Flag(byte & (1 << bit) != 0),
                                });
                            }
                        }
                    }
                }
            }
            let whole =
                region.bytes.len() == region.len && region.bytes.values().all(ByteNames::is_whole);
            if !whole {
                entries.push(Entry {
                    name: region.title.clone(),
                    holding: Holding::Bytes(crate::hex::encode(bytes)),
                });
            }
        }
        entries
    }
}

/// One player's events as one line of at most [`MAX_LINE_CHARS`]: "alice got the
/// boots and the lamp, used the key, coins +3". See [`line_within`].
pub fn line(player: &str, events: &[Event]) -> Option<String> {
    line_within(player, events, MAX_LINE_CHARS)
}

/// One player's events (a burst, in the order they happened) as one line of at most
/// `max_chars` characters; `None` when they add up to nothing. Repeats are merged:
/// an item got twice is listed once, a counter's amounts are added up (and left out
/// when they cancel), an item set twice shows its last value, and the bytes of one
/// region without names show as one, or as "REGION: N bytes changed". The line lists
/// what was got, then what was used, then amounts, values and bytes; what does not fit
/// ends it as "and N more".
pub fn line_within(player: &str, events: &[Event], max_chars: usize) -> Option<String> {
    let pieces = merge(events);
    (!pieces.is_empty()).then(|| fit(player, &pieces, max_chars))
}

/// One event as a phrase, for a list of recent changes: "alice got the boots", with its
/// age when given: "alice got the boots, 12 s ago". At most [`MAX_LINE_CHARS`] before
/// the age.
pub fn phrase(player: &str, event: &Event, age: Option<Duration>) -> String {
    let text = fit(player, &[piece(event)], MAX_LINE_CHARS);
    match age {
        Some(age) => format!("{text}, {}", ago(age)),
        None => text,
    }
}

/// How long ago, in words: "just now", "12 s ago", "3 min ago", "2 h ago", "4 d ago".
pub fn ago(age: Duration) -> String {
    match age.as_secs() {
        0 => "just now".to_string(),
        s @ 1..=59 => format!("{s} s ago"),
        s @ 60..=3599 => format!("{} min ago", s / 60),
        s @ 3600..=86_399 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// A part of a line: something got or used (listed after one verb), or a clause of
/// its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Got(String),
    Used(String),
    Clause(String),
}

/// The piece of one event, without merging.
fn piece(event: &Event) -> Piece {
    match event {
        Event::Got(name) => Piece::Got(the(&printable(name))),
        Event::Used(name) => Piece::Used(the(&printable(name))),
        Event::Amount { name, amount, .. } => {
            Piece::Clause(format!("{} {amount:+}", printable(name)))
        }
        Event::Set { name, value } => Piece::Clause(format!("{} set to {value}", printable(name))),
        Event::Unnamed {
            region,
            offset,
            value,
        } => Piece::Clause(match offset {
            Some(offset) => format!("{} byte {offset} = 0x{value:02x}", printable(region)),
            None => format!("{} = 0x{value:02x}", printable(region)),
        }),
    }
}

/// Merges a burst's repeats (see [`line_within`]) into pieces, in the order of the
/// line. Linear in the events: a restored state can change thousands of bytes at once.
fn merge(events: &[Event]) -> Vec<Piece> {
    let mut merged: Vec<Event> = Vec::new();
    // Where each thing's first event is in `merged`.
    let mut first: HashMap<(u8, &str, Option<u16>), usize> = HashMap::new();
    for event in events {
        let Some(&at) = first.get(&key(event)) else {
            first.insert(key(event), merged.len());
            merged.push(event.clone());
            continue;
        };
        match (&mut merged[at], event) {
            (
                Event::Amount {
                    amount: sum,
                    total: last,
                    ..
                },
                Event::Amount { amount, total, .. },
            ) => {
                *sum = sum.saturating_add(*amount);
                *last = *total;
            }
            (Event::Set { value: last, .. }, Event::Set { value, .. }) => *last = *value,
            (Event::Unnamed { value: last, .. }, Event::Unnamed { value, .. }) => *last = *value,
            // Got or used again.
            _ => {}
        }
    }
    merged.retain(|e| !matches!(e, Event::Amount { amount: 0, .. }));
    // A stable sort keeps the order of each kind.
    merged.sort_by_key(|e| key(e).0);
    let mut bytes_of: HashMap<&str, usize> = HashMap::new();
    for e in &merged {
        if let Event::Unnamed { region, .. } = e {
            *bytes_of.entry(region).or_default() += 1;
        }
    }
    let mut pieces = Vec::new();
    for e in &merged {
        match e {
            // Several bytes of a region: one clause where its first byte was (the
            // count is 0 once said).
            Event::Unnamed { region, .. } if bytes_of[region.as_str()] != 1 => {
                if let Some(n) = bytes_of.insert(region, 0).filter(|&n| n > 0) {
                    pieces.push(Piece::Clause(format!(
                        "{}: {n} bytes changed",
                        printable(region)
                    )));
                }
            }
            _ => pieces.push(piece(e)),
        }
    }
    pieces
}

/// What makes two events of a burst about the same thing, with the kind first (its
/// rank in the line: got, used, amounts, values, bytes).
fn key(event: &Event) -> (u8, &str, Option<u16>) {
    match event {
        Event::Got(name) => (0, name, None),
        Event::Used(name) => (1, name, None),
        Event::Amount { name, .. } => (2, name, None),
        Event::Set { name, .. } => (3, name, None),
        Event::Unnamed { region, offset, .. } => (4, region, *offset),
    }
}

/// The line of as many of `pieces` as fit in `max_chars` (at least one, cut if it
/// alone is too long).
fn fit(player: &str, pieces: &[Piece], max_chars: usize) -> String {
    let player = printable(player);
    let mut best = render(&player, &pieces[..1], pieces.len() - 1);
    for shown in 2..=pieces.len() {
        let text = render(&player, &pieces[..shown], pieces.len() - shown);
        if text.chars().count() > max_chars {
            break;
        }
        best = text;
    }
    cut(&best, max_chars)
}

/// "PLAYER got A and B, used C, CLAUSE" and, when `more` pieces are left out, lists
/// joined by commas only and " and N more" at the end.
fn render(player: &str, pieces: &[Piece], more: usize) -> String {
    let list = |items: Vec<&str>| -> String {
        match items.as_slice() {
            [.., last] if more == 0 && items.len() > 1 => {
                format!("{} and {last}", items[..items.len() - 1].join(", "))
            }
            _ => items.join(", "),
        }
    };
    let mut got = Vec::new();
    let mut used = Vec::new();
    let mut others = Vec::new();
    for p in pieces {
        match p {
            Piece::Got(n) => got.push(n.as_str()),
            Piece::Used(n) => used.push(n.as_str()),
            Piece::Clause(c) => others.push(c.clone()),
        }
    }
    let mut clauses = Vec::new();
    if !got.is_empty() {
        clauses.push(format!("got {}", list(got)));
    }
    if !used.is_empty() {
        clauses.push(format!("used {}", list(used)));
    }
    clauses.extend(others);
    let verb_first = matches!(pieces.first(), Some(Piece::Got(_) | Piece::Used(_)));
    let mut text = format!(
        "{player}{} {}",
        if verb_first { "" } else { ":" },
        clauses.join(", ")
    );
    if more > 0 {
        text += &format!(" and {more} more");
    }
    text
}

/// A name with "the" in front, unless it has an article already or starts with a
/// capital or a digit (a proper name, a number).
fn the(name: &str) -> String {
    let lower = name.to_lowercase();
    let bare = ["the ", "a ", "an "].iter().any(|a| lower.starts_with(a))
        || name.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit());
    if bare {
        name.to_string()
    } else {
        format!("the {name}")
    }
}

/// `text` cut to at most `max` characters, ending in "…" when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's names (games/demo/demo.regions) plus a region without names, one
    /// without a description and a Galious-style shield byte.
    const GAME: &str = "r
E010 E010 items
E011 E011 crown
E012 E012 harp
counter: E020 E021 bcd coins
E030 E037 world items (bit flags)
E040 E040
E050 E050 shield
flag: E010 bit 0 sword
flag: E010 bit 1 shield
flag: E010 bit 2 key
flag: E010 bit 3 lamp
flag: E010 bit 4 map
flag: E010 bit 5 boots
flag: E010 bit 6 ring
flag: E010 bit 7 potion
item: E011 crown
item: E012 harp
flag: E031 bit 2 world 1 key
item: E050 shield strength
";

    fn names() -> Names {
        let def = crate::regions::parse("g", GAME).unwrap();
        let regions: Vec<RegionInfo> = def.regions.iter().map(|r| r.info()).collect();
        Names::new(&regions, &def.labels())
    }

    fn got(n: &str) -> Event {
        Event::Got(n.into())
    }

    fn used(n: &str) -> Event {
        Event::Used(n.into())
    }

    fn coins(amount: i64, total: u32) -> Event {
        Event::Amount {
            name: "coins".into(),
            amount,
            total,
        }
    }

    #[test]
    fn flags_are_got_when_set_and_used_when_cleared() {
        let n = names();
        // Sword and boots set, key cleared; the shield bit is masked but unchanged.
        let change = Change {
            region: 0,
            offset: 0,
            values: vec![0b0010_0011],
            masks: vec![0b0010_0111],
        };
        assert_eq!(
            n.change(&change, &[0b0000_0110]),
            [got("sword"), used("key"), got("boots")]
        );
        assert!(n.change(&change, &[0b0010_0011]).is_empty(), "no change");
    }

    #[test]
    fn items_are_got_used_and_set() {
        let n = names();
        let to = |region, value| Change::bytes(region, 0, vec![value]);
        assert_eq!(n.change(&to(1, 1), &[0]), [got("crown")]);
        assert_eq!(n.change(&to(2, 0), &[7]), [used("harp")]);
        assert_eq!(
            n.change(&to(6, 3), &[2]),
            [Event::Set {
                name: "shield strength".into(),
                value: 3
            }]
        );
    }

    #[test]
    fn counters_are_amounts_and_whole_writes_set_them() {
        let n = names();
        let count = |region, amount| Count {
            region,
            amount,
            total: 12,
        };
        assert_eq!(n.count(&count(3, 3)), Some(coins(3, 12)));
        assert_eq!(n.count(&count(3, 0)), None, "cut off by the bounds");
        assert_eq!(n.count(&count(0, 3)), None, "not a counter");
        assert_eq!(n.count(&count(9, 3)), None, "no such region");
        // A restored state writes the counter's bytes: 0x20 0x01 is 120 in BCD.
        assert_eq!(
            n.change(&Change::bytes(3, 0, vec![0x20, 0x01]), &[0x05, 0x00]),
            [Event::Set {
                name: "coins".into(),
                value: 120
            }]
        );
        assert!(n
            .change(&Change::bytes(3, 0, vec![0x05]), &[0x05, 0x00])
            .is_empty());
    }

    #[test]
    fn unnamed_bytes_and_bits_show_their_value() {
        let n = names();
        // Byte 3 of a region without names, and an unnamed bit next to a named one.
        let change = Change {
            region: 4,
            offset: 1,
            values: vec![0b1000_0100, 0, 0x42],
            masks: vec![0b1000_0100, 0, 0xff],
        };
        assert_eq!(
            n.change(&change, &[0; 8]),
            [
                got("world 1 key"),
                Event::Unnamed {
                    region: "world items (bit flags)".into(),
                    offset: Some(1),
                    value: 0x84
                },
                Event::Unnamed {
                    region: "world items (bit flags)".into(),
                    offset: Some(3),
                    value: 0x42
                },
            ]
        );
        // A region of one byte without a description is named by its address.
        let e = n.change(&Change::bytes(5, 0, vec![0xa0]), &[0]);
        assert_eq!(
            e,
            [Event::Unnamed {
                region: "e040".into(),
                offset: None,
                value: 0xa0
            }]
        );
        assert_eq!(line("bob", &e).unwrap(), "bob: e040 = 0xa0");
        let e = n.change(&Change::bytes(4, 3, vec![0x42]), &[0; 8]);
        assert_eq!(
            line("bob", &e).unwrap(),
            "bob: world items (bit flags) byte 3 = 0x42"
        );
    }

    #[test]
    fn changes_apply_in_order_to_the_state() {
        let n = names();
        let mut state = vec![
            vec![0],
            vec![0],
            vec![0],
            vec![0, 0],
            vec![0; 8],
            vec![0],
            vec![0],
        ];
        let changes = [
            Change::bytes(0, 0, vec![0b1000]),
            Change::bytes(0, 0, vec![0b1001]),
            Change::bytes(1, 0, vec![1]),
            // Beyond the state: skipped, not a panic.
            Change::bytes(40, 0, vec![1]),
            Change::bytes(1, 5, vec![1]),
        ];
        assert_eq!(
            n.changes(&mut state, &changes),
            [got("lamp"), got("sword"), got("crown")]
        );
        assert_eq!((state[0][0], state[1][0]), (0b1001, 1));
    }

    #[test]
    fn a_burst_reads_as_one_line() {
        let events = [
            got("boots"),
            coins(1, 11),
            got("lamp"),
            used("key"),
            coins(2, 13),
            got("boots"),
        ];
        assert_eq!(
            line("alice", &events).unwrap(),
            "alice got the boots and the lamp, used the key, coins +3"
        );
        assert_eq!(line("alice", &[got("map")]).unwrap(), "alice got the map");
        assert_eq!(
            line("alice", &[got("a"), got("b"), got("c")]).unwrap(),
            "alice got the a, the b and the c"
        );
        assert_eq!(line("alice", &[coins(-10, 0)]).unwrap(), "alice: coins -10");
        // Amounts that cancel say nothing; nothing at all is no line.
        assert_eq!(line("alice", &[coins(1, 1), coins(-1, 0)]), None);
        assert_eq!(line("alice", &[]), None);
        let set = |value| Event::Set {
            name: "shield".into(),
            value,
        };
        assert_eq!(
            line("alice", &[set(2), coins(1, 1), set(3)]).unwrap(),
            "alice: coins +1, shield set to 3"
        );
    }

    #[test]
    fn many_unnamed_bytes_of_a_region_are_counted() {
        let byte = |offset, value| Event::Unnamed {
            region: "map".into(),
            offset: Some(offset),
            value,
        };
        let events = [byte(1, 1), byte(2, 2), byte(1, 3), got("key")];
        assert_eq!(
            line("bob", &events).unwrap(),
            "bob got the key, map: 2 bytes changed"
        );
        assert_eq!(
            line("bob", &[byte(1, 1), byte(1, 0x3c)]).unwrap(),
            "bob: map byte 1 = 0x3c"
        );
    }

    #[test]
    fn a_restored_state_of_many_bytes_is_one_clause() {
        // 16 KiB of bytes without names, each changed twice: merged in linear time.
        let events: Vec<Event> = (0..2 * 16384u32)
            .map(|i| Event::Unnamed {
                region: "map".into(),
                offset: Some((i % 16384) as u16),
                value: 1,
            })
            .collect();
        assert_eq!(
            line("host", &events).unwrap(),
            "host: map: 16384 bytes changed"
        );
    }

    #[test]
    fn long_bursts_are_cut_with_a_count_of_the_rest() {
        let events: Vec<Event> = (0..40).map(|i| got(&format!("item number {i}"))).collect();
        let text = line("alice", &events).unwrap();
        assert!(text.chars().count() <= MAX_LINE_CHARS, "{text}");
        assert!(
            text.starts_with("alice got the item number 0, the item number 1, "),
            "{text}"
        );
        assert!(text.ends_with(" more"), "{text}");
        let shown = text.matches("item number").count();
        assert!(
            text.ends_with(&format!(" and {} more", 40 - shown)),
            "{text}"
        );
        // One piece too long on its own is cut.
        let long = "n".repeat(64);
        let text = line_within(&"p".repeat(64), &[got(&long), got("x")], 80).unwrap();
        assert_eq!(text.chars().count(), 80);
        assert!(text.ends_with('…'), "{text}");
        assert_eq!(
            line_within("alice", &[got("boots")], 12).unwrap(),
            "alice got t…"
        );
    }

    #[test]
    fn articles_are_added_only_where_they_fit() {
        for (name, text) in [
            ("boots", "the boots"),
            ("a map", "a map"),
            ("The Crown", "The Crown"),
            ("Excalibur", "Excalibur"),
            ("3 keys", "3 keys"),
            ("an oar", "an oar"),
            ("anvil", "the anvil"),
        ] {
            assert_eq!(the(name), text);
        }
    }

    #[test]
    fn phrases_with_their_age() {
        assert_eq!(
            phrase("alice", &got("boots"), Some(Duration::from_secs(12))),
            "alice got the boots, 12 s ago"
        );
        assert_eq!(phrase("alice", &coins(3, 9), None), "alice: coins +3");
        assert_eq!(phrase("alice", &coins(0, 9), None), "alice: coins +0");
        for (secs, text) in [
            (0, "just now"),
            (59, "59 s ago"),
            (60, "1 min ago"),
            (3599, "59 min ago"),
            (7200, "2 h ago"),
            (86_400 * 3, "3 d ago"),
        ] {
            assert_eq!(ago(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn text_from_outside_is_made_printable() {
        let regions = [RegionInfo::bytes(0xe000, 0xe001, "a\u{1b}[2Jb")];
        let labels = [Label {
            region: 0,
            offset: 0,
            bit: None,
            name: "x\u{202e}y".into(),
        }];
        let n = Names::new(&regions, &labels);
        let events = n.change(&Change::bytes(0, 0, vec![1, 2]), &[0, 0]);
        let text = line("m\u{7}e", &events).unwrap();
        assert_eq!(
            text,
            "m\\u{7}e got the x\\u{202e}y, a\\u{1b}[2Jb byte 1 = 0x02"
        );
        assert!(!text.chars().any(char::is_control));
        // Events made elsewhere go through the filter too.
        assert_eq!(line("p", &[got("\n")]).unwrap(), "p got the \\n");
    }

    #[test]
    fn labels_that_do_not_fit_are_left_out() {
        let regions = [
            RegionInfo::bytes(0xe000, 0xe000, "one"),
            RegionInfo {
                kind: crate::protocol::RegionKind::Counter(Counter::full(
                    crate::counter::Encoding::Binary,
                    1,
                )),
                ..RegionInfo::bytes(0xe001, 0xe001, "c")
            },
        ];
        let label = |region, offset, bit, name: &str| Label {
            region,
            offset,
            bit,
            name: name.into(),
        };
        let labels = [
            label(0, 0, None, "first"),
            label(0, 0, None, "second"),
            label(0, 0, Some(1), "bit of an item"),
            label(0, 1, None, "past the end"),
            label(0, 0, Some(9), "no such bit"),
            label(1, 0, None, "on a counter"),
            label(7, 0, None, "no such region"),
        ];
        let n = Names::new(&regions, &labels);
        assert_eq!(
            n.change(&Change::bytes(0, 0, vec![2]), &[0]),
            [got("first")]
        );
        assert_eq!(
            n.inventory(&[vec![2], vec![5]]),
            [
                Entry {
                    name: "first".into(),
                    holding: Holding::Item(2)
                },
                Entry {
                    name: "c".into(),
                    holding: Holding::Amount(5)
                },
            ]
        );
    }

    #[test]
    fn inventory_lists_names_counters_and_unnamed_bytes() {
        let n = names();
        let state = vec![
            vec![0b0010_0001],
            vec![1],
            vec![0],
            vec![0x99, 0x01],
            vec![0, 0b100, 0, 0, 0, 0, 0, 0x10],
            vec![0xa0],
            vec![3],
        ];
        let entries = n.inventory(&state);
        let flags: Vec<_> = entries[..8]
            .iter()
            .map(|e| (e.name.as_str(), e.holding.clone()))
            .collect();
        assert_eq!(flags[0], ("sword", Holding::Flag(true)));
        assert_eq!(flags[1], ("shield", Holding::Flag(false)));
        assert_eq!(flags[5], ("boots", Holding::Flag(true)));
        let entry = |name: &str, holding| Entry {
            name: name.into(),
            holding,
        };
        assert_eq!(
            entries[8..],
            [
                entry("crown", Holding::Item(1)),
                entry("harp", Holding::Item(0)),
                entry("coins", Holding::Amount(199)),
                entry("world 1 key", Holding::Flag(true)),
                entry(
                    "world items (bit flags)",
                    Holding::Bytes("0004000000000010".into())
                ),
                entry("e040", Holding::Bytes("a0".into())),
                entry("shield strength", Holding::Item(3)),
            ]
        );
    }
}
