//! Driver-level tests with a real, headless openMSX (C-BIOS_MSX1) running the test
//! cartridge tests/roms/testgame.rom. They skip only when openMSX is missing and
//! MSXSYNC_REQUIRE_OPENMSX is unset (see tests/common/mod.rs).

mod common;

use common::e2e::{game_does, peek, post, wait_ready, Emulator};
use common::testrom::{self, *};
use common::{poll, require_openmsx, require_program, TIMEOUT};
use msxsync::counter::{CounterWrite, Flushed};
use msxsync::delta::Change;
use msxsync::openmsx::{Event, HookEvent, Hooks, OpenMsx};
use std::path::Path;
use std::time::{Duration, Instant};

/// The test game running with hooks on its regions.
struct Game {
    msx: OpenMsx,
    hooks: Hooks,
    events: async_channel::Receiver<Event>,
    /// Real time from spawn to the cartridge's INIT.
    to_init: Duration,
}

impl Game {
    /// Starts openMSX with the test ROM (throttle off), waits until the game's start-up
    /// is done, then watches its regions.
    async fn start() -> Game {
        Self::start_with(&testrom::rom_path(), &testrom::regions()).await
    }

    async fn start_with(rom: &Path, regions: &[msxsync::protocol::RegionInfo]) -> Game {
        let t0 = Instant::now();
        let msx = OpenMsx::spawn(&launch(Some(rom))).await.expect("spawn");
        msx.command("set throttle off").await.unwrap();
        let mut hooks = Hooks::load(&msx).await.expect("load hooks");
        let image = std::fs::read(rom).unwrap();
        let reached = hooks
            .wait_for_cartridge(&image, TIMEOUT, |_| {})
            .await
            .expect("waiting for the cartridge");
        assert!(reached, "the cartridge's INIT was not reached");
        let to_init = t0.elapsed();
        // Emulation waits at INIT until we say so.
        hooks.resume().await.expect("resume");
        wait_ready(&msx).await;
        hooks.watch(regions).await.expect("watch regions");
        let events = msx.events();
        Game {
            msx,
            hooks,
            events,
            to_init,
        }
    }

    /// The next event of the hooks, skipping logs and other settings.
    async fn next_hook_event(&self) -> HookEvent {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ev = smol::future::or(async { self.events.recv().await.ok() }, async {
                smol::Timer::at(deadline).await;
                None
            })
            .await
            .expect("timed out waiting for a hook event");
            assert_ne!(ev, Event::Closed, "openmsx closed");
            if let Some(decoded) = self.hooks.decode(&ev) {
                return decoded.expect("malformed push");
            }
        }
    }

    /// Waits until the hooks compare region `r` instead of watching it.
    async fn wait_polled(&self, r: u16) {
        let var = format!("set msxsync::polled({r})");
        poll(&format!("region {r} to be polled"), TIMEOUT, || async {
            (self.msx.command(&var).await.unwrap() == "1").then_some(())
        })
        .await;
    }

    async fn next_changes(&self) -> Vec<Change> {
        match self.next_hook_event().await {
            HookEvent::LocalChanges(c) => c,
            other => panic!("expected local changes, got {other:?}"),
        }
    }

    async fn stop(self) {
        self.msx.shutdown().await.unwrap();
    }
}

impl Emulator for Game {
    fn msx(&self) -> &OpenMsx {
        &self.msx
    }
}

fn masked(region: u16, offset: u16, value: u8, mask: u8) -> Change {
    Change {
        region,
        offset,
        values: vec![value],
        masks: vec![mask],
    }
}

