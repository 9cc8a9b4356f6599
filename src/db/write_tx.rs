//! The pipeline's write transaction, with the fewest round trips: who acts travels with the
//! BEGIN, and the statement that settles the idempotency record travels with the COMMIT, each
//! pair in one simple query. A simple query takes no parameters, so those values go in as
//! literals, quoted by `postgres-protocol`'s port of libpq's `PQescapeLiteral` (a maintained
//! crate rather than quoting code of our own; safe whatever `standard_conforming_strings` says).
//! No literal can carry NUL, and none reaches here: the edge refuses it in a JWT subject, keys and
//! request ids are visible ASCII, and JSON escapes it. A value holding one anyway is an error,
//! never a truncated query.
//!
//! Postgres parses, analyses and plans every statement of a simple query afresh, so the two
//! statements that ride with the BEGIN and the COMMIT are prepared once per connection (SQL
//! `PREPARE`, on the connection's first write transaction: [`PREPARE`]) and sent as `execute
//! holdfast_begin(...)` and `execute holdfast_record(...)`: what Postgres then parses is the
//! `execute` and its literals, and the statement runs on its cached plan. Measured, parsing,
//! analysing and planning those two statements were a tenth of Postgres's CPU in `spread`
//! (BENCHMARKS.md, session 17).
//!
//! sqlx's `Transaction` cannot commit through a statement of ours, so this type keeps the
//! transaction itself: [`WriteTx::rollback`] on every error path, and a connection dropped with
//! its transaction still open (a panic) is closed, never returned to the pool.

use std::sync::LazyLock;

use futures_util::TryStreamExt;
use postgres_protocol::escape::escape_literal;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use super::holds;
use crate::idempotency::{self, Answer, IdempotentRequest, no_nul};

pub struct WriteTx {
    conn: Option<PoolConnection<Postgres>>,
}

/// What the transaction's one self-logging statement writes change rows for, for the triggers not
/// to write them again: the hold it creates or confirms (`holds::create`,
/// `bookings::confirm_hold`, `inventories::create_hold`, `resources::create_hold`; migration
/// `one_change_row_per_hold`) and, for a room or slot hold, the inventory or resource whose
/// availability it changes (`holdfast.logged_scope`, migration
/// `room_and_slot_holds_log_their_availability`). A scope is only ever named with its hold: the
/// statement writes the availability part into the hold's or the booking's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    pub hold: Uuid,
    pub scope: Option<Uuid>,
}

/// How the COMMIT settles the idempotency record.
pub enum Settle<'a> {
    /// Nothing to write (no key, or the record was completed by an earlier statement).
    Nothing,
    /// Insert the key's record, settled with this answer (see `idempotency::record`).
    Record { req: &'a IdempotentRequest, status: u16, answer: Answer<'a> },
}

/// What [`WriteTx::commit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    Yes,
    /// The key's record exists already (someone else's): nothing was committed.
    KeyTaken,
}

impl WriteTx {
    /// Begins a transaction in which `actor` acts. With `serialize_actor`, the same round trip
    /// also takes a transaction advisory lock on the actor (`HOLD_MAX_LIVE_PER_USER`) and then
    /// counts the actor's live holds, each in a statement of its own: under READ COMMITTED each
    /// statement of a simple query takes a fresh snapshot, so the count sees every hold the
    /// actor's other transactions committed before we got the lock. Returns that count.
    /// `logged`: what the transaction's self-logging statement writes change rows for ([`Logged`]).
    pub async fn begin_as(
        pool: &PgPool,
        actor: &str,
        role: &str,
        request_id: Option<&str>,
        serialize_actor: bool,
        logged: Option<Logged>,
    ) -> Result<(Self, Option<i64>), sqlx::Error> {
        let request_id = request_id.unwrap_or("");
        no_nul(&[actor, role, request_id])?;
        let mut tx = WriteTx { conn: Some(pool.acquire().await?) };
        let sql = begin_sql(actor, role, request_id, serialize_actor, logged);
        let mut result = tx.begin(&sql, serialize_actor).await;
        if matches!(&result, Err(err) if unprepared(err)) {
            // This connection's first write transaction: prepare, then begin again.
            result = match tx.conn().execute("rollback").await {
                Ok(_) => match tx.conn().execute(sqlx::AssertSqlSafe(PREPARE.as_str())).await {
                    Ok(_) => tx.begin(&sql, serialize_actor).await,
                    Err(err) => {
                        // Prepared statements outlive a failed simple query: a connection left
                        // with one of the two would fail every transaction. Start afresh.
                        if let Some(conn) = tx.conn.as_mut() {
                            conn.close_on_drop();
                        }
                        Err(err)
                    }
                },
                // The connection failed meanwhile: that is the answer, not the missing statement.
                Err(err) => Err(err),
            };
        }
        match result {
            Ok(live_holds) => Ok((tx, live_holds)),
            Err(err) => {
                tx.rollback().await;
                Err(err)
            }
        }
    }

