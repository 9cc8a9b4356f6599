//! Quantity inventory: nights with a capacity, and the per-night `held` / `booked` counters that
//! move in the same transaction as the holds and bookings they count. The CHECK
//! `inventory_nights_not_oversold` refuses any over-sale, whatever the locks did.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Executor, PgConnection, PgExecutor};
use uuid::Uuid;

use super::holds;
use crate::domain::Nights;

#[derive(Debug, Clone)]
pub struct InventoryRow {
    pub id: Uuid,
    pub name: String,
    pub overbooking_allowance: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NightRow {
    pub night: NaiveDate,
    pub capacity: i32,
    pub overbooking_allowance: i32,
    /// Stop-sell: no new holds.
    pub closed: bool,
    pub held: i32,
    pub booked: i32,
}

impl NightRow {
    /// Units that can still be held: 0 when the night is closed.
    pub fn available(&self) -> i32 {
        if self.closed { 0 } else { (self.capacity + self.overbooking_allowance - self.held - self.booked).max(0) }
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    overbooking_allowance: i32,
    nights: Nights,
    capacity: i32,
    created_by: &str,
) -> Result<InventoryRow, sqlx::Error> {
    let row = sqlx::query_as!(
        InventoryRow,
        "insert into inventories (id, name, overbooking_allowance, created_by) values ($1, $2, $3, $4)
         returning id, name, overbooking_allowance, created_at",
        id,
        name,
        overbooking_allowance,
        created_by,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query!(
        "insert into inventory_nights (inventory_id, night, capacity, overbooking_allowance)
         select $1, d::date, $4, $5 from generate_series($2::date, $3::date - 1, interval '1 day') d",
        id,
        nights.first(),
        nights.end(),
        capacity,
        overbooking_allowance,
    )
    .execute(conn)
    .await?;
    Ok(row)
}

pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<InventoryRow>, sqlx::Error> {
    sqlx::query_as!(
        InventoryRow,
        "select id, name, overbooking_allowance, created_at from inventories where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// The nights on sale within the range, in order (nights not on sale are absent). `held` leaves
/// out holds past their expiry that the sweeper has not reached yet: they no longer hold anything.
/// Those are found from the expired HELD holds (`holds_expiring_idx`, a handful at most, as the
/// sweeper runs every second), not from every hold the nights ever had.
///
/// Each such hold's nights are read by its id from the view `hold_nights` (its stay, or its rows
/// if it was made before the migration `hold_nights_in_the_hold_row`), in a subquery that
/// `offset 0` keeps whole: flattened into a join, the view could not be read by the hold's id,
/// and every room hold's stay would be read instead.
pub async fn nights<'e>(db: impl PgExecutor<'e>, id: Uuid, range: Nights) -> Result<Vec<NightRow>, sqlx::Error> {
    sqlx::query_as!(
        NightRow,
        r#"with stale as (
             select hn.night, sum(hn.quantity) as quantity
               from holds h
              cross join lateral (select night, quantity from hold_nights
                                   where hold_id = h.id and night >= $2 and night < $3 offset 0) hn
              where h.status = 'HELD' and h.expires_at <= now() and h.inventory_id = $1
              group by hn.night
         )
         select n.night, n.capacity, n.overbooking_allowance, n.closed, n.booked,
                (n.held - coalesce(s.quantity, 0))::int4 as "held!"
           from inventory_nights n left join stale s on s.night = n.night
          where n.inventory_id = $1 and n.night >= $2 and n.night < $3 order by n.night"#,
        id,
        range.first(),
        range.end(),
    )
    .fetch_all(db)
    .await
}

/// The same, with each row locked until the transaction ends (in night order, so concurrent
/// lockers never deadlock).
pub async fn lock_nights(conn: &mut PgConnection, id: Uuid, range: Nights) -> Result<Vec<NightRow>, sqlx::Error> {
    sqlx::query_as!(
        NightRow,
        "select night, capacity, overbooking_allowance, closed, held, booked from inventory_nights
          where inventory_id = $1 and night >= $2 and night < $3 order by night for update",
        id,
        range.first(),
        range.end(),
    )
    .fetch_all(conn)
    .await
}

/// A room hold's statement: the stay's nights as it found them, locked, and the hold it made, if
/// every night had room.
#[derive(Debug)]
pub struct RoomHold {
    /// The stay's rows on sale, in night order, as locked (before the hold's units).
    pub nights: Vec<NightRow>,
    /// `(nights taken, expires_at, created_at)`: None when some night was missing, closed or
    /// full, and then nothing was written.
    pub held: Option<(i64, DateTime<Utc>, DateTime<Utc>)>,
}

/// Holds `quantity` units of every night in the range for a new HELD hold, in one statement (one
/// round trip): lock the stay's nights in night order (so concurrent lockers never deadlock),
/// and only if every night is on sale, open and has room, insert the hold with its stay and
/// units in its own row (`holds.stay`, `holds.quantity`: see the migration
/// `hold_nights_in_the_hold_row`) and add to each night's counter. Returns the nights as locked,
/// for the caller to tell why not when nothing was held; the caller rolls back unless every night
/// was taken.
///
/// The counters are checked once, on the rows as locked, and the update then moves every locked
/// row, computing from the locked row. The update reads the rows as of the statement's start: a
/// writer that freed units while this statement waited for the lock (the sweeper, which takes no
/// lock in Redis) leaves it an older row, one that would fail a check of room that the locked row
/// passes (the hold would be inserted with none of its nights), and counters computed from which
/// would fail `inventory_nights_not_oversold` before Postgres moves on to the newer row. The locks
/// keep the rows as checked until the commit, and that constraint is the final guard.
///
/// The same statement writes the hold's change row, as `holds::create` does for seats, when the
/// transaction began with `hold_id` as its logged hold: its history (`hold.created`, as the
/// `holds_audit` trigger would write it) and, when the BEGIN also named this inventory's nights
/// as logged, the nights taken (`nights.changed`, as `nights_changed` would write it, which then
/// does not run; see the migration `room_and_slot_holds_log_their_availability`). Else the triggers write them.
/// With `compact_nights`, the nights are stored compact (`COMPACT_NIGHT_CHANGES`, migration
/// `compact_night_changes`).
#[allow(clippy::too_many_arguments)]
pub async fn create_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    inventory_id: Uuid,
    user_id: &str,
    ttl_seconds: i64,
    stay: Nights,
    quantity: i32,
    compact_nights: bool,
) -> Result<RoomHold, sqlx::Error> {
    let rows = sqlx::query!(
        r#"with locked as (
             select night, capacity, overbooking_allowance, closed, held, booked, version from inventory_nights
              where inventory_id = $2 and night >= $5 and night < $6 order by night for update
         ), fits as (
             select count(*) = $8 and coalesce(bool_and(not closed and held + booked + $7 <= capacity + overbooking_allowance), false)
                    as ok
               from locked
         ), hold as (
             insert into holds (id, inventory_id, user_id, status, expires_at, stay, quantity)
             select $1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second', daterange($5, $6), $7 from fits where ok
             returning expires_at, created_at
         ), taken as (
             update inventory_nights n
                set held = l.held + $7, version = l.version + 1
               from locked l
              where n.inventory_id = $2 and n.night >= $5 and n.night < $6 and n.night = l.night
                and exists (select 1 from hold)
             returning n
         ), logged as (
             insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
             select $1, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at),
                    case when nights.logged then 'nights.changed' end, case when nights.logged then $2::uuid end,
                    case when nights.logged then
                        (select case when $9 then jsonb_agg(nights_compact(t.n) order by (t.n).night)
                                     else jsonb_build_object('nights', jsonb_agg(nights_json(t.n) order by (t.n).night)) end
                           from taken t)
                    end,
                    change_actor(), change_actor_role(), change_request_id()
               from hold
              cross join (select change_logged_scope() = $2 as logged) nights
              where change_logged_hold() = $1
         )
         select l.night as "night!", l.capacity as "capacity!", l.overbooking_allowance as "overbooking_allowance!",
                l.closed as "closed!", l.held as "held!", l.booked as "booked!",
                (select count(*) from taken) as "taken!", hold.expires_at as "expires_at?", hold.created_at as "created_at?"
           from locked l left join hold on true
          order by l.night"#,
        hold_id,
        inventory_id,
        user_id,
        ttl_seconds,
        stay.first(),
        stay.end(),
        quantity,
        stay.count(),
        compact_nights,
    )
    .fetch_all(conn)
    .await?;
    let held = rows.first().and_then(|r| Some((r.taken, r.expires_at?, r.created_at?)));
    let nights = rows
        .into_iter()
        .map(|r| NightRow {
            night: r.night,
            capacity: r.capacity,
            overbooking_allowance: r.overbooking_allowance,
            closed: r.closed,
            held: r.held,
            booked: r.booked,
        })
        .collect();
    Ok(RoomHold { nights, held })
}

