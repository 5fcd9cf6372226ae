//! Placeholder: being written.

/// Arguments of the subcommand.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// Runs the subcommand.
pub fn run_check(_args: CheckArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
