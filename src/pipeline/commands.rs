//! The state-changing commands. Each has a read-only [`Command::plan`] (what it acts on, at
//! which version, and which lock resources that means) and a [`Command::apply`] that writes
//! inside the pipeline's transaction, every write guarded by its own predicate.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Reply, Step, views};
use crate::db::holds::Target;
use crate::db::inventories::{self, NightRow, NightsPatch};
use crate::db::{bookings, events, holds, resources};
use crate::domain::slots::SlotRefusal;
use crate::domain::{Caller, NewEvent, Nights, SeatIds, SlotRules, Ttl, ValidationError};
use crate::error::Error;
use crate::idempotency::{BeingDecided, ClaimBatches, SeatProbe};
use crate::state::AppState;

/// The answer a seat-claiming command gets when its seats are already taken (the claim fills
/// in `seat_ids`). Built once: it is the same for every request.
static SEAT_UNAVAILABLE: LazyLock<Value> = LazyLock::new(|| Error::SeatUnavailable { seat_ids: Vec::new() }.body());

#[derive(Debug)]
pub enum Command {
    CreateEvent { event: NewEvent },
    CreateHold { event_id: Uuid, seat_ids: SeatIds, ttl: Ttl },
    ExtendHold { hold_id: Uuid, ttl: Ttl },
    ConfirmHold { hold_id: Uuid, payment_reference: Option<String> },
    ReleaseHold { hold_id: Uuid },
    BookSeats { event_id: Uuid, seat_ids: SeatIds, payment_reference: Option<String> },
    CancelBooking { booking_id: Uuid },
    CreateInventory { name: String, nights: Nights, capacity: i32, overbooking_allowance: i32 },
    PatchNights { inventory_id: Uuid, nights: Nights, patch: NightsPatch },
    CreateRoomHold { inventory_id: Uuid, stay: Nights, quantity: i32, ttl: Ttl },
    CreateResource { name: String, rules: SlotRules },
    CreateSlotHold { resource_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc>, ttl: Ttl },
    RescheduleBooking { booking_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc> },
}

type Range = (DateTime<Utc>, DateTime<Utc>);

/// What a command read before locking, and the lock resources that follow from it.
pub struct Plan {
    pub resources: Vec<String>,
    seen: Seen,
}

enum Seen {
    Nothing,
    Hold(holds::HoldRow),
    Booking(bookings::BookingRow),
    /// A new slot, checked against its resource's rules, and its buffered range.
    Slot {
        blocked: Range,
    },
    /// A booked slot to move, and the new slot's buffered range.
    Reschedule {
        booking: bookings::BookingRow,
        blocked: Range,
    },
}

fn seat_resources(seat_ids: &[Uuid]) -> Vec<String> {
    seat_ids.iter().map(|id| format!("seat:{id}")).collect()
}

/// One lock key per night: every hold of a night serializes on it.
fn night_resources(inventory_id: Uuid, nights: Nights) -> Vec<String> {
    nights.iter().map(|night| format!("night:{inventory_id}:{night}")).collect()
}

/// The lock cells a buffered slot range touches (see [`SlotRules::lock_cells`]).
fn slot_resources(resource_id: Uuid, rules: &SlotRules, blocked: Range) -> Vec<String> {
    rules.lock_cells(blocked).into_iter().map(|cell| format!("slot:{resource_id}:{cell}")).collect()
}

async fn load_rules(state: &AppState, resource_id: Uuid) -> Result<SlotRules, Error> {
    let resource = resources::find(&state.db, resource_id).await?.ok_or(Error::NotFound("resource"))?;
    resource.rules().map_err(Error::internal)
}

fn stay_of(check_in: chrono::NaiveDate, check_out: chrono::NaiveDate) -> Result<Nights, Error> {
    Nights::parse(check_in, check_out, ("check_in", "check_out")).map_err(Error::internal)
}

/// The lock keys an existing hold or booking covers.
async fn target_resources(state: &AppState, target: &Target) -> Result<Vec<String>, Error> {
    Ok(match target {
        Target::Seats { seat_ids, .. } => seat_resources(seat_ids),
        Target::Rooms { inventory_id, check_in, check_out, .. } => {
            night_resources(*inventory_id, stay_of(*check_in, *check_out)?)
        }
        Target::Slot { resource_id, start, end } => {
            let rules = load_rules(state, *resource_id).await?;
            slot_resources(*resource_id, &rules, rules.blocked(*start, *end))
        }
    })
}

