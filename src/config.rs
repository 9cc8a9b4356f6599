//! One typed configuration, read from the environment (or flags) once and validated.
//! Every variable is documented in `.env.example` and by `holdfast serve --help`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;

/// A secret that never shows up in logs or `Debug` output.
#[derive(Clone)]
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
        f.write_str("Secret(\"[redacted]\")")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("must be at least 16 characters".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// A connection URL with its secrets hidden: the password of `user:password@`, and the value
/// of a `password=` query parameter (as libpq and sqlx accept it).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme) = out.find("://") {
        let authority_end = out[scheme + 3..].find(['/', '?', '#']).map_or(out.len(), |i| scheme + 3 + i);
        if let Some(at) = out[scheme + 3..authority_end].rfind('@') {
            let at = scheme + 3 + at;
            if let Some(colon) = out[scheme + 3..at].find(':') {
                out.replace_range(scheme + 3 + colon + 1..at, "[redacted]");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

/// Database URL with its password redacted in `Debug`.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// Comma-separated list, as used by `REDIS_URLS` and `TRUSTED_PROXIES`. `Debug` redacts any
/// password an item carries (Redis URLs may).
#[derive(Clone, Default)]
pub struct CommaList(pub Vec<String>);

impl fmt::Debug for CommaList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|item| redact_url(item))).finish()
    }
}