#[test]
fn commands_replies_and_escaping() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let msx = OpenMsx::spawn(&launch(None)).await.unwrap();
        // `<`, `&` and `>` reach Tcl intact and their replies come back unescaped.
        assert_eq!(msx.command("expr {2 > 1 && 1 < 2}").await.unwrap(), "1");
        assert_eq!(
            msx.command("return {a<b && c>d}").await.unwrap(),
            "a<b && c>d"
        );
        assert_eq!(msx.command("string length {<&>}").await.unwrap(), "3");
        assert_eq!(
            msx.command("return \"x\\ny\\tz\"").await.unwrap(),
            "x\ny\tz"
        );
        // A failing command is an error naming it; later replies stay in order.
        let err = msx
            .command("error {bad <thing> & more}")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad <thing> & more"), "{err}");
        assert!(err.contains("error {bad"), "{err}");
        let (a, b, c) = futures_lite_join3(
            msx.command("return 1"),
            msx.command("no_such_command_here"),
            msx.command("return 3"),
        )
        .await;
        assert_eq!(a.unwrap(), "1");
        assert!(b.is_err());
        assert_eq!(c.unwrap(), "3");
        // Nothing we set is saved into the player's settings.
        assert_eq!(
            msx.command("set save_settings_on_exit").await.unwrap(),
            "false"
        );
        msx.shutdown().await.unwrap();
    });
}

/// Runs three futures concurrently (their commands are written in this order).
async fn futures_lite_join3<A, B, C>(
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
    c: impl std::future::Future<Output = C>,
) -> (A, B, C) {
    let ab = smol::future::zip(a, b);
    let ((a, b), c) = smol::future::zip(ab, c).await;
    (a, b, c)
}

#[test]
fn exit_is_reported_and_drop_kills_the_child() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let msx = OpenMsx::spawn(&launch(None)).await.unwrap();
        let events = msx.events();
        // The player closing the window looks like this.
        let _ = msx.command("exit").await;
        loop {
            let ev = events.recv().await.expect("events end with Closed");
            if ev == Event::Closed {
                break;
            }
        }
        assert!(msx.is_closed());
        assert!(msx.command("return 1").await.is_err());

        let msx = OpenMsx::spawn(&launch(None)).await.unwrap();
        let pid = msx.pid().unwrap();
        let proc_dir = format!("/proc/{pid}");
        assert!(Path::new(&proc_dir).exists());
        drop(msx);
        poll("the child to be gone", TIMEOUT, || async {
            (!Path::new(&proc_dir).exists()).then_some(())
        })
        .await;
    });
}

#[test]
fn attach_by_pid_through_the_control_socket() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let owner = OpenMsx::spawn(&launch(None)).await.unwrap();
        let pid = owner.pid().unwrap();
        owner
            .command("set ::msxsync_attach_probe 42")
            .await
            .unwrap();
        let attached = OpenMsx::attach(&pid.to_string()).await.unwrap();
        assert_eq!(
            attached
                .command("set ::msxsync_attach_probe")
                .await
                .unwrap(),
            "42"
        );
        // Closing the attached connection leaves the emulator running.
        attached.shutdown().await.unwrap();
        assert_eq!(owner.command("return 7").await.unwrap(), "7");
        owner.shutdown().await.unwrap();
    });
}

#[test]
fn hostile_strings_never_run_as_tcl() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rom = dir.path().join("x]; set ::pwned 1; [$y {\"q' &<>.rom");
    std::fs::copy(testrom::rom_path(), &rom).unwrap();
    let mut regions = testrom::regions();
    regions[0].description = "]; set ::pwned 2; [".into();
    regions[1].description = "$::pwned {\" } \\ [set ::pwned 3]".into();
    smol::block_on(async {
        let game = Game::start_with(&rom, &regions).await;
        assert_eq!(game.msx.command("info exists ::pwned").await.unwrap(), "0");
        // The hooks still work on these regions.
        game_does(&game, CMD_SET, SHARED0 + 1, 0x42).await;
        assert_eq!(game.next_changes().await, vec![masked(0, 1, 0x42, 0x42)]);
        game.stop().await;
    });
}

