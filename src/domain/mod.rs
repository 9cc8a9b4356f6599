//! Types that parse, don't validate. Nothing here knows about HTTP or SQL: a value of one of
//! these types is valid by construction, so the layers below never re-check it.

mod availability;
pub mod best_available;
mod caller;
pub mod event;
mod hold;
mod idempotency_key;
mod nights;
pub mod slots;
mod status;
mod time;

pub use availability::StartsWanted;
pub use caller::Caller;
pub use event::{EventLayout, NewEvent, NewSeat, QueueChange, QueueSettings, SeatSpec};
pub use hold::{SeatIds, Ttl, parse_payment_reference};
pub use idempotency_key::IdempotencyKey;
pub use nights::{MAX_NIGHTS, Nights, units};
pub use slots::SlotRules;
pub use status::{BookingStatus, HoldStatus, UnknownStatus};
pub use time::{MAX_YEAR, MIN_YEAR, bounded_date, bounded_instant};

/// The highest price of one seat, in cents (100 million in the currency's units). With at most
/// [`crate::config::MAX_HOLD_SEATS`] seats per hold, no total comes near `i64::MAX`.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;

/// The longest name (event, inventory, resource), in characters.
pub const MAX_NAME: usize = 200;
/// The longest seat section or row label, in characters.
pub const MAX_LABEL: usize = 32;
/// The longest payment reference, in characters.
pub const MAX_PAYMENT_REFERENCE: usize = 255;
/// The most units (capacity, allowance) of one night.
pub const MAX_UNITS: i64 = 1_000_000;

/// A name or label as the OpenAPI document states it: at most `max` characters as sent, and at
/// least one that is not ASCII white space; stored without leading and trailing ASCII white space.
/// (ASCII only, so that the server, the document's regular expression and every client agree on
/// what "blank" means.)
pub fn parse_name(value: &str, field: &'static str, max: usize) -> Result<String, ValidationError> {
    let trimmed = value.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    if trimmed.is_empty() || value.chars().count() > max {
        return Err(ValidationError::new(field, format!("must be 1 to {max} characters, not all blank")));
    }
    Ok(trimmed.to_owned())
}

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
