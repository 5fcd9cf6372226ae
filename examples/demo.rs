//! `make demo`: the whole of msxsync on one machine with the built-in demo cartridge. A
//! server on 127.0.0.1 (a free port) and two players, side by side.
//!
//! ```text
//! cargo run --release --example demo -- [--headless] [--out DIR] [--msxsync PROGRAM]
//! ```
//!
//! With a display (DISPLAY or WAYLAND_DISPLAY set, CI unset): two openMSX windows to
//! play in; Ctrl-C ends everything. Without one, or with `--headless` or CI=true: no
//! windows; the demo presses keys in player 1 (RETURN to start both games, then 1, 3, 5
//! and SPACE twice: the SWORD, the KEY, the MAP and two coins), prints player 2's screen
//! and shared RAM, saves a screenshot of each player, and exits 0 only when player 2 has
//! player 1's items and coins.
//!
//! With `--msxsync PROGRAM` the same scripted session checks a built msxsync (CI gives
//! it the static release binary): its own `serve` and two `play --headless` processes
//! do the work, and the demo presses keys and reads RAM through each player's openMSX
//! control socket ([`run_binary`]).
//!
//! tests/demo.rs includes this file as a module and runs [`run_headless`].

use anyhow::{bail, Context, Result};
use clap::Parser;
use msxsync::builtin;
use msxsync::hex;
use msxsync::openmsx::OpenMsx;
use msxsync::play::{PlayOptions, Player};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "../tests/common/wait.rs"]
mod wait;
use wait::poll;

#[path = "../tests/common/lines.rs"]
mod lines;

/// Run the built-in co-op demo: a server and two openMSX players on this machine.
#[derive(Parser, Debug)]
pub struct Args {
    /// No windows: play a scripted session, check that player 2 got player 1's items,
    /// save screenshots. Chosen by itself without a display or when CI=true.
    #[arg(long)]
    pub headless: bool,
    /// Folder for the screenshots (headless mode); created when missing.
    #[arg(long, value_name = "DIR", default_value = "target/demo")]
    pub out: PathBuf,
    /// The openMSX program to run.
    #[arg(long, value_name = "PROGRAM", default_value = "openmsx")]
    pub openmsx: PathBuf,
    /// Check an msxsync program (e.g. the static release build) instead of this
    /// build's library: run its `serve`, `list` and two `play --headless` processes
    /// in the current folder with the current HOME, and play the scripted session
    /// through a second connection to each player's openMSX. Headless; Unix only.
    #[arg(long, value_name = "PROGRAM")]
    pub msxsync: Option<PathBuf>,
}

// The demo cartridge's RAM map (games/demo/demo.asm).
/// 00 title screen, 01 playing.
pub const MODE: u16 = 0xE000;
/// Frame counter, +1 every frame in both modes.
pub const FRAME: u16 = 0xE001;
/// Items bit 0 SWORD .. bit 7 POTION (shared).
pub const ITEMS: u16 = 0xE010;
/// CROWN: 00 not owned, else owned (shared).
pub const CROWN: u16 = 0xE011;
/// Coins, 4-digit BCD, low byte first (shared).
pub const COINS: u16 = 0xE020;
/// Steps the player's own marker made, 4-digit BCD (private: each player has their own).
pub const STEPS: u16 = 0xE042;
/// Keyboard rows 0..8 as the game read them last frame (bit clear = key down).
pub const KEYPREV: u16 = 0xE050;
/// SCREEN 1 name table in VRAM: 32x24 character codes.
pub const NAME_TABLE: u32 = 0x1800;

/// Names of the ITEMS bits, bit 0 first.
pub const ITEM_NAMES: [&str; 8] = [
    "SWORD", "SHIELD", "KEY", "LAMP", "MAP", "BOOTS", "RING", "POTION",
];

/// A key of the MSX keyboard matrix: row and bit mask, as `keymatrixdown` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Name shown in the log.
    pub name: &'static str,
    /// Matrix row (0..8 here).
    pub row: u8,
    /// Bit mask inside the row.
    pub mask: u8,
}

/// RETURN starts the game on the title screen.
pub const RETURN: Key = Key {
    name: "RETURN",
    row: 7,
    mask: 0x80,
};
/// SPACE adds a coin while playing.
pub const SPACE: Key = Key {
    name: "SPACE",
    row: 8,
    mask: 0x01,
};

/// Cursor right moves the player's own marker (private) and counts a step.
pub const RIGHT: Key = Key {
    name: "RIGHT",
    row: 8,
    mask: 0x80,
};

