use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::BookingStatus;

use super::holds::{BY_ID, TARGET_COLUMNS, Target, TargetRecord, target_joins};

#[derive(Debug, Clone)]
pub struct BookingRow {
    pub id: Uuid,
    pub hold_id: Uuid,
    pub user_id: String,
    pub status: BookingStatus,
    pub payment_reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// What was booked: the hold's target.
    pub target: Target,
}

#[derive(sqlx::FromRow)]
struct BookingRecord {
    id: Uuid,
    hold_id: Uuid,
    user_id: String,
    status: BookingStatus,
    payment_reference: Option<String>,
    created_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
    version: i64,
    #[sqlx(flatten)]
    target: TargetRecord,
}

impl BookingRecord {
    fn into_row(self) -> Result<BookingRow, sqlx::Error> {
        Ok(BookingRow {
            id: self.id,
            hold_id: self.hold_id,
            user_id: self.user_id,
            status: self.status,
            payment_reference: self.payment_reference,
            created_at: self.created_at,
            cancelled_at: self.cancelled_at,
            version: self.version,
            target: self.target.into_target()?,
        })
    }
}

fn select_booking(with: &str, from: &str, filter: &str) -> String {
    format!(
        "{with}
         select b.id, b.hold_id, b.user_id, b.status, b.payment_reference, b.created_at, b.cancelled_at, b.version,
                b.event_id, b.inventory_id, b.resource_id, {TARGET_COLUMNS}
           from {from}
           {}
          {filter}",
        target_joins("b.hold_id")
    )
}

/// By id, behind `BY_ID` so that its generic plan is kept (see `holds::BY_ID`).
static FIND_BOOKING: LazyLock<String> =
    LazyLock::new(|| select_booking(BY_ID, "by_id join bookings b on b.id = by_id.id", ""));
static LIST_BOOKINGS: LazyLock<String> = LazyLock::new(|| {
    select_booking(
        "",
        "bookings b",
        "where b.user_id = $1
           and ($2::uuid is null or (b.created_at, b.id) <
                (select created_at, id from bookings where id = $2 and user_id = $1))
         order by b.created_at desc, b.id desc
         limit $3",
    )
});

pub async fn find<'e>(db: impl PgExecutor<'e>, booking_id: Uuid) -> Result<Option<BookingRow>, sqlx::Error> {
    let record: Option<BookingRecord> =
        sqlx::query_as(sqlx::AssertSqlSafe(FIND_BOOKING.as_str())).bind(booking_id).fetch_optional(db).await?;
    record.map(BookingRecord::into_row).transpose()
}

/// The caller's bookings, newest first, strictly after the cursor booking.
pub async fn list_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BookingRow>, sqlx::Error> {
    let records: Vec<BookingRecord> = sqlx::query_as(sqlx::AssertSqlSafe(LIST_BOOKINGS.as_str()))
        .bind(user_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await?;
    records.into_iter().map(BookingRecord::into_row).collect()
}

#[allow(clippy::too_many_arguments)]
pub async fn insert(
    conn: &mut PgConnection,
    booking_id: Uuid,
    event_id: Uuid,
    hold_id: Uuid,
    user_id: &str,
    payment_reference: Option<&str>,
    total_cents: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
         values ($1, $2, $3, $4, 'CONFIRMED', $5, $6)",
        booking_id,
        event_id,
        hold_id,
        user_id,
        payment_reference,
        total_cents,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug)]
pub struct Confirmed {
    /// False when the hold was no longer HELD, unexpired, at the version read: nothing changed.
    pub moved: bool,
    pub sold: Vec<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
    pub nights_moved: i64,
}