/// Ends this transaction's logging of its nights by its own statement (the BEGIN's
/// `holdfast.logged_scope`): from here on the `nights_changed` trigger announces every change of
/// a night, as it does for any writer. For a transaction that must change nights in another way
/// first (expiring stale holds), which the guard `nights_change_unlogged` would refuse.
pub async fn stop_logging_nights(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    conn.execute("select set_config('holdfast.logged_scope', '', true)").await.map(|_| ())
}

/// Expires the holds past their expiry that still count on these nights (see [`holds::expire`]):
/// whose stay overlaps them, or, made before the migration `hold_nights_in_the_hold_row`, whose
/// rows fall in them.
pub async fn expire_stale_holds(
    conn: &mut PgConnection,
    inventory_id: Uuid,
    range: Nights,
) -> Result<u64, sqlx::Error> {
    let stale = sqlx::query_scalar!(
        "select h.id from holds h
          where h.status = 'HELD' and h.expires_at <= now() and h.inventory_id = $1
            and (h.stay && daterange($2, $3)
                 or exists (select 1 from hold_nights_before b
                             where b.hold_id = h.id and b.night >= $2 and b.night < $3))",
        inventory_id,
        range.first(),
        range.end(),
    )
    .fetch_all(&mut *conn)
    .await?;
    holds::expire(conn, &stale).await
}

