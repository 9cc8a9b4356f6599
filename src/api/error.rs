//! One error type for everything a client can see, rendered once as RFC 9457 problem+json.
//!
//! Each layer has its own small error (domain validation, lock, idempotency, sqlx); they convert
//! into [`ApiError`] here, and [`ApiError::status`] / [`ApiError::code`] are the only places that
//! decide what a client is told. A 500's body is fixed: the real cause rides in a response
//! extension and is logged by `log_internal_errors` inside the request span.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::ValidationError;
use crate::domain::slots::SlotRefusal;
use crate::idempotency::IdempotencyError;
use crate::lock::LockError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("Idempotency-Key header missing")]
    IdempotencyKeyMissing,
    #[error("{0}")]
    IdempotencyKeyInvalid(&'static str),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("forbidden")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("seats unavailable")]
    SeatUnavailable { seat_ids: Vec<Uuid> },
    #[error("unknown seats")]
    UnknownSeats { seat_ids: Vec<Uuid> },
    #[error("hold expired")]
    HoldExpired,
    #[error("hold is {status}")]
    HoldNotActive { status: String },
    #[error("booking is {status}")]
    BookingNotActive { status: String },
    #[error("hold lifetime exceeded")]
    HoldLifetimeExceeded { latest_expiry: chrono::DateTime<chrono::Utc> },
    #[error("seats locked by another request")]
    SeatLocked,
    #[error("insufficient inventory")]
    InsufficientInventory { night: Option<NaiveDate>, available: i32, closed: bool },
    #[error("capacity below what is sold")]
    CapacityBelowSold { night: NaiveDate, sold: i32 },
    #[error("slot unavailable")]
    SlotUnavailable { conflict: Option<(DateTime<Utc>, DateTime<Utc>)> },
    #[error(transparent)]
    SlotRefused(#[from] SlotRefusal),
    #[error("the event has started")]
    EventStarted { starts_at: DateTime<Utc> },
    #[error("night in the past")]
    NightInPast { night: NaiveDate },
    #[error("too many live holds")]
    TooManyHolds { limit: i64 },
    #[error("outside the cancellation window")]
    OutsideCancellationWindow { deadline: DateTime<Utc> },
    #[error("a request with this Idempotency-Key is in progress")]
    IdempotencyInProgress,
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    #[error("concurrent modification")]
    ConcurrentModification,
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("{0}")]
    InvalidBody(String),
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("lock service unavailable")]
    LockUnavailable,
    #[error("database unavailable")]
    DatabaseUnavailable,
    #[error("timed out")]
    Timeout,
    #[error("not ready")]
    NotReady { checks: Value },
    #[error("internal error: {0}")]
    Internal(String),
}

/// The real cause of a 500, for the logging middleware; never serialized to the client.
#[derive(Clone, Debug)]
pub struct InternalErrorDetail(pub Arc<String>);