/// The first night of a stay that cannot take `quantity` more units, if any. `nights` are the
/// rows on sale in the stay, in order; a night missing from them is not on sale.
fn first_short_night(stay: Nights, nights: &[NightRow], quantity: i32) -> Option<Error> {
    let mut rows = nights.iter().peekable();
    for night in stay.iter() {
        match rows.next_if(|r| r.night == night) {
            None => return Some(Error::InsufficientInventory { night: Some(night), available: 0, closed: true }),
            Some(row) if row.closed || row.available() < quantity => {
                return Some(Error::InsufficientInventory {
                    night: Some(night),
                    available: row.available(),
                    closed: row.closed,
                });
            }
            Some(_) => {}
        }
    }
    None
}

fn missing(requested: &[Uuid], got: &[Uuid]) -> Vec<Uuid> {
    let got: BTreeSet<&Uuid> = got.iter().collect();
    requested.iter().filter(|id| !got.contains(id)).copied().collect()
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateEvent { .. } => "create_event",
            Command::CreateHold { .. } => "create_hold",
            Command::ExtendHold { .. } => "extend_hold",
            Command::ConfirmHold { .. } => "confirm_hold",
            Command::ReleaseHold { .. } => "release_hold",
            Command::BookSeats { .. } => "book_seats",
            Command::CancelBooking { .. } => "cancel_booking",
            Command::CreateInventory { .. } => "create_inventory",
            Command::PatchNights { .. } => "patch_nights",
            Command::CreateRoomHold { .. } => "create_room_hold",
            Command::CreateResource { .. } => "create_resource",
            Command::CreateSlotHold { .. } => "create_slot_hold",
            Command::RescheduleBooking { .. } => "reschedule_booking",
        }
    }

    pub(super) fn count_success(&self) {
        let counter = |name: &'static str| metrics::counter!(name).increment(1);
        match self {
            Command::CreateEvent { .. } => counter("holdfast_events_created_total"),
            Command::CreateHold { .. } | Command::CreateRoomHold { .. } | Command::CreateSlotHold { .. } => {
                counter("holdfast_holds_created_total")
            }
            Command::ExtendHold { .. } => counter("holdfast_holds_extended_total"),
            Command::ConfirmHold { .. } => {
                counter("holdfast_holds_confirmed_total");
                counter("holdfast_bookings_created_total");
            }
            Command::ReleaseHold { .. } => counter("holdfast_holds_released_total"),
            Command::BookSeats { .. } => counter("holdfast_bookings_created_total"),
            Command::CancelBooking { .. } => counter("holdfast_bookings_cancelled_total"),
            Command::RescheduleBooking { .. } => counter("holdfast_bookings_rescheduled_total"),
            Command::CreateInventory { .. } | Command::PatchNights { .. } | Command::CreateResource { .. } => {}
        }
    }

    /// For commands that claim free seats: the probe that lets the idempotency claim settle
    /// the request at once when the seats are already taken.
    pub(super) fn seat_probe<'a>(
        &'a self,
        wanted: &'a (dyn Fn() -> bool + Send + Sync),
        batches: &'a Arc<ClaimBatches>,
        being_decided: &'a (dyn Fn() -> BeingDecided + Send + Sync),
    ) -> Option<SeatProbe<'a>> {
        match self {
            Command::CreateHold { event_id, seat_ids, .. } | Command::BookSeats { event_id, seat_ids, .. } => {
                Some(SeatProbe {
                    event_id: *event_id,
                    seat_ids: seat_ids.as_slice(),
                    status: 409,
                    body: &SEAT_UNAVAILABLE,
                    wanted,
                    batches,
                    being_decided,
                })
            }
            _ => None,
        }
    }

    /// Whether the command creates a HELD hold (and so counts against `HOLD_MAX_LIVE_PER_USER`).
    pub(super) fn creates_live_hold(&self) -> bool {
        matches!(self, Command::CreateHold { .. } | Command::CreateRoomHold { .. } | Command::CreateSlotHold { .. })
    }

    /// The lock resources of the seats a seat-claiming command asks for.
    pub(super) fn requested_seat_resources(&self) -> Vec<String> {
        seat_resources(self.requested_seats())
    }

    /// The seats a seat-claiming command asks for (empty for the others).
    pub(super) fn requested_seats(&self) -> &[Uuid] {
        match self {
            Command::CreateHold { seat_ids, .. } | Command::BookSeats { seat_ids, .. } => seat_ids.as_slice(),
            _ => &[],
        }
    }

    /// How many times the configured lock retries this command may wait: a night's key is taken
    /// by every hold, confirm, release and cancel of that night, so queueing there is normal,
    /// not a lost race.
    pub(super) fn lock_patience(&self, plan: &Plan) -> u32 {
        if plan.resources.iter().any(|r| r.starts_with("night:")) { 5 } else { 1 }
    }

    /// When the lock is contended: whether what this command would claim is already gone for
    /// good (seats taken, a night sold out, the slot booked), and so waiting is pointless.
    /// None for commands that act on a hold or booking of their own.
    pub(super) async fn why_give_up(&self, state: &AppState, plan: &Plan) -> Result<Option<Error>, Error> {
        match (self, &plan.seen) {
            (Command::CreateHold { event_id, seat_ids, .. } | Command::BookSeats { event_id, seat_ids, .. }, _) => {
                let taken = events::taken_seats(&state.db, *event_id, seat_ids.as_slice()).await?;
                Ok((!taken.is_empty()).then_some(Error::SeatUnavailable { seat_ids: taken }))
            }
            (Command::CreateRoomHold { inventory_id, stay, quantity, .. }, _) => {
                let nights = inventories::nights(&state.db, *inventory_id, *stay).await?;
                Ok(first_short_night(*stay, &nights, *quantity))
            }
            (Command::CreateSlotHold { resource_id, .. }, Seen::Slot { blocked }) => {
                let live = resources::live_blocked(&state.db, *resource_id, blocked.0, blocked.1).await?;
                Ok((!live.is_empty()).then_some(Error::SlotUnavailable { conflict: None }))
            }
            _ => Ok(None),
        }
    }

    /// Reads (autocommit, no lock) what the command will act on.
    pub(super) async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        let write = |resources, seen| Ok(Step::Write(Plan { resources, seen }));
        match self {
            Command::CreateEvent { .. } | Command::CreateInventory { .. } | Command::CreateResource { .. } => {
                write(Vec::new(), Seen::Nothing)
            }
            Command::CreateHold { seat_ids, .. } | Command::BookSeats { seat_ids, .. } => {
                write(seat_resources(seat_ids.as_slice()), Seen::Nothing)
            }
            Command::PatchNights { inventory_id, nights, .. } => {
                write(night_resources(*inventory_id, *nights), Seen::Nothing)
            }
            Command::CreateRoomHold { inventory_id, stay, .. } => {
                write(night_resources(*inventory_id, *stay), Seen::Nothing)
            }
            Command::CreateSlotHold { resource_id, start, end, .. } => {
                let rules = load_rules(state, *resource_id).await?;
                check_slot(state, &rules, *start, *end)?;
                let blocked = rules.blocked(*start, *end);
                write(slot_resources(*resource_id, &rules, blocked), Seen::Slot { blocked })
            }
            Command::ExtendHold { hold_id, .. }
            | Command::ConfirmHold { hold_id, .. }
            | Command::ReleaseHold { hold_id } => {
                let hold = visible_hold(state, caller, *hold_id).await?;
                match (self, hold.effective_status()) {
                    (_, "HELD") => write(target_resources(state, &hold.target).await?, Seen::Hold(hold)),
                    // Releasing what is already gone is a harmless repeat.
                    (Command::ReleaseHold { .. }, "RELEASED" | "EXPIRED") => Ok(Step::Done(Reply::no_content())),
                    (_, "EXPIRED") => Err(Error::HoldExpired),
                    (_, status) => Err(Error::HoldNotActive { status: status.to_owned() }),
                }
            }
            Command::CancelBooking { booking_id } => {
                let booking = visible_booking(state, caller, *booking_id).await?;
                if booking.status == "CANCELLED" {
                    return Ok(Step::Done(Reply::ok(views::booking(&booking))));
                }
                if let Target::Slot { resource_id, start, .. } = &booking.target {
                    check_cancellation_window(&load_rules(state, *resource_id).await?, caller, *start)?;
                }
                write(target_resources(state, &booking.target).await?, Seen::Booking(booking))
            }
            Command::RescheduleBooking { booking_id, start, end } => {
                let booking = visible_booking(state, caller, *booking_id).await?;
                let Target::Slot { resource_id, start: old_start, end: old_end } = booking.target else {
                    return Err(ValidationError::new("booking", "only slot bookings can be rescheduled").into());
                };
                if booking.status != "CONFIRMED" {
                    return Err(Error::BookingNotActive { status: booking.status.clone() });
                }
                let rules = load_rules(state, resource_id).await?;
                // Moving a booking gives up its slot: the same window as cancelling applies.
                check_cancellation_window(&rules, caller, old_start)?;
                check_slot(state, &rules, *start, *end)?;
                let blocked = rules.blocked(*start, *end);
                let mut keys = slot_resources(resource_id, &rules, rules.blocked(old_start, old_end));
                keys.extend(slot_resources(resource_id, &rules, blocked));
                write(keys, Seen::Reschedule { booking, blocked })
            }
        }
    }

    /// Writes inside the pipeline's transaction. Any error rolls the whole transaction back.
    pub(super) async fn apply(
        &self,
        tx: &mut PgConnection,
        state: &AppState,
        caller: &Caller,
        plan: Plan,
    ) -> Result<Reply, Error> {
        match (self, plan.seen) {
            (Command::CreateEvent { event }, _) => {
                let id = Uuid::now_v7();
                let row = events::insert_event(tx, id, event, &caller.user_id).await?;
                let n = event.seats.len() as i64;
                let counts = events::SeatCounts { total: n, available: n, held: 0, booked: 0 };
                Ok(Reply::created(views::event(&row, &counts)))
            }

            (Command::CreateHold { event_id, seat_ids, ttl }, _) => {
                let hold_id = Uuid::now_v7();
                // An unknown event claims no seats: `unclaimable` then answers 404.
                let created =
                    holds::create(tx, hold_id, *event_id, &caller.user_id, ttl.seconds(), seat_ids.as_slice()).await?;
                if created.claimed.len() < seat_ids.len() {
                    return Err(unclaimable(tx, *event_id, seat_ids.as_slice(), &created.claimed).await);
                }
                let target =
                    Target::Seats { event_id: *event_id, seat_ids: created.claimed, total_cents: created.total_cents };
                let hold =
                    holds::HoldRow::created(hold_id, &caller.user_id, created.expires_at, created.created_at, target);
                Ok(Reply::created(views::hold(&hold)))
            }

            (Command::ExtendHold { hold_id, ttl }, Seen::Hold(seen)) => {
                let max_life = state.config.hold_max_lifetime_seconds;
                let seats = seen.seat_ids().len();
                match holds::extend(tx, *hold_id, seen.version, ttl.seconds(), max_life, seats).await? {
                    holds::Extended::To(_) => {
                        let hold = holds::find(&mut *tx, *hold_id).await?.ok_or(Error::NotFound("hold"))?;
                        Ok(Reply::ok(views::hold(&hold)))
                    }
                    holds::Extended::Refused => Err(why_hold_refused(tx, *hold_id, seen.version, Some(max_life)).await),
                    holds::Extended::LostSeats => {
                        tracing::error!(%hold_id, "a live hold no longer owns every seat it was granted");
                        Err(Error::ConcurrentModification)
                    }
                }
            }

            (Command::ConfirmHold { hold_id, payment_reference }, Seen::Hold(seen)) => {
                let booking_id = Uuid::now_v7();
                let total_cents = match &seen.target {
                    Target::Seats { total_cents, .. } => *total_cents,
                    _ => 0,
                };
                let confirmed = bookings::confirm_hold(
                    tx,
                    *hold_id,
                    seen.version,
                    booking_id,
                    &seen.user_id,
                    payment_reference.as_deref(),
                    total_cents,
                    seen.seat_ids(),
                )
                .await?;
                if !confirmed.moved {
                    return Err(why_hold_refused(tx, *hold_id, seen.version, None).await);
                }
                if confirmed.sold.len() < seen.seat_ids().len() {
                    // Cannot happen while the hold row said HELD and unexpired; refuse rather than sell part.
                    return Err(Error::SeatUnavailable { seat_ids: missing(seen.seat_ids(), &confirmed.sold) });
                }
                if let Target::Rooms { check_in, check_out, .. } = &seen.target
                    && confirmed.nights_moved != (*check_out - *check_in).num_days()
                {
                    return Err(Error::internal("a confirmed hold's nights did not all move to booked"));
                }
                let booking = bookings::BookingRow {
                    id: booking_id,
                    hold_id: *hold_id,
                    user_id: seen.user_id.clone(),
                    status: "CONFIRMED".into(),
                    payment_reference: payment_reference.clone(),
                    created_at: confirmed.created_at.ok_or_else(|| Error::internal("booking has no created_at"))?,
                    cancelled_at: None,
                    version: 0,
                    target: match seen.target {
                        Target::Seats { event_id, total_cents, .. } => {
                            Target::Seats { event_id, seat_ids: confirmed.sold, total_cents }
                        }
                        other => other,
                    },
                };
                Ok(Reply::created(views::booking(&booking)))
            }

            (Command::ReleaseHold { hold_id }, Seen::Hold(seen)) => {
                if !holds::transition(tx, *hold_id, seen.version, "RELEASED").await? {
                    return match why_hold_refused(tx, *hold_id, seen.version, None).await {
                        // Gone meanwhile (released by a concurrent call, or expired): same result.
                        Error::HoldExpired => Ok(Reply::no_content()),
                        Error::HoldNotActive { status } if status == "RELEASED" || status == "EXPIRED" => {
                            Ok(Reply::no_content())
                        }
                        err => Err(err),
                    };
                }
                holds::end_claims(tx, &[*hold_id]).await?;
                Ok(Reply::no_content())
            }

            (Command::BookSeats { event_id, seat_ids, payment_reference }, _) => {
                let (found, total_cents) = bookings::price_of(tx, *event_id, seat_ids.as_slice()).await?;
                if (found as usize) < seat_ids.len() {
                    return Err(unclaimable(tx, *event_id, seat_ids.as_slice(), &[]).await);
                }
                // A booking always comes from a hold; here the hold is born CONFIRMED.
                let hold_id = Uuid::now_v7();
                holds::insert(tx, hold_id, *event_id, &caller.user_id, "CONFIRMED", 0).await?;
                holds::record_seats(tx, hold_id, seat_ids.as_slice()).await?;
                let booking_id = Uuid::now_v7();
                bookings::insert(
                    tx,
                    booking_id,
                    *event_id,
                    hold_id,
                    &caller.user_id,
                    payment_reference.as_deref(),
                    total_cents,
                )
                .await?;
                let sold = bookings::sell_free_seats(tx, *event_id, booking_id, seat_ids.as_slice()).await?;
                if sold.len() < seat_ids.len() {
                    return Err(unclaimable(tx, *event_id, seat_ids.as_slice(), &sold).await);
                }
                bookings::record_seats(tx, booking_id, seat_ids.as_slice()).await?;
                let booking = bookings::find(&mut *tx, booking_id)
                    .await?
                    .ok_or_else(|| Error::internal("new booking vanished"))?;
                Ok(Reply::created(views::booking(&booking)))
            }

            (Command::CancelBooking { booking_id }, Seen::Booking(seen)) => {
                if !bookings::cancel(tx, *booking_id, seen.version).await? {
                    let now = bookings::find(&mut *tx, *booking_id).await?.ok_or(Error::NotFound("booking"))?;
                    if now.status != "CANCELLED" {
                        return Err(Error::ConcurrentModification);
                    }
                }
                let booking = bookings::find(&mut *tx, *booking_id).await?.ok_or(Error::NotFound("booking"))?;
                Ok(Reply::ok(views::booking(&booking)))
            }

            (Command::CreateInventory { name, nights, capacity, overbooking_allowance }, _) => {
                let id = Uuid::now_v7();
                let row =
                    inventories::insert(tx, id, name, *overbooking_allowance, *nights, *capacity, &caller.user_id)
                        .await?;
                let rows = inventories::nights(&mut *tx, id, *nights).await?;
                Ok(Reply::created(views::inventory(&row, &rows)))
            }

            (Command::PatchNights { inventory_id, nights, patch }, _) => {
                let inventory =
                    inventories::find(&mut *tx, *inventory_id).await?.ok_or(Error::NotFound("inventory"))?;
                if patch.capacity.is_some() || patch.overbooking_allowance.is_some() {
                    // Dead holds (past their expiry, not yet swept) must not block a lowering.
                    inventories::expire_stale_holds(tx, *inventory_id, *nights).await?;
                    for row in inventories::lock_nights(tx, *inventory_id, *nights).await? {
                        if let Some(sold) = patch.would_undersell(&row) {
                            return Err(Error::CapacityBelowSold { night: row.night, sold });
                        }
                    }
                }
                inventories::patch_nights(tx, *inventory_id, *nights, *patch, inventory.overbooking_allowance).await?;
                let rows = inventories::nights(&mut *tx, *inventory_id, *nights).await?;
                Ok(Reply::ok(views::nights(*inventory_id, &rows)))
            }

            (Command::CreateRoomHold { inventory_id, stay, quantity, ttl }, _) => {
                // Row locks on the stay's nights, in order: the counts read are the counts written.
                let mut nights = inventories::lock_nights(tx, *inventory_id, *stay).await?;
                if nights.is_empty() && inventories::find(&mut *tx, *inventory_id).await?.is_none() {
                    return Err(Error::NotFound("inventory"));
                }
                if first_short_night(*stay, &nights, *quantity).is_some()
                    && inventories::expire_stale_holds(tx, *inventory_id, *stay).await? > 0
                {
                    nights = inventories::lock_nights(tx, *inventory_id, *stay).await?;
                }
                if let Some(short) = first_short_night(*stay, &nights, *quantity) {
                    return Err(short);
                }
                let hold_id = Uuid::now_v7();
                let (taken, expires_at, created_at) = inventories::create_hold(
                    tx,
                    hold_id,
                    *inventory_id,
                    &caller.user_id,
                    ttl.seconds(),
                    *stay,
                    *quantity,
                )
                .await?;
                if taken != stay.count() {
                    return Err(Error::internal("room hold took fewer nights than it had locked"));
                }
                let target = Target::Rooms {
                    inventory_id: *inventory_id,
                    check_in: stay.first(),
                    check_out: stay.end(),
                    quantity: *quantity,
                };
                let hold = holds::HoldRow::created(hold_id, &caller.user_id, expires_at, created_at, target);
                Ok(Reply::created(views::hold(&hold)))
            }

            (Command::CreateResource { name, rules }, _) => {
                let row = resources::insert(tx, Uuid::now_v7(), name, rules, &caller.user_id).await?;
                Ok(Reply::created(views::resource(&row)))
            }

            (Command::CreateSlotHold { resource_id, start, end, ttl }, Seen::Slot { blocked }) => {
                if let Some(conflict) = resources::clear_for_claim(tx, *resource_id, blocked, None).await? {
                    return Err(Error::SlotUnavailable { conflict: Some(conflict) });
                }
                let hold_id = Uuid::now_v7();
                let (expires_at, created_at) = resources::create_hold(
                    tx,
                    hold_id,
                    *resource_id,
                    &caller.user_id,
                    ttl.seconds(),
                    (*start, *end),
                    blocked,
                )
                .await?;
                let target = Target::Slot { resource_id: *resource_id, start: *start, end: *end };
                let hold = holds::HoldRow::created(hold_id, &caller.user_id, expires_at, created_at, target);
                Ok(Reply::created(views::hold(&hold)))
            }

            (Command::RescheduleBooking { booking_id, start, end }, Seen::Reschedule { booking, blocked }) => {
                let Target::Slot { resource_id, .. } = booking.target else {
                    return Err(Error::internal("reschedule planned for a booking without a slot"));
                };
                if !bookings::touch(tx, *booking_id, booking.version).await? {
                    let now = bookings::find(&mut *tx, *booking_id).await?.ok_or(Error::NotFound("booking"))?;
                    return Err(match now.status.as_str() {
                        "CONFIRMED" => Error::ConcurrentModification,
                        status => Error::BookingNotActive { status: status.to_owned() },
                    });
                }
                if let Some(conflict) =
                    resources::clear_for_claim(tx, resource_id, blocked, Some(booking.hold_id)).await?
                {
                    return Err(Error::SlotUnavailable { conflict: Some(conflict) });
                }
                if !resources::move_claim(tx, booking.hold_id, (*start, *end), blocked).await? {
                    return Err(Error::ConcurrentModification);
                }
                let moved = bookings::find(&mut *tx, *booking_id).await?.ok_or(Error::NotFound("booking"))?;
                Ok(Reply::ok(views::booking(&moved)))
            }

            (command, _) => Err(Error::internal(format!("{} planned without what it acts on", command.name()))),
        }
    }
}

