//! The groups of settings, one per part of the service; each module takes its own. A setting
//! renamed inside its group keeps its flag (`id`, `long`) and its variable.

use std::net::SocketAddr;

use clap::Args;
use ipnet::IpNet;

use super::values::{CommaList, CorsOrigins, DatabaseUrl, LogFormat, Secret, parse_net};

/// The HTTP server, its logs and its shutdown.
#[derive(Clone, Debug, Args)]
pub struct ServerConfig {
    /// Address the HTTP server listens on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,

    /// Upper bound on handling one request; answers 504 TIMEOUT past it.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10000)]
    pub request_timeout_ms: u64,

    /// Largest accepted request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

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
    #[arg(
        id = "http_header_read_timeout_ms",
        long = "http-header-read-timeout-ms",
        value_name = "HTTP_HEADER_READ_TIMEOUT_MS",
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// Most open client connections per instance; further connections wait in the kernel's
    /// accept queue until one closes.
    #[arg(
        id = "http_max_connections",
        long = "http-max-connections",
        value_name = "HTTP_MAX_CONNECTIONS",
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,

    /// Origins whose browser pages may call the API (CORS), comma-separated, each as a browser
    /// sends it: `https://app.example.com,http://localhost:3000`; `*` for any origin. Empty: no
    /// CORS headers, and a preflight answers 405 like any unrouted method.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: CorsOrigins,

    /// Serve `/metrics` on this separate address as well (for example an internal port that
    /// the public load balancer does not expose). Unset: only on `LISTEN_ADDR`.
    #[arg(long, env = "METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<SocketAddr>,
}

/// Postgres: where, how many connections, and bounds on statements.
#[derive(Clone, Debug, Args)]
pub struct DatabaseConfig {
    /// Postgres connection URL.
    #[arg(id = "database_url", long = "database-url", value_name = "DATABASE_URL", env = "DATABASE_URL")]
    pub url: DatabaseUrl,

    /// Pool size per instance.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        value_name = "DATABASE_MAX_CONNECTIONS",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 20
    )]
    pub max_connections: u32,

    /// Connections each pool keeps open while idle, opened at start-up. Default: the pool's size
    /// (a fixed-size pool), so that a stampede after a quiet spell finds them ready.
    #[arg(
        id = "database_min_connections",
        long = "database-min-connections",
        value_name = "DATABASE_MIN_CONNECTIONS",
        env = "DATABASE_MIN_CONNECTIONS"
    )]
    pub min_connections: Option<u32>,

    /// How long a request waits for a pooled connection before answering 503.
    #[arg(
        id = "database_acquire_timeout_ms",
        long = "database-acquire-timeout-ms",
        value_name = "DATABASE_ACQUIRE_TIMEOUT_MS",
        env = "DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub acquire_timeout_ms: u64,

    /// statement_timeout for every session (a bound on any one statement).
    #[arg(
        id = "database_statement_timeout_ms",
        long = "database-statement-timeout-ms",
        value_name = "DATABASE_STATEMENT_TIMEOUT_MS",
        env = "DATABASE_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub statement_timeout_ms: u64,

    /// lock_timeout for every session (a bound on waiting for a row lock).
    #[arg(
        id = "database_lock_timeout_ms",
        long = "database-lock-timeout-ms",
        value_name = "DATABASE_LOCK_TIMEOUT_MS",
        env = "DATABASE_LOCK_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub lock_timeout_ms: u64,
}

/// The Redis nodes and the quorum lock (Redlock) over them.
#[derive(Clone, Debug, Args)]
pub struct RedisConfig {
    /// Independent Redis nodes for the Redlock quorum, comma-separated (1 for dev, 3 or 5 in production).
    #[arg(id = "redis_urls", long = "redis-urls", value_name = "REDIS_URLS", env = "REDIS_URLS")]
    pub urls: CommaList,

    /// Prefix of every Redis key holdfast writes.
    #[arg(
        id = "redis_key_prefix",
        long = "redis-key-prefix",
        value_name = "REDIS_KEY_PREFIX",
        env = "REDIS_KEY_PREFIX",
        default_value = "holdfast:"
    )]
    pub key_prefix: String,

    /// Timeout of one call to one Redis node (connect or command); a small fraction of the lock TTL.
    #[arg(
        id = "redis_timeout_ms",
        long = "redis-timeout-ms",
        value_name = "REDIS_TIMEOUT_MS",
        env = "REDIS_TIMEOUT_MS",
        default_value_t = 100
    )]
    pub timeout_ms: u64,

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
}

