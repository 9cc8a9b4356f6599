//! The OpenAPI 3.1 document, generated from the code: every route is registered through
//! `utoipa_axum::routes!` from its handler's `#[utoipa::path]`, so a route cannot be served
//! without being documented; bodies and responses are the handlers' own types. Served at
//! `GET /openapi.json`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};
use uuid::Uuid;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "holdfast",
        description = "Hold and book seats, rooms per night and time slots: nothing sold twice, a retried \
request never books twice. Every state-changing POST takes an `Idempotency-Key`; a replayed answer \
carries `Idempotent-Replayed: true`. Every error is RFC 9457 `application/problem+json` with a stable `code`."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem)),
    tags(
        (name = "seats", description = "Events and their seats"),
        (name = "rooms", description = "Quantity inventory per night"),
        (name = "slots", description = "Time slots on resources"),
        (name = "holds", description = "Holds of every kind: confirm, extend, release"),
        (name = "bookings", description = "Bookings of every kind: read, cancel, reschedule, history"),
        (name = "streams", description = "Live availability as Server-Sent Events"),
        (name = "changes", description = "Every change, in commit-safe order, for consumers that follow them"),
        (name = "webhooks", description = "Signed webhooks (Standard Webhooks): endpoints, deliveries, attempts"),
        (name = "queue", description = "Waiting rooms: a fair line in front of an event's seats, admission tokens"),
        (name = "operations", description = "Health, readiness, metrics, integrity")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// Every operation that takes an `Idempotency-Key` may answer with a stored reply, so its
/// success responses document the `Idempotent-Replayed` header. Applied once to the merged
/// document, from the parameter itself, rather than written out on each route.
pub fn document_replays(doc: &mut utoipa::openapi::OpenApi) {
    let header = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some("`true` when this is the stored answer to an earlier request with the same key"))
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let keyed =
                operation.parameters.iter().flatten().any(|p| matches!(p, RefOr::T(p) if p.name == "Idempotency-Key"));
            if !keyed {
                continue;
            }
            for (status, response) in &mut operation.responses.responses {
                if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
                    response.headers.insert("Idempotent-Replayed".to_owned(), RefOr::T(header.clone()));
                }
            }
        }
    }
}

/// What a response's id lets a client (or a stateful fuzzer) do next: (operation, status, path
/// parameter the id fills, the operations it leads to).
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    ("create_event", "201", "event_id", &["get_event", "list_seats", "create_hold", "book_seats"]),
    ("get_event", "200", "event_id", &["list_seats", "create_hold", "book_seats"]),
    ("create_hold", "201", "hold_id", &["get_hold", "extend_hold", "confirm_hold", "release_hold"]),
    ("create_room_hold", "201", "hold_id", &["get_hold", "extend_hold", "confirm_hold", "release_hold"]),
    ("create_slot_hold", "201", "hold_id", &["get_hold", "extend_hold", "confirm_hold", "release_hold"]),
    ("get_hold", "200", "hold_id", &["extend_hold", "confirm_hold", "release_hold"]),
    ("confirm_hold", "201", "booking_id", &["get_booking", "cancel_booking", "booking_history", "reschedule_booking"]),
    ("book_seats", "201", "booking_id", &["get_booking", "cancel_booking", "booking_history"]),
    ("get_booking", "200", "booking_id", &["cancel_booking", "booking_history", "reschedule_booking"]),
    ("create_inventory", "201", "inventory_id", &["inventory_availability", "create_room_hold", "patch_nights"]),
    ("create_resource", "201", "resource_id", &["get_resource", "slot_availability", "create_slot_hold"]),
    ("get_resource", "200", "resource_id", &["slot_availability", "create_slot_hold"]),
    ("create_webhook", "201", "webhook_id", &["get_webhook", "list_deliveries", "delete_webhook"]),
];

