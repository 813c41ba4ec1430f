//! Two `errand serve` processes on one PostgreSQL database: jobs enqueued on one are fetched on the
//! other, four workers across both drain 20,000 jobs each completed exactly once, and a node killed with
//! SIGKILL mid-drain leaves its leased jobs to be recovered by the other.
//!
//! The database comes from `errand_testkit::test_url` (ERRAND_TEST_POSTGRES_URL, the
//! local server, or a throwaway cluster); each test uses a schema of its own.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{free_port, wait_ready};

use errand_client::protocol::{EnqueueJob, FetchRequest, JobState, QueueConfig, Retention, Whole};
use errand_client::{Client, JobContext, RetryPolicy, ShutdownReport, Worker};
use serde_json::json;
use tokio::sync::oneshot;

struct Node {
    child: Child,
    client: Client,
    addr: std::net::SocketAddr,
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
    Node {
        child,
        client,
        addr: ([127, 0, 0, 1], port).into(),
    }
}

/// The node's `errand_fetches_waiting`: long-poll fetches parked on it now.
fn fetches_waiting(addr: std::net::SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("errand_fetches_waiting "))
        .unwrap_or_else(|| panic!("no errand_fetches_waiting in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until `n` fetches are parked on the node at `addr`, or fails the test after 30 s.
async fn wait_fetches_parked(addr: std::net::SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parked = fetches_waiting(addr);
        if parked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{parked} of {n} fetches parked after 30 s"
        );
        // A poll interval: the loop ends on what it reads.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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

/// A worker named `id` on `client` counting each job it runs; it stops when the sender is dropped or
/// fired. With `hold`, once `hold.0` jobs ran in all, each job it starts is noted in `hold.1` and never
/// ends: its lease stays held until the worker is gone.
fn worker(
    client: Client,
    id: &str,
    runs: Arc<Mutex<HashMap<String, u32>>>,
    hold: Option<(usize, Arc<Mutex<Vec<String>>>)>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<ShutdownReport>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let w = Worker::builder(client)
        .worker_id(id)
        .queue("mn")
        .concurrency(8)
        .prefetch(64)
        .poll_wait(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(5))
        .handler("k", move |ctx: JobContext, _p: serde_json::Value| {
            let runs = Arc::clone(&runs);
            let hold = hold.clone();
            async move {
                let ran = {
                    let mut runs = runs.lock().unwrap();
                    *runs.entry(ctx.id().to_string()).or_default() += 1;
                    runs.len()
                };
                if let Some((after, held)) = hold
                    && ran > after
                {
                    held.lock().unwrap().push(ctx.id().to_string());
                    std::future::pending::<()>().await;
                }
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
                j.heartbeat_ms = heartbeat_ms.map(Whole);
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
    let Some(url) = errand_testkit::test_url().await else {
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
                report: None,
            };
            (b.fetch(&req).await.unwrap(), t.elapsed())
        })
    };
    // Once B's fetch is parked, only a wake through the database can hand it A's job.
    wait_fetches_parked(b.addr, 1).await;
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
    let Some(url) = errand_testkit::test_url().await else {
        return;
    };
    let schema = schema();
    let a = node(&url, &schema).await;
    let b = node(&url, &schema).await;
    enqueue(&a.client, 20_000, None).await;
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let workers: Vec<_> = [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")]
        .iter()
        .map(|(n, id)| worker(n.client.clone(), id, Arc::clone(&runs), None))
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
    let Some(url) = errand_testkit::test_url().await else {
        return;
    };
    let schema = schema();
    let mut a = node(&url, &schema).await;
    let b = node(&url, &schema).await;
    // Heartbeats every 200 ms: a lease lasts 2 intervals plus 5 s of grace.
    enqueue(&b.client, 3_000, Some(200)).await;
    let runs = Arc::new(Mutex::new(HashMap::new()));
    // After 500 jobs, node A's worker holds every job it starts: when A dies, its 8 running jobs (and
    // what it prefetched) are under its leases, whatever the moment of the kill.
    let held = Arc::new(Mutex::new(Vec::new()));
    let on_a = worker(
        a.client.clone(),
        "a1",
        Arc::clone(&runs),
        Some((500, Arc::clone(&held))),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.lock().unwrap().len() < 8 {
        assert!(Instant::now() < deadline, "node A's worker never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let held = held.lock().unwrap().clone();
    assert_eq!(held.len(), 8, "the worker's concurrency");
    for id in &held {
        let job = b.client.get(id).await.unwrap();
        assert_eq!(
            (job.state, job.lease.as_ref().map(|l| l.worker_id.as_str())),
            (JobState::Active, Some("a1")),
            "{id} was running under the killed node's worker"
        );
    }
    let leased_by_a = b.client.queue("mn").await.unwrap().counts.active;
    assert!(leased_by_a >= 8, "{leased_by_a} active");
    let on_b = worker(b.client.clone(), "b1", Arc::clone(&runs), None);
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
    for id in &held {
        assert_eq!(
            runs[id], 2,
            "{id}, held by the killed node, ran again on the other"
        );
    }
    let twice = runs.values().filter(|&&n| n > 1).count();
    eprintln!(
        "node A held {leased_by_a} leases when killed; {twice} jobs ran twice (at-least-once)"
    );
    drop(b);
    drop_schema(&schema);
}
