//! The soak: a long evening of changes through the real programs. A `msxsync serve`
//! process and two `msxsync play` processes, each attached to a headless openMSX of the
//! test's own (so the test drives the games through its own control connections), trade
//! tens of thousands of colliding changes, in bursts of a second. Nothing may stall:
//! every burst passes the server and, after it, a change each way reaches the other
//! player. The memory of `serve` and `play` (VmRSS of their own processes, nothing of
//! this harness), measured between bursts, must not grow with the number of changes: a
//! leak of 300 bytes per update in either program fails it.
//!
//! Its own test binary: `cargo test` runs test binaries one after the other, so the
//! flood runs alone and does not slow down the other end-to-end tests (nor they it).

mod common;

use common::e2e::{game_does, game_does_seen_by, wait_converged_at, wait_ready};
use common::play::{alive, rss_kib, signal, Play};
use common::serve::TestgameServer;
use common::testrom::*;
use common::{poll, require_openmsx, until, TIMEOUT};
use msxsync::openmsx::OpenMsx;
use msxsync::protocol::{PlayerId, PlayerInfo, ServerMsg};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Updates each player must have sent through the server.
const EACH_WAY: u64 = 10_000;
/// How much a process's resident memory may grow from the first quarter of the soak
/// (start-up and warm-up done) to its end: allocator noise, nothing per change. Each
/// player receives some 15,000 updates in that time: keeping even 300 bytes of each
/// exceeds it.
const GROWTH_KIB: u64 = 4 * 1024;
/// Emulation speed in percent: 1000 is ten times normal, some 600 frames a second,
/// each a batch from each player. (Unthrottled, a C-BIOS machine makes 20,000 frames a
/// second, more than any game sends; the server would rightly drop such a player.)
const SPEED: u32 = 1000;
/// Frames in one burst of changes: about a second at [`SPEED`]. Between bursts the
/// players catch up, so that on a machine too loaded to keep up with the flood the
/// backlog (and the memory it takes) stays that of one burst.
const BURST: u16 = 600;
/// A burst also ends after this much wall time, once both games made a frame in it:
/// on a starved machine the emulators may make only a few frames a second.
const BURST_TIME: Duration = Duration::from_secs(2);

/// The processes whose memory is measured.
const MEASURED: [&str; 3] = ["serve", "ann's play", "bob's play"];

/// One reading of the processes' resident memory.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Updates sequenced from the player who had sent fewer, when this was taken.
    updates: u64,
    /// VmRSS in KiB of each of [`MEASURED`].
    kib: [u64; 3],
}

/// An openMSX of the test's own: C-BIOS_MSX1, headless, no cartridge yet (the player
/// attaching to it inserts the game's).
async fn own_openmsx() -> OpenMsx {
    let msx = OpenMsx::spawn(&launch(None)).await.expect("openmsx starts");
    // The C-BIOS logo takes seconds at normal speed.
    msx.command("set throttle off").await.unwrap();
    msx
}

/// The test game's frame counter.
async fn frames(msx: &OpenMsx) -> u16 {
    // Both bytes in one command, so the game cannot count in between.
    let reply = msx
        .command(&format!(
            "expr {{[debug read memory {FRAMES}] + 256 * [debug read memory {}]}}",
            FRAMES + 1
        ))
        .await
        .unwrap();
    reply.trim().parse().expect("a frame count")
}

/// A burst of changes: both games rewrite the 64-byte region with new values every
/// frame, every frame a batch from each player, colliding with the other's all the
/// time, for [`BURST`] frames or [`BURST_TIME`]. Returns the frames the slower game made
/// with both games in that mode (at least 1). The frame counter and the clock size the
/// burst; they say nothing about delivery, which the caller waits for.
async fn burst(a: &OpenMsx, b: &OpenMsx) -> u64 {
    for m in [a, b] {
        game_does(m, CMD_EVERY_FRAME, 0, EF_CHANGING).await;
    }
    // Counted from here, where both games rewrite the region every frame: each frame
    // counted is a batch from each player.
    let start = [frames(a).await, frames(b).await];
    let began = Instant::now();
    let made = poll("both games to make frames", TIMEOUT, || async {
        let made = frames(a)
            .await
            .wrapping_sub(start[0])
            .min(frames(b).await.wrapping_sub(start[1]));
        (made >= BURST || (made > 0 && began.elapsed() >= BURST_TIME)).then_some(made)
    })
    .await;
    for m in [a, b] {
        game_does(m, CMD_EVERY_FRAME, 0, EF_NONE).await;
    }
    u64::from(made)
}

/// A third client of the game that counts the updates the server sequences, per
/// player: what every player receives too.
struct Observer {
    counts: Arc<Mutex<BTreeMap<PlayerId, u64>>>,
    players: Vec<PlayerInfo>,
    /// Why its connection ended, if it did (then the counts stop).
    ended: Arc<Mutex<Option<String>>>,
}