/// OpenAPI links from every response that names a new or read object to the operations that
/// take its id, so that generated clients document the flow and schemathesis's stateful phase
/// reaches every operation (event → seats and holds; hold → get, extend, confirm, release;
/// booking → get, cancel, history, reschedule; inventory and resource → availability and holds).
pub fn document_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    for (source, status, parameter, targets) in LINKS {
        let operation = doc
            .paths
            .paths
            .values_mut()
            .flat_map(|item| [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete])
            .flatten()
            .find(|op| op.operation_id.as_deref() == Some(*source));
        let Some(RefOr::T(response)) = operation.and_then(|op| op.responses.responses.get_mut(*status)) else {
            panic!("OpenAPI links: {source} has no {status} response");
        };
        for target in *targets {
            let link = LinkBuilder::new()
                .operation_id(*target)
                .parameter(*parameter, "$response.body#/id")
                .description(format!("The `id` of this response is the `{parameter}` of `{target}`."))
                .build();
            response.links.insert((*target).to_owned(), RefOr::T(link));
        }
    }
    // A page of the seat map names seats that a hold or a booking can take.
    let seats = doc
        .paths
        .paths
        .get_mut("/v1/events/{event_id}/seats")
        .and_then(|item| item.get.as_mut())
        .and_then(|op| op.responses.responses.get_mut("200"));
    if let Some(RefOr::T(response)) = seats {
        for target in ["create_hold", "book_seats"] {
            let link = LinkBuilder::new()
                .operation_id(target)
                .parameter("event_id", "$request.path.event_id")
                .request_body(Some(serde_json::json!({ "seat_ids": ["$response.body#/seats/0/id"] })))
                .description("The first seat of this page, held or booked.")
                .build();
            response.links.insert(target.to_owned(), RefOr::T(link));
        }
    }
}

/// The `Idempotency-Key` request header.
#[derive(Debug, IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyParam(
    /// 1 to 255 visible ASCII characters, unique per intended operation. A retry with the same key
    /// and body gets the stored answer; the same key with another body gets 422.
    String,
);

/// The `Idempotency-Key` header where it is accepted but not required (the operation is
/// idempotent by itself).
#[derive(Debug, IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)]
pub struct OptionalIdempotencyKeyParam(
    /// As for other requests: a retry with the same key gets the stored answer.
    Option<String>,
);

/// The `Admission-Token` header: on an event with a waiting room, the admitted ticket's
/// `admission_token` (`GET /v1/queue/{ticket_id}`). Without a live one: 403 NOT_ADMITTED.
#[derive(Debug, IntoParams)]
#[into_params(names("Admission-Token"), parameter_in = Header)]
#[allow(dead_code)]
pub struct AdmissionTokenParam(Option<String>);

/// A slot as `[start, end)`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// RFC 9457 problem details: the body of every error (`application/problem+json`). `code` is
/// stable; the fields after it appear with the codes that need them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(rename = "type", example = "/problems/seat-unavailable")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[schema(example = "SEAT_UNAVAILABLE")]
    pub code: String,
    /// VALIDATION_FAILED: the field at fault.
    pub field: Option<String>,
    /// SEAT_UNAVAILABLE / UNKNOWN_SEATS: the seats concerned.
    pub seat_ids: Option<Vec<Uuid>>,
    /// HOLD_LIFETIME_EXCEEDED: the latest expiry allowed.
    pub latest_expiry: Option<DateTime<Utc>>,
    /// NOT_READY: what is down.
    #[schema(value_type = Option<Object>)]
    pub checks: Option<Value>,
    /// RATE_LIMITED: also in the Retry-After header.
    pub retry_after_seconds: Option<u64>,
    /// INSUFFICIENT_INVENTORY: the first night that is short; CAPACITY_BELOW_SOLD, NIGHT_IN_PAST: the night.
    pub night: Option<NaiveDate>,
    /// INSUFFICIENT_INVENTORY: units left on that night.
    pub available: Option<i32>,
    /// INSUFFICIENT_INVENTORY: the night is closed or not on sale.
    pub closed: Option<bool>,
    /// CAPACITY_BELOW_SOLD: units held or booked on that night.
    pub sold: Option<i32>,
    /// SLOT_UNAVAILABLE: the booked slot it overlaps (with buffers), when known.
    pub conflict: Option<Interval>,
    /// OUTSIDE_CANCELLATION_WINDOW: when cancelling closed.
    pub cancellable_until: Option<DateTime<Utc>>,
    /// EVENT_STARTED: when the event started.
    pub starts_at: Option<DateTime<Utc>>,
    /// TOO_MANY_HOLDS: the most live holds a user may have; BUYER_LIMIT_REACHED: the event's
    /// `max_seats_per_buyer`.
    pub limit: Option<i64>,
    /// CURSOR_EXPIRED: the oldest cursor still served (re-read the state, then follow from it).
    pub oldest_cursor: Option<String>,
    /// NOT_ON_SALE: when the event goes on sale.
    pub on_sale_at: Option<DateTime<Utc>>,
    /// BUYER_LIMIT_REACHED: the seats the buyer holds and owns in the event now.
    pub current: Option<i64>,
    /// NO_SEATS_AVAILABLE: how many seats matching the request are free (not enough side by side).
    pub free: Option<i64>,
}

