//! Halves of the migration tests each store writes for itself (rolling its own schema back is
//! store-specific): jobs stored before a migration, and what must hold of them after it.

use errand_core::{Engine, Failure, JobId, JobOptions, NewJob};
use serde_json::json;

use crate::support::{claim_one, token};

/// Three dead jobs of queue `d`, kind `charge`: two that failed the same way ("card 1 declined",
/// "card 22 declined") and one otherwise, in that order.
pub async fn three_dead_jobs(e: &Engine) -> Vec<JobId> {
    let mut dead = Vec::new();
    for message in ["card 1 declined", "card 22 declined", "gateway timeout"] {
        let id = e
            .enqueue(
                NewJob::new("d", "charge", json!({})).with_options(JobOptions {
                    max_attempts: Some(1),
                    ..Default::default()
                }),
            )
            .await
            .unwrap()
            .id;
        let job = claim_one(e, "d").await;
        e.fail(id, token(&job), Failure::retryable(message))
            .await
            .unwrap();
        dead.push(id);
    }
    dead
}

/// After migration 9 (stored fingerprints) on a store that held [`three_dead_jobs`] before it: the
/// jobs are in their groups, counted, each group's latest job its sample, and the groups stay
/// counted from there on.
pub async fn dead_jobs_are_grouped_after_migration_9(e: &Engine, dead: &[JobId]) {
    let g = e.dead_groups("d", 10).await.unwrap();
    assert_eq!(g.scanned, 3);
    let groups: Vec<(u64, String)> = g
        .groups
        .iter()
        .map(|g| (g.count, g.fingerprint.clone()))
        .collect();
    let declined = e.get(dead[1]).await.unwrap().error_fingerprint();
    let timeout = e.get(dead[2]).await.unwrap().error_fingerprint();
    assert_eq!(groups, [(2, declined), (1, timeout)]);
    assert_eq!(
        g.groups[0].sample_job_id, dead[1],
        "the latest of the group"
    );
    e.retry(dead[0]).await.unwrap();
    assert_eq!(e.dead_groups("d", 10).await.unwrap().scanned, 2);
}
