use std::process::ExitCode;

use clap::Parser;

use airgate::cli::{Cli, Command};

/// mimalloc on every target: see Cargo.toml and docs/operations.md ("Memory allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Our error messages already carry their causes; print one clean line.
            eprintln!("airgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            print!("{}", airgate::api::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            airgate::serve::serve(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let report = airgate::serve::check(&args, &mut std::io::stdout().lock())?;
            Ok(if report.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Controller(args) => {
            airgate::controller::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
