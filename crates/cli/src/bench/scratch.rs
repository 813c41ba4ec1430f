//! The PostgreSQL schema `errand bench --store postgres://...` runs in: made fresh for one run, so that
//! a benchmark never reads or writes a deployment's jobs, and dropped when the run ends. Nothing else:
//! finding a database is the user's (`--store` names it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use errand_store_postgres::conn::{describe, quote_ident};
use rand::RngExt;

/// Prefix of the schemas made here; a schema left by a bench that was killed is easy to find and drop.
const PREFIX: &str = "errand_bench_";

/// A schema name no other run uses, on the server at `url`. The server creates the schema when it opens
/// its store; dropping this drops the schema with everything in it.
#[derive(Debug)]
pub struct Scratch {
    url: String,
    name: String,
}

impl Scratch {
    pub fn new(url: &str) -> Scratch {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let random: u64 = rand::rng().random();
        Scratch {
            url: url.to_string(),
            name: format!("{PREFIX}{secs:x}_{random:016x}"),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime that cannot be blocked on; a thread with its own runtime can.
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
                config.connect_timeout(Duration::from_secs(5));
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| describe(&e))?;
                let driver = tokio::spawn(connection);
                let dropped = client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_ident(&name)
                    ))
                    .await
                    .map_err(|e| describe(&e));
                drop(client);
                let _ = driver.await;
                dropped
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!(
                "errand bench: the scratch schema {} was not dropped ({e}); drop it with DROP SCHEMA {} CASCADE",
                self.name,
                quote_ident(&self.name)
            );
        }
    }
}
