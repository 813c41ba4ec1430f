//! The conformance suite against the SQLite store: each test a fresh database in a fresh temp dir.

use std::sync::Arc;

use errand_store_sqlite::{SqliteOptions, SqliteStore};
use errand_store_tests::Fixture;

async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("errand.db"), SqliteOptions::default())
        .expect("open a fresh store");
    Fixture::new(Arc::new(store), dir)
}

errand_store_tests::conformance_suite!(fresh);
