//! A headless openMSX running the test cartridge, driven through its mailbox.

use crate::testrom::{self, ACK, FRAMES, READY, READY_VALUE};
pub use crate::wait::poll;
use anyhow::{bail, Context, Result};
use msxsync::openmsx::{Hooks, LaunchOptions, OpenMsx};
use std::path::Path;
use std::time::Duration;

/// Longest wait for anything openMSX should do quickly.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one byte of CPU memory.
pub async fn peek(msx: &OpenMsx, addr: u16) -> Result<u8> {
    let v = msx.command(&testrom::peek(addr)).await?;
    v.trim()
        .parse()
        .with_context(|| format!("openmsx answered {v:?} to a memory read"))
}

/// Posts a mailbox command and waits until the game acknowledged it. `seq` is the
/// caller's mailbox counter (never 0, which is the game's start value).
pub async fn game_does(msx: &OpenMsx, seq: &mut u8, cmd: u8, addr: u16, value: u8) -> Result<()> {
    *seq = seq.wrapping_add(1).max(1);
    let s = *seq;
    msx.command(&testrom::mailbox(s, cmd, addr, value)).await?;
    poll("the game's acknowledgement", TIMEOUT, || async move {
        Ok((peek(msx, ACK).await? == s).then_some(()))
    })
    .await
}

/// Emulated time (s) and the game's 16-bit frame counter, read in one Tcl command so
/// that both belong to the same moment.
pub async fn clock(msx: &OpenMsx) -> Result<(f64, u16)> {
    let cmd = format!(
        "list [machine_info time] [debug read memory {FRAMES}] [debug read memory {}]",
        FRAMES + 1
    );
    let reply = msx.command(&cmd).await?;
    let parts: Vec<&str> = reply.split_whitespace().collect();
    let bad = || anyhow::anyhow!("unexpected clock reply {reply:?}");
    if parts.len() != 3 {
        return Err(bad());
    }
    let t: f64 = parts[0].parse().map_err(|_| bad())?;
    let lo: u16 = parts[1].parse().map_err(|_| bad())?;
    let hi: u16 = parts[2].parse().map_err(|_| bad())?;
    Ok((t, lo | hi << 8))
}

/// Starts headless openMSX (C-BIOS_MSX1) with `rom`, loads the hooks (watching
/// nothing), runs until the game's start-up is done. Throttle as asked.
pub async fn start(rom: &Path, throttle: bool) -> Result<(OpenMsx, Hooks)> {
    let msx = OpenMsx::spawn(&LaunchOptions {
        machine: Some("C-BIOS_MSX1".into()),
        cart: Some(rom.to_path_buf()),
        headless: true,
        ..LaunchOptions::default()
    })
    .await
    .context("starting openmsx")?;
    // Boot fast, whatever is measured later.
    msx.command("set throttle off").await?;
    let hooks = Hooks::load(&msx).await?;
    let image = std::fs::read(rom).with_context(|| format!("reading {}", rom.display()))?;
    if !hooks.wait_for_cartridge(&image, TIMEOUT, |_| {}).await? {
        bail!("the test cartridge's INIT was not reached");
    }
    // The hooks pause emulation at INIT until told to go on.
    hooks.resume().await?;
    let m = msx.clone();
    poll("the game's start-up", TIMEOUT, || {
        let m = m.clone();
        async move { Ok((peek(&m, READY).await? == READY_VALUE).then_some(())) }
    })
    .await?;
    if throttle {
        msx.command("set throttle on").await?;
    }
    Ok((msx, hooks))
}
