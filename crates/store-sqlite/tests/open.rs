//! Opening a database: what survives a reopen, and what is refused with a clear error.

use std::sync::Arc;

use errand_core::{Engine, EngineConfig, Error, JobState, ManualClock, NewJob};
use errand_store_sqlite::schema::SCHEMA_VERSION;
use errand_store_sqlite::{SqliteOptions, SqliteStore, SyncMode};
use serde_json::json;

fn engine(store: SqliteStore) -> Engine {
    Engine::new(
        Arc::new(store),
        Arc::new(ManualClock::at_fixed_start()),
        EngineConfig::default(),
    )
}

fn unavailable_message(r: Result<SqliteStore, Error>) -> String {
    match r {
        Err(Error::Unavailable(m)) => m,
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected the open to be refused"),
    }
}

#[tokio::test]
async fn a_reopened_store_has_every_job_and_its_queue_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let e = engine(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let id = e
        .enqueue(NewJob::new("q", "k", json!({"x": 1})))
        .await
        .unwrap()
        .id;
    e.pause("q").await.unwrap();
    drop(e);

    let e = engine(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let job = e.get(id).await.unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(job.payload.get(), r#"{"x":1}"#);
    assert!(e.queue_info("q").await.unwrap().paused);
}

#[tokio::test]
async fn a_second_open_of_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let first = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let msg = unavailable_message(SqliteStore::open(&path, SqliteOptions::default()));
    assert!(msg.contains("in use by another Errand process"), "{msg}");
    drop(first);
    SqliteStore::open(&path, SqliteOptions::default())
        .expect("free again once the first is closed");
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    drop(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);

    let msg = unavailable_message(SqliteStore::open(&path, SqliteOptions::default()));
    assert!(msg.contains("newer than this Errand understands"), "{msg}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1, "untouched");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let msg = unavailable_message(SqliteStore::open(&path, SqliteOptions::default()));
    assert!(msg.contains("not an Errand database"), "{msg}");
}

#[tokio::test]
async fn the_relaxed_sync_mode_stores_and_reopens_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let relaxed = SqliteOptions {
        sync: SyncMode::Normal,
        ..SqliteOptions::default()
    };
    let e = engine(SqliteStore::open(&path, relaxed.clone()).unwrap());
    let ids = e
        .enqueue_many((0..50).map(|i| NewJob::new("q", "k", json!(i))).collect())
        .await
        .unwrap();
    drop(e);
    let e = engine(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    for x in ids {
        e.get(x.id).await.unwrap();
    }
}

/// Dead jobs a store held before it stored fingerprints (schema version 8) are fingerprinted and
/// counted into their groups when migration 9 runs, as the engine fingerprints a job when it dies.
#[tokio::test]
async fn migration_9_fingerprints_and_groups_the_dead_jobs_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let e = engine(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let dead = errand_store_tests::migrations::three_dead_jobs(&e).await;
    drop(e);
    // Back to version 8, as a store of the previous release left it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX jobs_expiring; ALTER TABLE jobs DROP COLUMN expires_at;
         DROP TRIGGER jobs_dead_grouped_insert; DROP TRIGGER jobs_dead_grouped_delete;
         DROP TRIGGER jobs_dead_grouped_update; DROP INDEX jobs_dead_groups;
         DROP TABLE dead_groups; ALTER TABLE jobs DROP COLUMN fingerprint;
         PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(conn);

    let e = engine(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    errand_store_tests::migrations::dead_jobs_are_grouped_after_migration_9(&e, &dead).await;
    assert!(e.dead_groups("d", 10).await.unwrap().complete);

    // A job killed without a fingerprint (by a node of an earlier release) is in no group, and the
    // answer says the groups are not complete.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE jobs SET fingerprint = NULL WHERE id = ?1",
            [dead[2].to_string()],
        )
        .unwrap();
    let g = e.dead_groups("d", 10).await.unwrap();
    assert_eq!((g.scanned, g.complete), (1, false));
}
