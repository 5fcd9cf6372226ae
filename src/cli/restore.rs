//! `msxsync restore`: the host's undo. It talks to the running server rather than
//! editing the state folder, because the server holds the state in memory (and locks
//! the folder): only the server can put a saved state back while players play, and
//! send it to them as an update.

use anyhow::{bail, Result};
use msxsync::protocol::{BackupInfo, DEFAULT_PORT};
use msxsync::server::persist::room_label;
use msxsync::text::printable;
use std::fmt::Write;

/// Arguments of `msxsync restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The running server: HOST, HOST:PORT, [IPV6]:PORT or a ws:// URL. On a server
    /// without a password, restoring works only from the server's own machine.
    #[arg(long, value_name = "HOST[:PORT]", default_value_t = format!("localhost:{DEFAULT_PORT}"))]
    server: String,
    /// The game whose saved states to list or restore.
    #[arg(long)]
    game: String,
    /// The room of the game (default: the game's own room, named like the game).
    #[arg(long)]
    room: Option<String>,
    /// The saved state to put back, by the ID the listing shows. Without it the saved
    /// states are listed, newest first, and nothing changes.
    #[arg(long, value_name = "ID")]
    backup: Option<u64>,
    #[command(flatten)]
    password: super::PasswordArg,
}

/// Lists the saved states of the room, or puts one back.
pub fn run(args: RestoreArgs) -> Result<()> {
    let room = args.room.clone().unwrap_or_else(|| args.game.clone());
    // Both names are only ever shown filtered.
    let what = printable(&room_label(&args.game, &room));
    smol::block_on(async {
        let mut client = super::connect(&args.server, "msxsync restore", &args.password).await?;
        match args.backup {
            None => {
                let backups = client.list_backups(&args.game, &room).await?;
                print!("{}", format_backups(&what, &backups, now_ms()));
            }
            Some(id) => {
                let backups = client.list_backups(&args.game, &room).await?;
                let Some(b) = backups.iter().find(|b| b.id == id) else {
                    let room_arg = match &args.room {
                        Some(r) => format!(" --room {}", printable(r)),
                        None => String::new(),
                    };
                    bail!(
                        "{what} has no saved state {id}; run msxsync restore --game {}{room_arg} \
                         to list them",
                        printable(&args.game),
                    );
                };
                let seq = client.restore(&args.game, &room, id).await?;
                println!(
                    "restored {what} to the state saved {} (update {}); the players got it as \
                     update {seq}",
                    age(now_ms().saturating_sub(b.id)),
                    b.seq
                );
            }
        }
        client.close().await;
        Ok(())
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// "12 s ago", "5 min ago", "3 h ago", "2 days ago".
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// The listing: one line per saved state, newest first. `what` names the room
/// ("game G", "room R of game G"), already printable.
fn format_backups(what: &str, backups: &[BackupInfo], now: u64) -> String {
    let mut out = String::new();
    if backups.is_empty() {
        let _ = writeln!(out, "{what} has no saved states yet");
        return out;
    }
    let _ = writeln!(
        out,
        "saved states of {what}, newest first (put one back with --backup ID):"
    );
    for b in backups {
        let _ = writeln!(
            out,
            "  {}  {:>12}  update {}",
            b.id,
            age(now.saturating_sub(b.id)),
            b.seq
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_readable() {
        let now = 1_700_000_000_000;
        let list = vec![
            BackupInfo {
                id: now - 5_000,
                seq: 90,
            },
            BackupInfo {
                id: now - 600_000,
                seq: 40,
            },
            BackupInfo {
                id: now - 3 * 86_400_000,
                seq: 1,
            },
        ];
        let text = format_backups(&printable("game knight\u{1b}"), &list, now);
        assert!(
            text.starts_with("saved states of game knight\\u{1b}, newest first"),
            "{text}"
        );
        assert!(
            text.contains("  1699999995000       5 s ago  update 90\n"),
            "{text}"
        );
        assert!(text.contains("10 min ago  update 40"), "{text}");
        assert!(text.contains("3 days ago  update 1"), "{text}");
        assert_eq!(
            format_backups("room r of game g", &[], now),
            "room r of game g has no saved states yet\n"
        );
    }
}
