//! The audit trail. Rows are written by triggers on `holds`, `bookings` and `slot_claims`, in the
//! same transaction as the change; `audit_log` refuses updates and deletes. The service only
//! says who is acting, per transaction: with the BEGIN ([`super::write_tx`]), or with
//! [`set_actor`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

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
