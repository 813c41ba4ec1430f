//! Running a server: open the store, start the background tasks, serve, and shut down in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use errand_core::Store;
use errand_core::{Engine, SystemClock};
use errand_store_postgres::{PgOptions, PgStore};
use errand_store_sqlite::{SqliteOptions, SqliteStore, SyncMode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, LogFormat, ServeArgs, StoreUrl, Sync};
use crate::{AppState, app};

/// A server with its store open and its background tasks running, ready to serve.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the store and starts the event follower and the maintenance loop. Errors are one line for
    /// a person.
    pub async fn open(config: Config) -> Result<Server, String> {
        let store: Arc<dyn Store> = match &config.store {
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                let options = SqliteOptions {
                    sync: match config.sync {
                        Sync::Full => SyncMode::Full,
                        Sync::Normal => SyncMode::Normal,
                    },
                    ..Default::default()
                };
                let store = SqliteStore::open(path, options)
                    .map_err(|e| format!("cannot open the store at {}: {e}", path.display()))?;
                Arc::new(store)
            }
            StoreUrl::Postgres(url) => {
                let options = PgOptions {
                    schema: config.pg_schema.clone(),
                    pool_size: config.pg_pool_size,
                    ..Default::default()
                };
                Arc::new(
                    PgStore::connect(url, options)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let (stop, stopped) = watch::channel(false);
        let interval = Duration::from_millis(config.maintenance_interval_ms);
        let state = AppState::new(store, Arc::new(SystemClock), config, stopped);
        let mut tasks = vec![state.follow_events()];
        if let Some(due) = state.engine.store().subscribe_due() {
            tasks.push(state.follow_other_nodes(due));
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            tasks.push(tokio::spawn(log_events(state.engine.subscribe())));
        }
        // One name for this node in both loops: the node leading maintenance (which counts stalls)
        // is the one that tells alerts.
        let node = node_id();
        tasks.push(tokio::spawn(alert(
            state.clone(),
            node.clone(),
            state.shutdown.clone(),
        )));
        tasks.push(tokio::spawn(maintain(
            state.engine.clone(),
            node,
            interval,
            state.shutdown.clone(),
        )));
        // Webhook deliveries are jobs: every node works them, like any worker would.
        let deliverer = crate::webhooks::Deliverer::with_destinations(
            state.engine.clone(),
            format!("errand-webhooks@{}", node_id()),
            state.config.webhooks.clone(),
        );
        tasks.push(tokio::spawn(deliverer.run(state.shutdown.clone())));
        Ok(Server { state, stop, tasks })
    }

    /// The state the handlers share (the engine, for tests and embedders).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `signal` resolves, then shuts down gracefully: stops accepting,
    /// answers waiting fetches with no jobs, lets requests in flight finish (for at most the configured
    /// shutdown timeout), stops the background tasks and closes the store, whose writer finishes the
    /// commit in progress.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let Server { state, stop, tasks } = self;
        let timeout = Duration::from_millis(state.config.shutdown_timeout_ms);
        let (signalled_tx, signalled) = tokio::sync::oneshot::channel::<()>();
        let waker = state.clone();
        let stop_for_signal = stop.clone();
        let graceful = async move {
            signal.await;
            tracing::info!("shutting down: no new connections; answering waiting fetches");
            let _ = stop_for_signal.send(true);
            waker.wake_all();
            let _ = signalled_tx.send(());
        };
        let server = axum::serve(listener, app(state.clone()))
            .with_graceful_shutdown(graceful)
            .into_future();
        tokio::pin!(server);
        let deadline = async {
            if signalled.await.is_ok() {
                tokio::time::sleep(timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = &mut server => r.map_err(|e| format!("server error: {e}"))?,
            () = deadline => tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "requests still in flight at the shutdown deadline were cut off"
            ),
        }
        let _ = stop.send(true);
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        // The last handle to the store goes with the state; dropping it joins the writer thread, which
        // first finishes the commit it is in.
        tokio::task::spawn_blocking(move || drop(state))
            .await
            .map_err(|e| format!("closing the store: {e}"))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves `config` until SIGINT or SIGTERM: what `errand serve` runs.
pub async fn serve_until(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    config.check_exposure()?;
    let server = Server::open(config.clone()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let store = config.store.to_string();
    tracing::info!(
        %addr,
        %store,
        auth = if config.keys.is_empty() { "none (loopback only)" } else { "api keys" },
        "errand listening on http://{addr}"
    );
    server.serve(listener, signal).await
}

/// Why `errand serve` stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The settings are wrong (a flag, the environment or the config file): nothing was started.
    Config(String),
    /// The server could not start (the store, the address) or failed while running.
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Config(m) | RunError::Failed(m) => f.write_str(m),
        }
    }
}

/// `errand serve`: resolves the settings, sets up logging, and serves until a signal.
pub async fn run(args: ServeArgs) -> Result<(), RunError> {
    let config = Config::resolve(&args, std::env::var(crate::config::API_KEY_ENV).ok())
        .map_err(RunError::Config)?;
    config.check_exposure().map_err(RunError::Config)?;
    init_logging(&config).map_err(RunError::Config)?;
    serve_until(config, shutdown_signal())
        .await
        .map_err(RunError::Failed)
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .map_err(|e| format!("log: {:?} is not a log filter: {e}", config.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already set (an embedder or a test set up its own): keep theirs.
    let _ = res;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Runs the maintenance pass every `interval` until shutdown, on whichever node leads it: with a shared
/// store (PostgreSQL) one node at a time does the work, and another takes over within a few intervals
/// when it dies. Every change of the pass is guarded anyway, so a brief overlap is harmless.
async fn maintain(
    engine: Engine,
    node: String,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let ttl_ms = u64::try_from(interval.as_millis().saturating_mul(3)).unwrap_or(u64::MAX);
    let mut every = Every::new(interval, &mut stop);
    while every.tick().await {
        match engine.store().try_lead("maintenance", &node, ttl_ms).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who leads maintenance; retrying next interval");
                continue;
            }
        }
        match engine.maintain().await {
            Ok(r) if r != errand_core::MaintenanceReport::default() => tracing::info!(
                promoted = r.promoted,
                stalled = r.stalled,
                timed_out = r.timed_out,
                pruned = r.pruned,
                "maintenance"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance pass failed; retrying next interval"),
        }
    }
}

/// Evaluates the built-in alerts every `alert_interval_ms` until shutdown; the node leading
/// maintenance tells the notices: it is the one that sees stalls (counted by the maintenance pass).
/// Asking keeps the lead for `maintenance_interval_ms × 3`, as the maintenance loop does.
async fn alert(state: AppState, node: String, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.config.alert_interval_ms);
    let ttl_ms = state.config.maintenance_interval_ms.saturating_mul(3);
    let mut every = Every::new(interval, &mut stop);
    while every.tick().await {
        let lead = match state
            .engine
            .store()
            .try_lead("maintenance", &node, ttl_ms)
            .await
        {
            Ok(lead) => lead,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who leads alerting; retrying next interval");
                false
            }
        };
        if let Err(e) = state.evaluate_alerts(lead).await {
            tracing::warn!(error = %e, "alerts not evaluated; retrying next interval");
        }
    }
}

/// A periodic loop's clock: ticks every `interval` (a late tick delays the next, never bunches them)
/// until the server shuts down.
struct Every<'a> {
    tick: tokio::time::Interval,
    stop: &'a mut watch::Receiver<bool>,
}

impl<'a> Every<'a> {
    fn new(interval: Duration, stop: &'a mut watch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every { tick, stop }
    }

    /// Waits for the next tick; `false` once the server is shutting down.
    async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }
}

/// This process's name among the nodes sharing a store.
fn node_id() -> String {
    use rand::RngExt;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// Logs every state change with the job's id, queue and attempt.
async fn log_events(mut events: tokio::sync::broadcast::Receiver<errand_core::Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(e) => tracing::debug!(
                job_id = %e.job_id,
                queue = %e.queue,
                kind = %e.kind,
                attempt = e.attempt,
                from = e.from.map(|s| s.as_str()).unwrap_or("new"),
                to = %e.to,
                "job"
            ),
            Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "event log fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}
