//! `applause-loadtest`: drives a running Applause (or any WebSocket fan-out
//! server) through its public API only, measures it, and verifies that every
//! purchased gift reached every viewer exactly once and in order.

pub mod api;
pub mod auth;
pub mod config;
pub mod fanout;
pub mod metrics;
pub mod money;
pub mod net;
pub mod progress;
pub mod report;
pub mod scan;
pub mod scenario;
pub mod verify;

pub use config::{Cli, Command};
pub use scenario::Outcome;

/// Runs one subcommand to its report (the binary prints it and sets the exit code).
pub async fn execute(cli: Cli) -> anyhow::Result<(Outcome, config::OutputOpts)> {
    match cli.command {
        Command::Run(args) => {
            let s = args.resolve(false)?;
            Ok((scenario::run(&s, &args.out, "run").await?, args.out))
        }
        Command::Purchase(args) => {
            let s = args.resolve(true)?;
            Ok((scenario::run(&s, &args.out, "purchase").await?, args.out))
        }
        Command::Fanout(args) => Ok((fanout::run(&args).await?, args.out.clone())),
    }
}
