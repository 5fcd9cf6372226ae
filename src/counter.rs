//! Counters: shared amounts that several players add to and spend from (coins, arrows,
//! keys). Merging their bytes bit by bit would lose one of two pickups made at the same
//! moment (both games write "old + 1"), so a counter changes by amounts instead: a
//! player sends what its game added or spent since the value it last had from the
//! group, the server adds the amounts in the order it receives them, keeps the total
//! between the counter's bounds, and sends the total to everyone (docs/architecture.md,
//! "Counters").
//!
//! The server still keeps a counter as the bytes the game stores (so joining, saved
//! state and the desync check need nothing new); this module turns those bytes into a
//! number and back. Everything here is pure.

use serde::{Deserialize, Serialize};

/// Largest counter, in bytes: every value fits in a `u32` (8 BCD digits or 32 bits).
pub const MAX_COUNTER_BYTES: usize = 4;

/// How a counter's number is stored in its bytes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Packed BCD, two decimal digits per byte, low byte first: 0x99 0x01 is 199 (as
    /// The Maze of Galious stores its coins).
    Bcd,
    /// Unsigned binary, low byte first (the Z80's order).
    Binary,
    /// Packed BCD, high byte first.
    BcdBigEndian,
    /// Unsigned binary, high byte first.
    BinaryBigEndian,
}

impl Encoding {
    /// Every encoding with its name in `.regions` files.
    pub const ALL: [(&'static str, Encoding); 4] = [
        ("bcd", Encoding::Bcd),
        ("binary", Encoding::Binary),
        ("bcd-be", Encoding::BcdBigEndian),
        ("binary-be", Encoding::BinaryBigEndian),
    ];

    /// The encoding called `name` in `.regions` files.
    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, e)| e)
    }

    /// Its name in `.regions` files.
    pub fn name(self) -> &'static str {
        Encoding::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map_or("", |(n, _)| n)
    }

    fn is_bcd(self) -> bool {
        matches!(self, Encoding::Bcd | Encoding::BcdBigEndian)
    }

    fn big_endian(self) -> bool {
        matches!(self, Encoding::BcdBigEndian | Encoding::BinaryBigEndian)
    }

    /// The number hooks.tcl knows it by: bit 0 set for BCD, bit 1 for high byte first.
    pub fn tcl_code(self) -> u8 {
        u8::from(self.is_bcd()) | (u8::from(self.big_endian()) << 1)
    }

    /// What one byte counts for: 100 for BCD, 256 for binary.
    fn base(self) -> u64 {
        if self.is_bcd() {
            100
        } else {
            256
        }
    }

    /// The largest number `width` bytes can hold (for at most [`MAX_COUNTER_BYTES`]).
    pub fn capacity(self, width: usize) -> u32 {
        let all = (0..width.min(MAX_COUNTER_BYTES)).fold(1u64, |n, _| n * self.base());
        (all - 1) as u32
    }
}

/// A counter region: how its number is stored and the bounds the server keeps it in.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// How the number is stored.
    pub encoding: Encoding,
    /// Smallest total: spending below it leaves the counter at it.
    pub min: u32,
    /// Largest total: adding above it leaves the counter at it.
    pub max: u32,
}

impl Counter {
    /// A counter of `width` bytes with the widest bounds its encoding allows.
    pub fn full(encoding: Encoding, width: usize) -> Counter {
        Counter {
            encoding,
            min: 0,
            max: encoding.capacity(width),
        }
    }

    /// Checks that a counter of `width` bytes can be one like this. Returns a lowercase
    /// reason when it cannot.
    pub fn check(&self, width: usize) -> Result<(), String> {
        if width == 0 || width > MAX_COUNTER_BYTES {
            return Err(format!(
                "a counter is 1 to {MAX_COUNTER_BYTES} bytes long, this one {width}"
            ));
        }
        let capacity = self.encoding.capacity(width);
        if self.max > capacity {
            return Err(format!(
                "max {} does not fit in {width} {} byte{}: the largest is {capacity}",
                self.max,
                self.encoding.name(),
                if width == 1 { "" } else { "s" }
            ));
        }
        if self.min > self.max {
            return Err(format!("min {} is above max {}", self.min, self.max));
        }
        Ok(())
    }

