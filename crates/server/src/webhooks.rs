//! The webhook deliverer: works the queue `errand.webhooks` like any worker — claim, POST, complete or
//! fail — so that deliveries get Errand's retries, backoff, stall recovery and dead-letter list.
//!
//! Each POST is signed: `Errand-Signature: t=<ms>,v1=<hex HMAC-SHA256 over "<t>.<body>">`, keyed by the
//! webhook's secret, which is read when the delivery is sent (it is never copied into the delivery job,
//! whose payload anyone with `read` may see). `Errand-Delivery` is the delivery job's id: the same on
//! every retry of one notice, so that a receiver can deduplicate.
//!
//! **Destinations** are checked against `[webhooks] allow`/`deny` ([`destinations`]) at delivery, after
//! resolution: the client's DNS resolver is [`GuardedResolver`], which resolves the name itself, refuses
//! it if any address is denied, and hands the connector only the addresses it checked — so a name cannot
//! be re-pointed between the check and the connection. An IP literal never reaches a resolver: it is
//! checked before the request is made. Redirects are not followed and proxies (`HTTP_PROXY`, ...) are not
//! used, so the checked address is the one connected to. A refusal fails the delivery as not retryable:
//! it goes dead at once, with the reason.

pub mod destinations;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use errand_core::engine::{WEBHOOK_KIND, WEBHOOK_QUEUE};
use errand_core::{Claim, Engine, Failure, Job};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;

pub use destinations::{Destinations, Refused};

/// How long one POST may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refusing receiver's answer an error keeps.
const ANSWER_EXCERPT: usize = 200;
/// Deliveries claimed and sent at once.
const BATCH: usize = 16;
/// How long an idle deliverer waits before looking again.
const IDLE: Duration = Duration::from_millis(200);

/// The payload of a delivery job (see `errand_core::engine::webhooks`).
#[derive(Debug, Deserialize)]
struct Delivery<'a> {
    queue: String,
    webhook: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Sends webhook deliveries.
#[derive(Debug, Clone)]
pub struct Deliverer {
    engine: Engine,
    http: Result<reqwest::Client, String>,
    guard: Arc<GuardedResolver>,
    worker_id: String,
}

impl Deliverer {
    /// A deliverer over `engine`, claiming as `worker_id`, with the default destination policy.
    pub fn new(engine: Engine, worker_id: impl Into<String>) -> Self {
        Deliverer::with_destinations(engine, worker_id, Destinations::default())
    }

    /// A deliverer that sends only to the destinations `destinations` permits.
    pub fn with_destinations(
        engine: Engine,
        worker_id: impl Into<String>,
        destinations: Destinations,
    ) -> Self {
        let guard = Arc::new(GuardedResolver {
            destinations,
            hosts: HashMap::new(),
        });
        Deliverer {
            engine,
            http: client(&guard),
            guard,
            worker_id: worker_id.into(),
        }
    }

    /// Answers `name` with `addrs` instead of asking DNS, like a hosts-file entry (tests use it to
    /// point a name anywhere). The addresses are checked like resolved ones.
    pub fn resolving(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        let mut guard = GuardedResolver::clone(&self.guard);
        guard
            .hosts
            .insert(name.to_ascii_lowercase(), addrs.to_vec());
        self.guard = Arc::new(guard);
        self.http = client(&self.guard);
        self
    }

