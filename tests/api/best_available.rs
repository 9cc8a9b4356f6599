//! Best available (issue 13, part 3): holdfast chooses adjacent seats in one row, best first,
//! without leaving single seats stranded, and spreads concurrent buyers over different blocks.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{Res, TestApp, spawn_app};

async fn best(app: &TestApp, user: &str, event: Uuid, want: Value, key: &str) -> Res {
    app.post(&format!("/v1/events/{event}/holds"), user, key, &json!({ "best_available": want })).await
}

/// (row, number) of every seat of the event, by id.
async fn places(app: &TestApp, event: Uuid) -> HashMap<Uuid, (String, i64)> {
    let page = app.get(&format!("/v1/events/{event}/seats?limit=10000"), None).await;
    page.body["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap().parse().unwrap();
            (id, (s["row"].as_str().unwrap().to_owned(), s["number"].as_i64().unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn two_hundred_buyers_of_pairs_get_adjacent_seats_or_409_and_strand_no_single_seat() {
    let app = spawn_app().await;
    let event = app.create_event(1, 20, 20).await; // section A: 20 rows of 20
    // The instance reads the seat map once (a first buyer). Then a rival's transaction takes the
    // first three rows and stays open while the buyers arrive: the instance's memory still shows
    // those rows free (nothing committed, so nothing streamed), the buyers' claims queue behind
    // the rival's row locks, and when it commits they find the seats gone and choose again inside
    // their transactions, from what Postgres shows.
    let first = best(&app, "early", event.id, json!({ "quantity": 2, "section": "A" }), "k").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let mut taken: HashSet<Uuid> =
        first.body["seat_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
    let front: Vec<Uuid> = event.seats[..60].iter().filter(|id| !taken.contains(id)).copied().collect();
    let mut rival = app.db.begin().await.unwrap();
    let rival_hold = Uuid::now_v7();
    sqlx::query(
        "insert into holds (id, event_id, user_id, status, expires_at)
         values ($1, $2, 'rival', 'HELD', now() + interval '10 minutes')",
    )
    .bind(rival_hold)
    .bind(event.id)
    .execute(&mut *rival)
    .await
    .unwrap();
    sqlx::query("insert into hold_seats (hold_id, seat_id) select $1, unnest($2::uuid[])")
        .bind(rival_hold)
        .bind(&front)
        .execute(&mut *rival)
        .await
        .unwrap();
    sqlx::query(
        "update seats set hold_id = $1, hold_expires_at = now() + interval '10 minutes', version = version + 1
          where id = any($2)",
    )
    .bind(rival_hold)
    .bind(&front)
    .execute(&mut *rival)
    .await
    .unwrap();
    taken.extend(&front);
    let before = taken.len() as i64;
    let buyers = join_all((0..200).map(|i| {
        let app = &app;
        async move { best(app, &format!("buyer{i}"), event.id, json!({ "quantity": 2, "section": "A" }), "k").await }
    }));
    let rival_commits = async {
        let waiting =
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'";
        crate::support::app::eventually(
            "buyers waiting behind the rival",
            std::time::Duration::from_secs(10),
            || async { app.count(waiting).await > 0 },
        )
        .await;
        rival.commit().await.unwrap();
    };
    let (answers, ()) = tokio::join!(buyers, rival_commits);
    let seats = places(&app, event.id).await;
    let mut successes = 0;
    for answer in &answers {
        if answer.status != StatusCode::CREATED {
            assert_eq!(answer.status, StatusCode::CONFLICT, "{answer:?}");
            continue;
        }
        successes += 1;
        let ids: Vec<Uuid> =
            answer.body["seat_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
        assert_eq!(ids.len(), 2, "{answer:?}");
        let (a, b) = (&seats[&ids[0]], &seats[&ids[1]]);
        assert!(a.0 == b.0 && (a.1 - b.1).abs() == 1, "not side by side: {a:?} {b:?}");
        for id in ids {
            assert!(taken.insert(id), "seat {id} in two holds");
        }
    }
    assert!(successes > 0, "{answers:?}");
    let held: i64 = app.count("select count(*) from seats where hold_id is not null and hold_expires_at > now()").await;
    assert_eq!(held, before + 2 * successes, "seats held = the rival's and early's + 2 × successes");
    // Stranded single seats: a free seat with no free neighbour in its row. Every row has an even
    // number of seats and every hold takes two, so none is unavoidable.
    let free: HashSet<(String, i64)> =
        seats.iter().filter(|(id, _)| !taken.contains(*id)).map(|(_, place)| place.clone()).collect();
    let stranded: Vec<_> = free
        .iter()
        .filter(|(row, n)| !free.contains(&(row.clone(), n - 1)) && !free.contains(&(row.clone(), n + 1)))
        .collect();
    assert!(stranded.is_empty(), "{} successes stranded {stranded:?}", successes);
    // Some first choices were taken meanwhile and chosen again (the path is exercised).
    assert!(app.metric("holdfast_best_available_rechosen_total", "").await > 0.0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn best_available_picks_the_front_middle_replays_and_refuses_what_does_not_fit() {
    let app = spawn_app().await;
    let event = app.create_event(1, 2, 10).await;
    let seats = places(&app, event.id).await;
    let first = best(&app, "gina", event.id, json!({ "quantity": 2 }), "gina-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let ids: Vec<Uuid> =
        first.body["seat_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect();
    // Drawn from the best blocks (the ranking itself is the unit tests'): side by side in one
    // row, starting on an odd seat so that pairs can fill the rest of the row.
    let mut numbers: Vec<(String, i64)> = ids.iter().map(|id| seats[id].clone()).collect();
    numbers.sort();
    assert!(numbers[0].0 == numbers[1].0 && numbers[1].1 == numbers[0].1 + 1, "{numbers:?}");
    assert_eq!(numbers[0].1 % 2, 1, "{numbers:?}");

    // The same key replays the same seats.
    let again = best(&app, "gina", event.id, json!({ "quantity": 2 }), "gina-1").await;
    assert_eq!(again.body["seat_ids"], first.body["seat_ids"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // 18 seats are left in rows of 10 and 8: no 11 side by side.
    let refused = best(&app, "hal", event.id, json!({ "quantity": 10, "section": "A" }), "hal-1").await;
    assert_eq!(refused.status, StatusCode::CREATED, "a whole free row fits: {refused:?}");
    let too_many = best(&app, "ida", event.id, json!({ "quantity": 9 }), "ida-1").await;
    too_many.assert_problem(409, "NO_SEATS_AVAILABLE");
    assert_eq!(too_many.body["free"], 8, "{too_many:?}");
    // Apart, when allowed (at most HOLD_MAX_SEATS, 10 by default).
    let split = best(&app, "ida", event.id, json!({ "quantity": 7, "allow_split": true }), "ida-2").await;
    assert_eq!(split.status, StatusCode::CREATED, "{split:?}");
    assert_eq!(split.body["seat_ids"].as_array().unwrap().len(), 7);

    // One of the two, never both or neither; a section with no seats has none available.
    let both = json!({ "seat_ids": [ids[0]], "best_available": { "quantity": 1 } });
    let res = app.post(&format!("/v1/events/{}/holds", event.id), "jo", "jo-1", &both).await;
    res.assert_problem(422, "VALIDATION_FAILED");
    app.post(&format!("/v1/events/{}/holds", event.id), "jo", "jo-2", &json!({}))
        .await
        .assert_problem(422, "VALIDATION_FAILED");
    best(&app, "jo", event.id, json!({ "quantity": 0 }), "jo-3").await.assert_problem(422, "VALIDATION_FAILED");
    best(&app, "jo", event.id, json!({ "quantity": 1, "section": "Z" }), "jo-4")
        .await
        .assert_problem(409, "NO_SEATS_AVAILABLE");
    best(&app, "jo", Uuid::new_v4(), json!({ "quantity": 1 }), "jo-5").await.assert_problem(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_choice_made_from_postgres_is_taken_in_memory_too() {
    let app = spawn_app().await;
    let event = app.create_event(1, 2, 10).await;
    let seats = places(&app, event.id).await;
    let seat = |row: &str, number: i64| *seats.iter().find(|(_, place)| **place == (row.to_owned(), number)).unwrap().0;
    // Neither row has ten free seats side by side: Ann holds seat 5 of row 1, Bob seat 10 of row 2.
    let ann = app.hold("ann", event.id, &[seat("1", 5)], "ann-1").await;
    assert_eq!(ann.status, StatusCode::CREATED, "{ann:?}");
    let bob = app.hold("bob", event.id, &[seat("2", 10)], "bob-1").await;
    assert_eq!(bob.status, StatusCode::CREATED, "{bob:?}");
    // The instance reads the seat map into its memory (and finds no ten).
    best(&app, "scout", event.id, json!({ "quantity": 10 }), "scout-1").await.assert_problem(409, "NO_SEATS_AVAILABLE");
    // A transaction left open holds the change feed back (nothing after it is readable), so the
    // memory learns nothing by the stream from here on: only what this instance chose itself.
    let mut rival = app.db.begin().await.unwrap();
    sqlx::query("select pg_current_xact_id()").execute(&mut *rival).await.unwrap();
    let released =
        app.send(Method::DELETE, &format!("/v1/holds/{}", bob.id()), Some(&app.token("bob")), None, None).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT, "{released:?}");
    // Memory still sees seat 10 of row 2 taken, so it has no ten: Postgres chooses row 2, all of it.
    let hal = best(&app, "hal", event.id, json!({ "quantity": 10 }), "hal-1").await;
    assert_eq!(hal.status, StatusCode::CREATED, "{hal:?}");
    let mut rows: Vec<String> = hal.body["seat_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| seats[&id.as_str().unwrap().parse::<Uuid>().unwrap()].0.clone())
        .collect();
    rows.dedup();
    assert_eq!(rows, ["2"], "{hal:?}");
    // Nine side by side are left nowhere (row 1 is split by Ann's seat). A memory that did not
    // learn Hal's choice would offer seats 1-9 of row 2 and lose the claim twice (SEAT_UNAVAILABLE).
    let ida = best(&app, "ida", event.id, json!({ "quantity": 9 }), "ida-1").await;
    ida.assert_problem(409, "NO_SEATS_AVAILABLE");
    assert_eq!(ida.body["free"], 9, "{ida:?}");
    assert_eq!(app.metric("holdfast_best_available_rechosen_total", "").await, 0.0);
    rival.rollback().await.unwrap();
    app.assert_invariants().await;
}

#[tokio::test]
async fn seats_chosen_by_a_request_that_does_not_commit_are_offered_again_at_once() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let from = |place: &'static str| {
        let app = &app;
        async move { app.metric("holdfast_best_available_choices_total", &format!("from=\"{place}\"")).await }
    };
    let first = best(&app, "gina", event.id, json!({ "quantity": 2 }), "gina-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    // The retry of the same request chooses the other pair in memory before it learns, at
    // COMMIT, that its key was answered already; it replays the first answer.
    let again = best(&app, "gina", event.id, json!({ "quantity": 2 }), "gina-1").await;
    assert_eq!(again.body["seat_ids"], first.body["seat_ids"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!((from("memory").await, from("postgres").await), (2.0, 0.0));
    // That pair was given back: the next buyer gets it from memory, without asking Postgres.
    let hal = best(&app, "hal", event.id, json!({ "quantity": 2 }), "hal-1").await;
    assert_eq!(hal.status, StatusCode::CREATED, "{hal:?}");
    assert_eq!((from("memory").await, from("postgres").await), (3.0, 0.0));
    let taken: HashSet<&Value> =
        first.body["seat_ids"].as_array().unwrap().iter().chain(hal.body["seat_ids"].as_array().unwrap()).collect();
    assert_eq!(taken.len(), 4, "{first:?} {hal:?}");
    app.assert_invariants().await;
}
