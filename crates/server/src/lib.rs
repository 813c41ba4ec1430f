//! Errand's server: the HTTP API over the engine, with auth, long-poll fetch, the maintenance loop and
//! graceful shutdown.
//!
//! [`app`] builds the router (tests drive it directly); [`run`] opens the store, starts the background
//! tasks, serves until a signal and shuts down in order. `docs/API.md` shows every route.
//!
//! **Invariant:** no job semantics here. Handlers check the caller, translate between the wire types and
//! the engine's, and map errors to statuses; the engine decides.

pub mod activity;
pub mod alerting;
pub mod auth;
pub mod config;
mod convert;
mod dashboard;
pub mod deployment;
pub mod error;
pub mod events;
mod extract;
pub mod metrics;
pub mod resources;
mod routes;
mod run;
mod wake;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use errand_core::{Clock, Engine, EngineConfig, Store};
use errand_protocol::code;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{Config, ServeArgs, StoreUrl};
pub use run::{RunError, Server, run, serve_until};

use crate::error::ApiError;
use crate::wake::Waiters;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub metrics: Arc<metrics::Metrics>,
    /// Rate-limited keys' token buckets (per node).
    pub key_buckets: Arc<auth::KeyBuckets>,
    /// The bound on auth failures written to the audit log (per node).
    pub denial_audit: Arc<auth::DenialAudit>,
    /// The built-in alerts as this node sees them.
    pub alerts: Arc<alerting::Alerting>,
    /// This node's recent events, for `GET /v1/events`.
    pub events: Arc<events::EventLog>,
    /// This node's job counts of the last minutes, for `GET /v1/activity`.
    pub activity: Arc<activity::Activity>,
    waiters: Arc<Waiters>,
    /// Becomes `true` when the server starts shutting down: waiting fetches answer at once.
    shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// A state with an engine over `store`, timed and observed by the state's metrics. The server must
    /// also run [`AppState::follow_events`] for long polls to be woken; `shutdown` turning `true` ends
    /// them.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: Config,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let metrics = Arc::new(metrics::Metrics::new(config.metrics_kinds_per_queue));
        let store = Arc::new(metrics::TimedStore::new(
            store,
            metrics::StoreTimer(Arc::clone(&metrics)),
        ));
        let events = Arc::new(events::EventLog::new(events::EVENT_HISTORY));
        let activity = Arc::new(activity::Activity::default());
        let observers = events::Observers(vec![metrics.clone(), events.clone(), activity.clone()]);
        let waiters = Arc::new(Waiters::new(metrics.fetches_waiting.clone()));
        let engine_config = EngineConfig {
            limits: errand_core::Limits {
                max_payload_bytes: config.max_payload_bytes,
                ..Default::default()
            },
            observer: Some(Arc::new(observers)),
            audit_retention_ms: (config.audit_retention_days > 0)
                .then(|| u64::from(config.audit_retention_days) * 86_400_000),
            ..EngineConfig::default()
        };
        AppState {
            engine: Engine::new(store, clock, engine_config),
            config: Arc::new(config),
            metrics,
            alerts: Arc::default(),
            key_buckets: Arc::default(),
            denial_audit: Arc::default(),
            events,
            activity,
            waiters,
            shutdown,
        }
    }

    /// Wakes waiting fetches as jobs become due; runs until the engine is dropped.
    pub fn follow_events(&self) -> tokio::task::JoinHandle<()> {
        let events = self.engine.subscribe();
        tokio::spawn(Arc::clone(&self.waiters).follow(events))
    }

    /// Wakes fetches for jobs that became due through other nodes sharing the store; runs until the
    /// store's notifications end.
    pub fn follow_other_nodes(
        &self,
        due: tokio::sync::broadcast::Receiver<String>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.waiters).follow_store(due))
    }

    /// Wakes the fetches waiting on `queue`, whose jobs became available without an event (a resume).
    pub fn wake_queue(&self, queue: &str) {
        self.waiters.wake_queue(queue);
    }

    /// Evaluates the built-in alerts once and, if `lead`, tells the notices due. The server does this
    /// every `alert_interval_ms`; tests call it with an injected clock.
    pub async fn evaluate_alerts(&self, lead: bool) -> errand_core::Result<()> {
        let stats = self.engine.stats_all().await?;
        let resources = self.resources().await;
        let silences = alerting::Silences(self.engine.alert_silences().await?);
        let notices = self.alerts.evaluate(
            self.engine.now(),
            alerting::Seen {
                stats: &stats,
                resources: &resources,
                silences: &silences,
            },
            &self.metrics,
            &self.config.alerts,
            lead,
        );
        if lead {
            alerting::send(&self.engine, notices).await;
        }
        Ok(())
    }

    /// This deployment checked against `docs/AUDIT.md` (`crate::deployment`).
    pub async fn audit_report(&self) -> errand_core::Result<errand_protocol::AuditReport> {
        let now = self.engine.now();
        let queues = self.engine.queues().await?;
        let stats = self.engine.stats_all().await?;
        let schedules = self.engine.schedules().await?;
        let resources = self.resources().await;
        let mut workers: std::collections::BTreeMap<String, deployment::SeenWorker> =
            Default::default();
        let reports = self.metrics.worker_reports(now);
        for (queue, seen) in self.metrics.workers(now) {
            for (id, _) in seen {
                workers
                    .entry(id.clone())
                    .or_insert_with(|| deployment::SeenWorker {
                        report: reports.get(&id).cloned(),
                        id,
                        queues: Vec::new(),
                    })
                    .queues
                    .push(queue.clone());
            }
        }
        let workers: Vec<_> = workers.into_values().collect();
        Ok(deployment::audit(&deployment::Deployment {
            now,
            config: &self.config,
            queues: &queues,
            stats: &stats,
            schedules: &schedules,
            workers: &workers,
            resources: &resources,
        }))
    }

    /// What the store, its disk and this process take now.
    pub async fn resources(&self) -> resources::Resources {
        let dir = match &self.config.store {
            config::StoreUrl::Sqlite(db) => Some(resources::data_dir_of(db)),
            config::StoreUrl::Postgres(_) => None,
        };
        resources::read(&self.engine, dir.as_deref()).await
    }

    /// Wakes every waiting fetch (they see the shutdown flag and answer empty).
    pub fn wake_all(&self) {
        self.waiters.wake_all();
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Errand",
        description = "A background-job queue: producers enqueue jobs, workers fetch them under a lease \
                       and report the outcome. Instants are ms since the Unix epoch; durations are ms.",
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "jobs", description = "producers and operators"),
        (name = "workers", description = "fetch under a lease, heartbeat, acknowledge"),
        (name = "queues", description = "stats, pause, configuration, listings"),
        (name = "dead letters", description = "jobs that failed for good"),
        (name = "schedules", description = "cron schedules, each tick firing once across nodes"),
        (name = "observability", description = "metrics, the event stream, alerts"),
        (name = "health", description = "for load balancers and orchestrators"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The rules that tie one field of a request to another, which field attributes cannot carry: said in
/// JSON Schema with `anyOf` and `allOf` beside the derived schemas (as `errand_core` enforces them).
struct AcrossFields;

impl utoipa::Modify for AcrossFields {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{
            AllOfBuilder, AnyOfBuilder, ObjectBuilder, Schema, SchemaType, Type,
        };

        /// Holds when `field` is absent or `null`.
        fn unset(field: &str) -> ObjectBuilder {
            ObjectBuilder::new().property(field, ObjectBuilder::new().schema_type(Type::Null))
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let schemas = &mut components.schemas;
        if let Some(RefOr::T(job)) = schemas.remove("EnqueueJob") {
            let description = match &job {
                Schema::Object(o) => o.description.clone(),
                _ => None,
            };
            let rules = AllOfBuilder::new()
                .description(description)
                .item(job)
                // `delay_ms` and `run_at` exclude each other.
                .item(
                    AnyOfBuilder::new()
                        .item(unset("delay_ms"))
                        .item(unset("run_at")),
                )
                // `dedup: replace` names the job to replace by its `unique_key`.
                .item(
                    AnyOfBuilder::new()
                        .item(
                            ObjectBuilder::new().property(
                                "dedup",
                                // Any type, so that only the enum decides (an object type here
                                // would refuse `"reject"` itself).
                                ObjectBuilder::new()
                                    .schema_type(SchemaType::AnyValue)
                                    .enum_values(Some([serde_json::Value::Null, "reject".into()])),
                            ),
                        )
                        .item(
                            ObjectBuilder::new()
                                .property(
                                    "unique_key",
                                    ObjectBuilder::new().schema_type(Type::String),
                                )
                                .required("unique_key"),
                        ),
                );
            schemas.insert("EnqueueJob".into(), RefOr::T(rules.into()));
        }
        // Each acknowledgement refuses unknown fields, as every request does; utoipa leaves that out
        // of a tagged enum's variants.
        if let Some(RefOr::T(Schema::OneOf(ack))) = schemas.get_mut("AckItem") {
            for item in &mut ack.items {
                if let RefOr::T(Schema::Object(o)) = item {
                    o.additional_properties = Some(Box::new(
                        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                    ));
                }
            }
        }
        // A job of a flow takes no unique key.
        if let Some(RefOr::T(Schema::Object(flow_job))) = schemas.get_mut("FlowJob")
            && let Some(job) = flow_job.properties.get_mut("job")
        {
            let plain = std::mem::replace(job, RefOr::T(Schema::default()));
            *job = AllOfBuilder::new()
                .item(plain)
                .item(unset("unique_key"))
                .into();
        }
    }
}

/// `ScheduleView` as one object: utoipa describes its flattened `ScheduleDef` as an `allOf` whose
/// `ScheduleDef` part forbids every field but its own, which no view could satisfy.
struct FlatScheduleView;

impl utoipa::Modify for FlatScheduleView {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;

        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let schemas = &mut components.schemas;
        let Some(RefOr::T(Schema::AllOf(view))) = schemas.get("ScheduleView") else {
            return;
        };
        let mut merged = match schemas.get("ScheduleDef") {
            Some(RefOr::T(Schema::Object(def))) => def.clone(),
            _ => return,
        };
        merged.additional_properties = None;
        merged.description = view.description.clone();
        for part in &view.items {
            if let RefOr::T(Schema::Object(own)) = part {
                merged.properties.extend(own.properties.clone());
                merged.required.extend(own.required.iter().cloned());
            }
        }
        schemas.insert("ScheduleView".into(), RefOr::T(Schema::Object(merged)));
    }
}

