//! Rule 7, what a claim hands out: priority then FIFO within a queue, the best jobs across the queues
//! named, and a queue named twice. Which claims pause or a delay holds back is `operate.rs`'s.

use errand_core::{Claim, Error, JobOptions, NewJob};

use crate::support::{claim, claim_one, job, payload};
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
