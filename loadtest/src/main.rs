//! The `applause-loadtest` binary: parse the command line, run, print the
//! summary, write the JSON report and plot, exit non-zero on any problem.

use std::process::ExitCode;

use clap::Parser;

use applause_loadtest::{execute, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = match cli.worker_threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (outcome, out) = match runtime.block_on(execute(cli)) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", outcome.report.table());
    if let Some(path) = &out.json {
        if let Err(e) = outcome.report.write_json(path) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &out.plot {
        if let Err(e) = outcome.report.write_svg(path) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
