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
mod restore;
mod serve;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use msxsync::auth::{Password, PasswordNeeded, PASSWORD_ENV};
use msxsync::client::Client;
use msxsync::text::printable;
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
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
    /// Show less: -q only warnings and errors, -qq only errors. In `play`, -q also
    /// turns off the notices on the emulator screen ("bob joined ...", "alice got
    /// the boots").
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
    /// List a game's saved states on a running server, or put one back while its
    /// players play (the host's undo).
    Restore(restore::RestoreArgs),
}

/// Runs the command line; errors are printed on stderr and give a failure exit code.
pub fn run(cli: Cli) -> ExitCode {
    let verbosity = i16::from(cli.verbose) - i16::from(cli.quiet);
    let style = match cli.command {
        Command::Serve(_) => log::Style::Server,
        Command::Play(_) => log::Style::Player,
        Command::List(_) | Command::Check(_) | Command::Restore(_) => log::Style::Tool,
    };
    log::init(verbosity, style);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Play(args) => play::run(args, cli.quiet > 0),
        Command::List(args) => list::run(args),
        Command::Check(args) => check::run(args),
        Command::Restore(args) => restore::run(args),
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

/// The password option of every command that talks to a server.
#[derive(clap::Args, Debug)]
struct PasswordArg {
    /// File holding the server's password (its first line). Without it the password is
    /// taken from the MSXSYNC_PASSWORD environment variable; clients that find neither
    /// ask for it on the terminal when the server wants one.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

impl PasswordArg {
    /// The password from the file, else from the environment, else none.
    fn get(&self) -> Result<Option<Password>> {
        match &self.password_file {
            Some(f) => Password::from_file(f).map(Some),
            None => Password::from_env(),
        }
    }
}

/// Connects to `server` as `name` for a one-off request (`list`, `restore`), with the
/// password given or asked for.
async fn connect(server: &str, name: &str, password: &PasswordArg) -> Result<Client> {
    with_password(password.get()?, |pw| async move {
        msxsync::client::connect_with_password(server, name, pw.as_ref()).await
    })
    .await
}

/// Runs `attempt` with the password given; when the server asks for one and none was
/// given, asks for it on the terminal (if there is one) and runs `attempt` again.
async fn with_password<T, F, Fut>(given: Option<Password>, mut attempt: F) -> Result<T>
where
    F: FnMut(Option<Password>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let asked = given.is_none();
    match attempt(given).await {
        Err(e) if asked && std::io::stdin().is_terminal() => {
            let Some(need) = e.downcast_ref::<PasswordNeeded>() else {
                return Err(e);
            };
            let prompt = format!(
                "password for server {} (or set {PASSWORD_ENV}): ",
                printable(&need.server)
            );
            let typed = smol::unblock(move || rpassword::prompt_password(prompt))
                .await
                .context("cannot read the password from the terminal")?;
            attempt(Some(Password::new(&typed)?)).await
        }
        other => other,
    }
}
