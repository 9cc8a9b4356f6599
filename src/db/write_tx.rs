//! The pipeline's write transaction, with the fewest round trips: who acts travels with the
//! BEGIN, and the statement that settles the idempotency record travels with the COMMIT, each
//! pair in one simple query. A simple query takes no parameters, so those values go in as
//! literals, quoted by `postgres-protocol`'s port of libpq's `PQescapeLiteral` (a maintained
//! crate rather than quoting code of our own; safe whatever `standard_conforming_strings` says).
//! Values that no literal can carry (NUL) take parameterised statements of their own instead,
//! and Postgres refuses them there as it always did.
//!
//! sqlx's `Transaction` cannot commit through a statement of ours, so this type keeps the
//! transaction itself: [`WriteTx::rollback`] on every error path, and a connection dropped with
//! its transaction still open (a panic) is closed, never returned to the pool.

use postgres_protocol::escape::escape_literal;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Executor, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use futures_util::TryStreamExt;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{audit, holds};
use crate::idempotency::IdempotentRequest;

pub struct WriteTx {
    conn: Option<PoolConnection<Postgres>>,
}

/// How the COMMIT settles the idempotency record.
pub enum Settle<'a> {
    /// Nothing to write (no key, or the record was completed by an earlier statement).
    Nothing,
    /// Insert the key's record, settled with this answer (see `idempotency::record`).
    Record { req: &'a IdempotentRequest, status: u16, body: &'a Value },
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
    /// also takes a transaction advisory lock on the actor (see `audit::set_actor`) and then
    /// counts the actor's live holds, each in a statement of its own: under READ COMMITTED each
    /// statement of a simple query takes a fresh snapshot, so the count sees every hold the
    /// actor's other transactions committed before we got the lock. Returns that count.
    pub async fn begin_as(
        pool: &PgPool,
        actor: &str,
        role: &str,
        request_id: Option<&str>,
        serialize_actor: bool,
    ) -> Result<(Self, Option<i64>), sqlx::Error> {
        let request_id = request_id.unwrap_or("");
        let mut tx = WriteTx { conn: Some(pool.acquire().await?) };
        let result = if [actor, role, request_id].iter().any(|v| v.contains('\0')) {
            async {
                tx.conn().execute("begin").await?;
                audit::set_actor(tx.conn(), actor, role, Some(request_id), serialize_actor).await?;
                match serialize_actor {
                    true => holds::live_holds_of(tx.conn(), actor).await.map(Some),
                    false => Ok(None),
                }
            }
            .await
        } else if serialize_actor {
            let sql = begin_sql(actor, role, request_id, true);
            let rows: Result<Vec<PgRow>, _> =
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch(tx.conn()).try_collect().await;
            // The count is the last statement's single row.
            rows.and_then(|rows| rows.last().ok_or(sqlx::Error::RowNotFound)?.try_get::<i64, _>(0)).map(Some)
        } else {
            let sql = begin_sql(actor, role, request_id, false);
            tx.conn().execute(sqlx::AssertSqlSafe(sql)).await.map(|_| None)
        };
        match result {
            Ok(live_holds) => Ok((tx, live_holds)),
            Err(err) => {
                tx.rollback().await;
                Err(err)
            }
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
            Settle::Record { req, status, body } => match record_sql(req, status, body) {
                Some(insert) => format!("{insert}; commit"),
                None => {
                    // Not expressible as literals: the parameterised insert, then COMMIT.
                    match crate::idempotency::record(self.conn(), req, status, body).await {
                        Ok(true) => "commit".to_owned(),
                        Ok(false) => {
                            self.rollback().await;
                            return Ok(Committed::KeyTaken);
                        }
                        Err(err) => {
                            self.rollback().await;
                            return Err(err);
                        }
                    }
                }
            },
        };
        match self.conn().execute(sqlx::AssertSqlSafe(sql)).await {
            Ok(_) => {
                self.conn.take(); // committed: back to the pool
                if recorded {
                    crate::idempotency::executed_at_once();
                }
                Ok(Committed::Yes)
            }
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("idempotency_records_pkey") => {
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

fn begin_sql(actor: &str, role: &str, request_id: &str, serialize_actor: bool) -> String {
    let actor = escape_literal(actor);
    let mut sql = format!(
        "begin; select set_config('holdfast.actor', {actor}, true), set_config('holdfast.actor_role', {}, true), \
         set_config('holdfast.request_id', {}, true)",
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

/// The settled record's insert as literals, or None when a value cannot be one (NUL).
fn record_sql(req: &IdempotentRequest, status: u16, body: &Value) -> Option<String> {
    let body = body.to_string();
    if [req.user_id.as_str(), req.key.as_str(), body.as_str()].iter().any(|v| v.contains('\0')) {
        return None;
    }
    let fingerprint: String = req.fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "insert into idempotency_records
                (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
         values ({}, {}, decode('{fingerprint}', 'hex'), 'SUCCEEDED', '{}', now(), {status}, {}::jsonb)",
        escape_literal(&req.user_id),
        escape_literal(&req.key),
        Uuid::new_v4(),
        escape_literal(&body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_travels_as_quoted_literals() {
        let sql = begin_sql("o'brien\\'; drop table holds; --", "user", "", false);
        assert!(sql.contains(r"E'o''brien\\''; drop table holds; --'"), "{sql}");
        assert!(sql.ends_with("set_config('holdfast.request_id', '', true)"), "{sql}");
        let serialized = begin_sql("a'b", "user", "r", true);
        assert!(
            serialized.contains("hashtextextended('holdfast:actor:' || 'a''b', 0)); select count(*)"),
            "{serialized}"
        );
        assert!(
            serialized.ends_with("where user_id = 'a''b' and status = 'HELD' and expires_at > now()"),
            "{serialized}"
        );
    }

    #[test]
    fn the_record_travels_as_literals_or_not_at_all() {
        let req = IdempotentRequest { user_id: "u'1".into(), key: "k\\".into(), fingerprint: vec![0, 255] };
        let sql = record_sql(&req, 201, &serde_json::json!({ "a": "it's \\ \u{1}" })).unwrap();
        assert!(sql.contains("values ('u''1',  E'k\\\\', decode('00ff', 'hex')"), "{sql}");
        assert!(sql.contains(r#"201,  E'{"a":"it''s \\\\ \\u0001"}'::jsonb"#), "{sql}");
        let nul = IdempotentRequest { user_id: "u\0".into(), key: "k".into(), fingerprint: vec![] };
        assert!(record_sql(&nul, 201, &Value::Null).is_none());
    }
}
