//! Holds on seats: take, extend, confirm into a booking, release. (Holds on nights and slots
//! are taken in `rooms` and `slots`; extending, confirming and releasing are the same for all.)

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    Execute, Plan, Seen, hold_created, missing, planned_without, seat_resources, seats, target_resources, write,
};
use crate::db::holds::Target;
use crate::db::{bookings, events, holds};
use crate::domain::best_available::{self, Choice};
use crate::domain::{BookingStatus, Caller, HoldStatus, SeatIds, Ttl};
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::seat_index::Marked;
use crate::state::AppState;

#[derive(Debug)]
pub struct CreateHold {
    /// The id the hold will have, chosen before the transaction (see [`Execute::logged_hold`]).
    pub hold_id: Uuid,
    pub event_id: Uuid,
    pub seat_ids: SeatIds,
    pub ttl: Ttl,
    /// The waiting-room ticket whose admission the request carries (`crate::queue::admission`).
    pub admission: Option<Uuid>,
}

impl Execute for CreateHold {
    const NAME: &'static str = "create_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_created_total"];
    const CREATES_LIVE_HOLD: bool = true;

    fn seat_claim(&self) -> Option<(Uuid, &[Uuid])> {
        Some((self.event_id, self.seat_ids.as_slice()))
    }

    fn logged_hold(&self) -> Option<Uuid> {
        Some(self.hold_id)
    }

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(seat_resources(self.seat_ids.as_slice()), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let (event_id, seat_ids, hold_id) = (self.event_id, self.seat_ids.as_slice(), self.hold_id);
        // An unknown event claims no seats: `unclaimable` then answers 404.
        let (ttl, admission) = (self.ttl.seconds(), self.admission);
        let created =
            holds::create(tx, hold_id, event_id, &caller.user_id, ttl, seat_ids, caller.admin, admission).await?;
        if created.claimed.len() < seat_ids.len() {
            return Err(seats::unclaimable(tx, caller, event_id, seat_ids, &created.claimed, admission).await);
        }
        held(tx, state, caller, event_id, hold_id, created).await
    }
}

/// The rest of a seat hold once all its seats are claimed: the per-buyer limit, then the answer.
async fn held(
    tx: &mut PgConnection,
    state: &AppState,
    caller: &Caller,
    event_id: Uuid,
    hold_id: Uuid,
    created: holds::CreatedHold,
) -> Result<Reply, Error> {
    if let Some(limit) = created.buyer_limit {
        seats::check_buyer_limit(tx, caller, event_id, limit, created.claimed.len()).await?;
    }
    let target = Target::Seats { event_id, seat_ids: created.claimed, total_cents: created.total_cents };
    let hold = holds::HoldRow::created(hold_id, &caller.user_id, created.expires_at, created.created_at, target);
    Ok(hold_created(state, hold))
}

/// What a best-available hold asks for.
#[derive(Debug, Clone)]
pub struct BestAvailable {
    pub quantity: usize,
    pub section: Option<String>,
    pub max_price_cents: Option<i64>,
    pub allow_split: bool,
}

/// How many free seats, from the front of the map, best-available looks at first.
const FRONT_WINDOW: i64 = 1000;

/// A hold on the best seats free now (see `domain::best_available`): the plan reads the section's
/// seats and chooses (no lock yet); the seats chosen are then locked and claimed like any hold's,
/// the claim's guard deciding a lost race (409 SEAT_UNAVAILABLE: ask again with a new key).
#[derive(Debug)]
pub struct CreateBestHold {
    /// As [`CreateHold::hold_id`].
    pub hold_id: Uuid,
    pub event_id: Uuid,
    pub want: BestAvailable,
    pub ttl: Ttl,
    /// As [`CreateHold::admission`].
    pub admission: Option<Uuid>,
}

impl Execute for CreateBestHold {
    const NAME: &'static str = "create_best_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_created_total"];
    const CREATES_LIVE_HOLD: bool = true;

    fn logged_hold(&self) -> Option<Uuid> {
        Some(self.hold_id)
    }