/// Confirms a hold into a booking in one statement (one round trip): move the hold from HELD
/// (at the version we read, unexpired) to CONFIRMED, insert the booking for the hold's target,
/// then, by kind, sell the seats the hold still claims and record the sale, or move its units on
/// each night of its stay from held to booked (a slot hold's claim just stays active). The seats,
/// the stay and the units are the `target` read with the hold at `seen_version`, which a hold
/// never changes: the statement needs no read of its own. Each step runs only
/// if the one before it did. The caller rolls back unless the hold moved and every seat was sold
/// (every night moved).
///
/// Each kind has its own statement, which touches only its own tables: a statement that updates
/// a table runs that table's statement-level triggers even when it changes no row, and
/// `nights_changed`, called for every seat confirm while one statement served all kinds, was a
/// whole query more per confirm (see the migration `lean_trigger_conditions_and_keys`).
///
/// The same statement writes the change row, as `holds::create` does, when the transaction began
/// with `hold_id` as its logged hold (else the triggers write a row each): one row, the
/// booking's, carrying the hold's change (`hold.confirmed`, from `hold_from_status`), the
/// booking's (`booking.confirmed`) and for seats the seats sold (`seats.changed`), for rooms the
/// nights sold (`nights.changed`) when the BEGIN also named the hold's inventory as logged
/// (migration `room_and_slot_holds_log_their_availability`): the events the triggers would
/// write, in their order (migration `one_change_row_per_confirm`). With `compact_nights`, the
/// nights are stored compact (`COMPACT_NIGHT_CHANGES`, migration `compact_night_changes`).
#[allow(clippy::too_many_arguments)]
pub async fn confirm_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    booking_id: Uuid,
    user_id: &str,
    payment_reference: Option<&str>,
    target: &Target,
    compact_nights: bool,
) -> Result<Confirmed, sqlx::Error> {
    match target {
        Target::Seats { seat_ids, total_cents, .. } => {
            sqlx::query_as!(
                Confirmed,
                r#"with moved as (
                     update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
                      where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
                     returning id, event_id
                 ), booking as (
                     insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
                     select $3, event_id, id, $4, 'CONFIRMED', $5, $6 from moved
                     returning created_at
                 ), sold as (
                     update seats set booking_id = $3, hold_id = null, hold_expires_at = null, version = version + 1
                      where id = any($7) and hold_id = $1 and hold_expires_at > now() and booking_id is null
                        and exists (select 1 from booking)
                     returning id, version
                 ), logged as (
                     insert into audit_log (hold_id, booking_id, entity, hold_from_status, to_status, type, scope_id, data,
                                            actor, actor_role, request_id)
                     select $1, $3, 'booking', 'HELD', 'CONFIRMED', 'seats.changed', moved.event_id,
                            coalesce((select jsonb_agg(jsonb_build_array(s.id, 'BOOKED', s.version) order by s.id)
                                        from sold s), '[]'),
                            change_actor(), change_actor_role(), change_request_id()
                       from moved
                      where change_logged_hold() = $1 and exists (select 1 from booking)
                 ), recorded as (
                     insert into booking_seats (booking_id, seat_id) select $3, id from sold returning seat_id
                 ), admission_ended as (
                     -- A confirmed booking ends the buyer's waiting-room admission for the event.
                     update queue_tickets t set status = 'booked', ended_at = now()
                       from moved
                      where t.event_id = moved.event_id and t.user_id = $4 and t.status = 'admitted'
                     returning 1
                 )
                 select exists (select 1 from moved) as "moved!",
                        array(select seat_id from recorded order by seat_id) as "sold!",
                        (select created_at from booking) as created_at,
                        0::int8 as "nights_moved!""#,
                hold_id,
                seen_version,
                booking_id,
                user_id,
                payment_reference,
                total_cents,
                seat_ids,
            )
            .fetch_one(conn)
            .await
        }
        Target::Rooms { inventory_id, check_in, check_out, quantity } => {
            sqlx::query_as!(
                Confirmed,
                r#"with moved as (
                     update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
                      where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
                     returning id, inventory_id
                 ), booking as (
                     insert into bookings (id, inventory_id, hold_id, user_id, status, payment_reference, total_cents)
                     select $3, inventory_id, id, $4, 'CONFIRMED', $5, 0 from moved
                     returning created_at
                 ), nights as (
                     update inventory_nights n
                        set held = n.held - $8, booked = n.booked + $8, version = n.version + 1
                      where n.inventory_id = $9 and n.night >= $6 and n.night < $7
                        and exists (select 1 from booking)
                     returning n
                 ), logged as (
                     insert into audit_log (hold_id, booking_id, entity, hold_from_status, to_status, type, scope_id, data,
                                            actor, actor_role, request_id)
                     select $1, $3, 'booking', 'HELD', 'CONFIRMED', case when l.logged then 'nights.changed' end,
                            case when l.logged then moved.inventory_id end,
                            case when l.logged then
                                (select case when $10 then jsonb_agg(nights_compact(x.n) order by (x.n).night)
                                             else jsonb_build_object('nights', jsonb_agg(nights_json(x.n) order by (x.n).night)) end
                                   from nights x)
                            end,
                            change_actor(), change_actor_role(), change_request_id()
                       from moved
                      cross join lateral (select change_logged_scope() = moved.inventory_id as logged) l
                      where change_logged_hold() = $1 and exists (select 1 from booking)
                 )
                 select exists (select 1 from moved) as "moved!",
                        '{}'::uuid[] as "sold!",
                        (select created_at from booking) as created_at,
                        (select count(*) from nights) as "nights_moved!""#,
                hold_id,
                seen_version,
                booking_id,
                user_id,
                payment_reference,
                check_in,
                check_out,
                quantity,
                inventory_id,
                compact_nights,
            )
            .fetch_one(conn)
            .await
        }
        Target::Slot { .. } => {
            sqlx::query_as!(
                Confirmed,
                r#"with moved as (
                     update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
                      where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
                     returning id, resource_id
                 ), booking as (
                     insert into bookings (id, resource_id, hold_id, user_id, status, payment_reference, total_cents)
                     select $3, resource_id, id, $4, 'CONFIRMED', $5, 0 from moved
                     returning created_at
                 ), logged as (
                     insert into audit_log (hold_id, booking_id, entity, hold_from_status, to_status, actor, actor_role, request_id)
                     select $1, $3, 'booking', 'HELD', 'CONFIRMED', change_actor(), change_actor_role(), change_request_id()
                       from moved
                      where change_logged_hold() = $1 and exists (select 1 from booking)
                 )
                 select exists (select 1 from moved) as "moved!",
                        '{}'::uuid[] as "sold!",
                        (select created_at from booking) as created_at,
                        0::int8 as "nights_moved!""#,
                hold_id,
                seen_version,
                booking_id,
                user_id,
                payment_reference,
            )
            .fetch_one(conn)
            .await
        }
    }
}

