//! Connections: the pool, transactions with retries, and turning driver errors into the engine's.
//!
//! **Transactions.** A write runs in one `READ COMMITTED` transaction on a pooled connection (`write`).
//! Row locks (`FOR UPDATE SKIP LOCKED` for claims, plain row locks for guarded updates) and
//! transaction-scoped advisory locks (unique keys) make concurrent operations from every node safe. Two
//! transactions can still deadlock (two acknowledgement batches naming the same jobs in different
//! orders); PostgreSQL then aborts one, which runs again here a few times before the caller hears of it.
//! Reads, and writes of one idempotent statement, run without a transaction (`run`).
//!
//! **Dead connections.** When the server restarts, every pooled connection dies at once. An operation
//! that finds its connection dead before anything could have committed runs again on another one, so
//! callers do not see the restart; only a connection lost during a commit is reported, since whether
//! that commit happened is unknown.
//!
//! **Errors.** A connection that is closed, refused or not to be had from the pool in time is
//! [`Error::Unavailable`] (the caller may retry); everything else is [`Error::Backend`], carrying a
//! [`PgError`] whose message includes the server's own text.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use errand_core::{Error, Result};

/// How many times a transaction that lost a deadlock or a serialization check runs in all.
const TX_ATTEMPTS: u32 = 5;

/// A driver error with a message that says what the server said (the driver's own `Display` says only
/// "db error"). Kept as the source of [`Error::Backend`] so that retry logic can look at the code.
#[derive(Debug)]
pub struct PgError {
    message: String,
    source: tokio_postgres::Error,
}

impl PgError {
    /// The SQLSTATE code, if the server reported the error.
    pub fn code(&self) -> Option<&SqlState> {
        self.source.code()
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The driver error's message with its causes, on one line: `db error: ERROR: relation ... does not
/// exist`, `error connecting to server: Connection refused (os error 111)`.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s.replace('\n', " ")
}

/// Whether the server may accept the same transaction if it runs again: it was chosen as a deadlock
/// victim or failed a serialization check, and was rolled back whole.
fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Whether the error says the server or the connection went away (rather than that a statement failed).
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; 57P01..57P03: the server is shutting down or starting.
        Some(c) => {
            c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::TOO_MANY_CONNECTIONS
        }
        // No server error: an I/O failure talking to it.
        None => e.as_db_error().is_none() && io_kind(e).is_some(),
    }
}

/// The kind of the I/O error under a driver error, if there is one.
fn io_kind(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = c.source();
    }
    None
}

/// Maps a driver error to the engine's error.
pub(crate) fn db(e: tokio_postgres::Error) -> Error {
    if is_connection_error(&e) {
        return Error::Unavailable(format!("PostgreSQL: {}", describe(&e)));
    }
    Error::Backend(Box::new(PgError {
        message: describe(&e),
        source: e,
    }))
}

/// The driver error under an engine error made by [`db`], for the retry decision.
fn driver_error(e: &Error) -> Option<&tokio_postgres::Error> {
    match e {
        Error::Backend(b) => b.downcast_ref::<PgError>().map(|p| &p.source),
        _ => None,
    }
}

/// Maps a pool error to the engine's error.
pub(crate) fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => db(e),
        PoolError::Timeout(_) => Error::Unavailable(
            "PostgreSQL: no connection could be had in time (the pool is busy or the server is slow)"
                .into(),
        ),
        PoolError::Closed => Error::Unavailable("the store is closed".into()),
        other => Error::Unavailable(format!("PostgreSQL: {other}")),
    }
}

/// Why a connection could not be made, in a few words for a person: `connection refused`,
/// `password authentication failed for user "x"`, `database "jobs" does not exist`.
pub fn connect_reason(e: &tokio_postgres::Error, timeout: Duration) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    match io_kind(e) {
        Some(std::io::ErrorKind::ConnectionRefused) => return "connection refused".into(),
        Some(std::io::ErrorKind::TimedOut) => {
            return format!("timed out after {}", human(timeout));
        }
        _ => {}
    }
    if e.to_string().starts_with("timeout") {
        return format!("timed out after {}", human(timeout));
    }
    let d = describe(e);
    d.strip_prefix("error connecting to server: ")
        .map(str::to_string)
        .unwrap_or(d)
}

pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Where a configuration connects, for messages and `Debug`: `127.0.0.1:5432/jobs as user "errand"`
/// (never the password).
pub(crate) fn target(config: &tokio_postgres::Config) -> (String, String) {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{}/.s.PGSQL.{port}", dir.display())
                }
            }
        })
        .collect();
    let at = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    let user = config.get_user().unwrap_or("(none)").to_string();
    (at, user)
}

