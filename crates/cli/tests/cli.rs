//! The `errand` commands against a real server: output, `--json`, and exit codes.

#![allow(clippy::unwrap_used)]

use std::process::Output;

use errand_testkit::TestServer;
use serde_json::Value;

fn errand(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(args)
        .args(["--url", url])
        .env_remove("ERRAND_API_KEY")
        .output()
        .unwrap()
}

async fn run(url: &str, args: &[&str]) -> Output {
    let (url, args): (String, Vec<String>) = (
        url.to_string(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        errand(&url, &args)
    })
    .await
    .unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&o.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queues_and_dead_letters_from_the_command_line() {
    let server = TestServer::start().await;
    let url = server.url();

    let out = run(
        &url,
        &[
            "job",
            "add",
            "mail",
            "send",
            "{\"to\": 1}",
            "--max-attempts",
            "1",
            "--json",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = json(&out)["id"].as_str().unwrap().to_string();

    let out = run(&url, &["job", "get", &id]).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("waiting") && text.contains("{\"to\":1}"),
        "{text}"
    );

    let out = run(&url, &["queue", "stats", "mail", "--json"]).await;
    assert_eq!(json(&out)["counts"]["waiting"], 1);
    let out = run(&url, &["queue", "ls"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("QUEUE") && text.contains("mail"),
        "a table: {text}"
    );

    assert!(
        run(&url, &["queue", "pause", "mail"])
            .await
            .status
            .success()
    );
    let out = run(&url, &["queue", "stats", "mail", "--json"]).await;
    assert_eq!(json(&out)["paused"], true);
    assert!(
        run(&url, &["queue", "resume", "mail"])
            .await
            .status
            .success()
    );
    let out = run(
        &url,
        &["queue", "config", "mail", "--set", "{\"max_attempts\": 4}"],
    )
    .await;
    assert_eq!(
        json(&out)["max_attempts"],
        4,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill it into the dead-letter queue through the engine's worker path, then replay and purge.
    let engine = &server.state().engine;
    let claimed = engine
        .claim(errand_core::Claim {
            queues: vec!["mail".into()],
            worker_id: "w".into(),
            limit: 1,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    let token = claimed[0].lease.clone().unwrap().token;
    engine
        .fail(
            claimed[0].id,
            token,
            errand_core::Failure::fatal("smtp 550"),
        )
        .await
        .unwrap();
    let out = run(&url, &["dlq", "ls", "mail"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("smtp 550") && text.contains("non_retryable"),
        "{text}"
    );
    let out = run(&url, &["dlq", "groups", "mail"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("smtp 550") && text.contains("FINGERPRINT"),
        "{text}"
    );
    let out = run(&url, &["dlq", "groups", "mail", "--json"]).await;
    let groups = json(&out);
    assert_eq!(groups["groups"][0]["count"], 1);
    let fingerprint = groups["groups"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(
        &url,
        &[
            "dlq",
            "replay",
            "mail",
            "--error-contains",
            "smtp",
            "--fingerprint",
            &fingerprint,
            "--json",
        ],
    )
    .await;
    assert_eq!(json(&out)["count"], 1);
    let out = run(&url, &["job", "cancel", &id, "--json"]).await;
    assert_eq!(json(&out)["outcome"], "cancelled");
    let out = run(&url, &["job", "retry", &id]).await;
    assert!(out.status.success());

    // Exit codes tell failures apart.
    let out = run(&url, &["job", "get", "01AAAAAAAAAAAAAAAAAAAAAAAA"]).await;
    assert_eq!(out.status.code(), Some(3), "not found");
    let out = run(&url, &["job", "add", "bad queue", "k"]).await;
    assert_eq!(out.status.code(), Some(2), "invalid input");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("queue"),
        "names the field"
    );
    let out = run(&url, &["job", "add", "q", "k", "{not json"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(&url, &["job", "retry", &id]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "a waiting job cannot be retried: conflict"
    );
    let out = run(&url, &["job", "frobnicate"]).await;
    assert_eq!(out.status.code(), Some(2), "usage error");
    server.shutdown().await;
    let out = run(&url, &["queue", "ls"]).await;
    assert_eq!(out.status.code(), Some(1), "unreachable server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_from_the_command_line() {
    let server = TestServer::start().await;
    let url = server.url();
    let set = [
        "schedule",
        "set",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--queue",
        "reports",
        "--kind",
        "daily",
        "--payload",
        "{\"full\": true}",
        "--missed",
        "catch-up-one",
    ];
    let out = run(&url, &set).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nightly set"), "{text}");
    assert_eq!(text.matches("next run").count(), 5, "{text}");

    let out = run(&url, &["schedule", "get", "nightly", "--json"]).await;
    let v = json(&out);
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(v["missed"], "catch_up_one");
    assert_eq!(v["payload"]["full"], true);
    let out = run(&url, &["schedule", "ls"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 3 * * *"));

    let out = run(&url, &["schedule", "pause", "nightly", "--json"]).await;
    assert_eq!(json(&out)["paused"], true);
    let out = run(&url, &["schedule", "trigger", "nightly", "--json"]).await;
    assert_eq!(json(&out)["state"], "waiting");
    let job_id = json(&out)["id"].as_str().unwrap().to_string();

    // A worker logs a line on that job; `job logs` shows it.
    let engine = &server.state().engine;
    let claimed = engine
        .claim(errand_core::Claim {
            queues: vec!["reports".into()],
            worker_id: "w".into(),
            limit: 1,
            heartbeat_ms: None,
        })
        .await
        .unwrap()
        .remove(0);
    engine
        .append_logs(
            claimed.id,
            claimed.lease.unwrap().token,
            vec!["report half done".into()],
        )
        .await
        .unwrap();
    let out = run(&url, &["job", "logs", &job_id]).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("#1 report half done"), "{text}");
    let out = run(&url, &["schedule", "resume", "nightly", "--json"]).await;
    assert_eq!(json(&out)["paused"], false);

    // February 30th never comes: invalid input, exit 2, naming the field.
    let mut bad = set;
    bad[4] = "0 0 30 2 *";
    let out = run(&url, &bad).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cron"));

    let out = run(&url, &["schedule", "rm", "nightly"]).await;
    assert!(out.status.success());
    let out = run(&url, &["schedule", "get", "nightly"]).await;
    assert_eq!(out.status.code(), Some(3), "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_ls_everywhere_and_every_time_printed_says_its_zone() {
    let server = TestServer::start().await;
    let url = server.url();
    let out = run(
        &url,
        &[
            "schedule",
            "set",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--queue",
            "mail",
            "--kind",
            "digest",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tick at 03:00 in Berlin is printed at 03:00 on Berlin's clock, with the zone and offset of
    // that day (winter or summer), in `set`, `get` and `ls` alike.
    let berlin = |line: &str| {
        line.contains(" 03:00:00 CET (+01:00)") || line.contains(" 03:00:00 CEST (+02:00)")
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = run(&url, &["schedule", "get", "nightly"]).await;
    let get = String::from_utf8_lossy(&get.stdout).to_string();
    for t in [&text, &get] {
        let runs: Vec<&str> = t.lines().filter(|l| l.starts_with("next run")).collect();
        assert_eq!(runs.len(), 5, "{t}");
        assert!(runs.iter().all(|l| berlin(l)), "{t}");
    }
    let ls = run(&url, &["schedule", "ls"]).await;
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.lines().nth(1).is_some_and(berlin), "{ls}");
    let list = run(&url, &["schedule", "list"]).await;
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&list.stdout), ls, "list is ls");

    let out = run(&url, &["job", "add", "mail", "send_receipt", "--json"]).await;
    let id = json(&out)["id"].as_str().unwrap().to_string();
    for (ls, list, shows) in [
        (vec!["queue", "ls"], vec!["queue", "list"], "mail"),
        (
            vec!["job", "ls", "mail"],
            vec!["job", "list", "mail"],
            id.as_str(),
        ),
        (
            vec!["dlq", "ls", "mail"],
            vec!["dlq", "list", "mail"],
            "LAST ERROR",
        ),
    ] {
        let a = run(&url, &ls).await;
        let b = run(&url, &list).await;
        assert!(
            b.status.success(),
            "{list:?}: {}",
            String::from_utf8_lossy(&b.stderr)
        );
        // The same table (its cells may move on between the two calls: the oldest job's age).
        let header = |o: &Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        };
        assert_eq!(header(&a), header(&b), "{list:?} is {ls:?}");
        assert!(
            String::from_utf8_lossy(&b.stdout).contains(shows),
            "{list:?}"
        );
    }
    // A job's times have no zone of their own: they are printed in UTC, and say so.
    let out = run(&url, &["job", "get", &id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    for field in ["run at", "created"] {
        let line = text.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with(" UTC"), "{line}");
    }
    let out = run(&url, &["job", "ls", "mail", "--state", "finished"]).await;
    assert_eq!(out.status.code(), Some(2), "not a state");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state"));
    server.shutdown().await;
}

#[test]
fn key_new_prints_a_secret_and_its_hash_for_the_config_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args([
            "key",
            "new",
            "--name",
            "billing",
            "--scopes",
            "produce,read",
            "--queues",
            "billing.",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let secret = text
        .split("secret (shown once; give it to the client): ")
        .nth(1)
        .unwrap();
    let secret = secret.lines().next().unwrap().trim();
    assert!(text.contains(&errand_server::auth::hash_secret(secret)));
    assert!(
        text.contains("scopes = [\"produce\", \"read\"]")
            && text.contains("queues = [\"billing.\"]")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["key", "new", "--scopes", "root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_refuses_an_open_network_listener_and_says_how_to_add_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("ERRAND_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERRAND_API_KEY") && err.lines().count() == 1,
        "one clear line: {err}"
    );
}

#[test]
fn serve_help_documents_every_option_with_its_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--store",
        "--config",
        "--log-format",
        "--sync",
        "--max-wait-ms",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
    assert!(
        help.contains("[default: 127.0.0.1:7700]") && help.contains("[default: ./errand-data]")
    );
}

#[test]
fn serve_with_log_format_json_writes_one_json_object_per_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_errand"))
        .args(["serve", "--log-format", "json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("ERRAND_API_KEY")
        .env("ERRAND_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The lines the server logs as it starts (migrations applied, listening, ...).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        lines.push(line);
        if lines.len() >= 2 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "the server logged nothing");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