/// The routes with their OpenAPI description, from one list so that the two cannot drift apart.
fn routes() -> OpenApiRouter<AppState> {
    use routes::{flows, health, jobs, observe, queues, schedules, work};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::get_logs, work::append_logs))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::promote))
        .routes(routes!(jobs::wait_job))
        .routes(routes!(flows::enqueue_flow))
        .routes(routes!(flows::children))
        .routes(routes!(work::fetch))
        .routes(routes!(work::heartbeat))
        .routes(routes!(work::complete))
        .routes(routes!(work::fail))
        .routes(routes!(work::release))
        .routes(routes!(work::ack))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::get_queue))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(queues::get_config, queues::put_config))
        .routes(routes!(queues::get_flow))
        .routes(routes!(queues::list_jobs))
        .routes(routes!(queues::list_dead, queues::purge_dead))
        .routes(routes!(queues::replay_dead))
        .routes(routes!(queues::dead_groups))
        .routes(routes!(queues::list_webhooks))
        .routes(routes!(queues::put_webhook, queues::delete_webhook))
        .routes(routes!(schedules::list_schedules))
        .routes(routes!(
            schedules::get_schedule,
            schedules::put_schedule,
            schedules::delete_schedule
        ))
        .routes(routes!(schedules::pause_schedule))
        .routes(routes!(schedules::resume_schedule))
        .routes(routes!(schedules::trigger_schedule))
        .routes(routes!(observe::metrics))
        .routes(routes!(observe::events))
        .routes(routes!(observe::whoami))
        .routes(routes!(observe::alerts))
        .routes(routes!(observe::alert_rules))
        .routes(routes!(observe::silences, observe::silence))
        .routes(routes!(observe::unsilence))
        .routes(routes!(observe::audit))
        .routes(routes!(observe::audit_report))
        .routes(routes!(observe::workers))
        .routes(routes!(observe::activity))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
}

