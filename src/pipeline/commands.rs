//! The state-changing commands. Each has a read-only [`Command::plan`] (what it acts on, at
//! which version, and which lock resources that means) and a [`Command::apply`] that writes
//! inside the pipeline's transaction, every write guarded by its own predicate.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Reply, Step, views};
use crate::api::error::ApiError;
use crate::db::{bookings, events, holds};
use crate::domain::{NewEvent, SeatIds, Ttl};
use crate::idempotency::SeatProbe;
use crate::state::AppState;

/// The answer a seat-claiming command gets when its seats are already taken (the claim fills
/// in `seat_ids`). Built once: it is the same for every request.
static SEAT_UNAVAILABLE: LazyLock<Value> = LazyLock::new(|| ApiError::SeatUnavailable { seat_ids: Vec::new() }.body());

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub admin: bool,
}

impl Caller {
    /// Owners see their own holds and bookings; admins see all. Anyone else gets 404.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.user_id == owner
    }
}

#[derive(Debug)]
pub enum Command {
    CreateEvent { event: NewEvent },
    CreateHold { event_id: Uuid, seat_ids: SeatIds, ttl: Ttl },
    ExtendHold { hold_id: Uuid, ttl: Ttl },
    ConfirmHold { hold_id: Uuid, payment_reference: Option<String> },
    ReleaseHold { hold_id: Uuid },
    BookSeats { event_id: Uuid, seat_ids: SeatIds, payment_reference: Option<String> },
    CancelBooking { booking_id: Uuid },
}

/// What a command read before locking, and the lock resources that follow from it.
pub struct Plan {
    pub resources: Vec<String>,
    seen: Seen,
}

enum Seen {
    Nothing,
    Hold(holds::HoldRow),
    Booking(bookings::BookingRow),
}

fn seat_resources(seat_ids: &[Uuid]) -> Vec<String> {
    seat_ids.iter().map(|id| format!("seat:{id}")).collect()
}

fn missing(requested: &[Uuid], got: &[Uuid]) -> Vec<Uuid> {
    let got: BTreeSet<&Uuid> = got.iter().collect();
    requested.iter().filter(|id| !got.contains(id)).copied().collect()
}

