//! Time-slot resources and their slot claims. The exclusion constraint `slot_claims_no_overlap`
//! refuses two active claims whose buffered ranges overlap on one resource, whatever the locks did.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::holds;
use crate::domain::SlotRules;
use crate::domain::slots::{OpeningHoursSpec, SlotMinutes};

#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub id: Uuid,
    pub name: String,
    pub time_zone: String,
    pub opening_hours: Value,
    pub granularity_minutes: i32,
    pub buffer_before_minutes: i32,
    pub buffer_after_minutes: i32,
    pub min_notice_minutes: i32,
    pub cancellation_window_minutes: i32,
    pub created_at: DateTime<Utc>,
}

impl ResourceRow {
    /// The stored rules, parsed again (they were validated on the way in).
    pub fn rules(&self) -> Result<SlotRules, String> {
        let hours: OpeningHoursSpec = serde_json::from_value(self.opening_hours.clone()).map_err(|e| e.to_string())?;
        let minutes = SlotMinutes {
            granularity: i64::from(self.granularity_minutes),
            buffer_before: i64::from(self.buffer_before_minutes),
            buffer_after: i64::from(self.buffer_after_minutes),
            min_notice: i64::from(self.min_notice_minutes),
            cancellation_window: i64::from(self.cancellation_window_minutes),
        };
        SlotRules::parse(&self.time_zone, &hours, minutes).map_err(|e| e.to_string())
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    rules: &SlotRules,
    created_by: &str,
) -> Result<ResourceRow, sqlx::Error> {
    let hours = serde_json::to_value(rules.opening_hours_spec()).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query_as!(
        ResourceRow,
        "insert into resources (id, name, time_zone, opening_hours, granularity_minutes, buffer_before_minutes,
                                buffer_after_minutes, min_notice_minutes, cancellation_window_minutes, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         returning id, name, time_zone, opening_hours, granularity_minutes, buffer_before_minutes,
                   buffer_after_minutes, min_notice_minutes, cancellation_window_minutes, created_at",
        id,
        name,
        rules.tz.name(),
        hours,
        rules.granularity as i32,
        rules.buffer_before as i32,
        rules.buffer_after as i32,
        rules.min_notice as i32,
        rules.cancellation_window as i32,
        created_by,
    )
    .fetch_one(conn)
    .await
}

/// The rules of the resources this instance has read, kept for ten minutes: every slot hold,
/// confirm, release, cancel and reschedule needs its resource's rules (to check the slot, or for
/// the lock cells its buffered range covers), and a resource never changes once created (nothing
/// updates `resources`), so reading it once saves each of them a round trip and a read-only
/// transaction. The expiry only bounds how long a row changed by hand in the database goes
/// unseen; Postgres's exclusion constraint guards the claims whatever rules were used. Unknown
/// resources are not kept.
pub struct RulesCache(moka::sync::Cache<Uuid, Arc<SlotRules>>);

impl Default for RulesCache {
    fn default() -> Self {
        Self(moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(600)).build())
    }
}

impl RulesCache {
    pub fn get(&self, resource_id: Uuid) -> Option<Arc<SlotRules>> {
        self.0.get(&resource_id)
    }

    pub fn insert(&self, resource_id: Uuid, rules: Arc<SlotRules>) {
        self.0.insert(resource_id, rules);
    }
}

pub async fn find<'e>(db: impl PgExecutor<'e>, id: Uuid) -> Result<Option<ResourceRow>, sqlx::Error> {
    sqlx::query_as!(
        ResourceRow,
        "select id, name, time_zone, opening_hours, granularity_minutes, buffer_before_minutes,
                buffer_after_minutes, min_notice_minutes, cancellation_window_minutes, created_at
           from resources where id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

/// Blocked ranges of live claims (a HELD unexpired hold, or a CONFIRMED booking) on the
/// resource that overlap `[from, to)`.
pub async fn live_blocked<'e>(
    db: impl PgExecutor<'e>,
    resource_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select lower(c.blocked) as "start!", upper(c.blocked) as "end!"
           from slot_claims c join holds h on h.id = c.hold_id
          where c.resource_id = $1 and c.active and c.blocked && tstzrange($2, $3, '[)')
            and (h.status = 'CONFIRMED' or (h.status = 'HELD' and h.expires_at > now()))"#,
        resource_id,
        from,
        to,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.start, r.end)).collect())
}

/// An active claim whose buffered range overlaps another's: its hold, its slot (not buffered),
/// and whether it is live (a hold past its expiry that the sweeper has not reached is not).
#[derive(Debug)]
pub struct Overlap {
    pub hold_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub live: bool,
}

