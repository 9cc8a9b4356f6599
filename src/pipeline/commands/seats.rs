//! Events and their seats: creating an event, and why a seat claim fell short.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, missing, write};
use crate::db::events;
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
        let n = self.event.seats.len() as i64;
        let counts = events::SeatCounts { total: n, available: n, held: 0, booked: 0 };
        Ok(Reply::created(views::event(&row, &counts)))
    }
}

/// When the lock on seats is contended: the seats already taken for good, if any.
pub(super) async fn taken(state: &AppState, event_id: Uuid, seat_ids: &[Uuid]) -> Result<Option<Error>, Error> {
    let taken = events::taken_seats(&state.db, event_id, seat_ids).await?;
    Ok((!taken.is_empty()).then_some(Error::SeatUnavailable { seat_ids: taken }))
}

/// Why some requested seats could not be claimed: the event has started (422), unknown seats in
/// this event (422), or taken (409).
pub(super) async fn unclaimable(tx: &mut PgConnection, event_id: Uuid, requested: &[Uuid], claimed: &[Uuid]) -> Error {
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
