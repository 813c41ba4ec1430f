//! Errand's embedded store: one SQLite file (WAL mode) that needs no other process.
//!
//! One writer thread owns the only write connection and commits concurrent operations together (group
//! commit; see [`conn`]), so many enqueues and acknowledgements share one fsync. Reads run on a small
//! pool of reader connections. In the default [`SyncMode::Full`] every acknowledged write survives a
//! power cut; [`SyncMode::Normal`] trades the last moments before a power cut for speed.
//!
//! A lock file (`<database>.lock`) keeps a second process from opening the same database: two writers
//! would break the single-writer design that makes claims exactly-once.
//!
//! **Invariant:** no job semantics here. This crate turns the [`Store`] operations into SQL; the engine
//! in `errand-core` decides what they should be.

pub mod conn;
mod ops;
mod schedules;
pub mod schema;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use errand_core::store::{
    Claimed, Inserted, JobClaim, JobDelete, JobInsert, JobList, JobPrune, LeaseRenew, Renewed,
    Store, Transition, Transitioned,
};
use errand_core::store::{
    DeadGroupRows, Fired, FlowRows, JobLogAppend, JobReplace, ScheduleFire, StoreObject,
};
use errand_core::{
    Error, Job, JobId, LogLine, QueueConfig, QueueInfo, QueueStats, Result, Schedule, Timestamp,
};

use conn::{Readers, Writer, open_connection};
pub use conn::{SyncMode, WriterStats};

/// Options for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub sync: SyncMode,
    /// Read connections kept open (default 4).
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            sync: SyncMode::Full,
            readers: 4,
        }
    }
}

/// The SQLite store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Fields drop in order: the writer thread is joined before the lock below is released.
    writer: Writer,
    readers: Readers,
    path: PathBuf,
    // Held for the store's lifetime: the advisory lock that keeps other processes out.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// Fails clearly if another process has the database open, if the file is not a database, or if its
    /// schema is newer than this build understands.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock_path = lock_path(&path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot open lock file {}: {e}",
                    lock_path.display()
                ))
            })?;
        lock.try_lock().map_err(|_| {
            Error::Unavailable(format!(
                "{} is in use by another Errand process (lock file {})",
                path.display(),
                lock_path.display()
            ))
        })?;
        let mut conn = open_connection(&path, options.sync, false)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Writer::start(conn, open_connection(&path, options.sync, false)?)?,
                readers: Readers::new(&path, options.sync, options.readers.max(1)),
                path,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many transactions the writer committed, and how many operations they carried.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[async_trait]
impl Store for SqliteStore {
    async fn job_insert(&self, p: JobInsert) -> Result<Vec<Inserted>> {
        let rows = ops::insert_rows(&p)?;
        self.inner
            .writer
            .write(move |c| ops::job_insert(c, &p, &rows))
            .await
    }

    async fn job_claim(&self, p: JobClaim) -> Result<Claimed> {
        self.inner
            .writer
            .write(move |c| ops::job_claim(c, &p))
            .await?
            .decode()
    }

    async fn lease_renew(&self, p: LeaseRenew) -> Result<Renewed> {
        self.inner
            .writer
            .write(move |c| ops::lease_renew(c, &p))
            .await
    }

    async fn job_transition(&self, p: Vec<Transition>) -> Result<Vec<Result<Transitioned>>> {
        let completions = ops::completions_json(&p)?;
        self.inner
            .writer
            .write(move |c| ops::job_transition(c, &p, &completions))
            .await
    }

    async fn job_request_cancel(&self, id: JobId) -> Result<Transitioned> {
        self.inner
            .writer
            .write(move |c| ops::job_request_cancel(c, id))
            .await
    }

    async fn job_promote_due(
        &self,
        queue: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(JobId, Transitioned)>> {
        let queue = queue.to_string();
        self.inner
            .writer
            .write(move |c| ops::job_promote_due(c, &queue, now, limit))
            .await
    }

    async fn job_expired(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        self.inner
            .readers
            .read(move |c| ops::job_expired(c, now, limit))
            .await
            .and_then(ops::decode_all)
    }

    async fn job_ttl_passed(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        self.inner
            .readers
            .read(move |c| ops::job_ttl_passed(c, now, limit))
            .await
            .and_then(ops::decode_all)
    }

    async fn job_get(&self, id: JobId) -> Result<Option<Job>> {
        self.inner
            .readers
            .read(move |c| ops::job_get(c, id))
            .await?
            .map(ops::JobRow::decode)
            .transpose()
    }

    async fn job_list(&self, p: JobList) -> Result<Vec<Job>> {
        self.inner
            .readers
            .read(move |c| ops::job_list(c, &p))
            .await
            .and_then(ops::decode_all)
    }

    async fn job_prune(&self, p: JobPrune) -> Result<u64> {
        self.inner
            .writer
            .write(move |c| ops::job_prune(c, &p))
            .await
    }

    async fn job_delete(&self, p: JobDelete) -> Result<u64> {
        self.inner
            .writer
            .write(move |c| ops::job_delete(c, &p))
            .await
    }

    async fn queue_get(&self, name: &str) -> Result<Option<QueueInfo>> {
        let name = name.to_string();
        self.inner
            .readers
            .read(move |c| ops::queue_get(c, &name))
            .await
    }

    async fn queue_list(&self) -> Result<Vec<QueueInfo>> {
        self.inner.readers.read(ops::queue_list).await
    }

    async fn queue_put(&self, name: &str, config: QueueConfig) -> Result<()> {
        let name = name.to_string();
        self.inner
            .writer
            .write(move |c| ops::queue_put(c, &name, &config))
            .await
    }

    async fn queue_set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let name = name.to_string();
        self.inner
            .writer
            .write(move |c| ops::queue_set_paused(c, &name, paused))
            .await
    }

