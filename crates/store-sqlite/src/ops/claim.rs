//! Claiming: what admission needs gathered for each queue (groups in rotation, their best candidates,
//! active counts, rate buckets), the plan `errand_core::admission` makes of it applied, and the leases
//! renewed. Ends where a job is active with a lease; what happens to it next is `transition`'s.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use errand_core::admission::{self, Bucket, BucketKey, QueueClaim, Rules};
use errand_core::store::{Claimed, JobClaim, LeaseRenew, Renewed, Transitioned};
use errand_core::{Error, JobId, Result, Timestamp};

use crate::conn::backend;

use super::transition::job_promote_due;
use super::{JOB_COLUMNS, JobRow, corrupt_field, decode_all, job_row, run_ready};

pub(crate) fn job_claim(conn: &Connection, p: &JobClaim) -> Result<ClaimedRows> {
    let limit = p.limit;
    let mut promoted = Vec::new();
    for q in &p.queues {
        promoted.extend(job_promote_due(conn, q, p.now, p.promote_limit)?);
    }
    let mut paused = conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")
        .map_err(backend)?;
    let mut candidates = conn
        .prepare_cached(
            "SELECT priority, run_at, id, rowid FROM jobs INDEXED BY jobs_ready \
             WHERE queue = ?1 AND state = 'waiting' AND group_key IS NULL \
             ORDER BY priority, run_at, id LIMIT ?2",
        )
        .map_err(backend)?;
    // Per queue, its candidates in the order it gives them: best first for a plain queue, the plan's
    // order for a flow-controlled one.
    let mut lists: Vec<Vec<(i32, i64, JobId)>> = Vec::new();
    let mut admitted: Vec<Option<QueueClaim>> = Vec::new();
    let mut rowids: HashMap<JobId, i64> = HashMap::new();
    for (q, rules) in p.queues.iter().zip(&p.rules) {
        let is_paused: bool = paused
            .query_row([q], |r| r.get(0))
            .optional()
            .map_err(backend)?
            .unwrap_or(false);
        if is_paused {
            continue;
        }
        if rules.limits_queue() || has_keyed_waiting(conn, q)? {
            let a = admit(conn, q, rules, p.now, limit, &mut rowids)?;
            lists.push(a.ordered());
            admitted.push(Some(a));
            continue;
        }
        let rows = candidates
            .query_map(params![q, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
            })
            .map_err(backend)?;
        let mut list = Vec::new();
        for row in rows {
            let (priority, run_at, id, rowid) = row.map_err(backend)?;
            let id: JobId = id.parse().map_err(|e| corrupt_field("id", e))?;
            rowids.insert(id, rowid);
            list.push((priority, run_at, id));
        }
        lists.push(list);
        admitted.push(None);
    }
    let taken = admission::merge(&lists, limit);
    let mut chosen: Vec<i64> = Vec::new();
    let (mut retry_at, mut blocked) = (None::<Timestamp>, false);
    for ((list, n), a) in lists.iter().zip(&taken).zip(admitted) {
        let Some(a) = a else {
            chosen.extend(list[..*n].iter().map(|(_, _, id)| rowids[id]));
            continue;
        };
        let plan = a.kept(*n);
        chosen.extend(plan.jobs.iter().map(|id| rowids[id]));
        store_plan(conn, &a, &plan)?;
        a.add_hints(&mut retry_at, &mut blocked);
    }
    if chosen.is_empty() {
        return Ok(ClaimedRows {
            promoted,
            rows: Vec::new(),
            retry_at,
            blocked,
        });
    }
    // One statement claims them all (per-row statements cost twice as much), named by rowid: a JSON list
    // of integers is the cheapest set to pass. The writer thread is the only writer, so the candidates
    // cannot change between the SELECTs above and this UPDATE.
    let mut list = String::with_capacity(chosen.len() * 8 + 2);
    list.push('[');
    for (i, rowid) in chosen.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&rowid.to_string());
    }
    list.push(']');
    let mut claim = conn
        .prepare_cached(&format!(
            "UPDATE OR FAIL jobs SET state = 'active', attempts = attempts + 1, \
             lease_token = ?2, worker_id = ?3, lease_cap_ms = ?5, \
             lease_expires_at = ?4 + MIN(lease_ms, COALESCE(?5, lease_ms)), \
             deadline_at = ?4 + timeout_ms, started_at = ?4, cancel_requested = 0 \
             WHERE rowid IN (SELECT value FROM json_each(?1)) AND state = 'waiting' \
             RETURNING {JOB_COLUMNS}"
        ))
        .map_err(backend)?;
    let rows = claim
        .query_map(
            params![
                list,
                p.lease,
                p.worker_id,
                p.now,
                p.lease_cap_ms.map(|c| c.min(i64::MAX as u64) as i64)
            ],
            job_row,
        )
        .map_err(backend)?;
    let rows = rows
        .map(|r| r.map_err(backend))
        .collect::<Result<Vec<JobRow>>>()?;
    Ok(ClaimedRows {
        promoted,
        rows,
        retry_at,
        blocked,
    })
}

