//! Events and their seat maps. Reads are public; creating an event is for admins.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Admin;
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader};
use super::reply;
use crate::db::{changes, events};
use crate::domain::{EventLayout, NewEvent, QueueChange, SeatSpec, ValidationError, event};
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventBody {
    pub name: String,
    pub starts_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<SeatSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<EventLayout>,
    /// Before this instant, holds and direct bookings answer 409 NOT_ON_SALE (admins excepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_sale_at: Option<DateTime<Utc>>,
    /// The most seats one buyer may hold and own in this event at once (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_seats_per_buyer: Option<i64>,
    /// A waiting room in front of the seats (enabled unless `enabled: false`).
    #[serde(default, deserialize_with = "super::extract::object", skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueBody>,
}

/// Waiting-room settings; a field left out keeps its value (at creation: its default).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    /// Whether holds and direct bookings need an admission (`Admission-Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Tickets admitted per minute, across all instances (0 pauses admissions). Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub admit_per_minute: Option<i64>,
    /// The most tickets admitted and not yet finished at once. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_active_shoppers: Option<i64>,
    /// How long an admission lasts. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub admission_ttl_seconds: Option<i64>,
}

impl QueueBody {
    fn parse(self) -> Result<QueueChange, ValidationError> {
        QueueChange::parse(self.enabled, self.admit_per_minute, self.max_active_shoppers, self.admission_ttl_seconds)
    }
}

/// Sale settings to change; a field left out stays as it is, `null` clears it.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEventBody {
    /// Before this instant, holds and direct bookings answer 409 NOT_ON_SALE (admins excepted).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DateTime<Utc>>, nullable)]
    pub on_sale_at: Option<Option<DateTime<Utc>>>,
    /// The most seats one buyer may hold and own in this event at once (1 to 1000).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 1000)]
    pub max_seats_per_buyer: Option<Option<i64>>,
    /// Waiting-room settings to change (fields left out stay); `null` turns the waiting room off.
    #[serde(default, deserialize_with = "present_object", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<QueueBody>, nullable)]
    pub queue: Option<Option<QueueBody>>,
}

/// As [`present`], for an object field (see `super::extract::object`).
fn present_object<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::de::DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    super::extract::object(deserializer).map(Some)
}

/// A field that is present, `null` or not: `Some(None)` for `null`, `None` when left out (the
/// field's `default`).
fn present<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[utoipa::path(
    post, path = "/v1/events", tag = "seats",
    summary = "Create an event with its seats (admin)",
    params(crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateEventBody,
    responses((status = 201, description = "Created", body = crate::pipeline::views::EventView), crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_event(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateEventBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let event =
        NewEvent::parse(body.name, body.starts_at, body.seats, body.layout, state.config.holds.event_max_seats)?
            .with_sale(body.on_sale_at, body.max_seats_per_buyer)?
            .with_queue(body.queue.map(QueueBody::parse).transpose()?);
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::CreateEvent { event }).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    patch, path = "/v1/events/{event_id}", tag = "seats",
    summary = "Change an event's sale settings: on-sale time, seats per buyer, waiting room (admin)",
    params(("event_id" = Uuid, Path, description = "Event id"), crate::api::openapi::OptionalIdempotencyKeyParam),
    request_body = PatchEventBody,
    responses((status = 200, description = "The event after the change", body = crate::pipeline::views::EventView),
        crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn patch_event(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: Option<IdempotencyKeyHeader>,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchEventBody>,
) -> Result<Response, Error> {
    let idem = key.map(|k| k.bind(&caller, &body)).transpose()?;
    if body.on_sale_at.is_none() && body.max_seats_per_buyer.is_none() && body.queue.is_none() {
        return Err(ValidationError::new(
            "body",
            "set `on_sale_at`, `max_seats_per_buyer` or `queue` (null clears one)",
        )
        .into());
    }
    let queue = match body.queue {
        None => QueueChange::default(),
        Some(None) => QueueChange { enabled: Some(false), ..QueueChange::default() },
        // `{}` changes nothing, like any field left out.
        Some(Some(queue)) => queue.parse()?,
    };
    let change = events::SaleChange {
        on_sale_at: body.on_sale_at.map(|at| at.map(event::parse_sale_at).transpose()).transpose()?,
        max_seats_per_buyer: body
            .max_seats_per_buyer
            .map(|n| n.map(event::parse_seats_per_buyer).transpose())
            .transpose()?,
        queue,
    };
    let reply = pipeline::run(&state, caller, idem, pipeline::PatchEvent { event_id, change }).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    get, path = "/v1/events/{event_id}", tag = "seats",
    summary = "An event and its seat counts",
    params(("event_id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The event", body = crate::pipeline::views::EventView), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(())
)]
pub async fn get_event(State(state): State<AppState>, ApiPath(event_id): ApiPath<Uuid>) -> Result<Response, Error> {
    let event = events::find_event(&state.db, event_id).await?.ok_or(Error::NotFound("event"))?;
    let counts = events::seat_counts(&state.db, event_id).await?;
    Ok(reply::ok(views::event(&event, &counts)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeatQuery {
    pub status: Option<String>,
    pub section: Option<String>,
    pub cursor: Option<Uuid>,
    pub limit: Option<i64>,
}

const DEFAULT_SEAT_PAGE: i64 = 1000;
pub const MAX_SEAT_PAGE: i64 = 10_000;

#[utoipa::path(
    get, path = "/v1/events/{event_id}/seats", tag = "seats",
    summary = "The seat map, a page at a time",
    params(("event_id" = Uuid, Path, description = "Event id"), SeatQuery),
    responses((status = 200, description = "A page of seats", body = crate::pipeline::views::SeatPage), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(())
)]
pub async fn list_seats(
    State(state): State<AppState>,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SeatQuery>,
) -> Result<Response, Error> {
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("available" | "held" | "booked")) => Some(s.to_ascii_uppercase()),
        Some(_) => {
            return Err(crate::domain::ValidationError::new("status", "must be available, held or booked").into());
        }
    };
    if query.section.as_ref().is_some_and(|s| s.chars().count() > 255) {
        return Err(crate::domain::ValidationError::new("section", "at most 255 characters").into());
    }
    let limit = query.limit.unwrap_or(DEFAULT_SEAT_PAGE);
    if !(1..=MAX_SEAT_PAGE).contains(&limit) {
        return Err(
            crate::domain::ValidationError::new("limit", format!("must be between 1 and {MAX_SEAT_PAGE}")).into()
        );
    }
    events::find_event(&state.db, event_id).await?.ok_or(Error::NotFound("event"))?;
    let seats =
        events::list_seats(&state.db, event_id, status.as_deref(), query.section.as_deref(), query.cursor, limit)
            .await?;
    let next_cursor = (seats.len() as i64 == limit).then(|| seats.last().map(|s| s.id)).flatten();
    let feed_cursor = match seats.first() {
        Some(seat) => changes::Position { txid: seat.feed_xmin, id: 0 },
        None => changes::readable_end(&state.db).await?,
    };
    Ok(reply::ok(views::seat_page(seats, next_cursor, feed_cursor)))
}
