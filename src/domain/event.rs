use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{MAX_LABEL, MAX_NAME, MAX_PRICE_CENTS, ValidationError};

/// One explicitly listed seat in an event-creation request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeatSpec {
    pub section: String,
    pub row: String,
    pub number: i32,
    pub price_cents: i64,
}

/// A rectangular layout: `sections` × `rows` × `seats_per_row`, every seat at one price.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventLayout {
    pub sections: u32,
    pub rows: u32,
    pub seats_per_row: u32,
    pub price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSeat {
    pub section: String,
    pub row: String,
    pub number: i32,
    pub price_cents: i64,
}

/// A validated event with its full seat list.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub seats: Vec<NewSeat>,
    /// Set by [`NewEvent::with_sale`].
    pub on_sale_at: Option<DateTime<Utc>>,
    pub max_seats_per_buyer: Option<i32>,
    /// Set by [`NewEvent::with_queue`]; the defaults (no queue) otherwise.
    pub queue: QueueSettings,
}

/// An event's waiting room (see `crate::queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueSettings {
    /// Whether holds and direct bookings need an admission from the waiting room.
    pub enabled: bool,
    /// Tickets admitted per minute (0 pauses admissions).
    pub admit_per_minute: i32,
    /// The most tickets admitted and not yet finished (booked, expired or left) at once.
    pub max_active_shoppers: i32,
    /// How long an admission lasts.
    pub admission_ttl_seconds: i32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self { enabled: false, admit_per_minute: 600, max_active_shoppers: 1000, admission_ttl_seconds: 600 }
    }
}

/// Queue settings to change: each `None` keeps its setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueChange {
    pub enabled: Option<bool>,
    pub admit_per_minute: Option<i32>,
    pub max_active_shoppers: Option<i32>,
    pub admission_ttl_seconds: Option<i32>,
}

/// The bounds of each queue setting.
pub const QUEUE_ADMIT_PER_MINUTE: (i64, i64) = (0, 1_000_000);
pub const QUEUE_MAX_ACTIVE_SHOPPERS: (i64, i64) = (1, 1_000_000);
pub const QUEUE_ADMISSION_TTL_SECONDS: (i64, i64) = (1, 86_400);

impl QueueChange {
    /// Checks each given setting against its bounds (`field` names them in errors).
    pub fn parse(
        enabled: Option<bool>,
        admit_per_minute: Option<i64>,
        max_active_shoppers: Option<i64>,
        admission_ttl_seconds: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let bounded = |value: Option<i64>, (lo, hi): (i64, i64), field: &'static str| {
            value
                .map(|v| {
                    if (lo..=hi).contains(&v) {
                        Ok(v as i32)
                    } else {
                        Err(ValidationError::new(field, format!("must be between {lo} and {hi}")))
                    }
                })
                .transpose()
        };
        Ok(Self {
            enabled,
            admit_per_minute: bounded(admit_per_minute, QUEUE_ADMIT_PER_MINUTE, "queue.admit_per_minute")?,
            max_active_shoppers: bounded(max_active_shoppers, QUEUE_MAX_ACTIVE_SHOPPERS, "queue.max_active_shoppers")?,
            admission_ttl_seconds: bounded(
                admission_ttl_seconds,
                QUEUE_ADMISSION_TTL_SECONDS,
                "queue.admission_ttl_seconds",
            )?,
        })
    }

    /// The settings after this change.
    pub fn applied_to(self, base: QueueSettings) -> QueueSettings {
        QueueSettings {
            enabled: self.enabled.unwrap_or(base.enabled),
            admit_per_minute: self.admit_per_minute.unwrap_or(base.admit_per_minute),
            max_active_shoppers: self.max_active_shoppers.unwrap_or(base.max_active_shoppers),
            admission_ttl_seconds: self.admission_ttl_seconds.unwrap_or(base.admission_ttl_seconds),
        }
    }
}

/// The most `max_seats_per_buyer` may say.
pub const MAX_SEATS_PER_BUYER: i64 = 1000;

/// `on_sale_at` within the years the service accepts; `max_seats_per_buyer` from 1 to
/// [`MAX_SEATS_PER_BUYER`].
pub fn parse_sale_at(on_sale_at: DateTime<Utc>) -> Result<DateTime<Utc>, ValidationError> {
    super::bounded_instant(on_sale_at, "on_sale_at")
}

pub fn parse_seats_per_buyer(max: i64) -> Result<i32, ValidationError> {
    if (1..=MAX_SEATS_PER_BUYER).contains(&max) {
        Ok(max as i32)
    } else {
        Err(ValidationError::new("max_seats_per_buyer", format!("must be between 1 and {MAX_SEATS_PER_BUYER}")))
    }
}

static PRICE_RANGE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("price_cents must be between 0 and {MAX_PRICE_CENTS}"));

