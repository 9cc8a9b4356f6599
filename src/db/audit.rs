//! The audit trail. Rows are written by triggers on `holds`, `bookings` and `slot_claims`, in the
//! same transaction as the change; `audit_log` refuses updates and deletes. The service only
//! says who is acting, per transaction, with [`set_actor`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Who acts in the current transaction, and for which request (transaction-local settings the
/// audit triggers read).
pub async fn set_actor(
    conn: &mut PgConnection,
    actor: &str,
    role: &str,
    request_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "select set_config('holdfast.actor', $1, true), set_config('holdfast.actor_role', $2, true),
                set_config('holdfast.request_id', coalesce($3, ''), true)",
    )
    .bind(actor)
    .bind(role)
    .bind(request_id)
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

/// Every change of a hold and of the booking made from it, oldest first.
pub async fn history<'e>(db: impl PgExecutor<'e>, hold_id: Uuid) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "select id, entity, from_status, to_status, detail, actor, actor_role, request_id, at
           from audit_log where hold_id = $1 order by id",
    )
    .bind(hold_id)
    .fetch_all(db)
    .await
}
