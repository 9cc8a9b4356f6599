//! Cross-cutting middleware: request metrics by matched route, the request timeout, and
//! logging of internal errors inside the request span.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, InternalErrorDetail};
use crate::state::AppState;

/// Counts and times requests by method, *matched* route and status (never the raw path,
/// so scanners cannot explode the series count).
pub async fn track_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("holdfast_http_requests_total", &labels).increment(1);
    metrics::histogram!("holdfast_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Bounds every request. The pipeline's own bounds (pool, statement and lock timeouts, Redis
/// call timeouts) normally answer first; this is the backstop.
pub async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Logs the hidden cause of a 500 in the request's span; the client saw only a fixed body.
pub async fn log_internal_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(InternalErrorDetail(cause)) = response.extensions().get::<InternalErrorDetail>() {
        tracing::error!(error = %cause, "internal error");
    }
    response
}
