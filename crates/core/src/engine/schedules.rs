//! Cron schedules: define, look, pause, trigger, and fire due ticks (see [`crate::schedule`]).

use crate::clock::Timestamp;
use crate::cron::CronSchedule;
use crate::error::{Error, Result};
use crate::model::{JobOptions, NewJob};
use crate::schedule::{Missed, ON_TIME_MS, Schedule, ScheduleDef, tick_key};
use crate::store::{Fired, Inserted, ScheduleFire};
use crate::validate;

use super::{Engine, Enqueued};

/// At most this many ticks are stepped through to find the latest missed one; a schedule further
/// behind (every second, for days) counts the last one reached as its latest.
const MAX_TICK_STEPS: usize = 100_000;

impl Engine {
    /// Creates or replaces the schedule `name`. Its next tick is computed from now: a replaced
    /// schedule never fires a tick that has already passed.
    pub async fn put_schedule(&self, name: &str, def: ScheduleDef) -> Result<Schedule> {
        validate::queue_name("name", name, self.limits())?;
        let now = self.now();
        let cron = CronSchedule::parse(&def.cron, &def.timezone)?;
        // The job a tick would enqueue must be valid now, not fail at every tick: with the unique key
        // a tick gives it (so a queue's policy requiring one accepts the schedule).
        self.specs(vec![job_of(&def, Some(tick_key(name, now)))], false, now)
            .await?;
        let existing = self.inner.store.schedule_get(name).await?;
        let schedule = Schedule {
            name: name.to_string(),
            paused: existing.as_ref().is_some_and(|s| s.paused),
            next_run_at: cron.next_after(now),
            last_run_at: existing.as_ref().and_then(|s| s.last_run_at),
            last_job_id: existing.as_ref().and_then(|s| s.last_job_id),
            created_at: existing.as_ref().map_or(now, |s| s.created_at),
            updated_at: now,
            def,
        };
        self.inner.store.schedule_put(schedule.clone()).await?;
        Ok(schedule)
    }

    /// One schedule.
    pub async fn schedule(&self, name: &str) -> Result<Schedule> {
        validate::queue_name("name", name, self.limits())?;
        self.inner
            .store
            .schedule_get(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("schedule {name}")))
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.inner.store.schedule_list().await
    }

    /// Deletes a schedule. Jobs it already enqueued stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        validate::queue_name("name", name, self.limits())?;
        if self.inner.store.schedule_delete(name).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("schedule {name}")))
        }
    }

    /// Pauses a schedule: it fires nothing until resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule> {
        let s = self.schedule(name).await?;
        self.set_schedule_paused(s, true).await
    }

    /// Resumes a schedule from its next tick after now.
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule> {
        let s = self.schedule(name).await?;
        self.set_schedule_paused(s, false).await
    }

    async fn set_schedule_paused(&self, mut s: Schedule, paused: bool) -> Result<Schedule> {
        let now = self.now();
        let next = if paused {
            s.next_run_at
        } else {
            CronSchedule::parse(&s.def.cron, &s.def.timezone)?.next_after(now)
        };
        if !self
            .inner
            .store
            .schedule_set_paused(&s.name, paused, next, now)
            .await?
        {
            return Err(Error::NotFound(format!("schedule {}", s.name)));
        }
        s.paused = paused;
        s.next_run_at = next;
        s.updated_at = now;
        Ok(s)
    }

    /// Enqueues the schedule's job now, outside its ticks (paused or not).
    pub async fn trigger_schedule(&self, name: &str) -> Result<Enqueued> {
        let s = self.schedule(name).await?;
        self.enqueue(job_of(&s.def, None)).await
    }

    /// The next `n` ticks of a schedule after now (fewer if it stops firing).
    pub fn next_runs(&self, s: &Schedule, n: usize) -> Result<Vec<Timestamp>> {
        let cron = CronSchedule::parse(&s.def.cron, &s.def.timezone)?;
        let mut out = Vec::with_capacity(n);
        let mut at = self.now();
        while out.len() < n {
            match cron.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = t;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Fires every due tick of every schedule (part of [`Engine::maintain`]); returns the jobs
    /// enqueued. Safe on several nodes at once: each tick fires once (see [`crate::schedule`]).
    pub async fn fire_schedules(&self) -> Result<u64> {
        let now = self.now();
        let batch = self.inner.config.batch_size;
        let mut fired = 0;
        loop {
            let due = self.inner.store.schedule_due(now, batch).await?;
            let full = due.len() == batch;
            let mut failed = 0;
            for s in due {
                match self.fire(&s, now).await {
                    Ok(true) => fired += 1,
                    Ok(false) => {}
                    // One broken schedule (its queue's settings changed under it, say) must not stop
                    // the others: it is logged and tried again at the next pass.
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(schedule = %s.name, "cannot fire the schedule: {e}");
                    }
                }
            }
            // A batch of failures would come back as the same batch: leave it to the next pass.
            if !full || failed > 0 {
                return Ok(fired);
            }
        }
    }

    /// Fires the due tick(s) of one schedule; `true` if a job was enqueued.
    async fn fire(&self, s: &Schedule, now: Timestamp) -> Result<bool> {
        let Some(first) = s.next_run_at else {
            return Ok(false);
        };
        let cron = CronSchedule::parse(&s.def.cron, &s.def.timezone)?;
        let latest = latest_tick(&cron, first, now);
        let on_time = now - latest <= ON_TIME_MS;
        let tick = match (on_time, s.def.missed) {
            (true, _) | (false, Missed::CatchUpOne) => Some(latest),
            (false, Missed::Skip) => {
                tracing::info!(schedule = %s.name, "skipping missed ticks (policy skip)");
                None
            }
        };
        let spec = match tick {
            Some(t) => {
                let job = job_of(&s.def, Some(tick_key(&s.name, t)));
                let mut specs = self.specs(vec![job], false, now).await?;
                // A tick is not held to `max_waiting`: it is one job per tick, bounded by the
                // schedule itself, and a refused tick would be late or lost.
                specs.iter_mut().for_each(|s| s.max_waiting = None);
                specs.pop()
            }
            None => None,
        };
        let fired = self
            .inner
            .store
            .schedule_fire(ScheduleFire {
                name: s.name.clone(),
                expect_next: first,
                next: cron.next_after(now),
                tick: spec.as_ref().and(tick),
                job: spec.clone(),
                now,
            })
            .await?;
        match (fired, spec) {
            (Fired::Moved { job: Some(ins) }, Some(spec)) => {
                let created = ins == Inserted::New;
                self.inserted(&[spec], &[ins], now);
                Ok(created)
            }
            _ => Ok(false),
        }
    }
}

