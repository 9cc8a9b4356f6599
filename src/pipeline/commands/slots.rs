//! Time slots: resources with their rules, holds on a slot, and moving a booked slot.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Range, Seen, hold_created, planned_without, write};
use crate::db::holds::{self, Target};
use crate::db::{bookings, resources};
use crate::domain::slots::SlotRefusal;
use crate::domain::{BookingStatus, Caller, SlotRules, Ttl, ValidationError};
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::state::AppState;

#[derive(Debug)]
pub struct CreateResource {
    pub name: String,
    pub rules: SlotRules,
}

impl Execute for CreateResource {
    const NAME: &'static str = "create_resource";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let row = resources::insert(tx, Uuid::now_v7(), &self.name, &self.rules, &caller.user_id).await?;
        Ok(Reply::created(views::resource(&row)))
    }
}

#[derive(Debug)]
pub struct CreateSlotHold {
    /// The id the hold will have, chosen before the transaction (see [`Execute::logged_hold`]).
    pub hold_id: Uuid,
    pub resource_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub ttl: Ttl,
}

impl Execute for CreateSlotHold {
    const NAME: &'static str = "create_slot_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_created_total"];
    const CREATES_LIVE_HOLD: bool = true;

    fn logged_hold(&self) -> Option<Uuid> {
        Some(self.hold_id)
    }

    /// The slot taken is announced in the hold's row. Expiring dead overlapping holds first
    /// (`resources::clear_for_claim`) updates their claims, which the trigger still announces.
    fn logged_scope(&self, _plan: &Plan) -> Option<Uuid> {
        Some(self.resource_id)
    }

    async fn plan(&self, state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        let rules = load_rules(state, self.resource_id).await?;
        check_slot(state, &rules, self.start, self.end)?;
        let blocked = rules.blocked(self.start, self.end);
        write(slot_resources(self.resource_id, &rules, blocked), Seen::Slot { blocked })
    }

    async fn why_give_up(&self, state: &AppState, plan: &Plan) -> Result<Option<Error>, Error> {
        let Seen::Slot { blocked } = plan.seen else { return Ok(None) };
        let live = resources::live_blocked(&state.db, self.resource_id, blocked.0, blocked.1).await?;
        Ok((!live.is_empty()).then_some(Error::SlotUnavailable { conflict: None }))
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        state: &AppState,
        caller: &Caller,
        plan: Plan,
    ) -> Result<Reply, Error> {
        let Seen::Slot { blocked } = plan.seen else { return Err(planned_without::<Self>()) };
        let Self { hold_id, resource_id, start, end, ttl } = *self;
        if let Some(conflict) = resources::clear_for_claim(tx, resource_id, blocked, None).await? {
            return Err(Error::SlotUnavailable { conflict: Some(conflict) });
        }
        let (expires_at, created_at) =
            resources::create_hold(tx, hold_id, resource_id, &caller.user_id, ttl.seconds(), (start, end), blocked)
                .await?;
        let target = Target::Slot { resource_id, start, end };
        let hold = holds::HoldRow::created(hold_id, &caller.user_id, expires_at, created_at, target);
        Ok(hold_created(state, hold))
    }
}

#[derive(Debug)]
pub struct RescheduleBooking {
    pub booking_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Execute for RescheduleBooking {
    const NAME: &'static str = "reschedule_booking";
    const COUNTERS: &'static [&'static str] = &["holdfast_bookings_rescheduled_total"];

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        let booking = super::visible_booking(&state.claims_db, caller, self.booking_id).await?;
        let Target::Slot { resource_id, start: old_start, end: old_end } = booking.target else {
            return Err(ValidationError::new("booking", "only slot bookings can be rescheduled").into());
        };
        if booking.status != BookingStatus::Confirmed {
            return Err(Error::BookingNotActive { status: booking.status });
        }
        let rules = load_rules(state, resource_id).await?;
        // Moving a booking gives up its slot: the same window as cancelling applies.
        check_cancellation_window(&rules, caller, old_start)?;
        check_slot(state, &rules, self.start, self.end)?;
        let blocked = rules.blocked(self.start, self.end);
        let mut keys = slot_resources(resource_id, &rules, rules.blocked(old_start, old_end));
        keys.extend(slot_resources(resource_id, &rules, blocked));
        write(keys, Seen::Reschedule { booking, blocked })
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, _: &Caller, plan: Plan) -> Result<Reply, Error> {
        let Seen::Reschedule { booking, blocked } = plan.seen else { return Err(planned_without::<Self>()) };
        let booking_id = self.booking_id;
        let Target::Slot { resource_id, .. } = booking.target else {
            return Err(Error::internal("reschedule planned for a booking without a slot"));
        };
        if !bookings::touch(tx, booking_id, booking.version).await? {
            let now = bookings::find(&mut *tx, booking_id).await?.ok_or(Error::NotFound("booking"))?;
            return Err(match now.status {
                BookingStatus::Confirmed => Error::ConcurrentModification,
                status => Error::BookingNotActive { status },
            });
        }
        if let Some(conflict) = resources::clear_for_claim(tx, resource_id, blocked, Some(booking.hold_id)).await? {
            return Err(Error::SlotUnavailable { conflict: Some(conflict) });
        }
        if !resources::move_claim(tx, booking.hold_id, (self.start, self.end), blocked).await? {
            return Err(Error::ConcurrentModification);
        }
        let moved = bookings::find(&mut *tx, booking_id).await?.ok_or(Error::NotFound("booking"))?;
        Ok(Reply::ok(views::booking(&moved)))
    }
}

/// A resource's rules, from this instance's memory when it has read them before (see
/// [`resources::RulesCache`]); an unknown resource is 404 and is not kept.
pub(super) async fn load_rules(state: &AppState, resource_id: Uuid) -> Result<Arc<SlotRules>, Error> {
    if let Some(rules) = state.slot_rules.get(resource_id) {
        return Ok(rules);
    }
    let resource = resources::find(&state.db, resource_id).await?.ok_or(Error::NotFound("resource"))?;
    let rules = Arc::new(resource.rules().map_err(Error::internal)?);
    state.slot_rules.insert(resource_id, Arc::clone(&rules));
    Ok(rules)
}

/// The lock cells a buffered slot range touches (see [`SlotRules::lock_cells`]).
pub(super) fn slot_resources(resource_id: Uuid, rules: &SlotRules, blocked: Range) -> Vec<String> {
    rules.lock_cells(blocked).into_iter().map(|cell| format!("slot:{resource_id}:{cell}")).collect()
}

/// A requested slot against the resource's rules and the booking horizon, now.
fn check_slot(state: &AppState, rules: &SlotRules, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), Error> {
    let now = Utc::now();
    rules.check(start, end, now)?;
    let days = state.config.holds.resource_booking_horizon_days;
    if start > now + chrono::Duration::days(days) {
        return Err(SlotRefusal::BeyondHorizon { days }.into());
    }
    Ok(())
}

/// Refuses an owner's cancellation (or move) of a slot inside the resource's cancellation
/// window; admins may override.
pub(super) fn check_cancellation_window(rules: &SlotRules, caller: &Caller, start: DateTime<Utc>) -> Result<(), Error> {
    if caller.admin || rules.may_cancel(start, Utc::now()) {
        return Ok(());
    }
    Err(Error::OutsideCancellationWindow { deadline: start - chrono::Duration::minutes(rules.cancellation_window) })
}
