//! Holds: claim seats for a while, then confirm, extend or release them.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Auth;
use super::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, OptionalApiJson};
use super::reply;
use crate::domain::{SeatIds, Ttl, parse_payment_reference};
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHoldBody {
    pub seat_ids: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/events/{event_id}/holds", tag = "seats",
    summary = "Hold seats, all or none",
    params(("event_id" = Uuid, Path, description = "Event id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateHoldBody,
    responses((status = 201, description = "Held", body = crate::pipeline::views::HoldView), (status = 409, description = "SEAT_UNAVAILABLE (taken; names the seats), SEAT_LOCKED (retry), IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateHoldBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let config = &state.config;
    let seat_ids = SeatIds::parse(body.seat_ids, config.holds.max_seats)?;
    let ttl = Ttl::parse(body.ttl_seconds, config.holds.default_ttl_seconds, config.holds.max_ttl_seconds)?;
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::CreateHold { event_id, seat_ids, ttl }).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    get, path = "/v1/holds/{hold_id}", tag = "holds",
    summary = "A hold of any kind",
    params(("hold_id" = Uuid, Path, description = "Hold id")),
    responses((status = 200, description = "The hold", body = crate::pipeline::views::HoldView), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn get_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(hold_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let hold = pipeline::visible_hold(&state, &caller, hold_id).await?;
    Ok(reply::ok(views::hold(&hold)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendHoldBody {
    pub ttl_seconds: i64,
}

#[utoipa::path(
    post, path = "/v1/holds/{hold_id}/extend", tag = "holds",
    summary = "Extend a live hold",
    params(("hold_id" = Uuid, Path, description = "Hold id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = ExtendHoldBody,
    responses((status = 200, description = "Extended", body = crate::pipeline::views::HoldView), (status = 409, description = "HOLD_EXPIRED, HOLD_NOT_ACTIVE, HOLD_LIFETIME_EXCEEDED (with latest_expiry), CONCURRENT_MODIFICATION, SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn extend_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(hold_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ExtendHoldBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let ttl =
        Ttl::parse(Some(body.ttl_seconds), state.config.holds.default_ttl_seconds, state.config.holds.max_ttl_seconds)?;
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::ExtendHold { hold_id, ttl }).await?;
    Ok(reply::render(reply))
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmHoldBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reference: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/holds/{hold_id}/confirm", tag = "holds",
    summary = "Confirm a hold into a booking (any kind)",
    params(("hold_id" = Uuid, Path, description = "Hold id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = Option<ConfirmHoldBody>,
    responses((status = 201, description = "Booked", body = crate::pipeline::views::BookingView), (status = 409, description = "HOLD_EXPIRED, HOLD_NOT_ACTIVE, CONCURRENT_MODIFICATION, SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn confirm_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(hold_id): ApiPath<Uuid>,
    OptionalApiJson(body): OptionalApiJson<ConfirmHoldBody>,
) -> Result<Response, Error> {
    // The body is optional: a bare POST confirms without a payment reference.
    let body = body.unwrap_or_default();
    let idem = key.bind(&caller, &body)?;
    let payment_reference = parse_payment_reference(body.payment_reference)?;
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::ConfirmHold { hold_id, payment_reference }).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    delete, path = "/v1/holds/{hold_id}", tag = "holds",
    summary = "Release a hold (idempotent; the key is optional)",
    params(("hold_id" = Uuid, Path, description = "Hold id"), crate::api::openapi::OptionalIdempotencyKeyParam),
    responses((status = 204, description = "Released, or already released or expired"), (status = 409, description = "HOLD_NOT_ACTIVE (confirmed), SEAT_LOCKED", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn release_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: Option<IdempotencyKeyHeader>,
    ApiPath(hold_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let idem = key.map(|k| k.bind(&caller, &())).transpose()?;
    let reply = pipeline::run(&state, caller, idem, pipeline::ReleaseHold { hold_id }).await?;
    Ok(reply::render(reply))
}
