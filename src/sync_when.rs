//! The `sync-when:` condition language: when a game is in its shared part.
//!
//! A regions file's `sync-when:` line (see [`crate::regions`]) says which of the game's
//! own bytes tell that the player is in the game proper, e.g. `e001 == 03 and e002 & 80`.
//! The server sends the condition as text; each player parses it here and the hooks
//! evaluate it inside openMSX (`Hooks::set_gate`). [`SyncWhen`]'s `Display` is the
//! normalised form that [`parse_sync_when`] reads back.
//!
//! A condition may end in `for N frames`: the settle period, how long the condition
//! must hold without a break before the player syncs (docs/architecture.md, "The settle
//! period"). Without it, [`DEFAULT_SETTLE_FRAMES`].

use crate::protocol::MAX_TEXT_BYTES;
use std::fmt;

/// Settle period of a condition without `for N frames`: one second at 60 frames a
/// second (1.2 s at 50). Games that set their mode byte before they initialise their
/// variables do it a frame or a few later (the slowest pattern the tests check: ten);
/// a player loses nothing that matters by syncing a second after the game started,
/// while a period too short lets the start-up through. Why this figure:
/// docs/architecture.md, "The settle period".
pub const DEFAULT_SETTLE_FRAMES: u32 = 60;

/// Longest settle period a regions file may ask for: a minute at 50 frames a second.
pub const MAX_SETTLE_FRAMES: u32 = 3000;

/// Parses a hex number as the original openmsx-sync's `int(x, 16)` did for sane files
/// (any case, optional `0x`), plus the `$` prefix common in MSX writing. Regions file
/// addresses are written the same way, so [`crate::regions`] uses it too. `what` names
/// the number in messages; `max` is the largest allowed value.
pub(crate) fn parse_hex(what: &str, word: &str, max: u32) -> Result<u32, String> {
    let digits = word
        .strip_prefix("0x")
        .or_else(|| word.strip_prefix("0X"))
        .or_else(|| word.strip_prefix('$'))
        .unwrap_or(word);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} '{word}' is not a hexadecimal number"));
    }
    // Leading zeros are harmless; more than 8 significant digits cannot fit in a u32.
    let significant = digits.trim_start_matches('0');
    let value = match significant {
        "" => 0,
        s if s.len() > 8 => return Err(format!("{what} '{word}' is above {max:#x}")),
        s => u32::from_str_radix(s, 16).map_err(|e| format!("{what} '{word}': {e}"))?,
    };
    if value > max {
        return Err(format!("{what} {value:#x} is above {max:#x}"));
    }
    Ok(value)
}

/// Comparison in one `sync-when:` term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<` (unsigned)
    Lt,
    /// `>` (unsigned)
    Gt,
    /// `<=` (unsigned)
    Le,
    /// `>=` (unsigned)
    Ge,
    /// `&`: true when any of the value's bits is set in memory.
    BitAnd,
}

impl Op {
    const ALL: [(&'static str, Op); 7] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("&", Op::BitAnd),
    ];

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(s, _)| s)
    }

    /// Applies the operator to a memory byte and the term's value.
    pub fn apply(self, mem: u8, value: u8) -> bool {
        match self {
            Op::Eq => mem == value,
            Op::Ne => mem != value,
            Op::Lt => mem < value,
            Op::Gt => mem > value,
            Op::Le => mem <= value,
            Op::Ge => mem >= value,
            Op::BitAnd => mem & value != 0,
        }
    }
}

/// One `ADDR OP VALUE` comparison of a `sync-when:` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// CPU address of the byte compared.
    pub addr: u16,
    /// The comparison.
    pub op: Op,
    /// The byte compared with.
    pub value: u8,
}

impl Term {
    /// Whether the term holds when the byte at `addr` is `mem`.
    pub fn eval(&self, mem: u8) -> bool {
        self.op.apply(mem, self.value)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x} {} {:02x}",
            self.addr,
            self.op.symbol(),
            self.value
        )
    }
}

