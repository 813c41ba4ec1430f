//! The conformance suite against the SQLite store: each test a fresh database in a fresh temp dir.

use std::sync::Arc;

use errand_core::Store;
use errand_store_sqlite::{SqliteOptions, SqliteStore};
use errand_store_tests::Fixture;

async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("errand.db");
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open a fresh store");
    // The same file again, as a restarted server opens it (the check has closed the store first).
    let reopen = move || {
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .expect("open the store again: every handle on it must be dropped first");
        std::future::ready(Arc::new(store) as Arc<dyn Store>)
    };
    Fixture::with_reopen(Arc::new(store), dir, reopen)
}

errand_store_tests::conformance_suite!(fresh);
