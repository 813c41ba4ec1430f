//! Fencing: 200 lease holders stopped past their leases, whose jobs were recovered and completed by
//! another worker, then wake and acknowledge — all at once. Every stale acknowledgement is refused with
//! `409 lease_lost` and changes nothing; each job is completed once, by its current holder.

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use errand_protocol::code;
use serde_json::{Value, json};
use support::{Api, Setup};

const JOBS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_lease_holders_are_refused_and_each_job_completes_once() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    let jobs: Vec<Value> = (0..JOBS)
        .map(|i| json!({"kind": "mint", "payload": {"i": i}, "heartbeat_ms": 1000}))
        .collect();
    let (s, b) = api.post("/v1/queues/nft/jobs", json!({"jobs": jobs})).await;
    assert!(s.is_success(), "{b}");

    // The first holders take every job, then stop (a GC pause, SIGSTOP, a partition).
    let (s, first) = api
        .post(
            "/v1/fetch",
            json!({"queues": ["nft"], "worker_id": "stopped", "max_jobs": JOBS}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let first = first["jobs"].as_array().unwrap().clone();
    assert_eq!(first.len(), JOBS);
    let lease_end = first
        .iter()
        .map(|j| j["lease_expires_at"].as_i64().unwrap())
        .max()
        .unwrap();
    clock.set(lease_end + 1);
    api.state.engine.maintain().await.unwrap();

    // Another worker takes them over and completes them.
    let (_, second) = api
        .post(
            "/v1/fetch",
            json!({"queues": ["nft"], "worker_id": "alive", "max_jobs": JOBS}),
        )
        .await;
    let second = second["jobs"].as_array().unwrap().clone();
    assert_eq!(second.len(), JOBS, "every stalled job is recovered");
    for j in &second {
        let (s, _) = api
            .post(
                &format!("/v1/jobs/{}/complete", j["id"].as_str().unwrap()),
                json!({"lease_token": j["lease_token"], "result": {"by": "alive"}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    // The stopped holders wake and acknowledge, all at once: completions and failures.
    let mut acks = tokio::task::JoinSet::new();
    for (i, j) in first.into_iter().enumerate() {
        let router = api.router.clone();
        acks.spawn(async move {
            use tower::ServiceExt;
            let id = j["id"].as_str().unwrap().to_string();
            let (route, body) = if i % 2 == 0 {
                (
                    "complete",
                    json!({"lease_token": j["lease_token"], "result": {"by": "stopped"}}),
                )
            } else {
                (
                    "fail",
                    json!({"lease_token": j["lease_token"], "message": "late"}),
                )
            };
            let req = axum::http::Request::post(format!("/v1/jobs/{id}/{route}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (id, status, serde_json::from_slice::<Value>(&bytes).unwrap())
        });
    }
    let mut refused = 0;
    while let Some(r) = acks.join_next().await {
        let (id, status, body) = r.unwrap();
        assert_eq!(status, StatusCode::CONFLICT, "{id}: {body}");
        assert_eq!(body["error"]["code"], code::LEASE_LOST, "{id}");
        refused += 1;
    }
    assert_eq!(refused, JOBS, "100 % of stale acknowledgements refused");

    // Each job completed once, by the worker that held it, with its result; no error recorded after.
    let (_, page) = api
        .get("/v1/queues/nft/jobs?state=completed&limit=1000")
        .await;
    let done = page["jobs"].as_array().unwrap();
    assert_eq!(done.len(), JOBS);
    for j in done {
        assert_eq!(j["result"], json!({"by": "alive"}), "{j}");
        // A stall gives its attempt back; it is counted among the stalls.
        assert_eq!(
            (&j["attempts"], &j["stalls"]),
            (&json!(1), &json!(1)),
            "{j}"
        );
        let errors = j["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "only the stall: {j}");
        assert_eq!(errors[0]["kind"], "stalled");
    }
}