impl Observer {
    /// Joins "testgame" on `addr` and counts from then on, in a thread of its own.
    fn join(addr: &str) -> Observer {
        let (client, joined) = smol::block_on(async {
            let mut c = msxsync::client::connect(addr, "observer")
                .await
                .expect("observer connects");
            let j = c.join("testgame").await.expect("observer joins");
            (c, j)
        });
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let ended = Arc::new(Mutex::new(None));
        let (keep_open, mut rx) = client.split();
        let (c, e) = (counts.clone(), ended.clone());
        std::thread::spawn(move || {
            smol::block_on(async move {
                let _keep_open = keep_open;
                loop {
                    match rx.recv().await {
                        Ok(ServerMsg::Update { player, .. }) => {
                            *c.lock().unwrap().entry(player).or_insert(0) += 1;
                        }
                        Ok(_) => {}
                        Err(why) => {
                            *e.lock().unwrap() = Some(format!("{why:#}"));
                            return;
                        }
                    }
                }
            })
        });
        Observer {
            counts,
            players: joined.room.players,
            ended,
        }
    }

    /// Updates sequenced so far from the player called `name`.
    fn from(&self, name: &str) -> u64 {
        let id = self
            .players
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the game: {:?}", self.players))
            .id;
        self.counts.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

#[test]
fn a_long_evening_of_changes_neither_stalls_nor_grows() {
    if !require_openmsx() {
        return;
    }
    let server = TestgameServer::start();
    let serve = &server.serve;
    let (ann_msx, bob_msx) = smol::block_on(smol::future::zip(own_openmsx(), own_openmsx()));
    let attach = |msx: &OpenMsx, name: &str| {
        let pid = msx.pid().unwrap().to_string();
        let extra = ["--game", "testgame", "--attach", &pid];
        Play::start_as(&serve.addr, name, server.cache.path(), &extra)
    };
    let mut ann = attach(&ann_msx, "ann");
    let mut bob = attach(&bob_msx, "bob");
    for p in [&mut ann, &mut bob] {
        p.wait_for("playing testgame");
    }
    let observer = Observer::join(&serve.addr);
    let pids = [serve.child.id() as i32, ann.pid(), bob.pid()];

    smol::block_on(async {
        for m in [&ann_msx, &bob_msx] {
            wait_ready(m).await;
            m.command("set throttle on").await.unwrap();
            m.command(&format!("set speed {SPEED}")).await.unwrap();
        }
        let started = Instant::now();
        let mut samples = vec![Sample {
            updates: 0,
            kib: pids.map(rss_kib),
        }];
        let mut rounds = 0u32;
        loop {
            let before = [observer.from("ann"), observer.from("bob")];
            if before[0].min(before[1]) >= EACH_WAY {
                break;
            }
            rounds += 1;
            let made = burst(&ann_msx, &bob_msx).await;
            // A change each way in the other region, made after the burst, must get
            // through: it travels behind everything of the burst on each connection,
            // so each player has then taken in and sent on the whole burst.
            let probe = (rounds % 255 + 1) as u8;
            let (a, b) = (&ann_msx, &bob_msx);
            game_does_seen_by(a, CMD_SET, SHARED0 + 1, probe, &[b], "ann's probe in bob").await;
            game_does_seen_by(b, CMD_SET, SHARED0 + 2, probe, &[a], "bob's probe in ann").await;
            // The burst went through the server: nothing stalled.
            until("the burst to pass the server", async || {
                if let Some(why) = observer.ended.lock().unwrap().as_ref() {
                    panic!("the observer was dropped: {why}");
                }
                let from = [observer.from("ann"), observer.from("bob")];
                from[0] >= before[0] + made / 2 && from[1] >= before[1] + made / 2
            })
            .await;
            // Measured between bursts, with every queue drained: what stays.
            samples.push(Sample {
                updates: observer.from("ann").min(observer.from("bob")),
                kib: pids.map(rss_kib),
            });
        }
        let took = started.elapsed();
        wait_converged_at(&serve.addr, "testgame", &[&ann_msx, &bob_msx]).await;
        eprintln!(
            "soak: ann sent {}, bob sent {} in {took:.1?}, {rounds} bursts",
            observer.from("ann"),
            observer.from("bob"),
        );
        let base = *samples
            .iter()
            .find(|s| s.updates >= EACH_WAY / 4)
            .expect("a sample after the first quarter");
        let end = *samples.last().unwrap();
        for (i, who) in MEASURED.iter().enumerate() {
            let peak = samples.iter().map(|s| s.kib[i]).max().unwrap();
            eprintln!(
                "soak: {who} VmRSS {} KiB at the start, {} KiB after a quarter, {} KiB at the \
                 end, {peak} KiB at most",
                samples[0].kib[i], base.kib[i], end.kib[i]
            );
            assert!(
                end.kib[i] <= base.kib[i] + GROWTH_KIB,
                "{who} grew from {} KiB to {} KiB in {} updates each way",
                base.kib[i],
                end.kib[i],
                end.updates - base.updates
            );
        }

        // Both leave as a person would (Ctrl-C); their openMSX keep running.
        for p in [&mut ann, &mut bob] {
            signal(p.pid(), "INT");
            assert_eq!(p.wait_exit(), 0, "output: {:#?}", p.out.seen);
            // Nobody was dropped as too slow (and came back) on the way.
            let lost = p
                .out
                .seen
                .iter()
                .find(|l| l.contains("lost the connection"));
            assert!(lost.is_none(), "a player was dropped: {lost:?}");
        }
        for m in [ann_msx, bob_msx] {
            let pid = m.pid().unwrap() as i32;
            assert!(alive(pid), "the player's own openMSX kept running");
            m.shutdown().await.unwrap();
        }
    });
}
