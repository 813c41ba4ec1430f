//! Drain rate over HTTP: enqueues N no-op jobs on a running server (not timed), then SDK workers work
//! them; prints jobs/s from the first fetch until the server reports the last completion.
//!
//! ```sh
//! cargo run --release -- serve --store postgres://postgres@127.0.0.1:5432/postgres   # or the default store
//! cargo run --release --example drain -- --jobs 100000 --workers 4 --concurrency 32
//! ```
//!
//! Flags: `--url` (default `http://127.0.0.1:7700`), `--queue` (default `drain-<random>`, a fresh
//! queue), `--jobs` (default 100000), `--workers` (SDK workers, default 4), `--concurrency` (per worker,
//! default 32). `errand bench` will replace this with more scenarios.

use std::time::{Duration, Instant};

use errand_client::protocol::{EnqueueJob, QueueConfig, Retention};
use errand_client::{Client, JobContext, Worker};
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = arg("--url").unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let n: u64 = arg("--jobs")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let workers: usize = arg("--workers")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4);
    let concurrency: usize = arg("--concurrency")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(32);
    let queue = arg("--queue").unwrap_or_else(|| format!("drain-{}", std::process::id()));
    let client = Client::builder(&url).build()?;

    // Keep every completed job, so that the server's completed count reaches N (retention keeps 10,000
    // by default).
    let keep_all = QueueConfig {
        retention: Some(Retention::KEEP_ALL),
        ..Default::default()
    };
    client.set_queue_config(&queue, &keep_all).await?;

    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let b = left.min(1_000);
        let jobs: Vec<EnqueueJob> = (0..b).map(|i| EnqueueJob::new("noop", json!(i))).collect();
        client.enqueue_batch(&queue, &jobs).await?;
        left -= b;
    }
    println!(
        "enqueued {n} jobs in {:.2} s (not part of the drain figure)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let w = Worker::builder(client.clone())
            .queue(queue.clone())
            .concurrency(concurrency)
            .handler("noop", |_ctx: JobContext, _p: Value| async {
                Ok(Value::Null)
            })
            .build()?;
        tasks.push(tokio::spawn(w.run_until(async move {
            let _ = stopped.await;
        })));
        stops.push(stop);
    }
    loop {
        let q = client.queue(&queue).await?;
        if q.counts.completed >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "drained {n} jobs in {secs:.2} s: {:.0} jobs/s ({workers} workers × concurrency {concurrency})",
        n as f64 / secs
    );
    Ok(())
}