/// Whether waiting jobs of `queue` carry a group or a concurrency key: then the plain claim, which
/// reads only jobs without a group and checks no key, does not apply.
///
/// Two probes of partial indexes that hold only such jobs, named: left to itself the planner may prefer
/// `jobs_by_state` (two equalities) and walk every waiting job — it did, and drains ran 8 times slower.
fn has_keyed_waiting(conn: &Connection, queue: &str) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready_grouped \
                        WHERE queue = ?1 AND state = 'waiting' AND group_key IS NOT NULL) \
             OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_waiting_keyed \
                        WHERE queue = ?1 AND state = 'waiting' AND concurrency_key IS NOT NULL)",
    )
    .map_err(backend)?
    .query_row([queue], |r| r.get(0))
    .map_err(backend)
}

/// Stores a plan's bucket states and rotation cursor.
fn store_plan(conn: &Connection, a: &QueueClaim, plan: &admission::Plan) -> Result<()> {
    let mut put = conn
        .prepare_cached(
            "INSERT INTO buckets (queue, scope, key, tokens, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (queue, scope, key) DO UPDATE SET tokens = excluded.tokens, \
                 at = excluded.at",
        )
        .map_err(backend)?;
    for (key, b) in &plan.buckets {
        let (scope, k) = key.parts();
        put.execute(params![a.queue, scope, k, b.tokens, b.at])
            .map_err(backend)?;
    }
    if let Some(cursor) = a.moved_cursor(plan) {
        conn.prepare_cached(
            "INSERT INTO queues (name, fair_cursor) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET fair_cursor = excluded.fair_cursor",
        )
        .map_err(backend)?
        .execute(params![a.queue, cursor])
        .map_err(backend)?;
    }
    Ok(())
}

/// Gathers what [`admission::plan`] needs for a claim of `want` from `queue` (the core's
/// `admission::gather` over [`Gather`]), noting each candidate's rowid for the claim's update.
fn admit(
    conn: &Connection,
    queue: &str,
    rules: &Rules,
    now: Timestamp,
    want: usize,
    rowids: &mut HashMap<JobId, i64>,
) -> Result<QueueClaim> {
    let mut reads = Gather {
        conn,
        queue,
        rowids,
    };
    run_ready(admission::gather(&mut reads, queue, rules, now, want))
}

/// The reads of one queue's admission on SQLite: per group, an index seek each.
struct Gather<'a> {
    conn: &'a Connection,
    queue: &'a str,
    rowids: &'a mut HashMap<JobId, i64>,
}

