//! Idempotency-Key: one execution per key, stored answers replayed, misuse refused.

use std::sync::Arc;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::app::{eventually, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_requests_with_one_key_execute_once() {
    let app = Arc::new(spawn_app().await);
    let event = app.create_event(1, 1, 5).await;
    let seats = vec![event.seats[0], event.seats[1]];
    let key = Uuid::new_v4().to_string();

    let responses = join_all((0..10).map(|_| {
        let (app, seats, key) = (app.clone(), seats.clone(), key.clone());
        async move { app.hold("alice", event.id, &seats, &key).await }
    }))
    .await;

    assert_eq!(app.count("select count(*) from holds").await, 1, "one execution, one hold");
    let completed: Vec<_> = responses.iter().filter(|r| r.status == StatusCode::CREATED).collect();
    assert!(!completed.is_empty(), "{responses:?}");
    for response in &completed {
        assert_eq!(response.body, completed[0].body, "every completed response is identical");
    }
    for other in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
        other.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS");
        assert!(other.header("retry-after").is_some());
    }
    // Once settled, the key replays the same answer.
    let replay = app.hold("alice", event.id, &seats, &key).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, completed[0].body);
    assert_eq!(app.count("select count(*) from idempotency_records where state = 'SUCCEEDED'").await, 2); // event + hold
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_refused_with_422() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let key = Uuid::new_v4().to_string();
    assert_eq!(app.hold("alice", event.id, &[event.seats[0]], &key).await.status, StatusCode::CREATED);

    let reused = app.hold("alice", event.id, &[event.seats[1]], &key).await;
    reused.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.count("select count(*) from holds").await, 1);
    assert_eq!(app.count("select count(*) from seats where hold_id is not null").await, 1);
}

#[tokio::test]
async fn a_missing_or_invalid_key_is_400_and_nothing_is_written() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let path = format!("/v1/events/{}/holds", event.id);
    let body = json!({ "seat_ids": [event.seats[0]] });
    let token = app.token("alice");

    let missing = app.send(Method::POST, &path, Some(&token), None, Some(&body)).await;
    missing.assert_problem(400, "IDEMPOTENCY_KEY_MISSING");
    let too_long = app.send(Method::POST, &path, Some(&token), Some(&"k".repeat(256)), Some(&body)).await;
    too_long.assert_problem(400, "IDEMPOTENCY_KEY_INVALID");
    let spaced = app.send(Method::POST, &path, Some(&token), Some("a key"), Some(&body)).await;
    spaced.assert_problem(400, "IDEMPOTENCY_KEY_INVALID");

    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from idempotency_records where key <> ''").await, 1); // the event's
}

