//! The worker SDK: fetch jobs, run typed handlers, keep leases, acknowledge in batches, shut down
//! gracefully.
//!
//! A [`Worker`] runs three kinds of tasks over one [`Client`]:
//!
//! 1. **The fetcher** long-polls `POST /v1/fetch` (wait [`WorkerBuilder::poll_wait`]) for as many jobs
//!    as the worker has room for: it holds at most [`WorkerBuilder::prefetch`] jobs, running or waiting
//!    in a local buffer, of which at most [`WorkerBuilder::concurrency`] run at once.
//! 2. **Each job** gets a heartbeat task from the moment it arrives (buffered jobs keep their leases
//!    too), every third of its lease, or at the job's `heartbeat_ms` if that is sooner. Each fetch
//!    promises heartbeats at [`WorkerBuilder::heartbeat_every`] (10 s), which caps the leases the
//!    server grants at `2 × 10 s + 5 s`: a dead worker's jobs run elsewhere within about 30 s. The heartbeat carries
//!    [`JobContext::progress`], and brings back cancel requests ([`JobContext::cancelled`]) and lost
//!    leases. The handler runs in a task of its own, so that a panic is caught and reported.
//! 3. **The acknowledger** sends outcomes to `POST /v1/ack` in batches (when
//!    [`WorkerBuilder::ack_batch_size`] are waiting, or [`WorkerBuilder::ack_flush_interval`] after the
//!    first), and retries them with backoff while the server cannot be reached: an outcome is never
//!    dropped while the worker runs.
//!
//! How each outcome is reported:
//!
//! | the handler… | reported as |
//! | --- | --- |
//! | returns `Ok(r)` | complete, with `r` as the result (none if it serializes to `null`) |
//! | returns `Err(e)` | fail, retryable unless [`JobError::fatal`], with `retry_after_ms` if the error has a delay |
//! | returns [`JobError::snooze`]`(d)` | released to run again after `d`, without using an attempt (a rate limit, not a failure) |
//! | gets a payload that does not decode as its type | fail, not retryable (the next attempt would not decode it either) |
//! | panics | fail, retryable, `panicked: <message>` |
//! | runs past the job's timeout | stopped (its future dropped) and fail, retryable, "timed out after N ms" |
//! | loses its lease (a heartbeat answered `lease_lost`) | stopped, and nothing is reported: the job is no longer ours |
//! | is still running at the end of a graceful shutdown | stopped, and released |
//! | is cancelled by an operator while it runs (learnt on the next heartbeat) | given [`WorkerBuilder::cancel_grace`] to return on its own (watching [`JobContext::cancelled`]), then stopped (its future dropped) and released: the server ends the job `cancelled` |
//! | has no handler for the job's kind | logged at error level (job id, queue, kind, the kinds this worker handles) and fail, **retryable**, `no handler for kind "X" on worker W (it handles "a", "b")`: a deploy in progress may bring one (another worker, or this one restarted), and the job dies only once its attempts are spent, with a message that says why. Releasing it instead would hand it straight back to this worker in a loop. |
//!
//! An acknowledgement answered `lease_lost` is logged and dropped (the server already timed the attempt
//! out, or another worker holds the job); a repeated completion answered `duplicate: true` counts as
//! done. A result the server refuses (too large) turns into a non-retryable failure saying so.
//!
//! The timeout is measured locally from the fetch's answer (`timeout_ms` after it), slightly after the
//! server's deadline, which started at the claim: the server's is the one that counts, and the worker's
//! stops the handler about when the server gives up on the attempt.

mod ack;
mod job;
mod lease;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use errand_protocol::{AckItem, FetchRequest, FetchedJob};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use job::{JobContext, JobError};

use self::ack::{AckSettings, Origin, Queued, Stats};
use self::job::{ErasedHandler, JobShared, Typed};
use self::lease::Keeper;
use crate::error::{Error, Result};
use crate::{Client, RetryPolicy};

/// The most jobs one fetch may claim (the server's claim limit).
const MAX_CLAIM: usize = 1000;

