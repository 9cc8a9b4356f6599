//! The audit trail: the rows of the change log (`super::changes`) that belong to a hold or its
//! booking. Triggers on `holds`, `bookings` and `slot_claims` write them in the same transaction
//! as the change; `audit_log` refuses updates, and deletes of these rows. The service only
//! says who is acting, per transaction, in the settings `super::write_tx` sets with the BEGIN.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        AuditRow,
        "select id, entity as \"entity!\", from_status, to_status as \"to_status!\", detail, actor, actor_role, request_id, at
           from audit_log where hold_id = $1 and id > coalesce($2::int8, 0) order by id limit $3",
        hold_id,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}