    /// Runs [`begin_sql`]'s statements; with `serialize_actor`, returns the count they end with.
    async fn begin(&mut self, sql: &str, serialize_actor: bool) -> Result<Option<i64>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if serialize_actor {
            let rows: Vec<PgRow> = sqlx::raw_sql(sql).fetch(self.conn()).try_collect().await?;
            // The count is the last statement's single row.
            Ok(Some(rows.last().ok_or(sqlx::Error::RowNotFound)?.try_get::<i64, _>(0)?))
        } else {
            self.conn().execute(sql).await.map(|_| None)
        }
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("the transaction is open")
    }

    /// Settles the record as asked and commits, in one round trip when it can.
    pub async fn commit(mut self, settle: Settle<'_>) -> Result<Committed, sqlx::Error> {
        let recorded = matches!(settle, Settle::Record { .. });
        let sql = match settle {
            Settle::Nothing => "commit".to_owned(),
            Settle::Record { req, status, answer } => match idempotency::record_sql(req, status, answer) {
                Ok(insert) => format!("{insert}; commit"),
                Err(err) => {
                    self.rollback().await;
                    return Err(err);
                }
            },
        };
        match self.conn().execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) => {
                self.conn.take(); // committed: back to the pool
                if recorded {
                    idempotency::executed_at_once();
                }
                Ok(Committed::Yes)
            }
            Err(err) if idempotency::key_taken(&err) => {
                self.rollback().await;
                Ok(Committed::KeyTaken)
            }
            Err(err) => {
                self.rollback().await;
                Err(err)
            }
        }
    }

    /// Rolls back. A connection that cannot say ROLLBACK is closed instead of pooled.
    pub async fn rollback(mut self) {
        if let Some(mut conn) = self.conn.take()
            && conn.execute("rollback").await.is_err()
        {
            conn.close_on_drop();
        }
    }
}

impl Drop for WriteTx {
    /// Still open here means neither commit nor rollback ran (a panic, a dropped future): the
    /// connection may be mid-transaction, so it must not serve anyone else.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// What a connection prepares before its first write transaction (see the module notes): the
/// record first, so that a connection with `holdfast_begin` always has `holdfast_record` too.
/// `holdfast_begin` says who acts, for the audit triggers, which hold's statement writes its own
/// change rows and whose availability it logs (`''` for none, which the triggers read as
/// none: see the migrations `lean_trigger_conditions_and_keys` and `room_and_slot_holds_log_their_availability`).
static PREPARE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "prepare holdfast_record (text, text, bytea, uuid, int2, jsonb, bytea) as {};
         prepare holdfast_begin (text, text, text, text, text) as
           select set_config('plan_cache_mode', 'force_generic_plan', true), set_config('holdfast.actor', $1, true),
                  set_config('holdfast.actor_role', $2, true), set_config('holdfast.request_id', $3, true),
                  set_config('holdfast.logged_hold', $4, true), set_config('holdfast.logged_scope', $5, true)",
        idempotency::RECORD
    )
});

/// Whether a statement failed because this connection has not prepared [`PREPARE`] yet
/// (`invalid_sql_statement_name`).
fn unprepared(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("26000"))
}

/// The BEGIN also makes this transaction's prepared statements run their generic plan. With the
/// default (`auto`) Postgres keeps planning the write path's CTEs afresh on every execution,
/// because a custom plan's estimate never loses to the generic one: measured, that planning was
/// 0.75 ms of each confirm and 0.42 ms of each hold, a quarter of Postgres's CPU per request.
/// Every statement of a write transaction finds its rows by key (`id = $1`, `id = any($n)`,
/// `hold_id = $1`), with literal statuses, so the generic plan is the custom one minus the
/// planning. It stays local to the transaction: the listings' optional filters (`$2 is null or
/// ...`) need custom plans to use their indexes, and they run outside any `WriteTx`.
fn begin_sql(actor: &str, role: &str, request_id: &str, serialize_actor: bool, logged: Option<Logged>) -> String {
    let actor = escape_literal(actor);
    let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    let (logged_hold, logged_scope) = (id(logged.map(|l| l.hold)), id(logged.and_then(|l| l.scope)));
    let mut sql = format!(
        "begin; execute holdfast_begin({actor}, {}, {}, '{logged_hold}', '{logged_scope}')",
        escape_literal(role),
        escape_literal(request_id)
    );
    if serialize_actor {
        sql.push_str(&format!(
            "; select pg_advisory_xact_lock(hashtextextended('holdfast:actor:' || {actor}, 0)); {}",
            holds::LIVE_HOLDS_OF.replace("$1", &actor)
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_travels_as_quoted_literals() {
        let sql = begin_sql("o'brien\\'; drop table holds; --", "user", "", false, None);
        assert_eq!(sql, r"begin; execute holdfast_begin( E'o''brien\\''; drop table holds; --', 'user', '', '', '')");
        let serialized = begin_sql("a'b", "user", "r", true, Some(Logged { hold: Uuid::nil(), scope: None }));
        assert!(
            serialized.contains(
                "execute holdfast_begin('a''b', 'user', 'r', '00000000-0000-0000-0000-000000000000', ''); select pg_advisory"
            ),
            "{serialized}"
        );
        assert!(
            serialized.contains("hashtextextended('holdfast:actor:' || 'a''b', 0)); select count(*)"),
            "{serialized}"
        );
        assert!(
            serialized.ends_with("where user_id = 'a''b' and status = 'HELD' and expires_at > now()"),
            "{serialized}"
        );
    }
}