/// What a worker did from start to shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs whose completion the server confirmed.
    pub completed: u64,
    /// Jobs whose failure the server confirmed (errors, panics, timeouts, undecodable payloads).
    pub failed: u64,
    /// Jobs fetched but not started, given back.
    pub released: u64,
    /// Jobs an operator cancelled: stopped if they were running (their handlers' futures dropped), and
    /// ended `cancelled` by the server.
    pub cancelled: u64,
    /// Runs that ended in [`JobError::snooze`]: given back to run later, without using an attempt.
    pub snoozed: u64,
    /// Jobs still running at the shutdown deadline: their handlers were dropped and the jobs released
    /// where the server would take it.
    pub abandoned: u64,
    /// Outcomes that did not reach the server: refused (`lease_lost` above all) or still undelivered
    /// when the shutdown's time ran out.
    pub lost: u64,
}

/// A sentence's worth for people: `2 completed, 1 failed, 3 released unstarted` (counts other than
/// `completed` only when not zero), so that a program can end with `println!("stopped: {report}")`.
impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} completed", self.completed)?;
        for (n, what) in [
            (self.failed, "failed"),
            (self.released, "released unstarted"),
            (self.cancelled, "cancelled"),
            (self.snoozed, "snoozed"),
            (self.abandoned, "abandoned at the shutdown deadline"),
            (self.lost, "with outcomes not delivered"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// Builds a [`Worker`]: see [`Worker::builder`].
pub struct WorkerBuilder {
    client: Client,
    queues: Vec<String>,
    concurrency: usize,
    prefetch: Option<usize>,
    worker_id: Option<String>,
    poll_wait: Duration,
    heartbeat_every: Duration,
    shutdown_timeout: Duration,
    cancel_grace: Duration,
    ack_batch_size: usize,
    ack_flush_interval: Duration,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("worker_id", &self.worker_id)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Adds a queue to fetch from (1–64 in all).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Adds queues to fetch from (1–64 in all).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues.extend(queues.into_iter().map(Into::into));
        self
    }

    /// How many jobs run at once (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many jobs the worker holds at once, running or waiting to run (default and least: the
    /// concurrency). Jobs waiting in the buffer keep their leases by heartbeat; on shutdown they are
    /// released. With a buffer, the worker fetches again once half of the buffer is free, so that a
    /// busy worker claims many jobs per fetch.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// The worker's name on the jobs' leases (1–128 printable characters; default
    /// `<host>-<pid>-<random>`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// How long one fetch waits for a job when none is due (default 10 s; the server caps it).
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// How often, at most, the worker heartbeats each job it holds (default 10 s; 100 ms to 7 days). The
    /// worker promises it to the server with each fetch, which then keeps each lease to
    /// `2 × this + 5 s` (25 s by default): the jobs of a worker that dies run elsewhere that soon, not
    /// after their whole timeout.
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.heartbeat_every = every;
        self
    }

    /// How long a graceful shutdown lets running jobs finish (default 30 s); pending acknowledgements
    /// then get as long again to be delivered.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a running job an operator cancelled may take to return on its own (watching
    /// [`JobContext::cancelled`]) before its handler is stopped (default 1 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// How many acknowledgements go in one `POST /v1/ack` at most (default 100).
    pub fn ack_batch_size(mut self, n: usize) -> Self {
        self.ack_batch_size = n;
        self
    }

    /// How long the first acknowledgement of a batch waits for others (default 5 ms).
    pub fn ack_flush_interval(mut self, interval: Duration) -> Self {
        self.ack_flush_interval = interval;
        self
    }

    /// Runs `handler` for jobs of `kind`, with the payload decoded as `T`. The handler's `Ok` value is
    /// the job's result (serialized; `()` or `None` for none); its `Err` is a failure (see
    /// [`JobError`]). A second handler for the same kind replaces the first.
    ///
    /// ```no_run
    /// # use errand_client::{Client, Worker, JobContext, JobError};
    /// #[derive(serde::Deserialize)]
    /// struct Email { to: String }
    ///
    /// # fn f(client: Client) {
    /// let worker = Worker::builder(client)
    ///     .queue("emails")
    ///     .handler("send", |ctx: JobContext, email: Email| async move {
    ///         println!("{} to {} (attempt {})", ctx.id(), email.to, ctx.attempt());
    ///         Ok::<_, JobError>(())
    ///     });
    /// # }
    /// ```
    pub fn handler<T, R, F, Fut>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.handlers
            .insert(kind.into(), Arc::new(Typed::<F, T, R>::new(handler)));
        self
    }

    /// The worker. Fails without a queue or a handler, or with a concurrency or batch size of zero.
    pub fn build(self) -> Result<Worker> {
        if self.queues.is_empty() || self.handlers.is_empty() {
            return Err(Error::InvalidRequest(
                "a worker needs at least one queue and one handler".into(),
            ));
        }
        if self.concurrency == 0 || self.ack_batch_size == 0 {
            return Err(Error::InvalidRequest(
                "concurrency and ack_batch_size must be at least 1".into(),
            ));
        }
        let prefetch = self
            .prefetch
            .unwrap_or(self.concurrency)
            .max(self.concurrency);
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        Ok(Worker {
            rt: Arc::new(Runtime {
                client: self.client,
                queues: self.queues,
                worker_id,
                concurrency: self.concurrency,
                prefetch,
                poll_wait: self.poll_wait,
                // Within what the server takes (100 ms – 7 days), rather than a fetch refused for ever.
                heartbeat_ms: u64::try_from(self.heartbeat_every.as_millis())
                    .unwrap_or(u64::MAX)
                    .clamp(100, 7 * 24 * 3_600_000),
                shutdown_timeout: self.shutdown_timeout,
                cancel_grace: self.cancel_grace,
                ack: AckSettings {
                    batch_size: self.ack_batch_size,
                    flush_interval: self.ack_flush_interval,
                },
                handlers: self.handlers,
            }),
        })
    }
}

