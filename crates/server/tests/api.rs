//! Every endpoint through `app()`: what a user relies on, and a real bad request for each error status.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use errand_protocol::code;
use errand_server::auth::Scope;
use serde_json::{Value, json};

use support::{Api, Setup, assert_error};

#[tokio::test]
async fn enqueue_get_and_the_unique_key_answer_the_existing_job() {
    let api = Api::new();
    let (s, b) = api
        .post(
            "/v1/queues/mail/jobs",
            json!({"kind": "send", "payload": {"to": "a@b.c"}, "priority": 10, "unique_key": "u1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["created"], true);
    assert_eq!(b["state"], "waiting");
    let id = b["id"].as_str().unwrap().to_string();

    let (s, again) = api
        .post(
            "/v1/queues/mail/jobs",
            json!({"kind": "send", "payload": {}, "unique_key": "u1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "not created: {again}");
    assert_eq!(
        (again["id"].as_str(), again["created"].as_bool()),
        (Some(id.as_str()), Some(false))
    );

    let (s, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["queue"], "mail");
    assert_eq!(job["kind"], "send");
    assert_eq!(job["payload"], json!({"to": "a@b.c"}));
    assert_eq!(job["priority"], 10);
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["errors"], json!([]));
    assert!(job["idempotency_key"].as_str().unwrap().len() > 8);
    assert!(job.get("lease").is_none());
}

#[tokio::test]
async fn a_batch_is_atomic_and_names_the_bad_job() {
    let api = Api::new();
    let (s, b) = api
        .post(
            "/v1/queues/batch/jobs",
            json!({"jobs": [{"kind": "a"}, {"kind": "b", "priority": 5000}, {"kind": "c"}]}),
        )
        .await;
    assert_error(
        &(s, b),
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("jobs[1].priority"),
    );
    let (s, _) = api.get("/v1/queues/batch").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "nothing was written, not even the queue"
    );

    // A wrong type deep in the batch is named by its path too.
    let got = api
        .post(
            "/v1/queues/batch/jobs",
            json!({"jobs": [{"kind": "a"}, {"kind": "b", "max_attempts": "3"}]}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("jobs[1].max_attempts"),
    );

    let (s, b) = api
        .post(
            "/v1/queues/batch/jobs",
            json!({"jobs": [{"kind": "a"}, {"kind": "b"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["jobs"].as_array().unwrap().len(), 2);
    let (_, q) = api.get("/v1/queues/batch").await;
    assert_eq!(q["counts"]["waiting"], 2);
}

#[tokio::test]
async fn invalid_input_is_a_400_naming_the_field_and_writes_nothing() {
    let api = Api::new();
    let cases = [
        (json!({"kind": "has space"}), "kind"),
        (json!({"payload": {}}), "kind"),
        (json!({"kind": "k", "priorty": 1}), "priorty"),
        (json!({"kind": "k", "delay_ms": -5}), "delay_ms"),
        (
            json!({"kind": "k", "backoff": {"type": "linear", "delay_ms": 1}}),
            "backoff.type",
        ),
        (json!({"kind": "k", "timeout_ms": 1}), "timeout_ms"),
        (json!({"kind": "k", "unique_key": ""}), "unique_key"),
        (json!({"kind": "k", "dedup": "sometimes"}), "dedup"),
        (json!({"kind": "k", "dedup": "replace"}), "dedup"),
    ];
    for (body, field) in cases {
        let got = api.post("/v1/queues/q/jobs", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some(field));
    }
    let got = api
        .post("/v1/queues/bad%20name/jobs", json!({"kind": "k"}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("queue"));
    // Not JSON at all.
    let req = Request::post("/v1/queues/q/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"kind\": "))
        .unwrap();
    let (s, b, _) = api.raw(req).await;
    assert_error(&(s, b), StatusCode::BAD_REQUEST, code::INVALID, None);
    let got = api.get("/v1/jobs/not-an-id").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("id"));
    let got = api.get("/v1/queues/q/jobs?state=sleeping").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("state"));
    let got = api.get("/v1/queues/q/jobs?state=waiting&limt=5").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("limt"));
    let got = api.get("/v1/queues/q/jobs?state=waiting&limit=0").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("limit"));
    assert_eq!(
        api.get("/v1/queues/q").await.0,
        StatusCode::NOT_FOUND,
        "nothing written"
    );
}

#[tokio::test]
async fn wrong_content_type_is_415_and_too_large_is_413() {
    let api = Api::with(Setup {
        tweak: |c| c.max_body_bytes = 4 << 20,
        ..Default::default()
    });
    let req = Request::post("/v1/queues/q/jobs")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"kind\":\"k\"}"))
        .unwrap();
    let (s, b, _) = api.raw(req).await;
    assert_error(
        &(s, b),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code::UNSUPPORTED_MEDIA_TYPE,
        None,
    );
    let req = Request::post("/v1/queues/q/jobs")
        .body(Body::from("{\"kind\":\"k\"}"))
        .unwrap();
    assert_eq!(
        api.raw(req).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );

    // A payload over its 1 MiB limit, in a body the server accepts.
    let big = "x".repeat((1 << 20) + 1);
    let got = api
        .post("/v1/queues/q/jobs", json!({"kind": "k", "payload": big}))
        .await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        code::TOO_LARGE,
        Some("payload"),
    );
    // A body over the server's limit.
    let huge = "x".repeat(5 << 20);
    let got = api
        .post("/v1/queues/q/jobs", json!({"kind": "k", "payload": huge}))
        .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE, None);
    // A batch over its count limit.
    let jobs: Vec<Value> = (0..10_001).map(|_| json!({"kind": "k"})).collect();
    let got = api.post("/v1/queues/q/jobs", json!({ "jobs": jobs })).await;
    assert_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        code::TOO_LARGE,
        Some("jobs"),
    );
    assert_eq!(
        api.get("/v1/queues/q").await.0,
        StatusCode::NOT_FOUND,
        "nothing written"
    );
}

