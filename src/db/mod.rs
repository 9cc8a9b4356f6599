//! Small named queries. Each takes a connection or transaction; none opens its own transaction
//! (the pipeline decides the boundaries). Every write that could race carries its own guard in
//! the WHERE clause ("still free", "still HELD at the version I read"), so it is correct under
//! READ COMMITTED even without the Redis lock; named constraints in the migrations are the
//! last line behind that.
//!
//! Times come from Postgres's clock (`now()`), the one clock every instance shares.

pub mod audit;
pub mod bookings;
pub mod changes;
pub mod events;
pub mod holds;
pub mod invariants;
pub mod inventories;
pub mod queue;
pub mod resources;
mod status;
pub mod webhooks;
pub mod write_tx;

use std::time::Duration;

use futures_util::future::join_all;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::DatabaseConfig;
/// What a violated constraint means: someone else got there first (the final fence behind the
/// locks). `crate::error` turns each into the client's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Seats sold or claimed twice, or a hold confirmed twice.
    Seats,
    /// A night over-sold.
    Night,
    /// Two live claims on overlapping slots of one resource.
    Slot,
}

/// The one place a named constraint is read: the constraints that stand for a lost race.
/// Others are not a refusal of ours.
pub fn on_constraint(constraint: &str) -> Option<Conflict> {
    match constraint {
        "booking_seats_one_live_sale" | "seats_single_claim" | "bookings_one_per_hold" => Some(Conflict::Seats),
        "inventory_nights_not_oversold" => Some(Conflict::Night),
        "slot_claims_no_overlap" => Some(Conflict::Slot),
        _ => None,
    }
}

/// A lazily connecting pool: the service starts (and answers /health) while Postgres is down.
/// Every session commits synchronously: a 201 is on disk before it is sent.
pub fn pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    build_pool(config, config.max_connections, "on", "auto")
}

/// Opens the pool's minimum of connections now, in the background, instead of on the first
/// requests: sqlx keeps that minimum up only once it has been reached. A stampede that meets
/// a cold pool pays a backend start-up per connection on top of its statements.
pub fn warm_up(pool: &PgPool) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let wanted = pool.options().get_min_connections() as usize;
        let opened = join_all((0..wanted).map(|_| pool.acquire())).await;
        if let Some(Err(err)) = opened.iter().find(|c| c.is_err()) {
            tracing::warn!(error = %err, "could not open every pooled connection at start-up");
        }
    });
}

/// A small pool for the short statements by key that run outside the business transaction:
/// idempotency claims and FAILED marks, and the reads by id that plan a command (the hold a
/// confirm, release or extend acts on; the booking a cancel or reschedule acts on).
///
/// Its sessions commit asynchronously. Losing a claim or a mark in a crash is harmless: a lost
/// claim means the retry runs afresh, a lost FAILED mark lapses with its lease. And a claim is
/// durable whenever the effect it guards is: the business transaction commits synchronously, and
/// its WAL flush covers every earlier record. This saves one WAL flush wait per request; stored
/// answers still commit synchronously. (Reads commit nothing.)
///
/// Its sessions also always run a prepared statement's generic plan (`plan_cache_mode`), as the
/// write transactions do (see `write_tx`): every statement here finds its rows by key, so the
/// generic plan is the custom one minus the planning. With the default (`auto`) the read of a
/// hold was planned afresh on 11-26% of its calls in `spread` (each time autovacuum's statistics
/// invalidated it, Postgres built custom plans again until their average cost caught up with the
/// generic plan's), at 0.5 ms a plan, more than its execution (BENCHMARKS.md, session 17).
pub fn claims_pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    build_pool(config, (config.max_connections / 2).max(2), "off", "force_generic_plan")
}

/// One connection of its own for `/ready`'s probe: a flood of readiness checks can never take
/// a connection from the business pool, and a broken database is seen within the acquire
/// timeout.
pub fn probe_pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.0.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(1))
        .test_before_acquire(false)
        .connect_lazy_with(options.application_name("holdfast-probe")))
}

/// One connection of its own for LISTEN (see `crate::streams`): it stays checked out for as
/// long as the instance runs, so it must never be one of the business pool's.
pub fn listen_pool(config: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.0.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name("holdfast-listen")))
}

/// Connections idle this long are pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

fn build_pool(
    config: &DatabaseConfig,
    size: u32,
    synchronous_commit: &str,
    plan_cache_mode: &str,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.0.parse()?;
    let options = options.application_name("holdfast").options([
        ("statement_timeout", format!("{}ms", config.statement_timeout_ms)),
        ("lock_timeout", format!("{}ms", config.lock_timeout_ms)),
        // A connection left idle inside a transaction is a bug; never let it pin row locks.
        ("idle_in_transaction_session_timeout", "15s".to_owned()),
        ("synchronous_commit", synchronous_commit.to_owned()),
        ("plan_cache_mode", plan_cache_mode.to_owned()),
    ]);
    let min = config.min_connections.unwrap_or(size).min(size);
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .min_connections(min)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        // sqlx pings every connection on every acquire by default: one extra round trip and two
        // process wake-ups per statement, which under a stampede costs as much as the statement.
        // Ping only connections that sat idle long enough to have gone stale (a restarted or
        // failed-over server); a busy one proved itself moments ago, and if it did break since,
        // the request fails with a retryable 503 and sqlx drops the connection.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}