#[test]
fn game_writes_become_exact_local_changes() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        eprintln!("spawn to cartridge INIT: {:?}", g.to_init);
        game_does(&g, CMD_SET, SHARED0 + 3, 0x21).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 3, 0x21, 0x21)]);
        game_does(&g, CMD_OR, SHARED0 + 3, 0x80).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 3, 0xa1, 0x80)]);
        game_does(&g, CMD_AND_NOT, SHARED0 + 3, 0x01).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 3, 0xa0, 0x01)]);
        game_does(&g, CMD_ADD, SHARED0 + 4, 3).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 4, 0x03, 0x03)]);
        game_does(&g, CMD_ADD, SHARED0 + 4, 0xff).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 4, 0x02, 0x01)]);
        // Last byte of a region (watchpoint ranges are inclusive).
        game_does(&g, CMD_SET, SHARED1 + 63, 0x01).await;
        assert_eq!(g.next_changes().await, vec![masked(1, 63, 0x01, 0x01)]);
        // Writes that change nothing, and writes outside the regions, are silent:
        // the next report is the marker only.
        game_does(&g, CMD_OR, SHARED0 + 3, 0x20).await;
        game_does(&g, CMD_SET, 0xE060, 0x99).await;
        game_does(&g, CMD_SET, SHARED0, 0x5a).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 0, 0x5a, 0x5a)]);
        // Every frame changing values: whole-region changes, consistent with RAM.
        // A flush waits for the game's write burst to end: one per frame, none lost
        // or torn.
        game_does(&g, CMD_EVERY_FRAME, 0, EF_CHANGING).await;
        let mut previous: Option<u8> = None;
        for _ in 0..5 {
            let changes = g.next_changes().await;
            assert_eq!(changes.len(), 1, "{changes:?}");
            let c = &changes[0];
            assert_eq!((c.region, c.offset, c.len()), (1, 0, 64));
            for i in 1..64 {
                assert_eq!(c.values[i], c.values[0].wrapping_add(i as u8));
            }
            if let Some(p) = previous {
                assert_eq!(c.values[0], p.wrapping_add(1), "a frame was skipped");
            }
            previous = Some(c.values[0]);
        }
        game_does(&g, CMD_EVERY_FRAME, 0, EF_NONE).await;
        let ram = g.hooks.read_state().await.unwrap();
        // Drain what was flushed before the mode ended; then RAM and shadow agree.
        g.hooks.flush().await.unwrap();
        assert_eq!(g.hooks.read_shadow().await.unwrap(), ram);
        g.stop().await;
    });
}

#[test]
fn applied_changes_are_not_echoed() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        // The game rewrites region 1 every frame with the values it finds there.
        game_does(&g, CMD_EVERY_FRAME, 0, EF_UNCHANGED).await;
        g.hooks
            .apply(&[
                masked(0, 5, 0xa5, 0xff),
                masked(1, 10, 0x3c, 0x0f),
                Change::bytes(1, 20, vec![1, 2, 3]),
            ])
            .await
            .unwrap();
        assert_eq!(peek(&g, SHARED0 + 5).await, 0xa5);
        assert_eq!(peek(&g, SHARED1 + 10).await, 0x0c);
        assert_eq!(peek(&g, SHARED1 + 22).await, 3);
        // Let the game rewrite the applied bytes for a while, then make a marker
        // change: the first report must be the marker alone (I1).
        let frames = peek(&g, FRAMES).await;
        poll("a few frames", TIMEOUT, || async {
            (peek(&g, FRAMES).await.wrapping_sub(frames) > 10).then_some(())
        })
        .await;
        game_does(&g, CMD_SET, SHARED0, 0x77).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 0, 0x77, 0x77)]);
        assert_eq!(
            g.hooks.read_shadow().await.unwrap(),
            g.hooks.read_state().await.unwrap()
        );
        g.stop().await;
    });
}

#[test]
fn unflushed_local_bits_survive_an_apply() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        // Flush only when asked, so the remote change lands between the game's write
        // and its flush.
        g.msx.command("set msxsync::auto_flush 0").await.unwrap();
        game_does(&g, CMD_OR, SHARED0 + 6, 0x01).await;
        // Remote: set bit 7 and clear bit 0 of the same byte, set byte 7.
        g.hooks
            .apply(&[Change {
                region: 0,
                offset: 6,
                values: vec![0x80, 0x44],
                masks: vec![0x81, 0xff],
            }])
            .await
            .unwrap();
        // The game's bit 0 stays (not flushed yet), the remote bit 7 is in.
        assert_eq!(peek(&g, SHARED0 + 6).await, 0x81);
        assert_eq!(peek(&g, SHARED0 + 7).await, 0x44);
        g.hooks.flush().await.unwrap();
        // Only the game's bit travels.
        assert_eq!(g.next_changes().await, vec![masked(0, 6, 0x81, 0x01)]);
        assert_eq!(
            g.hooks.read_shadow().await.unwrap(),
            g.hooks.read_state().await.unwrap()
        );
        g.stop().await;
    });
}

