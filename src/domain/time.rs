//! Bounds on every date and instant a request carries. chrono accepts years from -262143 to
//! 262142, and arithmetic near those ends panics or overflows Postgres's ranges; a booking
//! service has no use for them. Years 2000 to 9999 keep every sum we do (buffers, TTLs, a
//! year's availability window) far inside what chrono and Postgres can represent.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::ValidationError;

pub const MIN_YEAR: i32 = 2000;
pub const MAX_YEAR: i32 = 9999;

fn out_of_range(field: &'static str) -> ValidationError {
    ValidationError::new(field, format!("must be in the years {MIN_YEAR} to {MAX_YEAR}"))
}

/// An instant within years [`MIN_YEAR`]..=[`MAX_YEAR`] (UTC).
pub fn bounded_instant(t: DateTime<Utc>, field: &'static str) -> Result<DateTime<Utc>, ValidationError> {
    if (MIN_YEAR..=MAX_YEAR).contains(&t.year()) { Ok(t) } else { Err(out_of_range(field)) }
}

/// A date within years [`MIN_YEAR`]..=[`MAX_YEAR`].
pub fn bounded_date(d: NaiveDate, field: &'static str) -> Result<NaiveDate, ValidationError> {
    if (MIN_YEAR..=MAX_YEAR).contains(&d.year()) { Ok(d) } else { Err(out_of_range(field)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn far_years_are_refused_and_ordinary_ones_kept() {
        let far = NaiveDate::from_ymd_opt(262_142, 12, 31).unwrap().and_hms_opt(23, 0, 0).unwrap().and_utc();
        assert_eq!(bounded_instant(far, "start").unwrap_err().field, "start");
        let old = NaiveDate::from_ymd_opt(-200_000, 1, 1).unwrap();
        assert!(bounded_date(old, "from").is_err());
        assert!(bounded_date(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap(), "from").is_err());
        assert!(bounded_date(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(), "to").is_ok());
        assert!(bounded_instant(Utc::now(), "at").is_ok());
    }
}
