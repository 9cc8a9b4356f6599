//! The state-changing commands, a family per file: `seats` (events and their seats), `holds`,
//! `bookings`, `rooms` (inventories and nights) and `slots` (resources and time slots). Each
//! command is a struct with a read-only `plan` (what it acts on, at which version, and which
//! lock resources that means) and an `apply` that writes inside the pipeline's transaction,
//! every write guarded by its own predicate, side by side in its family's file ([`Execute`]).
//!
//! A new command is a struct and its `Execute` in one file, plus a variant here ([`Command`]
//! and the list in `dispatch!`).

mod bookings;
mod holds;
mod queue;
mod rooms;
mod seats;
mod slots;
mod webhooks;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use bookings::{BookSeats, CancelBooking};
pub use holds::{BestAvailable, ConfirmHold, CreateBestHold, CreateHold, ExtendHold, ReleaseHold};
pub use queue::{JoinQueue, LeaveQueue};
pub use rooms::{CreateInventory, CreateRoomHold, PatchNights};
pub use seats::{CreateEvent, PatchEvent};
pub use slots::{CreateResource, CreateSlotHold, RescheduleBooking};
pub use webhooks::{CreateWebhook, DeleteWebhook};

use super::{Reply, Step};
use crate::db::holds::Target;
use crate::db::write_tx::Logged;
use crate::db::{bookings as booking_rows, holds as hold_rows};
use crate::domain::{Caller, Nights};
use crate::error::Error;
use crate::idempotency::SeatProbe;
use crate::seat_index::Marked;
use crate::state::AppState;

/// What one command does, beside its data.
pub(super) trait Execute {
    /// Its name in metrics, logs and `HOLDFAST_FAULT_PANIC_ONCE`.
    const NAME: &'static str;
    /// The counters a success increments.
    const COUNTERS: &'static [&'static str] = &[];
    /// Whether it creates a HELD hold (and so counts against `HOLD_MAX_LIVE_PER_USER`).
    const CREATES_LIVE_HOLD: bool = false;

    /// For commands that claim free seats of an event: which.
    fn seat_claim(&self) -> Option<(Uuid, &[Uuid])> {
        None
    }

    /// For commands whose one statement creates or confirms a hold and writes its change rows
    /// itself (`db::holds::create`, `db::bookings::confirm_hold`): that hold's id, for the BEGIN
    /// to tell the triggers (see the migration `one_change_row_per_hold`).
    fn logged_hold(&self) -> Option<Uuid> {
        None
    }

    /// For commands whose self-logging statement also changes availability (takes or sells a
    /// room hold's nights, takes a slot) and writes that change into the hold's or the booking's
    /// row (`inventories::create_hold`, `bookings::confirm_hold`, `resources::create_hold`): that
    /// inventory's or resource's id, for the BEGIN to tell the `nights_changed` and
    /// `slots_changed` triggers (see the migration `room_and_slot_holds_log_their_availability`).
    /// Only asked of commands with a [`Execute::logged_hold`].
    fn logged_scope(&self, _plan: &Plan) -> Option<Uuid> {
        None
    }

    /// Reads (autocommit, no lock) what the command will act on.
    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error>;

    /// When the lock is contended: whether what this command would claim is already gone for
    /// good (seats taken, a night sold out, the slot booked), and so waiting is pointless. For a
    /// seat claim, whether any of its seats is taken.
    async fn why_give_up(&self, state: &AppState, _plan: &Plan) -> Result<Option<Error>, Error> {
        match self.seat_claim() {
            Some((event_id, seat_ids)) => seats::taken(state, event_id, seat_ids).await,
            None => Ok(None),
        }
    }

    /// Writes inside the pipeline's transaction. Any error rolls the whole transaction back.
    async fn apply(&self, tx: &mut PgConnection, state: &AppState, caller: &Caller, plan: Plan)
    -> Result<Reply, Error>;
}

/// Every command, for the one pipeline that runs them all.
#[derive(Debug)]
pub enum Command {
    CreateEvent(CreateEvent),
    CreateHold(CreateHold),
    ExtendHold(ExtendHold),
    ConfirmHold(ConfirmHold),
    ReleaseHold(ReleaseHold),
    BookSeats(BookSeats),
    CancelBooking(CancelBooking),
    CreateInventory(CreateInventory),
    PatchNights(PatchNights),
    CreateRoomHold(CreateRoomHold),
    CreateResource(CreateResource),
    CreateSlotHold(CreateSlotHold),
    RescheduleBooking(RescheduleBooking),
    CreateWebhook(CreateWebhook),
    DeleteWebhook(DeleteWebhook),
    PatchEvent(PatchEvent),
    CreateBestHold(CreateBestHold),
    JoinQueue(JoinQueue),
    LeaveQueue(LeaveQueue),
}