/// Bearer tokens: the HS256 secret or the identity provider's keys.
#[derive(Clone, Debug, Args)]
pub struct AuthConfig {
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
}

/// What a hold, an event and a slot booking may be.
#[derive(Clone, Debug, Args)]
pub struct HoldsConfig {
    /// Hold lifetime when a request names none.
    #[arg(
        id = "hold_default_ttl_seconds",
        long = "hold-default-ttl-seconds",
        value_name = "HOLD_DEFAULT_TTL_SECONDS",
        env = "HOLD_DEFAULT_TTL_SECONDS",
        default_value_t = 600
    )]
    pub default_ttl_seconds: i64,

    /// Largest `ttl_seconds` a hold or an extension may ask for.
    #[arg(
        id = "hold_max_ttl_seconds",
        long = "hold-max-ttl-seconds",
        value_name = "HOLD_MAX_TTL_SECONDS",
        env = "HOLD_MAX_TTL_SECONDS",
        default_value_t = 900
    )]
    pub max_ttl_seconds: i64,

    /// Longest total life of a hold, extensions included, counted from its creation.
    #[arg(
        id = "hold_max_lifetime_seconds",
        long = "hold-max-lifetime-seconds",
        value_name = "HOLD_MAX_LIFETIME_SECONDS",
        env = "HOLD_MAX_LIFETIME_SECONDS",
        default_value_t = 1800
    )]
    pub max_lifetime_seconds: i64,

    /// Most seats in one hold or booking.
    #[arg(
        id = "hold_max_seats",
        long = "hold-max-seats",
        value_name = "HOLD_MAX_SEATS",
        env = "HOLD_MAX_SEATS",
        default_value_t = 10
    )]
    pub max_seats: usize,

    /// Most seats in one event.
    #[arg(long, env = "EVENT_MAX_SEATS", default_value_t = 100_000)]
    pub event_max_seats: usize,

    /// Most live (HELD, unexpired) holds one user may have at once, of every kind (0 turns the
    /// cap off). Past it, a new hold answers 409 TOO_MANY_HOLDS.
    #[arg(
        id = "hold_max_live_per_user",
        long = "hold-max-live-per-user",
        value_name = "HOLD_MAX_LIVE_PER_USER",
        env = "HOLD_MAX_LIVE_PER_USER",
        default_value_t = 5
    )]
    pub max_live_per_user: i64,

    /// How far ahead a slot may be held or booked, in days from now.
    #[arg(long, env = "RESOURCE_BOOKING_HORIZON_DAYS", default_value_t = 365)]
    pub resource_booking_horizon_days: i64,
}

/// Idempotency records: leases, batched claims, retention.
#[derive(Clone, Debug, Args)]
pub struct IdempotencyConfig {
    /// How long an IN_PROGRESS idempotency record blocks its key before a retry may take it over.
    #[arg(
        id = "idempotency_lease_seconds",
        long = "idempotency-lease-seconds",
        value_name = "IDEMPOTENCY_LEASE_SECONDS",
        env = "IDEMPOTENCY_LEASE_SECONDS",
        default_value_t = 30
    )]
    pub lease_seconds: i64,

    /// How long batched claims for contended seats wait, in all, for the holder of those seats'
    /// lock to finish, before they go on to queue for the lock themselves.
    #[arg(long, env = "CLAIM_BATCH_MAX_WAIT_MS", default_value_t = 100)]
    pub claim_batch_max_wait_ms: u64,

    /// How long completed idempotency records are kept for replay.
    #[arg(
        id = "idempotency_retention_seconds",
        long = "idempotency-retention-seconds",
        value_name = "IDEMPOTENCY_RETENTION_SECONDS",
        env = "IDEMPOTENCY_RETENTION_SECONDS",
        default_value_t = 86_400
    )]
    pub retention_seconds: i64,

    /// Store settled answers packed (zstd against a fixed dictionary: about 120 bytes where JSON
    /// takes 300-400, in a row written with every request) instead of as JSON. On by default since
    /// the release after the one that brought the migration `idempotency_packed_answers`, which
    /// reads both forms. Releases without that migration read only JSON answers and would replay
    /// a packed one as an empty body: upgrading from one of them, set it to false until no
    /// instance of theirs serves. Either way, both forms are read.
    #[arg(
        id = "idempotency_packed_answers", long = "idempotency-packed-answers", env = "IDEMPOTENCY_PACKED_ANSWERS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub packed_answers: bool,
}

