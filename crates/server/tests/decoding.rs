//! Request decoding under arbitrary input: every route that takes a body answers any bytes and any JSON
//! with a status below 500 and an error in the API's format, and never panics (2,600 cases, about 200
//! per route); so do the listings for any query string (cursors, limits, filters: 1,500 cases) and the
//! job routes for any id; event cursors of any text parse or are refused. A body that is one valid
//! value followed by anything but whitespace is refused on every route and touches nothing.

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
        // One value and something after it.
        (json_value(), junk()).prop_map(|(v, junk)| [v.to_string().into_bytes(), junk].concat()),
    ]
}

/// JSON's whitespace, the only thing allowed around a body's one value.
const JSON_SPACE: &[u8] = b" \t\r\n";

/// What may follow a JSON value without being whitespace: a second value, a stray bracket or comma,
/// text, bytes; after optional whitespace.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    let not_space = |b: &Vec<u8>| b.iter().any(|c| !JSON_SPACE.contains(c));
    let tail = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::sample::select(vec!["]", "}", ",", ":", "[", "{", "\"", "0", "null"])
            .prop_map(|s| s.as_bytes().to_vec()),
        "\\PC{1,16}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..16),
    ]
    .prop_filter("not only whitespace", not_space);
    ("[ \t\r\n]{0,3}", tail).prop_map(|(space, tail)| [space.into_bytes(), tail].concat())
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

/// A body each route decodes (and acts on: each reaches the store), with `value` in a free-form field
/// where the route has one.
fn valid_body(route: usize, value: &Value) -> Value {
    use serde_json::json;
    match ROUTES[route].1 {
        "/v1/queues/q/jobs" => json!({"kind": "k", "payload": value}),
        "/v1/flows" => json!({
            "parent": {"queue": "q", "job": {"kind": "p", "payload": value}},
            "children": [{"queue": "q", "job": {"kind": "c"}}],
        }),
        "/v1/fetch" => json!({"queues": ["q"], "worker_id": "w"}),
        p if p.ends_with("/heartbeat") => json!({"lease_token": "t", "progress": value}),
        p if p.ends_with("/logs") => json!({"lease_token": "t", "lines": ["x"]}),
        p if p.ends_with("/complete") => json!({"lease_token": "t", "result": value}),
        p if p.ends_with("/fail") => json!({"lease_token": "t", "message": "m"}),
        p if p.ends_with("/release") => json!({"lease_token": "t"}),
        "/v1/ack" => json!({"acks": [{"outcome": "complete", "id": "01JAAAAAAAAAAAAAAAAAAAAAAA",
                                      "lease_token": "t", "result": value}]}),
        "/v1/queues/q/config" => json!({}),
        "/v1/queues/q/dead/replay" => json!({}),
        "/v1/queues/q/webhooks/w" => json!({"url": "https://hooks.example.com/h",
                                            "secret": "0123456789abcdef", "events": ["dead"]}),
        "/v1/schedules/s" => {
            json!({"cron": "0 0 1 1 *", "queue": "q", "kind": "k", "payload": value})
        }
        other => unreachable!("no valid body for {other}"),
    }
}

