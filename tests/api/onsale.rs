//! On-sale settings and per-buyer limits (issue 13, parts 1 and 4): before `on_sale_at` users
//! cannot hold or book (admins can); `max_seats_per_buyer` caps a buyer's live held and booked
//! seats in the event, inside the transaction, even when the buyer's requests race.

use chrono::{Duration as Span, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{TestApp, spawn_app};

async fn patch(app: &TestApp, event: Uuid, body: &Value) -> crate::support::app::Res {
    app.send(Method::PATCH, &format!("/v1/events/{event}"), Some(&app.admin_token()), None, Some(body)).await
}

async fn book(app: &TestApp, user: &str, event: Uuid, seats: &[Uuid]) -> crate::support::app::Res {
    app.post(&format!("/v1/events/{event}/bookings"), user, &Uuid::new_v4().to_string(), &json!({ "seat_ids": seats }))
        .await
}

#[tokio::test]
async fn before_the_on_sale_time_only_admins_hold_or_book() {
    let app = spawn_app().await;
    let on_sale_at = (Utc::now() + Span::hours(1)).to_rfc3339();
    let body = json!({
        "name": "On-sale", "starts_at": "2030-06-01T19:30:00Z", "on_sale_at": on_sale_at,
        "layout": { "sections": 1, "rows": 1, "seats_per_row": 6, "price_cents": 100 },
    });
    let key = Uuid::new_v4().to_string();
    let created = app.send(Method::POST, "/v1/events", Some(&app.admin_token()), Some(&key), Some(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert!(created.body["on_sale_at"].is_string(), "{created:?}");
    let event = created.id();
    let seats = crate::support::app::seat_ids(&app.get(&format!("/v1/events/{event}/seats"), None).await.body);

    let refused = app.hold("alice", event, &seats[..1], &Uuid::new_v4().to_string()).await;
    refused.assert_problem(409, "NOT_ON_SALE");
    assert!(refused.body["on_sale_at"].is_string(), "{refused:?}");
    book(&app, "alice", event, &seats[1..2]).await.assert_problem(409, "NOT_ON_SALE");
    assert_eq!(app.count("select count(*) from hold_seats").await, 0, "nothing was written");

    // Admins may hold before the sale (for example, seats kept back).
    let admin_hold = app
        .send(
            Method::POST,
            &format!("/v1/events/{event}/holds"),
            Some(&app.admin_token()),
            Some(&Uuid::new_v4().to_string()),
            Some(&json!({ "seat_ids": [seats[2]] })),
        )
        .await;
    assert_eq!(admin_hold.status, StatusCode::CREATED, "{admin_hold:?}");

    // Moving the sale to now opens it; the change is a change event.
    let opened = patch(&app, event, &json!({ "on_sale_at": Utc::now().to_rfc3339() })).await;
    assert_eq!(opened.status, StatusCode::OK, "{opened:?}");
    let held = app.hold("alice", event, &seats[..1], &Uuid::new_v4().to_string()).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    assert_eq!(book(&app, "alice", event, &seats[1..2]).await.status, StatusCode::CREATED);
    // The feed serves a change once no older transaction is running: poll for it.
    let admin = app.admin_token();
    let mut updates = Vec::new();
    crate::support::app::eventually("the event.updated change", std::time::Duration::from_secs(10), || {
        let (app, admin) = (&app, &admin);
        async move {
            let feed = app.send(Method::GET, "/v1/changes?types=event.updated", Some(admin), None, None).await;
            !feed.body["changes"].as_array().unwrap().is_empty()
        }
    })
    .await;
    let feed = app.send(Method::GET, "/v1/changes?types=event.updated", Some(&admin), None, None).await;
    updates.extend(feed.body["changes"].as_array().unwrap().iter().cloned());
    assert_eq!(updates.len(), 1, "{feed:?}");
    assert_eq!(updates[0]["subject"]["event_id"].as_str().unwrap(), event.to_string());
    assert!(updates[0]["data"]["on_sale_at"].is_string(), "{feed:?}");

    // Clearing it with null; a PATCH must change something and only admins may.
    let cleared = patch(&app, event, &json!({ "on_sale_at": null })).await;
    assert!(cleared.body.get("on_sale_at").is_none(), "{cleared:?}");
    patch(&app, event, &json!({})).await.assert_problem(422, "VALIDATION_FAILED");
    patch(&app, event, &json!({ "max_seats_per_buyer": 0 })).await.assert_problem(422, "VALIDATION_FAILED");
    patch(&app, event, &json!({ "on_sale_at": "10000-01-01T00:00:00Z" }))
        .await
        .assert_problem(422, "VALIDATION_FAILED");
    patch(&app, event, &json!({ "name": "x" })).await.assert_problem(422, "VALIDATION_FAILED");
    patch(&app, Uuid::new_v4(), &json!({ "max_seats_per_buyer": 2 })).await.assert_problem(404, "NOT_FOUND");
    let user = app.token("alice");
    let res = app
        .send(
            Method::PATCH,
            &format!("/v1/events/{event}"),
            Some(&user),
            None,
            Some(&json!({ "max_seats_per_buyer": 2 })),
        )
        .await;
    res.assert_problem(403, "FORBIDDEN");
}

#[tokio::test]
async fn racing_holds_of_one_buyer_stop_at_the_per_buyer_limit() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 60).await;
    let limited = patch(&app, event.id, &json!({ "max_seats_per_buyer": 4 })).await;
    assert_eq!(limited.body["max_seats_per_buyer"], 4, "{limited:?}");

    // 20 holds of 2 distinct seats each, all at once, by one buyer.
    let requests = (0..20).map(|i| {
        let (app, seats) = (&app, event.seats[i * 2..i * 2 + 2].to_vec());
        async move { app.hold("carol", event.id, &seats, &Uuid::new_v4().to_string()).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let created = answers.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(created, 2, "{answers:?}");
    for refused in answers.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409, "BUYER_LIMIT_REACHED");
        assert_eq!(
            (refused.body["limit"].as_i64(), refused.body["current"].as_i64()),
            (Some(4), Some(4)),
            "{refused:?}"
        );
    }
    let held: i64 = sqlx::query_scalar(
        "select count(*) from holds h join hold_seats hs on hs.hold_id = h.id where h.user_id = 'carol' and h.status = 'HELD'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(held, 4);

    // Another buyer has a limit of their own; a direct booking counts too.
    assert_eq!(app.hold("dave", event.id, &event.seats[40..44], "dave-1").await.status, StatusCode::CREATED);
    book(&app, "dave", event.id, &event.seats[44..45]).await.assert_problem(409, "BUYER_LIMIT_REACHED");

    // Releasing a hold gives its seats back to the buyer's allowance.
    let carols: Vec<Uuid> = answers.iter().filter(|r| r.status == StatusCode::CREATED).map(|r| r.id()).collect();
    let released =
        app.send(Method::DELETE, &format!("/v1/holds/{}", carols[0]), Some(&app.token("carol")), None, None).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT, "{released:?}");
    assert_eq!(book(&app, "carol", event.id, &event.seats[50..52]).await.status, StatusCode::CREATED);
    app.hold("carol", event.id, &event.seats[52..53], "carol-more").await.assert_problem(409, "BUYER_LIMIT_REACHED");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_body_must_be_an_object_not_an_array_of_its_fields() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 1).await;
    patch(&app, event.id, &json!([null, null])).await.assert_problem(422, "VALIDATION_FAILED");
    patch(&app, event.id, &json!(["2030-01-01T00:00:00Z", 4])).await.assert_problem(422, "VALIDATION_FAILED");
    let shown = app.get(&format!("/v1/events/{}", event.id), None).await;
    assert!(shown.body.get("max_seats_per_buyer").is_none(), "{shown:?}");
}