/// The digit keys 1..9 and 0 (toggle items while playing).
pub fn digit_key(digit: u8) -> Option<Key> {
    const NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    // 0..7 are row 0 bits 0..7; 8 and 9 are row 1 bits 0 and 1.
    let (row, bit) = match digit {
        0..=7 => (0, digit),
        8 | 9 => (1, digit - 8),
        _ => return None,
    };
    Some(Key {
        name: NAMES[usize::from(digit)],
        row,
        mask: 1 << bit,
    })
}

/// What the scripted player 1 does once playing: take items 1, 3, 5, add two coins.
pub fn script() -> Vec<Key> {
    [1, 3, 5]
        .iter()
        .filter_map(|&d| digit_key(d))
        .chain([SPACE, SPACE])
        .collect()
}

/// What player 2 does next: move its marker two steps right (private, so player 1's
/// marker and steps stay as they were) and take the CROWN (shared, so player 1 gets it).
pub fn script_player2() -> Vec<Key> {
    [RIGHT, RIGHT].into_iter().chain(digit_key(9)).collect()
}

/// ITEMS after [`script`]: SWORD, KEY and MAP.
pub const EXPECTED_ITEMS: u8 = 0b0001_0101;
/// COINS after [`script`] (BCD 0002, low byte first).
pub const EXPECTED_COINS: [u8; 2] = [0x02, 0x00];
/// Player 2's STEPS after [`script_player2`]; player 1's stay 0000.
pub const EXPECTED_STEPS_PLAYER2: [u8; 2] = [0x02, 0x00];

/// The demo's variables that the scripted session looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vars {
    /// ITEMS (shared).
    pub items: u8,
    /// CROWN (shared).
    pub crown: u8,
    /// COINS, low byte first (shared).
    pub coins: [u8; 2],
    /// STEPS, low byte first (private).
    pub steps: [u8; 2],
}

impl Vars {
    /// Bytes read from [`MODE`] on: at least up to STEPS.
    pub const BLOCK_LEN: u16 = STEPS - MODE + 2;

    /// Picks the variables out of the RAM block starting at [`MODE`].
    pub fn from_block(block: &[u8]) -> Option<Vars> {
        let at = |addr: u16| block.get(usize::from(addr - MODE)).copied();
        Some(Vars {
            items: at(ITEMS)?,
            crown: at(CROWN)?,
            coins: [at(COINS)?, at(COINS + 1)?],
            steps: [at(STEPS)?, at(STEPS + 1)?],
        })
    }

    /// Player 1's shared results: its items and coins.
    pub fn has_player1s_things(&self) -> bool {
        self.items == EXPECTED_ITEMS && self.coins == EXPECTED_COINS
    }
}

/// A 4-digit BCD number stored low byte first, as the screen shows it.
pub fn bcd4(bytes: [u8; 2]) -> String {
    format!("{:02x}{:02x}", bytes[1], bytes[0])
}

/// Whether to open windows: a display is there and this is not a CI run.
pub fn has_display(display: Option<&str>, wayland: Option<&str>, ci: Option<&str>) -> bool {
    let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
    let ci = ci.is_some_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    (set(display) || set(wayland)) && !ci
}

/// The names of the items set in an ITEMS byte.
pub fn item_names(items: u8) -> Vec<&'static str> {
    ITEM_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| items & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The name table as 24 lines of 32 characters. The demo draws plain ASCII, and
/// highlighted text as ASCII + 80h (its own yellow copy of the font); anything else
/// shows as `.`.
pub fn screen_lines(names: &[u8]) -> Vec<String> {
    names
        .chunks(32)
        .map(|row| {
            row.iter()
                .map(|&c| match c {
                    0x20..=0x7e => c as char,
                    0xa0..=0xdf => (c - 0x80) as char,
                    _ => '.',
                })
                .collect()
        })
        .collect()
}

/// Checks that a playing screen shows exactly the shared things of both scripts (the
/// SWORD, KEY and MAP, the CROWN, 2 coins) and the player's own `steps`: the screen is
/// redrawn from RAM every frame, so this is what a person would see.
pub fn check_screen(lines: &[String], steps: &str) -> Result<()> {
    let steps = format!("STEPS  {steps}");
    let expect = [
        (3, "1 SWORD  [X]     5 MAP    [X]"),
        (4, "2 SHIELD [ ]     6 BOOTS  [ ]"),
        (5, "3 KEY    [X]     7 RING   [ ]"),
        (6, "4 LAMP   [ ]     8 POTION [ ]"),
        (7, "9 CROWN  [X]     0 HARP   [ ]"),
        (9, "COINS  0002"),
        (13, steps.as_str()),
    ];
    for (row, text) in expect {
        let line = lines.get(row).map(String::as_str).unwrap_or("");
        if !line.contains(text) {
            bail!("screen row {row} is {line:?}, expected it to show {text:?}");
        }
    }
    Ok(())
}

