//! Request decoding under arbitrary input: every route that takes a body answers any bytes and any JSON
//! with a status below 500 and an error in the API's format, and never panics (2,600 cases, about 200
//! per route).

#![allow(clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, header};
use proptest::prelude::*;
use serde_json::Value;
use support::Api;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "q",
            "k",
            "waiting",
            "01JAAAAAAAAAAAAAAAAAAAAAAA",
            "* * * * *",
            "UTC"
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "kind",
                    "payload",
                    "jobs",
                    "queues",
                    "worker_id",
                    "max_jobs",
                    "lease_token",
                    "message",
                    "result",
                    "cron",
                    "queue",
                    "url",
                    "secret",
                    "events",
                    "acks",
                    "outcome",
                    "id",
                    "delay_ms",
                    "priority",
                    "backoff",
                    "type",
                    "children",
                    "parent",
                    "max_attempts",
                    "rate_limit",
                    "x",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/queues/q/jobs"),
    ("POST", "/v1/flows"),
    ("POST", "/v1/fetch"),
    ("POST", "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/heartbeat"),
    ("POST", "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/logs"),
    ("POST", "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/complete"),
    ("POST", "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/fail"),
    ("POST", "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/release"),
    ("POST", "/v1/ack"),
    ("PUT", "/v1/queues/q/config"),
    ("POST", "/v1/queues/q/dead/replay"),
    ("PUT", "/v1/queues/q/webhooks/w"),
    ("PUT", "/v1/schedules/s"),
];

thread_local! {
    /// One server for every case: what a case writes (a job, a schedule) is input for the next.
    static SERVER: (tokio::runtime::Runtime, Api) = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let api = rt.block_on(async { Api::new() });
        (rt, api)
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_600, ..ProptestConfig::default() })]

    #[test]
    fn any_body_on_any_route_is_answered_below_500(route in 0..ROUTES.len(), bytes in body()) {
        SERVER.with(|(rt, api)| rt.block_on(async {
            let (method, path) = ROUTES[route];
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(bytes.clone()))
                .unwrap();
            let (status, answer, _) = api.raw(req).await;
            prop_assert!(status.as_u16() < 500, "{method} {path} {:?}: {status} {answer}", String::from_utf8_lossy(&bytes));
            if !status.is_success() {
                prop_assert!(answer["error"]["code"].is_string(), "{method} {path}: {answer}");
            }
            Ok(())
        }))?;
    }
}
