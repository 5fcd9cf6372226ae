//! The apply rule exists twice: in Tcl (`msxsync::apply_one` in hooks.tcl, what players
//! run) and in Rust (`replica::apply_remote`, what the convergence tests reason with).
//! This test runs both on the same cases, the Tcl side in a real headless openMSX, and
//! requires the same RAM and shadow afterwards. The same for counters
//! (`msxsync::apply_count` and `replica::apply_count`, with the numbers each side reads
//! from and writes into counter bytes). It skips only when openMSX is missing
//! and MSXSYNC_REQUIRE_OPENMSX is unset (see tests/common/mod.rs).

mod common;

use common::rng::Rng;
use common::testrom;
use common::{require_openmsx, TIMEOUT};
use msxsync::counter::{Counter, CounterWrite, Encoding};
use msxsync::delta::Change;
use msxsync::hex;
use msxsync::openmsx::hooks::procs;
use msxsync::openmsx::{Hooks, OpenMsx};
use msxsync::protocol::{RegionInfo, RegionKind};
use msxsync::replica::{apply_count, apply_remote};
/// The one region the cases use: page 3 RAM, which the BIOS has set up by the time
/// the cartridge's INIT runs, and which the test game does not use.
const START: u16 = 0xC000;
/// Its length: room for every case of a round side by side.
const LEN: usize = 2048;

/// One byte's case: RAM and shadow before, and one remote value and mask.
struct Case {
    ram: u8,
    shadow: u8,
    value: u8,
    mask: u8,
}

/// Cases chosen by hand, one per byte.
fn table() -> Vec<Case> {
    let case = |ram, shadow, value, mask| Case {
        ram,
        shadow,
        value,
        mask,
    };
    let mut cases = vec![
        // Nothing masked: nothing changes, whatever the game did.
        case(0x12, 0x34, 0xff, 0x00),
        // A clean byte takes the remote value, RAM and shadow.
        case(0x00, 0x00, 0xa5, 0xff),
        case(0xff, 0xff, 0x00, 0xff),
        // Only the masked bits move.
        case(0x0f, 0x0f, 0xf0, 0x3c),
        // The game changed bits since the last flush (RAM differs from the shadow):
        // RAM keeps those bits and takes the other remote ones; the shadow takes the
        // remote value (I4).
        case(0x5a, 0x00, 0x81, 0xff),
        // Some bits unflushed: those stay in RAM, the others take the remote ones.
        case(0b0000_0001, 0b0000_0000, 0b1000_0000, 0b1000_0001),
        case(0b1010_1010, 0b1010_0101, 0b0101_0101, 0b1111_0000),
        // The remote value equals RAM already.
        case(0x42, 0x40, 0x42, 0xff),
    ];
    // Each bit is decided on its own from its four inputs (RAM, shadow, value, mask
    // bits): two bytes hold all 16 combinations, one per bit.
    let mut bytes = [[0u8; 4]; 2];
    for combo in 0..16u8 {
        let (byte, bit) = (usize::from(combo / 8), combo % 8);
        for (input, b) in bytes[byte].iter_mut().enumerate() {
            *b |= ((combo >> input) & 1) << bit;
        }
    }
    for [ram, shadow, value, mask] in bytes {
        cases.push(case(ram, shadow, value, mask));
    }
    cases
}

/// A mask as changes carry them: often whole bytes or nothing, sometimes single
/// bits, sometimes anything.
fn random_mask(rng: &mut Rng) -> u8 {
    match rng.below(4) {
        0 => 0xff,
        1 => 0,
        2 => 1 << rng.below(8),
        _ => rng.byte(),
    }
}

/// RAM and shadow of the whole region, both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bytes {
    ram: Vec<u8>,
    shadow: Vec<u8>,
}

/// Puts `before` into the emulator: the shadow through `write_state` (which sets RAM
/// too), then RAM with a debugger write, which the hooks only note as unflushed.
async fn set_up(msx: &OpenMsx, hooks: &Hooks, before: &Bytes) {
    hooks
        .write_state(std::slice::from_ref(&before.shadow))
        .await
        .unwrap();
    msx.command(&format!(
        "debug write_block memory {START} [binary decode hex {}]",
        hex::encode(&before.ram)
    ))
    .await
    .unwrap();
    assert_eq!(read(hooks).await, *before, "setting up the case");
}

async fn read(hooks: &Hooks) -> Bytes {
    Bytes {
        ram: hooks.read_state().await.unwrap().remove(0),
        shadow: hooks.read_shadow().await.unwrap().remove(0),
    }
}

