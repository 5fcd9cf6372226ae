//! `msxsync serve`.

use anyhow::{bail, Result};
use msxsync::protocol::DEFAULT_PORT;
use msxsync::server::{self, ServeOptions};
use msxsync::text::printable;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Arguments of `msxsync serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Folder holding games (NAME.regions files and their ROMs); repeat the option for
    /// several folders. Without it the default game folders are searched.
    #[arg(long = "games", value_name = "DIR")]
    games: Vec<PathBuf>,
    /// Address to listen on (0.0.0.0 for every IPv4 interface, :: for IPv6).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// TCP port to listen on; 0 picks a free port (the address is printed).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Folder where each game's shared state is kept (a GAME.state file per game), saved
    /// within a second of a change and on Ctrl-C, and loaded at start so a restarted
    /// server continues where it stopped. Default: $XDG_STATE_HOME/msxsync, or
    /// ~/.local/state/msxsync.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Start every game from zeros, ignoring its saved state (which is then overwritten).
    #[arg(long)]
    fresh: bool,
}

/// Loads the games and their saved state, prints them and the address, and serves
/// until Ctrl-C or SIGTERM, then saves every game's state.
pub fn run(args: ServeArgs) -> Result<()> {
    // The server stops accepting changes before the final save, which therefore has
    // them all.
    let quit = super::on_ctrl_c()?;
    let handle = server::serve(ServeOptions {
        bind: SocketAddr::new(args.bind, args.port),
        game_dirs: args.games,
        state_dir: args.state_dir,
        fresh: args.fresh,
    })?;
    let report = handle.report();
    println!("serving {} game(s):", report.games.len());
    for g in &report.games {
        println!(
            "  {}: {} (rom {} bytes, {} shared bytes in {} region(s))",
            printable(&g.name),
            printable(&g.title),
            g.rom.len(),
            g.shared_bytes(),
            g.regions.len()
        );
    }
    for (name, origin) in &report.origins {
        if let Some(warning) = origin.warning(name) {
            tracing::warn!("{warning}");
        }
        println!("  {}", printable(&format!("{name}: {origin}")));
    }
    println!("listening on {}", handle.addr());
    let _ = std::io::stdout().flush();
    let _ = quit.recv_blocking();
    println!("stopping: closing connections and saving the state");
    if let Some(report) = handle.stop_and_save() {
        if !report.errors.is_empty() {
            bail!(
                "could not save the state of {} game(s): {}",
                report.errors.len(),
                report.errors.join("; ")
            );
        }
        println!("stopped: {report}");
    }
    Ok(())
}