/// `$body` with `$c` bound to the command inside whichever variant `$command` is, and `$T` to
/// its type.
macro_rules! dispatch {
    ($command:expr, $c:ident: $T:ident => $body:expr) => {
        match $command {
            Command::CreateEvent($c) => {
                type $T = CreateEvent;
                $body
            }
            Command::CreateHold($c) => {
                type $T = CreateHold;
                $body
            }
            Command::ExtendHold($c) => {
                type $T = ExtendHold;
                $body
            }
            Command::ConfirmHold($c) => {
                type $T = ConfirmHold;
                $body
            }
            Command::ReleaseHold($c) => {
                type $T = ReleaseHold;
                $body
            }
            Command::BookSeats($c) => {
                type $T = BookSeats;
                $body
            }
            Command::CancelBooking($c) => {
                type $T = CancelBooking;
                $body
            }
            Command::CreateInventory($c) => {
                type $T = CreateInventory;
                $body
            }
            Command::PatchNights($c) => {
                type $T = PatchNights;
                $body
            }
            Command::CreateRoomHold($c) => {
                type $T = CreateRoomHold;
                $body
            }
            Command::CreateResource($c) => {
                type $T = CreateResource;
                $body
            }
            Command::CreateSlotHold($c) => {
                type $T = CreateSlotHold;
                $body
            }
            Command::RescheduleBooking($c) => {
                type $T = RescheduleBooking;
                $body
            }
            Command::CreateWebhook($c) => {
                type $T = CreateWebhook;
                $body
            }
            Command::DeleteWebhook($c) => {
                type $T = DeleteWebhook;
                $body
            }
            Command::PatchEvent($c) => {
                type $T = PatchEvent;
                $body
            }
            Command::CreateBestHold($c) => {
                type $T = CreateBestHold;
                $body
            }
            Command::JoinQueue($c) => {
                type $T = JoinQueue;
                $body
            }
            Command::LeaveQueue($c) => {
                type $T = LeaveQueue;
                $body
            }
        }
    };
}

macro_rules! from_each {
    ($($variant:ident),*) => {
        $(impl From<$variant> for Command {
            fn from(command: $variant) -> Self {
                Command::$variant(command)
            }
        })*
    };
}

from_each!(
    CreateEvent,
    CreateHold,
    ExtendHold,
    ConfirmHold,
    ReleaseHold,
    BookSeats,
    CancelBooking,
    CreateInventory,
    PatchNights,
    CreateRoomHold,
    CreateResource,
    CreateSlotHold,
    RescheduleBooking,
    CreateWebhook,
    DeleteWebhook,
    PatchEvent,
    CreateBestHold,
    JoinQueue,
    LeaveQueue
);

/// The answer a seat-claiming command gets when its seats are already taken (the claim fills
/// in `seat_ids`). Built once: it is the same for every request.
static SEAT_UNAVAILABLE: LazyLock<Value> = LazyLock::new(|| Error::SeatUnavailable { seat_ids: Vec::new() }.body());

impl Command {
    pub fn name(&self) -> &'static str {
        dispatch!(self, _c: T => T::NAME)
    }

    pub(super) fn count_success(&self) {
        let counters: &[&'static str] = dispatch!(self, _c: T => T::COUNTERS);
        for name in counters {
            metrics::counter!(*name).increment(1);
        }
    }

    /// Whether the command creates a HELD hold (and so counts against `HOLD_MAX_LIVE_PER_USER`).
    pub(super) fn creates_live_hold(&self) -> bool {
        dispatch!(self, _c: T => T::CREATES_LIVE_HOLD)
    }

    /// What the command's self-logging statement logs (see [`Execute::logged_hold`] and
    /// [`Execute::logged_scope`]).
    pub(super) fn logged(&self, plan: &Plan) -> Option<Logged> {
        let hold = dispatch!(self, c: _T => c.logged_hold())?;
        Some(Logged { hold, scope: dispatch!(self, c: _T => c.logged_scope(plan)) })
    }

    /// The seats a seat-claiming command asks for (empty for the others).
    pub(super) fn requested_seats(&self) -> &[Uuid] {
        dispatch!(self, c: _T => c.seat_claim()).map_or(&[], |(_, seats)| seats)
    }

    /// For commands that claim free seats: the probe that lets the idempotency claim settle
    /// the request at once when the seats are already taken.
    pub(super) fn seat_probe<'a>(&'a self, state: &'a AppState) -> Option<SeatProbe<'a>> {
        let (event_id, seat_ids) = dispatch!(self, c: _T => c.seat_claim())?;
        Some(SeatProbe {
            event_id,
            seat_ids,
            status: 409,
            body: &SEAT_UNAVAILABLE,
            hot_seats: &state.hot_seats,
            batches: &state.claim_batches,
            redlock: &state.redlock,
            lock_keys: seat_resources(seat_ids),
        })
    }

    /// How many times the configured lock retries this command may wait: a night's key is taken
    /// by every hold, confirm, release and cancel of that night, so queueing there is normal,
    /// not a lost race.
    pub(super) fn lock_patience(&self, plan: &Plan) -> u32 {
        if plan.resources.iter().any(|r| r.starts_with("night:")) { 5 } else { 1 }
    }

    pub(super) async fn why_give_up(&self, state: &AppState, plan: &Plan) -> Result<Option<Error>, Error> {
        dispatch!(self, c: _T => c.why_give_up(state, plan).await)
    }

    pub(super) async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        dispatch!(self, c: _T => c.plan(state, caller).await)
    }

    pub(super) async fn apply(
        &self,
        tx: &mut PgConnection,
        state: &AppState,
        caller: &Caller,
        plan: Plan,
    ) -> Result<Reply, Error> {
        dispatch!(self, c: _T => c.apply(tx, state, caller, plan).await)
    }
}

