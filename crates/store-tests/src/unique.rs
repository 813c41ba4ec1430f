//! Rule 7, unique keys past a job's end: a deterministic job id (`mint-<ticket>`) must never make the same
//! work run twice. A completed job holds its key for the queue's unique window — by default as long as
//! retention keeps completed jobs by age — even after retention removed its row; a dead job holds it while
//! it exists (it may be replayed); a cancelled job and a purged dead job hold nothing.

use errand_core::{
    Cancelled, DeadFilter, Dedup, Error, Failure, JobId, JobOptions, JobState, NewJob, QueueConfig,
    Retention, UniqueWindow,
};

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

const DAY: i64 = 86_400_000;

fn keyed(queue: &str, n: u64, key: &str) -> NewJob {
    job(queue, n).with_options(JobOptions {
        unique_key: Some(key.into()),
        max_attempts: Some(1),
        ..Default::default()
    })
}

/// Enqueues a job with `key` and completes it; answers its id.
async fn run_to_completion(ctx: &Ctx, queue: &str, key: &str) -> JobId {
    let e = &ctx.engine;
    let id = e.enqueue(keyed(queue, 1, key)).await.unwrap().id;
    let j = claim_one(e, queue).await;
    assert_eq!(j.id, id);
    e.complete(j.id, token(&j), None).await.unwrap();
    id
}

/// Asserts that an enqueue with `key` answers the job `holder` in `state`, creating nothing.
async fn assert_held(ctx: &Ctx, queue: &str, key: &str, holder: JobId, state: JobState) {
    let got = ctx.engine.enqueue(keyed(queue, 2, key)).await.unwrap();
    assert_eq!(
        (got.created, got.id, got.state),
        (false, holder, state),
        "the key {key} is held by {holder}"
    );
}

/// Asserts that an enqueue with `key` makes a new job; answers its id.
async fn assert_free(ctx: &Ctx, queue: &str, key: &str) -> JobId {
    let got = ctx.engine.enqueue(keyed(queue, 3, key)).await.unwrap();
    assert!(got.created, "the key {key} is free: a new job");
    got.id
}

/// The reproduction: enqueue, complete, enqueue again with default settings — the second
/// enqueue answers the first job. Six days later still; once retention's age (7 days) passed, free.
pub async fn a_completed_jobs_key_is_held_by_default_for_retentions_age(f: Fixture) {
    let ctx = Ctx::new(f);
    let a = run_to_completion(&ctx, "mint", "mint-t1").await;
    assert_held(&ctx, "mint", "mint-t1", a, JobState::Completed).await;
    ctx.clock.advance(6 * DAY);
    ctx.engine.maintain().await.unwrap();
    assert_held(&ctx, "mint", "mint-t1", a, JobState::Completed).await;
    ctx.clock.advance(DAY + 1);
    let report = ctx.engine.maintain().await.unwrap();
    assert_eq!(report.pruned, 1, "retention removed the job at its age");
    assert_free(&ctx, "mint", "mint-t1").await;
}

/// Retention by count removes the row long before its age: the key stays held, answered with the
/// removed job's id, until the window ends; then it is free.
pub async fn a_key_outlives_the_row_retention_removed(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let config = QueueConfig {
        retention: Retention {
            max_count: Some(0),
            max_age_ms: Some(2 * DAY as u64),
        },
        ..Default::default()
    };
    e.set_queue_config("mint", config).await.unwrap();
    let a = run_to_completion(&ctx, "mint", "mint-t2").await;
    assert_eq!(e.maintain().await.unwrap().pruned, 1);
    assert!(
        matches!(e.get(a).await, Err(Error::NotFound(_))),
        "the row is gone"
    );
    assert_held(&ctx, "mint", "mint-t2", a, JobState::Completed).await;
    ctx.clock.advance(2 * DAY - 1);
    e.maintain().await.unwrap();
    assert_held(&ctx, "mint", "mint-t2", a, JobState::Completed).await;
    ctx.clock.advance(1);
    e.maintain().await.unwrap();
    assert_free(&ctx, "mint", "mint-t2").await;
}

/// A window set in milliseconds ends there, whether the row is still kept or already removed; a window
/// of 0 frees the key when the job completes (the earlier default, now a choice).
pub async fn a_key_is_free_once_its_window_ended(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let window = |ms, max_count| QueueConfig {
        unique_window: UniqueWindow::Ms(ms),
        retention: Retention {
            max_count,
            max_age_ms: None,
        },
        ..Default::default()
    };
    // The row kept.
    e.set_queue_config("kept", window(1_000, None))
        .await
        .unwrap();
    let a = run_to_completion(&ctx, "kept", "k").await;
    ctx.clock.advance(999);
    assert_held(&ctx, "kept", "k", a, JobState::Completed).await;
    ctx.clock.advance(1);
    let b = assert_free(&ctx, "kept", "k").await;
    assert_ne!(a, b);
    // The row removed at once.
    e.set_queue_config("gone", window(1_000, Some(0)))
        .await
        .unwrap();
    let c = run_to_completion(&ctx, "gone", "k").await;
    e.maintain().await.unwrap();
    assert_held(&ctx, "gone", "k", c, JobState::Completed).await;
    ctx.clock.advance(1_000);
    e.maintain().await.unwrap();
    assert_free(&ctx, "gone", "k").await;
    // No window.
    e.set_queue_config("none", window(0, None)).await.unwrap();
    run_to_completion(&ctx, "none", "k").await;
    assert_free(&ctx, "none", "k").await;
}

