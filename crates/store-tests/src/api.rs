//! Rule 7: the engine API — ordering, batches, cancel, retry and replay, purge, promote, pause,
//! listing, stats and unique keys.

use errand_core::{
    Cancelled, Claim, Clock, DeadFilter, Dedup, Error, Failure, JobId, JobOptions, JobState,
    NewJob, QueueConfig, UniqueWindow,
};
use serde_json::json;

use crate::support::{claim, claim_one, job, payload, state, token};
use crate::{Ctx, Fixture};

fn prio(queue: &str, n: u64, p: i32) -> NewJob {
    job(queue, n).with_options(JobOptions {
        priority: Some(p),
        ..Default::default()
    })
}

pub async fn priority_then_fifo(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // Interleaved priorities, several per millisecond and across milliseconds.
    let order = [
        (1, 5),
        (2, 1),
        (3, 5),
        (4, 9),
        (5, 1),
        (6, 5),
        (7, 0),
        (8, 9),
    ];
    for (n, p) in order {
        e.enqueue(prio("q", n, p)).await.unwrap();
        if n % 3 == 0 {
            ctx.clock.advance(1);
        }
    }
    let mut got = Vec::new();
    for _ in 0..order.len() {
        got.push(payload(&claim_one(e, "q").await)["n"].as_u64().unwrap());
    }
    assert_eq!(got, vec![7, 2, 5, 1, 3, 6, 4, 8]);

    // A batch claim returns the same order.
    for (n, p) in order {
        e.enqueue(prio("b", n, p)).await.unwrap();
    }
    let batch: Vec<u64> = claim(e, "b", "w", 100)
        .await
        .iter()
        .map(|j| payload(j)["n"].as_u64().unwrap())
        .collect();
    assert_eq!(batch, vec![7, 2, 5, 1, 3, 6, 4, 8]);
}

