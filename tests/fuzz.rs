//! Mutation fuzzing of every reader of outside input, bounded in time so that it runs
//! in `cargo test` (and CI) on the stable toolchain: the protocol decoders of both
//! directions, the regions parser, the `sync-when:` parser and the reader of openMSX's
//! XML output.
//!
//! Each target starts from its corpus, `tests/fuzz/corpus/<target>/` (every file one
//! input, replayed as it is first), and then runs inputs made from them by a
//! deterministic generator (bit flips, interesting numbers, insertions, deletions,
//! repeats, splices of two inputs, tokens of the format) until its time is up: one
//! second each, or `MSXSYNC_FUZZ_SECONDS` (for example `MSXSYNC_FUZZ_SECONDS=600 cargo
//! test --release --test fuzz -- --nocapture` for ten minutes a target). Each prints how
//! many inputs it ran. Nothing may panic; where it is cheap, what was read is written
//! back and must read the same.
//!
//! An input that fails is saved under `target/tmp/fuzz-failures/` with its target's
//! name; copy it into the target's corpus folder so that it is replayed for good.

mod common;

use common::rng::Rng;
use msxsync::counter::Encoding;
use msxsync::openmsx::xml::OutputReader;
use msxsync::protocol::{self, ClientMsg, Message, RegionKind, ServerMsg};
use msxsync::regions::{self, GameDef};
use msxsync::sync_when::parse_sync_when;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest input the generator makes: enough for every format's structure, short
/// enough for many inputs a second.
const MAX_INPUT: usize = 4096;

/// How long each target runs.
fn budget() -> Duration {
    let secs = std::env::var("MSXSYNC_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// The files of a target's corpus folder, sorted by name.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Numbers that sit on the edges of the formats: varint markers of bincode (251-254),
/// sign and size boundaries.
const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xfb,
    0xfc,
    0xfd,
    0xfe,
    0xffff,
    0xffff_ffff,
    u64::MAX,
];

/// One new input made from the corpus.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&str]) -> Vec<u8> {
    let mut b = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = |rng: &mut Rng, b: &Vec<u8>| rng.below(b.len() + 1);
        match rng.below(9) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 => {
                let i = at(rng, &b);
                let n = 1 + rng.below(8);
                let junk: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                b.splice(i..i, junk);
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                let n = 1 + rng.below((b.len() - i).min(16));
                b.drain(i..i + n);
            }
            4 if !b.is_empty() => {
                let i = rng.below(b.len());
                let n = 1 + rng.below((b.len() - i).min(32));
                let piece = b[i..i + n].to_vec();
                let j = at(rng, &b);
                b.splice(j..j, piece);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = at(rng, &b);
                let from = rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            6 => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                let i = at(rng, &b);
                b.splice(i..i, token.iter().copied());
            }
            7 => {
                let i = at(rng, &b);
                b.truncate(i);
            }
            _ => {
                // A little-endian number of 2, 4 or 8 bytes over what is there.
                let n = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [2, 4, 8][rng.below(3)];
                let i = at(rng, &b);
                let end = (i + width).min(b.len());
                b.splice(i..end, n[..width].iter().copied());
            }
        }
    }
    b.truncate(MAX_INPUT);
    b
}

/// Replays the corpus, then runs mutated inputs through `check` until the budget is
/// spent; panics naming the saved input when one fails. Returns how many ran.
fn fuzz(target: &str, tokens: &[&str], check: impl Fn(&[u8])) -> u64 {
    let corpus = corpus(target);
    let run = |input: &[u8], what: &str| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!(
                "{target}-{}",
                msxsync::hex::encode(&msxsync::catalog::sha256(input)[..8],)
            ));
            std::fs::write(&file, input).unwrap();
            panic!(
                "fuzz {target}: {what} failed; saved as {} (copy it into \
                 tests/fuzz/corpus/{target}/ to keep it)",
                file.display()
            );
        }
    };
    for (i, input) in corpus.iter().enumerate() {
        run(input, &format!("corpus input {i}"));
    }
    // The same sequence every run: a failure found once is found again.
    let mut rng = Rng::new(
        target
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64),
    );
    let start = Instant::now();
    let budget = budget();
    let mut n = 0u64;
    while start.elapsed() < budget || n == 0 {
        // Checking the clock costs more than a short input: look every 64.
        for _ in 0..64 {
            let input = mutate(&mut rng, &corpus, tokens);
            run(&input, &format!("input {n}"));
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {target}: {n} inputs in {secs:.1} s ({:.0} a second)",
        n as f64 / secs
    );
    n
}

/// Decoding never panics, and what decodes encodes back to the same message.
fn round_trip<M: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let msg = protocol::decode::<M>(bytes).ok()?;
    let again = protocol::decode::<M>(&protocol::encode(&msg));
    assert_eq!(again.as_ref(), Ok(&msg), "re-encoding changed the message");
    Some(msg)
}

