//! Power loss and I/O faults (issue 8, item 2), through the fault layer in `faults/`.
//!
//! One scenario — enqueues one by one and in a batch, claims, heartbeats, completions, retryable and
//! fatal failures, cancels, a lease recovered by maintenance, a queue paused and resumed — runs through
//! the engine one operation at a time, so that it makes the same writes and syncs each run. It is run:
//! - with the power cut at every one of those calls in turn;
//! - with every call in turn failing once, and failing from there on;
//! - with the disk full part-way through and freed again.
//!
//! After each run the store is closed, the power is cut (every file goes back to its last sync), and the
//! database is opened again. It must open (no valid database is refused), pass `integrity_check`, and
//! hold exactly what the running store showed at the end: every acknowledged write, and nothing that
//! was refused. The same run with `sync = normal` must find writes missing: proof that the check can
//! fail, and the reason `full` is the default.

#![allow(clippy::unwrap_used)]

mod faults;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use errand_core::{Claim, Engine, EngineConfig, Error, Failure, ManualClock, NewJob};
use errand_store_sqlite::{SqliteOptions, SqliteStore, SyncMode};
use faults::Mode;
use rusqlite::{Connection, OpenFlags, ffi};
use serde_json::json;

const Q: &str = "power";

/// What the scenario saw: the operations the store acknowledged and those it refused, and the jobs
/// whose enqueue, completion or cancel was acknowledged (each must be in the database reopened).
#[derive(Debug, Default)]
struct Outcome {
    acknowledged: usize,
    refused: Vec<Error>,
    enqueued: Vec<errand_core::JobId>,
    completed: Vec<errand_core::JobId>,
    cancelled: Vec<errand_core::JobId>,
}

impl Outcome {
    fn note<T>(&mut self, r: errand_core::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.acknowledged += 1;
                Some(v)
            }
            Err(e) => {
                self.refused.push(e);
                None
            }
        }
    }
}

fn claim(limit: usize) -> Claim {
    Claim {
        queues: vec![Q.into()],
        worker_id: "w".into(),
        limit,
    }
}

/// Checkpoints the WAL into the database and truncates it, from a connection beside the store's: what
/// the store does every 200 commits and on closing, here at chosen points of the scenario, so that
/// the power is also cut between the WAL's sync, the database's writes and sync, and the truncation.
fn checkpoint(path: &Path) {
    if let Ok(conn) = Connection::open(path) {
        let _ = conn.busy_timeout(Duration::from_secs(5));
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
    }
}

/// The scenario. An operation that needs what a refused one would have given is skipped.
async fn scenario(engine: &Engine, clock: &ManualClock, path: &Path, out: &mut Outcome) {
    let job = |n: u64| {
        let mut j = NewJob::new(Q, "k", json!({ "n": n, "pad": "x".repeat(300) }));
        j.options.timeout_ms = Some(1_000);
        j
    };
    for n in 0..6 {
        if let Some(e) = out.note(engine.enqueue(job(n)).await) {
            out.enqueued.push(e.id);
        }
    }
    if let Some(batch) = out.note(engine.enqueue_many((10..16).map(job).collect()).await) {
        out.enqueued.extend(batch.iter().map(|e| e.id));
    }
    checkpoint(path);
    let mut held = Vec::new();
    for _ in 0..3 {
        if let Some(jobs) = out.note(engine.claim(claim(2)).await) {
            held.extend(jobs);
        }
    }
    let token = |j: &errand_core::Job| j.lease.as_ref().unwrap().token.clone();
    let mut held = held.into_iter();
    if let Some(j) = held.next() {
        out.note(
            engine
                .heartbeat(j.id, token(&j), Some(json!({"at": 1})))
                .await,
        );
        if out
            .note(engine.complete(j.id, token(&j), Some(json!("ok"))).await)
            .is_some()
        {
            out.completed.push(j.id);
        }
    }
    if let Some(j) = held.next()
        && out
            .note(engine.complete(j.id, token(&j), None).await)
            .is_some()
    {
        out.completed.push(j.id);
    }
    if let Some(j) = held.next() {
        out.note(
            engine
                .fail(j.id, token(&j), Failure::retryable("later"))
                .await,
        );
    }
    if let Some(j) = held.next() {
        out.note(engine.fail(j.id, token(&j), Failure::fatal("never")).await);
    }
    // The rest of the held leases run out and are recovered.
    clock.advance(60_000);
    out.note(engine.maintain().await);
    if let Some(waiting) = out.note(
        engine
            .list(Q, errand_core::JobState::Waiting, None, 2)
            .await,
    ) {
        for j in waiting.jobs {
            if out.note(engine.cancel(j.id).await).is_some() {
                out.cancelled.push(j.id);
            }
        }
    }
    checkpoint(path);
    out.note(engine.pause(Q).await);
    out.note(engine.resume(Q).await);
    if let Some(jobs) = out.note(engine.claim(claim(3)).await) {
        for j in jobs {
            if out
                .note(engine.complete(j.id, token(&j), None).await)
                .is_some()
            {
                out.completed.push(j.id);
            }
        }
    }
    for n in 20..23 {
        if let Some(e) = out.note(engine.enqueue(job(n)).await) {
            out.enqueued.push(e.id);
        }
    }
}

