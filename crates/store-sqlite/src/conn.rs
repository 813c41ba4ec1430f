//! Connections: one writer thread that commits concurrent operations together, and a pool of readers.
//!
//! **Group commit.** Every write is a closure sent to the writer thread. The thread takes all the
//! closures waiting, runs them in one transaction, commits once — one fsync of the WAL — and only then
//! answers each caller. Under load, many enqueues and acknowledgements share one sync; alone, an
//! operation pays one sync, never a timer.
//!
//! **One operation's failure is its own.** An operation that fails without having written anything (a
//! stale lease, a state conflict: the usual failures) simply answers with its error. One that fails after
//! writing rows rolls back the whole group; it answers with its error and the others run again in a new
//! transaction. So operations must be safe to run twice (`FnMut`, no effects outside the database), and
//! no statement or savepoint journal is needed — statements say `OR FAIL`, and the group's rollback undoes
//! a half-done one.
//!
//! **Checkpoints** run on a thread and connection of their own (`PASSIVE`, after every
//! [`CHECKPOINT_EVERY`] commits and at least once a second), not inside a commit of the writer: copying a
//! WAL of thousands of pages back into the database takes long enough to stall every waiting operation
//! behind it. A passive checkpoint never blocks the writer. The writer's own automatic checkpoint stays
//! as a backstop, at a threshold ([`WRITER_AUTOCHECKPOINT`] pages) reached only if the thread falls behind.
//!
//! **Reads** run on a small pool of connections on tokio's blocking threads. WAL mode lets them read a
//! consistent snapshot while the writer writes; a write is visible to every read that starts after the
//! write was answered.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use errand_core::{Error, Result};

/// How durable an acknowledged write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every acknowledged write survives a power cut: the WAL is fsynced at every commit. The default.
    #[default]
    Full,
    /// Acknowledged writes survive a crash of the process but the last ones may be lost in a power cut
    /// (the WAL is fsynced only at checkpoints). Faster; never the default.
    Normal,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

/// The most operations committed together; bounds the latency one commit adds to its first caller.
const MAX_GROUP: usize = 512;

/// One write as the writer thread sees it.
trait WriteOp: Send {
    /// Runs inside the group's transaction; may run again if another operation rolls the group back.
    fn run(&mut self, conn: &Connection) -> Result<()>;
    /// Answers the caller: with the operation's output if `outcome` is `Ok` (the group committed).
    fn answer(self: Box<Self>, outcome: Result<()>);
}

struct Op<T, F> {
    f: F,
    out: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnMut(&Connection) -> Result<T> + Send> WriteOp for Op<T, F> {
    fn run(&mut self, conn: &Connection) -> Result<()> {
        self.out = Some((self.f)(conn)?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<()>) {
        let Op { out, reply, .. } = *self;
        let res = outcome.and_then(|()| {
            out.ok_or_else(|| Error::Unavailable("write produced no result".into()))
        });
        let _ = reply.send(res);
    }
}

/// How the message of an error begins when the write may have been made durable all the same: the
/// caller must not take it as refused (see `commit_failed`).
pub const OUTCOME_UNKNOWN: &str = "the outcome is unknown";

/// What a failed `COMMIT` tells its callers. A failed sync is the one failure after which the group may
/// be durable: its frames, commit frame included, were written to the WAL before the sync, and a sync
/// that fails does not say which of them reached the disk (Linux may have written some or all before
/// reporting the error, and keeps them in its cache, where a mere crash of the process leaves them for
/// the next open to replay). Any other failure comes before the commit frame is whole on disk: nothing
/// of the group is durable, and the group is refused.
fn commit_failed(e: rusqlite::Error) -> String {
    let sync = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_IOERR_FSYNC
    );
    if sync {
        format!(
            "{OUTCOME_UNKNOWN}: the commit was written but its sync failed, so it may or may not be \
             durable ({e}); read before repeating what is not idempotent"
        )
    } else {
        format!("commit failed: {}", backend(e))
    }
}

/// Maps a SQLite error to the engine's error.
pub(crate) fn backend(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::Unavailable("disk full".into()),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Error::Unavailable("database busy".into())
        }
        Some(ErrorCode::NotADatabase) => {
            Error::Unavailable("the file is not an Errand database, or it is corrupted".into())
        }
        _ => Error::Backend(Box::new(e)),
    }
}

pub(crate) fn open_connection(path: &Path, sync: SyncMode, reader: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    // journal_mode returns a row, so it is queried rather than updated.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(backend)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable(format!(
            "could not put the database in WAL mode (got {mode})"
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -16000;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT};",
        sync.pragma()
    ))
    .map_err(backend)?;
    if reader {
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(backend)?;
    }
    Ok(conn)
}

