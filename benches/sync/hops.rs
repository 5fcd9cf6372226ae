//! The way of one change, hop by hop: matches the game's write in player 1, the hooks'
//! push, the lines `play` and `serve` wrote to the hop log (MSXSYNC_HOP_LOG, see
//! src/hops.rs), the apply in player 2 and the byte landing there. Every timestamp is
//! the system's real-time clock in µs, read by openMSX (`clock microseconds`) or by
//! msxsync, so differences across processes are meaningful.

use anyhow::{bail, Context, Result};

/// The hops, in order; each is the time from the end of the previous one.
pub const HOPS: [&str; 10] = [
    "game write -> flush pushes it (writer's openMSX)",
    "push -> line read by the writer's play (openMSX stdout)",
    "line read -> handled by its sync loop",
    "handled -> sent to the server",
    "sent -> accepted by the server",
    "accepted -> written to the other player's socket",
    "written -> read by the other play's sync loop",
    "read -> apply posted to its openMSX",
    "posted -> apply runs in the other openMSX",
    "apply runs -> byte in the other player's RAM",
];

/// One write seen by a probe watchpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Write {
    /// Wall clock, µs.
    pub us: i64,
    /// The byte written.
    pub value: u8,
    /// Written by msxsync (an update from the server), not by the game.
    pub by_msxsync: bool,
    /// Emulated time, s.
    pub emu: f64,
}

/// One word of a bench list as a number; `what` names it in the error.
fn field<T: std::str::FromStr>(word: &str, what: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    word.parse().with_context(|| format!("bad {what} {word:?}"))
}

/// Parses a probe's list `T V F E ...` (see `probe_install` in latency.rs).
pub fn parse_probe(text: &str) -> Result<Vec<Write>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.len().is_multiple_of(4) {
        bail!("probe list of {} words, not groups of 4", words.len());
    }
    words
        .chunks(4)
        .map(|p| {
            Ok(Write {
                us: field(p[0], "time")?,
                value: field(p[1], "value")?,
                by_msxsync: p[2] == "1",
                emu: field(p[3], "time")?,
            })
        })
        .collect()
}

/// The game's writes that changed the byte: a game that rewrites it every frame
/// writes the same value again and again, and only a write of a value other than the
/// byte's last one (written by anyone, msxsync included) is a change.
pub fn value_changes(log: &[Write], before: u8) -> Vec<Write> {
    let mut last = before;
    let mut out = Vec::new();
    for w in log {
        if w.value != last && !w.by_msxsync {
            out.push(*w);
        }
        last = w.value;
    }
    out
}

/// For each write in `from` (in order), the index of the first later write of the same
/// value in `to`, consuming `to` in order; `None` when it never arrived.
pub fn pair_up(from: &[Write], to: &[Write]) -> Vec<Option<usize>> {
    let mut j = 0;
    from.iter()
        .map(|w| {
            let k = to[j..]
                .iter()
                .position(|x| x.value == w.value && x.us >= w.us)?;
            let found = j + k;
            j = found + 1;
            Some(found)
        })
        .collect()
}

/// A call of a hooks proc seen by a bench trace: wall clock (µs), emulated time (s),
/// the push sequence number (pushes only) and the argument with spaces made commas.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub us: i64,
    pub emu: f64,
    pub seq: u64,
    pub text: String,
}

/// Parses a trace list of groups of `words` words: `T E [SEQ] TEXT`.
pub fn parse_calls(text: &str, with_seq: bool) -> Result<Vec<Call>> {
    let n = if with_seq { 4 } else { 3 };
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.len().is_multiple_of(n) {
        bail!("trace list of {} words, not groups of {n}", words.len());
    }
    words
        .chunks(n)
        .map(|p| {
            Ok(Call {
                us: field(p[0], "time")?,
                emu: field(p[1], "time")?,
                seq: if with_seq { field(p[2], "seq")? } else { 0 },
                text: p[n - 1].to_string(),
            })
        })
        .collect()
}

