//! Cron schedules: each tick fires once (also with two engines racing), missed ticks follow the
//! policy, pause / resume / trigger, invalid definitions change nothing, and DST is followed.

use std::sync::Arc;

use errand_core::schedule::{ON_TIME_MS, tick_key};
use errand_core::{Engine, Error, JobState, Missed, ScheduleDef};
use serde_json::json;

use crate::support::{claim_one, job, token};
use crate::{Ctx, Fixture};

const MINUTE: i64 = 60_000;

/// 2026-10-24 12:00:00 UTC, a Saturday: the night after is Europe's autumn DST change.
const SAT_NOON_UTC: i64 = 1_792_843_200_000;

fn every_minute(queue: &str) -> ScheduleDef {
    ScheduleDef::new("* * * * *", queue, "tick", json!({ "from": "cron" }))
}

/// Jobs of `queue` in every state a fired job can be in here.
async fn jobs(engine: &Engine, queue: &str) -> Vec<errand_core::Job> {
    let mut out = Vec::new();
    for state in [JobState::Waiting, JobState::Delayed, JobState::Active] {
        out.extend(engine.list(queue, state, None, 1_000).await.unwrap().jobs);
    }
    out
}

pub async fn a_schedule_fires_each_tick_once(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    ctx.clock.set(SAT_NOON_UTC + 10_000);
    let s = e
        .put_schedule("minutely", every_minute("cron"))
        .await
        .unwrap();
    let first = SAT_NOON_UTC + MINUTE;
    assert_eq!(s.next_run_at, Some(first), "the next whole minute");
    assert_eq!(
        e.next_runs(&s, 3).unwrap(),
        vec![first, first + MINUTE, first + 2 * MINUTE]
    );

    assert_eq!(e.maintain().await.unwrap().scheduled, 0, "never early");
    ctx.clock.set(first);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);
    assert_eq!(e.maintain().await.unwrap().scheduled, 0, "never twice");
    ctx.clock.set(first + MINUTE + 500);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);

    let fired = jobs(e, "cron").await;
    assert_eq!(fired.len(), 2);
    let mut keys: Vec<_> = fired
        .iter()
        .map(|j| j.unique_key.clone().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            tick_key("minutely", first),
            tick_key("minutely", first + MINUTE)
        ]
    );
    assert!(fired.iter().all(|j| j.kind == "tick"));
    let s = e.schedule("minutely").await.unwrap();
    assert_eq!(s.last_run_at, Some(first + MINUTE));
    assert_eq!(s.next_run_at, Some(first + 2 * MINUTE));
    assert!(fired.iter().any(|j| Some(j.id) == s.last_job_id));
}

pub async fn missed_ticks_are_skipped_or_caught_up_once(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    const HOUR: i64 = 60 * MINUTE;
    let hourly = |queue: &str, missed: Missed| {
        let mut d = ScheduleDef::new("@hourly", queue, "tick", json!(null));
        d.missed = missed;
        d
    };
    ctx.clock.set(SAT_NOON_UTC);
    e.put_schedule("skip", hourly("skipped", Missed::Skip))
        .await
        .unwrap();
    e.put_schedule("catch", hourly("caught", Missed::CatchUpOne))
        .await
        .unwrap();

    // No pass for two hours: the 13:00 tick was missed, but the 14:00 one is seen 30 s late — on
    // time. Both fire once, for 14:00; the missed one is covered by it.
    ctx.clock.set(SAT_NOON_UTC + 2 * HOUR + 30_000);
    assert_eq!(e.maintain().await.unwrap().scheduled, 2);
    for (name, q) in [("skip", "skipped"), ("catch", "caught")] {
        let fired = jobs(e, q).await;
        assert_eq!(fired.len(), 1, "{q}");
        assert_eq!(
            fired[0].unique_key,
            Some(tick_key(name, SAT_NOON_UTC + 2 * HOUR))
        );
    }

    // Then an outage that ends half an hour after the 15:00 tick, past its grace: skip fires nothing,
    // catch_up_one one job, for that latest missed tick.
    const { assert!(30 * MINUTE > ON_TIME_MS) };
    ctx.clock.set(SAT_NOON_UTC + 3 * HOUR + 30 * MINUTE);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);
    assert_eq!(
        jobs(e, "skipped").await.len(),
        1,
        "skip: nothing for missed ticks"
    );
    assert_eq!(
        e.schedule("skip").await.unwrap().last_run_at,
        Some(SAT_NOON_UTC + 2 * HOUR),
        "last_run_at is the last tick that fired a job"
    );
    let caught = jobs(e, "caught").await;
    assert_eq!(caught.len(), 2, "catch_up_one: one job for them");
    assert!(
        caught
            .iter()
            .any(|j| j.unique_key == Some(tick_key("catch", SAT_NOON_UTC + 3 * HOUR))),
        "for the latest missed tick"
    );
    // Both wait for their next tick after now, and fire it once.
    for name in ["skip", "catch"] {
        let s = e.schedule(name).await.unwrap();
        assert_eq!(s.next_run_at, Some(SAT_NOON_UTC + 4 * HOUR), "{name}");
    }
    ctx.clock.set(SAT_NOON_UTC + 4 * HOUR);
    assert_eq!(e.maintain().await.unwrap().scheduled, 2);
    assert_eq!(e.maintain().await.unwrap().scheduled, 0);
}