#[tokio::test]
async fn whitespace_and_key_order_do_not_change_the_fingerprint() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let key = Uuid::new_v4().to_string();
    let path = format!("/v1/events/{}/holds", event.id);
    let send = |raw: String| {
        app.client
            .post(app.url(&path))
            .bearer_auth(app.token("alice"))
            .header("idempotency-key", &key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    let seat = event.seats[0];
    let first = send(format!(r#"{{"seat_ids":["{seat}"],"ttl_seconds":60}}"#)).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let second = send(format!("{{ \"ttl_seconds\" : 60,\n \"seat_ids\" : [ \"{seat}\" ] }}")).await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers().get("idempotent-replayed").unwrap(), "true");
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let key = "shared-key-123";
    let alice = app.hold("alice", event.id, &[event.seats[0]], key).await;
    let bob = app.hold("bob", event.id, &[event.seats[1]], key).await;
    assert_eq!(alice.status, StatusCode::CREATED);
    assert_eq!(bob.status, StatusCode::CREATED, "bob's key is his own: {bob:?}");
    assert_ne!(alice.id(), bob.id());
}

#[tokio::test]
async fn a_business_conflict_is_stored_and_replayed() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    assert_eq!(app.hold("alice", event.id, &[seat], "a-1").await.status, StatusCode::CREATED);

    let refused = app.hold("bob", event.id, &[seat], "b-1").await;
    refused.assert_problem(409, "SEAT_UNAVAILABLE");
    assert_eq!(refused.body["seat_ids"][0], seat.to_string());

    // Even after alice lets go, bob's retry with the same key hears the stored answer:
    // a key stands for one execution, and that execution found the seat taken.
    let hold_id: Uuid = sqlx::query_scalar("select id from holds").fetch_one(&app.db).await.unwrap();
    let release =
        app.send(Method::DELETE, &format!("/v1/holds/{hold_id}"), Some(&app.token("alice")), None, None).await;
    assert_eq!(release.status, StatusCode::NO_CONTENT);
    let replay = app.hold("bob", event.id, &[seat], "b-1").await;
    replay.assert_problem(409, "SEAT_UNAVAILABLE");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    // A new key runs again, and now succeeds.
    assert_eq!(app.hold("bob", event.id, &[seat], "b-2").await.status, StatusCode::CREATED);
}

/// An instance that died mid-request leaves IN_PROGRESS behind; once its lease has run out,
/// a retry takes the key over and executes.
#[tokio::test]
async fn a_record_left_in_progress_by_a_crash_is_taken_over_after_its_lease() {
    let app = spawn_app_with(|c| c.jobs.idempotency_sweep_interval_ms = 3_600_000).await;
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    let key = "crashed-request";
    let path = format!("/v1/events/{}/holds", event.id);
    let canonical = serde_json::to_vec(&holdfast::api::holds::CreateHoldBody {
        seat_ids: Some(vec![seat]),
        best_available: None,
        ttl_seconds: None,
    })
    .unwrap();
    let fingerprint = holdfast::idempotency::fingerprint("POST", &path, &canonical);

    // A crashed execution's record whose lease is still live: retries are told to wait.
    sqlx::query(
        "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
         values ('alice', $1, $2, 'IN_PROGRESS', gen_random_uuid(), now() + interval '1 hour')",
    )
    .bind(key)
    .bind(&fingerprint)
    .execute(&app.db)
    .await
    .unwrap();
    app.hold("alice", event.id, &[seat], key).await.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS");

    // The lease runs out: the next retry takes over and executes exactly once.
    sqlx::query("update idempotency_records set lease_until = now() - interval '1 second' where key = $1")
        .bind(key)
        .execute(&app.db)
        .await
        .unwrap();
    let retried = app.hold("alice", event.id, &[seat], key).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
    assert_eq!(app.hold("alice", event.id, &[seat], key).await.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.count("select count(*) from holds").await, 1);
}

#[tokio::test]
async fn the_background_job_recovers_stale_records_and_purges_old_ones() {
    let app = spawn_app_with(|c| {
        c.idempotency.retention_seconds = 60;
        c.idempotency.lease_seconds = 1;
    })
    .await;
    sqlx::query(
        "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, updated_at)
         values ('u', 'stale', '\\x00', 'IN_PROGRESS', gen_random_uuid(), now() - interval '1 second', now()),
                ('u', 'old', '\\x00', 'FAILED', gen_random_uuid(), now() - interval '2 hours', now() - interval '2 hours')",
    )
    .execute(&app.db)
    .await
    .unwrap();

    eventually(
        "the stale record is marked FAILED and the old one purged",
        std::time::Duration::from_secs(10),
        || async {
            app.count("select count(*) from idempotency_records where key = 'stale' and state = 'FAILED'").await == 1
                && app.count("select count(*) from idempotency_records where key = 'old'").await == 0
        },
    )
    .await;
}

/// Claims for a seat that is turning requests away share one statement per batch. Every
/// rule of the key still holds inside a batch: the winner's retry replays its 201, a reused
/// key is 422, duplicates of one key execute once, and each loser hears SEAT_UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_claims_on_a_hot_seat_keep_every_rule_of_the_key() {
    let app = Arc::new(spawn_app().await);
    let event = app.create_event(1, 1, 5).await;
    let (seat, other) = (event.seats[0], event.seats[1]);
    let won = app.hold("alice", event.id, &[seat], "alice-1").await;
    assert_eq!(won.status, StatusCode::CREATED, "{won:?}");
    assert_eq!(app.hold("carol", event.id, &[other], "carol-1").await.status, StatusCode::CREATED);
    // A refusal makes the seat hot on this instance: later claims for it go in batches.
    app.hold("bob", event.id, &[seat], "bob-0").await.assert_problem(409, "SEAT_UNAVAILABLE");
    let batches_before = app.metric("holdfast_claim_batch_rows_count", "").await;

    let mut sends: Vec<(&str, String)> = (0..30).map(|i| ("fan", format!("fan-{i}"))).collect();
    sends.extend([("alice", "alice-1".to_owned()), ("alice", "alice-1".to_owned())]);
    sends.push(("carol", "carol-1".to_owned())); // her key, with a different body
    sends.extend((0..3).map(|_| ("dave", "dave-1".to_owned())));
    let responses = join_all(sends.iter().enumerate().map(|(i, (user, key))| {
        let app = app.clone();
        let user = if *user == "fan" { format!("fan-{i}") } else { user.to_string() };
        async move { (user.clone(), app.hold(&user, event.id, &[seat], key).await) }
    }))
    .await;

    for (user, response) in &responses {
        match user.as_str() {
            "alice" => {
                assert_eq!(response.status, StatusCode::CREATED, "the winner's retry replays its hold: {response:?}");
                assert_eq!(response.header("idempotent-replayed"), Some("true"));
                assert_eq!(response.body, won.body);
            }
            "carol" => response.assert_problem(422, "IDEMPOTENCY_KEY_REUSED"),
            _ => {
                response.assert_problem(409, "SEAT_UNAVAILABLE");
                assert_eq!(response.body["seat_ids"], json!([seat]), "{response:?}");
            }
        }
    }
    let dave: Vec<_> = responses.iter().filter(|(u, _)| u == "dave").map(|(_, r)| &r.body).collect();
    assert!(dave.iter().all(|b| *b == dave[0]), "one key, one answer: {dave:?}");
    let records: i64 = sqlx::query_scalar("select count(*) from idempotency_records where key = 'dave-1'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(records, 1);
    assert_eq!(app.count("select count(*) from holds").await, 2, "nothing but the two first holds");
    assert!(
        app.metric("holdfast_claim_batch_rows_count", "").await > batches_before,
        "the burst went through batched claims"
    );
    // Rows per batch have buckets of their own, not the latency buckets.
    assert!(app.metric("holdfast_claim_batch_rows_bucket", "le=\"256\"").await > 0.0);
    assert_eq!(app.metric("holdfast_claim_batch_rows_bucket", "le=\"0.001\"").await, 0.0);

    // A stored refusal is replayed later, from the record, like any other answer.
    let replay = app.hold("fan-0", event.id, &[seat], "fan-0").await;
    replay.assert_problem(409, "SEAT_UNAVAILABLE");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    app.assert_invariants().await;
}

/// A hot seat that frees up is not refused from memory: the batch's probe finds it free, the
/// claims become ordinary executions, and exactly one of them wins the seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_seat_that_frees_up_is_won_by_exactly_one_batched_claim() {
    let app = Arc::new(spawn_app().await);
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    let held = app.hold("alice", event.id, &[seat], "alice-1").await;
    assert_eq!(held.status, StatusCode::CREATED);
    app.hold("bob", event.id, &[seat], "bob-0").await.assert_problem(409, "SEAT_UNAVAILABLE");
    let release =
        app.send(Method::DELETE, &format!("/v1/holds/{}", held.id()), Some(&app.token("alice")), None, None).await;
    assert_eq!(release.status, StatusCode::NO_CONTENT);
    let batches_before = app.metric("holdfast_claim_batch_rows_count", "").await;

    let responses = join_all((0..30).map(|i| {
        let app = app.clone();
        async move { app.hold(&format!("fan-{i}"), event.id, &[seat], &format!("fan-{i}")).await }
    }))
    .await;

    let winners = responses.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(winners, 1, "{:?}", responses.iter().map(|r| (r.status, r.code())).collect::<Vec<_>>());
    for loser in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(loser.status, StatusCode::CONFLICT, "{loser:?}");
        assert!(["SEAT_UNAVAILABLE", "SEAT_LOCKED"].contains(&loser.code()), "{loser:?}");
    }
    assert!(
        app.metric("holdfast_claim_batch_rows_count", "").await > batches_before,
        "the burst went through batched claims"
    );
    app.assert_invariants().await;
}