/// Applies `changes` in Tcl and in Rust, from `before`, and compares.
async fn compare(msx: &OpenMsx, hooks: &Hooks, what: &str, before: &Bytes, changes: &[Change]) {
    set_up(msx, hooks, before).await;
    hooks.apply(changes).await.unwrap();
    let tcl = read(hooks).await;
    let mut rust = before.clone();
    for c in changes {
        apply_remote(&mut rust.ram, &mut rust.shadow, c);
    }
    if tcl != rust {
        let i = (0..LEN)
            .find(|&i| tcl.ram[i] != rust.ram[i] || tcl.shadow[i] != rust.shadow[i])
            .unwrap();
        panic!(
            "{what}: Tcl and Rust differ first at byte {i}: before ram {:#04x} shadow \
             {:#04x}; Tcl gives ram {:#04x} shadow {:#04x}, Rust ram {:#04x} shadow \
             {:#04x}; changes touching it: {:?}",
            before.ram[i],
            before.shadow[i],
            tcl.ram[i],
            tcl.shadow[i],
            rust.ram[i],
            rust.shadow[i],
            changes
                .iter()
                .filter(|c| (c.offset as usize..c.offset as usize + c.len()).contains(&i))
                .collect::<Vec<_>>()
        );
    }
}

/// The test cartridge in a headless openMSX, paused at its INIT (nothing but the
/// test's commands touches RAM), with hooks on `regions` that never flush by
/// themselves (the debugger writes that set RAM up are seen as game writes: they must
/// not go into the shadow) and write counters at once.
async fn paused_with_hooks(regions: &[RegionInfo]) -> (OpenMsx, Hooks) {
    let rom = testrom::rom_path();
    let msx = OpenMsx::spawn(&testrom::launch(Some(&rom)))
        .await
        .expect("spawn openmsx");
    msx.command("set throttle off").await.unwrap();
    let mut hooks = Hooks::load(&msx).await.expect("load hooks");
    let reached = hooks
        .wait_for_cartridge(&std::fs::read(&rom).unwrap(), TIMEOUT, |_| {})
        .await
        .expect("waiting for the cartridge");
    assert!(reached, "the cartridge's INIT was not reached");
    hooks.watch(regions).await.unwrap();
    msx.command("set msxsync::auto_flush 0").await.unwrap();
    // Paused at INIT, the CPU is not in HALT: counters would wait for one forever.
    msx.command("set msxsync::safe_counts 0").await.unwrap();
    (msx, hooks)
}

#[test]
fn tcl_and_rust_apply_remote_bits_the_same_way() {
    if !require_openmsx() {
        return;
    }
    smol::block_on(async {
        let region = RegionInfo::bytes(START, START + LEN as u16 - 1, "cases");
        let (msx, hooks) = paused_with_hooks(&[region]).await;

        // The same emulator shows that hooks.tcl defines every proc Rust calls (the
        // unit test in hooks.rs reads the script; this asks the Tcl interpreter).
        for p in procs::ALL {
            let found = msx.command(&format!("info procs ::{p}")).await.unwrap();
            assert_eq!(found, format!("::{p}"), "openMSX has no proc {p}");
        }

        // The table: one case per byte, first as one change each, then as a single
        // change over all of them.
        let cases = table();
        let mut before = Bytes {
            ram: vec![0; LEN],
            shadow: vec![0; LEN],
        };
        for (i, c) in cases.iter().enumerate() {
            before.ram[i] = c.ram;
            before.shadow[i] = c.shadow;
        }
        let one_each: Vec<Change> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| Change {
                region: 0,
                offset: i as u16,
                values: vec![c.value],
                masks: vec![c.mask],
            })
            .collect();
        compare(
            &msx,
            &hooks,
            "table, one change per case",
            &before,
            &one_each,
        )
        .await;
        let together = Change {
            region: 0,
            offset: 0,
            values: cases.iter().map(|c| c.value).collect(),
            masks: cases.iter().map(|c| c.mask).collect(),
        };
        compare(&msx, &hooks, "table, one change", &before, &[together]).await;

        // Random rounds: random RAM and shadow (often equal, as most bytes are), and
        // random changes that may overlap, applied in order by both sides.
        let seed = seed();
        let mut rng = Rng::new(seed);
        for round in 0..20 {
            let ram: Vec<u8> = (0..LEN).map(|_| rng.byte()).collect();
            let shadow = ram
                .iter()
                .map(|&r| match rng.below(3) {
                    0 => r,
                    1 => r ^ (1 << rng.below(8)),
                    _ => rng.byte(),
                })
                .collect();
            let before = Bytes { ram, shadow };
            let changes: Vec<Change> = (0..1 + rng.below(100))
                .map(|_| {
                    let len = 1 + rng.below(16);
                    Change {
                        region: 0,
                        offset: rng.below(LEN - len + 1) as u16,
                        values: (0..len).map(|_| rng.byte()).collect(),
                        masks: (0..len).map(|_| random_mask(&mut rng)).collect(),
                    }
                })
                .collect();
            let what = format!("random round {round} (MSXSYNC_APPLY_SEED={seed})");
            compare(&msx, &hooks, &what, &before, &changes).await;
        }
        msx.shutdown().await.unwrap();
    });
}

