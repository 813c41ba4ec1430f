//! The security matrix over every route the OpenAPI description lists: 401 without a key, 403 for a key
//! without the route's scope or outside its queue prefixes, 413 for an oversized body, and 400 (never
//! a crash) for JSON nested beyond the parser's depth limit. A route added without an entry in the
//! matrix fails the test.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use errand_protocol::code;
use errand_server::auth::Scope;
use serde_json::json;
use support::{Api, Setup};

/// Who may call each route: `None` needs no key; otherwise the scopes any one of which suffices
/// (`admin` has every scope).
fn matrix() -> BTreeMap<(&'static str, &'static str), Option<&'static [Scope]>> {
    use Scope::{Produce as P, Read as R, Work as W};
    const ANY: &[Scope] = &[Scope::Produce, Scope::Work, Scope::Read];
    let admin: &'static [Scope] = &[];
    BTreeMap::from([
        (("get", "/health/live"), None),
        (("get", "/health/ready"), None),
        (("get", "/v1/whoami"), Some(ANY)),
        (("post", "/v1/queues/{queue}/jobs"), Some(&[P][..])),
        (("post", "/v1/flows"), Some(&[P][..])),
        (("get", "/v1/jobs/{id}"), Some(&[R, P][..])),
        (("get", "/v1/jobs/{id}/logs"), Some(&[R, P][..])),
        (("get", "/v1/jobs/{id}/wait"), Some(&[R, P][..])),
        (("get", "/v1/jobs/{id}/children"), Some(&[R, P, W][..])),
        (("post", "/v1/jobs/{id}/cancel"), Some(&[P][..])),
        (("post", "/v1/jobs/{id}/retry"), Some(admin)),
        (("post", "/v1/jobs/{id}/promote"), Some(admin)),
        (("post", "/v1/fetch"), Some(&[W][..])),
        (("post", "/v1/jobs/{id}/heartbeat"), Some(&[W][..])),
        (("post", "/v1/jobs/{id}/logs"), Some(&[W][..])),
        (("post", "/v1/jobs/{id}/complete"), Some(&[W][..])),
        (("post", "/v1/jobs/{id}/fail"), Some(&[W][..])),
        (("post", "/v1/jobs/{id}/release"), Some(&[W][..])),
        (("post", "/v1/ack"), Some(&[W][..])),
        (("get", "/v1/queues"), Some(&[R][..])),
        (("get", "/v1/queues/{queue}"), Some(&[R][..])),
        (("post", "/v1/queues/{queue}/pause"), Some(admin)),
        (("post", "/v1/queues/{queue}/resume"), Some(admin)),
        (("get", "/v1/queues/{queue}/config"), Some(&[R][..])),
        (("put", "/v1/queues/{queue}/config"), Some(admin)),
        (("get", "/v1/queues/{queue}/jobs"), Some(&[R][..])),
        (("get", "/v1/queues/{queue}/dead"), Some(&[R][..])),
        (("get", "/v1/queues/{queue}/dead/groups"), Some(&[R][..])),
        (("post", "/v1/queues/{queue}/dead/replay"), Some(admin)),
        (("delete", "/v1/queues/{queue}/dead"), Some(admin)),
        (("get", "/v1/queues/{queue}/webhooks"), Some(admin)),
        (("put", "/v1/queues/{queue}/webhooks/{name}"), Some(admin)),
        (
            ("delete", "/v1/queues/{queue}/webhooks/{name}"),
            Some(admin),
        ),
        (("get", "/v1/queues/{queue}/flow"), Some(&[R][..])),
        (("get", "/v1/schedules"), Some(&[R][..])),
        (("get", "/v1/schedules/{name}"), Some(&[R][..])),
        (("put", "/v1/schedules/{name}"), Some(admin)),
        (("delete", "/v1/schedules/{name}"), Some(admin)),
        (("post", "/v1/schedules/{name}/pause"), Some(admin)),
        (("post", "/v1/schedules/{name}/resume"), Some(admin)),
        (("post", "/v1/schedules/{name}/trigger"), Some(&[P][..])),
        (("get", "/metrics"), Some(&[R][..])),
        (("get", "/v1/events"), Some(&[R][..])),
        (("get", "/v1/workers"), Some(&[R][..])),
        (("get", "/v1/alerts"), Some(&[R][..])),
        (("get", "/v1/alerts/rules"), Some(&[R][..])),
        (("get", "/v1/alerts/silences"), Some(&[R][..])),
        (("post", "/v1/alerts/silences"), Some(admin)),
        (
            ("delete", "/v1/alerts/silences/{queue}/{rule}"),
            Some(admin),
        ),
        (("get", "/v1/activity"), Some(&[R][..])),
        (("get", "/v1/audit"), Some(&[R][..])),
        (("get", "/v1/audit/report"), Some(admin)),
    ])
}