pub async fn claim_takes_the_best_jobs_across_queues(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue(prio("low", 1, 100)).await.unwrap();
    e.enqueue(prio("high", 2, 1)).await.unwrap();
    e.enqueue(prio("low", 3, 0)).await.unwrap();
    e.enqueue(prio("other", 4, 0)).await.unwrap();
    let got = e
        .claim(Claim {
            queues: vec!["low".into(), "high".into()],
            worker_id: "w".into(),
            limit: 2,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    let ns: Vec<u64> = got
        .iter()
        .map(|j| payload(j)["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        vec![3, 2],
        "best first across the named queues, none from others"
    );
    for bad in [
        Claim {
            queues: vec![],
            worker_id: "w".into(),
            limit: 1,
            heartbeat_ms: None,
        },
        Claim {
            queues: vec!["a b".into()],
            worker_id: "w".into(),
            limit: 1,
            heartbeat_ms: None,
        },
        Claim {
            queues: vec!["q".into()],
            worker_id: "".into(),
            limit: 1,
            heartbeat_ms: None,
        },
        Claim {
            queues: vec!["q".into()],
            worker_id: "w".into(),
            limit: 0,
            heartbeat_ms: None,
        },
        Claim {
            queues: vec!["q".into()],
            worker_id: "w".into(),
            limit: 1_000_000,
            heartbeat_ms: None,
        },
    ] {
        assert!(matches!(e.claim(bad).await, Err(Error::Invalid { .. })));
    }
}

pub async fn batch_with_one_bad_job_writes_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut jobs: Vec<NewJob> = (0..100).map(|i| job("batch", i)).collect();
    jobs[57].options.priority = Some(99_999);
    match e.enqueue_many(jobs.clone()).await {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "jobs[57].priority"),
        other => panic!("expected invalid, got {other:?}"),
    }
    jobs[57].options.priority = None;
    jobs[99].queue = "bad queue".into();
    assert!(matches!(
        e.enqueue_many(jobs.clone()).await,
        Err(Error::Invalid { field, .. }) if field == "jobs[99].queue"
    ));
    assert_eq!(
        e.stats("batch").await.unwrap().waiting,
        0,
        "nothing written"
    );
    assert!(e.queues().await.unwrap().is_empty(), "not even the queue");
    assert!(matches!(
        e.enqueue_many(vec![]).await,
        Err(Error::Invalid { .. })
    ));

    jobs[99].queue = "batch".into();
    let out = e.enqueue_many(jobs).await.unwrap();
    assert_eq!(out.len(), 100);
    assert!(
        out.windows(2).all(|w| w[0].id < w[1].id),
        "ids in batch order"
    );
    assert_eq!(e.stats("batch").await.unwrap().waiting, 100);
}

pub async fn cancel_waiting_delayed_and_active_jobs(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let waiting = e.enqueue(job("q", 1)).await.unwrap().id;
    let delayed = e
        .enqueue(job("q", 2).with_options(JobOptions {
            delay_ms: Some(1_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    assert_eq!(e.cancel(waiting).await.unwrap(), Cancelled::Cancelled);
    assert_eq!(e.cancel(delayed).await.unwrap(), Cancelled::Cancelled);
    assert_eq!(
        e.cancel(waiting).await.unwrap(),
        Cancelled::Cancelled,
        "idempotent"
    );
    for id in [waiting, delayed] {
        let j = e.get(id).await.unwrap();
        assert_eq!(j.state, JobState::Cancelled);
        assert!(j.finished_at.is_some());
    }
    ctx.clock.advance(2_000);
    assert!(
        claim(e, "q", "w", 10).await.is_empty(),
        "cancelled jobs never run"
    );

    // Active: the request is recorded; the worker's failure report then ends it cancelled, not retried.
    e.enqueue(job("q", 3)).await.unwrap();
    let j = claim_one(e, "q").await;
    assert_eq!(e.cancel(j.id).await.unwrap(), Cancelled::Requested);
    assert_eq!(state(e, &j).await, JobState::Active);
    assert!(e.get(j.id).await.unwrap().cancel_requested);
    let out = e
        .fail(j.id, token(&j), Failure::retryable("cancelled by request"))
        .await
        .unwrap();
    assert_eq!(out.state, JobState::Cancelled);

    // A worker that finished the work before it learnt of the request completes it: the completion
    // wins (its effect happened; calling it cancelled would hide it), and the job keeps the request so
    // that whoever cancelled sees it came too late.
    e.enqueue(job("q", 5)).await.unwrap();
    let late = claim_one(e, "q").await;
    assert_eq!(e.cancel(late.id).await.unwrap(), Cancelled::Requested);
    e.complete(late.id, token(&late), Some(json!({"sent": true})))
        .await
        .unwrap();
    let j = e.get(late.id).await.unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert!(j.cancel_requested, "the late request stays visible");

    // Finished jobs cannot be cancelled; unknown ones are not found.
    e.enqueue(job("q", 4)).await.unwrap();
    let done = claim_one(e, "q").await;
    e.complete(done.id, token(&done), None).await.unwrap();
    assert!(matches!(e.cancel(done.id).await, Err(Error::Conflict(_))));
    let unknown: JobId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    assert!(matches!(e.cancel(unknown).await, Err(Error::NotFound(_))));
}

/// Makes a dead job on `queue` whose last error is `message`.
async fn make_dead(ctx: &Ctx, queue: &str, kind: &str, message: &str) -> JobId {
    let e = &ctx.engine;
    let id = e
        .enqueue(
            NewJob::new(queue, kind, json!({})).with_options(JobOptions {
                max_attempts: Some(1),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .id;
    let j = claim_one(e, queue).await;
    assert_eq!(j.id, id);
    e.fail(j.id, token(&j), Failure::retryable(message))
        .await
        .unwrap();
    id
}

pub async fn retry_a_dead_job_and_replay_by_filter(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let one = make_dead(&ctx, "d", "mail", "smtp 421 try later").await;
    e.retry(one).await.unwrap();
    let j = e.get(one).await.unwrap();
    assert_eq!(j.state, JobState::Waiting);
    assert_eq!(j.attempts, 0);
    assert_eq!(j.errors.len(), 1, "the history stays");
    assert!(j.dead_reason.is_none() && j.finished_at.is_none());
    assert!(
        matches!(e.retry(one).await, Err(Error::Conflict(_))),
        "only dead or cancelled"
    );
    let again = claim_one(e, "d").await;
    e.complete(again.id, token(&again), None).await.unwrap();

    let mut smtp = Vec::new();
    for _ in 0..3 {
        smtp.push(make_dead(&ctx, "d", "mail", "smtp 421 try later").await);
    }
    let other_kind = make_dead(&ctx, "d", "sms", "smtp 421 try later").await;
    let other_error = make_dead(&ctx, "d", "mail", "invalid address").await;
    let n = e
        .replay_dead(DeadFilter {
            queue: "d".into(),
            kind: Some("mail".into()),
            error_contains: Some("smtp 421".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 3);
    for id in &smtp {
        assert_eq!(e.get(*id).await.unwrap().state, JobState::Waiting);
    }
    assert_eq!(e.get(other_kind).await.unwrap().state, JobState::Dead);
    assert_eq!(e.get(other_error).await.unwrap().state, JobState::Dead);
    let n = e
        .replay_dead(DeadFilter {
            queue: "d".into(),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1, "a limit is honoured");
    assert_eq!(e.stats("d").await.unwrap().dead, 1);
}

/// Dead letters that failed the same way (numbers and quoted values aside) form one group, the
/// largest first; a group is replayed or purged by its fingerprint.
pub async fn dead_letters_group_by_error_fingerprint(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut declined = Vec::new();
    for i in 0..5 {
        let msg = format!("card {} declined for 'user{i}@example.com'", 4000 + i);
        declined.push(make_dead(&ctx, "g", "charge", &msg).await);
    }
    for i in 0..2 {
        make_dead(&ctx, "g", "charge", &format!("gateway timeout after {i}ms")).await;
    }
    let refund = make_dead(&ctx, "g", "refund", "card 1 declined for 'x'").await;
    let g = e.dead_groups("g", 10).await.unwrap();
    assert!(g.complete);
    assert_eq!(g.scanned, 8);
    let counts: Vec<(u64, &str)> = g
        .groups
        .iter()
        .map(|g| (g.count, g.kind.as_str()))
        .collect();
    assert_eq!(counts, [(5, "charge"), (2, "charge"), (1, "refund")]);
    let big = &g.groups[0];
    assert_eq!(big.sample_job_id, declined[4], "the most recent one");
    assert_eq!(big.error, "card 4004 declined for 'user4@example.com'");
    assert_eq!(g.groups[2].sample_job_id, refund);
    assert_eq!(e.dead_groups("g", 1).await.unwrap().groups.len(), 1);

    let n = e
        .replay_dead(DeadFilter {
            queue: "g".into(),
            fingerprint: Some(big.fingerprint.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 5);
    for id in &declined {
        assert_eq!(e.get(*id).await.unwrap().state, JobState::Waiting);
    }
    let timeouts = g.groups[1].fingerprint.clone();
    let n = e
        .purge_dead(DeadFilter {
            queue: "g".into(),
            fingerprint: Some(timeouts),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 2);
    let left = e.dead_groups("g", 10).await.unwrap();
    assert_eq!(left.groups.len(), 1);
    assert_eq!(left.groups[0].sample_job_id, refund);
}

pub async fn purge_dead_jobs_by_filter(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let a = make_dead(&ctx, "p", "mail", "bounce").await;
    let b = make_dead(&ctx, "p", "sms", "bounce").await;
    let live = e.enqueue(job("p", 1)).await.unwrap().id;
    let n = e
        .purge_dead(DeadFilter {
            queue: "p".into(),
            kind: Some("mail".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(matches!(e.get(a).await, Err(Error::NotFound(_))));
    assert_eq!(e.get(b).await.unwrap().state, JobState::Dead);
    let n = e
        .purge_dead(DeadFilter {
            queue: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        e.get(live).await.unwrap().state,
        JobState::Waiting,
        "purge touches dead jobs only"
    );
}

pub async fn promote_a_delayed_job(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let id = e
        .enqueue(job("q", 1).with_options(JobOptions {
            delay_ms: Some(3_600_000),
            ..Default::default()
        }))
        .await
        .unwrap()
        .id;
    assert!(claim(e, "q", "w", 1).await.is_empty());
    e.promote(id).await.unwrap();
    let j = claim_one(e, "q").await;
    assert_eq!(j.id, id);
    assert!(
        matches!(e.promote(id).await, Err(Error::Conflict(_))),
        "only delayed jobs"
    );
}

pub async fn paused_queue_accepts_but_hands_out_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.pause("q").await.unwrap();
    assert!(e.queue_info("q").await.unwrap().paused);
    e.enqueue(job("q", 1)).await.unwrap();
    e.enqueue(job("other", 1)).await.unwrap();
    let got = e
        .claim(Claim {
            queues: vec!["q".into(), "other".into()],
            worker_id: "w".into(),
            limit: 10,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].queue, "other");
    assert!(e.stats("q").await.unwrap().paused);
    e.resume("q").await.unwrap();
    assert!(!e.stats("q").await.unwrap().paused);
    assert_eq!(claim(e, "q", "w", 10).await.len(), 1);
    // Pausing keeps the configuration, and configuring keeps the pause.
    e.set_queue_config(
        "q",
        QueueConfig {
            max_attempts: 9,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.pause("q").await.unwrap();
    let info = e.queue_info("q").await.unwrap();
    assert!(info.paused);
    assert_eq!(info.config.max_attempts, 9);
}

/// The audit log keeps every entry, newest first, paged by id, with its detail as written.
pub async fn audit_log_appends_and_pages_newest_first(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    assert!(e.audit_log(None, 10).await.unwrap().is_empty());
    for i in 0..5 {
        let detail = serde_json::json!({"count": i, "filter": {"kind": "charge"}});
        e.audit("ops", "dead.replay", &format!("q{i}"), Some(&detail))
            .await
            .unwrap();
        ctx.clock.advance(10);
    }
    e.audit("anonymous", "queue.pause", "mail", None)
        .await
        .unwrap();
    let all = e.audit_log(None, 10).await.unwrap();
    let targets: Vec<&str> = all.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["mail", "q4", "q3", "q2", "q1", "q0"]);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[0].key, "anonymous");
    assert!(all[0].detail.is_none());
    assert_eq!(all[1].action, "dead.replay");
    assert_eq!(all[5].at + 40, all[1].at);
    let detail: serde_json::Value =
        serde_json::from_str(all[1].detail.as_ref().unwrap().get()).unwrap();
    assert_eq!(detail["filter"]["kind"], "charge");
    let page = e.audit_log(Some(all[2].id), 2).await.unwrap();
    let targets: Vec<&str> = page.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["q2", "q1"]);
    assert!(matches!(
        e.audit_log(None, 0).await,
        Err(Error::Invalid { .. })
    ));
}

/// A search by unique key finds the jobs holding it, in the state asked for, and no other.
pub async fn list_by_unique_key(f: Fixture) {
    use errand_core::store::JobList;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let keyed = |i: u64, key: &str| {
        job("uk", i).with_options(JobOptions {
            unique_key: Some(key.into()),
            ..Default::default()
        })
    };
    let a = e.enqueue(keyed(1, "order-1")).await.unwrap().id;
    e.enqueue(keyed(2, "order-2")).await.unwrap();
    e.enqueue(job("uk", 3)).await.unwrap();
    e.enqueue(job("uk-other", 4).with_options(JobOptions {
        unique_key: Some("order-1".into()),
        ..Default::default()
    }))
    .await
    .unwrap();
    let find = |key: &str, state: JobState| JobList {
        queue: "uk".into(),
        state,
        kind: None,
        unique_key: Some(key.into()),
        after: None,
        limit: 10,
    };
    let page = e
        .list_where(find("order-1", JobState::Waiting))
        .await
        .unwrap();
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, [a]);
    assert!(
        e.list_where(find("order-1", JobState::Completed))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(
        e.list_where(find("order-9", JobState::Waiting))
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(matches!(
        e.list_where(find("", JobState::Waiting)).await,
        Err(Error::Invalid { .. })
    ));
}

pub async fn list_pages_with_a_cursor(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let ids: Vec<JobId> = e
        .enqueue_many((0..25).map(|i| job("l", i)).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect();
    claim(e, "l", "w", 5).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = e.list("l", JobState::Waiting, after, 7).await.unwrap();
        assert!(page.jobs.len() <= 7);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ids[5..].to_vec(),
        "every waiting job once, in id order"
    );
    let active = e.list("l", JobState::Active, None, 100).await.unwrap();
    assert_eq!(active.jobs.len(), 5);
    assert!(active.next.is_none());
    assert!(matches!(
        e.list("l", JobState::Waiting, None, 0).await,
        Err(Error::Invalid { .. })
    ));
}

pub async fn queue_stats_count_states_and_oldest_age(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let empty = e.stats("s").await.unwrap();
    assert_eq!((empty.waiting, empty.oldest_waiting_age_ms), (0, 0));
    for i in 0..4 {
        e.enqueue(job("s", i)).await.unwrap();
    }
    e.enqueue(job("s", 9).with_options(JobOptions {
        delay_ms: Some(60_000),
        ..Default::default()
    }))
    .await
    .unwrap();
    ctx.clock.advance(7_000);
    let j = claim_one(e, "s").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    let j = claim_one(e, "s").await;
    e.fail(j.id, token(&j), Failure::fatal("no")).await.unwrap();
    claim_one(e, "s").await;
    let s = e.stats("s").await.unwrap();
    assert_eq!(
        (
            s.waiting,
            s.delayed,
            s.active,
            s.completed,
            s.cancelled,
            s.dead
        ),
        (1, 1, 1, 1, 0, 1)
    );
    assert_eq!(s.oldest_waiting_age_ms, 7_000);
    assert_eq!(s.queue, "s");
    assert!(!s.paused);
    let names: Vec<String> = e
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["s".to_string()]);
}

/// The stats of every queue at once (what a metrics scrape reads) are each queue's stats.
pub async fn stats_of_all_queues_are_each_queues_stats(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    assert!(e.stats_all().await.unwrap().is_empty());
    for (q, n) in [("sa.b", 3), ("sa.a", 2), ("sa.c", 1)] {
        for i in 0..n {
            e.enqueue(job(q, i)).await.unwrap();
        }
    }
    e.pause("sa.c").await.unwrap();
    e.set_queue_config("sa.empty", errand_core::QueueConfig::default())
        .await
        .unwrap();
    ctx.clock.advance(2_500);
    let j = claim_one(e, "sa.b").await;
    e.fail(j.id, token(&j), Failure::fatal("no")).await.unwrap();
    claim_one(e, "sa.a").await;
    let all = e.stats_all().await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.queue.as_str()).collect();
    assert_eq!(names, ["sa.a", "sa.b", "sa.c", "sa.empty"]);
    for s in &all {
        assert_eq!(*s, e.stats(&s.queue).await.unwrap(), "{}", s.queue);
    }
    let b = &all[1];
    assert_eq!((b.waiting, b.dead, b.oldest_waiting_age_ms), (2, 1, 2_500));
    assert!(all[2].paused);
    let empty = &all[3];
    assert_eq!((empty.waiting, empty.dead, empty.paused), (0, 0, false));
}

pub async fn unique_key_returns_the_existing_job_within_its_window(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "u",
        QueueConfig {
            unique_window: UniqueWindow::Ms(10_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let uk = |n: u64| {
        job("u", n).with_options(JobOptions {
            unique_key: Some("order-1".into()),
            ..Default::default()
        })
    };
    let first = e.enqueue(uk(1)).await.unwrap();
    assert!(first.created);
    let dup = e.enqueue(uk(2)).await.unwrap();
    assert!(!dup.created, "the existing job is returned and says so");
    assert_eq!(dup.id, first.id);
    assert_eq!(dup.state, JobState::Waiting);
    // Also while active, and within one batch.
    let j = claim_one(e, "u").await;
    let batch = e.enqueue_many(vec![uk(3), uk(4)]).await.unwrap();
    assert!(
        batch
            .iter()
            .all(|b| !b.created && b.id == first.id && b.state == JobState::Active)
    );
    // Finished: refused within the window, accepted after it.
    e.complete(j.id, token(&j), None).await.unwrap();
    ctx.clock.advance(9_999);
    let within = e.enqueue(uk(5)).await.unwrap();
    assert_eq!((within.created, within.id), (false, first.id));
    assert_eq!(within.state, JobState::Completed);
    ctx.clock.advance(2);
    let after = e.enqueue(uk(6)).await.unwrap();
    assert!(after.created);
    assert_ne!(after.id, first.id);
    // A batch with two new jobs sharing a key makes one.
    let pair = e
        .enqueue_many(vec![
            job("u", 7).with_options(JobOptions {
                unique_key: Some("k2".into()),
                ..Default::default()
            }),
            job("u", 8).with_options(JobOptions {
                unique_key: Some("k2".into()),
                ..Default::default()
            }),
        ])
        .await
        .unwrap();
    assert!(pair[0].created && !pair[1].created);
    assert_eq!(pair[0].id, pair[1].id);
    // The same key in another queue is another job.
    let elsewhere = e
        .enqueue(job("u2", 1).with_options(JobOptions {
            unique_key: Some("order-1".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(elsewhere.created);
}

/// A revived job (retried, replayed) never runs beside another job holding its key. A dead job holds
/// its key itself, so the repeat of a dead job is answered with it (to be replayed), not run beside it;
/// a cancelled job holds none, so its successor may exist, and then the cancelled job stays where it is.
pub async fn retry_and_replay_respect_the_unique_key(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.set_queue_config(
        "u",
        QueueConfig {
            unique_window: UniqueWindow::Ms(10_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let uk = |n: u64| {
        job("u", n).with_options(JobOptions {
            unique_key: Some("order-9".into()),
            max_attempts: Some(1),
            ..Default::default()
        })
    };
    let a = e.enqueue(uk(1)).await.unwrap().id;
    let j = claim_one(e, "u").await;
    e.fail(j.id, token(&j), Failure::retryable("down"))
        .await
        .unwrap();
    // A is dead and holds the key: the repeat is A.
    let again = e.enqueue(uk(2)).await.unwrap();
    assert_eq!(
        (again.created, again.id, again.state),
        (false, a, JobState::Dead)
    );
    let n = e
        .replay_dead(DeadFilter {
            queue: "u".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1, "nothing else holds the key");
    assert_eq!(e.get(a).await.unwrap().state, JobState::Waiting);
    // Cancelled, A lets B take the key; then A may not run beside B, nor after it within the window.
    e.cancel(a).await.unwrap();
    let b = e.enqueue(uk(3)).await.unwrap();
    assert!(b.created);
    assert!(
        matches!(e.retry(a).await, Err(Error::Conflict(_))),
        "B holds the key"
    );
    assert_eq!(
        e.get(a).await.unwrap().state,
        JobState::Cancelled,
        "left as it was"
    );
    let j = claim_one(e, "u").await;
    e.complete(j.id, token(&j), None).await.unwrap();
    assert!(
        matches!(e.retry(a).await, Err(Error::Conflict(_))),
        "B completed within the window"
    );
    // Once B's window has passed, A may run again.
    ctx.clock.advance(10_001);
    e.retry(a).await.unwrap();
    assert_eq!(e.get(a).await.unwrap().state, JobState::Waiting);
}

pub async fn a_queue_named_twice_in_a_claim_counts_once(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    e.enqueue_many((0..4).map(|i| job("q", i)).collect())
        .await
        .unwrap();
    let got = e
        .claim(Claim {
            queues: vec!["q".into(), "q".into()],
            worker_id: "w".into(),
            limit: 4,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    let too_many = Claim {
        queues: (0..e.limits().max_claim_queues + 1)
            .map(|i| format!("q{i}"))
            .collect(),
        worker_id: "w".into(),
        limit: 1,
        heartbeat_ms: None,
    };
    assert!(
        matches!(e.claim(too_many).await, Err(Error::Invalid { field, .. }) if field == "queues")
    );
}

pub async fn dedup_replace_updates_a_waiting_job_and_reject_keeps_it(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let with = |n: u64, dedup: Dedup, delay_ms: Option<u64>| {
        job("d", n).with_options(JobOptions {
            unique_key: Some("order-7".into()),
            dedup,
            delay_ms,
            ..Default::default()
        })
    };
    // Debounce: each repeat pushes the delayed job's run time back and takes its payload.
    let first = e
        .enqueue(with(1, Dedup::Replace, Some(1_000)))
        .await
        .unwrap();
    assert!(first.created && !first.replaced);
    ctx.clock.advance(600);
    let again = e
        .enqueue(with(2, Dedup::Replace, Some(1_000)))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert!(!again.created && again.replaced);
    let j = e.get(first.id).await.unwrap();
    assert_eq!(payload(&j), json!({"n": 2}));
    assert_eq!(j.run_at, ctx.clock.now() + 1_000, "run time pushed back");
    assert_eq!(j.state, JobState::Delayed);

    // Reject (the default) answers the existing job and changes nothing.
    let kept = e.enqueue(with(3, Dedup::Reject, None)).await.unwrap();
    assert!(!kept.created && !kept.replaced);
    assert_eq!(payload(&e.get(first.id).await.unwrap()), json!({"n": 2}));

    // A replace without delay makes the job due now.
    let due = e.enqueue(with(4, Dedup::Replace, None)).await.unwrap();
    assert!(due.replaced);
    assert_eq!(due.state, JobState::Waiting);
    let claimed = claim_one(e, "d").await;
    assert_eq!(payload(&claimed), json!({"n": 4}));

    // An active job keeps the input its attempt runs with.
    let late = e.enqueue(with(5, Dedup::Replace, None)).await.unwrap();
    assert_eq!(late.id, first.id);
    assert!(!late.replaced);
    assert_eq!(payload(&e.get(first.id).await.unwrap()), json!({"n": 4}));

    // Replace names the job by its unique key: without one it is refused.
    let bad = job("d", 6).with_options(JobOptions {
        dedup: Dedup::Replace,
        ..Default::default()
    });
    match e.enqueue(bad).await {
        Err(err @ Error::Invalid { .. }) => assert_eq!(err.field(), Some("dedup")),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
