use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Executor, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::HoldStatus;

/// What a hold (and the booking made from it) is for: one of the three kinds of inventory.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Seats { event_id: Uuid, seat_ids: Vec<Uuid>, total_cents: i64 },
    Rooms { inventory_id: Uuid, check_in: NaiveDate, check_out: NaiveDate, quantity: i32 },
    Slot { resource_id: Uuid, start: DateTime<Utc>, end: DateTime<Utc> },
}

impl Target {
    /// The seats targeted (empty for the other kinds).
    pub fn seat_ids(&self) -> &[Uuid] {
        match self {
            Target::Seats { seat_ids, .. } => seat_ids,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone)]
pub struct HoldRow {
    pub id: Uuid,
    pub user_id: String,
    /// Stored status; see [`HoldRow::effective_status`].
    pub status: HoldStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub version: i64,
    /// `expires_at <= now()` by the database clock when read.
    pub expired: bool,
    pub target: Target,
}

impl HoldRow {
    /// A hold just created HELD, as the statement that created it returned it.
    pub fn created(
        id: Uuid,
        user_id: &str,
        expires_at: DateTime<Utc>,
        created_at: DateTime<Utc>,
        target: Target,
    ) -> Self {
        Self {
            id,
            user_id: user_id.to_owned(),
            status: HoldStatus::Held,
            expires_at,
            created_at,
            version: 0,
            expired: false,
            target,
        }
    }

    /// What the hold is right now: a HELD hold past its expiry is EXPIRED, swept or not.
    pub fn effective_status(&self) -> HoldStatus {
        if self.status == HoldStatus::Held && self.expired { HoldStatus::Expired } else { self.status }
    }

    /// The seats the hold covers (empty unless it holds seats).
    pub fn seat_ids(&self) -> &[Uuid] {
        self.target.seat_ids()
    }
}

/// The live holds this instance created (or extended), as its own statements returned them: the
/// plans of their confirm, extend and release take them from here instead of reading them (a
/// round trip and a read fewer each; `plan_on_hold` in `pipeline::commands::holds`). Whose a
/// hold is and what it covers never change, so a remembered hold can be out of date only in what
/// another instance did to it since: an extend (a new version and expiry), a release, an expiry,
/// a confirm. The command's guarded statement finds each of those as it does after a read, and
/// then the hold is read under the lock. An entry goes when this instance ends the hold, when
/// the hold expires, or to stay within the capacity; a restart forgets them all, and then the
/// plans read.
pub struct HoldsHere(moka::sync::Cache<Uuid, HoldRow>);

/// At most this many remembered holds (about 0.4 KB each, measured: 20 MB at most).
const HOLDS_HERE_CAPACITY: u64 = 50_000;

/// A remembered hold this close to its expiry is read instead: by then the guarded statement
/// would most likely refuse it, and a read says why before any lock is taken.
const HOLDS_HERE_MARGIN: chrono::Duration = chrono::Duration::seconds(1);

/// Each entry lives until its hold's expiry (by this instance's clock).
struct UntilExpiry;

impl UntilExpiry {
    fn left(hold: &HoldRow) -> Option<std::time::Duration> {
        Some((hold.expires_at - Utc::now()).to_std().unwrap_or_default())
    }
}

impl moka::Expiry<Uuid, HoldRow> for UntilExpiry {
    fn expire_after_create(&self, _: &Uuid, hold: &HoldRow, _: std::time::Instant) -> Option<std::time::Duration> {
        Self::left(hold)
    }

    fn expire_after_update(
        &self,
        _: &Uuid,
        hold: &HoldRow,
        _: std::time::Instant,
        _: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        Self::left(hold)
    }
}

impl Default for HoldsHere {
    fn default() -> Self {
        Self(moka::sync::Cache::builder().max_capacity(HOLDS_HERE_CAPACITY).expire_after(UntilExpiry).build())
    }
}

impl HoldsHere {
    /// Remembers a hold this instance's statement created or extended (HELD, as returned).
    pub fn remember(&self, hold: HoldRow) {
        self.0.insert(hold.id, hold);
    }

    /// The remembered hold, if the caller may act on it and it is not about to expire.
    pub fn live(&self, hold_id: Uuid, may_access: impl FnOnce(&str) -> bool) -> Option<HoldRow> {
        let hold = self.0.get(&hold_id)?;
        let live = hold.status == HoldStatus::Held && Utc::now() + HOLDS_HERE_MARGIN < hold.expires_at;
        (live && may_access(&hold.user_id)).then_some(hold)
    }