/// The latest tick at or before `now`, given that `first` (≤ `now`) is one. Looked for in a window
/// before `now` that grows fourfold until it holds a tick, then stepped through from there: a few
/// steps, not one per tick since `first` (an every-second schedule after a day's outage would be
/// 86,400 steps).
fn latest_tick(cron: &CronSchedule, first: Timestamp, now: Timestamp) -> Timestamp {
    let mut window: i64 = 1_000;
    let start = loop {
        let from = now.saturating_sub(window);
        if from < first {
            break first;
        }
        match cron.next_after(from) {
            Some(t) if t <= now => break t,
            _ => window = window.saturating_mul(4),
        }
    };
    let mut latest = start;
    for _ in 0..MAX_TICK_STEPS {
        match cron.next_after(latest) {
            Some(t) if t <= now => latest = t,
            _ => break,
        }
    }
    latest
}

/// The job a schedule enqueues, with `unique_key` for a tick.
fn job_of(def: &ScheduleDef, unique_key: Option<String>) -> NewJob {
    NewJob::new(&def.queue, &def.kind, def.payload.clone()).with_options(JobOptions {
        priority: def.priority,
        max_attempts: def.max_attempts,
        backoff: def.backoff.clone(),
        timeout_ms: def.timeout_ms,
        heartbeat_ms: def.heartbeat_ms,
        group_key: def.group_key.clone(),
        unique_key,
        ..JobOptions::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_tick_after_a_long_outage_is_found_in_a_few_steps() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let first = 1_792_843_200_000;
        let now = first + 86_400_000 + 1_500; // a day and a half second later
        let started = std::time::Instant::now();
        assert_eq!(latest_tick(&every_second, first, now), now - 500);
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        let daily = CronSchedule::parse("@daily", "UTC").unwrap();
        let midnight = 1_792_800_000_000; // 2026-10-24 00:00 UTC
        assert_eq!(
            latest_tick(&daily, midnight, midnight + 5 * 86_400_000 + 3_600_000),
            midnight + 5 * 86_400_000
        );
        assert_eq!(latest_tick(&daily, midnight, midnight), midnight);
    }
}
