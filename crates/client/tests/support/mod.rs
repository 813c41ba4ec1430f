//! A real server per test, and polling with a deadline instead of sleeping.

#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use errand_client::protocol::{JobState, JobView};
use errand_client::{Client, RetryPolicy, ShutdownReport, Worker};
use errand_testkit::TestServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any outcome may take to show before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A server and a client of it.
pub async fn start() -> (TestServer, Client) {
    let server = TestServer::start().await;
    let client = client_of(&server);
    (server, client)
}

/// A server with settings changed by `tweak`, and a client of it; keep the directory while the server
/// runs.
pub async fn start_with(
    tweak: impl FnOnce(&mut errand_server::Config),
) -> (TestServer, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = errand_server::Config::with_data_dir(dir.path());
    tweak(&mut config);
    let server = TestServer::start_with(config).await;
    let client = client_of(&server);
    (server, client, dir)
}

/// A client of `server` whose retries give up quickly, so that a broken test fails fast.
pub fn client_of(server: &TestServer) -> Client {
    Client::builder(server.url())
        .retry(RetryPolicy {
            max_elapsed: Duration::from_secs(2),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap()
}

/// Calls `f` until it gives `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until job `id` is in `state`, and returns it.
pub async fn wait_state(client: &Client, id: &str, state: JobState) -> JobView {
    eventually(&format!("job {id} to be {state}"), async || {
        let j = client.get(id).await.unwrap();
        (j.state == state).then_some(j)
    })
    .await
}

/// A worker running in a task, stopped by [`Running::stop`].
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<ShutdownReport>,
}

impl Running {
    pub fn start(worker: Worker) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until(async {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    /// Shuts the worker down and returns its report.
    pub async fn stop(self) -> ShutdownReport {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the worker stops in time")
            .unwrap()
    }
}