/// With IDEMPOTENCY_PACKED_ANSWERS, every path that settles a record keeps its answer packed and
/// small, and a retry hears the answer first sent: an execution whose record travels with its
/// COMMIT, a refusal stored on its own, and a claim completed inside the transaction. A record
/// kept as JSON (the previous release's, or written with packing off) is replayed as well.
#[tokio::test]
async fn packed_answers_are_kept_small_and_replayed_as_first_sent() {
    let app = spawn_app_with(|config| config.idempotency.packed_answers = true).await;
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    let claimed = || app.metric("holdfast_idempotency_outcomes_total", "outcome=\"claimed\"");

    // Executed at once: the record goes with the COMMIT.
    let held = app.hold("alice", event.id, &[seat], "alice-1").await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    // A refusal, stored on its own; it makes the seat hot.
    let refused = app.hold("bob", event.id, &[seat], "bob-1").await;
    refused.assert_problem(409, "SEAT_UNAVAILABLE");
    // Once the seat is free again, a hold on the hot seat claims its key first and completes
    // the record inside its transaction.
    let release =
        app.send(Method::DELETE, &format!("/v1/holds/{}", held.id()), Some(&app.token("alice")), None, None).await;
    assert_eq!(release.status, StatusCode::NO_CONTENT);
    let claims_before = claimed().await;
    let carol = app.hold("carol", event.id, &[seat], "carol-1").await;
    assert_eq!(carol.status, StatusCode::CREATED, "{carol:?}");
    assert_eq!(claimed().await, claims_before + 1.0, "carol's key was claimed before her hold ran");
    let confirmed = app.post(&format!("/v1/holds/{}/confirm", carol.id()), "carol", "carol-2", &json!({})).await;
    assert_eq!(confirmed.status, StatusCode::CREATED, "{confirmed:?}");

    let records: Vec<(String, bool, i32)> = sqlx::query_as(
        "select key, response_body is null, octet_length(response_packed)
           from idempotency_records where key in ('alice-1', 'bob-1', 'carol-1', 'carol-2') order by key",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(records.len(), 4, "{records:?}");
    for (key, no_json, packed) in &records {
        assert!(no_json, "{key} keeps no JSON answer");
        assert!((40..160).contains(packed), "{key}'s answer packs into {packed} bytes");
    }

    let replays = [
        ("alice", "alice-1", event.id, &held),
        ("bob", "bob-1", event.id, &refused),
        ("carol", "carol-1", event.id, &carol),
    ];
    for (user, key, event_id, first) in replays {
        let replay = app.hold(user, event_id, &[seat], key).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!((replay.status, &replay.body), (first.status, &first.body), "{key}");
    }
    let replay = app.post(&format!("/v1/holds/{}/confirm", carol.id()), "carol", "carol-2", &json!({})).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!((replay.status, &replay.body), (confirmed.status, &confirmed.body));
    // A different request under a packed key is still refused.
    app.hold("alice", event.id, &[event.seats[1]], "alice-1").await.assert_problem(422, "IDEMPOTENCY_KEY_REUSED");

    // The same record kept as JSON, as a release before packing writes it, replays the same.
    let packed: Vec<u8> = sqlx::query_scalar("select response_packed from idempotency_records where key = 'carol-2'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let as_json = holdfast::idempotency::packed::unpack(&packed).unwrap();
    sqlx::query("update idempotency_records set response_body = $1, response_packed = null where key = 'carol-2'")
        .bind(&as_json)
        .execute(&app.db)
        .await
        .unwrap();
    let replay = app.post(&format!("/v1/holds/{}/confirm", carol.id()), "carol", "carol-2", &json!({})).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!((replay.status, &replay.body), (confirmed.status, &confirmed.body));
    assert_eq!(app.count("select count(*) from bookings").await, 1);
    // A settled record keeps its answer one way or the other.
    let bare = sqlx::query(
        "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until, response_status)
         values ('dave', 'bare', '\\x00', 'SUCCEEDED', gen_random_uuid(), now(), 201)",
    )
    .execute(&app.db)
    .await
    .unwrap_err();
    assert!(bare.to_string().contains("idempotency_succeeded_has_response"), "{bare}");
    app.assert_invariants().await;
}
