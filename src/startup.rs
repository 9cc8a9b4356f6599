//! Building and running one instance: pool, migrations, Redis nodes, router, background jobs.
//! `Application::build` binds the listener first, so tests can use port 0 and learn the port.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, auth::JwtKeys, rate_limit::RateLimits};
use crate::config::{Config, ConfigError};
use crate::idempotency::ClaimBatches;
use crate::lock::{Redlock, RedlockConfig};
use crate::state::{AppState, Shared};
use crate::{db, jobs, telemetry};

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
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

pub async fn migrate(pool: &sqlx::PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    // sqlx holds an advisory lock while migrating: replicas starting together are safe.
    MIGRATOR.run(pool).await
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        config.validate()?;
        let db = db::pool(&config)?;
        let claims_db = db::claims_pool(&config)?;
        migrate(&db).await?;
        db::warm_up(&db);
        db::warm_up(&claims_db);
        let redlock = Redlock::new(
            &config.redis_urls.0,
            RedlockConfig {
                ttl: Duration::from_millis(config.redlock_ttl_ms),
                drift_factor: config.redlock_drift_factor,
                retry_count: config.redlock_retry_count,
                retry_delay: Duration::from_millis(config.redlock_retry_delay_ms),
                node_timeout: Duration::from_millis(config.redis_timeout_ms),
                key_prefix: config.redis_key_prefix.clone(),
            },
        )?;
        let listener = TcpListener::bind(config.listen_addr).await?;
        let state = AppState::new(Shared {
            jwt: Arc::new(JwtKeys::new(config.jwt_secret.expose())),
            rate_limits: Arc::new(RateLimits::new(&config)),
            claim_batches: Arc::new(ClaimBatches::new(
                db.clone(),
                Duration::from_millis(config.claim_batch_max_wait_ms),
            )),
            config: Arc::new(config),
            db,
            claims_db,
            redlock: Arc::new(redlock),
            metrics: telemetry::metrics_handle(),
            hot_seats: Arc::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests and
    /// their pipeline tasks finish (their locks are released as they end), stops the
    /// background loops and closes the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Self { listener, state } = self;
        let jobs = jobs::spawn_all(&state);
        let token = state.shutdown.clone();
        let app = api::router(state.clone());
        tracing::info!(addr = %listener.local_addr()?, "holdfast listening");
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutdown requested: draining");
                token.cancel();
            })
            .await?;

        state.shutdown.cancel();
        state.tasks.close();
        let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
        if tokio::time::timeout(grace, state.tasks.wait()).await.is_err() {
            tracing::warn!("in-flight work did not finish within the grace period");
        }
        for job in jobs {
            let _ = job.await;
        }
        state.db.close().await;
        state.claims_db.close().await;
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
