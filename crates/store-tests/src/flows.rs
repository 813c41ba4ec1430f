//! Flows: a parent waits in `waiting_children` until each child completed; a child's death fails or
//! releases it; the parent reads its children's results. Each rule is applied by the store in the
//! transaction of the child's change.

use std::sync::Arc;

use errand_core::{DeadReason, Error, Failure, JobOptions, JobState, NewJob, ParentOnDead};
use serde_json::json;

use crate::support::{claim, claim_one, job, state, token};
use crate::{Ctx, Fixture};

fn child(queue: &str, n: u64, on_dead: ParentOnDead) -> NewJob {
    job(queue, n).with_options(JobOptions {
        parent_on_dead: on_dead,
        ..Default::default()
    })
}

pub async fn a_parent_runs_once_every_child_completed_and_reads_their_results(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let mut events = e.subscribe();
    let flow = e
        .enqueue_flow(
            job("reports", 0),
            vec![job("parts", 1), job("parts", 2), job("other", 3)],
        )
        .await
        .unwrap();
    assert_eq!(flow.parent.state, JobState::WaitingChildren);
    let parent = e.get(flow.parent.id).await.unwrap();
    assert_eq!(parent.pending_children, 3);
    assert!(
        claim(e, "reports", "w", 10).await.is_empty(),
        "not before its children"
    );
    assert_eq!(e.stats("reports").await.unwrap().waiting_children, 1);

    let parts = claim(e, "parts", "w", 10).await;
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|c| c.parent_id == Some(flow.parent.id)));
    for c in &parts {
        let n = crate::support::payload(c)["n"].as_u64().unwrap();
        e.complete(c.id, token(c), Some(json!({ "part": n })))
            .await
            .unwrap();
    }
    let parent = e.get(flow.parent.id).await.unwrap();
    assert_eq!(
        (parent.state, parent.pending_children),
        (JobState::WaitingChildren, 1)
    );
    let last = claim_one(e, "other").await;
    // A retried attempt is not an end: the parent keeps waiting.
    e.fail(last.id, token(&last), Failure::retryable("once more"))
        .await
        .unwrap();
    assert_eq!(state(e, &parent).await, JobState::WaitingChildren);
    ctx.clock.advance(60_000); // past its backoff
    let last = claim_one(e, "other").await;
    e.complete(last.id, token(&last), Some(json!({ "part": 3 })))
        .await
        .unwrap();

    let parent = claim_one(e, "reports").await;
    assert_eq!(parent.id, flow.parent.id);
    let children = e.children(parent.id).await.unwrap();
    let results: Vec<String> = children
        .iter()
        .map(|c| c.result.as_ref().unwrap().get().to_string())
        .collect();
    assert_eq!(
        results,
        vec![r#"{"part":1}"#, r#"{"part":2}"#, r#"{"part":3}"#],
        "in the order enqueued"
    );
    let mut moved = false;
    while let Ok(ev) = events.try_recv() {
        moved |= ev.job_id == flow.parent.id
            && ev.from == Some(JobState::WaitingChildren)
            && ev.to == JobState::Waiting;
    }
    assert!(moved, "the parent's move is announced");
}

pub async fn a_dead_child_fails_its_parent_or_releases_it(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // fail (the default): the parent dies with the child.
    let a = e
        .enqueue_flow(job("p", 0), vec![job("c", 1), job("c", 2)])
        .await
        .unwrap();
    let c = claim_one(e, "c").await;
    e.fail(c.id, token(&c), Failure::fatal("bad input"))
        .await
        .unwrap();
    let parent = e.get(a.parent.id).await.unwrap();
    assert_eq!(parent.state, JobState::Dead);
    assert_eq!(parent.dead_reason, Some(DeadReason::ChildDead));
    assert!(parent.errors[0].message.contains(&c.id.to_string()));
    // The parent is a dead letter like any: grouped by its error, and so is the child.
    let groups = e.dead_groups("p", 10).await.unwrap();
    assert_eq!(groups.scanned, 1);
    assert_eq!(groups.groups[0].fingerprint, parent.error_fingerprint());
    assert_eq!(groups.groups[0].sample_job_id, parent.id);
    assert_eq!(e.dead_groups("c", 10).await.unwrap().scanned, 1);
    // Its other child goes on; finishing it changes nothing for the dead parent.
    let other = claim_one(e, "c").await;
    e.complete(other.id, token(&other), None).await.unwrap();
    assert_eq!(e.get(a.parent.id).await.unwrap().state, JobState::Dead);

    // release: the parent stops waiting for the dead child and runs when the rest completed.
    let b = e
        .enqueue_flow(
            job("p", 10),
            vec![
                child("c2", 11, ParentOnDead::Release),
                child("c2", 12, ParentOnDead::Release),
            ],
        )
        .await
        .unwrap();
    let c = claim_one(e, "c2").await;
    e.fail(c.id, token(&c), Failure::fatal("optional part"))
        .await
        .unwrap();
    assert_eq!(
        e.get(b.parent.id).await.unwrap().state,
        JobState::WaitingChildren
    );
    let c = claim_one(e, "c2").await;
    e.complete(c.id, token(&c), None).await.unwrap();
    assert_eq!(e.get(b.parent.id).await.unwrap().state, JobState::Waiting);

    // A cancelled child counts as a dead one.
    let d = e
        .enqueue_flow(job("p", 20), vec![job("c3", 21)])
        .await
        .unwrap();
    e.cancel(d.children[0].id).await.unwrap();
    assert_eq!(e.get(d.parent.id).await.unwrap().state, JobState::Dead);

    // A waiting parent may be cancelled; its children go on.
    let g = e
        .enqueue_flow(job("p", 30), vec![job("c4", 31)])
        .await
        .unwrap();
    e.cancel(g.parent.id).await.unwrap();
    let c = claim_one(e, "c4").await;
    e.complete(c.id, token(&c), None).await.unwrap();
    assert_eq!(e.get(g.parent.id).await.unwrap().state, JobState::Cancelled);
}

