//! `errand-chaos run`: the crash loop.
//!
//! Real `errand serve` processes and worker processes, producers in this process. On timers the harness
//! kills a worker with SIGKILL and starts it again, kills a server node with SIGKILL and starts it again
//! on the same store, and stops a worker holding leases with SIGSTOP for longer than a lease before
//! SIGCONT. When the chaos ends it waits for every job to finish, reads back every job and every
//! worker's log, and holds them against each other (`history::check`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use errand_client::protocol::{EnqueueJob, JobState, QueueConfig, Retention, Whole};
use errand_client::{Client, ListJobs, RetryPolicy};
use rand::RngExt;
use serde::Serialize;
use serde_json::json;

use crate::history::{self, Final, Verdict};

const QUEUE: &str = "chaos";
/// The timeout of half the jobs. Its lease is this plus the server's grace period (5 s); the other half
/// promise a heartbeat every second, for a lease of 2 s plus the grace. A pause of `PAUSE` outlives
/// every lease the paused worker holds.
const TIMEOUT_MS: u64 = 2_000;
const PAUSE: Duration = Duration::from_millis(TIMEOUT_MS + 5_000 + 2_000);
/// Jobs per fetch: what one worker can hold when it is killed or paused.
const BATCH: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The store the nodes share.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub store: StoreKind,
    /// Jobs enqueued, spread over the first 70 % of the chaos.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Server nodes [default: 1 on SQLite, 2 on PostgreSQL]. SQLite allows one.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// How long the chaos lasts, in seconds.
    #[arg(long, default_value_t = 40)]
    pub chaos_secs: u64,
    /// A worker is killed this often.
    #[arg(long, default_value_t = 3_000)]
    pub kill_worker_every_ms: u64,
    /// A server node is killed this often [default: 15,000 on SQLite, 10,000 on PostgreSQL].
    #[arg(long)]
    pub kill_server_every_ms: Option<u64>,
    /// A worker is paused past its leases this often.
    #[arg(long, default_value_t = 7_000)]
    pub pause_every_ms: u64,
    /// How long every job may take to finish once the chaos ends.
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
    /// The `errand` binary [default: the one beside this one].
    #[arg(long)]
    pub errand: Option<PathBuf>,
    /// The PostgreSQL server [default: ERRAND_TEST_POSTGRES_URL or the local one]; a fresh schema is
    /// made on it and dropped at the end.
    #[arg(long)]
    pub pg_url: Option<String>,
    /// Where to write the report (JSON) besides standard output.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Keep the working directory (server data and worker logs) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Default, Serialize)]
struct Chaos {
    worker_kills: usize,
    server_kills: usize,
    pauses: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    store: StoreKind,
    nodes: usize,
    workers: usize,
    jobs: usize,
    chaos_secs: u64,
    chaos: Chaos,
    /// From the end of the chaos until no job was left unfinished; `null` if that took longer than
    /// `--settle-secs`.
    settled_ms: Option<u64>,
    /// Repeated executions the kills and pauses can explain: each stops at most a fetch's worth of
    /// leases per worker it touches, and a server kill at most every worker's.
    repeated_executions_bound: usize,
    verdict: Verdict,
    passed: bool,
}

