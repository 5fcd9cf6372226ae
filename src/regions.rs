//! The `.regions` file format: which ROM a game runs and which RAM regions its players share.
//!
//! The format is the one of the original openmsx-sync (Python, 2021), and every file the
//! original accepted means the same here:
//!
//! ```text
//! galious.rom
//! # arrows, coins, keys
//! e046 e04b
//! e052 e057 vitality
//! ```
//!
//! - The first line is the ROM file, relative to the folder of the regions file.
//! - After it, whitespace-only lines and lines starting with `#` are ignored.
//! - Other lines are `START END [description...]`: hexadecimal CPU addresses (any case,
//!   optional `0x` or `$`), END inclusive, extra words a free description.
//!
//! Additions the original would have rejected (so they cannot change the meaning of an
//! old file): `key: value` directives, recognised by a first word ending in `:`
//! (`title:`, `machine:`, `romtype:`, `sync-when:`), and validation of everything the
//! original silently got wrong (overlaps, END before START, lines with one address...).
//!
//! [`parse`] is pure; [`load`] adds the file reading and the ROM checks around it.

use crate::catalog::Game;
use crate::protocol::{
    RegionInfo, MAX_NAME_BYTES, MAX_REGIONS, MAX_ROM_BYTES, MAX_SHARED_BYTES, MAX_TEXT_BYTES,
};
use anyhow::{anyhow, bail, Context};
use std::fmt;
use std::path::{Path, PathBuf};

/// The directives a regions file may contain, as written before the colon.
pub const DIRECTIVES: [&str; 4] = ["title", "machine", "romtype", "sync-when"];

/// Largest regions file [`load`] reads. Real ones are a few hundred bytes; the limit only
/// stops a ROM or other big file named `.regions` by mistake from being read whole.
pub const MAX_REGIONS_FILE_BYTES: u64 = 1024 * 1024;

/// One shared RAM region as read from a regions file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First shared CPU address.
    pub start: u16,
    /// Last shared CPU address (inclusive).
    pub end: u16,
    /// The words after the addresses, joined by single spaces (may be empty).
    pub description: String,
    /// Line of the file the region was defined on (1-based), for messages.
    pub line: usize,
}

impl Region {
    /// Number of bytes in the region (at least 1).
    pub fn len(&self) -> usize {
        self.end as usize - self.start as usize + 1
    }

    /// Always false: a region has at least one byte. Here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region as sent over the network.
    pub fn info(&self) -> RegionInfo {
        RegionInfo {
            start: self.start,
            end: self.end,
            description: self.description.clone(),
        }
    }
}

/// Everything a regions file says about a game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameDef {
    /// The ROM file as written on the first line, relative to the regions file's folder.
    pub rom_file: String,
    /// `title:`, if given.
    pub title: Option<String>,
    /// `machine:` (an openMSX machine name), if given.
    pub machine: Option<String>,
    /// `romtype:` (an openMSX mapper type), if given.
    pub romtype: Option<String>,
    /// `sync-when:`, if given.
    pub sync_when: Option<SyncWhen>,
    /// The shared regions in file order: at least one, none overlapping.
    pub regions: Vec<Region>,
}

impl GameDef {
    /// Total number of shared bytes over all regions.
    pub fn shared_bytes(&self) -> usize {
        self.regions.iter().map(Region::len).sum()
    }

    /// Turns the definition plus its ROM into a servable game named `name`. The title
    /// defaults to the name; the `sync-when:` condition is kept in its normalised form
    /// (what [`SyncWhen`]'s `Display` prints), which [`parse_sync_when`] reads back.
    pub fn into_game(self, name: impl Into<String>, rom: Vec<u8>) -> Game {
        let name = name.into();
        let title = self.title.unwrap_or_else(|| name.clone());
        let regions = self.regions.iter().map(Region::info).collect();
        let mut game = Game::new(name, title, regions, rom);
        game.machine = self.machine;
        game.romtype = self.romtype;
        game.sync_when = self.sync_when.map(|s| s.to_string());
        game
    }
}