impl FromStr for CommaList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: DatabaseUrl,
    /// Pool size per instance.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 20)]
    pub database_max_connections: u32,
    /// Connections each pool keeps open while idle, opened at start-up. Default: the pool's size
    /// (a fixed-size pool), so that a stampede after a quiet spell finds them ready.
    #[arg(long, env = "DATABASE_MIN_CONNECTIONS")]
    pub database_min_connections: Option<u32>,
    /// How long a request waits for a pooled connection before answering 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 2000)]
    pub database_acquire_timeout_ms: u64,
    /// statement_timeout for every session (a bound on any one statement).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    pub database_statement_timeout_ms: u64,
    /// lock_timeout for every session (a bound on waiting for a row lock).
    #[arg(long, env = "DATABASE_LOCK_TIMEOUT_MS", default_value_t = 2000)]
    pub database_lock_timeout_ms: u64,

    /// Independent Redis nodes for the Redlock quorum, comma-separated (1 for dev, 3 or 5 in production).
    #[arg(long, env = "REDIS_URLS")]
    pub redis_urls: CommaList,
    /// Prefix of every Redis key holdfast writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "holdfast:")]
    pub redis_key_prefix: String,
    /// Timeout of one call to one Redis node (connect or command); a small fraction of the lock TTL.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 100)]
    pub redis_timeout_ms: u64,

    /// Lock time-to-live. Covers one request's transaction with a wide margin.
    #[arg(long, env = "REDLOCK_TTL_MS", default_value_t = 5000)]
    pub redlock_ttl_ms: u64,
    /// Clock drift allowance as a fraction of the TTL.
    #[arg(long, env = "REDLOCK_DRIFT_FACTOR", default_value_t = 0.01)]
    pub redlock_drift_factor: f64,
    /// Extra attempts after a failed acquisition.
    #[arg(long, env = "REDLOCK_RETRY_COUNT", default_value_t = 3)]
    pub redlock_retry_count: u32,
    /// Base delay between attempts; each wait adds a random jitter of up to the same amount.
    #[arg(long, env = "REDLOCK_RETRY_DELAY_MS", default_value_t = 50)]
    pub redlock_retry_delay_ms: u64,
    /// A transaction refuses to commit when less than this much lock validity is left (answers 503).
    #[arg(long, env = "REDLOCK_COMMIT_MARGIN_MS", default_value_t = 1000)]
    pub redlock_commit_margin_ms: u64,

    /// HS256 secret for bearer tokens (at least 16 characters). Required unless JWT_JWKS_PATH is set.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// A JWKS file (JSON) with the identity provider's public keys: RS256 and ES256 tokens are
    /// verified with the key their `kid` names.
    #[arg(long, env = "JWT_JWKS_PATH")]
    pub jwt_jwks_path: Option<std::path::PathBuf>,
    /// When set, a token's `iss` must equal it.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Upper bound on handling one request; answers 504 TIMEOUT past it.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10000)]
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Hold lifetime when a request names none.
    #[arg(long, env = "HOLD_DEFAULT_TTL_SECONDS", default_value_t = 600)]
    pub hold_default_ttl_seconds: i64,
    /// Largest `ttl_seconds` a hold or an extension may ask for.
    #[arg(long, env = "HOLD_MAX_TTL_SECONDS", default_value_t = 900)]
    pub hold_max_ttl_seconds: i64,
    /// Longest total life of a hold, extensions included, counted from its creation.
    #[arg(long, env = "HOLD_MAX_LIFETIME_SECONDS", default_value_t = 1800)]
    pub hold_max_lifetime_seconds: i64,
    /// Most seats in one hold or booking.
    #[arg(long, env = "HOLD_MAX_SEATS", default_value_t = 10)]
    pub hold_max_seats: usize,
    /// Most seats in one event.
    #[arg(long, env = "EVENT_MAX_SEATS", default_value_t = 100_000)]
    pub event_max_seats: usize,

    /// How long an IN_PROGRESS idempotency record blocks its key before a retry may take it over.
    #[arg(long, env = "IDEMPOTENCY_LEASE_SECONDS", default_value_t = 30)]
    pub idempotency_lease_seconds: i64,
    /// How long batched claims for contended seats wait, in all, for the holder of those seats'
    /// lock to finish, before they go on to queue for the lock themselves.
    #[arg(long, env = "CLAIM_BATCH_MAX_WAIT_MS", default_value_t = 100)]
    pub claim_batch_max_wait_ms: u64,
    /// How long completed idempotency records are kept for replay.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_SECONDS", default_value_t = 86_400)]
    pub idempotency_retention_seconds: i64,

    /// Requests per second per client IP (0 turns it off).
    #[arg(long, env = "RATE_LIMIT_PER_IP", default_value_t = 100)]
    pub rate_limit_per_ip: u32,
    /// Burst per client IP (defaults to twice the rate).
    #[arg(long, env = "RATE_LIMIT_PER_IP_BURST")]
    pub rate_limit_per_ip_burst: Option<u32>,
    /// Requests per second per authenticated user (0 turns it off).
    #[arg(long, env = "RATE_LIMIT_PER_USER", default_value_t = 20)]
    pub rate_limit_per_user: u32,
    /// Burst per user (defaults to twice the rate).
    #[arg(long, env = "RATE_LIMIT_PER_USER_BURST")]
    pub rate_limit_per_user_burst: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDR ranges). Empty: the socket address is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: CommaList,

    /// How often each instance sweeps expired holds (jittered ±20%).
    #[arg(long, env = "HOLD_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub hold_sweep_interval_ms: u64,
    /// How often each instance purges and recovers idempotency records (jittered ±20%).
    #[arg(long, env = "IDEMPOTENCY_SWEEP_INTERVAL_MS", default_value_t = 10_000)]
    pub idempotency_sweep_interval_ms: u64,
    /// How often each instance checks every booking invariant (the full scan behind
    /// `GET /v1/admin/integrity`) and publishes `holdfast_invariant_violations`.
    #[arg(long, env = "INTEGRITY_CHECK_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub integrity_check_interval_seconds: u64,
    /// Rows one background batch takes.
    #[arg(long, env = "JOB_BATCH_SIZE", default_value_t = 500)]
    pub job_batch_size: i64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// How long shutdown waits for in-flight work.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// On SIGTERM, how long the instance keeps serving while `/ready` answers 503, so that load
    /// balancers take it out of rotation before it stops accepting connections.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value_t = 5)]
    pub shutdown_drain_seconds: u64,

    /// How long a client may take to send a request's headers before its connection is closed
    /// (a bound on slow-header clients). The same timer closes a keep-alive connection idle that
    /// long: keep a balancer's or a client pool's idle timeout below it.
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_read_timeout_ms: u64,
    /// Most open client connections per instance; further connections wait in the kernel's
    /// accept queue until one closes.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,
    /// Serve `/metrics` on this separate address as well (for example an internal port that
    /// the public load balancer does not expose). Unset: only on `LISTEN_ADDR`.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<SocketAddr>,

    /// Most live (HELD, unexpired) holds one user may have at once, of every kind (0 turns the
    /// cap off). Past it, a new hold answers 409 TOO_MANY_HOLDS.
    #[arg(long, env = "HOLD_MAX_LIVE_PER_USER", default_value_t = 5)]
    pub hold_max_live_per_user: i64,
    /// How far ahead a slot may be held or booked, in days from now.
    #[arg(long, env = "RESOURCE_BOOKING_HORIZON_DAYS", default_value_t = 365)]
    pub resource_booking_horizon_days: i64,

    /// Fault injection for tests only: sleep this long after the lock-validity check, just before COMMIT,
    /// to stand for a process paused at the worst moment. Never set in production.
    #[arg(long, env = "HOLDFAST_FAULT_PRE_COMMIT_DELAY_MS", default_value_t = 0, hide = true)]
    pub fault_pre_commit_delay_ms: u64,

    /// Fault injection for tests only: sleep this long after the lock is acquired, before the
    /// transaction begins, so a test can freeze the process (SIGSTOP) while it holds locks.
    #[arg(long, env = "HOLDFAST_FAULT_POST_LOCK_DELAY_MS", default_value_t = 0, hide = true)]
    pub fault_post_lock_delay_ms: u64,

    /// Fault injection for tests only: the first command of this name (e.g. `create_hold`)
    /// executed after start-up panics inside its transaction, to stand for a bug. Never set in
    /// production.
    #[arg(long, env = "HOLDFAST_FAULT_PANIC_ONCE", hide = true)]
    pub fault_panic_once: Option<String>,
}

