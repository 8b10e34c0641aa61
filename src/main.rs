use clap::Parser;

use airgate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", airgate::api::crd_yaml());
            Ok(())
        }
        Command::Controller(args) => {
            // TODO(ops): replace with the shared logging setup (honouring --log-format).
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .try_init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(airgate::controller::run(args))?;
            Ok(())
        }
        _ => anyhow::bail!("not implemented yet"),
    }
}