fn api() -> Api {
    let mut keys: Vec<_> = Scope::ALL
        .iter()
        .map(|s| Api::key(s.as_str(), &[*s], &[]))
        .collect();
    keys.push(Api::key("elsewhere", &[Scope::Admin], &["other."]));
    Api::with(Setup {
        keys,
        tweak: |c| c.max_body_bytes = 64 << 10,
        ..Setup::default()
    })
}

fn concrete(path: &str) -> String {
    path.replace("{queue}", "q")
        .replace("{name}", "s")
        .replace("{id}", "01JAAAAAAAAAAAAAAAAAAAAAAA")
}

/// Every route the description lists, as `(method, path template, takes a body)`.
async fn described(api: &Api) -> Vec<(String, String, bool)> {
    let (_, doc) = api.call_as(None, Method::GET, "/openapi.json", None).await;
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                let body = op.get("requestBody").is_some();
                out.push((method.clone(), path.clone(), body));
            }
        }
    }
    out
}

async fn routes(api: &Api) -> Vec<(String, String)> {
    described(api)
        .await
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect()
}

#[tokio::test]
async fn every_route_refuses_callers_without_a_key_or_the_scope_and_the_matrix_is_complete() {
    let api = api();
    let matrix = matrix();
    let routes = routes(&api).await;
    let listed: Vec<(String, String)> = matrix
        .keys()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let mut described = routes.clone();
    described.sort();
    assert_eq!(
        described, listed,
        "every described route has a line in the matrix"
    );

    // The description says which routes need no key: exactly those the matrix opens to all.
    let (_, doc) = api.call_as(None, Method::GET, "/openapi.json", None).await;
    for ((method, path), allowed) in &matrix {
        let security = &doc["paths"][*path][*method]["security"];
        let open = security
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r == &json!({})));
        assert_eq!(open, allowed.is_none(), "{method} {path}: {security}");
    }

    let mut checked = 0;
    for (method, template) in &routes {
        let allowed = matrix[&(method.as_str(), template.as_str())];
        let path = concrete(template);
        let m: Method = method.to_uppercase().parse().unwrap();
        let body = Some(json!({}));
        let (s, b) = api.call_as(None, m.clone(), &path, body.clone()).await;
        match allowed {
            None => assert!(
                s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                "{m} {path}: {s}"
            ),
            Some(_) => {
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {path} without a key: {b}");
                assert_eq!(b["error"]["code"], code::UNAUTHORIZED, "{m} {path}");
            }
        }
        let (s, _) = api
            .call_as(Some("not-a-key"), m.clone(), &path, body.clone())
            .await;
        if allowed.is_some() {
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{m} {path} with an unknown key"
            );
        }
        for scope in Scope::ALL {
            let (s, b) = api
                .call_as(Some(scope.as_str()), m.clone(), &path, body.clone())
                .await;
            let may = match allowed {
                None => true,
                Some(scopes) => scope == Scope::Admin || scopes.contains(&scope),
            };
            if may {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{m} {path} as {}: {s} {b}",
                    scope.as_str()
                );
            } else {
                assert_eq!(
                    s,
                    StatusCode::FORBIDDEN,
                    "{m} {path} as {}: {b}",
                    scope.as_str()
                );
                assert_eq!(b["error"]["code"], code::FORBIDDEN);
            }
            checked += 1;
        }
        // An admin key limited to other queues may not touch queue `q`, nor read what spans every
        // queue.
        let spans_queues = template.contains("{queue}")
            || ["/metrics", "/v1/audit", "/v1/audit/report", "/v1/activity"]
                .contains(&template.as_str());
        if spans_queues {
            let (s, b) = api.call_as(Some("elsewhere"), m.clone(), &path, body).await;
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{m} {path} outside the key's prefixes: {b}"
            );
        }
    }
    assert!(checked >= 4 * 45, "{checked}");
}

#[tokio::test]
async fn every_route_taking_a_body_refuses_an_oversized_one_with_413() {
    let api = api();
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(65 << 10));
    let mut checked = 0;
    for (method, template, body) in described(&api).await {
        if !body {
            continue;
        }
        let req = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(concrete(&template))
            .header(header::AUTHORIZATION, "Bearer admin")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(big.clone()))
            .unwrap();
        let (s, b, _) = api.raw(req).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{method} {template}: {b}");
        assert_eq!(b["error"]["code"], code::TOO_LARGE, "{method} {template}");
        checked += 1;
    }
    assert!(checked >= 12, "{checked}");
}