/// `forever`: neither retention nor a year frees the key.
pub async fn a_key_held_forever_outlives_retention_and_years(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let config = QueueConfig {
        unique_window: UniqueWindow::Forever,
        retention: Retention {
            max_count: Some(0),
            max_age_ms: Some(3_600_000),
        },
        ..Default::default()
    };
    e.set_queue_config("mint", config).await.unwrap();
    let a = run_to_completion(&ctx, "mint", "mint-t3").await;
    ctx.clock.advance(400 * DAY);
    assert_eq!(e.maintain().await.unwrap().pruned, 1);
    e.maintain().await.unwrap();
    assert_held(&ctx, "mint", "mint-t3", a, JobState::Completed).await;
    // Retention with no age at all and the default window: for ever too.
    let config = QueueConfig {
        retention: Retention {
            max_count: Some(0),
            max_age_ms: None,
        },
        ..Default::default()
    };
    e.set_queue_config("ledger", config).await.unwrap();
    let b = run_to_completion(&ctx, "ledger", "mint-t3").await;
    e.maintain().await.unwrap();
    ctx.clock.advance(400 * DAY);
    e.maintain().await.unwrap();
    assert_held(&ctx, "ledger", "mint-t3", b, JobState::Completed).await;
}

/// A dead job may be replayed, so a repeat beside it could run the same work twice: it holds its key
/// (the repeat is answered with it, to be replayed) for as long as it exists. Purged, it holds nothing.
pub async fn a_dead_job_holds_its_key_until_purged(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let a = e.enqueue(keyed("mint", 1, "mint-t4")).await.unwrap().id;
    let j = claim_one(e, "mint").await;
    e.fail(j.id, token(&j), Failure::fatal("chain down"))
        .await
        .unwrap();
    ctx.clock.advance(30 * DAY);
    e.maintain().await.unwrap();
    assert_held(&ctx, "mint", "mint-t4", a, JobState::Dead).await;
    // A replay runs it once more, under the same key.
    e.retry(a).await.unwrap();
    assert_held(&ctx, "mint", "mint-t4", a, JobState::Waiting).await;
    let j = claim_one(e, "mint").await;
    e.fail(j.id, token(&j), Failure::fatal("chain down"))
        .await
        .unwrap();
    let purged = e
        .purge_dead(DeadFilter {
            queue: "mint".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_free(&ctx, "mint", "mint-t4").await;
}

/// Cancel means "not this job": the key is free for a new one at once. The cancelled job can then be
/// retried only while no other job holds the key — not beside its successor, nor after the successor
/// completed within the window (even once retention removed it), which would run the work twice.
pub async fn a_cancelled_job_frees_its_key_but_never_runs_beside_its_successor(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // One completed and one cancelled job kept: the newest of each.
    let config = QueueConfig {
        unique_window: UniqueWindow::Ms(DAY as u64),
        retention: Retention {
            max_count: Some(1),
            max_age_ms: None,
        },
        ..Default::default()
    };
    e.set_queue_config("mint", config).await.unwrap();
    let a = e.enqueue(keyed("mint", 1, "mint-t5")).await.unwrap().id;
    assert!(matches!(e.cancel(a).await.unwrap(), Cancelled::Cancelled));
    let b = assert_free(&ctx, "mint", "mint-t5").await;
    let refused = |r: Result<(), Error>| matches!(r, Err(Error::Conflict(_)));
    assert!(refused(e.retry(a).await), "B is waiting");
    let j = claim_one(e, "mint").await;
    assert_eq!(j.id, b);
    e.complete(j.id, token(&j), None).await.unwrap();
    assert!(refused(e.retry(a).await), "B completed within the window");
    // A newer completed job pushes B out; A, the only cancelled job, stays.
    run_to_completion(&ctx, "mint", "other").await;
    assert_eq!(e.maintain().await.unwrap().pruned, 1);
    assert!(matches!(e.get(b).await, Err(Error::NotFound(_))));
    assert!(
        refused(e.retry(a).await),
        "the ledger holds B's key within the window"
    );
    ctx.clock.advance(DAY + 1);
    e.retry(a).await.unwrap();
    assert_eq!(e.get(a).await.unwrap().state, JobState::Waiting);
}

/// `replace` changes nothing of a completed holder, and makes no new job beside it (a dead holder
/// goes the same way: `enqueue` replaces only a waiting or delayed job).
pub async fn replace_leaves_a_finished_holder_alone(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let a = run_to_completion(&ctx, "mint", "mint-t8").await;
    let again = e
        .enqueue(job("mint", 9).with_options(JobOptions {
            unique_key: Some("mint-t8".into()),
            dedup: Dedup::Replace,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        (again.created, again.replaced, again.id, again.state),
        (false, false, a, JobState::Completed)
    );
    assert_eq!(
        crate::support::payload(&e.get(a).await.unwrap()),
        serde_json::json!({"n": 1})
    );
}

/// Other dead jobs do not keep a job from being revived: several dead jobs may share a key (a cancelled
/// job's successor died; or made before dead jobs held keys), and the one revived first becomes the
/// holder the others then yield to.
pub async fn a_dead_job_does_not_keep_another_from_being_revived(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let a = e.enqueue(keyed("mint", 1, "mint-t9")).await.unwrap().id;
    e.cancel(a).await.unwrap();
    let b = assert_free(&ctx, "mint", "mint-t9").await;
    let j = claim_one(e, "mint").await;
    assert_eq!(j.id, b);
    e.fail(j.id, token(&j), Failure::fatal("chain down"))
        .await
        .unwrap();
    e.retry(a).await.unwrap();
    assert_eq!(e.get(a).await.unwrap().state, JobState::Waiting);
    assert!(
        matches!(e.retry(b).await, Err(Error::Conflict(_))),
        "A, revived, holds the key now"
    );
    assert_eq!(e.get(b).await.unwrap().state, JobState::Dead);
}
