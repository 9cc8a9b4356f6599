//! Tokens and ownership: another user's hold or booking is a 404, never the data.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn another_user_cannot_read_release_confirm_extend_or_cancel_what_is_yours() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let hold_id = app.hold("alice", event.id, &[event.seats[0]], "h").await.id();
    let booking_id = app
        .post(&format!("/v1/events/{}/bookings", event.id), "alice", "b", &json!({ "seat_ids": [event.seats[1]] }))
        .await
        .id();
    let mallory = app.token("mallory");

    let attempts = [
        app.get(&format!("/v1/holds/{hold_id}"), Some("mallory")).await,
        app.send(Method::DELETE, &format!("/v1/holds/{hold_id}"), Some(&mallory), None, None).await,
        app.post(&format!("/v1/holds/{hold_id}/confirm"), "mallory", "m1", &json!({})).await,
        app.post(&format!("/v1/holds/{hold_id}/extend"), "mallory", "m2", &json!({ "ttl_seconds": 60 })).await,
        app.get(&format!("/v1/bookings/{booking_id}"), Some("mallory")).await,
        app.post(&format!("/v1/bookings/{booking_id}/cancel"), "mallory", "m3", &json!({})).await,
    ];
    for res in &attempts {
        res.assert_problem(404, "NOT_FOUND");
        assert!(!res.body.to_string().contains("alice"), "{res:?}");
    }
    assert!(app.get("/v1/bookings", Some("mallory")).await.body["bookings"].as_array().unwrap().is_empty());
    // Nothing moved.
    assert_eq!(app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await.body["status"], "HELD");
    assert_eq!(app.get(&format!("/v1/bookings/{booking_id}"), Some("alice")).await.body["status"], "CONFIRMED");
}

#[tokio::test]
async fn writes_need_a_valid_token_and_events_need_an_admin() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let path = format!("/v1/events/{}/holds", event.id);
    let body = json!({ "seat_ids": [event.seats[0]] });

    app.send(Method::POST, &path, None, Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");
    app.send(Method::POST, &path, Some("not-a-jwt"), Some("k"), Some(&body))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    let forged = holdfast::api::auth::JwtKeys::new("another-secret-entirely-0000")
        .mint("alice", true, std::time::Duration::from_secs(60))
        .unwrap();
    app.send(Method::POST, &path, Some(&forged), Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");
    // Leeway is 5 s; a token that expired in 1970 is plainly expired.
    let old = {
        let claims = holdfast::api::auth::Claims { sub: "alice".into(), role: None, exp: 1_000_000 };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    app.send(Method::POST, &path, Some(&old), Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");

    let create = json!({ "name": "x", "starts_at": "2030-01-01T00:00:00Z", "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1 } });
    app.post("/v1/events", "alice", "e", &create).await.assert_problem(403, "FORBIDDEN");
    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from events").await, 1);

    // Reads of events and seats are public.
    assert_eq!(app.get(&format!("/v1/events/{}", event.id), None).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/events/{}/seats", event.id), None).await.status, StatusCode::OK);
}