/// Active claims on the resource, other than `except`'s, whose buffered ranges overlap
/// `blocked`, earliest first: what a claim there would collide with.
pub async fn overlapping(
    conn: &mut PgConnection,
    resource_id: Uuid,
    blocked: (DateTime<Utc>, DateTime<Utc>),
    except: Option<Uuid>,
) -> Result<Vec<Overlap>, sqlx::Error> {
    sqlx::query_as!(
        Overlap,
        r#"select c.hold_id, lower(c.span) as "start!", upper(c.span) as "end!",
                h.status = 'CONFIRMED' or h.expires_at > now() as "live!"
           from slot_claims c join holds h on h.id = c.hold_id
          where c.resource_id = $1 and c.active and c.blocked && tstzrange($2, $3, '[)')
            and c.hold_id is distinct from $4
          order by lower(c.span)"#,
        resource_id,
        blocked.0,
        blocked.1,
        except,
    )
    .fetch_all(conn)
    .await
}

/// Makes room for a claim on `blocked`: expires the overlapping holds that are past their expiry
/// (see [`holds::expire`]), and returns the slot of the first live overlap, if any.
pub async fn clear_for_claim(
    conn: &mut PgConnection,
    resource_id: Uuid,
    blocked: (DateTime<Utc>, DateTime<Utc>),
    except: Option<Uuid>,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let overlaps = overlapping(conn, resource_id, blocked, except).await?;
    let dead: Vec<Uuid> = overlaps.iter().filter(|o| !o.live).map(|o| o.hold_id).collect();
    holds::expire(conn, &dead).await?;
    Ok(overlaps.iter().find(|o| o.live).map(|o| (o.start, o.end)))
}

/// Inserts a HELD hold and its active slot claim in one statement.
///
/// The same statement writes the hold's change row, as `holds::create` does for seats, when the
/// transaction began with `hold_id` as its logged hold: its history (`hold.created`, as the
/// `holds_audit` trigger would write it) and, when the BEGIN also named this resource as the
/// logged scope, the slot taken (`slots.changed`, as `slots_changed` would write it, which then
/// does not run; see the migration `room_and_slot_holds_log_their_availability`). Else the
/// triggers write them.
#[allow(clippy::too_many_arguments)]
pub async fn create_hold(
    conn: &mut PgConnection,
    hold_id: Uuid,
    resource_id: Uuid,
    user_id: &str,
    ttl_seconds: i64,
    span: (DateTime<Utc>, DateTime<Utc>),
    blocked: (DateTime<Utc>, DateTime<Utc>),
) -> Result<(DateTime<Utc>, DateTime<Utc>), sqlx::Error> {
    let row = sqlx::query!(
        r#"with hold as (
             insert into holds (id, resource_id, user_id, status, expires_at)
             values ($1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second')
             returning id, expires_at, created_at
         ), claim as (
             insert into slot_claims (hold_id, resource_id, span, blocked)
             select id, $2, tstzrange($5, $6, '[)'), tstzrange($7, $8, '[)') from hold
             returning span
         ), logged as (
             insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
             select $1, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at),
                    case when slots.logged then 'slots.changed' end, case when slots.logged then $2::uuid end,
                    case when slots.logged then
                        (select jsonb_build_object('taken', jsonb_agg(jsonb_build_object('start', lower(c.span), 'end', upper(c.span))),
                                                   'freed', '[]'::jsonb)
                           from claim c)
                    end,
                    change_actor(), change_actor_role(), change_request_id()
               from hold
              cross join (select change_logged_scope() = $2 as logged) slots
              where change_logged_hold() = $1
         )
         select expires_at as "expires_at!", created_at as "created_at!" from hold"#,
        hold_id,
        resource_id,
        user_id,
        ttl_seconds,
        span.0,
        span.1,
        blocked.0,
        blocked.1,
    )
    .fetch_one(conn)
    .await?;
    Ok((row.expires_at, row.created_at))
}

/// Moves a booked slot: the new range is taken and the old one freed in one row update, so
/// the exclusion constraint sees both at once. Returns false when the claim is not active.
pub async fn move_claim(
    conn: &mut PgConnection,
    hold_id: Uuid,
    span: (DateTime<Utc>, DateTime<Utc>),
    blocked: (DateTime<Utc>, DateTime<Utc>),
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "update slot_claims set span = tstzrange($2, $3, '[)'), blocked = tstzrange($4, $5, '[)')
          where hold_id = $1 and active",
        hold_id,
        span.0,
        span.1,
        blocked.0,
        blocked.1,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}
