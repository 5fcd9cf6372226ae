//! The test cartridge tests/roms/testgame.rom: its RAM map (the same as the comment at
//! the top of tests/roms/testgame.asm) and Tcl snippets that drive it. The snippets
//! hold only numbers formatted here.

use msxsync::counter::{Counter, Encoding};
use msxsync::openmsx::LaunchOptions;
use msxsync::protocol::{RegionInfo, RegionKind};
use std::path::{Path, PathBuf};

/// Shared region 0: bytes the tests make the game change.
pub const SHARED0: u16 = 0xE000;
/// Length of shared region 0.
pub const SHARED0_LEN: usize = 16;
/// Shared region 1: rewritten every frame in the every-frame modes.
pub const SHARED1: u16 = 0xE010;
/// Length of shared region 1.
pub const SHARED1_LEN: usize = 64;
/// Shared byte named `sword` (`item: E00A sword`); no other test writes it.
pub const SWORD: u16 = 0xE00A;
/// Shared byte whose bits [`LAMP_BIT`] and [`KEY_BIT`] are named by `flag:` lines;
/// no other test writes it.
pub const FLAGS: u16 = 0xE00B;
/// The bit of [`FLAGS`] named `lamp`.
pub const LAMP_BIT: u8 = 0;
/// The bit of [`FLAGS`] named `key`.
pub const KEY_BIT: u8 = 1;
/// Shared counter: 4 BCD digits, low byte first (commands 9 and 10).
pub const COINS: u16 = 0xE050;
/// Shared counter: one binary byte, at most [`ARROWS_MAX`].
pub const ARROWS: u16 = 0xE052;
/// The most [`ARROWS`] holds.
pub const ARROWS_MAX: u32 = 200;
/// Private: BCD increments of [`CMD_COUNT`] still to do.
pub const COUNT_LEFT: u16 = 0xE128;
/// Written 1536 times per frame (with its own value) in stress mode.
pub const STRESS: u16 = 0xE00F;
/// Mailbox: the game acts when this differs from the last sequence it saw.
pub const MB_SEQ: u16 = 0xE100;
/// Mailbox: command.
pub const MB_CMD: u16 = 0xE101;
/// Mailbox: target address, little endian.
pub const MB_ADDR: u16 = 0xE102;
/// Mailbox: operand.
pub const MB_VAL: u16 = 0xE104;
/// Private: last mailbox sequence seen.
pub const LAST_SEQ: u16 = 0xE110;
/// Private: set to the mailbox sequence once the command was done.
pub const ACK: u16 = 0xE111;
/// Private: frame counter (16 bits, little endian), +1 every frame.
pub const FRAMES: u16 = 0xE120;
/// Private: game mode, 0 title, 1 playing, 2 game over.
pub const MODE: u16 = 0xE122;
/// Private: every-frame mode.
pub const EF_MODE: u16 = 0xE123;
/// Private: pattern of the new game being set up ([`CMD_NEW_GAME`]), 0 once done.
pub const NG_PATTERN: u16 = 0xE125;
/// Private: 0x5A once start-up cleared the variables and the main loop runs.
pub const READY: u16 = 0xE12F;
/// Value of [`READY`] once the game runs.
pub const READY_VALUE: u8 = 0x5A;

/// Mailbox commands.
pub const CMD_SET: u8 = 1;
/// (T) |= V
pub const CMD_OR: u8 = 2;
/// (T) &= !V
pub const CMD_AND_NOT: u8 = 3;
/// (T) += V
pub const CMD_ADD: u8 = 4;
/// every-frame mode = V
pub const CMD_EVERY_FRAME: u8 = 5;
/// game mode = V
pub const CMD_MODE: u8 = 6;
/// new game with start-up pattern V: mode = 1 at once, then the shared variables
/// (both regions) are set up as the pattern says ([`NG_SAME_FRAME`]...).
pub const CMD_NEW_GAME: u8 = 7;

/// Game modes (operand of [`CMD_MODE`]).
pub const MODE_TITLE: u8 = 0;
/// Playing.
pub const MODE_PLAYING: u8 = 1;
/// Game over.
pub const MODE_GAME_OVER: u8 = 2;

