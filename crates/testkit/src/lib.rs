//! What Errand's tests share, kept out of the product crates: nothing here is compiled into `errand`,
//! and no product crate depends on this one except as a dev-dependency.
//!
//! - [`server`]: a real server on a free loopback port over a fresh embedded store ([`TestServer`]),
//!   for the server's, the client's and the CLI's tests;
//! - [`postgres`]: a PostgreSQL server for tests ([`test_url`]: the one named by
//!   `ERRAND_TEST_POSTGRES_URL`, the local one, or a throwaway cluster) and a fresh schema per test
//!   ([`TestSchema`]), for every crate with PostgreSQL tests and for the chaos harness.
//!
//! Test code panics on a broken environment rather than returning errors: a test has no use for a
//! database or a port it cannot get.

#![allow(clippy::unwrap_used)]

pub mod postgres;
pub mod server;

pub use postgres::{TEST_POOL_SIZE, TestSchema, fresh_store, test_url};
pub use server::TestServer;