/// The OpenAPI 3.1 description of every route [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    described(routes().split_for_parts().1)
}

/// The description once every route added its schemas: the rules across fields, the view of a
/// schedule as one object, and the schemas only parameters name.
fn described(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use errand_protocol::schema;
    use utoipa::{Modify, PartialSchema, ToSchema};

    let components = api.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        (schema::JobId::name(), schema::JobId::schema()),
        (schema::QueueName::name(), schema::QueueName::schema()),
        (schema::Name::name(), schema::Name::schema()),
    ] {
        components
            .schemas
            .entry(name.into_owned())
            .or_insert(schema);
    }
    AcrossFields.modify(&mut api);
    FlatScheduleView.modify(&mut api);
    api
}

/// The router: every API route, `/openapi.json`, and JSON errors for unknown routes and methods.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let api = Arc::new(described(api));
    let max_body = state.config.max_body_bytes;
    router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let api = Arc::clone(&api);
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                code::METHOD_NOT_ALLOWED,
                "the route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::observe::track_http,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use errand_core::Limits;
    use errand_core::limits::{MAX_PRIORITY, MIN_PRIORITY};
    use errand_core::validate::{MAX_FLOW_LIMIT, MAX_RATE_PERIOD_MS};
    use serde_json::Value;

    /// The description's numbers are the limits the engine enforces (`errand_protocol` cannot name
    /// them: clients do not compile the engine).
    #[test]
    fn the_description_states_the_limits_the_engine_enforces() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let s = &doc["components"]["schemas"];
        let l = Limits::default();
        let n = |v: &Value| v.as_u64().unwrap();
        let job = &s["EnqueueJob"]["allOf"][0]["properties"];
        assert_eq!(n(&job["priority"]["minimum"]), MIN_PRIORITY as u64);
        assert_eq!(n(&job["priority"]["maximum"]), MAX_PRIORITY as u64);
        assert_eq!(n(&job["delay_ms"]["maximum"]), l.max_delay_ms);
        assert_eq!(
            n(&job["max_attempts"]["maximum"]),
            u64::from(l.max_attempts)
        );
        assert_eq!(n(&job["timeout_ms"]["minimum"]), l.min_timeout_ms);
        assert_eq!(n(&job["timeout_ms"]["maximum"]), l.max_timeout_ms);
        assert_eq!(n(&job["heartbeat_ms"]["minimum"]), l.min_heartbeat_ms);
        assert_eq!(n(&job["heartbeat_ms"]["maximum"]), l.max_timeout_ms);
        assert_eq!(n(&job["max_stalled"]["maximum"]), u64::from(l.max_stalled));
        let backoff = &s["Backoff"]["properties"];
        assert_eq!(n(&backoff["delay_ms"]["maximum"]), l.max_backoff_ms);
        assert_eq!(n(&backoff["max_ms"]["maximum"]), l.max_backoff_ms);
        let config = &s["QueueConfig"]["properties"];
        assert_eq!(n(&s["UniqueWindow"]["oneOf"][0]["maximum"]), l.max_delay_ms);
        assert_eq!(
            n(&config["concurrency"]["maximum"]),
            u64::from(MAX_FLOW_LIMIT)
        );
        let rate = &s["RateLimit"]["properties"];
        assert_eq!(n(&rate["limit"]["maximum"]), u64::from(MAX_FLOW_LIMIT));
        assert_eq!(n(&rate["period_ms"]["maximum"]), MAX_RATE_PERIOD_MS);
        for (schema, max) in [
            ("QueueName", l.max_queue_name),
            ("JobQueueName", l.max_queue_name),
            ("Name", l.max_queue_name),
            ("Kind", l.max_kind),
            ("Key", l.max_key),
            ("WorkerId", l.max_worker_id),
        ] {
            assert_eq!(n(&s[schema]["maxLength"]), max as u64, "{schema}");
        }
        let fetch = &s["FetchRequest"]["properties"];
        assert_eq!(n(&fetch["queues"]["maxItems"]), l.max_claim_queues as u64);
        assert_eq!(n(&fetch["max_jobs"]["maximum"]), l.max_claim as u64);
        assert_eq!(
            n(&s["EnqueueBatch"]["properties"]["jobs"]["maxItems"]),
            l.max_batch as u64
        );
        assert_eq!(
            n(&s["AckBatchRequest"]["properties"]["acks"]["maxItems"]),
            l.max_batch as u64
        );
        assert_eq!(
            n(&s["LogRequest"]["properties"]["lines"]["maxItems"]),
            l.max_log_batch as u64
        );
        assert_eq!(
            n(&s["FlowRequest"]["properties"]["children"]["maxItems"]),
            errand_core::engine::MAX_CHILDREN as u64
        );
        assert_eq!(
            n(&s["ScheduleDef"]["properties"]["cron"]["maxLength"]),
            errand_core::cron::MAX_CRON_LEN as u64
        );
    }

    /// A name the description's pattern allows is one the engine takes, and the other way round.
    #[test]
    fn the_name_patterns_are_the_engines_rules() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let s = &doc["components"]["schemas"];
        let l = Limits::default();
        let pattern = |name: &str| {
            // The patterns use only what the `regex` crate shares with ECMA-262, but for the
            // lookaheads, which are checked by hand below.
            let p = s[name]["pattern"].as_str().unwrap().to_string();
            p.replace(r"(?!errand\.)", "").replace("(?![.]+$)", "")
        };
        let queue = regex_lite_match(&pattern("QueueName"));
        let kind = regex_lite_match(&pattern("Kind"));
        for name in [
            "q",
            "payments.v2:eu-1_x",
            ".hidden",
            "a/b",
            "has space",
            "é",
            ".",
        ] {
            let engine = errand_core::validate::queue_name("queue", name, &l).is_ok();
            let described = queue(name) && !name.bytes().all(|b| b == b'.');
            assert_eq!(engine, described, "queue {name:?}");
        }
        for name in ["email/send", "a:b.c-d_e", "has space", "ü", ""] {
            let engine = errand_core::validate::kind("kind", name, &l).is_ok();
            assert_eq!(engine, kind(name), "kind {name:?}");
        }
    }

    /// A matcher for the simple patterns above (`^[class]+$`).
    fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool + use<> {
        let class = pattern
            .strip_prefix("^[")
            .and_then(|p| p.strip_suffix("]+$"))
            .unwrap()
            .to_string();
        move |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| {
                    let mut chars = class.chars().peekable();
                    let mut ok = false;
                    while let Some(a) = chars.next() {
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(b) => ok |= (a..=b).contains(&c),
                                None => ok |= c == a || c == '-',
                            }
                        } else {
                            ok |= c == a;
                        }
                    }
                    ok
                })
        }
    }
}