type Range = (DateTime<Utc>, DateTime<Utc>);

/// What a command read before locking, and the lock resources that follow from it.
pub struct Plan {
    pub resources: Vec<String>,
    seen: Seen,
    /// Seats the plan took in this instance's memory (best available): the pipeline gives them
    /// back when the request does not commit them.
    pub marked: Option<Marked>,
}

enum Seen {
    Nothing,
    /// A hold as read for the plan.
    Hold(hold_rows::HoldRow),
    /// A hold as this instance remembers it (`db::holds::HoldsHere`), not read.
    RememberedHold(hold_rows::HoldRow),
    Booking(booking_rows::BookingRow),
    /// A new slot, checked against its resource's rules, and its buffered range.
    Slot {
        blocked: Range,
    },
    /// Seats chosen by the plan (best available).
    Chosen(Vec<Uuid>),
    /// A booked slot to move, and the new slot's buffered range.
    Reschedule {
        booking: booking_rows::BookingRow,
        blocked: Range,
    },
}

/// The answer to a hold just created: 201 with the hold, which this instance remembers for the
/// plans of the commands on it (`db::holds::HoldsHere`).
fn hold_created(state: &AppState, hold: hold_rows::HoldRow) -> Reply {
    let reply = Reply::created(super::views::hold(&hold));
    state.holds_here.remember(hold);
    reply
}

fn write(resources: Vec<String>, seen: Seen) -> Result<Step, Error> {
    Ok(Step::Write(Plan { resources, seen, marked: None }))
}

/// The error for a command whose plan did not see what its apply needs (a bug).
fn planned_without<T: Execute>() -> Error {
    Error::internal(format!("{} planned without what it acts on", T::NAME))
}

fn seat_resources(seat_ids: &[Uuid]) -> Vec<String> {
    seat_ids.iter().map(|id| format!("seat:{id}")).collect()
}

/// One lock key per night: every hold of a night serializes on it.
fn night_resources(inventory_id: Uuid, nights: Nights) -> Vec<String> {
    nights.iter().map(|night| format!("night:{inventory_id}:{night}")).collect()
}

/// The lock keys an existing hold or booking covers.
async fn target_resources(state: &AppState, target: &Target) -> Result<Vec<String>, Error> {
    Ok(match target {
        Target::Seats { seat_ids, .. } => seat_resources(seat_ids),
        Target::Rooms { inventory_id, check_in, check_out, .. } => {
            night_resources(*inventory_id, rooms::stay_of(*check_in, *check_out)?)
        }
        Target::Slot { resource_id, start, end } => {
            let rules = slots::load_rules(state, *resource_id).await?;
            slots::slot_resources(*resource_id, &rules, rules.blocked(*start, *end))
        }
    })
}

fn missing(requested: &[Uuid], got: &[Uuid]) -> Vec<Uuid> {
    let got: std::collections::BTreeSet<&Uuid> = got.iter().collect();
    requested.iter().filter(|id| !got.contains(id)).copied().collect()
}

/// A hold the caller may see (their own; any for admins), or 404: others' holds do not exist for
/// them. A command's plan reads it on `state.claims_db`, whose sessions keep generic plans (see
/// `db::claims_pool`); everything else on `state.db`.
pub async fn visible_hold(db: &PgPool, caller: &Caller, hold_id: Uuid) -> Result<hold_rows::HoldRow, Error> {
    hold_rows::find(db, hold_id).await?.filter(|h| caller.may_access(&h.user_id)).ok_or(Error::NotFound("hold"))
}

/// A booking the caller may see, or 404 (as [`visible_hold`]).
pub async fn visible_booking(
    db: &PgPool,
    caller: &Caller,
    booking_id: Uuid,
) -> Result<booking_rows::BookingRow, Error> {
    booking_rows::find(db, booking_id)
        .await?
        .filter(|b| caller.may_access(&b.user_id))
        .ok_or(Error::NotFound("booking"))
}