    /// Forgets a hold this instance ended (or may have changed without knowing how).
    pub fn forget(&self, hold_id: Uuid) {
        self.0.invalidate(&hold_id);
    }
}

/// The target columns every hold and booking read selects, whatever its kind, from the joins
/// of [`target_joins`].
pub(crate) const TARGET_COLUMNS: &str =
    "coalesce(st.seat_ids, '{}') as seat_ids, coalesce(st.total_cents, 0)::int8 as total_cents,
     hn.check_in, hn.check_out, hn.quantity, lower(sc.span) as slot_start, upper(sc.span) as slot_end";

/// The joins behind [`TARGET_COLUMNS`], for the hold whose id is the SQL expression `hold`:
/// each detail table is read once (a kind that does not apply finds no rows). A room hold's stay
/// is in its own row, or in `hold_nights_before` if it was made before the migration
/// `hold_nights_in_the_hold_row`.
pub(crate) fn target_joins(hold: &str) -> String {
    format!(
        "left join lateral (select array_agg(hs.seat_id order by hs.seat_id) as seat_ids, sum(s.price_cents) as total_cents
                              from hold_seats hs join seats s on s.id = hs.seat_id
                             where hs.hold_id = {hold}) st on true
         left join lateral (select lower(stay) as check_in, upper(stay) as check_out, quantity
                              from holds where id = {hold} and stay is not null
                             union all
                             select min(night), max(night) + 1, max(quantity)
                              from hold_nights_before where hold_id = {hold} having count(*) > 0) hn on true
         left join slot_claims sc on sc.hold_id = {hold}"
    )
}

/// The raw target columns of a hold or booking row, before they become a [`Target`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TargetRecord {
    pub event_id: Option<Uuid>,
    pub inventory_id: Option<Uuid>,
    pub resource_id: Option<Uuid>,
    pub seat_ids: Vec<Uuid>,
    pub total_cents: i64,
    pub check_in: Option<NaiveDate>,
    pub check_out: Option<NaiveDate>,
    pub quantity: Option<i32>,
    pub slot_start: Option<DateTime<Utc>>,
    pub slot_end: Option<DateTime<Utc>>,
}

impl TargetRecord {
    pub fn into_target(self) -> Result<Target, sqlx::Error> {
        let broken = |what: &str| sqlx::Error::Decode(format!("hold target incomplete: {what}").into());
        match (self.event_id, self.inventory_id, self.resource_id) {
            (Some(event_id), None, None) => {
                Ok(Target::Seats { event_id, seat_ids: self.seat_ids, total_cents: self.total_cents })
            }
            (None, Some(inventory_id), None) => Ok(Target::Rooms {
                inventory_id,
                check_in: self.check_in.ok_or_else(|| broken("nights"))?,
                check_out: self.check_out.ok_or_else(|| broken("nights"))?,
                quantity: self.quantity.ok_or_else(|| broken("quantity"))?,
            }),
            (None, None, Some(resource_id)) => Ok(Target::Slot {
                resource_id,
                start: self.slot_start.ok_or_else(|| broken("slot"))?,
                end: self.slot_end.ok_or_else(|| broken("slot"))?,
            }),
            _ => Err(broken("target")),
        }
    }
}

#[derive(sqlx::FromRow)]
struct HoldRecord {
    id: Uuid,
    user_id: String,
    status: HoldStatus,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    version: i64,
    expired: bool,
    #[sqlx(flatten)]
    target: TargetRecord,
}

/// Names the row a read by id looks for so that the planner cannot see the value: `BY_ID` then
/// `join <table> on <table>.id = by_id.id`. A prepared statement runs on the plan Postgres builds
/// once for any value (the generic plan) only while that plan's estimated cost is below the average
/// of the plans it built for given values, and a value in plain sight changes those estimates
/// (through the joins on the same id): measured during `spread`, the confirm's read of its hold
/// was planned afresh on 41-45% of its calls after autovacuum's statistics had invalidated it
/// (BENCHMARKS.md, session 16). Behind a materialized CTE the value cannot change any estimate, so
/// both plans cost the same and the generic one is kept.
pub(crate) const BY_ID: &str = "with by_id as materialized (select $1::uuid as id)";

static FIND_HOLD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{BY_ID}
         select h.id, h.user_id, h.status, h.expires_at, h.created_at, h.version, h.expires_at <= now() as expired,
                h.event_id, h.inventory_id, h.resource_id, {TARGET_COLUMNS}
           from by_id join holds h on h.id = by_id.id
           {}",
        target_joins("h.id")
    )
});

