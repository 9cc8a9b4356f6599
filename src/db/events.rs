use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::NewEvent;

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: Uuid,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub on_sale_at: Option<DateTime<Utc>>,
    pub max_seats_per_buyer: Option<i32>,
    pub queue_enabled: bool,
    pub queue_admit_per_minute: i32,
    pub queue_max_active_shoppers: i32,
    pub queue_admission_ttl_seconds: i32,
}

impl EventRow {
    pub fn queue(&self) -> crate::domain::QueueSettings {
        crate::domain::QueueSettings {
            enabled: self.queue_enabled,
            admit_per_minute: self.queue_admit_per_minute,
            max_active_shoppers: self.queue_max_active_shoppers,
            admission_ttl_seconds: self.queue_admission_ttl_seconds,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct SeatCounts {
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub booked: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SeatRow {
    pub id: Uuid,
    pub section: String,
    #[serde(rename = "row")]
    pub row_label: String,
    pub number: i32,
    pub label: String,
    pub status: String,
    pub price_cents: i64,
    /// Goes up with every change of the seat's claim: of two states of a seat (this map, a
    /// stream's `seats.changed`), the higher version is the newer.
    pub version: i64,
    /// The change feed's readable end when this row was read (see `crate::db::changes`).
    #[serde(skip)]
    pub feed_xmin: i64,
}

/// A seat's status as clients see it. An expired hold is AVAILABLE at once, swept or not.
const SEAT_STATUS: &str = "case when booking_id is not null then 'BOOKED'
                               when hold_id is not null and hold_expires_at > now() then 'HELD'
                               else 'AVAILABLE' end";

#[tracing::instrument(skip_all, fields(seats = event.seats.len()), err)]
pub async fn insert_event(
    conn: &mut PgConnection,
    id: Uuid,
    event: &NewEvent,
    created_by: &str,
) -> Result<EventRow, sqlx::Error> {
    let row = sqlx::query_as!(
        EventRow,
        "insert into events (id, name, starts_at, created_by, on_sale_at, max_seats_per_buyer, queue_enabled,
                             queue_admit_per_minute, queue_max_active_shoppers, queue_admission_ttl_seconds)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         returning id, name, starts_at, created_at, on_sale_at, max_seats_per_buyer, queue_enabled, queue_admit_per_minute, queue_max_active_shoppers, queue_admission_ttl_seconds",
        id,
        &event.name,
        event.starts_at,
        created_by,
        event.on_sale_at,
        event.max_seats_per_buyer,
        event.queue.enabled,
        event.queue.admit_per_minute,
        event.queue.max_active_shoppers,
        event.queue.admission_ttl_seconds,
    )
    .fetch_one(&mut *conn)
    .await?;

    // One statement for the whole seat map: arrays in, unnest on the server.
    let n = event.seats.len();
    let (mut ids, mut sections, mut rows, mut numbers, mut prices) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for seat in &event.seats {
        ids.push(Uuid::now_v7());
        sections.push(seat.section.as_str());
        rows.push(seat.row.as_str());
        numbers.push(seat.number);
        prices.push(seat.price_cents);
    }
    sqlx::query!(
        "insert into seats (id, event_id, section, row_label, number, price_cents)
         select u.id, $1, u.section, u.row_label, u.number, u.price_cents
           from unnest($2::uuid[], $3::text[], $4::text[], $5::int4[], $6::int8[])
                as u(id, section, row_label, number, price_cents)",
        id,
        &ids,
        &sections as &[&str],
        &rows as &[&str],
        &numbers,
        &prices,
    )
    .execute(&mut *conn)
    .await?;
    Ok(row)
}

pub async fn find_event<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "select id, name, starts_at, created_at, on_sale_at, max_seats_per_buyer, queue_enabled, queue_admit_per_minute, queue_max_active_shoppers, queue_admission_ttl_seconds from events where id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

/// A change to an event's sale settings: `None` keeps a setting, `Some(None)` clears it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaleChange {
    pub on_sale_at: Option<Option<DateTime<Utc>>>,
    pub max_seats_per_buyer: Option<Option<i32>>,
    pub queue: crate::domain::QueueChange,
}

/// Applies `change` to the event; None if there is no such event.
pub async fn update_sale(
    conn: &mut PgConnection,
    id: Uuid,
    change: SaleChange,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "update events
            set on_sale_at = case when $2 then $3 else on_sale_at end,
                max_seats_per_buyer = case when $4 then $5 else max_seats_per_buyer end,
                queue_enabled = coalesce($6, queue_enabled),
                queue_admit_per_minute = coalesce($7, queue_admit_per_minute),
                queue_max_active_shoppers = coalesce($8, queue_max_active_shoppers),
                queue_admission_ttl_seconds = coalesce($9, queue_admission_ttl_seconds)
          where id = $1
          returning id, name, starts_at, created_at, on_sale_at, max_seats_per_buyer, queue_enabled, queue_admit_per_minute, queue_max_active_shoppers, queue_admission_ttl_seconds",
        id,
        change.on_sale_at.is_some(),
        change.on_sale_at.flatten(),
        change.max_seats_per_buyer.is_some(),
        change.max_seats_per_buyer.flatten(),
        change.queue.enabled,
        change.queue.admit_per_minute,
        change.queue.max_active_shoppers,
        change.queue.admission_ttl_seconds,
    )
    .fetch_optional(conn)
    .await
}

/// When the event goes on sale, if that is still ahead.
pub async fn on_sale_ahead(conn: &mut PgConnection, event_id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select on_sale_at as "on_sale_at!" from events where id = $1 and on_sale_at > now()"#,
        event_id
    )
    .fetch_optional(conn)
    .await
}

