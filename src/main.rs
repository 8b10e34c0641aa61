use clap::Parser;

use airgate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", airgate::api::crd_yaml());
            Ok(())
        }
        _ => anyhow::bail!("not implemented yet"),
    }
}
