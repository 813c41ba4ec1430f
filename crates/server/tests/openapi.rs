//! `/openapi.json` is OpenAPI 3.1 and describes exactly the routes the router serves.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use support::Api;

/// Every route, as a user would list them from `docs/API.md`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/queues/{queue}/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("get", "/v1/jobs/{id}/logs"),
    ("post", "/v1/jobs/{id}/logs"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/retry"),
    ("post", "/v1/jobs/{id}/promote"),
    ("post", "/v1/fetch"),
    ("get", "/metrics"),
    ("get", "/v1/events"),
    ("get", "/v1/whoami"),
    ("get", "/v1/queues/{queue}/dead/groups"),
    ("get", "/v1/queues/{queue}/flow"),
    ("get", "/v1/alerts"),
    ("get", "/v1/alerts/rules"),
    ("get", "/v1/alerts/silences"),
    ("post", "/v1/alerts/silences"),
    ("delete", "/v1/alerts/silences/{queue}/{rule}"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/report"),
    ("get", "/v1/workers"),
    ("get", "/v1/activity"),
    ("post", "/v1/jobs/{id}/heartbeat"),
    ("post", "/v1/jobs/{id}/complete"),
    ("post", "/v1/jobs/{id}/fail"),
    ("post", "/v1/jobs/{id}/release"),
    ("post", "/v1/ack"),
    ("get", "/v1/queues"),
    ("get", "/v1/queues/{queue}"),
    ("post", "/v1/queues/{queue}/pause"),
    ("post", "/v1/queues/{queue}/resume"),
    ("get", "/v1/queues/{queue}/config"),
    ("put", "/v1/queues/{queue}/config"),
    ("get", "/v1/queues/{queue}/jobs"),
    ("get", "/v1/queues/{queue}/dead"),
    ("delete", "/v1/queues/{queue}/dead"),
    ("post", "/v1/queues/{queue}/dead/replay"),
    ("post", "/v1/flows"),
    ("get", "/v1/jobs/{id}/children"),
    ("get", "/v1/jobs/{id}/wait"),
    ("get", "/v1/queues/{queue}/webhooks"),
    ("put", "/v1/queues/{queue}/webhooks/{name}"),
    ("delete", "/v1/queues/{queue}/webhooks/{name}"),
    ("get", "/v1/schedules"),
    ("get", "/v1/schedules/{name}"),
    ("put", "/v1/schedules/{name}"),
    ("delete", "/v1/schedules/{name}"),
    ("post", "/v1/schedules/{name}/pause"),
    ("post", "/v1/schedules/{name}/resume"),
    ("post", "/v1/schedules/{name}/trigger"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
];

#[tokio::test]
async fn the_description_lists_every_route_the_router_serves_and_no_other() {
    let api = Api::new();
    let (s, doc) = api.get("/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                described.insert((method.clone(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(described, listed);

    // And the router serves each: never its "no such route" or "wrong method" answer.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{queue}", "q")
            .replace("{name}", "s")
            .replace("{id}", "01JAAAAAAAAAAAAAAAAAAAAAAA");
        let method: Method = method.to_uppercase().parse().unwrap();
        let (s, b) = api.call(method.clone(), &concrete, Some(json!({}))).await;
        assert_ne!(
            s,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}: {b}"
        );
        assert_ne!(
            b["error"]["message"], "no such route",
            "{method} {concrete}"
        );
    }
}

#[tokio::test]
async fn every_described_error_uses_the_error_schema_and_every_schema_is_defined() {
    let api = Api::new();
    let (_, doc) = api.get("/openapi.json").await;
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    // Every $ref points at a defined schema.
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "{name} is referenced but not defined"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') && path.starts_with("/v1") {
                    let schema: &Value = &resp["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
