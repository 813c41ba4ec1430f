//! Rule 7 under real concurrency: unique keys, exactly-once claims, and one outcome per job when workers
//! and the reaper race.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use errand_core::{Ack, Claim, Error, Failure, JobId, JobOptions, JobState};

use crate::support::{job, token};
use crate::{Ctx, Fixture};

pub async fn concurrent_enqueues_with_one_unique_key_make_one_job(f: Fixture) {
    let ctx = Ctx::new(f);
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let e = ctx.engine.clone();
        tasks.push(tokio::spawn(async move {
            e.enqueue(job("u", i).with_options(JobOptions {
                unique_key: Some("the-one".into()),
                ..Default::default()
            }))
            .await
            .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        let out = t.await.unwrap();
        ids.insert(out.id);
        created += out.created as u32;
    }
    assert_eq!(ids.len(), 1, "every enqueue got the same job");
    assert_eq!(created, 1, "exactly one was told it created it");
    assert_eq!(ctx.engine.stats("u").await.unwrap().waiting, 1);
}

pub async fn eight_claimers_claim_ten_thousand_jobs_exactly_once(f: Fixture) {
    let ctx = Ctx::new(f);
    const N: u64 = 10_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(1_000) {
        ctx.engine
            .enqueue_many(chunk.iter().map(|i| job("c", *i)).collect())
            .await
            .unwrap();
    }
    let claimed: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let e = ctx.engine.clone();
        let claimed = claimed.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let jobs = e
                    .claim(Claim {
                        queues: vec!["c".into()],
                        worker_id: format!("w{w}"),
                        limit: 1 + (w % 4) * 16,
                        heartbeat_ms: None,
                    })
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    break;
                }
                let acks = jobs
                    .iter()
                    .map(|j| Ack::Complete {
                        id: j.id,
                        token: token(j),
                        result: None,
                    })
                    .collect();
                for r in e.ack(acks).await.unwrap() {
                    r.unwrap();
                }
                claimed.lock().unwrap().extend(jobs.iter().map(|j| j.id));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claimed = std::mem::take(&mut *claimed.lock().unwrap());
    let unique: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len() as u64, N, "no job claimed twice");
    assert_eq!(unique.len() as u64, N, "every job claimed");
    let s = ctx.engine.stats("c").await.unwrap();
    assert_eq!((s.completed, s.waiting, s.active), (N, 0, 0));
}

pub async fn concurrent_acks_and_reaper_record_one_outcome(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    const N: u64 = 200;
    e.enqueue_many(
        (0..N)
            .map(|i| {
                // A promised heartbeat, so that an expired lease is a stall rather than a timeout.
                job("race", i).with_options(JobOptions {
                    max_stalled: Some(10),
                    heartbeat_ms: Some(1_000),
                    ..Default::default()
                })
            })
            .collect(),
    )
    .await
    .unwrap();
    let jobs = e
        .claim(Claim {
            queues: vec!["race".into()],
            worker_id: "w".into(),
            limit: N as usize,
            heartbeat_ms: None,
        })
        .await
        .unwrap();
    // Every lease has expired; the worker's late acks race the reaper and a second worker.
    ctx.clock.advance(jobs[0].lease_ms as i64);
    let mut tasks = Vec::new();
    for j in jobs.clone() {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            if j.id
                .to_string()
                .ends_with(['0', '1', '2', '3', '4', '5', '6', '7'])
            {
                e.complete(j.id, token(&j), None).await.map(|o| o.state)
            } else {
                e.fail(j.id, token(&j), Failure::retryable("late"))
                    .await
                    .map(|o| o.state)
            }
        }));
    }
    let reaper = {
        let e = e.clone();
        tokio::spawn(async move { e.maintain().await.unwrap() })
    };
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(Error::LeaseLost) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let report = reaper.await.unwrap();
    // Each job was settled by exactly one of them: the worker's ack or the reaper's stall.
    assert_eq!(
        accepted + report.stalled,
        N,
        "acks {accepted} + stalls {}",
        report.stalled
    );
    for j in &jobs {
        let got = e.get(j.id).await.unwrap();
        assert!(got.lease.is_none());
        match (got.stalls, got.state, got.errors.len()) {
            (1, JobState::Waiting, 1) => {}   // the reaper's stall, alone
            (0, JobState::Completed, 0) => {} // the worker's completion, alone
            (0, JobState::Delayed | JobState::Waiting, 1) => {} // the worker's failure, alone
            other => panic!("{}: two outcomes or none: {other:?}", j.id),
        }
    }
}
