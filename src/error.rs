//! Every refusal and failure a client can see, each described once.
//!
//! Each layer has its own small error (domain validation, lock, idempotency, sqlx); they convert
//! into [`Error`] here, and [`Error::kind`] is the one table that says, per variant, its stable
//! `code`, its status, its title, whether a retry may help (`Retry-After`) and whether it is a
//! settled answer, stored and replayed for an Idempotency-Key. `detail` and `extras` add what a
//! particular instance says. Rendering as RFC 9457 problem+json is the HTTP layer's business
//! (`api::problem`). A 500's body is fixed: the real cause stays in the error, for the logs.
//!
//! The status is a number, not an HTTP type: an idempotency record stores and replays the whole
//! answer, status included, so the status is part of what the core decides.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::db;
use crate::domain::slots::SlotRefusal;
use crate::domain::{BookingStatus, HoldStatus, ValidationError};
use crate::idempotency::IdempotencyError;
use crate::lock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("seats unavailable")]
    SeatUnavailable { seat_ids: Vec<Uuid> },
    #[error("unknown seats")]
    UnknownSeats { seat_ids: Vec<Uuid> },
    #[error("hold expired")]
    HoldExpired,
    #[error("hold is {status}")]
    HoldNotActive { status: HoldStatus },
    #[error("booking is {status}")]
    BookingNotActive { status: BookingStatus },
    #[error("hold lifetime exceeded")]
    HoldLifetimeExceeded { latest_expiry: DateTime<Utc> },
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
    #[error("cursor expired")]
    /// Outside what the feed keeps: older than its retention, or (`ahead`) beyond its end.
    CursorExpired { oldest: String, ahead: bool },
    #[error("the event is not on sale yet")]
    NotOnSale { on_sale_at: DateTime<Utc> },
    #[error("no seats available")]
    NoSeatsAvailable { free: i64 },
    #[error("buyer limit reached")]
    BuyerLimitReached { limit: i32, current: i64 },
    #[error("webhook target refused: {reason}")]
    WebhookTargetRefused { reason: String },
    #[error("too many stream clients")]
    TooManyStreams,
    #[error("no live admission from the event's waiting room")]
    NotAdmitted,
    #[error("the event has no waiting room")]
    QueueNotEnabled,
    #[error("too many waiting-room requests at once")]
    QueueBusy,
    #[error("streams are starting")]
    StreamsStarting,
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

/// What every instance of a variant shares: one row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The stable, documented code a client can switch on.
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// Seconds a client should wait before retrying, when retrying may help.
    pub retry_after: Option<u64>,
    /// A settled outcome of executing the request: stored and replayed for its Idempotency-Key.
    /// Transient failures are not: a retry must run again.
    pub replayable: bool,
}

const fn kind(code: &'static str, status: u16, title: &'static str) -> Kind {
    Kind { code, status, title, retry_after: None, replayable: false }
}

impl Kind {
    /// A settled business outcome (see [`Kind::replayable`]).
    const fn settled(self) -> Self {
        Kind { replayable: true, ..self }
    }

    /// Worth retrying after `secs` seconds.
    const fn retry(self, secs: u64) -> Self {
        Kind { retry_after: Some(secs), ..self }
    }
}