    /// The number stored in `bytes`. A BCD digit above 9 (which a game using `daa`
    /// never writes) counts for its value, as hooks.tcl reads it too; the result
    /// saturates rather than overflow.
    pub fn decode(&self, bytes: &[u8]) -> u32 {
        let digits = |b: u8| -> u64 {
            if self.encoding.is_bcd() {
                u64::from(b >> 4) * 10 + u64::from(b & 0x0f)
            } else {
                u64::from(b)
            }
        };
        let mut value = 0u64;
        let mut scale = 1u64;
        let mut add = |b: u8| {
            value = value.saturating_add(digits(b).saturating_mul(scale));
            scale = scale.saturating_mul(self.encoding.base());
        };
        if self.encoding.big_endian() {
            bytes.iter().rev().for_each(|&b| add(b));
        } else {
            bytes.iter().for_each(|&b| add(b));
        }
        value.min(u64::from(u32::MAX)) as u32
    }

    /// The bytes that store `value` in `width` bytes (digits beyond the width dropped).
    pub fn encode(&self, value: u32, width: usize) -> Vec<u8> {
        let base = self.encoding.base() as u32;
        let mut rest = value;
        let mut out: Vec<u8> = (0..width)
            .map(|_| {
                let d = rest % base;
                rest /= base;
                if self.encoding.is_bcd() {
                    (((d / 10) << 4) | (d % 10)) as u8
                } else {
                    d as u8
                }
            })
            .collect();
        if self.encoding.big_endian() {
            out.reverse();
        }
        out
    }

    /// `value` kept between the bounds.
    pub fn clamp(&self, value: i64) -> u32 {
        value.clamp(i64::from(self.min), i64::from(self.max)) as u32
    }

    /// What a game's write from `old` to `new` bytes added (negative: spent).
    pub fn amount(&self, old: &[u8], new: &[u8]) -> i64 {
        i64::from(self.decode(new)) - i64::from(self.decode(old))
    }
}

/// One change to a counter, as a player sends it (`ClientMsg::Counts`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    /// Add `amount` to the counter of region `region` (negative: spend), against the
    /// value the player last had from the group. The server keeps the result between
    /// the counter's bounds.
    Add {
        /// Index of the counter's region.
        region: u16,
        /// What the game added since (negative: spent).
        amount: i64,
    },
    /// Set the counter to `total`, only if no player changed it since the server
    /// started. A player whose server came back empty sends it to put back the total
    /// it knew; when several players do so at once, the first one counts and the
    /// others change nothing, so the total is not counted twice.
    Seed {
        /// Index of the counter's region.
        region: u16,
        /// The total the player knew.
        total: u32,
    },
}

impl CounterOp {
    /// Index of the counter's region.
    pub fn region(&self) -> u16 {
        match *self {
            CounterOp::Add { region, .. } | CounterOp::Seed { region, .. } => region,
        }
    }

    /// The total after this operation, from `total`, for a counter that no player
    /// changed since the server started when `untouched`.
    pub fn apply(&self, counter: &Counter, total: u32, untouched: bool) -> u32 {
        match *self {
            CounterOp::Add { amount, .. } => counter.clamp(i64::from(total).saturating_add(amount)),
            CounterOp::Seed { total: seed, .. } if untouched => counter.clamp(i64::from(seed)),
            CounterOp::Seed { .. } => total,
        }
    }
}

/// One counter change as the server sequenced it (`ServerMsg::Counted`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Index of the counter's region.
    pub region: u16,
    /// What the total changed by: the player's amount, less what the bounds cut off.
    pub amount: i64,
    /// The total afterwards.
    pub total: u32,
}

/// A counter value to write into an emulator: the group's value, onto which the hooks
/// put back what the game added or spent and has not reported yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterWrite {
    /// Index of the counter's region.
    pub region: u16,
    /// The group's value, own amounts in flight included.
    pub value: u32,
}

