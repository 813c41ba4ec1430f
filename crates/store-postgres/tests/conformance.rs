//! The conformance suite against the PostgreSQL store: each check in a fresh schema of its own, dropped
//! when the check ends.
//!
//! The suite's checks are expanded through `errand_store_tests::__for_each_check!` (the list that
//! `conformance_suite!` itself expands) with a test body of our own. Without a database
//! `errand_testkit::test_url` panics, so each check fails rather than passing unrun. Every check of the list
//! runs; none is left out.

use std::sync::Arc;

use errand_core::Store;
use errand_store_postgres::PgStore;
use errand_store_tests::Fixture;
use errand_testkit::{TestSchema, test_url};

/// A fixture over a store in a fresh schema (always `Some`: without a database `test_url` panics).
async fn fresh() -> Option<Fixture> {
    let url = test_url().await?;
    let schema = TestSchema::new(&url).await;
    let store = schema.store().await;
    let options = schema.options();
    // A new store on the same schema, as a restarted node connects.
    let reopen = move || {
        let (url, options) = (url.clone(), options.clone());
        async move {
            let store = PgStore::connect(&url, options)
                .await
                .unwrap_or_else(|e| panic!("connect to the test schema again: {e}"));
            Arc::new(store) as Arc<dyn Store>
        }
    };
    Some(Fixture::with_reopen(Arc::new(store), schema, reopen))
}

macro_rules! pg_check {
    ($fresh:path, $module:ident :: $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let Some(fixture) = $fresh().await else {
                return;
            };
            errand_store_tests::$module::$name(fixture).await;
        }
    };
}

errand_store_tests::__for_each_check!(pg_check, fresh);
