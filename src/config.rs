//! Typed settings: read from `HOOKRELAY_*` environment variables and an optional
//! TOML file (environment wins), validated once at start-up.
//!
//! Every setting is declared once in [`SETTINGS`]; the `--help` text, the TOML key
//! names and the error messages all come from that table, so they cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::delivery::egress::{parse_proxy, EgressPolicy, TargetList};

/// One documented setting.
pub struct SettingDoc {
    /// Environment variable name; the TOML key is the same without the prefix, lower-cased.
    pub env: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

/// The settings hookrelay understands, in the order `--help` lists them.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc { env: "HOOKRELAY_LISTEN", default: "127.0.0.1:8080", help: "address:port of the HTTP listener (ingest, admin, metrics, health)" },
    SettingDoc { env: "HOOKRELAY_DATA_DIR", default: "./data", help: "directory of the embedded (sled) store" },
    SettingDoc { env: "HOOKRELAY_PUBLIC_URL", default: "http://<listen address>", help: "base URL under which providers reach this gateway, used to build ingest_url" },
    SettingDoc { env: "HOOKRELAY_DATABASE_URL", default: "unset", help: "postgres://... to use PostgreSQL instead of sled (not yet supported by this build)" },
    SettingDoc { env: "HOOKRELAY_ADMIN_TOKEN", default: "unset", help: "bearer token for /api/v1/*; when unset, one is generated into <data dir>/admin_token (mode 0600)" },
    SettingDoc { env: "HOOKRELAY_SECRET_KEY", default: "unset", help: "standard base64 of 32 bytes: the key that encrypts ingest tokens and signing secrets in the store; when unset, one is generated into <data dir>/secret_key (mode 0600). Keep it: without it the data cannot be read" },
    SettingDoc { env: "HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", default: "5", help: "endpoint limit per merchant" },
    SettingDoc { env: "HOOKRELAY_MAX_PAYLOAD_BYTES", default: "1048576", help: "largest accepted ingest body" },
    SettingDoc { env: "HOOKRELAY_DELIVERY_TIMEOUT_MS", default: "10000", help: "timeout of one delivery attempt" },
    SettingDoc { env: "HOOKRELAY_RETRY_INITIAL_MS", default: "5000", help: "delay before the first retry" },
    SettingDoc { env: "HOOKRELAY_RETRY_MAX_MS", default: "21600000", help: "cap on one retry delay (6 h)" },
    SettingDoc { env: "HOOKRELAY_RETRY_MAX_ATTEMPTS", default: "25", help: "attempts in all, the first included, before a delivery is marked failed (about 3 days with the default delays)" },
    SettingDoc { env: "HOOKRELAY_ENDPOINT_CONCURRENCY", default: "16", help: "attempts in flight at once to one endpoint" },
    SettingDoc { env: "HOOKRELAY_DELIVERY_CONCURRENCY", default: "512", help: "attempts in flight at once in all" },
    SettingDoc { env: "HOOKRELAY_SHUTDOWN_GRACE_MS", default: "30000", help: "how long a stop waits for attempts under way" },
    SettingDoc { env: "HOOKRELAY_RETENTION_HOURS", default: "168", help: "delivered events (every delivery succeeded or failed), their attempts and dedupe keys older than this are purged; fractions allowed" },
    SettingDoc { env: "HOOKRELAY_PURGE_INTERVAL_MS", default: "60000", help: "how often the retention purge runs" },
    SettingDoc { env: "HOOKRELAY_MIN_FREE_DISK_BYTES", default: "67108864", help: "ingest answers 503 insufficient_storage while the data directory's filesystem has less free space (0: off)" },
    SettingDoc { env: "HOOKRELAY_INGEST_READ_TIMEOUT_MS", default: "10000", help: "a request's headers, and an ingest body, must arrive within this (slow clients are cut off)" },
    SettingDoc { env: "HOOKRELAY_INGEST_RATE_PER_SECOND", default: "1000", help: "ingest requests per second per merchant, sustained (0: no limit); above it 429 rate_limited with Retry-After, nothing stored. 1000/s is far above what a provider sends one merchant and below what the store commits, so one runaway sender or leaked token cannot starve the others" },
    SettingDoc { env: "HOOKRELAY_INGEST_BURST", default: "2 x rate", help: "ingest requests a merchant may send at once after a quiet spell; twice the rate absorbs a provider catching up after an outage" },
    SettingDoc { env: "HOOKRELAY_MAX_CONNECTIONS", default: "10000", help: "open connections PER WORKER THREAD (one worker per CPU: the listener holds at most this x CPUs); beyond it new connections wait in the accept queue" },
    SettingDoc { env: "HOOKRELAY_EGRESS_ALLOW", default: "unset", help: "comma-separated CIDRs and host names (.example.com: that host and its subdomains) deliveries may reach; when set, nothing else may be reached" },
    SettingDoc { env: "HOOKRELAY_EGRESS_DENY", default: "unset", help: "comma-separated CIDRs and host names deliveries must not reach; link-local (169.254.0.0/16, fe80::/10), 0.0.0.0/8, :: and cloud metadata addresses are always refused" },
    SettingDoc { env: "HOOKRELAY_EGRESS_HTTPS_ONLY", default: "false", help: "true: refuse http:// endpoint URLs, at registration (422 url_not_allowed) and at delivery" },
    SettingDoc { env: "HOOKRELAY_EGRESS_PROXY", default: "unset", help: "http(s) proxy URL for deliveries; targets are still checked by name and IP literal, the proxy resolves names" },
    SettingDoc { env: "HOOKRELAY_SLED_CACHE_BYTES", default: "16777216", help: "page cache of the sled store (sled's own default is 1 GiB; more than 16 MiB bought no speed in docs/benchmarks.md)" },
    SettingDoc { env: "HOOKRELAY_LOG", default: "info", help: "log filter (tracing EnvFilter syntax, e.g. hookrelay=debug)" },
    SettingDoc { env: "HOOKRELAY_LOG_FORMAT", default: "text", help: "log format: text or json" },
];

