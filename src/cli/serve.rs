//! `msxsync serve`.

use anyhow::{bail, Result};
use msxsync::auth::WEAK_PASSWORD_BYTES;
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
    /// Folder where each room's shared state is kept (GAME.state for a game's own room,
    /// GAME.rooms/ROOM.state for its other rooms), saved within a second of a change
    /// and on Ctrl-C, and loaded at start so a restarted server continues where it
    /// stopped. Default: $XDG_STATE_HOME/msxsync, or
    /// ~/.local/state/msxsync.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Start every room of every game from zeros, ignoring its saved state (which is then
    /// overwritten).
    #[arg(long)]
    fresh: bool,
    /// Players must know this password (see --password-file); without it, anyone who
    /// can reach the port can join any game and overwrite its shared state.
    #[command(flatten)]
    password: super::PasswordArg,
    /// Most connections open at once. When full, the oldest connection that has not
    /// joined a game is closed to make room; players are never closed for a newcomer.
    /// Kept below the process's open-file limit.
    #[arg(long, value_name = "N", default_value_t = server::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most connections open at once from one address (an IPv4 address, or an IPv6 /64
    /// network): a LAN party behind one router shares one address.
    #[arg(long, value_name = "N", default_value_t = server::MAX_PER_ADDRESS)]
    max_per_address: usize,
    /// Most players in one room of a game.
    #[arg(long, value_name = "N", default_value_t = server::MAX_PLAYERS_PER_GAME)]
    max_players: usize,
    /// Most rooms of one game besides its own (`play --room`); 0: every game has only
    /// its own room. Over all games the server allows 256 rooms besides the games'
    /// own, and 2 MiB of their shared state.
    #[arg(long, value_name = "N", default_value_t = server::limits::MAX_ROOMS_PER_GAME)]
    max_rooms: usize,
}

/// Loads the games and their saved state, prints them and the address, and serves
/// until Ctrl-C or SIGTERM, then saves every game's state.
pub fn run(args: ServeArgs) -> Result<()> {
    // The server stops accepting changes before the final save, which therefore has
    // them all.
    let quit = super::on_ctrl_c()?;
    let password = args.password.get()?;
    for (what, n) in [
        ("--max-connections", args.max_connections),
        ("--max-per-address", args.max_per_address),
        ("--max-players", args.max_players),
    ] {
        if n == 0 {
            bail!("{what} must be at least 1");
        }
    }
    // A game's rooms must fit in the list clients accept.
    if args.max_rooms >= msxsync::protocol::MAX_ROOMS {
        bail!("--max-rooms must be below {}", msxsync::protocol::MAX_ROOMS);
    }
    let open = password.is_none();
    let weak = password.as_ref().is_some_and(|p| p.is_weak());
    let handle = server::serve(ServeOptions {
        game_dirs: args.games,
        state_dir: args.state_dir,
        fresh: args.fresh,
        password,
        max_connections: args.max_connections,
        max_per_address: args.max_per_address,
        max_players: args.max_players,
        max_rooms: args.max_rooms,
        ..ServeOptions::new(SocketAddr::new(args.bind, args.port))
    })?;
    if open {
        let who = if args.bind.is_loopback() {
            "anyone on this machine"
        } else {
            "anyone who can reach this port over the network"
        };
        println!(
            "no password: {who} can join any game and overwrite its shared state; give \
             --password-file FILE (or set MSXSYNC_PASSWORD) to require one"
        );
    } else if weak {
        tracing::warn!(
            "the password is shorter than {WEAK_PASSWORD_BYTES} characters: someone who \
             records a login can try guesses offline; use a long random one"
        );
    }
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
        if let Some(warning) = origin.warning(name, name) {
            tracing::warn!("{warning}");
        }
        println!("  {}", printable(&format!("{name}: {origin}")));
    }
    for (game, room, origin) in &report.rooms {
        if let Some(warning) = origin.warning(game, room) {
            tracing::warn!("{warning}");
        }
        println!("  {}", printable(&format!("{game}, room {room}: {origin}")));
    }
    if !open {
        println!("players need the password to join");
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