#[test]
fn hooks_survive_loadstate() {
    if !require_openmsx() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The path goes to Tcl hex-encoded, never pasted.
    let state_hex = msxsync::hex::encode(state.to_str().unwrap().as_bytes());
    smol::block_on(async {
        let g = Game::start().await;
        g.msx
            .command(&format!("savestate [binary decode hex {state_hex}]"))
            .await
            .unwrap();
        game_does(&g, CMD_SET, SHARED0 + 7, 0x11).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 7, 0x11, 0x11)]);
        g.msx
            .command(&format!("loadstate [binary decode hex {state_hex}]"))
            .await
            .unwrap();
        assert_eq!(g.next_hook_event().await, HookEvent::MachineSwitched);
        // The state's RAM is taken as it is (not reported as a change), and the hooks
        // hold until msxsync writes the server's state back.
        assert_eq!(peek(&g, SHARED0 + 7).await, 0);
        let ram = g.hooks.read_state().await.unwrap();
        assert_eq!(g.hooks.read_shadow().await.unwrap(), ram);
        assert!(!g.hooks.is_active().await.unwrap());
        let mut server = ram.clone();
        server[0][7] = 0x11;
        g.hooks.write_state(&server).await.unwrap();
        assert_eq!(g.hooks.read_state().await.unwrap(), server);
        assert!(g.hooks.is_active().await.unwrap());
        // Emulation waited for us since the switch.
        assert_eq!(g.msx.command("debug breaked").await.unwrap(), "1");
        g.hooks.resume().await.unwrap();
        // The game's writes are seen again (the mailbox went back in time too, which
        // game_does allows for).
        game_does(&g, CMD_SET, SHARED0 + 8, 0x22).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 8, 0x22, 0x22)]);
        g.stop().await;
    });
}

#[test]
fn flushes_without_vertical_interrupts_too() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        // VDP interrupts off (R#1 bit 5): the game halts for good, and the flush must
        // not depend on frames. A debug write stands in for the game (it hits too).
        g.msx
            .command("debug write {VDP regs} 1 [expr {[debug read {VDP regs} 1] & 0xdf}]")
            .await
            .unwrap();
        let frames = peek(&g, FRAMES).await;
        g.msx
            .command(&format!("debug write memory {} 9", SHARED0 + 2))
            .await
            .unwrap();
        assert_eq!(g.next_changes().await, vec![masked(0, 2, 9, 9)]);
        assert!(
            peek(&g, FRAMES).await.wrapping_sub(frames) <= 1,
            "frames still ran"
        );
        g.stop().await;
    });
}

#[test]
fn a_polled_region_is_still_compared_when_vertical_interrupts_stop() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        game_does(&g, CMD_EVERY_FRAME, 0, EF_STRESS).await;
        g.wait_polled(0).await;
        // The stress mode rewrites its byte unchanged: nothing to report so far.
        game_does(&g, CMD_EVERY_FRAME, 0, EF_NONE).await;
        // VDP interrupts off: no more vertical blanks to compare at (the game halts
        // for good; a debug write, which no watchpoint sees here, stands in for it).
        g.msx
            .command("debug write {VDP regs} 1 [expr {[debug read {VDP regs} 1] & 0xdf}]")
            .await
            .unwrap();
        g.msx
            .command(&format!("debug write memory {} 7", SHARED0 + 3))
            .await
            .unwrap();
        assert_eq!(g.next_changes().await, vec![masked(0, 3, 7, 7)]);
        assert_ne!(
            g.msx.command("set msxsync::poll_id").await.unwrap(),
            "",
            "compared by the timer now"
        );
        // Interrupts back on: the vertical blank takes over again.
        g.msx
            .command("debug write {VDP regs} 1 [expr {[debug read {VDP regs} 1] | 0x20}]")
            .await
            .unwrap();
        poll("the timer to stop", TIMEOUT, || async {
            (g.msx.command("set msxsync::poll_id").await.unwrap() == "").then_some(())
        })
        .await;
        game_does(&g, CMD_SET, SHARED0 + 4, 0x44).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 4, 0x44, 0x44)]);
        g.stop().await;
    });
}