impl ApiError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Malformed(_) | IdempotencyKeyMissing | IdempotencyKeyInvalid(_) => StatusCode::BAD_REQUEST,
            Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            NotFound(_) => StatusCode::NOT_FOUND,
            SeatUnavailable { .. }
            | HoldExpired
            | HoldNotActive { .. }
            | BookingNotActive { .. }
            | HoldLifetimeExceeded { .. }
            | SeatLocked
            | IdempotencyInProgress
            | ConcurrentModification
            | InsufficientInventory { .. }
            | CapacityBelowSold { .. }
            | SlotUnavailable { .. }
            | TooManyHolds { .. }
            | OutsideCancellationWindow { .. } => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Validation(_)
            | InvalidBody(_)
            | UnknownSeats { .. }
            | IdempotencyKeyReused
            | SlotRefused(_)
            | EventStarted { .. }
            | NightInPast { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            LockUnavailable | DatabaseUnavailable | NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Timeout => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented code a client can switch on.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            Malformed(_) => "MALFORMED_REQUEST",
            IdempotencyKeyMissing => "IDEMPOTENCY_KEY_MISSING",
            IdempotencyKeyInvalid(_) => "IDEMPOTENCY_KEY_INVALID",
            Unauthenticated(_) => "UNAUTHENTICATED",
            Forbidden => "FORBIDDEN",
            NotFound(_) => "NOT_FOUND",
            SeatUnavailable { .. } => "SEAT_UNAVAILABLE",
            UnknownSeats { .. } => "UNKNOWN_SEATS",
            HoldExpired => "HOLD_EXPIRED",
            HoldNotActive { .. } => "HOLD_NOT_ACTIVE",
            BookingNotActive { .. } => "BOOKING_NOT_ACTIVE",
            HoldLifetimeExceeded { .. } => "HOLD_LIFETIME_EXCEEDED",
            SeatLocked => "SEAT_LOCKED",
            InsufficientInventory { .. } => "INSUFFICIENT_INVENTORY",
            CapacityBelowSold { .. } => "CAPACITY_BELOW_SOLD",
            SlotUnavailable { .. } => "SLOT_UNAVAILABLE",
            SlotRefused(refusal) => refusal.code(),
            OutsideCancellationWindow { .. } => "OUTSIDE_CANCELLATION_WINDOW",
            EventStarted { .. } => "EVENT_STARTED",
            NightInPast { .. } => "NIGHT_IN_PAST",
            TooManyHolds { .. } => "TOO_MANY_HOLDS",
            IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ConcurrentModification => "CONCURRENT_MODIFICATION",
            Validation(_) | InvalidBody(_) => "VALIDATION_FAILED",
            PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            RateLimited { .. } => "RATE_LIMITED",
            LockUnavailable => "LOCK_UNAVAILABLE",
            DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Timeout => "TIMEOUT",
            NotReady { .. } => "NOT_READY",
            Internal(_) => "INTERNAL",
        }
    }

    fn title(&self) -> &'static str {
        use ApiError::*;
        match self {
            Malformed(_) => "The request body is not valid JSON",
            IdempotencyKeyMissing => "An Idempotency-Key header is required",
            IdempotencyKeyInvalid(_) => "The Idempotency-Key header is invalid",
            Unauthenticated(_) => "Authentication required",
            Forbidden => "Not allowed",
            NotFound(_) => "Not found",
            SeatUnavailable { .. } => "Some seats are not available",
            UnknownSeats { .. } => "Some seats do not exist in this event",
            HoldExpired => "The hold has expired",
            HoldNotActive { .. } => "The hold is no longer active",
            BookingNotActive { .. } => "The booking is no longer active",
            HoldLifetimeExceeded { .. } => "The hold cannot be extended that far",
            SeatLocked => "What you asked for is being booked by another request",
            InsufficientInventory { .. } => "Not enough units are left on a night of the stay",
            CapacityBelowSold { .. } => "The capacity cannot go below what is already sold",
            SlotUnavailable { .. } => "The slot overlaps another booking",
            SlotRefused(_) => "The slot cannot be booked",
            OutsideCancellationWindow { .. } => "The booking can no longer be cancelled",
            EventStarted { .. } => "The event has already started",
            NightInPast { .. } => "The stay starts in the past",
            TooManyHolds { .. } => "You have too many live holds",
            IdempotencyInProgress => "A request with this Idempotency-Key is still in progress",
            IdempotencyKeyReused => "This Idempotency-Key was used for a different request",
            ConcurrentModification => "The resource changed while this request ran",
            Validation(_) | InvalidBody(_) => "The request is invalid",
            PayloadTooLarge => "The request body is too large",
            UnsupportedMediaType => "The request body must be application/json",
            RateLimited { .. } => "Too many requests",
            LockUnavailable => "The lock service is unavailable",
            DatabaseUnavailable => "The database is unavailable",
            Timeout => "The request took too long",
            NotReady { .. } => "Not ready",
            Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        use ApiError::*;
        match self {
            Malformed(msg) | InvalidBody(msg) => msg.clone(),
            Validation(err) => err.to_string(),
            IdempotencyKeyInvalid(msg) | Unauthenticated(msg) => (*msg).to_owned(),
            NotFound(what) => format!("No {what} with that id is visible to you."),
            HoldNotActive { status } => format!("The hold is {status}."),
            BookingNotActive { status } => format!("The booking is {status}."),
            HoldLifetimeExceeded { latest_expiry } => {
                format!("A hold may not live past {}.", latest_expiry.to_rfc3339())
            }
            SeatLocked => "Retry shortly: another request holds a lock on what you asked for.".into(),
            InsufficientInventory { night: Some(night), available, closed: true } => {
                format!("{night} is not on sale ({available} left).")
            }
            InsufficientInventory { night: Some(night), available, .. } => format!("{night} has {available} left."),
            CapacityBelowSold { night, sold } => format!("{night} already has {sold} sold or held."),
            SlotUnavailable { conflict: Some((start, end)) } => {
                format!("It overlaps {} to {}, including buffers.", start.to_rfc3339(), end.to_rfc3339())
            }
            SlotRefused(refusal) => refusal.to_string(),
            OutsideCancellationWindow { deadline } => {
                format!("Cancellation closed at {}.", deadline.to_rfc3339())
            }
            EventStarted { starts_at } => format!("The event started at {}.", starts_at.to_rfc3339()),
            NightInPast { night } => format!("{night} is in the past."),
            TooManyHolds { limit } => {
                format!("At most {limit} live holds per user: confirm or release one first.")
            }
            IdempotencyInProgress => "Retry later with the same key to get its outcome.".into(),
            IdempotencyKeyReused => "Use a new Idempotency-Key for a different request.".into(),
            ConcurrentModification => "Nothing was changed; retry the request.".into(),
            LockUnavailable => "Nothing was changed; retry with the same Idempotency-Key.".into(),
            DatabaseUnavailable => "Nothing was changed; retry with the same Idempotency-Key.".into(),
            Timeout => "Retry with the same Idempotency-Key to learn the outcome.".into(),
            Internal(_) => "An unexpected error occurred.".into(),
            other => other.title().to_owned(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        use ApiError::*;
        match self {
            RateLimited { retry_after_secs } => Some(*retry_after_secs),
            SeatLocked
            | IdempotencyInProgress
            | ConcurrentModification
            | LockUnavailable
            | DatabaseUnavailable
            | Timeout
            | NotReady { .. } => Some(1),
            _ => None,
        }
    }

    /// Whether this outcome is the settled result of executing a request, stored and replayed
    /// for its Idempotency-Key. Transient failures are not: a retry must run again.
    pub fn is_final_outcome(&self) -> bool {
        use ApiError::*;
        matches!(
            self,
            NotFound(_)
                | SeatUnavailable { .. }
                | UnknownSeats { .. }
                | HoldExpired
                | HoldNotActive { .. }
                | BookingNotActive { .. }
                | HoldLifetimeExceeded { .. }
                | InsufficientInventory { .. }
                | CapacityBelowSold { .. }
                | SlotUnavailable { .. }
                | SlotRefused(_)
                | OutsideCancellationWindow { .. }
                | EventStarted { .. }
                | TooManyHolds { .. }
        )
    }

    /// The problem document (without `instance`, which is per request).
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("/problems/{}", self.code().to_ascii_lowercase().replace('_', "-")),
            "title": self.title(),
            "status": self.status().as_u16(),
            "detail": self.detail(),
            "code": self.code(),
        });
        let extra = match self {
            ApiError::SeatUnavailable { seat_ids } | ApiError::UnknownSeats { seat_ids } => {
                json!({ "seat_ids": seat_ids })
            }
            ApiError::Validation(err) => json!({ "field": err.field }),
            ApiError::HoldLifetimeExceeded { latest_expiry } => {
                json!({ "latest_expiry": latest_expiry })
            }
            ApiError::NotReady { checks } => json!({ "checks": checks }),
            ApiError::InsufficientInventory { night, available, closed } => {
                json!({ "night": night, "available": available, "closed": closed })
            }
            ApiError::CapacityBelowSold { night, sold } => json!({ "night": night, "sold": sold }),
            ApiError::SlotUnavailable { conflict } => json!({
                "conflict": conflict.map(|(start, end)| json!({ "start": start, "end": end })),
            }),
            ApiError::OutsideCancellationWindow { deadline } => json!({ "cancellable_until": deadline }),
            ApiError::EventStarted { starts_at } => json!({ "starts_at": starts_at }),
            ApiError::NightInPast { night } => json!({ "night": night }),
            ApiError::TooManyHolds { limit } => json!({ "limit": limit }),
            ApiError::RateLimited { retry_after_secs } => {
                json!({ "retry_after_seconds": retry_after_secs })
            }
            _ => Value::Null,
        };
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        body
    }
}

