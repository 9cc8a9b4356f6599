use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BookingRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub hold_id: Uuid,
    pub user_id: String,
    pub status: String,
    pub payment_reference: Option<String>,
    pub total_cents: i64,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub seat_ids: Vec<Uuid>,
}

const SELECT_BOOKING: &str = "
    select b.id, b.event_id, b.hold_id, b.user_id, b.status, b.payment_reference, b.total_cents,
           b.created_at, b.cancelled_at, b.version,
           coalesce(array_agg(bs.seat_id order by bs.seat_id) filter (where bs.seat_id is not null), '{}') as seat_ids
      from bookings b
      left join booking_seats bs on bs.booking_id = b.id";

pub async fn find<'e>(db: impl PgExecutor<'e>, booking_id: Uuid) -> Result<Option<BookingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_BOOKING} where b.id = $1 group by b.id")))
        .bind(booking_id)
        .fetch_optional(db)
        .await
}

/// The caller's bookings, newest first, strictly after the cursor booking.
pub async fn list_for_user<'e>(
    db: impl PgExecutor<'e>,
    user_id: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BookingRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_BOOKING}
          where b.user_id = $1
            and ($2::uuid is null or (b.created_at, b.id) <
                 (select created_at, id from bookings where id = $2 and user_id = $1))
          group by b.id
          order by b.created_at desc, b.id desc
          limit $3"
    )))
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
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
    sqlx::query(
        "insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
         values ($1, $2, $3, $4, 'CONFIRMED', $5, $6)",
    )
    .bind(booking_id)
    .bind(event_id)
    .bind(hold_id)
    .bind(user_id)
    .bind(payment_reference)
    .bind(total_cents)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, sqlx::FromRow)]
pub struct Confirmed {
    /// False when the hold was no longer HELD, unexpired, at the version read: nothing changed.
    pub moved: bool,
    pub sold: Vec<Uuid>,
    pub created_at: Option<DateTime<Utc>>,
}

/// Confirms a hold into a booking in one statement (one round trip): move the hold from HELD
/// (at the version we read, unexpired) to CONFIRMED, insert the booking, sell the seats the
/// hold still claims, and record the sale. Each step runs only if the one before it did.
/// The caller rolls back unless the hold moved and every seat was sold.
#[allow(clippy::too_many_arguments)]
pub async fn confirm_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    booking_id: Uuid,
    event_id: Uuid,
    user_id: &str,
    payment_reference: Option<&str>,
    total_cents: i64,
    seat_ids: &[Uuid],
) -> Result<Confirmed, sqlx::Error> {
    sqlx::query_as(
        "with moved as (
             update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
              where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
             returning id
         ), booking as (
             insert into bookings (id, event_id, hold_id, user_id, status, payment_reference, total_cents)
             select $3, $4, id, $5, 'CONFIRMED', $6, $7 from moved
             returning created_at
         ), sold as (
             update seats set booking_id = $3, hold_id = null, hold_expires_at = null, version = version + 1
              where id = any($8) and hold_id = $1 and hold_expires_at > now() and booking_id is null
                and exists (select 1 from booking)
             returning id
         ), recorded as (
             insert into booking_seats (booking_id, seat_id) select $3, id from sold returning seat_id
         )
         select exists (select 1 from moved) as moved,
                array(select seat_id from recorded order by seat_id) as sold,
                (select created_at from booking) as created_at",
    )
    .bind(hold_id)
    .bind(seen_version)
    .bind(booking_id)
    .bind(event_id)
    .bind(user_id)
    .bind(payment_reference)
    .bind(total_cents)
    .bind(seat_ids)
    .fetch_one(conn)
    .await
}

/// Sells free seats straight to the booking (hold-and-confirm in one call), with the same
/// "still free" guard as a hold's claim.
pub async fn sell_free_seats(
    conn: &mut PgConnection,
    event_id: Uuid,
    booking_id: Uuid,
    seat_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "update seats set booking_id = $2, hold_id = null, hold_expires_at = null, version = version + 1
          where event_id = $1 and id = any($3)
            and booking_id is null
            and (hold_id is null or hold_expires_at <= now())
         returning id",
    )
    .bind(event_id)
    .bind(booking_id)
    .bind(seat_ids)
    .fetch_all(conn)
    .await
}

/// Records the sale; the partial unique index `booking_seats_one_live_sale` refuses a second
/// live sale of any seat, whatever happened above.
pub async fn record_seats(conn: &mut PgConnection, booking_id: Uuid, seat_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into booking_seats (booking_id, seat_id) select $1, unnest($2::uuid[])")
        .bind(booking_id)
        .bind(seat_ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn price_of(conn: &mut PgConnection, event_id: Uuid, seat_ids: &[Uuid]) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select count(*), coalesce(sum(price_cents), 0)::int8 from seats where event_id = $1 and id = any($2)",
    )
    .bind(event_id)
    .bind(seat_ids)
    .fetch_one(conn)
    .await
}

/// Cancels a CONFIRMED booking at the version we read and returns its seats to sale.
/// Returns false when the booking changed meanwhile.
pub async fn cancel(conn: &mut PgConnection, booking_id: Uuid, seen_version: i64) -> Result<bool, sqlx::Error> {
    let cancelled = sqlx::query(
        "update bookings set status = 'CANCELLED', cancelled_at = now(), version = version + 1
          where id = $1 and version = $2 and status = 'CONFIRMED'",
    )
    .bind(booking_id)
    .bind(seen_version)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if cancelled == 0 {
        return Ok(false);
    }
    sqlx::query("update booking_seats set active = false where booking_id = $1 and active")
        .bind(booking_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("update seats set booking_id = null, version = version + 1 where booking_id = $1")
        .bind(booking_id)
        .execute(conn)
        .await?;
    Ok(true)
}
