//! PostgreSQL going away under load, and a database that cannot be reached at start.
//!
//! These tests run their own throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir, as the
//! `postgres` user when run as root), because they restart it: the shared server other tests use must
//! not go down under them. Without the PostgreSQL binaries on `PATH` they fail, saying so: a skipped test
//! would pass without running. `scripts/test` puts Debian's `/usr/lib/postgresql/<version>/bin` on `PATH`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{assert_acknowledged, free_port, wait_ready};

use errand_client::protocol::{CompleteRequest, EnqueueJob, FetchRequest};
use errand_client::{Client, RetryPolicy};
use serde_json::json;

const PASSWORD: &str = "errand-test-pw";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as `postgres` when we are root (initdb refuses to run as root).
fn pg(bin: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", bin]);
        c
    } else {
        Command::new(bin)
    }
}

/// A throwaway cluster: password auth over TCP, stopped when dropped.
struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    port: u16,
}

impl Cluster {
    fn start() -> Cluster {
        assert!(
            Command::new("initdb").arg("--version").output().is_ok(),
            "the PostgreSQL binaries (initdb, pg_ctl) are not on PATH: run the tests with scripts/test, \
             which puts them there (Debian keeps them in /usr/lib/postgresql/<version>/bin)"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
        }
        let ok = pg("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
            ])
            .arg(&pwfile)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        let c = Cluster {
            _dir: dir,
            data,
            port: free_port(),
        };
        c.ctl(&["start", "-w"]);
        c
    }

    fn ctl(&self, args: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        let ok = pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(self.data.join("log"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "pg_ctl {args:?} failed");
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .status();
    }
}

fn serve(store: &str, dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("ERRAND_API_KEY")
        .env("ERRAND_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn an_unreachable_database_or_a_wrong_password_is_one_clear_line() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        (cluster.url("wrong-password"), "password"),
        (
            format!("postgres://postgres:x@127.0.0.1:{}/postgres", free_port()),
            "127.0.0.1",
        ),
    ] {
        let out = serve(&url, dir.path(), free_port())
            .wait_with_output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{err}");
        assert!(
            !err.contains("wrong-password") && !err.contains(":x@"),
            "never the password: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarting_under_load_gives_503_then_recovers_losing_nothing_acknowledged() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve(&cluster.url(PASSWORD), dir.path(), port);
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .request_timeout(Duration::from_secs(5))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    wait_ready(&client).await;

    let enqueued = Arc::new(Mutex::new(Vec::<String>::new()));
    let completed = Arc::new(Mutex::new(Vec::<String>::new()));
    let unavailable = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..2 {
        let (c, log, u, stop) = (
            client.clone(),
            enqueued.clone(),
            unavailable.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match c
                    .enqueue("pg", &EnqueueJob::new("k", json!({"p": p, "i": i})))
                    .await
                {
                    Ok(e) => log.lock().unwrap().push(e.id),
                    Err(e) if e.status() == Some(503) => {
                        u.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("an enqueue failed otherwise than 503: {e}"),
                }
            }
        }));
    }
    for w in 0..2 {
        let (c, log, stop) = (client.clone(), completed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = FetchRequest {
                    queues: vec!["pg".into()],
                    worker_id: format!("w{w}"),
                    max_jobs: 10,
                    wait_ms: 100,
                    heartbeat_ms: None,
                    report: None,
                };
                let Ok(got) = c.fetch(&req).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                for j in got.jobs {
                    let done = CompleteRequest {
                        lease_token: j.lease_token.clone(),
                        result: None,
                    };
                    if c.complete(&j.id, &done).await.is_ok() {
                        log.lock().unwrap().push(j.id);
                    }
                }
            }
        }));
    }
    let wait_for = |n: usize, log: Arc<Mutex<Vec<String>>>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while log.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {}",
                log.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(200, completed.clone()).await;

    // Take the database away for a moment, under load.
    let before = completed.lock().unwrap().len();
    cluster.ctl(&["stop", "-m", "fast", "-w"]);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.ctl(&["start", "-w"]);
    // The server reconnects on its own: the load goes on.
    wait_for(before + 200, completed.clone()).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "requests while it was away got 503"
    );

    let enqueued = enqueued.lock().unwrap().clone();
    let completed = completed.lock().unwrap().clone();
    assert_acknowledged(&client, &enqueued, &completed).await;
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!(
        "{} enqueues and {} completions acknowledged across a database restart; {} answers were 503",
        enqueued.len(),
        completed.len(),
        unavailable.load(Ordering::Relaxed)
    );
}
