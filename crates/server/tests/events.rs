//! `GET /v1/events` over a real socket: job state changes as Server-Sent Events, filtered, and resumed
//! from a cursor without a gap; a graceful shutdown ends the stream.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use errand_testkit::TestServer;
use serde_json::{Value, json};

/// Reads SSE events (`(event type, id, data)`) from `resp` until `n` arrived (or 10 s passed).
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("the stream goes on");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.into();
                }
            }
            if !event.is_empty() {
                out.push((event, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

async fn enqueue(c: &reqwest::Client, base: &str, queue: &str, kind: &str) -> String {
    let text = c
        .post(format!("{base}/v1/queues/{queue}/jobs"))
        .header("content-type", "application/json")
        .body(json!({"kind": kind, "payload": {}}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    r["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn events_stream_filtered_and_resume_from_a_cursor() {
    let server = TestServer::start().await;
    let base = server.url();
    let c = reqwest::Client::new();
    let mut all = c.get(format!("{base}/v1/events")).send().await.unwrap();
    assert_eq!(all.status(), 200);
    assert!(
        all.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut only_a = c
        .get(format!("{base}/v1/events?queue=a&kind=send"))
        .send()
        .await
        .unwrap();
    // Streams answer at once; events come as they happen.
    let a1 = enqueue(&c, &base, "a", "send").await;
    enqueue(&c, &base, "b", "send").await;
    enqueue(&c, &base, "a", "other").await;
    let a2 = enqueue(&c, &base, "a", "send").await;

    let got = read_events(&mut only_a, 2).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|e| e.2["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    assert!(got.iter().all(|e| e.0 == "job" && e.2["to"] == "waiting"));
    assert!(
        got[0].2.get("from").is_none(),
        "just enqueued: {}",
        got[0].2
    );
    assert_eq!(got[0].1, got[0].2["cursor"]);

    let every = read_events(&mut all, 4).await;
    assert_eq!(every.len(), 4);
    let cursor = &every[1].1;

    // Resuming after the second event gives the third and fourth, and what happens next.
    let mut resumed = c
        .get(format!("{base}/v1/events?after={cursor}"))
        .send()
        .await
        .unwrap();
    let a3 = enqueue(&c, &base, "a", "send").await;
    let got = read_events(&mut resumed, 3).await;
    assert_eq!(got[0].2, every[2].2);
    assert_eq!(got[1].2, every[3].2);
    assert_eq!(got[2].2["job_id"], a3.as_str());
    // The standard header does the same.
    let mut by_header = c
        .get(format!("{base}/v1/events"))
        .header("Last-Event-ID", &every[2].1)
        .send()
        .await
        .unwrap();
    assert_eq!(read_events(&mut by_header, 1).await[0].2, every[3].2);

    // A cursor from another run of the server: told that events were missed, then given what is kept.
    let mut stale = c
        .get(format!("{base}/v1/events?after=0.5"))
        .send()
        .await
        .unwrap();
    let got = read_events(&mut stale, 2).await;
    assert_eq!(got[0].0, "missed");
    assert_eq!(got[1].2, every[0].2);

    let bad = c
        .get(format!("{base}/v1/events?after=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = serde_json::from_str(&bad.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["field"], "after");

    // A graceful shutdown ends open streams instead of waiting for them.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not wait for event streams");
    drop((all, only_a, resumed, by_header, stale));
}
