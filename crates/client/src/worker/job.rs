//! What a handler sees ([`JobContext`]) and returns ([`JobError`]), and how typed handlers are erased.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use errand_protocol::FetchedJob;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// Why a handler did not succeed. Build one with [`JobError::new`] (retryable), [`JobError::fatal`]
/// (straight to the dead-letter queue) or [`JobError::retry_after`], or let `?` convert any
/// [`std::error::Error`] (retryable, with its chain of causes in the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    snooze: bool,
    stack: Option<String>,
}

impl JobError {
    /// A failure that a later attempt may not repeat: the job is retried after its backoff while it has
    /// attempts left.
    pub fn new(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retryable: true,
            retry_after: None,
            snooze: false,
            stack: None,
        }
    }

    /// A failure no retry can help (bad input, a refused card): the job goes to the dead-letter queue
    /// whatever its attempts.
    pub fn fatal(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            retryable: false,
            retry_after: None,
            snooze: false,
            stack: None,
        }
    }

    /// Not a failure: the job could not run yet (a provider answered 429 with `Retry-After`). It is
    /// given back to run again no sooner than `delay`, **without using an attempt**, and nothing is
    /// recorded among its errors. A job snoozing forever never dies: pair it with a budget of your own
    /// if the provider may never say yes.
    pub fn snooze(delay: Duration) -> Self {
        JobError {
            message: format!("snoozed for {} ms", delay.as_millis()),
            retryable: true,
            retry_after: Some(delay),
            snooze: true,
            stack: None,
        }
    }

    /// Whether this is a [`JobError::snooze`].
    pub fn is_snooze(&self) -> bool {
        self.snooze
    }

    /// A retryable failure to be retried no sooner than `delay` (a provider's `Retry-After`), whatever
    /// the backoff policy says.
    pub fn retry_after(delay: Duration) -> Self {
        JobError::new(format!("retry requested in {} ms", delay.as_millis()))
            .with_retry_after(delay)
    }

    /// This failure, retried no sooner than `delay`.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// This failure with where it happened (a stack trace, a backtrace), shown with the error on
    /// the job's page.
    pub fn with_stack(mut self, stack: impl Into<String>) -> Self {
        self.stack = Some(stack.into());
        self
    }

    /// The message kept on the job.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where it failed, if known.
    pub fn stack(&self) -> Option<&str> {
        self.stack.as_deref()
    }

    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The delay asked for by [`JobError::retry_after`] or [`JobError::with_retry_after`].
    pub fn delay(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    /// A retryable failure whose message is the error and its causes: `a: b: c`. Its stack is where
    /// the `?` converted it, when backtraces are on (`RUST_BACKTRACE=1` or `RUST_LIB_BACKTRACE=1`).
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        let trace = std::backtrace::Backtrace::capture();
        let mut err = JobError::new(message);
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            err.stack = Some(trace.to_string());
        }
        err
    }
}

/// The job a handler runs, and its link to the worker: progress, cancellation, deadline. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    pub(crate) shared: Arc<JobShared>,
}

/// Log lines kept waiting to be sent, at most (the server keeps no more per job).
pub(crate) const MAX_PENDING_LOGS: usize = 200;

/// What the handler, the heartbeat task and the job's supervisor share.
pub(crate) struct JobShared {
    pub(crate) job: FetchedJob,
    pub(crate) worker_id: String,
    /// For the handler's own reads (a flow parent's children).
    pub(crate) client: crate::Client,
    /// The local instant the fetch's answer came.
    pub(crate) received: Instant,
    /// The local instant of the attempt's deadline: the fetch's answer plus the job's `timeout_ms`.
    pub(crate) deadline: Instant,
    /// Its heartbeat task, once one is due (`lease.rs`).
    pub(crate) keeper: Mutex<super::lease::KeeperSlot>,
    /// The worker's runtime, where that task runs: a handler may report progress from a thread of
    /// its own (a CPU-bound step on a thread pool), which has no runtime to spawn on.
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) cancel: watch::Sender<bool>,
    pub(crate) lease_lost: watch::Sender<bool>,
    pub(crate) progress: Mutex<Option<Value>>,
    /// Log lines not yet sent (at most [`MAX_PENDING_LOGS`], the newest).
    pub(crate) logs: Mutex<Vec<String>>,
    /// A batch of log lines is being sent.
    pub(crate) logs_in_flight: std::sync::atomic::AtomicBool,
    /// Progress or a log line is waiting to be sent.
    pub(crate) progress_set: Notify,
}

