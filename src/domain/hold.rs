use std::collections::BTreeSet;

use uuid::Uuid;

use super::{MAX_PAYMENT_REFERENCE, ValidationError};

/// The seats one hold or booking asks for: at least one, no duplicates, at most the configured
/// maximum. Kept sorted, so lock keys are always taken in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatIds(Vec<Uuid>);

impl SeatIds {
    pub fn parse(ids: Vec<Uuid>, max: usize) -> Result<Self, ValidationError> {
        if ids.is_empty() {
            return Err(ValidationError::new("seat_ids", "must name at least one seat"));
        }
        if ids.len() > max {
            return Err(ValidationError::new("seat_ids", format!("at most {max} seats per request")));
        }
        let unique: BTreeSet<Uuid> = ids.iter().copied().collect();
        if unique.len() != ids.len() {
            return Err(ValidationError::new("seat_ids", "must not repeat a seat"));
        }
        Ok(Self(unique.into_iter().collect()))
    }

    pub fn as_slice(&self) -> &[Uuid] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A hold lifetime in seconds: from 1 to the configured maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(i64);

impl Ttl {
    pub fn parse(seconds: Option<i64>, default: i64, max: i64) -> Result<Self, ValidationError> {
        let seconds = seconds.unwrap_or(default);
        if !(1..=max).contains(&seconds) {
            return Err(ValidationError::new("ttl_seconds", format!("must be between 1 and {max}")));
        }
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }
}

/// A payment reference as a client sent it: absent, or 1 to [`MAX_PAYMENT_REFERENCE`] characters.
pub fn parse_payment_reference(reference: Option<String>) -> Result<Option<String>, ValidationError> {
    match reference {
        Some(r) if r.is_empty() || r.chars().count() > MAX_PAYMENT_REFERENCE => {
            Err(ValidationError::new("payment_reference", format!("must be 1 to {MAX_PAYMENT_REFERENCE} characters")))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_ids_are_sorted_and_deduplicated_by_refusal() {
        let (a, b) = (Uuid::from_u128(2), Uuid::from_u128(1));
        let ids = SeatIds::parse(vec![a, b], 10).unwrap();
        assert_eq!(ids.as_slice(), &[b, a]);
        assert!(SeatIds::parse(vec![a, a], 10).is_err());
    }

    #[test]
    fn seat_ids_refuse_empty_and_too_many() {
        assert_eq!(SeatIds::parse(vec![], 10).unwrap_err().field, "seat_ids");
        let many: Vec<Uuid> = (0..11).map(Uuid::from_u128).collect();
        assert!(SeatIds::parse(many, 10).is_err());
    }

    #[test]
    fn a_ttl_defaults_when_absent_and_must_be_between_one_second_and_the_maximum() {
        assert_eq!(Ttl::parse(None, 600, 900).unwrap().seconds(), 600);
        assert_eq!(Ttl::parse(Some(1), 600, 900).unwrap().seconds(), 1);
        assert!(Ttl::parse(Some(0), 600, 900).is_err());
        assert!(Ttl::parse(Some(-5), 600, 900).is_err());
        assert!(Ttl::parse(Some(901), 600, 900).is_err());
    }
}
