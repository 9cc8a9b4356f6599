//! Live availability as Server-Sent Events: `GET /v1/events/{id}/stream`, and the same for
//! inventories and resources. Anonymous, like the availability reads, and as public: seat ids
//! with their status, nights with their counts, slot intervals taken or freed; never who.
//!
//! The protocol, for a client that must end with what the database says:
//! 1. read the seat map: its `feed_cursor` is the change-feed position it reflects;
//! 2. open the stream with `?after=CURSOR` (or `Last-Event-ID: CURSOR`): it sends every change
//!    after that position, then live ones, each with `id:` (its cursor), `event:` (its type) and
//!    `data:`; apply a seat's change only when its `version` is higher than the one you have
//!    (the map and the stream may overlap, never leave a gap);
//! 3. on a dropped connection, reconnect with the last `id:` seen (EventSource does it by itself):
//!    nothing is missed, nothing is sent twice;
//! 4. `event: reset` means re-read the map: the cursor was older than the changes kept, or this
//!    client fell too far behind (its stream then ends; reconnecting with its last id catches up).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery};
use crate::db::changes::{self, Position};
use crate::db::{events, inventories, resources};
use crate::domain::ValidationError;
use crate::error::Error;
use crate::state::AppState;
use crate::streams::{Message, Refused, sse_frame};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Send every change after this cursor first (a seat map's or availability's `cursor`, or a
    /// message's `id`). `Last-Event-ID` wins when both are sent.
    #[param(pattern = r"^[0-9]{1,18}-[0-9]{1,18}$")]
    pub after: Option<String>,
}

/// The most changes one reconnect replays; a client further behind gets `event: reset`.
const CATCH_UP_LIMIT: i64 = 10_000;