    async fn plan(&self, state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        let want = &self.want;
        let (section, price) = (want.section.as_deref(), want.max_price_cents);
        // From this instance's memory of the seat map (`crate::seat_index`): no read, and the
        // seats chosen are taken there at once, so this instance's requests choose apart.
        if let Some(seats) = state.seat_index.event(&state.db, &state.hub, self.event_id).await? {
            let window = FRONT_WINDOW as usize;
            match seats.choose(section, price, want.quantity, want.allow_split, window, &mut rand::rng()) {
                (Choice::Block(seats) | Choice::Split(seats), marked) => {
                    metrics::counter!("holdfast_best_available_choices_total", "from" => "memory").increment(1);
                    return chosen(seats, marked);
                }
                // Memory may be stale: only Postgres may say there is nothing.
                (Choice::Nothing { .. }, _) => {}
            }
        }
        // The front of the map first; all of it only when no block is there.
        let mut choice = Choice::Nothing { free: 0 };
        for window in [Some(FRONT_WINDOW), None] {
            let limit = window.unwrap_or(i64::MAX);
            let spots = events::free_spots(&state.db, self.event_id, section, price, limit).await?;
            if spots.is_empty() && events::find_event(&state.db, self.event_id).await?.is_none() {
                return Err(Error::NotFound("event"));
            }
            choice = best_available::choose(&spots, want.quantity, want.allow_split, &mut rand::rng());
            if !matches!(choice, Choice::Nothing { .. }) || (spots.len() as i64) < limit {
                break;
            }
        }
        match choice {
            Choice::Block(seats) | Choice::Split(seats) => {
                metrics::counter!("holdfast_best_available_choices_total", "from" => "postgres").increment(1);
                // Taken in memory too, as a choice made there is: else this instance's next
                // request may choose them again until their change arrives by the stream.
                let marked = state.seat_index.mark_taken(self.event_id, &seats);
                chosen(seats, marked)
            }
            Choice::Nothing { free } => Err(Error::NoSeatsAvailable { free: free as i64 }),
        }
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        state: &AppState,
        caller: &Caller,
        plan: Plan,
    ) -> Result<Reply, Error> {
        let Seen::Chosen(mut seat_ids) = plan.seen else { return Err(planned_without::<Self>()) };
        let (event_id, hold_id) = (self.event_id, self.hold_id);
        let ttl = self.ttl.seconds();
        // Another buyer may have taken the block between the plan and now. Once, the claim is
        // undone (a savepoint) and the choice made again: the new seats are not under our Redis
        // lock, but the claim's guard is what decides, as always.
        let mut retried = false;
        let created = loop {
            sqlx::raw_sql("savepoint best_available").execute(&mut *tx).await?;
            let created =
                holds::create(tx, hold_id, event_id, &caller.user_id, ttl, &seat_ids, caller.admin, self.admission)
                    .await?;
            if created.claimed.len() == seat_ids.len() {
                break created;
            }
            sqlx::raw_sql("rollback to savepoint best_available").execute(&mut *tx).await?;
            if retried {
                return Err(seats::unclaimable(tx, caller, event_id, &seat_ids, &[], self.admission).await);
            }
            retried = true;
            metrics::counter!("holdfast_best_available_rechosen_total").increment(1);
            let want = &self.want;
            let (section, price) = (want.section.as_deref(), want.max_price_cents);
            // Someone took (some of) the seats drawn: this instance's memory learns it, and
            // chooses again (no read); when memory has nothing left, Postgres is asked.
            state.seat_index.mark_taken(event_id, &seat_ids);
            // (The seats chosen again stay taken in memory should this transaction still not
            // commit: rare, and only until a refresh past `seat_index::MARK_KEEP`.)
            let remembered = state.seat_index.cached(event_id).map(|seats| {
                let window = FRONT_WINDOW as usize;
                seats.choose(section, price, want.quantity, want.allow_split, window, &mut rand::rng()).0
            });
            let choice = match remembered {
                Some(choice @ (Choice::Block(_) | Choice::Split(_))) => choice,
                _ => {
                    let spots = events::free_spots(&mut *tx, event_id, section, price, FRONT_WINDOW).await?;
                    let choice = best_available::choose(&spots, want.quantity, want.allow_split, &mut rand::rng());
                    if let Choice::Block(seats) | Choice::Split(seats) = &choice {
                        state.seat_index.mark_taken(event_id, seats);
                    }
                    choice
                }
            };
            match choice {
                Choice::Block(seats) | Choice::Split(seats) => seat_ids = seats,
                Choice::Nothing { .. } => {
                    return Err(seats::unclaimable(tx, caller, event_id, &seat_ids, &[], self.admission).await);
                }
            }
        };
        held(tx, state, caller, event_id, hold_id, created).await
    }
}

