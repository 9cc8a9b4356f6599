//! Webhook endpoints: registered and removed by admins. Nothing to lock: an endpoint is new or
//! gone in one statement.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, write};
use crate::db::webhooks::{self, NewEndpoint};
use crate::domain::Caller;
use crate::error::Error;
use crate::pipeline::{Reply, Step, views};
use crate::state::AppState;

pub struct CreateWebhook {
    /// Checked: its form and where it resolves (`crate::webhooks::target`).
    pub url: String,
    pub description: Option<String>,
    /// Known change types, without duplicates.
    pub event_types: Vec<String>,
    /// The signing secret, new (`crate::webhooks::sign::new_secret`).
    pub secret: String,
}

/// Never prints the secret.
impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("url", &self.url)
            .field("description", &self.description)
            .field("event_types", &self.event_types)
            .finish_non_exhaustive()
    }
}

impl Execute for CreateWebhook {
    const NAME: &'static str = "create_webhook";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        // The secret is part of the answer, so a retried request (same Idempotency-Key) gets the
        // same one back, not the new one its handler made.
        let row = webhooks::insert(
            tx,
            NewEndpoint {
                id: Uuid::now_v7(),
                url: &self.url,
                description: self.description.as_deref(),
                event_types: &self.event_types,
                secret: &self.secret,
                created_by: &caller.user_id,
            },
        )
        .await?;
        Ok(Reply::created(views::webhook_created(&row, &self.secret)))
    }
}

#[derive(Debug)]
pub struct DeleteWebhook {
    pub webhook_id: Uuid,
}

impl Execute for DeleteWebhook {
    const NAME: &'static str = "delete_webhook";

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, _: &AppState, _: &Caller, _: Plan) -> Result<Reply, Error> {
        if webhooks::delete(tx, self.webhook_id).await? {
            Ok(Reply::no_content())
        } else {
            Err(Error::NotFound("webhook"))
        }
    }
}
