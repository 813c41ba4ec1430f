//! A worker process that dies holding jobs: with default options everywhere (the producer's, the
//! queue's and the worker SDK's), its jobs run elsewhere within the documented recovery time — the
//! lease the SDK's heartbeat promise asks for (2 × 10 s + 5 s after the last heartbeat), plus one
//! maintenance pass (1 s) and a fetch — not after their whole timeout (5 minutes).
//!
//! The worker that dies is this test binary run again as a child process (the test below, told by an
//! environment variable to be the worker), killed with SIGKILL: nothing of it says goodbye.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command};
use std::time::Duration;

use errand_client::protocol::{EnqueueJob, JobState};
use errand_client::{Client, JobContext, Worker};
use serde_json::{Value, json};
use support::{Running, start};

/// Set in the child: the server's URL.
const CHILD_URL: &str = "ERRAND_RECOVERY_TEST_WORKER_URL";
const JOBS: usize = 4;
/// The documented recovery time after the last heartbeat: the lease (2 × 10 s + 5 s), one maintenance
/// pass, and a fetch's answer.
const RECOVERY_MS: i64 = 25_000 + 1_000 + 1_000;

/// Kills the child when dropped, so that a failed assertion leaves no worker behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_jobs_run_elsewhere_within_the_recovery_time() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        // The child: the SDK's defaults, handlers that never return.
        let client = Client::builder(url).build().unwrap();
        Worker::builder(client)
            .queue("recover")
            .concurrency(JOBS)
            .worker_id("doomed")
            .handler("hold", |_ctx: JobContext, _p: Value| async move {
                std::future::pending::<()>().await;
                Ok(())
            })
            .build()
            .unwrap()
            .run()
            .await;
        return;
    }
    let (server, client) = start().await;
    let jobs: Vec<EnqueueJob> = (0..JOBS)
        .map(|n| EnqueueJob::new("hold", json!({ "n": n })))
        .collect();
    let ids: Vec<String> = client
        .enqueue_batch("recover", &jobs)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_dead_workers_jobs_run_elsewhere_within_the_recovery_time",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_URL, server.url())
        .spawn()
        .unwrap();
    let mut child = Killed(child);

    // Every job held by the child, under a lease of the promised length, not the timeout's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut held = 0;
        for id in &ids {
            let j = client.get(id).await.unwrap();
            if j.state == JobState::Active
                && j.lease.as_ref().is_some_and(|l| l.worker_id == "doomed")
            {
                held += 1;
            }
        }
        if held == JOBS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child worker never held all {JOBS} jobs ({held} held)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let killed_at = now_ms();
    for id in &ids {
        let j = client.get(id).await.unwrap();
        let lease = j.lease.unwrap();
        assert!(
            lease.expires_at <= killed_at + 25_000,
            "a default lease ends within 25 s of a heartbeat, not at the timeout: {} ms left",
            lease.expires_at - killed_at
        );
        assert!(
            lease.deadline_at >= killed_at + 200_000,
            "the timeout is 5 minutes"
        );
    }

    // Another worker, also with the SDK's defaults, finishes them.
    let rescuer = Worker::builder(client.clone())
        .queue("recover")
        .concurrency(JOBS)
        .worker_id("rescuer")
        .handler("hold", |_ctx: JobContext, _p: Value| async move { Ok(()) })
        .build()
        .unwrap();
    let running = Running::start(rescuer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let j = loop {
            let j = client.get(id).await.unwrap();
            if j.state == JobState::Completed {
                break j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} was not recovered within a minute: {:?}",
                j.state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let started = j.started_at.unwrap();
        assert!(
            started - killed_at <= RECOVERY_MS,
            "job {id} ran again {} ms after its worker died (documented: at most {RECOVERY_MS})",
            started - killed_at
        );
        assert_eq!(j.stalls, 1, "recovered as a stall");
        assert_eq!(j.attempts, 1, "a stall gives its attempt back");
    }
    running.stop().await;
}