fn default_worker_id() -> String {
    use rand::RngExt;
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "worker".into());
    let host: String = host.chars().take(64).collect();
    let tag: u32 = rand::rng().random();
    format!("{host}-{}-{tag:08x}", std::process::id())
}

/// A worker: fetches jobs from its queues and runs their handlers until shut down. Build one with
/// [`Worker::builder`]; run it with [`Worker::run`] (until Ctrl-C or SIGTERM) or [`Worker::run_until`].
pub struct Worker {
    rt: Arc<Runtime>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.rt.worker_id)
            .field("queues", &self.rt.queues)
            .field("concurrency", &self.rt.concurrency)
            .field("prefetch", &self.rt.prefetch)
            .finish_non_exhaustive()
    }
}

/// What every task of a worker shares.
struct Runtime {
    client: Client,
    queues: Vec<String>,
    worker_id: String,
    concurrency: usize,
    prefetch: usize,
    poll_wait: Duration,
    /// The heartbeat interval promised with each fetch.
    heartbeat_ms: u64,
    shutdown_timeout: Duration,
    cancel_grace: Duration,
    ack: AckSettings,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
}

impl Runtime {
    /// The kinds this worker has handlers for, sorted and quoted: `"a", "b"` (or `no kind`).
    fn handled_kinds(&self) -> String {
        let mut kinds: Vec<&String> = self.handlers.keys().collect();
        if kinds.is_empty() {
            return "no kind".into();
        }
        kinds.sort();
        kinds
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A job fetched and not yet started.
struct Fetched {
    shared: Arc<JobShared>,
    keeper: Keeper,
    /// Its place among the `prefetch` jobs the worker may hold.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Fetched {
    fn release_item(&self) -> AckItem {
        AckItem::Release {
            id: self.shared.job.id.clone(),
            lease_token: self.shared.job.lease_token.clone(),
            delay_ms: None,
        }
    }
}

/// How a job's run ended, for the worker's count.
enum JobEnd {
    /// Its outcome (or release) was queued for acknowledgement.
    Reported,
    /// Its lease was lost: nothing reported.
    LeaseLost,
    /// Stopped at the shutdown deadline and released.
    Abandoned,
}

impl Worker {
    /// A worker over `client`; add queues and handlers, then [`WorkerBuilder::build`].
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            queues: Vec::new(),
            concurrency: 1,
            prefetch: None,
            worker_id: None,
            poll_wait: Duration::from_secs(10),
            heartbeat_every: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(1),
            ack_batch_size: 100,
            ack_flush_interval: Duration::from_millis(5),
            handlers: HashMap::new(),
        }
    }

    /// The worker's name on the jobs' leases.
    pub fn worker_id(&self) -> &str {
        &self.rt.worker_id
    }

