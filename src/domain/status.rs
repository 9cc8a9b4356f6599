//! The states a hold and a booking go through, as stored (`holds.status`, `bookings.status`,
//! checked by the schema) and as clients read them.

use std::fmt;

/// HELD → CONFIRMED, RELEASED or EXPIRED; a booking bought at once has a hold born CONFIRMED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Confirmed,
    Released,
    Expired,
}

/// CONFIRMED → CANCELLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

/// A stored status the code does not know (a schema the code was not built for).
#[derive(Debug, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(String);

macro_rules! stored_as_text {
    ($type:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $type {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($type::$variant => $text),*
                }
            }
        }

        impl std::str::FromStr for $type {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok($type::$variant),)*
                    _ => Err(UnknownStatus(text.to_owned())),
                }
            }
        }

        impl TryFrom<String> for $type {
            type Error = UnknownStatus;

            fn try_from(text: String) -> Result<Self, UnknownStatus> {
                text.parse()
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_as_text!(HoldStatus { Held = "HELD", Confirmed = "CONFIRMED", Released = "RELEASED", Expired = "EXPIRED" });
stored_as_text!(BookingStatus { Confirmed = "CONFIRMED", Cancelled = "CANCELLED" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for status in [HoldStatus::Held, HoldStatus::Confirmed, HoldStatus::Released, HoldStatus::Expired] {
            assert_eq!(HoldStatus::try_from(status.as_str().to_owned()).unwrap(), status);
        }
        for status in [BookingStatus::Confirmed, BookingStatus::Cancelled] {
            assert_eq!(BookingStatus::try_from(status.as_str().to_owned()).unwrap(), status);
        }
        assert!(HoldStatus::try_from("held".to_owned()).is_err());
    }
}