/// A counter's bytes before and after the game wrote it, as one flush of the hooks
/// found them (the whole counter, read once the writes settled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// Index of the counter's region.
    pub region: u16,
    /// The bytes as last synced (the shadow), or, while the group's value waits to
    /// be written (until the game waits in HALT: `apply_counts` in hooks.tcl), that
    /// value.
    pub old: Vec<u8>,
    /// The bytes the game left, or that value plus what the game added.
    pub new: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcd_is_two_digits_a_byte_low_byte_first() {
        let c = Counter::full(Encoding::Bcd, 2);
        assert_eq!(c.max, 9999);
        assert_eq!(c.decode(&[0x99, 0x01]), 199);
        assert_eq!(c.encode(199, 2), vec![0x99, 0x01]);
        assert_eq!(c.encode(100, 2), vec![0x00, 0x01]);
        let be = Counter::full(Encoding::BcdBigEndian, 2);
        assert_eq!(be.decode(&[0x01, 0x99]), 199);
        assert_eq!(be.encode(199, 2), vec![0x01, 0x99]);
        // Digits above 9 count for their value, as hooks.tcl reads them.
        assert_eq!(c.decode(&[0x0a, 0x00]), 10);
        assert_eq!(c.decode(&[0xff, 0xff]), 165 * 100 + 165);
    }

    #[test]
    fn binary_is_the_z80_order_unless_told() {
        let c = Counter::full(Encoding::Binary, 2);
        assert_eq!(c.max, 65535);
        assert_eq!(c.decode(&[0x34, 0x12]), 0x1234);
        assert_eq!(c.encode(0x1234, 2), vec![0x34, 0x12]);
        let be = Counter::full(Encoding::BinaryBigEndian, 4);
        assert_eq!(be.max, u32::MAX);
        assert_eq!(be.encode(0x0102_0304, 4), vec![1, 2, 3, 4]);
        assert_eq!(be.decode(&[1, 2, 3, 4]), 0x0102_0304);
    }

    #[test]
    fn every_value_round_trips() {
        for (_, e) in Encoding::ALL {
            for width in 1..=2 {
                let c = Counter::full(e, width);
                for v in 0..=c.max {
                    assert_eq!(c.decode(&c.encode(v, width)), v, "{e:?} {width} {v}");
                }
            }
            let c = Counter::full(e, 4);
            for v in [0, 1, 99, 100, 9_999_999, c.max] {
                assert_eq!(c.decode(&c.encode(v, 4)), v);
            }
        }
    }

    #[test]
    fn bounds_are_checked_and_kept() {
        let c = Counter {
            encoding: Encoding::Bcd,
            min: 5,
            max: 999,
        };
        assert!(c.check(2).is_ok());
        assert_eq!(c.clamp(-3), 5);
        assert_eq!(c.clamp(1000), 999);
        assert_eq!(c.clamp(i64::MAX), 999);
        assert_eq!(
            Counter { max: 100, ..c }.check(1).unwrap_err(),
            "max 100 does not fit in 1 bcd byte: the largest is 99"
        );
        assert_eq!(
            Counter {
                min: 7,
                max: 6,
                ..c
            }
            .check(1)
            .unwrap_err(),
            "min 7 is above max 6"
        );
        assert!(Counter::full(Encoding::Binary, 5).check(5).is_err());
        assert!(Counter::full(Encoding::Binary, 0).check(0).is_err());
    }

    #[test]
    fn operations_add_clamp_and_seed_once() {
        let c = Counter {
            encoding: Encoding::Binary,
            min: 0,
            max: 200,
        };
        let add = |amount| CounterOp::Add { region: 0, amount };
        assert_eq!(add(5).apply(&c, 10, false), 15);
        assert_eq!(add(-20).apply(&c, 10, false), 0);
        assert_eq!(add(i64::MAX).apply(&c, 10, false), 200);
        assert_eq!(add(i64::MIN).apply(&c, 10, false), 0);
        let seed = CounterOp::Seed {
            region: 0,
            total: 50,
        };
        assert_eq!(seed.apply(&c, 0, true), 50);
        assert_eq!(seed.apply(&c, 3, false), 3);
        assert_eq!(seed.region(), 0);
        assert_eq!(c.amount(&[10], &[7]), -3);
    }

    #[test]
    fn encodings_have_names_and_tcl_codes() {
        for (name, e) in Encoding::ALL {
            assert_eq!(Encoding::from_name(name), Some(e));
            assert_eq!(e.name(), name);
        }
        assert_eq!(Encoding::from_name("BCD"), None);
        let codes: Vec<u8> = Encoding::ALL.iter().map(|(_, e)| e.tcl_code()).collect();
        assert_eq!(codes, vec![1, 0, 3, 2]);
    }
}