    /// Runs until Ctrl-C (or, on Unix, SIGTERM), then shuts down gracefully: see [`Worker::run_until`].
    pub async fn run(self) -> ShutdownReport {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully:
    ///
    /// 1. stops fetching (a long poll in flight is dropped; should its answer have been on the way, those
    ///    jobs return to their queue when their leases expire);
    /// 2. releases the jobs fetched but not started: they are due again at once, for any worker, and
    ///    the attempt is not counted;
    /// 3. lets running jobs finish for up to the shutdown timeout, then drops the handlers still running
    ///    and releases their jobs (counted as abandoned);
    /// 4. delivers every pending acknowledgement, trying for up to the shutdown timeout again;
    /// 5. returns what it did.
    pub async fn run_until<F>(self, shutdown: F) -> ShutdownReport
    where
        F: Future<Output = ()>,
    {
        let rt = self.rt;
        tracing::info!(worker_id = %rt.worker_id, queues = ?rt.queues, concurrency = rt.concurrency, prefetch = rt.prefetch, "worker started");
        let stats = Arc::new(Stats::default());
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let (give_up_tx, give_up_rx) = watch::channel(None);
        let acker = tokio::spawn(ack::run(
            rt.client.clone(),
            ack_rx,
            Arc::clone(&stats),
            give_up_rx,
            rt.ack,
        ));
        let slots = Arc::new(Semaphore::new(rt.prefetch));
        let (job_tx, mut job_rx) = mpsc::unbounded_channel();
        let fetcher = tokio::spawn(fetch_loop(Arc::clone(&rt), slots, job_tx));
        let run_slots = Arc::new(Semaphore::new(rt.concurrency));
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let mut running: JoinSet<JobEnd> = JoinSet::new();
        let mut permit: Option<OwnedSemaphorePermit> = None;
        let count_end = |end: std::result::Result<JobEnd, tokio::task::JoinError>| match end {
            Ok(JobEnd::Abandoned) => Stats::add(&stats.abandoned),
            Ok(JobEnd::Reported | JobEnd::LeaseLost) => {}
            Err(e) => tracing::error!(error = %e, "a job's task failed"),
        };

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(end) = running.join_next(), if !running.is_empty() => count_end(end),
                p = Arc::clone(&run_slots).acquire_owned(), if permit.is_none() => permit = p.ok(),
                job = job_rx.recv(), if permit.is_some() => match job {
                    Some(job) => {
                        let p = permit.take();
                        running.spawn(run_job(Arc::clone(&rt), job, p, ack_tx.clone(), abandon_rx.clone()));
                    }
                    None => {
                        tracing::error!("the fetcher stopped; shutting down");
                        break;
                    }
                },
            }
        }

        tracing::info!(worker_id = %rt.worker_id, running = running.len(), "worker shutting down");
        let started = Instant::now();
        // 1. Stop fetching.
        fetcher.abort();
        let _ = fetcher.await;
        // 2. Release what was fetched but not started.
        job_rx.close();
        while let Some(job) = job_rx.recv().await {
            let item = job.release_item();
            let lost = job.shared.is_lease_lost();
            job.keeper.abort();
            if !lost {
                let _ = ack_tx.send(Queued {
                    item,
                    origin: Origin::Unstarted,
                });
            }
        }
        // 3. Let running jobs finish, up to the deadline.
        let deadline = started + rt.shutdown_timeout;
        loop {
            tokio::select! {
                end = running.join_next() => match end {
                    Some(end) => count_end(end),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(running = running.len(), "shutdown timeout: abandoning the jobs still running");
                    let _ = abandon_tx.send(true);
                    while let Some(end) = running.join_next().await {
                        count_end(end);
                    }
                    break;
                }
            }
        }
        // 4. Deliver every acknowledgement.
        drop(ack_tx);
        let _ = give_up_tx.send(Some(Instant::now() + rt.shutdown_timeout));
        if let Err(e) = acker.await {
            tracing::error!(error = %e, "the acknowledgement task failed");
        }
        let report = ShutdownReport {
            completed: stats.completed.load(Ordering::Relaxed),
            failed: stats.failed.load(Ordering::Relaxed),
            released: stats.released.load(Ordering::Relaxed),
            cancelled: stats.cancelled.load(Ordering::Relaxed),
            snoozed: stats.snoozed.load(Ordering::Relaxed),
            abandoned: stats.abandoned.load(Ordering::Relaxed),
            lost: stats.lost.load(Ordering::Relaxed),
        };
        tracing::info!(worker_id = %rt.worker_id, report = %report, "worker stopped");
        report
    }
}

/// Ctrl-C, or on Unix SIGTERM as well.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C; running until dropped");
        std::future::pending::<()>().await;
    }
}

