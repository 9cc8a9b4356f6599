//! Hold → confirm → booking → cancel, release, extend and expiry.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::app::{eventually, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_short_hold_expires_by_itself_and_its_seats_can_be_held_again() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let seats = [event.seats[0], event.seats[1]];
    let hold = app.hold_with_ttl("alice", event.id, &seats, 1).await;
    assert_eq!(hold.status, StatusCode::CREATED);
    assert_eq!(hold.body["status"], "HELD");
    let hold_id = hold.id();

    // The sweeper marks it EXPIRED and frees the seats.
    eventually("the sweeper expires the hold", Duration::from_secs(10), || async {
        app.count("select count(*) from holds where status = 'EXPIRED'").await == 1
            && app.count("select count(*) from seats where hold_id is not null").await == 0
    })
    .await;
    let seen = app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await;
    assert_eq!(seen.body["status"], "EXPIRED");
    let counts = app.get(&format!("/v1/events/{}", event.id), None).await;
    assert_eq!(counts.body["seats"]["available"], 5);

    let again = app.hold("bob", event.id, &seats, &Uuid::new_v4().to_string()).await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    app.assert_invariants().await;
}

/// Reads and new holds treat an expired hold as gone at once, before any sweep.
#[tokio::test]
async fn an_expired_hold_never_blocks_even_before_the_sweeper_runs() {
    let app = spawn_app_with(|c| c.jobs.hold_sweep_interval_ms = 3_600_000).await;
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    let hold_id = app.hold_with_ttl("alice", event.id, &[seat], 1).await.id();
    eventually("the hold's expiry passes", Duration::from_secs(5), || async {
        app.count("select count(*) from holds where expires_at <= now()").await == 1
    })
    .await;
    assert_eq!(app.count("select count(*) from holds where status = 'HELD'").await, 1, "not swept");

    let seats = app.get(&format!("/v1/events/{}/seats?status=available", event.id), None).await;
    assert_eq!(seats.body["seats"].as_array().unwrap().len(), 5);
    let again = app.hold("bob", event.id, &[seat], "bob-1").await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_EXPIRED");
    app.assert_invariants().await;
}

#[tokio::test]
async fn confirming_after_expiry_is_409_hold_expired() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let hold_id = app.hold_with_ttl("alice", event.id, &[event.seats[0]], 1).await.id();
    eventually("the hold expires", Duration::from_secs(5), || async {
        app.count("select count(*) from holds where expires_at <= now()").await == 1
    })
    .await;
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_EXPIRED");
    assert_eq!(app.count("select count(*) from bookings").await, 0);
}

#[tokio::test]
async fn confirming_a_hold_books_its_seats() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let seats = vec![event.seats[0], event.seats[2]];
    let hold_id = app.hold("alice", event.id, &seats, "h1").await.id();

    let key = Uuid::new_v4().to_string();
    let body = json!({ "payment_reference": "pay_123" });
    let booking = app.post(&format!("/v1/holds/{hold_id}/confirm"), "alice", &key, &body).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!(booking.body["status"], "CONFIRMED");
    assert_eq!(booking.body["hold_id"], hold_id.to_string());
    assert_eq!(booking.body["payment_reference"], "pay_123");
    assert_eq!(booking.body["total_cents"], 5000);
    let mut expected: Vec<String> = seats.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(booking.body["seat_ids"], json!(expected));

    // Retrying the confirm replays; the hold is CONFIRMED; the seats are BOOKED.
    let replay = app.post(&format!("/v1/holds/{hold_id}/confirm"), "alice", &key, &body).await;
    assert_eq!(replay.body, booking.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await.body["status"], "CONFIRMED");
    let booked = app.get(&format!("/v1/events/{}/seats?status=booked", event.id), None).await;
    assert_eq!(booked.body["seats"].as_array().unwrap().len(), 2);
    // A second confirm with a new key cannot book again.
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");
    assert_eq!(app.count("select count(*) from bookings").await, 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_confirm_without_a_body_works() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let hold_id = app.hold("alice", event.id, &[event.seats[0]], "h").await.id();
    let res = app
        .client
        .post(app.url(&format!("/v1/holds/{hold_id}/confirm")))
        .bearer_auth(app.token("alice"))
        .header("idempotency-key", "c")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn releasing_a_hold_frees_its_seats_and_repeating_it_is_harmless() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let hold_id = app.hold("alice", event.id, &[event.seats[0]], "h").await.id();
    let token = app.token("alice");
    for _ in 0..2 {
        let res = app.send(Method::DELETE, &format!("/v1/holds/{hold_id}"), Some(&token), None, None).await;
        assert_eq!(res.status, StatusCode::NO_CONTENT, "{res:?}");
    }
    assert_eq!(app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await.body["status"], "RELEASED");
    assert_eq!(app.hold("bob", event.id, &[event.seats[0]], "b").await.status, StatusCode::CREATED);
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");
    app.assert_invariants().await;
}