pub async fn a_flow_is_all_or_nothing_and_names_the_bad_field(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let field = |r: Result<errand_core::FlowEnqueued, Error>| match r {
        Err(err) => err.field().map(str::to_string),
        Ok(_) => None,
    };
    let bad_kind = NewJob::new("c", "", json!({}));
    assert_eq!(
        field(
            e.enqueue_flow(job("p", 0), vec![job("c", 1), bad_kind])
                .await
        )
        .as_deref(),
        Some("children[1].kind")
    );
    let mut unique = job("p", 0);
    unique.options.unique_key = Some("k".into());
    assert_eq!(
        field(e.enqueue_flow(unique, vec![job("c", 1)]).await).as_deref(),
        Some("parent.unique_key")
    );
    assert_eq!(
        field(e.enqueue_flow(job("p", 0), vec![]).await).as_deref(),
        Some("children")
    );
    for q in ["p", "c"] {
        let s = e.stats(q).await.unwrap();
        assert_eq!(s.waiting + s.waiting_children, 0, "nothing written in {q}");
    }
    assert!(matches!(
        e.children("01J00000000000000000000000".parse().unwrap())
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn children_completing_at_once_release_their_parent_once(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = Arc::new(ctx.engine.clone());
    let children: Vec<NewJob> = (0..40).map(|n| job("many", n)).collect();
    let flow = e.enqueue_flow(job("top", 0), children).await.unwrap();
    let jobs = claim(&e, "many", "w", 100).await;
    assert_eq!(jobs.len(), 40);
    let mut tasks = Vec::new();
    for chunk in jobs.chunks(5) {
        let e = Arc::clone(&e);
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for c in chunk {
                e.complete(c.id, token(&c), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let parent = e.get(flow.parent.id).await.unwrap();
    assert_eq!(
        (parent.state, parent.pending_children),
        (JobState::Waiting, 0)
    );
    assert_eq!(claim(&e, "top", "w", 10).await.len(), 1);
}

pub async fn a_child_counts_once_toward_its_parent_and_retention_keeps_it_for_the_parent(
    f: Fixture,
) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    // A released the parent when it died; retried and completed, it does not count again.
    let flow = e
        .enqueue_flow(
            job("p", 0),
            vec![child("c", 1, ParentOnDead::Release), job("c", 2)],
        )
        .await
        .unwrap();
    let a = claim(e, "c", "w", 1).await.remove(0);
    let b = claim(e, "c", "w", 1).await.remove(0);
    e.fail(a.id, token(&a), Failure::fatal("no")).await.unwrap();
    assert_eq!(e.get(flow.parent.id).await.unwrap().pending_children, 1);
    e.retry(a.id).await.unwrap();
    let a = claim_one(e, "c").await;
    e.complete(a.id, token(&a), None).await.unwrap();
    let parent = e.get(flow.parent.id).await.unwrap();
    assert_eq!(
        (parent.state, parent.pending_children),
        (JobState::WaitingChildren, 1),
        "B is still running"
    );
    e.complete(b.id, token(&b), None).await.unwrap();
    assert_eq!(
        e.get(flow.parent.id).await.unwrap().state,
        JobState::Waiting
    );

    // A parent retried after its child killed it waits for its children again.
    let g = e
        .enqueue_flow(job("p", 10), vec![job("c2", 11), job("c2", 12)])
        .await
        .unwrap();
    let x = claim(e, "c2", "w", 1).await.remove(0);
    e.fail(x.id, token(&x), Failure::fatal("no")).await.unwrap();
    assert_eq!(e.get(g.parent.id).await.unwrap().state, JobState::Dead);
    e.retry(g.parent.id).await.unwrap();
    assert_eq!(
        e.get(g.parent.id).await.unwrap().state,
        JobState::WaitingChildren
    );

    // Retention keeps a completed child while its parent may still read it.
    e.set_queue_config(
        "kept",
        errand_core::QueueConfig {
            retention: errand_core::Retention {
                max_count: Some(0),
                max_age_ms: Some(0),
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let h = e
        .enqueue_flow(job("p", 20), vec![job("kept", 21)])
        .await
        .unwrap();
    let k = claim_one(e, "kept").await;
    e.complete(k.id, token(&k), None).await.unwrap();
    e.enqueue(job("kept", 22)).await.unwrap();
    let other = claim_one(e, "kept").await;
    e.complete(other.id, token(&other), None).await.unwrap();
    ctx.clock.advance(1_000);
    e.maintain().await.unwrap();
    assert!(e.get(other.id).await.is_err(), "retention still works");
    assert!(e.get(k.id).await.is_ok(), "the parent has not read it yet");
    let p = claim(e, "p", "w", 10).await;
    let p = p.iter().find(|j| j.id == h.parent.id).unwrap();
    e.complete(p.id, token(p), None).await.unwrap();
    e.maintain().await.unwrap();
    assert!(e.get(k.id).await.is_err(), "gone once the parent finished");
}
