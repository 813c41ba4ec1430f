//! Webhooks end to end: a real receiver on a real socket gets signed POSTs; a receiver that is down gets
//! the notice later, by retries; one that never answers leaves a dead delivery in the dead letters.
//! Destinations are checked against `[webhooks] allow`/`deny`, at delivery and after resolution.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode};
use errand_server::webhooks::Deliverer;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use support::{Api, Setup, assert_error};

const SECRET: &str = "a-secret-of-24-bytes-xyz";

/// A receiver on 127.0.0.1: records each request, answers with `status` (shared, so a test can change
/// it).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    status: Arc<Mutex<StatusCode>>,
}

async fn receiver() -> Receiver {
    let got: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let status = Arc::new(Mutex::new(StatusCode::OK));
    let (g, s) = (got.clone(), status.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                g.lock().unwrap().push((headers, body));
                *s.lock().unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook"),
        got,
        status,
    }
}

/// Checks the signature header the way a receiver would: HMAC-SHA256 over "<t>.<body>".
fn signed_by(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let header = headers["errand-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    want == v1
}

async fn finish_one(api: &Api, queue: &str) -> String {
    let id = api.enqueue(queue, json!({"kind": "charge"})).await;
    let jobs = api.fetch(queue, 1).await;
    let token = jobs[0]["lease_token"].as_str().unwrap();
    let (s, _) = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": token, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_told_by_a_signed_post_once_retried_until_the_receiver_answers() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Default::default()
    });
    let clock = api.clock.clone().unwrap();
    let rx = receiver().await;
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/orders",
            Some(json!({"url": rx.url, "secret": SECRET, "events": ["completed", "dead"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, list) = api.get("/v1/queues/shop/webhooks").await;
    assert_eq!(list["webhooks"][0]["name"], "orders");
    assert!(
        !list.to_string().contains(SECRET),
        "a secret is never shown: {list}"
    );
    let (_, config) = api.get("/v1/queues/shop/config").await;
    assert!(!config.to_string().contains(SECRET));

    let id = finish_one(&api, "shop").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    {
        let got = rx.got.lock().unwrap();
        assert_eq!(got.len(), 1);
        let (headers, body) = &got[0];
        assert!(signed_by(headers, body, SECRET), "signature checks out");
        assert!(!signed_by(headers, body, "another-secret-entirely"));
        assert_eq!(headers["errand-webhook"], "orders");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "job.completed");
        assert_eq!(event["job_id"], id.as_str());
        assert_eq!(
            (event["queue"].as_str(), event["kind"].as_str()),
            (Some("shop"), Some("charge"))
        );
    }
    assert_eq!(deliverer.run_once().await.unwrap(), 0, "told once");

    // The receiver is down (500): the delivery fails, waits its backoff, and is sent again.
    *rx.status.lock().unwrap() = StatusCode::INTERNAL_SERVER_ERROR;
    finish_one(&api, "shop").await;
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    assert_eq!(rx.got.lock().unwrap().len(), 2);
    assert_eq!(deliverer.run_once().await.unwrap(), 0, "backing off");
    *rx.status.lock().unwrap() = StatusCode::NO_CONTENT;
    clock.advance(2_000);
    api.state.engine.maintain().await.unwrap();
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[1].0["errand-delivery"], got[2].0["errand-delivery"],
        "a retry carries the same delivery id"
    );
    assert_eq!(got[1].1, got[2].1, "and the same body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_never_gets_through_is_a_dead_job_of_the_webhook_queue() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Default::default()
    });
    let clock = api.clock.clone().unwrap();
    // Nothing listens on this port (bound, then closed).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (s, _) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/gone",
            Some(json!({"url": url, "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    finish_one(&api, "shop").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    for _ in 0..15 {
        assert_eq!(deliverer.run_once().await.unwrap(), 1);
        clock.advance(3_600_000);
        api.state.engine.maintain().await.unwrap();
    }
    let (s, dead) = api.get("/v1/queues/errand.webhooks/dead").await;
    assert_eq!(s, StatusCode::OK, "{dead}");
    let jobs = dead["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{dead}");
    assert_eq!(jobs[0]["kind"], "webhook");
    assert!(
        jobs[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("POST http://127.0.0.1")
    );
}

#[tokio::test]
async fn bad_webhooks_are_a_400_naming_the_field() {
    let api = Api::new();
    for (body, field) in [
        (
            json!({"url": "ftp://x", "secret": SECRET, "events": ["completed"]}),
            "url",
        ),
        (
            json!({"url": "http://x/h", "secret": "short", "events": ["completed"]}),
            "secret",
        ),
        (
            json!({"url": "http://x/h", "secret": SECRET, "events": []}),
            "events",
        ),
        (
            json!({"url": "http://x/h", "secret": SECRET, "events": ["done"]}),
            "events[0]",
        ),
    ] {
        let got = api
            .call(Method::PUT, "/v1/queues/shop/webhooks/h", Some(body))
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            errand_protocol::code::INVALID,
            Some(field),
        );
    }
    let (_, list) = api.get("/v1/queues/shop/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
    let got = api
        .call(Method::DELETE, "/v1/queues/shop/webhooks/h", None)
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
}

#[cfg(not(feature = "tls"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_on_a_build_without_tls_dies_at_once_saying_why() {
    let api = Api::new();
    let (s, _) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/tls",
            Some(json!({"url": "https://127.0.0.1:9/hook", "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    finish_one(&api, "shop").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    let (_, dead) = api.get("/v1/queues/errand.webhooks/dead").await;
    let message = dead["jobs"][0]["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("POST https://"), "{dead}");
}

#[tokio::test]
async fn no_caller_puts_jobs_in_or_works_the_webhook_queue() {
    let api = Api::new();
    let got = api
        .post(
            "/v1/queues/errand.webhooks/jobs",
            json!({"kind": "webhook", "payload": {"queue": "shop", "webhook": "h", "body": {}}}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        errand_protocol::code::INVALID,
        Some("queue"),
    );
    let got = api
        .post(
            "/v1/fetch",
            json!({"queues": ["mail", "errand.webhooks"], "worker_id": "w", "max_jobs": 1}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        errand_protocol::code::INVALID,
        Some("queues[1]"),
    );
    let got = api
        .post(
            "/v1/flows",
            json!({"parent": {"queue": "errand.x", "job": {"kind": "k"}}, "children": [{"queue": "a", "job": {"kind": "k"}}]}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        errand_protocol::code::INVALID,
        Some("parent.queue"),
    );
    // Its dead letters stay an operator's to see.
    let (s, _) = api.get("/v1/queues/errand.webhooks/dead").await;
    assert_eq!(s, StatusCode::OK);
}

// Destinations: `[webhooks] allow`/`deny`, checked at delivery after resolution.

/// A listener that accepts nothing: after a delivery ran, a connection it made would be waiting in the
/// backlog (the kernel completes the handshake before `connect` returns), so an empty backlog proves
/// that no connection was attempted.
struct Silent {
    listener: std::net::TcpListener,
    port: u16,
}

impl Silent {
    fn new() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        Silent { listener, port }
    }

    fn connected(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Defines a webhook through the engine, past the API's early check: as one defined before the
/// lists were set.
async fn hook_unchecked(api: &Api, name: &str, url: &str) {
    api.state
        .engine
        .put_webhook(
            "shop",
            name,
            errand_core::Webhook {
                url: url.to_string(),
                secret: SECRET.into(),
                events: vec!["completed".into()],
            },
        )
        .await
        .unwrap();
}

/// Runs one delivery; the error of the dead delivery it left, if it left one.
async fn deliver_one(api: &Api, deliverer: &Deliverer) -> Option<String> {
    finish_one(api, "shop").await;
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    let (_, dead) = api.get("/v1/queues/errand.webhooks/dead").await;
    let jobs = dead["jobs"].as_array().unwrap();
    let last = jobs
        .iter()
        .max_by_key(|j| j["id"].as_str().map(str::to_string))?;
    assert_eq!(last["attempts"], 1, "not retried: {last}");
    Some(last["errors"][0]["message"].as_str().unwrap().to_string())
}

fn deny_loopback(c: &mut errand_server::Config) {
    c.webhooks =
        errand_server::webhooks::Destinations::new(&[], &["127.0.0.0/8".into(), "::1/128".into()])
            .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_the_metadata_address_dies_at_once_refused() {
    let api = Api::new();
    // The API refuses such a URL at once (an early hint), naming the field, and stores nothing.
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]:8080/hook",
    ] {
        let got = api
            .call(
                Method::PUT,
                "/v1/queues/shop/webhooks/meta",
                Some(json!({"url": url, "secret": SECRET, "events": ["completed"]})),
            )
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            errand_protocol::code::INVALID,
            Some("url"),
        );
    }
    let (_, list) = api.get("/v1/queues/shop/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));

    // Defined anyway (before the lists existed): the delivery is refused, not retried, and says why.
    hook_unchecked(&api, "meta", "http://169.254.169.254/latest/meta-data/iam/").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    let message = deliver_one(&api, &deliverer)
        .await
        .expect("a dead delivery");
    assert!(
        message.contains("refused")
            && message.contains("169.254.169.254 is in the denied network")
            && message.contains("allow"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_a_denied_network_is_refused_without_a_connection() {
    let api = Api::with(Setup {
        tweak: deny_loopback,
        ..Default::default()
    });
    let silent = Silent::new();
    let url = format!("http://127.0.0.1:{}/hook", silent.port);
    let got = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/loop",
            Some(json!({"url": url, "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        errand_protocol::code::INVALID,
        Some("url"),
    );
    hook_unchecked(&api, "loop", &url).await;
    let deliverer = Deliverer::with_destinations(
        api.state.engine.clone(),
        "test-deliverer",
        api.state.config.webhooks.clone(),
    );
    let message = deliver_one(&api, &deliverer)
        .await
        .expect("a dead delivery");
    assert!(message.contains("127.0.0.0/8"), "{message}");
    assert!(!silent.connected(), "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_checked_after_resolution_by_every_address_it_resolves_to() {
    let api = Api::with(Setup {
        tweak: deny_loopback,
        ..Default::default()
    });
    let silent = Silent::new();
    // A name is not resolved when the webhook is defined: only at delivery, where the check holds.
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/local",
            Some(json!({"url": format!("http://localhost:{}/hook", silent.port), "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deliverer = Deliverer::with_destinations(
        api.state.engine.clone(),
        "test-deliverer",
        api.state.config.webhooks.clone(),
    );
    let message = deliver_one(&api, &deliverer)
        .await
        .expect("a dead delivery");
    assert!(
        message.contains("refused") && message.contains("localhost resolves to"),
        "{message}"
    );
    assert!(!silent.connected(), "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_re_pointed_at_the_metadata_address_is_refused_at_the_next_delivery() {
    let api = Api::new();
    let rx = receiver().await;
    let port = rx.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let (s, _) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/h",
            Some(json!({"url": format!("http://hooks.example:{port}/hook"), "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let engine = api.state.engine.clone();
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let deliverer = Deliverer::new(engine.clone(), "d").resolving("hooks.example", &[loopback]);
    assert_eq!(deliver_one(&api, &deliverer).await, None, "delivered");
    assert_eq!(rx.got.lock().unwrap().len(), 1);
    // The name now answers with the metadata address as well as the good one: one denied address
    // refuses the name (the connector would try them all).
    let metadata: std::net::IpAddr = "169.254.169.254".parse().unwrap();
    let deliverer = Deliverer::new(engine, "d").resolving("hooks.example", &[loopback, metadata]);
    let message = deliver_one(&api, &deliverer)
        .await
        .expect("a dead delivery");
    assert!(
        message.contains("hooks.example resolves to 169.254.169.254"),
        "{message}"
    );
    assert_eq!(rx.got.lock().unwrap().len(), 1, "nothing more sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_loopback_receiver_gets_its_deliveries_by_name_and_address() {
    let api = Api::new();
    let rx = receiver().await;
    for (name, url) in [
        ("by-address", rx.url.clone()),
        ("by-name", rx.url.replace("127.0.0.1", "localhost")),
    ] {
        let (s, b) = api
            .call(
                Method::PUT,
                &format!("/v1/queues/shop/webhooks/{name}"),
                Some(json!({"url": url, "secret": SECRET, "events": ["completed"]})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    finish_one(&api, "shop").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    assert_eq!(deliverer.run_once().await.unwrap(), 2);
    let got = rx.got.lock().unwrap();
    let mut hooks: Vec<_> = got
        .iter()
        .map(|(h, _)| h["errand-webhook"].to_str().unwrap().to_string())
        .collect();
    hooks.sort();
    assert_eq!(hooks, ["by-address", "by-name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_allow_overrides_the_default_deny() {
    let rx = receiver().await;
    let url = rx.url.replace("127.0.0.1", "metadata.google.internal");
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();

    // Denied by default, by name.
    let api = Api::new();
    hook_unchecked(&api, "meta", &url).await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "d")
        .resolving("metadata.google.internal", &[loopback]);
    let message = deliver_one(&api, &deliverer)
        .await
        .expect("a dead delivery");
    assert!(
        message.contains("metadata.google.internal is denied"),
        "{message}"
    );
    assert!(rx.got.lock().unwrap().is_empty());

    // Allowed by name: defined through the API and delivered.
    let api = Api::with(Setup {
        tweak: |c| {
            c.webhooks = errand_server::webhooks::Destinations::new(
                &["metadata.google.internal".into()],
                &[],
            )
            .unwrap();
        },
        ..Default::default()
    });
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/meta",
            Some(json!({"url": url, "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deliverer = Deliverer::with_destinations(
        api.state.engine.clone(),
        "d",
        api.state.config.webhooks.clone(),
    )
    .resolving("metadata.google.internal", &[loopback]);
    assert_eq!(deliver_one(&api, &deliverer).await, None, "delivered");
    assert_eq!(rx.got.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed() {
    let target = receiver().await;
    let to = target.url.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let to = to.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let api = Api::with(Setup {
        manual_clock: true,
        ..Default::default()
    });
    let (s, _) = api
        .call(
            Method::PUT,
            "/v1/queues/shop/webhooks/r",
            Some(json!({"url": format!("http://{addr}/hook"), "secret": SECRET, "events": ["completed"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    finish_one(&api, "shop").await;
    let deliverer = Deliverer::new(api.state.engine.clone(), "test-deliverer");
    assert_eq!(deliverer.run_once().await.unwrap(), 1);
    assert!(
        target.got.lock().unwrap().is_empty(),
        "the redirect's target got nothing"
    );
    let (_, jobs) = api
        .get("/v1/queues/errand.webhooks/jobs?state=delayed")
        .await;
    let message = jobs["jobs"][0]["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("answered 307"), "{jobs}");
}