/// The byte at `region`/`offset` in groups of `stride` comma-separated fields
/// `REGION,OFFSET,HEX...` where field `hex_at` of the group holds the bytes. For a push
/// (`d,R,O,OLD,NEW,...`, after skipping "d") that is the new value; for an apply
/// (`R,O,VALUES,MASKS,...`) the value.
fn byte_in(fields: &[&str], stride: usize, hex_at: usize, region: u16, offset: u16) -> Option<u8> {
    for g in fields.chunks(stride) {
        if g.len() < stride {
            return None;
        }
        let (r, o): (u16, u16) = (g[0].parse().ok()?, g[1].parse().ok()?);
        let bytes = msxsync::hex::decode(g[hex_at]).ok()?;
        if r == region && offset >= o && usize::from(offset - o) < bytes.len() {
            return Some(bytes[usize::from(offset - o)]);
        }
    }
    None
}

/// The new value a push gives the byte, if it carries it.
pub fn push_value(text: &str, region: u16, offset: u16) -> Option<u8> {
    let fields: Vec<&str> = text.split(',').collect();
    if fields.first() != Some(&"d") {
        return None;
    }
    byte_in(&fields[1..], 4, 3, region, offset)
}

/// The value an apply writes into the byte, if it carries it.
pub fn apply_value(text: &str, region: u16, offset: u16) -> Option<u8> {
    let fields: Vec<&str> = text.split(',').collect();
    byte_in(&fields, 4, 2, region, offset)
}

/// One line of the hop log: `US PID WHAT ARGS...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub us: i64,
    pub pid: u32,
    pub what: String,
    pub args: Vec<String>,
}

/// Parses the hop log; lines that do not parse are skipped.
pub fn parse_log(text: &str) -> Vec<Line> {
    let mut lines: Vec<Line> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Line {
                us: w.next()?.parse().ok()?,
                pid: w.next()?.parse().ok()?,
                what: w.next()?.to_string(),
                args: w.map(str::to_string).collect(),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.us);
    lines
}

/// Who is who in the hop log, for one change.
pub struct Pids {
    /// The `msxsync play` of the player whose game wrote.
    pub from: u32,
    /// The other player's.
    pub to: u32,
    pub serve: u32,
}

/// Everything logged about a run of changes to one byte, to follow each change.
pub struct Trail<'a> {
    /// Player 1's pushes.
    pub pushes: &'a [Call],
    /// Player 2's applies.
    pub applies: &'a [Call],
    /// The hop log, in time order.
    pub log: &'a [Line],
    pub pids: &'a Pids,
    /// The byte: region and offset.
    pub region: u16,
    pub offset: u16,
}

impl Trail<'_> {
    /// The timestamps of one change along its way; `None` where a step was not found.
    pub fn follow(&self, write: &Write, land: Option<&Write>) -> [Option<i64>; 11] {
        let Trail {
            pushes,
            applies,
            log,
            pids,
            region,
            offset,
        } = *self;
        let mut t = [None; 11];
        t[0] = Some(write.us);
        t[10] = land.map(|l| l.us);
        let find = |pid: u32, what: &str, after: i64, ok: &dyn Fn(&[String]) -> bool| {
            log.iter()
                .find(|l| l.pid == pid && l.what == what && l.us >= after && ok(&l.args))
        };
        let Some(push) = pushes
            .iter()
            .find(|p| p.us >= write.us && push_value(&p.text, region, offset) == Some(write.value))
        else {
            return t;
        };
        t[1] = Some(push.us);
        let seq = push.seq.to_string();
        let is_seq = |a: &[String]| a.first() == Some(&seq);
        t[2] = find(pids.from, "omsx-update", push.us, &is_seq).map(|l| l.us);
        let handled = find(pids.from, "play-push", push.us, &is_seq);
        t[3] = handled.map(|l| l.us);
        let sent = handled.and_then(|h| find(pids.from, "play-send", h.us, &|_| true));
        t[4] = sent.map(|l| l.us);
        let accepted = sent.and_then(|s| {
            let (me, batch) = (s.args.first()?, s.args.get(1)?);
            find(pids.serve, "serve-accept", s.us, &|a| {
                a.first() == Some(me) && a.get(1) == Some(batch)
            })
        });
        t[5] = accepted.map(|l| l.us);
        let (Some(acc), Some(s)) = (accepted, sent) else {
            return t;
        };
        let (Some(me), Some(useq)) = (s.args.first(), acc.args.get(2)) else {
            return t;
        };
        let carries = |a: &[String]| {
            a.first() != Some(me)
                && a.get(1)
                    .is_some_and(|list| list.split(',').any(|x| x == useq.as_str()))
        };
        t[6] = find(pids.serve, "serve-write", acc.us, &carries).map(|l| l.us);
        let received = find(pids.to, "play-recv", acc.us, &|a| a.first() == Some(useq));
        t[7] = received.map(|l| l.us);
        let posted = received.and_then(|r| find(pids.to, "play-post", r.us, &|_| true));
        t[8] = posted.map(|l| l.us);
        t[9] = applies
            .iter()
            .find(|a| a.us >= write.us && apply_value(&a.text, region, offset) == Some(write.value))
            .map(|a| a.us);
        t
    }
}

