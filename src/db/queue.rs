//! The waiting room's rows: tickets, and each queue's pacing state (see `crate::queue` for the
//! rules). Every time is Postgres's clock, so instances agree on "now".

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TicketRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub joined_at: DateTime<Utc>,
    pub rank: Option<i64>,
    /// waiting, admitted, expired, booked or left (the stored status: an admission past its
    /// `admission_expires_at` may still read `admitted` until the next pacing round).
    pub status: String,
    pub admission_expires_at: Option<DateTime<Utc>>,
}

/// One event's queue: its settings (from the event row) and pacing state.
#[derive(Debug, Clone)]
pub struct QueueRow {
    pub event_id: Uuid,
    pub enabled: bool,
    pub admit_per_minute: i32,
    pub max_active_shoppers: i32,
    pub admission_ttl_seconds: i32,
    pub on_sale_at: Option<DateTime<Utc>>,
    pub starts_at: DateTime<Utc>,
    pub secret: Vec<u8>,
    pub drawn: bool,
    pub admitted_through: i64,
}

/// Creates the event's queue state (with its token secret) unless it exists.
pub async fn ensure_state(conn: &mut PgConnection, event_id: Uuid, secret: &[u8; 32]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into queue_state (event_id, secret) values ($1, $2) on conflict (event_id) do nothing",
        event_id,
        &secret[..],
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find<'e>(db: impl PgExecutor<'e>, ticket_id: Uuid) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as!(
        TicketRow,
        "select id, event_id, user_id, joined_at, rank, status, admission_expires_at
           from queue_tickets where id = $1",
        ticket_id
    )
    .fetch_optional(db)
    .await
}

/// Why a join found no queue to join.
#[derive(Debug)]
pub enum Joined {
    New(TicketRow),
    Existing(TicketRow),
    NoEvent,
    NotEnabled,
    Started(DateTime<Utc>),
}

/// The user's ticket for the event: the one they have, or a new one. A new ticket joined before
/// the draw has no rank yet (the draw gives it one); after the draw it takes the next rank.
pub async fn join(
    conn: &mut PgConnection,
    ticket_id: Uuid,
    event_id: Uuid,
    user_id: &str,
) -> Result<Joined, sqlx::Error> {
    let existing = of_user(&mut *conn, event_id, user_id).await?;
    if let Some(ticket) = existing {
        return Ok(Joined::Existing(ticket));
    }
    let event = sqlx::query!(
        r#"select queue_enabled, starts_at, starts_at <= now() as "started!" from events where id = $1"#,
        event_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match event {
        None => return Ok(Joined::NoEvent),
        Some(e) if !e.queue_enabled => return Ok(Joined::NotEnabled),
        Some(e) if e.started => return Ok(Joined::Started(e.starts_at)),
        Some(_) => {}
    }
    // The rank comes from the queue's counter once the draw is done (the update waits for a
    // draw in progress, then sees it). Joined before on_sale_at: early, placed by the draw. A
    // same user's join racing this one makes the insert find the unique key taken: the caller
    // reads that ticket instead (the rank taken here is then a gap, harmless: positions count
    // from ranks, and a gap only makes a position an over-estimate).
    let inserted = sqlx::query_as!(
        TicketRow,
        "with numbered as (
             update queue_state set next_rank = next_rank + 1
              where event_id = $2 and drawn_at is not null
             returning next_rank
         )
         insert into queue_tickets (id, event_id, user_id, early, rank)
         select $1, e.id, $3, coalesce(e.on_sale_at > now(), false), (select next_rank from numbered)
           from events e where e.id = $2
         on conflict (event_id, user_id) do nothing
         returning id, event_id, user_id, joined_at, rank, status, admission_expires_at",
        ticket_id,
        event_id,
        user_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(row) => Ok(Joined::New(row)),
        None => Ok(Joined::Existing(of_user(conn, event_id, user_id).await?.ok_or(sqlx::Error::RowNotFound)?)),
    }
}

