//! The stored statuses as SQL values: `holds.status` and `bookings.status` are `text` columns
//! (a CHECK lists the values), read and written as [`HoldStatus`] and [`BookingStatus`]. A stored
//! text the code does not know fails to decode; it never becomes a default.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::domain::{BookingStatus, HoldStatus};

macro_rules! text_column {
    ($type:ty) => {
        impl Type<Postgres> for $type {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $type {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $type {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                // Parsed from the borrowed text: nothing is allocated unless it is unknown.
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse::<$type>()?)
            }
        }
    };
}

text_column!(HoldStatus);
text_column!(BookingStatus);
