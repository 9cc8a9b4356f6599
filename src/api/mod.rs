//! HTTP: the router and its layer stack (in one place), extractors, the error type, handlers.
//! Handlers validate input into domain types and hand state changes to [`crate::pipeline`];
//! they never open transactions or take locks themselves.

pub mod auth;
pub mod bookings;
pub mod changes;
pub mod cors;
pub mod events;
pub mod extract;
pub mod holds;
pub mod inventories;
pub mod middleware;
pub mod openapi;
pub mod openapi_limits;
pub mod ops;
pub mod problem;
pub mod queue;
pub mod rate_limit;
pub mod reply;
pub mod resources;
pub mod streams;
pub mod webhooks;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::state::AppState;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The largest body of every route but event creation: a hold, a confirm, a night patch or a
/// resource is a few hundred bytes; 16 KiB leaves room and refuses padding at once.
pub const SMALL_BODY_BYTES: usize = 16 * 1024;

/// Every route with its documentation: handlers are registered only through `routes!`, which
/// reads their `#[utoipa::path]`, so what is served and what is documented cannot drift apart.
/// Event creation (an explicit seat list may be long) takes up to `MAX_BODY_BYTES`; every
/// other route at most [`SMALL_BODY_BYTES`] (or `MAX_BODY_BYTES` if that is lower).
fn routes(max_body: usize) -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let large = OpenApiRouter::new().routes(routes!(events::create_event));
    let small = OpenApiRouter::new()
        .routes(routes!(events::get_event, events::patch_event))
        .routes(routes!(events::list_seats))
        .routes(routes!(holds::create_hold))
        .routes(routes!(bookings::book_seats))
        .routes(routes!(holds::get_hold, holds::release_hold))
        .routes(routes!(holds::extend_hold))
        .routes(routes!(holds::confirm_hold))
        .routes(routes!(bookings::list_bookings))
        .routes(routes!(bookings::get_booking))
        .routes(routes!(bookings::cancel_booking))
        .routes(routes!(bookings::reschedule_booking))
        .routes(routes!(bookings::booking_history))
        .routes(routes!(inventories::create_inventory))
        .routes(routes!(inventories::patch_nights))
        .routes(routes!(inventories::availability))
        .routes(routes!(inventories::create_room_hold))
        .routes(routes!(resources::create_resource))
        .routes(routes!(resources::get_resource))
        .routes(routes!(resources::availability))
        .routes(routes!(resources::create_slot_hold))
        .routes(routes!(ops::integrity))
        .routes(routes!(changes::list_changes))
        .routes(routes!(streams::event_stream))
        .routes(routes!(streams::inventory_stream))
        .routes(routes!(streams::resource_stream))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(queue::join_queue, queue::queue_status))
        .routes(routes!(queue::get_ticket, queue::leave_queue))
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES.min(max_body)));
    let v1 = large.merge(small);
    let ops = OpenApiRouter::new()
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi));
    (v1, ops)
}

/// The OpenAPI 3.1 document of every route, with the default limits (`holdfast openapi`).
pub fn openapi_document() -> serde_json::Value {
    openapi_document_with(&openapi_limits::Limits::default())
}

/// The OpenAPI 3.1 document of every route, stating `limits` (served at `/openapi.json` with the
/// running instance's).
pub fn openapi_document_with(limits: &openapi_limits::Limits) -> serde_json::Value {
    let (v1, ops) = routes(usize::MAX);
    let mut doc = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(v1).merge(ops).into_openapi();
    openapi::document_replays(&mut doc);
    openapi::document_links(&mut doc);
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    openapi_limits::apply(&mut doc, limits);
    webhooks::document_event_types(&mut doc);
    doc
}

pub fn router(state: AppState) -> Router {
    let (v1, ops) = routes(state.config.server.max_body_bytes);
    let v1: Router<AppState> = Router::from(v1)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::request_timeout));
    let ops: Router<AppState> = ops.into();

    let max_body = state.config.server.max_body_bytes;
    let cors = cors::layer(&state.config.server.cors_allowed_origins);
    Router::new()
        .merge(v1)
        .merge(ops)
        .route_layer(axum::middleware::from_fn(middleware::track_metrics))
        .fallback(|| async { Error::NotFound("route") })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(
            // Outermost first: a panic anywhere becomes a problem+json 500 that still carries
            // the request id; the trace span wraps everything that logs.
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(axum::middleware::from_fn(middleware::sanitize_request_id))
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
        .layer(ServiceBuilder::new().option_layer(cors))
}

/// `/metrics` alone, for `METRICS_LISTEN_ADDR`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", axum::routing::get(ops::metrics)).with_state(state)
}

fn method_not_allowed() -> Response {
    Error::MethodNotAllowed.into_response()
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    Error::internal("handler panicked").into_response()
}
