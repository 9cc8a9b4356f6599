//! Time slots on a resource, through HTTP: overlap races, buffers, the 422 reasons,
//! rescheduling, the cancellation window, and availability across DST in Europe/Berlin.

use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{Res, TestApp, spawn_app};

/// Open every day, all day, in `tz`.
pub fn all_week(open: &str, close: &str) -> Value {
    let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    Value::Object(days.iter().map(|d| ((*d).to_owned(), json!([{ "open": open, "close": close }]))).collect())
}

/// A whole hour well in the future (slots there are past any notice period).
pub fn future_hour(days: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::days(days)).duration_trunc(Duration::days(1)).unwrap() + Duration::hours(10)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

impl TestApp {
    pub async fn create_resource(&self, extra: Value) -> Uuid {
        let mut body = json!({
            "name": "Court 1",
            "time_zone": "UTC",
            "opening_hours": all_week("00:00", "24:00"),
            "slot_granularity_minutes": 30,
        });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let key = Uuid::new_v4().to_string();
        let res = self.send(Method::POST, "/v1/resources", Some(&self.admin_token()), Some(&key), Some(&body)).await;
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
        res.id()
    }

    pub async fn slot_hold(&self, user: &str, resource: Uuid, start: DateTime<Utc>, end: DateTime<Utc>) -> Res {
        let body = json!({ "start": rfc(start), "end": rfc(end) });
        self.post(&format!("/v1/resources/{resource}/holds"), user, &Uuid::new_v4().to_string(), &body).await
    }

    pub async fn slot_booking(&self, user: &str, resource: Uuid, start: DateTime<Utc>, end: DateTime<Utc>) -> Uuid {
        let hold = self.slot_hold(user, resource, start, end).await;
        assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
        let booking = self.confirm(user, hold.id()).await;
        assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
        booking.id()
    }

