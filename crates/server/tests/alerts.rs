//! Built-in alerts driven by the injected clock: a rule fires after its `for` duration, is listed,
//! told once to the queue's `alert` webhooks, resolves, and a flap within the cooldown is not told
//! again; a stall fires the `stalled` rule at once.

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use errand_core::JobState;
use errand_core::alerts::RuleKind;
use errand_core::engine::WEBHOOK_QUEUE;
use errand_server::alerting::AlertConfig;
use serde_json::{Value, json};
use support::{Api, Setup};

fn api() -> Api {
    Api::with(Setup {
        manual_clock: true,
        tweak: |c| {
            c.alerts = vec![
                AlertConfig {
                    threshold: Some(2.0),
                    for_ms: Some(60_000),
                    cooldown_ms: Some(600_000),
                    ..AlertConfig::new("pay", RuleKind::QueueDepth)
                },
                AlertConfig {
                    enabled: false,
                    ..AlertConfig::new("*", RuleKind::NoWorkers)
                },
            ];
        },
        ..Setup::default()
    })
}

/// The alert notices waiting for delivery: their bodies.
async fn notices(api: &Api) -> Vec<Value> {
    let page = api
        .state
        .engine
        .list(WEBHOOK_QUEUE, JobState::Waiting, None, 100)
        .await
        .unwrap();
    page.jobs
        .iter()
        .map(|j| serde_json::from_str::<Value>(j.payload.get()).unwrap()["body"].clone())
        .collect()
}

async fn firing(api: &Api) -> Vec<Value> {
    let (s, b) = api.get("/v1/alerts").await;
    assert_eq!(s, StatusCode::OK);
    b["alerts"].as_array().unwrap().clone()
}

#[tokio::test]
async fn queue_depth_fires_after_its_for_duration_resolves_and_is_told_once_per_cooldown() {
    let api = api();
    let clock = api.clock.clone().unwrap();
    let (s, b) = api
        .call(
            axum::http::Method::PUT,
            "/v1/queues/pay/webhooks/ops",
            Some(
                json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef",
                        "events": ["alert"]}),
            ),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            api.enqueue("pay", json!({"kind": "charge", "payload": {"i": i}}))
                .await,
        );
    }
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing(&api).await.is_empty(), "pending for a minute first");
    clock.advance(59_999);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing(&api).await.is_empty());
    clock.advance(1);
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing(&api).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (
            &f[0]["rule"],
            &f[0]["queue"],
            &f[0]["value"],
            &f[0]["threshold"]
        ),
        (
            &json!("queue_depth"),
            &json!("pay"),
            &json!(3.0),
            &json!(2.0)
        )
    );
    let n = notices(&api).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["type"], "alert.firing");
    assert_eq!(n[0]["rule"], "queue_depth");
    let (_, _, metrics) = api.get_text("/metrics").await;
    assert!(
        metrics.contains("errand_alerts_firing{rule=\"queue_depth\",queue=\"pay\"} 1"),
        "{metrics}"
    );

    // Still firing: not told again.
    clock.advance(10_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert_eq!(notices(&api).await.len(), 1);

    // Two cancelled: resolved, and told.
    for id in &ids[..2] {
        api.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    }
    clock.advance(5_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing(&api).await.is_empty());
    let n = notices(&api).await;
    assert_eq!(n.len(), 2);
    assert!(n.iter().any(|b| b["type"] == "alert.resolved"));

    // Fires again within the cooldown: listed, but nobody is paged again.
    for i in 0..2 {
        api.enqueue("pay", json!({"kind": "charge", "payload": {"again": i}}))
            .await;
    }
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(60_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert_eq!(firing(&api).await.len(), 1);
    assert_eq!(notices(&api).await.len(), 2);

    // A node that does not lead alerting lists alerts but tells nothing.
    clock.advance(600_000);
    for id in &ids[2..] {
        api.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    }
    api.state.evaluate_alerts(false).await.unwrap();
    assert_eq!(notices(&api).await.len(), 2);
}

#[tokio::test]
async fn a_stall_fires_the_stalled_rule_at_once_and_it_resolves_after_its_window() {
    let api = api();
    let clock = api.clock.clone().unwrap();
    api.enqueue(
        "st",
        json!({"kind": "mint", "payload": {}, "heartbeat_ms": 1000}),
    )
    .await;
    let j = &api.fetch("st", 1).await[0];
    let lease = j["lease_expires_at"].as_i64().unwrap() - errand_core::Clock::now(&*clock);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing(&api).await.is_empty());
    clock.advance(lease + 1);
    api.state.engine.maintain().await.unwrap();
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing(&api).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (&f[0]["rule"], &f[0]["value"]),
        (&json!("stalled"), &json!(1.0))
    );
    // The window (10 minutes) passes without another stall.
    clock.advance(600_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing(&api).await.is_empty());
}
