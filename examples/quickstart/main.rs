//! Quickstart: Errand in-process, on the embedded SQLite store, durable (synchronous=FULL).
//!
//! Run:  cargo run --release --example quickstart
//!       cargo run --release --example quickstart -- --jobs 100000 --batch 1000 --claim 100 --workers 8
//!
//! It enqueues `--jobs` jobs in batches of `--batch`, then `--workers` worker loops each claim up to
//! `--claim` jobs at a time, run a handler, and acknowledge the whole claim in one call. It prints the
//! rate of each phase and exits 0 only if every job completed exactly once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use errand_core::{Ack, Claim, Engine, EngineConfig, NewJob, SystemClock};
use errand_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

struct Args {
    jobs: u64,
    batch: u64,
    claim: usize,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        jobs: 10_000,
        batch: 1_000,
        claim: 100,
        workers: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--jobs" => args.jobs = n,
            "--batch" => args.batch = n.max(1),
            "--claim" => args.claim = n.max(1) as usize,
            "--workers" => args.workers = n.max(1) as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// The job handler: here it only reads the payload. A real one would send the e-mail.
fn handle(payload: &serde_json::value::RawValue) -> serde_json::Value {
    json!({ "bytes": payload.get().len() })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("errand.db"), SqliteOptions::default())?;
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    );

    let started = Instant::now();
    let mut n = 0;
    while n < args.jobs {
        let size = args.batch.min(args.jobs - n);
        let batch = (n..n + size)
            .map(|i| NewJob::new("emails", "send_welcome", json!({ "user": i })))
            .collect();
        engine.enqueue_many(batch).await?;
        n += size;
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    println!(
        "enqueued  {} jobs in {:.3} s: {:.0} jobs/s (batches of {})",
        args.jobs,
        enqueue_s,
        args.jobs as f64 / enqueue_s,
        args.batch
    );

    let done: Arc<Mutex<HashSet<errand_core::JobId>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.workers)
        .map(|w| {
            let engine = engine.clone();
            let done = done.clone();
            let limit = args.claim;
            tokio::spawn(async move {
                loop {
                    let jobs = engine
                        .claim(Claim {
                            queues: vec!["emails".into()],
                            worker_id: format!("quickstart-{w}"),
                            limit,
                            heartbeat_ms: None,
                        })
                        .await?;
                    if jobs.is_empty() {
                        return Ok::<_, errand_core::Error>(());
                    }
                    let acks = jobs
                        .iter()
                        .map(|j| Ack::Complete {
                            id: j.id,
                            token: j
                                .lease
                                .as_ref()
                                .map(|l| l.token.clone())
                                .unwrap_or_default(),
                            result: Some(handle(&j.payload)),
                        })
                        .collect();
                    for r in engine.ack(acks).await? {
                        r?;
                    }
                    let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
                    for j in &jobs {
                        if !done.insert(j.id) {
                            return Err(errand_core::Error::Conflict(format!(
                                "{} ran twice",
                                j.id
                            )));
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let work_s = started.elapsed().as_secs_f64();
    println!(
        "processed {} jobs in {:.3} s: {:.0} jobs/s ({} workers claiming and acknowledging up to {} at a time)",
        args.jobs,
        work_s,
        args.jobs as f64 / work_s,
        args.workers,
        args.claim
    );

    let stats = engine.stats("emails").await?;
    let ran = done.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
    if stats.completed != args.jobs || ran != args.jobs {
        return Err(format!(
            "expected {} completed, found {} completed and {} run",
            args.jobs, stats.completed, ran
        )
        .into());
    }
    println!("every job completed exactly once");
    Ok(())
}