/// Python's `str.isspace()`, which is what the original split lines with: Unicode white
/// space plus the ASCII separators 0x1c-0x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Parses a hex number as the original's `int(x, 16)` did for sane files (any case,
/// optional `0x`), plus the `$` prefix common in MSX writing. `what` names the number in
/// messages; `max` is the largest allowed value.
fn parse_hex(what: &str, word: &str, max: u32) -> Result<u32, String> {
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

/// A machine or rom type name: it ends up as an openMSX command-line argument, so only
/// plain names are allowed.
fn check_plain_name(key: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{key}: value is {} bytes long, the limit is {MAX_NAME_BYTES}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "_-+.".contains(c)))
    {
        return Err(format!(
            "{key}: '{value}' contains {c:?}; only letters, digits, '_', '-', '+' and '.' are allowed"
        ));
    }
    Ok(())
}

/// Parses the text of a regions file. `file_label` names the file in messages (usually
/// its path as given). Pure: the ROM is neither read nor checked here, see [`load`].
pub fn parse(file_label: &str, text: &str) -> anyhow::Result<GameDef> {
    let at = |line: usize, msg: String| anyhow!("could not read {file_label} line {line}: {msg}");

    // The original split on '\n' only; a CRLF file leaves '\r' at line ends, which the
    // whitespace trimming below removes.
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    let rom_file = lines
        .next()
        .map_or("", |(_, l)| l)
        .trim_matches(is_py_space);
    if rom_file.is_empty() {
        return Err(at(
            1,
            "the first line must name the rom file, but it is empty".into(),
        ));
    }
    if rom_file.starts_with('#') {
        return Err(at(
            1,
            format!("the first line must name the rom file, not a comment ('{rom_file}')"),
        ));
    }

    let mut def = GameDef {
        rom_file: rom_file.to_string(),
        title: None,
        machine: None,
        romtype: None,
        sync_when: None,
        regions: Vec::new(),
    };
    // Line of each directive seen so far, to name both lines of a repeat.
    let mut directive_lines: [Option<usize>; DIRECTIVES.len()] = [None; DIRECTIVES.len()];

    for (n, line) in lines {
        let trimmed = line.trim_matches(is_py_space);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = trimmed
            .split(is_py_space)
            .filter(|w| !w.is_empty())
            .collect();
        let rest = words[1..].join(" ");

        if let Some(key) = words[0].strip_suffix(':') {
            let Some(k) = DIRECTIVES.iter().position(|d| *d == key) else {
                return Err(at(
                    n,
                    format!(
                        "unknown directive '{key}:'; known ones are {}",
                        DIRECTIVES.map(|d| format!("{d}:")).join(" ")
                    ),
                ));
            };
            if let Some(first) = directive_lines[k] {
                return Err(at(n, format!("{key}: given again, first on line {first}")));
            }
            directive_lines[k] = Some(n);
            if rest.is_empty() {
                return Err(at(n, format!("{key}: needs a value")));
            }
            match key {
                "title" => {
                    if rest.len() > MAX_TEXT_BYTES {
                        return Err(at(
                            n,
                            format!(
                                "title: is {} bytes long, the limit is {MAX_TEXT_BYTES}",
                                rest.len()
                            ),
                        ));
                    }
                    def.title = Some(rest);
                }
                "machine" => {
                    check_plain_name(key, &rest).map_err(|e| at(n, e))?;
                    def.machine = Some(rest);
                }
                "romtype" => {
                    check_plain_name(key, &rest).map_err(|e| at(n, e))?;
                    def.romtype = Some(rest);
                }
                _ => {
                    let cond = parse_sync_when(&rest).map_err(|e| at(n, format!("{key}: {e}")))?;
                    def.sync_when = Some(cond);
                }
            }
            continue;
        }

        if words.len() < 2 {
            let hint = if words[0].contains(':') {
                "; a directive needs a space after its colon, as in 'title: Name'"
            } else {
                ""
            };
            return Err(at(
                n,
                format!(
                    "'{}' is not a region: a region line needs a start and an end address{hint}",
                    words[0]
                ),
            ));
        }
        let start = parse_hex("start address", words[0], 0xffff).map_err(|e| at(n, e))?;
        let end = parse_hex("end address", words[1], 0xffff).map_err(|e| at(n, e))?;
        if end < start {
            return Err(at(n, format!("end {end:#x} is before start {start:#x}")));
        }
        let description = words[2..].join(" ");
        if description.len() > MAX_TEXT_BYTES {
            return Err(at(
                n,
                format!(
                    "description is {} bytes long, the limit is {MAX_TEXT_BYTES}",
                    description.len()
                ),
            ));
        }
        if def.regions.len() == MAX_REGIONS {
            return Err(at(n, format!("more than {MAX_REGIONS} regions")));
        }
        let region = Region {
            start: start as u16,
            end: end as u16,
            description,
            line: n,
        };
        if let Some(other) = def
            .regions
            .iter()
            .find(|o| o.start <= region.end && region.start <= o.end)
        {
            return Err(at(
                n,
                format!(
                    "region {:04x}-{:04x} overlaps region {:04x}-{:04x} on line {}",
                    region.start, region.end, other.start, other.end, other.line
                ),
            ));
        }
        def.regions.push(region);
    }

    if def.regions.is_empty() {
        bail!("could not read {file_label}: no regions (lines 'START END [description]' after the rom file)");
    }
    let shared = def.shared_bytes();
    if shared > MAX_SHARED_BYTES {
        bail!(
            "could not read {file_label}: its regions share {shared} bytes, the limit is {MAX_SHARED_BYTES}"
        );
    }
    Ok(def)
}

