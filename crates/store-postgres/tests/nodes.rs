//! What the conformance suite cannot see: several nodes on one schema (migrations, wake-ups, leadership,
//! exactly-once claims across nodes), connection errors, and the schema version rules.
//!
//! Each test returns early when there is no database (see `errand_store_postgres::testing`).

// Tests unwrap freely.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use errand_core::store::Store;
use errand_core::{
    Claim, Engine, EngineConfig, Error, JobOptions, ManualClock, NewJob, ScheduleDef,
};
use errand_store_postgres::schema::SCHEMA_VERSION;
use errand_store_postgres::testing::{TestSchema, test_url};
use errand_store_postgres::{ANY_QUEUE, PgOptions, PgStore};
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
