//! The waiting room: joining an event's line and leaving it. Nothing to lock: a user's one
//! ticket per event is the unique key `queue_tickets_one_per_user`, and leaving is one guarded
//! update.

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Execute, Plan, Seen, write};
use crate::db::queue::{self as rows, Joined};
use crate::domain::Caller;
use crate::error::Error;
use crate::pipeline::{Reply, Step};
use crate::state::AppState;

#[derive(Debug)]
pub struct JoinQueue {
    pub event_id: Uuid,
}

impl Execute for JoinQueue {
    const NAME: &'static str = "join_queue";
    const COUNTERS: &'static [&'static str] = &["holdfast_queue_joins_total"];

    async fn plan(&self, _state: &AppState, _caller: &Caller) -> Result<Step, Error> {
        write(Vec::new(), Seen::Nothing)
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, caller: &Caller, _: Plan) -> Result<Reply, Error> {
        let (ticket, created) = match rows::join(tx, Uuid::now_v7(), self.event_id, &caller.user_id).await? {
            Joined::New(ticket) => (ticket, true),
            Joined::Existing(ticket) => (ticket, false),
            Joined::NoEvent => return Err(Error::NotFound("event")),
            Joined::NotEnabled => return Err(Error::QueueNotEnabled),
            Joined::Started(starts_at) => return Err(Error::EventStarted { starts_at }),
        };
        // On this transaction's connection: never a second one from the pool while it is held.
        let queue = state.queues.queue(&mut *tx, self.event_id).await?;
        let ticket = state.queues.remember(ticket);
        let (view, _) = crate::queue::view(&ticket, queue.as_deref(), Utc::now());
        let body = serde_json::to_value(view).map_err(Error::internal)?;
        Ok(if created { Reply::created(body) } else { Reply::ok(body) })
    }
}

#[derive(Debug)]
pub struct LeaveQueue {
    pub ticket_id: Uuid,
}

impl Execute for LeaveQueue {
    const NAME: &'static str = "leave_queue";

    async fn plan(&self, state: &AppState, caller: &Caller) -> Result<Step, Error> {
        let ticket = rows::find(&state.db, self.ticket_id)
            .await?
            .filter(|t| caller.may_access(&t.user_id))
            .ok_or(Error::NotFound("ticket"))?;
        if matches!(ticket.status.as_str(), "waiting" | "admitted") {
            write(Vec::new(), Seen::Nothing)
        } else {
            // Already done: leaving again changes nothing.
            Ok(Step::Done(Reply::no_content()))
        }
    }

    async fn apply(&self, tx: &mut PgConnection, state: &AppState, _: &Caller, _: Plan) -> Result<Reply, Error> {
        rows::leave(tx, self.ticket_id).await?;
        state.queues.forget(self.ticket_id);
        Ok(Reply::no_content())
    }
}
