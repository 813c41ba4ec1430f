//! Errand's PostgreSQL store: several stateless server nodes sharing one database.
//!
//! - **Claims** take the best waiting jobs with `FOR UPDATE SKIP LOCKED` over a partial index of the
//!   waiting jobs only, so concurrent claimers on any node pass over each other's rows, never claim a
//!   job twice, and stay fast however many finished rows the table holds.
//! - **Unique keys** are decided under a transaction-scoped advisory lock per `(queue, key)`, so that
//!   concurrent enqueues of one key, from any node, make exactly one job.
//! - **Wake-ups**: every transaction that makes jobs due notifies `<schema>_due` with the queue's name;
//!   each node listens on a connection of its own and hands the names to the server through
//!   [`Store::subscribe_due`], so that a fetch long-polling on one node wakes when another node enqueues.
//!   If that connection drops, the node reconnects and then announces [`ANY_QUEUE`].
//! - **Leadership** ([`Store::try_lead`]): a lease row per role, timed by the database's clock, so that
//!   maintenance runs on one node at a time and moves to another when its node dies.
//! - **Schema**: everything lives in one schema (`errand` by default), versioned by
//!   `<schema>.migrations` and migrated at connect under an advisory lock (see [`schema`]).
//!
//! Every other time is the one the engine passes, exactly as in the SQLite store: the engine owns the
//! clock, and the conformance suite drives it by hand.
//!
//! The driver is `tokio-postgres` with a `deadpool-postgres` pool: explicit SQL and no macros, and much
//! lighter to compile than the alternatives. No TLS: connect over a trusted network or a local socket.
//!
//! **Invariant:** no job semantics here. This crate turns the [`Store`] operations into SQL; the engine in
//! `errand-core` decides what they should be.

pub mod conn;
mod group;
mod listen;
mod ops;
mod schedules;
pub mod schema;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Pool, PoolError};

use errand_core::store::{
    Claimed, Inserted, JobClaim, JobDelete, JobInsert, JobList, JobPrune, JobSpec, LeaseRenew,
    Renewed, Store, Transition, Transitioned,
};
use errand_core::store::{
    DeadGroupRows, Fired, FlowRows, JobLogAppend, JobReplace, ScheduleFire, StoreObject,
};
use errand_core::{
    Error, Job, JobId, LogLine, QueueConfig, QueueInfo, QueueStats, Result, Schedule, Timestamp,
};

use conn::{connect_reason, describe, run, write};
use group::Group;
use listen::Listener;
use sql::Cx;
pub use sql::due_channel;

/// The payload of a due-jobs notification that stands for every queue: sent after the listening
/// connection was re-established, since notifications sent while it was down are lost.
pub const ANY_QUEUE: &str = "*";

/// Options for [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The schema holding Errand's tables (default `errand`): `[a-z_][a-z0-9_]{0,62}`. Several Errand
    /// deployments can share a database in schemas of their own.
    pub schema: String,
    /// Connections in the pool (default 16). The node also holds one more, for `LISTEN`.
    pub pool_size: usize,
    /// How long to wait for a connection to be made, or to be free in the pool (default 5 s).
    pub connect_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: "errand".to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// See [`PgStore::commit_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Requests (enqueues, acknowledgement batches) they answered with success.
    pub requests: u64,
}