pub async fn find<'e>(db: impl PgExecutor<'e>, hold_id: Uuid) -> Result<Option<HoldRow>, sqlx::Error> {
    let record: Option<HoldRecord> =
        sqlx::query_as(sqlx::AssertSqlSafe(FIND_HOLD.as_str())).bind(hold_id).fetch_optional(db).await?;
    record
        .map(|r| {
            Ok(HoldRow {
                id: r.id,
                user_id: r.user_id,
                status: r.status,
                expires_at: r.expires_at,
                created_at: r.created_at,
                version: r.version,
                expired: r.expired,
                target: r.target.into_target()?,
            })
        })
        .transpose()
}

/// What [`create`] did: the seats it claimed (all or some of those asked), their total price,
/// and the hold's timestamps.
#[derive(Debug)]
pub struct CreatedHold {
    pub claimed: Vec<Uuid>,
    pub total_cents: i64,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The event's `max_seats_per_buyer`, for the caller to check once the seats are claimed.
    pub buyer_limit: Option<i32>,
}

/// Creates a HELD hold and claims its seats in one statement (one round trip): take only seats
/// that are still free (no booking, no live hold; an expired hold never blocks), then insert the
/// hold with the ids of the seats taken (`holds.seat_ids`; see the migration
/// `hold_seats_in_the_hold_row`). Hold and seats get the same expiry: `now()` is the
/// transaction's start, the same in both. Under READ COMMITTED a racing claim blocks on the row
/// lock, then re-evaluates the "still free" predicate against the winner's row and skips it.
/// The caller rolls back unless every seat asked for was claimed. Seats of an event not on sale
/// yet are not claimed unless `before_sale` (an admin).
///
/// The same statement writes the hold's one change row: its history (`hold.created`, as the
/// `holds_audit` trigger would write it) and its seats' availability (`seats.changed`, as
/// `seats_changed` would), when the transaction began with `hold_id` as its logged hold
/// (`WriteTx::begin_as`), which makes those triggers leave this hold and its seats to this row
/// (see the migration `one_change_row_per_hold`); else the triggers write them, as for any writer.
pub async fn create(
    conn: &mut PgConnection,
    hold_id: Uuid,
    event_id: Uuid,
    user_id: &str,
    ttl_seconds: i64,
    seat_ids: &[Uuid],
    admin: bool,
    admission: Option<Uuid>,
) -> Result<CreatedHold, sqlx::Error> {
    sqlx::query_as!(
        CreatedHold,
        r#"with claimed as (
             update seats
                set hold_id = $1, hold_expires_at = now() + $4::int8 * interval '1 second', version = version + 1
              where event_id = $2 and id = any($5)
                and booking_id is null
                and (hold_id is null or hold_expires_at <= now())
                and exists (select 1 from events e
                             where e.id = $2 and e.starts_at > now()
                               and ($6 or ((e.on_sale_at is null or e.on_sale_at <= now())
                                           and (not e.queue_enabled
                                                or exists (select 1 from queue_tickets t
                                                            where t.id = $7 and t.event_id = $2 and t.user_id = $3
                                                              and t.status = 'admitted'
                                                              and t.admission_expires_at > now())))))
             returning id, price_cents, version
         ), hold as (
             insert into holds (id, event_id, user_id, status, expires_at, seat_ids)
             values ($1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second',
                     array(select id from claimed order by id))
             returning expires_at, created_at, seat_ids
         ), logged as (
             insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
             select $1, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at), 'seats.changed', $2,
                    coalesce((select jsonb_agg(jsonb_build_array(c.id, 'HELD', c.version) order by c.id) from claimed c),
                             '[]'),
                    change_actor(), change_actor_role(), change_request_id()
               from hold
              where change_logged_hold() = $1
         )
         select hold.seat_ids as "claimed!",
                (select coalesce(sum(price_cents), 0)::int8 from claimed) as "total_cents!",
                hold.expires_at as "expires_at!", hold.created_at as "created_at!",
                (select max_seats_per_buyer from events where id = $2) as buyer_limit
           from hold"#,
        hold_id,
        event_id,
        user_id,
        ttl_seconds,
        seat_ids,
        admin,
        admission,
    )
    .fetch_one(conn)
    .await
}

