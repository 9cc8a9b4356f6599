//! The booking invariants, as queries that must each return zero. Tests, the load generator
//! and operators all check the same definitions.

use sqlx::PgPool;

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
    (
        // The recovery job marks these FAILED within a sweep interval; 5 s of slack.
        "idempotency record stuck IN_PROGRESS past its lease",
        "select count(*) from idempotency_records where state = 'IN_PROGRESS' and lease_until < now() - interval '5 seconds'",
    ),
];

/// Every invariant that does not hold, with its count of offending rows.
pub async fn violations(db: &PgPool) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let mut found = Vec::new();
    for (name, sql) in CHECKS {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(*sql)).fetch_one(db).await?;
        if n > 0 {
            found.push((*name, n));
        }
    }
    Ok(found)
}