    async fn audit_append(&self, e: errand_core::AuditEntry) -> Result<()> {
        self.inner
            .writer
            .write(move |c| ops::audit_append(c, &e))
            .await
    }

    async fn audit_list(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<errand_core::AuditEntry>> {
        self.inner
            .readers
            .read(move |c| ops::audit_list(c, before, limit))
            .await
    }

    async fn audit_prune(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.inner
            .writer
            .write(move |c| ops::audit_prune(c, before, limit))
            .await
    }

    async fn queue_stats_all(&self, now: Timestamp) -> Result<Vec<QueueStats>> {
        self.inner
            .readers
            .read(move |c| ops::queue_stats_all(c, now))
            .await
    }

    async fn flow_state(&self, queue: &str, limit: usize) -> Result<FlowRows> {
        let queue = queue.to_string();
        self.inner
            .readers
            .read(move |c| ops::flow_state(c, &queue, limit))
            .await
    }

    async fn footprint(&self) -> Result<Vec<StoreObject>> {
        let mut out = Vec::new();
        let wal = PathBuf::from(format!("{}-wal", self.inner.path.display()));
        for (path, kind) in [(&self.inner.path, "file"), (&wal, "wal")] {
            // The WAL is absent between a checkpoint's truncation and the next write: 0 bytes.
            let bytes = match std::fs::metadata(path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(Error::Backend(Box::new(e))),
            };
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            out.push(StoreObject { name, kind, bytes });
        }
        Ok(out)
    }

    async fn queue_stats(&self, name: &str, now: Timestamp) -> Result<QueueStats> {
        let name = name.to_string();
        self.inner
            .readers
            .read(move |c| ops::queue_stats(c, &name, now))
            .await
    }

    async fn dead_groups(&self, name: &str, limit: usize) -> Result<DeadGroupRows> {
        let name = name.to_string();
        self.inner
            .readers
            .read(move |c| ops::dead_groups(c, &name, limit))
            .await
    }

    async fn job_replace(&self, p: JobReplace) -> Result<bool> {
        self.inner
            .writer
            .write(move |c| ops::job_replace(c, &p))
            .await
    }

    async fn job_log_append(&self, p: JobLogAppend) -> Result<()> {
        self.inner
            .writer
            .write(move |c| ops::job_log_append(c, &p))
            .await
    }

    async fn job_logs(&self, id: JobId) -> Result<Vec<LogLine>> {
        self.inner.readers.read(move |c| ops::job_logs(c, id)).await
    }

    async fn job_children(&self, parent: JobId, limit: usize) -> Result<Vec<Job>> {
        let rows = self
            .inner
            .readers
            .read(move |c| ops::job_children(c, parent, limit))
            .await?;
        ops::decode_all(rows)
    }

    async fn schedule_put(&self, s: Schedule) -> Result<()> {
        let def = schedules::def_text(&s)?;
        self.inner
            .writer
            .write(move |c| schedules::put(c, &s, &def))
            .await
    }

    async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>> {
        let name = name.to_string();
        self.inner
            .readers
            .read(move |c| schedules::get(c, &name))
            .await?
            .map(schedules::ScheduleRow::decode)
            .transpose()
    }

    async fn schedule_list(&self) -> Result<Vec<Schedule>> {
        schedules::decode_all(self.inner.readers.read(schedules::list).await?)
    }

    async fn schedule_delete(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.inner
            .writer
            .write(move |c| schedules::delete(c, &name))
            .await
    }

    async fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        next_run_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool> {
        let name = name.to_string();
        self.inner
            .writer
            .write(move |c| schedules::set_paused(c, &name, paused, next_run_at, now))
            .await
    }

    async fn schedule_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>> {
        schedules::decode_all(
            self.inner
                .readers
                .read(move |c| schedules::due(c, now, limit))
                .await?,
        )
    }

    async fn schedule_fire(&self, p: ScheduleFire) -> Result<Fired> {
        let insert = match &p.job {
            Some(job) => {
                let jobs = JobInsert {
                    jobs: vec![job.clone()],
                };
                let rows = ops::insert_rows(&jobs)?;
                Some((jobs, rows))
            }
            None => None,
        };
        self.inner
            .writer
            .write(move |c| schedules::fire(c, &p, insert.as_ref()))
            .await
    }
}