/// An event's sale rules for a direct booking by `user_id`, read in one statement.
#[derive(Debug, Default)]
pub struct SaleRules {
    /// When the event goes on sale, if that is still ahead.
    pub on_sale_ahead: Option<DateTime<Utc>>,
    pub buyer_limit: Option<i32>,
    /// Whether the event has a waiting room open.
    pub queue_enabled: bool,
    /// No waiting room, or `ticket` is the user's live admission to it.
    pub admitted: bool,
}

pub async fn sale_rules(
    conn: &mut PgConnection,
    event_id: Uuid,
    user_id: &str,
    ticket: Option<Uuid>,
) -> Result<Option<SaleRules>, sqlx::Error> {
    sqlx::query_as!(
        SaleRules,
        r#"select case when e.on_sale_at > now() then e.on_sale_at end as on_sale_ahead,
                  e.max_seats_per_buyer as buyer_limit, e.queue_enabled,
                  not e.queue_enabled
                  or exists (select 1 from queue_tickets t
                              where t.id = $3 and t.event_id = e.id and t.user_id = $2
                                and t.status = 'admitted' and t.admission_expires_at > now()) as "admitted!"
             from events e where e.id = $1"#,
        event_id,
        user_id,
        ticket,
    )
    .fetch_optional(conn)
    .await
}

/// How many seats `user_id` holds (live holds) and owns (confirmed bookings) in the event,
/// counted after taking the buyer's advisory lock on this event for the rest of the
/// transaction. The count is a statement of its own: under READ COMMITTED it sees every claim
/// the buyer's other transactions committed while this one waited for the lock, and those
/// still running wait for it in turn. Called after the claim, it includes this transaction's own.
pub async fn buyer_seats(conn: &mut PgConnection, event_id: Uuid, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query!(
        r#"select 1 as "locked!" from pg_advisory_xact_lock(hashtextextended('buyer:' || $1::text || ':' || $2, 0))"#,
        event_id.to_string(),
        user_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"select (select count(*) from holds h join hold_seats hs on hs.hold_id = h.id
                    where h.user_id = $2 and h.event_id = $1 and h.status = 'HELD' and h.expires_at > now())
                + (select count(*) from bookings b join booking_seats bs on bs.booking_id = b.id and bs.active
                    where b.user_id = $2 and b.event_id = $1 and b.status = 'CONFIRMED') as "seats!""#,
        event_id,
        user_id,
    )
    .fetch_one(conn)
    .await
}

pub async fn seat_counts<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<SeatCounts, sqlx::Error> {
    sqlx::query_as!(
        SeatCounts,
        r#"select count(*) as "total!",
                count(*) filter (where booking_id is null and (hold_id is null or hold_expires_at <= now())) as "available!",
                count(*) filter (where booking_id is null and hold_id is not null and hold_expires_at > now()) as "held!",
                count(*) filter (where booking_id is not null) as "booked!"
           from seats where event_id = $1"#,
        event_id,
    )
    .fetch_one(db)
    .await
}

