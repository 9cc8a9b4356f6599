//! The waiting room (see `crate::queue`): join an event's line, poll your ticket, leave; and the
//! queue's counts for admins.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::auth::{Admin, Auth};
use super::extract::{ApiPath, IdempotencyKeyHeader};
use super::reply;
use crate::db::queue as rows;
use crate::domain::QueueSettings;
use crate::error::Error;
use crate::pipeline;
use crate::queue::TicketView;
use crate::state::AppState;

#[utoipa::path(
    post, path = "/v1/events/{event_id}/queue", tag = "queue",
    summary = "Join the event's waiting room (one ticket per user and event: joining again answers the same ticket)",
    params(("event_id" = Uuid, Path, description = "Event id"), crate::api::openapi::IdempotencyKeyParam),
    responses(
        (status = 201, description = "A new ticket", body = TicketView),
        (status = 200, description = "The ticket you already have", body = TicketView),
        (status = 409, description = "QUEUE_NOT_ENABLED (hold seats directly), IDEMPOTENCY_IN_PROGRESS", body = crate::api::openapi::Problem, content_type = "application/problem+json"),
        crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn join_queue(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: IdempotencyKeyHeader,
    ApiPath(event_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let idem = key.bind(&caller, &())?;
    let _turn = gate(&state).await?;
    let reply = pipeline::run(&state, caller, Some(idem), pipeline::JoinQueue { event_id }).await?;
    Ok(reply::render(reply))
}

#[utoipa::path(
    get, path = "/v1/queue/{ticket_id}", tag = "queue",
    summary = "Your ticket: status, position, and once admitted the admission token (Retry-After: when to ask again)",
    params(("ticket_id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, description = "The ticket", body = TicketView,
        headers(("Retry-After" = u64, description = "Seconds until a new answer is worth asking for"))),
        crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn get_ticket(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(ticket_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let ticket = match state.queues.remembered(ticket_id) {
        Some(ticket) => Some(ticket),
        None => {
            let _turn = gate(&state).await?;
            state.queues.read_ticket(&state.db, ticket_id).await?
        }
    };
    let ticket = ticket.filter(|t| caller.may_access(&t.user_id)).ok_or(Error::NotFound("ticket"))?;
    let queue = state.queues.queue(&state.db, ticket.event_id).await?;
    let (view, retry_after) = crate::queue::view(&ticket, queue.as_deref(), Utc::now());
    let mut response = reply::ok(serde_json::to_value(view).map_err(Error::internal)?).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    Ok(response)
}

#[utoipa::path(
    delete, path = "/v1/queue/{ticket_id}", tag = "queue",
    summary = "Leave the line, or give up an admission (the key is optional). The ticket stays yours: joining again answers it, ended",
    params(("ticket_id" = Uuid, Path, description = "Ticket id"), crate::api::openapi::OptionalIdempotencyKeyParam),
    responses((status = 204, description = "Left (or had already ended)"), crate::api::openapi::NotFound, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn leave_queue(
    State(state): State<AppState>,
    Auth(caller): Auth,
    key: Option<IdempotencyKeyHeader>,
    ApiPath(ticket_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let idem = key.map(|k| k.bind(&caller, &())).transpose()?;
    let reply = pipeline::run(&state, caller, idem, pipeline::LeaveQueue { ticket_id }).await?;
    Ok(reply::render(reply))
}

/// How long a join, or a poll that must read Postgres, waits for its turn before answering 503
/// QUEUE_BUSY (Retry-After: 1).
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A turn at the database for waiting-room work: at most a quarter of the pool's connections
/// (`AppState::queue_gate`), so that a stampede of joins queues in memory, cheaply, and the
/// admitted buyers' holds and bookings keep the rest of the pool.
async fn gate(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
    match tokio::time::timeout(GATE_WAIT, state.queue_gate.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(closed)) => Err(Error::internal(closed)),
        Err(_) => {
            metrics::counter!("holdfast_queue_busy_total").increment(1);
            Err(Error::QueueBusy)
        }
    }
}

/// An event's waiting room as its admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStatusView {
    pub event_id: Uuid,
    pub settings: QueueSettings,
    #[serde(flatten)]
    pub counts: rows::QueueStats,
}

#[utoipa::path(
    get, path = "/v1/events/{event_id}/queue", tag = "queue",
    summary = "The event's waiting room: settings and counts (admin)",
    params(("event_id" = Uuid, Path, description = "Event id")),
    responses((status = 200, description = "The waiting room", body = QueueStatusView),
        crate::api::openapi::NotFound, crate::api::openapi::AdminOnly, crate::api::openapi::CommonErrors),
    security(("bearer" = []))
)]
pub async fn queue_status(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiPath(event_id): ApiPath<Uuid>,
) -> Result<Response, Error> {
    let event = crate::db::events::find_event(&state.db, event_id).await?.ok_or(Error::NotFound("event"))?;
    let counts = rows::stats(&state.db, event_id).await?;
    Ok(reply::ok(
        serde_json::to_value(QueueStatusView { event_id, settings: event.queue(), counts }).map_err(Error::internal)?,
    ))
}

/// For a hold or direct booking: the ticket whose admission the request carries, checked in
/// memory. `Err(NotAdmitted)` at once when this instance knows the event's queue is open and the
/// request has no valid token (admins are exempt); otherwise the claim's statement decides.
pub async fn admission(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    event_id: Uuid,
    caller: &crate::domain::Caller,
) -> Result<Option<Uuid>, Error> {
    if caller.admin {
        return Ok(None);
    }
    let token = headers.get(crate::queue::ADMISSION_HEADER).and_then(|v| v.to_str().ok());
    let queue = match (state.queues.open(event_id), token) {
        (Some(queue), _) => queue,
        // Not known here as open: without a token there is nothing to check; with one, read
        // the queue (rare: a queue opened within the last pacing interval).
        (None, None) => return Ok(None),
        (None, Some(_)) => match state.queues.queue(&state.db, event_id).await? {
            Some(queue) if queue.enabled => queue,
            _ => return Ok(None),
        },
    };
    let ticket =
        token.and_then(|t| crate::queue::verify_token(&queue.secret, t, event_id, &caller.user_id, Utc::now()));
    match ticket {
        Some(ticket) => Ok(Some(ticket)),
        None => Err(Error::NotAdmitted),
    }
}
