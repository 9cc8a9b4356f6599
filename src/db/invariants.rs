//! The booking invariants, for every kind of inventory, as queries that must each return zero. Tests, the load generator
//! and operators all check the same definitions.

use sqlx::{PgConnection, PgPool};

/// (name, query returning the number of violations).
pub const CHECKS: &[(&str, &str)] = &[
    (
        "seat sold twice",
        "select count(*) from (select seat_id from booking_seats where active group by seat_id having count(*) > 1) d",
    ),
    ("seat both held and booked", "select count(*) from seats where hold_id is not null and booking_id is not null"),
    (
        // What a client was told (201 hold) is still true while the hold is live.
        "live hold lost a seat it was granted",
        "select count(*) from holds h join hold_seats hs on hs.hold_id = h.id join seats s on s.id = hs.seat_id
          where h.status = 'HELD' and h.expires_at > now() and s.hold_id is distinct from h.id",
    ),
    (
        "confirmed booking lost a seat",
        "select count(*) from bookings b join booking_seats bs on bs.booking_id = b.id join seats s on s.id = bs.seat_id
          where b.status = 'CONFIRMED' and (not bs.active or s.booking_id is distinct from b.id)",
    ),
    (
        "seat claimed by a hold that is not live",
        "select count(*) from seats s join holds h on h.id = s.hold_id where h.status <> 'HELD'",
    ),
    ("night over its capacity", "select count(*) from inventory_nights where held + booked > capacity + overbooking_allowance"),
    ("night counters differ from its live holds and bookings", super::inventories::COUNTER_MISMATCHES),
    (
        "two live slot claims overlap on one resource",
        "select count(*) from slot_claims a join slot_claims b
            on a.resource_id = b.resource_id and a.hold_id < b.hold_id
         where a.active and b.active and a.blocked && b.blocked",
    ),
    (
        // Active exactly while the hold is HELD, or CONFIRMED with a CONFIRMED booking.
        "slot claim active for a hold or booking that ended, or inactive for a live one",
        "select count(*) from slot_claims c join holds h on h.id = c.hold_id left join bookings b on b.hold_id = h.id
          where c.active <> (h.status = 'HELD' or (h.status = 'CONFIRMED' and b.status = 'CONFIRMED'))",
    ),
    (
        // Kept by construction since the hot-path foreign keys went (migration lean_write_path).
        "hold, booking or slot claim of an unknown event, inventory or resource",
        "select (select count(*) from holds t
                  where (t.event_id is not null and not exists (select 1 from events p where p.id = t.event_id))
                     or (t.inventory_id is not null and not exists (select 1 from inventories p where p.id = t.inventory_id))
                     or (t.resource_id is not null and not exists (select 1 from resources p where p.id = t.resource_id)))
              + (select count(*) from bookings t
                  where (t.event_id is not null and not exists (select 1 from events p where p.id = t.event_id))
                     or (t.inventory_id is not null and not exists (select 1 from inventories p where p.id = t.inventory_id))
                     or (t.resource_id is not null and not exists (select 1 from resources p where p.id = t.resource_id)))
              + (select count(*) from slot_claims t where not exists (select 1 from resources p where p.id = t.resource_id))",
    ),
    (
        // Kept by construction since the write path's foreign keys to holds, bookings, seats and
        // nights went (migration lean_trigger_conditions_and_keys): each such row is written in
        // the transaction that inserts the hold or booking it names, from seats or nights that
        // transaction found, and none of these is ever deleted.
        "claim or record of an unknown hold, booking, seat or night",
        "select (select count(*) from seats s
                  where (s.hold_id is not null and not exists (select 1 from holds h where h.id = s.hold_id))
                     or (s.booking_id is not null and not exists (select 1 from bookings b where b.id = s.booking_id)))
              + (select count(*) from hold_seats t
                  where not exists (select 1 from holds h where h.id = t.hold_id)
                     or not exists (select 1 from seats s where s.id = t.seat_id))
              + (select count(*) from booking_seats t
                  where not exists (select 1 from bookings b where b.id = t.booking_id)
                     or not exists (select 1 from seats s where s.id = t.seat_id))
              + (select count(*) from bookings t where not exists (select 1 from holds h where h.id = t.hold_id))
              + (select count(*) from hold_nights t
                  where not exists (select 1 from holds h where h.id = t.hold_id)
                     or not exists (select 1 from inventory_nights n
                                     where n.inventory_id = t.inventory_id and n.night = t.night))
              + (select count(*) from slot_claims t where not exists (select 1 from holds h where h.id = t.hold_id))",
    ),
    (
        // Kept by construction since the change log's foreign keys went (migration
        // audit_history_without_foreign_keys): history rows are written by the triggers of the
        // rows they name, and holds and bookings are never deleted.
        "history row of an unknown hold or booking",
        "select count(*) from audit_log a
          where a.hold_id is not null
            and (not exists (select 1 from holds h where h.id = a.hold_id)
                 or (a.booking_id is not null and not exists (select 1 from bookings b where b.id = a.booking_id)))",
    ),
    (
        // A row carrying several events gives them the positions below its own, `(txid, id - 1)`
        // and `(txid, id - 2)`, which no row has while row ids step by 3 (migrations
        // `one_change_row_per_hold`, `one_change_row_per_confirm`); a sequence reset to a smaller
        // step would make two events share a position, and a consumer would drop one.
        "two change events at one feed position",
        "select count(*) from audit_log a
          where (a.hold_id is not null and a.type is not null or a.hold_from_status is not null)
            and exists (select 1 from audit_log o
                         where o.txid = a.txid and o.id < a.id
                           and o.id >= a.id - (a.hold_id is not null and a.type is not null)::int
                                           - (a.hold_from_status is not null)::int)",
    ),
    (
        // Feed positions are transaction ids (`db::changes`). In a snapshot every committed row
        // has an id below the next one to be assigned, unless the rows came from another
        // cluster whose ids ran ahead (a logical dump restored into a new one): the feed would
        // then hide every later change behind them. Physical backups keep the ids.
        "change log position beyond this database's transaction ids",
        "select (select count(*) from (select txid from audit_log order by txid desc, id desc limit 1) last
                  where last.txid >= pg_snapshot_xmax(pg_current_snapshot()))
              + (select count(*) from change_log_horizon where txid >= pg_snapshot_xmax(pg_current_snapshot()))",
    ),
    (
        // The recovery job marks these FAILED within a sweep interval; 5 s of slack.
        "idempotency record stuck IN_PROGRESS past its lease",
        "select count(*) from idempotency_records where state = 'IN_PROGRESS' and lease_until < now() - interval '5 seconds'",
    ),
];

