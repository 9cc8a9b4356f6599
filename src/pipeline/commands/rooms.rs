//! Rooms per night: inventories, their nights, and holds on a stay.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, hold_created, night_resources, write};
use crate::db::holds::{self, Target};
use crate::db::inventories::{self, NightRow, NightsPatch};
use crate::domain::{Caller, Nights, Ttl};
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::state::AppState;

#[derive(Debug)]
pub struct CreateInventory {
    pub name: String,
    pub nights: Nights,
    pub capacity: i32,
    pub overbooking_allowance: i32,
}

impl Execute for CreateInventory {
    const NAME: &'static str = "create_inventory";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let id = Uuid::now_v7();
        let (allowance, nights) = (self.overbooking_allowance, self.nights);
        let row = inventories::insert(tx, id, &self.name, allowance, nights, self.capacity, &caller.user_id).await?;
        let rows = inventories::nights(&mut *tx, id, nights).await?;
        Ok(Reply::created(views::inventory(&row, &rows)))
    }
}

#[derive(Debug)]
pub struct PatchNights {
    pub inventory_id: Uuid,
    pub nights: Nights,
    pub patch: NightsPatch,
}

impl Execute for PatchNights {
    const NAME: &'static str = "patch_nights";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(night_resources(self.inventory_id, self.nights), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, _: &Caller, _: Plan) -> Result<Reply, Error> {
        let Self { inventory_id, nights, patch } = *self;
        let inventory = inventories::find(&mut *tx, inventory_id).await?.ok_or(Error::NotFound("inventory"))?;
        if patch.capacity.is_some() || patch.overbooking_allowance.is_some() {
            // Dead holds (past their expiry, not yet swept) must not block a lowering.
            inventories::expire_stale_holds(tx, inventory_id, nights).await?;
            for row in inventories::lock_nights(tx, inventory_id, nights).await? {
                if let Some(sold) = patch.would_undersell(&row) {
                    return Err(Error::CapacityBelowSold { night: row.night, sold });
                }
            }
        }
        inventories::patch_nights(tx, inventory_id, nights, patch, inventory.overbooking_allowance).await?;
        let rows = inventories::nights(&mut *tx, inventory_id, nights).await?;
        Ok(Reply::ok(views::nights(inventory_id, &rows)))
    }
}

#[derive(Debug)]
pub struct CreateRoomHold {
    /// The id the hold will have, chosen before the transaction (see [`Execute::logged_hold`]).
    pub hold_id: Uuid,
    pub inventory_id: Uuid,
    pub stay: Nights,
    pub quantity: i32,
    pub ttl: Ttl,
}

impl Execute for CreateRoomHold {
    const NAME: &'static str = "create_room_hold";
    const COUNTERS: &'static [&'static str] = &["holdfast_holds_created_total"];
    const CREATES_LIVE_HOLD: bool = true;

    fn logged_hold(&self) -> Option<Uuid> {
        Some(self.hold_id)
    }

    fn logged_scope(&self, _plan: &Plan) -> Option<Uuid> {
        Some(self.inventory_id)
    }

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(night_resources(self.inventory_id, self.stay), Seen::Nothing)
    }

    async fn why_give_up(&self, state: &AppState, _plan: &Plan) -> Result<Option<Error>, Error> {
        let nights = inventories::nights(&state.db, self.inventory_id, self.stay).await?;
        Ok(first_short_night(self.stay, &nights, self.quantity))
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let Self { hold_id, inventory_id, stay, quantity, ttl } = *self;
        let user_id = &caller.user_id;
        let compact = state.config.streams.compact_night_changes;
        // One statement locks the stay's nights in order and holds them only if every one has
        // room: the counts it checks are the counts it writes.
        let hold = async |tx: &mut PgConnection| {
            inventories::create_hold(tx, hold_id, inventory_id, user_id, ttl.seconds(), stay, quantity, compact).await
        };
        let mut attempt = hold(tx).await?;
        if attempt.held.is_none() {
            if attempt.nights.is_empty() && inventories::find(&mut *tx, inventory_id).await?.is_none() {
                return Err(Error::NotFound("inventory"));
            }
            // Stale holds may be in the way. Expiring them changes nights that the hold's
            // statement does not log, so the trigger announces this transaction's nights, the
            // hold's too (see the migration `room_and_slot_holds_log_their_availability`).
            inventories::stop_logging_nights(tx).await?;
            if inventories::expire_stale_holds(tx, inventory_id, stay).await? > 0 {
                attempt = hold(tx).await?;
            }
        }
        let Some((taken, expires_at, created_at)) = attempt.held else {
            return Err(first_short_night(stay, &attempt.nights, quantity)
                .unwrap_or_else(|| Error::internal("room hold found room on every night and took none")));
        };
        if taken != stay.count() {
            return Err(Error::internal("room hold took fewer nights than it had locked"));
        }
        let target = Target::Rooms { inventory_id, check_in: stay.first(), check_out: stay.end(), quantity };
        let hold = holds::HoldRow::created(hold_id, &caller.user_id, expires_at, created_at, target);
        Ok(hold_created(state, hold))
    }
}

/// The nights of a stored stay.
pub(super) fn stay_of(check_in: chrono::NaiveDate, check_out: chrono::NaiveDate) -> Result<Nights, Error> {
    Nights::parse(check_in, check_out, ("check_in", "check_out")).map_err(Error::internal)
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
