//! The change log: change events, written in the same transaction as the change by triggers (see
//! the migration `change_log`) or by the statement itself (a seat hold's and a confirm's rows,
//! migration `one_change_row_per_hold`), read here in commit-safe order.
//!
//! A position in the log is `(txid, id)`: the id of the transaction that wrote the row, then the
//! row's own id. A row carrying more than one event (a hold's history and its seats; a confirm's
//! hold, booking and seats) gives its last event the row's position and each one before it the
//! position one less: `(txid, id - 1)`, `(txid, id - 2)`. Row ids step by 3 (migration
//! `one_change_row_per_confirm`; by 2 before it), so those positions are no other row's.
//! Transactions commit out of order, so a reader only reads rows of transactions older than the
//! oldest one still running (`pg_snapshot_xmin` of its snapshot): every row that can still appear
//! is then after every position already read, and a consumer that keeps its cursor misses nothing
//! and sees nothing twice. The price: a transaction left open anywhere on
//! the Postgres cluster holds the feed back until it ends.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Every type of change event, as the feed and webhooks name them.
pub const TYPES: &[&str] = &[
    "hold.created",
    "hold.extended",
    "hold.released",
    "hold.expired",
    "hold.confirmed",
    "hold.rescheduled",
    "booking.confirmed",
    "booking.cancelled",
    "booking.rescheduled",
    "seats.changed",
    "nights.changed",
    "inventory.nights_changed",
    "slots.changed",
    "event.created",
    "event.updated",
    "inventory.created",
    "resource.created",
];

/// The types a public stream carries: availability, nothing about who.
pub const PUBLIC_TYPES: &[&str] = &["seats.changed", "nights.changed", "inventory.nights_changed", "slots.changed"];

/// `names` as known change types, each once, in the order given; None if one is not a type.
pub fn known_types<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Vec<String>> {
    let mut types: Vec<String> = Vec::new();
    for name in names {
        if !TYPES.contains(&name) {
            return None;
        }
        if !types.iter().any(|t| t == name) {
            types.push(name.to_owned());
        }
    }
    Some(types)
}

pub fn is_public(kind: &str) -> bool {
    PUBLIC_TYPES.contains(&kind)
}

/// A position in the change log; its text form `TXID-ID` is the feed's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub txid: i64,
    pub id: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.txid, self.id)
    }
}

impl FromStr for Position {
    type Err = ();

    /// Two non-negative decimal integers joined by `-`, nothing else.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (txid, id) = s.split_once('-').ok_or(())?;
        let number = |part: &str| {
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            part.parse::<i64>().map_err(|_| ())
        };
        Ok(Position { txid: number(txid)?, id: number(id)? })
    }
}

#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub id: i64,
    pub txid: i64,
    pub r#type: String,
    pub at: DateTime<Utc>,
    pub subject_kind: String,
    pub subject_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub inventory_id: Option<Uuid>,
    pub resource_id: Option<Uuid>,
    pub actor: String,
    pub actor_role: String,
    pub request_id: Option<String>,
    pub data: Option<Value>,
}

impl ChangeRow {
    pub fn position(&self) -> Position {
        Position { txid: self.txid, id: self.id }
    }

    /// The event's stable id: its position, as a UUID (version 8, custom). An event's position
    /// never changes, so neither does its id, and no two events share one; nothing is stored for it.
    pub fn uid(&self) -> Uuid {
        let (txid, id) = (self.txid.to_be_bytes(), self.id.to_be_bytes());
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&txid[2..]); // transaction ids stay far below 2^48
        bytes[9..].copy_from_slice(&id[1..]); // and row ids below 2^56
        Uuid::new_v8(bytes)
    }
}

/// A page of the feed.
#[derive(Debug)]
pub struct Page {
    pub changes: Vec<ChangeRow>,
    /// Where the next read starts.
    pub next: Position,
}