/// Attempts that span about three days with the default delays: 5 s doubling to the
/// 6 h cap reaches it after 13 retries (~11.4 h), then 11 more capped retries make
/// ~77 h. Providers such as DashX retry for days; we should not give up sooner.
const DEFAULT_MAX_ATTEMPTS: u32 = 25;

/// Where the store lives.
#[derive(Clone, Debug)]
pub enum StoreSettings {
    Sled { data_dir: PathBuf, cache_bytes: u64 },
    Postgres { url: Secret },
}

/// A string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated settings of one hookrelay process.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Base URL (no trailing slash) used to build `ingest_url`.
    pub public_url: String,
    /// Directory for the data files and generated secrets (also with PostgreSQL).
    pub data_dir: PathBuf,
    pub store: StoreSettings,
    /// `None`: generate one into the data directory on first start.
    pub admin_token: Option<Secret>,
    /// Key of the secrets at rest; `None`: generate one into the data directory on first start.
    pub secret_key: Option<crate::secrets::SecretKey>,
    pub max_endpoints_per_merchant: usize,
    pub max_payload_bytes: usize,
    pub delivery_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_max_attempts: u32,
    pub endpoint_concurrency: usize,
    pub delivery_concurrency: usize,
    pub shutdown_grace: Duration,
    /// Age after which finished events are purged.
    pub retention: Duration,
    pub purge_interval: Duration,
    /// Ingest refuses below this much free space in the data directory (0: never).
    pub min_free_disk_bytes: u64,
    pub ingest_read_timeout: Duration,
    /// Ingest requests per second per merchant (0: no limit).
    pub ingest_rate_per_second: u32,
    /// Ingest requests a merchant may send at once above the rate.
    pub ingest_burst: u32,
    /// Open connections per worker thread.
    pub max_connections: usize,
    /// Where deliveries may go.
    pub egress: EgressPolicy,
    /// Proxy for deliveries; may carry credentials.
    pub egress_proxy: Option<Secret>,
    pub log_filter: String,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("unknown setting {name} (see `hookrelay --help` for the list)")]
    Unknown { name: String },
    #[error("invalid value for {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

