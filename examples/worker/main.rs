//! A worker over HTTP: runs `send_receipt` jobs of a queue with the worker SDK until Ctrl-C or SIGTERM,
//! then shuts down gracefully (running jobs finish, fetched-but-unstarted ones are released).
//!
//! ```sh
//! cargo run --release -- serve                       # in one terminal
//! cargo run --release --example producer             # enqueue some jobs
//! cargo run --release --example worker               # work them; Ctrl-C to stop
//! ```
//!
//! Flags: `--url URL` (default `http://127.0.0.1:7700`, or `ERRAND_URL`), `--queue NAME` (default
//! `mail`), `--concurrency N` (default 8), `--exit-when-idle` (stop once the queue has had nothing for
//! a second, for scripts). `ERRAND_API_KEY` is sent when set.

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
        .build()?;

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
    println!("{report:?}");
    Ok(())
}
