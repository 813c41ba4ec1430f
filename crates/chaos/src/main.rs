//! `errand-chaos`: the crash loop with a history checker (see `run`), and the worker process it
//! starts (see `worker`). CI runs a short loop on each store (`crates/chaos/tests/chaos.rs`); a soak is
//! the same command with bigger numbers, e.g.
//! `errand-chaos run --jobs 200000 --chaos-secs 1800`.

mod history;
mod run;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Kill, pause and restart Errand's servers and workers under load, then check that no job was lost, completed twice or completed by a stale lease"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the crash loop and check the history; exits 1 if a check fails.
    Run(run::RunArgs),
    /// A worker process of the crash loop (started by `run`).
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("errand-chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(async {
        match cli.command {
            Cmd::Run(args) => run::run(args).await,
            Cmd::Worker(args) => worker::run(args).await.map(|()| true),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("errand-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