/// Reads a regions file and the ROM it names. Returns the definition and the ROM image.
/// Errors name the file (and line 1 for ROM problems).
pub fn load(path: &Path) -> anyhow::Result<(GameDef, Vec<u8>)> {
    let label = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("could not read {label}"))?;
    if meta.is_dir() {
        bail!("could not read {label}: it is a folder");
    }
    if meta.len() > MAX_REGIONS_FILE_BYTES {
        bail!(
            "could not read {label}: {} bytes is too big for a regions file (limit {MAX_REGIONS_FILE_BYTES})",
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("could not read {label}"))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "could not read {label}: not UTF-8 text (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    let def = parse(&label, &text)?;
    let rom_path = rom_path(path, &def.rom_file);
    let rom = read_rom(&rom_path).with_context(|| format!("could not read {label} line 1"))?;
    Ok((def, rom))
}

/// Where the ROM named on a regions file's first line is: relative to the file's folder.
pub fn rom_path(regions_file: &Path, rom_file: &str) -> PathBuf {
    regions_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(rom_file)
}

/// Reads a ROM, refusing missing, empty and oversized files before reading them whole.
fn read_rom(path: &Path) -> anyhow::Result<Vec<u8>> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("rom file {shown} not found")
        }
        Err(e) => return Err(e).with_context(|| format!("rom file {shown}")),
    };
    if meta.is_dir() {
        bail!("rom file {shown} is a folder");
    }
    check_rom_size(&shown.to_string(), meta.len())?;
    let rom = std::fs::read(path).with_context(|| format!("rom file {shown}"))?;
    // Checked again: the file may have changed between the two calls.
    check_rom_size(&shown.to_string(), rom.len() as u64)?;
    Ok(rom)
}

fn check_rom_size(shown: &str, len: u64) -> anyhow::Result<()> {
    if len == 0 {
        bail!("rom file {shown} is empty");
    }
    if len > MAX_ROM_BYTES as u64 {
        bail!("rom file {shown} is {len} bytes, the limit is {MAX_ROM_BYTES}");
    }
    Ok(())
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
        Ok(())
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
/// binding tighter. Clients re-parse the text they get from the server with this, so
/// anything else is refused with a message saying what was expected.
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
            Some(_) => {
                return Err(format!(
                    "expected 'and' or 'or' after '{term}', found {}",
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
    Ok(SyncWhen { any_of })
}

/// Arguments of `msxsync check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Regions files to check. Each is read with the ROM its first line names; the first
    /// bad file stops the check with its error (file and line).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `msxsync check`: prints one summary line per good file, fails on the first bad one.
pub fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    for file in &args.files {
        let game = crate::catalog::load_game(file)?;
        println!("{}", summary(&game));
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line describing a game, as `msxsync check` prints it, e.g.
/// `galious: "The Maze of Galious" rom 131072 bytes, 5 regions, 89 shared bytes`.
pub fn summary(game: &Game) -> String {
    let mut s = format!(
        "{}: {:?} rom {}, {}, {}",
        game.name,
        game.title,
        plural(game.rom.len(), "byte", "bytes"),
        plural(game.regions.len(), "region", "regions"),
        plural(game.shared_bytes(), "shared byte", "shared bytes"),
    );
    if let Some(m) = &game.machine {
        s += &format!(", machine {m}");
    }
    if let Some(t) = &game.romtype {
        s += &format!(", romtype {t}");
    }
    if let Some(c) = &game.sync_when {
        s += &format!(", sync when {c}");
    }
    s
}
