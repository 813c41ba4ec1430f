//! Acknowledged writes survive a SIGKILL.
//!
//! A clean shutdown proves little: the writer checkpoints the WAL on the way out. So the parent test
//! re-runs this test binary as a child process in "child mode" (selected by [`CHILD_ENV`]). The child
//! enqueues and completes jobs from several concurrent tasks and prints one line per write the store
//! acknowledged: `E <id>` after an enqueue, `C <id>` after a completion. Once enough lines have arrived,
//! the parent kills the child with SIGKILL — mid-commit, most likely — reopens the database and checks
//! that every printed enqueue is there, every printed completion is `completed`, and the file passes
//! `PRAGMA integrity_check`. A line is printed only after the store answered, so a missing id is an
//! acknowledged write that was lost.

// Tests unwrap freely.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use errand_core::{Ack, Claim, Engine, EngineConfig, JobId, JobState, NewJob, SystemClock};
use errand_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use tokio::task::JoinSet;

/// Names the database the child writes to; without it the child-mode test does nothing.
const CHILD_ENV: &str = "ERRAND_CRASH_CHILD_DB";
/// The child-mode test's name, as `--exact` wants it.
const CHILD_TEST: &str = "sigkill_child";
const QUEUE: &str = "crash";

/// Enough lines that the kill lands in the middle of sustained, concurrent writing.
const MIN_ENQUEUED: usize = 2_000;
const MIN_COMPLETED: usize = 500;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

const PRODUCERS: usize = 4;
const WORKERS: usize = 2;

/// Child mode: writes until killed. A harmless no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(&db, SqliteOptions::default()).unwrap();
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(SystemClock),
        EngineConfig::default(),
    );
    // The harness printed "test sigkill_child ... " without a newline; start our lines on a fresh one.
    emit("");

    let mut tasks = JoinSet::new();
    for p in 0..PRODUCERS {
        tasks.spawn(produce(engine.clone(), p));
    }
    for w in 0..WORKERS {
        tasks.spawn(work(engine.clone(), w));
    }
    // The tasks loop forever; one that ends has failed, and a failure nobody sees would just look like a
    // slow child to the parent.
    let ended = tasks.join_next().await;
    panic!("a child task ended: {ended:?}");
}

async fn produce(engine: Engine, producer: usize) {
    for i in 0u64.. {
        let job = |k: u64| NewJob::new(QUEUE, "noop", json!({"n": i, "k": k, "p": producer}));
        // Mix single enqueues with small batches: both paths must be durable once answered.
        let ids: Vec<JobId> = if i.is_multiple_of(3) {
            let size = 2 + i % 4;
            let batch = (0..size).map(job).collect();
            let out = engine.enqueue_many(batch).await.unwrap();
            out.into_iter().map(|e| e.id).collect()
        } else {
            vec![engine.enqueue(job(0)).await.unwrap().id]
        };
        for id in ids {
            emit(&format!("E {id}"));
        }
    }
}

async fn work(engine: Engine, worker: usize) {
    loop {
        let jobs = engine
            .claim(Claim {
                queues: vec![QUEUE.into()],
                worker_id: format!("crash-worker-{worker}"),
                limit: 8,
                heartbeat_ms: None,
            })
            .await
            .unwrap();
        if jobs.is_empty() {
            // Producers are far faster than workers, so this is rare; yielding just avoids hogging a
            // thread when it happens.
            tokio::task::yield_now().await;
            continue;
        }
        // One worker acknowledges job by job and the other in batches, so both paths are covered.
        if worker.is_multiple_of(2) {
            for job in jobs {
                let token = job.lease.unwrap().token;
                let out = engine.complete(job.id, token, None).await.unwrap();
                assert_eq!(out.state, JobState::Completed);
                emit(&format!("C {}", job.id));
            }
        } else {
            let acks = jobs
                .iter()
                .map(|job| Ack::Complete {
                    id: job.id,
                    token: job.lease.clone().unwrap().token,
                    result: Some(json!({"ok": true})),
                })
                .collect();
            let outs = engine.ack(acks).await.unwrap();
            for (job, out) in jobs.iter().zip(outs) {
                assert_eq!(out.unwrap().state, JobState::Completed);
                emit(&format!("C {}", job.id));
            }
        }
    }
}

/// Writes one whole line and flushes it before returning.
///
/// The stdout lock keeps concurrent tasks' lines from interleaving; a single `write_all` of the whole line
/// keeps a line from being split across writes, so the kill can at worst cut off the unterminated tail,
/// which the parent ignores. A write error means the parent is gone: panicking ends the child.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

