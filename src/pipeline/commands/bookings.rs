//! Bookings: seats bought at once (without a hold of the caller's), and cancelling.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, planned_without, seat_resources, seats, slots, target_resources, write};
use crate::db::holds::Target;
use crate::db::{bookings, events, holds, queue};
use crate::domain::{BookingStatus, Caller, HoldStatus, SeatIds};
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::state::AppState;

#[derive(Debug)]
pub struct BookSeats {
    pub event_id: Uuid,
    pub seat_ids: SeatIds,
    pub payment_reference: Option<String>,
    /// As `CreateHold::admission`.
    pub admission: Option<Uuid>,
}

impl Execute for BookSeats {
    const NAME: &'static str = "book_seats";
    const COUNTERS: &'static [&'static str] = &["holdfast_bookings_created_total"];

    fn seat_claim(&self) -> Option<(Uuid, &[Uuid])> {
        Some((self.event_id, self.seat_ids.as_slice()))
    }

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(seat_resources(self.seat_ids.as_slice()), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let (event_id, seat_ids) = (self.event_id, self.seat_ids.as_slice());
        let rules = events::sale_rules(tx, event_id, &caller.user_id, self.admission).await?.unwrap_or_default();
        if let (Some(on_sale_at), false) = (rules.on_sale_ahead, caller.admin) {
            return Err(Error::NotOnSale { on_sale_at });
        }
        // (An unknown event has no rules and reads as admitted: the price lookup answers 404.)
        if !caller.admin && rules.queue_enabled && !rules.admitted {
            return Err(Error::NotAdmitted);
        }
        let (found, total_cents) = bookings::price_of(tx, event_id, seat_ids).await?;
        if (found as usize) < seat_ids.len() {
            return Err(seats::unclaimable(tx, caller, event_id, seat_ids, &[], self.admission).await);
        }
        // A booking always comes from a hold; here the hold is born CONFIRMED.
        let hold_id = Uuid::now_v7();
        holds::insert(tx, hold_id, event_id, &caller.user_id, HoldStatus::Confirmed, 0, seat_ids).await?;
        let booking_id = Uuid::now_v7();
        let payment_reference = self.payment_reference.as_deref();
        bookings::insert(tx, booking_id, event_id, hold_id, &caller.user_id, payment_reference, total_cents).await?;
        let sold = bookings::sell_free_seats(tx, event_id, booking_id, seat_ids).await?;
        if sold.len() < seat_ids.len() {
            return Err(seats::unclaimable(tx, caller, event_id, seat_ids, &sold, self.admission).await);
        }
        bookings::record_seats(tx, booking_id, seat_ids).await?;
        if let Some(limit) = rules.buyer_limit {
            seats::check_buyer_limit(tx, caller, event_id, limit, seat_ids.len()).await?;
        }
        // A confirmed booking ends the buyer's admission.
        if rules.queue_enabled {
            queue::mark_booked(tx, event_id, &caller.user_id).await?;
        }
        let booking =
            bookings::find(&mut *tx, booking_id).await?.ok_or_else(|| Error::internal("new booking vanished"))?;
        Ok(Reply::created(views::booking(&booking)))
    }
}

#[derive(Debug)]
pub struct CancelBooking {
    pub booking_id: Uuid,
}

impl Execute for CancelBooking {
    const NAME: &'static str = "cancel_booking";
    const COUNTERS: &'static [&'static str] = &["holdfast_bookings_cancelled_total"];

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        let booking = super::visible_booking(&state.claims_db, caller, self.booking_id).await?;
        if booking.status == BookingStatus::Cancelled {
            return Ok(Step::Done(Reply::ok(views::booking(&booking))));
        }
        if let Target::Slot { resource_id, start, .. } = &booking.target {
            slots::check_cancellation_window(&*slots::load_rules(state, *resource_id).await?, caller, *start)?;
        }
        write(target_resources(state, &booking.target).await?, Seen::Booking(booking))
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, _: &Caller, plan: Plan) -> Result<Reply, Error> {
        let Seen::Booking(seen) = plan.seen else { return Err(planned_without::<Self>()) };
        let booking_id = self.booking_id;
        if !bookings::cancel(tx, booking_id, seen.version).await? {
            let now = bookings::find(&mut *tx, booking_id).await?.ok_or(Error::NotFound("booking"))?;
            if now.status != BookingStatus::Cancelled {
                return Err(Error::ConcurrentModification);
            }
        }
        let booking = bookings::find(&mut *tx, booking_id).await?.ok_or(Error::NotFound("booking"))?;
        Ok(Reply::ok(views::booking(&booking)))
    }
}
