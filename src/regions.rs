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
//! (`title:`, `machine:`, `romtype:`, `sync-when:`, `on-restart:`, `counter:`,
//! which defines a region of kind counter and may be given once per counter, and the
//! names `item: ADDR NAME` and `flag: ADDR bit N NAME`, one per line), and
//! validation of everything the original silently got wrong (overlaps, END before
//! START, lines with one address...).
//!
//! [`parse`] is pure; [`load`] adds the file reading and the ROM checks around it.

use crate::counter::{Counter, Encoding};
use crate::protocol::{
    Label, OnRestart, RegionInfo, RegionKind, MAX_LABELS, MAX_LABEL_BYTES, MAX_NAME_BYTES,
    MAX_REGIONS, MAX_ROM_BYTES, MAX_SHARED_BYTES, MAX_TEXT_BYTES,
};
use crate::sync_when::{parse_hex, parse_sync_when, SyncWhen};
use crate::text::printable;
use anyhow::{anyhow, bail, Context};
use std::path::{Component, Path, PathBuf};

/// The directives a regions file may contain, as written before the colon. Each may
/// be given once, except [`COUNTER`], [`ITEM`] and [`FLAG`].
pub const DIRECTIVES: [&str; 8] = [
    "title",
    "machine",
    "romtype",
    "sync-when",
    COUNTER,
    "on-restart",
    ITEM,
    FLAG,
];

/// The directive that defines a counter region:
/// `counter: START END ENCODING [min N] [max N] [description...]`.
pub const COUNTER: &str = "counter";

/// The directive that names a shared byte: `item: ADDR NAME...`. The byte means "the
/// group has it" when it is not zero.
pub const ITEM: &str = "item";

/// The directive that names one bit of a shared byte: `flag: ADDR bit N NAME...`. The
/// bit set means "the group has it".
pub const FLAG: &str = "flag";

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
    /// Bytes (a region line) or a counter (`counter:`).
    pub kind: RegionKind,
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
            kind: self.kind,
        }
    }
}

/// A name given to a shared byte (`item:`) or to one bit of it (`flag:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// The byte's CPU address; inside a region of bytes.
    pub address: u16,
    /// The bit (0 to 7) for `flag:`, `None` for `item:`.
    pub bit: Option<u8>,
    /// The name: printable, at most [`MAX_NAME_BYTES`], unique in the file.
    pub name: String,
    /// Line of the file it was given on (1-based), for messages.
    pub line: usize,
}

