//! `msxsync play`.

use anyhow::Result;
use msxsync::play::{Ending, PlayOptions, Player};
use msxsync::protocol::DEFAULT_PORT;
use std::path::PathBuf;

/// Arguments of `msxsync play`.
#[derive(clap::Args, Debug)]
pub struct PlayArgs {
    /// The game to play, as the server lists it (`msxsync list`).
    #[arg(long)]
    game: String,
    /// The room of the game to join: each room has its own shared state and players, so
    /// several groups can play the same game on one server (default: the game's own
    /// room, named like the game). A room is made when its first player joins.
    #[arg(long)]
    room: Option<String>,
    /// The server: HOST, HOST:PORT or ws://HOST:PORT.
    #[arg(long, default_value_t = format!("localhost:{DEFAULT_PORT}"))]
    server: String,
    /// Your name, shown to the other players (default: your user name).
    #[arg(long)]
    name: Option<String>,
    /// openMSX machine to start, e.g. C-BIOS_MSX1 (overrides the game's `machine:`;
    /// without either, openMSX's default machine).
    #[arg(long)]
    machine: Option<String>,
    /// The openMSX program to run.
    #[arg(long, default_value = "openmsx")]
    openmsx: PathBuf,
    /// No window and no sound (for servers, tests and bots).
    #[arg(long)]
    headless: bool,
    /// Use an openMSX that is already running instead of starting one: its process id
    /// or control socket path. Unix only (Linux, macOS): openMSX's control socket is a
    /// Unix socket, so on Windows msxsync always starts openMSX itself.
    #[arg(long, value_name = "PID|SOCKET")]
    attach: Option<String>,
    /// Where downloaded ROMs are kept (default: $XDG_CACHE_HOME/msxsync/roms).
    #[arg(long, env = "MSXSYNC_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Joining a game already in progress: take the shared state as soon as the game
    /// starts instead of waiting for you to press F12 (games without `sync-when:`).
    #[arg(long)]
    join_now: bool,
    #[command(flatten)]
    password: super::PasswordArg,
}

impl From<PlayArgs> for PlayOptions {
    fn from(a: PlayArgs) -> PlayOptions {
        let mut o = PlayOptions::new(a.server, a.game);
        o.room = a.room;
        if let Some(n) = a.name {
            o.name = n;
        }
        o.machine = a.machine;
        o.openmsx = a.openmsx;
        o.headless = a.headless;
        o.attach = a.attach;
        o.cache_dir = a.cache_dir;
        o.join_now = a.join_now;
        o
    }
}

/// Plays until the player closes openMSX, presses Ctrl-C, or a fatal error happens.
/// `quiet`: the global `-q` was given, which also turns the notices off.
pub fn run(args: PlayArgs, quiet: bool) -> Result<()> {
    let quit = super::on_ctrl_c()?;
    let given = args.password.get()?;
    let opts = PlayOptions {
        quiet,
        ..PlayOptions::from(args)
    };
    smol::block_on(async move {
        // Start-up waits for the server and for openMSX: the stop request must end it
        // too. Dropping the unfinished start closes the connection and kills the
        // openMSX it started. Connecting is the first thing `start` does, so asking
        // for a password and starting again costs nothing.
        let start = super::with_password(given, |password| {
            let opts = PlayOptions {
                password,
                ..opts.clone()
            };
            Player::start(opts)
        });
        let started = smol::future::or(async { Some(start.await) }, async {
            let _ = quit.recv().await;
            None
        })
        .await;
        let Some(player) = started else {
            println!("interrupted while starting: left");
            return Ok(());
        };
        let player = player?;
        // Start-up is over (tests wait for this line before they signal: a Ctrl-C
        // before it ends the start instead).
        let game = msxsync::text::printable(&player.joined().game.name);
        println!("playing {game}: Ctrl-C here leaves the game");
        let outcome = smol::future::or(player.wait_done(), async {
            let _ = quit.recv().await;
            Ok(Ending::Interrupted)
        })
        .await;
        let stopped = player.stop().await;
        let ending = outcome?;
        stopped?;
        match ending {
            Ending::OpenMsxClosed => println!("openMSX closed: left the game"),
            Ending::Interrupted => println!("interrupted: left the game and stopped openMSX"),
        }
        Ok(())
    })
}
