//! The server's settings: defaults, a TOML file, `ERRAND_*` environment variables and flags, in rising
//! order of precedence. [`ServeArgs`] is `errand serve`'s command line; its `--help` lists every option
//! with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::{ApiKey, KeyConfig, Scope};

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log aggregation.
    Json,
}

/// How the embedded store syncs a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// Every acknowledged write survives a power cut (one fdatasync per group commit).
    Full,
    /// Survives a crash of the server, not a power cut of the machine; faster.
    Normal,
}

/// `errand serve`'s options. Each may also be set in the config file (same name, `_` for `-`; the
/// `--webhooks-*` lists are `allow` and `deny` of a `[webhooks]` table) or in the environment
/// (`ERRAND_` and the name in capitals; lists comma-separated); a flag beats the environment, which
/// beats the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings and the API keys ([[keys]]).
    #[arg(long, env = "ERRAND_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7700]. Any address other than loopback needs an API
    /// key.
    #[arg(long, env = "ERRAND_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Directory of the embedded store [default: ./errand-data].
    #[arg(long, env = "ERRAND_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DB for several nodes on one
    /// database [default: sqlite://DATA_DIR/errand.db].
    #[arg(long, env = "ERRAND_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// PostgreSQL schema holding Errand's tables [default: errand].
    #[arg(long, env = "ERRAND_PG_SCHEMA", value_name = "NAME")]
    pub pg_schema: Option<String>,
    /// PostgreSQL connections per node [default: 16].
    #[arg(long, env = "ERRAND_PG_POOL_SIZE", value_name = "N")]
    pub pg_pool_size: Option<usize>,
    /// Durability of the embedded store [default: full].
    #[arg(long, env = "ERRAND_SYNC", value_enum)]
    pub sync: Option<Sync>,
    /// Log format [default: text].
    #[arg(long, env = "ERRAND_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, in `tracing`'s syntax [default: info].
    #[arg(long, env = "ERRAND_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Largest request body in bytes [default: 16777216 (16 MiB)].
    #[arg(long, env = "ERRAND_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest job payload in bytes of JSON, for every queue; a queue's policy may set less
    /// [default: 1048576 (1 MiB)].
    #[arg(long, env = "ERRAND_MAX_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Longest long-poll wait of a fetch, in ms [default: 30000].
    #[arg(long, env = "ERRAND_MAX_WAIT_MS", value_name = "MS")]
    pub max_wait_ms: Option<u64>,
    /// Fetches that may wait at once; beyond it a fetch gets 429 [default: 10000].
    #[arg(long, env = "ERRAND_MAX_WAITING_FETCHES", value_name = "N")]
    pub max_waiting_fetches: Option<usize>,
    /// Kinds of one queue with metric series of their own; the queue's other kinds count under kind
    /// `other`, so that the kinds producers send cannot grow /metrics without bound [default: 100].
    #[arg(long, env = "ERRAND_METRICS_KINDS_PER_QUEUE", value_name = "N")]
    pub metrics_kinds_per_queue: Option<usize>,
    /// Days the audit log keeps an entry; the maintenance pass removes older ones. 0 keeps every
    /// entry for ever [default: 90].
    #[arg(long, env = "ERRAND_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    pub audit_retention_days: Option<u32>,
    /// How often the maintenance pass runs (stalls, timeouts, due jobs, retention), in ms [default:
    /// 1000].
    #[arg(long, env = "ERRAND_MAINTENANCE_INTERVAL_MS", value_name = "MS")]
    pub maintenance_interval_ms: Option<u64>,
    /// How long a graceful shutdown may take before the server exits anyway, in ms [default: 10000].
    #[arg(long, env = "ERRAND_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Webhook destinations allowed although denied (by --webhooks-deny or by default): networks
    /// (10.0.0.0/8, or one address) and host names (exact, or *.suffix). Repeat the flag or separate
    /// with commas; in the file, [webhooks] allow = [...] [default: none].
    #[arg(
        long,
        env = "ERRAND_WEBHOOKS_ALLOW",
        value_name = "NET|HOST",
        value_delimiter = ','
    )]
    pub webhooks_allow: Option<Vec<String>>,
    /// Webhook destinations refused, besides the defaults (link-local 169.254.0.0/16 and fe80::/10, the
    /// metadata addresses 169.254.169.254, fd00:ec2::254, 100.100.100.200 and the name
    /// metadata.google.internal); checked at delivery against every resolved address. In the file,
    /// [webhooks] deny = [...] [default: only the defaults].
    #[arg(
        long,
        env = "ERRAND_WEBHOOKS_DENY",
        value_name = "NET|HOST",
        value_delimiter = ','
    )]
    pub webhooks_deny: Option<Vec<String>>,
}

