//! Bookings: confirmed sales, made from a hold or directly, and their cancellation.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Auth;
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader};
use super::reply;
use crate::db::{audit, bookings};
use crate::domain::slots::slot_minutes;
use crate::domain::{SeatIds, ValidationError, parse_payment_reference};
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookSeatsBody {
    pub seat_ids: Vec<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reference: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/events/{event_id}/bookings", tag = "seats",
    summary = "Book seats directly, all or none",
    params(("event_id" = Uuid, Path, description = "Event id"), crate::api::openapi::IdempotencyKeyParam, crate::api::openapi::AdmissionTokenParam),
    request_body = BookSeatsBody,
    responses((status = 201, description = "Booked", body = crate::pipeline::views::BookingView), (status = 409, description = "SEAT_UNAVAILABLE, NOT_ON_SALE, BUYER_LIMIT_REACHED, SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "NOT_ADMITTED: the event has a waiting room and the request carries no live admission", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn book_seats(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    headers: axum::http::HeaderMap,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BookSeatsBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let admission = super::queue::admission(&state, &headers, event_id, &caller).await?;
    let seat_ids = SeatIds::parse(body.seat_ids, state.config.holds.max_seats)?;
    let payment_reference = parse_payment_reference(body.payment_reference)?;
    let command = pipeline::BookSeats { event_id, seat_ids, payment_reference, admission };
    let reply = pipeline::run(&state, caller, Some(idem), command).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    get, path = "/v1/bookings/{booking_id}", tag = "bookings",
    summary = "A booking of any kind",
    params(("booking_id" = Uuid, Path, description = "Booking id")),
    responses((status = 200, description = "The booking", body = crate::pipeline::views::BookingView), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn get_booking(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let booking = pipeline::visible_booking(&state.db, &caller, booking_id).await?;
    Ok(reply::ok(views::booking(&booking)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub cursor: Option<Uuid>,
    pub limit: Option<i64>,
}

pub const MAX_BOOKING_PAGE: i64 = 100;

#[utoipa::path(
    get, path = "/v1/bookings", tag = "bookings",
    summary = "Your bookings, newest first",
    params(ListQuery),
    responses((status = 200, description = "A page of bookings", body = crate::pipeline::views::BookingPage), crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn list_bookings(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, Error> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_BOOKING_PAGE).contains(&limit) {
        return Err(ValidationError::new("limit", format!("must be between 1 and {MAX_BOOKING_PAGE}")).into());
    }
    let rows = bookings::list_for_user(&state.db, &caller.user_id, query.cursor, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|b| b.id)).flatten();
    Ok(reply::ok(views::booking_page(&rows, next_cursor)))
}

#[utoipa::path(
    post, path = "/v1/bookings/{booking_id}/cancel", tag = "bookings",
    summary = "Cancel a booking and give back what it held",
    params(("booking_id" = Uuid, Path, description = "Booking id"), crate::api::openapi::IdempotencyKeyParam),
    responses((status = 200, description = "Cancelled (or already cancelled)", body = crate::pipeline::views::BookingView), (status = 409, description = "OUTSIDE_CANCELLATION_WINDOW (slots; admins may override), CONCURRENT_MODIFICATION, SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn cancel_booking(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(booking_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &())?;
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::CancelBooking { booking_id }).await?;
    Ok(reply::render(reply))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The previous page's `next_cursor`.
    #[param(minimum = 0)]
    pub cursor: Option<i64>,
    /// Entries per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

const DEFAULT_HISTORY_PAGE: i64 = 100;
const MAX_HISTORY_PAGE: i64 = 500;

/// The booking's audit trail: every state change of it and of the hold it came from.
#[utoipa::path(
    get, path = "/v1/bookings/{booking_id}/history", tag = "bookings",
    summary = "Audit trail of the booking and its hold, a page at a time",
    params(("booking_id" = Uuid, Path, description = "Booking id"), HistoryQuery),
    responses((status = 200, description = "Every state change, oldest first", body = crate::pipeline::views::History), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn booking_history(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, Error> {
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return Err(ValidationError::new("limit", format!("must be between 1 and {MAX_HISTORY_PAGE}")).into());
    }
    if query.cursor.is_some_and(|c| c < 0) {
        return Err(ValidationError::new("cursor", "must be a cursor from a previous page").into());
    }
    let booking = pipeline::visible_booking(&state.db, &caller, booking_id).await?;
    let rows = audit::history(&state.db, booking.hold_id, query.cursor, limit).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id)).flatten();
    Ok(reply::ok(views::history(booking.id, booking.hold_id, &rows, next_cursor)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBody {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[utoipa::path(
    post, path = "/v1/bookings/{booking_id}/reschedule", tag = "bookings",
    summary = "Move a slot booking: the new slot is taken and the old freed together, or nothing changes",
    description = "422 codes as for slot holds.",
    params(("booking_id" = Uuid, Path, description = "Booking id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = RescheduleBody,
    responses((status = 200, description = "Moved", body = crate::pipeline::views::BookingView), (status = 409, description = "SLOT_UNAVAILABLE, OUTSIDE_CANCELLATION_WINDOW, BOOKING_NOT_ACTIVE, CONCURRENT_MODIFICATION, SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn reschedule_booking(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(booking_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RescheduleBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    slot_minutes(body.start, body.end)?;
    let command = pipeline::RescheduleBooking { booking_id, start: body.start, end: body.end };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}
