//! Quantity inventory per night (hotel room types, fare buckets): admins create it and change
//! nights; anyone reads availability; callers hold units for a stay, then confirm, extend or
//! release the hold like any other.

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Auth};
use super::extract::{ApiJson, ApiPath, ApiQuery, IdempotencyKeyHeader};
use super::reply;
use crate::db::inventories::{self, NightsPatch};
use crate::domain::{MAX_UNITS, Nights, Ttl, ValidationError, units};
use crate::error::Error;
use crate::pipeline::{self, views};
use crate::state::AppState;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInventoryBody {
    pub name: String,
    /// First night on sale.
    pub from: NaiveDate,
    /// The day after the last night on sale.
    pub to: NaiveDate,
    pub capacity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overbooking_allowance: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/inventories", tag = "rooms",
    summary = "Create a quantity inventory with a capacity per night (admin)",
    params(crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateInventoryBody,
    responses((status = 201, description = "Created", body = crate::pipeline::views::InventoryView), crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_inventory(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: IdempotencyKeyHeader,
    ApiJson(body): ApiJson<CreateInventoryBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let name = crate::domain::parse_name(&body.name, "name", crate::domain::MAX_NAME)?;
    let command = pipeline::CreateInventory {
        name,
        nights: Nights::parse(body.from, body.to, ("from", "to"))?,
        capacity: units(body.capacity, "capacity", 0..=MAX_UNITS)?,
        overbooking_allowance: units(body.overbooking_allowance.unwrap_or(0), "overbooking_allowance", 0..=MAX_UNITS)?,
    };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchNightsBody {
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<i64>,
    /// true: stop-sell (holds refused); false: back on sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overbooking_allowance: Option<i64>,
}

#[utoipa::path(
    patch, path = "/v1/inventories/{inventory_id}/nights", tag = "rooms",
    summary = "Change capacity, stop-sell or allowance for a range of nights (admin)",
    params(("inventory_id" = Uuid, Path, description = "Inventory id"), crate::api::openapi::OptionalIdempotencyKeyParam),
    request_body = PatchNightsBody,
    responses((status = 200, description = "The nights after the change", body = crate::pipeline::views::NightsView), (status = 409, description = "CAPACITY_BELOW_SOLD (names the night and what is sold), SEAT_LOCKED", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn patch_nights(
    State(state): State<AppState>,
    Admin(caller): Admin,
    key: Option<IdempotencyKeyHeader>,
    ApiPath(inventory_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchNightsBody>,
) -> Result<Response, Error> {
    // Setting absolute values is idempotent already; a key is accepted, not required.
    let idem = key.map(|k| k.bind(&caller, &body)).transpose()?;
    let patch = NightsPatch {
        capacity: body.capacity.map(|c| units(c, "capacity", 0..=MAX_UNITS)).transpose()?,
        closed: body.closed,
        overbooking_allowance: body
            .overbooking_allowance
            .map(|a| units(a, "overbooking_allowance", 0..=MAX_UNITS))
            .transpose()?,
    };
    if patch.capacity.is_none() && patch.closed.is_none() && patch.overbooking_allowance.is_none() {
        return Err(ValidationError::new("capacity", "give capacity, closed or overbooking_allowance").into());
    }
    let nights = Nights::parse(body.from, body.to, ("from", "to"))?;
    let command = pipeline::PatchNights { inventory_id, nights, patch };
    Ok(reply::render(pipeline::run(&state, caller, idem, command).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

#[utoipa::path(
    get, path = "/v1/inventories/{inventory_id}/availability", tag = "rooms", operation_id = "inventory_availability",
    summary = "Remaining units per night",
    params(("inventory_id" = Uuid, Path, description = "Inventory id"), AvailabilityQuery),
    responses((status = 200, description = "Nights from `from` to the night before `to`", body = crate::pipeline::views::NightsView), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(())
)]
pub async fn availability(
    State(state): State<AppState>,
    ApiPath(inventory_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<AvailabilityQuery>,
) -> Result<Response, Error> {
    let range = Nights::parse(query.from, query.to, ("from", "to"))?;
    let inventory = inventories::find(&state.db, inventory_id).await?.ok_or(Error::NotFound("inventory"))?;
    let rows = inventories::nights(&state.db, inventory.id, range).await?;
    Ok(reply::ok(views::nights(inventory.id, &rows)))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomHoldBody {
    pub check_in: NaiveDate,
    pub check_out: NaiveDate,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/inventories/{inventory_id}/holds", tag = "rooms",
    summary = "Hold units on every night of a stay, all or none",
    description = "422 NIGHT_IN_PAST: `check_in` is before yesterday (UTC; inventories carry no time zone, so yesterday is still tonight somewhere).",
    params(("inventory_id" = Uuid, Path, description = "Inventory id"), crate::api::openapi::IdempotencyKeyParam),
    request_body = CreateRoomHoldBody,
    responses((status = 201, description = "Held", body = crate::pipeline::views::HoldView), (status = 409, description = "INSUFFICIENT_INVENTORY (names the first short night and how many are left), SEAT_LOCKED, IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn create_room_hold(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(inventory_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateRoomHoldBody>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &body)?;
    let config = &state.config;
    let stay = Nights::parse(body.check_in, body.check_out, ("check_in", "check_out"))?;
    // Inventories carry no time zone: yesterday (UTC) is still "tonight" somewhere west of UTC.
    let earliest = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    if stay.first() < earliest {
        return Err(Error::NightInPast { night: stay.first() });
    }
    let command = pipeline::CreateRoomHold {
        hold_id: Uuid::now_v7(),
        inventory_id,
        stay,
        quantity: units(body.quantity, "quantity", 1..=config.holds.max_seats as i64)?,
        ttl: Ttl::parse(body.ttl_seconds, config.holds.default_ttl_seconds, config.holds.max_ttl_seconds)?,
    };
    Ok(reply::render(pipeline::run(&state, caller, Some(idem), command).await?))
}
