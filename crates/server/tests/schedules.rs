//! Cron schedules over HTTP: define, look, fire through the maintenance pass, pause, trigger, delete;
//! invalid definitions are a 400 naming the field; scopes and queue prefixes apply.

#![allow(clippy::unwrap_used)]

mod support;

use axum::http::{Method, StatusCode};
use errand_protocol::code;
use errand_server::auth::Scope;
use serde_json::json;

use support::{Api, Setup, assert_error};

#[tokio::test]
async fn a_schedule_is_defined_fires_through_maintenance_and_is_managed() {
    let api = Api::with(Setup {
        manual_clock: true,
        ..Default::default()
    });
    // The support's manual clock starts at 2023-11-14 22:13:20 UTC.
    let clock = api.clock.clone().unwrap();
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/schedules/nightly",
            Some(json!({
                "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                "queue": "reports", "kind": "daily.report", "payload": {"full": true},
                "missed": "catch_up_one", "max_attempts": 5
            })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // 03:00 in Berlin (CET, UTC+1) is 02:00 UTC: the next one after 22:13 UTC on the 14th.
    let first = 1_700_013_600_000; // 2023-11-15 02:00:00 UTC
    assert_eq!(b["next_runs"][0], json!(first));
    assert_eq!(b["next_runs"].as_array().unwrap().len(), 5);
    assert_eq!(b["next_runs"][1], json!(first + 86_400_000));
    assert_eq!(b["missed"], "catch_up_one");
    assert_eq!(b["paused"], false);

    let (s, b) = api.get("/v1/schedules").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["schedules"][0]["name"], "nightly");

    // The tick fires through the server's maintenance pass: one job, with the tick's unique key.
    clock.set(first);
    let report = api.state.engine.maintain().await.unwrap();
    assert_eq!(report.scheduled, 1);
    let (_, b) = api.get("/v1/schedules/nightly").await;
    assert_eq!(b["last_run_at"], json!(first));
    let id = b["last_job_id"].as_str().unwrap().to_string();
    let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["kind"], "daily.report");
    assert_eq!(job["payload"], json!({"full": true}));
    assert_eq!(job["max_attempts"], 5);
    assert_eq!(job["unique_key"], format!("schedule:nightly:{first}"));

    // Pause, trigger (a job at once), resume, delete.
    let (s, b) = api
        .call(Method::POST, "/v1/schedules/nightly/pause", None)
        .await;
    assert_eq!((s, b["paused"].clone()), (StatusCode::OK, json!(true)));
    let (s, b) = api
        .call(Method::POST, "/v1/schedules/nightly/trigger", None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["state"], "waiting");
    let (_, q) = api.get("/v1/queues/reports").await;
    assert_eq!(q["counts"]["waiting"], 2);
    let (s, b) = api
        .call(Method::POST, "/v1/schedules/nightly/resume", None)
        .await;
    assert_eq!((s, b["paused"].clone()), (StatusCode::OK, json!(false)));
    let (s, b) = api
        .call(Method::DELETE, "/v1/schedules/nightly", None)
        .await;
    assert_eq!((s, b["name"].clone()), (StatusCode::OK, json!("nightly")));
    let got = api.get("/v1/schedules/nightly").await;
    assert_error(&got, StatusCode::NOT_FOUND, code::NOT_FOUND, None);
}

#[tokio::test]
async fn an_invalid_schedule_is_a_400_naming_the_field_and_writes_nothing() {
    let api = Api::new();
    let ok = json!({"cron": "@hourly", "queue": "q", "kind": "k"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("cron", json!("* * *")), "cron"),
        (with("cron", json!("0 0 30 2 *")), "cron"),
        (with("cron", json!("61 * * * *")), "cron"),
        (with("timezone", json!("Europe/Atlantis")), "timezone"),
        (with("queue", json!("has space")), "queue"),
        (with("kind", json!("")), "kind"),
        (with("missed", json!("sometimes")), "missed"),
        (with("priorty", json!(1)), "priorty"),
        (with("max_attempts", json!(0)), "max_attempts"),
    ];
    for (body, field) in cases {
        let got = api
            .call(Method::PUT, "/v1/schedules/s", Some(body.clone()))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some(field));
    }
    let got = api
        .call(Method::PUT, "/v1/schedules/bad%20name", Some(ok))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, code::INVALID, Some("name"));
    let (_, b) = api.get("/v1/schedules").await;
    assert_eq!(b["schedules"], json!([]), "nothing written");
}

#[tokio::test]
async fn schedules_follow_scopes_and_queue_prefixes() {
    let api = Api::with(Setup {
        keys: vec![
            Api::key("admin", &[Scope::Admin, Scope::Read], &[]),
            Api::key("billing-admin", &[Scope::Admin, Scope::Read], &["billing."]),
            Api::key("producer", &[Scope::Produce], &[]),
            Api::key("reader", &[Scope::Read], &[]),
        ],
        ..Default::default()
    });
    let def = |queue: &str| Some(json!({"cron": "@daily", "queue": queue, "kind": "k"}));
    let admin = api.as_key("admin");
    assert_eq!(
        admin
            .call(Method::PUT, "/v1/schedules/mail", def("mail"))
            .await,
        StatusCode::OK
    );
    let billing = api.as_key("billing-admin");
    assert_eq!(
        billing
            .call(Method::PUT, "/v1/schedules/inv", def("billing.invoices"))
            .await,
        StatusCode::OK
    );
    // Not its queue: neither a new schedule there, nor taking over one.
    assert_eq!(
        billing
            .call(Method::PUT, "/v1/schedules/x", def("mail"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        billing
            .call(Method::PUT, "/v1/schedules/mail", def("billing.x"))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        billing
            .call(Method::DELETE, "/v1/schedules/mail", None)
            .await,
        StatusCode::FORBIDDEN
    );
    let (_, b) = api
        .call_as(Some("billing-admin"), Method::GET, "/v1/schedules", None)
        .await;
    assert_eq!(b["schedules"].as_array().unwrap().len(), 1, "only its own");

    // read looks but does not change; produce triggers.
    let reader = api.as_key("reader");
    assert_eq!(
        reader.call(Method::GET, "/v1/schedules/mail", None).await,
        StatusCode::OK
    );
    assert_eq!(
        reader
            .call(Method::POST, "/v1/schedules/mail/pause", None)
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        reader
            .call(Method::POST, "/v1/schedules/mail/trigger", None)
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.as_key("producer")
            .call(Method::POST, "/v1/schedules/mail/trigger", None)
            .await,
        StatusCode::CREATED
    );
    let got = api.call_as(None, Method::GET, "/v1/schedules", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, None);
}
