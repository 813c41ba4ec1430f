//! `errand-chaos worker`: a worker process that the harness kills, pauses and restarts.
//!
//! It speaks the HTTP API directly rather than through the SDK's `Worker`, so that every lease it is
//! handed and every answer to its acknowledgements is written to its log, in order, before it moves on.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use errand_client::protocol::{CompleteRequest, FailRequest, FetchRequest, FetchedJob, Whole};
use errand_client::{Client, Error, RetryPolicy};
use serde_json::json;

use crate::history::{Entry, Seen};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The servers' base URLs, comma-separated; the worker moves to the next on a transport error.
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    #[arg(long)]
    pub queue: String,
    /// Shown on the leases.
    #[arg(long)]
    pub id: String,
    /// The log to append to (created).
    #[arg(long)]
    pub log: PathBuf,
    /// Jobs per fetch.
    #[arg(long, default_value_t = 4)]
    pub batch: u32,
}

/// The work a job's payload asks for.
struct Task {
    work_ms: u64,
    fail_first: bool,
}

impl Task {
    fn of(job: &FetchedJob) -> Task {
        let p: serde_json::Value = serde_json::from_str(job.payload.get()).unwrap_or_default();
        Task {
            work_ms: p["work_ms"].as_u64().unwrap_or(0),
            fail_first: p["fail_first"].as_bool().unwrap_or(false),
        }
    }
}

pub async fn run(args: WorkerArgs) -> Result<(), String> {
    let clients = args
        .urls
        .iter()
        .map(|url| {
            // Acknowledgements are safe to repeat (a repeat of an accepted one answers `duplicate`), so
            // the client retries them through a short outage; a longer one leaves the outcome unknown.
            Client::builder(url)
                .request_timeout(Duration::from_secs(5))
                .retry(RetryPolicy {
                    max_elapsed: Duration::from_secs(3),
                    ..RetryPolicy::default()
                })
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut log = File::options()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("open {}: {e}", args.log.display()))?;
    let mut record = |seen: Seen, job: &FetchedJob| {
        let line = Entry {
            seen,
            job: job.id.clone(),
            attempt: job.attempt,
            lease: job.lease_expires_at,
            token: job.lease_token.clone(),
        }
        .to_string();
        // One write per line: a kill loses at most the line being written, which the checker skips.
        log.write_all(line.as_bytes())
            .map_err(|e| format!("write the log: {e}"))
    };

    let mut at = 0;
    loop {
        let client = &clients[at % clients.len()];
        let req = FetchRequest {
            queues: vec![args.queue.clone()],
            worker_id: args.id.clone(),
            max_jobs: args.batch,
            wait_ms: 500,
            heartbeat_ms: None,
            report: None,
        };
        let jobs = match client.fetch(&req).await {
            Ok(r) => r.jobs,
            Err(_) => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for job in &jobs {
            record(Seen::Claimed, job)?;
        }
        for job in &jobs {
            let task = Task::of(job);
            tokio::time::sleep(Duration::from_millis(task.work_ms)).await;
            record(Seen::Acking, job)?;
            let answer = if task.fail_first && job.attempt == 1 {
                let req = FailRequest {
                    lease_token: job.lease_token.clone(),
                    message: "the first attempt fails on purpose".into(),
                    retryable: true,
                    retry_after_ms: Some(Whole(0)),
                    stack: None,
                };
                client.fail(&job.id, &req).await.map(|_| Seen::Failed)
            } else {
                // The result names the lease, so the checker can tell which one the server recorded.
                let req = CompleteRequest {
                    lease_token: job.lease_token.clone(),
                    result: Some(json!({
                        "token": job.lease_token,
                        "attempt": job.attempt,
                        "lease": job.lease_expires_at,
                    })),
                };
                client
                    .complete(&job.id, &req)
                    .await
                    .map(|_| Seen::Completed)
            };
            let seen = match answer {
                Ok(seen) => seen,
                Err(e) if e.code() == Some("lease_lost") => Seen::Refused,
                // Anything else the server refuses is a bug of this harness or of the server.
                Err(e @ Error::Api { status, .. }) if status < 500 && status != 429 => {
                    return Err(format!("job {}: {e}", job.id));
                }
                Err(_) => {
                    at += 1;
                    Seen::Unknown
                }
            };
            record(seen, job)?;
        }
    }
}