/// A hold the caller may see (their own; any for admins), or 404: others' holds do not exist for them.
pub async fn visible_hold(state: &AppState, caller: &Caller, hold_id: Uuid) -> Result<holds::HoldRow, Error> {
    holds::find(&state.db, hold_id).await?.filter(|h| caller.may_access(&h.user_id)).ok_or(Error::NotFound("hold"))
}

/// A booking the caller may see, or 404 (as [`visible_hold`]).
pub async fn visible_booking(
    state: &AppState,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<bookings::BookingRow, Error> {
    bookings::find(&state.db, booking_id)
        .await?
        .filter(|b| caller.may_access(&b.user_id))
        .ok_or(Error::NotFound("booking"))
}

/// A requested slot against the resource's rules and the booking horizon, now.
fn check_slot(state: &AppState, rules: &SlotRules, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), Error> {
    let now = Utc::now();
    rules.check(start, end, now)?;
    let days = state.config.resource_booking_horizon_days;
    if start > now + chrono::Duration::days(days) {
        return Err(SlotRefusal::BeyondHorizon { days }.into());
    }
    Ok(())
}

/// Refuses an owner's cancellation (or move) of a slot inside the resource's cancellation
/// window; admins may override.
fn check_cancellation_window(rules: &SlotRules, caller: &Caller, start: DateTime<Utc>) -> Result<(), Error> {
    if caller.admin || rules.may_cancel(start, Utc::now()) {
        return Ok(());
    }
    Err(Error::OutsideCancellationWindow { deadline: start - chrono::Duration::minutes(rules.cancellation_window) })
}

/// Why some requested seats could not be claimed: the event has started (422), unknown seats in
/// this event (422), or taken (409).
async fn unclaimable(tx: &mut PgConnection, event_id: Uuid, requested: &[Uuid], claimed: &[Uuid]) -> Error {
    match events::started_at(&mut *tx, event_id).await {
        Ok(Some(starts_at)) => return Error::EventStarted { starts_at },
        Ok(None) => {}
        Err(err) => return err.into(),
    }
    match events::existing_seats(tx, event_id, requested).await {
        Ok(existing) if existing.len() < requested.len() => {
            if existing.is_empty() && matches!(events::find_event(&mut *tx, event_id).await, Ok(None)) {
                return Error::NotFound("event");
            }
            Error::UnknownSeats { seat_ids: missing(requested, &existing) }
        }
        Ok(_) => Error::SeatUnavailable { seat_ids: missing(requested, claimed) },
        Err(err) => err.into(),
    }
}

/// Why a guarded update of a hold touched nothing, from a fresh read.
async fn why_hold_refused(tx: &mut PgConnection, hold_id: Uuid, seen_version: i64, max_lifetime: Option<i64>) -> Error {
    let hold = match holds::find(&mut *tx, hold_id).await {
        Ok(Some(hold)) => hold,
        Ok(None) => return Error::NotFound("hold"),
        Err(err) => return err.into(),
    };
    match hold.effective_status() {
        "EXPIRED" => Error::HoldExpired,
        "HELD" if hold.version == seen_version => match max_lifetime {
            Some(secs) => {
                Error::HoldLifetimeExceeded { latest_expiry: hold.created_at + chrono::Duration::seconds(secs) }
            }
            None => Error::ConcurrentModification,
        },
        "HELD" => Error::ConcurrentModification,
        status => Error::HoldNotActive { status: status.to_owned() },
    }
}