/// Maps an insert's foreign-key violation on `constraint` to a 404 for `what`.
fn fk_not_found(err: sqlx::Error, constraint: &str, what: &'static str) -> ApiError {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some(constraint) => ApiError::NotFound(what),
        _ => err.into(),
    }
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
        }
    }

    pub(super) fn count_success(&self) {
        let counter = |name: &'static str| metrics::counter!(name).increment(1);
        match self {
            Command::CreateEvent { .. } => counter("holdfast_events_created_total"),
            Command::CreateHold { .. } => counter("holdfast_holds_created_total"),
            Command::ExtendHold { .. } => counter("holdfast_holds_extended_total"),
            Command::ConfirmHold { .. } => {
                counter("holdfast_holds_confirmed_total");
                counter("holdfast_bookings_created_total");
            }
            Command::ReleaseHold { .. } => counter("holdfast_holds_released_total"),
            Command::BookSeats { .. } => counter("holdfast_bookings_created_total"),
            Command::CancelBooking { .. } => counter("holdfast_bookings_cancelled_total"),
        }
    }

    /// For commands that claim free seats: the probe that lets the idempotency claim settle
    /// the request at once when the seats are already taken.
    pub(super) fn seat_probe<'a>(&'a self, wanted: &'a (dyn Fn() -> bool + Send + Sync)) -> Option<SeatProbe<'a>> {
        match self {
            Command::CreateHold { event_id, seat_ids, .. } | Command::BookSeats { event_id, seat_ids, .. } => {
                Some(SeatProbe {
                    event_id: *event_id,
                    seat_ids: seat_ids.as_slice(),
                    status: 409,
                    body: &SEAT_UNAVAILABLE,
                    wanted,
                })
            }
            _ => None,
        }
    }

    /// The seats a seat-claiming command asks for (empty for the others).
    pub(super) fn requested_seats(&self) -> &[Uuid] {
        match self {
            Command::CreateHold { seat_ids, .. } | Command::BookSeats { seat_ids, .. } => seat_ids.as_slice(),
            _ => &[],
        }
    }

    /// When the lock is contended: the seats this command would claim that are already taken
    /// for good, if any (then waiting for the lock is pointless). Empty for commands that act
    /// on a hold or booking of their own, whose contention is a concurrent call on the same one.
    pub(super) async fn taken_seats(&self, state: &AppState) -> Result<Vec<Uuid>, ApiError> {
        match self {
            Command::CreateHold { event_id, seat_ids, .. } | Command::BookSeats { event_id, seat_ids, .. } => {
                Ok(events::taken_seats(&state.db, *event_id, seat_ids.as_slice()).await?)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Reads (autocommit, no lock) what the command will act on.
    pub(super) async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, ApiError> {
        let write = |resources, seen| Ok(Step::Write(Plan { resources, seen }));
        match self {
            Command::CreateEvent { .. } => write(Vec::new(), Seen::Nothing),
            Command::CreateHold { seat_ids, .. } | Command::BookSeats { seat_ids, .. } => {
                write(seat_resources(seat_ids.as_slice()), Seen::Nothing)
            }
            Command::ExtendHold { hold_id, .. }
            | Command::ConfirmHold { hold_id, .. }
            | Command::ReleaseHold { hold_id } => {
                let hold = holds::find(&state.db, *hold_id)
                    .await?
                    .filter(|h| caller.may_access(&h.user_id))
                    .ok_or(ApiError::NotFound("hold"))?;
                match (self, hold.effective_status()) {
                    (_, "HELD") => write(seat_resources(&hold.seat_ids), Seen::Hold(hold)),
                    // Releasing what is already gone is a harmless repeat.
                    (Command::ReleaseHold { .. }, "RELEASED" | "EXPIRED") => {
                        Ok(Step::Done(Reply::new(StatusCode::NO_CONTENT, Value::Null)))
                    }
                    (_, "EXPIRED") => Err(ApiError::HoldExpired),
                    (_, status) => Err(ApiError::HoldNotActive { status: status.to_owned() }),
                }
            }
            Command::CancelBooking { booking_id } => {
                let booking = bookings::find(&state.db, *booking_id)
                    .await?
                    .filter(|b| caller.may_access(&b.user_id))
                    .ok_or(ApiError::NotFound("booking"))?;
                if booking.status == "CANCELLED" {
                    return Ok(Step::Done(Reply::new(StatusCode::OK, views::booking(&booking))));
                }
                write(seat_resources(&booking.seat_ids), Seen::Booking(booking))
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
    ) -> Result<Reply, ApiError> {
        match (self, plan.seen) {
            (Command::CreateEvent { event }, _) => {
                let id = Uuid::now_v7();
                let row = events::insert_event(tx, id, event, &caller.user_id).await?;
                let n = event.seats.len() as i64;
                let counts = events::SeatCounts { total: n, available: n, held: 0, booked: 0 };
                Ok(Reply::new(StatusCode::CREATED, views::event(&row, &counts)))
            }

            (Command::CreateHold { event_id, seat_ids, ttl }, _) => {
                let hold_id = Uuid::now_v7();
                let created =
                    holds::create(tx, hold_id, *event_id, &caller.user_id, ttl.seconds(), seat_ids.as_slice())
                        .await
                        .map_err(|e| fk_not_found(e, "holds_event_id_fkey", "event"))?;
                if created.claimed.len() < seat_ids.len() {
                    return Err(unclaimable(tx, *event_id, seat_ids.as_slice(), &created.claimed).await);
                }
                let hold = holds::HoldRow {
                    id: hold_id,
                    event_id: *event_id,
                    user_id: caller.user_id.clone(),
                    status: "HELD".into(),
                    expires_at: created.expires_at,
                    created_at: created.created_at,
                    version: 0,
                    expired: false,
                    seat_ids: created.claimed,
                    total_cents: created.total_cents,
                };
                Ok(Reply::new(StatusCode::CREATED, views::hold(&hold)))
            }

            (Command::ExtendHold { hold_id, ttl }, Seen::Hold(seen)) => {
                let max_life = state.config.hold_max_lifetime_seconds;
                match holds::extend(tx, *hold_id, seen.version, ttl.seconds(), max_life).await? {
                    Some(_) => {
                        let hold = holds::find(&mut *tx, *hold_id).await?.ok_or(ApiError::NotFound("hold"))?;
                        Ok(Reply::new(StatusCode::OK, views::hold(&hold)))
                    }
                    None => Err(why_hold_refused(tx, *hold_id, seen.version, Some(max_life)).await),
                }
            }

            (Command::ConfirmHold { hold_id, payment_reference }, Seen::Hold(seen)) => {
                let booking_id = Uuid::now_v7();
                let confirmed = bookings::confirm_hold(
                    tx,
                    *hold_id,
                    seen.version,
                    booking_id,
                    seen.event_id,
                    &seen.user_id,
                    payment_reference.as_deref(),
                    seen.total_cents,
                    &seen.seat_ids,
                )
                .await?;
                if !confirmed.moved {
                    return Err(why_hold_refused(tx, *hold_id, seen.version, None).await);
                }
                if confirmed.sold.len() < seen.seat_ids.len() {
                    // Cannot happen while the hold row said HELD and unexpired; refuse rather than sell part.
                    return Err(ApiError::SeatUnavailable { seat_ids: missing(&seen.seat_ids, &confirmed.sold) });
                }
                let booking = bookings::BookingRow {
                    id: booking_id,
                    event_id: seen.event_id,
                    hold_id: *hold_id,
                    user_id: seen.user_id.clone(),
                    status: "CONFIRMED".into(),
                    payment_reference: payment_reference.clone(),
                    total_cents: seen.total_cents,
                    created_at: confirmed.created_at.ok_or_else(|| ApiError::internal("booking has no created_at"))?,
                    cancelled_at: None,
                    version: 0,
                    seat_ids: confirmed.sold,
                };
                Ok(Reply::new(StatusCode::CREATED, views::booking(&booking)))
            }

            (Command::ReleaseHold { hold_id }, Seen::Hold(seen)) => {
                if !holds::transition(tx, *hold_id, seen.version, "RELEASED").await? {
                    return match why_hold_refused(tx, *hold_id, seen.version, None).await {
                        // Gone meanwhile (released by a concurrent call, or expired): same result.
                        ApiError::HoldExpired => Ok(Reply::new(StatusCode::NO_CONTENT, Value::Null)),
                        ApiError::HoldNotActive { status } if status == "RELEASED" || status == "EXPIRED" => {
                            Ok(Reply::new(StatusCode::NO_CONTENT, Value::Null))
                        }
                        err => Err(err),
                    };
                }
                holds::free_seats(tx, &[*hold_id]).await?;
                Ok(Reply::new(StatusCode::NO_CONTENT, Value::Null))
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
                    return Err(ApiError::SeatUnavailable { seat_ids: missing(seat_ids.as_slice(), &sold) });
                }
                bookings::record_seats(tx, booking_id, seat_ids.as_slice()).await?;
                let booking = bookings::find(&mut *tx, booking_id)
                    .await?
                    .ok_or_else(|| ApiError::internal("new booking vanished"))?;
                Ok(Reply::new(StatusCode::CREATED, views::booking(&booking)))
            }

            (Command::CancelBooking { booking_id }, Seen::Booking(seen)) => {
                if !bookings::cancel(tx, *booking_id, seen.version).await? {
                    let now = bookings::find(&mut *tx, *booking_id).await?.ok_or(ApiError::NotFound("booking"))?;
                    if now.status != "CANCELLED" {
                        return Err(ApiError::ConcurrentModification);
                    }
                }
                let booking = bookings::find(&mut *tx, *booking_id).await?.ok_or(ApiError::NotFound("booking"))?;
                Ok(Reply::new(StatusCode::OK, views::booking(&booking)))
            }

            (command, _) => Err(ApiError::internal(format!("{} planned without what it acts on", command.name()))),
        }
    }
}

/// Why some requested seats could not be claimed: unknown in this event (422), or taken (409).
async fn unclaimable(tx: &mut PgConnection, event_id: Uuid, requested: &[Uuid], claimed: &[Uuid]) -> ApiError {
    match events::existing_seats(tx, event_id, requested).await {
        Ok(existing) if existing.len() < requested.len() => {
            if existing.is_empty() && matches!(events::find_event(&mut *tx, event_id).await, Ok(None)) {
                return ApiError::NotFound("event");
            }
            ApiError::UnknownSeats { seat_ids: missing(requested, &existing) }
        }
        Ok(_) => ApiError::SeatUnavailable { seat_ids: missing(requested, claimed) },
        Err(err) => err.into(),
    }
}

/// Why a guarded update of a hold touched nothing, from a fresh read.
async fn why_hold_refused(
    tx: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    max_lifetime: Option<i64>,
) -> ApiError {
    let hold = match holds::find(&mut *tx, hold_id).await {
        Ok(Some(hold)) => hold,
        Ok(None) => return ApiError::NotFound("hold"),
        Err(err) => return err.into(),
    };
    match hold.effective_status() {
        "EXPIRED" => ApiError::HoldExpired,
        "HELD" if hold.version == seen_version => match max_lifetime {
            Some(secs) => {
                ApiError::HoldLifetimeExceeded { latest_expiry: hold.created_at + chrono::Duration::seconds(secs) }
            }
            None => ApiError::ConcurrentModification,
        },
        "HELD" => ApiError::ConcurrentModification,
        status => ApiError::HoldNotActive { status: status.to_owned() },
    }
}
