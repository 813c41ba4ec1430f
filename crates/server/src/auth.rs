//! API keys: who may call what, on which queues.
//!
//! A key is kept only as the SHA-256 of its secret. A request's `Authorization: Bearer <secret>` is
//! hashed and compared with every configured hash in constant time, so that neither the comparison nor
//! the position of the matching key shows in the response time.
//!
//! | scope | grants |
//! |---|---|
//! | `produce` | enqueue; get and cancel a job |
//! | `work` | fetch, heartbeat, complete, fail, release, batch ack |
//! | `read` | every `GET`: jobs, listings, queues, configuration, dead letters |
//! | `admin` | everything: retry, promote, pause, resume, configure, replay, purge |
//!
//! A key limited to queue-name prefixes may only touch queues whose names start with one of them.
//! Heartbeats and acknowledgements are not checked against prefixes: the lease token, handed out by a
//! fetch that was, is the proof.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Produce,
    Work,
    Read,
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Produce, Scope::Work, Scope::Read, Scope::Admin];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Produce => "produce",
            Scope::Work => "work",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// A key as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Shown in logs; never the secret.
    pub name: String,
    /// The SHA-256 of the secret, in hex (`errand key new` prints one).
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// Queue-name prefixes the key is limited to; empty or absent: every queue.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Requests per second this key may make (1–1,000,000); absent: no limit. Beyond it: 429 with
    /// `Retry-After`.
    pub requests_per_second: Option<u32>,
    /// Requests the key may make at once after being idle (default: `requests_per_second`).
    pub burst: Option<u32>,
}

/// A key's request rate: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyRate {
    pub per_second: u32,
    pub burst: u32,
}

/// A configured key.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    hash: [u8; 32],
    pub scopes: Vec<Scope>,
    pub queue_prefixes: Vec<String>,
    /// `None`: no limit.
    pub rate: Option<KeyRate>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("queue_prefixes", &self.queue_prefixes)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a secret, in lowercase hex: what the config file stores.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ApiKey {
    /// A key from its secret (hashed at once; the secret is not kept).
    pub fn from_secret(
        name: &str,
        secret: &str,
        scopes: Vec<Scope>,
        queue_prefixes: Vec<String>,
    ) -> ApiKey {
        ApiKey {
            name: name.to_string(),
            hash: Sha256::digest(secret.as_bytes()).into(),
            scopes,
            queue_prefixes,
            rate: None,
        }
    }

    /// This key, limited to `per_second` requests a second with bursts of `burst`.
    pub fn with_rate(mut self, per_second: u32, burst: u32) -> ApiKey {
        self.rate = Some(KeyRate { per_second, burst });
        self
    }

    /// A key from the config file.
    pub fn from_config(c: KeyConfig) -> Result<ApiKey, String> {
        if c.name.is_empty() {
            return Err("name must not be empty".into());
        }
        let hex = c.sha256.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{}: sha256 must be 64 hex digits (the SHA-256 of the secret)",
                c.name
            ));
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{}: sha256 is not hex", c.name))?;
        }
        if c.scopes.is_empty() {
            return Err(format!("{}: give at least one scope", c.name));
        }
        let rate = match (c.requests_per_second, c.burst) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(format!("{}: burst needs requests_per_second", c.name));
            }
            (Some(r), burst) => {
                let burst = burst.unwrap_or(r);
                if !(1..=1_000_000).contains(&r) || !(1..=1_000_000).contains(&burst) {
                    return Err(format!(
                        "{}: requests_per_second and burst must be between 1 and 1000000",
                        c.name
                    ));
                }
                Some(KeyRate {
                    per_second: r,
                    burst,
                })
            }
        };
        Ok(ApiKey {
            name: c.name,
            hash,
            scopes: c.scopes,
            queue_prefixes: c.queues,
            rate,
        })
    }

    /// Whether the key has `scope` (admin has every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether the key may touch `queue`.
    pub fn allows_queue(&self, queue: &str) -> bool {
        self.queue_prefixes.is_empty() || self.queue_prefixes.iter().any(|p| queue.starts_with(p))
    }
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No keys are configured: everyone may do everything (only allowed on loopback).
    Open,
    Key(ApiKey),
}

impl Caller {
    /// Whether the caller has `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(k) => k.allows(scope),
        }
    }

    /// Whether the caller may touch `queue`.
    pub fn allows_queue(&self, queue: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(k) => k.allows_queue(queue),
        }
    }

    /// The key's name, for logs.
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "anonymous",
            Caller::Key(k) => &k.name,
        }
    }
}

/// The token buckets of rate-limited keys, by key name: `(tokens, when they were right)`.
#[derive(Debug, Default)]
pub struct KeyBuckets(std::sync::Mutex<std::collections::HashMap<String, (f64, i64)>>);

impl KeyBuckets {
    /// Takes a token of `key`'s bucket at `now` (ms); `Err(ms)`: none until that many ms from now.
    pub fn take(&self, key: &str, rate: KeyRate, now: i64) -> Result<(), u64> {
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(rate.burst);
        let per_ms = f64::from(rate.per_second) / 1_000.0;
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((burst, now));
        // A clock that went back refills nothing.
        let elapsed = (now - *at).max(0) as f64;
        *tokens = (*tokens + elapsed * per_ms).min(burst);
        *at = now.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_ms).ceil() as u64)
        }
    }
}

