//! What the conformance suite cannot see: several nodes on one schema (migrations, wake-ups, leadership,
//! exactly-once claims across nodes), connection errors, and the schema version rules.
//!
//! Each test returns early when there is no database (see `errand_store_postgres::testing`).

// Tests unwrap freely.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use errand_core::admission::RateLimit;
use errand_core::store::Store;
use errand_core::{
    Claim, Clock, Engine, EngineConfig, Error, Job, JobId, JobOptions, JobState, ManualClock,
    NewJob, QueueConfig, ScheduleDef,
};
use errand_store_postgres::schema::SCHEMA_VERSION;
use errand_store_postgres::{ANY_QUEUE, PgOptions, PgStore};
use errand_testkit::{TestSchema, test_url};
use serde_json::json;
use tokio::sync::broadcast;

/// A plain connection for looking at (and tampering with) the schema by hand.
async fn psql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn engine(store: &PgStore, clock: &ManualClock) -> Engine {
    Engine::new(
        Arc::new(store.clone()),
        Arc::new(clock.clone()),
        EngineConfig::default(),
    )
}

fn unavailable(r: Result<PgStore, Error>) -> String {
    match r {
        Err(Error::Unavailable(m)) => m,
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(s) => panic!("expected the connect to be refused, got {s:?}"),
    }
}

/// The next queue name received within a few seconds.
async fn next_due(rx: &mut broadcast::Receiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the channel is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_connecting_together_apply_each_migration_once() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = tokio::join!(
        PgStore::connect(&url, schema.options()),
        PgStore::connect(&url, schema.options())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema(), schema.name());
    let rows = psql(&url)
        .await
        .query(
            &format!(
                "SELECT version FROM \"{}\".migrations ORDER BY version",
                schema.name()
            ),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // Both work on the same tables.
    let clock = ManualClock::at_fixed_start();
    let id = engine(&a, &clock)
        .enqueue(NewJob::new("q", "k", json!({"x": 1})))
        .await
        .unwrap()
        .id;
    assert_eq!(engine(&b, &clock).get(id).await.unwrap().queue, "q");
    // A third connect finds nothing to do.
    drop(PgStore::connect(&url, schema.options()).await.unwrap());
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_one_version_newer_is_accepted_two_newer_refused() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    drop(schema.store().await);
    let db = psql(&url).await;
    let bump = |v: i32| {
        format!(
            "INSERT INTO \"{}\".migrations (version) VALUES ({v})",
            schema.name()
        )
    };
    // A rolling upgrade: a newer node migrated, this one still runs.
    db.batch_execute(&bump(SCHEMA_VERSION + 1)).await.unwrap();
    drop(schema.store().await);
    db.batch_execute(&bump(SCHEMA_VERSION + 2)).await.unwrap();
    let msg = unavailable(PgStore::connect(&url, schema.options()).await);
    assert!(
        msg.contains(&format!("version {}", SCHEMA_VERSION + 2))
            && msg.contains(&format!("({SCHEMA_VERSION})")),
        "names both versions: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    let max: i32 = db
        .query_one(
            &format!("SELECT MAX(version) FROM \"{}\".migrations", schema.name()),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, SCHEMA_VERSION + 2, "left alone");
}

#[tokio::test]
async fn an_unreachable_server_is_one_clear_line_without_the_password() {
    // No database needed: nothing listens on this port (bound, then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://errand:s3cret@127.0.0.1:{port}/jobs");
    let msg = unavailable(PgStore::connect(&url, PgOptions::default()).await);
    assert_eq!(
        msg,
        format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} as user \"errand\": connection refused"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_in_one_clear_line() {
    // A local socket that accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let options = PgOptions {
        connect_timeout: Duration::from_millis(300),
        ..PgOptions::default()
    };
    let url = format!("postgres://errand:s3cret@127.0.0.1:{port}/jobs");
    let msg = unavailable(PgStore::connect(&url, options).await);
    assert_eq!(
        msg,
        format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} as user \"errand\": timed out after 300 ms"
        )
    );
}

#[tokio::test]
async fn a_missing_database_is_one_clear_line() {
    let Some(url) = test_url().await else { return };
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.dbname("errand_no_such_database");
    let (at, user) = match (&config.get_hosts()[0], config.get_ports().first()) {
        (tokio_postgres::config::Host::Tcp(h), Some(p)) => {
            (format!("{h}:{p}"), config.get_user().unwrap().to_string())
        }
        _ => return,
    };
    let url = format!("postgres://{user}:s3cret@{at}/errand_no_such_database");
    let msg = unavailable(PgStore::connect(&url, PgOptions::default()).await);
    assert_eq!(
        msg,
        format!(
            "cannot connect to PostgreSQL at {at} as user \"{user}\": database \
             \"errand_no_such_database\" does not exist"
        )
    );
}

