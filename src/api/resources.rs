//! Time slots on a resource (meeting rooms, doctors, courts): admins create resources with
//! their rules; anyone reads free start times; callers hold a slot, then confirm, extend or
//! release the hold like any other, and may reschedule the booking.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Auth};
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader};
use super::reply;
use crate::db::resources;
use crate::domain::slots::{OpeningHoursSpec, SlotMinutes, slot_minutes};
use crate::domain::{SlotRules, StartsWanted, Ttl};
use crate::error::Error;
use crate::pipeline::views::{SlotAvailability, SlotView};
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResourceBody {
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Weekday (`monday` .. `sunday`) to `[{"open": "09:00", "close": "17:00"}]`; a missing day is closed.
    pub opening_hours: OpeningHoursSpec,
    pub slot_granularity_minutes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_before_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_after_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_notice_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_window_minutes: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/resources", tag = "slots",
    summary = "Create a bookable resource with its rules (admin)",
    params(crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateResourceBody,
    responses((status = 201, description = "Created", body = crate::pipeline::views::ResourceView), crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_resource(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateResourceBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let name = crate::domain::parse_name(&body.name, "name", crate::domain::MAX_NAME)?;
    let minutes = SlotMinutes {
        granularity: body.slot_granularity_minutes,
        buffer_before: body.buffer_before_minutes.unwrap_or(0),
        buffer_after: body.buffer_after_minutes.unwrap_or(0),
        min_notice: body.min_notice_minutes.unwrap_or(0),
        cancellation_window: body.cancellation_window_minutes.unwrap_or(0),
    };
    let rules = SlotRules::parse(&body.time_zone, &body.opening_hours, minutes)?;
    let command = pipeline::CreateResource { name, rules };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}

#[utoipa::path(
    get, path = "/v1/resources/{resource_id}", tag = "slots",
    summary = "A resource and its rules",
    params(("resource_id" = Uuid, Path, description = "Resource id")),
    responses((status = 200, description = "The resource", body = crate::pipeline::views::ResourceView), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(())
)]
pub async fn get_resource(
    State(state): State<AppState>,
    ApiPath(resource_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let row = resources::find(&state.db, resource_id).await?.ok_or(Error::NotFound("resource"))?;
    Ok(reply::ok(views::resource(&row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// An instant (RFC 3339) or a date (local midnight in the resource's time zone).
    pub from: String,
    /// Exclusive; an instant or a date, as `from`.
    pub to: String,
    #[param(minimum = 1, maximum = 1440)]
    pub duration_minutes: i64,
    /// The previous page's `next_cursor`: the first free start to list.
    pub cursor: Option<DateTime<Utc>>,
    /// Free starts per page, 1 to 1000 (default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/v1/resources/{resource_id}/availability", tag = "slots", operation_id = "slot_availability",
    summary = "Free start times",
    params(("resource_id" = Uuid, Path, description = "Resource id"), AvailabilityQuery),
    responses((status = 200, description = "Free starts for slots of `duration_minutes`", body = crate::pipeline::views::SlotAvailability), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(())
)]
pub async fn availability(
    State(state): State<AppState>,
    ApiPath(resource_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<AvailabilityQuery>,
) -> Result<Response, Error> {
    let row = resources::find(&state.db, resource_id).await?.ok_or(Error::NotFound("resource"))?;
    let rules = row.rules().map_err(Error::internal)?;
    let wanted =
        StartsWanted::parse(&rules, (&query.from, &query.to), query.duration_minutes, query.cursor, query.limit)?;
    let (from, to) = wanted.search_range(&rules);
    let taken = resources::live_blocked(&state.db, resource_id, from, to).await?;
    let (page, next_cursor) = wanted.page(&rules, Utc::now(), &taken);
    let duration = wanted.duration;
    let slots = page
        .iter()
        .map(|s| SlotView {
            start: s.with_timezone(&rules.tz).to_rfc3339(),
            end: (*s + Duration::minutes(duration)).with_timezone(&rules.tz).to_rfc3339(),
        })
        .collect();
    let availability = SlotAvailability {
        resource_id,
        time_zone: rules.tz.name().to_owned(),
        duration_minutes: duration,
        from: wanted.from,
        to: wanted.to,
        slots,
        next_cursor,
    };
    Ok(reply::ok(views::slot_availability(availability)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotBody {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/resources/{resource_id}/holds", tag = "slots",
    summary = "Hold a time slot",
    description = "422 codes: SLOT_MISALIGNED, SLOT_IN_PAST, SLOT_INSIDE_NOTICE_PERIOD, SLOT_OUTSIDE_OPENING_HOURS.",
    params(("resource_id" = Uuid, Path, description = "Resource id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = SlotBody,
    responses((status = 201, description = "Held", body = crate::pipeline::views::HoldView), (status = 409, description = "SLOT_UNAVAILABLE (with the conflicting interval), SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_slot_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(resource_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SlotBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    slot_minutes(body.start, body.end)?;
    let config = &state.config;
    let ttl = Ttl::parse(body.ttl_seconds, config.holds.default_ttl_seconds, config.holds.max_ttl_seconds)?;
    let command =
        pipeline::CreateSlotHold { hold_id: Uuid::now_v7(), resource_id, start: body.start, end: body.end, ttl };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}
