//! The `Idempotency-Key` state machine, kept in Postgres.
//!
//! ```text
//!   (none) --claim--> IN_PROGRESS --complete (same transaction as the effect)--> SUCCEEDED
//!                         |  \--fail (transient error)--> FAILED --claim (takeover)--> IN_PROGRESS
//!                         \--lease runs out (crashed instance)--> taken over by the next claim
//! ```
//! SUCCEEDED means "execution settled, here is the answer": a 2xx, or a business 4xx such as a
//! seat already taken; both are replayed. FAILED means "nothing happened, run it again".
//!
//! No transaction stays open while the caller waits for locks: [`claim`] is one autocommit
//! statement (plus a read on conflict), and [`complete`] runs inside the business transaction,
//! conditioned on our `claim_token`, so the effect and the stored answer commit together or not
//! at all, and a takeover while we were paused makes our commit touch nothing.
//!
//! Most requests need no IN_PROGRESS record at all: a new key whose lock is free at once is
//! executed first and its record written once, settled, by [`record`] inside the business
//! transaction (one commit per request). The primary key is the fence: if another execution
//! owns the key, or takes it while we run, our insert finds its row and we roll back; the claim
//! above then says what that execution answered. A crash before our commit leaves no record,
//! so a retry simply runs. Requests that must wait (a contended lock, hot seats) claim first,
//! as above, so that a retry meanwhile hears IDEMPOTENCY_IN_PROGRESS.
//!
//! A settled record keeps its answer packed (`response_packed`, see [`packed`]) or, with
//! `IDEMPOTENCY_PACKED_ANSWERS=false`, as JSON (`response_body`); every read takes either.
//! Claims settled by a batch's probe (a stampede's refusals) keep theirs as JSON: the batch's
//! statement builds them in Postgres.

mod batch;
mod hot_seats;
pub mod packed;

use std::sync::Arc;
use std::time::Duration;

use postgres_protocol::escape::escape_literal;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::lock::Redlock;

pub use batch::ClaimBatches;
pub use hot_seats::HotSeats;

#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the key was used with a different request")]
    KeyReused,
    #[error("a request with this key is in progress")]
    InProgress,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Who is asking, with which key, for what.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    pub user_id: String,
    pub key: String,
    pub fingerprint: Vec<u8>,
}

/// Proof that this execution owns the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(Uuid);

#[derive(Debug)]
pub enum Claim {
    /// Ours to execute; complete or fail it with this token.
    Owned(ClaimToken),
    /// Settled before: replay this answer.
    Replay { status: u16, body: Value },
    /// Settled by this claim itself, because its probe found the outcome already decided (the
    /// seats are taken). Committed synchronously: durable, ready to be answered.
    Settled { status: u16, body: Value },
}

/// A question the claim can answer in the same statement: are any of these seats taken
/// (booked, or under a live hold)? If so the request's outcome is already decided, and the
/// record is inserted settled with `status` and `body`, its `seat_ids` set to the taken seats.
/// This is what keeps a stampede cheap: the losers' claims for one seat set share a statement
/// (see [`ClaimBatches`]), and none of them takes a lock round.
pub struct SeatProbe<'a> {
    pub event_id: Uuid,
    pub seat_ids: &'a [Uuid],
    pub status: u16,
    pub body: &'a Value,
    /// The probe is worth running only while the seats are contended (hot); otherwise a plain
    /// insert will do. Asked again once a connection is in hand: in a burst, by then the first
    /// losers have spoken.
    pub hot_seats: &'a HotSeats,
    /// Where probed claims for the same seats are gathered.
    pub batches: &'a Arc<ClaimBatches>,
    /// The seats' lock, and its keys. Before a batch inserts, it asks whether the seats are
    /// being decided right now (someone holds their lock, inside the critical section that may
    /// take them): if so it waits a moment for that outcome, instead of sending every claim in
    /// it on to queue for the lock.
    pub redlock: &'a Arc<Redlock>,
    pub lock_keys: Vec<String>,
}

impl SeatProbe<'_> {
    fn wanted(&self) -> bool {
        self.hot_seats.any_hot(self.seat_ids)
    }
}

