//! Time slots on a resource: opening hours in the resource's IANA time zone, a slot
//! granularity, buffers, minimum notice and a cancellation window. Pure functions of the rules
//! and the clock, so DST behaviour is unit-tested here and only checked end to end over HTTP.
//!
//! Opening hours are wall-clock times per weekday. A local time that does not exist (the hour
//! skipped in spring) offers no slot; a local time that exists twice (the hour repeated in
//! autumn) offers both instants. Every comparison after that is between instants.

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The longest slot a hold may ask for, and the longest availability window one read may cover.
pub const MAX_SLOT_MINUTES: i64 = 24 * 60;
/// The longest notice period or cancellation window, in minutes (366 days).
pub const MAX_WINDOW_MINUTES: i64 = 366 * 24 * 60;
pub const MAX_AVAILABILITY_DAYS: i64 = 31;
/// Lock cells are at least this long, so a long booking takes a bounded number of lock keys.
const MIN_LOCK_CELL_MINUTES: i64 = 15;

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// One opening interval as clients send and see it: `{"open": "09:00", "close": "17:30"}`;
/// `"24:00"` closes at midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpeningInterval {
    /// `HH:MM`, local time.
    #[schema(example = "09:00")]
    pub open: String,
    /// `HH:MM`, local time; `24:00` is midnight at the end of the day.
    #[schema(example = "17:00")]
    pub close: String,
}

/// Opening hours as sent: weekday name (`monday` .. `sunday`) to intervals; a missing day is closed.
pub type OpeningHoursSpec = BTreeMap<String, Vec<OpeningInterval>>;

/// The rules of a resource, validated.
#[derive(Debug, Clone)]
pub struct SlotRules {
    pub tz: Tz,
    /// Per weekday (Monday first): sorted, non-overlapping `[open, close)` in minutes after local midnight.
    hours: [Vec<(i64, i64)>; 7],
    pub granularity: i64,
    pub buffer_before: i64,
    pub buffer_after: i64,
    pub min_notice: i64,
    pub cancellation_window: i64,
}

/// Why a requested slot is refused (422), each with its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    #[error(
        "the slot must start at a multiple of {granularity} minutes after local midnight and last a multiple of it"
    )]
    Misaligned { granularity: i64 },
    #[error("the slot starts in the past")]
    InPast,
    #[error("the slot starts within the minimum notice of {minutes} minutes")]
    InsideNotice { minutes: i64 },
    #[error("the slot is not within the resource's opening hours ({time_zone})")]
    OutsideOpeningHours { time_zone: String },
    #[error("the slot starts more than {days} days from now (the booking horizon)")]
    BeyondHorizon { days: i64 },
}

impl SlotRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            SlotRefusal::Misaligned { .. } => "SLOT_MISALIGNED",
            SlotRefusal::InPast => "SLOT_IN_PAST",
            SlotRefusal::InsideNotice { .. } => "SLOT_INSIDE_NOTICE_PERIOD",
            SlotRefusal::OutsideOpeningHours { .. } => "SLOT_OUTSIDE_OPENING_HOURS",
            SlotRefusal::BeyondHorizon { .. } => "SLOT_BEYOND_HORIZON",
        }
    }
}

/// Minutes after midnight of `HH:MM` (exactly two digits each, 00:00 to 24:00).
fn minutes_of(s: &str) -> Option<i64> {
    if s == "24:00" {
        return Some(24 * 60);
    }
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || !b.iter().enumerate().all(|(i, c)| i == 2 || c.is_ascii_digit()) {
        return None;
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(i64::from(t.hour()) * 60 + i64::from(t.minute()))
}

fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

/// A resource's durations, in minutes, as given: checked by [`SlotRules::parse`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotMinutes {
    pub granularity: i64,
    pub buffer_before: i64,
    pub buffer_after: i64,
    pub min_notice: i64,
    pub cancellation_window: i64,
}

impl SlotMinutes {
    /// Slots on a grid of `granularity` minutes, with no buffers, notice or window.
    pub fn every(granularity: i64) -> Self {
        Self { granularity, ..Self::default() }
    }
}