impl admission::GatherStatements for Gather<'_> {
    async fn cursor(&mut self) -> Result<String> {
        Ok(self
            .conn
            .prepare_cached("SELECT fair_cursor FROM queues WHERE name = ?1")
            .map_err(backend)?
            .query_row([self.queue], |r| r.get::<_, Option<String>>(0))
            .optional()
            .map_err(backend)?
            .flatten()
            .unwrap_or_default())
    }

    async fn group_keys_after(&mut self, after: &str, n: usize) -> Result<Vec<String>> {
        // One index seek per key.
        let mut keys_after = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE g(k, n) AS ( \
                     SELECT (SELECT group_key FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                             AND group_key > ?2 ORDER BY group_key LIMIT 1), 1 \
                     UNION ALL \
                     SELECT (SELECT group_key FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                             AND group_key > g.k ORDER BY group_key LIMIT 1), n + 1 \
                     FROM g WHERE g.k IS NOT NULL AND n < ?3) \
                 SELECT k FROM g WHERE k IS NOT NULL",
            )
            .map_err(backend)?;
        let rows = keys_after
            .query_map(params![self.queue, after, n as i64], |r| r.get(0))
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    }

    async fn has_ungrouped(&mut self) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready \
                 WHERE queue = ?1 AND state = 'waiting' AND group_key IS NULL)",
            )
            .map_err(backend)?
            .query_row([self.queue], |r| r.get(0))
            .map_err(backend)
    }

    async fn candidates(
        &mut self,
        keys: &[String],
        key_limit: i64,
        per_group: i64,
    ) -> Result<HashMap<String, Vec<admission::Candidate>>> {
        let key_active = "CASE WHEN j.concurrency_key IS NULL THEN 0 ELSE (SELECT count(*) FROM jobs a \
            WHERE a.queue = j.queue AND a.concurrency_key = j.concurrency_key AND a.state = 'active') END";
        let select = format!(
            "SELECT j.id, j.priority, j.run_at, j.concurrency_key, j.rowid, {key_active} FROM jobs j \
             WHERE j.queue = ?1 AND j.state = 'waiting' AND {{group}} AND {key_active} < ?2 \
             ORDER BY j.priority, j.run_at, j.id LIMIT ?3"
        );
        let mut ungrouped_jobs = self
            .conn
            .prepare_cached(&select.replace("{group}", "j.group_key IS NULL"))
            .map_err(backend)?;
        let mut grouped_jobs = self
            .conn
            .prepare_cached(&select.replace("{group}", "j.group_key = ?4"))
            .map_err(backend)?;
        let queue = self.queue;
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            let map = |r: &Row<'_>| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            };
            let rows = if key.is_empty() {
                ungrouped_jobs.query_map(params![queue, key_limit, per_group], map)
            } else {
                grouped_jobs.query_map(params![queue, key_limit, per_group, key], map)
            }
            .map_err(backend)?;
            let mut jobs = Vec::new();
            for row in rows {
                let (id, priority, run_at, concurrency_key, rowid, active) =
                    row.map_err(backend)?;
                let id: JobId = id.parse().map_err(|e| corrupt_field("id", e))?;
                self.rowids.insert(id, rowid);
                jobs.push(admission::Candidate {
                    id,
                    priority,
                    run_at,
                    concurrency_key,
                    key_active: active as u64,
                });
            }
            out.insert(key.clone(), jobs);
        }
        Ok(out)
    }

    async fn group_active(&mut self, groups: &[&str]) -> Result<HashMap<String, u64>> {
        let mut group_active = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM jobs WHERE queue = ?1 AND group_key = ?2 AND state = 'active'",
            )
            .map_err(backend)?;
        let mut out = HashMap::with_capacity(groups.len());
        for key in groups {
            let active: i64 = group_active
                .query_row(params![self.queue, key], |r| r.get(0))
                .map_err(backend)?;
            out.insert(key.to_string(), active as u64);
        }
        Ok(out)
    }

    async fn buckets(
        &mut self,
        groups: &[&str],
        queue: bool,
        per_group: bool,
    ) -> Result<(Option<Bucket>, HashMap<String, Bucket>)> {
        let mut bucket = self
            .conn
            .prepare_cached(
                "SELECT tokens, at FROM buckets WHERE queue = ?1 AND scope = ?2 AND key = ?3",
            )
            .map_err(backend)?;
        let mut read = |key: BucketKey| -> Result<Option<Bucket>> {
            let (scope, k) = key.parts();
            bucket
                .query_row(params![self.queue, scope, k], |r| {
                    Ok(Bucket {
                        tokens: r.get(0)?,
                        at: r.get(1)?,
                    })
                })
                .optional()
                .map_err(backend)
        };
        let queue_bucket = if queue { read(BucketKey::Queue)? } else { None };
        let mut of_group = HashMap::new();
        if per_group {
            for key in groups {
                if let Some(b) = read(BucketKey::Group(key.to_string()))? {
                    of_group.insert(key.to_string(), b);
                }
            }
        }
        Ok((queue_bucket, of_group))
    }

    async fn queue_active(&mut self) -> Result<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM jobs WHERE queue = ?1 AND state = 'active'")
            .map_err(backend)?
            .query_row([self.queue], |r| r.get(0))
            .map_err(backend)?;
        Ok(n as u64)
    }
}

/// A claim as the writer returns it; [`ClaimedRows::decode`] makes it a [`Claimed`].
#[derive(Debug)]
pub(crate) struct ClaimedRows {
    promoted: Vec<(JobId, Transitioned)>,
    rows: Vec<JobRow>,
    retry_at: Option<Timestamp>,
    blocked: bool,
}

impl ClaimedRows {
    pub(crate) fn decode(self) -> Result<Claimed> {
        let mut jobs = decode_all(self.rows)?;
        // RETURNING has no order: restore best-first.
        jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
        Ok(Claimed {
            promoted: self.promoted,
            jobs,
            retry_at: self.retry_at,
            blocked: self.blocked,
        })
    }
}

pub(crate) fn lease_renew(conn: &Connection, p: &LeaseRenew) -> Result<Renewed> {
    let mut renew = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET progress = COALESCE(?4, progress), lease_expires_at = \
             MAX(lease_expires_at, ?3 + MIN(lease_ms, COALESCE(lease_cap_ms, lease_ms))) \
             WHERE id = ?1 AND state = 'active' AND lease_token = ?2 AND lease_expires_at > ?3 \
             RETURNING lease_expires_at, cancel_requested, queue, worker_id",
        )
        .map_err(backend)?;
    renew
        .query_row(
            params![
                p.id.to_string(),
                p.token,
                p.now,
                p.progress.as_ref().map(|r| r.get())
            ],
            |r| {
                Ok(Renewed {
                    lease_expires_at: r.get(0)?,
                    cancel_requested: r.get(1)?,
                    queue: r.get(2)?,
                    worker_id: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(backend)?
        .ok_or(Error::LeaseLost)
}