#[tokio::test]
async fn bad_schema_names_and_urls_are_refused_before_connecting() {
    for bad in ["Errand", "1x", "a-b", "x; DROP TABLE y", ""] {
        let r = PgStore::connect(
            "postgres://u@127.0.0.1:1/db",
            PgOptions {
                schema: bad.into(),
                ..PgOptions::default()
            },
        )
        .await;
        assert!(
            matches!(&r, Err(Error::Invalid { field, .. }) if field == "schema"),
            "{bad}: {r:?}"
        );
    }
    let r = PgStore::connect("postgres://u:s3cret@host:notaport/db", PgOptions::default()).await;
    match r {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "url");
            assert!(!message.contains("s3cret"), "{message}");
        }
        other => panic!("expected an invalid url, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_never_shows_the_password() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    // Trust authentication ignores the password, so a made-up one connects and must not show.
    let with_password = url.replacen("postgres@", "postgres:s3cret@", 1);
    let store = PgStore::connect(&with_password, schema.options())
        .await
        .unwrap();
    let shown = format!("{store:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains(schema.name()), "{shown}");
}

/// Two nodes (two stores, each with its own pool, on one schema) run maintenance at the same instants
/// for 100 ticks of an every-second schedule: each tick fires exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_fire_each_cron_tick_once() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let clock = ManualClock::new(1_792_843_200_000);
    let (ea, eb) = (engine(&a, &clock), engine(&b, &clock));
    ea.put_schedule(
        "every-second",
        ScheduleDef::new("* * * * * *", "cron", "tick", json!(null)),
    )
    .await
    .unwrap();
    let mut fired = 0;
    for _ in 0..100 {
        clock.advance(1_000);
        let (x, y) = tokio::join!(ea.maintain(), eb.maintain());
        let n = x.unwrap().scheduled + y.unwrap().scheduled;
        assert_eq!(n, 1, "one tick, one job");
        fired += n;
    }
    assert_eq!(fired, 100);
    assert_eq!(ea.stats("cron").await.unwrap().waiting, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_setting_changed_on_one_node_applies_on_the_other_within_the_ttl() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let clock = ManualClock::at_fixed_start();
    let (ea, eb) = (engine(&a, &clock), engine(&b, &clock));
    let ttl = EngineConfig::default().queue_config_ttl_ms;
    let attempts = |e: Engine| async move {
        let id = e
            .enqueue(NewJob::new("q", "k", json!({})))
            .await
            .unwrap()
            .id;
        e.get(id).await.unwrap().max_attempts
    };
    let default = attempts(eb.clone()).await; // B has now read (and cached) the settings
    ea.set_queue_config(
        "q",
        errand_core::QueueConfig {
            max_attempts: default + 4,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(attempts(ea.clone()).await, default + 4, "at once where set");
    clock.advance(ttl as i64);
    assert_eq!(
        attempts(eb.clone()).await,
        default + 4,
        "within the ttl elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enqueue_on_one_node_wakes_the_other() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let mut due = b
        .subscribe_due()
        .expect("a shared store says when jobs become due");
    let clock = ManualClock::at_fixed_start();
    let e = engine(&a, &clock);

    e.enqueue(NewJob::new("mail", "send", json!({})))
        .await
        .unwrap();
    assert_eq!(next_due(&mut due).await, "mail");

    // A delayed job is not due: no notice until it is promoted.
    e.enqueue(
        NewJob::new("later", "send", json!({})).with_options(JobOptions {
            delay_ms: Some(1_000),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    e.enqueue(NewJob::new("sms", "send", json!({})))
        .await
        .unwrap();
    assert_eq!(
        next_due(&mut due).await,
        "sms",
        "nothing for the delayed job"
    );
    clock.advance(1_000);
    assert_eq!(e.maintain().await.unwrap().promoted, 1);
    assert_eq!(next_due(&mut due).await, "later");

    // A job released by its worker is due again; so are a resumed queue's jobs.
    let j = e
        .claim(Claim {
            queues: vec!["mail".into()],
            worker_id: "w".into(),
            limit: 1,
            heartbeat_ms: None,
        })
        .await
        .unwrap()
        .remove(0);
    e.release(j.id, j.lease.unwrap().token).await.unwrap();
    assert_eq!(next_due(&mut due).await, "mail");
    e.pause("sms").await.unwrap();
    e.resume("sms").await.unwrap();
    assert_eq!(next_due(&mut due).await, "sms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_listening_connection_reconnects_and_wakes_every_queue() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let store = schema.store().await;
    let mut due = store.subscribe_due().unwrap();
    let db = psql(&url).await;
    let killed: Vec<bool> = db
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN %' AND query LIKE $1",
            &[&format!("%{}%", schema.name())],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(killed, vec![true], "one listening connection");
    assert_eq!(next_due(&mut due).await, ANY_QUEUE);
    // Listening again.
    let clock = ManualClock::at_fixed_start();
    engine(&store, &clock)
        .enqueue(NewJob::new("q", "k", json!({})))
        .await
        .unwrap();
    assert_eq!(next_due(&mut due).await, "q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pooled_connections_killed_by_the_server_are_replaced_unseen() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let store = schema.store().await;
    let clock = ManualClock::at_fixed_start();
    let e = engine(&store, &clock);
    e.enqueue(NewJob::new("q", "k", json!(0))).await.unwrap();
    // Use every pooled connection, so that the last statement of each names the schema (a read: a
    // write's last statement is its COMMIT).
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let e = e.clone();
        reads.spawn(async move { e.stats("q").await });
    }
    while let Some(r) = reads.join_next().await {
        r.unwrap().unwrap();
    }
    let killed = psql(&url)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN %' AND query LIKE $1",
            &[&format!("%\"{}\"%", schema.name())],
        )
        .await
        .unwrap()
        .len();
    assert!(killed >= 1, "pooled connections were terminated");
    // As after a restart of the server: the next operations find fresh connections.
    let id = e
        .enqueue(NewJob::new("q", "k", json!("after")))
        .await
        .unwrap()
        .id;
    assert_eq!(e.get(id).await.unwrap().payload.get(), r#""after""#);
    assert_eq!(e.stats("q").await.unwrap().waiting, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_leads_until_its_lead_lapses() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    assert!(a.try_lead("maintenance", "node-a", 60_000).await.unwrap());
    assert!(!b.try_lead("maintenance", "node-b", 60_000).await.unwrap());
    assert!(
        a.try_lead("maintenance", "node-a", 60_000).await.unwrap(),
        "renewed"
    );
    assert!(
        b.try_lead("other-role", "node-b", 60_000).await.unwrap(),
        "roles apart"
    );
    let left: f64 = psql(&url)
        .await
        .query_one(
            &format!(
                "SELECT extract(epoch FROM expires_at - now())::float8 FROM \"{}\".leaders \
                 WHERE role = 'maintenance'",
                schema.name()
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((59.0..=60.0).contains(&left), "{left} s left of 60");

    // A short lead that its holder stops renewing (it died): the other takes over.
    assert!(a.try_lead("reaper", "node-a", 300).await.unwrap());
    assert!(!b.try_lead("reaper", "node-b", 300).await.unwrap());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        b.try_lead("reaper", "node-b", 300).await.unwrap(),
        "taken over"
    );
    assert!(
        !a.try_lead("reaper", "node-a", 300).await.unwrap(),
        "and kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claimers_on_two_nodes_claim_each_job_once() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let clock = ManualClock::at_fixed_start();
    const N: usize = 2_000;
    let ids: HashSet<_> = engine(&a, &clock)
        .enqueue_many(
            (0..N)
                .map(|i| NewJob::new(if i % 2 == 0 { "x" } else { "y" }, "k", json!(i)))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let e = engine(if w % 2 == 0 { &a } else { &b }, &clock);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = e
                    .claim(Claim {
                        // Both queues, in either order: the multi-queue path locks as it goes.
                        queues: if w % 3 == 0 {
                            vec!["x".into(), "y".into()]
                        } else {
                            vec!["y".into(), "x".into()]
                        },
                        worker_id: format!("w{w}"),
                        limit: 1 + w * 10,
                        heartbeat_ms: None,
                    })
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(jobs.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), N, "no job claimed twice");
    assert_eq!(unique, ids, "every job claimed");
}

/// Jobs active as workers see them, per label (`queue`, `group <key>`, `key <key>`), and the most
/// ever seen at once. A worker enters a job when its claim returns and leaves it before completing it,
/// so these counts never exceed the store's: any excess is a real breach of a limit.
#[derive(Default)]
struct Active {
    now: HashMap<String, u32>,
    max: HashMap<String, u32>,
}

impl Active {
    fn labels(job: &Job) -> Vec<String> {
        let mut labels = vec!["queue".to_string()];
        labels.extend(job.group_key.iter().map(|g| format!("group {g}")));
        labels.extend(job.concurrency_key.iter().map(|k| format!("key {k}")));
        labels
    }

    fn enter(&mut self, job: &Job) {
        for label in Self::labels(job) {
            let n = self.now.entry(label.clone()).or_default();
            *n += 1;
            let max = self.max.entry(label).or_default();
            *max = (*max).max(*n);
        }
    }

    fn leave(&mut self, job: &Job) {
        for label in Self::labels(job) {
            *self.now.get_mut(&label).unwrap() -= 1;
        }
    }

    /// The most ever active at once under the labels starting with `prefix`.
    fn max_of(&self, prefix: &str) -> u32 {
        self.max
            .iter()
            .filter(|(label, _)| label.starts_with(prefix))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }
}

/// Two nodes, four workers (two per node) claiming and completing 200 jobs of one queue as fast as
/// they can, each holding its jobs while the others claim: at no instant are more jobs active than the
/// queue's `concurrency` (3), a group's `group_concurrency` (2) or a concurrency key's
/// `key_concurrency` (1) allow, though the workers do overlap; and every job is completed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_four_workers_never_exceed_the_concurrency_limits() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let clock = ManualClock::at_fixed_start();
    let (ea, eb) = (engine(&a, &clock), engine(&b, &clock));
    ea.set_queue_config(
        "q",
        QueueConfig {
            concurrency: Some(3),
            group_concurrency: Some(2),
            key_concurrency: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    const N: usize = 200;
    // Three groups, one the size of the others together: once those are drained, it alone has waiting
    // jobs and its own limit is what binds. Two jobs in three also hold one of five order keys, whatever
    // their group.
    let ids: HashSet<JobId> = ea
        .enqueue_many(
            (0..N)
                .map(|i| {
                    NewJob::new("q", "k", json!(i)).with_options(JobOptions {
                        group_key: Some(["g1", "g1", "g2", "g3"][i % 4].to_string()),
                        concurrency_key: (i % 3 != 0).then(|| format!("order-{}", i % 5)),
                        ..Default::default()
                    })
                })
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), N);

    let active = Arc::new(Mutex::new(Active::default()));
    // Claims answered, and jobs completed, by all the workers.
    let (answered, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let e = if w % 2 == 0 { ea.clone() } else { eb.clone() };
        let (active, answered, done) = (active.clone(), answered.clone(), done.clone());
        workers.spawn(async move {
            let mut completed = Vec::new();
            while done.load(Ordering::SeqCst) < N {
                let jobs = e
                    .claim(Claim {
                        queues: vec!["q".into()],
                        worker_id: format!("w{w}"),
                        limit: 2,
                        heartbeat_ms: None,
                    })
                    .await
                    .unwrap();
                let seen = answered.fetch_add(1, Ordering::SeqCst) + 1;
                if jobs.is_empty() {
                    // The others hold the capacity (or all is claimed): look again.
                    tokio::task::yield_now().await;
                    continue;
                }
                for job in &jobs {
                    active.lock().unwrap().enter(job);
                }
                // "Work": hold the jobs until the other workers have had two claims answered, so that
                // the workers overlap as much as the limits let them (a claim takes much longer than
                // anything else here). Bounded, for when every worker holds jobs.
                for _ in 0..10_000 {
                    if answered.load(Ordering::SeqCst) >= seen + 2 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                for job in jobs {
                    active.lock().unwrap().leave(&job);
                    let token = job.lease.as_ref().unwrap().token.clone();
                    let outcome = e.complete(job.id, token, None).await.unwrap();
                    assert_eq!(outcome.state, JobState::Completed);
                    assert!(!outcome.duplicate);
                    completed.push(job.id);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            completed
        });
    }
    let completed: Vec<JobId> = tokio::time::timeout(Duration::from_secs(60), async {
        let mut all = Vec::new();
        while let Some(mine) = workers.join_next().await {
            all.extend(mine.unwrap());
        }
        all
    })
    .await
    .expect("all jobs completed within 60 s");

    let (queue, group, key) = {
        let active = active.lock().unwrap();
        (
            active.max_of("queue"),
            active.max_of("group "),
            active.max_of("key "),
        )
    };
    assert!(queue <= 3, "{queue} jobs of the queue active at once");
    assert!(group <= 2, "{group} jobs of one group active at once");
    assert!(key <= 1, "{key} jobs of one concurrency key active at once");
    assert!(
        queue >= 2,
        "the workers overlapped (at most {queue} active)"
    );
    assert_eq!(completed.len(), N, "no job completed twice");
    assert_eq!(
        completed.into_iter().collect::<HashSet<_>>(),
        ids,
        "every job completed"
    );
    let stats = eb.stats("q").await.unwrap();
    assert_eq!(
        (stats.waiting, stats.active, stats.completed),
        (0, 0, N as u64)
    );
}

/// Checks claims made at `times` (ms; one entry per claimed job) against a token bucket of `rate`
/// that starts full: between any two claim instants `s <= u`, at most `burst + limit * (u - s) /
/// period_ms` jobs — the bucket holds at most `burst` tokens before the claims at `s` and gains exactly
/// `limit * (u - s) / period_ms` until those at `u`. This includes every window `[t, t + period_ms)`
/// and the whole run. Returns the most claims in any window `[t, t + period_ms)`.
fn assert_within_bucket(what: &str, times: &[i64], rate: RateLimit) -> u64 {
    let mut per_instant: BTreeMap<i64, u64> = BTreeMap::new();
    for t in times {
        *per_instant.entry(*t).or_default() += 1;
    }
    let instants: Vec<(i64, u64)> = per_instant.into_iter().collect();
    let burst = u64::from(rate.burst.unwrap_or(rate.limit));
    let period = rate.period_ms;
    let mut busiest = 0;
    for (i, (s, _)) in instants.iter().enumerate() {
        let mut claimed = 0;
        for (u, n) in &instants[i..] {
            claimed += n;
            let elapsed = (u - s) as u64;
            // In whole jobs times the period, to stay exact.
            assert!(
                claimed * period <= burst * period + u64::from(rate.limit) * elapsed,
                "{what}: {claimed} jobs claimed from {s} to {u} ({elapsed} ms), more than a bucket \
                 of {rate:?} allows"
            );
            if elapsed < period {
                busiest = busiest.max(claimed);
            }
        }
    }
    busiest
}

/// Two nodes, four workers (two per node) claiming as much as they may while the clock moves 100 ms at
/// a time for 4 s: the claims never exceed the queue's `rate_limit` (10 per second, bursts of 10) nor a
/// group's `group_rate_limit` (4 per second, bursts of 4), over any stretch of time. Most jobs are in
/// one group, so that both limits bind during the run: the queue's while all three groups have
/// waiting jobs, the big group's own once the small ones are drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_four_workers_never_exceed_the_rate_limits() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let (a, b) = (schema.store().await, schema.store().await);
    let clock = ManualClock::at_fixed_start();
    let (ea, eb) = (engine(&a, &clock), engine(&b, &clock));
    let (queue_rate, group_rate) = (RateLimit::new(10, 1_000), RateLimit::new(4, 1_000));
    ea.set_queue_config(
        "q",
        QueueConfig {
            rate_limit: Some(queue_rate),
            group_rate_limit: Some(group_rate),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    const N: usize = 300;
    let group_of = |i: usize| match i % 25 {
        0 => "small-1",
        1 => "small-2",
        _ => "big",
    };
    ea.enqueue_many(
        (0..N)
            .map(|i| {
                NewJob::new("q", "k", json!(i)).with_options(JobOptions {
                    group_key: Some(group_of(i).to_string()),
                    ..Default::default()
                })
            })
            .collect(),
    )
    .await
    .unwrap();

    // (instant, group) per claimed job: the clock stands still while the workers claim. Claimed jobs
    // are left active: rate limits do not care.
    let mut claims: Vec<(i64, String)> = Vec::new();
    let mut ids = HashSet::new();
    let start = clock.now();
    for _ in 0..40 {
        clock.advance(100);
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let e = if w % 2 == 0 { ea.clone() } else { eb.clone() };
            workers.spawn(async move {
                let mut got = Vec::new();
                loop {
                    let jobs = e
                        .claim(Claim {
                            queues: vec!["q".into()],
                            worker_id: format!("w{w}"),
                            limit: 5,
                            heartbeat_ms: None,
                        })
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        return got;
                    }
                    got.extend(jobs);
                }
            });
        }
        while let Some(got) = workers.join_next().await {
            for job in got.unwrap() {
                assert!(ids.insert(job.id), "claimed twice");
                claims.push((clock.now(), job.group_key.unwrap()));
            }
        }
    }
    let elapsed = clock.now() - start;
    assert_eq!(elapsed, 4_000);

    let times: Vec<i64> = claims.iter().map(|(t, _)| *t).collect();
    let busiest = assert_within_bucket("the queue", &times, queue_rate);
    // The whole run, as a bound on the rate: bursts of 10, then 10 a second; bursts of 4, then 4.
    assert!(
        claims.len() <= 10 + 10 * 4,
        "{} claims in 4 s",
        claims.len()
    );
    let claims_of = |g: &str| -> Vec<i64> {
        claims
            .iter()
            .filter(|(_, group)| group == g)
            .map(|(t, _)| *t)
            .collect()
    };
    let big = claims_of("big");
    let big_busiest = assert_within_bucket("group big", &big, group_rate);
    assert!(
        big.len() <= 4 + 4 * 4,
        "{} claims of one group in 4 s",
        big.len()
    );
    for g in ["small-1", "small-2"] {
        let small = claims_of(g);
        assert_within_bucket(g, &small, group_rate);
        assert_eq!(small.len(), N / 25, "every job of {g} claimed");
    }
    // And the limits are what holds the claims back, not refusing more: the queue's first second is
    // its burst plus a token every 100 ms (19 of 19 allowed from 0 to 900 ms); the big group gets its
    // burst plus a token every 250 ms (19 of 19 allowed from 0 to 3,900 ms).
    assert!(
        busiest >= 17,
        "the queue's busiest second had {busiest} claims"
    );
    assert!(
        big_busiest >= 6,
        "the big group's busiest second had {big_busiest} claims"
    );
    assert!(big.len() >= 17, "the big group had {} claims", big.len());
}

/// Dead jobs a schema held before it stored fingerprints (version 8) are fingerprinted and counted
/// into their groups when migration 9 runs, as the engine fingerprints a job when it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_9_fingerprints_and_groups_the_dead_jobs_already_stored() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let clock = ManualClock::at_fixed_start();
    let store = schema.store().await;
    let e = engine(&store, &clock);
    let dead = errand_store_tests::migrations::three_dead_jobs(&e).await;
    drop((e, store));
    // Back to version 8, as a node of the previous release left it.
    let s = schema.name();
    psql(&url)
        .await
        .batch_execute(&format!(
            "ALTER TABLE \"{s}\".jobs DROP COLUMN expires_at;
             DROP FUNCTION \"{s}\".jobs_dead_grouped() CASCADE;
             DROP TABLE \"{s}\".dead_groups; DROP TABLE \"{s}\".dead_group_deltas;
             ALTER TABLE \"{s}\".jobs DROP COLUMN fingerprint;
             DELETE FROM \"{s}\".migrations WHERE version > 8;"
        ))
        .await
        .unwrap();
    let store = schema.store().await;
    errand_store_tests::migrations::dead_jobs_are_grouped_after_migration_9(
        &engine(&store, &clock),
        &dead,
    )
    .await;
}

/// Every operation gives its pooled connection back: 32 tasks making 1,000 operations through a pool
/// of `TEST_POOL_SIZE` all finish (a connection kept by one would starve the rest into timeouts), and
/// afterwards the database sees no more of this store's connections than the pool and its `LISTEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_go_back_to_the_pool_after_every_operation() {
    let Some(url) = test_url().await else { return };
    let schema = TestSchema::new(&url).await;
    let store = schema.store().await;
    let clock = ManualClock::at_fixed_start();
    let e = engine(&store, &clock);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u64 {
        let e = e.clone();
        tasks.spawn(async move {
            for n in 0..31u64 {
                let id = e
                    .enqueue(NewJob::new("pool", "k", json!([t, n])))
                    .await
                    .unwrap()
                    .id;
                e.get(id).await.unwrap();
                e.stats("pool").await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(e.stats("pool").await.unwrap().waiting, 32 * 31);
    let held: i64 = psql(&url)
        .await
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1",
            &[&format!("%\"{}\"%", schema.name())],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        held as usize <= errand_testkit::TEST_POOL_SIZE + 1,
        "{held} connections of this store, for a pool of {}",
        errand_testkit::TEST_POOL_SIZE
    );
}