pub async fn two_engines_racing_fire_each_of_100_ticks_once(f: Fixture) {
    let ctx = Ctx::new(f);
    // A second engine — another node — on the same store and clock.
    let other = Engine::new(
        ctx.engine.store().clone(),
        Arc::new(ctx.clock.clone()),
        Default::default(),
    );
    ctx.clock.set(SAT_NOON_UTC);
    let mut every_second = ScheduleDef::new("* * * * * *", "race", "tick", json!(null));
    every_second.missed = Missed::CatchUpOne;
    ctx.engine.put_schedule("race", every_second).await.unwrap();
    let mut fired = 0;
    for _ in 0..100 {
        ctx.clock.advance(1_000);
        let (a, b) = tokio::join!(ctx.engine.fire_schedules(), other.fire_schedules());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a + b <= 1, "a tick fired {} times", a + b);
        fired += a + b;
    }
    assert_eq!(fired, 100, "every tick fired");
    let jobs = jobs(&ctx.engine, "race").await;
    assert_eq!(jobs.len(), 100);
    let mut keys: Vec<_> = jobs.iter().map(|j| j.unique_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 100, "one job per tick");
}

pub async fn pause_resume_trigger_and_delete(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    ctx.clock.set(SAT_NOON_UTC);
    e.put_schedule("p", every_minute("paused")).await.unwrap();
    assert!(e.pause_schedule("p").await.unwrap().paused);
    ctx.clock.set(SAT_NOON_UTC + 5 * MINUTE);
    assert_eq!(e.maintain().await.unwrap().scheduled, 0, "paused");

    // A trigger enqueues at once, paused or not, outside the ticks.
    let job = e.trigger_schedule("p").await.unwrap();
    assert_eq!(job.state, JobState::Waiting);
    assert_eq!(e.get(job.id).await.unwrap().unique_key, None);

    // Resumed: from the next tick after now; what passed while paused is skipped.
    let s = e.resume_schedule("p").await.unwrap();
    assert!(!s.paused);
    assert_eq!(s.next_run_at, Some(SAT_NOON_UTC + 6 * MINUTE));
    assert_eq!(e.maintain().await.unwrap().scheduled, 0);
    ctx.clock.set(SAT_NOON_UTC + 6 * MINUTE);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);

    // Replacing keeps the history and the pause flag, and never fires a tick that passed.
    e.pause_schedule("p").await.unwrap();
    let mut hourly = every_minute("paused");
    hourly.cron = "@hourly".into();
    let s = e.put_schedule("p", hourly).await.unwrap();
    assert!(s.paused, "a replace does not undo a pause");
    assert!(e.schedule("p").await.unwrap().paused);
    e.resume_schedule("p").await.unwrap();
    assert_eq!(s.last_run_at, Some(SAT_NOON_UTC + 6 * MINUTE));
    assert_eq!(s.next_run_at, Some(SAT_NOON_UTC + 60 * MINUTE));
    assert_eq!(e.schedules().await.unwrap().len(), 1);

    e.delete_schedule("p").await.unwrap();
    assert!(matches!(e.schedule("p").await, Err(Error::NotFound(_))));
    assert!(matches!(
        e.delete_schedule("p").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        e.trigger_schedule("p").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(jobs(e, "paused").await.len(), 2, "its jobs stay");
}

pub async fn invalid_schedules_name_the_field_and_store_nothing(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    let field = |r: errand_core::Result<_>| match r {
        Err(err @ Error::Invalid { .. }) => err.field().unwrap_or_default().to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    };
    let mut d = every_minute("q");
    d.cron = "61 * * * *".into();
    assert_eq!(field(e.put_schedule("s", d).await), "cron");
    let mut d = every_minute("q");
    d.cron = "0 0 30 2 *".into();
    assert_eq!(field(e.put_schedule("s", d).await), "cron", "February 30th");
    let mut d = every_minute("q");
    d.timezone = "Mars/Olympus_Mons".into();
    assert_eq!(field(e.put_schedule("s", d).await), "timezone");
    let d = every_minute("no spaces");
    assert_eq!(field(e.put_schedule("s", d).await), "queue");
    let mut d = every_minute("q");
    d.max_attempts = Some(0);
    assert_eq!(field(e.put_schedule("s", d).await), "max_attempts");
    assert_eq!(
        field(e.put_schedule("bad name", every_minute("q")).await),
        "name"
    );
    assert!(e.schedules().await.unwrap().is_empty());
}

/// Europe/Berlin leaves summer time on 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens
/// twice. A daily 02:30 fires once that night, at the first 02:30 (00:30 UTC); an hourly schedule fires
/// every real hour, both 02:00s included.
pub async fn a_dst_change_fires_at_the_right_instants(f: Fixture) {
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    ctx.clock.set(SAT_NOON_UTC);
    let mut daily = ScheduleDef::new("30 2 * * *", "dst", "daily", json!(null));
    daily.timezone = "Europe/Berlin".into();
    let mut hourly = ScheduleDef::new("0 * * * *", "dst", "hourly", json!(null));
    hourly.timezone = "Europe/Berlin".into();
    e.put_schedule("daily", daily).await.unwrap();
    e.put_schedule("hourly", hourly).await.unwrap();

    // Walk the night minute by minute, as maintenance would, and note when each fires.
    let mut fired: Vec<(String, i64)> = Vec::new();
    let end = SAT_NOON_UTC + 24 * 60 * MINUTE;
    let mut now = SAT_NOON_UTC;
    while now < end {
        now += MINUTE;
        ctx.clock.set(now);
        let before = jobs(e, "dst").await.len();
        e.maintain().await.unwrap();
        for j in jobs(e, "dst").await.into_iter().skip(before) {
            fired.push((j.kind.clone(), j.created_at));
        }
        // Keep the list short: claim what fired.
        let claimed = e
            .claim(errand_core::Claim {
                queues: vec!["dst".into()],
                worker_id: "w".into(),
                limit: 100,
                heartbeat_ms: None,
            })
            .await
            .unwrap();
        for j in claimed {
            e.complete(j.id, j.lease.unwrap().token, None)
                .await
                .unwrap();
        }
    }
    let daily: Vec<i64> = fired
        .iter()
        .filter(|(k, _)| k == "daily")
        .map(|(_, t)| *t)
        .collect();
    // 2026-10-25 00:30 UTC = 02:30 CEST, the first of the two.
    assert_eq!(daily, vec![1_792_888_200_000], "the daily tick fired once");
    let hourly = fired.iter().filter(|(k, _)| k == "hourly").count();
    // From Saturday 12:00 UTC to Sunday 12:00 UTC: 24 real hours, one tick each.
    assert_eq!(hourly, 24, "every real hour, both 02:00s included");
}

/// The clock jumping back or forward by an hour or a day: no tick fires twice, a jump forward past
/// missed ticks catches up once (with `catch_up_one`), and no lease expires before its time has passed
/// on the clock since it was granted or renewed.
pub async fn clock_jumps_fire_no_tick_twice_and_expire_no_lease_early(f: Fixture) {
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let ctx = Ctx::new(f);
    let e = &ctx.engine;
    ctx.clock.set(SAT_NOON_UTC);
    let mut def = every_minute("jump");
    def.missed = Missed::CatchUpOne;
    e.put_schedule("jumpy", def).await.unwrap();
    let first = SAT_NOON_UTC + MINUTE;
    ctx.clock.set(first);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);

    // Back an hour, then a day: nothing is due again, and walking forward to the fired tick fires
    // nothing; the next tick fires once.
    for back in [HOUR, DAY] {
        ctx.clock.set(first - back);
        assert_eq!(e.maintain().await.unwrap().scheduled, 0, "back {back}");
        ctx.clock.set(first + 30_000);
        assert_eq!(e.maintain().await.unwrap().scheduled, 0, "back {back}");
    }
    ctx.clock.set(first + MINUTE);
    assert_eq!(e.maintain().await.unwrap().scheduled, 1);
    assert_eq!(e.maintain().await.unwrap().scheduled, 0);

    // Forward an hour, then a day: each jump catches up once, for the latest missed tick.
    let mut now = first + MINUTE;
    for ahead in [HOUR, DAY] {
        now += ahead + 30 * MINUTE + 10_000;
        ctx.clock.set(now);
        assert_eq!(e.maintain().await.unwrap().scheduled, 1, "ahead {ahead}");
        assert_eq!(e.maintain().await.unwrap().scheduled, 0, "ahead {ahead}");
    }
    let fired = jobs(e, "jump").await;
    assert_eq!(fired.len(), 4, "two on time, one per jump ahead");
    let mut keys: Vec<_> = fired.iter().map(|j| j.unique_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "each for a tick of its own");

    // A lease: the clock going back delays its end, never brings it forward.
    e.enqueue(job("lease-jump", 1).with_options(errand_core::JobOptions {
        heartbeat_ms: Some(1_000),
        timeout_ms: Some(2 * DAY as u64),
        ..Default::default()
    }))
    .await
    .unwrap();
    let granted = errand_core::Clock::now(&ctx.clock);
    let j = claim_one(e, "lease-jump").await;
    let expires = j.lease.as_ref().unwrap().expires_at;
    for back in [HOUR, DAY] {
        ctx.clock.set(granted - back);
        e.maintain().await.unwrap();
        assert_eq!(
            e.get(j.id).await.unwrap().state,
            JobState::Active,
            "back {back}"
        );
    }
    ctx.clock.set(expires - 1);
    e.maintain().await.unwrap();
    assert_eq!(e.get(j.id).await.unwrap().state, JobState::Active);
    e.heartbeat(j.id, token(&j), None).await.unwrap();
    ctx.clock.set(expires + j.lease_ms as i64 - 2);
    e.maintain().await.unwrap();
    assert_eq!(
        e.get(j.id).await.unwrap().state,
        JobState::Active,
        "renewed at expires - 1: good for a whole lease from then"
    );
    ctx.clock.set(expires + j.lease_ms as i64);
    e.maintain().await.unwrap();
    assert_ne!(
        e.get(j.id).await.unwrap().state,
        JobState::Active,
        "then it ends"
    );
}