/// The plan of a best-available hold: the seats chosen, taken in memory until the request
/// commits them or gives them back.
fn chosen(seats: Vec<Uuid>, marked: Option<Marked>) -> Result<Step, Error> {
    Ok(Step::Write(Plan { resources: seat_resources(&seats), seen: Seen::Chosen(seats), marked }))
}

/// The plan of a command on an existing hold: the hold as seen, locked by what it covers, if
/// it is still HELD. A live hold this instance created or extended is taken from its memory,
/// not read (`db::holds::HoldsHere`); the command's guarded statement then finds whatever
/// another instance did to it since, and [`reread_remembered`] reads it under the lock.
async fn plan_on_hold(state: &AppState, caller: &Caller, hold_id: Uuid, releasing: bool) -> Result<Step, Error> {
    if let Some(hold) = state.holds_here.live(hold_id, |owner| caller.may_access(owner)) {
        metrics::counter!("holdfast_hold_plans_total", "from" => "memory").increment(1);
        return write(target_resources(state, &hold.target).await?, Seen::RememberedHold(hold));
    }
    metrics::counter!("holdfast_hold_plans_total", "from" => "read").increment(1);
    let hold = super::visible_hold(&state.claims_db, caller, hold_id).await?;
    match hold.effective_status() {
        HoldStatus::Held => write(target_resources(state, &hold.target).await?, Seen::Hold(hold)),
        // Releasing what is already gone is a harmless repeat.
        HoldStatus::Released | HoldStatus::Expired if releasing => Ok(Step::Done(Reply::no_content())),
        HoldStatus::Expired => Err(Error::HoldExpired),
        status => Err(Error::HoldNotActive { status }),
    }
}

/// The hold a command's plan saw, and whether it came from memory rather than a read.
fn seen_hold<T: Execute>(plan: Plan) -> Result<(holds::HoldRow, bool), Error> {
    match plan.seen {
        Seen::Hold(hold) => Ok((hold, false)),
        Seen::RememberedHold(hold) => Ok((hold, true)),
        _ => Err(planned_without::<T>()),
    }
}

/// A guarded statement on a hold planned from memory moved nothing (it wrote nothing either):
/// another instance may have extended the hold since (a new version), or ended it. The hold as
/// read now, under the lock, when it is still HELD at another version: the statement runs again
/// at that version, as a plan that had read it would have. None: the refusal stands, and
/// `why_hold_refused` says why.
async fn reread_remembered(
    tx: &mut PgConnection,
    state: &AppState,
    seen: &holds::HoldRow,
) -> Result<Option<holds::HoldRow>, Error> {
    state.holds_here.forget(seen.id);
    metrics::counter!("holdfast_hold_plans_reread_total").increment(1);
    let hold = holds::find(&mut *tx, seen.id).await?;
    Ok(hold.filter(|hold| hold.effective_status() == HoldStatus::Held && hold.version != seen.version))
}

#[derive(Debug)]
pub struct ExtendHold {
    pub hold_id: Uuid,
    pub ttl: Ttl,
}

impl Execute for ExtendHold {
    const NAME: &'static str = "extend_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_extended_total"];

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        plan_on_hold(state, caller, self.hold_id, false).await
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, _: &Caller, plan: Plan) -> Result<Reply, Error> {
        let (mut seen, mut remembered) = seen_hold::<Self>(plan)?;
        let hold_id = self.hold_id;
        let max_life = state.config.holds.max_lifetime_seconds;
        let seats = seen.seat_ids().len();
        let extended = loop {
            match holds::extend(tx, hold_id, seen.version, self.ttl.seconds(), max_life, seats).await? {
                holds::Extended::Refused if std::mem::take(&mut remembered) => {
                    match reread_remembered(tx, state, &seen).await? {
                        Some(hold) => seen = hold,
                        None => break holds::Extended::Refused,
                    }
                }
                extended => break extended,
            }
        };
        match extended {
            holds::Extended::To(expires_at) => {
                // The statement moved the very version seen, and whose the hold is and what it
                // covers never change: the hold as extended, without reading it back.
                let hold = holds::HoldRow {
                    status: HoldStatus::Held,
                    expires_at,
                    version: seen.version + 1,
                    expired: false,
                    ..seen
                };
                let reply = Reply::ok(views::hold(&hold));
                state.holds_here.remember(hold);
                Ok(reply)
            }
            holds::Extended::Refused => Err(why_hold_refused(tx, hold_id, seen.version, Some(max_life)).await),
            holds::Extended::LostSeats => {
                tracing::error!(%hold_id, "a live hold no longer owns every seat it was granted");
                Err(Error::ConcurrentModification)
            }
        }
    }
}