/// Formats one region's bytes for people: address range, hex bytes, what it is.
pub fn region_line(start: u16, end: u16, bytes: &[u8], description: &str) -> String {
    let what = description.split(':').next().unwrap_or("");
    let range = if start == end {
        format!("{start:04x}")
    } else {
        format!("{start:04x}-{end:04x}")
    };
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{range:<10} {:<6} {what}", hex.join(" "))
}

/// What a headless run found, for tests.
#[derive(Debug)]
pub struct Report {
    /// Player 1's screen as text (24 lines).
    pub screen_player1: Vec<String>,
    /// Player 2's screen as text (24 lines).
    pub screen: Vec<String>,
    /// Player 2's shared regions.
    pub state: Vec<Vec<u8>>,
    /// Screenshots written: player 1's, then player 2's.
    pub screenshots: Vec<PathBuf>,
}

/// One player as the scripted session drives it.
pub struct Seat<'a> {
    /// The openMSX it plays in: the in-process player's own connection, or a second
    /// control connection (its socket) to the openMSX an `msxsync play` process runs.
    pub msx: &'a OpenMsx,
    /// The player when it runs in this process (for its counters); `None` for an
    /// `msxsync play` process.
    pub player: Option<&'a Player>,
}

impl<'a> Seat<'a> {
    /// The seat of a player running in this process.
    pub fn of(player: &'a Player) -> Seat<'a> {
        Seat {
            msx: player.openmsx(),
            player: Some(player),
        }
    }

    /// The player's sync gate: `None` while it has none (not set up yet), else whether
    /// it is open. Asked of the hooks in openMSX (src/openmsx/hooks.tcl), which every
    /// control connection of that openMSX shares, so it works for a player in another
    /// process too.
    async fn gate_state(&self) -> Result<Option<bool>> {
        Ok(
            match self.msx.command("msxsync::gate_state").await?.trim() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            },
        )
    }

    /// Whether the player's hooks are syncing (not holding), asked as [`Seat::gate_state`].
    async fn is_active(&self) -> Result<bool> {
        Ok(self.msx.command("msxsync::is_active").await?.trim() == "1")
    }
}

/// Reads one byte of a player's memory (as the CPU sees it).
async fn peek(p: &Seat<'_>, addr: u16) -> Result<u8> {
    let reply = p.msx.command(&format!("debug read memory {addr}")).await?;
    reply
        .trim()
        .parse()
        .with_context(|| format!("openmsx answered {reply:?} when reading {addr:#06x}"))
}

/// Reads `len` bytes of a debuggable (`memory`, `VRAM`) from `addr`.
async fn read_block(p: &Seat<'_>, debuggable: &str, addr: u32, len: u32) -> Result<Vec<u8>> {
    // The debuggable name is one of ours, not input; the bytes come back hex-encoded.
    let reply = p
        .msx
        .command(&format!(
            "binary encode hex [debug read_block {debuggable} {addr} {len}]"
        ))
        .await?;
    hex::decode(reply.trim()).with_context(|| format!("reading {debuggable} at {addr:#x}"))
}

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the game has run `frames` more frames (emulated time, any speed).
async fn wait_frames(p: &Seat<'_>, who: &str, frames: u8) -> Result<()> {
    let first = peek(p, FRAME).await?;
    poll(
        &format!("{who}'s game to run {frames} frames"),
        STEP_TIMEOUT,
        || async { Ok((peek(p, FRAME).await?.wrapping_sub(first) >= frames).then_some(())) },
    )
    .await
}

/// Presses and releases a key so that the game sees exactly one press: holds it until
/// the game's own keyboard copy shows it down, then releases it until the copy shows it
/// up again (the game acts on the frame it first sees the key down).
async fn press(p: &Seat<'_>, who: &str, key: Key) -> Result<()> {
    let row_addr = KEYPREV + u16::from(key.row);
    let msx = p.msx;
    msx.command(&format!("keymatrixdown {} {}", key.row, key.mask))
        .await?;
    poll(
        &format!("{who}'s game to see {} down", key.name),
        STEP_TIMEOUT,
        || async { Ok((peek(p, row_addr).await? & key.mask == 0).then_some(())) },
    )
    .await?;
    msx.command(&format!("keymatrixup {} {}", key.row, key.mask))
        .await?;
    poll(
        &format!("{who}'s game to see {} up", key.name),
        STEP_TIMEOUT,
        || async { Ok((peek(p, row_addr).await? & key.mask != 0).then_some(())) },
    )
    .await
}

