//! Group commit: concurrent writes share transactions (and so syncs) instead of paying one each.

use std::sync::Arc;

use errand_core::{Engine, EngineConfig, NewJob, SystemClock};
use errand_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("errand.db"), SqliteOptions::default()).unwrap();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(SystemClock),
        EngineConfig::default(),
    );
    // Warm up: the queue row exists, so every enqueue below is a pure insert.
    engine
        .enqueue(NewJob::new("g", "k", json!(0)))
        .await
        .unwrap();
    let before = store.writer_stats();

    const N: u64 = 256;
    let barrier = Arc::new(tokio::sync::Barrier::new(N as usize));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (engine, barrier) = (engine.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                engine
                    .enqueue(NewJob::new("g", "k", json!(i)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = store.writer_stats();
    let (commits, ops) = (
        after.commits - before.commits,
        after.operations - before.operations,
    );
    assert_eq!(ops, N, "every enqueue was one committed operation");
    println!("{commits} commits for {ops} concurrent enqueues");
    // One sync each would be 256 commits; sharing brings it far below.
    assert!(
        commits <= N / 4,
        "{commits} commits for {ops} concurrent enqueues"
    );
    assert_eq!(engine.stats("g").await.unwrap().waiting, N + 1);
}

/// Checkpoints happen beside the writer, not in it: after a stream of commits, the checkpoint thread
/// copies the WAL back into the database file, long before the writer's own threshold (400 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("errand.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(SystemClock),
        EngineConfig::default(),
    );
    // More commits than it takes to nudge the checkpoint thread, one at a time, of rows that fill
    // some 40 pages.
    for i in 0..300 {
        engine
            .enqueue(NewJob::new(
                "c",
                "k",
                json!({ "i": i, "pad": "x".repeat(300) }),
            ))
            .await
            .unwrap();
    }
    // Until a checkpoint, new pages live only in the WAL and the database file stays as small as the
    // empty schema. Looking at its size checkpoints nothing (asking SQLite would). The thread runs on
    // its own time: poll.
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < 100_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 10 s: the database file is {} bytes",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