/// The hops (ms) from a change's timestamps: each step minus the one before it, `None`
/// when either is missing.
pub fn hop_times(t: &[Option<i64>; 11]) -> [Option<f64>; 10] {
    let mut out = [None; 10];
    for i in 0..10 {
        if let (Some(a), Some(b)) = (t[i], t[i + 1]) {
            out[i] = Some((b - a) as f64 / 1000.0);
        }
    }
    out
}

/// Self-checks run by `cargo test --benches`.
pub fn self_check() {
    let w = parse_probe("12 5 0 1.5 13 6 1 2.5").unwrap();
    assert_eq!(
        (w[0].us, w[0].value, w[0].by_msxsync, w[0].emu),
        (12, 5, false, 1.5)
    );
    assert!(w[1].by_msxsync);
    assert!(parse_probe("12 5 0").is_err());
    let mk = |us, value| Write {
        us,
        value,
        by_msxsync: false,
        emu: 0.0,
    };
    let from = [mk(1000, 5), mk(2000, 6), mk(3000, 7)];
    let to = [mk(900, 5), mk(1500, 5), mk(2600, 6)];
    assert_eq!(pair_up(&from, &to), vec![Some(1), Some(2), None]);
    let applied = Write {
        by_msxsync: true,
        ..mk(6, 7)
    };
    let log = [
        mk(1, 9),
        mk(2, 9),
        mk(3, 5),
        mk(4, 5),
        mk(5, 9),
        applied,
        mk(7, 7),
    ];
    let changed: Vec<i64> = value_changes(&log, 9).iter().map(|w| w.us).collect();
    assert_eq!(changed, vec![3, 5]);
    assert_eq!(push_value("d,0,4,0000,11aa", 0, 5), Some(0xaa));
    assert_eq!(push_value("d,1,0,00,01,0,5,00,bb", 0, 5), Some(0xbb));
    assert_eq!(push_value("d,0,6,00,01", 0, 5), None);
    assert_eq!(push_value("boot", 0, 5), None);
    assert_eq!(apply_value("0,5,cc,ff", 0, 5), Some(0xcc));
    assert_eq!(apply_value("1,5,cc,ff", 0, 5), None);
    let calls = parse_calls("10 0.5 3 d,0,5,00,aa 20 0.6 4 boot", true).unwrap();
    assert_eq!(
        (calls[1].us, calls[1].seq, calls[1].text.as_str()),
        (20, 4, "boot")
    );
    let log = parse_log(
        "105 1 omsx-update 3\n106 1 play-push 3\n108 1 play-send 7 1\n\
         109 3 serve-accept 7 1 42\n111 3 serve-write 7 42\n110 3 serve-write 8 41,42\n\
         112 2 play-recv 42\n113 2 play-post\nbad line\n",
    );
    assert_eq!(log.len(), 8);
    let pids = Pids {
        from: 1,
        to: 2,
        serve: 3,
    };
    let pushes = parse_calls("104 0.1 3 d,0,5,00,aa", true).unwrap();
    let applies = parse_calls("114 0.2 0,5,aa,ff", false).unwrap();
    let land = mk(115, 0xaa);
    let trail = Trail {
        pushes: &pushes,
        applies: &applies,
        log: &log,
        pids: &pids,
        region: 0,
        offset: 5,
    };
    let t = trail.follow(&mk(100, 0xaa), Some(&land));
    assert_eq!(
        t,
        [100, 104, 105, 106, 108, 109, 110, 112, 113, 114, 115].map(Some)
    );
    assert_eq!(hop_times(&t)[0], Some(0.004));
}
