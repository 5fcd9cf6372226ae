//! The `msxsync` program. The command line (arguments, output, Ctrl-C, logging) is
//! [`cli`]; the work is done by the `msxsync` library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
