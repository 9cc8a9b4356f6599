//! A question for free slot start times (`GET /v1/resources/{id}/availability`), checked
//! against the resource's rules, and how its answer is paged.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::slots::{MAX_AVAILABILITY_DAYS, MAX_SLOT_MINUTES, SlotRules};
use super::{ValidationError, bounded_date, bounded_instant};

/// Free starts per page when the request names no `limit`, and the most it may name.
pub const DEFAULT_SLOT_PAGE: i64 = 500;
pub const MAX_SLOT_PAGE: i64 = 1000;

/// Which free starts are wanted: in `[from, to)`, for slots of `duration` minutes, from
/// `cursor` on, `limit` per page. Valid by construction for the rules it was parsed with.
#[derive(Debug, Clone)]
pub struct StartsWanted {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub duration: i64,
    pub cursor: Option<DateTime<Utc>>,
    pub limit: i64,
}

impl StartsWanted {
    /// `from` and `to` are each an RFC 3339 instant or a date (local midnight in the rules'
    /// zone); the window is at most [`MAX_AVAILABILITY_DAYS`]; the duration a multiple of the
    /// rules' granularity, at most a day.
    pub fn parse(
        rules: &SlotRules,
        (from, to): (&str, &str),
        duration: i64,
        cursor: Option<DateTime<Utc>>,
        limit: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let from = instant_or_date(from, "from", rules.tz)?;
        let to = instant_or_date(to, "to", rules.tz)?;
        if to <= from {
            return Err(ValidationError::new("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_AVAILABILITY_DAYS) {
            return Err(ValidationError::new("to", format!("at most {MAX_AVAILABILITY_DAYS} days after from")));
        }
        if !(1..=MAX_SLOT_MINUTES).contains(&duration) || duration % rules.granularity != 0 {
            return Err(ValidationError::new(
                "duration_minutes",
                format!("must be a positive multiple of {} minutes, at most a day", rules.granularity),
            ));
        }
        let limit = limit.unwrap_or(DEFAULT_SLOT_PAGE);
        if !(1..=MAX_SLOT_PAGE).contains(&limit) {
            return Err(ValidationError::new("limit", format!("must be between 1 and {MAX_SLOT_PAGE}")));
        }
        Ok(Self { from, to, duration, cursor, limit })
    }

    /// The range in which a live claim can touch a start of this window, buffers included.
    pub fn search_range(&self, rules: &SlotRules) -> (DateTime<Utc>, DateTime<Utc>) {
        let margin = Duration::minutes(rules.buffer_before + rules.buffer_after + self.duration);
        (self.from - margin, self.to + margin)
    }

    /// This page of free starts, given the blocked ranges `taken`, and the next page's cursor.
    pub fn page(
        &self,
        rules: &SlotRules,
        now: DateTime<Utc>,
        taken: &[(DateTime<Utc>, DateTime<Utc>)],
    ) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let starts = rules.free_starts(self.from, self.to, self.duration, now, taken);
        let mut page: Vec<DateTime<Utc>> =
            starts.into_iter().filter(|s| self.cursor.is_none_or(|c| *s >= c)).take(self.limit as usize + 1).collect();
        let next_cursor = (page.len() as i64 > self.limit).then(|| page.pop()).flatten();
        (page, next_cursor)
    }
}

/// An RFC 3339 instant, or a calendar date taken as local midnight in `tz`.
fn instant_or_date(value: &str, field: &'static str, tz: Tz) -> Result<DateTime<Utc>, ValidationError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return bounded_instant(t.with_timezone(&Utc), field);
    }
    let date: NaiveDate =
        value.parse().map_err(|_| ValidationError::new(field, "must be an RFC 3339 instant or a YYYY-MM-DD date"))?;
    let date = bounded_date(date, field)?;
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    // Midnight may fall in a DST gap in a few zones: take the first instant after it.
    (0..=180)
        .find_map(|m| tz.from_local_datetime(&(midnight + Duration::minutes(m))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ValidationError::new(field, "that date has no midnight in the resource's time zone"))
}