/// The clock's values in the order they were set, so that a worker can tell whether the clock reached
/// a lease's end between two moments of its own.
#[derive(Debug, Default)]
struct ClockLog(std::sync::Mutex<Vec<i64>>);

impl ClockLog {
    fn set(&self, clock: &errand_core::ManualClock, t: i64) {
        let mut values = self.0.lock().unwrap();
        clock.set(t);
        values.push(t);
    }

    /// A mark: the clock's current value is the one at this index.
    fn mark(&self) -> usize {
        self.0.lock().unwrap().len() - 1
    }

    /// The latest time the clock showed between two marks.
    fn peak(&self, from: usize, to: usize) -> i64 {
        self.0.lock().unwrap()[from..=to]
            .iter()
            .copied()
            .max()
            .unwrap()
    }
}

/// The clock jumping back an hour, ahead two, back a day and ahead two while four workers claim,
/// heartbeat and complete and two engines run maintenance, all at once: a lease is never refused
/// before the clock has reached its end (as last granted or renewed), no tick fires twice, and each
/// jump ahead catches up once at most.
pub async fn clock_jumps_under_load_expire_no_lease_early_and_fire_no_tick_twice(f: Fixture) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const STEP: i64 = 250;
    let ctx = Ctx::new(f);
    let log = Arc::new(ClockLog::default());
    log.set(&ctx.clock, SAT_NOON_UTC);
    let mut def = every_minute("jump-cron");
    def.missed = Missed::CatchUpOne;
    ctx.engine.put_schedule("jump-load", def).await.unwrap();
    let jobs_n = 1_000;
    ctx.engine
        .enqueue_many(
            (0..jobs_n)
                .map(|n| {
                    job("jump-load", n).with_options(errand_core::JobOptions {
                        heartbeat_ms: Some(1_000),
                        timeout_ms: Some(3 * DAY as u64),
                        max_attempts: Some(1_000),
                        max_stalled: Some(100),
                        ..Default::default()
                    })
                })
                .collect(),
        )
        .await
        .unwrap();
    let other = Engine::new(
        ctx.engine.store().clone(),
        Arc::new(ctx.clock.clone()),
        errand_core::EngineConfig::default(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    // Workers' calls answered: the driver moves the clock on only as work gets done.
    let calls = Arc::new(AtomicUsize::new(0));
    // And at most four calls a step, so that work is still going on at each jump, however fast the
    // machine: the driver hands out the permits.
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    // Workers still running: one that panicked (a store error) makes no more calls, and the driver,
    // waiting for calls, would wait for ever; it stops instead, and joining reports the panic.
    let alive = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (e, log, stop) = (ctx.engine.clone(), Arc::clone(&log), Arc::clone(&stop));
        let (refused, completed) = (Arc::clone(&refused), Arc::clone(&completed));
        let (calls, permits) = (Arc::clone(&calls), Arc::clone(&permits));
        let alive = Alive::new(&alive);
        tasks.spawn(async move {
            let _alive = alive;
            let mut early = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let from = log.mark();
                let claimed = e
                    .claim(errand_core::Claim {
                        queues: vec!["jump-load".into()],
                        worker_id: format!("w{w}"),
                        limit: 2,
                        heartbeat_ms: None,
                    })
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    tokio::task::yield_now().await;
                }
                for j in claimed {
                    let (mut from, mut ends) = (from, j.lease.as_ref().unwrap().expires_at);
                    for renew in [true, false] {
                        let Ok(permit) = permits.acquire().await else {
                            break;
                        };
                        permit.forget();
                        let before = log.mark();
                        let answer = if renew {
                            e.heartbeat(j.id, token(&j), None)
                                .await
                                .map(|r| Some(r.lease_expires_at))
                        } else {
                            e.complete(j.id, token(&j), None).await.map(|_| None)
                        };
                        calls.fetch_add(1, Ordering::SeqCst);
                        match answer {
                            // The end moves only forward; the window starts where it was set.
                            Ok(Some(new_end)) if new_end > ends => (from, ends) = (before, new_end),
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                completed.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(Error::LeaseLost) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                let peak = log.peak(from, log.mark());
                                if peak < ends {
                                    early.push(format!(
                                        "job {} refused with the clock at most {peak}, its lease \
                                         ending at {ends}",
                                        j.id
                                    ));
                                }
                                break;
                            }
                            Err(other) => panic!("{other}"),
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
            early
        });
    }
    for e in [ctx.engine.clone(), other] {
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                e.maintain().await.unwrap();
                tokio::task::yield_now().await;
            }
            Vec::new()
        });
    }

    // The driver: the clock walks on in steps, and jumps. `bound` counts the ticks that may fire: each
    // minute walked past for the first time, and one catch-up per jump past the furthest time yet.
    let (mut now, mut furthest, mut bound) = (SAT_NOON_UTC, SAT_NOON_UTC, 0i64);
    let jumps = [(150, -HOUR), (300, 2 * HOUR), (450, -DAY), (600, 2 * DAY)];
    for step in 0..750 {
        let to = match jumps.iter().find(|(at, _)| *at == step) {
            Some((_, by)) => {
                if now + by > furthest {
                    bound += 1;
                }
                now + by
            }
            None => {
                let to = now + STEP;
                if to > furthest {
                    bound += to.div_euclid(MINUTE) - furthest.max(now).div_euclid(MINUTE);
                }
                to
            }
        };
        now = to;
        furthest = furthest.max(now);
        log.set(&ctx.clock, now);
        permits.add_permits(4);
        let seen = calls.load(Ordering::SeqCst);
        while calls.load(Ordering::SeqCst) < seen + 1
            && completed.load(Ordering::SeqCst) < jobs_n as usize
            && alive.load(Ordering::SeqCst) == 4
        {
            tokio::task::yield_now().await;
        }
        if alive.load(Ordering::SeqCst) < 4 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    permits.close();
    let mut early = Vec::new();
    while let Some(r) = tasks.join_next().await {
        early.extend(r.unwrap());
    }
    assert!(early.is_empty(), "leases ended early: {early:#?}");
    // The jumps ahead did end leases, and work went on.
    assert!(refused.load(Ordering::SeqCst) > 0, "no lease was ever lost");
    assert!(completed.load(Ordering::SeqCst) > 0);

    let fired = jobs(&ctx.engine, "jump-cron").await;
    let mut keys: Vec<_> = fired.iter().map(|j| j.unique_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), fired.len(), "a tick fired twice");
    eprintln!(
        "{} completions, {} leases lost to the jumps, {} ticks fired of at most {bound}",
        completed.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
        fired.len()
    );
    assert!(
        !fired.is_empty() && fired.len() as i64 <= bound,
        "{} ticks fired, at most {bound} may",
        fired.len()
    );
}

/// Counts a running task in `count` until it ends, by returning or by panicking.
struct Alive(Arc<std::sync::atomic::AtomicUsize>);

impl Alive {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Alive {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Alive(Arc::clone(count))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