/// Set on every connection the pool makes.
///
/// **Each execution of a prepared statement is planned for its own parameters.** After five runs
/// PostgreSQL may switch a prepared statement to one generic plan and keep it until the table is
/// analyzed again. A node that starts idle makes its plans on an empty `jobs` table (the webhook
/// deliverer claims its empty queue every 200 ms): the claim's generic plan then matched the claimed
/// ids through `jobs_by_state` instead of the primary key, reading every waiting job of every queue
/// per claim, and a drain of 100,000 jobs ran at 1,100–1,700 jobs/s instead of 22,000, until an
/// ANALYZE (never, with autovacuum off). Planning each run costs a fraction of a millisecond; the
/// statements stay prepared, so they are not parsed again.
const PER_CONNECTION: &str = "SET plan_cache_mode = force_custom_plan";

/// A pool over `config`: at most `size` connections; waiting for one, or making one, gives up after
/// `timeout`. Every connection gets [`PER_CONNECTION`].
pub(crate) fn pool(config: tokio_postgres::Config, size: usize, timeout: Duration) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A closed connection is noticed without a round trip; a broken one fails its next
            // statement, which the caller sees as `Unavailable` and may retry.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(PER_CONNECTION)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|e| Error::Unavailable(format!("cannot build the connection pool: {e}")))
}

/// A future an operation returns, borrowing its connection, context and parameters.
pub(crate) type OpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A write operation: runs its statements in the transaction it is given.
/// `C` is the context every operation gets (the store's statements: `crate::sql::Cx`); this module
/// runs operations and knows nothing of what they say.
pub(crate) type TxOp<C, P, T> = for<'a> fn(&'a Transaction<'a>, &'a C, &'a P) -> OpFuture<'a, T>;

/// An operation on one connection outside a transaction: a read, or a single statement whose
/// repetition changes nothing more (renewing a lease to `now + lease_ms`, setting a flag, upserting a
/// queue's settings, renewing a lead).
pub(crate) type ConnOp<C, P, T> = for<'a> fn(&'a Object, &'a C, &'a P) -> OpFuture<'a, T>;

/// Whether an operation failed because its connection died ([`db`] makes only those `Unavailable`).
fn lost(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_))
}

/// Runs `op` in a transaction on a pooled connection and commits it.
///
/// - A transaction the server aborted as a deadlock victim (or for a serialization failure) runs again,
///   a few times, after a short random pause.
/// - A transaction whose connection died before it was committed runs again on another connection:
///   the server rolled it back, so nothing of it can happen twice. Pooled connections die together
///   when the server restarts; each is found out and replaced here rather than failing a caller.
/// - A connection lost *during* the commit is reported ([`Error::Unavailable`]): whether the
///   transaction committed is then unknown.
///
/// Any other error rolls the transaction back and is returned.
pub(crate) async fn write<C: Sync, P: Sync + ?Sized, T>(
    pool: &Pool,
    cx: &C,
    p: &P,
    op: TxOp<C, P, T>,
) -> Result<T> {
    let mut conflicts = 0;
    let mut dead = 0;
    loop {
        let mut client: Object = pool.get().await.map_err(pool_error)?;
        match attempt(&mut client, cx, p, op).await {
            Attempt::Done(out) => return out,
            Attempt::Lost(e) if dead < pool.status().max_size => {
                tracing::debug!("the connection died before the commit ({e}); running it again");
                // Out of the pool for good: it must not be handed out again before it is seen closed.
                drop(Object::take(client));
                dead += 1;
            }
            Attempt::Lost(e) => return Err(e),
            Attempt::Conflict(e) => {
                conflicts += 1;
                pause_after_conflict(conflicts, e).await?;
            }
        }
    }
}

/// How one run of a transaction ended.
enum Attempt<T> {
    /// Committed, or failed in a way that running it again would not change.
    Done(Result<T>),
    /// The connection died before the commit was sent: the server rolled the transaction back.
    Lost(Error),
    /// The server aborted it as a deadlock victim or for a serialization failure.
    Conflict(Error),
}

async fn attempt<C: Sync, P: Sync + ?Sized, T>(
    client: &mut Object,
    cx: &C,
    p: &P,
    op: TxOp<C, P, T>,
) -> Attempt<T> {
    let conflict = |e: &Error| driver_error(e).is_some_and(is_retryable);
    let tx = match client.transaction().await.map_err(db) {
        Ok(tx) => tx,
        Err(e) if lost(&e) => return Attempt::Lost(e),
        Err(e) => return Attempt::Done(Err(e)),
    };
    let out = match op(&tx, cx, p).await {
        Ok(out) => out,
        Err(e) if lost(&e) => return Attempt::Lost(e),
        Err(e) if conflict(&e) => return Attempt::Conflict(e),
        Err(e) => return Attempt::Done(Err(e)),
    };
    match tx.commit().await.map_err(db) {
        Ok(()) => Attempt::Done(Ok(out)),
        // Lost during the commit: whether it committed is unknown, so it is not run again.
        Err(e) if conflict(&e) => Attempt::Conflict(e),
        Err(e) => Attempt::Done(Err(e)),
    }
}