/// What [`read`] found.
#[derive(Debug)]
pub enum Read {
    Page(Page),
    /// `after` is at or before a purged position: the consumer missed events. `oldest` is the
    /// first position still served.
    Expired {
        oldest: Position,
    },
    /// `after` lies beyond everything this database has made readable, so no read of it issued
    /// that cursor (one from another database, or from before a restore that started the
    /// transaction ids over): polling with it would wait for ever in silence.
    Ahead {
        oldest: Position,
    },
}

/// Reads up to `limit` changes after `after` (from the oldest kept when None), of `types` when
/// given, oldest first. All in one REPEATABLE READ snapshot: the horizon, the page and where the
/// scan stopped agree with each other.
pub async fn read(
    pool: &PgPool,
    after: Option<Position>,
    types: Option<&[String]>,
    limit: i64,
) -> Result<Read, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    let Bounds { oldest: horizon, end } = bounds(&mut tx).await?;
    let start = match after {
        Some(after) if after < horizon => return Ok(Read::Expired { oldest: horizon }),
        Some(after) if after > end => return Ok(Read::Ahead { oldest: horizon }),
        Some(after) => after,
        None => horizon,
    };
    let changes = sqlx::query_as!(
        ChangeRow,
        r#"select id as "id!", txid::text::int8 as "txid!", type as "type!", at as "at!",
                  subject_kind as "subject_kind!", subject_id, event_id, inventory_id, resource_id,
                  actor as "actor!", actor_role as "actor_role!", request_id, data
             from change_log
            where (txid, row_id) > ($1::text::xid8, $2) and (txid, id) > ($1::text::xid8, $2)
              and txid < pg_snapshot_xmin(pg_current_snapshot())
              and ($3::text[] is null or type = any($3))
            order by txid, row_id, id
            limit $4"#,
        start.txid.to_string(),
        start.id,
        types,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut next = changes.last().map(ChangeRow::position).unwrap_or(start);
    if (changes.len() as i64) < limit && types.is_some() {
        // Everything readable up to the gate was scanned: the next read need not pass over the
        // rows that did not match again.
        let scanned = sqlx::query!(
            r#"select txid::text::int8 as "txid!", id from audit_log
                where (txid, id) > ($1::text::xid8, $2) and txid < pg_snapshot_xmin(pg_current_snapshot())
                order by txid desc, id desc limit 1"#,
            next.txid.to_string(),
            next.id,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = scanned {
            next = Position { txid: row.txid, id: row.id };
        }
    }
    tx.commit().await?;
    Ok(Read::Page(Page { changes, next }))
}

/// Where the readable feed ends now: every row written from now on, or by a transaction still
/// running, comes after this position (`(xmin, 0)`: ids start at 1).
pub async fn readable_end(pool: &PgPool) -> Result<Position, sqlx::Error> {
    let xmin = sqlx::query_scalar!(r#"select pg_snapshot_xmin(pg_current_snapshot())::text::int8 as "xmin!""#)
        .fetch_one(pool)
        .await?;
    Ok(Position { txid: xmin, id: 0 })
}

/// A row as the stream tailer reads it: every row, history ones included (their type and
/// scope are None), straight from the table: each instance reads each row once.
#[derive(Debug)]
pub struct TailRow {
    pub id: i64,
    pub txid: i64,
    pub r#type: Option<String>,
    pub scope_id: Option<Uuid>,
    pub at: DateTime<Utc>,
    pub data: Option<Value>,
}

/// Up to `limit` readable rows after `after`, in feed order: one statement. Each instance reads
/// every row, so compact seat and night changes are expanded here, as [`seats_changed_data`] and
/// [`nights_changed_data`], not by Postgres (`change_data` cost Postgres about 18 µs a row, 45
/// times the read itself).
pub async fn tail(pool: &PgPool, after: Position, limit: i64) -> Result<Vec<TailRow>, sqlx::Error> {
    let mut rows = sqlx::query_as!(
        TailRow,
        r#"select id, txid::text::int8 as "txid!", type, scope_id, at, data from audit_log
            where (txid, id) > ($1::text::xid8, $2) and txid < pg_snapshot_xmin(pg_current_snapshot())
            order by txid, id limit $3"#,
        after.txid.to_string(),
        after.id,
        limit,
    )
    .fetch_all(pool)
    .await?;
    for row in &mut rows {
        match row.r#type.as_deref() {
            Some("seats.changed") => row.data = row.data.take().map(seats_changed_data),
            Some("nights.changed" | "inventory.nights_changed") => {
                row.data = row.data.take().map(nights_changed_data);
            }
            _ => {}
        }
    }
    Ok(rows)
}

/// A `seats.changed` row's data as readers see it, exactly as the SQL function `change_data`
/// makes it: the stored `[[id, status, version], ...]` becomes `{"seats": [{id, status,
/// version}, ...]}` in the same order; data in any other shape is left as it is.
pub fn seats_changed_data(stored: Value) -> Value {
    expand_compact(stored, "seats", |next| {
        let (id, status, version) = (next(), next(), next());
        serde_json::json!({ "id": id, "status": status, "version": version })
    })
}

/// A night change's data as readers see it, exactly as the SQL function `change_data` makes it
/// (migration `compact_night_changes`): the stored `[[night, capacity, overbooking_allowance,
/// closed, held, booked, version], ...]` becomes `{"nights": [{night, capacity,
/// overbooking_allowance, closed, held, booked, available, version}, ...]}` in the same order,
/// `available` computed as `nights_json` computes it; data in any other shape (the object form the
/// triggers write) is left as it is.
pub fn nights_changed_data(stored: Value) -> Value {
    expand_compact(stored, "nights", |next| {
        let (night, capacity, allowance, closed, held, booked, version) =
            (next(), next(), next(), next(), next(), next(), next());
        let count = |v: &Value| v.as_i64().unwrap_or(0);
        let available = if closed.as_bool().unwrap_or(false) {
            0
        } else {
            (count(&capacity) + count(&allowance) - count(&held) - count(&booked)).max(0)
        };
        serde_json::json!({
            "night": night, "capacity": capacity, "overbooking_allowance": allowance, "closed": closed,
            "held": held, "booked": booked, "available": available, "version": version,
        })
    })
}

/// Compact data (an array of entries, each an array of fields) as `{list: [object, ...]}`, each
/// entry made an object by `object`, which takes its fields in order (null past the last);
/// data in any other shape is left as it is.
fn expand_compact(stored: Value, list: &str, object: impl Fn(&mut dyn FnMut() -> Value) -> Value) -> Value {
    let Value::Array(entries) = stored else { return stored };
    let objects = entries
        .into_iter()
        .map(|entry| {
            // As jsonb's `->` reads an entry: an array by index, a scalar as if it were the one
            // element of an array, an object not at all. Taken apart, not copied.
            let mut fields = match entry {
                Value::Array(items) => items.into_iter(),
                Value::Object(_) => Vec::new().into_iter(),
                scalar => vec![scalar].into_iter(),
            };
            object(&mut || fields.next().unwrap_or(Value::Null))
        })
        .collect::<Vec<_>>();
    serde_json::json!({ list: objects })
}

/// Whether committed rows lie after `after` that the gate still hides (an older transaction is
/// still open): the tailer then looks again soon.
pub async fn hidden_after(pool: &PgPool, after: Position) -> Result<bool, sqlx::Error> {
    // Walks the primary key from `after` (an EXISTS would let the planner scan the whole table
    // for a match that sits at its end).
    let next = sqlx::query_scalar!(
        "select id from audit_log where (txid, id) > ($1::text::xid8, $2) order by txid, id limit 1",
        after.txid.to_string(),
        after.id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(next.is_some())
}

/// The public changes about one event, inventory or resource in `(after, upto]`, oldest first,
/// at most `limit` (a stream's catch-up after a reconnect).
pub async fn read_scope(
    pool: &PgPool,
    scope: Uuid,
    after: Position,
    upto: Position,
    limit: i64,
) -> Result<Vec<ChangeRow>, sqlx::Error> {
    let types: Vec<String> = PUBLIC_TYPES.iter().map(|t| (*t).to_owned()).collect();
    sqlx::query_as!(
        ChangeRow,
        r#"select id as "id!", txid::text::int8 as "txid!", type as "type!", at as "at!",
                  subject_kind as "subject_kind!", subject_id, event_id, inventory_id, resource_id,
                  actor as "actor!", actor_role as "actor_role!", request_id, data
             from change_log
            where (txid, row_id) > ($1::text::xid8, $2) and (txid, id) > ($1::text::xid8, $2)
              and (txid, row_id) <= ($3::text::xid8, $4::int8 + 2) and (txid, id) <= ($3::text::xid8, $4)
              and txid < pg_snapshot_xmin(pg_current_snapshot())
              and type = any($5) and $6 in (event_id, inventory_id, resource_id)
            order by txid, row_id, id
            limit $7"#,
        after.txid.to_string(),
        after.id,
        upto.txid.to_string(),
        upto.id,
        &types,
        scope,
        limit,
    )
    .fetch_all(pool)
    .await
}

/// What the feed serves: the positions after `oldest` up to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The last position purged: a cursor before it missed changes.
    pub oldest: Position,
    /// The readable end (as [`readable_end`]): no cursor this database issued lies beyond it.
    pub end: Position,
}

async fn bounds(conn: &mut PgConnection) -> Result<Bounds, sqlx::Error> {
    let row = sqlx::query!(
        r#"select txid::text::int8 as "txid!", id,
                  pg_snapshot_xmin(pg_current_snapshot())::text::int8 as "xmin!"
             from change_log_horizon"#
    )
    .fetch_one(conn)
    .await?;
    Ok(Bounds { oldest: Position { txid: row.txid, id: row.id }, end: Position { txid: row.xmin, id: 0 } })
}

/// The positions the feed serves now (see [`read`]): one statement.
pub async fn served(pool: &PgPool) -> Result<Bounds, sqlx::Error> {
    bounds(&mut *pool.acquire().await?).await
}

/// One purge batch: walks up to `batch` readable rows after the horizon, oldest first, and
/// deletes those older than `retention_hours` up to the first that is not, except history rows
/// (a hold's and its booking's, kept for ever); the horizon moves past them. One instance at a
/// time (the horizon row is locked; another instance skips). Returns how many rows it passed.
pub async fn purge_batch(pool: &PgPool, retention_hours: i64, batch: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(from) =
        sqlx::query!(r#"select txid::text::int8 as "txid!", id from change_log_horizon for update skip locked"#)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(0);
    };
    let walked = sqlx::query!(
        r#"select txid::text::int8 as "txid!", id, at < now() - $3::int8 * interval '1 hour' as "due!"
             from audit_log
            where (txid, id) > ($1::text::xid8, $2) and txid < pg_snapshot_xmin(pg_current_snapshot())
            order by txid, id
            limit $4"#,
        from.txid.to_string(),
        from.id,
        retention_hours,
        batch,
    )
    .fetch_all(&mut *tx)
    .await?;
    let due: Vec<_> = walked.iter().take_while(|row| row.due).collect();
    let Some(last) = due.last() else {
        tx.commit().await?;
        return Ok(0);
    };
    sqlx::query!(
        "delete from audit_log
          where (txid, id) > ($1::text::xid8, $2) and (txid, id) <= ($3::text::xid8, $4) and hold_id is null",
        from.txid.to_string(),
        from.id,
        last.txid.to_string(),
        last.id,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("update change_log_horizon set txid = $1::text::xid8, id = $2", last.txid.to_string(), last.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(due.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let p = Position { txid: 9_000_000_000, id: 42 };
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        assert!(Position { txid: 1, id: 2 } < Position { txid: 2, id: 1 });
        for bad in ["", "-", "1", "1-", "-1", "1--2", "+1-2", "1-2-3", "a-1", "1-99999999999999999999", " 1-2", "1-2\0"]
        {
            assert_eq!(bad.parse::<Position>(), Err(()), "{bad:?}");
        }
    }
}