#[tokio::test]
async fn extending_a_hold_moves_its_expiry_within_the_lifetime_cap() {
    let app = spawn_app_with(|c| {
        c.holds.max_ttl_seconds = 300;
        c.holds.default_ttl_seconds = 60;
        c.holds.max_lifetime_seconds = 400;
    })
    .await;
    let event = app.create_event(1, 1, 5).await;
    let hold = app.hold_with_ttl("alice", event.id, &[event.seats[0]], 60).await;
    let hold_id = hold.id();
    let before = hold.body["expires_at"].as_str().unwrap().to_owned();

    let extended =
        app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", "e1", &json!({ "ttl_seconds": 300 })).await;
    assert_eq!(extended.status, StatusCode::OK, "{extended:?}");
    let after = extended.body["expires_at"].as_str().unwrap();
    assert!(after > before.as_str(), "{before} -> {after}");
    // The answer is the hold as stored (the service builds it without reading it back).
    let stored = app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await;
    assert_eq!(stored.status, StatusCode::OK, "{stored:?}");
    assert_eq!(stored.body, extended.body);
    let seat_expiry: i64 = sqlx::query_scalar(
        "select count(*) from seats s join holds h on h.id = s.hold_id where s.hold_expires_at = h.expires_at",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(seat_expiry, 1, "the seat's claim moves with the hold");

    // 300 more seconds from now would pass 400 seconds after creation only once time moves on;
    // pretend the hold was created long ago to cross the cap.
    sqlx::query("update holds set created_at = now() - interval '200 seconds'").execute(&app.db).await.unwrap();
    let refused = app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", "e2", &json!({ "ttl_seconds": 300 })).await;
    refused.assert_problem(409, "HOLD_LIFETIME_EXCEEDED");
    let too_long =
        app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", "e3", &json!({ "ttl_seconds": 301 })).await;
    too_long.assert_problem(422, "VALIDATION_FAILED");
}

#[tokio::test]
async fn booking_directly_and_cancelling_returns_the_seats() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let seats = vec![event.seats[3], event.seats[4]];
    let booking =
        app.post(&format!("/v1/events/{}/bookings", event.id), "alice", "b1", &json!({ "seat_ids": seats })).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    let booking_id = booking.id();
    assert_eq!(app.get(&format!("/v1/events/{}", event.id), None).await.body["seats"]["booked"], 2);
    app.hold("bob", event.id, &[seats[0]], "x").await.assert_problem(409, "SEAT_UNAVAILABLE");

    for key in ["c1", "c2"] {
        let cancelled = app.post(&format!("/v1/bookings/{booking_id}/cancel"), "alice", key, &json!({})).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{cancelled:?}");
        assert_eq!(cancelled.body["status"], "CANCELLED");
    }
    assert_eq!(app.get(&format!("/v1/events/{}", event.id), None).await.body["seats"]["available"], 5);
    assert_eq!(app.hold("bob", event.id, &[seats[0]], "y").await.status, StatusCode::CREATED);
    app.assert_invariants().await;
}

#[tokio::test]
async fn an_admin_may_cancel_anyones_booking() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let booking_id = app
        .post(&format!("/v1/events/{}/bookings", event.id), "alice", "b", &json!({ "seat_ids": [event.seats[0]] }))
        .await
        .id();
    let res = app
        .send(
            Method::POST,
            &format!("/v1/bookings/{booking_id}/cancel"),
            Some(&app.admin_token()),
            Some("admin-c"),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    assert_eq!(res.body["status"], "CANCELLED");
}

