//! Holds: claim seats for a while, then confirm, extend or release them.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Auth;
use super::extract::{ApiJson, ApiPath, IdempotencyKeyHeader, OptionalApiJson};
use super::reply;
use crate::domain::{MAX_LABEL, MAX_PRICE_CENTS, SeatIds, Ttl, ValidationError, parse_payment_reference};
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHoldBody {
    /// The seats to hold. Give this or `best_available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat_ids: Option<Vec<Uuid>>,
    /// Let holdfast choose: the best `quantity` seats side by side in one row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_available: Option<BestAvailableBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// Best available: `quantity` adjacent seats in one row, rows nearer the front first, then
/// nearer the middle of the row, never leaving a single seat alone when another choice exists.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BestAvailableBody {
    pub quantity: i64,
    /// Only this section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// Only seats at most this price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_cents: Option<i64>,
    /// When no block of adjacent seats fits, take the best seats apart (default false: 409
    /// NO_SEATS_AVAILABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_split: Option<bool>,
}

#[utoipa::path(
    post, path = "/v1/events/{event_id}/holds", tag = "seats",
    summary = "Hold seats, all or none",
    params(("event_id" = Uuid, Path, description = "Event id"), crate::api::openapi::IdempotencyKeyParam, crate::api::openapi::AdmissionTokenParam),
    request_body = CreateHoldBody,
    responses((status = 201, description = "Held", body = crate::pipeline::views::HoldView), (status = 409, description = "SEAT_UNAVAILABLE (taken; names the seats; for best_available, another buyer took the seats chosen: ask again), NO_SEATS_AVAILABLE (best_available: no block fits; `free` says how many matching seats are free), NOT_ON_SALE, BUYER_LIMIT_REACHED, SEAT_LOCKED (retry), IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "NOT_ADMITTED: the event has a waiting room and the request carries no live admission", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    headers: axum::http::HeaderMap,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateHoldBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let admission = super::queue::admission(&state, &headers, event_id, &caller).await?;
    let config = &state.config;
    let ttl = Ttl::parse(body.ttl_seconds, config.holds.default_ttl_seconds, config.holds.max_ttl_seconds)?;
    let reply = match (body.seat_ids, body.best_available) {
        (Some(seat_ids), None) => {
            let seat_ids = SeatIds::parse(seat_ids, config.holds.max_seats)?;
            pipeline::run(
                &state,
                caller,
                Some(idem),
                pipeline::CreateHold { hold_id: Uuid::now_v7(), event_id, seat_ids, ttl, admission },
            )
            .await?
        }
        (None, Some(best)) => {
            let want = parse_best(best, config.holds.max_seats)?;
            pipeline::run(
                &state,
                caller,
                Some(idem),
                pipeline::CreateBestHold { hold_id: Uuid::now_v7(), event_id, want, ttl, admission },
            )
            .await?
        }
        _ => return Err(ValidationError::new("seat_ids", "give exactly one of `seat_ids` and `best_available`").into()),
    };
    Ok(reply::render(reply))
}

fn parse_best(body: BestAvailableBody, max_seats: usize) -> Result<pipeline::BestAvailable, ValidationError> {
    if !(1..=max_seats as i64).contains(&body.quantity) {
        return Err(ValidationError::new("best_available.quantity", format!("must be between 1 and {max_seats}")));
    }
    let section = body
        .section
        .as_deref()
        .map(|s| crate::domain::parse_name(s, "best_available.section", MAX_LABEL))
        .transpose()?;
    if body.max_price_cents.is_some_and(|p| !(0..=MAX_PRICE_CENTS).contains(&p)) {
        return Err(ValidationError::new(
            "best_available.max_price_cents",
            format!("must be between 0 and {MAX_PRICE_CENTS}"),
        ));
    }
    Ok(pipeline::BestAvailable {
        quantity: body.quantity as usize,
        section,
        max_price_cents: body.max_price_cents,
        allow_split: body.allow_split.unwrap_or(false),
    })
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
    let hold = pipeline::visible_hold(&state.db, &caller, hold_id).await?;
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
