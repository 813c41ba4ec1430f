//! A canary secret in a job's payload and result never reaches the logs (at every level of Errand's
//! own code), an error answer, the metrics, the event stream, the audit log or a listing of queues;
//! and another caller reading an active job never sees its holder's lease token.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use errand_server::Config;
use errand_server::auth::{ApiKey, Scope};
use errand_testkit::TestServer;
use serde_json::{Value, json};

const CANARY: &str = "CANARY-7f3a9c-s3cret";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Http {
    base: String,
    c: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, String) {
        let mut req = self
            .c
            .request(method, format!("{}{path}", self.base))
            .header("authorization", "Bearer admin-secret-key");
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (s, text) = self
            .call(reqwest::Method::POST, path, Some(body.to_string()))
            .await;
        assert!((200..300).contains(&s), "{path}: {s} {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn get(&self, path: &str) -> String {
        self.call(reqwest::Method::GET, path, None).await.1
    }
}

#[tokio::test]
async fn a_secret_in_a_payload_never_leaks() {
    let logs = Captured::default();
    let sink = logs.clone();
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("errand_server", tracing::Level::TRACE)
        .with_target("errand_core", tracing::Level::TRACE)
        .with_target("errand_store_sqlite", tracing::Level::TRACE)
        .with_default(tracing::Level::INFO);
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || sink.clone()),
    );
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.keys = vec![
        ApiKey::from_secret("admin", "admin-secret-key", vec![Scope::Admin], vec![]),
        ApiKey::from_secret(
            "other-worker",
            "other-worker-key",
            vec![Scope::Read, Scope::Work],
            vec![],
        ),
    ];
    let server = TestServer::start_with(config).await;
    let http = Http {
        base: server.url(),
        c: reqwest::Client::new(),
    };
    let secret = json!({"card": CANARY});

    // Error answers name fields, never values.
    let (s, too_large) = http
        .call(
            reqwest::Method::POST,
            "/v1/queues/pay/jobs",
            Some(json!({"kind": "charge", "payload": {"blob": format!("{CANARY}{}", "x".repeat(2 << 20))}}).to_string()),
        )
        .await;
    assert_eq!(s, 413);
    let (s, wrong_type) = http
        .call(
            reqwest::Method::POST,
            "/v1/queues/pay/jobs",
            Some(json!({"kind": 5, "payload": secret}).to_string()),
        )
        .await;
    assert_eq!(s, 400);
    let (s, too_deep) = http
        .call(
            reqwest::Method::POST,
            "/v1/queues/pay/jobs",
            Some(format!(
                "{{\"kind\":\"charge\",\"payload\":{}\"{CANARY}\"{}}}",
                "[".repeat(70),
                "]".repeat(70)
            )),
        )
        .await;
    assert_eq!(s, 400);

    // A job runs: fails once (delayed by its backoff, then promoted by an operator: no clock waited
    // on), then completes with a result that holds the secret too.
    let id = http
        .post(
            "/v1/queues/pay/jobs",
            json!({"kind": "charge", "payload": secret, "max_attempts": 3,
                                            "backoff": {"type": "fixed", "delay_ms": 3_600_000}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = &http
        .post("/v1/fetch", json!({"queues": ["pay"], "worker_id": "w1"}))
        .await["jobs"][0];
    let token = job["lease_token"].as_str().unwrap().to_string();
    // Another caller sees the job active, but not its lease token.
    let (_, seen) = {
        let resp = http
            .c
            .get(format!("{}/v1/jobs/{id}", http.base))
            .header("authorization", "Bearer other-worker-key")
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    assert!(seen.contains("\"active\""), "{seen}");
    assert!(!seen.contains(&token), "{seen}");
    let failed = http
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": token, "message": "declined"}),
        )
        .await;
    assert_eq!(failed["state"], "delayed", "{failed}");
    http.post(&format!("/v1/jobs/{id}/promote"), json!({}))
        .await;
    server.state().engine.maintain().await.unwrap();
    let job = &http
        .post("/v1/fetch", json!({"queues": ["pay"], "worker_id": "w1"}))
        .await["jobs"][0];
    http.post(
        &format!("/v1/jobs/{id}/complete"),
        json!({"lease_token": job["lease_token"], "result": {"echo": CANARY}}),
    )
    .await;
    http.post("/v1/queues/pay/pause", json!({})).await;

    let mut seen = vec![too_large, wrong_type, too_deep];
    for path in [
        "/metrics",
        "/v1/audit",
        "/v1/queues",
        "/v1/alerts",
        "/v1/workers",
        "/v1/queues/pay/dead/groups",
    ] {
        seen.push(http.get(path).await);
    }
    // Every event this node kept (a cursor of another run replays them all).
    let mut events = http
        .c
        .get(format!("{}/v1/events?after=0.0", http.base))
        .header("authorization", "Bearer admin-secret-key")
        .send()
        .await
        .unwrap();
    let mut stream = String::new();
    while !stream.contains("\"completed\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        stream.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    seen.push(stream);
    drop(events);
    server.shutdown().await;
    seen.push(String::from_utf8(logs.0.lock().unwrap().clone()).unwrap());
    let logged = seen.last().unwrap();
    assert!(
        logged.contains(&id),
        "the logs do tell of the job: {logged}"
    );
    for (i, text) in seen.iter().enumerate() {
        assert!(
            !text.contains(CANARY),
            "the secret leaked into answer {i}: {text}"
        );
        assert!(
            !text.contains("admin-secret-key"),
            "a key leaked into answer {i}"
        );
    }
}