/// The writer thread's handle. Dropping it lets the thread answer what it holds, checkpoint, and close
/// the connection, and waits for that: whoever opens the file next finds it complete and unused.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Option<mpsc::Sender<Box<dyn WriteOp>>>,
    thread: Option<thread::JoinHandle<()>>,
    stats: Arc<Counters>,
}

/// Commits after which the writer asks the checkpoint thread for a checkpoint.
pub(crate) const CHECKPOINT_EVERY: u64 = 200;

/// The writer's own automatic checkpoint, in WAL pages (400 MB of 4 KiB pages): a backstop only.
const WRITER_AUTOCHECKPOINT: u32 = 100_000;

/// What the writer has committed since the store opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed (each one sync in `SyncMode::Full`).
    pub commits: u64,
    /// Operations answered with success by those commits.
    pub operations: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    operations: AtomicU64,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn`, and the checkpoint thread on `checkpoints`, a second
    /// connection to the same database.
    pub(crate) fn start(conn: Connection, checkpoints: Connection) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Box<dyn WriteOp>>();
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        let spawn_error = |e: std::io::Error| Error::Backend(Box::new(e));
        let checkpointer = thread::Builder::new()
            .name("errand-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, nudged))
            .map_err(spawn_error)?;
        let thread = thread::Builder::new()
            .name("errand-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, (nudge, checkpointer), &counters))
            .map_err(spawn_error)?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` in the next group's transaction and answers once that transaction is durable. `f` may run
    /// more than once (see the module documentation); only its last run's effects are committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel::<Result<T>>();
        let op: Box<dyn WriteOp> = Box::new(Op {
            f,
            out: None,
            reply,
        });
        self.tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is closed".into()))?
            .send(op)
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store's writer stopped".into()))?
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn WriteOp>>,
    (nudge, checkpointer): (mpsc::SyncSender<()>, thread::JoinHandle<()>),
    counters: &Counters,
) {
    let mut since_checkpoint = 0u64;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        commit_group(&conn, group, counters);
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            // Full: a checkpoint is already asked for.
            let _ = nudge.try_send(());
        }
    }
    // Stop the checkpoint thread first, so that the last checkpoint below does not find it busy.
    drop(nudge);
    let _ = checkpointer.join();
    // All handles dropped: leave the WAL checkpointed so the file is complete on its own.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Checkpoints when nudged by the writer, or after a second without a nudge, until the writer stops.
fn checkpoint_loop(conn: Connection, nudged: mpsc::Receiver<()>) {
    loop {
        match nudged.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                // PASSIVE: copies what no reader still needs, without waiting for anyone.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("a background checkpoint failed (the next one retries): {e}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Runs a statement without parsing it again each time (BEGIN and COMMIT run once per group).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs a group in one transaction and answers every operation of it.
fn commit_group(conn: &Connection, mut group: Vec<Box<dyn WriteOp>>, counters: &Counters) {
    'attempt: while !group.is_empty() {
        if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
            let e = backend(e);
            for op in group {
                op.answer(Err(Error::Unavailable(format!(
                    "cannot begin a transaction: {e}"
                ))));
            }
            return;
        }
        let mut kept = Vec::with_capacity(group.len());
        let mut ops = group.into_iter();
        while let Some(mut op) = ops.next() {
            let before = conn.total_changes();
            let result = op.run(conn);
            // On a full disk, an I/O error or out of memory, SQLite rolls the whole transaction back by
            // itself: then the connection is in autocommit mode and everything before is gone too.
            let aborted = conn.is_autocommit();
            match result {
                Ok(()) if !aborted => kept.push(op),
                // Failed before writing anything, transaction intact: nothing to undo.
                Err(e) if !aborted && conn.total_changes() == before => op.answer(Err(e)),
                outcome => {
                    // Failed half-way, or the transaction is gone: undo what is left of it, answer
                    // this operation with its error, and run the others again in a new transaction.
                    if !aborted {
                        let _ = exec_cached(conn, "ROLLBACK");
                    }
                    let e = outcome.err().unwrap_or_else(|| {
                        Error::Unavailable("the transaction was rolled back by the database".into())
                    });
                    tracing::warn!(
                        "a store write failed and rolled its group back, retrying the rest: {e}"
                    );
                    op.answer(Err(e));
                    group = kept.into_iter().chain(ops).collect();
                    continue 'attempt;
                }
            }
        }
        let commit = exec_cached(conn, "COMMIT").map_err(commit_failed);
        if commit.is_ok() {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters
                .operations
                .fetch_add(kept.len() as u64, Ordering::Relaxed);
        } else {
            // Nothing of the group is durable: undo it and tell every caller.
            let _ = exec_cached(conn, "ROLLBACK");
        }
        for op in kept {
            op.answer(match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Unavailable(e.clone())),
            });
        }
        return;
    }
}

