//! The audit trail. Rows are written by triggers on `holds`, `bookings` and `slot_claims`, in the
//! same transaction as the change; `audit_log` refuses updates and deletes. The service only
//! says who is acting, per transaction, with [`set_actor`].

use chrono::{DateTime, Utc};
use postgres_protocol::escape::escape_literal;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Begins a transaction in which `actor` acts, in one round trip: the settings travel with the
/// BEGIN, in the same simple query, instead of in a statement of their own after it. A simple
/// query takes no parameters, so the values go in as literals, quoted by `postgres-protocol`'s
/// port of libpq's `PQescapeLiteral` (safe whatever `standard_conforming_strings` says). A value
/// holding NUL (which no literal can carry) takes the two-statement way, and Postgres refuses it
/// there as it always did. With `serialize_actor`, see [`set_actor`]: that path is kept, because a
/// lock wait that times out must reach the caller as the error it is.
pub async fn begin_as(
    pool: &PgPool,
    actor: &str,
    role: &str,
    request_id: Option<&str>,
    serialize_actor: bool,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let request_id = request_id.unwrap_or("");
    if serialize_actor || [actor, role, request_id].iter().any(|v| v.contains('\0')) {
        let mut tx = pool.begin().await?;
        set_actor(&mut tx, actor, role, Some(request_id), serialize_actor).await?;
        return Ok(tx);
    }
    pool.begin_with(sqlx::AssertSqlSafe(begin_as_sql(actor, role, request_id))).await
}

fn begin_as_sql(actor: &str, role: &str, request_id: &str) -> String {
    format!(
        "begin; select set_config('holdfast.actor', {}, true), set_config('holdfast.actor_role', {}, true), \
         set_config('holdfast.request_id', {}, true)",
        escape_literal(actor),
        escape_literal(role),
        escape_literal(request_id)
    )
}

/// Who acts in the current transaction, and for which request (transaction-local settings the
/// audit triggers read). With `serialize_actor`, the same statement also takes a transaction
/// advisory lock on the actor, so that per-user counts read by later statements of this
/// transaction cannot be raced by the same user's other transactions (see
/// [`super::holds::live_holds_of`]). It costs no extra round trip.
pub async fn set_actor(
    conn: &mut PgConnection,
    actor: &str,
    role: &str,
    request_id: Option<&str>,
    serialize_actor: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select set_config('holdfast.actor', $1, true), set_config('holdfast.actor_role', $2, true),
                set_config('holdfast.request_id', coalesce($3, ''), true),
                case when $4 then pg_advisory_xact_lock(hashtextextended('holdfast:actor:' || $1, 0))::text end",
    )
    .bind(actor)
    .bind(role)
    .bind(request_id)
    .bind(serialize_actor)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub entity: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub detail: Option<Value>,
    pub actor: String,
    pub actor_role: String,
    pub request_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// Changes of a hold and of the booking made from it, oldest first: at most `limit`, after the
/// entry `after` (a page's `next_cursor`).
pub async fn history<'e>(
    db: impl PgExecutor<'e>,
    hold_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, entity, from_status, to_status, detail, actor, actor_role, request_id, at
           from audit_log where hold_id = $1 and id > coalesce($2, 0) order by id limit $3",
    )
    .bind(hold_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_travels_as_quoted_literals() {
        let sql = begin_as_sql("o'brien\\'; drop table holds; --", "user", "");
        assert!(sql.contains(r"E'o''brien\\''; drop table holds; --'"), "{sql}");
        assert!(sql.ends_with("set_config('holdfast.request_id', '', true)"), "{sql}");
    }
}