#[test]
fn fuzz_client_messages() {
    fuzz("client_msg", &["\u{0}", "\u{4}"], |bytes| {
        round_trip::<ClientMsg>(bytes);
    });
}

#[test]
fn fuzz_server_messages() {
    fuzz("server_msg", &["\u{0}", "\u{8}", "\u{2}"], |bytes| {
        if let Some(msg) = round_trip::<ServerMsg>(bytes) {
            let _ = msg.memory_bytes();
            if let ServerMsg::Several(packed) = msg {
                for inner in packed {
                    round_trip::<ServerMsg>(&inner);
                }
            }
        }
    });
}

/// Regions file text for a parsed definition, which must parse to the same.
fn render(def: &GameDef) -> String {
    let mut text = format!("{}\n", def.rom_file);
    for (key, value) in [
        ("title", def.title.clone()),
        ("machine", def.machine.clone()),
        ("romtype", def.romtype.clone()),
        ("sync-when", def.sync_when.as_ref().map(|c| c.to_string())),
    ] {
        if let Some(v) = value {
            text += &format!("{key}: {v}\n");
        }
    }
    for r in &def.regions {
        let (start, end, words) = (r.start, r.end, &r.description);
        text += &match r.kind {
            RegionKind::Bytes => format!("{start:x} {end:x} {words}\n"),
            RegionKind::Counter(c) => {
                let (name, _) = Encoding::ALL
                    .iter()
                    .find(|(_, e)| *e == c.encoding)
                    .expect("every encoding has a name");
                format!(
                    "counter: {start:x} {end:x} {name} min {} max {} {words}\n",
                    c.min, c.max
                )
            }
        };
    }
    text
}

#[test]
fn fuzz_regions_files() {
    let tokens = [
        "\n",
        " ",
        "\t",
        "\r\n",
        "#",
        ":",
        "title: ",
        "counter: ",
        " bcd",
        " binary-be",
        " min ",
        " max ",
        "4294967295",
        "machine: ",
        "romtype: ",
        "sync-when: ",
        "e000",
        "ffff",
        "0x",
        "$",
        "==",
        "&",
        " and ",
        " or ",
        "..",
        "/",
        "\u{1b}",
        "é",
    ];
    fuzz("regions", &tokens, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match regions::parse("fuzz.regions", &text) {
            Err(e) => {
                let e = format!("{e:#}");
                assert!(!e.chars().any(char::is_control), "unfiltered: {e:?}");
            }
            Ok(def) => {
                assert!(!def.regions.is_empty());
                assert!(def.shared_bytes() <= protocol::MAX_SHARED_BYTES);
                for (i, r) in def.regions.iter().enumerate() {
                    assert!(r.start <= r.end);
                    for o in &def.regions[..i] {
                        assert!(r.end < o.start || o.end < r.start, "overlap");
                    }
                }
                let rom = Path::new(&def.rom_file);
                assert!(!rom.has_root(), "absolute rom {rom:?}");
                assert!(
                    !rom.components()
                        .any(|c| c == std::path::Component::ParentDir),
                    "rom with .. {rom:?}"
                );
                let again = regions::parse("again.regions", &render(&def))
                    .unwrap_or_else(|e| panic!("{e:#}\n{}", render(&def)));
                let strip = |d: &GameDef| {
                    let mut d = d.clone();
                    d.regions.iter_mut().for_each(|r| r.line = 0);
                    d
                };
                assert_eq!(strip(&again), strip(&def));
            }
        }
    });
}

#[test]
fn fuzz_sync_when_conditions() {
    let tokens = [
        " ", "==", "!=", "<=", ">=", "<", ">", "&", " and ", " or ", "0x", "$", "e001", "ff",
        "10000", "(",
    ];
    fuzz("sync_when", &tokens, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(cond) = parse_sync_when(&text) {
            // What the server sends is the normalised text, read back by every player.
            assert_eq!(parse_sync_when(&cond.to_string()), Ok(cond));
        }
    });
}

#[test]
fn fuzz_openmsx_output() {
    let tokens = [
        "<reply result=\"ok\">",
        "<reply result=\"nok\">",
        "</reply>",
        "<log level=\"warning\">",
        "</log>",
        "<update type=\"setting\" name=\"msxsync_out\">",
        "</update>",
        "<reply result=\"ok\"/>",
        "&#x0a;",
        "&#x1b;",
        "&#xffffff;",
        "&amp;",
        "&bogus;",
        "<![CDATA[x]]>",
        "<!--",
        "<?xml version=\"1.0\"?>",
        "\"",
        "'",
    ];
    fuzz("xml", &tokens, |bytes| {
        let mut reader = OutputReader::new(bytes);
        // Every element read consumes input: more elements than bytes is a loop.
        for _ in 0..=bytes.len() + 1 {
            match reader.next_output() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
        panic!("the reader kept returning elements past the end of its input");
    });
}
