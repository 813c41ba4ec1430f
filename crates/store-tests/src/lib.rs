//! The store conformance suite. Every store runs all of it, through the engine — a store that fails a
//! check is not a store. If the suite does not test a behaviour, Errand does not promise it.
//!
//! A store crate provides an async function that returns a [`Fixture`] over a fresh, empty store, and
//! expands [`conformance_suite!`] in an integration test:
//!
//! ```text
//! async fn fresh() -> errand_store_tests::Fixture { /* new temp dir, open store */ }
//! errand_store_tests::conformance_suite!(fresh);
//! ```
//!
//! Each check becomes its own `#[tokio::test]`. Checks drive time with a [`ManualClock`]; none sleeps.

// This crate is test code run by other crates' tests: a failed unwrap is a failed check.
#![allow(clippy::unwrap_used)]

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use errand_core::{Engine, EngineConfig, ManualClock, Store};

pub mod api;
pub mod concurrency;
pub mod events;
pub mod flow;
pub mod flows;
pub mod leases;
pub mod machine;
pub mod migrations;
pub mod model;
pub mod races;
pub mod reaper;
pub mod retries;
pub mod schedules;
mod support;
pub mod unique;

/// A fresh, empty store, and whatever must live as long as it (a temp dir, a schema guard).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    reopen: Option<Reopen>,
    _guard: Box<dyn Any + Send + Sync>,
}

/// Opens a fixture's store again over the same data (see [`Fixture::with_reopen`]).
pub type Reopen =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .field("reopens", &self.reopen.is_some())
            .finish()
    }
}

impl Fixture {
    /// A fixture over `store`, keeping `guard` alive until the check ends.
    pub fn new(store: Arc<dyn Store>, guard: impl Any + Send + Sync) -> Self {
        Fixture {
            store,
            reopen: None,
            _guard: Box::new(guard),
        }
    }

    /// A fixture whose store a check may close and open again over the same data, as a restarted
    /// server would. A check calls `reopen` only once it dropped every handle on the previous store
    /// (an embedded store may allow one open handle at a time).
    pub fn with_reopen<F>(
        store: Arc<dyn Store>,
        guard: impl Any + Send + Sync,
        reopen: impl Fn() -> F + Send + Sync + 'static,
    ) -> Self
    where
        F: Future<Output = Arc<dyn Store>> + Send + 'static,
    {
        Fixture {
            store,
            reopen: Some(Box::new(move || Box::pin(reopen()))),
            _guard: Box::new(guard),
        }
    }
}

/// An engine over a fixture's store, with a clock that only the check moves.
#[derive(Debug)]
pub struct Ctx {
    pub engine: Engine,
    pub clock: ManualClock,
    _fixture: Fixture,
}

impl Ctx {
    /// The engine with default settings.
    pub fn new(fixture: Fixture) -> Self {
        Self::with_config(fixture, EngineConfig::default())
    }