/// Waits a little before a transaction the server aborted runs again, or gives up after a few times.
async fn pause_after_conflict(conflicts: u32, e: Error) -> Result<()> {
    if conflicts >= TX_ATTEMPTS {
        return Err(Error::Unavailable(format!(
            "PostgreSQL: the transaction kept conflicting with others ({e}); try again"
        )));
    }
    tracing::debug!(
        conflicts,
        "transaction aborted by the server ({e}), running it again"
    );
    let pause = {
        use rand::RngExt;
        rand::rng().random_range(1..=10 * (u64::from(conflicts) + 1))
    };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    Ok(())
}

/// Runs `op` on a pooled connection (no transaction). If the connection turns out to be dead, `op`
/// runs again on another: see [`ConnOp`] for why that is safe.
pub(crate) async fn run<C: Sync, P: Sync + ?Sized, T>(
    pool: &Pool,
    cx: &C,
    p: &P,
    op: ConnOp<C, P, T>,
) -> Result<T> {
    let mut dead = 0;
    loop {
        let client: Object = pool.get().await.map_err(pool_error)?;
        match op(&client, cx, p).await {
            Err(e) if lost(&e) && dead < pool.status().max_size => {
                tracing::debug!("a pooled connection was dead ({e}); taking another");
                drop(Object::take(client));
                dead += 1;
            }
            other => return other,
        }
    }
}

/// Quotes an SQL identifier (`"name"`, inner quotes doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A stable 64-bit key for `pg_advisory_xact_lock` (FNV-1a over the parts, separated): the same on
/// every node and every build, unlike Rust's randomly seeded hashers.
pub(crate) fn lock_key(parts: &[&str]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Cx;

    #[test]
    fn lock_keys_are_stable_and_tell_parts_apart() {
        // Fixed values: every node must compute the same key for the same unique key.
        assert_eq!(lock_key(&[]), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(lock_key(&["a"]), lock_key(&["a"]));
        assert_ne!(lock_key(&["ab", "c"]), lock_key(&["a", "bc"]));
        assert_ne!(lock_key(&["s1", "q", "k"]), lock_key(&["s2", "q", "k"]));
    }

    /// Two transactions that update the same two rows in opposite orders.
    struct Crossing {
        table: String,
        first: i32,
        second: i32,
        both_hold_their_first_row: std::sync::Arc<tokio::sync::Barrier>,
        runs: std::sync::atomic::AtomicUsize,
    }

    fn cross<'a>(tx: &'a Transaction<'a>, _: &'a Cx, p: &'a Crossing) -> OpFuture<'a, ()> {
        Box::pin(async move {
            let first_run = p.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            let bump = format!("UPDATE {} SET n = n + 1 WHERE id = $1", p.table);
            tx.execute(&bump, &[&p.first]).await.map_err(db)?;
            if first_run {
                p.both_hold_their_first_row.wait().await;
            }
            tx.execute(&bump, &[&p.second]).await.map_err(db)?;
            Ok(())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_chosen_as_deadlock_victim_runs_again() {
        let Some(url) = errand_testkit::test_url().await else {
            return;
        };
        let schema = errand_testkit::TestSchema::new(&url).await;
        // The kit's `store()` is of the crate it links, not this test build of it: connect here.
        let options = crate::PgOptions {
            schema: schema.name().to_string(),
            pool_size: errand_testkit::TEST_POOL_SIZE,
            ..crate::PgOptions::default()
        };
        let store = crate::PgStore::connect(schema.url(), options)
            .await
            .unwrap();
        let (pool, cx): (_, &Cx) = (&store.inner.pool, &store.inner.cx);
        let table = format!("{}.t", quote_ident(schema.name()));
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                 INSERT INTO {table} VALUES (1, 0), (2, 0);"
            ))
            .await
            .unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let crossing = |first, second| Crossing {
            table: table.clone(),
            first,
            second,
            both_hold_their_first_row: barrier.clone(),
            runs: Default::default(),
        };
        let (a, b) = (crossing(1, 2), crossing(2, 1));
        // PostgreSQL aborts one of the two after `deadlock_timeout` (1 s by default).
        let (ra, rb) = tokio::join!(write(pool, cx, &a, cross), write(pool, cx, &b, cross));
        ra.unwrap();
        rb.unwrap();
        let runs = |c: &Crossing| c.runs.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            runs(&a) + runs(&b),
            3,
            "the victim ran twice, the other once"
        );
        let rows = pool
            .get()
            .await
            .unwrap()
            .query(&format!("SELECT n FROM {table} ORDER BY id"), &[])
            .await
            .unwrap();
        let n: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(
            n,
            vec![2, 2],
            "each committed once: the victim's first run left nothing"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("errand"), "\"errand\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
