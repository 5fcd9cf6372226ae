//! The `msxsync` command line. Each subcommand's arguments are defined next to the code
//! that runs it; this file only wires them together.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Turn single-player MSX games into shared co-op games: every player's openMSX keeps
/// the game's chosen RAM regions (inventory, keys, coins...) identical over the network.
#[derive(Parser)]
#[command(name = "msxsync", version = msxsync::version::long(), about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve games: hold each game's shared state and relay changes between players.
    Serve(msxsync::server::ServeArgs),
    /// Play a game: start openMSX with the game and share its RAM with the others.
    Play(msxsync::play::PlayArgs),
    /// List a server's games and the players in them.
    List(msxsync::client::ListArgs),
    /// Check regions files and print a one-line summary of each game.
    Check(msxsync::regions::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => msxsync::server::run(args),
        Command::Play(args) => msxsync::play::run(args),
        Command::List(args) => msxsync::client::run_list(args),
        Command::Check(args) => msxsync::regions::run_check(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("msxsync: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
