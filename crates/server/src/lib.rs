//! Errand's server: the HTTP API over the engine, with auth, long-poll fetch, the maintenance loop and
//! graceful shutdown.
//!
//! [`app`] builds the router (tests drive it directly); [`run`] opens the store, starts the background
//! tasks, serves until a signal and shuts down in order. `docs/API.md` shows every route.
//!
//! **Invariant:** no job semantics here. Handlers check the caller, translate between the wire types and
//! the engine's, and map errors to statuses; the engine decides.

pub mod alerting;
pub mod auth;
pub mod config;
mod convert;
mod dashboard;
pub mod error;
pub mod events;
mod extract;
pub mod metrics;
mod routes;
mod run;
pub mod testing;
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
    /// The built-in alerts as this node sees them.
    pub alerts: Arc<alerting::Alerting>,
    /// This node's recent events, for `GET /v1/events`.
    pub events: Arc<events::EventLog>,
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
        let metrics = Arc::new(metrics::Metrics::default());
        let store = Arc::new(metrics::TimedStore::new(store, Arc::clone(&metrics)));
        let events = Arc::new(events::EventLog::new(events::EVENT_HISTORY));
        let observers = events::Observers(vec![metrics.clone(), events.clone()]);
        let engine_config = EngineConfig {
            observer: Some(Arc::new(observers)),
            ..EngineConfig::default()
        };
        AppState {
            engine: Engine::new(store, clock, engine_config),
            config: Arc::new(config),
            metrics,
            alerts: Arc::default(),
            key_buckets: Arc::default(),
            events,
            waiters: Arc::new(Waiters::default()),
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
        let notices = self.alerts.evaluate(
            self.engine.now(),
            &stats,
            &self.metrics,
            &self.config.alerts,
            lead,
        );
        if lead {
            alerting::send(&self.engine, notices).await;
        }
        Ok(())
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
        .routes(routes!(observe::audit))
        .routes(routes!(observe::workers))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
}

/// The OpenAPI 3.1 description of every route [`app`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The router: every API route, `/openapi.json`, and JSON errors for unknown routes and methods.
pub fn app(state: AppState) -> Router {
    let (router, api) = routes().split_for_parts();
    let api = Arc::new(api);
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