/// Every row of every table, as text: what "the same data" means below.
fn dump(conn: &Connection) -> Vec<String> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut rows = Vec::new();
    for t in tables {
        let mut st = conn
            .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1"))
            .unwrap();
        let n = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect();
            rows.push(format!("{t}: {}", cells.join(" | ")));
        }
    }
    rows
}

fn read_only(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// A run's findings: acknowledged writes the database lost, or writes it holds that were refused.
struct Run {
    outcome: Outcome,
    /// Writes and syncs made until the power cut, and how many of them were refused.
    calls: (u64, u64),
    differences: Vec<String>,
}

/// Runs the scenario under `mode` (changed to `then` after `switch_after` operations, if given), cuts
/// the power, reopens, and compares.
async fn run(mode: Mode, sync: SyncMode) -> Run {
    faults::arm(mode);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let options = SqliteOptions {
        sync,
        ..SqliteOptions::default()
    };
    // Opening writes the schema: refused writes there are a database the store never acknowledged,
    // and the check below is then that reopening still works.
    let store = SqliteStore::open(&path, options.clone()).ok();
    let mut outcome = Outcome::default();
    let mut live = Vec::new();
    if let Some(store) = store {
        let clock = ManualClock::at_fixed_start();
        let engine = Engine::new(
            Arc::new(store),
            Arc::new(clock.clone()),
            EngineConfig::default(),
        );
        scenario(&engine, &clock, &path, &mut outcome).await;
        // What the running store shows, read beside it.
        live = dump(&read_only(&path));
        // The power goes while the store is open: it never closes cleanly (closing would checkpoint).
        faults::cut_now();
        drop(engine);
    }
    let calls = faults::calls();
    faults::cut_now();
    faults::power_cut().unwrap();
    faults::set_mode(Mode::Pass);
    let _ = std::fs::remove_file(dir.path().join("errand.db-shm"));

    let reopened = SqliteStore::open(&path, options)
        .unwrap_or_else(|e| panic!("a database after {mode:?} was refused: {e}"));
    drop(reopened);
    let conn = read_only(&path);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity after {mode:?}");
    let durable = dump(&conn);
    let mut differences: Vec<String> = if live.is_empty() {
        // The store never opened: whatever the schema writes left must still open (checked above).
        Vec::new()
    } else {
        let lost = live.iter().filter(|r| !durable.contains(r));
        let extra = durable.iter().filter(|r| !live.contains(r));
        lost.map(|r| format!("lost: {r}"))
            .chain(extra.map(|r| format!("not acknowledged: {r}")))
            .collect()
    };
    // And against what was acknowledged, not only what the store showed: each acknowledged enqueue
    // is there, each acknowledged completion and cancel too (final states: nothing later changes them).
    let state_of = |id: &errand_core::JobId| -> Option<String> {
        conn.query_row(
            "SELECT state FROM jobs WHERE id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .ok()
    };
    for (ids, want) in [
        (&outcome.enqueued, None),
        (&outcome.completed, Some("completed")),
        (&outcome.cancelled, Some("cancelled")),
    ] {
        for id in ids {
            match (state_of(id), want) {
                (None, _) => differences.push(format!("lost: acknowledged job {id}")),
                (Some(s), Some(w)) if s != w => {
                    differences.push(format!("lost: acknowledged {w} of {id}, found {s}"))
                }
                _ => {}
            }
        }
    }
    Run {
        outcome,
        calls,
        differences,
    }
}

/// How many writes and syncs the scenario makes.
async fn calls_of_the_scenario() -> u64 {
    let run = run(Mode::Pass, SyncMode::Full).await;
    assert!(run.outcome.refused.is_empty(), "{:?}", run.outcome.refused);
    assert!(run.differences.is_empty(), "{:?}", run.differences);
    run.calls.0
}

#[tokio::test]
async fn a_power_cut_at_any_write_loses_no_acknowledged_write() {
    let _one = faults::exclusive().await;
    let calls = calls_of_the_scenario().await;
    assert!(calls >= 150, "the scenario makes {calls} writes and syncs");
    eprintln!("cutting the power at each of {calls} writes and syncs");
    let mut cut_short = 0;
    for at in 1..=calls {
        let run = run(Mode::PowerCut { at }, SyncMode::Full).await;
        assert!(
            run.differences.is_empty(),
            "power cut at call {at} of {calls}: {:#?}",
            run.differences
        );
        cut_short += usize::from(!run.outcome.refused.is_empty());
    }
    // Nearly every cut lands before the scenario's last write, and refuses what follows.
    assert!(cut_short as u64 >= calls / 2, "{cut_short} of {calls}");
    eprintln!("{cut_short} of the {calls} cuts refused an operation");
}

#[tokio::test]
async fn a_write_or_sync_failing_once_or_for_good_loses_nothing_and_reports_the_failure() {
    let _one = faults::exclusive().await;
    let calls = calls_of_the_scenario().await;
    let (mut runs, mut fired, mut reported) = (0, 0, 0);
    for at in 1..=calls {
        for mode in [
            Mode::FailOnce {
                at,
                code: ffi::SQLITE_IOERR_WRITE,
            },
            Mode::FailFrom {
                at,
                code: ffi::SQLITE_IOERR_WRITE,
            },
        ] {
            let run = run(mode, SyncMode::Full).await;
            assert!(
                run.differences.is_empty(),
                "{mode:?}: {:#?}",
                run.differences
            );
            runs += 1;
            fired += usize::from(run.calls.1 >= 1);
            reported += usize::from(!run.outcome.refused.is_empty());
        }
    }
    // The scenario makes the same calls each run, so nearly every fault fires (a checkpoint on the
    // store's own timer can shift the count on a slow machine); and most reach a caller as an error
    // (the others fail the opening of the store, a checkpoint, or writes after the last operation).
    eprintln!("{fired} of {runs} faults fired, {reported} reached an operation's caller");
    assert!(fired * 100 >= runs * 95, "{fired} of {runs} faults fired");
    assert!(
        reported * 2 >= runs,
        "{reported} of {runs} faults reached a caller"
    );
}

#[tokio::test]
async fn a_full_disk_refuses_quickly_with_unavailable_and_loses_nothing_once_freed() {
    let _one = faults::exclusive().await;
    faults::arm(Mode::Pass);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let clock = ManualClock::at_fixed_start();
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    );
    let before = engine.enqueue(NewJob::new(Q, "k", json!(1))).await.unwrap();

    // The disk fills: every write is refused with SQLITE_FULL.
    let (done, _) = faults::calls();
    faults::set_mode(Mode::FailFrom {
        at: done + 1,
        code: ffi::SQLITE_FULL,
    });
    for n in 0..5 {
        let started = Instant::now();
        let e = engine
            .enqueue(NewJob::new(
                Q,
                "k",
                json!({ "n": n, "pad": "x".repeat(5_000) }),
            ))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("disk full"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Reads still work.
    assert_eq!(engine.get(before.id).await.unwrap().id, before.id);

    // Space is freed: writes work again, and nothing acknowledged is lost.
    faults::set_mode(Mode::Pass);
    let after = engine.enqueue(NewJob::new(Q, "k", json!(2))).await.unwrap();
    let live = dump(&read_only(&path));
    drop(engine);
    faults::power_cut().unwrap();
    let _ = std::fs::remove_file(dir.path().join("errand.db-shm"));
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let conn = read_only(&path);
    assert_eq!(dump(&conn), live);
    for id in [before.id, after.id] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM jobs WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

#[tokio::test]
async fn the_same_check_finds_loss_with_the_relaxed_sync_mode() {
    let _one = faults::exclusive().await;
    // No fault at all, only the power cut at the end: `normal` leaves the last commits unsynced.
    let run = run(Mode::Pass, SyncMode::Normal).await;
    assert!(run.outcome.refused.is_empty());
    eprintln!("sync = normal: {} differences", run.differences.len());
    assert!(
        run.differences.iter().any(|d| d.starts_with("lost: jobs:")),
        "sync = normal lost nothing in a power cut: {:#?}",
        run.differences
    );
}
