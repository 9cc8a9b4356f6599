//! What clients see: typed response bodies (their OpenAPI schemas are derived from these same
//! types), rendered to JSON once, which is also what idempotent replays return byte for byte.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::audit::AuditRow;
use crate::db::bookings::BookingRow;
use crate::db::changes::{ChangeRow, Page, Position};
use crate::db::events::{EventRow, SeatCounts, SeatRow};
use crate::db::holds::{HoldRow, Target};
use crate::db::inventories::{InventoryRow, NightRow};
use crate::db::resources::ResourceRow;
use crate::db::webhooks::{AttemptRow, Backlog, DeliveryRow, EndpointRow as WebhookRow};
use crate::domain::slots::OpeningHoursSpec;

fn to_json(view: impl Serialize) -> Value {
    serde_json::to_value(view).expect("views serialize to JSON")
}

/// What a hold or booking is for, told apart by `kind`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetView {
    /// Seats of an event.
    Seats { event_id: Uuid, seat_ids: Vec<Uuid>, total_cents: i64 },
    /// `quantity` units of an inventory on every night from `check_in` to the night before `check_out`.
    Rooms { inventory_id: Uuid, check_in: NaiveDate, check_out: NaiveDate, quantity: i32 },
    /// A time slot `[start, end)` on a resource.
    Slot { resource_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc> },
}