/// The config file: the same settings as [`ServeArgs`], plus the API keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    pg_schema: Option<String>,
    pg_pool_size: Option<usize>,
    sync: Option<Sync>,
    log_format: Option<LogFormat>,
    log: Option<String>,
    max_body_bytes: Option<usize>,
    max_payload_bytes: Option<usize>,
    max_wait_ms: Option<u64>,
    max_waiting_fetches: Option<usize>,
    metrics_kinds_per_queue: Option<usize>,
    audit_retention_days: Option<u32>,
    maintenance_interval_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    alert_interval_ms: Option<u64>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
    #[serde(default)]
    alerts: Vec<crate::alerting::AlertConfig>,
    #[serde(default)]
    webhooks: WebhooksFile,
}

/// `[webhooks]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
}

/// The environment variable holding one API key in plain text, with every scope: the quick way to
/// secure a single-team server. Its hash is kept, never the key.
pub const API_KEY_ENV: &str = "ERRAND_API_KEY";

/// Where the jobs are kept.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every node (`postgres://user:password@host:port/db`).
    Postgres(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for StoreUrl {
    /// The URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Postgres(url) => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(s), Some(at)) if at > s => {
                        let creds = &url[s + 3..at];
                        let user = creds.split(':').next().unwrap_or("");
                        let hidden = if creds.contains(':') { ":***" } else { "" };
                        format!("{}{user}{hidden}{}", &url[..s + 3], &url[at..])
                    }
                    _ => url.clone(),
                };
                f.write_str(&shown)
            }
        }
    }
}

impl StoreUrl {
    /// Parses `sqlite://PATH` (or `sqlite:PATH`) or `postgres://...` (or `postgresql://...`).
    pub fn parse(url: &str) -> Result<StoreUrl, String> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://./errand-data/errand.db".into(),
                );
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        Err("unsupported store URL: expected sqlite://PATH or postgres://USER@HOST:PORT/DB".into())
    }
}

/// The resolved settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: StoreUrl,
    pub pg_schema: String,
    pub pg_pool_size: usize,
    pub sync: Sync,
    pub log_format: LogFormat,
    pub log: String,
    pub max_body_bytes: usize,
    /// The largest payload of any job (default 1 MiB); at most `max_body_bytes`.
    pub max_payload_bytes: usize,
    pub max_wait_ms: u64,
    pub max_waiting_fetches: usize,
    /// Kinds of one queue with metric series of their own (default 100); the rest count as `other`.
    pub metrics_kinds_per_queue: usize,
    /// Days the audit log keeps an entry (default 90); 0 keeps every entry.
    pub audit_retention_days: u32,
    pub maintenance_interval_ms: u64,
    pub shutdown_timeout_ms: u64,
    /// Empty: no authentication (allowed on loopback only).
    pub keys: Vec<ApiKey>,
    /// How often the built-in alerts are evaluated (default 5,000 ms).
    pub alert_interval_ms: u64,
    /// `[[alerts]]` of the config file, over the built-in defaults.
    pub alerts: Vec<crate::alerting::AlertConfig>,
    /// Where webhooks may be delivered (`[webhooks] allow`/`deny` over the default deny list).
    pub webhooks: crate::webhooks::Destinations,
}

