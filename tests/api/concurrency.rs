//! Many clients, one seat: exactly one wins, the seat is held once, nothing is split.

use std::sync::Arc;

use futures_util::future::join_all;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::app::{eventually, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_holds_on_one_seat_produce_exactly_one_hold() {
    let app = Arc::new(spawn_app().await);
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];

    let responses = join_all((0..100).map(|i| {
        let app = app.clone();
        async move { app.hold(&format!("user-{i}"), event.id, &[seat], &Uuid::new_v4().to_string()).await }
    }))
    .await;

    let created = responses.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let conflicts = responses.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!(created, 1, "exactly one hold wins: {:?}", responses.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(conflicts, 99, "every other request is refused with 409");
    for loser in responses.iter().filter(|r| r.status == StatusCode::CONFLICT) {
        assert!(["SEAT_UNAVAILABLE", "SEAT_LOCKED"].contains(&loser.code()), "{loser:?}");
    }
    let holds_on_seat: i64 = sqlx::query_scalar("select count(*) from hold_seats hs join holds h on h.id = hs.hold_id where hs.seat_id = $1 and h.status = 'HELD'")
        .bind(seat)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(holds_on_seat, 1, "the seat is held once");
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_holds_on_fifty_different_seats_all_succeed() {
    let app = Arc::new(spawn_app().await);
    let event = app.create_event(1, 5, 10).await;

    let responses = join_all(event.seats.iter().take(50).enumerate().map(|(i, seat)| {
        let app = app.clone();
        let seat = *seat;
        async move { app.hold(&format!("user-{i}"), event.id, &[seat], &Uuid::new_v4().to_string()).await }
    }))
    .await;

    for response in &responses {
        assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    }
    assert_eq!(app.count("select count(*) from seats where hold_id is not null").await, 50);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_overlapping_multi_seat_holds_racing_never_split_a_hold() {
    let app = Arc::new(spawn_app().await);
    // Repeat the race so an interleaving that splits holds would very likely show up.
    for round in 0..10 {
        let event = app.create_event(1, 1, 5).await;
        let (a, b) = (event.seats[..3].to_vec(), event.seats[1..4].to_vec()); // share seats 1 and 2

        let (key_a, key_b) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let (first, second) =
            tokio::join!(app.hold("alice", event.id, &a, &key_a), app.hold("bob", event.id, &b, &key_b));
        let winners = [&first, &second].iter().filter(|r| r.status == StatusCode::CREATED).count();
        assert_eq!(winners, 1, "round {round}: one wins whole: {first:?} {second:?}");
        let loser = if first.status == StatusCode::CREATED { &second } else { &first };
        assert_eq!(loser.status, StatusCode::CONFLICT, "round {round}: {loser:?}");

        let winner_seats = if first.status == StatusCode::CREATED { &a } else { &b };
        let held: Vec<Uuid> =
            sqlx::query_scalar("select id from seats where event_id = $1 and hold_id is not null order by id")
                .bind(event.id)
                .fetch_all(&app.db)
                .await
                .unwrap();
        let mut expected = winner_seats.clone();
        expected.sort();
        assert_eq!(held, expected, "round {round}: only the winner's seats are held, all of them");
    }
    app.assert_invariants().await;
}

/// The lock expires while the winner sits between its validity check and COMMIT (standing
/// for a process paused at the worst moment). A second request takes the lock and races
/// into Postgres: the conditional UPDATE and constraints still allow only one sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_that_expires_mid_transaction_still_cannot_double_sell() {
    // Both write paths that claim free seats: a hold, and a direct booking.
    for (kind, live_claims) in [
        ("holds", "select count(*) from seats where hold_id is not null"),
        ("bookings", "select count(*) from booking_seats where active"),
    ] {
        let app = Arc::new(
            spawn_app_with(|c| {
                c.redis.redlock_ttl_ms = 200;
                c.redis.redlock_commit_margin_ms = 20;
                c.redis.redlock_retry_count = 20;
                c.redis.redlock_retry_delay_ms = 50;
                c.faults.pre_commit_delay_ms = 600; // three lock lifetimes
            })
            .await,
        );
        let event = app.create_event(1, 1, 4).await;
        let path = format!("/v1/events/{}/{kind}", event.id);
        let body = serde_json::json!({ "seat_ids": [event.seats[0]] });
        let (first, second) = tokio::join!(app.post(&path, "alice", "first", &body), async {
            // Start the second once the first sits inside its open transaction, past its checks.
            eventually("the first request is paused before COMMIT", std::time::Duration::from_secs(10), || async {
                app.count("select count(*) from pg_stat_activity where datname = current_database() and state = 'idle in transaction'")
                    .await
                    >= 1
            })
            .await;
            app.post(&path, "bob", "second", &body).await
        });
        let created = [first.status, second.status].iter().filter(|s| **s == StatusCode::CREATED).count();
        assert_eq!(created, 1, "{kind}: {first:?} {second:?}");
        let loser = if first.status == StatusCode::CREATED { &second } else { &first };
        assert!(
            loser.status == StatusCode::CONFLICT || loser.status == StatusCode::SERVICE_UNAVAILABLE,
            "{kind}: the loser hears 409 or a retryable 503, never 201: {loser:?}"
        );
        if first.status == StatusCode::CREATED {
            // The second got the lock after it lapsed: Postgres alone turned it away.
            second.assert_problem(409, "SEAT_UNAVAILABLE");
        }
        assert_eq!(app.count(live_claims).await, 1, "{kind}");
        app.assert_invariants().await;
    }
}

/// With a commit margin just under the TTL, no acquisition (or extension) can leave enough
/// validity: the transaction rolls back and the client hears a retryable 503, with nothing
/// written and the key free to run again.
#[tokio::test]
async fn a_transaction_refuses_to_commit_on_a_lock_with_too_little_validity_left() {
    let app = spawn_app_with(|c| {
        c.redis.redlock_ttl_ms = 300;
        c.redis.redlock_commit_margin_ms = 299;
    })
    .await;
    let event = app.create_event(1, 1, 2).await;
    let refused = app.hold("alice", event.id, &[event.seats[0]], "short-lock").await;
    refused.assert_problem(503, "LOCK_UNAVAILABLE");
    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from seats where hold_id is not null").await, 0);
    assert_eq!(
        app.count("select count(*) from idempotency_records where key = 'short-lock' and state = 'FAILED'").await,
        1
    );
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_commits_refused_total{reason=\"lock_validity\"}"), "{metrics}");
}

/// Claims that arrive while the first request of a stampede sits inside its critical section
/// (holding the seat's lock) wait in their batch for its outcome, then settle with it: none of
/// them becomes an execution that queues for the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_arriving_while_the_winner_holds_the_lock_wait_for_its_outcome() {
    let app = Arc::new(
        spawn_app_with(|c| {
            c.faults.post_lock_delay_ms = 600; // every lock holder lingers inside
            c.idempotency.claim_batch_max_wait_ms = 10_000;
        })
        .await,
    );
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    let locks_taken = app.metric("holdfast_lock_acquisitions_total", "outcome=\"acquired\"").await;

    let alice = tokio::spawn({
        let app = app.clone();
        async move { app.hold("alice", event.id, &[seat], "alice-1").await }
    });
    let deadline = std::time::Duration::from_secs(10);
    eventually("alice holds the seat's lock", deadline, || async {
        app.metric("holdfast_lock_acquisitions_total", "outcome=\"acquired\"").await > locks_taken
    })
    .await;
    // Bob's attempt finds the lock taken: the seat is contended from now on.
    let taken_replies = app.metric("holdfast_lock_node_replies_total", "reply=\"taken\"").await;
    let bob = tokio::spawn({
        let app = app.clone();
        async move { app.hold("bob", event.id, &[seat], "bob-1").await }
    });
    eventually("a majority of nodes refuse bob's lock attempt", deadline, || async {
        app.metric("holdfast_lock_node_replies_total", "reply=\"taken\"").await >= taken_replies + 2.0
    })
    .await;
    let claimed = app.metric("holdfast_idempotency_outcomes_total", "outcome=\"claimed\"").await;

    let burst = join_all((0..20).map(|i| {
        let app = app.clone();
        async move { app.hold(&format!("fan-{i}"), event.id, &[seat], &format!("fan-{i}")).await }
    }))
    .await;

    assert_eq!(alice.await.unwrap().status, StatusCode::CREATED);
    let bob = bob.await.unwrap();
    assert_eq!(bob.status, StatusCode::CONFLICT, "{bob:?}");
    assert!(["SEAT_UNAVAILABLE", "SEAT_LOCKED"].contains(&bob.code()), "bob's retries may run out first: {bob:?}");
    for response in &burst {
        response.assert_problem(409, "SEAT_UNAVAILABLE");
    }
    assert_eq!(
        app.metric("holdfast_idempotency_outcomes_total", "outcome=\"claimed\"").await,
        claimed,
        "no claim of the burst became an execution"
    );
    app.assert_invariants().await;
}
