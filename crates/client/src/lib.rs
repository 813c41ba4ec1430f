//! A Rust client and worker SDK for Errand's HTTP API.
//!
//! - [`Client`] has one method per route: producers enqueue and look at jobs, operators cancel, retry,
//!   pause, configure and replay, workers fetch, heartbeat and acknowledge. It retries failures that may
//!   pass (connection errors, timeouts, `503`, `429` after its `Retry-After`) with exponential backoff
//!   and full jitter — but only for requests that are safe to repeat; the table on [`Client`] says which.
//! - [`Worker`] runs typed handlers: it long-polls for jobs, keeps their leases by heartbeat, stops a
//!   handler at the job's timeout or when its lease is lost, catches panics, acknowledges in batches, and
//!   shuts down gracefully, releasing the jobs it fetched but did not start. See the [`worker`] module.
//!
//! The wire types are [`errand_protocol`]'s, re-exported as [`protocol`].
//!
//! **Invariant:** this crate knows the HTTP API and nothing behind it: it depends on `errand-protocol`,
//! never on the engine or a store, so an application that enqueues jobs compiles no database.
//!
//! ```no_run
//! use errand_client::{Client, JobContext, JobError, Worker};
//! use errand_client::protocol::EnqueueJob;
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Deserialize)]
//! struct Resize {
//!     url: String,
//!     width: u32,
//! }
//!
//! # async fn example() -> Result<(), errand_client::Error> {
//! let client = Client::builder("http://127.0.0.1:7700").api_key("secret").build()?;
//!
//! // A producer.
//! let job = EnqueueJob::new("resize", json!({"url": "https://example.com/a.png", "width": 640}));
//! let enqueued = client.enqueue("images", &job).await?;
//! println!("enqueued {}", enqueued.id);
//!
//! // A worker, until Ctrl-C or SIGTERM.
//! let report = Worker::builder(client)
//!     .queue("images")
//!     .concurrency(8)
//!     .handler("resize", |ctx: JobContext, job: Resize| async move {
//!         if job.width == 0 {
//!             return Err(JobError::fatal("width 0"));
//!         }
//!         ctx.progress(json!({"step": "downloading"}));
//!         // ... the work, passing ctx.idempotency_key() to the APIs it calls ...
//!         Ok(json!({"resized": job.url}))
//!     })
//!     .build()?
//!     .run()
//!     .await;
//! println!("{report:?}");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod retry;
pub mod worker;

pub use client::{Client, ClientBuilder, DeadJobs, ListJobs};
pub use errand_protocol as protocol;
pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use worker::{JobContext, JobError, ShutdownReport, Worker, WorkerBuilder};