impl JobShared {
    pub(crate) fn new(
        job: FetchedJob,
        worker_id: String,
        client: crate::Client,
        received: Instant,
    ) -> Self {
        let deadline = received + Duration::from_millis(job.timeout_ms);
        JobShared {
            job,
            worker_id,
            client,
            received,
            deadline,
            keeper: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            cancel: watch::channel(false).0,
            lease_lost: watch::channel(false).0,
            progress: Mutex::new(None),
            logs: Mutex::new(Vec::new()),
            logs_in_flight: std::sync::atomic::AtomicBool::new(false),
            progress_set: Notify::new(),
        }
    }

    /// The progress not yet sent, taken.
    pub(crate) fn take_progress(&self) -> Option<Value> {
        self.progress.lock().map(|mut p| p.take()).unwrap_or(None)
    }

    /// Puts back progress whose heartbeat failed, unless newer progress came meanwhile.
    pub(crate) fn restore_progress(&self, value: Value) {
        if let Ok(mut p) = self.progress.lock()
            && p.is_none()
        {
            *p = Some(value);
        }
    }

    /// The log lines not yet sent, taken.
    pub(crate) fn take_logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// Lines are waiting to be sent, or being sent.
    pub(crate) fn has_logs(&self) -> bool {
        self.logs_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            || self.logs.lock().map(|l| !l.is_empty()).unwrap_or(false)
    }

    pub(crate) fn is_lease_lost(&self) -> bool {
        *self.lease_lost.borrow()
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id())
            .field("queue", &self.queue())
            .field("kind", &self.kind())
            .field("attempt", &self.attempt())
            .field("max_attempts", &self.max_attempts())
            .finish()
    }
}

impl JobContext {
    fn job(&self) -> &FetchedJob {
        &self.shared.job
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.job().id
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.job().queue
    }

    /// Its kind (the handler's name).
    pub fn kind(&self) -> &str {
        &self.job().kind
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.job().attempt
    }

