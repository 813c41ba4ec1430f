//! `errand`: run a server, and manage jobs, queues and dead letters from a terminal.
//!
//! Exit codes: 0 success; 1 the server failed or could not be reached; 2 a usage error (bad flags, or
//! input the server refused as invalid); 3 not found; 4 a conflict (the job's state does not allow it);
//! 5 refused by auth.

mod bench;
mod commands;
mod output;
mod schedule;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Errand: a background-job queue server.
#[derive(Debug, Parser)]
#[command(name = "errand", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 server error or unreachable; 2 usage error or invalid \
input; 3 not found; 4 conflict; 5 unauthorized or forbidden.";

/// Where the server is, for the commands that talk to one.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's URL.
    #[arg(
        long,
        env = "ERRAND_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub url: String,
    /// API key (when the server requires one).
    #[arg(long, env = "ERRAND_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server (on the embedded store in ./errand-data unless told otherwise).
    Serve(Box<errand_server::ServeArgs>),
    /// Jobs: add, ls, get, logs, cancel, retry.
    Job {
        #[command(subcommand)]
        command: commands::JobCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Queues: list, stats, pause, resume, configuration.
    Queue {
        #[command(subcommand)]
        command: commands::QueueCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Dead letters: list, replay, purge.
    Dlq {
        #[command(subcommand)]
        command: commands::DlqCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cron schedules: list, get, set, rm, pause, resume, trigger.
    Schedule {
        #[command(subcommand)]
        command: schedule::ScheduleCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a running deployment against docs/AUDIT.md: each check pass, warn or fail, with its
    /// fix. Exits 1 when any check fails.
    Audit {
        #[command(flatten)]
        remote: Remote,
    },
    /// API keys: make a new one.
    Key {
        #[command(subcommand)]
        command: commands::KeyCommand,
    },
    /// Measure throughput and latency (see `errand bench --help`).
    Bench(Box<bench::BenchArgs>),
    /// Print the server's OpenAPI description (no server needed).
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("errand: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => match errand_server::run(*args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(errand_server::RunError::Config(e)) => output::fail(2, &e),
                Err(errand_server::RunError::Failed(e)) => output::fail(1, &e),
            },
            Command::Job { command, remote } => commands::job(command, &remote).await,
            Command::Queue { command, remote } => commands::queue(command, &remote).await,
            Command::Dlq { command, remote } => commands::dlq(command, &remote).await,
            Command::Schedule { command, remote } => schedule::schedule(command, &remote).await,
            Command::Key { command } => commands::key(command),
            Command::Audit { remote } => commands::audit(&remote).await,
            Command::Bench(args) => bench::run(*args).await,
            Command::Openapi => match errand_server::openapi().to_pretty_json() {
                Ok(s) => {
                    output::say!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("errand: {e}");
                    ExitCode::from(1)
                }
            },
        }
    });
    // The server has shut down in order; tasks still running (a connection cut off at the shutdown
    // deadline) get a bounded moment more, so that the process always exits.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
