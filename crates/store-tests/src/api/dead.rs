//! Rule 7, dead letters: retry one, replay and purge by filter, group by error fingerprint, and revive
//! without breaking a unique key. How jobs come to die is the `retries` and `reaper` modules'.

use errand_core::{
    DeadFilter, Error, Failure, JobId, JobOptions, JobState, NewJob, QueueConfig, UniqueWindow,
};
use serde_json::json;

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

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