/// Read connections, opened lazily, at most `max` at once kept.
#[derive(Debug)]
pub(crate) struct Readers {
    path: std::path::PathBuf,
    sync: SyncMode,
    idle: Arc<Mutex<Vec<Connection>>>,
    max: usize,
}

impl Readers {
    pub(crate) fn new(path: &Path, sync: SyncMode, max: usize) -> Self {
        Readers {
            path: path.to_path_buf(),
            sync,
            idle: Arc::new(Mutex::new(Vec::new())),
            max,
        }
    }

    /// Runs `f` on a read connection on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let idle = self.idle.clone();
        let (path, sync, max) = (self.path.clone(), self.sync, self.max);
        tokio::task::spawn_blocking(move || {
            let taken = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match taken {
                Some(c) => c,
                None => open_connection(&path, sync, true)?,
            };
            let out = f(&conn);
            let mut pool = idle.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < max {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write op for `commit_group`, and the receiver of its answer.
    fn op<T: Send + 'static>(
        f: impl FnMut(&Connection) -> Result<T> + Send + 'static,
    ) -> (Box<dyn WriteOp>, oneshot::Receiver<Result<T>>) {
        let (reply, rx) = oneshot::channel();
        (
            Box::new(Op {
                f,
                out: None,
                reply,
            }),
            rx,
        )
    }

    fn insert(v: &'static str) -> impl FnMut(&Connection) -> Result<()> + Send {
        move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .map(|_| ())
                .map_err(backend)
        }
    }

    /// A database that can hold a few small rows but not a 1 MiB one.
    fn tiny_db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("t.db"), SyncMode::Full, false).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (v TEXT); CREATE TABLE n (x INTEGER); INSERT INTO n VALUES (0);",
        )
        .unwrap();
        conn.pragma_update(None, "max_page_count", 64).unwrap();
        (dir, conn)
    }

    fn rows(conn: &Connection) -> Vec<String> {
        let mut st = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn a_full_disk_in_the_middle_of_a_group_fails_only_its_own_operation() {
        let (_dir, conn) = tiny_db();
        let counters = Counters::default();
        let big = "x".repeat(1 << 20);
        let (a, ra) = op(insert("a"));
        let (b, mut rb) = op(move |c: &Connection| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [&big])
                .map(|_| ())
                .map_err(backend)
        });
        // Two statements: the first succeeds, the second hits the full disk.
        let (c, mut rc) = op(|c: &Connection| {
            c.execute("INSERT INTO t (v) VALUES ('c1')", [])
                .map_err(backend)?;
            c.execute("INSERT INTO t (v) VALUES (?1)", ["y".repeat(1 << 20)])
                .map(|_| ())
                .map_err(backend)
        });
        let (d, rd) = op(|c: &Connection| {
            c.execute("UPDATE n SET x = x + 1", [])
                .map(|_| ())
                .map_err(backend)
        });
        let (e, re) = op(insert("e"));
        commit_group(&conn, vec![a, b, c, d, e], &counters);

        assert!(ra.blocking_recv().unwrap().is_ok());
        assert!(rb.try_recv().unwrap().is_err(), "the too-big write fails");
        assert!(rc.try_recv().unwrap().is_err(), "so does the half-done one");
        assert!(rd.blocking_recv().unwrap().is_ok());
        assert!(re.blocking_recv().unwrap().is_ok());
        assert!(conn.is_autocommit(), "no transaction left open");
        assert_eq!(
            rows(&conn),
            vec!["a", "e"],
            "nothing of the failed ones, all of the others"
        );
        let x: i64 = conn.query_row("SELECT x FROM n", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1, "an operation that was run again counts once");
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
        assert_eq!(counters.operations.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_failure_without_writes_leaves_the_group_alone() {
        let (_dir, conn) = tiny_db();
        let counters = Counters::default();
        let (a, ra) = op(insert("a"));
        let (b, mut rb) = op(|_: &Connection| -> Result<()> { Err(Error::LeaseLost) });
        let (c, rc) = op(insert("c"));
        commit_group(&conn, vec![a, b, c], &counters);
        assert!(ra.blocking_recv().unwrap().is_ok());
        assert!(matches!(rb.try_recv().unwrap(), Err(Error::LeaseLost)));
        assert!(rc.blocking_recv().unwrap().is_ok());
        assert_eq!(rows(&conn), vec!["a", "c"]);
        assert_eq!(counters.commits.load(Ordering::Relaxed), 1);
    }
}
