//! Inputs the type system accepts but the database or the clock cannot take: NUL characters,
//! far-off years, prices near `i64::MAX`, long request ids, oversized bodies. Each answers a
//! clear 4xx problem+json, never a 500. And the business refusals with their own codes.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::slots::future_hour;
use crate::support::app::{TestApp, count, spawn_app, spawn_app_with};

async fn admin_post(app: &TestApp, path: &str, body: &Value) -> crate::support::app::Res {
    app.send(Method::POST, path, Some(&app.admin_token()), Some(&Uuid::new_v4().to_string()), Some(body)).await
}

#[tokio::test]
async fn a_nul_character_in_any_string_answers_422_not_500() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let seats = &event.seats;

    // Anonymous seat map, NUL in a query parameter.
    let res = app.get(&format!("/v1/events/{}/seats?section=%00", event.id), None).await;
    res.assert_problem(422, "VALIDATION_FAILED");
    app.get(&format!("/v1/events/{}/seats?section=A%00B", event.id), None)
        .await
        .assert_problem(422, "VALIDATION_FAILED");

    // Confirm with a NUL in the payment reference.
    let hold = app.hold("alice", event.id, &seats[..1], "h1").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    let confirm = app
        .post(&format!("/v1/holds/{}/confirm", hold.id()), "alice", "c1", &json!({ "payment_reference": "a\u{0}b" }))
        .await;
    confirm.assert_problem(422, "VALIDATION_FAILED");
    assert!(confirm.body["detail"].as_str().unwrap().contains("payment_reference"), "{confirm:?}");

    // Direct booking, event name, seat labels, inventory and resource names, time zone.
    let cases = [
        (format!("/v1/events/{}/bookings", event.id), json!({ "seat_ids": [seats[1]], "payment_reference": "x\u{0}" })),
        (
            "/v1/events".to_owned(),
            json!({ "name": "Con\u{0}cert", "starts_at": "2030-01-01T00:00:00Z",
            "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1 } }),
        ),
        (
            "/v1/events".to_owned(),
            json!({ "name": "Concert", "starts_at": "2030-01-01T00:00:00Z",
            "seats": [{ "section": "A", "row": "1\u{0}", "number": 1, "price_cents": 1 }] }),
        ),
        (
            "/v1/inventories".to_owned(),
            json!({ "name": "\u{0}", "from": "2027-01-01", "to": "2027-01-02", "capacity": 1 }),
        ),
        (
            "/v1/resources".to_owned(),
            json!({ "name": "Court\u{0}", "time_zone": "UTC", "opening_hours": {},
            "slot_granularity_minutes": 30 }),
        ),
        (
            "/v1/resources".to_owned(),
            json!({ "name": "Court", "time_zone": "UTC\u{0}", "opening_hours": {},
            "slot_granularity_minutes": 30 }),
        ),
    ];
    for (path, body) in cases {
        let res = admin_post(&app, &path, &body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {res:?}");
        res.assert_problem(422, "VALIDATION_FAILED");
    }
    // An escaped backslash followed by "u0000" is ordinary text, not a NUL.
    let literal = app
        .post(&format!("/v1/holds/{}/confirm", hold.id()), "alice", "c2", &json!({ "payment_reference": "a\\u0000b" }))
        .await;
    assert_eq!(literal.status, StatusCode::CREATED, "{literal:?}");
    assert_eq!(literal.body["payment_reference"], "a\\u0000b");
}

#[tokio::test]
async fn far_off_years_answer_422_and_never_panic() {
    let app = spawn_app().await;
    let resource = app.create_resource(json!({})).await;
    let inventory = app.create_inventory("2027-01-01", "2027-01-05", 2, 0).await;
    let cases = [
        format!("/v1/resources/{resource}/availability?from=-262143-01-01&to=-262143-01-02&duration_minutes=60"),
        format!("/v1/resources/{resource}/availability?from=%2B262142-12-30&to=%2B262142-12-31&duration_minutes=60"),
        format!(
            "/v1/resources/{resource}/availability?from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z&duration_minutes=60"
        ),
        format!("/v1/inventories/{inventory}/availability?from=-200000-01-01&to=-200000-01-03"),
        format!("/v1/inventories/{inventory}/availability?from=9999-12-31&to=%2B10000-01-01"),
    ];
    for path in cases {
        app.get(&path, None).await.assert_problem(422, "VALIDATION_FAILED");
    }
    let far = json!({ "start": "+262142-12-31T23:00:00Z", "end": "+262143-01-01T00:00:00Z" });
    let res = app.post(&format!("/v1/resources/{resource}/holds"), "alice", "far", &far).await;
    assert_eq!(res.status.as_u16(), 422, "{res:?}");
    let res = app
        .post(
            &format!("/v1/resources/{resource}/holds"),
            "alice",
            "far2",
            &json!({
            "start": "+262142-12-31T23:00:00Z", "end": "+262142-12-31T23:30:00Z" }),
        )
        .await;
    res.assert_problem(422, "VALIDATION_FAILED");
    let event = json!({ "name": "Far", "starts_at": "+262142-01-01T00:00:00Z",
                        "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1 } });
    admin_post(&app, "/v1/events", &event).await.assert_problem(422, "VALIDATION_FAILED");
    let stay = json!({ "check_in": "-200000-01-01", "check_out": "-200000-01-03", "quantity": 1 });
    app.post(&format!("/v1/inventories/{inventory}/holds"), "alice", "old", &stay)
        .await
        .assert_problem(422, "VALIDATION_FAILED");
    assert_eq!(app.count("select count(*) from holds").await, 0);
}

#[tokio::test]
async fn prices_near_i64_max_are_refused_and_totals_cannot_overflow() {
    let app = spawn_app().await;
    let huge = json!({ "name": "Gold", "starts_at": "2030-01-01T00:00:00Z",
        "seats": [{ "section": "A", "row": "1", "number": 1, "price_cents": i64::MAX - 1 },
                  { "section": "A", "row": "1", "number": 2, "price_cents": i64::MAX - 1 }] });
    let res = admin_post(&app, "/v1/events", &huge).await;
    res.assert_problem(422, "VALIDATION_FAILED");
    assert!(res.body["detail"].as_str().unwrap().contains("price_cents"), "{res:?}");

    // The highest price allowed, on as many seats as a hold may take: the total is exact.
    let top = 10_000_000_000_i64;
    let seats: Vec<Value> =
        (1..=10).map(|n| json!({ "section": "A", "row": "1", "number": n, "price_cents": top })).collect();
    let res =
        admin_post(&app, "/v1/events", &json!({ "name": "Gold", "starts_at": "2030-01-01T00:00:00Z", "seats": seats }))
            .await;
    assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    let event = res.id();
    let ids = crate::support::app::seat_ids(&app.get(&format!("/v1/events/{event}/seats"), None).await.body);
    let hold = app.hold("alice", event, &ids, "all").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    assert_eq!(hold.body["total_cents"], json!(top * 10));
    let booking = app.confirm("alice", hold.id()).await;
    assert_eq!(booking.body["total_cents"], json!(top * 10), "{booking:?}");
}

#[tokio::test]
async fn a_long_or_odd_request_id_is_replaced_and_a_short_one_kept() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let send = |id: String, key: &'static str| {
        let (app, event) = (&app, &event);
        async move {
            let response = app
                .client
                .post(app.url(&format!("/v1/events/{}/holds", event.id)))
                .bearer_auth(app.token("alice"))
                .header("idempotency-key", key)
                .header("x-request-id", id)
                .json(&json!({ "seat_ids": [event.seats[if key == "k1" { 0 } else { 1 }]] }))
                .send()
                .await
                .unwrap();
            TestApp::read(response).await
        }
    };
    let long = "x".repeat(8000);
    let res = send(long.clone(), "k1").await;
    assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    let given = res.header("x-request-id").unwrap().to_owned();
    assert!(given != long && given.len() <= 128, "a fresh id replaces it: {given}");
    let res = send("order-42.attempt-1".to_owned(), "k2").await;
    assert_eq!(res.header("x-request-id"), Some("order-42.attempt-1"));

    let longest: i32 = sqlx::query_scalar("select coalesce(max(length(request_id)), 0) from audit_log")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(longest <= 128, "the audit trail keeps only short ids: {longest}");
    let kept = count(
        &app.db,
        "select count(*) from audit_log where request_id = 'order-42.attempt-1' and hold_id is not null",
    )
    .await;
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn a_hold_body_is_limited_to_what_a_hold_can_be() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    // 20 KiB: far below MAX_BODY_BYTES (4 MiB), far above any real hold.
    let padding: Vec<Uuid> = (0..560).map(|_| Uuid::new_v4()).collect();
    let res =
        app.post(&format!("/v1/events/{}/holds", event.id), "alice", "big", &json!({ "seat_ids": padding })).await;
    res.assert_problem(413, "PAYLOAD_TOO_LARGE");
    // Event creation still takes large bodies (an explicit seat list).
    let seats: Vec<Value> =
        (1..=2000).map(|n| json!({ "section": "A", "row": "1", "number": n, "price_cents": 100 })).collect();
    let res =
        admin_post(&app, "/v1/events", &json!({ "name": "Big", "starts_at": "2030-01-01T00:00:00Z", "seats": seats }))
            .await;
    assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
}

#[tokio::test]
async fn holds_on_a_started_event_a_past_night_or_beyond_the_horizon_are_refused() {
    let app = spawn_app_with(|c| c.holds.resource_booking_horizon_days = 30).await;
    let started = admin_post(
        &app,
        "/v1/events",
        &json!({ "name": "Yesterday", "starts_at": "2026-01-01T19:00:00Z",
        "layout": { "sections": 1, "rows": 1, "seats_per_row": 2, "price_cents": 100 } }),
    )
    .await;
    assert_eq!(started.status, StatusCode::CREATED, "{started:?}");
    let event = started.id();
    let seats = crate::support::app::seat_ids(&app.get(&format!("/v1/events/{event}/seats"), None).await.body);
    let hold = app.hold("alice", event, &seats[..1], "late").await;
    hold.assert_problem(422, "EVENT_STARTED");
    assert_eq!(hold.body["starts_at"], "2026-01-01T19:00:00Z");
    let book =
        app.post(&format!("/v1/events/{event}/bookings"), "alice", "late2", &json!({ "seat_ids": [seats[1]] })).await;
    book.assert_problem(422, "EVENT_STARTED");
    assert_eq!(app.count("select count(*) from seats where hold_id is not null or booking_id is not null").await, 0);

    let inventory = app.create_inventory("2026-01-01", "2026-01-10", 2, 0).await;
    let past = app.room_hold("alice", inventory, "2026-01-02", "2026-01-04", 1).await;
    past.assert_problem(422, "NIGHT_IN_PAST");
    assert_eq!(past.body["night"], "2026-01-02");

    let resource = app.create_resource(json!({})).await;
    let far = future_hour(40);
    let res = app.slot_hold("alice", resource, far, far + Duration::hours(1)).await;
    res.assert_problem(422, "SLOT_BEYOND_HORIZON");
    let near = future_hour(20);
    let ok = app.slot_hold("alice", resource, near, near + Duration::hours(1)).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{ok:?}");
    assert_eq!(app.count("select count(*) from holds").await, 1);
}

#[tokio::test]
async fn lowering_the_allowance_below_what_is_sold_answers_capacity_below_sold() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-02-01", "2027-02-03", 2, 2).await;
    let hold = app.room_hold("alice", inventory, "2027-02-01", "2027-02-02", 4).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    let res = app
        .patch_nights(inventory, &json!({ "from": "2027-02-01", "to": "2027-02-03", "overbooking_allowance": 1 }))
        .await;
    res.assert_problem(409, "CAPACITY_BELOW_SOLD");
    assert_eq!(res.body["night"], "2027-02-01");
    assert_eq!(res.body["sold"], 4);
    // Lowering it to exactly what is sold is fine; the other night has nothing sold.
    let res = app
        .patch_nights(inventory, &json!({ "from": "2027-02-01", "to": "2027-02-03", "overbooking_allowance": 2 }))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    let res = app
        .patch_nights(inventory, &json!({ "from": "2027-02-02", "to": "2027-02-03", "overbooking_allowance": 0 }))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
}
