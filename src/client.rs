//! Placeholder: being written.

/// Arguments of the subcommand.
#[derive(clap::Args, Debug)]
pub struct ListArgs {}

/// Runs the subcommand.
pub fn run_list(_args: ListArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