#[tokio::test]
async fn json_nested_beyond_the_depth_limit_is_a_400_not_a_crash() {
    let api = api();
    // The engine's limit is 64 levels; the parser's own, 128, stops deeper input before it is built.
    for depth in [65, 200, 30_000] {
        let payload = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!("{{\"kind\":\"k\",\"payload\":{payload}}}");
        let req = Request::post("/v1/queues/q/jobs")
            .header(header::AUTHORIZATION, "Bearer produce")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let (s, b, _) = api.raw(req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "depth {depth}: {b}");
        assert_eq!(b["error"]["code"], code::INVALID);
    }
    // Within the limit it is a job like any other.
    let payload = format!("{}{}", "[".repeat(63), "]".repeat(63));
    let body = format!("{{\"kind\":\"k\",\"payload\":{payload}}}");
    let req = Request::post("/v1/queues/q/jobs")
        .header(header::AUTHORIZATION, "Bearer produce")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    assert_eq!(api.raw(req).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_over_its_request_rate_gets_429_with_retry_after() {
    let api = Api::with(Setup {
        manual_clock: true,
        keys: vec![
            Api::key("limited", &[Scope::Read], &[]).with_rate(2, 2),
            Api::key("free", &[Scope::Read], &[]),
        ],
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    let get = |key: &'static str| {
        Request::get("/v1/queues")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(api.raw(get("limited")).await.0, StatusCode::OK);
    }
    let (s, b, headers) = api.raw(get("limited")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], code::RATE_LIMITED);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    // Another key is not held back by this one.
    for _ in 0..5 {
        assert_eq!(api.raw(get("free")).await.0, StatusCode::OK);
    }
    clock.advance(499);
    assert_eq!(
        api.raw(get("limited")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(1);
    assert_eq!(
        api.raw(get("limited")).await.0,
        StatusCode::OK,
        "a token every 500 ms"
    );
}

#[tokio::test]
async fn auth_failures_reach_the_audit_log_at_a_bounded_rate_and_never_the_secret() {
    let api = Api::with(Setup {
        manual_clock: true,
        keys: vec![
            Api::key("reader", &[Scope::Read], &[]),
            Api::key("boss", &[Scope::Admin], &[]),
            Api::key("narrow", &[Scope::Admin], &["mine."]),
        ],
        ..Setup::default()
    });
    let clock = api.clock.clone().unwrap();
    let get = Method::GET;
    // One of each: no key, a malformed header, an unknown key, a missing scope, a queue outside the
    // key's prefixes, and a listing of every queue for a prefix-limited key.
    let canary = "s3cret-canary-4f9d";
    assert_eq!(
        api.call_as(None, get.clone(), "/v1/queues", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let basic = Request::get("/v1/queues")
        .header(header::AUTHORIZATION, format!("Basic {canary}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(basic).await.0, StatusCode::UNAUTHORIZED);
    let unknown = api
        .call_as(Some(canary), get.clone(), "/v1/queues", None)
        .await;
    assert_eq!(unknown.0, StatusCode::UNAUTHORIZED);
    let pause = api
        .call_as(Some("reader"), Method::POST, "/v1/queues/q/pause", None)
        .await;
    assert_eq!(pause.0, StatusCode::FORBIDDEN);
    let other = api
        .call_as(
            Some("narrow"),
            get.clone(),
            "/v1/queues/other/jobs?state=waiting",
            None,
        )
        .await;
    assert_eq!(other.0, StatusCode::FORBIDDEN);
    let audit = api
        .call_as(Some("narrow"), get.clone(), "/v1/audit", None)
        .await;
    assert_eq!(audit.0, StatusCode::FORBIDDEN);

    let (s, page) = api
        .call_as(Some("boss"), get.clone(), "/v1/audit?limit=100", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let seen: Vec<(String, String, String, u64)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            assert_eq!(e["action"], "auth.denied");
            assert_eq!(e["detail"]["skipped"], 0);
            (
                e["key"].as_str().unwrap().to_string(),
                e["detail"]["reason"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
                e["detail"]["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect =
        |k: &str, r: &str, t: &str, s: u64| (k.to_string(), r.to_string(), t.to_string(), s);
    assert_eq!(
        seen,
        [
            expect("", "missing_key", "GET /v1/queues", 401),
            expect("", "malformed_header", "GET /v1/queues", 401),
            expect("", "unknown_key", "GET /v1/queues", 401),
            expect("reader", "scope", "POST /v1/queues/{queue}/pause", 403),
            expect("narrow", "queue", "GET /v1/queues/{queue}/jobs", 403),
            expect("narrow", "every_queue", "GET /v1/audit", 403),
        ]
    );
    assert!(
        !page.to_string().contains(canary),
        "the secret reached the audit log"
    );

    // A flood of unknown keys: the burst of callers without a key (20, three used above) is written,
    // the rest only counted, and the next record, a second later, says how many were left out. A
    // real key's refusal still gets through.
    for n in 0..100 {
        let key = format!("guess-{n}");
        assert_eq!(
            api.call_as(Some(&key), get.clone(), "/v1/queues", None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let late = api
        .call_as(Some("reader"), Method::POST, "/v1/queues/q/pause", None)
        .await;
    assert_eq!(late.0, StatusCode::FORBIDDEN);
    clock.advance(1_000);
    assert_eq!(
        api.call_as(Some("guess-x"), get.clone(), "/v1/queues", None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (_, page) = api
        .call_as(Some("boss"), get.clone(), "/v1/audit?limit=1000", None)
        .await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6 + 17 + 1 + 1, "{page}");
    assert_eq!(entries[0]["detail"]["skipped"], 83);
    assert_eq!(entries[1]["key"], "reader");
    assert!(
        !page.to_string().contains("guess-"),
        "a presented key reached the audit log"
    );
    let (_, metrics) = api.call_as(Some("boss"), get, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("errand_auth_denied_total{reason=\"unknown_key\"} 102"),
        "every failure is counted"
    );
}

/// The order of the checks is part of the answer: the key (401), then what a route reads of its path
/// and query (400), then the scope and the queue (403), then the body and the rest (400, 404). Pinned
/// when every route's scope check moved into the `Authorized` extractor.
#[tokio::test]
async fn checks_answer_in_the_same_order_on_every_route() {
    let api = Api::with(Setup {
        keys: vec![
            Api::key("reader", &[Scope::Read], &[]),
            Api::key("producer", &[Scope::Produce], &[]),
            Api::key("narrow", &[Scope::Read], &["a."]),
        ],
        ..Setup::default()
    });
    let call = |method: Method, key: &str, uri: &str, body: Option<&str>| {
        let mut req = Request::builder().method(method).uri(uri);
        if !key.is_empty() {
            req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        req.body(body).unwrap()
    };
    let twice = "/v1/queues/a.q/jobs?state=dead&state=dead";
    let cases = [
        (
            Method::GET,
            "",
            twice,
            None,
            StatusCode::UNAUTHORIZED,
            "missing_key",
        ),
        (
            Method::GET,
            "producer",
            twice,
            None,
            StatusCode::BAD_REQUEST,
            "state",
        ),
        (
            Method::GET,
            "narrow",
            "/v1/queues/b/jobs?state=dead&state=dead",
            None,
            StatusCode::BAD_REQUEST,
            "state",
        ),
        (
            Method::GET,
            "narrow",
            "/v1/queues/b/jobs?state=dead",
            None,
            StatusCode::FORBIDDEN,
            "queue",
        ),
        (
            Method::GET,
            "producer",
            "/v1/queues/%FF/jobs?state=dead",
            None,
            StatusCode::BAD_REQUEST,
            "path",
        ),
        (
            Method::GET,
            "producer",
            "/v1/audit?limit=1&limit=2",
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "narrow",
            "/v1/audit?limit=x",
            None,
            StatusCode::FORBIDDEN,
            "every_queue",
        ),
        (
            Method::GET,
            "producer",
            "/v1/jobs/not-an-id",
            None,
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Method::POST,
            "producer",
            "/v1/jobs/not-an-id/retry",
            None,
            StatusCode::FORBIDDEN,
            "scope",
        ),
        (
            Method::GET,
            "reader",
            "/v1/jobs/%FF",
            None,
            StatusCode::BAD_REQUEST,
            "path",
        ),
        (
            Method::PUT,
            "reader",
            "/v1/queues/%FF/config",
            Some("{"),
            StatusCode::FORBIDDEN,
            "scope",
        ),
        (
            Method::PUT,
            "reader",
            "/v1/schedules/s",
            Some("{"),
            StatusCode::FORBIDDEN,
            "scope",
        ),
        (
            Method::POST,
            "reader",
            "/v1/queues/a.q/jobs",
            Some("{"),
            StatusCode::FORBIDDEN,
            "scope",
        ),
        (
            Method::GET,
            "producer",
            "/v1/schedules/nope",
            None,
            StatusCode::FORBIDDEN,
            "scope",
        ),
        (
            Method::GET,
            "reader",
            "/v1/schedules/nope",
            None,
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (method, key, uri, body, status, why) in cases {
        let what = format!("{method} {uri} as {key:?}");
        let (s, b, _) = api.raw(call(method, key, uri, body)).await;
        assert_eq!(s, status, "{what}: {b}");
        match s {
            StatusCode::BAD_REQUEST => assert_eq!(b["error"]["field"], why, "{what}: {b}"),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                assert!(b["error"]["message"].is_string(), "{what}: {b}");
                let reason = match why {
                    "missing_key" => "an API key is required",
                    "scope" => "lacks the scope",
                    "queue" => "may not use queue",
                    _ => "is limited to some queues",
                };
                assert!(
                    b["error"]["message"].as_str().unwrap().contains(reason),
                    "{what}: {b}"
                );
            }
            _ => {}
        }
    }
}
