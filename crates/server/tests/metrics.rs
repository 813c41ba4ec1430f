//! `GET /metrics` during a run with completions, retries, a stall, a dead job and a cancel: every
//! family's values, exactly, from one scrape.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::{Api, Setup};

/// The samples of an exposition: `name{labels}` → value, labels as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} among {:#?}", s.keys().collect::<Vec<_>>()))
}

#[tokio::test]
async fn a_scrape_counts_every_outcome_and_times_waits_and_runs() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    for i in 0..4 {
        let job = json!({"kind": "send", "payload": {"i": i}, "max_attempts": 2,
                         "backoff": {"type": "fixed", "delay_ms": 1000},
                         "heartbeat_ms": 1000, "timeout_ms": 60000});
        api.enqueue("m", job).await;
    }
    api.enqueue("other", json!({"kind": "report", "payload": {}}))
        .await;

    // 1: waits 100 ms, runs 250 ms, completes.
    clock.advance(100);
    let j = &api.fetch("m", 1).await[0];
    clock.advance(250);
    let (s, _) = api
        .post(
            &format!("/v1/jobs/{}/complete", j["id"].as_str().unwrap()),
            json!({"lease_token": j["lease_token"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // 2: fails after 50 ms (retried in 1 s).
    let j = &api.fetch("m", 1).await[0];
    let id2 = j["id"].as_str().unwrap().to_string();
    clock.advance(50);
    let fail = |j: &serde_json::Value| json!({"lease_token": j["lease_token"], "message": "card declined"});
    let (s, b) = api.post(&format!("/v1/jobs/{id2}/fail"), fail(j)).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // 3: claimed and left to stall (retried).
    let j = &api.fetch("m", 1).await[0];
    let lease_ms = j["lease_expires_at"].as_i64().unwrap() - clock_now(&api);
    assert!(lease_ms >= 1_000);
    clock.advance(lease_ms + 1);
    api.state.engine.maintain().await.unwrap();

    // 2 fails again (dead); 3 and 4 complete at once.
    let jobs = api.fetch("m", 3).await;
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        let id = j["id"].as_str().unwrap();
        let (s, _) = if id == id2 {
            api.post(&format!("/v1/jobs/{id}/fail"), fail(j)).await
        } else {
            let body = json!({"lease_token": j["lease_token"]});
            api.post(&format!("/v1/jobs/{id}/complete"), body).await
        };
        assert_eq!(s, StatusCode::OK);
    }

    // 5: cancelled while waiting; 6 waits 3 s.
    let id5 = api
        .enqueue("m", json!({"kind": "send", "payload": {}}))
        .await;
    let (s, _) = api.post(&format!("/v1/jobs/{id5}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    api.enqueue("m", json!({"kind": "send", "payload": {}}))
        .await;
    clock.advance(3_000);

    let (status, ctype, text) = api.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = samples(&text);
    let m = |family: &str| {
        value(
            &s,
            &format!("errand_jobs_{family}_total{{queue=\"m\",kind=\"send\"}}"),
        )
    };
    assert_eq!(m("enqueued"), 6.0);
    assert_eq!(m("completed"), 3.0);
    assert_eq!(m("failed"), 3.0, "two errors and a stall");
    assert_eq!(m("retried"), 2.0, "the first error and the stall");
    assert_eq!(m("dead"), 1.0);
    assert_eq!(m("stalled"), 1.0);
    assert_eq!(m("cancelled"), 1.0);
    assert_eq!(
        value(
            &s,
            "errand_jobs_enqueued_total{queue=\"other\",kind=\"report\"}"
        ),
        1.0
    );

    let state =
        |q: &str, st: &str| value(&s, &format!("errand_jobs{{queue=\"{q}\",state=\"{st}\"}}"));
    assert_eq!(
        [
            state("m", "waiting"),
            state("m", "active"),
            state("m", "completed"),
            state("m", "dead"),
            state("m", "cancelled"),
            state("m", "delayed"),
            state("other", "waiting"),
        ],
        [1.0, 0.0, 3.0, 1.0, 1.0, 0.0, 1.0]
    );
    assert_eq!(value(&s, "errand_queue_dead_letters{queue=\"m\"}"), 1.0);
    assert_eq!(value(&s, "errand_queue_paused{queue=\"m\"}"), 0.0);
    assert_eq!(
        value(&s, "errand_queue_oldest_waiting_seconds{queue=\"m\"}"),
        3.0
    );

    // Six claims; six ended attempts: a completion after 250 ms, an error after 50 ms, a stall after
    // the lease, then an error and two completions at once.
    assert_eq!(value(&s, "errand_job_wait_seconds_count{queue=\"m\"}"), 6.0);
    // Waits: 100, 350 and 400 ms; then at t = 401 ms + lease, 3 and 4 (due since 0) and 2 (due
    // since its retry at 1,400 ms).
    let t = (401 + lease_ms) as f64 / 1_000.0;
    let waited = value(&s, "errand_job_wait_seconds_sum{queue=\"m\"}");
    assert!((waited - (0.85 + 3.0 * t - 1.4)).abs() < 1e-9, "{waited}");
    assert_eq!(
        value(&s, "errand_job_processing_seconds_count{queue=\"m\"}"),
        6.0
    );
    let ran = value(&s, "errand_job_processing_seconds_sum{queue=\"m\"}");
    let lease_s = (lease_ms + 1) as f64 / 1_000.0;
    assert!((ran - (0.25 + 0.05 + lease_s)).abs() < 1e-9, "{ran}");
    assert_eq!(
        value(
            &s,
            "errand_job_processing_seconds_bucket{le=\"0.32\",queue=\"m\"}"
        ),
        5.0,
        "{text}"
    );

    assert_eq!(value(&s, "errand_workers{queue=\"m\"}"), 1.0);
    assert_eq!(
        value(
            &s,
            "errand_http_requests_total{route=\"/v1/fetch\",method=\"POST\",status=\"200\"}"
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            "errand_http_requests_total{route=\"/v1/jobs/{id}/fail\",method=\"POST\",status=\"200\"}"
        ),
        2.0
    );
    assert!(
        value(
            &s,
            "errand_http_request_duration_seconds_count{route=\"/v1/fetch\",method=\"POST\"}"
        ) == 4.0
    );
    assert!(value(&s, "errand_store_operation_seconds_count{op=\"job_claim\"}") >= 3.0);
    assert!(
        value(
            &s,
            "errand_store_operation_seconds_count{op=\"job_transition\"}"
        ) >= 4.0
    );

    let (_, workers) = api.get("/v1/workers").await;
    assert_eq!(workers["workers"][0]["id"], "w1");
    assert_eq!(workers["workers"][0]["queues"], json!(["m"]));

    // A worker not seen for a minute no longer counts.
    clock.advance(61_000);
    let (_, _, text) = api.get_text("/metrics").await;
    assert!(!text.contains("errand_workers{queue=\"m\"}"), "{text}");
    assert_eq!(api.get("/v1/workers").await.1, json!({"workers": []}));
}

#[tokio::test]
async fn metrics_need_the_read_scope() {
    use errand_server::auth::Scope;
    let api = Api::with(Setup {
        keys: vec![
            Api::key("reader", &[Scope::Read], &[]),
            Api::key("producer", &[Scope::Produce], &[]),
            Api::key("billing-reader", &[Scope::Read], &["billing."]),
        ],
        ..Setup::default()
    });
    assert_eq!(api.get_text("/metrics").await.0, StatusCode::UNAUTHORIZED);
    let mut api = api;
    api.key = Some("producer".into());
    assert_eq!(api.get_text("/metrics").await.0, StatusCode::FORBIDDEN);
    // Metrics span every queue: not for a key limited to some.
    api.key = Some("billing-reader".into());
    assert_eq!(api.get_text("/metrics").await.0, StatusCode::FORBIDDEN);
    api.key = Some("reader".into());
    assert_eq!(api.get_text("/metrics").await.0, StatusCode::OK);
    // Whatever method name a client sends, the label stays one of a fixed set.
    let (s, _) = api
        .call(Method::from_bytes(b"BREW").unwrap(), "/v1/queues", None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (_, _, text) = api.get_text("/metrics").await;
    assert!(text.contains("method=\"other\",status=\"405\""), "{text}");
    assert!(!text.contains("BREW"));
    let (s, me) = api.get("/v1/whoami").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        me,
        json!({"name": "reader", "scopes": ["read"], "queues": []})
    );
}

fn clock_now(api: &Api) -> i64 {
    errand_core::Clock::now(api.clock.as_deref().unwrap())
}

#[tokio::test]
async fn a_scrape_reports_the_stores_files_the_free_disk_and_resident_memory() {
    let api = Api::new();
    api.enqueue("q", json!({"kind": "k", "payload": {}})).await;
    let (s, _, text) = api.get_text("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let m = samples(&text);
    let db = std::fs::metadata(api.db_path()).unwrap().len() as f64;
    assert_eq!(
        value(&m, "errand_store_bytes{object=\"e.db\",kind=\"file\"}"),
        db
    );
    assert!(m.contains_key("errand_store_bytes{object=\"e.db-wal\",kind=\"wal\"}"));
    let disk = errand_server::resources::disk(api.db_path().parent().unwrap()).unwrap();
    let free = value(&m, "errand_disk_free_bytes");
    assert!(free > 0.0 && free <= disk.total as f64);
    assert_eq!(value(&m, "errand_disk_size_bytes"), disk.total as f64);
    let used = value(&m, "errand_disk_used_bytes");
    assert!(used > 0.0 && used <= disk.total as f64);
    assert!(value(&m, "errand_process_resident_memory_bytes") > 1_048_576.0);
}