/// What a PATCH of nights asks: a new capacity (creating nights not yet on sale), closing or
/// reopening, and a new overbooking allowance. Absent fields are left alone.
#[derive(Debug, Clone, Copy)]
pub struct NightsPatch {
    pub capacity: Option<i32>,
    pub closed: Option<bool>,
    pub overbooking_allowance: Option<i32>,
}

impl NightsPatch {
    /// When this patch would lower what a night may sell below what is already held or booked
    /// there: the units sold. Lowering the capacity below what is sold is refused even where the
    /// allowance would still cover it; so is lowering capacity + allowance below it.
    pub fn would_undersell(&self, row: &NightRow) -> Option<i32> {
        let sold = row.held + row.booked;
        let capacity = self.capacity.unwrap_or(row.capacity);
        let allowance = self.overbooking_allowance.unwrap_or(row.overbooking_allowance);
        let lowers_capacity = self.capacity.is_some() && capacity < row.capacity && capacity < sold;
        let limit = capacity + allowance;
        let lowers_limit = limit < row.capacity + row.overbooking_allowance && limit < sold;
        (lowers_capacity || lowers_limit).then_some(sold)
    }
}

/// Applies a PATCH to every night in the range, all or nothing (the caller's transaction). With
/// a capacity, nights not yet on sale are created (with the inventory's allowance).
pub async fn patch_nights(
    conn: &mut PgConnection,
    inventory_id: Uuid,
    range: Nights,
    patch: NightsPatch,
    default_allowance: i32,
) -> Result<Vec<NightRow>, sqlx::Error> {
    if let Some(capacity) = patch.capacity {
        sqlx::query!(
            "insert into inventory_nights (inventory_id, night, capacity, overbooking_allowance)
             select $1, d::date, $4, $5 from generate_series($2::date, $3::date - 1, interval '1 day') d
             on conflict (inventory_id, night) do nothing",
            inventory_id,
            range.first(),
            range.end(),
            capacity,
            default_allowance,
        )
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query_as!(
        NightRow,
        "update inventory_nights
            set capacity = coalesce($4, capacity), closed = coalesce($5, closed),
                overbooking_allowance = coalesce($6, overbooking_allowance), version = version + 1
          where inventory_id = $1 and night >= $2 and night < $3
         returning night, capacity, overbooking_allowance, closed, held, booked",
        inventory_id,
        range.first(),
        range.end(),
        patch.capacity,
        patch.closed,
        patch.overbooking_allowance,
    )
    .fetch_all(conn)
    .await
    .map(|mut rows: Vec<NightRow>| {
        rows.sort_by_key(|r| r.night);
        rows
    })
}

/// The integrity check: nights whose counters differ from the sum of their live holds (HELD)
/// and live bookings (CONFIRMED). There must be none.
pub const COUNTER_MISMATCHES: &str = "
    select count(*) from inventory_nights n
      left join (select hn.inventory_id, hn.night,
                        coalesce(sum(hn.quantity) filter (where h.status = 'HELD'), 0) as held,
                        coalesce(sum(hn.quantity) filter (where h.status = 'CONFIRMED' and b.status = 'CONFIRMED'), 0) as booked
                   from hold_nights hn
                   join holds h on h.id = hn.hold_id
                   left join bookings b on b.hold_id = h.id
                  group by hn.inventory_id, hn.night) x
        on x.inventory_id = n.inventory_id and x.night = n.night
     where n.held <> coalesce(x.held, 0) or n.booked <> coalesce(x.booked, 0)";

pub async fn counter_mismatches<'e>(db: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(COUNTER_MISMATCHES).fetch_one(db).await
}
