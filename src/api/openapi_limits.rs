//! Every limit the server enforces on a single value, stated in the OpenAPI document, so that a
//! client generated from it (or a fuzzer) knows what is accepted: lengths, ranges, item counts,
//! patterns, enumerations. Applied to the generated document once, from one table, next to
//! the constants the handlers check against. A unit test walks every request schema and
//! parameter and fails on a string without a length or pattern, or a number without a range.
//!
//! What JSON Schema cannot say (`to` after `from`, a layout's seat total, opening intervals
//! that do not overlap) is in the operations' descriptions.

use serde_json::{Value, json};

use super::bookings::MAX_BOOKING_PAGE;
use super::events::MAX_SEAT_PAGE;
use crate::domain::event::MAX_SEATS_PER_BUYER;
use crate::domain::slots::{MAX_SLOT_MINUTES, MAX_WINDOW_MINUTES};
use crate::domain::{MAX_LABEL, MAX_NAME, MAX_PAYMENT_REFERENCE, MAX_PRICE_CENTS, MAX_UNITS};

/// No NUL character (Postgres text cannot hold it).
pub const NO_NUL: &str = r"^[^\u0000]*$";
/// No NUL, and at least one character that is not ASCII white space.
pub const NAME: &str = r"^[^\u0000]*[^\u0000\t\n\u000b\f\r ][^\u0000]*$";
/// A date in the years 2000 to 9999, `YYYY-MM-DD`.
pub const DATE: &str = r"^[2-9][0-9]{3}-[0-9]{2}-[0-9]{2}$";
/// An RFC 3339 instant in the years 2000 to 9999.
pub const INSTANT: &str =
    r"^[2-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";
/// `HH:MM` from 00:00 to 24:00.
pub const CLOCK: &str = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$";
/// An `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY: &str = r"^[!-~]{1,255}$";

fn name(max: usize) -> Value {
    json!({ "minLength": 1, "maxLength": max, "pattern": NAME })
}

fn range(min: i64, max: i64) -> Value {
    json!({ "minimum": min, "maximum": max })
}

fn date() -> Value {
    json!({ "pattern": DATE })
}

fn instant() -> Value {
    json!({ "pattern": INSTANT })
}

fn instant_or_date() -> Value {
    json!({ "anyOf": [{ "format": "date-time", "pattern": INSTANT }, { "format": "date", "pattern": DATE }] })
}

fn seat_ids(max_seats: usize) -> Value {
    json!({ "minItems": 1, "maxItems": max_seats, "uniqueItems": true })
}

/// The limits of the request bodies' properties: (schema, property, keywords to add).
fn body_limits(limits: &Limits) -> Vec<(&'static str, &'static str, Value)> {
    let ttl = range(1, limits.max_ttl);
    let payment = json!({ "minLength": 1, "maxLength": MAX_PAYMENT_REFERENCE, "pattern": NO_NUL });
    vec![
        ("CreateEventBody", "name", name(MAX_NAME)),
        ("CreateEventBody", "starts_at", instant()),
        ("CreateEventBody", "seats", json!({ "minItems": 1, "maxItems": limits.max_event_seats })),
        ("CreateEventBody", "on_sale_at", instant()),
        ("CreateEventBody", "max_seats_per_buyer", range(1, MAX_SEATS_PER_BUYER)),
        ("PatchEventBody", "on_sale_at", instant()),
        ("PatchEventBody", "max_seats_per_buyer", range(1, MAX_SEATS_PER_BUYER)),
        ("SeatSpec", "section", name(MAX_LABEL)),
        ("SeatSpec", "row", name(MAX_LABEL)),
        ("SeatSpec", "number", range(1, i64::from(i32::MAX))),
        ("SeatSpec", "price_cents", range(0, MAX_PRICE_CENTS)),
        ("EventLayout", "sections", range(1, limits.max_event_seats as i64)),
        ("EventLayout", "rows", range(1, limits.max_event_seats as i64)),
        ("EventLayout", "seats_per_row", range(1, limits.max_event_seats as i64)),
        ("EventLayout", "price_cents", range(0, MAX_PRICE_CENTS)),
        ("CreateHoldBody", "seat_ids", seat_ids(limits.max_seats)),
        ("CreateHoldBody", "ttl_seconds", ttl.clone()),
        ("BestAvailableBody", "quantity", range(1, limits.max_seats as i64)),
        ("BestAvailableBody", "section", name(MAX_LABEL)),
        ("BestAvailableBody", "max_price_cents", range(0, MAX_PRICE_CENTS)),
        ("BookSeatsBody", "seat_ids", seat_ids(limits.max_seats)),
        ("BookSeatsBody", "payment_reference", payment.clone()),
        ("ExtendHoldBody", "ttl_seconds", ttl.clone()),
        ("ConfirmHoldBody", "payment_reference", payment),
        ("CreateInventoryBody", "name", name(MAX_NAME)),
        ("CreateInventoryBody", "from", date()),
        ("CreateInventoryBody", "to", date()),
        ("CreateInventoryBody", "capacity", range(0, MAX_UNITS)),
        ("CreateInventoryBody", "overbooking_allowance", range(0, MAX_UNITS)),
        ("PatchNightsBody", "from", date()),
        ("PatchNightsBody", "to", date()),
        ("PatchNightsBody", "capacity", range(0, MAX_UNITS)),
        ("PatchNightsBody", "overbooking_allowance", range(0, MAX_UNITS)),
        ("CreateRoomHoldBody", "check_in", date()),
        ("CreateRoomHoldBody", "check_out", date()),
        ("CreateRoomHoldBody", "quantity", range(1, limits.max_seats as i64)),
        ("CreateRoomHoldBody", "ttl_seconds", ttl.clone()),
        ("CreateResourceBody", "name", name(MAX_NAME)),
        ("CreateResourceBody", "time_zone", json!({ "enum": time_zones() })),
        ("CreateResourceBody", "slot_granularity_minutes", range(1, MAX_SLOT_MINUTES)),
        ("CreateResourceBody", "buffer_before_minutes", range(0, MAX_SLOT_MINUTES)),
        ("CreateResourceBody", "buffer_after_minutes", range(0, MAX_SLOT_MINUTES)),
        ("CreateResourceBody", "min_notice_minutes", range(0, MAX_WINDOW_MINUTES)),
        ("CreateResourceBody", "cancellation_window_minutes", range(0, MAX_WINDOW_MINUTES)),
        ("SlotBody", "start", instant()),
        ("SlotBody", "end", instant()),
        ("SlotBody", "ttl_seconds", ttl),
        ("RescheduleBody", "start", instant()),
        ("RescheduleBody", "end", instant()),
    ]
}