/// The PostgreSQL store. Cheap to clone; the pool and the listening task stop when the last clone is
/// dropped.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cx: Arc<Cx>,
    /// Concurrent enqueues share transactions (see [`group`]).
    inserts: Group<JobSpec, Inserted>,
    /// Concurrent acknowledgements too.
    transitions: Group<Transition, Result<Transitioned>>,
    /// `host:port/db as user "u"`, for `Debug` and messages: never the password.
    target: String,
    listener: Listener,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.inner.target)
            .field("schema", &self.inner.cx.schema)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`), creates the schema if
    /// it is missing, brings it up to date under an advisory lock (two nodes starting together apply each
    /// migration once), and starts listening for due jobs.
    ///
    /// Errors are one line for a person, and never show the password: `cannot connect to PostgreSQL at
    /// 127.0.0.1:5432 as user "errand": connection refused`. A schema more than one version newer than
    /// this build knows is refused ([`Error::Unavailable`]).
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore> {
        if !schema::valid_schema_name(&options.schema) {
            return Err(Error::invalid(
                "schema",
                format!(
                    "{:?} is not a schema name Errand accepts: 1 to 63 of a-z, 0-9 and _, not \
                     starting with a digit",
                    options.schema
                ),
            ));
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::invalid("url", format!("not a PostgreSQL URL ({})", describe(&e)))
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("errand");
        }
        let (at, user) = conn::target(&config);
        let db = config.get_dbname().unwrap_or(&user).to_string();
        let timeout = options.connect_timeout;
        let cannot = |reason: String| {
            Error::Unavailable(format!(
                "cannot connect to PostgreSQL at {at} as user \"{user}\": {reason}"
            ))
        };

        let pool = conn::pool(config.clone(), options.pool_size, timeout)?;
        let mut client = pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => cannot(connect_reason(&e, timeout)),
            PoolError::Timeout(_) => cannot(format!("timed out after {}", conn::human(timeout))),
            other => cannot(other.to_string()),
        })?;
        schema::migrate(&mut client, &options.schema)
            .await
            .map_err(|e| match e {
                Error::Unavailable(m) => Error::Unavailable(m),
                other => Error::Unavailable(format!(
                    "cannot set up the schema \"{}\" in PostgreSQL at {at}/{db}: {other}",
                    options.schema
                )),
            })?;
        drop(client);

        let cx = Arc::new(Cx::new(&options.schema));
        let listener = Listener::start(config, cx.channel.clone())
            .await
            .map_err(|e| cannot(connect_reason(&e, timeout)))?;
        let inserts = Group::start(pool.clone(), cx.clone(), |tx, cx, jobs| {
            Box::pin(ops::job_insert(tx, cx, jobs))
        });
        let transitions = Group::start(pool.clone(), cx.clone(), |tx, cx, ts| {
            Box::pin(ops::job_transition(tx, cx, ts))
        });
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                cx,
                inserts,
                transitions,
                target: format!("{at}/{db} as user \"{user}\""),
                listener,
            }),
        })
    }

    /// How many shared transactions the group commit has committed for enqueues and acknowledgements,
    /// and how many requests they answered: requests per transaction is how much they were shared.
    pub fn commit_stats(&self) -> CommitStats {
        let mut stats = CommitStats::default();
        for c in [
            self.inner.inserts.counters(),
            self.inner.transitions.counters(),
        ] {
            stats.transactions += c.transactions.load(std::sync::atomic::Ordering::Relaxed);
            stats.requests += c.requests.load(std::sync::atomic::Ordering::Relaxed);
        }
        stats
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.cx.schema
    }

    fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    fn cx(&self) -> &Cx {
        &self.inner.cx
    }
}

#[async_trait]
impl Store for PgStore {
    async fn job_insert(&self, p: JobInsert) -> Result<Vec<Inserted>> {
        if p.jobs.is_empty() {
            return Ok(Vec::new());
        }
        // A queue at its `max_waiting` refuses; in a shared transaction that refusal would roll back
        // and re-run every request of the group one by one, just when the queue is busiest. Bounded
        // inserts go in a transaction of their own.
        if p.jobs.iter().any(|j| j.max_waiting.is_some()) {
            return write(self.pool(), self.cx(), &p.jobs, |tx, cx, jobs| {
                Box::pin(ops::job_insert(tx, cx, jobs))
            })
            .await;
        }
        self.inner.inserts.run(p.jobs).await
    }

