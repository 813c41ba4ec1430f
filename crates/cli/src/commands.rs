//! The subcommands that talk to a server through the client, and `key new`.

use std::process::ExitCode;

use clap::Subcommand;
use errand_client::Client;
use errand_protocol::{
    Backoff, BackoffKind, DeadFilter, EnqueueJob, JobView, QueueConfig, Verdict, Whole,
};
use rand::RngExt;

use crate::Remote;
use crate::output::{duration, exit_code, fail, json, say, table, utc};

// Parsed once per process: the size of a variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Enqueue a job.
    Add {
        queue: String,
        kind: String,
        /// The payload, as JSON.
        #[arg(default_value = "null")]
        payload: String,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long, value_name = "MS")]
        delay_ms: Option<u64>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
        #[arg(long, value_name = "MS")]
        heartbeat_ms: Option<u64>,
        /// Fixed backoff between attempts, in ms (instead of the queue's policy).
        #[arg(long, value_name = "MS", conflicts_with = "backoff_exponential_ms")]
        backoff_fixed_ms: Option<u64>,
        /// Exponential backoff starting at this many ms.
        #[arg(long, value_name = "MS")]
        backoff_exponential_ms: Option<u64>,
        #[arg(long)]
        unique_key: Option<String>,
        /// The tenant: fairness and per-group limits.
        #[arg(long)]
        group_key: Option<String>,
        /// What must not be worked on twice at once (an order, a wallet).
        #[arg(long)]
        concurrency_key: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List a queue's jobs in one state (a page of them: `--limit`).
    #[command(visible_alias = "list")]
    Ls {
        queue: String,
        /// waiting, delayed, active, completed, cancelled or dead.
        #[arg(long, default_value = "waiting")]
        state: String,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show a job: state, attempts and errors, progress, result.
    Get { id: String },
    /// Show the lines a job's workers logged, oldest first.
    Logs { id: String },
    /// Cancel a job (an active one is asked to stop).
    Cancel { id: String },
    /// Retry a dead or cancelled job.
    Retry { id: String },
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queues with their counts.
    #[command(visible_alias = "list")]
    Ls,
    /// One queue's counts.
    Stats { queue: String },
    /// Stop handing out a queue's jobs.
    Pause { queue: String },
    /// Hand out a queue's jobs again.
    Resume { queue: String },
    /// Show a queue's configuration, or replace it with `--set JSON`.
    Config {
        queue: String,
        /// The new configuration, as JSON (fields left out take their defaults).
        #[arg(long, value_name = "JSON")]
        set: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a queue's dead jobs.
    #[command(visible_alias = "list")]
    Ls {
        queue: String,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Dead jobs grouped by error fingerprint, the largest groups first ("4,210 failed with ...").
    Groups { queue: String },
    /// Replay dead jobs matching the filter.
    Replay {
        queue: String,
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete dead jobs matching the filter, for good.
    Purge {
        queue: String,
        #[command(flatten)]
        filter: Filter,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only jobs whose latest error contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Only jobs whose latest error has this fingerprint (`errand dlq groups` lists them).
    #[arg(long)]
    fingerprint: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<u64>,
}

impl From<Filter> for DeadFilter {
    fn from(f: Filter) -> Self {
        DeadFilter {
            kind: f.kind,
            error_contains: f.error_contains,
            fingerprint: f.fingerprint,
            limit: f.limit.map(Whole),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a new random key: prints the secret once, and the block for the config file.
    New {
        #[arg(long, default_value = "default")]
        name: String,
        /// Comma-separated: produce, work, read, admin.
        #[arg(long, default_value = "admin", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Comma-separated queue-name prefixes the key is limited to.
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
    },
}

pub(crate) fn client(remote: &Remote) -> Result<Client, ExitCode> {
    // A person waits at the terminal: retry a server that is restarting for a few seconds, not 30.
    let retry = errand_client::RetryPolicy {
        max_elapsed: std::time::Duration::from_secs(3),
        ..Default::default()
    };
    let mut builder = Client::builder(&remote.url).retry(retry);
    if let Some(k) = &remote.key {
        builder = builder.api_key(k);
    }
    builder
        .build()
        .map_err(|e| fail(2, &format!("{}: {e}", remote.url)))
}

/// Turns a client error into a message and an exit code.
pub(crate) fn report(e: errand_client::Error) -> ExitCode {
    let code = match &e {
        // The client refused to send it: the input cannot be put in a request.
        errand_client::Error::InvalidRequest(_) => 2,
        _ => e.status().map_or(1, exit_code),
    };
    match &e {
        errand_client::Error::Api {
            field: Some(field),
            message,
            ..
        } => fail(code, &format!("{field}: {message}")),
        _ => fail(code, &e.to_string()),
    }
}

pub async fn job(cmd: JobCommand, remote: &Remote) -> ExitCode {
    let c = match client(remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let res = match cmd {
        JobCommand::Add {
            queue,
            kind,
            payload,
            priority,
            delay_ms,
            max_attempts,
            timeout_ms,
            heartbeat_ms,
            backoff_fixed_ms,
            backoff_exponential_ms,
            unique_key,
            group_key,
            concurrency_key,
            idempotency_key,
        } => {
            let payload = match serde_json::from_str(&payload) {
                Ok(p) => p,
                Err(e) => return fail(2, &format!("the payload is not JSON: {e}")),
            };
            let backoff = match (backoff_fixed_ms, backoff_exponential_ms) {
                (Some(ms), _) => Some(backoff(BackoffKind::Fixed, ms)),
                (None, Some(ms)) => Some(backoff(BackoffKind::Exponential, ms)),
                (None, None) => None,
            };
            let job = EnqueueJob {
                kind,
                payload,
                priority: priority.map(Whole),
                delay_ms: delay_ms.map(Whole),
                max_attempts: max_attempts.map(Whole),
                timeout_ms: timeout_ms.map(Whole),
                heartbeat_ms: heartbeat_ms.map(Whole),
                backoff,
                unique_key,
                group_key,
                concurrency_key,
                idempotency_key,
                ..Default::default()
            };
            c.enqueue(&queue, &job).await.map(|e| {
                if remote.json {
                    return json(&e);
                }
                let note = if e.created {
                    ""
                } else {
                    " (existing job with this unique key)"
                };
                say!("{} {}{note}", e.id, e.state);
                ExitCode::SUCCESS
            })
        }
        JobCommand::Ls {
            queue,
            state,
            kind,
            limit,
        } => {
            let state = match serde_json::from_value(serde_json::Value::String(state.clone())) {
                Ok(s) => s,
                Err(_) => {
                    return fail(
                        2,
                        &format!(
                            "--state {state:?}: use waiting, delayed, active, completed, cancelled or dead"
                        ),
                    );
                }
            };
            let mut params = errand_client::ListJobs::new(state);
            params.kind = kind;
            params.limit = Some(limit);
            c.list_jobs(&queue, &params).await.map(|page| {
                if remote.json {
                    return json(&page);
                }
                let rows: Vec<Vec<String>> = page
                    .jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.clone(),
                            j.kind.clone(),
                            j.state.to_string(),
                            format!("{} of {}", j.attempts, j.max_attempts),
                            utc(j.run_at),
                            utc(j.created_at),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "KIND", "STATE", "ATTEMPTS", "RUN AT", "CREATED"],
                    &rows,
                );
                if page.next_cursor.is_some() {
                    eprintln!("(first {limit} shown; --limit for more)");
                }
                ExitCode::SUCCESS
            })
        }
        JobCommand::Get { id } => c.get(&id).await.map(|j| {
            if remote.json {
                json(&j)
            } else {
                print_job(&j);
                ExitCode::SUCCESS
            }
        }),
        JobCommand::Logs { id } => c.job_logs(&id).await.map(|l| {
            if remote.json {
                return json(&l);
            }
            for line in &l.logs {
                say!("{} #{} {}", utc(line.at), line.attempt, line.line);
            }
            ExitCode::SUCCESS
        }),
        JobCommand::Cancel { id } => c.cancel(&id).await.map(|r| {
            if remote.json {
                json(&r)
            } else {
                say!("{} {}", r.id, r.outcome);
                ExitCode::SUCCESS
            }
        }),
        JobCommand::Retry { id } => c.retry(&id).await.map(|r| {
            if remote.json {
                json(&r)
            } else {
                say!("{} {}", r.id, r.state);
                ExitCode::SUCCESS
            }
        }),
    };
    res.unwrap_or_else(report)
}

fn backoff(kind: BackoffKind, delay_ms: u64) -> Backoff {
    Backoff {
        kind,
        delay_ms,
        jitter: 0.0,
        max_ms: None,
    }
}

fn print_job(j: &JobView) {
    let mut rows = vec![
        ("id", j.id.clone()),
        ("queue", j.queue.clone()),
        ("kind", j.kind.clone()),
        ("state", j.state.to_string()),
        ("attempts", format!("{} of {}", j.attempts, j.max_attempts)),
        ("priority", j.priority.to_string()),
        ("run at", utc(j.run_at)),
        ("created", utc(j.created_at)),
        ("idempotency key", j.idempotency_key.clone()),
        ("payload", j.payload.get().to_string()),
    ];
    if let Some(k) = &j.unique_key {
        rows.push(("unique key", k.clone()));
    }
    if let Some(k) = &j.group_key {
        rows.push(("group", k.clone()));
    }
    if let Some(k) = &j.concurrency_key {
        rows.push(("concurrency key", k.clone()));
    }
    if let Some(l) = &j.lease {
        rows.push(("worker", l.worker_id.clone()));
        rows.push(("lease expires", utc(l.expires_at)));
    }
    if let Some(p) = &j.progress {
        rows.push(("progress", p.get().to_string()));
    }
    if let Some(r) = &j.result {
        rows.push(("result", r.get().to_string()));
    }
    if let Some(r) = &j.dead_reason {
        rows.push(("dead because", r.clone()));
    }
    if j.cancel_requested {
        rows.push(("cancel", "requested".into()));
    }
    if let Some(t) = j.finished_at {
        rows.push(("finished", utc(t)));
    }
    for (k, v) in rows {
        say!("{k:<16} {v}");
    }
    for e in &j.errors {
        say!(
            "error #{:<9} {} {}: {}",
            e.attempt,
            utc(e.at),
            e.kind,
            e.message
        );
    }
}

pub async fn queue(cmd: QueueCommand, remote: &Remote) -> ExitCode {
    let c = match client(remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let res = match cmd {
        QueueCommand::Ls => c.queues().await.map(|l| {
            if remote.json {
                return json(&l);
            }
            queue_table(&l.queues);
            ExitCode::SUCCESS
        }),
        QueueCommand::Stats { queue } => c.queue(&queue).await.map(|q| {
            if remote.json {
                return json(&q);
            }
            queue_table(std::slice::from_ref(&q));
            ExitCode::SUCCESS
        }),
        QueueCommand::Pause { queue } => c.pause(&queue).await.map(|q| {
            if remote.json {
                return json(&q);
            }
            say!("{} paused", q.name);
            ExitCode::SUCCESS
        }),
        QueueCommand::Resume { queue } => c.resume(&queue).await.map(|q| {
            if remote.json {
                return json(&q);
            }
            say!("{} resumed", q.name);
            ExitCode::SUCCESS
        }),
        QueueCommand::Config { queue, set } => match set {
            Some(text) => {
                let config: QueueConfig = match serde_json::from_str(&text) {
                    Ok(c) => c,
                    Err(e) => return fail(2, &format!("--set: {e}")),
                };
                c.set_queue_config(&queue, &config).await.map(|c| json(&c))
            }
            None => c.queue_config(&queue).await.map(|c| json(&c)),
        },
    };
    res.unwrap_or_else(report)
}

fn queue_table(queues: &[errand_protocol::QueueView]) {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.name.clone(),
                if q.paused { "paused" } else { "running" }.into(),
                q.counts.waiting.to_string(),
                q.counts.delayed.to_string(),
                q.counts.active.to_string(),
                q.counts.completed.to_string(),
                q.counts.cancelled.to_string(),
                q.counts.dead.to_string(),
                duration(q.oldest_waiting_age_ms),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "STATUS",
            "WAITING",
            "DELAYED",
            "ACTIVE",
            "COMPLETED",
            "CANCELLED",
            "DEAD",
            "OLDEST WAITING",
        ],
        &rows,
    );
}

pub async fn dlq(cmd: DlqCommand, remote: &Remote) -> ExitCode {
    let c = match client(remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let res = match cmd {
        DlqCommand::Ls { queue, kind, limit } => {
            let params = errand_client::DeadJobs {
                kind,
                limit: Some(limit),
                ..Default::default()
            };
            c.dead_jobs(&queue, &params).await.map(|page| {
                if remote.json {
                    return json(&page);
                }
                let rows: Vec<Vec<String>> = page
                    .jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.clone(),
                            j.kind.clone(),
                            j.attempts.to_string(),
                            j.dead_reason.clone().unwrap_or_default(),
                            j.errors
                                .last()
                                .map(|e| e.message.chars().take(60).collect())
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["ID", "KIND", "ATTEMPTS", "REASON", "LAST ERROR"], &rows);
                ExitCode::SUCCESS
            })
        }
        DlqCommand::Groups { queue } => c.dead_groups(&queue).await.map(|g| {
            if remote.json {
                return json(&g);
            }
            let rows: Vec<Vec<String>> = g
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.count.to_string(),
                        g.fingerprint.clone(),
                        g.kind.clone(),
                        g.error.chars().take(70).collect(),
                    ]
                })
                .collect();
            table(&["COUNT", "FINGERPRINT", "KIND", "LATEST ERROR"], &rows);
            if !g.complete {
                // A server of an earlier release read at most 100,000 dead jobs; this one counts
                // all but those an earlier release's node killed during a rolling upgrade.
                eprintln!(
                    "({} dead jobs grouped; the queue holds more, not fingerprinted)",
                    g.scanned
                );
            }
            ExitCode::SUCCESS
        }),
        DlqCommand::Replay { queue, filter } => c
            .replay_dead(&queue, &filter.into())
            .await
            .map(|n| count(remote, "replayed", n.count)),
        DlqCommand::Purge { queue, filter } => c
            .purge_dead(&queue, &filter.into())
            .await
            .map(|n| count(remote, "purged", n.count)),
    };
    res.unwrap_or_else(report)
}

fn count(remote: &Remote, what: &str, n: u64) -> ExitCode {
    if remote.json {
        return json(&errand_protocol::CountResponse { count: n });
    }
    say!("{what} {n}");
    ExitCode::SUCCESS
}

pub fn key(cmd: KeyCommand) -> ExitCode {
    let KeyCommand::New {
        name,
        scopes,
        queues,
    } = cmd;
    for s in &scopes {
        if !["produce", "work", "read", "admin"].contains(&s.as_str()) {
            return fail(
                2,
                &format!("unknown scope {s:?}: use produce, work, read or admin"),
            );
        }
    }
    let mut rng = rand::rng();
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect();
    let secret = format!("errand_{secret}");
    let quote = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say!("secret (shown once; give it to the client): {secret}");
    say!();
    say!("# add to the server's config file:");
    say!("[[keys]]");
    say!("name = {name:?}");
    say!("sha256 = {:?}", errand_server::auth::hash_secret(&secret));
    say!("scopes = [{}]", quote(&scopes));
    if !queues.is_empty() {
        say!("queues = [{}]", quote(&queues));
    }
    ExitCode::SUCCESS
}

/// `errand audit`: the server's report, for people or (`--json`) for scripts; exit 1 on a failure.
pub async fn audit(remote: &Remote) -> ExitCode {
    let c = match client(remote) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = match c.audit_report().await {
        Ok(r) => r,
        Err(e) => return report(e),
    };
    if remote.json {
        let printed = json(&r);
        if printed != ExitCode::SUCCESS {
            return printed;
        }
    } else {
        for check in &r.checks {
            let verdict = match check.verdict {
                Verdict::Pass => "pass",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            let rows: Vec<String> = check.rows.iter().map(u32::to_string).collect();
            say!(
                "{verdict}  {}: {} [{}; AUDIT.md {}]",
                check.subject,
                check.detail,
                check.id,
                rows.join(", ")
            );
            if let Some(fix) = &check.fix {
                say!("      fix: {fix}");
            }
        }
        say!("\n{} pass, {} warn, {} fail", r.pass, r.warn, r.fail);
    }
    if r.fail > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
