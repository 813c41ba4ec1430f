//! What the workers saw, and the checker that holds it against what the server kept.
//!
//! Each worker process appends one line per event to a log of its own (a new file per restart), so a
//! SIGKILL loses at most the line being written and never mixes two writers. The checker needs only
//! these logs, the ids of the enqueues the server acknowledged, and the jobs the server holds at the
//! end. The leases of one job are ordered by attempt number, then by when each ended as first
//! granted. Attempts alone cannot order them: recovering a stalled lease gives its attempt back, and
//! the next claim has the same number; but that claim comes after the stalled lease ended, so its own
//! ends a lease's length later (7 s, far more than a claim's wait for a lock, during which its clock
//! reading ages). Lease ends alone cannot either: a claim that read the clock and then waited for a
//! lock can end before a lease granted meanwhile and failed at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

/// One thing a worker saw happen to a job's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A fetch handed it this lease.
    Claimed,
    /// Its acknowledgement is about to be sent (what the harness reads to pause a worker while it holds
    /// a lease it is not yet acknowledging).
    Acking,
    /// Its completion was acknowledged (2xx, a repeat included).
    Completed,
    /// Its retryable failure was acknowledged.
    Failed,
    /// Its acknowledgement was refused: the lease was lost to recovery (409).
    Refused,
    /// No answer came for its acknowledgement: the outcome is unknown to the worker.
    Unknown,
}

impl Seen {
    fn word(self) -> &'static str {
        match self {
            Seen::Claimed => "claimed",
            Seen::Acking => "acking",
            Seen::Completed => "completed",
            Seen::Failed => "failed",
            Seen::Refused => "refused",
            Seen::Unknown => "unknown",
        }
    }

    fn parse(word: &str) -> Option<Seen> {
        Some(match word {
            "claimed" => Seen::Claimed,
            "acking" => Seen::Acking,
            "completed" => Seen::Completed,
            "failed" => Seen::Failed,
            "refused" => Seen::Refused,
            "unknown" => Seen::Unknown,
            _ => return None,
        })
    }
}

/// A line of a worker's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seen: Seen,
    pub job: String,
    /// The attempt the claim counted.
    pub attempt: u32,
    /// When the lease ended as the claim granted it (ms since the epoch).
    pub lease: i64,
    pub token: String,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} {} {} {}",
            self.seen.word(),
            self.job,
            self.attempt,
            self.lease,
            self.token
        )
    }
}

/// The entries of one log. A last line cut short by a kill is skipped; any other bad line is an error,
/// since it would mean the log cannot be trusted.
pub fn parse_log(text: &str) -> Result<Vec<Entry>, String> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let entry = (|| {
                let seen = Seen::parse(parts.next()?)?;
                let job = parts.next()?.to_string();
                let attempt = parts.next()?.parse().ok()?;
                let lease = parts.next()?.parse().ok()?;
                let token = parts.next()?.to_string();
                parts.next().is_none().then_some(Entry {
                    seen,
                    job,
                    attempt,
                    lease,
                    token,
                })
            })();
            entry.ok_or_else(|| format!("a bad log line: {line:?}"))
        })
        .collect()
}

/// A lease's place among a job's leases: its attempt, then its end as granted (see the module's
/// comment).
pub type Order = (u32, i64);

/// A job as the server holds it at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// `completed`, `dead`, or any other state (which the check counts as not finished).
    pub state: String,
    /// For a completed job: the lease (token, and its place in order: attempt, end) that its result
    /// names (workers put them there).
    pub completed_by: Option<(String, Order)>,
}

/// What the check found. Empty violation lists are a pass.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// Enqueues the server acknowledged with 2xx.
    pub acknowledged: usize,
    pub completed: usize,
    pub dead: usize,
    /// Jobs on the server whose enqueue was never acknowledged (its answer was lost to a kill): allowed.
    pub unacknowledged_on_server: usize,
    /// Claims beyond each job's first, not counting the retries of acknowledged failures: repeated
    /// executions, allowed by at-least-once delivery.
    pub repeated_executions: usize,
    /// Acknowledgements refused with 409 because the lease had been recovered: fencing at work.
    pub stale_acks_refused: usize,
    /// Acknowledgements whose answer never came.
    pub unknown_acks: usize,
    /// Acknowledged enqueues that are missing, or not completed or dead.
    pub lost: Vec<String>,
    /// Jobs whose completion was acknowledged to two leases, or whose recorded result is not the one
    /// acknowledged.
    pub double_completions: Vec<String>,
    /// Jobs completed by a lease after a newer lease of the same job had been handed out.
    pub stale_acks_accepted: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.double_completions.is_empty()
            && self.stale_acks_accepted.is_empty()
    }
}