impl SlotRules {
    pub fn parse(
        time_zone: &str,
        opening_hours: &OpeningHoursSpec,
        minutes: SlotMinutes,
    ) -> Result<Self, ValidationError> {
        let SlotMinutes { granularity, buffer_before, buffer_after, min_notice, cancellation_window } = minutes;
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ValidationError::new("time_zone", format!("{time_zone:?} is not an IANA time zone")))?;
        if !(1..=MAX_SLOT_MINUTES).contains(&granularity) {
            return Err(ValidationError::new("slot_granularity_minutes", "must be between 1 and 1440"));
        }
        for (field, value) in [("buffer_before_minutes", buffer_before), ("buffer_after_minutes", buffer_after)] {
            if !(0..=MAX_SLOT_MINUTES).contains(&value) {
                return Err(ValidationError::new(field, "must be between 0 and 1440"));
            }
        }
        for (field, value) in [("min_notice_minutes", min_notice), ("cancellation_window_minutes", cancellation_window)]
        {
            if !(0..=MAX_WINDOW_MINUTES).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("must be between 0 and {MAX_WINDOW_MINUTES} (366 days)"),
                ));
            }
        }
        let mut hours: [Vec<(i64, i64)>; 7] = Default::default();
        for (day, intervals) in opening_hours {
            let Some((_, weekday)) = WEEKDAYS.iter().find(|(name, _)| name == day) else {
                return Err(ValidationError::new(
                    "opening_hours",
                    format!("{day:?} is not a weekday (monday .. sunday)"),
                ));
            };
            if intervals.len() > 12 {
                return Err(ValidationError::new("opening_hours", format!("{day}: at most 12 intervals")));
            }
            let slot = &mut hours[weekday_index(*weekday)];
            for interval in intervals {
                let (Some(open), Some(close)) = (minutes_of(&interval.open), minutes_of(&interval.close)) else {
                    return Err(ValidationError::new(
                        "opening_hours",
                        format!("{day}: times are HH:MM (00:00 to 24:00)"),
                    ));
                };
                if open >= close {
                    return Err(ValidationError::new("opening_hours", format!("{day}: open must be before close")));
                }
                if open % granularity != 0 || close % granularity != 0 {
                    return Err(ValidationError::new(
                        "opening_hours",
                        format!("{day}: open and close must be multiples of the {granularity}-minute granularity"),
                    ));
                }
                slot.push((open, close));
            }
            slot.sort_unstable();
            if slot.windows(2).any(|w| w[0].1 > w[1].0) {
                return Err(ValidationError::new("opening_hours", format!("{day}: intervals overlap")));
            }
        }
        Ok(Self { tz, hours, granularity, buffer_before, buffer_after, min_notice, cancellation_window })
    }

    /// The opening hours back in the shape clients send.
    pub fn opening_hours_spec(&self) -> OpeningHoursSpec {
        let fmt = |m: i64| format!("{:02}:{:02}", m / 60, m % 60);
        WEEKDAYS
            .iter()
            .filter(|(_, day)| !self.hours[weekday_index(*day)].is_empty())
            .map(|(name, day)| {
                let intervals = self.hours[weekday_index(*day)]
                    .iter()
                    .map(|(o, c)| OpeningInterval { open: fmt(*o), close: fmt(*c) })
                    .collect();
                ((*name).to_owned(), intervals)
            })
            .collect()
    }

    fn local(&self, date: NaiveDate, minutes: i64) -> NaiveDateTime {
        date.and_time(NaiveTime::MIN) + Duration::minutes(minutes)
    }

    /// The instant a wall-clock time starts: the earlier one if it occurs twice, and the end of
    /// the gap if it does not occur (opening at 02:30 on the spring-forward night opens at 03:00).
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = local;
        loop {
            if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                return t.with_timezone(&Utc);
            }
            probe += Duration::minutes(1);
        }
    }

    /// The opening intervals of one local date, as instants.
    fn open_intervals(&self, date: NaiveDate) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        self.hours[weekday_index(date.weekday())]
            .iter()
            .map(move |(o, c)| (self.instant(self.local(date, *o)), self.instant(self.local(date, *c))))
    }

    /// The slot's range widened by the buffers: what must not overlap another booking's.
    pub fn blocked(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (start - Duration::minutes(self.buffer_before), end + Duration::minutes(self.buffer_after))
    }

    /// Checks a requested slot against the rules at `now`.
    pub fn check(&self, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), SlotRefusal> {
        let local = start.with_timezone(&self.tz);
        let minute_of_day = i64::from(local.hour()) * 60 + i64::from(local.minute());
        let minutes = (end - start).num_minutes();
        if local.second() != 0
            || local.nanosecond() != 0
            || minute_of_day % self.granularity != 0
            || (end - start) != Duration::minutes(minutes)
            || minutes % self.granularity != 0
        {
            return Err(SlotRefusal::Misaligned { granularity: self.granularity });
        }
        if start < now {
            return Err(SlotRefusal::InPast);
        }
        if start < now + Duration::minutes(self.min_notice) {
            return Err(SlotRefusal::InsideNotice { minutes: self.min_notice });
        }
        if !self.open_intervals(local.date_naive()).any(|(open, close)| open <= start && end <= close) {
            return Err(SlotRefusal::OutsideOpeningHours { time_zone: self.tz.name().to_owned() });
        }
        Ok(())
    }

    /// Whether the owner may still cancel a booking of a slot starting at `start`.
    pub fn may_cancel(&self, start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now <= start - Duration::minutes(self.cancellation_window)
    }

    /// Start times in `[from, to)` for a slot of `duration` minutes: aligned, inside opening
    /// hours, past the notice period, and whose buffered range overlaps none of `taken`
    /// (blocked ranges of live holds and bookings). Sorted by instant.
    pub fn free_starts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        duration: i64,
        now: DateTime<Utc>,
        taken: &[(DateTime<Utc>, DateTime<Utc>)],
    ) -> Vec<DateTime<Utc>> {
        let earliest = from.max(now + Duration::minutes(self.min_notice));
        let length = Duration::minutes(duration);
        let first_day = from.with_timezone(&self.tz).date_naive() - Duration::days(1);
        let last_day = to.with_timezone(&self.tz).date_naive();
        let mut starts = Vec::new();
        for date in first_day.iter_days().take_while(|d| *d <= last_day) {
            for (open_min, close_min) in &self.hours[weekday_index(date.weekday())] {
                let (open, close) =
                    (self.instant(self.local(date, *open_min)), self.instant(self.local(date, *close_min)));
                let mut minute = *open_min;
                while minute + duration <= *close_min + 60 {
                    // Each wall-clock start may be 0, 1 or 2 instants (DST gap, normal, repeated hour).
                    let local = self.local(date, minute);
                    minute += self.granularity;
                    let instants = match self.tz.from_local_datetime(&local) {
                        LocalResult::Single(t) => vec![t],
                        LocalResult::Ambiguous(a, b) => vec![a, b],
                        LocalResult::None => vec![],
                    };
                    for start in instants.into_iter().map(|t| t.with_timezone(&Utc)) {
                        let end = start + length;
                        if start < open || end > close || start < earliest || start >= to {
                            continue;
                        }
                        let (b0, b1) = self.blocked(start, end);
                        if taken.iter().all(|(t0, t1)| b1 <= *t0 || *t1 <= b0) {
                            starts.push(start);
                        }
                    }
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }

    /// Lock keys covering a blocked range: every cell of a fixed partition of time that the
    /// range touches. Two overlapping ranges always share a cell, so they serialize.
    pub fn lock_cells(&self, blocked: (DateTime<Utc>, DateTime<Utc>)) -> Vec<i64> {
        let cell = self.granularity.max(MIN_LOCK_CELL_MINUTES) * 60;
        let first = blocked.0.timestamp().div_euclid(cell);
        let last = (blocked.1.timestamp() - 1).div_euclid(cell);
        (first..=last).collect()
    }
}

/// A requested slot's duration, in minutes, bounded.
pub fn slot_minutes(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<i64, ValidationError> {
    super::bounded_instant(start, "start")?;
    super::bounded_instant(end, "end")?;
    let minutes = (end - start).num_minutes();
    if end <= start {
        return Err(ValidationError::new("end", "must be after start"));
    }
    if minutes > MAX_SLOT_MINUTES {
        return Err(ValidationError::new("end", format!("a slot lasts at most {MAX_SLOT_MINUTES} minutes")));
    }
    Ok(minutes)
}

#[cfg(test)]
mod tests;
