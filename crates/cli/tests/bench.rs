//! `errand bench` runs every scenario on both stores, prints one JSON object per result, and checks
//! that every job ran exactly once: on the embedded store with the server in a process of its own (the
//! default), on PostgreSQL with the server in the bench's process (`--in-process`).

#![allow(clippy::unwrap_used)]

use serde_json::Value;

async fn bench(store: &str, extra: &[&str]) -> Vec<Value> {
    let store = store.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
            .args([
                "bench",
                "all",
                "--jobs",
                "400",
                "--backlog",
                "12000",
                "--rate",
                "400",
            ])
            .args([
                "--concurrency",
                "8",
                "--workers",
                "2",
                "--batch",
                "100",
                "--json",
            ])
            .args(["--store", &store])
            .args(&extra)
            .env_remove("ERRAND_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(results: &[Value], store: &str, server: &str) {
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "enqueue-single",
            "enqueue-batch",
            "drain",
            "latency",
            "backlog",
            "backlog"
        ]
    );
    for r in results {
        assert_eq!(r["store"], store);
        assert_eq!(r["server"], server);
        assert!(r["jobs_per_s"].as_f64().unwrap() > 0.0 && r["seconds"].as_f64().unwrap() > 0.0);
        assert!(r["cores"].as_u64().unwrap() >= 1);
    }
    let latency = &results[3];
    for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(latency[k].as_f64().is_some(), "{k} in {latency}");
    }
    assert_eq!(results[5]["waiting"], 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_on_the_embedded_store() {
    check(&bench("sqlite", &[]).await, "sqlite", "process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_on_postgres() {
    let Some(url) = errand_testkit::test_url().await else {
        return;
    };
    check(
        &bench(&url, &["--in-process"]).await,
        "postgres",
        "in-process",
    );
}
