//! One typed configuration, read from the environment (or flags) once and validated.
//! Every variable is documented in `.env.example` and by `holdfast serve --help`.

mod groups;
mod values;

use clap::Args;

pub use groups::{
    AuthConfig, DatabaseConfig, FaultConfig, HoldsConfig, IdempotencyConfig, JobsConfig, RateLimitConfig, RedisConfig,
    ServerConfig, StreamsConfig, WebhooksConfig,
};
pub(crate) use values::parse_net;
pub use values::{CommaList, CorsOrigins, DatabaseUrl, LogFormat, Secret, redact_url};

/// Every setting, in groups; each module takes its own group.
#[derive(Clone, Debug, Args)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub redis: RedisConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub holds: HoldsConfig,
    #[command(flatten)]
    pub idempotency: IdempotencyConfig,
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,
    #[command(flatten)]
    pub jobs: JobsConfig,
    #[command(flatten)]
    pub streams: StreamsConfig,
    #[command(flatten)]
    pub webhooks: WebhooksConfig,
    #[command(flatten)]
    pub faults: FaultConfig,
}

/// The most seats one hold may ask for, whatever `HOLD_MAX_SEATS` says: with prices bounded
/// (see [`crate::domain::MAX_PRICE_CENTS`]) no total can overflow.
pub const MAX_HOLD_SEATS: usize = 1000;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Checks the relations between settings that clap cannot see one at a time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        if self.auth.jwt_secret.is_none() && self.auth.jwt_jwks_path.is_none() {
            return err("set JWT_SECRET (HS256) or JWT_JWKS_PATH (RS256/ES256 public keys), or both");
        }
        if self.redis.urls.0.is_empty() {
            return err("REDIS_URLS must name at least one Redis node");
        }
        if self.redis.redlock_ttl_ms < 10 {
            return err("REDLOCK_TTL_MS must be at least 10");
        }
        if !(0.0..0.5).contains(&self.redis.redlock_drift_factor) {
            return err("REDLOCK_DRIFT_FACTOR must be in [0, 0.5)");
        }
        if self.redis.redlock_commit_margin_ms >= self.redis.redlock_ttl_ms {
            return err("REDLOCK_COMMIT_MARGIN_MS must be below REDLOCK_TTL_MS");
        }
        if self.holds.max_ttl_seconds < 1 {
            return err("HOLD_MAX_TTL_SECONDS must be at least 1");
        }
        if !(1..=self.holds.max_ttl_seconds).contains(&self.holds.default_ttl_seconds) {
            return err("HOLD_DEFAULT_TTL_SECONDS must be between 1 and HOLD_MAX_TTL_SECONDS");
        }
        if self.holds.max_lifetime_seconds < self.holds.max_ttl_seconds {
            return err("HOLD_MAX_LIFETIME_SECONDS must be at least HOLD_MAX_TTL_SECONDS");
        }
        if self.holds.max_seats == 0 || self.holds.event_max_seats == 0 {
            return err("HOLD_MAX_SEATS and EVENT_MAX_SEATS must be positive");
        }
        if self.idempotency.lease_seconds < 1 || self.idempotency.retention_seconds < self.idempotency.lease_seconds {
            return err("IDEMPOTENCY_LEASE_SECONDS must be positive and at most IDEMPOTENCY_RETENTION_SECONDS");
        }
        if self.database.max_connections == 0 || self.jobs.batch_size < 1 {
            return err("DATABASE_MAX_CONNECTIONS and JOB_BATCH_SIZE must be positive");
        }
        for proxy in &self.rate_limits.trusted_proxies.0 {
            if parse_net(proxy).is_none() {
                return Err(ConfigError(format!(
                    "TRUSTED_PROXIES: {proxy:?} is neither an IP address nor a CIDR range (e.g. 10.0.0.0/8)"
                )));
            }
        }
        // Settings that would spin a loop or make every call fail at once.
        let positive = [
            ("HOLD_SWEEP_INTERVAL_MS", self.jobs.hold_sweep_interval_ms),
            ("IDEMPOTENCY_SWEEP_INTERVAL_MS", self.jobs.idempotency_sweep_interval_ms),
            ("REDIS_TIMEOUT_MS", self.redis.timeout_ms),
            ("REQUEST_TIMEOUT_MS", self.server.request_timeout_ms),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", self.database.acquire_timeout_ms),
            ("DATABASE_STATEMENT_TIMEOUT_MS", self.database.statement_timeout_ms),
            ("DATABASE_LOCK_TIMEOUT_MS", self.database.lock_timeout_ms),
            ("HTTP_HEADER_READ_TIMEOUT_MS", self.server.header_read_timeout_ms),
            ("MAX_BODY_BYTES", self.server.max_body_bytes as u64),
            ("HTTP_MAX_CONNECTIONS", self.server.max_connections as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive (0 would spin or refuse everything)")));
            }
        }
        if self.holds.max_seats > MAX_HOLD_SEATS {
            return Err(ConfigError(format!("HOLD_MAX_SEATS must be at most {MAX_HOLD_SEATS}")));
        }
        if self.holds.max_live_per_user < 0 {
            return err("HOLD_MAX_LIVE_PER_USER must not be negative (0 turns the cap off)");
        }
        if !(1..=3660).contains(&self.holds.resource_booking_horizon_days) {
            return err("RESOURCE_BOOKING_HORIZON_DAYS must be between 1 and 3660");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.rate_limits.trusted_proxy_nets().len(), 3);
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
}

#[cfg(test)]
mod env_example {
    use clap::{Args, Command};

    /// Every setting the binary reads is documented in `.env.example`.
    #[test]
    fn env_example_documents_every_variable() {
        let documented = include_str!("../../.env.example");
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