/// Pauses the game at the start of its frame routine (after the HALT, before any of
/// the frame's work): the CPU is busy there, not waiting in HALT.
async fn pause_in_the_frame(g: &Game) {
    // The main loop: HALT, CALL frame, JR back; the call's operand is at 0x4029.
    let frame = u16::from_le_bytes([peek(g, 0x4029).await, peek(g, 0x402a).await]);
    let bp = g
        .msx
        .command(&format!("debug set_bp {frame} {{}} {{debug break}}"))
        .await
        .unwrap();
    poll("the game to pause in its frame", TIMEOUT, || async {
        (g.msx.command("debug breaked").await.unwrap() == "1").then_some(())
    })
    .await;
    g.msx
        .command(&format!("debug remove_bp {bp}"))
        .await
        .unwrap();
}

/// `msxsync::count_stats`: counter values that waited, those of them written without
/// a HALT, and the emulated seconds they waited in all.
async fn count_stats(g: &Game) -> (u32, u32, f64) {
    let stats = g.msx.command("set msxsync::count_stats").await.unwrap();
    let n: Vec<f64> = stats.split(' ').map(|w| w.parse().unwrap()).collect();
    (n[0] as u32, n[1] as u32, n[3])
}

/// Pauses emulation where it is, writes the group's `coins` (BCD digits) while
/// paused, checks that RAM still holds the old ones, resumes, and waits until RAM
/// has the new ones. Returns how long (emulated seconds) the value waited.
async fn coins_while_busy(g: &Game, coins: u32, what: &str) -> f64 {
    g.msx.command("debug break").await.unwrap();
    let before = peek(g, COINS).await;
    let (.., waited_before) = count_stats(g).await;
    let write = [CounterWrite {
        region: 2,
        value: coins,
    }];
    g.hooks.apply_all(&[], &write).await.unwrap();
    assert_eq!(peek(g, COINS).await, before, "{what}: written at once");
    g.hooks.resume().await.unwrap();
    let bcd = (((coins / 10) << 4) | (coins % 10)) as u8;
    poll(what, TIMEOUT, || async {
        (peek(g, COINS).await == bcd).then_some(())
    })
    .await;
    count_stats(g).await.2 - waited_before
}

#[test]
fn a_counter_waits_for_the_game_to_halt_and_for_no_longer_than_its_bound() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        let coins = |value| [CounterWrite { region: 2, value }];
        // Paused in the frame, with a pickup to come in it: the group's 50 waits.
        game_does(&g, CMD_SET, COINS, 0x10).await;
        assert_eq!(g.next_hook_event().await, counted(0x00, 0x10));
        pause_in_the_frame(&g).await;
        post(&g, CMD_COUNT, COINS, 1).await;
        g.hooks.apply_all(&[], &coins(50)).await.unwrap();
        assert_eq!(peek(&g, COINS).await, 0x10, "written while the game runs");
        // The game adds 1 and halts: its pickup goes out as from 50, and at the next
        // vertical interrupt RAM takes 51.
        g.hooks.resume().await.unwrap();
        assert_eq!(g.next_hook_event().await, counted(0x50, 0x51));
        poll("the coins to be written", TIMEOUT, || async {
            (peek(&g, COINS).await == 0x51).then_some(())
        })
        .await;
        assert_eq!(
            g.hooks.read_shadow().await.unwrap()[2],
            vec![0x51, 0x00],
            "the shadow has the group's value"
        );
        assert_eq!(count_stats(&g).await.0, 1);
        assert_eq!(count_stats(&g).await.1, 0, "written at a HALT");
        // A game that never halts (here: sent to a JR $ in free RAM, interrupts on)
        // gets the value at the third vertical interrupt anyway, then, known not to
        // halt, at the first.
        pause_in_the_frame(&g).await;
        g.msx
            .command(
                "debug write_block memory 0xe200 [binary format c2 {0x18 0xfe}]; reg pc 0xe200",
            )
            .await
            .unwrap();
        g.hooks.resume().await.unwrap();
        let waited = coins_while_busy(&g, 60, "the value at the third frame").await;
        eprintln!("busy game, first value waited {waited} s");
        assert!(waited > 0.03, "waited only {waited} s");
        let waited = coins_while_busy(&g, 70, "the value at the next frame").await;
        eprintln!("busy game, next value waited {waited} s");
        assert!(waited < 0.025, "waited {waited} s");
        assert_eq!(count_stats(&g).await.1, 2, "written without a HALT");
        // With the VDP's interrupt off, no frame comes: written after `count_wait`.
        g.msx
            .command("debug write {VDP regs} 1 [expr {[debug read {VDP regs} 1] & 0xdf}]")
            .await
            .unwrap();
        let waited = coins_while_busy(&g, 80, "the value after count_wait").await;
        eprintln!("no vertical interrupts, the value waited {waited} s");
        assert!(waited >= 0.1, "waited only {waited} s");
        assert_eq!(count_stats(&g).await.1, 3);
        g.stop().await;
    });
}

