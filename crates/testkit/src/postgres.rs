//! Finding a PostgreSQL server for tests, and a fresh schema per test — for the stores', the server's
//! and the CLI's tests, and for the chaos harness.
//!
//! [`test_url`] looks, once per test process, in this order:
//!
//! 1. `ERRAND_TEST_POSTGRES_URL`, if set (if it is set but unreachable, the tests panic: a database was
//!    asked for and is missing);
//! 2. a local server at `postgres://postgres@127.0.0.1:5432/postgres` (trust authentication, as a
//!    development machine or CI has it);
//! 3. a throwaway cluster made with `initdb` and started with `pg_ctl` (found on `PATH`) in a temporary
//!    directory, on a free port, listening on 127.0.0.1 only, with `fsync` off. `initdb` refuses to run as
//!    root: as root it runs as the `postgres` user through `runuser` when both exist. A watchdog process
//!    stops the cluster and removes its directory when the test process exits;
//! 4. none: every PostgreSQL test panics, saying where it looked. A missing database is a failure, never
//!    a skip: a skipped test passes without running, and the harness hides the stderr of passing tests.
//!    `scripts/test` (the README's test command) starts the local server if it stopped and puts the
//!    PostgreSQL binaries on `PATH`, so on a machine with PostgreSQL installed there is always one.
//!
//! Each test then works in a schema of its own ([`TestSchema`], `errand_t_<time>_<random>`), dropped when
//! the test ends. Schemas left by test processes that were killed are dropped by a later run once they are
//! a day old.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

use errand_store_postgres::conn::{connect_reason, describe, quote_ident};
use errand_store_postgres::{PgOptions, PgStore};

/// The local server tried second.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Prefix of the schemas [`TestSchema`] makes.
const PREFIX: &str = "errand_t_";
/// Test schemas alive at once in one process: each holds a small pool and a listening connection, and
/// PostgreSQL allows 100 connections by default.
const SLOTS: usize = 8;
/// Connections per test store: enough for the conformance suite's 8 concurrent claimers to share.
pub const TEST_POOL_SIZE: usize = 4;

/// The URL found, or why there is none: the search runs once per process, and its failure too is kept
/// (each test panics with it) rather than searched for again by every test.
static URL: OnceCell<Result<String, String>> = OnceCell::const_new();
static SCHEMAS: Semaphore = Semaphore::const_new(SLOTS);

/// The URL of a PostgreSQL server for tests. See the module documentation for where it looks.
///
/// Always `Some`: a missing database panics instead (the `Option` is kept so that the callers written
/// when a missing database skipped their test still compile; their `else` branches never run).
///
/// # Panics
///
/// If `ERRAND_TEST_POSTGRES_URL` is set but unreachable, or if no server is found at all.
pub async fn test_url() -> Option<String> {
    match URL.get_or_init(find).await {
        Ok(url) => Some(url.clone()),
        Err(message) => panic!("{message}"),
    }
}

async fn find() -> Result<String, String> {
    if let Ok(url) = std::env::var("ERRAND_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        if let Err(e) = probe(&url).await {
            return Err(format!(
                "ERRAND_TEST_POSTGRES_URL is set, but PostgreSQL cannot be reached there: {e}"
            ));
        }
        drop_stale_schemas(&url).await;
        return Ok(url);
    }
    let mut tried = Vec::new();
    match probe(LOCAL_URL).await {
        Ok(()) => {
            drop_stale_schemas(LOCAL_URL).await;
            return Ok(LOCAL_URL.to_string());
        }
        Err(e) => tried.push(format!("{LOCAL_URL}: {e}")),
    }
    match tokio::task::spawn_blocking(throwaway_cluster).await {
        Ok(Ok(url)) => match probe(&url).await {
            Ok(()) => return Ok(url),
            Err(e) => tried.push(format!("throwaway cluster at {url}: {e}")),
        },
        Ok(Err(e)) => tried.push(format!("throwaway cluster: {e}")),
        Err(e) => tried.push(format!("throwaway cluster: {e}")),
    }
    Err(format!(
        "the PostgreSQL tests cannot run: no PostgreSQL server found ({}). Run the tests with \
         scripts/test, which starts the local server and puts initdb and pg_ctl on PATH; or set \
         ERRAND_TEST_POSTGRES_URL; or run a server on 127.0.0.1:5432 that trusts user postgres.",
        tried.join("; ")
    ))
}