    async fn job_claim(&self, p: JobClaim) -> Result<Claimed> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_claim(tx, cx, p))
        })
        .await
    }

    async fn lease_renew(&self, p: LeaseRenew) -> Result<Renewed> {
        run(self.pool(), self.cx(), &p, |c, cx, p| {
            Box::pin(ops::lease_renew(c, cx, p))
        })
        .await
    }

    async fn job_transition(&self, p: Vec<Transition>) -> Result<Vec<Result<Transitioned>>> {
        if p.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.transitions.run(p).await
    }

    async fn job_request_cancel(&self, id: JobId) -> Result<Transitioned> {
        run(self.pool(), self.cx(), &id, |c, cx, id| {
            Box::pin(ops::job_request_cancel(c, cx, *id))
        })
        .await
    }

    async fn job_promote_due(
        &self,
        queue: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(JobId, Transitioned)>> {
        let p = (queue.to_string(), now, limit);
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_promote_due(tx, cx, p))
        })
        .await
    }

    async fn job_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        run(self.pool(), self.cx(), &(now, limit), |c, cx, p| {
            Box::pin(ops::job_expired(c, cx, p.0, p.1))
        })
        .await
    }

    async fn job_ttl_passed(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        run(self.pool(), self.cx(), &(now, limit), |c, cx, p| {
            Box::pin(ops::job_ttl_passed(c, cx, p.0, p.1))
        })
        .await
    }

    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        run(self.pool(), self.cx(), &id, |c, cx, id| {
            Box::pin(ops::job_get(c, cx, *id))
        })
        .await
    }

    async fn job_list(&self, p: JobList) -> Result<Vec<Job>> {
        run(self.pool(), self.cx(), &p, |c, cx, p| {
            Box::pin(ops::job_list(c, cx, p))
        })
        .await
    }

    async fn job_prune(&self, p: JobPrune) -> Result<u64> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_prune(tx, cx, p))
        })
        .await
    }

    async fn job_delete(&self, p: JobDelete) -> Result<u64> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_delete(tx, cx, p))
        })
        .await
    }

    async fn queue_get(&self, name: &str) -> Result<Option<QueueInfo>> {
        run(self.pool(), self.cx(), name, |c, cx, name| {
            Box::pin(ops::queue_get(c, cx, name))
        })
        .await
    }

    async fn queue_list(&self) -> Result<Vec<QueueInfo>> {
        run(self.pool(), self.cx(), &(), |c, cx, ()| {
            Box::pin(ops::queue_list(c, cx))
        })
        .await
    }

    async fn queue_put(&self, name: &str, config: QueueConfig) -> Result<()> {
        let p = (name.to_string(), config);
        run(self.pool(), self.cx(), &p, |c, cx, p| {
            Box::pin(ops::queue_put(c, cx, p))
        })
        .await
    }

    async fn queue_set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let p = (name.to_string(), paused);
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::queue_set_paused(tx, cx, p))
        })
        .await
    }

    async fn audit_append(&self, e: errand_core::AuditEntry) -> Result<()> {
        run(self.pool(), self.cx(), &e, |c, cx, e| {
            Box::pin(ops::audit_append(c, cx, e))
        })
        .await
    }

    async fn audit_list(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<errand_core::AuditEntry>> {
        run(self.pool(), self.cx(), &(before, limit), |c, cx, p| {
            Box::pin(ops::audit_list(c, cx, p.0, p.1))
        })
        .await
    }

    async fn audit_prune(&self, before: Timestamp, limit: usize) -> Result<u64> {
        // One statement: running it again after a lost connection removes nothing more than it would.
        run(self.pool(), self.cx(), &(before, limit), |c, cx, p| {
            Box::pin(ops::audit_prune(c, cx, p.0, p.1))
        })
        .await
    }

    async fn queue_stats_all(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        run(self.pool(), self.cx(), &now, |c, cx, now| {
            Box::pin(ops::queue_stats_all(c, cx, *now))
        })
        .await
    }

    async fn flow_state(&self, queue: &str, limit: usize) -> Result<FlowRows> {
        run(self.pool(), self.cx(), &(queue, limit), |c, cx, p| {
            Box::pin(ops::flow_state(c, cx, p.0, p.1))
        })
        .await
    }

    async fn footprint(&self) -> Result<Vec<StoreObject>> {
        run(self.pool(), self.cx(), &(), |c, cx, _| {
            Box::pin(ops::footprint(c, cx))
        })
        .await
    }

    async fn queue_stats(&self, name: &str, now: Timestamp) -> Result<QueueStats> {
        run(self.pool(), self.cx(), &(name, now), |c, cx, p| {
            Box::pin(ops::queue_stats(c, cx, p.0, p.1))
        })
        .await
    }

    async fn dead_groups(&self, name: &str, limit: usize) -> Result<DeadGroupRows> {
        run(self.pool(), self.cx(), &(name, limit), |c, cx, p| {
            Box::pin(ops::dead_groups(c, cx, p.0, p.1))
        })
        .await
    }

    async fn job_replace(&self, p: JobReplace) -> Result<bool> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_replace(tx, cx, p))
        })
        .await
    }

    async fn job_log_append(&self, p: JobLogAppend) -> Result<()> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(ops::job_log_append(tx, cx, p))
        })
        .await
    }

    async fn job_logs(&self, id: JobId) -> Result<Vec<LogLine>> {
        run(self.pool(), self.cx(), &id, |c, cx, id| {
            Box::pin(ops::job_logs(c, cx, *id))
        })
        .await
    }

    async fn job_children(&self, parent: JobId, limit: usize) -> Result<Vec<Job>> {
        run(self.pool(), self.cx(), &(parent, limit), |c, cx, p| {
            Box::pin(ops::job_children(c, cx, p.0, p.1))
        })
        .await
    }

    async fn schedule_put(&self, s: Schedule) -> Result<()> {
        run(self.pool(), self.cx(), &s, |c, cx, s| {
            Box::pin(schedules::put(c, cx, s))
        })
        .await
    }

    async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>> {
        run(self.pool(), self.cx(), name, |c, cx, name| {
            Box::pin(schedules::get_one(c, cx, name))
        })
        .await
    }

    async fn schedule_list(&self) -> Result<Vec<Schedule>> {
        run(self.pool(), self.cx(), &(), |c, cx, ()| {
            Box::pin(schedules::list(c, cx))
        })
        .await
    }

    async fn schedule_delete(&self, name: &str) -> Result<bool> {
        run(self.pool(), self.cx(), name, |c, cx, name| {
            Box::pin(schedules::delete(c, cx, name))
        })
        .await
    }

    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool> {
        let p = (name.to_string(), paused, next_run_at, now);
        run(self.pool(), self.cx(), &p, |c, cx, p| {
            Box::pin(schedules::set_paused(c, cx, p))
        })
        .await
    }

    async fn schedule_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        run(self.pool(), self.cx(), &(now, limit), |c, cx, p| {
            Box::pin(schedules::due(c, cx, p.0, p.1))
        })
        .await
    }

    async fn schedule_fire(&self, p: ScheduleFire) -> Result<Fired> {
        write(self.pool(), self.cx(), &p, |tx, cx, p| {
            Box::pin(schedules::fire(tx, cx, p))
        })
        .await
    }

    async fn try_lead(&self, role: &str, holder: &str, ttl_ms: u64) -> Result<bool> {
        run(
            self.pool(),
            self.cx(),
            &(role, holder, ttl_ms),
            |c, cx, p| Box::pin(ops::try_lead(c, cx, p.0, p.1, p.2)),
        )
        .await
    }

    fn subscribe_due(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.inner.listener.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use errand_core::{Engine, EngineConfig, ManualClock, NewJob};
    use errand_testkit::{TestSchema, test_url};

    /// A node that starts idle runs its claim on an empty table many times before jobs arrive; the
    /// claim must still find the claimed rows by their ids once there are thousands of waiting jobs,
    /// not through `jobs_by_state` (see `conn::PER_CONNECTION`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_run_first_on_an_empty_table_is_planned_again_for_a_full_one() {
        let Some(url) = test_url().await else { return };
        let schema = TestSchema::new(&url).await;
        let store = PgStore::connect(
            &url,
            PgOptions {
                schema: schema.name().to_string(),
                pool_size: 2,
                ..PgOptions::default()
            },
        )
        .await
        .unwrap();
        let c = store.pool().get().await.unwrap();
        c.batch_execute(&format!(
            "PREPARE claim(text, text, text, bigint, bigint, bigint) AS {}",
            store.cx().sql.claim_one
        ))
        .await
        .unwrap();
        let claim = "EXECUTE claim('q', 't', 'w', 0, 1000, NULL)";
        for _ in 0..10 {
            c.batch_execute(claim).await.unwrap();
        }
        let engine = Engine::new(
            Arc::new(store.clone()),
            Arc::new(ManualClock::at_fixed_start()),
            EngineConfig::default(),
        );
        let jobs = (0..5_000)
            .map(|n| NewJob::new("q", "k", serde_json::json!({ "n": n })))
            .collect();
        engine.enqueue_many(jobs).await.unwrap();
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN {claim}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("jobs_pkey") && !plan.contains("jobs_by_state"),
            "{plan}"
        );
    }
}