impl Settings {
    /// Reads the process environment and, when given, a TOML file.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::from_sources(config_file, &env)
    }

    /// Merges a TOML file (optional) with environment variables (which win), then validates.
    pub fn from_sources(config_file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut raw: BTreeMap<&'static str, String> = BTreeMap::new();
        if let Some(path) = config_file {
            for (key, value) in read_toml(path)? {
                let doc = SETTINGS
                    .iter()
                    .find(|doc| toml_key(doc.env) == key)
                    .ok_or_else(|| ConfigError::Unknown {
                        name: format!("{key} (in {})", path.display()),
                    })?;
                raw.insert(doc.env, value);
            }
        }
        for (name, value) in env {
            if !name.starts_with("HOOKRELAY_") || is_service_link(name) {
                continue;
            }
            let doc = SETTINGS
                .iter()
                .find(|doc| doc.env == name)
                .ok_or_else(|| ConfigError::Unknown { name: name.clone() })?;
            raw.insert(doc.env, value.clone());
        }
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &BTreeMap<&'static str, String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| raw.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let listen = parse_listen(get("HOOKRELAY_LISTEN"))?;
        let data_dir = PathBuf::from(get("HOOKRELAY_DATA_DIR").unwrap_or("./data"));
        let public_url = match get("HOOKRELAY_PUBLIC_URL") {
            Some(value) => parse_public_url(value)?,
            None => format!("http://{listen}"),
        };
        let store = match get("HOOKRELAY_DATABASE_URL") {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreSettings::Postgres { url: Secret::new(url) }
            }
            Some(_) => {
                return Err(invalid("HOOKRELAY_DATABASE_URL", "expected a postgres:// URL"));
            }
            None => StoreSettings::Sled {
                data_dir: data_dir.clone(),
                cache_bytes: parse_or(
                    get("HOOKRELAY_SLED_CACHE_BYTES"),
                    "HOOKRELAY_SLED_CACHE_BYTES",
                    16 << 20,
                )?,
            },
        };
        let admin_token = match get("HOOKRELAY_ADMIN_TOKEN") {
            Some(token) if token.len() < 16 => {
                return Err(invalid("HOOKRELAY_ADMIN_TOKEN", "must be at least 16 characters"));
            }
            Some(token) => Some(Secret::new(token)),
            None => None,
        };

        let ingest_rate_per_second = parse_or(
            get("HOOKRELAY_INGEST_RATE_PER_SECOND"),
            "HOOKRELAY_INGEST_RATE_PER_SECOND",
            1000u32,
        )?;
        let ingest_burst = match get("HOOKRELAY_INGEST_BURST") {
            Some(value) => parse_positive(Some(value), "HOOKRELAY_INGEST_BURST", 1u32)?,
            None => ingest_rate_per_second.saturating_mul(2).max(1),
        };
        let egress_list = |name: &'static str| -> Result<Option<TargetList>, ConfigError> {
            get(name)
                .map(TargetList::parse)
                .transpose()
                .map_err(|e| invalid(name, e))
        };
        let egress_allow = egress_list("HOOKRELAY_EGRESS_ALLOW")?;
        if egress_allow.as_ref().is_some_and(TargetList::is_empty) {
            return Err(invalid(
                "HOOKRELAY_EGRESS_ALLOW",
                "lists nothing; leave it unset to allow every target",
            ));
        }
        let egress = EgressPolicy::new(
            egress_allow,
            egress_list("HOOKRELAY_EGRESS_DENY")?.unwrap_or_default(),
            parse_or(get("HOOKRELAY_EGRESS_HTTPS_ONLY"), "HOOKRELAY_EGRESS_HTTPS_ONLY", false)?,
        );
        let egress_proxy = get("HOOKRELAY_EGRESS_PROXY")
            .map(parse_proxy)
            .transpose()
            .map_err(|e| invalid("HOOKRELAY_EGRESS_PROXY", e))?
            .map(Secret::new);

        let secret_key = get("HOOKRELAY_SECRET_KEY")
            .map(crate::secrets::SecretKey::parse)
            .transpose()
            .map_err(|e| invalid("HOOKRELAY_SECRET_KEY", e))?;

        let settings = Settings {
            listen,
            public_url,
            data_dir,
            store,
            admin_token,
            secret_key,
            max_endpoints_per_merchant: parse_positive(
                get("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT"),
                "HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT",
                5,
            )?,
            max_payload_bytes: parse_positive(
                get("HOOKRELAY_MAX_PAYLOAD_BYTES"),
                "HOOKRELAY_MAX_PAYLOAD_BYTES",
                1_048_576,
            )?,
            delivery_timeout: millis(
                get("HOOKRELAY_DELIVERY_TIMEOUT_MS"),
                "HOOKRELAY_DELIVERY_TIMEOUT_MS",
                10_000,
            )?,
            retry_initial: millis(get("HOOKRELAY_RETRY_INITIAL_MS"), "HOOKRELAY_RETRY_INITIAL_MS", 5_000)?,
            retry_max: millis(get("HOOKRELAY_RETRY_MAX_MS"), "HOOKRELAY_RETRY_MAX_MS", 21_600_000)?,
            retry_max_attempts: parse_positive(
                get("HOOKRELAY_RETRY_MAX_ATTEMPTS"),
                "HOOKRELAY_RETRY_MAX_ATTEMPTS",
                DEFAULT_MAX_ATTEMPTS,
            )?,
            endpoint_concurrency: parse_positive(
                get("HOOKRELAY_ENDPOINT_CONCURRENCY"),
                "HOOKRELAY_ENDPOINT_CONCURRENCY",
                16,
            )?,
            delivery_concurrency: parse_positive(
                get("HOOKRELAY_DELIVERY_CONCURRENCY"),
                "HOOKRELAY_DELIVERY_CONCURRENCY",
                512,
            )?,
            shutdown_grace: Duration::from_millis(parse_or(
                get("HOOKRELAY_SHUTDOWN_GRACE_MS"),
                "HOOKRELAY_SHUTDOWN_GRACE_MS",
                30_000,
            )?),
            retention: parse_hours(get("HOOKRELAY_RETENTION_HOURS"), "HOOKRELAY_RETENTION_HOURS", 168.0)?,
            purge_interval: millis(
                get("HOOKRELAY_PURGE_INTERVAL_MS"),
                "HOOKRELAY_PURGE_INTERVAL_MS",
                60_000,
            )?,
            min_free_disk_bytes: parse_or(
                get("HOOKRELAY_MIN_FREE_DISK_BYTES"),
                "HOOKRELAY_MIN_FREE_DISK_BYTES",
                64 << 20,
            )?,
            ingest_read_timeout: millis(
                get("HOOKRELAY_INGEST_READ_TIMEOUT_MS"),
                "HOOKRELAY_INGEST_READ_TIMEOUT_MS",
                10_000,
            )?,
            ingest_rate_per_second,
            ingest_burst,
            max_connections: parse_positive(get("HOOKRELAY_MAX_CONNECTIONS"), "HOOKRELAY_MAX_CONNECTIONS", 10_000)?,
            egress,
            egress_proxy,
            log_filter: get("HOOKRELAY_LOG").unwrap_or("info").to_owned(),
            log_format: match get("HOOKRELAY_LOG_FORMAT").unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "HOOKRELAY_LOG_FORMAT",
                        format!("expected text or json, got {other:?}"),
                    ))
                }
            },
        };
        if settings.retry_max < settings.retry_initial {
            return Err(invalid(
                "HOOKRELAY_RETRY_MAX_MS",
                "must not be smaller than HOOKRELAY_RETRY_INITIAL_MS",
            ));
        }
        if settings.max_payload_bytes > 64 << 20 {
            return Err(invalid(
                "HOOKRELAY_MAX_PAYLOAD_BYTES",
                "must be at most 67108864 (64 MiB)",
            ));
        }
        Ok(settings)
    }

    /// The `--help` section that lists every setting.
    pub fn help_text() -> String {
        let mut out = String::from(
            "Settings (environment variables; the same keys, lower-case and without the\n\
             HOOKRELAY_ prefix, may be given in a TOML file with --config; environment wins):\n",
        );
        for doc in SETTINGS {
            out.push_str(&format!("  {:<38} {} [default: {}]\n", doc.env, doc.help, doc.default));
        }
        out
    }
}

