//! Webhook endpoints, their deliveries and attempts (see the migration `webhooks`). Fan-out and
//! delivery are shared by every instance without a leader: each takes its rows with
//! `for update skip locked`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::changes::Position;

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

pub struct NewEndpoint<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub event_types: &'a [String],
    pub secret: &'a str,
    pub created_by: &'a str,
}

pub async fn insert(conn: &mut PgConnection, new: NewEndpoint<'_>) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        r#"insert into webhook_endpoints (id, url, description, event_types, secret, created_by)
           values ($1, $2, $3, $4, $5, $6)
           returning id, url, description, event_types, created_by, created_at, failing_since, disabled_at, disabled_reason"#,
        new.id,
        new.url,
        new.description,
        new.event_types,
        new.secret,
        new.created_by,
    )
    .fetch_one(conn)
    .await
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        "select id, url, description, event_types, created_by, created_at, failing_since, disabled_at, disabled_reason
           from webhook_endpoints where id = $1",
        id,
    )
    .fetch_optional(pool)
    .await
}

/// Endpoints in creation order (ids are UUID v7), after `after`.
pub async fn list(pool: &PgPool, after: Option<Uuid>, limit: i64) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as!(
        EndpointRow,
        "select id, url, description, event_types, created_by, created_at, failing_since, disabled_at, disabled_reason
           from webhook_endpoints where $1::uuid is null or id > $1 order by id limit $2",
        after,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// Deletes an endpoint with its deliveries; false if there was none.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!("delete from webhook_endpoints where id = $1", id).execute(conn).await?.rows_affected() > 0)
}

/// What an endpoint's queue holds now.
#[derive(Debug, Default)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

pub async fn backlog(pool: &PgPool, id: Uuid) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "pending!", min(occurred_at) as oldest from webhook_deliveries
            where endpoint_id = $1 and status = 'pending'"#,
        id,
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog { pending: row.pending, oldest_pending: row.oldest })
}

/// An endpoint locked for fan-out, with its position in the change log.
#[derive(Debug)]
pub struct FanOut {
    pub id: Uuid,
    pub event_types: Vec<String>,
    pub cursor: Position,
}

/// Locks up to `limit` enabled endpoints that no other instance is fanning out.
pub async fn lock_for_fan_out(conn: &mut PgConnection, limit: i64) -> Result<Vec<FanOut>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id, event_types, cursor_txid::text::int8 as "txid!", cursor_id from webhook_endpoints
            where disabled_at is null order by id limit $1 for update skip locked"#,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FanOut { id: r.id, event_types: r.event_types, cursor: Position { txid: r.txid, id: r.cursor_id } })
        .collect())
}

/// One event queued for one endpoint.
pub struct Queued {
    pub position: Position,
    pub event_id: Uuid,
    pub r#type: String,
    pub payload: String,
    pub occurred_at: DateTime<Utc>,
}