impl Error {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    /// The table: one row per variant.
    pub fn kind(&self) -> Kind {
        use Error::*;
        match self {
            Malformed(_) => kind("MALFORMED_REQUEST", 400, "The request body is not valid JSON"),
            IdempotencyKeyMissing => kind("IDEMPOTENCY_KEY_MISSING", 400, "An Idempotency-Key header is required"),
            IdempotencyKeyInvalid(_) => kind("IDEMPOTENCY_KEY_INVALID", 400, "The Idempotency-Key header is invalid"),
            Unauthenticated(_) => kind("UNAUTHENTICATED", 401, "Authentication required"),
            Forbidden => kind("FORBIDDEN", 403, "Not allowed"),
            NotFound(_) => kind("NOT_FOUND", 404, "Not found").settled(),
            MethodNotAllowed => kind("METHOD_NOT_ALLOWED", 405, "Method not allowed"),
            SeatUnavailable { .. } => kind("SEAT_UNAVAILABLE", 409, "Some seats are not available").settled(),
            UnknownSeats { .. } => kind("UNKNOWN_SEATS", 422, "Some seats do not exist in this event").settled(),
            HoldExpired => kind("HOLD_EXPIRED", 409, "The hold has expired").settled(),
            HoldNotActive { .. } => kind("HOLD_NOT_ACTIVE", 409, "The hold is no longer active").settled(),
            BookingNotActive { .. } => kind("BOOKING_NOT_ACTIVE", 409, "The booking is no longer active").settled(),
            HoldLifetimeExceeded { .. } => {
                kind("HOLD_LIFETIME_EXCEEDED", 409, "The hold cannot be extended that far").settled()
            }
            SeatLocked => kind("SEAT_LOCKED", 409, "What you asked for is being booked by another request").retry(1),
            InsufficientInventory { .. } => {
                kind("INSUFFICIENT_INVENTORY", 409, "Not enough units are left on a night of the stay").settled()
            }
            CapacityBelowSold { .. } => {
                kind("CAPACITY_BELOW_SOLD", 409, "The capacity cannot go below what is already sold").settled()
            }
            SlotUnavailable { .. } => kind("SLOT_UNAVAILABLE", 409, "The slot overlaps another booking").settled(),
            SlotRefused(refusal) => kind(refusal.code(), 422, "The slot cannot be booked").settled(),
            EventStarted { .. } => kind("EVENT_STARTED", 422, "The event has already started").settled(),
            NightInPast { .. } => kind("NIGHT_IN_PAST", 422, "The stay starts in the past"),
            TooManyHolds { .. } => kind("TOO_MANY_HOLDS", 409, "You have too many live holds").settled(),
            OutsideCancellationWindow { .. } => {
                kind("OUTSIDE_CANCELLATION_WINDOW", 409, "The booking can no longer be cancelled").settled()
            }
            IdempotencyInProgress => {
                kind("IDEMPOTENCY_IN_PROGRESS", 409, "A request with this Idempotency-Key is still in progress")
                    .retry(1)
            }
            IdempotencyKeyReused => {
                kind("IDEMPOTENCY_KEY_REUSED", 422, "This Idempotency-Key was used for a different request")
            }
            ConcurrentModification => {
                kind("CONCURRENT_MODIFICATION", 409, "The resource changed while this request ran").retry(1)
            }
            CursorExpired { .. } => kind("CURSOR_EXPIRED", 410, "The cursor is outside the changes kept"),
            NotOnSale { .. } => kind("NOT_ON_SALE", 409, "The event is not on sale yet").settled(),
            NoSeatsAvailable { .. } => kind("NO_SEATS_AVAILABLE", 409, "No seats fit the request").settled(),
            BuyerLimitReached { .. } => {
                kind("BUYER_LIMIT_REACHED", 409, "This would take you past the event's seats per buyer").settled()
            }
            WebhookTargetRefused { .. } => kind("WEBHOOK_TARGET_REFUSED", 422, "The webhook URL cannot be used"),
            NotAdmitted => kind("NOT_ADMITTED", 403, "Join the event's waiting room and wait to be admitted"),
            QueueNotEnabled => kind("QUEUE_NOT_ENABLED", 409, "This event has no waiting room").settled(),
            QueueBusy => {
                kind("QUEUE_BUSY", 503, "Too many people are joining this instance's waiting rooms at once").retry(1)
            }
            TooManyStreams => kind("TOO_MANY_STREAMS", 503, "This instance serves as many streams as it may").retry(5),
            StreamsStarting => kind("STREAMS_STARTING", 503, "Live streams are not available yet").retry(1),
            Validation(_) | InvalidBody(_) => kind("VALIDATION_FAILED", 422, "The request is invalid"),
            PayloadTooLarge => kind("PAYLOAD_TOO_LARGE", 413, "The request body is too large"),
            UnsupportedMediaType => kind("UNSUPPORTED_MEDIA_TYPE", 415, "The request body must be application/json"),
            RateLimited { retry_after_secs } => kind("RATE_LIMITED", 429, "Too many requests").retry(*retry_after_secs),
            LockUnavailable => kind("LOCK_UNAVAILABLE", 503, "The lock service is unavailable").retry(1),
            DatabaseUnavailable => kind("DATABASE_UNAVAILABLE", 503, "The database is unavailable").retry(1),
            Timeout => kind("TIMEOUT", 504, "The request took too long").retry(1),
            NotReady { .. } => kind("NOT_READY", 503, "Not ready").retry(1),
            Internal(_) => kind("INTERNAL", 500, "Internal server error"),
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind().code
    }

    pub fn status(&self) -> u16 {
        self.kind().status
    }

    /// Whether this outcome is stored and replayed for its Idempotency-Key (see [`Kind::replayable`]).
    pub fn is_final_outcome(&self) -> bool {
        self.kind().replayable
    }

    /// What this instance says, in words and in fields beside the standard ones.
    fn detail_and_extras(&self) -> (String, Value) {
        use Error::*;
        let retry_same_key = "Nothing was changed; retry with the same Idempotency-Key.";
        match self {
            Malformed(msg) | InvalidBody(msg) => (msg.clone(), Value::Null),
            Validation(err) => (err.to_string(), json!({ "field": err.field })),
            IdempotencyKeyInvalid(msg) | Unauthenticated(msg) => ((*msg).to_owned(), Value::Null),
            NotFound(what) => (format!("No {what} with that id is visible to you."), Value::Null),
            MethodNotAllowed => ("This method is not allowed on this resource.".into(), Value::Null),
            SeatUnavailable { seat_ids } | UnknownSeats { seat_ids } => {
                (self.kind().title.to_owned(), json!({ "seat_ids": seat_ids }))
            }
            HoldNotActive { status } => (format!("The hold is {status}."), Value::Null),
            BookingNotActive { status } => (format!("The booking is {status}."), Value::Null),
            HoldLifetimeExceeded { latest_expiry } => (
                format!("A hold may not live past {}.", latest_expiry.to_rfc3339()),
                json!({ "latest_expiry": latest_expiry }),
            ),
            SeatLocked => ("Retry shortly: another request holds a lock on what you asked for.".into(), Value::Null),
            InsufficientInventory { night, available, closed } => (
                match (night, closed) {
                    (Some(night), true) => format!("{night} is not on sale ({available} left)."),
                    (Some(night), false) => format!("{night} has {available} left."),
                    (None, _) => self.kind().title.to_owned(),
                },
                json!({ "night": night, "available": available, "closed": closed }),
            ),
            CapacityBelowSold { night, sold } => {
                (format!("{night} already has {sold} sold or held."), json!({ "night": night, "sold": sold }))
            }
            SlotUnavailable { conflict } => (
                match conflict {
                    Some((start, end)) => {
                        format!("It overlaps {} to {}, including buffers.", start.to_rfc3339(), end.to_rfc3339())
                    }
                    None => self.kind().title.to_owned(),
                },
                json!({ "conflict": conflict.map(|(start, end)| json!({ "start": start, "end": end })) }),
            ),
            SlotRefused(refusal) => (refusal.to_string(), Value::Null),
            OutsideCancellationWindow { deadline } => {
                (format!("Cancellation closed at {}.", deadline.to_rfc3339()), json!({ "cancellable_until": deadline }))
            }
            EventStarted { starts_at } => {
                (format!("The event started at {}.", starts_at.to_rfc3339()), json!({ "starts_at": starts_at }))
            }
            NightInPast { night } => (format!("{night} is in the past."), json!({ "night": night })),
            TooManyHolds { limit } => (
                format!("At most {limit} live holds per user: confirm or release one first."),
                json!({ "limit": limit }),
            ),
            IdempotencyInProgress => ("Retry later with the same key to get its outcome.".into(), Value::Null),
            IdempotencyKeyReused => ("Use a new Idempotency-Key for a different request.".into(), Value::Null),
            ConcurrentModification => ("Nothing was changed; retry the request.".into(), Value::Null),
            CursorExpired { oldest, ahead: false } => (
                "Changes after this cursor were purged: re-read the current state, then follow from `oldest_cursor`."
                    .into(),
                json!({ "oldest_cursor": oldest }),
            ),
            CursorExpired { oldest, ahead: true } => (
                "This cursor lies ahead of the feed: this database did not issue it (one from another database, or \
                 from before a restore from a logical dump). Re-read the current state, then follow from \
                 `oldest_cursor`."
                    .into(),
                json!({ "oldest_cursor": oldest }),
            ),
            NotOnSale { on_sale_at } => {
                (format!("The event goes on sale at {}.", on_sale_at.to_rfc3339()), json!({ "on_sale_at": on_sale_at }))
            }
            NoSeatsAvailable { free } => (
                format!(
                    "No {} fits: {free} matching seats are free. Ask for fewer, another section, or allow_split.",
                    "block of adjacent seats"
                ),
                json!({ "free": free }),
            ),
            BuyerLimitReached { limit, current } => (
                format!("At most {limit} seats per buyer in this event; you hold or own {current}."),
                json!({ "limit": limit, "current": current }),
            ),
            WebhookTargetRefused { reason } => (
                format!("The url {reason}. Webhooks go only to https URLs on public addresses."),
                json!({ "field": "url" }),
            ),
            TooManyStreams => ("Retry later, or on another instance.".into(), Value::Null),
            NotAdmitted => (
                "This event's seats are for buyers admitted from its waiting room: join with POST \
                 /v1/events/{id}/queue, and once admitted send the ticket's admission_token as the \
                 Admission-Token header."
                    .into(),
                Value::Null,
            ),
            QueueNotEnabled => ("Hold seats directly: no waiting room is open for this event.".into(), Value::Null),
            QueueBusy => {
                ("Nothing was changed; retry in a moment (a join with the same Idempotency-Key).".into(), Value::Null)
            }
            StreamsStarting => {
                ("Retry in a moment: this instance has not read the change log yet.".into(), Value::Null)
            }
            LockUnavailable | DatabaseUnavailable => (retry_same_key.into(), Value::Null),
            Timeout => ("Retry with the same Idempotency-Key to learn the outcome.".into(), Value::Null),
            RateLimited { retry_after_secs } => {
                (self.kind().title.to_owned(), json!({ "retry_after_seconds": retry_after_secs }))
            }
            NotReady { checks } => (self.kind().title.to_owned(), json!({ "checks": checks })),
            Internal(_) => ("An unexpected error occurred.".into(), Value::Null),
            IdempotencyKeyMissing | Forbidden | HoldExpired | PayloadTooLarge | UnsupportedMediaType => {
                (self.kind().title.to_owned(), Value::Null)
            }
        }
    }

    /// The problem document (without `instance`, which is per request).
    pub fn body(&self) -> Value {
        let kind = self.kind();
        let (detail, extras) = self.detail_and_extras();
        let mut body = json!({
            "type": format!("/problems/{}", kind.code.to_ascii_lowercase().replace('_', "-")),
            "title": kind.title,
            "status": kind.status,
            "detail": detail,
            "code": kind.code,
        });
        if let (Value::Object(body), Value::Object(extras)) = (&mut body, extras) {
            body.extend(extras);
        }
        body
    }
}

impl From<LockError> for Error {
    fn from(err: LockError) -> Self {
        match err {
            LockError::Contended => Error::SeatLocked,
            LockError::Unavailable => Error::LockUnavailable,
        }
    }
}

impl From<IdempotencyError> for Error {
    fn from(err: IdempotencyError) -> Self {
        match err {
            IdempotencyError::KeyReused => Error::IdempotencyKeyReused,
            IdempotencyError::InProgress => Error::IdempotencyInProgress,
            IdempotencyError::Database(err) => err.into(),
        }
    }
}

impl From<db::Conflict> for Error {
    fn from(conflict: db::Conflict) -> Self {
        match conflict {
            db::Conflict::Seats => Error::SeatUnavailable { seat_ids: Vec::new() },
            db::Conflict::Night => Error::InsufficientInventory { night: None, available: 0, closed: false },
            db::Conflict::Slot => Error::SlotUnavailable { conflict: None },
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Error::DatabaseUnavailable
            }
            sqlx::Error::Database(refused) => {
                if let Some(conflict) = refused.constraint().and_then(db::on_constraint) {
                    return conflict.into();
                }
                match refused.code().as_deref() {
                    // query_canceled (statement_timeout), lock_not_available (lock_timeout)
                    Some("57014") | Some("55P03") => Error::Timeout,
                    // serialization_failure, deadlock_detected
                    Some("40001") | Some("40P01") => Error::ConcurrentModification,
                    // admin_shutdown, crash_shutdown, cannot_connect_now, connection exceptions
                    Some(code) if code.starts_with("57P") || code.starts_with("08") => Error::DatabaseUnavailable,
                    _ => Error::internal(err),
                }
            }
            _ => Error::internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_cause() {
        let body = Error::internal("password=hunter2 at db.internal:5432").body();
        let text = body.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(body["code"], "INTERNAL");
        assert_eq!(body["status"], 500);
    }

    #[test]
    fn only_settled_business_outcomes_are_replayable() {
        assert!(Error::SeatUnavailable { seat_ids: vec![] }.is_final_outcome());
        assert!(Error::HoldExpired.is_final_outcome());
        assert!(!Error::SeatLocked.is_final_outcome());
        assert!(!Error::LockUnavailable.is_final_outcome());
        assert!(!Error::DatabaseUnavailable.is_final_outcome());
        assert!(!Error::Validation(ValidationError::new("x", "y")).is_final_outcome());
    }

    #[test]
    fn problem_bodies_carry_type_status_and_extras() {
        let seat = Uuid::from_u128(7);
        let body = Error::SeatUnavailable { seat_ids: vec![seat] }.body();
        assert_eq!(body["type"], "/problems/seat-unavailable");
        assert_eq!(body["status"], 409);
        assert_eq!(body["seat_ids"][0], seat.to_string());
    }
}