/// The seed of the random rounds: `MSXSYNC_APPLY_SEED`, else the clock (failures print
/// it).
fn seed() -> u64 {
    std::env::var("MSXSYNC_APPLY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

#[test]
fn tcl_and_rust_apply_counters_the_same_way() {
    if !require_openmsx() {
        return;
    }
    // Every encoding in every width, each a counter of its own, side by side.
    let counters: Vec<(usize, Encoding)> = Encoding::ALL
        .iter()
        .flat_map(|&(_, e)| (1..=4).map(move |w| (w, e)))
        .collect();
    let mut regions = Vec::new();
    let mut at = START;
    for &(width, encoding) in &counters {
        regions.push(RegionInfo {
            kind: RegionKind::Counter(Counter::full(encoding, width)),
            ..RegionInfo::bytes(at, at + width as u16 - 1, "")
        });
        at += width as u16;
    }
    smol::block_on(async {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let (msx, mut hooks) = paused_with_hooks(&regions).await;
        for round in 0..30 {
            // Random bounds per round: the hooks learn them at `watch`.
            for r in &mut regions {
                let full = r.counter().unwrap();
                let a = (rng.next() % (u64::from(full.max) + 1)) as u32;
                let b = (rng.next() % (u64::from(full.max) + 1)) as u32;
                let bounded = Counter {
                    min: a.min(b),
                    max: a.max(b),
                    ..full
                };
                r.kind = RegionKind::Counter(if rng.below(3) == 0 { full } else { bounded });
            }
            hooks.watch(&regions).await.unwrap();
            // RAM and shadow: random bytes (BCD digits above 9 included), RAM often
            // the shadow plus or minus a little, as after a game's unflushed pickup.
            let shadow: Vec<Vec<u8>> = regions
                .iter()
                .map(|r| (0..r.len()).map(|_| rng.byte()).collect())
                .collect();
            let ram: Vec<Vec<u8>> = regions
                .iter()
                .zip(&shadow)
                .map(|(r, s)| {
                    let c = r.counter().unwrap();
                    match rng.below(3) {
                        0 => s.clone(),
                        1 => {
                            let v = i64::from(c.decode(s)) + rng.below(21) as i64 - 10;
                            c.encode(v.clamp(0, i64::from(u32::MAX)) as u32, r.len())
                        }
                        _ => (0..r.len()).map(|_| rng.byte()).collect(),
                    }
                })
                .collect();
            hooks.write_state(&shadow).await.unwrap();
            msx.command(&format!(
                "debug write_block memory {START} [binary decode hex {}]",
                hex::encode(&ram.concat())
            ))
            .await
            .unwrap();
            // The numbers the Tcl side reads agree with `Counter::decode`.
            for (r, region) in regions.iter().enumerate() {
                let c = region.counter().unwrap();
                let bytes: Vec<String> = ram[r].iter().map(u8::to_string).collect();
                let tcl = msx
                    .command(&format!(
                        "msxsync::count_of {} {{{}}}",
                        c.encoding.tcl_code(),
                        bytes.join(" ")
                    ))
                    .await
                    .unwrap();
                assert_eq!(
                    tcl,
                    c.decode(&ram[r]).to_string(),
                    "{region:?} {:02x?}",
                    ram[r]
                );
            }
            let writes: Vec<CounterWrite> = regions
                .iter()
                .enumerate()
                .map(|(r, region)| {
                    let c = region.counter().unwrap();
                    let span = u64::from(c.max - c.min) + 1;
                    CounterWrite {
                        region: r as u16,
                        value: c.min + (rng.next() % span) as u32,
                    }
                })
                .collect();
            hooks.apply_all(&[], &writes).await.unwrap();
            let tcl_ram = hooks.read_state().await.unwrap();
            let tcl_shadow = hooks.read_shadow().await.unwrap();
            for (r, region) in regions.iter().enumerate() {
                let c = region.counter().unwrap();
                let (mut rust_ram, mut rust_shadow) = (ram[r].clone(), shadow[r].clone());
                apply_count(&mut rust_ram, &mut rust_shadow, &c, writes[r].value);
                assert_eq!(
                    (&tcl_ram[r], &tcl_shadow[r]),
                    (&rust_ram, &rust_shadow),
                    "round {round} (MSXSYNC_APPLY_SEED={seed}): {c:?} from ram {:02x?} \
                     shadow {:02x?}, value {}: Tcl and Rust differ (ram, shadow)",
                    ram[r],
                    shadow[r],
                    writes[r].value
                );
            }
        }
        msx.shutdown().await.unwrap();
    });
}