/// Per-IP and per-user rate limits, and whose X-Forwarded-For to believe.
#[derive(Clone, Debug, Args)]
pub struct RateLimitConfig {
    /// Requests per second per client IP (0 turns it off).
    #[arg(
        id = "rate_limit_per_ip",
        long = "rate-limit-per-ip",
        value_name = "RATE_LIMIT_PER_IP",
        env = "RATE_LIMIT_PER_IP",
        default_value_t = 100
    )]
    pub per_ip: u32,

    /// Burst per client IP (defaults to twice the rate).
    #[arg(
        id = "rate_limit_per_ip_burst",
        long = "rate-limit-per-ip-burst",
        value_name = "RATE_LIMIT_PER_IP_BURST",
        env = "RATE_LIMIT_PER_IP_BURST"
    )]
    pub per_ip_burst: Option<u32>,

    /// Requests per second per authenticated user (0 turns it off).
    #[arg(
        id = "rate_limit_per_user",
        long = "rate-limit-per-user",
        value_name = "RATE_LIMIT_PER_USER",
        env = "RATE_LIMIT_PER_USER",
        default_value_t = 20
    )]
    pub per_user: u32,

    /// Burst per user (defaults to twice the rate).
    #[arg(
        id = "rate_limit_per_user_burst",
        long = "rate-limit-per-user-burst",
        value_name = "RATE_LIMIT_PER_USER_BURST",
        env = "RATE_LIMIT_PER_USER_BURST"
    )]
    pub per_user_burst: Option<u32>,

    /// The Redis node that keeps the cluster-wide rate limits (the per-IP and per-user limits
    /// counted across every instance). Defaults to the first of REDIS_URLS. When it does not
    /// answer within REDIS_TIMEOUT_MS, each instance's own limits stand alone.
    #[arg(long, env = "RATE_LIMIT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDR ranges). Empty: the socket address is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: CommaList,
}

/// The background tasks every instance runs.
#[derive(Clone, Debug, Args)]
pub struct JobsConfig {
    /// How often each instance sweeps expired holds (jittered ±20%).
    #[arg(long, env = "HOLD_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub hold_sweep_interval_ms: u64,

    /// How often each instance purges and recovers idempotency records (jittered ±20%).
    #[arg(long, env = "IDEMPOTENCY_SWEEP_INTERVAL_MS", default_value_t = 10_000)]
    pub idempotency_sweep_interval_ms: u64,

    /// How often the cluster checks every booking invariant (the full scan behind
    /// `GET /v1/admin/integrity`): each instance's timer ticks at this interval, and a tick runs
    /// the checks only if no instance started them within the last three quarters of it. Every
    /// instance publishes the last run's findings as `holdfast_invariant_violations`.
    #[arg(long, env = "INTEGRITY_CHECK_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub integrity_check_interval_seconds: u64,

    /// How long change events (the feed, streams and webhooks) are kept, in hours. The history of
    /// holds and bookings is kept for ever.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 72, value_parser = clap::value_parser!(i64).range(1..=87_600))]
    pub outbox_retention_hours: i64,

    /// How often each instance purges change events past their retention (jittered ±20%).
    #[arg(long, env = "OUTBOX_PURGE_INTERVAL_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub outbox_purge_interval_ms: u64,

    /// How often each instance runs a pacing round of every open waiting room (the draw at
    /// on-sale, admissions, expiries; jittered ±20%). The admission rate does not depend on it.
    #[arg(long, env = "QUEUE_PACE_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub queue_pace_interval_ms: u64,

    /// Rows one background batch takes.
    #[arg(
        id = "job_batch_size",
        long = "job-batch-size",
        value_name = "JOB_BATCH_SIZE",
        env = "JOB_BATCH_SIZE",
        default_value_t = 500
    )]
    pub batch_size: i64,
}

/// Fault injection, for tests only. Never set in production.
#[derive(Clone, Debug, Args)]
pub struct FaultConfig {
    /// Fault injection for tests only: sleep this long after the lock-validity check, just before COMMIT,
    /// to stand for a process paused at the worst moment. Never set in production.
    #[arg(
        id = "fault_pre_commit_delay_ms",
        long = "fault-pre-commit-delay-ms",
        value_name = "FAULT_PRE_COMMIT_DELAY_MS",
        env = "HOLDFAST_FAULT_PRE_COMMIT_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub pre_commit_delay_ms: u64,