/// Connects and runs a query.
async fn probe(url: &str) -> Result<(), String> {
    let (client, _task) = connect(url, Duration::from_secs(3)).await?;
    client
        .simple_query("SELECT 1")
        .await
        .map(drop)
        .map_err(|e| describe(&e))
}

/// A connection outside any pool, its connection driven by a task.
async fn connect(
    url: &str,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| connect_reason(&e, timeout))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// A fresh schema for one test, dropped (best effort) when this is dropped. At most a few are alive at
/// once per process ([`TestSchema::new`] waits for a slot), which bounds the connections tests open.
#[derive(Debug)]
pub struct TestSchema {
    url: String,
    name: String,
    _slot: SemaphorePermit<'static>,
}

impl TestSchema {
    /// A new, unique schema name on the server at `url` (created by the first [`PgStore::connect`]).
    pub async fn new(url: &str) -> TestSchema {
        let slot = SCHEMAS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let random: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        TestSchema {
            url: url.to_string(),
            name: format!("{PREFIX}{secs:x}_{random:016x}"),
            _slot: slot,
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Options for a store in this schema with a test-sized pool.
    pub fn options(&self) -> PgOptions {
        PgOptions {
            schema: self.name.clone(),
            pool_size: TEST_POOL_SIZE,
            ..PgOptions::default()
        }
    }

    /// A store in this schema (connecting creates the schema).
    ///
    /// # Panics
    ///
    /// If the store cannot connect: a test has no use for a database it cannot reach.
    pub async fn store(&self) -> PgStore {
        PgStore::connect(&self.url, self.options())
            .await
            .unwrap_or_else(|e| panic!("connect to the test schema {}: {e}", self.name))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime that cannot be blocked on; a thread with its own runtime can.
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, _task) = connect(&url, Duration::from_secs(5)).await.ok()?;
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_ident(&name)
                    ))
                    .await
                    .ok()
            })
        });
        let _ = dropper.join();
    }
}

/// A fresh, empty store in a schema of its own, and the guard that drops the schema. Always `Some`, as
/// [`test_url`]: without a database for tests it panics.
pub async fn fresh_store() -> Option<(PgStore, TestSchema)> {
    let url = test_url().await?;
    let schema = TestSchema::new(&url).await;
    let store = schema.store().await;
    Some((store, schema))
}

/// Drops test schemas a day old or more: left by test processes that were killed before their guards
/// ran. Best effort.
async fn drop_stale_schemas(url: &str) {
    let Ok((client, _task)) = connect(url, Duration::from_secs(3)).await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for row in rows {
        let name: String = row.get(0);
        let made = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        if made.is_some_and(|t| now.saturating_sub(t) > 24 * 3_600) {
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '1s'; DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&name)
                ))
                .await;
        }
    }
}

// ---- a throwaway cluster ----------------------------------------------------------------------------

/// Makes and starts a cluster in a temporary directory; returns its URL.
fn throwaway_cluster() -> Result<String, String> {
    let initdb = on_path("initdb").ok_or("initdb is not on PATH")?;
    let pg_ctl = on_path("pg_ctl").ok_or("pg_ctl is not on PATH")?;
    // initdb refuses to run as root; then the cluster belongs to the postgres user, if there is one.
    let owner = if is_root() {
        if on_path("runuser").is_none() || !user_exists("postgres") {
            return Err("running as root, and there is no postgres user to run initdb as".into());
        }
        Some("postgres")
    } else {
        None
    };
    let random: u64 = {
        use rand::RngExt;
        rand::rng().random()
    };
    let dir = std::env::temp_dir().join(format!("errand-pg-{}-{random:08x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(user) = owner {
        let (uid, gid) = ids_of(user)?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    run(as_user(owner, &initdb).arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    ]))?;
    let port = free_port()?;
    let server_options = format!(
        "-p {port} -h 127.0.0.1 -k {} -F -c max_connections=200",
        dir.display()
    );
    run(as_user(owner, &pg_ctl)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "-o", &server_options, "start"]))?;
    // Stops the cluster and removes it once this process is gone.
    let stop = format!(
        "{} {} -D {} stop -m immediate",
        if owner.is_some() {
            "runuser -u postgres --"
        } else {
            ""
        },
        pg_ctl.display(),
        data.display()
    );
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn is_root() -> bool {
    command_output("id", &["-u"]).is_some_and(|u| u == "0")
}

fn user_exists(user: &str) -> bool {
    command_output("id", &["-u", user]).is_some()
}

fn ids_of(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| {
        command_output("id", &[flag, user])
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("cannot look up the {flag} of {user}"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}
