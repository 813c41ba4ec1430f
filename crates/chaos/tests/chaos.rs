//! The crash loop (issue 8), CI-sized: `errand-chaos run` starts the real server binary and four worker
//! processes, kills a worker every 3 s and a server node every 15 s (SQLite) or 10 s (PostgreSQL, two
//! nodes), pauses lease holders with SIGSTOP past their leases, and then checks the history: no
//! acknowledged enqueue lost, no job completed twice, no completion accepted from a superseded lease,
//! every job finished within 60 s of the chaos ending. The checker's own tests (`history.rs`) show it
//! catches each of those. A soak is the same command with bigger numbers.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `errand` binary the loop runs: `ERRAND_BIN` if set, else the one cargo built next to this test
/// (`target/<profile>/errand`). `cargo test --workspace` builds it before any test runs; a lone
/// `cargo test -p errand-chaos` does not, and then this says what to build rather than testing a stale
/// or missing binary silently.
fn errand_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("ERRAND_BIN").filter(|b| !b.is_empty()) {
        return bin.into();
    }
    // target/<profile>/deps/chaos-<hash> -> target/<profile>/errand
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("errand");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p errand-cli), run the workspace's tests \
         (cargo test --workspace), or set ERRAND_BIN",
        bin.display()
    );
    bin
}

/// One loop at a time: each wants the machine's two cores to itself for its timings to mean much.
static SERIAL: Mutex<()> = Mutex::new(());

fn crash_loop(extra: &[&str]) -> Value {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A process group of its own, so that a loop that hangs is killed with its servers and workers.
    let mut child = Command::new(env!("CARGO_BIN_EXE_errand-chaos"))
        .args(["run", "--jobs", "10000", "--chaos-secs", "33"])
        .arg("--errand")
        .arg(errand_bin())
        .args(extra)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    // 33 s of chaos, at most 60 s to settle, and room for a slow machine.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            panic!("the crash loop did not end within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap().unwrap();
    eprintln!("{stdout}");
    assert!(status.success(), "the crash loop failed: {status}");
    serde_json::from_str(&stdout).unwrap()
}

fn assert_clean(report: &Value, server_kills: u64) {
    let v = &report["verdict"];
    assert_eq!(v["acknowledged"], 10_000);
    assert_eq!(v["completed"], 10_000, "every job completes (none dies)");
    for violation in ["lost", "double_completions", "stale_acks_accepted"] {
        assert_eq!(v[violation], Value::Array(vec![]), "{violation}");
    }
    assert!(report["settled_ms"].as_u64().unwrap() <= 60_000);
    // The chaos happened, and reached a lease holder: fencing refused its late acknowledgement.
    let chaos = &report["chaos"];
    assert!(chaos["worker_kills"].as_u64().unwrap() >= 10, "{chaos}");
    assert!(
        chaos["server_kills"].as_u64().unwrap() >= server_kills,
        "{chaos}"
    );
    assert!(chaos["pauses"].as_u64().unwrap() >= 2, "{chaos}");
    assert!(v["stale_acks_refused"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["repeated_executions"].as_u64().unwrap()
            <= report["repeated_executions_bound"].as_u64().unwrap()
    );
}

#[test]
fn sqlite_crash_loop_loses_nothing_and_completes_each_job_once() {
    let report = crash_loop(&["--store", "sqlite"]);
    assert_clean(&report, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_node_crash_loop_loses_nothing_and_completes_each_job_once() {
    let Some(url) = errand_testkit::test_url().await else {
        return;
    };
    let report = tokio::task::spawn_blocking(move || {
        crash_loop(&["--store", "postgres", "--nodes", "2", "--pg-url", &url])
    })
    .await
    .unwrap();
    assert_eq!(report["nodes"], 2);
    assert_clean(&report, 3);
}