impl Name {
    /// The byte (and bit) as written in messages: `e080`, `e063 bit 2`.
    fn spot(&self) -> String {
        match self.bit {
            Some(bit) => format!("{:04x} bit {bit}", self.address),
            None => format!("{:04x}", self.address),
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
    /// `on-restart:`, [`OnRestart::Share`] when not given.
    pub on_restart: OnRestart,
    /// The shared regions in file order: at least one, none overlapping.
    pub regions: Vec<Region>,
    /// `item:` and `flag:` names in file order, each inside a region of bytes.
    pub names: Vec<Name>,
}

impl GameDef {
    /// Total number of shared bytes over all regions.
    pub fn shared_bytes(&self) -> usize {
        self.regions.iter().map(Region::len).sum()
    }

    /// The names as sent over the network: by region index and offset. [`parse`] made
    /// sure every name lies in a region of bytes.
    pub fn labels(&self) -> Vec<Label> {
        self.names
            .iter()
            .filter_map(|n| {
                let (index, region) = region_of(&self.regions, n.address)?;
                Some(Label {
                    region: index as u16,
                    offset: n.address - region.start,
                    bit: n.bit,
                    name: n.name.clone(),
                })
            })
            .collect()
    }
}

/// The region holding `address`, with its index.
fn region_of(regions: &[Region], address: u16) -> Option<(usize, &Region)> {
    regions
        .iter()
        .enumerate()
        .find(|(_, r)| r.start <= address && address <= r.end)
}

/// Python's `str.isspace()`, which is what the original split lines with: Unicode white
/// space plus the ASCII separators 0x1c-0x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Parses the text of a regions file. `file_label` names the file in messages (usually
/// its path as given). Pure: the ROM is neither read nor checked here, see [`load`].
///
/// The steps: the first line names the ROM (`rom_line`); every later line is
/// classified (`classify`) and read as a directive or a region (`Reader`); then the
/// checks that need the whole file run (`Reader::finish`).
pub fn parse(file_label: &str, text: &str) -> anyhow::Result<GameDef> {
    // Messages quote the file's words, which may hold anything.
    let at = |line: Option<usize>, msg: String| {
        let msg = match line {
            Some(n) => format!("could not read {file_label} line {n}: {msg}"),
            None => format!("could not read {file_label}: {msg}"),
        };
        anyhow!("{}", printable(&msg))
    };
    // The original split on '\n' only; a CRLF file leaves '\r' at line ends, which the
    // whitespace trimming removes.
    // A UTF-8 byte-order mark (Windows editors write one) is not part of the rom name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n').zip(1..);
    let first = lines.next().map_or("", |(line, _)| line);
    let mut reader = Reader::new(rom_line(first).map_err(|e| at(Some(1), e))?);
    for (line, n) in lines {
        let read = match classify(line) {
            Line::Blank => Ok(()),
            Line::Directive { key, value } => reader.directive(n, key, value),
            Line::Region(words) => reader.region(n, &words),
        };
        read.map_err(|e| at(Some(n), e))?;
    }
    reader.finish().map_err(|(line, e)| at(line, e))
}

/// The ROM file named on the first line. It must stay inside the regions file's
/// folder: the server sends the ROM to anyone who joins, so a file naming
/// `/home/me/.ssh/id_ed25519` or `../../secret` must not load.
fn rom_line(line: &str) -> Result<String, String> {
    let rom_file = line.trim_matches(is_py_space);
    if rom_file.is_empty() {
        return Err("the first line must name the rom file, but it is empty".into());
    }
    if rom_file.starts_with('#') {
        return Err(format!(
            "the first line must name the rom file, not a comment ('{rom_file}')"
        ));
    }
    let components = Path::new(rom_file).components();
    for c in components {
        let why = match c {
            Component::RootDir | Component::Prefix(_) => "is an absolute path",
            Component::ParentDir => "leaves the folder with '..'",
            Component::CurDir | Component::Normal(_) => continue,
        };
        return Err(format!(
            "the rom file '{rom_file}' {why}; name a file in the folder of the regions file \
             (or a folder below it)"
        ));
    }
    Ok(rom_file.to_string())
}

/// What a line after the first is.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// Only white space, or a `#` comment.
    Blank,
    /// A first word ending in `:`: the key before the colon, and the other words joined
    /// by single spaces (empty when there are none).
    Directive { key: &'a str, value: String },
    /// Anything else: the words of what should be a region.
    Region(Vec<&'a str>),
}

fn classify(line: &str) -> Line<'_> {
    let trimmed = line.trim_matches(is_py_space);
    if trimmed.starts_with('#') {
        return Line::Blank;
    }
    let words: Vec<&str> = trimmed
        .split(is_py_space)
        .filter(|w| !w.is_empty())
        .collect();
    match words.split_first() {
        None => Line::Blank,
        Some((first, rest)) => match first.strip_suffix(':') {
            Some(key) => Line::Directive {
                key,
                value: rest.join(" "),
            },
            None => Line::Region(words),
        },
    }
}

/// A regions file being read line by line. Errors are messages without the file and
/// line, which [`parse`] adds.
struct Reader {
    def: GameDef,
    /// Line of each of [`DIRECTIVES`] seen so far, to name both lines of a repeat.
    directive_lines: [Option<usize>; DIRECTIVES.len()],
}

impl Reader {
    fn new(rom_file: String) -> Reader {
        Reader {
            def: GameDef {
                rom_file,
                title: None,
                machine: None,
                romtype: None,
                sync_when: None,
                on_restart: OnRestart::default(),
                regions: Vec::new(),
                names: Vec::new(),
            },
            directive_lines: [None; DIRECTIVES.len()],
        }
    }

    /// A `key: value` line, on line `n`.
    fn directive(&mut self, n: usize, key: &str, value: String) -> Result<(), String> {
        let Some(k) = DIRECTIVES.iter().position(|d| *d == key) else {
            return Err(format!(
                "unknown directive '{key}:'; known ones are {}",
                DIRECTIVES.map(|d| format!("{d}:")).join(" ")
            ));
        };
        let repeatable = [COUNTER, ITEM, FLAG].contains(&key);
        if let (Some(first), false) = (self.directive_lines[k], repeatable) {
            return Err(format!("{key}: given again, first on line {first}"));
        }
        self.directive_lines[k] = Some(n);
        if value.is_empty() {
            return Err(format!("{key}: needs a value"));
        }
        if key == COUNTER {
            return self
                .counter(n, &value)
                .map_err(|e| format!("{COUNTER}: {e}"));
        }
        if key == ITEM || key == FLAG {
            return self.name(n, key, &value).map_err(|e| format!("{key}: {e}"));
        }
        let def = &mut self.def;
        match key {
            "title" => {
                check_title(&value)?;
                def.title = Some(value);
            }
            "machine" => {
                check_plain_name(key, &value)?;
                def.machine = Some(value);
            }
            "romtype" => {
                check_plain_name(key, &value)?;
                def.romtype = Some(value);
            }
            "on-restart" => {
                def.on_restart = match value.as_str() {
                    "share" => OnRestart::Share,
                    "keep" => OnRestart::Keep,
                    _ => {
                        return Err(format!(
                            "on-restart: '{value}' is not a rule; write 'share' (a player's \
                             new game reaches everyone, the default) or 'keep' (the group keeps \
                             its state)"
                        ))
                    }
                };
            }
            _ => {
                let cond = parse_sync_when(&value).map_err(|e| format!("{key}: {e}"))?;
                def.sync_when = Some(cond);
            }
        }
        Ok(())
    }

    /// A `START END [description...]` line, on line `n`.
    fn region(&mut self, n: usize, words: &[&str]) -> Result<(), String> {
        let [start, end, description @ ..] = words else {
            let word = words.first().copied().unwrap_or_default();
            let hint = if word.contains(':') {
                "; a directive needs a space after its colon, as in 'title: Name'"
            } else {
                ""
            };
            return Err(format!(
                "'{word}' is not a region: a region line needs a start and an end address{hint}"
            ));
        };
        let (start, end) = addresses(start, end)?;
        self.add_region(Region {
            start,
            end,
            description: description.join(" "),
            line: n,
            kind: RegionKind::Bytes,
        })
    }

    /// The value of a `counter:` line, on line `n`: `START END ENCODING [min N]
    /// [max N] [description...]`.
    fn counter(&mut self, n: usize, value: &str) -> Result<(), String> {
        let words: Vec<&str> = value.split(' ').collect();
        let [start, end, encoding, rest @ ..] = words.as_slice() else {
            return Err(format!(
                "'{value}' is not a counter: it needs a start and an end address and an \
                 encoding, as in 'counter: E048 E049 bcd max 999 coins'"
            ));
        };
        let (start, end) = addresses(start, end)?;
        let width = usize::from(end - start) + 1;
        let encoding = Encoding::from_name(encoding).ok_or_else(|| {
            let names: Vec<&str> = Encoding::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown encoding '{encoding}'; use one of {}",
                names.join(" ")
            )
        })?;
        let mut counter = Counter::full(encoding, width);
        let (mut min, mut max) = (None, None);
        let mut rest = rest;
        while let [word @ ("min" | "max"), number, tail @ ..] = rest {
            let slot = if *word == "min" { &mut min } else { &mut max };
            if slot.is_some() {
                return Err(format!("{word} is given twice"));
            }
            *slot = Some(number.parse::<u32>().map_err(|_| {
                format!(
                    "{word} '{number}' is not a decimal number from 0 to {}",
                    u32::MAX
                )
            })?);
            rest = tail;
        }
        counter.min = min.unwrap_or(counter.min);
        counter.max = max.unwrap_or(counter.max);
        counter.check(width)?;
        self.add_region(Region {
            start,
            end,
            description: rest.join(" "),
            line: n,
            kind: RegionKind::Counter(counter),
        })
    }

    /// The value of an `item:` (`ADDR NAME...`) or `flag:` (`ADDR bit N NAME...`) line,
    /// on line `n`. Whether the byte is shared is checked by [`Reader::finish`], so
    /// names may come before their region.
    fn name(&mut self, n: usize, key: &str, value: &str) -> Result<(), String> {
        let words: Vec<&str> = value.split(' ').collect();
        let (address, bit, name) = match (key, words.as_slice()) {
            (ITEM, [address, name @ ..]) if !name.is_empty() => (address, None, name),
            (ITEM, _) => {
                return Err(format!(
                    "'{value}' needs an address and a name, as in 'item: E080 boots'"
                ))
            }
            (_, [address, "bit", bit, name @ ..]) if !name.is_empty() => {
                let bit = match bit.parse::<u8>() {
                    Ok(b) if b <= 7 => b,
                    _ => return Err(format!("bit '{bit}' is not a bit number from 0 to 7")),
                };
                (address, Some(bit), name)
            }
            _ => {
                return Err(format!(
                    "'{value}' needs an address, 'bit N' and a name, as in \
                     'flag: E063 bit 2 world 1 key'"
                ))
            }
        };
        let address = parse_hex("address", address, 0xffff)? as u16;
        let name = Name {
            address,
            bit,
            name: name.join(" "),
            line: n,
        };
        crate::text::check_name("name", &name.name, MAX_NAME_BYTES)?;
        let names = &self.def.names;
        for other in names {
            if other.name == name.name {
                return Err(format!(
                    "the name '{}' is already given to {} on line {}; each name must be unique",
                    name.name,
                    other.spot(),
                    other.line
                ));
            }
            if other.address != address {
                continue;
            }
            if other.bit == bit {
                return Err(format!(
                    "{} is already named '{}' on line {}",
                    name.spot(),
                    other.name,
                    other.line
                ));
            }
            if other.bit.is_none() || bit.is_none() {
                return Err(format!(
                    "{address:04x} is named as a whole byte (item:) and bit by bit (flag:), \
                     see line {}; name a byte one way or the other",
                    other.line
                ));
            }
        }
        if names.len() == MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} names"));
        }
        let bytes: usize = names.iter().map(|n| n.name.len()).sum::<usize>() + name.name.len();
        if bytes > MAX_LABEL_BYTES {
            return Err(format!(
                "the names take more than {MAX_LABEL_BYTES} bytes together"
            ));
        }
        self.def.names.push(name);
        Ok(())
    }

    /// Adds a region read on line `region.line`, refusing overlaps and going over the
    /// limits.
    fn add_region(&mut self, region: Region) -> Result<(), String> {
        if region.description.len() > MAX_TEXT_BYTES {
            return Err(format!(
                "description is {} bytes long, the limit is {MAX_TEXT_BYTES}",
                region.description.len()
            ));
        }
        let regions = &mut self.def.regions;
        if regions.len() == MAX_REGIONS {
            return Err(format!("more than {MAX_REGIONS} regions"));
        }
        if let Some(other) = regions
            .iter()
            .find(|o| o.start <= region.end && region.start <= o.end)
        {
            return Err(format!(
                "region {:04x}-{:04x} overlaps region {:04x}-{:04x} on line {}",
                region.start, region.end, other.start, other.end, other.line
            ));
        }
        regions.push(region);
        Ok(())
    }

    /// The checks that need the whole file. An error comes with the line it is about,
    /// when it is about one.
    fn finish(self) -> Result<GameDef, (Option<usize>, String)> {
        let line_of = |key: &str| {
            DIRECTIVES
                .iter()
                .position(|d| *d == key)
                .and_then(|k| self.directive_lines[k])
        };
        let def = self.def;
        if let Some(cond) = &def.sync_when {
            check_gate_is_private(cond, &def.regions).map_err(|e| (line_of("sync-when"), e))?;
        } else if let Some(line) = line_of("on-restart") {
            return Err((
                Some(line),
                "on-restart: needs a sync-when: line; without one msxsync cannot tell a new \
                 game from the game going on"
                    .into(),
            ));
        }
        if def.regions.is_empty() {
            return Err((
                None,
                "no regions (lines 'START END [description]' after the rom file)".into(),
            ));
        }
        let shared = def.shared_bytes();
        if shared > MAX_SHARED_BYTES {
            return Err((
                None,
                format!("its regions share {shared} bytes, the limit is {MAX_SHARED_BYTES}"),
            ));
        }
        for name in &def.names {
            check_name_is_shared(name, &def.regions).map_err(|e| (Some(name.line), e))?;
        }
        Ok(def)
    }
}