/// Kubernetes sets `<SERVICE>_PORT…` and `<SERVICE>_SERVICE_…` variables for a
/// Service named `hookrelay`; they are not ours to refuse.
fn is_service_link(name: &str) -> bool {
    let rest = &name["HOOKRELAY_".len()..];
    rest == "PORT" || rest.starts_with("PORT_") || rest.starts_with("SERVICE_HOST") || rest.starts_with("SERVICE_PORT")
}

/// `ip:port`, or `host:port` resolved once at start-up.
fn parse_listen(value: Option<&str>) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs as _;
    let Some(text) = value else {
        return Ok(SocketAddr::from(([127, 0, 0, 1], 8080)));
    };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            invalid(
                "HOOKRELAY_LISTEN",
                format!("{text:?} is not an address:port (e.g. 127.0.0.1:8080)"),
            )
        })
}

/// The TOML key of a setting: `HOOKRELAY_DATA_DIR` → `data_dir`.
fn toml_key(env: &str) -> String {
    env.trim_start_matches("HOOKRELAY_").to_ascii_lowercase()
}

fn read_toml(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::ParseFile {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    table
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::ParseFile {
                        path: path.to_owned(),
                        message: format!("{key}: expected a string or a number, got {}", other.type_str()),
                    })
                }
            };
            Ok((key, text))
        })
        .collect()
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.into(),
    }
}