/// SHA-256 over method, path and the canonical JSON body, separated so that no two different
/// requests can produce the same input.
pub fn fingerprint(method: &str, path: &str, canonical_body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0u8]);
    hasher.update(path.as_bytes());
    hasher.update([0u8]);
    hasher.update(canonical_body);
    hasher.finalize().to_vec()
}

struct Existing {
    fingerprint: Vec<u8>,
    state: String,
    claim_token: Uuid,
    lease_live: bool,
    response_status: Option<i16>,
    response_body: Option<Value>,
    response_packed: Option<Vec<u8>>,
}

fn outcome(label: &'static str) {
    metrics::counter!("holdfast_idempotency_outcomes_total", "outcome" => label).increment(1);
}

/// Claims the key, or says why not. With a probe that is wanted, the claim goes in a batch
/// with the others for the same seats; otherwise it is a plain insert.
#[tracing::instrument(skip_all, fields(key = %req.key), err)]
pub async fn claim(
    pool: &PgPool,
    req: &IdempotentRequest,
    lease: Duration,
    probe: Option<&SeatProbe<'_>>,
) -> Result<Claim, IdempotencyError> {
    let contended = || probe.filter(|p| p.wanted());
    if let Some(probe) = contended() {
        return probe.batches.claim(pool, req, lease, probe).await;
    }
    let conn = pool.acquire().await?;
    if let Some(probe) = contended() {
        drop(conn);
        return probe.batches.claim(pool, req, lease, probe).await;
    }
    claim_alone(conn, req, lease).await
}