#[utoipa::path(
    get, path = "/v1/events/{event_id}/stream", tag = "streams",
    summary = "Live seat changes of an event (Server-Sent Events)",
    params(("event_id" = Uuid, Path, description = "Event id"), StreamQuery, crate::api::openapi::LastEventIdParam),
    responses(
        (status = 200, description = "`text/event-stream`: `ready`, then `seats.changed` messages (`data: {seats: [{id, status, version}], occurred_at}`), `reset` when the map must be re-read; a comment every `STREAM_HEARTBEAT_SECONDS`", body = String, content_type = "text/event-stream"),
        crate::api::openapi::NotFound, crate::api::openapi::StreamErrors),
    security(())
)]
pub async fn event_stream(
    State(state): State<AppState>,
    ApiPath(event_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let after = resume_from(&headers, &query)?;
    events::find_event(&state.db, event_id).await?.ok_or(Error::NotFound("event"))?;
    stream(state, event_id, after).await
}

#[utoipa::path(
    get, path = "/v1/inventories/{inventory_id}/stream", tag = "streams",
    summary = "Live night changes of an inventory (Server-Sent Events)",
    params(("inventory_id" = Uuid, Path, description = "Inventory id"), StreamQuery, crate::api::openapi::LastEventIdParam),
    responses(
        (status = 200, description = "`text/event-stream`: `ready`, then `nights.changed` and `inventory.nights_changed` messages (`data: {nights: [{night, capacity, overbooking_allowance, closed, held, booked, available, version}], occurred_at}`), `reset`", body = String, content_type = "text/event-stream"),
        crate::api::openapi::NotFound, crate::api::openapi::StreamErrors),
    security(())
)]
pub async fn inventory_stream(
    State(state): State<AppState>,
    ApiPath(inventory_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let after = resume_from(&headers, &query)?;
    inventories::find(&state.db, inventory_id).await?.ok_or(Error::NotFound("inventory"))?;
    stream(state, inventory_id, after).await
}

#[utoipa::path(
    get, path = "/v1/resources/{resource_id}/stream", tag = "streams",
    summary = "Live slot changes of a resource (Server-Sent Events)",
    params(("resource_id" = Uuid, Path, description = "Resource id"), StreamQuery, crate::api::openapi::LastEventIdParam),
    responses(
        (status = 200, description = "`text/event-stream`: `ready`, then `slots.changed` messages (`data: {taken: [{start, end}], freed: [{start, end}], occurred_at}`), `reset`", body = String, content_type = "text/event-stream"),
        crate::api::openapi::NotFound, crate::api::openapi::StreamErrors),
    security(())
)]
pub async fn resource_stream(
    State(state): State<AppState>,
    ApiPath(resource_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let after = resume_from(&headers, &query)?;
    resources::find(&state.db, resource_id).await?.ok_or(Error::NotFound("resource"))?;
    stream(state, resource_id, after).await
}

/// `Last-Event-ID`, else `?after=`, as a feed position.
fn resume_from(headers: &HeaderMap, query: &StreamQuery) -> Result<Option<Position>, ValidationError> {
    if let Some(value) = headers.get("last-event-id") {
        let parsed = value.to_str().ok().and_then(|v| v.parse::<Position>().ok());
        return parsed.map(Some).ok_or_else(|| ValidationError::new("Last-Event-ID", "must be an id this stream sent"));
    }
    query
        .after
        .as_deref()
        .map(|after| after.parse::<Position>().map_err(|()| ValidationError::new("after", "must be a cursor")))
        .transpose()
}

fn reset_event(id: Option<Position>, why: &str) -> Bytes {
    let data = serde_json::json!({ "reason": why }).to_string();
    sse_frame(id.map(|id| id.to_string()).as_deref(), "reset", &data)
}

/// A heartbeat: an empty comment line, which every client ignores.
const HEARTBEAT: &[u8] = b":\n\n";

async fn stream(state: AppState, scope: Uuid, after: Option<Position>) -> Result<Response, Error> {
    let subscription = state.hub.join(scope, Duration::from_secs(2)).await.map_err(|refused| match refused {
        Refused::Full => Error::TooManyStreams,
        Refused::NotStarted => Error::StreamsStarting,
    })?;
    let joined_at = subscription.joined_at;
    let mut first = Vec::new();
    // Every message after `floor` is this client's; the hub sends those after `joined_at`.
    let mut floor = after.map_or(joined_at, |after| after.max(joined_at));
    if let Some(after) = after {
        let served = changes::served(&state.db).await?;
        if after < served.oldest {
            metrics::counter!("holdfast_stream_resets_total", "reason" => "cursor_expired").increment(1);
            first.push(reset_event(Some(joined_at), "cursor_expired"));
        } else if after > served.end {
            // No read of this database sent that id: live messages would wait for it for ever.
            metrics::counter!("holdfast_stream_resets_total", "reason" => "cursor_unknown").increment(1);
            first.push(reset_event(Some(joined_at), "cursor_unknown"));
            floor = joined_at;
        } else if after < joined_at {
            let rows = changes::read_scope(&state.db, scope, after, joined_at, CATCH_UP_LIMIT + 1).await?;
            if rows.len() as i64 > CATCH_UP_LIMIT {
                metrics::counter!("holdfast_stream_resets_total", "reason" => "too_far_behind").increment(1);
                first.push(reset_event(Some(joined_at), "too_far_behind"));
            } else {
                first.extend(rows.iter().filter_map(Message::from_change).map(|m| m.frame));
            }
        }
    }
    let ready = serde_json::json!({ "cursor": floor.to_string() }).to_string();
    first.push(sse_frame(Some(&floor.to_string()), "ready", &ready));

    // Each live message is the hub's rendered frame, shared by every client: per client, a
    // reference count and a write. A heartbeat comment goes out every `STREAM_HEARTBEAT_SECONDS`
    // whatever else was sent (one timer per client, not one reset per message).
    let period = Duration::from_millis(state.config.streams.heartbeat_ms);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = futures_util::stream::unfold(
        (Some(subscription), heartbeat),
        move |(subscription, mut heartbeat)| async move {
            let mut subscription = subscription?;
            loop {
                tokio::select! {
                    message = subscription.rx.recv() => match message {
                        Some(message) if message.position <= floor => continue,
                        Some(message) => return Some((message.frame.clone(), (Some(subscription), heartbeat))),
                        // Dropped by the hub for being too slow: what was queued went out; say so.
                        None if subscription.overflowed.load(Ordering::Relaxed) => {
                            return Some((reset_event(None, "too_slow"), (None, heartbeat)));
                        }
                        None => return None,
                    },
                    _ = heartbeat.tick() => return Some((Bytes::from_static(HEARTBEAT), (Some(subscription), heartbeat))),
                }
            }
        },
    );
    let frames = futures_util::stream::iter(first)
        .chain(live)
        .map(Ok::<_, Infallible>)
        .take_until(state.draining.clone().cancelled_owned());
    let body = Body::from_stream(frames);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Proxies such as nginx must pass each message on at once.
            (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
        ],
        body,
    )
        .into_response())
}