impl Config {
    /// The defaults, with the embedded store in `data_dir`.
    pub fn with_data_dir(data_dir: &Path) -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            store: StoreUrl::Sqlite(data_dir.join("errand.db")),
            pg_schema: "errand".into(),
            pg_pool_size: 16,
            sync: Sync::Full,
            log_format: LogFormat::Text,
            log: "info".into(),
            max_body_bytes: 16 << 20,
            max_payload_bytes: errand_core::Limits::default().max_payload_bytes,
            max_wait_ms: 30_000,
            max_waiting_fetches: 10_000,
            metrics_kinds_per_queue: crate::metrics::KINDS_PER_QUEUE,
            audit_retention_days: 90,
            maintenance_interval_ms: 1_000,
            shutdown_timeout_ms: 10_000,
            keys: Vec::new(),
            alert_interval_ms: 5_000,
            alerts: Vec::new(),
            webhooks: crate::webhooks::Destinations::default(),
        }
    }

    /// Resolves flags and environment (already merged by clap) over the config file over the defaults.
    /// `env_key` is the value of [`API_KEY_ENV`], if set.
    pub fn resolve(args: &ServeArgs, env_key: Option<String>) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("errand-data"));
        let mut c = Config::with_data_dir(&data_dir);
        if let Some(listen) = args.listen.clone().or(file.listen) {
            c.listen = listen.parse().map_err(|_| {
                format!("listen: {listen:?} is not HOST:PORT (e.g. 127.0.0.1:7700)")
            })?;
        }
        if let Some(url) = args.store.clone().or(file.store) {
            c.store = StoreUrl::parse(&url).map_err(|e| format!("store: {e}"))?;
        }
        macro_rules! pick {
            ($($f:ident),*) => { $( if let Some(v) = args.$f.clone().or(file.$f) { c.$f = v; } )* };
        }
        pick!(
            pg_schema,
            pg_pool_size,
            sync,
            log_format,
            log,
            max_body_bytes,
            max_payload_bytes,
            max_wait_ms,
            max_waiting_fetches,
            metrics_kinds_per_queue,
            audit_retention_days,
            maintenance_interval_ms,
            shutdown_timeout_ms
        );
        if c.maintenance_interval_ms == 0 {
            return Err("maintenance_interval_ms must be at least 1".into());
        }
        if c.metrics_kinds_per_queue == 0 {
            return Err(
                "metrics_kinds_per_queue must be at least 1 (every kind would be `other`)".into(),
            );
        }
        if c.max_waiting_fetches == 0 {
            return Err(
                "max_waiting_fetches must be at least 1 (every long poll would get 429)".into(),
            );
        }
        if c.max_body_bytes < 64 << 10 {
            return Err("max_body_bytes must be at least 65536".into());
        }
        if c.max_payload_bytes < 1024 || c.max_payload_bytes > c.max_body_bytes {
            return Err(format!(
                "max_payload_bytes must be between 1024 and max_body_bytes ({})",
                c.max_body_bytes
            ));
        }
        if c.shutdown_timeout_ms > 600_000 {
            return Err("shutdown_timeout_ms must be at most 600000 (10 minutes)".into());
        }
        if let Some(ms) = file.alert_interval_ms {
            if !(100..=600_000).contains(&ms) {
                return Err("alert_interval_ms must be between 100 and 600000".into());
            }
            c.alert_interval_ms = ms;
        }
        for (i, a) in file.alerts.iter().enumerate() {
            crate::alerting::check(a).map_err(|e| format!("alerts[{i}]: {e}"))?;
        }
        c.alerts = file.alerts;
        // A list from a flag or the environment replaces the file's, as any other setting does.
        let allow = args.webhooks_allow.clone().or(file.webhooks.allow);
        let deny = args.webhooks_deny.clone().or(file.webhooks.deny);
        // An empty environment variable (or a trailing comma) is no entry, not an empty one.
        let entries = |l: Option<Vec<String>>| -> Vec<String> {
            l.unwrap_or_default()
                .into_iter()
                .filter(|e| !e.trim().is_empty())
                .collect()
        };
        c.webhooks = crate::webhooks::Destinations::new(&entries(allow), &entries(deny))
            .map_err(|e| format!("webhooks.{e}"))?;
        for (i, k) in file.keys.into_iter().enumerate() {
            c.keys
                .push(ApiKey::from_config(k).map_err(|e| format!("keys[{i}]: {e}"))?);
        }
        if let Some(secret) = env_key.filter(|s| !s.is_empty()) {
            c.keys.push(ApiKey::from_secret(
                API_KEY_ENV,
                &secret,
                Scope::ALL.to_vec(),
                Vec::new(),
            ));
        }
        Ok(c)
    }

    /// Refuses a configuration that would expose an open server to the network.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.keys.is_empty() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without an API key: anyone who can reach it could run and \
                 delete jobs. Set {API_KEY_ENV}=<secret> for one key with every scope, or add \
                 [[keys]] (name, sha256, scopes, queues) to the config file (`errand key new` makes \
                 one), or listen on 127.0.0.1",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_wait_ms = 5000\nsync = \"normal\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            max_wait_ms: Some(100),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        assert_eq!(c.listen.port(), 9000, "from the file");
        assert_eq!(c.max_wait_ms, 100, "the flag wins");
        assert_eq!(c.sync, Sync::Normal);
        assert_eq!(c.max_waiting_fetches, 10_000, "the default");
    }

    #[test]
    fn kinds_per_queue_comes_from_the_file_or_a_flag_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "metrics_kinds_per_queue = 20\n").unwrap();
        let from_file = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&from_file, None)
                .unwrap()
                .metrics_kinds_per_queue,
            20
        );
        let default = Config::resolve(&ServeArgs::default(), None).unwrap();
        assert_eq!(
            default.metrics_kinds_per_queue, 100,
            "the documented default"
        );
        let zero = ServeArgs {
            metrics_kinds_per_queue: Some(0),
            ..Default::default()
        };
        let err = Config::resolve(&zero, None).unwrap_err();
        assert!(err.contains("metrics_kinds_per_queue"), "{err}");
    }

    #[test]
    fn audit_retention_defaults_to_90_days_and_0_keeps_every_entry() {
        let default = Config::resolve(&ServeArgs::default(), None).unwrap();
        assert_eq!(default.audit_retention_days, 90, "the documented default");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "audit_retention_days = 0\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            audit_retention_days: Some(30),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&args, None).unwrap().audit_retention_days,
            30,
            "the flag wins"
        );
    }

    #[test]
    fn the_payload_limit_is_a_setting_within_the_body_limit() {
        let default = Config::resolve(&ServeArgs::default(), None).unwrap();
        assert_eq!(default.max_payload_bytes, 1 << 20, "the documented default");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "max_payload_bytes = 102400\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&args, None).unwrap().max_payload_bytes,
            102_400
        );
        for bad in [100, 32 << 20] {
            let args = ServeArgs {
                max_payload_bytes: Some(bad),
                ..Default::default()
            };
            let err = Config::resolve(&args, None).unwrap_err();
            assert!(err.contains("max_payload_bytes"), "{err}");
        }
    }

    #[test]
    fn a_misspelt_setting_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(&file, "max_wait = 5000\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let err = Config::resolve(&args, None).unwrap_err();
        assert!(err.contains("max_wait"), "{err}");
    }

    #[test]
    fn an_open_server_on_the_network_is_refused() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:7700".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        let err = c.check_exposure().unwrap_err();
        assert!(err.contains(API_KEY_ENV), "says how to add a key: {err}");
        let c = Config::resolve(&args, Some("s3cret".into())).unwrap();
        assert!(c.check_exposure().is_ok());
    }

    #[test]
    fn webhook_destinations_from_the_file_are_replaced_by_flags_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("errand.toml");
        std::fs::write(
            &file,
            "[webhooks]\nallow = [\"169.254.169.254\"]\ndeny = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(
            c.webhooks.check_ip(ip("169.254.169.254")).is_ok(),
            "allowed"
        );
        assert!(c.webhooks.check_ip(ip("10.1.1.1")).is_err(), "denied");
        assert!(
            c.webhooks.check_ip(ip("169.254.1.1")).is_err(),
            "the defaults stay"
        );
        let args = ServeArgs {
            config: Some(file.clone()),
            webhooks_deny: Some(vec!["192.168.0.0/16".into(), "".into()]),
            ..Default::default()
        };
        let c = Config::resolve(&args, None).unwrap();
        assert!(
            c.webhooks.check_ip(ip("10.1.1.1")).is_ok(),
            "the flag replaced the file's list"
        );
        assert!(c.webhooks.check_ip(ip("192.168.1.1")).is_err());
        assert!(
            c.webhooks.check_ip(ip("169.254.169.254")).is_ok(),
            "the file's allow"
        );
        let args = ServeArgs {
            config: Some(file),
            webhooks_allow: Some(vec!["hooks.example".into(), "10.0.0.1/8".into()]),
            ..Default::default()
        };
        let err = Config::resolve(&args, None).unwrap_err();
        assert!(
            err.starts_with("webhooks.allow[1]: ") && err.contains("10.0.0.0/8"),
            "{err}"
        );
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/errand.db").unwrap(),
            StoreUrl::Sqlite("/var/lib/errand.db".into())
        );
        assert!(StoreUrl::parse("mysql://x").is_err());
        let pg = StoreUrl::parse("postgres://errand:s3cret@db:5432/jobs").unwrap();
        assert_eq!(
            pg.to_string(),
            "postgres://errand:***@db:5432/jobs",
            "never the password"
        );
        assert!(StoreUrl::parse("sqlite://").is_err());
    }
}
