//! Placeholder: being written.

/// Arguments of the subcommand.
#[derive(clap::Args, Debug)]
pub struct PlayArgs {}

/// Runs the subcommand.
pub fn run(_args: PlayArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
