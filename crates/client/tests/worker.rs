//! The worker SDK against a real server: typed handlers, failures, panics, timeouts, cancellation,
//! progress and graceful shutdown.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use errand_client::protocol::{
    Backoff, BackoffKind, EnqueueJob, FetchRequest, JobState, QueueConfig, Whole,
};
use errand_client::{Client, JobContext, JobError, Worker};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Running, eventually, start, start_with, wait_state};
use tokio::sync::mpsc;

/// Retries at once, `max_attempts` in all.
async fn quick_retries(client: &Client, queue: &str, max_attempts: u32) {
    client
        .set_queue_config(
            queue,
            &QueueConfig {
                priority: None,
                max_attempts: Some(Whole(max_attempts)),
                backoff: Some(Backoff {
                    kind: BackoffKind::Fixed,
                    delay_ms: 0,
                    jitter: 0.0,
                    max_ms: None,
                }),
                timeout_ms: None,
                heartbeat_ms: None,
                max_stalled: None,
                unique_window_ms: None,
                retention: None,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
}

fn worker(client: &Client, queue: &str) -> errand_client::WorkerBuilder {
    Worker::builder(client.clone())
        .queue(queue)
        .poll_wait(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(5))
}

async fn enqueue(client: &Client, queue: &str, job: EnqueueJob) -> String {
    client.enqueue(queue, &job).await.unwrap().id
}

#[derive(Debug, Deserialize)]
struct Numbered {
    n: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_handler_completes_200_jobs_exactly_once_each_at_concurrency_8() {
    let (server, client) = start().await;
    let jobs: Vec<EnqueueJob> = (0..200)
        .map(|n| EnqueueJob::new("double", json!({ "n": n })))
        .collect();
    let ids: Vec<String> = client
        .enqueue_batch("numbers", &jobs)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();

    let runs: Arc<Vec<AtomicU32>> = Arc::new((0..200).map(|_| AtomicU32::new(0)).collect());
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let w = {
        let (runs, active, most) = (runs.clone(), active.clone(), most.clone());
        worker(&client, "numbers")
            .concurrency(8)
            .prefetch(16)
            .handler("double", move |_ctx: JobContext, job: Numbered| {
                let (runs, active, most) = (runs.clone(), active.clone(), most.clone());
                async move {
                    runs[job.n].fetch_add(1, Ordering::SeqCst);
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(json!({ "double": job.n * 2 }))
                }
            })
            .build()
            .unwrap()
    };
    let running = Running::start(w);
    eventually("200 completed jobs", async || {
        let q = client.queue("numbers").await.unwrap();
        (q.counts.completed == 200).then_some(())
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.completed, 200, "{report:?}");
    assert_eq!(
        (
            report.failed,
            report.released,
            report.abandoned,
            report.lost
        ),
        (0, 0, 0, 0)
    );

    for (n, id) in ids.iter().enumerate() {
        let j = client.get(id).await.unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Completed, 1), "job {n}");
        let result: Value = serde_json::from_str(j.result.unwrap().get()).unwrap();
        assert_eq!(result, json!({ "double": n * 2 }));
        assert_eq!(runs[n].load(Ordering::SeqCst), 1, "job {n} ran once");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&most),
        "at most 8 at once, and more than 1: {most}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_is_retried_then_the_job_dies_with_its_message() {
    let (server, client) = start().await;
    quick_retries(&client, "errors", 2).await;
    let id = enqueue(&client, "errors", EnqueueJob::new("flaky", json!({"n": 1}))).await;
    let w = worker(&client, "errors")
        .handler("flaky", |ctx: JobContext, _: Value| async move {
            Err::<(), _>(JobError::new(format!(
                "upstream said no on attempt {}",
                ctx.attempt()
            )))
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let dead = wait_state(&client, &id, JobState::Dead).await;
    let report = running.stop().await;
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.dead_reason.as_deref(), Some("attempts_exhausted"));
    let messages: Vec<&str> = dead.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "upstream said no on attempt 1",
            "upstream said no on attempt 2"
        ]
    );
    assert!(dead.errors.iter().all(|e| e.kind == "error"));
    assert_eq!((report.failed, report.completed), (2, 0), "{report:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_kills_the_job_after_one_attempt() {
    let (server, client) = start().await;
    quick_retries(&client, "fatal", 5).await;
    let id = enqueue(&client, "fatal", EnqueueJob::new("charge", json!({"n": 1}))).await;
    let bad = enqueue(
        &client,
        "fatal",
        EnqueueJob::new("charge", json!("not an object")),
    )
    .await;
    let w = worker(&client, "fatal")
        .handler("charge", |_: JobContext, _: Numbered| async move {
            Err::<(), _>(JobError::fatal("card declined").with_stack("at charge (billing.rs:42)"))
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let dead = wait_state(&client, &id, JobState::Dead).await;
    let undecodable = wait_state(&client, &bad, JobState::Dead).await;
    running.stop().await;
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.dead_reason.as_deref(), Some("non_retryable"));
    assert_eq!(dead.errors[0].message, "card declined");
    assert_eq!(dead.errors[0].kind, "non_retryable");
    assert_eq!(
        dead.errors[0].stack.as_deref(),
        Some("at charge (billing.rs:42)")
    );
    // A payload that does not decode is not retried either.
    assert_eq!(undecodable.attempts, 1);
    assert!(
        undecodable.errors[0]
            .message
            .contains("the payload does not decode"),
        "{:?}",
        undecodable.errors
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_retryable_failure_with_the_panic_message() {
    let (server, client) = start().await;
    quick_retries(&client, "panics", 2).await;
    let id = enqueue(&client, "panics", EnqueueJob::new("boom", json!(null))).await;
    let w = worker(&client, "panics")
        .handler("boom", |ctx: JobContext, _: Value| async move {
            if ctx.attempt() == 1 {
                panic!("kaboom on attempt {}", ctx.attempt());
            }
            Ok::<_, JobError>("fine the second time")
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let done = wait_state(&client, &id, JobState::Completed).await;
    let report = running.stop().await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].message, "panicked: kaboom on attempt 1");
    assert_eq!(done.result.unwrap().get(), r#""fine the second time""#);
    assert_eq!((report.failed, report.completed), (1, 1), "{report:?}");
    server.shutdown().await;
}

/// Sets a flag when dropped: tells a handler's future was dropped, not left running.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_past_its_timeout_is_stopped_and_the_attempt_fails() {
    // No maintenance pass during the test: the server does not time the attempt out itself (nor take
    // the lease back), so what stops the handler is the worker's own timeout.
    let (server, client, _dir) = start_with(|c| c.maintenance_interval_ms = 3_600_000).await;
    let mut job = EnqueueJob::new("slow", json!(null));
    job.timeout_ms = Some(Whole(300));
    job.max_attempts = Some(Whole(1));
    let id = enqueue(&client, "slow", job).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let w = {
        let (dropped, finished) = (dropped.clone(), finished.clone());
        worker(&client, "slow")
            .handler("slow", move |_: JobContext, _: Value| {
                let guard = DropFlag(dropped.clone());
                let finished = finished.clone();
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, JobError>(())
                }
            })
            .build()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let running = Running::start(w);
    let dead = wait_state(&client, &id, JobState::Dead).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually("the handler's future to be dropped", async || {
        dropped.load(Ordering::SeqCst).then_some(())
    })
    .await;
    assert!(!finished.load(Ordering::SeqCst));
    let report = running.stop().await;
    assert_eq!(dead.errors.len(), 1);
    assert_eq!(dead.errors[0].message, "timed out after 300 ms");
    assert_eq!(report.failed, 1, "{report:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_requested_while_running_reaches_the_handler_by_heartbeat() {
    let (server, client) = start().await;
    let mut job = EnqueueJob::new("long", json!(null));
    job.heartbeat_ms = Some(Whole(200));
    let id = enqueue(&client, "cancel", job).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let w = {
        let saw_cancel = saw_cancel.clone();
        worker(&client, "cancel")
            .handler("long", move |ctx: JobContext, _: Value| {
                let (started_tx, saw_cancel) = (started_tx.clone(), saw_cancel.clone());
                async move {
                    let _ = started_tx.send(());
                    tokio::select! {
                        _ = ctx.cancelled() => {
                            saw_cancel.store(ctx.is_cancelled(), Ordering::SeqCst);
                            Err(JobError::new("stopped: cancel requested"))
                        }
                        _ = tokio::time::sleep(Duration::from_secs(10)) => Ok(()),
                    }
                }
            })
            .build()
            .unwrap()
    };
    let running = Running::start(w);
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .unwrap()
        .unwrap();
    let answer = client.cancel(&id).await.unwrap();
    assert_eq!(answer.outcome, "requested");
    let cancelled = wait_state(&client, &id, JobState::Cancelled).await;
    running.stop().await;
    assert!(saw_cancel.load(Ordering::SeqCst));
    assert_eq!(cancelled.attempts, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_a_cancel_is_stopped_and_the_job_ends_cancelled() {
    let (server, client) = start().await;
    let mut job = EnqueueJob::new("stubborn", json!(null));
    job.heartbeat_ms = Some(Whole(200));
    let id = enqueue(&client, "cancel-hard", job).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    // Set when the handler's future is dropped: the SDK stopped it.
    let dropped = Arc::new(AtomicBool::new(false));
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let w = {
        let dropped = dropped.clone();
        worker(&client, "cancel-hard")
            .cancel_grace(Duration::from_millis(100))
            .handler("stubborn", move |ctx: JobContext, _: Value| {
                let (started_tx, guard) = (started_tx.clone(), OnDrop(dropped.clone()));
                async move {
                    let _guard = guard;
                    ctx.log("about to wait forever");
                    let _ = started_tx.send(());
                    // Never looks at the cancel request.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, JobError>(())
                }
            })
            .build()
            .unwrap()
    };
    let running = Running::start(w);
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.cancel(&id).await.unwrap().outcome, "requested");
    let cancelled = wait_state(&client, &id, JobState::Cancelled).await;
    assert!(dropped.load(Ordering::SeqCst), "the handler was stopped");
    assert_eq!(cancelled.attempts, 1);
    let report = running.stop().await;
    assert_eq!((report.cancelled, report.failed), (1, 0));
    let logs = client.job_logs(&id).await.unwrap().logs;
    assert_eq!(
        logs.len(),
        1,
        "what it logged before it was stopped is kept"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_a_handler_logs_are_on_the_job_once_it_completed() {
    let (server, client) = start().await;
    let id = enqueue(&client, "logs", EnqueueJob::new("chatty", json!(3))).await;
    let w = worker(&client, "logs")
        .handler("chatty", |ctx: JobContext, n: u32| async move {
            for i in 0..n {
                ctx.log(format!("step {i}"));
            }
            Ok::<_, JobError>(())
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    wait_state(&client, &id, JobState::Completed).await;
    running.stop().await;
    let logs = client.job_logs(&id).await.unwrap().logs;
    let lines: Vec<&str> = logs.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(
        lines,
        ["step 0", "step 1", "step 2"],
        "sent before the completion"
    );
    assert!(logs.iter().all(|l| l.attempt == 1));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snoozed_job_runs_again_after_its_delay_without_using_an_attempt() {
    let (server, client) = start().await;
    let mut job = EnqueueJob::new("rate_limited", json!(null));
    job.max_attempts = Some(Whole(1));
    let id = enqueue(&client, "snooze", job).await;
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let w = {
        let calls = calls.clone();
        worker(&client, "snooze")
            .handler("rate_limited", move |_: JobContext, _: Value| {
                let calls = calls.clone();
                async move {
                    // The provider says 429 twice, then takes it.
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        return Err(JobError::snooze(Duration::from_millis(200)));
                    }
                    Ok(())
                }
            })
            .build()
            .unwrap()
    };
    let running = Running::start(w);
    let done = wait_state(&client, &id, JobState::Completed).await;
    let report = running.stop().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        done.attempts, 1,
        "only the run that completed used an attempt"
    );
    assert!(done.errors.is_empty());
    assert_eq!(
        (
            report.completed,
            report.failed,
            report.released,
            report.snoozed
        ),
        (1, 0, 0, 2)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reported_before_a_failure_is_there_for_the_next_attempt() {
    let (server, client) = start().await;
    quick_retries(&client, "resume", 2).await;
    let id = enqueue(&client, "resume", EnqueueJob::new("steps", json!(null))).await;
    let w = worker(&client, "resume")
        .handler("steps", |ctx: JobContext, _: Value| async move {
            match ctx.previous_progress() {
                None => {
                    ctx.progress(json!({"step": 3}));
                    Err(JobError::new("interrupted at step 3"))
                }
                Some(p) => Ok(json!({"resumed_from": serde_json::from_str::<Value>(p.get())?})),
            }
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let done = wait_state(&client, &id, JobState::Completed).await;
    running.stop().await;
    let result: Value = serde_json::from_str(done.result.unwrap().get()).unwrap();
    assert_eq!(result, json!({"resumed_from": {"step": 3}}));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_an_unknown_kind_fails_retryably_saying_why() {
    let (server, client) = start().await;
    quick_retries(&client, "unknown", 2).await;
    let id = enqueue(&client, "unknown", EnqueueJob::new("mystery", json!(null))).await;
    let w = worker(&client, "unknown")
        .handler("known", |_: JobContext, _: Value| async move {
            Ok::<_, JobError>(())
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let dead = wait_state(&client, &id, JobState::Dead).await;
    running.stop().await;
    assert_eq!(dead.attempts, 2, "retryable: both attempts were used");
    assert!(
        dead.errors[0]
            .message
            .starts_with("no handler for kind \"mystery\""),
        "{:?}",
        dead.errors
    );
    server.shutdown().await;
}

/// Everything logged in this test binary from the first call on (one global subscriber: the worker's
/// tasks run on any runtime thread, out of reach of a thread-local one).
fn captured_log() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let make_writer = move || Capture(Arc::clone(&sink));
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .with_writer(make_writer)
                .finish(),
        )
        .unwrap();
        buf
    })
    .clone()
}

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_handler_is_logged_as_an_error_naming_the_kinds_handled() {
    let log = captured_log();
    let (server, client) = start().await;
    quick_retries(&client, "digests", 1).await;
    let id = enqueue(&client, "digests", EnqueueJob::new("digest", json!(null))).await;
    let w = worker(&client, "digests")
        .handler("send_receipt", |_: JobContext, _: Value| async move {
            Ok::<_, JobError>(())
        })
        .handler("refund", |_: JobContext, _: Value| async move {
            Ok::<_, JobError>(())
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let dead = wait_state(&client, &id, JobState::Dead).await;
    running.stop().await;
    // What the server was told, and so what the dead job's page shows: the kind missing and the
    // kinds this worker does handle.
    let message = &dead.errors[0].message;
    assert!(
        message.starts_with("no handler for kind \"digest\" on worker ")
            && message.ends_with("(it handles \"refund\", \"send_receipt\")"),
        "{message}"
    );
    // What the worker's operator sees: one error line with the job, its kind and the kinds handled.
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("nothing logged about job {id}:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("no handler"), "{line}");
    assert!(line.contains("kind=digest"), "{line}");
    assert!(line.contains("queue=digests"), "{line}");
    assert!(
        line.contains(r#"handled="refund", "send_receipt""#),
        "{line}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_the_jobs_fetched_but_not_started() {
    let (server, client) = start().await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(enqueue(&client, "drain", EnqueueJob::new("step", json!({ "n": n }))).await);
    }
    let (started_tx, mut started) = mpsc::unbounded_channel::<usize>();
    let w = worker(&client, "drain")
        .concurrency(1)
        .prefetch(4)
        .handler("step", move |_: JobContext, job: Numbered| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(job.n);
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, JobError>(())
            }
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    // The worker holds all four (one running, three waiting in its buffer)...
    eventually("the worker to hold 4 jobs", async || {
        let q = client.queue("drain").await.unwrap();
        (q.counts.active == 4).then_some(())
    })
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .unwrap()
        .unwrap();
    // ...when it is told to stop: the running one finishes, the other three go back.
    let report = running.stop().await;
    assert_eq!(
        (
            report.completed,
            report.released,
            report.abandoned,
            report.lost
        ),
        (1, 3, 0, 0),
        "{report:?}"
    );
    assert!(started.try_recv().is_err(), "no other job was started");
    wait_state(&client, &ids[first], JobState::Completed).await;

    // Due at once, for anyone, with the attempt not counted.
    let jobs = client
        .fetch(&FetchRequest {
            queues: vec!["drain".into()],
            worker_id: "second".into(),
            max_jobs: 10,
            wait_ms: 0,
            heartbeat_ms: None,
            report: None,
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.attempt == 1), "{jobs:?}");
    assert!(jobs.iter().all(|j| j.id != ids[first]));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_at_the_shutdown_deadline_is_abandoned_and_released() {
    let (server, client) = start().await;
    let id = enqueue(&client, "stuck", EnqueueJob::new("forever", json!(null))).await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let w = worker(&client, "stuck")
        .shutdown_timeout(Duration::from_millis(200))
        .handler("forever", move |_: JobContext, _: Value| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
                Ok::<_, JobError>(())
            }
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .unwrap()
        .unwrap();
    let report = running.stop().await;
    assert_eq!((report.abandoned, report.completed), (1, 0), "{report:?}");
    let j = client.get(&id).await.unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Waiting, 0));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_parent_runs_after_its_children_and_sums_their_results() {
    let (server, client) = start().await;
    let child = |n: usize| errand_protocol::FlowJob {
        queue: "parts".into(),
        job: EnqueueJob::new("square", json!({ "n": n })),
    };
    let flow = client
        .enqueue_flow(&errand_protocol::FlowRequest {
            parent: errand_protocol::FlowJob {
                queue: "totals".into(),
                job: EnqueueJob::new("sum", json!({})),
            },
            children: (1..=4).map(child).collect(),
        })
        .await
        .unwrap();
    assert_eq!(flow.parent.state, JobState::WaitingChildren);
    let w = Worker::builder(client.clone())
        .queue("parts")
        .queue("totals")
        .poll_wait(Duration::from_millis(500))
        .handler("square", |_ctx: JobContext, job: Numbered| async move {
            Ok(json!({ "square": job.n * job.n }))
        })
        .handler("sum", |ctx: JobContext, _: serde_json::Value| async move {
            let children = ctx
                .children()
                .await
                .map_err(|e| JobError::new(e.to_string()))?;
            let total: u64 = children
                .iter()
                .map(|c| {
                    let r: serde_json::Value =
                        serde_json::from_str(c.result.as_ref().unwrap().get()).unwrap();
                    r["square"].as_u64().unwrap()
                })
                .sum();
            Ok(json!({ "total": total }))
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let parent = eventually("the parent completed", async || {
        let j = client.get(&flow.parent.id).await.unwrap();
        (j.state == JobState::Completed).then_some(j)
    })
    .await;
    running.stop().await;
    assert_eq!(parent.result.unwrap().get(), r#"{"total":30}"#);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_tells_the_server_its_sdk_version_concurrency_and_shutdown() {
    let (_server, client) = start().await;
    let w = worker(&client, "told")
        .concurrency(4)
        .handler("k", |_: JobContext, _: serde_json::Value| async {
            Ok::<_, JobError>(())
        })
        .build()
        .unwrap();
    let id = w.worker_id().to_string();
    let running = Running::start(w);
    let report = eventually("the worker's report", async || {
        let ws = client.workers().await.unwrap();
        ws.workers
            .into_iter()
            .find(|w| w.id == id)
            .and_then(|w| w.report)
    })
    .await;
    assert_eq!(report.sdk, errand_client::worker::SDK_NAME);
    assert_eq!(report.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(report.concurrency, 4);
    // Run until a future of the caller's: the worker cannot know it is SIGTERM, and says so.
    assert!(!report.drains_on_sigterm);
    running.stop().await;

    // Unless the program says its future is SIGTERM.
    let w = worker(&client, "told")
        .concurrency(2)
        .run_until_ends_on_sigterm(true)
        .handler("k", |_: JobContext, _: serde_json::Value| async {
            Ok::<_, JobError>(())
        })
        .build()
        .unwrap();
    let id = w.worker_id().to_string();
    let running = Running::start(w);
    let report = eventually("the second worker's report", async || {
        let ws = client.workers().await.unwrap();
        ws.workers
            .into_iter()
            .find(|w| w.id == id)
            .and_then(|w| w.report)
    })
    .await;
    assert!(report.drains_on_sigterm);
    running.stop().await;
}
