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
        (("get", "/v1/audit"), Some(&[R][..])),
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
        let spans_queues =
            template.contains("{queue}") || ["/metrics", "/v1/audit"].contains(&template.as_str());
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
