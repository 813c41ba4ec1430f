//! The operations of a case and how proptest generates them: what a step may do, with which job and
//! which token, and how often. What an operation does, to the engine and to the model, is `steps.rs`'s.

use errand_core::BackoffKind;
use proptest::prelude::*;

#[derive(Debug, Clone)]
pub(super) enum Op {
    Enqueue(NewSpec),
    Claim {
        queues: &'static [usize],
        limit: usize,
        worker: usize,
    },
    Heartbeat {
        job: Pick,
        token: Token,
    },
    Complete {
        job: Pick,
        token: Token,
    },
    Fail {
        job: Pick,
        token: Token,
        retryable: bool,
    },
    Cancel {
        job: Pick,
    },
    /// Moves the clock forward by this many milliseconds.
    Advance(i64),
    /// Moves the clock to `offset` ms from one of the upcoming instants where something falls due (a
    /// lease expiry, a deadline, a due time): the boundaries where an off-by-one hides.
    AdvanceTo {
        event: usize,
        offset: i64,
    },
    Maintain,
    Restart,
    /// A restart that also closes the store and opens it again over the same data (a plain restart
    /// when the fixture cannot reopen its store).
    Reopen,
}

#[derive(Debug, Clone)]
pub(super) struct NewSpec {
    pub(super) queue: usize,
    pub(super) priority: Option<i32>,
    pub(super) delay_ms: Option<u64>,
    pub(super) max_attempts: u32,
    pub(super) backoff: (BackoffKind, u64),
    /// `(timeout_ms, heartbeat_ms)`.
    pub(super) timing: (u64, Option<u64>),
    pub(super) max_stalled: u32,
}

/// Which job an operation is about. Indices are taken modulo what exists when the step runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick {
    /// One of the jobs the model says are active (any job if none is): most worker calls are made
    /// while holding a job.
    Active(usize),
    /// Any job of the case, in enqueue order.
    Any(usize),
}

/// Which lease token an operation presents. Indices are taken modulo what exists when the step runs,
/// so that any generated sequence means something and shrinks well.
#[derive(Debug, Clone, Copy)]
pub(super) enum Token {
    /// The job's latest claim.
    Latest,
    /// An earlier claim of the same job (a worker that paused past its lease).
    Earlier(usize),
    /// Any claim's token, most often another job's.
    OfClaim(usize),
    /// A token no claim issued.
    Forged,
}

const QUEUE_SETS: &[&[usize]] = &[&[0], &[1], &[0, 1], &[1, 0]];
pub(super) const FORGED: &str = "00000000000000000000000000000000";

/// Timeout and heartbeat pairs: with a short heartbeat the lease runs out before the deadline (a
/// stall, unless heartbeats keep it alive until the timeout); without one, or with a long one, the
/// deadline comes first (a timeout), and a heartbeat as long as the timeout is capped by it.
const TIMINGS: &[(u64, Option<u64>)] = &[
    (1_000, None),
    (3_000, None),
    (20_000, Some(1_000)),
    (12_000, Some(8_000)),
    (10_000, Some(10_000)),
    (30_000, Some(2_000)),
    (60_000, Some(100)),
];

fn token() -> impl Strategy<Value = Token> {
    prop_oneof![
        6 => Just(Token::Latest),
        2 => (0..4usize).prop_map(Token::Earlier),
        2 => (0..8usize).prop_map(Token::OfClaim),
        1 => Just(Token::Forged),
    ]
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    let priority = prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(500)),
        Just(Some(1_000))
    ];
    let delay = prop_oneof![
        3 => Just(None),
        1 => Just(Some(0)),
        2 => prop::sample::select(vec![1u64, 1_000, 5_000, 7_000]).prop_map(Some),
        1 => (1..20_000u64).prop_map(Some),
    ];
    let backoff = (
        prop_oneof![Just(BackoffKind::Fixed), Just(BackoffKind::Exponential)],
        prop::sample::select(vec![0u64, 1, 1_000, 5_000]),
    );
    (
        0..2usize,
        priority,
        delay,
        1..=4u32,
        backoff,
        prop::sample::select(TIMINGS),
        0..=2u32,
    )
        .prop_map(
            |(queue, priority, delay_ms, max_attempts, backoff, timing, max_stalled)| NewSpec {
                queue,
                priority,
                delay_ms,
                max_attempts,
                backoff,
                timing,
                max_stalled,
            },
        )
}

fn pick(active: u32) -> impl Strategy<Value = Pick> {
    prop_oneof![
        active => (0..4usize).prop_map(Pick::Active),
        1 => (0..12usize).prop_map(Pick::Any),
    ]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => new_spec().prop_map(Op::Enqueue),
        7 => (prop::sample::select(QUEUE_SETS), 1..=3usize, 0..3usize)
            .prop_map(|(queues, limit, worker)| Op::Claim { queues, limit, worker }),
        3 => (pick(3), token()).prop_map(|(job, token)| Op::Heartbeat { job, token }),
        5 => (pick(3), token()).prop_map(|(job, token)| Op::Complete { job, token }),
        5 => (pick(3), token(), prop::bool::weighted(0.75))
            .prop_map(|(job, token, retryable)| Op::Fail { job, token, retryable }),
        2 => pick(1).prop_map(|job| Op::Cancel { job }),
        4 => prop_oneof![1..=5i64, 6..2_000i64, 2_000..30_000i64, 30_000..120_000i64]
            .prop_map(Op::Advance),
        3 => (0..6usize, -1..=1i64).prop_map(|(event, offset)| Op::AdvanceTo { event, offset }),
        5 => Just(Op::Maintain),
        // A reopen costs a PostgreSQL store a new pool: rarer than a plain restart.
        2 => prop::bool::weighted(0.25)
            .prop_map(|reopen| if reopen { Op::Reopen } else { Op::Restart }),
    ]
}