/// Holds the history against the end state.
pub fn check(
    acknowledged: &BTreeSet<String>,
    logs: &[Vec<Entry>],
    server: &HashMap<String, Final>,
) -> Verdict {
    let mut v = Verdict {
        acknowledged: acknowledged.len(),
        ..Verdict::default()
    };
    for id in acknowledged {
        match server.get(id).map(|f| f.state.as_str()) {
            Some("completed" | "dead") => {}
            _ => v.lost.push(id.clone()),
        }
    }
    for (id, f) in server {
        match f.state.as_str() {
            "completed" => v.completed += 1,
            "dead" => v.dead += 1,
            _ => {}
        }
        if !acknowledged.contains(id) {
            v.unacknowledged_on_server += 1;
        }
    }

    // Per job: the newest lease handed out, and the leases whose completion was acknowledged.
    let mut newest: HashMap<&str, Order> = HashMap::new();
    let mut claims: HashMap<&str, usize> = HashMap::new();
    let mut failures: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut completions: BTreeMap<&str, BTreeSet<(Order, &str)>> = BTreeMap::new();
    for e in logs.iter().flatten() {
        match e.seen {
            Seen::Claimed => {
                let n = newest.entry(&e.job).or_default();
                *n = (*n).max((e.attempt, e.lease));
                *claims.entry(&e.job).or_default() += 1;
            }
            Seen::Completed => {
                completions
                    .entry(&e.job)
                    .or_default()
                    .insert(((e.attempt, e.lease), &e.token));
            }
            Seen::Refused => v.stale_acks_refused += 1,
            Seen::Unknown => v.unknown_acks += 1,
            Seen::Acking => {}
            Seen::Failed => {
                failures.entry(&e.job).or_default().insert(&e.token);
            }
        }
    }
    v.repeated_executions = claims
        .iter()
        .map(|(job, n)| n.saturating_sub(1 + failures.get(job).map_or(0, BTreeSet::len)))
        .sum();

    let mut double = BTreeSet::new();
    let mut stale = BTreeSet::new();
    for (job, leases) in &completions {
        if leases.len() > 1 {
            double.insert(job.to_string());
        }
        // A completion accepted while a newer lease existed: once a job is completed no lease is handed
        // out again, so any newer claim was made before the completion was accepted.
        let newest = newest.get(job).copied().unwrap_or((0, i64::MIN));
        if leases.iter().any(|(lease, _)| *lease < newest) {
            stale.insert(job.to_string());
        }
        if let Some((token, _)) = server.get(*job).and_then(|f| f.completed_by.as_ref())
            && !leases.iter().any(|(_, t)| t == token)
        {
            double.insert(job.to_string());
        }
    }
    // The server's own record: a result written under a lease older than the job's last claim seen.
    for (id, f) in server {
        if let Some((_, lease)) = &f.completed_by
            && newest.get(id.as_str()).is_some_and(|n| lease < n)
        {
            stale.insert(id.clone());
        }
    }
    v.double_completions = double.into_iter().collect();
    v.stale_acks_accepted = stale.into_iter().collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line for the lease `order` (attempt, end) of `job`.
    fn e(seen: Seen, job: &str, order: (u32, i64), token: &str) -> Entry {
        Entry {
            seen,
            job: job.into(),
            attempt: order.0,
            lease: order.1,
            token: token.into(),
        }
    }

    fn done(token: &str, order: (u32, i64)) -> Final {
        Final {
            state: "completed".into(),
            completed_by: Some((token.into(), order)),
        }
    }

    fn acked(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_clean_history_with_a_recovered_lease_passes() {
        // w1 claims, is paused past its lease, and is refused; w2 completes under the next lease.
        let logs = vec![
            vec![
                e(Seen::Claimed, "j1", (1, 1), "t1"),
                e(Seen::Refused, "j1", (1, 1), "t1"),
            ],
            vec![
                e(Seen::Claimed, "j1", (1, 2), "t2"),
                e(Seen::Completed, "j1", (1, 2), "t2"),
            ],
        ];
        let server = HashMap::from([("j1".to_string(), done("t2", (1, 2)))]);
        let v = check(&acked(&["j1"]), &logs, &server);
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.repeated_executions, v.stale_acks_refused), (1, 1));
    }

    #[test]
    fn a_missing_or_unfinished_acknowledged_job_is_lost() {
        let server = HashMap::from([(
            "j2".to_string(),
            Final {
                state: "waiting".into(),
                completed_by: None,
            },
        )]);
        let v = check(&acked(&["j1", "j2"]), &[], &server);
        assert_eq!(v.lost, ["j1", "j2"]);
        assert!(!v.passed());
    }

    #[test]
    fn two_acknowledged_completions_are_a_double_completion() {
        let logs = vec![vec![
            e(Seen::Claimed, "j1", (1, 1), "t1"),
            e(Seen::Completed, "j1", (1, 1), "t1"),
            e(Seen::Completed, "j1", (1, 1), "t1"),
            e(Seen::Claimed, "j1", (1, 2), "t2"),
            e(Seen::Completed, "j1", (1, 2), "t2"),
        ]];
        let server = HashMap::from([("j1".to_string(), done("t2", (1, 2)))]);
        let v = check(&acked(&["j1"]), &logs, &server);
        assert_eq!(v.double_completions, ["j1"]);
        // The first completion was also accepted while a newer lease existed.
        assert_eq!(v.stale_acks_accepted, ["j1"]);
    }

    #[test]
    fn a_stalled_lease_completed_after_the_next_claim_is_a_stale_ack_even_with_the_same_attempt() {
        // Recovering a stalled lease gives its attempt back: both claims are attempt 1, but the
        // second lease ends later.
        let logs = vec![
            vec![
                e(Seen::Claimed, "j1", (1, 7_000), "t1"),
                e(Seen::Completed, "j1", (1, 7_000), "t1"),
            ],
            vec![e(Seen::Claimed, "j1", (1, 14_500), "t2")],
        ];
        let server = HashMap::from([("j1".to_string(), done("t1", (1, 7_000)))]);
        let v = check(&acked(&["j1"]), &logs, &server);
        assert_eq!(v.stale_acks_accepted, ["j1"]);
    }

    #[test]
    fn a_lease_granted_on_an_older_clock_reading_after_a_failed_attempt_is_not_stale() {
        // Attempt 2 read the clock, waited for a lock while attempt 1 was granted and failed, and so
        // ends before attempt 1 did: attempts order them, and its completion is the job's last.
        let logs = vec![
            vec![
                e(Seen::Claimed, "j1", (1, 7_020), "t1"),
                e(Seen::Failed, "j1", (1, 7_020), "t1"),
            ],
            vec![
                e(Seen::Claimed, "j1", (2, 7_005), "t2"),
                e(Seen::Completed, "j1", (2, 7_005), "t2"),
            ],
        ];
        let server = HashMap::from([("j1".to_string(), done("t2", (2, 7_005)))]);
        assert!(check(&acked(&["j1"]), &logs, &server).passed());
    }

    #[test]
    fn a_recorded_result_other_than_the_acknowledged_one_is_a_double_completion() {
        let logs = vec![vec![
            e(Seen::Claimed, "j1", (1, 1), "t1"),
            e(Seen::Completed, "j1", (1, 1), "t1"),
        ]];
        let server = HashMap::from([("j1".to_string(), done("tX", (1, 1)))]);
        assert_eq!(
            check(&acked(&["j1"]), &logs, &server).double_completions,
            ["j1"]
        );
    }

    #[test]
    fn a_completion_by_a_superseded_lease_is_a_stale_ack_accepted() {
        // Only the server's record shows it: the worker that got the answer was killed before logging.
        let logs = vec![vec![e(Seen::Claimed, "j1", (1, 2), "t2")]];
        let server = HashMap::from([("j1".to_string(), done("t1", (1, 1)))]);
        let v = check(&acked(&["j1"]), &logs, &server);
        assert_eq!(v.stale_acks_accepted, ["j1"]);
        assert!(!v.passed());
    }

    #[test]
    fn logs_round_trip_and_a_torn_last_line_is_skipped() {
        let entries = [
            e(Seen::Claimed, "j1", (1, 1), "t1"),
            e(Seen::Acking, "j1", (1, 1), "t1"),
            e(Seen::Unknown, "j1", (1, 1), "t1"),
        ];
        let mut text: String = entries.iter().map(|e| e.to_string()).collect();
        text.push_str("completed j1 1 t");
        assert_eq!(parse_log(&text).unwrap(), entries);
        assert!(parse_log("claimed j1 x t1\n").is_err());
        assert!(parse_log("eaten j1 1 t1\n").is_err());
    }
}
