//! Two `errand serve` processes on one PostgreSQL database: jobs enqueued on one are fetched on the
//! other, four workers across both drain 20,000 jobs each completed exactly once, and a node killed with
//! SIGKILL mid-drain leaves its leased jobs to be recovered by the other.
//!
//! The database comes from `errand_store_postgres::testing::test_url` (ERRAND_TEST_POSTGRES_URL, the
//! local server, or a throwaway cluster); each test uses a schema of its own.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, wait_ready};

use errand_client::protocol::{EnqueueJob, FetchRequest, QueueConfig, Retention};
use errand_client::{Client, JobContext, RetryPolicy, ShutdownReport, Worker};
use serde_json::json;
use tokio::sync::oneshot;

struct Node {
    child: Child,
    client: Client,
}

async fn node(url: &str, schema: &str) -> Node {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", url, "--pg-schema", schema, "--pg-pool-size", "8"])
        .args(["--maintenance-interval-ms", "200"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("ERRAND_API_KEY")
        .env("ERRAND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy {
            max_elapsed: Duration::from_secs(2),
            ..Default::default()
        })
        .build()
        .unwrap();
    wait_ready(&client).await;
    Node { child, client }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn schema() -> String {
    format!("errand_mn_{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish()
}

fn drop_schema(schema: &str) {
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
        .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A worker on `client` counting each job it runs; it stops when the sender is dropped or fired.
fn worker(
    client: Client,
    runs: Arc<Mutex<HashMap<String, u32>>>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<ShutdownReport>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let w = Worker::builder(client)
        .queue("mn")
        .concurrency(8)
        .prefetch(64)
        .poll_wait(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(5))
        .handler("k", move |ctx: JobContext, _p: serde_json::Value| {
            let runs = Arc::clone(&runs);
            async move {
                *runs
                    .lock()
                    .unwrap()
                    .entry(ctx.id().to_string())
                    .or_default() += 1;
                Ok(serde_json::Value::Null)
            }
        })
        .build()
        .unwrap();
    let task = tokio::spawn(w.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn enqueue(client: &Client, n: usize, heartbeat_ms: Option<u64>) {
    // Keep every completed job, so that the count can be checked (retention keeps 10,000 by default).
    let keep_all = QueueConfig {
        retention: Some(Retention::KEEP_ALL),
        ..Default::default()
    };
    client.set_queue_config("mn", &keep_all).await.unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let jobs: Vec<EnqueueJob> = chunk
            .iter()
            .map(|i| {
                let mut j = EnqueueJob::new("k", json!({ "i": i }));
                j.heartbeat_ms = heartbeat_ms;
                j
            })
            .collect();
        client.enqueue_batch("mn", &jobs).await.unwrap();
    }
}

async fn wait_completed(client: &Client, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let q = client.queue("mn").await.unwrap();
        if q.counts.completed == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completed: {q:?}",
            q.counts.completed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_on_one_node_wakes_a_fetch_waiting_on_the_other() {
    let Some(url) = errand_store_postgres::testing::test_url().await else {
        return;
    };
    let schema = schema();
    let a = node(&url, &schema).await;
    let b = node(&url, &schema).await;
    let waiting = {
        let b = b.client.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let req = FetchRequest {
                queues: vec!["mn".into()],
                worker_id: "w".into(),
                max_jobs: 1,
                wait_ms: 20_000,
                heartbeat_ms: None,
            };
            (b.fetch(&req).await.unwrap(), t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = a
        .client
        .enqueue("mn", &EnqueueJob::new("k", json!(1)))
        .await
        .unwrap();
    let (got, elapsed) = waiting.await.unwrap();
    assert_eq!(got.jobs[0].id, e.id, "node B handed out node A's job");
    assert!(
        elapsed < Duration::from_secs(5),
        "woken through the database: {elapsed:?}"
    );
    drop((a, b));
    drop_schema(&schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_on_two_nodes_drain_20000_jobs_each_exactly_once() {
    let Some(url) = errand_store_postgres::testing::test_url().await else {
        return;
    };
    let schema = schema();
    let a = node(&url, &schema).await;
    let b = node(&url, &schema).await;
    enqueue(&a.client, 20_000, None).await;
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let workers: Vec<_> = [&a, &a, &b, &b]
        .iter()
        .map(|n| worker(n.client.clone(), Arc::clone(&runs)))
        .collect();
    wait_completed(&b.client, 20_000, Duration::from_secs(180)).await;
    for (stop, task) in workers {
        let _ = stop.send(());
        task.await.unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 20_000, "every job ran");
    assert!(runs.values().all(|&n| n == 1), "no job ran twice");
    let q = a.client.queue("mn").await.unwrap();
    assert_eq!(
        (q.counts.completed, q.counts.waiting, q.counts.active),
        (20_000, 0, 0)
    );
    drop((a, b));
    drop_schema(&schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_drain_leaves_its_leased_jobs_to_the_other() {
    let Some(url) = errand_store_postgres::testing::test_url().await else {
        return;
    };
    let schema = schema();
    let mut a = node(&url, &schema).await;
    let b = node(&url, &schema).await;
    // Heartbeats every 200 ms: a lease lasts 2 intervals plus 5 s of grace.
    enqueue(&b.client, 3_000, Some(200)).await;
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let on_a = worker(a.client.clone(), Arc::clone(&runs));
    // Let node A's worker lease a good part of the queue, then kill node A.
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs.lock().unwrap().len() < 500 {
        assert!(Instant::now() < deadline, "node A's worker never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let leased_by_a = b.client.queue("mn").await.unwrap().counts.active;
    let on_b = worker(b.client.clone(), Arc::clone(&runs));
    // Node B takes over maintenance, recovers A's expired leases, and its worker finishes everything.
    wait_completed(&b.client, 3_000, Duration::from_secs(60)).await;
    let _ = on_b.0.send(());
    on_b.1.await.unwrap();
    let _ = on_a.0.send(());
    on_a.1.await.unwrap();
    let q = b.client.queue("mn").await.unwrap();
    assert_eq!(
        (q.counts.completed, q.counts.active, q.counts.waiting),
        (3_000, 0, 0)
    );
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 3_000, "every job ran");
    let twice = runs.values().filter(|&&n| n > 1).count();
    eprintln!(
        "node A held {leased_by_a} leases when killed; {twice} jobs ran twice (at-least-once)"
    );
    drop(b);
    drop_schema(&schema);
}