impl From<&Target> for TargetView {
    fn from(target: &Target) -> Self {
        match target.clone() {
            Target::Seats { event_id, seat_ids, total_cents } => TargetView::Seats { event_id, seat_ids, total_cents },
            Target::Rooms { inventory_id, check_in, check_out, quantity } => {
                TargetView::Rooms { inventory_id, check_in, check_out, quantity }
            }
            Target::Slot { resource_id, start, end } => TargetView::Slot { resource_id, start, end },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    /// HELD, CONFIRMED, RELEASED or EXPIRED (a HELD hold past its expiry reads EXPIRED).
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub target: TargetView,
}

pub fn hold(row: &HoldRow) -> Value {
    to_json(HoldView {
        id: row.id,
        status: row.effective_status().as_str().to_owned(),
        expires_at: row.expires_at,
        created_at: row.created_at,
        target: (&row.target).into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingView {
    pub id: Uuid,
    pub hold_id: Uuid,
    /// CONFIRMED or CANCELLED.
    pub status: String,
    pub payment_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub target: TargetView,
}

fn booking_view(row: &BookingRow) -> BookingView {
    BookingView {
        id: row.id,
        hold_id: row.hold_id,
        status: row.status.as_str().to_owned(),
        payment_reference: row.payment_reference.clone(),
        created_at: row.created_at,
        cancelled_at: row.cancelled_at,
        target: (&row.target).into(),
    }
}

pub fn booking(row: &BookingRow) -> Value {
    to_json(booking_view(row))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BookingPage {
    pub bookings: Vec<BookingView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<Uuid>,
}

pub fn booking_page(rows: &[BookingRow], next_cursor: Option<Uuid>) -> Value {
    to_json(BookingPage { bookings: rows.iter().map(booking_view).collect(), next_cursor })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Before this, holds and direct bookings answer 409 NOT_ON_SALE (admins excepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_sale_at: Option<DateTime<Utc>>,
    /// The most seats one buyer may hold and own in this event at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seats_per_buyer: Option<i32>,
    /// The waiting room (`enabled: false`: none).
    pub queue: crate::domain::QueueSettings,
    pub seats: SeatCounts,
}

pub fn event(row: &EventRow, counts: &SeatCounts) -> Value {
    to_json(EventView {
        id: row.id,
        name: row.name.clone(),
        starts_at: row.starts_at,
        created_at: row.created_at,
        on_sale_at: row.on_sale_at,
        max_seats_per_buyer: row.max_seats_per_buyer,
        queue: row.queue(),
        seats: *counts,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatPage {
    /// In natural seat-map order (section, row, number).
    pub seats: Vec<SeatRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<Uuid>,
    /// The change feed position this page reflects: open the event's stream with `after=` it
    /// (from the first page read) and no change is missed.
    pub feed_cursor: String,
}

pub fn seat_page(seats: Vec<SeatRow>, next_cursor: Option<Uuid>, feed_cursor: Position) -> Value {
    to_json(SeatPage { seats, next_cursor, feed_cursor: feed_cursor.to_string() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NightView {
    #[serde(flatten)]
    pub night: NightRow,
    /// Units that can still be held: `capacity + overbooking_allowance - held - booked`, 0 when closed.
    pub available: i32,
}

fn night(row: &NightRow) -> NightView {
    NightView { night: row.clone(), available: row.available() }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryView {
    pub id: Uuid,
    pub name: String,
    pub overbooking_allowance: i32,
    pub created_at: DateTime<Utc>,
    pub nights: Vec<NightView>,
}

pub fn inventory(row: &InventoryRow, nights: &[NightRow]) -> Value {
    to_json(InventoryView {
        id: row.id,
        name: row.name.clone(),
        overbooking_allowance: row.overbooking_allowance,
        created_at: row.created_at,
        nights: nights.iter().map(night).collect(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NightsView {
    pub inventory_id: Uuid,
    /// The nights on sale in the range asked for, in order; a night not on sale is absent.
    pub nights: Vec<NightView>,
}

pub fn nights(inventory_id: Uuid, rows: &[NightRow]) -> Value {
    to_json(NightsView { inventory_id, nights: rows.iter().map(night).collect() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    pub id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub opening_hours: OpeningHoursSpec,
    pub slot_granularity_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub min_notice_minutes: i32,
    pub cancellation_window_minutes: i32,
    pub created_at: DateTime<Utc>,
}

pub fn resource(row: &ResourceRow) -> Value {
    to_json(ResourceView {
        id: row.id,
        name: row.name.clone(),
        time_zone: row.time_zone.clone(),
        opening_hours: serde_json::from_value(row.opening_hours.clone()).unwrap_or_default(),
        slot_granularity_minutes: row.granularity_minutes,
        buffer_before_minutes: row.buffer_before_minutes,
        buffer_after_minutes: row.buffer_after_minutes,
        min_notice_minutes: row.min_notice_minutes,
        cancellation_window_minutes: row.cancellation_window_minutes,
        created_at: row.created_at,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    /// RFC 3339 with the resource's local offset.
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotAvailability {
    pub resource_id: Uuid,
    pub time_zone: String,
    pub duration_minutes: i64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Free start times, in time order: at most `limit` of them.
    pub slots: Vec<SlotView>,
    /// Pass as `cursor` for the next page (the next free start, UTC); null on the last page.
    pub next_cursor: Option<DateTime<Utc>>,
}

pub fn slot_availability(availability: SlotAvailability) -> Value {
    to_json(availability)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// When the change committed's statement ran.
    pub at: DateTime<Utc>,
    /// `hold` or `booking`.
    pub entity: String,
    /// Status before; null when the hold or booking was created.
    pub from: Option<String>,
    pub to: String,
    /// User id of the caller, or `system` (expiry, or a change made outside the service).
    pub actor: String,
    /// `user`, `admin` or `system`.
    pub actor_role: String,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
    /// What else changed: a new expiry, or a rescheduled slot.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub booking_id: Uuid,
    pub hold_id: Uuid,
    /// Oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<i64>,
}

pub fn history(booking_id: Uuid, hold_id: Uuid, rows: &[AuditRow], next_cursor: Option<i64>) -> Value {
    let entries = rows
        .iter()
        .map(|r| HistoryEntry {
            at: r.at,
            entity: r.entity.clone(),
            from: r.from_status.clone(),
            to: r.to_status.clone(),
            actor: r.actor.clone(),
            actor_role: r.actor_role.clone(),
            request_id: r.request_id.clone(),
            detail: r.detail.clone(),
        })
        .collect();
    to_json(History { booking_id, hold_id, entries, next_cursor })
}

/// What a change event is about.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeSubject {
    /// `hold`, `booking`, `event`, `inventory` or `resource` (availability changes are about the
    /// event, inventory or resource whose seats, nights or slots changed).
    pub kind: String,
    pub id: Option<Uuid>,
    /// The event, inventory or resource the subject belongs to (one of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<Uuid>,
}

/// Who made a change: a user id and `user` or `admin`, or `system` (expiry, jobs, changes made
/// outside the service).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeActor {
    pub id: String,
    pub role: String,
}

/// One change event, as the feed (and webhooks) deliver it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    /// Stable id: the same event always carries the same id (de-duplicate on it).
    pub id: Uuid,
    /// The feed position just after this event: pass it as `after` to read on from here.
    pub cursor: String,
    /// `hold.created`, `hold.extended`, `hold.released`, `hold.expired`, `hold.confirmed`,
    /// `hold.rescheduled`, `booking.confirmed`, `booking.cancelled`, `booking.rescheduled`,
    /// `seats.changed`, `nights.changed`, `inventory.nights_changed`, `slots.changed`,
    /// `event.created`, `event.updated`, `inventory.created`, `resource.created`.
    pub r#type: String,
    pub occurred_at: DateTime<Utc>,
    pub subject: ChangeSubject,
    pub actor: ChangeActor,
    /// The `x-request-id` of the request that made the change.
    pub request_id: Option<String>,
    /// The subject's new state. Seats and nights carry their `version`: of two states of one
    /// seat or night, the higher version is the newer.
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePage {
    /// Oldest first.
    pub changes: Vec<ChangeView>,
    /// Pass as `after` to read on; on an empty page, the cursor you sent (or, with `types`, past
    /// the events that did not match).
    pub next_cursor: String,
}

pub fn change(row: &ChangeRow) -> ChangeView {
    ChangeView {
        id: row.uid(),
        cursor: row.position().to_string(),
        r#type: row.r#type.clone(),
        occurred_at: row.at,
        subject: ChangeSubject {
            kind: row.subject_kind.clone(),
            id: row.subject_id,
            event_id: row.event_id,
            inventory_id: row.inventory_id,
            resource_id: row.resource_id,
        },
        actor: ChangeActor { id: row.actor.clone(), role: row.actor_role.clone() },
        request_id: row.request_id.clone(),
        data: row.data.clone().unwrap_or_else(|| Value::Object(Default::default())),
    }
}

pub fn change_page(page: &Page) -> Value {
    to_json(ChangePage { changes: page.changes.iter().map(change).collect(), next_cursor: page.next.to_string() })
}

/// A webhook endpoint (its secret is shown only when it is created).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The change types delivered to it.
    pub event_types: Vec<String>,
    /// `enabled`, or `disabled` (by a 410 answer or after failing for WEBHOOK_DISABLE_AFTER_HOURS).
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// Since when every attempt has failed (absent while deliveries succeed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Deliveries not yet made (on `GET /v1/webhooks/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deliveries: Option<i64>,
    /// When the oldest change still waiting for delivery happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// A new webhook endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreatedView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + base64 of the HMAC key: verify each `webhook-signature` with it (Standard
    /// Webhooks). Store it now: it is never shown again.
    pub secret: String,
}

fn webhook_view(row: &WebhookRow, backlog: Option<&Backlog>) -> WebhookView {
    WebhookView {
        id: row.id,
        url: row.url.clone(),
        description: row.description.clone(),
        event_types: row.event_types.clone(),
        status: if row.disabled_at.is_some() { "disabled" } else { "enabled" }.to_owned(),
        created_at: row.created_at,
        failing_since: row.failing_since,
        disabled_at: row.disabled_at,
        disabled_reason: row.disabled_reason.clone(),
        pending_deliveries: backlog.map(|b| b.pending),
        oldest_pending_at: backlog.and_then(|b| b.oldest_pending),
    }
}

pub fn webhook(row: &WebhookRow, backlog: Option<&Backlog>) -> Value {
    to_json(webhook_view(row, backlog))
}

pub fn webhook_created(row: &WebhookRow, secret: &str) -> Value {
    to_json(WebhookCreatedView { webhook: webhook_view(row, None), secret: secret.to_owned() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    pub webhooks: Vec<WebhookView>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<Uuid>,
}

pub fn webhook_page(rows: &[WebhookRow], next: Option<Uuid>) -> Value {
    to_json(WebhookPage { webhooks: rows.iter().map(|r| webhook_view(r, None)).collect(), next_cursor: next })
}

/// One attempt to deliver a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first. A number missing from the list is an attempt whose instance stopped
    /// before it could record it (the delivery was then tried again).
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// `delivered`, `http_error`, `gone` (410: the endpoint is disabled), `timeout`,
    /// `connect_error`, `refused_target` (the URL resolved to a non-public address), `error`.
    pub outcome: String,
    /// The receiver's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the delivery is tried again after this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One change on its way to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The change event's id, sent as `webhook-id` on every attempt.
    pub event_id: Uuid,
    pub r#type: String,
    pub occurred_at: DateTime<Utc>,
    /// `pending` (waiting or retrying), `delivered`, or `failed` (retries given up after
    /// WEBHOOK_RETRY_HOURS, or the endpoint answered 410).
    pub status: String,
    /// Attempts started so far.
    pub attempt_count: i32,
    /// While pending: when the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Newest change first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn delivery_page(rows: &[DeliveryRow], attempts: &[AttemptRow], next: Option<Position>) -> Value {
    let deliveries = rows
        .iter()
        .map(|d| DeliveryView {
            event_id: d.event_id,
            r#type: d.r#type.clone(),
            occurred_at: d.occurred_at,
            status: d.status.clone(),
            attempt_count: d.attempts,
            next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
            finished_at: d.finished_at,
            attempts: attempts
                .iter()
                .filter(|a| (a.txid, a.change_id) == (d.txid, d.change_id))
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    started_at: a.started_at,
                    duration_ms: a.duration_ms,
                    outcome: a.outcome.clone(),
                    response_status: a.status_code,
                    error: a.error.clone(),
                    next_attempt_at: a.next_attempt_at,
                })
                .collect(),
        })
        .collect();
    to_json(DeliveryPage { deliveries, next_cursor: next.map(|p| p.to_string()) })
}
