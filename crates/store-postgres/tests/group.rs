//! Group commit: concurrent enqueues share transactions, yet each request gets the answer it would have
//! got alone, and one request the database refuses fails alone.
//!
//! Each test returns early when there is no database (see `errand_store_postgres::testing`).

// Tests unwrap freely.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use errand_core::store::{Inserted, JobInsert, JobSpec, Store};
use errand_core::{Backoff, JobId, JobState};
use errand_testkit::fresh_store;
use serde_json::value::RawValue;
use tokio::sync::Barrier;

const QUEUE: &str = "group";

/// A job as the engine would resolve it; ids are ULIDs made from `n`, so they sort by `n`.
fn spec(n: u64, unique_key: Option<String>) -> JobSpec {
    JobSpec {
        id: format!("01J{n:023}").parse::<JobId>().unwrap(),
        queue: QUEUE.to_string(),
        kind: "k".to_string(),
        payload: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
        state: JobState::Waiting,
        priority: 0,
        run_at: 1_000,
        max_attempts: 3,
        backoff: Backoff::fixed(1_000),
        timeout_ms: 60_000,
        heartbeat_ms: None,
        lease_ms: 60_000,
        max_stalled: 1,
        unique_key,
        unique_finished_since: 0,
        group_key: None,
        concurrency_key: None,
        parent_id: None,
        parent_on_dead: Default::default(),
        pending_children: 0,
        max_waiting: None,
        expires_at: None,
        idempotency_key: format!("idem-{n}"),
        created_at: 1_000,
    }
}

/// Runs every request at once (released together by a barrier) and returns each one's answer.
async fn all_at_once(
    store: &Arc<dyn Store>,
    requests: Vec<JobSpec>,
) -> Vec<(JobId, errand_core::Result<Vec<Inserted>>)> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|spec| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let id = spec.id;
                (id, store.job_insert(JobInsert { jobs: vec![spec] }).await)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_of_shared_keys_make_one_job_per_key() {
    let Some((store, _schema)) = fresh_store().await else {
        return;
    };
    let pg = store.clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let requests: Vec<JobSpec> = (0..96)
        .map(|n| spec(n, Some(format!("key-{}", n % 8))))
        .collect();
    let answers = all_at_once(&store, requests).await;

    // Per key: exactly one request made a job; every other was told that job's id.
    let mut holder: HashMap<String, JobId> = HashMap::new();
    for (id, answer) in &answers {
        if answer.as_ref().unwrap()[0] == Inserted::New {
            let job = store.job_get(*id).await.unwrap().unwrap();
            let key = job.unique_key.clone().unwrap();
            assert!(
                holder.insert(key.clone(), *id).is_none(),
                "two jobs made for {key}"
            );
        }
    }
    assert_eq!(holder.len(), 8, "one job per key");
    for (id, answer) in &answers {
        if let Inserted::Existing {
            id: existing,
            state,
        } = &answer.as_ref().unwrap()[0]
        {
            assert_eq!(*state, JobState::Waiting);
            assert!(
                holder.values().any(|h| h == existing),
                "{id} told {existing}"
            );
            assert!(store.job_get(*id).await.unwrap().is_none(), "{id} stored");
        }
    }
    let stats = store.queue_stats(QUEUE, 2_000).await.unwrap();
    assert_eq!(stats.waiting, 8);
    // And they did share: 96 requests released together took far fewer transactions.
    let commits = pg.commit_stats();
    assert_eq!(commits.requests, 96);
    assert!(
        commits.transactions <= 48,
        "{} transactions for 96 concurrent requests",
        commits.transactions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_the_database_refuses_fails_alone() {
    let Some((store, _schema)) = fresh_store().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(store);
    let mut requests: Vec<JobSpec> = (0..64).map(|n| spec(n, None)).collect();
    // Beyond PostgreSQL's `integer`: the store refuses it, after the queue was registered and with the
    // transaction under way — what a shared transaction must not pass on to the other requests.
    requests[31].max_attempts = u32::MAX;
    let bad = requests[31].id;
    let answers = all_at_once(&store, requests).await;

    for (id, answer) in &answers {
        if *id == bad {
            assert!(answer.is_err(), "the bad request was accepted: {answer:?}");
            assert!(store.job_get(*id).await.unwrap().is_none());
        } else {
            assert_eq!(answer.as_ref().unwrap(), &vec![Inserted::New], "{id}");
            assert!(store.job_get(*id).await.unwrap().is_some(), "{id} lost");
        }
    }
    let stats = store.queue_stats(QUEUE, 2_000).await.unwrap();
    assert_eq!(stats.waiting, 63);
}