/// Every invariant that does not hold, with its count of offending rows.
pub async fn violations(db: &PgPool) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    run_checks(&mut conn).await
}

async fn run_checks(conn: &mut PgConnection) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let mut found = Vec::new();
    for (name, sql) in CHECKS {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(*sql)).fetch_one(&mut *conn).await?;
        if n > 0 {
            found.push((*name, n));
        }
    }
    Ok(found)
}

/// The advisory lock key that lets one instance at a time run the periodic checks.
const CHECK_LOCK: i64 = 0x686f_6c64_6661_7374; // "holdfast"

/// What a periodic tick did.
#[derive(Debug, PartialEq, Eq)]
pub enum Periodic {
    /// This instance ran the checks: what they found.
    Ran(Vec<(&'static str, i64)>),
    /// Another instance ran them within the spacing, or is running them now: what the last
    /// finished run found, if any has finished.
    Skipped(Option<Vec<(&'static str, i64)>>),
}

/// The periodic run, once per `spacing` across every instance (migration `periodic_runs`): an
/// instance runs the checks only if it moves the job's `started_at` forward, which it can only
/// when the last run started at least `spacing` ago; then it stores what they found, for the
/// instances that skip to publish too. The checks run as in [`violations_if_first`].
pub async fn periodic(db: &PgPool, spacing: std::time::Duration) -> Result<Periodic, sqlx::Error> {
    let claimed = sqlx::query_scalar!(
        r#"insert into periodic_runs (job, started_at) values ('integrity_check', now())
           on conflict (job) do update set started_at = excluded.started_at
            where periodic_runs.started_at <= now() - make_interval(secs => $1)
           returning true as "claimed!""#,
        spacing.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?
    .is_some();
    if !claimed {
        return Ok(Periodic::Skipped(last_result(db).await?));
    }
    let Some(found) = violations_if_first(db).await? else {
        return Ok(Periodic::Skipped(None));
    };
    let result: serde_json::Map<String, serde_json::Value> =
        found.iter().map(|(name, n)| ((*name).to_owned(), (*n).into())).collect();
    sqlx::query!(
        "update periodic_runs set finished_at = now(), result = $1 where job = 'integrity_check'",
        serde_json::Value::Object(result),
    )
    .execute(db)
    .await?;
    Ok(Periodic::Ran(found))
}

/// What the last finished periodic run found, by this release's names of the checks (a check
/// that another release has and this one has not is left out).
async fn last_result(db: &PgPool) -> Result<Option<Vec<(&'static str, i64)>>, sqlx::Error> {
    let stored = sqlx::query_scalar!(
        r#"select result as "result!" from periodic_runs where job = 'integrity_check' and result is not null"#
    )
    .fetch_optional(db)
    .await?;
    Ok(stored.map(|result| {
        CHECKS
            .iter()
            .filter_map(|(name, _)| result.get(*name).and_then(serde_json::Value::as_i64).map(|n| (*name, n)))
            .collect()
    }))
}

/// Every check in one read-only REPEATABLE READ transaction (one snapshot, so the checks agree
/// with each other), but only if no other instance is running them now
/// (`pg_try_advisory_xact_lock`: a run that outlasts the spacing of [`periodic`] is not
/// overlapped by the next). None when another instance has the lock.
async fn violations_if_first(db: &PgPool) -> Result<Option<Vec<(&'static str, i64)>>, sqlx::Error> {
    let mut tx = db.begin_with("begin isolation level repeatable read, read only").await?;
    let first = sqlx::query_scalar!(r#"select pg_try_advisory_xact_lock($1) as "first!""#, CHECK_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !first {
        return Ok(None);
    }
    let found = run_checks(&mut tx).await?;
    tx.commit().await?;
    Ok(Some(found))
}

/// Publishes a check's results as `holdfast_invariant_violations{check}` (0 for every check
/// that holds), for alerting.
pub fn report(violations: &[(&'static str, i64)]) {
    for (name, _) in CHECKS {
        let count = violations.iter().find(|(v, _)| v == name).map_or(0, |(_, n)| *n);
        metrics::gauge!("holdfast_invariant_violations", "check" => *name).set(count as f64);
    }
}
