//! [`WorkerBuilder`]: a worker's settings, its handlers by kind, and the checks [`WorkerBuilder::build`]
//! makes before a [`Worker`] exists. What the settings do once the worker runs is the parent module's
//! and its tasks'.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ack::AckSettings;
use super::job::{ErasedHandler, JobContext, JobError, Typed};
use super::{Runtime, Worker};
use crate::Client;
use crate::error::{Error, Result};

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
    sigterm_ends_run_until: bool,
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

    /// Fixes how many jobs the worker holds at once, running or waiting to run (least: the
    /// concurrency). Without it the worker paces itself, as the TypeScript SDK's `prefetch: 'auto'`
    /// does: it holds the jobs that run, and what ends at the rate its jobs end during a fetch's and an
    /// acknowledgement's round trip, twice over, all measured as it runs, up to 2,000 beyond the
    /// concurrency. Jobs that take seconds then leave about one job waiting; jobs that take
    /// microseconds fill a buffer of hundreds, so that the handlers never wait on a fetch. Either way,
    /// finished jobs whose outcomes wait for the server do not count, and past 2,000 of those the
    /// worker stops fetching until they are delivered. Waiting jobs keep their leases by heartbeat; on
    /// shutdown they are released.
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

    /// Says that the future given to [`Worker::run_until`] resolves on SIGTERM (the program listens
    /// for it itself), so that the worker reports draining on SIGTERM to the server (`errand
    /// audit`). [`Worker::run`] always does; by default `run_until` reports that it does not.
    pub fn run_until_ends_on_sigterm(mut self, yes: bool) -> Self {
        self.sigterm_ends_run_until = yes;
        self
    }

    /// How long a running job an operator cancelled may take to return on its own (watching
    /// [`JobContext::cancelled`]) before its handler is stopped (default 1 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// How many acknowledgements go in one `POST /v1/ack` at most (default 1,000, as in the TypeScript
    /// SDK: a busy worker's outcomes then cost the server one transaction per round trip).
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
        let prefetch = self.prefetch.map(|n| n.max(self.concurrency));
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
                sigterm_ends_run_until: self.sigterm_ends_run_until,
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
            sigterm_ends_run_until: false,
            cancel_grace: Duration::from_secs(1),
            ack_batch_size: 1000,
            ack_flush_interval: Duration::from_millis(5),
            handlers: HashMap::new(),
        }
    }
}
