//! Building and running one instance: pool, migrations, Redis nodes, router, background jobs.
//! `Application::build` binds the listener first, so tests can use port 0 and learn the port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::auth::{Expectations, JwtKeys, KeysError};
use crate::config::{Config, ConfigError, Secret};
use crate::idempotency::ClaimBatches;
use crate::lock::{Redlock, RedlockConfig};
use crate::rate_limit::{ClusterLimits, RateLimits};
use crate::state::{AppState, Shared};
use crate::streams::{self, Hub};
use crate::{db, jobs, serve, telemetry, webhooks};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Keys(#[from] KeysError),
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // sqlx holds an advisory lock while migrating: replicas starting together are safe.
    MIGRATOR.run(pool).await
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        config.validate()?;
        webhooks::install_tls_provider();
        let db = db::pool(&config.database)?;
        let jwt = JwtKeys::from_config(
            config.auth.jwt_secret.as_ref().map(Secret::expose),
            config.auth.jwt_jwks_path.as_deref(),
            Expectations { issuer: config.auth.jwt_issuer.clone(), audience: config.auth.jwt_audience.clone() },
        )?;
        let claims_db = db::claims_pool(&config.database)?;
        let probe_db = db::probe_pool(&config.database)?;
        migrate(&db).await?;
        db::warm_up(&db);
        db::warm_up(&claims_db);
        let redlock = Redlock::new(&config.redis.urls.0, RedlockConfig::from(&config.redis))?;
        let listener = TcpListener::bind(config.server.listen_addr).await?;
        let metrics_listener = match config.server.metrics_listen_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let hub = Arc::new(Hub::new(config.streams.max_clients as usize, config.streams.client_buffer as usize));
        let queue_gate = Arc::new(tokio::sync::Semaphore::new((config.database.max_connections as usize / 4).max(1)));
        let state = AppState::new(Shared {
            jwt: Arc::new(jwt),
            rate_limits: Arc::new(RateLimits::new(&config.rate_limits)),
            cluster_limits: ClusterLimits::new(&config.rate_limits, &config.redis)?.map(Arc::new),
            claim_batches: Arc::new(ClaimBatches::new(
                db.clone(),
                Duration::from_millis(config.idempotency.claim_batch_max_wait_ms),
            )),
            config: Arc::new(config),
            db,
            claims_db,
            probe_db,
            readiness: Default::default(),
            redlock: Arc::new(redlock),
            metrics: telemetry::metrics_handle(),
            hot_seats: Arc::default(),
            queues: Arc::new(crate::queue::Board::default()),
            seat_index: Arc::default(),
            slot_rules: crate::db::resources::RulesCache::default(),
            holds_here: crate::db::holds::HoldsHere::default(),
            queue_gate,
            hub,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            fault_panic_armed: AtomicBool::new(true),
            openapi: Default::default(),
        });
        Ok(Self { listener, metrics_listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The address of the separate metrics listener, when `METRICS_LISTEN_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves. Then it drains: `/ready` answers 503 for
    /// `SHUTDOWN_DRAIN_SECONDS` while requests are still served, so that load balancers take
    /// the instance out of rotation before anything is refused. Then it stops accepting, lets
    /// in-flight requests and their pipeline tasks finish (their locks are released as they
    /// end), stops the background loops and closes the pools.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { listener, metrics_listener, state } = self;
        let config = state.config.clone();
        let mut jobs = jobs::spawn_all(&state);
        jobs.push(webhooks::spawn(state.clone()));
        let streams = match db::listen_pool(&config.database) {
            Ok(listen_db) => streams::spawn(
                state.hub.clone(),
                state.db.clone(),
                listen_db,
                Duration::from_millis(config.streams.poll_interval_ms),
                state.shutdown.clone(),
            ),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for changes: live streams will not start");
                Vec::new()
            }
        };
        let limits = || serve::Limits {
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
            max_connections: config.server.max_connections,
            grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        };
        let metrics_server = metrics_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            let stop = state.shutdown.clone().cancelled_owned();
            tokio::spawn(serve::serve(listener, api::metrics_router(state.clone()), limits(), stop))
        });
        let draining = state.draining.clone();
        let drain = Duration::from_secs(config.server.shutdown_drain_seconds);
        let stop = async move {
            shutdown.await;
            tracing::info!(drain_seconds = drain.as_secs(), "shutdown requested: /ready answers 503 while draining");
            draining.cancel();
            tokio::time::sleep(drain).await;
            tracing::info!("drained: no longer accepting connections");
        };
        tracing::info!(addr = %listener.local_addr()?, "holdfast listening");
        serve::serve(listener, api::router(state.clone()), limits(), stop).await;

        state.shutdown.cancel();
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        state.tasks.close();
        let grace = Duration::from_secs(state.config.server.shutdown_grace_seconds);
        if tokio::time::timeout(grace, state.tasks.wait()).await.is_err() {
            tracing::warn!("in-flight work did not finish within the grace period");
        }
        for job in jobs.into_iter().chain(streams) {
            let _ = job.await;
        }
        state.db.close().await;
        state.claims_db.close().await;
        state.probe_db.close().await;
        tracing::info!("holdfast stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
