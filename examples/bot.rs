//! A tiny msxsync player without an emulator: joins a game, optionally sends changes,
//! and prints every update as it comes. Handy to poke a server or watch a game.
//!
//! ```text
//! cargo run --example bot -- --server localhost:4567 --game demo --set 0:5:ff
//! ```
//!
//! Exits when the server closes the connection (or on Ctrl-C).

use anyhow::{bail, Context, Result};
use clap::Parser;
use msxsync::client;
use msxsync::delta::Change;
use msxsync::hex;
use msxsync::protocol::ServerMsg;

/// Join an msxsync game as a bot, send changes and print the updates.
#[derive(Parser, Debug)]
struct Args {
    /// Server: HOST, HOST:PORT, [IPV6]:PORT or a ws:// URL.
    #[arg(long, default_value = "localhost:4567")]
    server: String,
    /// Game to join.
    #[arg(long)]
    game: String,
    /// Room of the game to join (default: the game's own room, named like the game).
    #[arg(long)]
    room: Option<String>,
    /// Player name shown to the others.
    #[arg(long, default_value = "bot")]
    name: String,
    /// Set whole bytes: REGION:OFFSET:VALUEHEX, e.g. 0:5:ff or 1:0:0102 (region index
    /// and byte offset in decimal or 0x-hex). Repeat for several changes; all go in one
    /// batch.
    #[arg(long = "set", value_name = "REGION:OFFSET:VALUEHEX")]
    set: Vec<String>,
}

fn number(text: &str, what: &str) -> Result<u16> {
    let parsed = match text.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("bad {what} {text:?}: expected a number up to 65535"))
}

/// Parses `REGION:OFFSET:VALUEHEX` into a whole-byte change.
fn parse_set(text: &str) -> Result<Change> {
    let parts: Vec<&str> = text.split(':').collect();
    let [region, offset, value] = parts[..] else {
        bail!("bad --set {text:?}: expected REGION:OFFSET:VALUEHEX, e.g. 0:5:ff");
    };
    if value.is_empty() || value.len() % 2 != 0 || value.len() > 2048 {
        bail!("bad --set {text:?}: VALUEHEX must be pairs of hex digits");
    }
    let bytes = (0..value.len())
        .step_by(2)
        .map(|i| {
            value
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .with_context(|| format!("bad --set {text:?}: VALUEHEX must be hex digits"))?;
    Ok(Change::bytes(
        number(region, "region")?,
        number(offset, "offset")?,
        bytes,
    ))
}

fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| {
            format!(
                "region {} +{}: {} (mask {})",
                c.region,
                c.offset,
                hex::encode(&c.values),
                hex::encode(&c.masks)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bot: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let changes = args
        .set
        .iter()
        .map(|s| parse_set(s))
        .collect::<Result<Vec<_>>>()?;
    smol::block_on(async {
        let mut c = client::connect(&args.server, &args.name).await?;
        let room = args.room.as_deref().unwrap_or(&args.game);
        let joined = c.join_room(&args.game, room, 0).await?;
        println!(
            "joined {} room {} as #{} at seq {} ({} region(s), {} player(s) in the room)",
            joined.game.name,
            joined.room.name,
            joined.player,
            joined.seq,
            joined.regions.len(),
            joined.room.players.len()
        );
        for (i, (r, s)) in joined.regions.iter().zip(&joined.state).enumerate() {
            println!(
                "  region {i} {:04x}-{:04x}: {}",
                r.start,
                r.end,
                hex::encode(s)
            );
        }
        let (mut tx, mut rx) = c.split();
        if !changes.is_empty() {
            tx.send_changes(1, changes).await?;
        }
        loop {
            match rx.recv().await? {
                ServerMsg::Update {
                    seq,
                    player,
                    batch,
                    changes,
                } => {
                    let who = if player == joined.player {
                        "me".to_string()
                    } else {
                        format!("#{player}")
                    };
                    println!("seq {seq} from {who} batch {batch}: {}", describe(&changes));
                }
                ServerMsg::PlayerJoined(p) => println!("{} (#{}) joined", p.name, p.id),
                ServerMsg::PlayerLeft(p) => println!("{} (#{}) left", p.name, p.id),
                other => println!("{other:?}"),
            }
        }
    })
}