/// Section names for a layout: A..Z, then AA, AB, ... (spreadsheet columns).
fn section_name(mut index: u32) -> String {
    let mut name = Vec::new();
    loop {
        name.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    name.reverse();
    String::from_utf8(name).expect("ASCII")
}

impl NewEvent {
    pub fn parse(
        name: String,
        starts_at: DateTime<Utc>,
        seats: Option<Vec<SeatSpec>>,
        layout: Option<EventLayout>,
        max_seats: usize,
    ) -> Result<Self, ValidationError> {
        let name = super::parse_name(&name, "name", MAX_NAME)?;
        super::bounded_instant(starts_at, "starts_at")?;
        let seats = match (seats, layout) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(ValidationError::new("seats", "give exactly one of `seats` and `layout`"));
            }
            (Some(list), None) => {
                if list.is_empty() || list.len() > max_seats {
                    return Err(ValidationError::new("seats", format!("must list 1 to {max_seats} seats")));
                }
                let mut seen = std::collections::HashSet::with_capacity(list.len());
                let mut seats = Vec::with_capacity(list.len());
                for spec in list {
                    let label = |value: &str| {
                        super::parse_name(value, "seats", MAX_LABEL).map_err(|_| {
                            ValidationError::new(
                                "seats",
                                format!("section and row must be 1 to {MAX_LABEL} characters"),
                            )
                        })
                    };
                    let (section, row) = (label(&spec.section)?, label(&spec.row)?);
                    if spec.number < 1 {
                        return Err(ValidationError::new("seats", "seat numbers start at 1"));
                    }
                    if !(0..=MAX_PRICE_CENTS).contains(&spec.price_cents) {
                        return Err(ValidationError::new("seats", PRICE_RANGE.as_str()));
                    }
                    if !seen.insert((section.clone(), row.clone(), spec.number)) {
                        return Err(ValidationError::new(
                            "seats",
                            format!("seat {section}-{row}-{} is listed twice", spec.number),
                        ));
                    }
                    seats.push(NewSeat { section, row, number: spec.number, price_cents: spec.price_cents });
                }
                seats
            }
            (None, Some(layout)) => {
                let total = u64::from(layout.sections) * u64::from(layout.rows) * u64::from(layout.seats_per_row);
                if total == 0 || total > max_seats as u64 {
                    return Err(ValidationError::new("layout", format!("must describe 1 to {max_seats} seats")));
                }
                if !(0..=MAX_PRICE_CENTS).contains(&layout.price_cents) {
                    return Err(ValidationError::new("layout", PRICE_RANGE.as_str()));
                }
                let mut seats = Vec::with_capacity(total as usize);
                for s in 0..layout.sections {
                    let section = section_name(s);
                    for r in 1..=layout.rows {
                        for n in 1..=layout.seats_per_row {
                            seats.push(NewSeat {
                                section: section.clone(),
                                row: r.to_string(),
                                number: n as i32,
                                price_cents: layout.price_cents,
                            });
                        }
                    }
                }
                seats
            }
        };
        Ok(Self {
            name,
            starts_at,
            seats,
            on_sale_at: None,
            max_seats_per_buyer: None,
            queue: QueueSettings::default(),
        })
    }

    /// The event with its sale settings.
    pub fn with_sale(mut self, on_sale_at: Option<DateTime<Utc>>, max: Option<i64>) -> Result<Self, ValidationError> {
        self.on_sale_at = on_sale_at.map(parse_sale_at).transpose()?;
        self.max_seats_per_buyer = max.map(parse_seats_per_buyer).transpose()?;
        Ok(self)
    }

    /// The event with a waiting room: a queue given at creation is enabled unless it says not.
    pub fn with_queue(mut self, change: Option<QueueChange>) -> Self {
        if let Some(change) = change {
            self.queue = QueueChange { enabled: change.enabled.or(Some(true)), ..change }.applied_to(self.queue);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sections: u32, rows: u32, per_row: u32) -> Option<EventLayout> {
        Some(EventLayout { sections, rows, seats_per_row: per_row, price_cents: 1000 })
    }

    #[test]
    fn section_names_run_like_spreadsheet_columns() {
        assert_eq!(section_name(0), "A");
        assert_eq!(section_name(25), "Z");
        assert_eq!(section_name(26), "AA");
        assert_eq!(section_name(27), "AB");
        assert_eq!(section_name(26 + 26 * 26), "AAA");
    }

    #[test]
    fn a_layout_expands_to_every_seat() {
        let event = NewEvent::parse("Concert".into(), Utc::now(), None, layout(2, 3, 4), 100).unwrap();
        assert_eq!(event.seats.len(), 24);
        assert_eq!(event.seats[0], NewSeat { section: "A".into(), row: "1".into(), number: 1, price_cents: 1000 });
        assert_eq!(event.seats[23].section, "B");
    }

    #[test]
    fn refuses_both_neither_too_many_and_duplicates() {
        let seat = SeatSpec { section: "A".into(), row: "1".into(), number: 1, price_cents: 0 };
        assert!(NewEvent::parse("x".into(), Utc::now(), None, None, 10).is_err());
        assert!(NewEvent::parse("x".into(), Utc::now(), Some(vec![seat.clone()]), layout(1, 1, 1), 10).is_err());
        assert!(NewEvent::parse("x".into(), Utc::now(), None, layout(10, 10, 10), 999).is_err());
        assert!(NewEvent::parse("x".into(), Utc::now(), Some(vec![seat.clone(), seat]), None, 10).is_err());
        assert!(NewEvent::parse("  ".into(), Utc::now(), None, layout(1, 1, 1), 10).is_err());
        let priced = |cents| Some(EventLayout { sections: 1, rows: 1, seats_per_row: 2, price_cents: cents });
        assert!(NewEvent::parse("x".into(), Utc::now(), None, priced(i64::MAX - 1), 10).is_err());
        assert!(NewEvent::parse("x".into(), Utc::now(), None, priced(MAX_PRICE_CENTS), 10).is_ok());
    }
}
