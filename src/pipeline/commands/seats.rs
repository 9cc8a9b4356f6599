//! Events and their seats: creating an event, and why a seat claim fell short.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, missing, write};
use crate::db::{events, queue};
use crate::domain::{Caller, NewEvent};
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::state::AppState;

#[derive(Debug)]
pub struct CreateEvent {
    pub event: NewEvent,
}

impl Execute for CreateEvent {
    const NAME: &'static str = "create_event";
    const COUNTERS: &'static [&'static str] = &["holdfast_events_created_total"];

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let id = Uuid::now_v7();
        let row = events::insert_event(tx, id, &self.event, &caller.user_id).await?;
        if row.queue_enabled {
            queue::ensure_state(tx, id, &crate::queue::new_secret()).await?;
        }
        let n = self.event.seats.len() as i64;
        let counts = events::SeatCounts { total: n, available: n, held: 0, booked: 0 };
        Ok(Reply::created(views::event(&row, &counts)))
    }
}

/// Changes an event's sale settings (admin). One guarded statement; no lock: the claims read the
/// settings in their own statements, so a claim sees either the old or the new ones.
#[derive(Debug)]
pub struct PatchEvent {
    pub event_id: Uuid,
    pub change: events::SaleChange,
}

impl Execute for PatchEvent {
    const NAME: &'static str = "patch_event";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, _: &Caller, _: Plan) -> Result<Reply, Error> {
        let row = events::update_sale(tx, self.event_id, self.change).await?.ok_or(Error::NotFound("event"))?;
        if row.queue_enabled {
            queue::ensure_state(tx, row.id, &crate::queue::new_secret()).await?;
        }
        let counts = events::seat_counts(&mut *tx, self.event_id).await?;
        Ok(Reply::ok(views::event(&row, &counts)))
    }
}

/// When the lock on seats is contended: the seats already taken for good, if any.
pub(super) async fn taken(state: &AppState, event_id: Uuid, seat_ids: &[Uuid]) -> Result<Option<Error>, Error> {
    let taken = events::taken_seats(&state.db, event_id, seat_ids).await?;
    Ok((!taken.is_empty()).then_some(Error::SeatUnavailable { seat_ids: taken }))
}

/// Why some requested seats could not be claimed: the event has started (422), unknown seats in
/// this event (422), or taken (409).
/// Refuses a claim that took the buyer past the event's `max_seats_per_buyer` (live held and
/// booked seats, this claim's included; see `events::buyer_seats`). Runs after the claim, inside
/// its transaction: the refusal rolls it back.
pub(super) async fn check_buyer_limit(
    tx: &mut PgConnection,
    caller: &Caller,
    event_id: Uuid,
    limit: i32,
    requested: usize,
) -> Result<(), Error> {
    let owned = events::buyer_seats(tx, event_id, &caller.user_id).await?;
    if owned > i64::from(limit) {
        return Err(Error::BuyerLimitReached { limit, current: owned - requested as i64 });
    }
    Ok(())
}

pub(super) async fn unclaimable(
    tx: &mut PgConnection,
    caller: &Caller,
    event_id: Uuid,
    requested: &[Uuid],
    claimed: &[Uuid],
    admission: Option<Uuid>,
) -> Error {
    match events::started_at(&mut *tx, event_id).await {
        Ok(Some(starts_at)) => return Error::EventStarted { starts_at },
        Ok(None) => {}
        Err(err) => return err.into(),
    }
    if !caller.admin {
        match events::on_sale_ahead(&mut *tx, event_id).await {
            Ok(Some(on_sale_at)) => return Error::NotOnSale { on_sale_at },
            Ok(None) => {}
            Err(err) => return err.into(),
        }
        match events::sale_rules(&mut *tx, event_id, &caller.user_id, admission).await {
            Ok(Some(rules)) if rules.queue_enabled && !rules.admitted => return Error::NotAdmitted,
            Ok(_) => {}
            Err(err) => return err.into(),
        }
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