async fn of_user(conn: &mut PgConnection, event_id: Uuid, user_id: &str) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as!(
        TicketRow,
        "select id, event_id, user_id, joined_at, rank, status, admission_expires_at
           from queue_tickets where event_id = $1 and user_id = $2",
        event_id,
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// Leaves the line (or gives up an admission). None when the ticket had already ended.
pub async fn leave(conn: &mut PgConnection, ticket_id: Uuid) -> Result<Option<TicketRow>, sqlx::Error> {
    sqlx::query_as!(
        TicketRow,
        "update queue_tickets set status = 'left', ended_at = now()
          where id = $1 and status in ('waiting', 'admitted')
         returning id, event_id, user_id, joined_at, rank, status, admission_expires_at",
        ticket_id
    )
    .fetch_optional(conn)
    .await
}

/// Every queue that may need pacing, or answering for: enabled, event not started.
pub async fn queues<'e>(db: impl PgExecutor<'e>) -> Result<Vec<QueueRow>, sqlx::Error> {
    sqlx::query_as!(
        QueueRow,
        r#"select e.id as event_id, e.queue_enabled as enabled, e.queue_admit_per_minute as admit_per_minute,
                  e.queue_max_active_shoppers as max_active_shoppers,
                  e.queue_admission_ttl_seconds as admission_ttl_seconds, e.on_sale_at, e.starts_at,
                  s.secret, s.drawn_at is not null as "drawn!", s.admitted_through
             from events e join queue_state s on s.event_id = e.id
            where e.queue_enabled and e.starts_at > now()"#
    )
    .fetch_all(db)
    .await
}

/// One event's queue, enabled or not (None: no such event, or its queue was never enabled).
pub async fn queue<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<Option<QueueRow>, sqlx::Error> {
    sqlx::query_as!(
        QueueRow,
        r#"select e.id as event_id, e.queue_enabled as enabled, e.queue_admit_per_minute as admit_per_minute,
                  e.queue_max_active_shoppers as max_active_shoppers,
                  e.queue_admission_ttl_seconds as admission_ttl_seconds, e.on_sale_at, e.starts_at,
                  s.secret, s.drawn_at is not null as "drawn!", s.admitted_through
             from events e join queue_state s on s.event_id = e.id
            where e.id = $1"#,
        event_id
    )
    .fetch_optional(db)
    .await
}

/// The ranks of the event's waiting tickets (after the draw: for instances to learn them in
/// one read instead of one read per ticket).
pub async fn waiting_ranks<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id, rank as "rank!" from queue_tickets
            where event_id = $1 and status = 'waiting' and rank is not null"#,
        event_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.rank)).collect())
}

/// What one pacing round did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Paced {
    pub ranked: i64,
    pub expired: i64,
    pub admitted: i64,
}