#[derive(Debug)]
pub struct ConfirmHold {
    pub hold_id: Uuid,
    pub payment_reference: Option<String>,
}

impl Execute for ConfirmHold {
    const NAME: &'static str = "confirm_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_confirmed_total", "holdfast_bookings_created_total"];

    fn logged_hold(&self) -> Option<Uuid> {
        Some(self.hold_id)
    }

    /// A room hold's confirm sells its nights in the statement that logs them.
    fn logged_scope(&self, plan: &Plan) -> Option<Uuid> {
        match &plan.seen {
            Seen::Hold(holds::HoldRow { target: Target::Rooms { inventory_id, .. }, .. })
            | Seen::RememberedHold(holds::HoldRow { target: Target::Rooms { inventory_id, .. }, .. }) => {
                Some(*inventory_id)
            }
            _ => None,
        }
    }

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        plan_on_hold(state, caller, self.hold_id, false).await
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, _: &Caller, plan: Plan) -> Result<Reply, Error> {
        let (mut seen, mut remembered) = seen_hold::<Self>(plan)?;
        let hold_id = self.hold_id;
        let booking_id = Uuid::now_v7();
        let payment_reference = self.payment_reference.as_deref();
        let confirmed = loop {
            let confirmed = bookings::confirm_hold(
                tx,
                hold_id,
                seen.version,
                booking_id,
                &seen.user_id,
                payment_reference,
                &seen.target,
                state.config.streams.compact_night_changes,
            )
            .await?;
            if confirmed.moved {
                break confirmed;
            }
            if std::mem::take(&mut remembered)
                && let Some(hold) = reread_remembered(tx, state, &seen).await?
            {
                seen = hold;
                continue;
            }
            return Err(why_hold_refused(tx, hold_id, seen.version, None).await);
        };
        state.holds_here.forget(hold_id);
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
            hold_id,
            user_id: seen.user_id.clone(),
            status: BookingStatus::Confirmed,
            payment_reference: self.payment_reference.clone(),
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
}

#[derive(Debug)]
pub struct ReleaseHold {
    pub hold_id: Uuid,
}

impl Execute for ReleaseHold {
    const NAME: &'static str = "release_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_released_total"];

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        plan_on_hold(state, caller, self.hold_id, true).await
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, _: &Caller, plan: Plan) -> Result<Reply, Error> {
        let (mut seen, mut remembered) = seen_hold::<Self>(plan)?;
        let hold_id = self.hold_id;
        state.holds_here.forget(hold_id);
        while !holds::transition(tx, hold_id, seen.version, HoldStatus::Released).await? {
            if std::mem::take(&mut remembered)
                && let Some(hold) = reread_remembered(tx, state, &seen).await?
            {
                seen = hold;
                continue;
            }
            return match why_hold_refused(tx, hold_id, seen.version, None).await {
                // Gone meanwhile (released by a concurrent call, or expired): same result.
                Error::HoldExpired => Ok(Reply::no_content()),
                Error::HoldNotActive { status: HoldStatus::Released | HoldStatus::Expired } => Ok(Reply::no_content()),
                err => Err(err),
            };
        }
        holds::end_claims(tx, &[hold_id], holds::Claims::of(&seen.target)).await?;
        Ok(Reply::no_content())
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
        HoldStatus::Expired => Error::HoldExpired,
        HoldStatus::Held if hold.version == seen_version => match max_lifetime {
            Some(secs) => {
                Error::HoldLifetimeExceeded { latest_expiry: hold.created_at + chrono::Duration::seconds(secs) }
            }
            None => Error::ConcurrentModification,
        },
        HoldStatus::Held => Error::ConcurrentModification,
        status => Error::HoldNotActive { status },
    }
}
