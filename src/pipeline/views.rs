//! JSON representations of holds, bookings and events: what clients see and what
//! idempotent replays return byte for byte.

use serde_json::{Value, json};

use crate::db::bookings::BookingRow;
use crate::db::events::{EventRow, SeatCounts};
use crate::db::holds::HoldRow;

pub fn hold(row: &HoldRow) -> Value {
    json!({
        "id": row.id,
        "event_id": row.event_id,
        "status": row.effective_status(),
        "expires_at": row.expires_at,
        "created_at": row.created_at,
        "seat_ids": row.seat_ids,
        "total_cents": row.total_cents,
    })
}

pub fn booking(row: &BookingRow) -> Value {
    json!({
        "id": row.id,
        "event_id": row.event_id,
        "hold_id": row.hold_id,
        "status": row.status,
        "seat_ids": row.seat_ids,
        "total_cents": row.total_cents,
        "payment_reference": row.payment_reference,
        "created_at": row.created_at,
        "cancelled_at": row.cancelled_at,
    })
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