/// Sends `body` as it is, JSON content type: status and answer.
async fn send_raw(api: &Api, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, b, _) = api.raw(req).await;
    (s, b)
}

#[tokio::test]
async fn a_body_must_be_one_json_value_and_junk_after_it_writes_nothing() {
    let api = Api::new();
    // A job on another queue, to show a refused fetch claims nothing.
    let waiting = api.enqueue("w", json!({"kind": "k"})).await;
    for body in [
        r#"{"kind": "x"} trailing"#,
        r#"{"kind": "a"}{"kind": "b"}"#,
        r#"{"kind": "x"}]"#,
        r#"{"kind": "x"} {"#,
        r#"{"kind": "x"} 1"#,
        r#"{"jobs": [{"kind": "a"}]} junk"#,
        r#"{"jobs": [{"kind": "a"}]}{"jobs": [{"kind": "b"}]}"#,
    ] {
        let got = send_raw(&api, Method::POST, "/v1/queues/q/jobs", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("body"));
    }
    assert_eq!(
        api.get("/v1/queues/q").await.0,
        StatusCode::NOT_FOUND,
        "no job made, \"a\" included"
    );
    let (s, page) = api.get("/v1/queues/q/jobs?state=waiting").await;
    assert_eq!((s, &page["jobs"]), (StatusCode::OK, &json!([])), "{page}");

    let fetch = r#"{"queues": ["w"], "worker_id": "w1", "max_jobs": 5}"#;
    let got = send_raw(&api, Method::POST, "/v1/fetch", &format!("{fetch} junk")).await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("body"));
    let (_, job) = api.get(&format!("/v1/jobs/{waiting}")).await;
    assert_eq!(job["state"], "waiting", "the refused fetch claimed nothing");

    // The same acknowledgement with junk after it changes nothing; alone it completes the job.
    let jobs = api.fetch("w", 1).await;
    let token = jobs[0]["lease_token"].as_str().unwrap();
    let complete = format!("/v1/jobs/{waiting}/complete");
    let ack = json!({"lease_token": token, "result": 1}).to_string();
    let got = send_raw(&api, Method::POST, &complete, &format!("{ack}{ack}")).await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("body"));
    let (_, job) = api.get(&format!("/v1/jobs/{waiting}")).await;
    assert_eq!(job["state"], "active");
    // Whitespace around the one value is not junk.
    let (s, c) = send_raw(&api, Method::POST, &complete, &format!(" \n{ack}\r\n\t ")).await;
    assert_eq!(
        (s, c["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{c}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let api = Api::new();
    let got = api.get("/v1/nope").await;
    assert_error(&got, StatusCode::NOT_FOUND, code::NOT_FOUND, None);
    let got = api.call(Method::DELETE, "/v1/fetch", None).await;
    assert_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        None,
    );
    let got = api.get("/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_error(&got, StatusCode::NOT_FOUND, code::NOT_FOUND, None);
    let got = api.get("/v1/queues/never-seen").await;
    assert_error(&got, StatusCode::NOT_FOUND, code::NOT_FOUND, None);
}

#[tokio::test]
async fn the_worker_protocol_end_to_end() {
    let api = Api::new();
    let id = api
        .enqueue(
            "w",
            json!({"kind": "k", "payload": {"n": 1}, "max_attempts": 2,
            "backoff": {"type": "fixed", "delay_ms": 0}, "heartbeat_ms": 1000}),
        )
        .await;
    let jobs = api.fetch("w", 10).await;
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["attempt"], 1);
    assert_eq!(j["payload"], json!({"n": 1}));
    let token = j["lease_token"].as_str().unwrap().to_string();
    assert!(j["lease_expires_at"].as_i64().unwrap() > 0 && j["deadline_at"].as_i64().unwrap() > 0);

    let (s, hb) = api
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_token": token, "progress": {"pct": 50}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hb}");
    assert_eq!(hb["cancel_requested"], false);
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["progress"], json!({"pct": 50}));
    assert_eq!(job["lease"]["worker_id"], "w1");
    assert!(
        job["lease"].get("token").is_none(),
        "the token is for its holder only"
    );

    let (s, f) = api
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": token, "message": "boom"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["state"], "waiting");
    // The old token is stale now: 409 lease_lost, and nothing changes.
    let got = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": token}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, code::LEASE_LOST, None);
    let got = api
        .post(
            &format!("/v1/jobs/{id}/heartbeat"),
            json!({"lease_token": token}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, code::LEASE_LOST, None);

    let jobs = api.fetch("w", 1).await;
    assert_eq!(jobs[0]["attempt"], 2);
    let token2 = jobs[0]["lease_token"].as_str().unwrap().to_string();
    assert_ne!(token, token2);
    let body = json!({"lease_token": token2, "result": {"ok": true}});
    let (s, c) = api
        .post(&format!("/v1/jobs/{id}/complete"), body.clone())
        .await;
    assert_eq!(
        (s, c["state"].as_str(), c["duplicate"].as_bool()),
        (StatusCode::OK, Some("completed"), Some(false))
    );
    // A retried completion whose answer was lost is a success, once more, flagged duplicate.
    let (s, c) = api.post(&format!("/v1/jobs/{id}/complete"), body).await;
    assert_eq!((s, c["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["result"], json!({"ok": true}));
    assert_eq!(job["errors"][0]["message"], "boom");
    assert_eq!(job["errors"][0]["attempt"], 1);

    // Retrying a completed job is a conflict.
    let got = api.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_error(&got, StatusCode::CONFLICT, code::CONFLICT, None);
}

#[tokio::test]
async fn batch_ack_takes_completions_failures_and_releases_each_on_its_own() {
    let api = Api::new();
    for i in 0..4 {
        api.enqueue("b", json!({"kind": "k", "payload": i, "max_attempts": 1}))
            .await;
    }
    let jobs = api.fetch("b", 4).await;
    assert_eq!(jobs.len(), 4);
    let tok = |j: &Value| j["lease_token"].as_str().unwrap().to_string();
    let (s, b) = api
        .post(
            "/v1/ack",
            json!({"acks": [
                {"outcome": "complete", "id": jobs[0]["id"], "lease_token": tok(&jobs[0]), "result": 1},
                {"outcome": "fail", "id": jobs[1]["id"], "lease_token": tok(&jobs[1]), "message": "no", "retryable": false},
                {"outcome": "release", "id": jobs[2]["id"], "lease_token": tok(&jobs[2])},
                {"outcome": "complete", "id": jobs[3]["id"], "lease_token": "stale"},
                {"outcome": "complete", "id": "nope", "lease_token": "x"},
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r[0]["ok"]["state"], "completed");
    assert_eq!(r[1]["ok"]["state"], "dead");
    assert_eq!(r[2]["ok"]["state"], "waiting");
    assert_eq!(r[3]["error"]["code"], "lease_lost");
    assert_eq!(r[4]["error"]["code"], "invalid");
    assert_eq!(r[4]["error"]["field"], "acks[4].id");
    // The released job is due at once, its attempt not counted.
    let again = api.fetch("b", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["id"], jobs[2]["id"]);
    assert_eq!(again[0]["attempt"], 1);
    let got = api
        .post(
            "/v1/ack",
            json!({"acks": [{"outcome": "explode", "id": "x"}]}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, None);
}

#[tokio::test]
async fn a_waiting_fetch_wakes_as_soon_as_a_job_arrives_and_returns_empty_when_its_wait_ends() {
    let api = Api::new();
    let t = Instant::now();
    let (s, b) = api
        .post(
            "/v1/fetch",
            json!({"queues": ["lp"], "worker_id": "w", "wait_ms": 300}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["jobs"], json!([]));
    assert!(t.elapsed() >= Duration::from_millis(290), "it waited");

    let waiting =
        api.spawn_fetch(json!({"queues": ["other", "lp"], "worker_id": "w", "wait_ms": 20_000}));
    api.wait_fetches_parked(1).await;
    let id = api.enqueue("lp", json!({"kind": "k"})).await;
    let (elapsed, _, b) = waiting.await.unwrap();
    assert_eq!(b["jobs"][0]["id"], id.as_str());
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the enqueue, not by its wait: {elapsed:?}"
    );
    let (_, _, metrics) = api.get_text("/metrics").await;
    assert_eq!(support::fetches_waiting(&metrics), 0, "no longer parked");
}

#[tokio::test]
async fn too_many_waiting_fetches_get_429_and_shutdown_answers_waiters_empty() {
    let api = Api::with(Setup {
        tweak: |c| c.max_waiting_fetches = 1,
        ..Default::default()
    });
    let first = api.spawn_fetch(json!({"queues": ["z"], "worker_id": "w", "wait_ms": 30_000}));
    // The first parks before the probe: a probe that registered first would take its place.
    api.wait_fetches_parked(1).await;
    let req = Request::post("/v1/fetch")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"queues": ["z2"], "worker_id": "w", "wait_ms": 10}).to_string(),
        ))
        .unwrap();
    let got = api.raw(req).await;
    assert_error(
        &(got.0, got.1),
        StatusCode::TOO_MANY_REQUESTS,
        code::RATE_LIMITED,
        None,
    );
    assert!(got.2.contains_key(header::RETRY_AFTER));

    // Shutting down answers the waiting fetch at once, and readiness goes to 503.
    api.stop.send(true).unwrap();
    api.state.wake_all();
    let (elapsed, status, _) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_secs(10),
        "not its whole wait: {elapsed:?}"
    );
    assert_eq!(
        api.get("/health/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(api.get("/health/live").await.0, StatusCode::OK);
}

#[tokio::test]
async fn operators_cancel_retry_promote_and_pause() {
    let api = Api::new();
    let waiting = api.enqueue("ops", json!({"kind": "k"})).await;
    let (s, b) = api
        .post(&format!("/v1/jobs/{waiting}/cancel"), json!({}))
        .await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (s, b) = api
        .post(&format!("/v1/jobs/{waiting}/retry"), json!({}))
        .await;
    assert_eq!(
        (s, b["state"].as_str()),
        (StatusCode::OK, Some("waiting")),
        "{b}"
    );

    let active = api.fetch("ops", 1).await;
    let (s, b) = api
        .call(
            Method::POST,
            &format!("/v1/jobs/{}/cancel", active[0]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("requested"))
    );
    let (_, hb) = api
        .post(
            &format!("/v1/jobs/{}/heartbeat", active[0]["id"].as_str().unwrap()),
            json!({"lease_token": active[0]["lease_token"]}),
        )
        .await;
    assert_eq!(hb["cancel_requested"], true, "the worker learns of it");

    let delayed = api
        .enqueue("ops", json!({"kind": "k", "delay_ms": 3_600_000}))
        .await;
    assert!(api.fetch("ops", 1).await.is_empty(), "not due");
    let (s, b) = api
        .post(&format!("/v1/jobs/{delayed}/promote"), json!({}))
        .await;
    assert_eq!((s, b["state"].as_str()), (StatusCode::OK, Some("waiting")));
    let got = api
        .post(&format!("/v1/jobs/{delayed}/promote"), json!({}))
        .await;
    assert_error(&got, StatusCode::CONFLICT, code::CONFLICT, None);

    let (s, q) = api.post("/v1/queues/ops/pause", json!({})).await;
    assert_eq!((s, q["paused"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(
        api.fetch("ops", 1).await.is_empty(),
        "a paused queue hands out nothing"
    );
    let (_, q) = api.post("/v1/queues/ops/resume", json!({})).await;
    assert_eq!(q["paused"], false);
    assert_eq!(api.fetch("ops", 1).await.len(), 1);
}

/// `unique_window_ms` takes milliseconds, "retention" (the default, shown as such) or "forever"; any
/// other word is a 400 naming the field, and changes nothing.
#[tokio::test]
async fn unique_window_takes_milliseconds_retention_or_forever() {
    let api = Api::new();
    let (_, c) = api.get("/v1/queues/uw/config").await;
    assert_eq!(c["unique_window_ms"], "retention");
    for value in [json!("forever"), json!(60_000), json!("retention")] {
        let (s, c) = api
            .call(
                Method::PUT,
                "/v1/queues/uw/config",
                Some(json!({ "unique_window_ms": value })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{c}");
        assert_eq!(c["unique_window_ms"], value);
        let (_, c) = api.get("/v1/queues/uw/config").await;
        assert_eq!(c["unique_window_ms"], value);
    }
    for bad in [
        json!("always"),
        json!(-1),
        json!(31_536_000_001_u64),
        json!(true),
    ] {
        let got = api
            .call(
                Method::PUT,
                "/v1/queues/uw/config",
                Some(json!({ "unique_window_ms": bad, "max_attempts": 9 })),
            )
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            code::INVALID,
            Some("unique_window_ms"),
        );
    }
    let (_, c) = api.get("/v1/queues/uw/config").await;
    assert_eq!(c["max_attempts"], 3, "nothing changed");
}

#[tokio::test]
async fn queue_config_listing_with_cursors_and_stats() {
    let api = Api::new();
    let (s, c) = api.get("/v1/queues/cfg/config").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        c["max_attempts"], 3,
        "the defaults for a queue never configured"
    );
    let (s, c) = api
        .call(
            Method::PUT,
            "/v1/queues/cfg/config",
            Some(json!({"max_attempts": 7, "backoff": {"type": "fixed", "delay_ms": 10}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["max_attempts"], 7);
    assert_eq!(c["timeout_ms"], 300_000, "left out: the default");
    let got = api
        .call(
            Method::PUT,
            "/v1/queues/cfg/config",
            Some(json!({"max_attempts": 0})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("max_attempts"),
    );
    let id = api.enqueue("cfg", json!({"kind": "k"})).await;
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["max_attempts"], 7, "new jobs take the queue's defaults");

    let jobs: Vec<Value> = (0..25)
        .map(|i| json!({"kind": "k", "payload": i}))
        .collect();
    api.post("/v1/queues/cfg/jobs", json!({ "jobs": jobs }))
        .await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/queues/cfg/jobs?state=waiting&limit=10&cursor={c}"),
            None => "/v1/queues/cfg/jobs?state=waiting&limit=10".to_string(),
        };
        let (s, page) = api.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 26, "every waiting job once");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 26);

    let (s, list) = api.get("/v1/queues").await;
    assert_eq!(s, StatusCode::OK);
    let cfg = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "cfg")
        .unwrap();
    assert_eq!(cfg["counts"]["waiting"], 26);
    assert!(cfg["oldest_waiting_age_ms"].as_u64().is_some());
}

#[tokio::test]
async fn dead_letters_list_replay_by_filter_and_purge() {
    let api = Api::new();
    for (kind, msg) in [
        ("pay", "card declined"),
        ("pay", "timeout at bank"),
        ("mail", "bounce"),
    ] {
        api.enqueue(
            "dlq",
            json!({"kind": kind, "max_attempts": 1, "idempotency_key": format!("{kind}-{msg}")}),
        )
        .await;
        let j = &api.fetch("dlq", 1).await[0];
        let id = j["id"].as_str().unwrap();
        api.post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": j["lease_token"], "message": msg}),
        )
        .await;
    }
    let (s, page) = api.get("/v1/queues/dlq/dead").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(page["jobs"][0]["dead_reason"], "attempts_exhausted");
    let (_, page) = api.get("/v1/queues/dlq/dead?kind=mail").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let (_, page) = api.get("/v1/queues/dlq/dead?error_contains=bank").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(page["jobs"][0]["errors"][0]["message"], "timeout at bank");
    // Filtered a page of one at a time, the cursor walks past what does not match.
    let (_, page) = api
        .get("/v1/queues/dlq/dead?error_contains=a&limit=1")
        .await;
    assert_eq!(page["jobs"][0]["errors"][0]["message"], "card declined");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = api
        .get(&format!(
            "/v1/queues/dlq/dead?error_contains=a&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["jobs"][0]["errors"][0]["message"], "timeout at bank");

    let (s, r) = api
        .post(
            "/v1/queues/dlq/dead/replay",
            json!({"kind": "pay", "error_contains": "declined"}),
        )
        .await;
    assert_eq!((s, r["count"].as_u64()), (StatusCode::OK, Some(1)));
    let replayed = api.fetch("dlq", 1).await;
    assert_eq!(
        replayed[0]["idempotency_key"], "pay-card declined",
        "a replay keeps its key"
    );

    let (s, r) = api
        .call(Method::DELETE, "/v1/queues/dlq/dead?kind=mail", None)
        .await;
    assert_eq!((s, r["count"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, q) = api.get("/v1/queues/dlq").await;
    assert_eq!(q["counts"]["dead"], 1);
    let got = api
        .post("/v1/queues/dlq/dead/replay", json!({"kynd": "pay"}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("kynd"));
}

#[tokio::test]
async fn dead_letters_grouped_by_fingerprint_and_replayed_or_purged_by_group() {
    let api = Api::new();
    for msg in [
        "order 17 not found",
        "order 18 not found",
        "order 19 not found",
        "bank down",
    ] {
        api.enqueue(
            "fp",
            json!({"kind": "pay", "max_attempts": 1, "payload": {"m": msg}}),
        )
        .await;
        let j = &api.fetch("fp", 1).await[0];
        let id = j["id"].as_str().unwrap();
        api.post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"lease_token": j["lease_token"], "message": msg}),
        )
        .await;
    }
    let (s, g) = api.get("/v1/queues/fp/dead/groups").await;
    assert_eq!(s, StatusCode::OK, "{g}");
    assert_eq!(
        (g["scanned"].as_u64(), &g["complete"]),
        (Some(4), &json!(true))
    );
    assert_eq!(g["groups"][0]["count"], 3);
    assert_eq!(g["groups"][0]["error"], "order 19 not found");
    assert_eq!(g["groups"][0]["kind"], "pay");
    assert_eq!(g["groups"][1]["count"], 1);
    let fp = g["groups"][0]["fingerprint"].as_str().unwrap();
    let (s, r) = api
        .post("/v1/queues/fp/dead/replay", json!({"fingerprint": fp}))
        .await;
    assert_eq!((s, r["count"].as_u64()), (StatusCode::OK, Some(3)));
    let other = g["groups"][1]["fingerprint"].as_str().unwrap();
    let (s, r) = api
        .call(
            Method::DELETE,
            &format!("/v1/queues/fp/dead?fingerprint={other}"),
            None,
        )
        .await;
    assert_eq!((s, r["count"].as_u64()), (StatusCode::OK, Some(1)));
    let (_, g) = api.get("/v1/queues/fp/dead/groups").await;
    assert_eq!(g["groups"], json!([]));
    let got = api.get("/v1/queues/fp/dead/groups?limit=0").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("limit"));
}

#[tokio::test]
async fn operators_actions_are_audited_with_the_keys_name() {
    let mut api = Api::with(Setup {
        keys: vec![
            Api::key("ops", &[Scope::Admin], &[]),
            Api::key("viewer", &[Scope::Read], &[]),
            Api::key("au-viewer", &[Scope::Read], &["au"]),
        ],
        ..Setup::default()
    });
    api.key = Some("au-viewer".into());
    assert_eq!(api.get("/v1/audit").await.0, StatusCode::FORBIDDEN);
    api.key = Some("ops".into());
    let id = api
        .enqueue("au", json!({"kind": "k", "max_attempts": 1}))
        .await;
    let j = &api.fetch("au", 1).await[0];
    api.post(
        &format!("/v1/jobs/{id}/fail"),
        json!({"lease_token": j["lease_token"], "message": "boom"}),
    )
    .await;
    assert_eq!(
        api.post(&format!("/v1/jobs/{id}/retry"), json!({})).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.post("/v1/queues/au/pause", json!({})).await.0,
        StatusCode::OK
    );
    let (s, _) = api
        .post("/v1/queues/au/dead/replay", json!({"kind": "k"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // A refused action is not an action: it is an auth failure, recorded as such.
    api.key = Some("viewer".into());
    assert_eq!(
        api.post("/v1/queues/au/resume", json!({})).await.0,
        StatusCode::FORBIDDEN
    );

    let (s, page) = api.get("/v1/audit").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let got: Vec<(&str, &str, &str)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("viewer", "auth.denied", "POST /v1/queues/{queue}/resume"),
            ("ops", "dead.replay", "au"),
            ("ops", "queue.pause", "au"),
            ("ops", "job.retry", id.as_str()),
            ("au-viewer", "auth.denied", "GET /v1/audit"),
        ]
    );
    assert_eq!(page["entries"][1]["detail"]["filter"]["kind"], "k");
    assert_eq!(page["entries"][1]["detail"]["count"], 0);
    let (_, first) = api.get("/v1/audit?limit=3").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = api.get(&format!("/v1/audit?limit=3&cursor={cursor}")).await;
    assert_eq!(rest["entries"][0]["action"], "job.retry");
    assert!(rest.get("next_cursor").is_none());

    // A schedule's payload (it may hold a secret) stays out of the log; a key limited to some queues
    // may not read it.
    api.key = Some("ops".into());
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/schedules/nightly",
            Some(json!({"cron": "0 3 * * *", "queue": "au", "kind": "k",
                        "payload": {"token": "s3cret-canary"}})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let (_, page) = api.get("/v1/audit").await;
    assert_eq!(page["entries"][0]["action"], "schedule.put");
    assert_eq!(page["entries"][0]["detail"]["cron"], "0 3 * * *");
    assert!(!page.to_string().contains("s3cret-canary"), "{page}");
}

#[tokio::test]
async fn keys_scopes_and_queue_prefixes() {
    let api = Api::with(Setup {
        keys: vec![
            Api::key("producer", &[Scope::Produce], &["billing."]),
            Api::key("worker", &[Scope::Work], &[]),
            Api::key("reader", &[Scope::Read], &[]),
            Api::key("admin", &[Scope::Admin], &[]),
        ],
        ..Default::default()
    });
    let job = Some(json!({"kind": "k"}));
    // 401: no key, an unknown key, a malformed header.
    let got = api.call_as(None, Method::GET, "/v1/queues", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, None);
    let got = api
        .call_as(Some("guess"), Method::GET, "/v1/queues", None)
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, None);
    let req = Request::get("/v1/queues")
        .header(header::AUTHORIZATION, "Basic eDp5")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(req).await.0, StatusCode::UNAUTHORIZED);

    let p = api.as_key("producer");
    assert_eq!(
        p.call(
            Method::POST,
            "/v1/queues/billing.invoices/jobs",
            job.clone()
        )
        .await,
        StatusCode::CREATED
    );
    let got = api
        .call_as(
            Some("producer"),
            Method::POST,
            "/v1/queues/mail/jobs",
            job.clone(),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, code::FORBIDDEN, None);
    assert_eq!(
        p.call(
            Method::POST,
            "/v1/fetch",
            Some(json!({"queues": ["billing.invoices"], "worker_id": "w"}))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        p.call(Method::POST, "/v1/queues/billing.x/pause", None)
            .await,
        StatusCode::FORBIDDEN
    );

    let w = api.as_key("worker");
    assert_eq!(
        w.call(Method::POST, "/v1/queues/mail/jobs", job.clone())
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.call(
            Method::POST,
            "/v1/fetch",
            Some(json!({"queues": ["billing.invoices"], "worker_id": "w"}))
        )
        .await,
        StatusCode::OK
    );

    let r = api.as_key("reader");
    assert_eq!(
        r.call(Method::GET, "/v1/queues", None).await,
        StatusCode::OK
    );
    assert_eq!(
        r.call(Method::GET, "/v1/queues/billing.invoices/config", None)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        r.call(
            Method::PUT,
            "/v1/queues/billing.invoices/config",
            Some(json!({}))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        r.call(Method::DELETE, "/v1/queues/billing.invoices/dead", None)
            .await,
        StatusCode::FORBIDDEN
    );

    let a = api.as_key("admin");
    assert_eq!(
        a.call(Method::POST, "/v1/queues/anything/jobs", job.clone())
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        a.call(Method::POST, "/v1/queues/anything/pause", None)
            .await,
        StatusCode::OK
    );
    assert_eq!(
        a.call(Method::DELETE, "/v1/queues/anything/dead", None)
            .await,
        StatusCode::OK
    );

    // A prefixed key sees only its queues in the listing, and not other queues' jobs.
    let (_, list) = api
        .call_as(Some("producer"), Method::GET, "/v1/queues", None)
        .await;
    assert_eq!(
        list["error"]["code"], "forbidden",
        "produce does not grant listing queues"
    );
    let other = api
        .call_as(Some("admin"), Method::POST, "/v1/queues/mail/jobs", job)
        .await
        .1;
    let got = api
        .call_as(
            Some("producer"),
            Method::GET,
            &format!("/v1/jobs/{}", other["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, code::FORBIDDEN, None);
    // Health and the API description need no key.
    assert_eq!(
        api.call_as(None, Method::GET, "/health/live", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call_as(None, Method::GET, "/openapi.json", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_stalled_lease_cannot_complete_after_recovery() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Default::default()
    });
    let id = api
        .enqueue(
            "st",
            json!({"kind": "k", "heartbeat_ms": 1000, "max_stalled": 5}),
        )
        .await;
    let j = api.fetch("st", 1).await.remove(0);
    let clock = api.clock.as_ref().unwrap();
    clock.advance(60_000);
    api.state.engine.maintain().await.unwrap();
    let got = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": j["lease_token"]}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, code::LEASE_LOST, None);
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "waiting");
    assert_eq!(job["errors"][0]["kind"], "stalled");
}

#[tokio::test]
async fn review_findings_each_answered_right() {
    let api = Api::new();
    // A bad max_jobs names max_jobs.
    let got = api
        .post(
            "/v1/fetch",
            json!({"queues": ["q"], "worker_id": "w", "max_jobs": 0}),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("max_jobs"),
    );
    // A path that is not valid text is refused in JSON.
    let got = api.get("/v1/jobs/%FF").await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("path"));

    // A batch's bad item is named by its place in the request, releases and bad ids counted.
    api.enqueue("ix", json!({"kind": "k"})).await;
    api.enqueue("ix", json!({"kind": "k"})).await;
    let jobs = api.fetch("ix", 2).await;
    let (_, b) = api
        .post(
            "/v1/ack",
            json!({"acks": [
                {"outcome": "release", "id": jobs[0]["id"], "lease_token": jobs[0]["lease_token"]},
                {"outcome": "complete", "id": "bad", "lease_token": "t"},
                {"outcome": "fail", "id": jobs[1]["id"], "lease_token": jobs[1]["lease_token"],
                 "message": "m", "retry_after_ms": 1_000_000_000_000_000u64},
            ]}),
        )
        .await;
    let r = b["results"].as_array().unwrap();
    assert!(r[0]["ok"].is_object(), "{b}");
    assert_eq!(r[2]["error"]["field"], "acks[2].retry_after_ms", "{b}");
}

#[tokio::test]
async fn resuming_a_queue_wakes_the_fetches_parked_on_it() {
    let api = Api::new();
    api.post("/v1/queues/pz/pause", json!({})).await;
    api.enqueue("pz", json!({"kind": "k"})).await;
    let waiting = api.spawn_fetch(json!({"queues": ["pz"], "worker_id": "w", "wait_ms": 20_000}));
    api.wait_fetches_parked(1).await;
    api.post("/v1/queues/pz/resume", json!({})).await;
    let (elapsed, _, b) = waiting.await.unwrap();
    assert_eq!(b["jobs"].as_array().unwrap().len(), 1, "{b}");
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the resume: {elapsed:?}"
    );
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let api = Api::with(Setup {
        keys: vec![Api::key("k1", &[Scope::Read], &[])],
        ..Default::default()
    });
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let req = Request::get("/v1/queues")
            .header(header::AUTHORIZATION, format!("{scheme} k1"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(api.raw(req).await.0, StatusCode::OK, "{scheme}");
    }
}

#[tokio::test]
async fn a_store_that_cannot_write_answers_503_and_the_write_is_not_made() {
    let api = Api::new();
    api.enqueue("busy", json!({"kind": "k"})).await;
    // Another process holds the database's write lock: the store gives up after its busy timeout.
    let db = api.db_path();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        release_rx.recv().unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    let (s, b, h) = api
        .raw(
            Request::post("/v1/queues/busy/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({"kind": "k"}).to_string()))
                .unwrap(),
        )
        .await;
    assert_error(
        &(s, b),
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        None,
    );
    assert!(
        h.contains_key(header::RETRY_AFTER),
        "tells the client to come back"
    );
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let (_, q) = api.get("/v1/queues/busy").await;
    assert_eq!(
        q["counts"]["waiting"], 1,
        "the refused enqueue wrote nothing"
    );
    api.enqueue("busy", json!({"kind": "k"})).await;
}

#[tokio::test]
async fn a_repeat_with_dedup_replace_updates_the_waiting_job() {
    let api = Api::new();
    let body = |n: u32, dedup: &str| json!({"kind": "k", "payload": {"n": n}, "unique_key": "u", "dedup": dedup});
    let (s, first) = api.post("/v1/queues/dd/jobs", body(1, "replace")).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(first.get("replaced").is_none(), "only said when true");
    let (s, again) = api.post("/v1/queues/dd/jobs", body(2, "replace")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (again["created"].clone(), again["replaced"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(again["id"], first["id"]);
    let (_, job) = api
        .get(&format!("/v1/jobs/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(job["payload"], json!({"n": 2}));
    let (_, kept) = api.post("/v1/queues/dd/jobs", body(3, "reject")).await;
    assert!(kept.get("replaced").is_none());
}

#[tokio::test]
async fn workers_append_log_lines_and_anyone_who_may_read_the_job_sees_them() {
    let api = Api::new();
    let id = api.enqueue("logged", json!({"kind": "k"})).await;
    let job = api.fetch("logged", 1).await.remove(0);
    let token = job["lease_token"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{id}/logs");
    let (s, _) = api
        .post(
            &path,
            json!({"lease_token": token, "lines": ["charging card", "charged"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["logs"][0]["line"], "charging card");
    assert_eq!(b["logs"][1]["line"], "charged");
    assert_eq!(b["logs"][1]["attempt"], 1);

    let got = api
        .post(&path, json!({"lease_token": "stale", "lines": ["x"]}))
        .await;
    assert_error(&got, StatusCode::CONFLICT, code::LEASE_LOST, None);
    let got = api
        .post(&path, json!({"lease_token": token, "lines": []}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("lines"));
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let got = api
        .post(&path, json!({"lease_token": token, "lines": many}))
        .await;
    assert_eq!(got.0, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, b) = api.get(&path).await;
    assert_eq!(
        b["logs"].as_array().unwrap().len(),
        2,
        "nothing more written"
    );
    let got = api.get("/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/logs").await;
    assert_error(&got, StatusCode::NOT_FOUND, code::NOT_FOUND, None);
}

#[tokio::test]
async fn a_fetch_held_back_by_flow_control_returns_once_a_place_frees_or_a_token_is_due() {
    let api = Api::new();
    let (s, c) = api
        .call(
            Method::PUT,
            "/v1/queues/one/config",
            Some(json!({"concurrency": 1, "group_concurrency": 1, "key_concurrency": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        (c["concurrency"].as_u64(), c["key_concurrency"].as_u64()),
        (Some(1), Some(1))
    );
    api.enqueue(
        "one",
        json!({"kind": "k", "group_key": "t1", "concurrency_key": "o1"}),
    )
    .await;
    api.enqueue("one", json!({"kind": "k"})).await;
    let first = api.fetch("one", 10).await;
    assert_eq!(first.len(), 1, "the queue allows one active job");
    assert_eq!(first[0]["group_key"], "t1");
    assert_eq!(first[0]["concurrency_key"], "o1");
    let waiting = api.spawn_fetch(json!({"queues": ["one"], "worker_id": "w2", "wait_ms": 20_000}));
    api.wait_fetches_parked(1).await;
    let id = first[0]["id"].as_str().unwrap();
    let token = first[0]["lease_token"].as_str().unwrap();
    let (s, _) = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (elapsed, _, b) = waiting.await.unwrap();
    assert_eq!(b["jobs"].as_array().unwrap().len(), 1, "{b}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // A rate limit: the second job comes when its token is due, within the same long poll.
    let (s, _) = api
        .call(
            Method::PUT,
            "/v1/queues/slow/config",
            Some(json!({"rate_limit": {"limit": 1, "period_ms": 500}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    api.enqueue("slow", json!({"kind": "k"})).await;
    api.enqueue("slow", json!({"kind": "k"})).await;
    assert_eq!(api.fetch("slow", 10).await.len(), 1);
    let (elapsed, _, b) = api
        .spawn_fetch(json!({"queues": ["slow"], "worker_id": "w2", "wait_ms": 20_000}))
        .await
        .unwrap();
    assert_eq!(b["jobs"].as_array().unwrap().len(), 1, "{b}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // Bad settings are a 400 naming the field.
    let got = api
        .call(
            Method::PUT,
            "/v1/queues/slow/config",
            Some(json!({"rate_limit": {"limit": 1, "period_ms": 0}})),
        )
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("rate_limit.period_ms"),
    );
}

/// How many times this node's store read a job by id.
fn job_reads(api: &Api) -> u64 {
    api.state
        .metrics
        .render(&[], &Default::default(), 0)
        .lines()
        .find_map(|l| l.strip_prefix("errand_store_operation_seconds_count{op=\"job_get\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_producer_waits_for_a_job_to_end_and_gets_its_result() {
    let api = Api::new();
    let id = api.enqueue("w8", json!({"kind": "k"})).await;
    let reads = job_reads(&api);
    let waiting = {
        let router = api.router.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let req = Request::get(format!("/v1/jobs/{id}/wait?timeout=20000"))
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                t.elapsed(),
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap(),
            )
        })
    };
    // The wait subscribes to events, then reads the job: once it has read it, the end is sure to reach
    // it while it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while job_reads(&api) == reads {
        assert!(Instant::now() < deadline, "the wait never read the job");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jobs = api.fetch("w8", 1).await;
    let token = jobs[0]["lease_token"].as_str().unwrap();
    let (s, _) = api
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"lease_token": token, "result": {"answer": 42}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (elapsed, status, job) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (job["state"].as_str(), job["result"]["answer"].as_u64()),
        (Some("completed"), Some(42))
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the end: {elapsed:?}"
    );

    // Not ended in time: the job as it is.
    let other = api.enqueue("w8", json!({"kind": "k"})).await;
    let (s, job) = api.get(&format!("/v1/jobs/{other}/wait?timeout=50")).await;
    assert_eq!(
        (s, job["state"].as_str()),
        (StatusCode::OK, Some("waiting"))
    );
    let got = api
        .get(&format!("/v1/jobs/{other}/wait?timeout=soon"))
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("timeout"),
    );
    let got = api.get("/v1/jobs/01J00000000000000000000000/wait").await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn queue_policies_and_max_waiting_answer_400_and_429_and_show_in_the_config() {
    let api = Api::with(Setup {
        tweak: |c| c.max_payload_bytes = 2_048,
        ..Default::default()
    });
    let config = json!({
        "timeout_ms": 30_000,
        "max_attempts": 5,
        "max_waiting": 2,
        "policy": {
            "require_unique_key": true,
            "max_payload_bytes": 100,
            "min_timeout_ms": 1_000,
            "max_timeout_ms": 60_000,
            "min_attempts": 5
        }
    });
    let (s, b) = api
        .call(Method::PUT, "/v1/queues/pay/config", Some(config))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["max_waiting"], 2);
    assert_eq!(b["policy"]["require_unique_key"], true);
    assert_eq!(b["policy"]["max_payload_bytes"], 100);
    assert_eq!(b["policy"]["require_dead_letter_route"], false);
    let (_, shown) = api.get("/v1/queues/pay/config").await;
    assert_eq!(shown, b, "kept as set");

    // A policy above the server's payload setting is refused, naming it.
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/queues/pay2/config",
            Some(json!({"policy": {"max_payload_bytes": 4_096}})),
        )
        .await;
    assert_error(
        &(s, b),
        StatusCode::BAD_REQUEST,
        code::INVALID,
        Some("policy.max_payload_bytes"),
    );

    // Each policy refuses with a 400 naming the job's field.
    let refused = [
        (json!({"kind": "k", "payload": {}}), "unique_key"),
        (
            json!({"kind": "k", "payload": {"s": "x".repeat(200)}, "unique_key": "a"}),
            "payload",
        ),
        (
            json!({"kind": "k", "payload": {}, "unique_key": "a", "timeout_ms": 500}),
            "timeout_ms",
        ),
        (
            json!({"kind": "k", "payload": {}, "unique_key": "a", "max_attempts": 1}),
            "max_attempts",
        ),
    ];
    for (job, field) in refused {
        let got = api.post("/v1/queues/pay/jobs", job).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some(field));
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("policy")
        );
    }
    // The server-wide setting: 413 beyond 2,048 bytes on any queue.
    let (s, b) = api
        .post(
            "/v1/queues/free/jobs",
            json!({"kind": "k", "payload": {"s": "x".repeat(3_000)}}),
        )
        .await;
    assert_error(
        &(s, b),
        StatusCode::PAYLOAD_TOO_LARGE,
        code::TOO_LARGE,
        Some("payload"),
    );

    // Two fit; the third gets 429 with Retry-After, and a batch crossing the bound writes nothing.
    for k in ["a", "b"] {
        let (s, b) = api
            .post(
                "/v1/queues/pay/jobs",
                json!({"kind": "k", "payload": {}, "unique_key": k}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let req = Request::post("/v1/queues/pay/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"kind": "k", "payload": {}, "unique_key": "c"}).to_string(),
        ))
        .unwrap();
    let (s, b, h) = api.raw(req).await;
    assert_error(
        &(s, b.clone()),
        StatusCode::TOO_MANY_REQUESTS,
        code::RATE_LIMITED,
        Some("queue"),
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_waiting")
    );
    assert_eq!(h[header::RETRY_AFTER], "1");
    let (_, stats) = api.get("/v1/queues/pay").await;
    assert_eq!(stats["counts"]["waiting"], 2, "{stats}");
}

#[tokio::test]
async fn a_workers_report_is_shown_and_a_bad_one_refused() {
    let api = Api::new();
    let fetch = |report: Value| json!({"queues": ["r"], "worker_id": "w-1", "wait_ms": 0, "report": report});
    let good =
        json!({"sdk": "my-worker", "version": "2.1", "concurrency": 8, "drains_on_sigterm": true});
    let (s, b) = api.post("/v1/fetch", fetch(good.clone())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, ws) = api.get("/v1/workers").await;
    assert_eq!(ws["workers"][0]["report"], good);
    for (bad, field) in [
        (
            json!({"sdk": "", "version": "1", "concurrency": 1, "drains_on_sigterm": true}),
            "report.sdk",
        ),
        (
            json!({"sdk": "x", "version": "1", "concurrency": 0, "drains_on_sigterm": true}),
            "report.concurrency",
        ),
    ] {
        let got = api.post("/v1/fetch", fetch(bad)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some(field));
    }
}
