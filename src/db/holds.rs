use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HoldRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    /// Stored status; see [`HoldRow::effective_status`].
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub version: i64,
    /// `expires_at <= now()` by the database clock when read.
    pub expired: bool,
    pub seat_ids: Vec<Uuid>,
    pub total_cents: i64,
}

impl HoldRow {
    /// What the hold is right now: a HELD hold past its expiry is EXPIRED, swept or not.
    pub fn effective_status(&self) -> &str {
        if self.status == "HELD" && self.expired { "EXPIRED" } else { &self.status }
    }
}

pub async fn find<'e>(db: impl PgExecutor<'e>, hold_id: Uuid) -> Result<Option<HoldRow>, sqlx::Error> {
    sqlx::query_as(
        "select h.id, h.event_id, h.user_id, h.status, h.expires_at, h.created_at, h.version,
                h.expires_at <= now() as expired,
                coalesce(array_agg(hs.seat_id order by hs.seat_id) filter (where hs.seat_id is not null), '{}') as seat_ids,
                coalesce(sum(s.price_cents), 0)::int8 as total_cents
           from holds h
           left join hold_seats hs on hs.hold_id = h.id
           left join seats s on s.id = hs.seat_id
          where h.id = $1
          group by h.id",
    )
    .bind(hold_id)
    .fetch_optional(db)
    .await
}

/// What [`create`] did: the seats it claimed (all or some of those asked), their total price,
/// and the hold's timestamps.
#[derive(Debug, sqlx::FromRow)]
pub struct CreatedHold {
    pub claimed: Vec<Uuid>,
    pub total_cents: i64,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Creates a HELD hold and claims its seats in one statement (one round trip): insert the hold,
/// take only seats that are still free (no booking, no live hold; an expired hold never
/// blocks), and record the seats taken. Under READ COMMITTED a racing claim blocks on the row
/// lock, then re-evaluates the "still free" predicate against the winner's row and skips it.
/// The caller rolls back unless every seat asked for was claimed.
pub async fn create(
    conn: &mut PgConnection,
    hold_id: Uuid,
    event_id: Uuid,
    user_id: &str,
    ttl_seconds: i64,
    seat_ids: &[Uuid],
) -> Result<CreatedHold, sqlx::Error> {
    sqlx::query_as(
        "with hold as (
             insert into holds (id, event_id, user_id, status, expires_at)
             values ($1, $2, $3, 'HELD', now() + $4 * interval '1 second')
             returning expires_at, created_at
         ), claimed as (
             update seats
                set hold_id = $1, hold_expires_at = (select expires_at from hold), version = version + 1
              where event_id = $2 and id = any($5)
                and booking_id is null
                and (hold_id is null or hold_expires_at <= now())
             returning id, price_cents
         ), recorded as (
             insert into hold_seats (hold_id, seat_id) select $1, id from claimed returning seat_id
         )
         select array(select seat_id from recorded order by seat_id) as claimed,
                (select coalesce(sum(price_cents), 0)::int8 from claimed) as total_cents,
                hold.expires_at, hold.created_at
           from hold",
    )
    .bind(hold_id)
    .bind(event_id)
    .bind(user_id)
    .bind(ttl_seconds)
    .bind(seat_ids)
    .fetch_one(conn)
    .await
}

/// Inserts a hold row in `status` with `expires_at = now() + ttl`; returns the expiry.
pub async fn insert(
    conn: &mut PgConnection,
    hold_id: Uuid,
    event_id: Uuid,
    user_id: &str,
    status: &str,
    ttl_seconds: i64,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "insert into holds (id, event_id, user_id, status, expires_at)
         values ($1, $2, $3, $4, now() + $5 * interval '1 second')
         returning expires_at",
    )
    .bind(hold_id)
    .bind(event_id)
    .bind(user_id)
    .bind(status)
    .bind(ttl_seconds)
    .fetch_one(conn)
    .await
}

pub async fn record_seats(conn: &mut PgConnection, hold_id: Uuid, seat_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into hold_seats (hold_id, seat_id) select $1, unnest($2::uuid[])")
        .bind(hold_id)
        .bind(seat_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves a live hold at the version we read to `to`. Returns false when the hold changed,
/// ended, or expired meanwhile (the caller re-reads to say which).
pub async fn transition(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    to: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "update holds set status = $3, version = version + 1, updated_at = now()
          where id = $1 and version = $2 and status = 'HELD' and expires_at > now()",
    )
    .bind(hold_id)
    .bind(seen_version)
    .bind(to)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Frees the seats a hold still claims. Seats claimed since by someone else are untouched.
pub async fn free_seats(conn: &mut PgConnection, hold_ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "update seats set hold_id = null, hold_expires_at = null, version = version + 1
          where hold_id = any($1)",
    )
    .bind(hold_ids)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Extends a live hold at the version we read, within its lifetime cap, and moves its seats'
/// expiry with it. Returns the new expiry, or None when a guard failed.
pub async fn extend(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    ttl_seconds: i64,
    max_lifetime_seconds: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let expires_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "update holds set expires_at = now() + $3 * interval '1 second', version = version + 1, updated_at = now()
          where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
            and now() + $3 * interval '1 second' <= created_at + $4 * interval '1 second'
         returning expires_at",
    )
    .bind(hold_id)
    .bind(seen_version)
    .bind(ttl_seconds)
    .bind(max_lifetime_seconds)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(expires_at) = expires_at {
        sqlx::query("update seats set hold_expires_at = $2, version = version + 1 where hold_id = $1")
            .bind(hold_id)
            .bind(expires_at)
            .execute(conn)
            .await?;
    }
    Ok(expires_at)
}

/// One sweeper batch: marks expired holds EXPIRED and frees their seats, skipping rows another
/// instance (or a request) holds. Returns how many holds expired.
pub async fn expire_batch(conn: &mut PgConnection, batch: i64) -> Result<u64, sqlx::Error> {
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "update holds h set status = 'EXPIRED', version = version + 1, updated_at = now()
           from (select id from holds
                  where status = 'HELD' and expires_at <= now()
                  order by expires_at
                  limit $1
                  for update skip locked) due
          where h.id = due.id
         returning h.id",
    )
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    if !expired.is_empty() {
        free_seats(conn, &expired).await?;
    }
    Ok(expired.len() as u64)
}