/// A parsed `sync-when:` condition: true when all terms of any one group hold (`and`
/// binds tighter than `or`). Never empty, and no group is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncWhen {
    /// Groups joined by `or`; the terms inside a group are joined by `and`.
    pub any_of: Vec<Vec<Term>>,
    /// The settle period: frames the condition must hold without a break before the
    /// player syncs (`for N frames`, else [`DEFAULT_SETTLE_FRAMES`]); at most
    /// [`MAX_SETTLE_FRAMES`].
    pub frames: u32,
}

impl SyncWhen {
    /// Evaluates the condition, reading memory bytes with `read`.
    pub fn eval(&self, read: impl Fn(u16) -> u8) -> bool {
        self.any_of
            .iter()
            .any(|group| group.iter().all(|t| t.eval(read(t.addr))))
    }

    /// The addresses the condition reads, sorted, without repeats.
    pub fn addresses(&self) -> Vec<u16> {
        let mut addrs: Vec<u16> = self.any_of.iter().flatten().map(|t| t.addr).collect();
        addrs.sort_unstable();
        addrs.dedup();
        addrs
    }
}

impl fmt::Display for SyncWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.any_of.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            for (j, term) in group.iter().enumerate() {
                if j > 0 {
                    f.write_str(" and ")?;
                }
                write!(f, "{term}")?;
            }
        }
        let unit = if self.frames == 1 { "frame" } else { "frames" };
        write!(f, " for {} {unit}", self.frames)
    }
}

impl std::str::FromStr for SyncWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<SyncWhen, String> {
        parse_sync_when(s)
    }
}

/// A token of a `sync-when:` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    /// A run of letters, digits and `$`: a number or `and`/`or`.
    Word(&'a str),
    /// A run of operator characters.
    Op(&'a str),
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) | Token::Op(w) => write!(f, "'{w}'"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '$';
    let is_op = |c: char| "=!<>&|".contains(c);
    let mut tokens = Vec::new();
    let mut rest = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
    while let Some(c) = rest.chars().next() {
        let (len, word) = if is_word(c) {
            (rest.find(|c| !is_word(c)), true)
        } else if is_op(c) {
            (rest.find(|c| !is_op(c)), false)
        } else {
            return Err(format!(
                "unexpected character {c:?}; write terms like 'e001 == 03' joined by 'and' or 'or'"
            ));
        };
        let (tok, tail) = rest.split_at(len.unwrap_or(rest.len()));
        tokens.push(if word {
            Token::Word(tok)
        } else {
            Token::Op(tok)
        });
        rest = tail.trim_start_matches(|c: char| c.is_ascii_whitespace());
    }
    Ok(tokens)
}

/// Parses a `sync-when:` condition such as `e001 == 03 and e002 & 80 or c000 != 0`.
///
/// Terms are `ADDR OP VALUE`: ADDR hexadecimal 0-ffff, VALUE a hexadecimal byte (both
/// with optional `0x` or `$`), OP one of `==` `!=` `<` `>` `<=` `>=` (unsigned) and `&`
/// (true when any of VALUE's bits is set). Terms are joined by `and` and `or`, `and`
/// binding tighter. An optional `for N frames` at the end (N decimal, at most
/// [`MAX_SETTLE_FRAMES`]) sets the settle period. Clients re-parse the text they get
/// from the server with this, so anything else is refused with a message saying what
/// was expected.
pub fn parse_sync_when(text: &str) -> Result<SyncWhen, String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "condition is {} bytes long, the limit is {MAX_TEXT_BYTES}",
            text.len()
        ));
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("condition is empty; write terms like 'e001 == 03'".into());
    }
    let found = |i: usize| {
        tokens
            .get(i)
            .map_or("the end of the condition".to_string(), |t| t.to_string())
    };
    let mut any_of = vec![Vec::new()];
    let mut i = 0;
    loop {
        // ADDR
        let addr = match tokens.get(i) {
            Some(Token::Word(w)) if !matches!(*w, "and" | "or") => {
                parse_hex("address", w, 0xffff)? as u16
            }
            _ => return Err(format!("expected an address, found {}", found(i))),
        };
        // OP
        let op = match tokens.get(i + 1) {
            Some(Token::Op(s)) => match Op::ALL.iter().find(|(sym, _)| sym == s) {
                Some((_, op)) => *op,
                None => {
                    return Err(format!(
                        "unknown operator '{s}'; use one of == != < > <= >= &"
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "expected an operator (== != < > <= >= &) after address {addr:04x}, found {}",
                    found(i + 1)
                ))
            }
        };
        // VALUE
        let value = match tokens.get(i + 2) {
            Some(Token::Word(w)) if !matches!(*w, "and" | "or") => {
                parse_hex("value", w, 0xff)? as u8
            }
            _ => {
                return Err(format!(
                    "expected a value after '{addr:04x} {}', found {}",
                    op.symbol(),
                    found(i + 2)
                ))
            }
        };
        let term = Term { addr, op, value };
        // any_of always has a last group: it starts with one and only ever grows.
        if let Some(group) = any_of.last_mut() {
            group.push(term);
        }
        i += 3;
        match tokens.get(i) {
            None => break,
            Some(Token::Word("and")) => {}
            Some(Token::Word("or")) => any_of.push(Vec::new()),
            Some(Token::Word("for")) => {
                let frames = settle_period(&tokens[i + 1..])?;
                return Ok(SyncWhen { any_of, frames });
            }
            Some(_) => {
                return Err(format!(
                    "expected 'and', 'or' or 'for' after '{term}', found {}",
                    found(i)
                ))
            }
        }
        i += 1;
        if i == tokens.len() {
            return Err(format!(
                "expected a term after {}, found the end of the condition",
                found(i - 1)
            ));
        }
    }
    Ok(SyncWhen {
        any_of,
        frames: DEFAULT_SETTLE_FRAMES,
    })
}