/// The limits of parameters: (operation, parameter, keywords to add).
fn parameter_limits() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("list_seats", "status", json!({ "enum": ["available", "held", "booked"] })),
        ("list_seats", "section", json!({ "maxLength": 255, "pattern": NO_NUL })),
        ("list_seats", "limit", range(1, MAX_SEAT_PAGE)),
        ("list_bookings", "limit", range(1, MAX_BOOKING_PAGE)),
        ("inventory_availability", "from", date()),
        ("inventory_availability", "to", date()),
        ("slot_availability", "from", instant_or_date()),
        ("slot_availability", "to", instant_or_date()),
        ("slot_availability", "cursor", instant()),
    ]
}

/// Limits that depend on the configuration; the served document states the running instance's.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_seats: usize,
    pub max_event_seats: usize,
    pub max_ttl: i64,
}

impl Default for Limits {
    /// The defaults of HOLD_MAX_SEATS, EVENT_MAX_SEATS and HOLD_MAX_TTL_SECONDS.
    fn default() -> Self {
        Self { max_seats: 10, max_event_seats: 100_000, max_ttl: 900 }
    }
}

/// IANA time zone names holdfast knows (chrono-tz's database).
fn time_zones() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect()
}

fn merge(target: &mut Value, keywords: &Value) {
    // An optional property is `type: [x, "null"]` inline or `oneOf: [null, $ref]`: the limits go on the value.
    if let (Some(target), Some(keywords)) = (target.as_object_mut(), keywords.as_object()) {
        for (k, v) in keywords {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// Adds every limit to the document (as JSON).
pub fn apply(doc: &mut Value, limits: &Limits) {
    for (schema, property, keywords) in body_limits(limits) {
        let target = &mut doc["components"]["schemas"][schema]["properties"][property];
        assert!(target.is_object(), "OpenAPI limits: {schema}.{property} is not in the document");
        merge(target, &keywords);
    }
    for (operation, parameter, keywords) in parameter_limits() {
        let target = parameter_schema(doc, operation, parameter)
            .unwrap_or_else(|| panic!("OpenAPI limits: {operation} has no parameter {parameter}"));
        merge(target, &keywords);
    }
    // The Idempotency-Key header, wherever it is taken.
    let key = json!({ "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY });
    for_each_operation(doc, |_, operation| {
        let parameters = operation.get_mut("parameters").and_then(Value::as_array_mut);
        for parameter in parameters.into_iter().flatten() {
            if parameter["name"] == "Idempotency-Key" {
                merge(&mut parameter["schema"], &key);
            }
        }
    });
    opening_hours(doc);
    // A PATCH must change something.
    doc["components"]["schemas"]["PatchEventBody"]["minProperties"] = json!(1);
}

/// `OpeningHoursSpec` is a type alias of a `BTreeMap`, which utoipa names `BTreeMap`: give it
/// its own name, and its limits (weekday keys, at most 12 intervals a day, `HH:MM` times).
fn opening_hours(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].as_object_mut().expect("components.schemas");
    let mut hours = schemas.remove("BTreeMap").expect("the opening hours schema");
    merge(
        &mut hours,
        &json!({ "propertyNames": { "enum": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] } }),
    );
    merge(&mut hours["additionalProperties"], &json!({ "maxItems": 12 }));
    for end in ["open", "close"] {
        merge(&mut hours["additionalProperties"]["items"]["properties"][end], &json!({ "pattern": CLOCK }));
    }
    schemas.insert("OpeningHours".to_owned(), hours);
    rename_refs(doc, "#/components/schemas/BTreeMap", "#/components/schemas/OpeningHours");
}

fn rename_refs(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "$ref" && v == from {
                    *v = Value::String(to.to_owned());
                } else {
                    rename_refs(v, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_refs(v, from, to)),
        _ => {}
    }
}

fn for_each_operation(doc: &mut Value, mut f: impl FnMut(&str, &mut Value)) {
    for (_, item) in doc["paths"].as_object_mut().into_iter().flatten() {
        for (_, operation) in item.as_object_mut().into_iter().flatten() {
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            f(&id, operation);
        }
    }
}

fn parameter_schema<'a>(doc: &'a mut Value, operation_id: &str, name: &str) -> Option<&'a mut Value> {
    doc["paths"]
        .as_object_mut()?
        .values_mut()
        .flat_map(|item| item.as_object_mut().into_iter().flat_map(|ops| ops.values_mut()))
        .find(|op| op["operationId"] == operation_id)?
        .get_mut("parameters")?
        .as_array_mut()?
        .iter_mut()
        .find(|p| p["name"] == name)
        .map(|p| &mut p["schema"])
}
