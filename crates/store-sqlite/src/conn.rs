//! Connections: one writer thread that commits concurrent operations together, and a pool of readers.
//!
//! **Group commit.** Every write is a closure sent to the writer thread. The thread takes all the
//! closures waiting, runs each inside a savepoint of one transaction (so a failing operation rolls back
//! alone), commits once — one fsync of the WAL — and only then answers each caller. Under load, many
//! enqueues and acknowledgements share one sync; alone, an operation pays one sync, never a timer.
//!
//! **Reads** run on a small pool of connections on tokio's blocking threads. WAL mode lets them read a
//! consistent snapshot while the writer writes; a write is visible to every read that starts after the
//! write was answered.

use std::path::Path;
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

/// What the writer does with one operation after the group's commit: answer its caller.
type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
/// One write: runs inside the group's transaction, says whether it succeeded (else its savepoint is rolled
/// back), and returns how to answer its caller once the commit is done.
type WriteOp = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;

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
         PRAGMA temp_store = MEMORY;",
        sync.pragma()
    ))
    .map_err(backend)?;
    if reader {
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(backend)?;
    }
    Ok(conn)
}

/// The writer thread's handle. Dropping the last one stops the thread after it answers what it holds.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<WriteOp>();
        thread::Builder::new()
            .name("errand-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(Writer { tx })
    }

    /// Runs `f` in the next group's transaction and answers once that transaction is durable.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let op: WriteOp = Box::new(move |conn| {
            let res = f(conn);
            let ok = res.is_ok();
            let deliver: Deliver = Box::new(move |commit| {
                let _ = tx.send(commit.and(res));
            });
            (ok, deliver)
        });
        self.tx
            .send(op)
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store's writer stopped".into()))?
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<WriteOp>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the group closes each caller's answer channel: they get `Unavailable`.
            tracing::error!("could not begin a transaction: {e}");
            continue;
        }
        let delivers = run_group(&conn, group);
        let commit = conn.execute_batch("COMMIT").map_err(backend);
        if commit.is_err() {
            // Nothing of the group is durable: undo it and tell every caller.
            let _ = conn.execute_batch("ROLLBACK");
        }
        for d in delivers {
            d(match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::Unavailable(format!("commit failed: {e}"))),
            });
        }
    }
    // All handles dropped: leave the WAL checkpointed so the file is complete on its own.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

fn run_group(conn: &Connection, group: Vec<WriteOp>) -> Vec<Deliver> {
    group
        .into_iter()
        .map(|op| {
            if let Err(e) = conn.execute_batch("SAVEPOINT op") {
                tracing::error!("savepoint failed: {e}");
            }
            let (ok, deliver) = op(conn);
            let end = if ok {
                "RELEASE op"
            } else {
                "ROLLBACK TO op; RELEASE op"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!("savepoint release failed: {e}");
            }
            deliver
        })
        .collect()
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
