//! Liveness, readiness and metrics: never rate limited, never authenticated. And the admin's
//! integrity check.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Admin;
use super::reply;
use crate::db::invariants;
use crate::error::Error;
use crate::state::AppState;

/// Liveness: the process answers. Touches no dependency, so a database outage never gets
/// healthy instances restarted.
#[utoipa::path(get, path = "/health", tag = "operations", summary = "Liveness (touches no dependency)",
    responses((status = 200, description = "The process answers", body = Object, example = json!({ "status": "ok" }))))]
pub async fn health() -> Response {
    reply::ok(json!({ "status": "ok" }))
}

/// Readiness for load balancers: Postgres answers and a Redis quorum is up, and the instance
/// is not shutting down.
#[utoipa::path(get, path = "/ready", tag = "operations", summary = "Readiness for load balancers",
    description = "The verdict on the dependencies is computed at most once a second per instance and shared.",
    responses(
        (status = 200, description = "Postgres answers and a Redis quorum is up", body = Object),
        (status = 503, description = "NOT_READY, with `checks`; also while draining for shutdown",
         body = crate::api::openapi::Problem, content_type = "application/problem+json"),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let verdict = state.readiness.get(&state.probe_db, &state.redlock).await;
    let quorum = state.redlock.quorum();
    let shutting_down = state.draining.is_cancelled() || state.shutdown.is_cancelled();
    let checks = json!({
        "postgres": if verdict.postgres { "up" } else { "down" },
        "redis": { "up": verdict.redis_up, "nodes": verdict.redis_nodes, "quorum": quorum },
        "shutting_down": shutting_down,
    });
    if verdict.postgres && verdict.redis_up >= quorum && !shutting_down {
        reply::ok(json!({ "status": "ready", "checks": checks }))
    } else {
        Error::NotReady { checks }.into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
        .into_response()
}

/// Every booking invariant checked against the database now (admins only): no seat, night or
/// slot over-sold, night counters equal to their live holds and bookings, nothing stuck.
/// The same checks feed `holdfast_invariant_violations` every `INTEGRITY_CHECK_INTERVAL_SECONDS`.
#[utoipa::path(
    get, path = "/v1/admin/integrity", tag = "operations",
    summary = "Check every booking invariant now (admin)",
    responses((status = 200, description = "`ok`, and each violated check with its count", body = Object), crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn integrity(State(state): State<AppState>, Admin(_admin): Admin) -> Result<Response, Error> {
    let violations = invariants::violations(&state.db).await?;
    invariants::report(&violations);
    let found: Vec<_> = violations.iter().map(|(check, count)| json!({ "check": check, "count": count })).collect();
    Ok(reply::ok(json!({ "ok": found.is_empty(), "checks": invariants::CHECKS.len(), "violations": found })))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document, with this instance's limits", body = Object)))]
pub async fn openapi(State(state): State<AppState>) -> Response {
    let document = state.openapi.get_or_init(|| {
        let config = &state.config;
        let limits = crate::api::openapi_limits::Limits {
            max_seats: config.holds.max_seats,
            max_event_seats: config.holds.event_max_seats,
            max_ttl: config.holds.max_ttl_seconds,
        };
        super::openapi_document_with(&limits).to_string()
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], document.clone()).into_response()
}