/// Sells free seats straight to the booking (hold-and-confirm in one call), with the same
/// "still free" guard as a hold's claim.
pub async fn sell_free_seats(
    conn: &mut PgConnection,
    event_id: Uuid,
    booking_id: Uuid,
    seat_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update seats set booking_id = $2, hold_id = null, hold_expires_at = null, version = version + 1
          where event_id = $1 and id = any($3)
            and booking_id is null
            and (hold_id is null or hold_expires_at <= now())
            and exists (select 1 from events e where e.id = $1 and e.starts_at > now())
         returning id",
        event_id,
        booking_id,
        seat_ids,
    )
    .fetch_all(conn)
    .await
}

/// Records the sale; the partial unique index `booking_seats_one_live_sale` refuses a second
/// live sale of any seat, whatever happened above.
pub async fn record_seats(conn: &mut PgConnection, booking_id: Uuid, seat_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!("insert into booking_seats (booking_id, seat_id) select $1, unnest($2::uuid[])", booking_id, seat_ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn price_of(conn: &mut PgConnection, event_id: Uuid, seat_ids: &[Uuid]) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "seats!", coalesce(sum(price_cents), 0)::int8 as "total_cents!"
             from seats where event_id = $1 and id = any($2)"#,
        event_id,
        seat_ids,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.seats, row.total_cents))
}

/// Cancels a CONFIRMED booking at the version we read and returns its seats to sale.
/// Returns false when the booking changed meanwhile.
pub async fn cancel(conn: &mut PgConnection, booking_id: Uuid, seen_version: i64) -> Result<bool, sqlx::Error> {
    let cancelled = sqlx::query!(
        "update bookings set status = 'CANCELLED', cancelled_at = now(), version = version + 1
          where id = $1 and version = $2 and status = 'CONFIRMED'",
        booking_id,
        seen_version,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if cancelled == 0 {
        return Ok(false);
    }
    // Give back what the booking held: its seats, its units on each night, its slot.
    sqlx::query!(
        "with unsold as (
             update booking_seats set active = false where booking_id = $1 and active returning seat_id
         ), freed_seats as (
             update seats set booking_id = null, version = version + 1 where booking_id = $1 returning 1
         ), released_nights as (
             update inventory_nights n set booked = n.booked - hn.quantity, version = n.version + 1
               from hold_nights hn
              -- by the hold's id, so that the view `hold_nights` is read by index
              where hn.hold_id = (select hold_id from bookings where id = $1)
                and n.inventory_id = hn.inventory_id and n.night = hn.night
             returning 1
         ), freed_slot as (
             update slot_claims set active = false
              where hold_id = (select hold_id from bookings where id = $1) and active
             returning 1
         )
         select (select count(*) from unsold) + (select count(*) from freed_seats)
                + (select count(*) from released_nights) + (select count(*) from freed_slot) as given_back",
        booking_id,
    )
    .fetch_one(conn)
    .await?;
    Ok(true)
}

/// Marks a change of a CONFIRMED booking at the version we read (a reschedule). Returns false
/// when the booking changed or ended meanwhile.
pub async fn touch(conn: &mut PgConnection, booking_id: Uuid, seen_version: i64) -> Result<bool, sqlx::Error> {
    let touched = sqlx::query!(
        "update bookings set version = version + 1 where id = $1 and version = $2 and status = 'CONFIRMED'",
        booking_id,
        seen_version,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(touched == 1)
}