/// A region's START and END words: hexadecimal addresses, END not before START.
fn addresses(start: &str, end: &str) -> Result<(u16, u16), String> {
    let start = parse_hex("start address", start, 0xffff)?;
    let end = parse_hex("end address", end, 0xffff)?;
    if end < start {
        return Err(format!("end {end:#x} is before start {start:#x}"));
    }
    Ok((start as u16, end as u16))
}

/// A shared gate byte would be written by the other players' games: their title
/// screens and game starts would open and close this player's gate.
fn check_gate_is_private(cond: &SyncWhen, regions: &[Region]) -> Result<(), String> {
    for addr in cond.addresses() {
        if let Some(r) = regions.iter().find(|r| r.start <= addr && addr <= r.end) {
            return Err(format!(
                "sync-when reads {addr:04x}, which is shared (region {:04x}-{:04x} on line {}); \
                 the condition must read a byte each player's game keeps for itself, such as its mode",
                r.start, r.end, r.line
            ));
        }
    }
    Ok(())
}

/// A name must be on a byte of a region of bytes: the players' notices come from the
/// changes to shared bytes, and a counter's changes are amounts, named by its
/// description.
fn check_name_is_shared(name: &Name, regions: &[Region]) -> Result<(), String> {
    let key = if name.bit.is_some() { FLAG } else { ITEM };
    let spot = name.spot();
    match region_of(regions, name.address) {
        None => Err(format!(
            "{key}: {spot} is not in a shared region; a name goes on a byte of a region line"
        )),
        Some((_, r)) if r.kind != RegionKind::Bytes => Err(format!(
            "{key}: {spot} is in the counter {:04x}-{:04x} on line {}; a counter is named \
             by its description",
            r.start, r.end, r.line
        )),
        Some(_) => Ok(()),
    }
}