/// Queues `events` for `endpoint` and moves its cursor to `cursor`, inside the fan-out's
/// transaction. An event already queued stays as it is.
pub async fn queue(
    conn: &mut PgConnection,
    endpoint: Uuid,
    events: &[Queued],
    cursor: Position,
) -> Result<u64, sqlx::Error> {
    let txids: Vec<String> = events.iter().map(|e| e.position.txid.to_string()).collect();
    let ids: Vec<i64> = events.iter().map(|e| e.position.id).collect();
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<String> = events.iter().map(|e| e.r#type.clone()).collect();
    let payloads: Vec<String> = events.iter().map(|e| e.payload.clone()).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let queued = sqlx::query!(
        "insert into webhook_deliveries (endpoint_id, txid, change_id, event_id, type, payload, occurred_at)
         select $1, t::xid8, i, e, ty, p, o
           from unnest($2::text[], $3::int8[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[]) as x(t, i, e, ty, p, o)
         on conflict do nothing",
        endpoint,
        &txids,
        &ids,
        &event_ids,
        &types,
        &payloads,
        &occurred,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query!(
        "update webhook_endpoints set cursor_txid = $2::text::xid8, cursor_id = $3 where id = $1",
        endpoint,
        cursor.txid.to_string(),
        cursor.id,
    )
    .execute(conn)
    .await?;
    Ok(queued)
}

/// A delivery this instance has claimed: its attempt is counted and its lease runs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub endpoint_id: Uuid,
    pub txid: i64,
    pub change_id: i64,
    pub event_id: Uuid,
    pub payload: String,
    pub attempt: i32,
    pub queued_at: DateTime<Utc>,
    pub occurred_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
}

/// Claims up to `limit` due deliveries of enabled endpoints: counts the attempt and moves
/// `next_attempt_at` `lease_ms` ahead, so no other instance sends it meanwhile; if this one
/// dies, the lease runs out and another sends it again.
pub async fn claim_due(pool: &PgPool, limit: i64, lease_ms: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"with due as (
               select d.endpoint_id, d.txid, d.change_id
                 from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
                where d.status = 'pending' and d.next_attempt_at <= now() and e.disabled_at is null
                order by d.next_attempt_at
                limit $1
                  for update of d skip locked)
           update webhook_deliveries d
              set attempts = d.attempts + 1, next_attempt_at = now() + $2::int8 * interval '1 millisecond'
             from due, webhook_endpoints e
            where (d.endpoint_id, d.txid, d.change_id) = (due.endpoint_id, due.txid, due.change_id)
              and e.id = d.endpoint_id
        returning d.endpoint_id, d.txid::text::int8 as "txid!", d.change_id, d.event_id, d.payload,
                  d.attempts as attempt, d.queued_at, d.occurred_at, e.url, e.secret"#,
        limit,
        lease_ms,
    )
    .fetch_all(pool)
    .await
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    /// `delivered`, `http_error`, `gone`, `timeout`, `connect_error`, `refused_target`, `error`.
    pub outcome: &'static str,
    pub error: Option<String>,
}

/// What recording an attempt did to the delivery and its endpoint.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The endpoint was disabled by this attempt, with this reason.
    pub disabled: Option<&'static str>,
}

