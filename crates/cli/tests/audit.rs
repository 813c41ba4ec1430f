//! `errand audit` against real servers: one with every default, which must warn of what defaults leave
//! open and fail once a worker without a graceful shutdown shows up; and one configured as
//! `docs/AUDIT.md`'s production profile (`deploy/production/`), where every check that applies passes.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use errand_client::Client;
use errand_protocol::{
    AuditReport, EnqueueJob, FetchRequest, QueueConfig, Verdict, WebhookDef, WorkerReport,
};
use serde_json::json;
use support::{Running, free_port, serve, wait_ready};

fn audit(url: &str, key: Option<&str>, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_errand"));
    cmd.args(["audit", "--url", url])
        .env_remove("ERRAND_API_KEY");
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn report(out: &Output) -> AuditReport {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `(check id, subject)` → verdict.
fn verdicts(r: &AuditReport) -> BTreeMap<(String, String), Verdict> {
    r.checks
        .iter()
        .map(|c| ((c.id.clone(), c.subject.clone()), c.verdict))
        .collect()
}

fn fetch_reporting(queue: &str, worker: &str, concurrency: u32, drains: bool) -> FetchRequest {
    FetchRequest {
        queues: vec![queue.into()],
        worker_id: worker.into(),
        max_jobs: 1,
        wait_ms: 0,
        heartbeat_ms: None,
        report: Some(WorkerReport {
            sdk: "errand-rust".into(),
            version: "0.1.0".into(),
            concurrency,
            drains_on_sigterm: drains,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_server_gets_the_warnings_its_defaults_deserve_and_fails_on_a_bad_worker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = Running(serve(dir.path(), port));
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(&url).unwrap();
    wait_ready(&client).await;
    client
        .enqueue("mail", &EnqueueJob::new("send", json!({})))
        .await
        .unwrap();
    // Unique keys required, but held only while the job runs.
    client
        .set_queue_config(
            "keys",
            &QueueConfig {
                unique_window_ms: Some(errand_protocol::UniqueWindow::Ms(0)),
                policy: Some(errand_protocol::QueuePolicy {
                    require_unique_key: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // How full this machine's disk is decides one check, whatever the server's settings.
    let disk = errand_server::deployment::disk_verdict(
        errand_server::resources::disk(dir.path())
            .unwrap()
            .used_percent(),
    );
    let out = audit(&url, None, true);
    assert_eq!(
        out.status.success(),
        disk != Verdict::Fail,
        "no failure yet but the disk's: {out:?}"
    );
    let r = report(&out);
    let v = verdicts(&r);
    let server = |id: &str| v[&(id.to_string(), "server".to_string())];
    let mail = |id: &str| v[&(id.to_string(), "queue mail".to_string())];
    for id in [
        "server.auth",
        "server.log_format",
        "server.high_availability",
    ] {
        assert_eq!(server(id), Verdict::Warn, "{id}");
    }
    for id in ["server.durability", "server.tls"] {
        assert_eq!(server(id), Verdict::Pass, "{id}");
    }
    assert_eq!(server("server.disk"), disk);
    for id in [
        "queue.unique_key",
        "queue.payload_limit",
        "queue.dead_letter_route",
        "queue.max_waiting",
        "queue.workers",
    ] {
        assert_eq!(mail(id), Verdict::Warn, "{id}");
    }
    assert_eq!(
        v[&("queue.unique_window".to_string(), "queue keys".to_string())],
        Verdict::Warn
    );
    assert_eq!(
        v[&("queue.unique_key".to_string(), "queue keys".to_string())],
        Verdict::Pass
    );
    for id in [
        "queue.attempts",
        "queue.retention",
        "queue.max_stalled",
        "queue.dead_letters",
    ] {
        assert_eq!(mail(id), Verdict::Pass, "{id}");
    }
    assert!(
        r.checks
            .iter()
            .filter(|c| c.id == "alert.enabled")
            .all(|c| c.verdict == Verdict::Pass),
        "every built-in alert is on by default"
    );
    assert_eq!(r.fail, u32::from(disk == Verdict::Fail));
    assert!(
        r.checks
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
            .all(|c| c.fix.is_some() && !c.rows.is_empty()),
        "every warning says how to fix it and which AUDIT.md row it is"
    );
    // For people: a line per check, the fixes, and the counts.
    let text = audit(&url, None, false);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("WARN  queue mail: jobs may come without a unique_key"),
        "{text}"
    );
    assert!(
        text.contains("      fix: set \"policy\": {\"require_unique_key\": true}"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} pass, {} warn, {} fail",
            r.pass, r.warn, r.fail
        )),
        "{text}"
    );

    // A worker at concurrency 1 that does not drain on SIGTERM: a warning and a failure, exit 1.
    client
        .fetch(&fetch_reporting("mail", "lone", 1, false))
        .await
        .unwrap();
    let out = audit(&url, None, true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = report(&out);
    let v = verdicts(&r);
    let lone = |id: &str| v[&(id.to_string(), "worker lone".to_string())];
    assert_eq!(lone("worker.concurrency"), Verdict::Warn);
    assert_eq!(lone("worker.shutdown"), Verdict::Fail);
    assert_eq!(r.checks[0].verdict, Verdict::Fail, "failures first");
    assert_eq!(audit(&url, None, false).status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_profile_passes_every_check_that_applies() {
    let Some(pg) = errand_testkit::test_url().await else {
        return;
    };
    let schema = errand_testkit::TestSchema::new(&pg).await;
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/production");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // The profile's file as shipped; only where the database is and the port differ here.
    let _server = Running(
        Command::new(env!("CARGO_BIN_EXE_errand"))
            .arg("serve")
            .arg("--config")
            .arg(deploy.join("errand.toml"))
            .args(["--store", &pg, "--pg-schema", schema.name()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ERRAND_API_KEY", "audit-test-secret")
            .env("ERRAND_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::builder(&url)
        .api_key("audit-test-secret")
        .build()
        .unwrap();
    wait_ready(&client).await;
    let config: QueueConfig =
        serde_json::from_str(&std::fs::read_to_string(deploy.join("queue.json")).unwrap()).unwrap();
    for queue in ["payments", "refunds"] {
        client.set_queue_config(queue, &config).await.unwrap();
        client
            .put_webhook(
                queue,
                "dead-letters",
                &WebhookDef {
                    url: "https://ops.example.com/errand".into(),
                    secret: "a-signing-secret-of-the-ops-team".into(),
                    events: vec!["dead".into(), "alert".into()],
                },
            )
            .await
            .unwrap();
        client
            .fetch(&fetch_reporting(
                queue,
                &format!("{queue}-worker"),
                10,
                true,
            ))
            .await
            .unwrap();
    }
    // The profile's policy holds: a job without a unique key is refused.
    assert!(
        client
            .enqueue("payments", &EnqueueJob::new("charge", json!({})))
            .await
            .is_err()
    );

    let out = audit(&url, Some("audit-test-secret"), true);
    let r = report(&out);
    let not_passed: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| format!("{} {}: {}", c.id, c.subject, c.detail))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:#?}");
    assert!(out.status.success());
    let v = verdicts(&r);
    for (id, subject) in [
        ("server.auth", "server"),
        ("server.high_availability", "server"),
        ("server.log_format", "server"),
        ("queue.unique_key", "queue payments"),
        ("queue.unique_window", "queue payments"),
        ("queue.max_waiting", "queue refunds"),
        ("worker.shutdown", "worker payments-worker"),
    ] {
        assert_eq!(
            v.get(&(id.into(), subject.into())),
            Some(&Verdict::Pass),
            "{id} {subject}"
        );
    }
    // Without the key, no report: the audit names the keys.
    assert_eq!(audit(&url, None, true).status.code(), Some(5));
}