fn parse_or<T>(value: Option<&str>, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|e| invalid(name, format!("{text:?}: {e}"))),
    }
}

fn parse_positive<T>(value: Option<&str>, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Default,
    T::Err: fmt::Display,
{
    let parsed = parse_or(value, name, default)?;
    if parsed <= T::default() {
        return Err(invalid(name, "must be greater than zero"));
    }
    Ok(parsed)
}

/// Hours as a positive number, fractions allowed (`0.5` is 30 minutes).
fn parse_hours(value: Option<&str>, name: &'static str, default: f64) -> Result<Duration, ConfigError> {
    let hours: f64 = parse_or(value, name, default)?;
    if !hours.is_finite() || hours <= 0.0 || hours > 24.0 * 365.0 * 100.0 {
        return Err(invalid(name, "must be a positive number of hours"));
    }
    Ok(Duration::from_secs_f64(hours * 3600.0))
}

fn millis(value: Option<&str>, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    parse_positive(value, name, default).map(Duration::from_millis)
}

fn parse_public_url(value: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(value).map_err(|e| invalid("HOOKRELAY_PUBLIC_URL", format!("{value:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid("HOOKRELAY_PUBLIC_URL", "expected an absolute http(s) URL"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = Settings::from_sources(None, &env(&[])).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.max_endpoints_per_merchant, 5);
        assert_eq!(s.max_payload_bytes, 1_048_576);
        assert_eq!(s.delivery_timeout, Duration::from_secs(10));
        assert_eq!(s.retry_initial, Duration::from_secs(5));
        assert_eq!(s.retry_max, Duration::from_secs(6 * 3600));
        assert!(matches!(s.store, StoreSettings::Sled { .. }));
    }

    #[test]
    fn a_malformed_value_names_the_setting() {
        let err = Settings::from_sources(None, &env(&[("HOOKRELAY_DELIVERY_TIMEOUT_MS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("HOOKRELAY_DELIVERY_TIMEOUT_MS"), "{err}");
        let err = Settings::from_sources(None, &env(&[("HOOKRELAY_MAX_PAYLOAD_BYTES", "0")])).unwrap_err();
        assert!(err.to_string().contains("HOOKRELAY_MAX_PAYLOAD_BYTES"), "{err}");
    }

    #[test]
    fn kubernetes_service_links_are_not_unknown_settings() {
        let s = Settings::from_sources(
            None,
            &env(&[
                ("HOOKRELAY_PORT", "tcp://10.0.0.1:8080"),
                ("HOOKRELAY_SERVICE_HOST", "10.0.0.1"),
            ]),
        );
        assert!(s.is_ok());
    }

    #[test]
    fn the_listen_address_may_name_a_host() {
        let s = Settings::from_sources(None, &env(&[("HOOKRELAY_LISTEN", "localhost:9000")])).unwrap();
        assert_eq!(s.listen.port(), 9000);
        let err = Settings::from_sources(None, &env(&[("HOOKRELAY_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("HOOKRELAY_LISTEN"));
    }

    #[test]
    fn retention_takes_fractional_hours() {
        let s = Settings::from_sources(None, &env(&[("HOOKRELAY_RETENTION_HOURS", "0.5")])).unwrap();
        assert_eq!(s.retention, Duration::from_secs(1800));
        let default = Settings::from_sources(None, &env(&[])).unwrap();
        assert_eq!(default.retention, Duration::from_secs(168 * 3600));
        for bad in ["0", "-1", "x", "NaN"] {
            assert!(
                Settings::from_sources(None, &env(&[("HOOKRELAY_RETENTION_HOURS", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unknown_variable_is_refused() {
        let err = Settings::from_sources(None, &env(&[("HOOKRELAY_LISTN", "x")])).unwrap_err();
        assert!(err.to_string().contains("HOOKRELAY_LISTN"), "{err}");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookrelay.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_endpoints_per_merchant = 7\n").unwrap();
        let s = Settings::from_sources(Some(&path), &env(&[("HOOKRELAY_LISTEN", "127.0.0.1:9001")])).unwrap();
        assert_eq!(s.listen.port(), 9001);
        assert_eq!(s.max_endpoints_per_merchant, 7);
    }

    #[test]
    fn an_unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookrelay.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = Settings::from_sources(Some(&path), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