/// The most seats one hold may ask for, whatever `HOLD_MAX_SEATS` says: with prices bounded
/// (see [`crate::domain::MAX_PRICE_CENTS`]) no total can overflow.
pub const MAX_HOLD_SEATS: usize = 1000;

/// `10.0.0.0/8` or a single address (as a /32 or /128).
pub(crate) fn parse_net(value: &str) -> Option<IpNet> {
    value.parse::<IpNet>().ok().or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Checks the relations between settings that clap cannot see one at a time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        if self.jwt_secret.is_none() && self.jwt_jwks_path.is_none() {
            return err("set JWT_SECRET (HS256) or JWT_JWKS_PATH (RS256/ES256 public keys), or both");
        }
        if self.redis_urls.0.is_empty() {
            return err("REDIS_URLS must name at least one Redis node");
        }
        if self.redlock_ttl_ms < 10 {
            return err("REDLOCK_TTL_MS must be at least 10");
        }
        if !(0.0..0.5).contains(&self.redlock_drift_factor) {
            return err("REDLOCK_DRIFT_FACTOR must be in [0, 0.5)");
        }
        if self.redlock_commit_margin_ms >= self.redlock_ttl_ms {
            return err("REDLOCK_COMMIT_MARGIN_MS must be below REDLOCK_TTL_MS");
        }
        if self.hold_max_ttl_seconds < 1 {
            return err("HOLD_MAX_TTL_SECONDS must be at least 1");
        }
        if !(1..=self.hold_max_ttl_seconds).contains(&self.hold_default_ttl_seconds) {
            return err("HOLD_DEFAULT_TTL_SECONDS must be between 1 and HOLD_MAX_TTL_SECONDS");
        }
        if self.hold_max_lifetime_seconds < self.hold_max_ttl_seconds {
            return err("HOLD_MAX_LIFETIME_SECONDS must be at least HOLD_MAX_TTL_SECONDS");
        }
        if self.hold_max_seats == 0 || self.event_max_seats == 0 {
            return err("HOLD_MAX_SEATS and EVENT_MAX_SEATS must be positive");
        }
        if self.idempotency_lease_seconds < 1 || self.idempotency_retention_seconds < self.idempotency_lease_seconds {
            return err("IDEMPOTENCY_LEASE_SECONDS must be positive and at most IDEMPOTENCY_RETENTION_SECONDS");
        }
        if self.database_max_connections == 0 || self.job_batch_size < 1 {
            return err("DATABASE_MAX_CONNECTIONS and JOB_BATCH_SIZE must be positive");
        }
        for proxy in &self.trusted_proxies.0 {
            if parse_net(proxy).is_none() {
                return Err(ConfigError(format!(
                    "TRUSTED_PROXIES: {proxy:?} is neither an IP address nor a CIDR range (e.g. 10.0.0.0/8)"
                )));
            }
        }
        // Settings that would spin a loop or make every call fail at once.
        let positive = [
            ("HOLD_SWEEP_INTERVAL_MS", self.hold_sweep_interval_ms),
            ("IDEMPOTENCY_SWEEP_INTERVAL_MS", self.idempotency_sweep_interval_ms),
            ("REDIS_TIMEOUT_MS", self.redis_timeout_ms),
            ("REQUEST_TIMEOUT_MS", self.request_timeout_ms),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", self.database_acquire_timeout_ms),
            ("DATABASE_STATEMENT_TIMEOUT_MS", self.database_statement_timeout_ms),
            ("DATABASE_LOCK_TIMEOUT_MS", self.database_lock_timeout_ms),
            ("HTTP_HEADER_READ_TIMEOUT_MS", self.http_header_read_timeout_ms),
            ("MAX_BODY_BYTES", self.max_body_bytes as u64),
            ("HTTP_MAX_CONNECTIONS", self.http_max_connections as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive (0 would spin or refuse everything)")));
            }
        }
        if self.hold_max_seats > MAX_HOLD_SEATS {
            return Err(ConfigError(format!("HOLD_MAX_SEATS must be at most {MAX_HOLD_SEATS}")));
        }
        if self.hold_max_live_per_user < 0 {
            return err("HOLD_MAX_LIVE_PER_USER must not be negative (0 turns the cap off)");
        }
        if !(1..=3660).contains(&self.resource_booking_horizon_days) {
            return err("RESOURCE_BOOKING_HORIZON_DAYS must be between 1 and 3660");
        }
        Ok(())
    }

    pub fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies.0.iter().filter_map(|p| parse_net(p)).collect()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_debug_hides_the_password() {
        let url: DatabaseUrl = "postgres://app:hunter2@db:5432/holdfast".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:[redacted]@db"), "{shown}");
    }

    #[test]
    fn urls_in_the_start_up_log_hide_every_password() {
        let url: DatabaseUrl = "postgres://app@db:5432/holdfast?sslmode=require&password=hunter2".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=require&password=[redacted]"), "{shown}");
        let redis: CommaList = "redis://:s3cret@r1:6379,redis://user:pw2@r2:6379/0,redis://r3:6379".parse().unwrap();
        let shown = format!("{redis:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pw2"), "{shown}");
        assert!(shown.contains("redis://r3:6379") && shown.contains("user:[redacted]@r2"), "{shown}");
        assert_eq!(redact_url("redis://r:1/0?x=@y"), "redis://r:1/0?x=@y");
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret: Secret = "0123456789abcdef-very-secret".parse().unwrap();
        assert!(!format!("{secret:?}").contains("very-secret"));
        assert!("short".parse::<Secret>().is_err());
    }

    fn parse(extra: &[&str]) -> Config {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let mut args = vec![
            "holdfast",
            "--database-url",
            "postgres://app@db/holdfast",
            "--redis-urls",
            "redis://r:6379",
            "--jwt-secret",
            "0123456789abcdef0123",
        ];
        args.extend_from_slice(extra);
        <Cli as clap::Parser>::try_parse_from(args).expect("parses").config
    }

    #[test]
    fn trusted_proxies_take_ranges_and_single_addresses() {
        let config = parse(&["--trusted-proxies", "10.0.0.0/8, 192.168.1.7,fd00::/8"]);
        config.validate().expect("ranges and addresses are valid");
        assert_eq!(config.trusted_proxy_nets().len(), 3);
        let bad = parse(&["--trusted-proxies", "10.0.0.0/33"]);
        assert!(bad.validate().unwrap_err().to_string().contains("TRUSTED_PROXIES"));
    }

    #[test]
    fn settings_that_would_spin_are_refused() {
        for flag in ["--hold-sweep-interval-ms", "--idempotency-sweep-interval-ms", "--redis-timeout-ms"] {
            let err = parse(&[flag, "0"]).validate().unwrap_err().to_string();
            assert!(err.contains("must be positive"), "{flag}: {err}");
        }
        assert!(parse(&["--hold-max-seats", "5000"]).validate().is_err());
        parse(&[]).validate().expect("the defaults are valid");
    }

    #[test]
    fn comma_list_trims_and_drops_empty_parts() {
        let list: CommaList = " redis://a:1 , ,redis://b:2,".parse().unwrap();
        assert_eq!(list.0, vec!["redis://a:1", "redis://b:2"]);
    }
}

#[cfg(test)]
mod env_example {
    use clap::{Args, Command};

    /// Every setting the binary reads is documented in `.env.example`.
    #[test]
    fn env_example_documents_every_variable() {
        let documented = include_str!("../.env.example");
        let command = super::Config::augment_args(Command::new("holdfast"));
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            if env.starts_with("HOLDFAST_FAULT_") {
                continue; // test-only fault injection, deliberately undocumented for operators
            }
            assert!(documented.contains(&format!("{env}=")), "{env} is missing from .env.example");
        }
    }
}
