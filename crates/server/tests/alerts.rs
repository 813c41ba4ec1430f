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

/// A server with every built-in rule at its defaults.
fn api_with_default_rules() -> Api {
    Api::with(Setup {
        manual_clock: true,
        ..Setup::default()
    })
}

/// The firing alerts of `rule`, as `(queue, value)`.
async fn firing_of(api: &Api, rule: &str) -> Vec<(String, f64)> {
    firing(api)
        .await
        .iter()
        .filter(|a| a["rule"] == rule)
        .map(|a| {
            (
                a["queue"].as_str().unwrap().to_string(),
                a["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Fetches `n` jobs of `queue` and fails each, `retryable` or not.
async fn fail_jobs(api: &Api, queue: &str, n: u32, retryable: bool) {
    for j in api.fetch(queue, n).await {
        let id = j["id"].as_str().unwrap();
        let (s, b) = api
            .post(
                &format!("/v1/jobs/{id}/fail"),
                json!({"lease_token": j["lease_token"], "message": "provider down",
                       "retryable": retryable}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

/// Fetches `n` jobs of `queue` and completes each.
async fn complete_jobs(api: &Api, queue: &str, n: u32) {
    for j in api.fetch(queue, n).await {
        let id = j["id"].as_str().unwrap();
        let (s, b) = api
            .post(
                &format!("/v1/jobs/{id}/complete"),
                json!({"lease_token": j["lease_token"]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

#[tokio::test]
async fn failure_rate_fires_when_over_a_tenth_of_attempts_fail_for_five_minutes() {
    // The default rule, in an hour's window, so that every attempt below stays inside it.
    let api = Api::with(Setup {
        manual_clock: true,
        tweak: |c| {
            c.alerts = vec![AlertConfig {
                window_ms: Some(3_600_000),
                ..AlertConfig::new("pay", RuleKind::FailureRate)
            }];
        },
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    for i in 0..20 {
        api.enqueue("pay", json!({"kind": "charge", "payload": {"i": i}}))
            .await;
    }
    // The first evaluation takes the counts the window starts from; samples are kept at most one
    // per 1/120 of the window (30 s), the newest updated in place, so the attempts come a step later.
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(30_000);
    // Nine failed attempts of nine: fewer than the ten the rule needs before it judges.
    fail_jobs(&api, "pay", 9, true).await;
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(300_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(
        firing_of(&api, "failure_rate").await.is_empty(),
        "9 attempts"
    );
    // A tenth ends, completed: 90 % failed, over the 10 % threshold, pending for five minutes.
    complete_jobs(&api, "pay", 1).await;
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(
        firing_of(&api, "failure_rate").await.is_empty(),
        "pending first"
    );
    clock.advance(299_999);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "failure_rate").await.is_empty());
    clock.advance(1);
    api.state.evaluate_alerts(true).await.unwrap();
    assert_eq!(
        firing_of(&api, "failure_rate").await,
        vec![("pay".into(), 90.0)]
    );
    // The failures age out of the window: resolved.
    clock.advance(3_600_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "failure_rate").await.is_empty());
}

#[tokio::test]
async fn dead_letters_fire_after_a_minute_and_resolve_when_replayed() {
    let api = api_with_default_rules();
    let clock = api.clock.clone().unwrap();
    api.enqueue("mail", json!({"kind": "send", "payload": {}}))
        .await;
    fail_jobs(&api, "mail", 1, false).await;
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(
        firing_of(&api, "dead_letters").await.is_empty(),
        "pending first"
    );
    clock.advance(60_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert_eq!(
        firing_of(&api, "dead_letters").await,
        vec![("mail".into(), 1.0)]
    );
    let (s, b) = api.post("/v1/queues/mail/dead/replay", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "dead_letters").await.is_empty());
}

#[tokio::test]
async fn no_workers_fires_when_jobs_wait_and_no_worker_comes_and_resolves_when_one_does() {
    let api = api_with_default_rules();
    let clock = api.clock.clone().unwrap();
    api.enqueue("mint", json!({"kind": "mint", "payload": {}}))
        .await;
    api.enqueue("mint", json!({"kind": "mint", "payload": {}}))
        .await;
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(300_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert_eq!(firing_of(&api, "no_workers").await.len(), 1);
    // A worker fetches from the queue: resolved, though a job still waits.
    complete_jobs(&api, "mint", 1).await;
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "no_workers").await.is_empty());
}

#[tokio::test]
async fn oldest_waiting_fires_when_a_job_waits_over_five_minutes_for_five_minutes() {
    let api = api_with_default_rules();
    let clock = api.clock.clone().unwrap();
    api.enqueue("slow", json!({"kind": "k", "payload": {}}))
        .await;
    clock.advance(300_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(
        firing_of(&api, "oldest_waiting").await.is_empty(),
        "300 s is not over 300"
    );
    clock.advance(1_000);
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(300_000);
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing_of(&api, "oldest_waiting").await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "slow");
    assert!(f[0].1 >= 601.0, "{f:?}");
    complete_jobs(&api, "slow", 1).await;
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "oldest_waiting").await.is_empty());
}

#[tokio::test]
async fn disk_full_fires_for_the_filesystem_holding_the_store_and_is_told_to_no_queue() {
    // The real filesystem of the test's data directory, against a threshold it is surely over.
    let api = Api::with(Setup {
        manual_clock: true,
        tweak: |c| {
            c.alerts = vec![AlertConfig {
                threshold: Some(0.0),
                ..AlertConfig::new("*", RuleKind::DiskFull)
            }];
        },
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(
        firing_of(&api, "disk_full").await.is_empty(),
        "pending first"
    );
    clock.advance(300_000);
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing_of(&api, "disk_full").await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "*", "the server's, not a queue's");
    let used = errand_server::resources::disk(api.db_path().parent().unwrap())
        .unwrap()
        .used_percent();
    assert!((f[0].1 - used).abs() < 1.0, "{f:?} vs {used}");
    assert!(
        notices(&api).await.is_empty(),
        "no queue's webhooks are the server's"
    );
}

#[tokio::test]
async fn store_growth_fires_when_the_store_grows_past_its_threshold_within_its_window() {
    let api = Api::with(Setup {
        manual_clock: true,
        tweak: |c| {
            c.alerts = vec![AlertConfig {
                threshold: Some(4_000_000.0),
                window_ms: Some(600_000),
                ..AlertConfig::new("*", RuleKind::StoreGrowth)
            }];
        },
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(10_000);
    let enqueue = |from: u64| {
        let big = "x".repeat(4_000);
        json!({"jobs": (from..from + 500).map(|n| json!({"kind": "k", "payload": {"n": n, "s": big}}))
            .collect::<Vec<_>>()})
    };
    // 2 MB: under the threshold.
    let (s, b) = api.post("/v1/queues/fat/jobs", enqueue(0)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "store_growth").await.is_empty());
    // 8 MB more within the window: over it, firing at once (`for` 0).
    for from in [500, 1_000, 1_500, 2_000] {
        api.post("/v1/queues/fat/jobs", enqueue(from)).await;
    }
    clock.advance(10_000);
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing_of(&api, "store_growth").await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].1 > 4_000_000.0, "{f:?}");
    // No growth for a window: resolved.
    clock.advance(600_000);
    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(10_000);
    api.state.evaluate_alerts(true).await.unwrap();
    assert!(firing_of(&api, "store_growth").await.is_empty());
}

#[tokio::test]
async fn the_rules_in_force_are_readable_with_every_queues_own_changes() {
    let api = Api::with(Setup {
        tweak: |c| {
            c.alerts = vec![
                AlertConfig {
                    threshold: Some(50.0),
                    ..AlertConfig::new("*", RuleKind::QueueDepth)
                },
                AlertConfig {
                    threshold: Some(5.0),
                    for_ms: Some(0),
                    ..AlertConfig::new("pay", RuleKind::QueueDepth)
                },
                AlertConfig {
                    enabled: false,
                    ..AlertConfig::new("pay", RuleKind::DeadLetters)
                },
                AlertConfig {
                    threshold: Some(80.0),
                    ..AlertConfig::new("*", RuleKind::DiskFull)
                },
            ];
        },
        ..Setup::default()
    });
    let (s, b) = api.get("/v1/alerts/rules").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rules = b["rules"].as_array().unwrap();
    assert_eq!(
        rules.len(),
        8 + 2,
        "every rule for *, and pay's two own: {b}"
    );
    let find = |queue: &str, rule: &str| {
        rules
            .iter()
            .find(|r| r["queue"] == queue && r["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} for {queue}: {b}"))
            .clone()
    };
    let every = find("*", "queue_depth");
    assert_eq!(
        (&every["threshold"], &every["for_ms"], &every["enabled"]),
        (&json!(50.0), &json!(300_000), &json!(true))
    );
    let pay = find("pay", "queue_depth");
    assert_eq!(
        (&pay["threshold"], &pay["for_ms"]),
        (&json!(5.0), &json!(0))
    );
    assert_eq!(find("pay", "dead_letters")["enabled"], false);
    assert_eq!(find("*", "dead_letters")["enabled"], true);
    assert_eq!(find("*", "disk_full")["threshold"], 80.0);
    let growth = find("*", "store_growth");
    assert_eq!(
        (&growth["threshold"], &growth["window_ms"]),
        (&json!(1_073_741_824.0), &json!(3_600_000))
    );
}

#[tokio::test]
async fn a_silenced_alert_fires_untold_is_listed_so_and_is_told_once_unsilenced() {
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
    for i in 0..3 {
        api.enqueue("pay", json!({"kind": "charge", "payload": {"i": i}}))
            .await;
    }
    let now = errand_core::Clock::now(&*clock);
    let (s, b) = api
        .post(
            "/v1/alerts/silences",
            json!({"queue": "pay", "rule": "queue_depth", "duration_ms": 3_600_000,
                   "reason": "the nightly import"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["until"], now + 3_600_000);
    let (_, list) = api.get("/v1/alerts/silences").await;
    assert_eq!(
        list["silences"],
        json!([{"queue": "pay", "rule": "queue_depth", "until": now + 3_600_000}])
    );

    api.state.evaluate_alerts(true).await.unwrap();
    clock.advance(60_000);
    api.state.evaluate_alerts(true).await.unwrap();
    let f = firing(&api).await;
    assert_eq!(f.len(), 1, "it fires all the same: {f:?}");
    assert_eq!(f[0]["silenced_until"], now + 3_600_000);
    assert!(notices(&api).await.is_empty(), "but nobody is told");

    let (s, b) = api
        .call(
            axum::http::Method::DELETE,
            "/v1/alerts/silences/pay/queue_depth",
            None,
        )
        .await;
    assert_eq!((s, &b["count"]), (StatusCode::OK, &json!(1)), "{b}");
    api.state.evaluate_alerts(true).await.unwrap();
    let n = notices(&api).await;
    assert_eq!(n.len(), 1, "told now that the silence ended");
    assert_eq!(n[0]["type"], "alert.firing");

    // Both are in the audit log, with the reason.
    let (_, audit) = api.get("/v1/audit?limit=10").await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert!(
        actions.contains(&("alert.silence", "queue_depth@pay")),
        "{audit}"
    );
    assert!(
        actions.contains(&("alert.unsilence", "queue_depth@pay")),
        "{audit}"
    );
    assert!(audit.to_string().contains("the nightly import"));

    // Bad input names the field and silences nothing.
    for (body, field) in [
        (
            json!({"queue": "pay", "rule": "nope", "duration_ms": 1000}),
            "rule",
        ),
        (
            json!({"queue": "pay", "rule": "stalled", "duration_ms": 0}),
            "duration_ms",
        ),
        (
            json!({"queue": "errand.webhooks", "rule": "stalled", "duration_ms": 1000}),
            "queue",
        ),
    ] {
        let (s, b) = api.post("/v1/alerts/silences", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["error"]["field"], field);
    }
    let (_, list) = api.get("/v1/alerts/silences").await;
    assert_eq!(list["silences"], json!([]));
}
