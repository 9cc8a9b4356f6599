//! Quantity inventory per night: date ranges of nights and unit counts.

use chrono::NaiveDate;

use super::ValidationError;

/// The most nights one request may span (a stay, an availability read, a PATCH, a new inventory).
pub const MAX_NIGHTS: i64 = 366;

/// Half-open range of nights `[first, end)`: a stay from check-in to check-out, or a range of
/// nights on sale. At least one night, at most [`MAX_NIGHTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nights {
    first: NaiveDate,
    end: NaiveDate,
}

impl Nights {
    pub fn parse(
        first: NaiveDate,
        end: NaiveDate,
        fields: (&'static str, &'static str),
    ) -> Result<Self, ValidationError> {
        super::bounded_date(first, fields.0)?;
        super::bounded_date(end, fields.1)?;
        let n = (end - first).num_days();
        if n < 1 {
            return Err(ValidationError::new(fields.1, format!("must be after {}", fields.0)));
        }
        if n > MAX_NIGHTS {
            return Err(ValidationError::new(fields.1, format!("at most {MAX_NIGHTS} nights after {}", fields.0)));
        }
        Ok(Self { first, end })
    }

    pub fn first(self) -> NaiveDate {
        self.first
    }

    /// The day after the last night (check-out).
    pub fn end(self) -> NaiveDate {
        self.end
    }

    pub fn count(self) -> i64 {
        (self.end - self.first).num_days()
    }

    pub fn iter(self) -> impl Iterator<Item = NaiveDate> {
        self.first.iter_days().take_while(move |d| *d < self.end)
    }
}

/// A count of units: capacity, allowance or quantity, within `range`.
pub fn units(value: i64, field: &'static str, range: std::ops::RangeInclusive<i64>) -> Result<i32, ValidationError> {
    if !range.contains(&value) {
        return Err(ValidationError::new(field, format!("must be between {} and {}", range.start(), range.end())));
    }
    Ok(value as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn nights_are_half_open_and_bounded() {
        let n = Nights::parse(d("2027-03-01"), d("2027-03-04"), ("check_in", "check_out")).unwrap();
        assert_eq!(n.count(), 3);
        assert_eq!(n.iter().collect::<Vec<_>>(), vec![d("2027-03-01"), d("2027-03-02"), d("2027-03-03")]);
        let err = Nights::parse(d("2027-03-04"), d("2027-03-04"), ("check_in", "check_out")).unwrap_err();
        assert_eq!(err.field, "check_out");
        assert!(Nights::parse(d("2027-01-01"), d("2028-01-03"), ("from", "to")).is_err());
    }

    #[test]
    fn units_outside_their_range_are_refused() {
        assert_eq!(units(2, "quantity", 1..=100).unwrap(), 2);
        assert!(units(0, "quantity", 1..=100).is_err());
        assert!(units(-1, "capacity", 0..=1_000_000).is_err());
    }
}
