//! The server under test as `errand serve` in a process of its own: started from this very binary on
//! the bench's settings, waited for until it answers, and stopped with SIGTERM (as a supervisor
//! would) when the bench ends. What the bench measures against it is the parent module's.

use std::process::Stdio;
use std::time::Duration;

use errand_server::config::Sync;
use errand_server::{Config, StoreUrl};
use tokio::process::Command;

/// How long the server may take to answer its first health check (opening a store, migrating it).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running `errand serve`.
#[derive(Debug)]
pub(super) struct Child {
    process: tokio::process::Child,
    url: String,
}

impl Child {
    /// Starts `errand serve` on `config`'s store, sync mode and log filter, on a free loopback port,
    /// and returns once it answers `GET /v1/health`.
    pub(super) async fn start(config: &Config) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find errand itself: {e}"))?;
        // A free port, chosen by the kernel: the child binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // Only the settings given here: an ERRAND_CONFIG or ERRAND_STORE of the caller's shell would
        // otherwise change what is measured. The store URL goes by environment, not argv, so that a
        // password in it is not shown by `ps`.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ERRAND_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ERRAND_LISTEN", format!("127.0.0.1:{port}"))
            .env("ERRAND_LOG", &config.log)
            .env(
                "ERRAND_SYNC",
                match config.sync {
                    Sync::Full => "full",
                    Sync::Normal => "normal",
                },
            );
        match &config.store {
            StoreUrl::Sqlite(path) => {
                cmd.env("ERRAND_STORE", format!("sqlite://{}", path.display()));
            }
            StoreUrl::Postgres(url) => {
                cmd.env("ERRAND_STORE", url)
                    .env("ERRAND_PG_SCHEMA", &config.pg_schema);
            }
        }
        let process = cmd
            .spawn()
            .map_err(|e| format!("cannot start errand serve: {e}"))?;
        let mut child = Child {
            process,
            url: format!("http://127.0.0.1:{port}"),
        };
        child.ready().await?;
        Ok(child)
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    async fn ready(&mut self) -> Result<(), String> {
        let client = errand_client::Client::builder(&self.url)
            .build()
            .map_err(|e| e.to_string())?;
        let until = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.process.try_wait() {
                return Err(format!("errand serve exited at start ({status})"));
            }
            if client.health_ready().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= until {
                return Err(format!(
                    "errand serve did not answer on {} within {} s",
                    self.url,
                    READY_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the server to stop as a supervisor would (SIGTERM), and kills it if it has not within 15 s.
    pub(super) async fn stop(mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.process.id() {
            // The child is ours and still running (not yet reaped), so the pid is its own.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(15), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}