/// New-game patterns (operand of [`CMD_NEW_GAME`]): shared variables cleared in the
/// frame the mode is set.
pub const NG_SAME_FRAME: u8 = 1;
/// Cleared one frame after the mode is set.
pub const NG_NEXT_FRAME: u8 = 2;
/// Cleared ten frames after the mode is set.
pub const NG_TEN_FRAMES: u8 = 3;
/// Cleared over five frames, 16 bytes a frame, from the frame the mode is set.
pub const NG_SPREAD: u8 = 4;
/// One frame after the mode is set, starting values: [`STARTING_VALUES`].
pub const NG_STARTING_VALUES: u8 = 5;
/// What [`NG_STARTING_VALUES`] writes into the first bytes of region 0 (lives, a first
/// weapon); every other shared byte becomes 0.
pub const STARTING_VALUES: [u8; 2] = [3, 1];
/// Add 1 to the 4-digit BCD number at T once per frame, V times ([`COUNT_LEFT`]
/// reaches 0 when done; the acknowledge comes at once).
pub const CMD_COUNT: u8 = 9;
/// (T) -= V as 4-digit BCD, V a BCD byte.
pub const CMD_SPEND: u8 = 10;
/// As [`CMD_COUNT`], but each increment reads the number, keeps the CPU busy for about
/// 7 ms (no HALT) and then writes what it read + 1: a read-modify-write with a window
/// wide enough for an update from the group to land inside it.
pub const CMD_SLOW_COUNT: u8 = 11;

/// Every-frame modes (operand of [`CMD_EVERY_FRAME`]).
pub const EF_NONE: u8 = 0;
/// Rewrite region 1 with changing values each frame.
pub const EF_CHANGING: u8 = 1;
/// Rewrite region 1 with its own values each frame.
pub const EF_UNCHANGED: u8 = 2;
/// Write [`STRESS`] with its own value 1536 times each frame.
pub const EF_STRESS: u8 = 3;

/// Path of the committed ROM.
pub fn rom_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/roms/testgame.rom")
}

/// How the tests start openMSX: headless C-BIOS_MSX1, the machine the test game was
/// written for, with `cart` inserted.
pub fn launch(cart: Option<&Path>) -> LaunchOptions {
    LaunchOptions {
        machine: Some("C-BIOS_MSX1".into()),
        cart: cart.map(Path::to_path_buf),
        headless: true,
        ..LaunchOptions::default()
    }
}

/// Path of the assembler source.
pub fn asm_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/roms/testgame.asm")
}

/// The shared regions, as in tests/roms/testgame.regions.
pub fn regions() -> Vec<RegionInfo> {
    vec![
        RegionInfo::bytes(
            SHARED0,
            SHARED0 + SHARED0_LEN as u16 - 1,
            "bytes the tests make the game change",
        ),
        RegionInfo::bytes(
            SHARED1,
            SHARED1 + SHARED1_LEN as u16 - 1,
            "rewritten every frame in the every-frame modes",
        ),
        RegionInfo {
            kind: RegionKind::Counter(Counter::full(Encoding::Bcd, 2)),
            ..RegionInfo::bytes(COINS, COINS + 1, "coins")
        },
        RegionInfo {
            kind: RegionKind::Counter(Counter {
                max: ARROWS_MAX,
                ..Counter::full(Encoding::Binary, 1)
            }),
            ..RegionInfo::bytes(ARROWS, ARROWS, "arrows")
        },
    ]
}

/// A Tcl command that posts a mailbox command with debug writes (which the game never
/// makes itself; the sequence byte goes last). The game performs it with CPU writes at
/// its next frame and then sets [`ACK`] to `seq`.
pub fn mailbox(seq: u8, cmd: u8, addr: u16, value: u8) -> String {
    format!(
        "debug write memory {MB_CMD} {cmd}; debug write memory {MB_ADDR} {}; \
         debug write memory {} {}; debug write memory {MB_VAL} {value}; \
         debug write memory {MB_SEQ} {seq}",
        addr & 0xff,
        MB_ADDR + 1,
        addr >> 8
    )
}

/// A Tcl command that reads one byte (reply in decimal).
pub fn peek(addr: u16) -> String {
    format!("debug read memory {addr}")
}
