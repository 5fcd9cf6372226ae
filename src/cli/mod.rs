//! The command line: the subcommands' arguments, what they print, Ctrl-C and logging.
//!
//! Each subcommand has a file here that turns its arguments into library calls and
//! prints what those return. Two kinds of output, kept apart on purpose:
//! - a command's result (`list`'s listing, `check`'s summaries, the games and the
//!   address `serve` starts with, how `play` ended) is printed here with `println!`,
//!   whatever the log level;
//! - what happens while a command runs (a player's progress, connections, warnings,
//!   trace) is a `tracing` event from the library, shown as [`log`] sets up.

mod check;
mod list;
mod log;
mod play;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};
use msxsync::text::printable;
use std::process::ExitCode;

/// Turn single-player MSX games into shared co-op games: every player's openMSX keeps
/// the game's chosen RAM regions (inventory, keys, coins...) identical over the network.
#[derive(Parser)]
#[command(name = "msxsync", version = msxsync::version::long(), about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show more: -v debug messages, -vv every change sent and update received.
    ///
    /// -vv is what MSXSYNC_TRACE=1 does. RUST_LOG (e.g. RUST_LOG=msxsync::server=debug),
    /// when set, takes precedence over -v and -q.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Show less: -q only warnings and errors, -qq only errors.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    quiet: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Serve games: hold each game's shared state and relay changes between players.
    Serve(serve::ServeArgs),
    /// Play a game: start openMSX with the game and share its RAM with the others.
    Play(play::PlayArgs),
    /// List a server's games and the players in them.
    List(list::ListArgs),
    /// Check regions files and print a one-line summary of each game.
    Check(check::CheckArgs),
}

/// Runs the command line; errors are printed on stderr and give a failure exit code.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = i16::from(cli.verbose) - i16::from(cli.quiet);
    let style = match cli.command {
        Command::Serve(_) => log::Style::Server,
        Command::Play(_) => log::Style::Player,
        Command::List(_) | Command::Check(_) => log::Style::Tool,
    };
    log::init(verbosity, style);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Play(args) => play::run(args),
        Command::List(args) => list::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote servers and files; the one filter keeps them harmless.
            eprintln!("msxsync: error: {}", printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Installs the Ctrl-C (and SIGTERM) handler; the receiver gets a message for each.
/// Installed before the work starts, so a stop request is never lost.
fn on_ctrl_c() -> anyhow::Result<async_channel::Receiver<()>> {
    let (tx, rx) = async_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .context("could not install the ctrl-c handler")?;
    Ok(rx)
}