/// Errors any authenticated endpoint may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommonErrors {
    /// MALFORMED_REQUEST, IDEMPOTENCY_KEY_MISSING, IDEMPOTENCY_KEY_INVALID.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// UNAUTHENTICATED: no valid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(Problem),
    /// PAYLOAD_TOO_LARGE: the body is above the route's limit.
    #[response(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Problem),
    /// UNSUPPORTED_MEDIA_TYPE: the body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// VALIDATION_FAILED (with `field`), IDEMPOTENCY_KEY_REUSED. Nothing was written.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// RATE_LIMITED.
    #[response(status = 429, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(Problem),
    /// INTERNAL: the cause is logged with the request id, never sent.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// LOCK_UNAVAILABLE (no Redis quorum), DATABASE_UNAVAILABLE. Nothing was changed: retry with the same key.
    #[response(status = 503, content_type = "application/problem+json",
               headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(Problem),
    /// TIMEOUT: retry with the same Idempotency-Key to learn the outcome.
    #[response(status = 504, content_type = "application/problem+json")]
    Timeout(Problem),
}

/// Answers of a state-changing request that has an Idempotency-Key.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum KeyErrors {
    /// IDEMPOTENCY_IN_PROGRESS (retry later with the same key), or the business conflicts listed
    /// for the endpoint.
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
}

/// Not found, or not yours (others' holds and bookings do not exist for you).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum NotFound {
    /// NOT_FOUND.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// `Last-Event-ID`: a stream's reconnect (browsers send it by themselves).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct LastEventIdParam {
    /// The last `id:` this client received: the stream resumes after it.
    #[param(rename = "Last-Event-ID", pattern = r"^[0-9]{1,18}-[0-9]{1,18}$")]
    last_event_id: Option<String>,
}

/// Refusals of a stream.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum StreamErrors {
    /// VALIDATION_FAILED: `after` or `Last-Event-ID` is not a cursor.
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
    /// TOO_MANY_STREAMS (STREAM_MAX_CLIENTS on this instance), STREAMS_STARTING; with Retry-After.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Admin-only endpoints.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum AdminOnly {
    /// FORBIDDEN: the token has no admin role.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ValidationError;
    use crate::domain::slots::SlotRefusal;
    use crate::error::Error;

    /// Every field any error body carries is in the documented Problem schema.
    #[test]
    fn every_error_body_fits_the_problem_schema() {
        let t = Utc::now();
        let errors = vec![
            Error::Malformed("x".into()),
            Error::NotFound("hold"),
            Error::SeatUnavailable { seat_ids: vec![Uuid::nil()] },
            Error::UnknownSeats { seat_ids: vec![] },
            Error::HoldLifetimeExceeded { latest_expiry: t },
            Error::Validation(ValidationError::new("name", "bad")),
            Error::RateLimited { retry_after_secs: 1 },
            Error::NotReady { checks: serde_json::json!({ "postgres": "down" }) },
            Error::InsufficientInventory { night: Some(t.date_naive()), available: 1, closed: false },
            Error::CapacityBelowSold { night: t.date_naive(), sold: 2 },
            Error::SlotUnavailable { conflict: Some((t, t)) },
            Error::SlotUnavailable { conflict: None },
            Error::SlotRefused(SlotRefusal::InPast),
            Error::OutsideCancellationWindow { deadline: t },
            Error::EventStarted { starts_at: t },
            Error::NotAdmitted,
            Error::QueueNotEnabled,
            Error::QueueBusy,
            Error::NightInPast { night: t.date_naive() },
            Error::TooManyHolds { limit: 5 },
            Error::NotOnSale { on_sale_at: t },
            Error::BuyerLimitReached { limit: 4, current: 4 },
            Error::NoSeatsAvailable { free: 3 },
            Error::WebhookTargetRefused { reason: "must be an https URL".into() },
            Error::CursorExpired { oldest: "1-2".into(), ahead: false },
            Error::SlotRefused(SlotRefusal::BeyondHorizon { days: 365 }),
            Error::internal("secret"),
        ];
        for error in errors {
            let body = error.body();
            let problem: Problem = serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(problem.code, error.code());
        }
    }

    /// Every link names an operation that exists, and every operation id is unique.
    #[test]
    fn links_point_at_operations_that_exist_and_operation_ids_are_unique() {
        let doc = crate::api::openapi_document();
        let mut ids = Vec::new();
        let mut links = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                ids.push(operation["operationId"].as_str().unwrap().to_owned());
                for response in operation["responses"].as_object().unwrap().values() {
                    if let Some(found) = response["links"].as_object() {
                        links.extend(found.values().map(|l| l["operationId"].as_str().unwrap().to_owned()));
                    }
                }
            }
        }
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
        assert!(!links.is_empty());
        for target in &links {
            assert!(ids.contains(target), "a link points at {target}, which does not exist");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_bearer_auth() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
    }
}
