//! What the CLI's process-level tests share.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use errand_client::Client;

/// `errand serve` on the embedded store in `dir`, without an API key, listening on `port`.
pub fn serve(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("ERRAND_API_KEY")
        .env("ERRAND_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// A server killed (SIGKILL) and waited for when dropped: a failed assertion leaves no server behind
/// (holding a tmpfs, or the test's stderr, which would keep whatever reads it waiting).
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the server behind `client` is ready, or fails the test after 30 s.
pub async fn wait_ready(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health_ready().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that every acknowledged enqueue is on the server and every acknowledged completion is
/// `completed` there.
pub async fn assert_acknowledged(client: &Client, enqueued: &[String], completed: &[String]) {
    for id in enqueued {
        client
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("acknowledged enqueue {id} lost: {e}"));
    }
    for id in completed {
        let job = client.get(id).await.unwrap();
        assert_eq!(
            job.state,
            errand_client::protocol::JobState::Completed,
            "acknowledged completion of {id} lost"
        );
    }
}