    /// How many attempts the job may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.job().max_attempts
    }

    /// Whether this is the job's last attempt (a retryable failure now makes it dead).
    pub fn is_last_attempt(&self) -> bool {
        self.attempt() >= self.max_attempts()
    }

    /// The same on every attempt: pass it to payment, mint and e-mail APIs so that a retried job does not
    /// do their work twice.
    pub fn idempotency_key(&self) -> &str {
        &self.job().idempotency_key
    }

    /// The job's priority (lower runs first).
    pub fn priority(&self) -> i32 {
        self.job().priority
    }

    /// The tenant, if the job has one.
    pub fn group_key(&self) -> Option<&str> {
        self.job().group_key.as_deref()
    }

    /// When the job was enqueued (ms since the epoch, server clock).
    pub fn created_at(&self) -> i64 {
        self.job().created_at
    }

    /// The worker running the job.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// When the attempt times out, as a local instant: the handler is stopped then and the attempt
    /// reported as failed ("timed out").
    pub fn deadline(&self) -> Instant {
        self.shared.deadline
    }

    /// When the attempt times out on the server's clock (ms since the epoch).
    pub fn deadline_at(&self) -> i64 {
        self.job().deadline_at
    }

    /// How long one attempt may run.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.job().timeout_ms)
    }

    /// The time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.shared
            .deadline
            .saturating_duration_since(Instant::now())
    }

    /// The progress an earlier attempt reported, to resume from.
    pub fn previous_progress(&self) -> Option<&RawValue> {
        self.job().progress.as_deref()
    }

    /// Reports progress (any JSON, at most 64 KiB): it replaces the job's progress with the next
    /// heartbeat, which this hastens. Only the latest value is sent when several come quickly. Progress
    /// reported before a failure is sent before the failure, so that the next attempt can resume from it.
    pub fn progress(&self, value: Value) {
        if let Ok(mut p) = self.shared.progress.lock() {
            *p = Some(value);
        }
        self.shared.progress_set.notify_one();
        super::lease::wake(&self.shared);
    }

    /// A flow parent's children, in the order they were enqueued, with their states and results
    /// (`GET /v1/jobs/{id}/children`): the parent runs once each completed (or, with
    /// `parent_on_dead: release`, ended otherwise).
    pub async fn children(&self) -> crate::Result<Vec<errand_protocol::JobView>> {
        Ok(self.shared.client.children(&self.job().id).await?.jobs)
    }

    /// Appends a line to the job's log (`GET /v1/jobs/{id}/logs`, `errand job logs`). Lines go to the
    /// server within about 100 ms, in batches alongside a heartbeat, and before the job's outcome; the
    /// server cuts a line at 2 KiB and keeps a job's latest 200 lines, across attempts. Sending is best
    /// effort: lines the server cannot take are dropped (and logged), never retried at the expense of the
    /// job's lease, and at most the newest 200 wait here.
    pub fn log(&self, line: impl Into<String>) {
        if let Ok(mut l) = self.shared.logs.lock() {
            if l.len() >= MAX_PENDING_LOGS {
                l.remove(0);
            }
            l.push(line.into());
        }
        self.shared.progress_set.notify_one();
        super::lease::wake(&self.shared);
    }

    /// Whether an operator asked to cancel the job (learnt on a heartbeat).
    pub fn is_cancelled(&self) -> bool {
        *self.shared.cancel.borrow()
    }

    /// Resolves when an operator asks to cancel the job (learnt on a heartbeat, so within one heartbeat
    /// interval). The handler should then stop and return an error: the server cancels the job instead
    /// of retrying it.
    pub async fn cancelled(&self) {
        let mut rx = self.shared.cancel.subscribe();
        if rx.wait_for(|c| *c).await.is_err() {
            // The sender lives as long as `self`; this is not reached.
            std::future::pending::<()>().await;
        }
    }
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A handler with its payload and result types erased.
pub(crate) trait ErasedHandler: Send + Sync {
    fn call(&self, ctx: JobContext) -> BoxFuture<Result<Option<Value>, JobError>>;
}

/// A typed handler: decodes the payload as `T`, serializes the result `R`.
pub(crate) struct Typed<F, T, R> {
    f: F,
    _types: PhantomData<fn(T) -> R>,
}

impl<F, T, R> Typed<F, T, R> {
    pub(crate) fn new(f: F) -> Self {
        Typed {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, Fut, T, R> ErasedHandler for Typed<F, T, R>
where
    F: Fn(JobContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    fn call(&self, ctx: JobContext) -> BoxFuture<Result<Option<Value>, JobError>> {
        let payload = match serde_json::from_str::<T>(ctx.shared.job.payload.get()) {
            Ok(p) => p,
            Err(e) => {
                // The same payload will not decode next time either.
                let e = JobError::fatal(format!(
                    "the payload does not decode as {}: {e}",
                    std::any::type_name::<T>()
                ));
                return Box::pin(async move { Err(e) });
            }
        };
        let fut = (self.f)(ctx, payload);
        Box::pin(async move {
            let out = fut.await?;
            match serde_json::to_value(out) {
                Ok(Value::Null) => Ok(None),
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(JobError::fatal(format!(
                    "the result does not serialize: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn errors_convert_with_their_causes_and_keep_their_kind() {
        let e: JobError = Outer(std::io::Error::other("inner")).into();
        assert_eq!(e.message(), "outer: inner");
        assert!(e.is_retryable());
        assert!(!JobError::fatal("x").is_retryable());
        let r = JobError::retry_after(Duration::from_secs(2));
        assert!(r.is_retryable());
        assert_eq!(r.delay(), Some(Duration::from_secs(2)));
    }
}
