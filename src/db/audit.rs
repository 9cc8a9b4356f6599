//! The audit trail: the rows of the change log (`super::changes`) that belong to a hold or its
//! booking. Triggers on `holds`, `bookings` and `slot_claims` write them in the same transaction
//! as the change, or the statement that makes the change (a hold's and a confirm's, see
//! `super::changes`); `audit_log` refuses updates, and deletes of these rows. The service only
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
///
/// An entry's id is its row's; a confirm's row also carries the hold's change (migration
/// `one_change_row_per_confirm`), its own entry just before the booking's, at the row's id less
/// one (row ids step by at least 2, so no other row's), so that a page may end between the two.
pub async fn history<'e>(
    db: impl PgExecutor<'e>,
    hold_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRow,
        r#"select e.id as "id!", e.entity as "entity!", e.from_status, a.to_status as "to_status!", e.detail, a.actor, a.actor_role,
                  a.request_id, a.at
             from audit_log a
            cross join lateral (select a.id - 1 as id, 'hold' as entity, a.hold_from_status as from_status,
                                       null::jsonb as detail
                                 where a.hold_from_status is not null
                                union all
                                select a.id, a.entity, a.from_status, a.detail) e
            where a.hold_id = $1 and a.id > coalesce($2::int8, 0) and e.id > coalesce($2::int8, 0)
            order by e.id limit $3"#,
        hold_id,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}
