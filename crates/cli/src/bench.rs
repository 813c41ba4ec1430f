//! `errand bench`: throughput and latency of a server, measured the way users' producers and workers
//! see it — over HTTP with the Rust client and worker SDK.
//!
//! It targets a running server (`--url`), or starts one in this process on a temporary embedded store
//! (the default) or on PostgreSQL (`--store postgres://...`, in a fresh schema). Every scenario checks
//! that each job ran exactly once; a lost or duplicated job fails the run (exit 1).

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use errand_client::protocol::{EnqueueJob, QueueConfig, Retention};
use errand_client::{Client, JobContext, Worker};
use errand_server::{Config, Server, StoreUrl};
use serde_json::{Value, json};

use crate::output::{fail, say, table};

mod scratch;
mod serve;

/// The scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// N jobs, one request per job, from `--concurrency` producers each awaiting its answer.
    EnqueueSingle,
    /// N jobs in batches of `--batch`.
    EnqueueBatch,
    /// N jobs enqueued first (not timed), then `--workers` SDK workers at `--concurrency` each.
    Drain,
    /// An open-loop producer at `--rate` jobs/s and an idle worker: enqueue-to-start latency.
    Latency,
    /// The drain rate of 10,000 jobs with 10,000 waiting, then with `--backlog` waiting.
    Backlog,
    /// Every scenario above, in turn.
    All,
}

/// `errand bench`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Jobs per scenario.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// Producers (enqueue-single) or handler concurrency per worker (drain, backlog).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Jobs per enqueue request (enqueue-batch).
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Workers (drain, backlog).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Jobs per second of the open-loop producer (latency).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Jobs waiting in the large case of the backlog scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// A running server to measure, instead of one started here.
    #[arg(long, env = "ERRAND_URL")]
    pub url: Option<String>,
    /// API key for `--url`.
    #[arg(long, env = "ERRAND_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The store of the server started here: sqlite (a temporary file) or postgres://... (a fresh
    /// schema, dropped afterwards).
    #[arg(long, default_value = "sqlite")]
    pub store: String,
    /// Sync mode of the embedded store started here.
    #[arg(long, value_enum, default_value = "full")]
    pub sync: errand_server::config::Sync,
    /// Run the server started here as `errand serve` in a process of its own (the default): what a
    /// user's workers talk to, so the numbers are theirs.
    #[arg(long, conflicts_with = "in_process")]
    pub server_process: bool,
    /// Run the server started here inside the bench's own process instead: no process boundary, and
    /// the bench's client and the server share its cores and runtime.
    #[arg(long)]
    pub in_process: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured result.
#[derive(Debug, Clone, serde::Serialize)]
struct Outcome {
    scenario: &'static str,
    store: String,
    sync: String,
    /// Where the server ran: `process` (its own), `in-process` (the bench's) or `remote` (`--url`).
    server: &'static str,
    jobs: u64,
    seconds: f64,
    jobs_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p999_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ms: Option<f64>,
    cores: usize,
}

/// The server under test, and what to undo afterwards.
struct Target {
    client: Client,
    store: String,
    sync: String,
    server: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
    /// The `errand serve` process started here.
    child: Option<serve::Child>,
    _dir: Option<tempfile::TempDir>,
    /// A scratch PostgreSQL schema, dropped with it.
    _schema: Option<scratch::Scratch>,
}

impl Target {
    async fn start(args: &BenchArgs) -> Result<Target, String> {
        if let Some(url) = &args.url {
            let mut b = Client::builder(url);
            if let Some(k) = &args.key {
                b = b.api_key(k);
            }
            return Ok(Target {
                client: b.build().map_err(|e| e.to_string())?,
                store: format!("server at {url}"),
                sync: "as configured".into(),
                server: "remote",
                stop: None,
                task: None,
                child: None,
                _dir: None,
                _schema: None,
            });
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut config = Config::with_data_dir(dir.path());
        config.listen = ([127, 0, 0, 1], 0).into();
        config.log = "warn".into();
        config.sync = args.sync;
        let mut schema = None;
        let (store, sync) = if args.store.starts_with("postgres") {
            config.store = StoreUrl::parse(&args.store)?;
            let scratch = scratch::Scratch::new(&args.store);
            config.pg_schema = scratch.name().to_string();
            schema = Some(scratch);
            ("postgres".to_string(), "synchronous_commit on".to_string())
        } else if args.store == "sqlite" {
            let sync = match args.sync {
                errand_server::config::Sync::Full => "full",
                errand_server::config::Sync::Normal => "normal",
            };
            ("sqlite".to_string(), sync.to_string())
        } else {
            return Err(format!(
                "--store {:?}: use sqlite or postgres://...",
                args.store
            ));
        };
        if !args.in_process {
            let child = serve::Child::start(&config).await?;
            let client = Client::builder(child.url())
                .build()
                .map_err(|e| e.to_string())?;
            return Ok(Target {
                client,
                store,
                sync,
                server: "process",
                stop: None,
                task: None,
                child: Some(child),
                _dir: Some(dir),
                _schema: schema,
            });
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let server = Server::open(config).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        let client = Client::builder(format!("http://{addr}"))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Target {
            client,
            store,
            sync,
            server: "in-process",
            stop: Some(stop),
            task: Some(task),
            child: None,
            _dir: Some(dir),
            _schema: schema,
        })
    }

    /// Stops the server started here; its temporary store (file or schema) goes with it.
    async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(child) = self.child.take() {
            child.stop().await;
        }
    }

