//! Types that parse, don't validate. Nothing here knows about HTTP or SQL: a value of one of
//! these types is valid by construction, so the layers below never re-check it.

mod event;
mod hold;
mod idempotency_key;
mod nights;
pub mod slots;
mod time;

pub use event::{EventLayout, NewEvent, NewSeat, SeatSpec};
pub use hold::{SeatIds, Ttl};
pub use idempotency_key::IdempotencyKey;
pub use nights::{MAX_NIGHTS, Nights, units};
pub use slots::SlotRules;
pub use time::{MAX_YEAR, MIN_YEAR, bounded_date, bounded_instant};

/// The highest price of one seat, in cents (100 million in the currency's units). With at most
/// [`crate::config::MAX_HOLD_SEATS`] seats per hold, no total comes near `i64::MAX`.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;

/// A request that is well-formed JSON but asks for something invalid (422 `VALIDATION_FAILED`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}
