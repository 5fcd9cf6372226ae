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
    /// Do not serve the tracker page. By default a browser opening http://HOST:PORT/
    /// gets a read-only page (no password asked) with every game's players, shared
    /// state and last changes; players and `msxsync list` work the same either way.
    #[arg(long)]
    no_tracker: bool,
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
        tracker: !args.no_tracker,
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
    if args.no_tracker {
        println!("tracker page: off (--no-tracker)");
    } else {
        for url in tracker_urls(handle.addr()) {
            println!("tracker page: {url}");
        }
    }
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

/// Where a browser finds the tracker page of a server listening on `addr`: the address
/// itself, or, for every interface (0.0.0.0, ::), each address of this machine's
/// interfaces but loopback (which only works here) and IPv6 link-local (which needs a
/// zone browsers do not take).
fn tracker_urls(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let ips = if addr.ip().is_unspecified() {
        interface_addresses(addr.is_ipv6())
    } else {
        vec![addr.ip()]
    };
    if ips.is_empty() {
        return vec![format!(
            "http://THIS-MACHINE:{port}/ (THIS-MACHINE: this machine's name or address)"
        )];
    }
    ips.into_iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
        })
        .collect()
}

/// This machine's interface addresses that others may reach it by: IPv4, and IPv6 too
/// when `v6`; no loopback, no IPv6 link-local; each once, in the system's order.
#[cfg(unix)]
fn interface_addresses(v6: bool) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we only read, and free
    // once with freeifaddrs; each ifa_addr is checked for null and read as the socket
    // address type its family says.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut at = list;
        while !at.is_null() {
            let ifa = &*at;
            at = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            let ip = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 if v6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            };
            let link_local = matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
            if !ip.is_loopback() && !link_local && !out.contains(&ip) {
                out.push(ip);
            }
        }
        libc::freeifaddrs(list);
    }
    out
}

/// Without getifaddrs the page's address is given as THIS-MACHINE.
#[cfg(not(unix))]
fn interface_addresses(_v6: bool) -> Vec<IpAddr> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_url_names_an_address_a_browser_can_open() {
        assert_eq!(
            tracker_urls("127.0.0.1:4567".parse().unwrap()),
            ["http://127.0.0.1:4567/"]
        );
        assert_eq!(
            tracker_urls("[::1]:80".parse().unwrap()),
            ["http://[::1]:80/"]
        );
        for url in tracker_urls("0.0.0.0:4567".parse().unwrap()) {
            assert!(url.starts_with("http://"), "{url}");
            assert!(
                !url.contains("0.0.0.0") && !url.contains("127.0.0.1"),
                "{url}"
            );
            assert!(url.contains(":4567/"), "{url}");
        }
    }
}
