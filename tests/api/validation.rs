//! Bad input: a clear 4xx problem+json, and nothing written (not even an idempotency record).

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::app::{TestApp, spawn_app, spawn_app_with};

async fn raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> crate::support::app::Res {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(app.token("alice"))
        .header("idempotency-key", Uuid::new_v4().to_string());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    TestApp::read(request.body(body).send().await.unwrap()).await
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from seats where hold_id is not null or booking_id is not null").await, 0);
    // Only the event creation's own record exists.
    assert_eq!(app.count("select count(*) from idempotency_records").await, 1);
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_are_refused_and_nothing_is_written() {
    let app = spawn_app_with(|c| c.holds.max_seats = 3).await;
    let event = app.create_event(1, 1, 5).await;
    let path = format!("/v1/events/{}/holds", event.id);
    let s = &event.seats;

    raw(&app, &path, Some("application/json"), "{\"seat_ids\": [").await.assert_problem(400, "MALFORMED_REQUEST");
    raw(&app, &path, Some("text/plain"), "{}").await.assert_problem(415, "UNSUPPORTED_MEDIA_TYPE");
    raw(&app, &path, None, format!("{{\"seat_ids\":[\"{}\"]}}", s[0]))
        .await
        .assert_problem(415, "UNSUPPORTED_MEDIA_TYPE");

    let cases = [
        (json!({ "seat_ids": [s[0]], "extra": 1 }), "VALIDATION_FAILED"), // unknown field
        (json!({ "seat_ids": "all" }), "VALIDATION_FAILED"),              // wrong type
        (json!({ "seat_ids": ["not-a-uuid"] }), "VALIDATION_FAILED"),     // wrong type
        (json!({ "seat_ids": [s[0]], "ttl_seconds": "60" }), "VALIDATION_FAILED"), // wrong type
        (json!({}), "VALIDATION_FAILED"),                                 // missing field
        (json!({ "seat_ids": [] }), "VALIDATION_FAILED"),                 // empty
        (json!({ "seat_ids": [s[0], s[0]] }), "VALIDATION_FAILED"),       // duplicate
        (json!({ "seat_ids": [s[0], s[1], s[2], s[3]] }), "VALIDATION_FAILED"), // too many
        (json!({ "seat_ids": [s[0]], "ttl_seconds": -5 }), "VALIDATION_FAILED"), // negative TTL
        (json!({ "seat_ids": [s[0]], "ttl_seconds": 0 }), "VALIDATION_FAILED"), // zero TTL
        (json!({ "seat_ids": [s[0]], "ttl_seconds": 100000 }), "VALIDATION_FAILED"), // above the maximum
    ];
    for (body, code) in cases {
        let res = app.post(&path, "alice", &Uuid::new_v4().to_string(), &body).await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {res:?}");
        res.assert_problem(422, code);
        assert!(!res.body["detail"].as_str().unwrap_or("").is_empty(), "{res:?}");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn unknown_events_and_seats_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let stranger = Uuid::new_v4();

    let unknown_event = app.hold("alice", Uuid::new_v4(), &[event.seats[0]], "k1").await;
    unknown_event.assert_problem(404, "NOT_FOUND");
    let unknown_seat = app.hold("alice", event.id, &[event.seats[0], stranger], "k2").await;
    unknown_seat.assert_problem(422, "UNKNOWN_SEATS");
    assert_eq!(unknown_seat.body["seat_ids"], json!([stranger]));
    app.get("/v1/events/not-a-uuid", None).await.assert_problem(404, "NOT_FOUND");
    app.get(&format!("/v1/events/{}", Uuid::new_v4()), None).await.assert_problem(404, "NOT_FOUND");
    app.get("/v1/nowhere", None).await.assert_problem(404, "NOT_FOUND");

    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from seats where hold_id is not null").await, 0);
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|c| c.server.max_body_bytes = 64 * 1024).await;
    let event = app.create_event(1, 1, 5).await;
    let huge = format!("{{\"seat_ids\":[\"{}\"],\"pad\":\"{}\"}}", event.seats[0], "x".repeat(200 * 1024));
    raw(&app, &format!("/v1/events/{}/holds", event.id), Some("application/json"), huge)
        .await
        .assert_problem(413, "PAYLOAD_TOO_LARGE");
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn bad_query_parameters_and_methods_are_problems_too() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    app.get(&format!("/v1/events/{}/seats?status=sold", event.id), None).await.assert_problem(422, "VALIDATION_FAILED");
    app.get(&format!("/v1/events/{}/seats?limit=0", event.id), None).await.assert_problem(422, "VALIDATION_FAILED");
    app.get("/v1/bookings?limit=abc", Some("alice")).await.assert_problem(422, "VALIDATION_FAILED");
    let res = app.send(Method::PUT, &format!("/v1/events/{}", event.id), None, None, None).await;
    res.assert_problem(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn an_event_needs_exactly_one_of_seats_or_layout() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let post = |body: serde_json::Value| {
        let admin = admin.clone();
        let app = &app;
        async move {
            app.send(Method::POST, "/v1/events", Some(&admin), Some(&Uuid::new_v4().to_string()), Some(&body)).await
        }
    };
    post(json!({ "name": "x", "starts_at": "2030-01-01T00:00:00Z" })).await.assert_problem(422, "VALIDATION_FAILED");
    post(json!({ "name": "x", "starts_at": "yesterday", "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1 } }))
        .await
        .assert_problem(422, "VALIDATION_FAILED");
    let explicit = post(json!({
        "name": "Recital",
        "starts_at": "2030-01-01T00:00:00Z",
        "seats": [
            { "section": "Stalls", "row": "A", "number": 1, "price_cents": 9000 },
            { "section": "Stalls", "row": "A", "number": 2, "price_cents": 9000 },
        ],
    }))
    .await;
    assert_eq!(explicit.status, StatusCode::CREATED, "{explicit:?}");
    assert_eq!(explicit.body["seats"]["total"], 2);
    assert_eq!(app.count("select count(*) from events").await, 1);
}