#[tokio::test]
async fn the_callers_bookings_are_listed_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let mut ids = Vec::new();
    for (i, seat) in event.seats.iter().enumerate() {
        let res = app
            .post(
                &format!("/v1/events/{}/bookings", event.id),
                "alice",
                &format!("b{i}"),
                &json!({ "seat_ids": [seat] }),
            )
            .await;
        ids.push(res.id().to_string());
    }
    app.post(&format!("/v1/events/{}/bookings", event.id), "bob", "bob", &json!({ "seat_ids": [event.seats[0]] }))
        .await;
    ids.reverse();

    let first = app.get("/v1/bookings?limit=3", Some("alice")).await;
    let page: Vec<&str> =
        first.body["bookings"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(page, ids[..3].iter().map(String::as_str).collect::<Vec<_>>());
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("/v1/bookings?limit=3&cursor={cursor}"), Some("alice")).await;
    let page: Vec<&str> =
        second.body["bookings"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(page, ids[3..].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(second.body["next_cursor"].is_null());
}

#[tokio::test]
async fn the_seat_map_filters_by_status_and_section_and_pages() {
    let app = spawn_app().await;
    let event = app.create_event(2, 2, 3).await; // sections A and B, 6 seats each
    app.hold("alice", event.id, &[event.seats[0]], "h").await;
    let held = app.get(&format!("/v1/events/{}/seats?status=held", event.id), None).await;
    assert_eq!(held.body["seats"].as_array().unwrap().len(), 1);
    assert_eq!(held.body["seats"][0]["label"], "A-1-1");
    let section_b = app.get(&format!("/v1/events/{}/seats?section=B", event.id), None).await;
    assert_eq!(section_b.body["seats"].as_array().unwrap().len(), 6);
    let page = app.get(&format!("/v1/events/{}/seats?limit=5", event.id), None).await;
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = app.get(&format!("/v1/events/{}/seats?limit=100&cursor={cursor}", event.id), None).await;
    assert_eq!(rest.body["seats"].as_array().unwrap().len(), 7);
    assert_eq!(rest.body["seats"][0]["label"], "A-2-3");
}

#[tokio::test]
async fn twenty_thousand_seats_are_created_in_one_request() {
    let app = spawn_app().await;
    let event = app.create_event(10, 40, 50).await;
    assert_eq!(event.seats.len(), 10_000, "the first page of the seat map");
    let info = app.get(&format!("/v1/events/{}", event.id), None).await;
    assert_eq!(info.body["seats"]["total"], 20_000);
}

#[tokio::test]
async fn the_seat_map_lists_rows_in_natural_order_across_pages() {
    let app = spawn_app().await;
    let event = app.create_event(1, 12, 2).await; // rows 1..12 in section A
    let mut labels = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/events/{}/seats?limit=5&cursor={c}", event.id),
            None => format!("/v1/events/{}/seats?limit=5", event.id),
        };
        let page = app.get(&path, None).await;
        labels.extend(page.body["seats"].as_array().unwrap().iter().map(|s| s["label"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=12).flat_map(|row| (1..=2).map(move |n| format!("A-{row}-{n}"))).collect();
    assert_eq!(labels, expected, "row 2 comes before row 10, and paging loses or repeats nothing");
}

/// An extend answers with the hold it made and remembers it at the version it made: the confirm
/// that follows on this instance plans from memory and needs no read at all.
#[tokio::test]
async fn a_hold_extended_here_is_confirmed_from_memory_without_a_read() {
    let app = spawn_app().await;
    let plans = |from: &'static str| {
        let labels = format!("from=\"{from}\"");
        let app = &app;
        async move { app.metric("holdfast_hold_plans_total", &labels).await }
    };
    let event = app.create_event(1, 1, 1).await;
    let hold_id = app.hold("alice", event.id, &[event.seats[0]], "h").await.id();
    let (memory, read, reread) =
        (plans("memory").await, plans("read").await, app.metric("holdfast_hold_plans_reread_total", "").await);
    let extended = app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", "e", &json!({ "ttl_seconds": 120 })).await;
    assert_eq!(extended.status, StatusCode::OK, "{extended:?}");
    let booked = app.confirm("alice", hold_id).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    assert_eq!(
        (
            plans("memory").await - memory,
            plans("read").await - read,
            app.metric("holdfast_hold_plans_reread_total", "").await - reread
        ),
        (2.0, 0.0, 0.0)
    );
    app.assert_invariants().await;
}

/// A hold created on this instance is confirmed, extended or released from its memory, without
/// a read; what another instance did to the hold meanwhile is still seen: an extend (the command
/// runs at the new version), a release or a confirm there (409 HOLD_NOT_ACTIVE, nothing booked
/// twice). Someone else's hold stays a 404 whatever this instance remembers.
#[tokio::test]
async fn a_command_planned_from_memory_sees_what_another_instance_did() {
    let app = spawn_app().await;
    let (other_addr, _, stop, server) =
        crate::support::app::serve(crate::support::app::test_config(&app.database.url)).await;
    let other = |path: &str| format!("http://{other_addr}{path}");
    let on_other = |method: Method, path: String, user: &'static str, body: serde_json::Value| {
        let (client, token, url) = (app.client.clone(), app.token(user), other(&path));
        async move {
            let key = Uuid::new_v4().to_string();
            crate::support::app::request(&client, method, &url, Some(&token), Some(&key), Some(&body)).await.unwrap()
        }
    };
    let app = &app;
    let plans = |from: &'static str| {
        let labels = format!("from=\"{from}\"");
        async move { app.metric("holdfast_hold_plans_total", &labels).await }
    };
    let rereads = || app.metric("holdfast_hold_plans_reread_total", "");
    let extend = |hold_id: Uuid| {
        let body = json!({ "ttl_seconds": 120 });
        async move { app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", &Uuid::new_v4().to_string(), &body).await }
    };
    let release = |hold_id: Uuid| {
        let token = app.token("alice");
        async move { app.send(Method::DELETE, &format!("/v1/holds/{hold_id}"), Some(&token), None, None).await }
    };
    let status = |hold_id: Uuid| async move {
        app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await.body["status"].clone()
    };
    let event = app.create_event(1, 1, 9).await;
    let mut seats = event.seats.iter().copied();
    let mut hold =
        async || app.hold("alice", event.id, &[seats.next().unwrap()], &Uuid::new_v4().to_string()).await.id();

    // Created and confirmed here: planned from memory.
    let hold_id = hold().await;
    let (memory, read) = (plans("memory").await, plans("read").await);
    let booked = app.confirm("alice", hold_id).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    assert_eq!((plans("memory").await - memory, plans("read").await - read), (1.0, 0.0));

    // Extended on the other instance (a new version): confirmed, extended or released here all
    // the same, each after one read under the lock.
    for (command, expected) in [("confirm", 201), ("extend", 200), ("release", 204)] {
        let hold_id = hold().await;
        let extended =
            on_other(Method::POST, format!("/v1/holds/{hold_id}/extend"), "alice", json!({ "ttl_seconds": 60 })).await;
        assert_eq!(extended.status, StatusCode::OK, "{extended:?}");
        let reread = rereads().await;
        let res = match command {
            "confirm" => app.confirm("alice", hold_id).await,
            "extend" => extend(hold_id).await,
            _ => release(hold_id).await,
        };
        assert_eq!(res.status.as_u16(), expected, "{command}: {res:?}");
        assert_eq!(rereads().await - reread, 1.0, "{command}");
        let now = if command == "confirm" {
            "CONFIRMED"
        } else if command == "extend" {
            "HELD"
        } else {
            "RELEASED"
        };
        assert_eq!(status(hold_id).await, now, "{command}");
    }

    // Released on the other instance: neither confirmed nor extended here.
    let hold_id = hold().await;
    let released = on_other(Method::DELETE, format!("/v1/holds/{hold_id}"), "alice", json!({})).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT, "{released:?}");
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");
    let hold_id = hold().await;
    on_other(Method::DELETE, format!("/v1/holds/{hold_id}"), "alice", json!({})).await;
    extend(hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");

    // Confirmed on the other instance: not confirmed again, nor released, here.
    let hold_id = hold().await;
    let there = on_other(Method::POST, format!("/v1/holds/{hold_id}/confirm"), "alice", json!({})).await;
    assert_eq!(there.status, StatusCode::CREATED, "{there:?}");
    app.confirm("alice", hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");
    release(hold_id).await.assert_problem(409, "HOLD_NOT_ACTIVE");
    assert_eq!(status(hold_id).await, "CONFIRMED");

    // Someone else's hold: 404, and it stays alice's to confirm.
    let hold_id = hold().await;
    app.confirm("bob", hold_id).await.assert_problem(404, "NOT_FOUND");
    assert_eq!(status(hold_id).await, "HELD");

    // Eight holds: three confirmed, one released here, two released there, two HELD (the one
    // extended here and bob's try).
    assert_eq!(app.count("select count(*) from bookings").await, 3);
    assert_eq!(app.count("select count(*) from seats where booking_id is not null").await, 3);
    assert_eq!(app.count("select count(*) from holds where status = 'RELEASED'").await, 3);
    assert_eq!(app.count("select count(*) from holds where status = 'HELD'").await, 2);
    app.assert_invariants().await;
    let _ = stop.send(());
    server.await.unwrap();
}