/// The push of a flushed coins counter from BCD `old` to `new` (low bytes; the high
/// byte stays 0).
fn counted(old: u8, new: u8) -> HookEvent {
    HookEvent::LocalCounters(vec![Flushed {
        region: 2,
        old: vec![old, 0],
        new: vec![new, 0],
    }])
}

#[test]
fn committed_rom_matches_its_source() {
    if !require_program("pasmo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("testgame.rom");
    let status = std::process::Command::new("pasmo")
        .arg("--bin")
        .arg(testrom::asm_path())
        .arg(&out)
        .status()
        .expect("running pasmo");
    assert!(status.success(), "pasmo failed");
    let built = std::fs::read(&out).unwrap();
    let committed = std::fs::read(testrom::rom_path()).unwrap();
    assert_eq!(built.len(), 16384);
    assert!(
        built == committed,
        "tests/roms/testgame.rom is stale: run `make roms`"
    );
}

#[test]
fn a_busy_region_is_compared_once_a_frame_instead_of_watched() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let g = Game::start().await;
        assert_eq!(g.msx.command("set msxsync::polled(0)").await.unwrap(), "0");
        // 1536 writes of the stress byte per frame: far beyond what a watchpoint
        // should pay for. After a second of emulated time the region is polled.
        game_does(&g, CMD_EVERY_FRAME, 0, EF_STRESS).await;
        g.wait_polled(0).await;
        // Compared at the VDP's vertical interrupt, not by a timer. The region's last
        // byte is the stress byte itself: its own watchpoint goes at the next review.
        assert_ne!(g.msx.command("set msxsync::vblank_bp").await.unwrap(), "");
        assert_eq!(g.msx.command("set msxsync::poll_id").await.unwrap(), "");
        poll(
            "the busy last byte to lose its watchpoint",
            TIMEOUT,
            || async {
                let off = g
                    .msx
                    .command("info exists msxsync::edge_off(0)")
                    .await
                    .unwrap();
                (off == "1").then_some(())
            },
        )
        .await;
        assert_eq!(
            g.msx.command("array size msxsync::edge").await.unwrap(),
            "0"
        );
        // A table rewritten every frame keeps a watchpoint on its last byte.
        game_does(&g, CMD_EVERY_FRAME, 0, EF_UNCHANGED).await;
        g.wait_polled(1).await;
        assert_eq!(
            g.msx.command("info exists msxsync::edge(1)").await.unwrap(),
            "1"
        );
        game_does(&g, CMD_SET, SHARED1 + 5, 0x55).await;
        assert_eq!(g.next_changes().await, vec![masked(1, 5, 0x55, 0x55)]);
        game_does(&g, CMD_EVERY_FRAME, 0, EF_NONE).await;
        // Game writes in the polled region are still reported, bit-exact.
        game_does(&g, CMD_OR, SHARED0 + 1, 0x81).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 1, 0x81, 0x81)]);
        // And a remote change there is not echoed: the next report is the marker.
        g.hooks.apply(&[masked(0, 2, 0x42, 0xff)]).await.unwrap();
        game_does(&g, CMD_SET, SHARED0 + 4, 0x44).await;
        assert_eq!(g.next_changes().await, vec![masked(0, 4, 0x44, 0x44)]);
        assert_eq!(peek(&g, SHARED0 + 2).await, 0x42);
        g.stop().await;
    });
}
