//! The audit trail: every state change of a booking and its hold, who made it, with which
//! request, written in the same transaction and never rewritten.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{eventually, spawn_app};

#[tokio::test]
async fn a_bookings_history_lists_every_change_with_actor_and_request_id() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let token = app.token("alice");
    let hold = app
        .send(
            Method::POST,
            &format!("/v1/events/{}/holds", event.id),
            Some(&token),
            Some("h1"),
            Some(&json!({ "seat_ids": [event.seats[0]] })),
        )
        .await;
    assert_eq!(hold.status, StatusCode::CREATED);
    let hold_request = hold.header("x-request-id").unwrap().to_owned();
    let extend =
        app.post(&format!("/v1/holds/{}/extend", hold.id()), "alice", "e1", &json!({ "ttl_seconds": 300 })).await;
    assert_eq!(extend.status, StatusCode::OK, "{extend:?}");
    let booking = app.confirm("alice", hold.id()).await;
    assert_eq!(booking.status, StatusCode::CREATED);
    let confirm_request = booking.header("x-request-id").unwrap().to_owned();
    let admin = app.admin_token();
    let cancel =
        app.send(Method::POST, &format!("/v1/bookings/{}/cancel", booking.id()), Some(&admin), Some("c1"), None).await;
    assert_eq!(cancel.status, StatusCode::OK);

    let history = app.get(&format!("/v1/bookings/{}/history", booking.id()), Some("alice")).await;
    assert_eq!(history.status, StatusCode::OK, "{history:?}");
    let entries = history.body["entries"].as_array().unwrap();
    let steps: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
            (s("entity"), s("from"), s("to"), s("actor"))
        })
        .collect();
    let step = |entity: &str, from: &str, to: &str, actor: &str| {
        (entity.to_owned(), from.to_owned(), to.to_owned(), actor.to_owned())
    };
    assert_eq!(
        steps,
        vec![
            step("hold", "-", "HELD", "alice"),
            step("hold", "HELD", "HELD", "alice"),
            step("hold", "HELD", "CONFIRMED", "alice"),
            step("booking", "-", "CONFIRMED", "alice"),
            step("booking", "CONFIRMED", "CANCELLED", "admin"),
        ],
        "{history:?}"
    );
    assert_eq!(entries[0]["request_id"], hold_request.as_str());
    assert_eq!(entries[2]["request_id"], confirm_request.as_str());
    assert_eq!(entries[3]["request_id"], confirm_request.as_str(), "one transaction, one request");
    assert_eq!(entries[4]["actor_role"], "admin");
    assert!(entries[1]["detail"]["expires_at"].is_string(), "an extension records the new expiry");
    let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

    // A page at a time, one entry each: the same entries, each once, in the same order, though
    // the confirm's two (the hold's and the booking's) are one row of the log.
    let mut paged = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let query = cursor.map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = app.get(&format!("/v1/bookings/{}/history?limit=1{query}", booking.id()), Some("alice")).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        paged.extend(page.body["entries"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_i64() {
            Some(next) => {
                assert!(cursor.is_none_or(|c| next > c), "{page:?}");
                cursor = Some(next);
            }
            None => break,
        }
        assert!(paged.len() <= entries.len(), "{paged:?}");
    }
    assert_eq!(&paged, entries);

    // Not yours: 404, like the booking itself.
    app.get(&format!("/v1/bookings/{}/history", booking.id()), Some("mallory")).await.assert_problem(404, "NOT_FOUND");

    // Append-only, even for someone with SQL access.
    let rewrite = sqlx::query("update audit_log set actor = 'nobody'").execute(&app.db).await;
    assert!(rewrite.is_err(), "audit_log refuses updates");
    let erase = sqlx::query("delete from audit_log").execute(&app.db).await;
    assert!(erase.is_err(), "audit_log refuses deletes");
}

/// History rows name their hold and booking without foreign keys (issue 10): the invariants
/// catch a row that names neither an existing hold nor booking.
#[tokio::test]
async fn a_history_row_of_an_unknown_hold_or_booking_is_an_invariant_violation() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let hold = app.hold("alice", event.id, &event.seats[..1], "o1").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    assert_eq!(app.confirm("alice", hold.id()).await.status, StatusCode::CREATED);
    app.assert_invariants().await;
    let name = "history row of an unknown hold or booking";
    let violations = |db| async move { holdfast::db::invariants::violations(db).await.unwrap() };

    sqlx::query(
        "insert into audit_log (hold_id, entity, to_status, actor, actor_role) values (gen_random_uuid(), 'hold', 'HELD', 'x', 'user')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(violations(&app.db).await, [(name, 1)], "a row naming no hold");

    sqlx::query(
        "insert into audit_log (hold_id, booking_id, entity, to_status, actor, actor_role)
         values ($1, gen_random_uuid(), 'booking', 'CONFIRMED', 'x', 'user')",
    )
    .bind(hold.id())
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(violations(&app.db).await, [(name, 2)], "a row naming a hold but no booking");
}

