//! `msxsync list`.

use anyhow::Result;
use msxsync::protocol::{GameInfo, DEFAULT_PORT, PROTOCOL_VERSION};
use msxsync::text::printable;
use std::fmt::Write;

/// Arguments of `msxsync list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Server to ask: HOST, HOST:PORT, [IPV6]:PORT or a ws:// URL (default port 4567).
    #[arg(long, value_name = "HOST[:PORT]", default_value_t = format!("localhost:{DEFAULT_PORT}"))]
    server: String,
    #[command(flatten)]
    password: super::PasswordArg,
}

/// Prints the server's games, their rooms and who plays in each.
pub fn run(args: ListArgs) -> Result<()> {
    smol::block_on(async {
        let mut client = super::connect(&args.server, "msxsync list", &args.password).await?;
        let games = client.list_games().await?;
        print!(
            "{}",
            format_games(client.server(), client.software(), &games)
        );
        client.close().await;
        Ok(())
    })
}

/// The listing: one paragraph per game, one line per room. Everything but the numbers
/// comes from the network, so it goes through [`printable`].
fn format_games(server: &str, software: &str, games: &[GameInfo]) -> String {
    let mut out = String::new();
    // The server's release first, so players can get the same one (only a server of
    // this protocol gets this far, but releases can still differ).
    let _ = writeln!(
        out,
        "{} runs {} (protocol {PROTOCOL_VERSION}) and serves {} game{}:",
        printable(server),
        printable(software),
        games.len(),
        if games.len() == 1 { "" } else { "s" }
    );
    let own = msxsync::version::software();
    if software != own {
        let _ = writeln!(out, "(this machine runs {own})");
    }
    for g in games {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}  \"{}\"", printable(&g.name), printable(&g.title));
        let _ = writeln!(
            out,
            "  rom {} bytes, {} shared byte{}",
            g.rom_size,
            g.shared_bytes,
            if g.shared_bytes == 1 { "" } else { "s" }
        );
        for room in &g.rooms {
            let who = if room.players.is_empty() {
                "nobody".to_string()
            } else {
                let names: Vec<String> = room
                    .players
                    .iter()
                    .map(|p| format!("{} (#{})", printable(&p.name), p.id))
                    .collect();
                format!("{} playing: {}", room.players.len(), names.join(", "))
            };
            let _ = writeln!(out, "  room {}: {who}", printable(&room.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use msxsync::protocol::{PlayerInfo, RoomInfo};

    #[test]
    fn list_output_is_readable() {
        let games = vec![GameInfo {
            name: "knight".into(),
            title: "Knight\u{7}mare".into(),
            rom_size: 32768,
            rom_sha256: [0; 32],
            shared_bytes: 9,
            machine: None,
            romtype: None,
            sync_when: None,
            on_restart: Default::default(),
            rooms: vec![
                RoomInfo {
                    name: "knight".into(),
                    players: vec![
                        PlayerInfo {
                            id: 1,
                            name: "ann".into(),
                        },
                        PlayerInfo {
                            id: 4,
                            name: "bob".into(),
                        },
                    ],
                },
                RoomInfo {
                    name: "friday".into(),
                    players: vec![],
                },
            ],
        }];
        let own = msxsync::version::software();
        let text = format_games("h:1", &own, &games);
        let mut evil = games.clone();
        evil[0].name = "k\u{1b}[2J".into();
        evil[0].rooms[0].players[1].name = "b\u{9b}0m".into();
        evil[0].rooms[1].name = "f\u{1b}[2J".into();
        let shown = format_games("h:1", "msxsync\u{1b}]0;x\u{7}", &evil);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown}"
        );
        assert!(
            text.starts_with(&format!(
                "h:1 runs {own} (protocol {PROTOCOL_VERSION}) and serves 1 game:\n\n"
            )),
            "{text}"
        );
        assert!(text.contains("knight  \"Knight\\u{7}mare\""), "{text}");
        assert!(text.contains("rom 32768 bytes, 9 shared bytes"), "{text}");
        assert!(
            text.contains("  room knight: 2 playing: ann (#1), bob (#4)\n  room friday: nobody\n"),
            "{text}"
        );
        assert!(shown.contains("room f\\u{1b}[2J: nobody"), "{shown}");
        // Another release of the same protocol: both are shown, the server's filtered.
        let other = format_games("h", "msxsync 9.9\u{1b}[2J", &[]);
        assert!(
            other.starts_with(&format!(
                "h runs msxsync 9.9\\u{{1b}}[2J (protocol {PROTOCOL_VERSION}) and serves 0 \
                 games:\n(this machine runs {own})\n"
            )),
            "{other}"
        );
    }
}