/// Starts the game from the title screen and waits until it plays and syncs.
async fn start_game(p: &Seat<'_>, who: &str) -> Result<()> {
    // Right after power-on the game's keyboard copy says "every key down" (it starts
    // zeroed); a couple of frames later it holds the real rows.
    wait_frames(p, who, 3).await?;
    press(p, who, RETURN).await?;
    poll(&format!("{who}'s game to start"), STEP_TIMEOUT, || async {
        Ok((peek(p, MODE).await? == 1).then_some(()))
    })
    .await?;
    // `sync-when: E000 == 01`: when the gate opens, msxsync writes the server's state
    // into RAM and only then syncs (the hooks turn active). A key pressed before that
    // would be overwritten by the shared state, so wait for both.
    poll(
        &format!("{who}'s game to be brought to the shared state"),
        STEP_TIMEOUT,
        || async {
            let open = p.gate_state().await? == Some(true);
            Ok((open && p.is_active().await?).then_some(()))
        },
    )
    .await
}

/// Saves a screenshot of the player's screen at normal speed. With the emulator
/// unthrottled a screenshot can show an old frame, so the game first runs a few frames
/// at normal speed with a renderer that draws them.
async fn screenshot(p: &Seat<'_>, who: &str, file: &Path) -> Result<()> {
    let msx = p.msx;
    msx.command("set throttle on").await?;
    msx.command("set renderer SDL")
        .await
        .context("switching openmsx to the SDL renderer for a screenshot")?;
    wait_frames(p, who, 20).await?;
    let path = file
        .to_str()
        .with_context(|| format!("the screenshot path {} is not unicode", file.display()))?;
    // The path reaches Tcl hex-encoded, never pasted.
    msx.command(&format!(
        "screenshot -raw -doublesize [binary decode hex {}]",
        hex::encode(path.as_bytes())
    ))
    .await
    .with_context(|| format!("saving the screenshot {}", file.display()))?;
    Ok(())
}

/// Options for one demo player.
fn player_options(server: &str, name: &str, cache: &Path, openmsx: &Path) -> PlayOptions {
    let mut o = PlayOptions::new(server, builtin::DEMO_NAME);
    o.name = name.into();
    o.cache_dir = Some(cache.to_path_buf());
    o.openmsx = openmsx.to_path_buf();
    o
}

/// Serves the built-in demo on a free port of 127.0.0.1 and says so; returns the
/// server, the players' shared ROM cache folder (removed when dropped) and the options
/// of player1 and player2.
fn start_server(
    openmsx: &Path,
) -> Result<(
    msxsync::server::ServerHandle,
    tempfile::TempDir,
    [PlayOptions; 2],
)> {
    let game = builtin::demo()?;
    let title = game.title.clone();
    let server = msxsync::server::start("127.0.0.1:0".parse()?, vec![game])?;
    let addr = server.addr().to_string();
    println!(
        "server: serving '{}' ({title}) on {addr}",
        builtin::DEMO_NAME
    );
    let cache = tempfile::tempdir().context("could not make a rom cache folder")?;
    let opts =
        ["player1", "player2"].map(|name| player_options(&addr, name, cache.path(), openmsx));
    Ok((server, cache, opts))
}

/// Starts both players, giving the first error with the player's name.
async fn start_players(opts: [PlayOptions; 2]) -> Result<(Player, Player)> {
    let [o1, o2] = opts;
    let (a, b) = smol::future::zip(Player::start(o1), Player::start(o2)).await;
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        // Stop the one that started, report the one(s) that did not.
        (a, b) => {
            let mut errors = Vec::new();
            for (who, r) in [("player 1", a), ("player 2", b)] {
                match r {
                    Ok(p) => {
                        let _ = p.stop().await;
                    }
                    Err(e) => errors.push(format!("{who} did not start: {e:#}")),
                }
            }
            bail!("{}", errors.join("; "))
        }
    }
}

/// The headless demo: everything in this process, no windows. Prints what it does;
/// fails unless player 2 ends up with player 1's items and coins.
pub async fn run_headless(out: &Path, openmsx: &Path) -> Result<Report> {
    let started = Instant::now();
    std::fs::create_dir_all(out)
        .with_context(|| format!("could not create the folder {}", out.display()))?;
    let (server, _cache, mut opts) = start_server(openmsx)?;
    for o in &mut opts {
        o.headless = true;
        // Unthrottled until the screenshots: C-BIOS's logo alone takes seconds.
        o.fast = true;
    }
    let (p1, p2) = start_players(opts).await?;
    println!("players: player1 and player2 joined, each in its own headless openMSX");
    let result = scripted_session(&Seat::of(&p1), &Seat::of(&p2), out).await;
    // (Whatever stopping says, the outcome is what counts.)
    let _ = p1.stop().await;
    let _ = p2.stop().await;
    server.stop();
    let report = result?;
    say_ok(started);
    Ok(report)
}

