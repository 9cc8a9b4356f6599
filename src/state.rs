//! Shared application state, handed to handlers through axum's `State` (checked at compile time).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::idempotency::ClaimBatches;
use crate::idempotency::HotSeats;
use crate::lock::Redlock;
use crate::rate_limit::RateLimits;

/// Cheap to clone (one reference count): axum clones the state for every extractor and
/// middleware that asks for it, several times per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub db: PgPool,
    /// Asynchronous-commit sessions for idempotency claims and FAILED marks (see `db::claims_pool`).
    pub claims_db: PgPool,
    /// One connection for `/ready`'s probe, apart from the business pool.
    pub probe_db: PgPool,
    /// `/ready`'s last verdict on the dependencies, shared by concurrent callers for a second.
    pub readiness: crate::readiness::ReadinessCache,
    pub redlock: Arc<Redlock>,
    pub jwt: Arc<JwtKeys>,
    pub rate_limits: Arc<RateLimits>,
    /// The same limits counted across instances, in Redis (None when both limits are off).
    pub cluster_limits: Option<Arc<crate::rate_limit::ClusterLimits>>,
    pub metrics: PrometheusHandle,
    /// Seats that are contended right now (see `idempotency::HotSeats`).
    pub hot_seats: Arc<HotSeats>,
    /// Claims for the same hot seats, sent as one statement (see `idempotency::ClaimBatches`).
    pub claim_batches: Arc<ClaimBatches>,
    /// This instance's memory of seat maps for best-available holds (see `crate::seat_index`).
    pub seat_index: Arc<crate::seat_index::SeatIndex>,
    /// The rules of the resources this instance has read (see `slots::load_rules`).
    pub slot_rules: crate::db::resources::RulesCache,
    /// The live holds this instance created, for the plans of commands on them (see
    /// `db::holds::HoldsHere`).
    pub holds_here: crate::db::holds::HoldsHere,
    /// Turns at the database for waiting-room joins and polls that miss memory (a quarter of
    /// the pool; see `api::queue`).
    pub queue_gate: Arc<tokio::sync::Semaphore>,
    /// This instance's memory of the open waiting rooms and their tickets (see `crate::queue`).
    pub queues: Arc<crate::queue::Board>,
    /// This instance's live stream clients (see `crate::streams`).
    pub hub: Arc<crate::streams::Hub>,
    /// Work that must finish even if the client goes away (see `pipeline::run`).
    pub tasks: TaskTracker,
    /// Cancelled when the instance starts shutting down.
    pub shutdown: CancellationToken,
    /// Set when shutdown begins: `/ready` answers 503 while the instance drains.
    pub draining: CancellationToken,
    /// `/openapi.json`, rendered once with this instance's limits.
    pub openapi: std::sync::OnceLock<String>,
    /// For `HOLDFAST_FAULT_PANIC_ONCE`: true until the one injected panic has happened.
    pub fault_panic_armed: std::sync::atomic::AtomicBool,
}