/// Records an attempt and settles the delivery: delivered; or pending again at `retry_at`;
/// or failed when `retry_at` is None (retries exhausted). A 410 disables the endpoint; so does
/// a failure when every attempt has failed for `disable_after_hours`. A failure of an attempt
/// whose lease another instance has since taken over changes nothing but the attempt's row.
pub async fn record_attempt(
    pool: &PgPool,
    claimed: &Claimed,
    result: &AttemptResult,
    retry_at: Option<DateTime<Utc>>,
    disable_after_hours: i64,
) -> Result<Recorded, sqlx::Error> {
    let delivered = result.outcome == "delivered";
    let mut tx = pool.begin().await?;
    let settled = sqlx::query!(
        r#"update webhook_deliveries
              set status = case when $5 then 'delivered' when $6::timestamptz is null then 'failed' else 'pending' end,
                  next_attempt_at = coalesce($6, next_attempt_at),
                  finished_at = case when $5 or $6::timestamptz is null then now() end,
                  last_status_code = $7, last_error = $8
            where (endpoint_id, txid, change_id) = ($1, $2::text::xid8, $3) and status = 'pending'
              and ($5 or attempts = $4)"#,
        claimed.endpoint_id,
        claimed.txid.to_string(),
        claimed.change_id,
        claimed.attempt,
        delivered,
        retry_at,
        result.status_code,
        result.error,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    sqlx::query!(
        "insert into webhook_attempts
              (endpoint_id, txid, change_id, attempt, started_at, duration_ms, status_code, outcome, error, next_attempt_at)
         select $1, $2::text::xid8, $3, $4, $5, $6, $7, $8, $9, $10
          where exists (select from webhook_deliveries where (endpoint_id, txid, change_id) = ($1, $2::text::xid8, $3))
         on conflict do nothing",
        claimed.endpoint_id,
        claimed.txid.to_string(),
        claimed.change_id,
        claimed.attempt,
        result.started_at,
        result.duration_ms,
        result.status_code,
        result.outcome,
        result.error,
        if settled && !delivered { retry_at } else { None },
    )
    .execute(&mut *tx)
    .await?;
    let mut recorded = Recorded::default();
    if delivered {
        sqlx::query!(
            "update webhook_endpoints set failing_since = null where id = $1 and failing_since is not null",
            claimed.endpoint_id
        )
        .execute(&mut *tx)
        .await?;
    } else if result.outcome == "gone" {
        let disabled = sqlx::query!(
            "update webhook_endpoints
                set disabled_at = now(), disabled_reason = 'the receiver answered 410 Gone'
              where id = $1 and disabled_at is null",
            claimed.endpoint_id,
        )
        .execute(&mut *tx)
        .await?;
        if disabled.rows_affected() > 0 {
            recorded.disabled = Some("gone");
        }
    } else {
        let disabled = sqlx::query_scalar!(
            r#"update webhook_endpoints
                  set failing_since = coalesce(failing_since, now()),
                      disabled_at = case when failing_since < now() - $2::int8 * interval '1 hour' then now() end,
                      disabled_reason = case when failing_since < now() - $2::int8 * interval '1 hour'
                          then 'every delivery attempt failed since ' || to_char(failing_since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                               || ' (WEBHOOK_DISABLE_AFTER_HOURS=' || $2 || ')' end
                where id = $1 and disabled_at is null
            returning disabled_at is not null as "disabled!""#,
            claimed.endpoint_id,
            disable_after_hours,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if disabled == Some(true) {
            recorded.disabled = Some("failing");
        }
    }
    tx.commit().await?;
    Ok(recorded)
}

#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub txid: i64,
    pub change_id: i64,
    pub event_id: Uuid,
    pub r#type: String,
    pub occurred_at: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub txid: i64,
    pub change_id: i64,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: String,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// An endpoint's deliveries, newest event first, before `before`, with their attempts.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Uuid,
    before: Option<Position>,
    limit: i64,
) -> Result<(Vec<DeliveryRow>, Vec<AttemptRow>), sqlx::Error> {
    let before = before.unwrap_or(Position { txid: i64::MAX, id: i64::MAX });
    let rows = sqlx::query_as!(
        DeliveryRow,
        r#"select txid::text::int8 as "txid!", change_id, event_id, type, occurred_at, queued_at, status, attempts,
                  next_attempt_at, last_status_code, last_error, finished_at
             from webhook_deliveries
            where endpoint_id = $1 and (txid, change_id) < ($2::text::xid8, $3)
            order by txid desc, change_id desc
            limit $4"#,
        endpoint,
        before.txid.to_string(),
        before.id,
        limit,
    )
    .fetch_all(pool)
    .await?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok((rows, Vec::new())) };
    let attempts = sqlx::query_as!(
        AttemptRow,
        r#"select txid::text::int8 as "txid!", change_id, attempt, started_at, duration_ms, status_code, outcome, error,
                  next_attempt_at
             from webhook_attempts
            where endpoint_id = $1 and (txid, change_id) >= ($2::text::xid8, $3) and (txid, change_id) <= ($4::text::xid8, $5)
            order by txid desc, change_id desc, attempt"#,
        endpoint,
        last.txid.to_string(),
        last.change_id,
        first.txid.to_string(),
        first.change_id,
    )
    .fetch_all(pool)
    .await?;
    Ok((rows, attempts))
}

/// For each enabled endpoint, the age in seconds of its oldest pending delivery (0 if none).
pub async fn oldest_undelivered(pool: &PgPool) -> Result<Vec<(Uuid, f64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select e.id, coalesce(extract(epoch from now() - min(d.occurred_at))::float8, 0) as "age!"
             from webhook_endpoints e
             left join webhook_deliveries d on d.endpoint_id = e.id and d.status = 'pending'
            where e.disabled_at is null
            group by e.id"#,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.age)).collect())
}

/// Deletes up to `batch` deliveries (and their attempts) that ended more than
/// `retention_hours` ago.
pub async fn purge_finished(pool: &PgPool, retention_hours: i64, batch: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "delete from webhook_deliveries
          where (endpoint_id, txid, change_id) in (
                select endpoint_id, txid, change_id from webhook_deliveries
                 where status <> 'pending' and finished_at < now() - $1::int8 * interval '1 hour'
                 limit $2 for update skip locked)",
        retention_hours,
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected())
}
