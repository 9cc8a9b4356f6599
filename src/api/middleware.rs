//! Cross-cutting middleware: request metrics by matched route, the request timeout, and
//! logging of internal errors inside the request span.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::InternalErrorDetail;
use crate::error::Error;
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
    let limit = Duration::from_millis(state.config.server.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout.into_response(),
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

/// The longest incoming `x-request-id` kept. Longer ones, or ones with anything but visible
/// ASCII, are dropped and a fresh id is generated: a client must not be able to write
/// kilobytes of its choosing into every log line and the append-only audit trail.
pub const MAX_REQUEST_ID: usize = 128;

pub fn acceptable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&value.len()) && value.iter().all(|b| b.is_ascii_graphic())
}

/// Drops an incoming `x-request-id` that is not a short visible-ASCII id, so that the
/// request-id layer after this one generates a new one.
pub async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    let bad = headers.get_all(super::REQUEST_ID).iter().any(|v| !acceptable_request_id(v.as_bytes()))
        || headers.get_all(super::REQUEST_ID).iter().count() > 1;
    if bad {
        headers.remove(super::REQUEST_ID);
    }
    next.run(request).await
}
