//! What the CLI's process-level tests share.

#![allow(clippy::unwrap_used, dead_code)]

use std::time::{Duration, Instant};

use errand_client::Client;

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