/// The plain claim: a few loops at most, each one either wins a statement or observes a
/// state another request settled.
async fn claim_alone(
    mut conn: PoolConnection<Postgres>,
    req: &IdempotentRequest,
    lease: Duration,
) -> Result<Claim, IdempotencyError> {
    let lease_ms = lease.as_millis() as i64;
    for _ in 0..5 {
        let token = Uuid::new_v4();
        let inserted = sqlx::query!(
            "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
             values ($1, $2, $3, 'IN_PROGRESS', $4, now() + $5::int8 * interval '1 millisecond')
             on conflict (user_id, key) do nothing",
            &req.user_id,
            &req.key,
            &req.fingerprint,
            token,
            lease_ms,
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 1 {
            outcome("claimed");
            return Ok(Claim::Owned(ClaimToken(token)));
        }

        let existing = sqlx::query_as!(
            Existing,
            r#"select fingerprint, state, claim_token, lease_until > now() as "lease_live!", response_status, response_body,
                      response_packed
               from idempotency_records where user_id = $1 and key = $2"#,
            &req.user_id,
            &req.key,
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(existing) = existing else {
            continue; // purged between our insert and read: try again
        };
        if existing.fingerprint != req.fingerprint {
            outcome("key_reused");
            return Err(IdempotencyError::KeyReused);
        }
        match existing.state.as_str() {
            "SUCCEEDED" => {
                outcome("replayed");
                return Ok(Claim::Replay {
                    status: existing.response_status.unwrap_or(200) as u16,
                    body: packed::stored(existing.response_body, existing.response_packed.as_deref())?,
                });
            }
            "IN_PROGRESS" if existing.lease_live => {
                outcome("in_progress");
                return Err(IdempotencyError::InProgress);
            }
            _ => {
                // FAILED, or IN_PROGRESS left by an instance that died: take it over, unless
                // another retry beat us to it (then the loop sees its state).
                let taken = sqlx::query!(
                    "update idempotency_records
                        set claim_token = $4, state = 'IN_PROGRESS',
                            lease_until = now() + $5::int8 * interval '1 millisecond', updated_at = now()
                      where user_id = $1 and key = $2 and claim_token = $3
                        and (state = 'FAILED' or (state = 'IN_PROGRESS' and lease_until <= now()))",
                    &req.user_id,
                    &req.key,
                    existing.claim_token,
                    token,
                    lease_ms,
                )
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if taken == 1 {
                    outcome("taken_over");
                    return Ok(Claim::Owned(ClaimToken(token)));
                }
            }
        }
    }
    // Five rounds of racing for one key means heavy contention on it: behave as in flight.
    outcome("in_progress");
    Err(IdempotencyError::InProgress)
}

/// Stores the settled answer, packed or as JSON (see [`packed`]). Runs inside the business
/// transaction when there is one; returns false when the key is no longer ours (taken over
/// during a pause): the caller must roll back.
pub async fn complete(
    conn: &mut PgConnection,
    req: &IdempotentRequest,
    token: ClaimToken,
    status: u16,
    answer: Answer<'_>,
) -> Result<bool, sqlx::Error> {
    let (body, packed) = answer.columns()?;
    let done = sqlx::query!(
        "update idempotency_records
            set state = 'SUCCEEDED', response_status = $4, response_body = $5, response_packed = $6, updated_at = now()
          where user_id = $1 and key = $2 and claim_token = $3 and state = 'IN_PROGRESS'",
        &req.user_id,
        &req.key,
        token.0,
        status as i16,
        body,
        packed,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Writes a new key's record once, settled, for an execution that claimed nothing first (see
/// the module notes). A plain insert: if the key exists (whatever its state: a live claim, a
/// settled answer, a FAILED attempt, another request) or another transaction is inserting it,
/// the primary key refuses ours once that one commits, and this returns false: roll back, then
/// claim, which says what the key holds (and takes a FAILED or lapsed record over). Inside the
/// pipeline's transaction the same insert travels with the COMMIT, as [`record_sql`].
pub async fn record(
    conn: &mut PgConnection,
    req: &IdempotentRequest,
    status: u16,
    answer: Answer<'_>,
) -> Result<bool, sqlx::Error> {
    no_nul(&[&req.user_id, &req.key])?;
    let (body, packed) = answer.columns()?;
    let inserted = sqlx::query(RECORD)
        .bind(&req.user_id)
        .bind(&req.key)
        .bind(&req.fingerprint)
        .bind(Uuid::new_v4())
        .bind(status as i16)
        .bind(body.map(sqlx::types::Json))
        .bind(packed)
        .execute(conn)
        .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(err) if key_taken(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// [`record`]'s insert: user, key, fingerprint, claim token, status, the answer as JSON or packed.
pub(crate) const RECORD: &str = "insert into idempotency_records
        (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body, response_packed)
    values ($1, $2, $3, 'SUCCEEDED', $4, now(), $5, $6, $7)";

/// [`record`]'s insert as one statement of literals, for a simple query (see `db::write_tx`):
/// the execution of [`RECORD`] prepared on the connection as `holdfast_record`, so that Postgres
/// parses, analyses and plans only the `execute`, not the insert.
pub(crate) fn record_sql(req: &IdempotentRequest, status: u16, answer: Answer<'_>) -> Result<String, sqlx::Error> {
    no_nul(&[&req.user_id, &req.key])?;
    let (body, packed) = match answer.packed {
        true => ("null".to_owned(), format!("decode('{}', 'hex')", hex(&packed::pack(answer.body)?))),
        false => {
            let body = answer.body.to_string();
            no_nul(&[&body])?;
            (escape_literal(&body), "null".to_owned())
        }
    };
    Ok(format!(
        "execute holdfast_record({}, {}, decode('{}', 'hex'), '{}', {status}, {body}, {packed})",
        escape_literal(&req.user_id),
        escape_literal(&req.key),
        hex(&req.fingerprint),
        Uuid::new_v4(),
    ))
}

/// Lower-case hex, for `decode(..., 'hex')` literals.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A settled answer, and how its record keeps it: packed (`response_packed`, see [`packed`]) or
/// as JSON (`response_body`, which releases before the packed form also read;
/// `IDEMPOTENCY_PACKED_ANSWERS`).
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    pub body: &'a Value,
    pub packed: bool,
}

impl<'a> Answer<'a> {
    /// The record's two answer columns: one set, the other null.
    fn columns(self) -> Result<(Option<&'a Value>, Option<Vec<u8>>), sqlx::Error> {
        match self.packed {
            true => Ok((None, Some(packed::pack(self.body)?))),
            false => Ok((Some(self.body), None)),
        }
    }
}

/// Whether an insert of a record failed because the key exists already.
pub(crate) fn key_taken(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.constraint() == Some("idempotency_records_pkey"))
}

/// Counts a request executed without a claim, its record written with its effect (call once
/// that commit succeeded).
pub fn executed_at_once() {
    outcome("executed_at_once");
}

/// Records that an execution which claimed nothing first failed transiently: nothing happened,
/// and the next request with the key runs again (as [`fail`] does for a claimed key).
pub async fn record_failed(pool: &PgPool, req: &IdempotentRequest) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
         values ($1, $2, $3, 'FAILED', $4, now())
         on conflict (user_id, key) do nothing",
        &req.user_id,
        &req.key,
        &req.fingerprint,
        Uuid::new_v4(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a transient failure: nothing happened, and the next request with the key runs again.
pub async fn fail(pool: &PgPool, req: &IdempotentRequest, token: ClaimToken) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update idempotency_records set state = 'FAILED', updated_at = now()
          where user_id = $1 and key = $2 and claim_token = $3 and state = 'IN_PROGRESS'",
        &req.user_id,
        &req.key,
        token.0,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes settled records older than the retention, one batch, skipping rows others hold.
pub async fn purge_expired(pool: &PgPool, retention: Duration, batch: i64) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query!(
        "delete from idempotency_records r
          using (select user_id, key from idempotency_records
                  where updated_at < now() - $1::int8 * interval '1 second'
                    and (state <> 'IN_PROGRESS' or lease_until <= now())
                  order by updated_at
                  limit $2
                  for update skip locked) old
          where r.user_id = old.user_id and r.key = old.key",
        retention.as_secs() as i64,
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(purged)
}

/// Marks IN_PROGRESS records whose lease ran out (their instance died) as FAILED, so that
/// clients see a retryable state and the key can be reused by its owner at once.
pub async fn recover_stale(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let recovered = sqlx::query!(
        "update idempotency_records r set state = 'FAILED', updated_at = now()
          from (select user_id, key from idempotency_records
                 where state = 'IN_PROGRESS' and lease_until <= now()
                 order by lease_until
                 limit $1
                 for update skip locked) stale
         where r.user_id = stale.user_id and r.key = stale.key",
        batch,
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(recovered)
}

/// Refuses a value no SQL literal can carry (these statements travel as simple queries, with
/// literals quoted by `escape_literal`; see `db::write_tx`).
pub(crate) fn no_nul(values: &[&str]) -> Result<(), sqlx::Error> {
    match values.iter().any(|v| v.contains('\0')) {
        true => Err(sqlx::Error::Protocol("a value holding NUL cannot travel as a literal".into())),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_separates_method_path_and_body() {
        let a = fingerprint("POST", "/v1/holds", b"{}");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("POST", "/v1/holds", b"{}"));
        assert_ne!(a, fingerprint("POST", "/v1/holds{}", b""));
        assert_ne!(a, fingerprint("PUT", "/v1/holds", b"{}"));
        assert_ne!(a, fingerprint("POST", "/v1/holds", b"{ }"));
    }

    #[test]
    fn the_record_travels_as_literals_or_not_at_all() {
        let req = IdempotentRequest { user_id: "u'1".into(), key: "k\\".into(), fingerprint: vec![0, 255] };
        let body = serde_json::json!({ "a": "it's \\ \u{1}" });
        let sql = record_sql(&req, 201, Answer { body: &body, packed: false }).unwrap();
        assert!(sql.starts_with("execute holdfast_record('u''1',  E'k\\\\', decode('00ff', 'hex'), '"), "{sql}");
        assert!(sql.ends_with(r#"', 201,  E'{"a":"it''s \\\\ \\u0001"}', null)"#), "{sql}");
        // Packed, the answer travels as hex, whatever it holds.
        let sql = record_sql(&req, 201, Answer { body: &body, packed: true }).unwrap();
        let hex = hex(&packed::pack(&body).unwrap());
        assert!(sql.ends_with(&format!("', 201, null, decode('{hex}', 'hex'))")), "{sql}");
        let nul = IdempotentRequest { user_id: "u\0".into(), key: "k".into(), fingerprint: vec![] };
        for packed in [false, true] {
            assert!(record_sql(&nul, 201, Answer { body: &Value::Null, packed }).is_err());
        }
    }
}