/// How many live holds (HELD and unexpired, of every kind) the user `$1` has: `super::write_tx`
/// sends it with the BEGIN, the user id quoted in place of `$1`, after the statement that takes
/// the user's advisory lock, so that under READ COMMITTED its snapshot sees every hold the user's
/// other transactions committed before we got the lock.
pub(crate) const LIVE_HOLDS_OF: &str =
    "select count(*) from holds where user_id = $1 and status = 'HELD' and expires_at > now()";

/// Inserts a seat hold in `status` with `expires_at = now() + ttl` and its seats (sorted, as
/// [`create`] records them); returns the expiry.
pub async fn insert(
    conn: &mut PgConnection,
    hold_id: Uuid,
    event_id: Uuid,
    user_id: &str,
    status: HoldStatus,
    ttl_seconds: i64,
    seat_ids: &[Uuid],
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into holds (id, event_id, user_id, status, expires_at, seat_ids)
         values ($1, $2, $3, $4, now() + $5::int8 * interval '1 second', array(select unnest($6::uuid[]) order by 1))
         returning expires_at",
        hold_id,
        event_id,
        user_id,
        status as HoldStatus,
        ttl_seconds,
        seat_ids,
    )
    .fetch_one(conn)
    .await
}

/// Moves a live hold at the version we read to `to`. Returns false when the hold changed,
/// ended, or expired meanwhile (the caller re-reads to say which).
pub async fn transition(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    to: HoldStatus,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "update holds set status = $3, version = version + 1, updated_at = now()
          where id = $1 and version = $2 and status = 'HELD' and expires_at > now()",
        hold_id,
        seen_version,
        to as HoldStatus,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// Which kinds of claim a set of holds may have: each kind is given back by a statement of its
/// own, run only when some hold is of that kind (see [`end_claims`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claims {
    pub seats: bool,
    pub nights: bool,
    pub slots: bool,
}

impl Claims {
    pub fn of(target: &Target) -> Self {
        match target {
            Target::Seats { .. } => Claims { seats: true, ..Claims::default() },
            Target::Rooms { .. } => Claims { nights: true, ..Claims::default() },
            Target::Slot { .. } => Claims { slots: true, ..Claims::default() },
        }
    }
}