/// Kills the child if the parent test fails before it does, so no child outlives the test run.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the child printed.
#[derive(Default)]
struct Seen {
    enqueued: Vec<JobId>,
    completed: Vec<JobId>,
}

impl Seen {
    fn record(&mut self, line: &str) {
        let (list, id) = if let Some(id) = line.strip_prefix("E ") {
            (&mut self.enqueued, id)
        } else if let Some(id) = line.strip_prefix("C ") {
            (&mut self.completed, id)
        } else {
            // The test harness's own output.
            return;
        };
        // A malformed id would mean interleaved or corrupted lines: the test could not trust its evidence.
        let id = id
            .parse::<JobId>()
            .unwrap_or_else(|_| panic!("malformed line from the child: {line:?}"));
        list.push(id);
    }

    fn enough(&self) -> bool {
        self.enqueued.len() >= MIN_ENQUEUED && self.completed.len() >= MIN_COMPLETED
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("errand.db");

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // Reading on threads lets the parent wait on the output with a deadline.
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // An unterminated line was cut off by the kill: its id may be truncated.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if tx.send(line.trim_end().to_string()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child.0.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let started = Instant::now();
    let deadline = started + CHILD_TIMEOUT;
    let mut seen = Seen::default();
    while !seen.enough() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.record(&line),
            Err(e) => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                panic!(
                    "the child did not write enough ({e:?} after {:?}): {} enqueued (want {MIN_ENQUEUED}), \
                     {} completed (want {MIN_COMPLETED}); child stderr:\n{}",
                    started.elapsed(),
                    seen.enqueued.len(),
                    seen.completed.len(),
                    stderr.join().unwrap_or_default(),
                );
            }
        }
    }

    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(
        !status.success(),
        "the child should have died of the kill: {status:?}"
    );
    // Lines already in the pipe were printed before the kill, hence acknowledged too. The pipe closes
    // with the child, so this ends.
    reader.join().unwrap();
    for line in lines.try_iter() {
        seen.record(&line);
    }
    let child_stderr = stderr.join().unwrap_or_default();
    let written = started.elapsed();

    let (enqueued, completed) = (seen.enqueued.len(), seen.completed.len());
    let unique: HashSet<JobId> = seen.enqueued.iter().copied().collect();
    assert_eq!(unique.len(), enqueued, "the child printed an enqueue twice");

    verify_jobs(&db, &seen, &child_stderr);
    verify_integrity(&db);
    eprintln!(
        "crash test: {enqueued} enqueued and {completed} completed ids verified after SIGKILL \
         (child ran {written:?}, whole test {:?})",
        started.elapsed()
    );
}

/// Reopens the store the way a restarted server would and looks up every acknowledged id.
fn verify_jobs(db: &Path, seen: &Seen, child_stderr: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The kernel released the dead child's lock; a failure here is a lock or recovery bug.
        let store = SqliteStore::open(db, SqliteOptions::default()).unwrap();
        let engine = Engine::new(
            Arc::new(store),
            Arc::new(SystemClock),
            EngineConfig::default(),
        );
        // Collect every loss before failing: the whole picture is the evidence.
        let mut missing = Vec::new();
        let mut not_completed = Vec::new();
        for &id in &seen.enqueued {
            match engine.get(id).await {
                Ok(job) => assert_eq!((job.queue.as_str(), job.kind.as_str()), (QUEUE, "noop")),
                Err(e) => missing.push(format!("E {id}: {e}")),
            }
        }
        for &id in &seen.completed {
            match engine.get(id).await {
                Ok(job) if job.state == JobState::Completed => {}
                Ok(job) => not_completed.push(format!("C {id}: {}", job.state)),
                Err(e) => not_completed.push(format!("C {id}: {e}")),
            }
        }
        assert!(
            missing.is_empty() && not_completed.is_empty(),
            "acknowledged writes lost in the crash: {} of {} enqueues missing, {} of {} completions \
             not completed\nmissing: {missing:?}\nnot completed: {not_completed:?}\nchild stderr:\n\
             {child_stderr}",
            missing.len(),
            seen.enqueued.len(),
            not_completed.len(),
            seen.completed.len(),
        );
        // Dropping the engine drops the store, whose writer checkpoints and closes in the background.
    });
}

/// The file itself must be sound, not just the rows we asked about.
fn verify_integrity(db: &Path) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    // The reopened store's writer may still be checkpointing as it shuts down.
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, ["ok"], "integrity_check after the crash");
}
