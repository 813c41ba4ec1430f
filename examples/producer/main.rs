//! A producer over HTTP: enqueues jobs on a running server with the Rust client.
//!
//! ```sh
//! cargo run --release -- serve                                   # in one terminal
//! cargo run --release --example producer -- --jobs 100           # in another
//! ```
//!
//! Flags: `--url URL` (default `http://127.0.0.1:7700`, or `ERRAND_URL`), `--queue NAME` (default
//! `mail`), `--jobs N` (default 10). `ERRAND_API_KEY` is sent when set. The first job is enqueued alone
//! with a unique key (run it twice: the second run gets the existing job back); the rest go in one
//! atomic batch.

use errand_client::Client;
use errand_client::protocol::EnqueueJob;
use serde_json::json;

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
    let n: u64 = arg("--jobs").map(|s| s.parse()).transpose()?.unwrap_or(10);
    let mut builder = Client::builder(&url);
    if let Ok(key) = std::env::var("ERRAND_API_KEY") {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;

    // One job with a unique key: enqueueing it again returns the same job.
    let mut welcome = EnqueueJob::new("send_receipt", json!({"order": 1, "to": "a@example.com"}));
    welcome.unique_key = Some("receipt-1".into());
    let e = client.enqueue(&queue, &welcome).await?;
    println!(
        "{} {} {}",
        e.id,
        e.state,
        if e.created {
            "created"
        } else {
            "already there"
        }
    );

    if n > 1 {
        let jobs: Vec<EnqueueJob> = (2..=n)
            .map(|i| EnqueueJob::new("send_receipt", json!({"order": i, "to": "b@example.com"})))
            .collect();
        let batch = client.enqueue_batch(&queue, &jobs).await?;
        println!("enqueued a batch of {} on {queue}", batch.jobs.len());
    }
    Ok(())
}