/// Why a request was refused 401 or 403, and by which key when one was recognised: what the audit log
/// keeps of an auth failure. Never the secret presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The key's name; `None` when no key was recognised.
    pub key: Option<String>,
    /// `missing_key`, `malformed_header`, `unknown_key` (401), `scope`, `queue` or `every_queue` (403).
    pub reason: &'static str,
}

/// How many auth failures per node reach the audit log, for each key and for callers without a
/// recognised key together: a burst of 20, then one a second. Every failure is counted in
/// `errand_auth_denied_total`; only the audit writes are bounded, so that callers without a key cannot
/// turn requests into writes at will — nor, by flooding, keep a real key's refusals out of the log.
pub const DENIAL_AUDIT_RATE: KeyRate = KeyRate {
    per_second: 1,
    burst: 20,
};

/// The bound on auth-failure audit records ([`DENIAL_AUDIT_RATE`]), per key name (`""`: no key
/// recognised; key names are never empty, and there are as many buckets as configured keys, plus one),
/// on the engine's clock.
#[derive(Debug, Default)]
pub struct DenialAudit {
    buckets: KeyBuckets,
    skipped: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl DenialAudit {
    /// `Some(n)`: write a record of `key`'s failure now, noting the `n` of its failures not written
    /// since its last record. `None`: over the rate; this one is only counted.
    pub fn admit(&self, key: &str, now: i64) -> Option<u64> {
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        match self.buckets.take(key, DENIAL_AUDIT_RATE, now) {
            Ok(()) => Some(skipped.remove(key).unwrap_or(0)),
            Err(_) => {
                *skipped.entry(key.to_string()).or_default() += 1;
                None
            }
        }
    }
}

/// The key whose hash matches `secret`'s, compared in constant time against every key.
pub fn find_key<'a>(keys: &'a [ApiKey], secret: &str) -> Option<&'a ApiKey> {
    let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let mut found = None;
    for k in keys {
        if bool::from(k.hash.ct_eq(&hash)) {
            found = Some(k);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn auth_failures_reach_the_audit_log_at_a_bounded_rate_and_the_rest_are_counted() {
        let audit = DenialAudit::default();
        let admitted = (0..100)
            .filter(|_| audit.admit("", 1_000).is_some())
            .count();
        assert_eq!(admitted, 20, "the burst");
        // A key's refusals have a budget of their own: a flood without a key does not hide them.
        assert_eq!(audit.admit("ops", 1_000), Some(0));
        // A second later, one more, which says how many were not written.
        assert_eq!(audit.admit("", 2_000), Some(80));
        assert_eq!(audit.admit("", 2_000), None);
        assert_eq!(audit.admit("", 3_000), Some(1));
    }

    #[test]
    fn keys_are_found_by_their_secret_and_kept_as_hashes() {
        let k = ApiKey::from_config(KeyConfig {
            name: "billing".into(),
            sha256: hash_secret("s3cret"),
            scopes: vec![Scope::Produce],
            queues: vec!["billing.".into()],
            requests_per_second: None,
            burst: None,
        })
        .unwrap();
        let keys = vec![k];
        assert_eq!(find_key(&keys, "s3cret").unwrap().name, "billing");
        assert!(find_key(&keys, "s3cret ").is_none());
        assert!(!format!("{:?}", keys[0]).contains("s3cret"));
        assert!(keys[0].allows(Scope::Produce) && !keys[0].allows(Scope::Work));
        assert!(keys[0].allows_queue("billing.invoices") && !keys[0].allows_queue("mail"));
    }

    #[test]
    fn a_malformed_hash_is_refused() {
        let bad = KeyConfig {
            name: "x".into(),
            sha256: "abc".into(),
            scopes: vec![Scope::Read],
            queues: vec![],
            requests_per_second: None,
            burst: None,
        };
        assert!(
            ApiKey::from_config(bad.clone())
                .unwrap_err()
                .contains("64 hex")
        );
        let rated = |r, b| KeyConfig {
            sha256: hash_secret("s"),
            requests_per_second: r,
            burst: b,
            ..bad.clone()
        };
        assert_eq!(
            ApiKey::from_config(rated(Some(50), None)).unwrap().rate,
            Some(KeyRate {
                per_second: 50,
                burst: 50
            })
        );
        assert!(ApiKey::from_config(rated(Some(0), None)).is_err());
        assert!(ApiKey::from_config(rated(None, Some(5))).is_err());
    }

    #[test]
    fn a_key_bucket_refills_at_its_rate_and_says_when_the_next_token_is_due() {
        let buckets = KeyBuckets::default();
        let rate = KeyRate {
            per_second: 10,
            burst: 3,
        };
        for _ in 0..3 {
            assert_eq!(buckets.take("k", rate, 0), Ok(()));
        }
        assert_eq!(buckets.take("k", rate, 0), Err(100), "a token every 100 ms");
        assert_eq!(buckets.take("k", rate, 40), Err(60));
        assert_eq!(buckets.take("k", rate, 100), Ok(()));
        assert_eq!(
            buckets.take("other", rate, 100),
            Ok(()),
            "each key its own bucket"
        );
        assert_eq!(
            buckets.take("k", rate, 50),
            Err(100),
            "a clock gone back refills nothing"
        );
        assert_eq!(buckets.take("k", rate, 10_000), Ok(()));
        for _ in 0..2 {
            assert_eq!(buckets.take("k", rate, 10_000), Ok(()));
        }
        assert!(
            buckets.take("k", rate, 10_000).is_err(),
            "the burst caps the refill"
        );
    }
}