/// One pacing round for one event, in the caller's transaction: skipped (None) when another
/// instance is pacing it right now. Ranks whoever has no rank once the event is on sale (the
/// first time, that is the draw: early joiners in a uniformly random order, then those who
/// joined after on_sale_at in order of arrival); ends admissions past their time; admits the
/// next in line as far as the token bucket and `max_active_shoppers` allow.
pub async fn pace(conn: &mut PgConnection, event_id: Uuid) -> Result<Option<Paced>, sqlx::Error> {
    let Some(s) = sqlx::query!(
        r#"select s.credit, extract(epoch from now() - coalesce(s.paced_at, now()))::float8 as "elapsed!",
                  e.queue_enabled, e.queue_admit_per_minute, e.queue_max_active_shoppers,
                  e.queue_admission_ttl_seconds,
                  (e.on_sale_at is null or e.on_sale_at <= now()) as "on_sale!"
             from queue_state s join events e on e.id = s.event_id
            where s.event_id = $1
              for update of s skip locked"#,
        event_id
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut paced = Paced::default();
    if !(s.queue_enabled && s.on_sale) {
        // Nothing accrues while the queue is off or before the sale.
        sqlx::query!("update queue_state set credit = 0, paced_at = now() where event_id = $1", event_id)
            .execute(&mut *conn)
            .await?;
        return Ok(Some(paced));
    }
    paced.ranked = sqlx::query_scalar!(
        r#"with ordered as (
               select id, row_number() over (order by early desc, case when early then random() end, joined_at, id) as n
                 from queue_tickets where event_id = $1 and rank is null
           ), ranked as (
               update queue_tickets t set rank = s.next_rank + o.n
                 from ordered o, queue_state s
                where t.id = o.id and s.event_id = $1
               returning t.rank
           ), counted as (
               update queue_state set next_rank = coalesce((select max(rank) from ranked), next_rank),
                                      drawn_at = coalesce(drawn_at, now())
                where event_id = $1
               returning 1
           )
           select count(*) as "n!" from ranked"#,
        event_id
    )
    .fetch_one(&mut *conn)
    .await?;
    paced.expired = sqlx::query!(
        "update queue_tickets set status = 'expired', ended_at = admission_expires_at
          where event_id = $1 and status = 'admitted' and admission_expires_at <= now()",
        event_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    // The bucket holds at most two seconds of admissions (at least one): a pause in pacing (every
    // instance down) does not release a burst afterwards.
    let rate = f64::from(s.queue_admit_per_minute) / 60.0;
    let cap = if rate > 0.0 { (2.0 * rate).max(1.0) } else { 0.0 };
    let credit = (s.credit + s.elapsed.max(0.0) * rate).min(cap);
    let wanted = credit.floor() as i64;
    let (admitted, through) = if wanted > 0 {
        let admitted = sqlx::query!(
            r#"with active as (
                   select count(*) as n from queue_tickets where event_id = $1 and status = 'admitted'
               ), picked as (
                   select id from queue_tickets
                    where event_id = $1 and status = 'waiting' and rank is not null
                    order by rank
                    limit greatest(0, least($2::int8, $3::int8 - (select n from active)))
               ), admitted as (
                   update queue_tickets t
                      set status = 'admitted', admitted_at = now(),
                          admission_expires_at = now() + $4::int8 * interval '1 second'
                     from picked where t.id = picked.id and t.status = 'waiting'
                   returning t.rank
               )
               select count(*) as "n!", max(rank) as through from admitted"#,
            event_id,
            wanted,
            i64::from(s.queue_max_active_shoppers),
            i64::from(s.queue_admission_ttl_seconds),
        )
        .fetch_one(&mut *conn)
        .await?;
        (admitted.n, admitted.through)
    } else {
        (0, None)
    };
    paced.admitted = admitted;
    sqlx::query!(
        "update queue_state set credit = $2, paced_at = now(),
                admitted_through = greatest(admitted_through, coalesce($3::int8, 0))
          where event_id = $1",
        event_id,
        credit - admitted as f64,
        through,
    )
    .execute(conn)
    .await?;
    Ok(Some(paced))
}

/// Counts for the event's admins.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub waiting: i64,
    /// Admitted and not finished: what `max_active_shoppers` bounds.
    pub active: i64,
    /// Ever admitted (active, expired, booked, or left after admission).
    pub admitted_total: i64,
    pub expired: i64,
    pub booked: i64,
    pub left: i64,
    pub drawn_at: Option<DateTime<Utc>>,
}

pub async fn stats<'e>(db: impl PgExecutor<'e>, event_id: Uuid) -> Result<QueueStats, sqlx::Error> {
    sqlx::query_as!(
        QueueStats,
        r#"select count(*) filter (where status = 'waiting') as "waiting!",
                  count(*) filter (where status = 'admitted' and admission_expires_at > now()) as "active!",
                  count(admitted_at) as "admitted_total!",
                  count(*) filter (where status = 'expired'
                                      or (status = 'admitted' and admission_expires_at <= now())) as "expired!",
                  count(*) filter (where status = 'booked') as "booked!",
                  count(*) filter (where status = 'left') as "left!",
                  (select drawn_at from queue_state where event_id = $1) as drawn_at
             from queue_tickets where event_id = $1"#,
        event_id
    )
    .fetch_one(db)
    .await
}

/// Ends the buyer's admission for the event: their booking is confirmed.
pub async fn mark_booked(conn: &mut PgConnection, event_id: Uuid, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update queue_tickets set status = 'booked', ended_at = now()
          where event_id = $1 and user_id = $2 and status = 'admitted'",
        event_id,
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}