    fn outcome(&self, scenario: &'static str, jobs: u64, seconds: f64) -> Outcome {
        Outcome {
            scenario,
            store: self.store.clone(),
            sync: self.sync.clone(),
            server: self.server,
            jobs,
            seconds,
            jobs_per_s: jobs as f64 / seconds.max(1e-9),
            batch: None,
            concurrency: None,
            workers: None,
            rate: None,
            waiting: None,
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            max_ms: None,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A fresh queue name per scenario, so that runs against one server do not mix.
fn queue(scenario: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("bench.{scenario}.{n}")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A one-line progress indicator on stderr.
fn progress(label: &str, done: u64, total: u64) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r{label}: {done}/{total}   ");
    let _ = err.flush();
}

fn progress_end() {
    let _ = writeln!(std::io::stderr());
}

/// Runs `errand bench`.
pub async fn run(args: BenchArgs) -> ExitCode {
    let target = match Target::start(&args).await {
        Ok(t) => t,
        Err(e) => return fail(1, &e),
    };
    let scenarios = match args.scenario {
        Scenario::All => vec![
            Scenario::EnqueueSingle,
            Scenario::EnqueueBatch,
            Scenario::Drain,
            Scenario::Latency,
            Scenario::Backlog,
        ],
        s => vec![s],
    };
    let mut results = Vec::new();
    let mut code = ExitCode::SUCCESS;
    for s in scenarios {
        let r = match s {
            Scenario::EnqueueSingle => enqueue_single(&target, &args).await,
            Scenario::EnqueueBatch => enqueue_batch(&target, &args).await,
            Scenario::Drain => drain_scenario(&target, &args).await,
            Scenario::Latency => latency(&target, &args).await,
            Scenario::Backlog => backlog(&target, &args).await,
            Scenario::All => Ok(Vec::new()),
        };
        match r {
            Ok(outs) => {
                for o in outs {
                    if args.json {
                        say!("{}", serde_json::to_string(&o).unwrap_or_default());
                    }
                    results.push(o);
                }
            }
            Err(e) => {
                code = fail(1, &format!("{s:?}: {e}"));
                break;
            }
        }
    }
    target.finish().await;
    if !args.json {
        print_table(&results);
    }
    code
}

fn print_table(results: &[Outcome]) {
    let ms = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|o| {
            let shape = match o.scenario {
                "enqueue-single" => format!("{} producers", o.concurrency.unwrap_or(1)),
                "enqueue-batch" => format!("batches of {}", o.batch.unwrap_or(0)),
                "latency" => format!("{} jobs/s open loop", o.rate.unwrap_or(0)),
                _ => format!(
                    "{} workers × {}{}",
                    o.workers.unwrap_or(0),
                    o.concurrency.unwrap_or(0),
                    o.waiting
                        .map_or(String::new(), |w| format!(", {w} waiting"))
                ),
            };
            vec![
                o.scenario.to_string(),
                format!("{} ({})", o.store, o.sync),
                shape,
                o.jobs.to_string(),
                format!("{:.2}", o.seconds),
                format!("{:.0}", o.jobs_per_s),
                ms(o.p50_ms),
                ms(o.p99_ms),
                ms(o.p999_ms),
                ms(o.max_ms),
            ]
        })
        .collect();
    table(
        &[
            "SCENARIO", "STORE", "SHAPE", "JOBS", "SECONDS", "JOBS/S", "P50 MS", "P99 MS",
            "P99.9 MS", "MAX MS",
        ],
        &rows,
    );
    if let Some(o) = results.first() {
        say!(
            "{} cores; server, producers and workers on this machine",
            o.cores
        );
    }
}

async fn keep_all(client: &Client, q: &str) -> Result<(), String> {
    let config = QueueConfig {
        retention: Some(Retention::KEEP_ALL),
        ..Default::default()
    };
    client
        .set_queue_config(q, &config)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks through the server that `q` holds exactly `n` jobs, all waiting: none lost, none doubled.
async fn check_enqueued(client: &Client, q: &str, n: u64) -> Result<(), String> {
    let v = client.queue(q).await.map_err(|e| e.to_string())?;
    let total = v.counts.waiting + v.counts.delayed + v.counts.active + v.counts.completed;
    if total != n {
        return Err(format!(
            "{total} jobs on the server after {n} acknowledged enqueues"
        ));
    }
    Ok(())
}

async fn enqueue_single(t: &Target, a: &BenchArgs) -> Result<Vec<Outcome>, String> {
    let q = queue("enqueue-single");
    keep_all(&t.client, &q).await?;
    let producers = a.concurrency.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (c, q) = (t.client.clone(), q.clone());
        let share = a.jobs / producers + u64::from(p < a.jobs % producers);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                c.enqueue(&q, &EnqueueJob::new("noop", json!(i)))
                    .await
                    .map_err(|e| e.to_string())?;
                if p == 0 && i % 256 == 0 {
                    progress("enqueue-single", i * producers, share * producers);
                }
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    progress_end();
    check_enqueued(&t.client, &q, a.jobs).await?;
    let mut o = t.outcome("enqueue-single", a.jobs, secs);
    o.concurrency = Some(producers as usize);
    Ok(vec![o])
}

async fn enqueue_batches(
    c: &Client,
    q: &str,
    n: u64,
    batch: usize,
    label: &str,
) -> Result<(), String> {
    let mut done = 0u64;
    while done < n {
        let b = (n - done).min(batch.max(1) as u64);
        let jobs: Vec<EnqueueJob> = (0..b)
            .map(|i| EnqueueJob::new("noop", json!({ "i": done + i, "sent_us": 0 })))
            .collect();
        c.enqueue_batch(q, &jobs).await.map_err(|e| e.to_string())?;
        done += b;
        progress(label, done, n);
    }
    progress_end();
    Ok(())
}

async fn enqueue_batch(t: &Target, a: &BenchArgs) -> Result<Vec<Outcome>, String> {
    let q = queue("enqueue-batch");
    keep_all(&t.client, &q).await?;
    let start = Instant::now();
    enqueue_batches(&t.client, &q, a.jobs, a.batch, "enqueue-batch").await?;
    let secs = start.elapsed().as_secs_f64();
    check_enqueued(&t.client, &q, a.jobs).await?;
    let mut o = t.outcome("enqueue-batch", a.jobs, secs);
    o.batch = Some(a.batch);
    Ok(vec![o])
}

/// Runs `workers` SDK workers on `q` until `n` jobs completed (as the server counts them); returns the
/// seconds it took and how often each job ran. `latencies` collects enqueue-to-start times when given.
async fn work(
    client: &Client,
    q: &str,
    n: u64,
    workers: usize,
    concurrency: usize,
    label: &str,
    latencies: Option<Arc<Mutex<Vec<f64>>>>,
) -> Result<(f64, HashMap<String, u32>), String> {
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let before = client
        .queue(q)
        .await
        .map_err(|e| e.to_string())?
        .counts
        .completed;
    let start = Instant::now();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (runs, lat) = (Arc::clone(&runs), latencies.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let w = Worker::builder(client.clone())
            .queue(q.to_string())
            .concurrency(concurrency.max(1))
            .handler("noop", move |ctx: JobContext, p: Value| {
                let (runs, lat) = (Arc::clone(&runs), lat.clone());
                async move {
                    if let (Some(lat), Some(sent)) = (lat, p["sent_us"].as_u64())
                        && sent > 0
                    {
                        let ms = now_us().saturating_sub(sent) as f64 / 1000.0;
                        lat.lock()
                            .map_err(|e| errand_client::JobError::new(e.to_string()))?
                            .push(ms);
                    }
                    *runs
                        .lock()
                        .map_err(|e| errand_client::JobError::new(e.to_string()))?
                        .entry(ctx.id().to_string())
                        .or_default() += 1;
                    Ok(Value::Null)
                }
            })
            .build()
            .map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(w.run_until(async move {
            let _ = stopped.await;
        })));
        stops.push(stop);
    }
    // Watch the handlers' own count while they run (no request in the way of the drain), then the
    // server's count of completions (kept per queue, a few rows to read): the clock stops once every
    // completion is recorded. The workers' shutdown comes after, untimed: with a backlog they hold
    // jobs beyond the `n` measured, and whether their release fell inside the timed window or after
    // it made the backlog scenario's figure vary by half.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut shown = Instant::now();
    loop {
        let done = runs.lock().map_err(|e| e.to_string())?.len() as u64;
        if shown.elapsed() > Duration::from_millis(100) || done >= n {
            progress(label, done.min(n), n);
            shown = Instant::now();
        }
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {done} of {n} jobs ran in 10 minutes"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Acknowledgements are flushed within milliseconds: a completion not recorded in 30 s is lost.
    let recorded_by = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let recorded = client
            .queue(q)
            .await
            .map_err(|e| e.to_string())?
            .counts
            .completed
            .saturating_sub(before);
        if recorded >= n || Instant::now() > recorded_by {
            break recorded;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    for s in stops {
        let _ = s.send(());
    }
    let mut acked = 0;
    for task in tasks {
        let report = task.await.map_err(|e| e.to_string())?;
        acked += report.completed;
    }
    progress_end();
    if recorded < n || acked < n {
        return Err(format!(
            "{n} jobs ran but the server recorded {recorded} completions ({acked} acknowledged)"
        ));
    }
    let runs = runs.lock().map_err(|e| e.to_string())?.clone();
    Ok((secs, runs))
}

/// Fails unless each of `n` jobs ran exactly once.
fn exactly_once(runs: &HashMap<String, u32>, n: u64) -> Result<(), String> {
    let twice = runs.values().filter(|&&c| c > 1).count();
    if twice > 0 {
        return Err(format!("{twice} jobs ran more than once"));
    }
    if (runs.len() as u64) < n {
        return Err(format!("{} of {n} jobs ran: jobs were lost", runs.len()));
    }
    Ok(())
}

async fn drain_scenario(t: &Target, a: &BenchArgs) -> Result<Vec<Outcome>, String> {
    let q = queue("drain");
    keep_all(&t.client, &q).await?;
    enqueue_batches(&t.client, &q, a.jobs, 1_000, "drain: enqueue (not timed)").await?;
    let (secs, runs) = work(
        &t.client,
        &q,
        a.jobs,
        a.workers,
        a.concurrency,
        "drain",
        None,
    )
    .await?;
    exactly_once(&runs, a.jobs)?;
    let mut o = t.outcome("drain", a.jobs, secs);
    o.workers = Some(a.workers);
    o.concurrency = Some(a.concurrency);
    Ok(vec![o])
}

async fn latency(t: &Target, a: &BenchArgs) -> Result<Vec<Outcome>, String> {
    let q = queue("latency");
    keep_all(&t.client, &q).await?;
    let n = a.jobs.min(a.rate.max(1) * 60);
    let lat = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let worker = {
        let (client, q2, lat) = (t.client.clone(), q.clone(), Arc::clone(&lat));
        tokio::spawn(async move { work(&client, &q2, n, 1, 32, "latency", Some(lat)).await })
    };
    // An open loop: each send is scheduled by the clock, not by the previous answer.
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut sends = Vec::with_capacity(n as usize);
    for i in 0..n {
        tokio::time::sleep_until((start + period * i as u32).into()).await;
        let (c, q) = (t.client.clone(), q.clone());
        sends.push(tokio::spawn(async move {
            let job = EnqueueJob::new("noop", json!({ "i": i, "sent_us": now_us() }));
            c.enqueue(&q, &job).await.map_err(|e| e.to_string())
        }));
    }
    for s in sends {
        s.await.map_err(|e| e.to_string())??;
    }
    let (secs, runs) = worker.await.map_err(|e| e.to_string())??;
    exactly_once(&runs, n)?;
    let mut v = lat.lock().map_err(|e| e.to_string())?.clone();
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
    };
    let mut o = t.outcome("latency", n, secs);
    o.rate = Some(a.rate);
    o.p50_ms = pct(0.50);
    o.p99_ms = pct(0.99);
    o.p999_ms = pct(0.999);
    o.max_ms = v.last().copied();
    Ok(vec![o])
}

async fn backlog(t: &Target, a: &BenchArgs) -> Result<Vec<Outcome>, String> {
    const MEASURED: u64 = 10_000;
    let mut out = Vec::new();
    for waiting in [MEASURED, a.backlog.max(MEASURED)] {
        let q = queue("backlog");
        keep_all(&t.client, &q).await?;
        enqueue_batches(
            &t.client,
            &q,
            waiting,
            1_000,
            "backlog: enqueue (not timed)",
        )
        .await?;
        let (secs, runs) = work(
            &t.client,
            &q,
            MEASURED,
            a.workers,
            a.concurrency,
            "backlog",
            None,
        )
        .await?;
        if runs.values().any(|&c| c > 1) {
            return Err("a job ran more than once".into());
        }
        let mut o = t.outcome("backlog", MEASURED, secs);
        o.waiting = Some(waiting);
        o.workers = Some(a.workers);
        o.concurrency = Some(a.concurrency);
        out.push(o);
    }
    Ok(out)
}