/// The line `make demo` and CI look for.
fn say_ok(started: Instant) {
    println!(
        "demo ok: player 2 has player 1's items ({}) and coins ({:02x}{:02x}), {:.1} s in all",
        item_names(EXPECTED_ITEMS).join(", "),
        EXPECTED_COINS[1],
        EXPECTED_COINS[0],
        started.elapsed().as_secs_f64()
    );
}

/// A process of [`run_binary`]: its output is kept for the log, and it is killed when
/// dropped, so a failed run leaves nothing behind.
struct Proc {
    name: &'static str,
    child: std::process::Child,
    out: lines::Lines,
}

impl Proc {
    fn start(name: &'static str, msxsync: &Path, args: &[&str]) -> Result<Proc> {
        let mut child = std::process::Command::new(msxsync)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {} {}", msxsync.display(), args[0]))?;
        let out = lines::Lines::capture(&mut child);
        Ok(Proc { name, child, out })
    }

    /// Stops it as Ctrl-C or SIGTERM would, prints what it said, and fails unless it
    /// ended cleanly.
    fn stop(mut self) -> Result<()> {
        terminate(&mut self.child);
        let status = lines::wait_exit(&mut self.child);
        for line in self.out.all() {
            println!("  {}| {line}", self.name);
        }
        if !status.success() {
            bail!("{} ended with {status} when asked to stop", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks a child to stop the way a service manager or `kill` does.
#[cfg(unix)]
fn terminate(child: &mut std::process::Child) {
    // SAFETY: kill(2) only sends a signal, to our own child (not yet waited for).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(not(unix))]
fn terminate(child: &mut std::process::Child) {
    let _ = child.kill();
}

/// Runs `msxsync ARGS` to the end and returns its stdout; fails with its stderr.
fn run_once(msxsync: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(msxsync)
        .args(args)
        .output()
        .with_context(|| format!("could not run {} {}", msxsync.display(), args[0]))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "msxsync {} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The headless demo done by an msxsync program instead of this build's library (CI
/// runs it with the static release binary, from an empty folder with an empty HOME):
/// its `serve` must offer the built-in demo, its `list` must show it, and two of its
/// `play --game demo --headless` processes (C-BIOS, the ROM downloaded from the server)
/// must carry player 1's items to player 2 and player 2's crown back. This demo only
/// presses keys and reads RAM, through a second control connection to each player's
/// openMSX (its Unix socket); all three processes must then stop cleanly on SIGTERM.
pub async fn run_binary(msxsync: &Path, out: &Path) -> Result<Report> {
    let started = Instant::now();
    std::fs::create_dir_all(out)
        .with_context(|| format!("could not create the folder {}", out.display()))?;
    print!("program: {}", run_once(msxsync, &["--version"])?);

    let mut server = Proc::start(
        "server",
        msxsync,
        &["serve", "--bind", "127.0.0.1", "--port", "0"],
    )?;
    let listening = server.out.wait_for("listening on ");
    let addr = listening
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("no address in the server's line {listening:?}"))?
        .to_string();
    let offer = format!("{}: {}", builtin::DEMO_NAME, builtin::demo()?.title);
    if !server.out.seen.iter().any(|l| l.contains(&offer)) {
        bail!(
            "the server does not offer the built-in demo ({offer:?}): {:#?}",
            server.out.seen
        );
    }
    println!("server: serving the built-in demo on {addr}");
    let list = run_once(msxsync, &["list", "--server", &addr])?;
    print!("list: {list}");
    if !list.contains(&format!(
        "{}  \"{}\"",
        builtin::DEMO_NAME,
        builtin::demo()?.title
    )) {
        bail!("msxsync list does not show the built-in demo");
    }

    let mut players = Vec::new();
    for name in ["player1", "player2"] {
        let args = [
            "play",
            "--server",
            &addr,
            "--game",
            builtin::DEMO_NAME,
            "--headless",
            "--name",
            name,
        ];
        players.push(Proc::start(name, msxsync, &args)?);
    }
    let mut msx = Vec::new();
    for p in &mut players {
        let line = p.out.wait_for("openMSX started (pid ");
        let pid = line
            .rsplit("pid ")
            .next()
            .map(|p| p.trim_end_matches(')').trim().to_string())
            .with_context(|| format!("no pid in {line:?}"))?;
        let conn = poll(
            &format!("{}'s openMSX control socket", p.name),
            STEP_TIMEOUT,
            || async { Ok(OpenMsx::attach(&pid).await.ok()) },
        )
        .await?;
        // C-BIOS's logo alone takes seconds at normal speed (the screenshots switch
        // throttling back on).
        conn.command("set throttle off").await?;
        msx.push(conn);
    }
    let seats: Vec<Seat> = msx
        .iter()
        .map(|m| Seat {
            msx: m,
            player: None,
        })
        .collect();
    for (seat, p) in seats.iter().zip(&players) {
        // The player has joined and set up its gate: from now on keys count.
        poll(
            &format!("{} to set up its sync gate", p.name),
            Duration::from_secs(60),
            || async { Ok(seat.gate_state().await.ok().flatten().map(|_| ())) },
        )
        .await?;
    }
    println!("players: player1 and player2 joined, each an msxsync play process");
    let result = scripted_session(&seats[0], &seats[1], out).await;
    drop(seats);
    drop(msx);
    let mut stopped = Vec::new();
    for p in players.into_iter().chain([server]) {
        stopped.push(p.stop());
    }
    let report = result?;
    stopped.into_iter().collect::<Result<Vec<()>>>()?;
    println!("stopped: both players and the server ended cleanly on SIGTERM");
    say_ok(started);
    Ok(report)
}

/// A player's variables, gate and counters, for failure messages.
async fn describe(p: &Seat<'_>) -> String {
    use msxsync::play::Stats;
    let vars = match vars(p).await {
        Ok(v) => format!(
            "items {:02x}, crown {:02x}, coins {}, steps {}",
            v.items,
            v.crown,
            bcd4(v.coins),
            bcd4(v.steps)
        ),
        Err(e) => format!("ram unreadable ({e:#})"),
    };
    let gate = p.gate_state().await;
    // An `msxsync play` process keeps its counters to itself.
    let Some(player) = p.player else {
        return format!("{vars}, gate {gate:?}");
    };
    let s = player.stats();
    format!(
        "{vars}, gate {gate:?}, batches sent {}, updates received {}, applied {}, state writes {}",
        Stats::get(&s.batches_sent),
        Stats::get(&s.updates_received),
        Stats::get(&s.updates_applied),
        Stats::get(&s.state_writes),
    )
}

/// Reads the demo's variables from a player's RAM.
async fn vars(p: &Seat<'_>) -> Result<Vars> {
    let block = read_block(p, "memory", u32::from(MODE), u32::from(Vars::BLOCK_LEN)).await?;
    Vars::from_block(&block).context("openmsx returned a short block of ram")
}

/// Waits until a player's variables satisfy `want`; the error says what they were.
async fn wait_vars(p: &Seat<'_>, what: &str, want: impl Fn(&Vars) -> bool) -> Result<Vars> {
    let got = poll(what, STEP_TIMEOUT, || async {
        let v = vars(p).await?;
        Ok(want(&v).then_some(v))
    })
    .await;
    match got {
        Ok(v) => Ok(v),
        Err(e) => Err(e.context(format!("last seen: {}", describe(p).await))),
    }
}

/// Reads a player's screen (the name table) as text.
async fn screen(p: &Seat<'_>) -> Result<Vec<String>> {
    Ok(screen_lines(
        &read_block(p, "VRAM", NAME_TABLE, 32 * 24).await?,
    ))
}

/// Waits until a player's screen passes [`check_screen`]; the error shows the screen.
async fn wait_screen(p: &Seat<'_>, who: &str, steps: &str) -> Result<Vec<String>> {
    let got = poll(
        &format!("{who}'s screen to show the shared things"),
        STEP_TIMEOUT,
        || async {
            let lines = screen(p).await?;
            Ok(check_screen(&lines, steps).is_ok().then_some(lines))
        },
    )
    .await;
    match got {
        Ok(lines) => Ok(lines),
        Err(e) => {
            let lines = screen(p).await?;
            let why = check_screen(&lines, steps)
                .err()
                .map(|w| format!("{w:#}"))
                .unwrap_or_default();
            Err(e.context(format!("{who}'s screen is wrong: {why}")))
        }
    }
}

/// Presses `keys` one after the other in one player.
async fn press_all(p: &Seat<'_>, who: &str, keys: &[Key]) -> Result<Instant> {
    let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
    println!("keys: {} in {who} only", names.join(" "));
    let mut last = Instant::now();
    for &key in keys {
        last = Instant::now();
        press(p, who, key).await?;
    }
    Ok(last)
}

/// Presses the keys, waits for the other player to have the result, prints and checks
/// it, and takes the screenshots.
async fn scripted_session(p1: &Seat<'_>, p2: &Seat<'_>, out: &Path) -> Result<Report> {
    println!("keys: RETURN in both players (start the game)");
    let (a, b) = smol::future::zip(start_game(p1, "player 1"), start_game(p2, "player 2")).await;
    a?;
    b?;

    let last_key = press_all(p1, "player 1", &script()).await?;
    wait_vars(p1, "player 1's game to take the items and coins", |v| {
        v.has_player1s_things()
    })
    .await?;
    wait_vars(p2, "player 2 to get player 1's items and coins", |v| {
        v.has_player1s_things()
    })
    .await
    .context("player 2 does NOT have player 1's items: the sync failed")?;
    println!(
        "sync: player 2 has player 1's {} and coins, {} ms after player 1's last key went down",
        item_names(EXPECTED_ITEMS).join(", "),
        last_key.elapsed().as_millis()
    );

    let last_key = press_all(p2, "player 2", &script_player2()).await?;
    let v2 = wait_vars(p2, "player 2's game to take the crown and move", |v| {
        v.crown != 0 && v.steps == EXPECTED_STEPS_PLAYER2
    })
    .await?;
    let v1 = wait_vars(p1, "player 1 to get player 2's crown", |v| v.crown != 0)
        .await
        .context("player 1 does NOT have player 2's crown: the sync failed")?;
    println!(
        "sync: player 1 has player 2's CROWN, {} ms after player 2's last key went down",
        last_key.elapsed().as_millis()
    );
    if v1.steps == v2.steps {
        bail!(
            "player 1's steps {} followed player 2's, but steps are private",
            bcd4(v1.steps)
        );
    }
    println!(
        "private: steps stay each player's own (player 1: {}, player 2: {})",
        bcd4(v1.steps),
        bcd4(v2.steps)
    );

    // The screens follow RAM within a frame; wait for them rather than assume.
    let screen_player1 = wait_screen(p1, "player 1", &bcd4(v1.steps)).await?;
    let screen = wait_screen(p2, "player 2", &bcd4(v2.steps)).await?;
    println!("player 2's screen (SCREEN 1 name table, VRAM {NAME_TABLE:#06x}):");
    println!("  +{}+", "-".repeat(32));
    for line in &screen {
        println!("  |{line}|");
    }
    println!("  +{}+", "-".repeat(32));
    println!("player 2's shared RAM:");
    let mut state = Vec::new();
    for region in builtin::demo()?.regions {
        let len = region.len() as u32;
        let bytes = read_block(p2, "memory", u32::from(region.start), len).await?;
        println!(
            "  {}",
            region_line(region.start, region.end, &bytes, &region.description)
        );
        state.push(bytes);
    }
    let mut screenshots = Vec::new();
    for (p, who, file) in [
        (p1, "player 1", "player1.png"),
        (p2, "player 2", "player2.png"),
    ] {
        let path = out.join(file);
        screenshot(p, who, &path).await?;
        println!("screenshot: {who} -> {}", path.display());
        screenshots.push(path);
    }
    Ok(Report {
        screen_player1,
        screen,
        state,
        screenshots,
    })
}

/// The windowed demo: two openMSX windows sharing one inventory until Ctrl-C.
pub async fn run_windows(openmsx: &Path, quit: async_channel::Receiver<()>) -> Result<()> {
    let (server, _cache, opts) = start_server(openmsx)?;
    let (p1, p2) = start_players(opts).await?;
    println!("two openMSX windows are open, one per player. In each:");
    println!("  SPACE or RETURN starts; 1-8, 9, 0 take or drop items; SPACE adds a coin;");
    println!("  cursor keys move your own marker. What one player takes, the other has.");
    println!("Ctrl-C here ends the demo (closing both windows does too).");
    println!(
        "A LAN party: `msxsync serve` on one machine (it serves this demo with no games \
         folder), `msxsync play --game demo --server THAT-MACHINE` on every other."
    );
    let both_closed = async {
        let _ = p1.wait_done().await;
        println!("player 1's window closed");
        let _ = p2.wait_done().await;
        println!("player 2's window closed");
    };
    smol::future::or(both_closed, async {
        let _ = quit.recv().await;
        println!("stopping: closing both players and the server");
    })
    .await;
    // (Whatever stopping says, the outcome is what counts.)
    let _ = p1.stop().await;
    let _ = p2.stop().await;
    server.stop();
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let var = |k: &str| std::env::var(k).ok();
    let headless = args.headless
        || !has_display(
            var("DISPLAY").as_deref(),
            var("WAYLAND_DISPLAY").as_deref(),
            var("CI").as_deref(),
        );
    let result = if let Some(msxsync) = &args.msxsync {
        println!(
            "demo: {} serves and plays, headless; screenshots go to {}",
            msxsync.display(),
            args.out.display()
        );
        smol::block_on(run_binary(msxsync, &args.out)).map(|_| ())
    } else if headless {
        println!(
            "demo: headless (no display, CI set or --headless); screenshots go to {}",
            args.out.display()
        );
        smol::block_on(run_headless(&args.out, &args.openmsx)).map(|_| ())
    } else {
        let (tx, rx) = async_channel::bounded::<()>(1);
        match ctrlc::set_handler(move || {
            let _ = tx.try_send(());
        }) {
            Ok(()) => smol::block_on(run_windows(&args.openmsx, rx)),
            Err(e) => Err(anyhow::anyhow!("could not install the ctrl-c handler: {e}")),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_msx_keyboard_matrix() {
        assert_eq!(digit_key(1).map(|k| (k.row, k.mask)), Some((0, 0x02)));
        assert_eq!(digit_key(0).map(|k| (k.row, k.mask)), Some((0, 0x01)));
        assert_eq!(digit_key(8).map(|k| (k.row, k.mask)), Some((1, 0x01)));
        assert_eq!(digit_key(9).map(|k| (k.row, k.mask)), Some((1, 0x02)));
        assert_eq!(digit_key(10), None);
        let names: Vec<_> = script().iter().map(|k| k.name).collect();
        assert_eq!(names, ["1", "3", "5", "SPACE", "SPACE"]);
        assert_eq!(item_names(EXPECTED_ITEMS), ["SWORD", "KEY", "MAP"]);
        assert_eq!(item_names(0x80), ["POTION"]);
    }

    #[test]
    fn display_means_windows_unless_ci() {
        assert!(has_display(Some(":0"), None, None));
        assert!(has_display(None, Some("wayland-0"), Some("false")));
        assert!(!has_display(Some(":0"), None, Some("true")));
        assert!(!has_display(Some(""), Some(""), None));
        assert!(!has_display(None, None, None));
    }

    #[test]
    fn screen_text_maps_plain_and_highlighted_characters() {
        let mut names = vec![b' '; 32 * 24];
        names[0] = b'A';
        names[1] = b'A' + 0x80;
        names[2] = 0x00;
        let lines = screen_lines(&names);
        assert_eq!(lines.len(), 24);
        assert_eq!(&lines[0][..3], "AA.");
        assert!(check_screen(&lines, "0000").is_err());
    }

    #[test]
    fn screen_check_wants_the_shared_things_and_the_players_steps() {
        let mut lines = vec![String::new(); 24];
        lines[3] = " 1 SWORD  [X]     5 MAP    [X]".into();
        lines[4] = " 2 SHIELD [ ]     6 BOOTS  [ ]".into();
        lines[5] = " 3 KEY    [X]     7 RING   [ ]".into();
        lines[6] = " 4 LAMP   [ ]     8 POTION [ ]".into();
        lines[7] = " 9 CROWN  [X]     0 HARP   [ ]".into();
        lines[9] = " COINS  0002   SPACE ADDS ONE".into();
        lines[13] = " STEPS  0002   CURSORS MOVE @".into();
        check_screen(&lines, "0002").unwrap();
        let err = check_screen(&lines, "0000").unwrap_err().to_string();
        assert!(err.starts_with("screen row 13 is"), "{err}");
        lines[4] = " 2 SHIELD [X]     6 BOOTS  [ ]".into();
        let err = check_screen(&lines, "0002").unwrap_err().to_string();
        assert!(err.starts_with("screen row 4 is"), "{err}");
    }

    #[test]
    fn vars_come_from_their_addresses() {
        let mut block = vec![0u8; usize::from(Vars::BLOCK_LEN)];
        block[0x10] = 0x15;
        block[0x11] = 1;
        block[0x20] = 2;
        block[0x42] = 0x34;
        block[0x43] = 0x12;
        let v = Vars::from_block(&block).unwrap();
        assert_eq!((v.items, v.crown, v.coins), (0x15, 1, [2, 0]));
        assert_eq!(bcd4(v.steps), "1234");
        assert!(v.has_player1s_things());
        assert_eq!(Vars::from_block(&block[..0x43]), None, "too short");
        let names: Vec<_> = script_player2().iter().map(|k| k.name).collect();
        assert_eq!(names, ["RIGHT", "RIGHT", "9"]);
    }

    #[test]
    fn region_lines_are_short() {
        assert_eq!(
            region_line(0xe010, 0xe010, &[0x15], "items: bit 0 sword"),
            "e010       15     items"
        );
        assert_eq!(
            region_line(0xe020, 0xe021, &[2, 0], "coins"),
            "e020-e021  02 00  coins"
        );
    }
}
