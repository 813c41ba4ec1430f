//! A worker over HTTP: runs the jobs of queue `mail` — kinds `send_receipt` and `digest` (what the
//! README's nightly schedule enqueues) — with the worker SDK until Ctrl-C or SIGTERM, then shuts down
//! gracefully (running jobs finish, fetched-but-unstarted ones are released) and says what it did.
//!
//! ```sh
//! cargo run --release -- serve                       # in one terminal
//! cargo run --release --example producer             # enqueue some jobs
//! cargo run --release --example worker               # work them; runs until Ctrl-C
//! ```
//!
//! Flags: `--url URL` (default `http://127.0.0.1:7700`, or `ERRAND_URL`), `--queue NAME` (default
//! `mail`), `--concurrency N` (default 8), `--exit-when-idle` (stop once the queue has had nothing for
//! a second, for scripts). `ERRAND_API_KEY` is sent when set. The SDK's log goes to stderr (`RUST_LOG`
//! sets its level, `info` by default): a job of a kind this worker has no handler for is reported
//! there as an error.

use std::time::Duration;

use errand_client::{Client, JobContext, JobError, Worker};
use serde::Deserialize;
use serde_json::json;

/// The payload of a `send_receipt` job. Every field is optional so that a job enqueued by hand with any
/// payload still runs; a payload of the wrong shape (not an object) fails the job for good.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Receipt {
    order: Option<u64>,
    to: Option<String>,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = arg("--url")
        .or_else(|| std::env::var("ERRAND_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let queue = arg("--queue").unwrap_or_else(|| "mail".into());
    let concurrency: usize = arg("--concurrency")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(8);
    let exit_when_idle = std::env::args().any(|a| a == "--exit-when-idle");
    // Without a subscriber the SDK's log goes nowhere, and a job refused for want of a handler would
    // fail in silence.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = Client::builder(&url);
    if let Ok(key) = std::env::var("ERRAND_API_KEY") {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;

    let worker = Worker::builder(client.clone())
        .queue(queue.clone())
        .concurrency(concurrency)
        .handler(
            "send_receipt",
            |ctx: JobContext, r: Option<Receipt>| async move {
                let r = r.unwrap_or_default();
                if r.to.as_deref() == Some("") {
                    return Err(JobError::fatal("no recipient"));
                }
                // A real handler passes ctx.idempotency_key() to the mail provider, so that a retry
                // after a crash does not send twice.
                println!(
                    "job {} attempt {}: receipt for order {:?} to {:?} (key {})",
                    ctx.id(),
                    ctx.attempt(),
                    r.order,
                    r.to,
                    ctx.idempotency_key()
                );
                Ok(json!({"sent": true}))
            },
        )
        .handler(
            "digest",
            |ctx: JobContext, payload: serde_json::Value| async move {
                // The nightly schedule's job (README: `errand schedule set nightly ... --kind digest`).
                println!(
                    "job {} attempt {}: nightly digest (payload {payload})",
                    ctx.id(),
                    ctx.attempt()
                );
                Ok(json!({"digest": "sent"}))
            },
        )
        .build()?;
    println!("working queue {queue:?} (kinds send_receipt, digest); Ctrl-C to stop");

    let report = if exit_when_idle {
        let watcher = client.clone();
        worker
            .run_until(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(q) = watcher.queue(&queue).await
                        && q.counts.waiting == 0
                        && q.counts.active == 0
                        && q.counts.delayed == 0
                    {
                        return;
                    }
                }
            })
            .await
    } else {
        worker.run().await
    };
    println!("worker stopped: {report}.");
    Ok(())
}
