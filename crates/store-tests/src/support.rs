//! Small helpers shared by the checks.

use errand_core::{Claim, Engine, Job, JobState, NewJob};
use serde_json::{Value, json};

/// A job on `queue` with payload `{"n": n}`.
pub(crate) fn job(queue: &str, n: u64) -> NewJob {
    NewJob::new(queue, "test.job", json!({ "n": n }))
}

/// Claims up to `limit` jobs from `queue` as `worker`.
pub(crate) async fn claim(engine: &Engine, queue: &str, worker: &str, limit: usize) -> Vec<Job> {
    engine
        .claim(Claim {
            queues: vec![queue.to_string()],
            worker_id: worker.to_string(),
            limit,
            heartbeat_ms: None,
        })
        .await
        .expect("claim")
}

/// Claims exactly one job from `queue`.
pub(crate) async fn claim_one(engine: &Engine, queue: &str) -> Job {
    let mut jobs = claim(engine, queue, "w1", 1).await;
    assert_eq!(jobs.len(), 1, "expected one job to claim in {queue}");
    jobs.remove(0)
}

/// The job's payload, parsed.
pub(crate) fn payload(job: &Job) -> Value {
    serde_json::from_str(job.payload.get()).expect("payload is JSON")
}

/// The job's state, read fresh.
pub(crate) async fn state(engine: &Engine, job: &Job) -> JobState {
    engine.get(job.id).await.expect("get").state
}

/// The token of an active job's lease.
pub(crate) fn token(job: &Job) -> String {
    job.lease
        .as_ref()
        .expect("an active job has a lease")
        .token
        .clone()
}
