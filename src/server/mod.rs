//! Placeholder: being written.

/// Arguments of the subcommand.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

/// Runs the subcommand.
pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
