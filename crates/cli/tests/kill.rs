//! The real `errand` binary, killed with SIGKILL under load, loses no acknowledged write.
//!
//! Producers enqueue and workers fetch and complete over HTTP against `errand serve`; each records what
//! the server acknowledged (a 2xx answer). The server is killed with SIGKILL mid-load and restarted on the
//! same data directory: every acknowledged enqueue must be there, and every acknowledged completion must
//! be `completed`. Producers and workers run until their first error, which must come after the kill
//! and be a lost connection: an error answer before it would have cut the load short without a word.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Running, assert_acknowledged, free_port, serve, wait_ready};

use errand_client::Client;
use errand_protocol::{CompleteRequest, EnqueueJob, FetchRequest};
use serde_json::json;

/// The end of a producer's or worker's load: only the kill may end it, by a lost connection.
fn load_ended(what: &str, e: &errand_client::Error, killed: &AtomicBool) {
    assert!(
        killed.load(Ordering::SeqCst),
        "{what} failed before the kill: {e}"
    );
    assert!(
        matches!(e, errand_client::Error::Transport(_)),
        "{what} after the kill: {e}, an answer, not a lost connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_enqueue_or_completion() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Running(serve(dir.path(), port));
    // No retries: an answer we count must be the server's own.
    let client = Client::builder(&url)
        .request_timeout(Duration::from_secs(5))
        .retry(errand_client::RetryPolicy::none())
        .build()
        .unwrap();
    wait_ready(&client).await;

    let enqueued = Arc::new(Mutex::new(Vec::<String>::new()));
    let completed = Arc::new(Mutex::new(Vec::<String>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..4 {
        let (c, log, killed) = (client.clone(), Arc::clone(&enqueued), Arc::clone(&killed));
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let job = EnqueueJob::new("k", json!({"p": p, "i": i}));
                match c.enqueue("crash", &job).await {
                    Ok(e) => log.lock().unwrap().push(e.id),
                    Err(e) => return load_ended(&format!("producer {p}"), &e, &killed),
                }
            }
        }));
    }
    for w in 0..4 {
        let (c, log, killed) = (client.clone(), Arc::clone(&completed), Arc::clone(&killed));
        tasks.push(tokio::spawn(async move {
            loop {
                let req = FetchRequest {
                    queues: vec!["crash".into()],
                    worker_id: format!("w{w}"),
                    max_jobs: 10,
                    wait_ms: 100,
                    heartbeat_ms: None,
                    report: None,
                };
                let jobs = match c.fetch(&req).await {
                    Ok(jobs) => jobs,
                    Err(e) => return load_ended(&format!("worker {w}'s fetch"), &e, &killed),
                };
                for j in jobs.jobs {
                    match c
                        .complete(
                            &j.id,
                            &CompleteRequest {
                                lease_token: j.lease_token.clone(),
                                result: None,
                            },
                        )
                        .await
                    {
                        Ok(_) => log.lock().unwrap().push(j.id),
                        Err(e) => {
                            return load_ended(&format!("worker {w}'s completion"), &e, &killed);
                        }
                    }
                }
            }
        }));
    }
    // Let the load build up, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while completed.lock().unwrap().len() < 1_000 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.store(true, Ordering::SeqCst);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    // Each task ends only through `load_ended`: a panic there (an error before the kill, or an error
    // answer) fails the test here.
    for t in tasks {
        t.await.unwrap();
    }
    let enqueued = enqueued.lock().unwrap().clone();
    let completed = completed.lock().unwrap().clone();
    assert!(!enqueued.is_empty() && !completed.is_empty());

    let mut server = Running(serve(dir.path(), port));
    wait_ready(&client).await;
    assert_acknowledged(&client, &enqueued, &completed).await;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    eprintln!(
        "checked {} acknowledged enqueues and {} completions after SIGKILL",
        enqueued.len(),
        completed.len()
    );
}
