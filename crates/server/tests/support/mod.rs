//! Drives the router in-process: each call is one real HTTP request through `app()`, without a socket.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use errand_core::{Clock, ManualClock, SystemClock};
use errand_server::auth::{ApiKey, Scope};
use errand_server::{AppState, Config, app};
use errand_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

pub struct Api {
    pub router: Router,
    pub state: AppState,
    pub clock: Option<Arc<ManualClock>>,
    pub stop: watch::Sender<bool>,
    /// The key sent with requests, if any.
    pub key: Option<String>,
    _dir: tempfile::TempDir,
}

pub struct Setup {
    pub manual_clock: bool,
    pub keys: Vec<ApiKey>,
    pub tweak: fn(&mut Config),
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            manual_clock: false,
            keys: Vec::new(),
            tweak: |_| {},
        }
    }
}

impl Api {
    pub fn new() -> Api {
        Api::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("e.db"), SqliteOptions::default()).unwrap();
        let manual = setup
            .manual_clock
            .then(|| Arc::new(ManualClock::new(1_700_000_000_000)));
        let clock: Arc<dyn Clock> = match &manual {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let mut config = Config::with_data_dir(dir.path());
        config.keys = setup.keys;
        (setup.tweak)(&mut config);
        let (stop, stopped) = watch::channel(false);
        let state = AppState::new(Arc::new(store), clock, config, stopped);
        state.follow_events();
        Api {
            router: app(state.clone()),
            state,
            clock: manual,
            stop,
            key: None,
            _dir: dir,
        }
    }

    /// The database file of the store.
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join("e.db")
    }

    /// A key with `scopes` and `prefixes`, its secret being its name.
    pub fn key(name: &str, scopes: &[Scope], prefixes: &[&str]) -> ApiKey {
        ApiKey::from_secret(
            name,
            name,
            scopes.to_vec(),
            prefixes.iter().map(|p| p.to_string()).collect(),
        )
    }

    pub fn as_key(&self, key: &str) -> Api2<'_> {
        Api2 {
            api: self,
            key: Some(key.to_string()),
        }
    }

    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
        {
            // An event stream never ends: its answer is its status and headers.
            return (status, Value::String("event stream".into()), headers);
        }
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = headers
            .get(header::CONTENT_TYPE)
            .is_none_or(|t| t.as_bytes().starts_with(b"application/json"));
        let body = if bytes.is_empty() {
            Value::Null
        } else if !json {
            // Text answers (`/metrics`, the dashboard) are passed on as a string.
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body, headers)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(self.key.as_deref(), method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let (s, b, _) = self.raw(req).await;
        (s, b)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Enqueues `body` on `queue`, expecting success; returns the id.
    pub async fn enqueue(&self, queue: &str, body: Value) -> String {
        let (s, b) = self.post(&format!("/v1/queues/{queue}/jobs"), body).await;
        assert!(s.is_success(), "{s}: {b}");
        b["id"].as_str().unwrap().to_string()
    }

    /// Sends a fetch `body` in a task of its own (a long poll): its answer and how long it took.
    pub fn spawn_fetch(
        &self,
        body: Value,
    ) -> tokio::task::JoinHandle<(std::time::Duration, StatusCode, Value)> {
        let router = self.router.clone();
        tokio::spawn(async move {
            let req = Request::post("/v1/fetch")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let t = std::time::Instant::now();
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                t.elapsed(),
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// A `GET` answered with text (`/metrics`): status, content type, body.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String, String) {
        let mut req = Request::get(path);
        if let Some(k) = &self.key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, ctype, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Waits until `n` long-poll fetches are parked (`errand_fetches_waiting` in `/metrics`), or fails
    /// the test after 10 s: a job made due after this reaches them only through a wake.
    pub async fn wait_fetches_parked(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, _, text) = self.get_text("/metrics").await;
            let parked = fetches_waiting(&text);
            if parked >= n {
                assert_eq!(parked, n, "more fetches parked than the test started");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{parked} of {n} fetches parked after 10 s"
            );
            // A poll interval, not a guess: the loop ends on what it reads.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Fetches up to `n` jobs of `queue` without waiting.
    pub async fn fetch(&self, queue: &str, n: u32) -> Vec<Value> {
        let (s, b) = self
            .post(
                "/v1/fetch",
                serde_json::json!({"queues": [queue], "worker_id": "w1", "max_jobs": n}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["jobs"].as_array().unwrap().clone()
    }
}

/// The value of `errand_fetches_waiting` in a `/metrics` text.
pub fn fetches_waiting(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("errand_fetches_waiting "))
        .unwrap_or_else(|| panic!("no errand_fetches_waiting in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// Calls as one key.
pub struct Api2<'a> {
    api: &'a Api,
    key: Option<String>,
}

impl Api2<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> StatusCode {
        self.api
            .call_as(self.key.as_deref(), method, path, body)
            .await
            .0
    }
}

/// Asserts an error answer: status, code and (when given) field.
pub fn assert_error(
    got: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
    field: Option<&str>,
) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(
        !got.1["error"]["message"].as_str().unwrap().is_empty(),
        "a message for people"
    );
    if let Some(f) = field {
        assert_eq!(got.1["error"]["field"], f, "{}", got.1);
    }
}

pub fn scopes_all() -> Vec<Scope> {
    Scope::ALL.to_vec()
}
