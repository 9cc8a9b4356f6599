//! Liveness, readiness and metrics: never rate limited, never authenticated. And the admin's
//! integrity check.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Admin;
use super::error::ApiError;
use super::reply;
use crate::db::invariants;
use crate::state::AppState;

/// Liveness: the process answers. Touches no dependency, so a database outage never gets
/// healthy instances restarted.
pub async fn health() -> Response {
    reply::ok(json!({ "status": "ok" }))
}

/// Readiness for load balancers: Postgres answers and a Redis quorum is up, and the instance
/// is not shutting down.
pub async fn ready(State(state): State<AppState>) -> Response {
    let db = async {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), sqlx::query("select 1").execute(&state.db)).await,
            Ok(Ok(_))
        )
    };
    let (postgres, nodes) = tokio::join!(db, state.redlock.ping_all());
    let up = nodes.iter().filter(|ok| **ok).count();
    let quorum = state.redlock.quorum();
    let shutting_down = state.shutdown.is_cancelled();
    let checks = json!({
        "postgres": if postgres { "up" } else { "down" },
        "redis": { "up": up, "nodes": nodes.len(), "quorum": quorum },
        "shutting_down": shutting_down,
    });
    if postgres && up >= quorum && !shutting_down {
        reply::ok(json!({ "status": "ready", "checks": checks }))
    } else {
        ApiError::NotReady { checks }.into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
        .into_response()
}

/// Every booking invariant checked against the database now (admins only): no seat, night or
/// slot over-sold, night counters equal to their live holds and bookings, nothing stuck.
/// The same checks feed `holdfast_invariant_violations` every `INTEGRITY_CHECK_INTERVAL_SECONDS`.
pub async fn integrity(State(state): State<AppState>, Admin(_): Admin) -> Result<Response, ApiError> {
    let violations = invariants::violations(&state.db).await?;
    invariants::report(&violations);
    let found: Vec<_> = violations.iter().map(|(check, count)| json!({ "check": check, "count": count })).collect();
    Ok(reply::ok(json!({ "ok": found.is_empty(), "checks": invariants::CHECKS.len(), "violations": found })))
}
