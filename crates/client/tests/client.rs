//! The client against a real server: each route, its errors, and what is retried.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use errand_client::protocol::{
    AckBatchRequest, AckItem, Backoff, BackoffKind, CompleteRequest, DeadFilter, EnqueueJob,
    FailRequest, FetchRequest, HeartbeatRequest, JobState, QueueConfig, ReleaseRequest, Whole,
};
use errand_client::{Client, DeadJobs, Error, ListJobs, RetryPolicy};
use serde_json::json;
use support::{start, wait_state};

fn fetch_now(queue: &str, max_jobs: u32) -> FetchRequest {
    FetchRequest {
        queues: vec![queue.to_string()],
        worker_id: "test-worker".into(),
        max_jobs,
        wait_ms: 0,
        heartbeat_ms: None,
        report: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_then_get() {
    let (server, client) = start().await;
    // A queue name with the punctuation names may have must survive the URL.
    let queue = "pay.v2:eu-1_x";
    let mut job = EnqueueJob::new("charge", json!({"amount": 12, "note": "a/b?c#d %"}));
    job.priority = Some(Whole(7));
    let out = client.enqueue(queue, &job).await.unwrap();
    assert!(out.created);
    assert_eq!(out.state, JobState::Waiting);

    let view = client.get(&out.id).await.unwrap();
    assert_eq!(view.queue, queue);
    assert_eq!(view.kind, "charge");
    assert_eq!(view.priority, 7);
    assert_eq!(view.state, JobState::Waiting);
    let payload: serde_json::Value = serde_json::from_str(view.payload.get()).unwrap();
    assert_eq!(payload, json!({"amount": 12, "note": "a/b?c#d %"}));

    let q = client.queue(queue).await.unwrap();
    assert_eq!((q.name.as_str(), q.counts.waiting), (queue, 1));
    let page = client
        .list_jobs(queue, &ListJobs::new(JobState::Waiting))
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, out.id);
    assert!(
        client
            .queues()
            .await
            .unwrap()
            .queues
            .iter()
            .any(|q| q.name == queue)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_key_returns_the_existing_job_and_batches_are_atomic() {
    let (server, client) = start().await;
    let mut job = EnqueueJob::new("k", json!(1));
    job.unique_key = Some("u-1".into());
    let first = client.enqueue("q", &job).await.unwrap();
    let again = client.enqueue("q", &job).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.id, again.id);

    let jobs = vec![
        EnqueueJob::new("k", json!(1)),
        EnqueueJob::new("k", json!(2)),
    ];
    let batch = client.enqueue_batch("q", &jobs).await.unwrap();
    assert_eq!(batch.jobs.len(), 2);
    assert!(batch.jobs.iter().all(|j| j.created));

    // One bad job: nothing is written, and the error names it.
    let mut bad = jobs.clone();
    bad[1].priority = Some(Whole(5000));
    let err = client.enqueue_batch("q", &bad).await.unwrap_err();
    assert!(err.is_invalid(), "{err}");
    match &err {
        Error::Api { status, field, .. } => {
            assert_eq!(*status, 400);
            assert_eq!(field.as_deref(), Some("jobs[1].priority"));
        }
        other => panic!("not an API error: {other:?}"),
    }
    assert_eq!(client.queue("q").await.unwrap().counts.waiting, 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed() {
    let (server, client) = start().await;
    let err = client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.status(), Some(404));
    let err = client.get("not-an-id").await.unwrap_err();
    assert!(err.is_invalid(), "{err}");
    let err = client.queue("never-used").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // Names that cannot be put in a URL are refused before sending.
    let err = client.queue("..").await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_repeated_for_the_same_lease_is_a_duplicate_success() {
    let (server, client) = start().await;
    let id = client
        .enqueue("q", &EnqueueJob::new("k", json!(null)))
        .await
        .unwrap()
        .id;
    let job = client
        .fetch(&fetch_now("q", 1))
        .await
        .unwrap()
        .jobs
        .remove(0);
    assert_eq!((job.id.as_str(), job.attempt), (id.as_str(), 1));
    let hb = client
        .heartbeat(
            &id,
            &HeartbeatRequest {
                lease_token: job.lease_token.clone(),
                progress: Some(json!({"done": 1})),
            },
        )
        .await
        .unwrap();
    assert!(!hb.cancel_requested);
    let logged = client
        .append_logs(
            &id,
            &errand_client::protocol::LogRequest {
                lease_token: job.lease_token.clone(),
                lines: vec!["one".into(), "two".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(logged.count, 2);
    let logs = client.job_logs(&id).await.unwrap().logs;
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1].line, "two");

    let req = CompleteRequest {
        lease_token: job.lease_token.clone(),
        result: Some(json!({"ok": true})),
    };
    let first = client.complete(&id, &req).await.unwrap();
    assert_eq!((first.state, first.duplicate), (JobState::Completed, false));
    // The retry a lost answer would cause.
    let second = client.complete(&id, &req).await.unwrap();
    assert_eq!(
        (second.state, second.duplicate),
        (JobState::Completed, true)
    );

    // Anything else under that lease is refused.
    let err = client
        .fail(
            &id,
            &FailRequest {
                lease_token: job.lease_token.clone(),
                message: "late".into(),
                retryable: true,
                retry_after_ms: None,
                stack: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    let err = client
        .heartbeat(
            &id,
            &HeartbeatRequest {
                lease_token: job.lease_token.clone(),
                progress: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    let view = client.get(&id).await.unwrap();
    assert_eq!(view.result.unwrap().get(), r#"{"ok":true}"#);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_gives_a_job_back_without_counting_the_attempt_and_ack_items_stand_alone() {
    let (server, client) = start().await;
    for i in 0..3 {
        client
            .enqueue("q", &EnqueueJob::new("k", json!(i)))
            .await
            .unwrap();
    }
    let jobs = client.fetch(&fetch_now("q", 3)).await.unwrap().jobs;
    assert_eq!(jobs.len(), 3);
    let released = client
        .release(
            &jobs[0].id,
            &ReleaseRequest {
                lease_token: jobs[0].lease_token.clone(),
                delay_ms: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(released.state, JobState::Waiting);
    let again = client.fetch(&fetch_now("q", 1)).await.unwrap().jobs;
    assert_eq!(
        (again[0].id.as_str(), again[0].attempt),
        (jobs[0].id.as_str(), 1)
    );

    let resp = client
        .ack_batch(&AckBatchRequest {
            acks: vec![
                AckItem::Complete {
                    id: jobs[1].id.clone(),
                    lease_token: jobs[1].lease_token.clone(),
                    result: None,
                },
                // A stale token: refused on its own.
                AckItem::Complete {
                    id: jobs[2].id.clone(),
                    lease_token: "stale".into(),
                    result: None,
                },
                AckItem::Release {
                    id: again[0].id.clone(),
                    lease_token: again[0].lease_token.clone(),
                    delay_ms: None,
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(resp.results.len(), 3);
    assert_eq!(
        resp.results[0].ok.as_ref().unwrap().state,
        JobState::Completed
    );
    assert_eq!(resp.results[1].error.as_ref().unwrap().code, "lease_lost");
    assert_eq!(
        resp.results[2].ok.as_ref().unwrap().state,
        JobState::Waiting
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_configured_paused_and_dead_letters_replayed_and_purged() {
    let (server, client) = start().await;
    let queue = "ops:q.1";
    let config = QueueConfig {
        priority: None,
        max_attempts: Some(Whole(1)),
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
    };
    let set = client.set_queue_config(queue, &config).await.unwrap();
    assert_eq!(set.max_attempts, Some(Whole(1)));
    assert_eq!(client.queue_config(queue).await.unwrap(), set);

    assert!(client.pause(queue).await.unwrap().paused);
    client
        .enqueue(queue, &EnqueueJob::new("a", json!(1)))
        .await
        .unwrap();
    assert!(
        client
            .fetch(&fetch_now(queue, 1))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(!client.resume(queue).await.unwrap().paused);

    // Two jobs die (one attempt each).
    client
        .enqueue(queue, &EnqueueJob::new("b", json!(2)))
        .await
        .unwrap();
    for job in client.fetch(&fetch_now(queue, 2)).await.unwrap().jobs {
        client
            .fail(
                &job.id,
                &FailRequest {
                    lease_token: job.lease_token,
                    message: format!("broke {}", job.kind),
                    retryable: true,
                    retry_after_ms: None,
                    stack: Some(format!("at handle_{} (worker.rs:9)", job.kind)),
                },
            )
            .await
            .unwrap();
    }
    let dead = client.dead_jobs(queue, &DeadJobs::default()).await.unwrap();
    assert_eq!(dead.jobs.len(), 2);
    let only_a = client
        .dead_jobs(
            queue,
            &DeadJobs {
                kind: Some("a".into()),
                ..DeadJobs::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(only_a.jobs.len(), 1);
    assert_eq!(only_a.jobs[0].errors[0].message, "broke a");
    assert_eq!(
        only_a.jobs[0].errors[0].stack.as_deref(),
        Some("at handle_a (worker.rs:9)"),
        "the stack is kept with its error"
    );

    let replayed = client
        .replay_dead(
            queue,
            &DeadFilter {
                kind: Some("a".into()),
                ..DeadFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(replayed.count, 1);
    wait_state(&client, &only_a.jobs[0].id, JobState::Waiting).await;
    let purged = client
        .purge_dead(
            queue,
            &DeadFilter {
                error_contains: Some("broke b".into()),
                ..DeadFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(purged.count, 1);
    assert!(
        client
            .dead_jobs(queue, &DeadJobs::default())
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // Cancel a waiting job; retry brings it back; promote needs a delayed one.
    let id = only_a.jobs[0].id.clone();
    assert_eq!(client.cancel(&id).await.unwrap().outcome, "cancelled");
    assert_eq!(client.retry(&id).await.unwrap().state, JobState::Waiting);
    let mut later = EnqueueJob::new("c", json!(3));
    later.delay_ms = Some(Whole(60_000));
    let later = client.enqueue(queue, &later).await.unwrap();
    assert_eq!(later.state, JobState::Delayed);
    assert_eq!(
        client.promote(&later.id).await.unwrap().state,
        JobState::Waiting
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = errand_server::Config::with_data_dir(dir.path());
    config.keys = vec![errand_server::auth::ApiKey::from_secret(
        "all",
        "s3cret",
        errand_server::auth::Scope::ALL.to_vec(),
        Vec::new(),
    )];
    let server = errand_testkit::TestServer::start_with(config).await;
    let anonymous = Client::new(server.url()).unwrap();
    assert_eq!(anonymous.health_live().await.unwrap().status, "ok");
    let err = anonymous.queues().await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    let keyed = Client::builder(server.url())
        .api_key("s3cret")
        .build()
        .unwrap();
    assert!(keyed.queues().await.unwrap().queues.is_empty());
    assert_eq!(keyed.health_ready().await.unwrap().status, "ok");
    assert!(!format!("{keyed:?}").contains("s3cret"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_reported_as_unavailable() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy {
            max_elapsed: Duration::from_millis(400),
            base: Duration::from_millis(50),
            cap: Duration::from_millis(100),
        })
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .enqueue("q", &EnqueueJob::new("k", json!(1)))
        .await
        .unwrap_err();
    assert!(err.is_connect() && err.is_unavailable(), "{err:?}");
    // Retried (a refused connection sent nothing) within the budget, then given up.
    let spent = started.elapsed();
    assert!(spent < Duration::from_secs(2), "{spent:?}");

    let no_retry = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    assert!(no_retry.get("x").await.unwrap_err().is_connect());
    assert!(started.elapsed() < Duration::from_millis(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_when_the_job_ends_or_when_its_time_is_up() {
    let (server, client) = start().await;
    let id = client
        .enqueue("awaited", &EnqueueJob::new("k", json!({})))
        .await
        .unwrap()
        .id;
    let early = client.wait(&id, Duration::from_millis(50)).await.unwrap();
    assert_eq!(early.state, JobState::Waiting);
    let waiter = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { client.wait(&id, Duration::from_secs(20)).await })
    };
    let cancelled = client.cancel(&id).await.unwrap();
    assert_eq!(cancelled.outcome, "cancelled");
    let ended = waiter.await.unwrap().unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_silences_flow_and_the_audit_report() {
    let (_server, client) = start().await;
    let rules = client.alert_rules().await.unwrap();
    assert!(
        rules
            .rules
            .iter()
            .any(|r| r.queue == "*" && r.rule == "stalled" && r.enabled)
    );
    let s = client
        .silence(&errand_protocol::SilenceRequest {
            queue: "*".into(),
            rule: "no_workers".into(),
            duration_ms: 60_000,
            reason: Some("deploying".into()),
        })
        .await
        .unwrap();
    assert_eq!(client.silences().await.unwrap().silences, vec![s.clone()]);
    assert_eq!(client.unsilence("*", "no_workers").await.unwrap().count, 1);
    assert!(client.silences().await.unwrap().silences.is_empty());
    let flow = client.queue_flow("nothing-yet").await.unwrap();
    assert_eq!((flow.active, flow.concurrency), (0, None));
    let report = client.audit_report().await.unwrap();
    assert_eq!(
        report.pass + report.warn + report.fail,
        report.checks.len() as u32
    );
}