/// The words after `for`: `N frames` (or `1 frame`), N decimal, and nothing after.
fn settle_period(rest: &[Token<'_>]) -> Result<u32, String> {
    const USAGE: &str = "write the settle period as 'for 30 frames' (decimal), at the end";
    let (n, unit) = match rest {
        [Token::Word(n), Token::Word(unit)] => (*n, *unit),
        _ => return Err(format!("after 'for': {USAGE}")),
    };
    if !matches!(unit, "frames" | "frame") {
        return Err(format!("expected 'frames' after 'for {n}', found '{unit}'"));
    }
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{n}' is not a number of frames; {USAGE}"));
    }
    match n.parse::<u32>() {
        Ok(frames) if frames <= MAX_SETTLE_FRAMES => Ok(frames),
        _ => Err(format!(
            "{n} frames is longer than the limit of {MAX_SETTLE_FRAMES} (a minute at 50 frames a second)"
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn parse_hex_rules() {
        assert_eq!(parse_hex("a", "FfFf", 0xffff), Ok(0xffff));
        assert_eq!(parse_hex("a", "0X1f", 0xff), Ok(0x1f));
        assert_eq!(parse_hex("a", "$00", 0xff), Ok(0));
        assert_eq!(parse_hex("a", "0", 0xff), Ok(0));
        assert_eq!(
            parse_hex("v", "100", 0xff),
            Err("v 0x100 is above 0xff".into())
        );
        assert_eq!(
            parse_hex("v", "ffffffff", 0xff),
            Err("v 0xffffffff is above 0xff".into())
        );
        assert!(parse_hex("v", "", 0xff).is_err());
        assert!(parse_hex("v", "0x0x1", 0xff).is_err());
        assert!(parse_hex("v", "$0x1", 0xff).is_err());
    }

    /// `count` texts of fewer than `max_pieces` of `pieces` each, for the "never panics"
    /// tests. A tiny deterministic generator, so they need no extra crate.
    pub(crate) fn junk<'a>(
        pieces: &'a [&'a str],
        max_pieces: usize,
        mut seed: u64,
        count: usize,
    ) -> impl Iterator<Item = String> + 'a {
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        (0..count).map(move |_| {
            let n = next() % max_pieces;
            (0..n).map(|_| pieces[next() % pieces.len()]).collect()
        })
    }

    #[test]
    fn sync_when_parses_and_binds_and_tighter() {
        let c = parse_sync_when("e001 == 03 and e002 & 80 or c000 != 0").unwrap();
        let t = |addr, op, value| Term { addr, op, value };
        assert_eq!(
            c.any_of,
            vec![
                vec![t(0xe001, Op::Eq, 3), t(0xe002, Op::BitAnd, 0x80)],
                vec![t(0xc000, Op::Ne, 0)]
            ]
        );
        assert_eq!(c.frames, DEFAULT_SETTLE_FRAMES);
        let mem = |e001: u8, e002: u8, c000: u8| {
            move |a: u16| match a {
                0xe001 => e001,
                0xe002 => e002,
                0xc000 => c000,
                _ => 0x55,
            }
        };
        assert!(c.eval(mem(3, 0x80, 0)));
        assert!(c.eval(mem(3, 0xff, 0)));
        assert!(!c.eval(mem(3, 0x7f, 0)));
        assert!(!c.eval(mem(2, 0x80, 0)));
        assert!(c.eval(mem(2, 0, 1)));
        assert_eq!(c.addresses(), vec![0xc000, 0xe001, 0xe002]);
    }

    #[test]
    fn sync_when_operators() {
        let holds = |cond: &str, mem: u8| parse_sync_when(cond).unwrap().eval(|_| mem);
        for (cond, yes, no) in [
            ("0 == 10", 0x10, 0x11),
            ("0 != 10", 0x11, 0x10),
            ("0 < 10", 0x0f, 0x10),
            ("0 > 10", 0x11, 0x10),
            ("0 <= 10", 0x10, 0x11),
            ("0 >= 10", 0x10, 0x0f),
            ("0 & 81", 0x01, 0x7e),
            ("0 > 7f", 0xff, 0x00), // unsigned
        ] {
            assert!(holds(cond, yes), "{cond} with {yes:#x}");
            assert!(!holds(cond, no), "{cond} with {no:#x}");
        }
    }

    #[test]
    fn sync_when_display_round_trips() {
        for (text, normal) in [
            ("e001 == 03", "e001 == 03 for 60 frames"),
            ("$E001==3", "e001 == 03 for 60 frames"),
            (
                "0x1&0X80 and 2<=ff or 3>0",
                "0001 & 80 and 0002 <= ff or 0003 > 00 for 60 frames",
            ),
            ("  c000   !=  00  ", "c000 != 00 for 60 frames"),
            ("c000 != 00 for 30 frames", "c000 != 00 for 30 frames"),
            (
                "c000 != 00 or 1 == 2 for 1 frame",
                "c000 != 00 or 0001 == 02 for 1 frame",
            ),
            ("c000 != 00 for 0 frames", "c000 != 00 for 0 frames"),
            ("c000 != 00 for 3000 frames", "c000 != 00 for 3000 frames"),
        ] {
            let c = parse_sync_when(text).unwrap();
            assert_eq!(c.to_string(), normal);
            assert_eq!(parse_sync_when(normal).unwrap(), c);
            assert_eq!(normal.parse::<SyncWhen>().unwrap(), c);
        }
    }

    #[test]
    fn sync_when_rejects_odd_input() {
        for (text, msg) in [
            ("", "condition is empty; write terms like 'e001 == 03'"),
            ("   ", "condition is empty; write terms like 'e001 == 03'"),
            ("e001", "expected an operator (== != < > <= >= &) after address e001, found the end of the condition"),
            ("e001 ==", "expected a value after 'e001 ==', found the end of the condition"),
            ("e001 == and", "expected a value after 'e001 ==', found 'and'"),
            ("== 3", "expected an address, found '=='"),
            ("and e001 == 3", "expected an address, found 'and'"),
            ("e001 == 3 and", "expected a term after 'and', found the end of the condition"),
            ("e001 == 3 or", "expected a term after 'or', found the end of the condition"),
            ("e001 == 3 and and 1 == 1", "expected an address, found 'and'"),
            ("e001 == 3 e002 == 4", "expected 'and', 'or' or 'for' after 'e001 == 03', found 'e002'"),
            ("e001 == 3 && 1 == 1", "expected 'and', 'or' or 'for' after 'e001 == 03', found '&&'"),
            ("e001 == 3 || 1 == 1", "expected 'and', 'or' or 'for' after 'e001 == 03', found '||'"),
            ("e001 === 3", "unknown operator '==='; use one of == != < > <= >= &"),
            ("e001 =< 3", "unknown operator '=<'; use one of == != < > <= >= &"),
            ("e001 == 100", "value 0x100 is above 0xff"),
            ("10000 == 1", "address 0x10000 is above 0xffff"),
            ("e00g == 1", "address 'e00g' is not a hexadecimal number"),
            ("e001 == 3 AND 1 == 1", "expected 'and', 'or' or 'for' after 'e001 == 03', found 'AND'"),
            ("(e001 == 3)", "unexpected character '('; write terms like 'e001 == 03' joined by 'and' or 'or'"),
            ("e001 == 3; exit", "unexpected character ';'; write terms like 'e001 == 03' joined by 'and' or 'or'"),
            ("e001 == -1", "unexpected character '-'; write terms like 'e001 == 03' joined by 'and' or 'or'"),
            ("e001\u{a0}== 3", "unexpected character '\\u{a0}'; write terms like 'e001 == 03' joined by 'and' or 'or'"),
        ] {
            assert_eq!(parse_sync_when(text), Err(msg.to_string()), "for {text:?}");
        }
        for (text, msg) in [
            ("e001 == 3 for", "after 'for': write the settle period as 'for 30 frames' (decimal), at the end"),
            ("e001 == 3 for 30", "after 'for': write the settle period as 'for 30 frames' (decimal), at the end"),
            ("e001 == 3 for 30 frames and 1 == 1", "after 'for': write the settle period as 'for 30 frames' (decimal), at the end"),
            ("e001 == 3 for 30 seconds", "expected 'frames' after 'for 30', found 'seconds'"),
            ("e001 == 3 for 0x1e frames", "'0x1e' is not a number of frames; write the settle period as 'for 30 frames' (decimal), at the end"),
            ("e001 == 3 for 1e frames", "'1e' is not a number of frames; write the settle period as 'for 30 frames' (decimal), at the end"),
            ("e001 == 3 for 3001 frames", "3001 frames is longer than the limit of 3000 (a minute at 50 frames a second)"),
            ("e001 == 3 for 99999999999999999999 frames", "99999999999999999999 frames is longer than the limit of 3000 (a minute at 50 frames a second)"),
            ("e001 == 3 for == 3", "after 'for': write the settle period as 'for 30 frames' (decimal), at the end"),
            ("for 30 frames", "address 'for' is not a hexadecimal number"),
        ] {
            assert_eq!(parse_sync_when(text), Err(msg.to_string()), "for {text:?}");
        }
        let long = vec!["0 == 0"; 200].join(" and ");
        assert!(parse_sync_when(&long)
            .unwrap_err()
            .contains("the limit is 1024"));
    }

    #[test]
    fn sync_when_never_panics_on_junk() {
        let pieces = [
            "e001", " ", "==", "=", "!", "<", ">", "&", "|", "and", "or", "0x", "$", "ff", "100",
            "(", "é", "\n", "for", "30", "frames",
        ];
        for text in junk(&pieces, 12, 7, 20_000) {
            if let Ok(c) = parse_sync_when(&text) {
                // Whatever parses must print back to something that parses the same.
                assert_eq!(parse_sync_when(&c.to_string()).unwrap(), c, "{text:?}");
                assert!(c.any_of.iter().all(|g| !g.is_empty()));
            }
        }
    }
}