/// Renders a JSON body with the right content type: problem+json for errors.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status.is_client_error() || status.is_server_error() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status(), &self.body());
        if let Some(secs) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Internal(cause) = self {
            response.extensions_mut().insert(InternalErrorDetail(Arc::new(cause)));
        }
        response
    }
}

impl From<LockError> for ApiError {
    fn from(err: LockError) -> Self {
        match err {
            LockError::Contended => ApiError::SeatLocked,
            LockError::Unavailable => ApiError::LockUnavailable,
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::KeyReused => ApiError::IdempotencyKeyReused,
            IdempotencyError::InProgress => ApiError::IdempotencyInProgress,
            IdempotencyError::Database(err) => err.into(),
        }
    }
}

/// Names of the constraints that stand for "someone else has these seats".
const SEAT_CONFLICT_CONSTRAINTS: &[&str] =
    &["booking_seats_one_live_sale", "seats_single_claim", "bookings_one_per_hold"];

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                ApiError::DatabaseUnavailable
            }
            sqlx::Error::Database(db) => {
                if let Some(constraint) = db.constraint()
                    && SEAT_CONFLICT_CONSTRAINTS.contains(&constraint)
                {
                    return ApiError::SeatUnavailable { seat_ids: Vec::new() };
                }
                match db.constraint() {
                    Some("inventory_nights_not_oversold") => {
                        return ApiError::InsufficientInventory { night: None, available: 0, closed: false };
                    }
                    Some("slot_claims_no_overlap") => return ApiError::SlotUnavailable { conflict: None },
                    _ => {}
                }
                match db.code().as_deref() {
                    // query_canceled (statement_timeout), lock_not_available (lock_timeout)
                    Some("57014") | Some("55P03") => ApiError::Timeout,
                    // serialization_failure, deadlock_detected
                    Some("40001") | Some("40P01") => ApiError::ConcurrentModification,
                    // admin_shutdown, crash_shutdown, cannot_connect_now, connection exceptions
                    Some(code) if code.starts_with("57P") || code.starts_with("08") => ApiError::DatabaseUnavailable,
                    _ => ApiError::internal(err),
                }
            }
            _ => ApiError::internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_cause() {
        let body = ApiError::internal("password=hunter2 at db.internal:5432").body();
        let text = body.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(body["code"], "INTERNAL");
        assert_eq!(body["status"], 500);
    }

    #[test]
    fn only_settled_business_outcomes_are_replayable() {
        assert!(ApiError::SeatUnavailable { seat_ids: vec![] }.is_final_outcome());
        assert!(ApiError::HoldExpired.is_final_outcome());
        assert!(!ApiError::SeatLocked.is_final_outcome());
        assert!(!ApiError::LockUnavailable.is_final_outcome());
        assert!(!ApiError::DatabaseUnavailable.is_final_outcome());
        assert!(!ApiError::Validation(ValidationError::new("x", "y")).is_final_outcome());
    }

    #[test]
    fn problem_bodies_carry_type_status_and_extras() {
        let seat = Uuid::from_u128(7);
        let body = ApiError::SeatUnavailable { seat_ids: vec![seat] }.body();
        assert_eq!(body["type"], "/problems/seat-unavailable");
        assert_eq!(body["status"], 409);
        assert_eq!(body["seat_ids"][0], seat.to_string());
    }
}