    /// The engine with `config`.
    pub fn with_config(fixture: Fixture, config: EngineConfig) -> Self {
        let clock = ManualClock::at_fixed_start();
        let engine = Engine::new(fixture.store.clone(), Arc::new(clock.clone()), config);
        Ctx {
            engine,
            clock,
            _fixture: fixture,
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each given a fresh fixture from `$fresh`.
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::__for_each_check!($crate::__conformance_test, $fresh);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($fresh:path, $module:ident :: $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::$module::$name($fresh().await).await;
        }
    };
}

/// The list of every check. A new check is added here, or it does not run.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_check {
    ($m:path, $fresh:path) => {
        // 2. the job model and validation
        $m!(
            $fresh,
            model::enqueue_resolves_defaults_and_makes_sortable_ids
        );
        $m!(
            $fresh,
            model::invalid_job_names_the_field_and_writes_nothing
        );
        $m!(
            $fresh,
            model::idempotency_key_defaults_from_unique_key_or_id
        );
        // 3. queue configuration and retention
        $m!(
            $fresh,
            model::queue_config_defaults_are_overridden_by_job_options
        );
        $m!($fresh, model::invalid_queue_config_is_rejected);
        $m!(
            $fresh,
            model::retention_prunes_by_count_and_age_but_never_dead_jobs
        );
        $m!($fresh, model::json_nested_too_deep_is_refused);
        // 4. retries
        $m!($fresh, retries::fixed_backoff_waits_the_same_each_time);
        $m!($fresh, retries::exponential_backoff_doubles_up_to_its_cap);
        $m!($fresh, retries::jitter_stays_within_its_fraction);
        $m!($fresh, retries::retry_after_overrides_the_policy);
        $m!($fresh, retries::non_retryable_failure_goes_straight_to_dead);
        $m!(
            $fresh,
            retries::exhausted_job_is_dead_with_payload_and_every_error
        );
        $m!($fresh, retries::backoff_never_exceeds_its_limit);
        // 5. leases and fencing
        $m!(
            $fresh,
            leases::claim_gives_a_fresh_token_and_expiry_each_time
        );
        $m!(
            $fresh,
            leases::stale_or_foreign_token_is_lease_lost_and_changes_nothing
        );
        $m!(
            $fresh,
            leases::heartbeat_extends_the_lease_carries_progress_and_reports_cancel
        );
        $m!(
            $fresh,
            leases::lease_is_never_shorter_than_a_run_without_heartbeat
        );
        $m!(
            $fresh,
            leases::retried_completion_of_the_same_lease_is_a_success
        );
        $m!(
            $fresh,
            leases::a_stale_token_batched_with_the_current_one_is_refused
        );
        $m!($fresh, leases::a_heartbeat_promise_shortens_the_lease);
        $m!($fresh, leases::results_are_stored_exactly_as_sent);
        $m!(
            $fresh,
            leases::released_job_is_due_at_once_without_using_an_attempt
        );
        $m!($fresh, leases::releases_in_a_batch_each_stand_on_their_own);
        $m!(
            $fresh,
            leases::log_lines_are_kept_under_the_lease_bounded_and_deleted_with_the_job
        );
        $m!(
            $fresh,
            leases::a_snoozed_job_waits_its_delay_without_using_an_attempt
        );
        $m!(
            $fresh,
            races::a_cancel_requested_while_a_failure_is_written_is_not_lost
        );
        $m!(
            $fresh,
            races::a_cancel_requested_while_a_stall_is_written_is_not_lost
        );
        // 6. the reaper
        $m!(
            $fresh,
            reaper::expired_lease_stalls_back_to_waiting_then_to_dead
        );
        $m!($fresh, reaper::stale_token_after_a_stall_cannot_complete);
        $m!(
            $fresh,
            reaper::timeout_fails_the_attempt_even_with_heartbeats
        );
        $m!($fresh, reaper::delayed_jobs_are_invisible_until_due);
        $m!(
            $fresh,
            reaper::idempotency_key_survives_retry_stall_and_replay
        );
        // 7. the engine API
        $m!($fresh, api::priority_then_fifo);
        $m!($fresh, api::claim_takes_the_best_jobs_across_queues);
        $m!($fresh, api::batch_with_one_bad_job_writes_nothing);
        $m!($fresh, api::cancel_waiting_delayed_and_active_jobs);
        $m!($fresh, api::retry_a_dead_job_and_replay_by_filter);
        $m!($fresh, api::retry_and_replay_respect_the_unique_key);
        $m!($fresh, api::a_queue_named_twice_in_a_claim_counts_once);
        $m!($fresh, api::purge_dead_jobs_by_filter);
        $m!($fresh, api::promote_a_delayed_job);
        $m!($fresh, api::paused_queue_accepts_but_hands_out_nothing);
        $m!($fresh, api::list_pages_with_a_cursor);
        $m!($fresh, api::queue_stats_count_states_and_oldest_age);
        $m!($fresh, api::stats_of_all_queues_are_each_queues_stats);
        $m!($fresh, api::dead_letters_group_by_error_fingerprint);
        $m!($fresh, api::list_by_unique_key);
        $m!($fresh, retries::a_failures_stack_is_kept_with_its_error);
        $m!($fresh, api::audit_log_appends_and_pages_newest_first);
        $m!($fresh, api::audit_entries_past_their_retention_are_pruned);
        $m!($fresh, api::policy_requires_unique_key);
        $m!($fresh, api::policy_limits_payload_size);
        $m!($fresh, api::policy_bounds_timeout);
        $m!($fresh, api::policy_requires_min_attempts);
        $m!($fresh, api::policy_requires_dead_letter_route);
        $m!($fresh, api::max_waiting_refuses_beyond_the_bound);
        $m!(
            $fresh,
            api::max_waiting_refuses_a_whole_batch_that_crosses_it
        );
        $m!($fresh, api::expired_jobs_die_with_reason_expired);
        $m!(
            $fresh,
            api::footprint_names_the_stores_parts_and_grows_with_jobs
        );
        $m!(
            $fresh,
            api::flow_state_shows_active_jobs_and_the_tokens_left
        );
        $m!(
            $fresh,
            api::unique_key_returns_the_existing_job_within_its_window
        );
        $m!(
            $fresh,
            api::dedup_replace_updates_a_waiting_job_and_reject_keeps_it
        );
        $m!(
            $fresh,
            concurrency::concurrent_enqueues_with_one_unique_key_make_one_job
        );
        $m!(
            $fresh,
            unique::a_completed_jobs_key_is_held_by_default_for_retentions_age
        );
        $m!($fresh, unique::a_key_outlives_the_row_retention_removed);
        $m!($fresh, unique::a_key_is_free_once_its_window_ended);
        $m!(
            $fresh,
            unique::a_key_held_forever_outlives_retention_and_years
        );
        $m!($fresh, unique::a_dead_job_holds_its_key_until_purged);
        $m!(
            $fresh,
            unique::a_dead_job_does_not_keep_another_from_being_revived
        );
        $m!(
            $fresh,
            unique::a_cancelled_job_frees_its_key_but_never_runs_beside_its_successor
        );
        $m!($fresh, unique::replace_leaves_a_finished_holder_alone);
        $m!(
            $fresh,
            concurrency::eight_claimers_claim_ten_thousand_jobs_exactly_once
        );
        $m!(
            $fresh,
            concurrency::concurrent_acks_and_reaper_record_one_outcome
        );
        // 8. events
        $m!($fresh, events::every_state_change_emits_an_event);
        $m!(
            $fresh,
            events::events_say_how_long_jobs_waited_and_ran_and_how_they_failed
        );
        // 9. cron schedules
        $m!($fresh, schedules::a_schedule_fires_each_tick_once);
        $m!(
            $fresh,
            schedules::missed_ticks_are_skipped_or_caught_up_once
        );
        $m!(
            $fresh,
            schedules::two_engines_racing_fire_each_of_100_ticks_once
        );
        $m!($fresh, schedules::pause_resume_trigger_and_delete);
        $m!(
            $fresh,
            schedules::invalid_schedules_name_the_field_and_store_nothing
        );
        $m!($fresh, schedules::a_dst_change_fires_at_the_right_instants);
        $m!(
            $fresh,
            schedules::clock_jumps_fire_no_tick_twice_and_expire_no_lease_early
        );
        $m!(
            $fresh,
            schedules::clock_jumps_under_load_expire_no_lease_early_and_fire_no_tick_twice
        );
        $m!(
            $fresh,
            events::a_job_that_ends_enqueues_one_webhook_delivery_per_webhook
        );
        // 10. flow control: concurrency and rate limits, fairness between groups
        $m!(
            $fresh,
            flow::queue_and_group_concurrency_limits_hold_until_jobs_finish
        );
        $m!(
            $fresh,
            flow::group_concurrency_counts_what_earlier_claims_hold
        );
        $m!(
            $fresh,
            flow::a_concurrency_key_is_worked_on_once_at_a_time_and_is_not_a_group
        );
        $m!(
            $fresh,
            flow::claims_rotate_between_groups_so_a_small_tenant_is_not_starved
        );
        $m!(
            $fresh,
            flow::rate_limits_hold_per_queue_and_per_group_and_say_when_to_come_back
        );
        $m!(
            $fresh,
            flow::a_claim_from_several_queues_keeps_each_queues_limits
        );
        $m!(
            $fresh,
            flow::invalid_flow_settings_name_the_field_and_change_nothing
        );
        $m!($fresh, flow::concurrent_claimers_never_exceed_the_limits);
        $m!(
            $fresh,
            flow::a_full_queue_keeps_the_rotation_so_each_freed_place_goes_to_the_next_group
        );
        // 11. flows: parents and children
        $m!(
            $fresh,
            flows::a_parent_runs_once_every_child_completed_and_reads_their_results
        );
        $m!($fresh, flows::a_dead_child_fails_its_parent_or_releases_it);
        $m!(
            $fresh,
            flows::a_flow_is_all_or_nothing_and_names_the_bad_field
        );
        $m!(
            $fresh,
            flows::children_completing_at_once_release_their_parent_once
        );
        $m!(
            $fresh,
            flows::a_child_counts_once_toward_its_parent_and_retention_keeps_it_for_the_parent
        );
        // the whole job lifecycle against a model, over random sequences of operations
        $m!($fresh, machine::lifecycle_matches_the_model);
    };
}