/// One page of an event's seat map after the seat `after`, in section order, rows in natural
/// order (row "2" before row "10"), then seat number.
pub async fn list_seats(
    pool: &PgPool,
    event_id: Uuid,
    status: Option<&str>,
    section: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SeatRow>, sqlx::Error> {
    // The status expression is a constant of this module, never input: safe to splice.
    let sql = format!(
        "select id, section, row_label, number, price_cents,
                section || '-' || row_label || '-' || number as label,
                {SEAT_STATUS} as status, version,
                (select pg_snapshot_xmin(pg_current_snapshot())::text::int8) as feed_xmin
           from seats s
          where event_id = $1
            and ($2::text is null or ({SEAT_STATUS}) = $2)
            and ($3::text is null or section = $3)
            and ($4::uuid is null or (section, length(row_label), row_label, number) >
                 (select section, length(row_label), row_label, number from seats where id = $4 and event_id = $1))
          order by section, length(row_label), row_label, number
          limit $5"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(event_id)
        .bind(status)
        .bind(section)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// When the event started, if it has (by the database clock); None if it has not started or
/// does not exist.
pub async fn started_at<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!("select starts_at from events where id = $1 and starts_at <= now()", event_id)
        .fetch_optional(db)
        .await
}

/// Which of `seat_ids` exist in the event; used to tell unknown seats from taken ones.
pub async fn existing_seats(
    conn: &mut PgConnection,
    event_id: Uuid,
    seat_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("select id from seats where event_id = $1 and id = any($2)", event_id, seat_ids)
        .fetch_all(conn)
        .await
}

/// Which of `seat_ids` are taken right now (booked, or under a live hold). A read, not a claim:
/// used to answer a stampede's losers without making them queue for the lock.
pub async fn taken_seats(db: &PgPool, event_id: Uuid, seat_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from seats
          where event_id = $1 and id = any($2)
            and (booking_id is not null or (hold_id is not null and hold_expires_at > now()))
          order by id",
        event_id,
        seat_ids,
    )
    .fetch_all(db)
    .await
}

/// The free seats best-available chooses from (no booking, no live hold, at most
/// `max_price_cents`), of `section` or the whole event, the first `limit` in seat-map order (the
/// front rows: where the best blocks are).
pub async fn free_spots<'e>(
    db: impl PgExecutor<'e>,
    event_id: Uuid,
    section: Option<&str>,
    max_price_cents: Option<i64>,
    limit: i64,
) -> Result<Vec<crate::domain::best_available::Spot>, sqlx::Error> {
    sqlx::query_as!(
        crate::domain::best_available::Spot,
        r#"select id, section, row_label as "row", number, true as "free!"
             from seats
            where event_id = $1 and ($2::text is null or section = $2)
              and booking_id is null and (hold_id is null or hold_expires_at <= now())
              and ($3::int8 is null or price_cents <= $3)
            order by section, length(row_label), row_label, number
            limit $4"#,
        event_id,
        section,
        max_price_cents,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One seat of an event's map, and whether it is free now (for `crate::seat_index`).
#[derive(Debug)]
pub struct MapSeat {
    pub id: Uuid,
    pub section: String,
    pub row_label: String,
    pub number: i32,
    pub price_cents: i64,
    pub free: bool,
}

/// Every seat of the event in map order (the order `free_spots` ranks rows by).
pub async fn seat_map<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<Vec<MapSeat>, sqlx::Error> {
    sqlx::query_as!(
        MapSeat,
        r#"select id, section, row_label, number, price_cents,
                  (booking_id is null and (hold_id is null or hold_expires_at <= now())) as "free!"
             from seats where event_id = $1
            order by section, length(row_label), row_label, number"#,
        event_id,
    )
    .fetch_all(db)
    .await
}

/// The ids of the event's free seats.
pub async fn free_seat_ids<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from seats
          where event_id = $1 and booking_id is null and (hold_id is null or hold_expires_at <= now())",
        event_id,
    )
    .fetch_all(db)
    .await
}