/// Titles are shown to players (terminal, emulator screen).
fn check_title(value: &str) -> Result<(), String> {
    crate::text::check_name("title:", value, MAX_TEXT_BYTES)
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
    let rom = confined(path, &rom_path(path, &def.rom_file))
        .and_then(|rom| read_rom(&rom))
        .with_context(|| format!("could not read {label} line 1"))?;
    Ok((def, rom))
}

/// `rom` (the ROM path of `regions_file`) with every symbolic link resolved, refused
/// when it leads out of the regions file's folder: [`rom_line`] already refused
/// absolute paths and `..`, but `roms -> /home/me` would get around that. A ROM that
/// does not exist is returned as it is, for [`read_rom`] to say so.
fn confined(regions_file: &Path, rom: &Path) -> anyhow::Result<PathBuf> {
    let folder = match regions_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let real = match std::fs::canonicalize(rom) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rom.to_path_buf()),
        Err(e) => return Err(e).with_context(|| format!("rom file {}", rom.display())),
    };
    let real_folder = std::fs::canonicalize(folder)
        .with_context(|| format!("could not resolve folder {}", folder.display()))?;
    if !real.starts_with(&real_folder) {
        bail!(
            "rom file {} leads to {} through a symbolic link, outside the game folder {}; \
             put the rom itself in the game folder",
            rom.display(),
            real.display(),
            real_folder.display()
        );
    }
    Ok(real)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync_when::tests::junk;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/regions")
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse("g.regions", text).unwrap_err())
    }

    fn region(start: u16, end: u16, description: &str, line: usize) -> Region {
        Region {
            start,
            end,
            description: description.into(),
            line,
            kind: RegionKind::Bytes,
        }
    }

    #[test]
    fn lines_are_classified_by_their_first_word() {
        for blank in ["", " \t\r", "  # e000 e001", "#title: x"] {
            assert_eq!(classify(blank), Line::Blank, "{blank:?}");
        }
        assert_eq!(
            classify(" title:  The   Maze \r"),
            Line::Directive {
                key: "title",
                value: "The Maze".into()
            }
        );
        assert_eq!(
            classify("sync-when:"),
            Line::Directive {
                key: "sync-when",
                value: String::new()
            }
        );
        assert_eq!(
            classify("e046\te04b keys: red"),
            Line::Region(vec!["e046", "e04b", "keys:", "red"])
        );
        assert_eq!(classify("title:x"), Line::Region(vec!["title:x"]));
    }

    #[test]
    fn original_format_parses_verbatim() {
        let def = parse(
            "galious.regions",
            "galious.rom\n# arrows, coins, keys\ne046 e04b\ne052 e057 vitality\n",
        )
        .unwrap();
        assert_eq!(def.rom_file, "galious.rom");
        assert_eq!(
            def.regions,
            vec![
                region(0xe046, 0xe04b, "", 3),
                region(0xe052, 0xe057, "vitality", 4)
            ]
        );
        assert_eq!(def.shared_bytes(), 12);
        assert_eq!(def.title, None);
        assert_eq!(def.machine, None);
        assert_eq!(def.romtype, None);
        assert_eq!(def.sync_when, None);
        assert_eq!(def.on_restart, OnRestart::Share);
    }

    #[test]
    fn accepts_what_python_int_and_split_accepted() {
        // CRLF, trailing space after the rom name, tabs, upper case, 0x/0X, extra spaces,
        // indented comments, blank lines with only spaces, no final newline.
        let text =
            "rom.bin \r\n  \r\n\t# note\r\n0xE000 0XE000\tone  byte \r\nC000\x1fc00f\r\nd000 D001";
        let def = parse("g", text).unwrap();
        assert_eq!(def.rom_file, "rom.bin");
        assert_eq!(
            def.regions,
            vec![
                region(0xe000, 0xe000, "one byte", 4),
                region(0xc000, 0xc00f, "", 5),
                region(0xd000, 0xd001, "", 6)
            ]
        );
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let def = parse("g", "\u{feff}galious.rom\r\ne046 e04b\r\n").unwrap();
        assert_eq!(def.rom_file, "galious.rom");
    }

    #[test]
    fn title_must_not_contain_control_characters() {
        assert_eq!(
            err("r\ntitle: a\u{1b}[2Jb\n0 0\n"),
            "could not read g.regions line 2: title: 'a\\u{1b}[2Jb' contains control characters"
        );
    }

    #[test]
    fn dollar_prefix_and_leading_zeros() {
        let def = parse("g", "r\n$e046 00000000000000e04b\n").unwrap();
        assert_eq!(def.regions[0], region(0xe046, 0xe04b, "", 2));
    }

    #[test]
    fn rom_file_may_name_a_subfolder_and_keeps_inner_spaces() {
        let def = parse("g", "roms/Maze of Galious.rom\n0 0\n").unwrap();
        assert_eq!(def.rom_file, "roms/Maze of Galious.rom");
    }

    #[test]
    fn directives_are_read() {
        let def = parse(
            "g",
            "r.rom\ntitle:   The  Maze of Galious \nmachine: C-BIOS_MSX2+\nromtype: KonamiSCC\n\
             sync-when: e001 == 03\non-restart: keep\ne046 e04b\n",
        )
        .unwrap();
        assert_eq!(def.title.as_deref(), Some("The Maze of Galious"));
        assert_eq!(def.machine.as_deref(), Some("C-BIOS_MSX2+"));
        assert_eq!(def.romtype.as_deref(), Some("KonamiSCC"));
        assert_eq!(def.sync_when, Some(parse_sync_when("e001 == 03").unwrap()));
        assert_eq!(def.on_restart, OnRestart::Keep);
        assert_eq!(def.regions, vec![region(0xe046, 0xe04b, "", 7)]);
    }

    #[test]
    fn counters_are_regions_with_an_encoding_and_bounds() {
        let def = parse(
            "g",
            "r\ncounter: E048 E049 bcd max 999 coins\ne04a e04b keys\n\
             counter: e046 e046 binary max 99 min 1 arrows: a few\ncounter: c000 c003 binary-be\n",
        )
        .unwrap();
        let counter = |encoding, min, max| RegionKind::Counter(Counter { encoding, min, max });
        assert_eq!(
            def.regions,
            vec![
                Region {
                    kind: counter(Encoding::Bcd, 0, 999),
                    ..region(0xe048, 0xe049, "coins", 2)
                },
                region(0xe04a, 0xe04b, "keys", 3),
                Region {
                    kind: counter(Encoding::Binary, 1, 99),
                    ..region(0xe046, 0xe046, "arrows: a few", 4)
                },
                Region {
                    kind: counter(Encoding::BinaryBigEndian, 0, u32::MAX),
                    ..region(0xc000, 0xc003, "", 5)
                },
            ]
        );
        assert_eq!(def.shared_bytes(), 9);
        // Bounds default to what the bytes hold.
        let def = parse("g", "r\ncounter: e020 e021 bcd-be\n").unwrap();
        assert_eq!(
            def.regions[0].kind,
            counter(Encoding::BcdBigEndian, 0, 9999)
        );
        // A counter is shared: a gate must not read it.
        assert!(err("r\nsync-when: e048 == 1\ncounter: e048 e049 bcd\n")
            .contains("sync-when reads e048, which is shared"));
    }

    #[test]
    fn the_galious_file_shares_arrows_coins_and_keys_as_counters() {
        let def = parse(
            "games/galious.regions",
            include_str!("../games/galious.regions"),
        )
        .unwrap();
        let counters: Vec<(u16, u16, &str)> = def
            .regions
            .iter()
            .filter(|r| {
                r.kind
                    == RegionKind::Counter(Counter {
                        encoding: Encoding::Bcd,
                        min: 0,
                        max: 999,
                    })
            })
            .map(|r| (r.start, r.end, r.description.as_str()))
            .collect();
        assert_eq!(
            counters,
            [
                (0xe046, 0xe047, "arrows"),
                (0xe048, 0xe049, "coins"),
                (0xe04a, 0xe04b, "keys")
            ]
        );
    }

    #[test]
    fn the_galious_file_names_every_item_and_weapon() {
        let def = parse(
            "games/galious.regions",
            include_str!("../games/galious.regions"),
        )
        .unwrap();
        let described: Vec<&Region> = def
            .regions
            .iter()
            .filter(|r| {
                ["item: ", "weapon: "]
                    .iter()
                    .any(|p| r.description.starts_with(p))
            })
            .collect();
        assert_eq!(described.len(), 37);
        assert_eq!(def.labels().len(), described.len());
        for r in described {
            let name = def.names.iter().find(|n| n.address == r.start).unwrap();
            assert_eq!((r.len(), name.bit), (1, None));
            let bare = name.name.trim_end_matches(" (weapon)");
            assert!(r.description.contains(bare), "{name:?} for {r:?}");
        }
    }

    #[test]
    fn bad_counters_say_what_is_wrong() {
        for (line, problem) in [
            (
                "counter: e048",
                "'e048' is not a counter: it needs a start and an end address and an \
                 encoding, as in 'counter: E048 E049 bcd max 999 coins'",
            ),
            (
                "counter: e048 e049 decimal",
                "unknown encoding 'decimal'; use one of bcd binary bcd-be binary-be",
            ),
            (
                "counter: e048 e04d bcd",
                "a counter is 1 to 4 bytes long, this one 6",
            ),
            (
                "counter: e048 e049 bcd max 10000",
                "max 10000 does not fit in 2 bcd bytes: the largest is 9999",
            ),
            ("counter: e048 e049 bcd min 5 max 4", "min 5 is above max 4"),
            (
                "counter: e048 e049 bcd min x",
                "min 'x' is not a decimal number from 0 to 4294967295",
            ),
            ("counter: e048 e049 bcd max 5 max 6", "max is given twice"),
            (
                "counter: e049 e048 bcd",
                "end 0xe048 is before start 0xe049",
            ),
            (
                "counter: e04g e049 bcd",
                "start address 'e04g' is not a hexadecimal number",
            ),
        ] {
            assert_eq!(
                err(&format!("r\n{line}\n")),
                format!("could not read g.regions line 2: counter: {problem}"),
                "{line}"
            );
        }
        assert_eq!(
            err("r\ne040 e048\ncounter: e048 e049 bcd\n"),
            "could not read g.regions line 3: counter: region e048-e049 overlaps region \
             e040-e048 on line 2"
        );
    }

    #[test]
    fn colon_in_a_description_is_not_a_directive() {
        let def = parse("g", "r\ne046 e04b keys: red blue\n").unwrap();
        assert_eq!(def.regions[0].description, "keys: red blue");
    }

    #[test]
    fn unknown_directive_lists_known_ones() {
        assert_eq!(
            err("r\nplayers: 2\n0 0\n"),
            "could not read g.regions line 2: unknown directive 'players:'; \
             known ones are title: machine: romtype: sync-when: counter: on-restart: item: flag:"
        );
        // Keys are exact: no case folding.
        assert!(err("r\nTitle: x\n0 0\n").contains("unknown directive 'Title:'"));
    }

    #[test]
    fn items_and_flags_name_shared_bytes_and_bits() {
        let def = parse(
            "g",
            "r\nflag: e010 bit 0 sword\nE010 E010 items\nflag: $E010 bit 7 magic  potion\n\
             e020 e02f table\nitem: 0xE02F boots\ncounter: e030 e030 binary gold\n",
        )
        .unwrap();
        assert_eq!(
            def.names,
            [
                Name {
                    address: 0xe010,
                    bit: Some(0),
                    name: "sword".into(),
                    line: 2
                },
                Name {
                    address: 0xe010,
                    bit: Some(7),
                    name: "magic potion".into(),
                    line: 4
                },
                Name {
                    address: 0xe02f,
                    bit: None,
                    name: "boots".into(),
                    line: 6
                },
            ]
        );
        let label = |region, offset, bit, name: &str| Label {
            region,
            offset,
            bit,
            name: name.into(),
        };
        assert_eq!(
            def.labels(),
            [
                label(0, 0, Some(0), "sword"),
                label(0, 0, Some(7), "magic potion"),
                label(1, 15, None, "boots"),
            ]
        );
        // The original format is untouched: a region line's description may hold a
        // colon, and a file without names has none.
        let def = parse("g", "r\nE075 E075 item: magnifying glass\n").unwrap();
        assert_eq!(def.regions[0].description, "item: magnifying glass");
        assert!(def.names.is_empty());
    }

    #[test]
    fn bad_names_are_explained_with_their_line() {
        for (text, message) in [
            (
                "r\n0 0\nitem: e080\n",
                "line 3: item: 'e080' needs an address and a name, as in 'item: E080 boots'",
            ),
            (
                "r\n0 0\nflag: e063 2 key\n",
                "line 3: flag: 'e063 2 key' needs an address, 'bit N' and a name, as in \
                 'flag: E063 bit 2 world 1 key'",
            ),
            (
                "r\n0 0\nflag: e063 bit 2\n",
                "line 3: flag: 'e063 bit 2' needs an address, 'bit N' and a name",
            ),
            (
                "r\n0 0\nflag: e063 bit 8 key\n",
                "line 3: flag: bit '8' is not a bit number from 0 to 7",
            ),
            (
                "r\n0 0\nitem: e0g0 boots\n",
                "line 3: item: address 'e0g0' is not a hexadecimal number",
            ),
            (
                "r\n0 0\nitem: e080 boots\n",
                "line 3: item: e080 is not in a shared region; a name goes on a byte of a \
                 region line",
            ),
            (
                "r\nflag: e048 bit 1 gold\ncounter: e048 e049 bcd coins\n",
                "line 2: flag: e048 bit 1 is in the counter e048-e049 on line 3; a counter is \
                 named by its description",
            ),
            (
                "r\n0 1\nitem: 0 boots\nitem: 0 shoes\n",
                "line 4: item: 0000 is already named 'boots' on line 3",
            ),
            (
                "r\n0 1\nflag: 1 bit 3 a\nflag: 1 bit 3 b\n",
                "line 4: flag: 0001 bit 3 is already named 'a' on line 3",
            ),
            (
                "r\n0 1\nflag: 1 bit 3 a\nitem: 1 b\n",
                "line 4: item: 0001 is named as a whole byte (item:) and bit by bit (flag:), \
                 see line 3; name a byte one way or the other",
            ),
            (
                "r\n0 1\nitem: 1 b\nflag: 1 bit 3 a\n",
                "line 4: flag: 0001 is named as a whole byte",
            ),
            (
                "r\n0 1\nitem: 0 key\nflag: 1 bit 3 key\n",
                "line 4: flag: the name 'key' is already given to 0000 on line 3; each name \
                 must be unique",
            ),
        ] {
            let e = err(text);
            assert!(
                e.starts_with(&format!("could not read g.regions {message}")),
                "{e}\nexpected: {message}"
            );
        }
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            err(&format!("r\n0 0\nitem: 0 {long}\n")),
            "could not read g.regions line 3: item: name is 65 bytes long, the limit is 64"
        );
        let e = err("r\n0 0\nitem: 0 a\u{1b}[2J\n");
        assert_eq!(
            e,
            "could not read g.regions line 3: item: name 'a\\u{1b}[2J' contains control \
             characters"
        );
    }

    #[test]
    fn names_have_count_and_byte_limits() {
        let mut text = String::from("r\nc000 cfff\n");
        for i in 0..MAX_LABELS {
            text += &format!("item: {:x} n{i}\n", 0xc000 + i);
        }
        assert_eq!(parse("g", &text).unwrap().labels().len(), MAX_LABELS);
        text += "item: cfff one too many\n";
        assert_eq!(
            err(&text),
            format!(
                "could not read g.regions line {}: item: more than 1024 names",
                MAX_LABELS + 3
            )
        );
        // 64-byte names: the byte limit comes first.
        let mut text = String::from("r\nc000 cfff\n");
        for i in 0..MAX_LABELS {
            text += &format!("item: {:x} {i:0>64}\n", 0xc000 + i);
        }
        let over = MAX_LABEL_BYTES / MAX_NAME_BYTES + 1;
        assert_eq!(
            err(&text),
            format!(
                "could not read g.regions line {}: item: the names take more than 32768 \
                 bytes together",
                over + 2
            )
        );
    }

    #[test]
    fn repeated_directive_names_both_lines() {
        assert_eq!(
            err("r\nmachine: a\n0 0\n\nmachine: b\n"),
            "could not read g.regions line 5: machine: given again, first on line 2"
        );
    }

    #[test]
    fn directive_needs_a_value() {
        assert_eq!(
            err("r\n0 0\ntitle:\n"),
            "could not read g.regions line 3: title: needs a value"
        );
    }

    #[test]
    fn machine_and_romtype_must_be_plain_names() {
        for bad in ["C-BIOS MSX1", "a;b", "x[exit]", "a/b", "{x}", "$x", "é"] {
            let e = err(&format!("r\nmachine: {bad}\n0 0\n"));
            assert!(
                e.starts_with("could not read g.regions line 2: machine: "),
                "{e}"
            );
            let e = err(&format!("r\nromtype: {bad}\n0 0\n"));
            assert!(
                e.starts_with("could not read g.regions line 2: romtype: "),
                "{e}"
            );
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(err(&format!("r\nmachine: {long}\n0 0\n")).contains("the limit is 64"));
        let ok = "a".repeat(MAX_NAME_BYTES);
        assert!(parse("g", &format!("r\nmachine: {ok}\n0 0\n")).is_ok());
    }

    #[test]
    fn sync_when_must_not_read_a_shared_byte() {
        let e = err("r\nsync-when: e000 == 01 and e011 != 0\n\ne010 e012 items\n");
        assert_eq!(
            e,
            "could not read g.regions line 2: sync-when reads e011, which is shared \
             (region e010-e012 on line 4); the condition must read a byte each player's \
             game keeps for itself, such as its mode"
        );
        // Next to a region is fine.
        assert!(parse("g", "r\nsync-when: e00f == 01 or e013 == 1\ne010 e012\n").is_ok());
    }

    #[test]
    fn title_and_description_length_limits() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(err(&format!("r\ntitle: {long}\n0 0\n")).contains("line 2: title: is 1025 bytes"));
        assert!(err(&format!("r\n0 0 {long}\n")).contains("line 2: description is 1025 bytes"));
    }

    #[test]
    fn settle_period_and_restart_rule() {
        let def = parse("g", "r\nsync-when: e001 == 03 for 30 frames\n0 0\n").unwrap();
        assert_eq!(def.sync_when.unwrap().frames, 30);
        assert_eq!(def.on_restart, OnRestart::Share);
        let def = parse("g", "r\non-restart: share\nsync-when: e001 == 03\n0 0\n").unwrap();
        assert_eq!(def.on_restart, OnRestart::Share);
        assert_eq!(
            err("r\nsync-when: e001 == 03 for 3001 frames\n0 0\n"),
            "could not read g.regions line 2: sync-when: 3001 frames is longer than the limit \
             of 3000 (a minute at 50 frames a second)"
        );
        assert_eq!(
            err("r\nsync-when: e001 == 03\non-restart: Keep\n0 0\n"),
            "could not read g.regions line 3: on-restart: 'Keep' is not a rule; write 'share' \
             (a player's new game reaches everyone, the default) or 'keep' (the group keeps \
             its state)"
        );
        assert_eq!(
            err("r\n0 0\n\non-restart: keep\n"),
            "could not read g.regions line 4: on-restart: needs a sync-when: line; without \
             one msxsync cannot tell a new game from the game going on"
        );
        assert_eq!(
            err("r\nsync-when: 1 == 1\non-restart: keep\non-restart: share\n0 0\n"),
            "could not read g.regions line 4: on-restart: given again, first on line 3"
        );
    }

    #[test]
    fn bad_sync_when_names_the_line() {
        assert_eq!(
            err("r\n0 0\nsync-when: e001 = 3\n"),
            "could not read g.regions line 3: sync-when: unknown operator '='; \
             use one of == != < > <= >= &"
        );
    }

    #[test]
    fn bad_hex_is_refused() {
        for (line, what, word) in [
            ("e04g e050", "start address", "e04g"),
            ("e046 e04g", "end address", "e04g"),
            ("0x e050", "start address", "0x"),
            ("$ e050", "start address", "$"),
            ("-1 e050", "start address", "-1"),
            ("+e046 e050", "start address", "+e046"),
            ("e0_46 e050", "start address", "e0_46"),
            ("0xx1 e050", "start address", "0xx1"),
            ("٣ e050", "start address", "٣"),
        ] {
            assert_eq!(
                err(&format!("r\n{line}\n")),
                format!(
                    "could not read g.regions line 2: {what} '{word}' is not a hexadecimal number"
                )
            );
        }
    }

    #[test]
    fn end_before_start_message() {
        assert_eq!(
            err("galious.rom\n\n\n\n\ne046 e04b\ne075 e0\n"),
            "could not read g.regions line 7: end 0xe0 is before start 0xe075"
        );
    }

    #[test]
    fn addresses_above_ffff_are_refused() {
        assert_eq!(
            err("r\nffff 10000\n"),
            "could not read g.regions line 2: end address 0x10000 is above 0xffff"
        );
        assert_eq!(
            err("r\n123456789 ffff\n"),
            "could not read g.regions line 2: start address '123456789' is above 0xffff"
        );
        assert!(parse("g", "r\nffff ffff\n").is_ok());
        assert!(
            parse("g", "r\n0 ffff\n").is_err(),
            "64 KiB is over the shared limit"
        );
    }

    #[test]
    fn overlaps_name_both_lines() {
        assert_eq!(
            err("r\ne046 e04b\ne000 e001\ne04b e050\n"),
            "could not read g.regions line 4: region e04b-e050 overlaps region e046-e04b on line 2"
        );
        // Containment and identical regions are overlaps too.
        assert!(err("r\ne000 e0ff\ne010 e011\n").contains("line 3: region e010-e011 overlaps"));
        assert!(err("r\ne000 e000\ne000 e000\n").contains("on line 2"));
        // Touching is fine.
        let def = parse("g", "r\ne04c e04d\ne046 e04b\ne04e e04e\n").unwrap();
        assert_eq!(def.regions.len(), 3);
    }

    #[test]
    fn one_address_is_not_a_region() {
        assert_eq!(
            err("r\ne046 e04b\ne052\n"),
            "could not read g.regions line 3: 'e052' is not a region: \
             a region line needs a start and an end address"
        );
        assert!(err("r\ntitle:Galious\n0 0\n").contains("needs a space after its colon"));
    }

    #[test]
    fn no_regions_is_refused() {
        for text in ["r", "r\n", "r\n# only a comment\n\n", "r\ntitle: x\n"] {
            assert_eq!(
                err(text),
                "could not read g.regions: no regions (lines 'START END [description]' after the rom file)"
            );
        }
    }

    #[test]
    fn first_line_must_name_the_rom() {
        for text in ["", "\n0 0\n", "  \r\n0 0\n"] {
            assert_eq!(
                err(text),
                "could not read g.regions line 1: the first line must name the rom file, but it is empty"
            );
        }
        assert!(err("# galious\ngalious.rom\n0 0\n")
            .contains("line 1: the first line must name the rom file, not a comment"));
    }

    #[test]
    fn shared_bytes_limit() {
        // 0x8000-0xbfff is exactly MAX_SHARED_BYTES (16 KiB).
        assert_eq!(MAX_SHARED_BYTES, 0x4000);
        let def = parse("g", "r\n8000 bfff\n").unwrap();
        assert_eq!(def.shared_bytes(), MAX_SHARED_BYTES);
        assert_eq!(
            err("r\n8000 bfff\nc000 c000\n"),
            "could not read g.regions: its regions share 16385 bytes, the limit is 16384"
        );
    }

    #[test]
    fn region_count_limit() {
        let mut text = String::from("r\n");
        for i in 0..MAX_REGIONS {
            text += &format!("{:x} {:x}\n", 0xc000 + 2 * i, 0xc000 + 2 * i);
        }
        assert_eq!(parse("g", &text).unwrap().regions.len(), MAX_REGIONS);
        text += "f000 f000\n";
        assert_eq!(
            err(&text),
            format!(
                "could not read g.regions line {}: more than 256 regions",
                MAX_REGIONS + 2
            )
        );
    }

    #[test]
    fn parse_never_panics_on_junk() {
        let pieces = [
            "r",
            "\n",
            "\r\n",
            " ",
            "\t",
            "#",
            "e046",
            "e04b",
            "0x",
            "$",
            "ffff",
            "10000",
            ":",
            "title:",
            "machine:",
            "sync-when:",
            "on-restart:",
            "keep",
            "for 3 frames",
            "counter:",
            "item:",
            "flag:",
            "bit",
            "7",
            "bcd",
            "min",
            "max",
            "9999",
            "==",
            "&",
            "and",
            "or",
            "é",
            "\u{3000}",
            "-",
        ];
        for text in junk(&pieces, 16, 1, 20_000) {
            if let Ok(def) = parse("g", &text) {
                assert!(!def.regions.is_empty());
                assert_eq!(def.labels().len(), def.names.len());
                assert!(def.regions.iter().all(|r| r.start <= r.end));
            }
        }
    }

    #[test]
    fn load_reads_fixture_and_rom() {
        let (def, rom) = load(&fixtures().join("galious.regions")).unwrap();
        assert_eq!(def.regions.len(), 2);
        assert_eq!(rom.len(), 64);
        assert_eq!(&rom[..2], b"AB");
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.regions");
        let label = file.display().to_string();
        let load_err = |text: &[u8]| {
            std::fs::write(&file, text).unwrap();
            format!("{:#}", load(&file).unwrap_err())
        };

        let e = load_err(b"nosuch.rom\n0 0\n");
        let rom = dir.path().join("nosuch.rom");
        assert_eq!(
            e,
            format!(
                "could not read {label} line 1: rom file {} not found",
                rom.display()
            )
        );

        std::fs::write(dir.path().join("empty.rom"), b"").unwrap();
        assert!(load_err(b"empty.rom\n0 0\n").ends_with("empty.rom is empty"));

        // A sparse file: no 8 MiB written, and the size check refuses it before reading.
        let big = std::fs::File::create(dir.path().join("big.rom")).unwrap();
        big.set_len(MAX_ROM_BYTES as u64 + 1).unwrap();
        assert!(load_err(b"big.rom\n0 0\n").ends_with(&format!(
            "big.rom is {} bytes, the limit is {MAX_ROM_BYTES}",
            MAX_ROM_BYTES + 1
        )));
        big.set_len(MAX_ROM_BYTES as u64).unwrap();
        std::fs::write(&file, b"big.rom\n0 0\n").unwrap();
        assert_eq!(load(&file).unwrap().1.len(), MAX_ROM_BYTES);

        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(load_err(b"sub\n0 0\n").ends_with("sub is a folder"));

        assert_eq!(
            load_err(b"r\n0 0 \xff\n"),
            format!("could not read {label}: not UTF-8 text (bad byte at offset 6)")
        );

        let e = format!("{:#}", load(&dir.path().join("none.regions")).unwrap_err());
        assert!(
            e.starts_with("could not read ") && e.contains("none.regions"),
            "{e}"
        );
    }

    #[test]
    fn the_rom_must_be_named_inside_the_game_folder() {
        for (rom, why) in [
            ("/etc/passwd", "is an absolute path"),
            ("//etc/passwd", "is an absolute path"),
            ("../secret.rom", "leaves the folder with '..'"),
            (
                "roms/../../home/me/.ssh/id_ed25519",
                "leaves the folder with '..'",
            ),
            ("./roms/../a.rom", "leaves the folder with '..'"),
        ] {
            assert_eq!(
                err(&format!("{rom}\n0 0\n")),
                format!(
                    "could not read g.regions line 1: the rom file '{rom}' {why}; name a file \
                     in the folder of the regions file (or a folder below it)"
                )
            );
        }
        for ok in ["a.rom", "./a.rom", "roms/a b.rom", "roms/./x..y.rom"] {
            assert_eq!(parse("g", &format!("{ok}\n0 0\n")).unwrap().rom_file, ok);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_out_of_the_game_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let games = dir.path().join("games");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&games).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"key").unwrap();
        std::os::unix::fs::symlink(&outside, games.join("roms")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), games.join("s.rom")).unwrap();
        for (name, rom) in [("a", "roms/secret"), ("b", "s.rom")] {
            let file = games.join(format!("{name}.regions"));
            std::fs::write(&file, format!("{rom}\n0 0\n")).unwrap();
            let e = format!("{:#}", load(&file).unwrap_err());
            assert!(
                e.starts_with(&format!(
                    "could not read {} line 1: rom file ",
                    file.display()
                )) && e.contains("through a symbolic link, outside the game folder"),
                "{e}"
            );
        }
        // A link that stays inside the folder is fine.
        std::fs::write(games.join("real.rom"), [1u8, 2]).unwrap();
        std::os::unix::fs::symlink(games.join("real.rom"), games.join("alias.rom")).unwrap();
        let file = games.join("c.regions");
        std::fs::write(&file, "alias.rom\n0 0\n").unwrap();
        assert_eq!(load(&file).unwrap().1, [1, 2]);
    }

    #[test]
    fn errors_quote_the_file_only_through_the_terminal_filter() {
        for text in [
            "r\n\u{1b}]0;pwned\u{7} e000\n",
            "r\n\u{1b}[2J: x\n0 0\n",
            "# \u{1b}[31m\n",
            "r\nmachine: a\u{9b}b\n0 0\n",
            "r\nsync-when: e000 \u{1b}[2J 1\n0 0\n",
        ] {
            let e = err(text);
            assert!(!e.chars().any(char::is_control), "{e:?}");
            assert!(e.contains("\\u{"), "{e:?}");
        }
        let e = format!("{:#}", parse("bad\u{1b}[2J.regions", "r\n").unwrap_err());
        assert!(
            e.starts_with("could not read bad\\u{1b}[2J.regions: "),
            "{e}"
        );
    }

    #[test]
    fn load_finds_rom_relative_to_the_regions_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("roms")).unwrap();
        std::fs::write(dir.path().join("roms/a.rom"), [7u8; 3]).unwrap();
        let file = dir.path().join("a.regions");
        std::fs::write(&file, "roms/a.rom\n0 0\n").unwrap();
        assert_eq!(load(&file).unwrap().1, vec![7; 3]);
        assert_eq!(
            rom_path(Path::new("a.regions"), "x.rom"),
            Path::new("x.rom")
        );
    }
}
