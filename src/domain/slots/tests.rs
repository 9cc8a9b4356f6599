use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn rules(tz: &str, open: &str, close: &str, granularity: i64) -> SlotRules {
    let all_week = WEEKDAYS
        .iter()
        .map(|(d, _)| ((*d).to_owned(), vec![OpeningInterval { open: open.into(), close: close.into() }]))
        .collect();
    SlotRules::parse(tz, &all_week, SlotMinutes::every(granularity)).unwrap()
}

const LONG_AGO: &str = "2020-01-01T00:00:00Z";

#[test]
fn spring_forward_skips_the_missing_hour() {
    // Europe/Berlin, 2027-03-28: 02:00 CET jumps to 03:00 CEST.
    let r = rules("Europe/Berlin", "00:00", "24:00", 60);
    let starts = r.free_starts(at("2027-03-27T23:00:00Z"), at("2027-03-28T22:00:00Z"), 60, at(LONG_AGO), &[]);
    assert_eq!(starts.len(), 23, "a 23-hour day has 23 hourly slots");
    assert_eq!(starts[1], at("2027-03-28T00:00:00Z"), "01:00 CET");
    assert_eq!(starts[2], at("2027-03-28T01:00:00Z"), "03:00 CEST follows 01:00 CET");
}

#[test]
fn fall_back_offers_the_repeated_hour_twice() {
    // Europe/Berlin, 2027-10-31: 03:00 CEST falls back to 02:00 CET.
    let r = rules("Europe/Berlin", "00:00", "24:00", 60);
    let starts = r.free_starts(at("2027-10-30T22:00:00Z"), at("2027-10-31T23:00:00Z"), 60, at(LONG_AGO), &[]);
    assert_eq!(starts.len(), 25, "a 25-hour day has 25 hourly slots");
    assert!(starts.contains(&at("2027-10-31T00:00:00Z")), "02:00 CEST");
    assert!(starts.contains(&at("2027-10-31T01:00:00Z")), "02:00 CET");
}

#[test]
fn opening_hours_follow_local_time_across_dst() {
    let r = rules("Europe/Berlin", "09:00", "10:00", 30);
    let before = r.free_starts(at("2027-03-27T00:00:00Z"), at("2027-03-28T00:00:00Z"), 30, at(LONG_AGO), &[]);
    let after = r.free_starts(at("2027-03-28T00:00:00Z"), at("2027-03-29T00:00:00Z"), 30, at(LONG_AGO), &[]);
    assert_eq!(before, vec![at("2027-03-27T08:00:00Z"), at("2027-03-27T08:30:00Z")], "09:00 CET = 08:00Z");
    assert_eq!(after, vec![at("2027-03-28T07:00:00Z"), at("2027-03-28T07:30:00Z")], "09:00 CEST = 07:00Z");
}

#[test]
fn a_slot_is_refused_with_the_reason_it_breaks_the_rules() {
    let mut r = rules("Europe/Berlin", "09:00", "17:00", 30);
    r.min_notice = 60;
    let now = at("2027-06-01T06:00:00Z"); // 08:00 local
    assert_eq!(r.check(at("2027-06-01T07:00:00Z"), at("2027-06-01T07:30:00Z"), now), Ok(()));
    assert_eq!(
        r.check(at("2027-06-01T07:10:00Z"), at("2027-06-01T07:40:00Z"), now).unwrap_err().code(),
        "SLOT_MISALIGNED"
    );
    assert_eq!(
        r.check(at("2027-06-01T07:00:00Z"), at("2027-06-01T07:20:00Z"), now).unwrap_err().code(),
        "SLOT_MISALIGNED"
    );
    assert_eq!(
        r.check(at("2027-05-31T08:00:00Z"), at("2027-05-31T08:30:00Z"), now).unwrap_err().code(),
        "SLOT_IN_PAST"
    );
    let soon = at("2027-06-01T06:30:00Z");
    assert_eq!(
        r.check(at("2027-06-01T07:00:00Z"), at("2027-06-01T07:30:00Z"), soon).unwrap_err().code(),
        "SLOT_INSIDE_NOTICE_PERIOD"
    );
    assert_eq!(
        r.check(at("2027-06-01T14:30:00Z"), at("2027-06-01T15:30:00Z"), now).unwrap_err().code(),
        "SLOT_OUTSIDE_OPENING_HOURS"
    );
}

#[test]
fn buffers_and_taken_ranges_remove_starts() {
    let mut r = rules("UTC", "09:00", "12:00", 30);
    r.buffer_after = 30;
    let taken = [r.blocked(at("2027-06-01T10:00:00Z"), at("2027-06-01T10:30:00Z"))];
    let starts = r.free_starts(at("2027-06-01T00:00:00Z"), at("2027-06-02T00:00:00Z"), 30, at(LONG_AGO), &taken);
    // Taken blocks 10:00-11:00. 09:00 blocks 09:00-10:00: free. 09:30 and 10:00 overlap it;
    // 10:30 blocks 10:30-11:30: overlaps. 11:00 and 11:30 are free (11:30 ends at closing).
    let want: Vec<_> = ["09:00", "11:00", "11:30"].iter().map(|t| at(&format!("2027-06-01T{t}:00Z"))).collect();
    assert_eq!(starts, want);
}

#[test]
fn overlapping_ranges_share_a_lock_cell() {
    let r = rules("UTC", "00:00", "24:00", 30);
    let a = r.lock_cells((at("2027-06-01T10:00:00Z"), at("2027-06-01T11:00:00Z")));
    let b = r.lock_cells((at("2027-06-01T10:30:00Z"), at("2027-06-01T11:30:00Z")));
    let c = r.lock_cells((at("2027-06-01T11:00:00Z"), at("2027-06-01T11:30:00Z")));
    assert_eq!(a.len(), 2);
    assert!(a.iter().any(|x| b.contains(x)));
    assert!(!a.iter().any(|x| c.contains(x)), "adjacent ranges need not serialize");
}

#[test]
fn rules_with_an_unknown_day_zone_or_a_misaligned_or_inverted_interval_are_refused() {
    let mut spec = OpeningHoursSpec::new();
    spec.insert("funday".into(), vec![]);
    assert!(SlotRules::parse("Europe/Berlin", &spec, SlotMinutes::every(30)).is_err());
    assert_eq!(
        SlotRules::parse("Mars/Olympus", &OpeningHoursSpec::new(), SlotMinutes::every(30)).unwrap_err().field,
        "time_zone"
    );
    let mut spec = OpeningHoursSpec::new();
    spec.insert("monday".into(), vec![OpeningInterval { open: "09:10".into(), close: "17:00".into() }]);
    assert!(SlotRules::parse("UTC", &spec, SlotMinutes::every(30)).is_err(), "misaligned opening");
    spec.insert("monday".into(), vec![OpeningInterval { open: "17:00".into(), close: "09:00".into() }]);
    assert!(SlotRules::parse("UTC", &spec, SlotMinutes::every(30)).is_err(), "inverted");
}