    /// Free start times (as instants) for `minutes`-long slots in `[from, to)`.
    pub async fn free_starts(&self, resource: Uuid, from: &str, to: &str, minutes: i64) -> Vec<DateTime<Utc>> {
        let from = urlencode(from);
        let to = urlencode(to);
        let path = format!("/v1/resources/{resource}/availability?from={from}&to={to}&duration_minutes={minutes}");
        let res = self.get(&path, None).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        res.body["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| DateTime::parse_from_rfc3339(s["start"].as_str().unwrap()).unwrap().with_timezone(&Utc))
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_slot_holds_racing_have_exactly_one_winner() {
    let app = Arc::new(spawn_app().await);
    let resource = app.create_resource(json!({ "buffer_after_minutes": 15 })).await;
    for round in 0..4 {
        let t = future_hour(3 + round);
        let m = |minutes: i64| t + Duration::minutes(minutes);
        // The same interval twice and partial overlaps; with the buffers every pair collides.
        let wanted = [(m(0), m(60)), (m(0), m(60)), (m(30), m(90)), (m(-30), m(30)), (m(30), m(60)), (m(0), m(30))];
        let responses = join_all(wanted.iter().enumerate().map(|(i, (start, end))| {
            let app = app.clone();
            let (start, end) = (*start, *end);
            async move { app.slot_hold(&format!("player-{i}"), resource, start, end).await }
        }))
        .await;
        let winners: Vec<_> = responses.iter().filter(|r| r.status == StatusCode::CREATED).collect();
        assert_eq!(winners.len(), 1, "round {round}: {responses:?}");
        for loser in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
            assert_eq!(loser.status, StatusCode::CONFLICT, "{loser:?}");
            assert!(["SLOT_UNAVAILABLE", "SEAT_LOCKED"].contains(&loser.code()), "{loser:?}");
        }
    }
    let overlaps = app
        .count(
            "select count(*) from slot_claims a join slot_claims b
               on a.resource_id = b.resource_id and a.hold_id < b.hold_id and a.active and b.active
              and a.blocked && b.blocked",
        )
        .await;
    assert_eq!(overlaps, 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_conflict_names_the_interval_and_buffers_count() {
    let app = spawn_app().await;
    let resource = app.create_resource(json!({ "buffer_before_minutes": 30 })).await;
    let t = future_hour(2);
    let first = app.slot_hold("alice", resource, t, t + Duration::minutes(60)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.body["kind"], "slot");
    // Starts when alice's slot ends, but needs 30 minutes of buffer before it.
    let second = app.slot_hold("bob", resource, t + Duration::minutes(60), t + Duration::minutes(90)).await;
    second.assert_problem(409, "SLOT_UNAVAILABLE");
    let conflict = &second.body["conflict"];
    let start = DateTime::parse_from_rfc3339(conflict["start"].as_str().unwrap()).unwrap();
    assert_eq!(start, t, "{second:?}");
    let ok = app.slot_hold("bob", resource, t + Duration::minutes(90), t + Duration::minutes(120)).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_holds_on_different_slots_and_nights_all_succeed() {
    let app = Arc::new(spawn_app().await);
    let resource = app.create_resource(json!({})).await;
    let inventory = app.create_inventory("2027-01-01", "2027-02-01", 1, 0).await;
    let t = future_hour(5);
    let slots = (0..30).map(|i| {
        let app = app.clone();
        let start = t + Duration::minutes(30 * i);
        async move { app.slot_hold(&format!("s-{i}"), resource, start, start + Duration::minutes(30)).await }
    });
    let rooms = (0..20).map(|i| {
        let app = app.clone();
        let (check_in, check_out) = (format!("2027-01-{:02}", i + 1), format!("2027-01-{:02}", i + 2));
        async move { app.room_hold(&format!("r-{i}"), inventory, &check_in, &check_out, 1).await }
    });
    let (slots, rooms) = tokio::join!(join_all(slots), join_all(rooms));
    for res in slots.iter().chain(rooms.iter()) {
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn slots_that_break_the_rules_get_422_with_a_reason() {
    let app = spawn_app().await;
    let resource =
        app.create_resource(json!({ "opening_hours": all_week("09:00", "17:00"), "min_notice_minutes": 2880 })).await;
    let day = future_hour(10) - Duration::hours(10); // midnight UTC, ten days ahead
    let h = |hours: i64, minutes: i64| day + Duration::hours(hours) + Duration::minutes(minutes);
    app.slot_hold("u", resource, h(9, 10), h(9, 40)).await.assert_problem(422, "SLOT_MISALIGNED");
    app.slot_hold("u", resource, h(9, 0), h(9, 20)).await.assert_problem(422, "SLOT_MISALIGNED");
    app.slot_hold("u", resource, h(16, 30), h(17, 30)).await.assert_problem(422, "SLOT_OUTSIDE_OPENING_HOURS");
    app.slot_hold("u", resource, h(7, 0), h(8, 0)).await.assert_problem(422, "SLOT_OUTSIDE_OPENING_HOURS");
    let past = future_hour(-2);
    app.slot_hold("u", resource, past, past + Duration::minutes(30)).await.assert_problem(422, "SLOT_IN_PAST");
    let soon = future_hour(1);
    let res = app.slot_hold("u", resource, soon, soon + Duration::minutes(30)).await;
    res.assert_problem(422, "SLOT_INSIDE_NOTICE_PERIOD");
    assert!(res.body["detail"].as_str().unwrap().contains("2880"), "{res:?}");
    app.slot_hold("u", resource, h(10, 0), h(10, 0)).await.assert_problem(422, "VALIDATION_FAILED");
    assert_eq!(app.slot_hold("u", resource, h(16, 30), h(17, 0)).await.status, StatusCode::CREATED);
    // Rules are read once per resource and kept (`slots::load_rules`); an unknown one is not.
    let unknown = Uuid::now_v7();
    for _ in 0..2 {
        app.slot_hold("u", unknown, h(10, 0), h(10, 30)).await.assert_problem(404, "NOT_FOUND");
    }

    let bad_tz =
        json!({ "name": "x", "time_zone": "Mars/Olympus", "opening_hours": {}, "slot_granularity_minutes": 30 });
    let res = app.send(Method::POST, "/v1/resources", Some(&app.admin_token()), Some("tz"), Some(&bad_tz)).await;
    res.assert_problem(422, "VALIDATION_FAILED");
    assert_eq!(res.body["field"], "time_zone");
    assert_eq!(app.count("select count(*) from holds").await, 1, "nothing written for refused slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reschedule_racing_a_hold_on_the_target_slot_has_one_winner() {
    let app = Arc::new(spawn_app().await);
    let resource = app.create_resource(json!({})).await;
    for round in 0..6 {
        let old = future_hour(3 + round);
        let new = old + Duration::hours(4);
        let len = Duration::minutes(60);
        let booking = app.slot_booking("owner", resource, old, old + len).await;

        let body = json!({ "start": rfc(new), "end": rfc(new + len) });
        let path = format!("/v1/bookings/{booking}/reschedule");
        let key = format!("move-{round}");
        let (moved, held) =
            tokio::join!(app.post(&path, "owner", &key, &body), app.slot_hold("rival", resource, new, new + len),);
        let moved_won = moved.status == StatusCode::OK;
        let hold_won = held.status == StatusCode::CREATED;
        assert!(moved_won ^ hold_won, "exactly one gets the slot: {moved:?} / {held:?}");
        let old_is_free = app.slot_hold("probe", resource, old, old + len).await.status == StatusCode::CREATED;
        assert_eq!(old_is_free, moved_won, "the old slot is free only if the reschedule won");
        let now = app.get(&format!("/v1/bookings/{booking}"), Some("owner")).await;
        let start = DateTime::parse_from_rfc3339(now.body["start"].as_str().unwrap()).unwrap();
        assert_eq!(start, if moved_won { new } else { old }, "{now:?}");
        if !moved_won {
            assert!(["SLOT_UNAVAILABLE", "SEAT_LOCKED"].contains(&moved.code()), "{moved:?}");
        }
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn cancelling_inside_the_window_needs_an_admin_and_frees_the_slot() {
    let app = spawn_app().await;
    let resource = app.create_resource(json!({ "cancellation_window_minutes": 2880 })).await;
    let soon = future_hour(1);
    let booking = app.slot_booking("alice", resource, soon, soon + Duration::minutes(30)).await;
    let res = app.post(&format!("/v1/bookings/{booking}/cancel"), "alice", "c1", &json!({})).await;
    res.assert_problem(409, "OUTSIDE_CANCELLATION_WINDOW");
    assert!(res.body["cancellable_until"].is_string(), "{res:?}");
    let moved = json!({ "start": rfc(soon + Duration::hours(1)), "end": rfc(soon + Duration::minutes(90)) });
    let res = app.post(&format!("/v1/bookings/{booking}/reschedule"), "alice", "r1", &moved).await;
    res.assert_problem(409, "OUTSIDE_CANCELLATION_WINDOW");

    let admin = app.admin_token();
    let path = format!("/v1/bookings/{booking}/cancel");
    let res = app.send(Method::POST, &path, Some(&admin), Some("c2"), None).await;
    assert_eq!(res.status, StatusCode::OK, "admin overrides the window: {res:?}");
    assert_eq!(res.body["status"], "CANCELLED");
    let again = app.slot_hold("bob", resource, soon, soon + Duration::minutes(30)).await;
    assert_eq!(again.status, StatusCode::CREATED, "the slot is free again: {again:?}");

    let later = future_hour(5);
    let booking = app.slot_booking("carol", resource, later, later + Duration::minutes(30)).await;
    let res = app.post(&format!("/v1/bookings/{booking}/cancel"), "carol", "c3", &json!({})).await;
    assert_eq!(res.status, StatusCode::OK, "outside the window the owner may cancel: {res:?}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn availability_follows_berlin_local_time_across_both_dst_changes() {
    let app = spawn_app().await;
    let always = app
        .create_resource(json!({ "time_zone": "Europe/Berlin", "opening_hours": all_week("00:00", "24:00"),
                                 "slot_granularity_minutes": 60 }))
        .await;
    // Last Sunday of March 2027: 02:00 CET -> 03:00 CEST. A 23-hour day.
    let march = app.free_starts(always, "2027-03-28", "2027-03-29", 60).await;
    assert_eq!(march.len(), 23, "{march:?}");
    assert!(march.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)), "no hole, no overlap in instants");
    // Last Sunday of October 2027: 03:00 CEST -> 02:00 CET. A 25-hour day, 02:00 twice.
    let october = app.free_starts(always, "2027-10-31", "2027-11-01", 60).await;
    assert_eq!(october.len(), 25, "{october:?}");

    let nine_to_ten = app
        .create_resource(json!({ "time_zone": "Europe/Berlin", "opening_hours": all_week("09:00", "10:00"),
                                 "slot_granularity_minutes": 30 }))
        .await;
    let path = format!("/v1/resources/{nine_to_ten}/availability?from=2027-03-27&to=2027-03-29&duration_minutes=30");
    let res = app.get(&path, None).await;
    let starts: Vec<&str> =
        res.body["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2027-03-27T09:00:00+01:00",
            "2027-03-27T09:30:00+01:00",
            "2027-03-28T09:00:00+02:00",
            "2027-03-28T09:30:00+02:00"
        ]
    );
    let autumn = app.free_starts(nine_to_ten, "2027-10-30", "2027-11-01", 30).await;
    let utc: Vec<String> = autumn.iter().map(|t| t.format("%m-%d %H:%M").to_string()).collect();
    assert_eq!(utc, ["10-30 07:00", "10-30 07:30", "10-31 08:00", "10-31 08:30"], "09:00 CEST then 09:00 CET");

    // A booking removes its start (and, in instants, nothing else).
    let start: DateTime<Utc> = "2027-03-28T07:00:00Z".parse().unwrap();
    app.slot_booking("alice", nine_to_ten, start, start + Duration::minutes(30)).await;
    let after = app.free_starts(nine_to_ten, "2027-03-28", "2027-03-29", 30).await;
    assert_eq!(after, vec!["2027-03-28T07:30:00Z".parse::<DateTime<Utc>>().unwrap()]);
}
