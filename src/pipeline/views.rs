//! JSON representations of holds, bookings, events, inventories and resources: what clients
//! see and what idempotent replays return byte for byte.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::db::audit::AuditRow;
use crate::db::bookings::BookingRow;
use crate::db::events::{EventRow, SeatCounts};
use crate::db::holds::{HoldRow, Target};
use crate::db::inventories::{InventoryRow, NightRow};
use crate::db::resources::ResourceRow;

/// The kind-specific fields of a hold or booking, with its `kind`.
fn target(target: &Target) -> Value {
    match target {
        Target::Seats { event_id, seat_ids, total_cents } => json!({
            "kind": "seats",
            "event_id": event_id,
            "seat_ids": seat_ids,
            "total_cents": total_cents,
        }),
        Target::Rooms { inventory_id, check_in, check_out, quantity } => json!({
            "kind": "rooms",
            "inventory_id": inventory_id,
            "check_in": check_in,
            "check_out": check_out,
            "quantity": quantity,
        }),
        Target::Slot { resource_id, start, end } => json!({
            "kind": "slot",
            "resource_id": resource_id,
            "start": start,
            "end": end,
        }),
    }
}

fn with_target(mut common: Value, t: &Target) -> Value {
    if let (Value::Object(common), Value::Object(fields)) = (&mut common, target(t)) {
        common.extend(fields);
    }
    common
}

pub fn hold(row: &HoldRow) -> Value {
    with_target(
        json!({
            "id": row.id,
            "status": row.effective_status(),
            "expires_at": row.expires_at,
            "created_at": row.created_at,
        }),
        &row.target,
    )
}

pub fn booking(row: &BookingRow) -> Value {
    with_target(
        json!({
            "id": row.id,
            "hold_id": row.hold_id,
            "status": row.status,
            "payment_reference": row.payment_reference,
            "created_at": row.created_at,
            "cancelled_at": row.cancelled_at,
        }),
        &row.target,
    )
}

pub fn event(row: &EventRow, counts: &SeatCounts) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "starts_at": row.starts_at,
        "created_at": row.created_at,
        "seats": {
            "total": counts.total,
            "available": counts.available,
            "held": counts.held,
            "booked": counts.booked,
        },
    })
}

fn night(row: &NightRow) -> Value {
    json!({
        "night": row.night,
        "capacity": row.capacity,
        "overbooking_allowance": row.overbooking_allowance,
        "closed": row.closed,
        "held": row.held,
        "booked": row.booked,
        "available": row.available(),
    })
}

pub fn inventory(row: &InventoryRow, nights: &[NightRow]) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "overbooking_allowance": row.overbooking_allowance,
        "created_at": row.created_at,
        "nights": nights.iter().map(night).collect::<Vec<_>>(),
    })
}

pub fn nights(inventory_id: Uuid, rows: &[NightRow]) -> Value {
    json!({
        "inventory_id": inventory_id,
        "nights": rows.iter().map(night).collect::<Vec<_>>(),
    })
}

pub fn resource(row: &ResourceRow) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "time_zone": row.time_zone,
        "opening_hours": row.opening_hours,
        "slot_granularity_minutes": row.granularity_minutes,
        "buffer_before_minutes": row.buffer_before_minutes,
        "buffer_after_minutes": row.buffer_after_minutes,
        "min_notice_minutes": row.min_notice_minutes,
        "cancellation_window_minutes": row.cancellation_window_minutes,
        "created_at": row.created_at,
    })
}

pub fn history(booking_id: Uuid, hold_id: Uuid, rows: &[AuditRow]) -> Value {
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut entry = Map::new();
            entry.insert("at".into(), json!(r.at));
            entry.insert("entity".into(), json!(r.entity));
            entry.insert("from".into(), json!(r.from_status));
            entry.insert("to".into(), json!(r.to_status));
            entry.insert("actor".into(), json!(r.actor));
            entry.insert("actor_role".into(), json!(r.actor_role));
            entry.insert("request_id".into(), json!(r.request_id));
            entry.insert("detail".into(), r.detail.clone().unwrap_or(Value::Null));
            Value::Object(entry)
        })
        .collect();
    json!({ "booking_id": booking_id, "hold_id": hold_id, "entries": entries })
}