/// Seats, seat records, bookings, room nights and slot claims name their hold, booking, seat or
/// night without foreign keys (issue 10): the invariants catch each kind of row that names one
/// that does not exist.
#[tokio::test]
async fn a_claim_or_record_of_an_unknown_hold_booking_seat_or_night_is_an_invariant_violation() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 3).await;
    let hold = app.hold("alice", event.id, &event.seats[..1], "o1").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    assert_eq!(app.confirm("alice", hold.id()).await.status, StatusCode::CREATED);
    app.assert_invariants().await;
    let name = "claim or record of an unknown hold, booking, seat or night";
    let violations = |db| async move { holdfast::db::invariants::violations(db).await.unwrap() };
    let (free, other) = (event.seats[1], event.seats[2]);
    let inventory = app.create_inventory("2027-03-01", "2027-03-02", 1, 0).await;
    let resource = app.create_resource(json!({})).await;
    let rows = [
        // A seat claimed by no hold, and one sold to no booking.
        format!(
            "update seats set hold_id = gen_random_uuid(), hold_expires_at = now() + interval '1 hour' where id = '{free}'"
        ),
        format!("update seats set booking_id = gen_random_uuid() where id = '{other}'"),
        format!("insert into hold_seats (hold_id, seat_id) values (gen_random_uuid(), '{free}')"),
        format!("insert into hold_seats (hold_id, seat_id) values ('{}', gen_random_uuid())", hold.id()),
        format!("insert into booking_seats (booking_id, seat_id, active) values (gen_random_uuid(), '{free}', false)"),
        format!(
            "insert into booking_seats (booking_id, seat_id, active)
             select id, gen_random_uuid(), false from bookings where hold_id = '{}'",
            hold.id()
        ),
        "insert into bookings (id, event_id, hold_id, user_id, status, total_cents)
         values (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'x', 'CONFIRMED', 0)"
            .to_owned(),
        format!(
            "insert into hold_nights (hold_id, inventory_id, night, quantity) values (gen_random_uuid(), '{inventory}', '2027-03-01', 1)"
        ),
        format!(
            "insert into hold_nights (hold_id, inventory_id, night, quantity) values ('{}', '{inventory}', '2027-04-01', 1)",
            hold.id()
        ),
        format!(
            "insert into slot_claims (hold_id, resource_id, span, blocked, active)
             values (gen_random_uuid(), '{resource}', tstzrange(now(), now() + interval '1 hour'),
                     tstzrange(now(), now() + interval '1 hour'), false)"
        ),
    ];
    for (n, sql) in rows.iter().enumerate() {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).execute(&app.db).await.unwrap();
        let found = violations(&app.db).await;
        assert!(found.contains(&(name, n as i64 + 1)), "after {sql}: {found:?}");
    }
}

#[tokio::test]
async fn expiry_and_reschedule_are_recorded_too() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-02", 1, 0).await;
    let body = json!({ "check_in": "2027-03-01", "check_out": "2027-03-02", "quantity": 1, "ttl_seconds": 1 });
    let hold = app.post(&format!("/v1/inventories/{inventory}/holds"), "alice", "x", &body).await;
    let hold_id = hold.id();
    eventually("the sweeper records the expiry", std::time::Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from audit_log where hold_id = $1 and to_status = 'EXPIRED' and actor = 'system'",
        )
        .bind(hold_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        n == 1
    })
    .await;

    let resource = app.create_resource(json!({})).await;
    let start = crate::slots::future_hour(3);
    let end = start + chrono::Duration::minutes(30);
    let booking = app.slot_booking("bob", resource, start, end).await;
    let to = json!({ "start": (start + chrono::Duration::hours(2)).to_rfc3339(),
                     "end": (end + chrono::Duration::hours(2)).to_rfc3339() });
    let moved = app.post(&format!("/v1/bookings/{booking}/reschedule"), "bob", "m1", &to).await;
    assert_eq!(moved.status, StatusCode::OK, "{moved:?}");
    let history = app.get(&format!("/v1/bookings/{booking}/history"), Some("bob")).await;
    let last = history.body["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["entity"], "booking");
    assert_eq!(last["from"], "CONFIRMED");
    assert_eq!(last["to"], "CONFIRMED");
    let from = chrono::DateTime::parse_from_rfc3339(last["detail"]["rescheduled_from"]["start"].as_str().unwrap());
    assert_eq!(from.unwrap(), start, "{last}");
}

/// Who acts travels with the transaction's BEGIN as quoted literals: quotes, backslashes and
/// SQL in a user id or request id are recorded verbatim and never run.
#[tokio::test]
async fn an_actor_and_request_id_full_of_quotes_are_recorded_verbatim() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let user = r#"o'brien\'); delete from holds; -- "x""#;
    let request_id = r"req'\';--";
    let res = app
        .client
        .post(app.url(&format!("/v1/events/{}/holds", event.id)))
        .bearer_auth(app.token(user))
        .header("idempotency-key", "quoted")
        .header("x-request-id", request_id)
        .json(&json!({ "seat_ids": [event.seats[0]] }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (actor, recorded_request): (String, Option<String>) =
        sqlx::query_as("select actor, request_id from audit_log where entity = 'hold'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(actor, user);
    assert_eq!(recorded_request.as_deref(), Some(request_id));
    assert_eq!(app.count("select count(*) from holds").await, 1, "nothing else ran");
}
