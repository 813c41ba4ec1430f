//! Over a real socket: the server as `errand serve` runs it, and its graceful shutdown.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use errand_server::Config;
use errand_testkit::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request on a fresh connection: (status, JSON body).
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body) = request(addr, method, path, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A `GET` on a fresh connection: (status, text body).
async fn http_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None).await
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[tokio::test]
async fn enqueue_fetch_and_complete_over_a_socket() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let (s, e) = http(
        addr,
        "POST",
        "/v1/queues/net/jobs",
        Some(json!({"kind": "k", "payload": [1]})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let (s, f) = http(
        addr,
        "POST",
        "/v1/fetch",
        Some(json!({"queues": ["net"], "worker_id": "w"})),
    )
    .await;
    assert_eq!(s, 200);
    let job = &f["jobs"][0];
    assert_eq!(job["id"], e["id"]);
    let (s, _) = http(
        addr,
        "POST",
        &format!("/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
        Some(json!({"lease_token": job["lease_token"]})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, q) = http(addr, "GET", "/v1/queues/net", None).await;
    assert_eq!(q["counts"]["completed"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_answers_waiting_fetches_empty_finishes_and_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::with_data_dir(dir.path());
    let server = TestServer::start_with(config.clone()).await;
    let addr = server.addr();
    let waiting = tokio::spawn(async move {
        let t = Instant::now();
        let r = http(
            addr,
            "POST",
            "/v1/fetch",
            Some(json!({"queues": ["idle"], "worker_id": "w", "wait_ms": 30_000})),
        )
        .await;
        (t.elapsed(), r)
    });
    // Once the fetch is parked, shut down: only the shutdown can answer it then.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = http_text(addr, "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        let parked = metrics
            .lines()
            .find_map(|l| l.strip_prefix("errand_fetches_waiting "))
            .map(|v| v.trim().parse::<u64>().unwrap());
        if parked == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fetch never parked: {parked:?}"
        );
        // A poll interval: the loop ends on what it reads.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    server.shutdown().await;
    let took = t.elapsed();
    let (elapsed, (status, body)) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jobs"], json!([]));
    assert!(
        elapsed < Duration::from_secs(10),
        "answered at shutdown, not after its wait: {elapsed:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "a bounded shutdown: {took:?}"
    );
    // The store was closed: a new server opens the same directory (its lock was released).
    let again = TestServer::start_with(config).await;
    let (s, _) = http(again.addr(), "GET", "/health/ready", None).await;
    assert_eq!(s, 200);
    again.shutdown().await;
}