/// Fetches jobs while the worker has room for them, and hands them over on `tx`.
async fn fetch_loop(rt: Arc<Runtime>, slots: Arc<Semaphore>, tx: mpsc::UnboundedSender<Fetched>) {
    let mut failures = 0u32;
    // With a buffer beyond the concurrency, fetch once half of the buffer is free rather than as soon
    // as one job ends: the handlers still have the other half to run meanwhile, and the server makes
    // one claim of many jobs instead of many claims of one (the difference, on a busy queue, between a
    // transaction per job and one per dozens). Without a buffer, every free slot is worth a fetch.
    let low_water = ((rt.prefetch - rt.concurrency) / 2).clamp(1, MAX_CLAIM);
    loop {
        // Room for at least `low_water` jobs, then for as many as are free.
        let Ok(mut room) = Arc::clone(&slots)
            .acquire_many_owned(low_water as u32)
            .await
        else {
            return;
        };
        let more = slots
            .available_permits()
            .min(MAX_CLAIM - room.num_permits());
        if more > 0
            && let Ok(p) = Arc::clone(&slots).try_acquire_many_owned(more as u32)
        {
            room.merge(p);
        }
        let req = FetchRequest {
            queues: rt.queues.clone(),
            worker_id: rt.worker_id.clone(),
            max_jobs: u32::try_from(room.num_permits()).unwrap_or(1),
            wait_ms: u64::try_from(rt.poll_wait.as_millis()).unwrap_or(u64::MAX),
            heartbeat_ms: Some(rt.heartbeat_ms),
        };
        match rt.client.fetch(&req).await {
            Ok(resp) => {
                failures = 0;
                let received = Instant::now();
                for job in resp.jobs {
                    let slot = room.split(1);
                    if tx.send(fetched(&rt, job, received, slot)).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if e.is_retryable() {
                    tracing::warn!(error = %e, "fetch failed; will retry");
                } else {
                    tracing::error!(error = %e, "fetch refused; will retry");
                }
                drop(room);
                let delay = RetryPolicy::default().delay(failures, e.retry_after());
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn fetched(
    rt: &Runtime,
    job: FetchedJob,
    received: Instant,
    slot: Option<OwnedSemaphorePermit>,
) -> Fetched {
    tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, "fetched");
    let shared = Arc::new(JobShared::new(
        job,
        rt.worker_id.clone(),
        rt.client.clone(),
        received,
    ));
    let keeper = Keeper::start(rt.client.clone(), Arc::clone(&shared));
    Fetched {
        shared,
        keeper,
        _slot: slot,
    }
}

/// Runs one job to its end and queues its acknowledgement.
/// A handler task's end as the job's outcome: a panic or an aborted task is a failure.
fn handler_outcome(
    res: Result<Result<Option<serde_json::Value>, JobError>, tokio::task::JoinError>,
) -> Result<Option<serde_json::Value>, JobError> {
    match res {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(e)) => Err(e),
        Err(e) if e.is_panic() => Err(JobError::new(format!(
            "panicked: {}",
            panic_message(e.into_panic())
        ))),
        Err(e) => Err(JobError::new(format!("the handler's task ended: {e}"))),
    }
}

async fn run_job(
    rt: Arc<Runtime>,
    job: Fetched,
    _run_slot: Option<OwnedSemaphorePermit>,
    acks: mpsc::UnboundedSender<Queued>,
    mut abandon: watch::Receiver<bool>,
) -> JobEnd {
    let shared = Arc::clone(&job.shared);
    let j = &shared.job;
    let queue = |item: AckItem, origin: Origin| {
        // The receiver lives until every job has ended.
        let _ = acks.send(Queued { item, origin });
    };
    // It waited in the buffer: is it still ours, and still worth starting?
    if shared.is_lease_lost() {
        job.keeper.abort();
        return JobEnd::LeaseLost;
    }
    if *shared.cancel.borrow() || Instant::now() >= shared.deadline {
        // A released job whose cancel was requested is cancelled; one past its deadline is given back
        // unstarted (the server may have timed it out already: then the release is refused).
        let item = job.release_item();
        job.keeper.abort();
        queue(item, Origin::Unstarted);
        return JobEnd::Reported;
    }

    let Some(handler) = rt.handlers.get(&j.kind) else {
        // Loud, at error level: a job of a kind nobody handles goes dead once its attempts are spent,
        // and the usual cause (a producer or schedule naming a kind this deployment lacks) is fixed
        // only by someone who saw this line. The message sent to the server says the same, so that
        // the dead job's page explains itself.
        let handled = rt.handled_kinds();
        tracing::error!(
            job_id = %j.id,
            queue = %j.queue,
            kind = %j.kind,
            attempt = j.attempt,
            max_attempts = j.max_attempts,
            handled = %handled,
            "no handler for this job's kind: failing the attempt"
        );
        job.keeper.abort();
        queue(
            fail_item(
                j,
                &JobError::new(format!(
                    "no handler for kind {:?} on worker {} (it handles {handled})",
                    j.kind, rt.worker_id
                )),
            ),
            Origin::Ran,
        );
        return JobEnd::Reported;
    };

    let ctx = JobContext {
        shared: Arc::clone(&shared),
    };
    let mut task = tokio::spawn(handler.call(ctx));
    let mut lease_lost = shared.lease_lost.subscribe();
    let mut cancel = shared.cancel.subscribe();
    let outcome = tokio::select! {
        biased;
        res = &mut task => handler_outcome(res),
        _ = async { lease_lost.wait_for(|l| *l).await.map(|_| ()) } => {
            task.abort();
            job.keeper.abort();
            return JobEnd::LeaseLost;
        }
        // (`wait_for`'s guards are dropped at once, in each branch: none may live across the grace
        // below.)
        _ = async { cancel.wait_for(|c| *c).await.map(|_| ()) } => {
            // An operator cancelled the job. A handler that watches `JobContext::cancelled` gets the
            // grace to return on its own (its outcome is reported as usual); any other is stopped,
            // and the release ends the job `cancelled` on the server.
            match tokio::time::timeout(rt.cancel_grace, &mut task).await {
                Ok(res) => handler_outcome(res),
                Err(_) => {
                    task.abort();
                    tracing::info!(job_id = %j.id, "cancelled while running; handler stopped");
                    let item = job.release_item();
                    // What it logged before being stopped is worth keeping: it says how far it got.
                    job.keeper.stop_and_flush().await;
                    queue(item, Origin::Ran);
                    return JobEnd::Reported;
                }
            }
        }
        _ = tokio::time::sleep_until(shared.deadline) => {
            task.abort();
            Err(JobError::new(format!("timed out after {} ms", j.timeout_ms)))
        }
        _ = async { abandon.wait_for(|a| *a).await.map(|_| ()) } => {
            task.abort();
            let item = job.release_item();
            job.keeper.abort();
            queue(item, Origin::Abandoned);
            return JobEnd::Abandoned;
        }
    };
    match outcome {
        Ok(result) => {
            tracing::debug!(job_id = %j.id, "completed");
            // Lines logged since the last heartbeat go before the outcome; without any, nothing waits.
            if shared.has_logs() {
                job.keeper.stop_and_flush().await;
            } else {
                job.keeper.abort();
            }
            queue(
                AckItem::Complete {
                    id: j.id.clone(),
                    lease_token: j.lease_token.clone(),
                    result,
                },
                Origin::Ran,
            );
        }
        Err(e) => {
            tracing::debug!(job_id = %j.id, error = %e, retryable = e.is_retryable(), "failed");
            // Progress reported before the failure is kept, for the next attempt to resume from.
            job.keeper.stop_and_flush().await;
            if shared.is_lease_lost() {
                return JobEnd::LeaseLost;
            }
            let item = if e.is_snooze() {
                AckItem::Release {
                    id: j.id.clone(),
                    lease_token: j.lease_token.clone(),
                    delay_ms: e
                        .delay()
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                }
            } else {
                fail_item(j, &e)
            };
            queue(item, Origin::Ran);
        }
    }
    JobEnd::Reported
}

fn fail_item(job: &FetchedJob, e: &JobError) -> AckItem {
    AckItem::Fail {
        id: job.id.clone(),
        lease_token: job.lease_token.clone(),
        message: e.message().to_string(),
        retryable: e.is_retryable(),
        retry_after_ms: e
            .delay()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        stack: e.stack().map(str::to_string),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::ShutdownReport;

    #[test]
    fn a_report_reads_as_a_sentence() {
        let mut r = ShutdownReport::default();
        assert_eq!(r.to_string(), "0 completed");
        r.completed = 2;
        r.released = 3;
        r.lost = 1;
        assert_eq!(
            r.to_string(),
            "2 completed, 3 released unstarted, 1 with outcomes not delivered"
        );
    }
}