/// A server node: restarted with the same arguments and port after each kill.
struct Node {
    cmd: Vec<std::ffi::OsString>,
    binary: PathBuf,
    url: String,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) -> Result<(), String> {
        let child = Command::new(&self.binary)
            .args(&self.cmd)
            .env_remove("ERRAND_API_KEY")
            .env("ERRAND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker slot: a new process, with a new log, after each kill.
struct WorkerProc {
    slot: usize,
    generation: usize,
    child: Option<Child>,
    log: PathBuf,
    paused_until: Option<Instant>,
}

impl WorkerProc {
    fn start(&mut self, logs: &Path, urls: &str) -> Result<(), String> {
        self.generation += 1;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        self.log = logs.join(format!("w{}-{}.log", self.slot, self.generation));
        let child = Command::new(me)
            .args(["worker", "--queue", QUEUE, "--urls", urls])
            .args(["--batch", &BATCH.to_string()])
            .args(["--id", &format!("w{}.{}", self.slot, self.generation)])
            .arg("--log")
            .arg(&self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start a worker: {e}"))?;
        self.child = Some(child);
        self.paused_until = None;
        Ok(())
    }

    fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &c.id().to_string()])
                .status();
        }
    }

    /// Stops it and waits until the kernel shows it stopped, so that its log no longer moves.
    fn stop(&self) {
        self.signal("STOP");
        let Some(c) = &self.child else { return };
        let stat = format!("/proc/{}/stat", c.id());
        for _ in 0..100 {
            // The state follows the command name, which is in parentheses.
            match std::fs::read_to_string(&stat) {
                Ok(s)
                    if s.rsplit(") ")
                        .next()
                        .is_some_and(|rest| rest.starts_with('T')) =>
                {
                    return;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return,
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether its log shows a lease it has not begun to acknowledge: read while the worker is stopped,
    /// so that a pause outlives a lease it will acknowledge late.
    fn holds_a_lease(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return false;
        };
        let Ok(entries) = history::parse_log(&text) else {
            return false;
        };
        // By job and token: the leases of one fetch share a token.
        let mut held = std::collections::HashSet::new();
        for e in entries {
            if e.seen == history::Seen::Claimed {
                held.insert((e.job, e.token));
            } else {
                held.remove(&(e.job, e.token));
            }
        }
        !held.is_empty()
    }

    /// A worker that exited by itself hit something it cannot explain (see `worker::run`).
    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!("worker {} exited: {status}", self.slot)),
            _ => None,
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client(url: &str) -> Result<Client, String> {
    Client::builder(url)
        .request_timeout(Duration::from_secs(5))
        .retry(RetryPolicy::none())
        .build()
        .map_err(|e| e.to_string())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

async fn wait_ready(client: &Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health_ready().await.is_err() {
        if Instant::now() > deadline {
            return Err("a server node did not come up within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The answer of the first node that gives one.
async fn any_up<T, F, Fut>(clients: &[Client], mut f: F) -> Option<T>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, errand_client::Error>>,
{
    for c in clients {
        if let Ok(v) = f(c.clone()).await {
            return Some(v);
        }
    }
    None
}

pub async fn run(args: RunArgs) -> Result<bool, String> {
    let nodes_wanted = args.nodes.unwrap_or(match args.store {
        StoreKind::Sqlite => 1,
        StoreKind::Postgres => 2,
    });
    if args.store == StoreKind::Sqlite && nodes_wanted != 1 {
        return Err("--nodes: the embedded store serves one node".into());
    }
    let kill_server_every =
        Duration::from_millis(args.kill_server_every_ms.unwrap_or(match args.store {
            StoreKind::Sqlite => 15_000,
            StoreKind::Postgres => 10_000,
        }));
    let binary = match &args.errand {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("errand"),
    };
    let work = tempfile::Builder::new()
        .prefix("errand-chaos-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;

    // The store: a file in the working directory, or a fresh schema dropped when this returns.
    let mut schema = None;
    let store_args: Vec<String> = match args.store {
        StoreKind::Sqlite => vec![],
        StoreKind::Postgres => {
            let url = match &args.pg_url {
                Some(u) => u.clone(),
                None => errand_testkit::test_url()
                    .await
                    .ok_or("no PostgreSQL server: pass --pg-url")?,
            };
            let s = errand_testkit::TestSchema::new(&url).await;
            let a = vec![
                "--store".into(),
                url,
                "--pg-schema".into(),
                s.name().to_string(),
            ];
            schema = Some(s);
            a
        }
    };
    let mut nodes = Vec::new();
    for n in 0..nodes_wanted {
        let port = free_port()?;
        let mut cmd: Vec<std::ffi::OsString> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}").into(),
            "--maintenance-interval-ms".into(),
            "200".into(),
            "--data-dir".into(),
            work.path().join(format!("node{n}")).into(),
        ];
        cmd.extend(store_args.iter().map(Into::into));
        let mut node = Node {
            cmd,
            binary: binary.clone(),
            url: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        node.start()?;
        // One at a time: the first node migrates the store.
        wait_ready(&client(&node.url)?).await?;
        nodes.push(node);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let clients = urls
        .iter()
        .map(|u| client(u))
        .collect::<Result<Vec<_>, _>>()?;
    // Keep every finished job, so that the check can read them all back. Unique keys are held past a
    // job's end by default (with no retention age, for ever), so that an enqueue retried after its lost
    // answer finds the job it made even if that job has finished meanwhile.
    let keep_all = QueueConfig {
        retention: Some(Retention::KEEP_ALL),
        ..Default::default()
    };
    clients[0]
        .set_queue_config(QUEUE, &keep_all)
        .await
        .map_err(|e| format!("configure the queue: {e}"))?;

    let mut workers: Vec<WorkerProc> = (0..args.workers)
        .map(|slot| WorkerProc {
            slot,
            generation: 0,
            child: None,
            log: PathBuf::new(),
            paused_until: None,
        })
        .collect();
    let joined = urls.join(",");
    for w in &mut workers {
        w.start(&logs, &joined)?;
    }

    // Producers: two, each enqueueing every other job on a schedule over 70 % of the chaos.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let start = Instant::now();
    let window = Duration::from_millis(args.chaos_secs * 700);
    let mut producers = Vec::new();
    // An enqueue still not acknowledged when every job should have finished is a failure, not a hang.
    let give_up = start + Duration::from_secs(args.chaos_secs + args.settle_secs);
    for p in 0..2 {
        let (clients, acknowledged, jobs) = (clients.clone(), Arc::clone(&acknowledged), args.jobs);
        producers.push(tokio::spawn(async move {
            produce(
                p,
                2,
                jobs,
                (start, window, give_up),
                &clients,
                &acknowledged,
            )
            .await
        }));
    }

    // The chaos.
    let mut chaos = Chaos::default();
    let end = start + Duration::from_secs(args.chaos_secs);
    let every = |ms: u64| Duration::from_millis(ms.max(1));
    let (mut next_worker_kill, mut next_server_kill, mut next_pause) = (
        start + every(args.kill_worker_every_ms),
        start + kill_server_every,
        start + every(args.pause_every_ms),
    );
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        for w in &mut workers {
            if w.paused_until.is_some_and(|t| t <= now) {
                w.signal("CONT");
                w.paused_until = None;
            }
            if let Some(why) = w.exited() {
                return Err(why);
            }
        }
        if now >= next_worker_kill {
            next_worker_kill += every(args.kill_worker_every_ms);
            // Not a paused worker: it is to come back and acknowledge late.
            let running: Vec<usize> = (0..workers.len())
                .filter(|&i| workers[i].paused_until.is_none())
                .collect();
            if !running.is_empty() {
                let slot = running[rand::rng().random_range(0..running.len())];
                workers[slot].kill();
                workers[slot].start(&logs, &joined)?;
                chaos.worker_kills += 1;
            }
        }
        if now >= next_server_kill {
            next_server_kill += kill_server_every;
            let n = rand::rng().random_range(0..nodes.len());
            nodes[n].kill();
            nodes[n].start()?;
            // A node that does not come back would quietly end the chaos (or hang the run).
            wait_ready(&clients[n]).await?;
            chaos.server_kills += 1;
        }
        // A pause is for a worker holding a lease it has not begun to acknowledge: a worker is stopped,
        // and let go at once if it holds none (another is tried on the next tick).
        if now >= next_pause {
            let slot = rand::rng().random_range(0..workers.len());
            let w = &mut workers[slot];
            if w.paused_until.is_none() && w.child.is_some() {
                w.stop();
                if w.holds_a_lease() {
                    w.paused_until = Some(now + PAUSE);
                    chaos.pauses += 1;
                    next_pause += every(args.pause_every_ms);
                } else {
                    w.signal("CONT");
                }
            }
        }
    }
    let chaos_ended = Instant::now();
    for w in &mut workers {
        if w.paused_until.take().is_some() {
            w.signal("CONT");
        }
    }
    for p in producers {
        p.await.map_err(|e| e.to_string())??;
    }

    // Settle: every acknowledged job finished, nothing left waiting, delayed or active.
    let expected = acknowledged.lock().map_err(|e| e.to_string())?.len() as u64;
    let settle_deadline = chaos_ended + Duration::from_secs(args.settle_secs);
    let mut settled_ms = None;
    while Instant::now() < settle_deadline {
        for w in &mut workers {
            if let Some(why) = w.exited() {
                return Err(why);
            }
        }
        if let Some(q) = any_up(&clients, |c| async move { c.queue(QUEUE).await }).await {
            let c = &q.counts;
            if c.waiting + c.delayed + c.active == 0 && c.completed + c.dead >= expected {
                settled_ms = Some(chaos_ended.elapsed().as_millis() as u64);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in &mut workers {
        w.kill();
    }

    let server = read_back(&clients).await?;
    let mut entries = Vec::new();
    for f in std::fs::read_dir(&logs).map_err(|e| e.to_string())? {
        let path = f.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        entries.push(history::parse_log(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let acknowledged = acknowledged.lock().map_err(|e| e.to_string())?.clone();
    let verdict = history::check(&acknowledged, &entries, &server);
    let batch = BATCH as usize;
    let bound = (chaos.worker_kills + chaos.pauses) * batch
        + chaos.server_kills * args.workers * batch * 2
        + verdict.unknown_acks;
    let passed = verdict.passed() && settled_ms.is_some() && verdict.repeated_executions <= bound;
    let report = Report {
        store: args.store,
        nodes: nodes.len(),
        workers: args.workers,
        jobs: args.jobs,
        chaos_secs: args.chaos_secs,
        chaos,
        settled_ms,
        repeated_executions_bound: bound,
        verdict,
        passed,
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(path) = &args.report {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    drop(nodes);
    drop(schema);
    if args.keep {
        eprintln!("kept {}", work.keep().display());
    }
    Ok(passed)
}

/// Enqueues jobs `p, p + of, p + 2·of, ...` below `jobs`, each at its time in `window`, retrying each
/// until the server acknowledges it. The unique key makes a retry of an enqueue whose answer was lost
/// return the job it made.
async fn produce(
    p: usize,
    of: usize,
    jobs: usize,
    (start, window, give_up): (Instant, Duration, Instant),
    clients: &[Client],
    acknowledged: &Mutex<BTreeSet<String>>,
) -> Result<(), String> {
    let mut at = p;
    for i in (p..jobs).step_by(of) {
        let due = start + window.mul_f64(i as f64 / jobs as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut job = EnqueueJob::new(
            "chaos",
            json!({
                "i": i,
                "work_ms": rand::rng().random_range(0..10u64),
                // Some first attempts fail on purpose, so that retries happen under the chaos too.
                "fail_first": i % 20 == 0,
            }),
        );
        job.unique_key = Some(format!("chaos-{i}"));
        if i % 2 == 0 {
            job.timeout_ms = Some(Whole(TIMEOUT_MS));
        } else {
            // Half promise heartbeats (which these workers never need to send) and may run long: their
            // leases end before their timeouts, so a dead or paused worker's job is recovered as a
            // stall, which gives the attempt back.
            job.timeout_ms = Some(Whole(60_000));
            job.heartbeat_ms = Some(Whole(1_000));
        }
        job.max_attempts = Some(Whole(1_000));
        job.max_stalled = Some(Whole(100));
        loop {
            match clients[at % clients.len()].enqueue(QUEUE, &job).await {
                Ok(e) => {
                    acknowledged.lock().map_err(|e| e.to_string())?.insert(e.id);
                    break;
                }
                Err(e) if Instant::now() > give_up => {
                    return Err(format!("enqueue {i} still refused at the end: {e}"));
                }
                Err(e) if e.is_retryable() || e.status().is_none() => {
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(format!("enqueue {i}: {e}")),
            }
        }
    }
    Ok(())
}

/// Every job of the queue, in any state, as the server holds it.
async fn read_back(clients: &[Client]) -> Result<HashMap<String, Final>, String> {
    let mut out = HashMap::new();
    for state in [
        JobState::Completed,
        JobState::Dead,
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Cancelled,
    ] {
        let mut cursor = None;
        loop {
            let mut params = ListJobs::new(state);
            params.cursor = cursor.clone();
            params.limit = Some(1_000);
            let page = any_up(clients, |c| {
                let params = params.clone();
                async move { c.list_jobs(QUEUE, &params).await }
            })
            .await
            .ok_or("no node answers to read the jobs back")?;
            for j in page.jobs {
                let result: Option<serde_json::Value> = j
                    .result
                    .as_ref()
                    .and_then(|r| serde_json::from_str(r.get()).ok());
                let completed_by = result.and_then(|r| {
                    let attempt = u32::try_from(r["attempt"].as_u64()?).ok()?;
                    Some((
                        r["token"].as_str()?.to_string(),
                        (attempt, r["lease"].as_i64()?),
                    ))
                });
                out.insert(
                    j.id,
                    Final {
                        state: j.state.as_str().to_string(),
                        completed_by,
                    },
                );
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(out)
}