/// Store operations this node made so far, of every kind: the same before and after a request that
/// changed nothing (and read nothing).
fn store_operations(api: &Api) -> u64 {
    api.state
        .metrics
        .render(&[], &Default::default(), 0)
        .lines()
        .filter(|l| l.starts_with("errand_store_operation_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

async fn send(api: &Api, route: usize, body: Vec<u8>) -> (axum::http::StatusCode, Value) {
    let (method, path) = ROUTES[route];
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, answer, _) = api.raw(req).await;
    (status, answer)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// A body every route takes, followed by anything but whitespace (a second value, a bracket, text,
    /// bytes), is `400 invalid` naming `body`, and the server touches nothing: no store operation at
    /// all. Whitespace around the value is no junk, and without the junk the same body reaches the
    /// store, so the count would have seen it.
    #[test]
    fn a_valid_body_with_junk_after_it_is_refused_and_touches_nothing(
        route in 0..ROUTES.len(),
        value in json_value(),
        before in "[ \t\r\n]{0,3}",
        junk in junk(),
    ) {
        SERVER.with(|(rt, api)| rt.block_on(async {
            let (method, path) = ROUTES[route];
            let body = [before.as_bytes(), valid_body(route, &value).to_string().as_bytes()].concat();
            let ops = store_operations(api);
            let with_junk = [body.clone(), junk.clone()].concat();
            let (status, answer) = send(api, route, with_junk).await;
            prop_assert_eq!(status.as_u16(), 400, "{} {} {:?}: {}", method, path, String::from_utf8_lossy(&junk), answer);
            prop_assert_eq!(&answer["error"]["code"], "invalid", "{}", answer);
            prop_assert_eq!(&answer["error"]["field"], "body", "{}", answer);
            prop_assert_eq!(store_operations(api), ops, "{} {}: the refused body reached the store", method, path);

            let (status, answer) = send(api, route, [body, before.into_bytes()].concat()).await;
            prop_assert!(answer["error"]["field"] != "body", "{} {}: {} {}", method, path, status, answer);
            prop_assert!(store_operations(api) > ops, "{} {}: {} {}", method, path, status, answer);
            Ok(())
        }))?;
    }
}

/// The listing routes' query parameters, a name none of them knows, and text of any content.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("cursor"),
        Just("limit"),
        Just("state"),
        Just("kind"),
        Just("unique_key"),
        Just("error_contains"),
        Just("fingerprint"),
        Just("nonsense"),
    ];
    let value = prop_oneof![
        "\\PC{0,40}",
        "[0-9]{0,25}",
        "-?[0-9]{1,5}",
        "0[0-9A-Z]{25}",
        Just(String::new()),
    ];
    prop_oneof![
        prop::collection::vec((name, value), 0..4)
            .prop_map(|pairs| serde_urlencoded::to_string(pairs).unwrap()),
        // Not even well-formed: stray percent signs, separators, bytes.
        "[%&=a-z0-9\\x7f-\\u{ff}]{0,40}",
    ]
}

const LISTINGS: &[&str] = &[
    "/v1/queues/q/jobs",
    "/v1/queues/q/dead",
    "/v1/queues/q/dead/groups",
    "/v1/queues",
    "/v1/audit",
    "/v1/alerts",
    "/v1/workers",
    "/v1/schedules",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_500, ..ProptestConfig::default() })]

    /// Cursors, limits and filters of any text: a page or a 400 naming the parameter, never a 500.
    #[test]
    fn any_query_on_a_listing_is_answered_below_500(route in 0..LISTINGS.len(), q in query()) {
        SERVER.with(|(rt, api)| rt.block_on(async {
            let path = LISTINGS[route];
            let Ok(req) = Request::builder().uri(format!("{path}?{q}")).body(Body::empty()) else {
                // Not a URI at all: the HTTP layer refuses it before any route sees it.
                return Ok(());
            };
            let (status, answer, _) = api.raw(req).await;
            prop_assert!(status.as_u16() < 500, "{path}?{q}: {status} {answer}");
            if !status.is_success() {
                prop_assert!(answer["error"]["code"].is_string(), "{path}?{q}: {answer}");
            }
            Ok(())
        }))?;
    }

    /// A job id of any text in a path: the job, a 404 or a 400, never a 500.
    #[test]
    fn any_job_id_in_a_path_is_answered_below_500(id in "\\PC{1,40}", tail in 0..3usize) {
        SERVER.with(|(rt, api)| rt.block_on(async {
            let segment: String = url_escape(&id);
            let path = format!("/v1/jobs/{segment}{}", ["", "/logs", "/children"][tail]);
            let req = Request::builder().uri(&path).body(Body::empty()).unwrap();
            let (status, answer, _) = api.raw(req).await;
            prop_assert!(status.as_u16() < 500, "{path}: {status} {answer}");
            prop_assert!(status.is_success() || answer["error"]["code"].is_string(), "{path}: {answer}");
            Ok(())
        }))?;
    }

    /// Event cursors: any text is a cursor of this run, of another run, or none, without a panic; each
    /// cursor the server hands out reads back as itself.
    #[test]
    fn event_cursors_parse_or_are_refused(text in "\\PC{0,40}", seq in any::<u64>()) {
        SERVER.with(|(_, api)| {
            let events = &api.state.events;
            let _ = events.parse_cursor(&text);
            prop_assert_eq!(
                events.parse_cursor(&events.cursor(seq)),
                Some(errand_server::events::Cursor::After(seq))
            );
            Ok(())
        })?;
    }
}

/// Percent-encodes everything but unreserved characters, as a client puts text in a path segment.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