/// Gives back everything holds that have just left HELD (released or expired, in this same
/// transaction) still claim: their seats, their units on each night, their slot, each kind in a
/// statement of its own that runs only when `claims` has that kind. A statement that updates a
/// table runs that table's statement-level triggers (the change log's `seats_changed`,
/// `nights_changed`, `slots_changed`) even when it changes no row: one statement for every kind
/// would run all three for every release. Seats claimed since by someone else are untouched.
/// A hold's seats are found through `hold_seats` (a view of each hold's `seat_ids`, and of the
/// rows of holds made before the migration `hold_seats_in_the_hold_row`): `seats.hold_id`
/// carries no index, so that claiming and freeing a seat are HOT updates (see the migration
/// `lean_write_path`).
pub async fn end_claims(conn: &mut PgConnection, hold_ids: &[Uuid], claims: Claims) -> Result<(), sqlx::Error> {
    if claims.seats {
        sqlx::query!(
            "update seats set hold_id = null, hold_expires_at = null, version = version + 1
              where id in (select seat_id from hold_seats where hold_id = any($1)) and hold_id = any($1)",
            hold_ids,
        )
        .execute(&mut *conn)
        .await?;
    }
    if claims.nights {
        sqlx::query!(
            "update inventory_nights n set held = n.held - x.quantity, version = n.version + 1
               from (select inventory_id, night, sum(quantity)::int4 as quantity
                       from hold_nights where hold_id = any($1) group by inventory_id, night) x
              where n.inventory_id = x.inventory_id and n.night = x.night",
            hold_ids,
        )
        .execute(&mut *conn)
        .await?;
    }
    if claims.slots {
        sqlx::query!("update slot_claims set active = false where hold_id = any($1) and active", hold_ids)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What [`extend`] did.
pub enum Extended {
    /// The hold now expires at this instant, and so does every one of its seats.
    To(DateTime<Utc>),
    /// A guard failed: the hold changed, ended, expired, or would outlive its lifetime cap.
    Refused,
    /// The hold was extended but owns fewer seats than it was granted: the caller must roll back.
    LostSeats,
}

/// Extends a live hold at the version we read, within its lifetime cap, and moves its seats'
/// expiry with it. The decisions use `statement_timestamp()`, not the transaction's start
/// (`now()`): a transaction that waited for a row lock must not extend a hold that expired
/// meanwhile. Every seat the hold was granted (`seat_count`) must still be its own.
pub async fn extend(
    conn: &mut PgConnection,
    hold_id: Uuid,
    seen_version: i64,
    ttl_seconds: i64,
    max_lifetime_seconds: i64,
    seat_count: usize,
) -> Result<Extended, sqlx::Error> {
    let expires_at = sqlx::query_scalar!(
        "update holds set expires_at = statement_timestamp() + $3::int8 * interval '1 second', version = version + 1,
                          updated_at = statement_timestamp()
          where id = $1 and version = $2 and status = 'HELD' and expires_at > statement_timestamp()
            and statement_timestamp() + $3::int8 * interval '1 second' <= created_at + $4::int8 * interval '1 second'
         returning expires_at",
        hold_id,
        seen_version,
        ttl_seconds,
        max_lifetime_seconds,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(expires_at) = expires_at else {
        return Ok(Extended::Refused);
    };
    if seat_count == 0 {
        return Ok(Extended::To(expires_at));
    }
    let moved = sqlx::query!(
        "update seats set hold_expires_at = $2, version = version + 1
          where id in (select seat_id from hold_seats where hold_id = $1) and hold_id = $1",
        hold_id,
        expires_at,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(if moved as usize == seat_count { Extended::To(expires_at) } else { Extended::LostSeats })
}

/// A hold that has just ended, with the kind of claim it had.
struct Ended {
    id: Uuid,
    seats: bool,
    nights: bool,
    slots: bool,
}

impl Ended {
    /// Gives back what these holds claimed ([`end_claims`]); returns how many there were.
    async fn give_back(conn: &mut PgConnection, ended: &[Ended]) -> Result<u64, sqlx::Error> {
        if ended.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = ended.iter().map(|h| h.id).collect();
        let claims = Claims {
            seats: ended.iter().any(|h| h.seats),
            nights: ended.iter().any(|h| h.nights),
            slots: ended.iter().any(|h| h.slots),
        };
        end_claims(conn, &ids, claims).await?;
        Ok(ended.len() as u64)
    }
}

/// Marks EXPIRED those of `hold_ids` that are HELD past their expiry, and gives back what they
/// claimed, so a request never waits for the sweeper. Returns how many expired.
pub async fn expire(conn: &mut PgConnection, hold_ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    if hold_ids.is_empty() {
        return Ok(0);
    }
    let expired = sqlx::query_as!(
        Ended,
        r#"update holds set status = 'EXPIRED', version = version + 1, updated_at = now()
          where id = any($1) and status = 'HELD' and expires_at <= now()
         returning id, event_id is not null as "seats!", inventory_id is not null as "nights!",
                   resource_id is not null as "slots!""#,
        hold_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ended::give_back(conn, &expired).await
}

/// Bounds how long a sweeper batch waits for a row lock, 100 ms, before it gives up and rolls back
/// ([`sweep_yielded`]): a room hold locks its nights before it expires the stale holds in its way,
/// the sweeper locks the holds before their nights, and the request must not wait for Postgres's
/// deadlock detection (a second) to break that circle, or lose to it.
const SWEEP_LOCK_TIMEOUT: &str = "select set_config('lock_timeout', '100ms', true)";

/// One sweeper batch, in the caller's transaction: marks expired holds EXPIRED and gives back what
/// they claimed, skipping hold rows another instance (or a request) holds. Returns how many holds
/// expired. Waits at most 100 ms ([`SWEEP_LOCK_TIMEOUT`]) for any other row (a night, a seat): when
/// [`sweep_yielded`] says so of the error, the caller rolls back and tries again at its next tick.
pub async fn expire_batch(conn: &mut PgConnection, batch: i64) -> Result<u64, sqlx::Error> {
    conn.execute(SWEEP_LOCK_TIMEOUT).await?;
    let expired = sqlx::query_as!(
        Ended,
        r#"update holds h set status = 'EXPIRED', version = version + 1, updated_at = now()
           from (select id from holds
                  where status = 'HELD' and expires_at <= now()
                  order by expires_at
                  limit $1
                  for update skip locked) due
          where h.id = due.id
         returning h.id, h.event_id is not null as "seats!", h.inventory_id is not null as "nights!",
                   h.resource_id is not null as "slots!""#,
        batch,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ended::give_back(conn, &expired).await
}

/// Whether a sweeper batch gave up waiting for a row lock ([`SWEEP_LOCK_TIMEOUT`]), leaving it to
/// the request that holds the row.
pub fn sweep_yielded(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.code().as_deref() == Some("55P03"))
}