    /// Claims due deliveries and sends them; returns how many were sent (or failed).
    pub async fn run_once(&self) -> errand_core::Result<usize> {
        let jobs = self
            .engine
            .claim(Claim {
                queues: vec![WEBHOOK_QUEUE.to_string()],
                worker_id: self.worker_id.clone(),
                limit: BATCH,
                heartbeat_ms: None,
            })
            .await?;
        let n = jobs.len();
        let mut sends = tokio::task::JoinSet::new();
        for job in jobs {
            let this = self.clone();
            sends.spawn(async move { this.deliver(job).await });
        }
        while let Some(r) = sends.join_next().await {
            match r {
                Ok(Err(e)) => tracing::warn!("a webhook delivery's outcome was not recorded: {e}"),
                Err(e) => tracing::error!("a webhook delivery task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
        Ok(n)
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let idle = match self.run_once().await {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!("webhook deliveries: {e}");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    async fn deliver(&self, job: Job) -> errand_core::Result<()> {
        let Some(token) = job.lease.as_ref().map(|l| l.token.clone()) else {
            return Ok(());
        };
        let outcome = self.send(&job).await;
        match outcome {
            Ok(result) => {
                self.engine.complete(job.id, token, Some(result)).await?;
            }
            Err(failure) => {
                tracing::info!(delivery = %job.id, "webhook delivery failed: {}", failure.message);
                self.engine.fail(job.id, token, failure).await?;
            }
        }
        Ok(())
    }

    /// Sends one delivery: its result, or why it failed.
    async fn send(&self, job: &Job) -> Result<serde_json::Value, Failure> {
        if job.kind != WEBHOOK_KIND {
            return Err(Failure::fatal(format!(
                "not a webhook delivery: {}",
                job.kind
            )));
        }
        let d: Delivery<'_> = serde_json::from_str(job.payload.get())
            .map_err(|e| Failure::fatal(format!("not a webhook delivery: {e}")))?;
        let hooks = self
            .engine
            .webhooks(&d.queue)
            .await
            .map_err(|e| Failure::retryable(format!("the webhook did not read: {e}")))?;
        let Some(hook) = hooks.get(&d.webhook) else {
            return Ok(serde_json::json!({"skipped": "the webhook was deleted"}));
        };
        // What errors and logs say of the URL: no credentials or query (they may hold tokens).
        let shown = redacted(&hook.url);
        let url = reqwest::Url::parse(&hook.url)
            .map_err(|e| Failure::fatal(format!("POST {shown} not sent: an invalid URL: {e}")))?;
        // What the URL alone tells (a denied name, an IP literal in a denied network) is refused before
        // any connection; a name's addresses are checked by the resolver.
        if let Err(refused) = self.guard.destinations.check_url(&url) {
            return Err(refuse(job, &shown, &refused));
        }
        if hook.url.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(Failure::fatal(format!(
                "POST {shown} not sent: this server was built without TLS (feature errand-server/tls)"
            )));
        }
        let body = d.body.get().to_string();
        let t = self.engine.now();
        let http = self
            .http
            .as_ref()
            .map_err(|e| Failure::retryable(e.clone()))?;
        let request = http
            .post(url)
            .header("content-type", "application/json")
            .header("errand-signature", signature(&hook.secret, t, &body))
            .header("errand-webhook", &d.webhook)
            .header("errand-delivery", job.id.to_string())
            .body(body);
        let mut response = request.send().await.map_err(|e| {
            if let Some(refused) = find::<Refused>(&e) {
                return refuse(job, &shown, refused);
            }
            // reqwest's errors name the URL: say it once, redacted, and only the causes.
            let e = e.without_url();
            Failure::retryable(format!("POST {shown} failed: {}", error_chain(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(serde_json::json!({"status": status.as_u16()}));
        }
        // The start of the answer, for the person reading the error; never more than that in memory.
        let mut head = Vec::new();
        while head.len() < ANSWER_EXCERPT {
            match response.chunk().await {
                Ok(Some(bytes)) => head.extend_from_slice(&bytes),
                _ => break,
            }
        }
        head.truncate(ANSWER_EXCERPT);
        let excerpt = String::from_utf8_lossy(&head);
        Err(Failure::retryable(format!(
            "POST {shown} answered {status}: {excerpt}"
        )))
    }
}

/// The client of deliveries: its resolver is `guard`; no redirects, no proxies (see the module's
/// documentation). Building fails only when the TLS backend cannot start; then every delivery fails,
/// saying why (a client without the guard's resolver is never used).
fn client(guard: &Arc<GuardedResolver>) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect to the destination itself, past the resolver's check.
        .no_proxy()
        .dns_resolver(Arc::clone(guard))
        .build()
        .map_err(|e| format!("the webhook HTTP client did not start: {e}"))
}

/// A refused destination: logged, and a failure that is not retried (the delivery goes dead with it).
fn refuse(job: &Job, shown: &str, refused: &Refused) -> Failure {
    tracing::warn!(delivery = %job.id, url = %shown, "webhook destination refused: {refused}");
    Failure::fatal(format!("POST {shown} refused: {refused}"))
}

/// The first error of type `T` in `e`'s chain of causes.
fn find<'e, T: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// The delivery client's DNS resolver: resolves a name (or takes it from `hosts`), refuses it unless
/// the name and every address pass [`Destinations`], and returns exactly the addresses it checked —
/// the connector connects to nothing else.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    destinations: Destinations,
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_ascii_lowercase();
        let destinations = self.destinations.clone();
        let fixed = self.hosts.get(name.trim_end_matches('.')).cloned();
        Box::pin(async move {
            destinations.check_name(&name)?;
            let addrs: Vec<IpAddr> = match fixed {
                Some(addrs) => addrs,
                None => tokio::net::lookup_host((name.as_str(), 0))
                    .await?
                    .map(|a| a.ip())
                    .collect(),
            };
            // Every address, not only the first: the connector tries them all in turn.
            for ip in &addrs {
                destinations
                    .check_ip(*ip)
                    .map_err(|r| Refused(format!("{name} resolves to {ip}: {r}")))?;
            }
            // Port 0: the connector puts the URL's port (or the scheme's) in.
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// `url` without user, password, query or fragment.
pub(crate) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(an invalid URL)".to_string(),
    }
}

/// The `Errand-Signature` header for `body` sent at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_show_credentials_or_queries_of_a_url() {
        assert_eq!(
            redacted("https://user:pass@hooks.example/in?token=s3cret#x"),
            "https://hooks.example/in"
        );
        assert_eq!(redacted("not a url"), "(an invalid URL)");
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently: printf '1700000000000.{}' | openssl dgst -sha256 -hmac key-of-16-bytes
        assert_eq!(
            signature("key-of-16-bytes!", 1_700_000_000_000, "{}"),
            "t=1700000000000,v1=5a3b8d1d801922b0009cdff77ce8f77613dd3191726b1574678a5287c7b89668"
        );
    }
}