    /// Fault injection for tests only: sleep this long after the lock is acquired, before the
    /// transaction begins, so a test can freeze the process (SIGSTOP) while it holds locks.
    #[arg(
        id = "fault_post_lock_delay_ms",
        long = "fault-post-lock-delay-ms",
        value_name = "FAULT_POST_LOCK_DELAY_MS",
        env = "HOLDFAST_FAULT_POST_LOCK_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub post_lock_delay_ms: u64,

    /// Fault injection for tests only: the first command of this name (e.g. `create_hold`)
    /// executed after start-up panics inside its transaction, to stand for a bug. Never set in
    /// production.
    #[arg(
        id = "fault_panic_once",
        long = "fault-panic-once",
        value_name = "FAULT_PANIC_ONCE",
        env = "HOLDFAST_FAULT_PANIC_ONCE",
        hide = true
    )]
    pub panic_once: Option<String>,
}

impl RateLimitConfig {
    pub fn trusted_proxy_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies.0.iter().filter_map(|p| parse_net(p)).collect()
    }
}

/// Live availability streams (Server-Sent Events).
#[derive(Clone, Debug, Args)]
pub struct StreamsConfig {
    /// Stream clients one instance serves at once; past it, 503 TOO_MANY_STREAMS with Retry-After.
    #[arg(long, env = "STREAM_MAX_CLIENTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_clients: u64,

    /// Messages queued for one client; a client that falls further behind gets `event: reset` and is closed.
    #[arg(long, env = "STREAM_CLIENT_BUFFER", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub client_buffer: u64,

    /// A heartbeat comment is sent on each stream this often when nothing else is.
    #[arg(long, env = "STREAM_HEARTBEAT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=15_000))]
    pub heartbeat_ms: u64,

    /// How often each instance reads the change log even without a notification (changes made
    /// outside the service, a notification lost in a crash).
    #[arg(long, env = "STREAM_POLL_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,

    /// Store the nights of a room hold's and a room confirm's change row compact (about 90 bytes a
    /// night where the object readers get takes about 200; migration `compact_night_changes`).
    /// Every reader of this release expands them, so nothing a client sees changes. Off by
    /// default in the release that brought the migration: the live streams of earlier releases
    /// read stored night changes as they are and would stream a compact one as a change of no
    /// night, so turn it on once no instance of theirs serves.
    #[arg(
        long, env = "COMPACT_NIGHT_CHANGES",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub compact_night_changes: bool,
}

/// Signed webhooks: delivery of change events to registered endpoints.
#[derive(Clone, Debug, Args)]
pub struct WebhooksConfig {
    /// Allow webhook URLs that are plain `http` or resolve to private, loopback or link-local
    /// addresses. For development and tests only: in production it lets admins aim requests at
    /// the internal network (SSRF).
    #[arg(
        id = "webhook_allow_private_targets", long = "webhook-allow-private-targets", env = "WEBHOOK_ALLOW_PRIVATE_TARGETS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_private_targets: bool,

    /// How long one delivery attempt may take (connect, send, answer) before it counts as failed.
    #[arg(id = "webhook_timeout_ms", long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub timeout_ms: u64,

    /// The first retry's delay; each later one doubles it (up to 720 times this, one hour by
    /// default), with ±20% jitter.
    #[arg(id = "webhook_retry_base_ms", long = "webhook-retry-base-ms", env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub retry_base_ms: u64,

    /// A delivery is retried for this long after it was queued, then given up (status `failed`).
    #[arg(id = "webhook_retry_hours", long = "webhook-retry-hours", env = "WEBHOOK_RETRY_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(24..=720))]
    pub retry_hours: u64,

    /// An endpoint whose every attempt has failed for this long is disabled.
    #[arg(id = "webhook_disable_after_hours", long = "webhook-disable-after-hours", env = "WEBHOOK_DISABLE_AFTER_HOURS", default_value_t = 72, value_parser = clap::value_parser!(u64).range(1..=8_760))]
    pub disable_after_hours: u64,

    /// Deliveries one instance sends at once.
    #[arg(id = "webhook_concurrency", long = "webhook-concurrency", env = "WEBHOOK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub concurrency: u64,

    /// How often each instance looks for new events and due retries (commits wake it sooner).
    #[arg(id = "webhook_poll_interval_ms", long = "webhook-poll-interval-ms", env = "WEBHOOK_POLL_INTERVAL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
}