#[cfg(test)]
mod tests {
    /// Every check function is in `__for_each_check!`: a check left out would silently never run.
    #[test]
    fn every_check_is_listed() {
        let lib = include_str!("lib.rs");
        let modules = [
            // `api` re-exports the checks of its files (see api.rs), so each is listed as `api::…`.
            ("api", include_str!("api/claims.rs")),
            ("api", include_str!("api/dead.rs")),
            ("api", include_str!("api/enqueue.rs")),
            ("api", include_str!("api/operate.rs")),
            ("api", include_str!("api/policies.rs")),
            ("api", include_str!("api/reads.rs")),
            ("concurrency", include_str!("concurrency.rs")),
            ("events", include_str!("events.rs")),
            ("flow", include_str!("flow.rs")),
            ("flows", include_str!("flows.rs")),
            ("leases", include_str!("leases.rs")),
            ("machine", include_str!("machine.rs")),
            ("model", include_str!("model.rs")),
            ("races", include_str!("races.rs")),
            ("reaper", include_str!("reaper.rs")),
            ("retries", include_str!("retries.rs")),
            ("schedules", include_str!("schedules.rs")),
        ];
        // A file added to src/api/ must be added above too, or its checks go unscanned.
        let api_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut api_files: Vec<String> = std::fs::read_dir(&api_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        api_files.sort();
        assert_eq!(
            api_files,
            [
                "claims.rs",
                "dead.rs",
                "enqueue.rs",
                "operate.rs",
                "policies.rs",
                "reads.rs"
            ],
            "the files of src/api/ and the list above differ"
        );
        let mut missing = Vec::new();
        for (module, src) in modules {
            for line in src.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name = rest.split('(').next().unwrap_or_default();
                    let path = format!("{module}::{name}");
                    let listed = lib.match_indices(&path).any(|(at, _)| {
                        let next = lib[at + path.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                    if !listed {
                        missing.push(format!("{module}::{name}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "not in __for_each_check!: {missing:?}");
    }
}
