//! HTTP: the router and its layer stack (in one place), extractors, the error type, handlers.
//! Handlers validate input into domain types and hand state changes to [`crate::pipeline`];
//! they never open transactions or take locks themselves.

pub mod auth;
pub mod bookings;
pub mod error;
pub mod events;
pub mod extract;
pub mod holds;
pub mod inventories;
pub mod middleware;
pub mod ops;
pub mod rate_limit;
pub mod reply;
pub mod resources;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::error::ApiError;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/events", post(events::create_event))
        .route("/v1/events/{event_id}", get(events::get_event))
        .route("/v1/events/{event_id}/seats", get(events::list_seats))
        .route("/v1/events/{event_id}/holds", post(holds::create_hold))
        .route("/v1/events/{event_id}/bookings", post(bookings::book_seats))
        .route("/v1/holds/{hold_id}", get(holds::get_hold).delete(holds::release_hold))
        .route("/v1/holds/{hold_id}/extend", post(holds::extend_hold))
        .route("/v1/holds/{hold_id}/confirm", post(holds::confirm_hold))
        .route("/v1/bookings", get(bookings::list_bookings))
        .route("/v1/bookings/{booking_id}", get(bookings::get_booking))
        .route("/v1/bookings/{booking_id}/cancel", post(bookings::cancel_booking))
        .route("/v1/bookings/{booking_id}/reschedule", post(resources::reschedule_booking))
        .route("/v1/bookings/{booking_id}/history", get(bookings::booking_history))
        .route("/v1/inventories", post(inventories::create_inventory))
        .route("/v1/inventories/{inventory_id}/nights", patch(inventories::patch_nights))
        .route("/v1/inventories/{inventory_id}/availability", get(inventories::availability))
        .route("/v1/inventories/{inventory_id}/holds", post(inventories::create_room_hold))
        .route("/v1/admin/integrity", get(ops::integrity))
        .route("/v1/resources", post(resources::create_resource))
        .route("/v1/resources/{resource_id}", get(resources::get_resource))
        .route("/v1/resources/{resource_id}/availability", get(resources::availability))
        .route("/v1/resources/{resource_id}/holds", post(resources::create_slot_hold))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_timeout));

    let ops = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics));

    let max_body = state.config.max_body_bytes;
    Router::new()
        .merge(v1)
        .merge(ops)
        .route_layer(axum::middleware::from_fn(middleware::track_metrics))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(
            // Outermost first: a panic anywhere becomes a problem+json 500 that still carries
            // the request id; the trace span wraps everything that logs.
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<_>| {
                            let request_id =
                                request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                            tracing::info_span!(
                                "request",
                                method = %request.method(),
                                path = %request.uri().path(),
                                request_id = %request_id,
                            )
                        })
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(middleware::log_internal_errors)),
        )
}

fn method_not_allowed() -> Response {
    let body = serde_json::json!({
        "type": "/problems/method-not-allowed",
        "title": "Method not allowed",
        "status": 405,
        "detail": "This method is not allowed on this resource.",
        "code": "METHOD_NOT_ALLOWED",
    });
    error::json_response(axum::http::StatusCode::METHOD_NOT_ALLOWED, &body)
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}
