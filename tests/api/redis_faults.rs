//! The Redlock quorum against real redis-server processes that we stop and start.

use reqwest::StatusCode;
use uuid::Uuid;

use holdfast::config::Config;

use crate::support::app::{RedisCluster, TestApp, eventually, spawn_app_with};

/// An app on a private three-node Redis cluster with a key prefix of its own, so a test can
/// stop nodes and write lock keys itself; `configure` adjusts the rest of the settings.
async fn app_on_own_redis(configure: impl FnOnce(&mut Config)) -> (RedisCluster, String, TestApp) {
    let redis = RedisCluster::start(3);
    let urls = redis.urls();
    let prefix = format!("t:{}:", Uuid::new_v4().simple());
    let app = spawn_app_with(|c| {
        c.redis.urls = urls.parse().unwrap();
        c.redis.key_prefix = prefix.clone();
        configure(c);
    })
    .await;
    (redis, prefix, app)
}

/// Runs one Redis command on every node, as another client would (e.g. a stranger's lock).
async fn run_on_every_node(redis: &RedisCluster, command: &[&str]) {
    for node in &redis.nodes {
        let client = redis::Client::open(node.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(command[0]);
        for arg in &command[1..] {
            cmd.arg(*arg);
        }
        let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_node_of_three_down_bookings_still_work() {
    let (mut redis, _, app) = app_on_own_redis(|_| {}).await;
    let event = app.create_event(1, 1, 5).await;
    redis.nodes[1].stop();

    let hold = app.hold("alice", event.id, &[event.seats[0]], "h1").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    let booking = app.confirm("alice", hold.id()).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!(app.get("/ready", None).await.status, StatusCode::OK);
    app.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_nodes_of_three_down_writes_answer_503_and_change_nothing() {
    let (mut redis, _, app) = app_on_own_redis(|c| c.redis.redlock_retry_count = 1).await;
    let event = app.create_event(1, 1, 5).await;
    redis.nodes[0].stop();
    redis.nodes[2].stop();

    let key = Uuid::new_v4().to_string();
    let refused = app.hold("alice", event.id, &[event.seats[0]], &key).await;
    refused.assert_problem(503, "LOCK_UNAVAILABLE");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from seats where hold_id is not null").await, 0);
    assert_eq!(
        app.count("select count(*) from idempotency_records where state = 'SUCCEEDED'").await,
        1,
        "only the event's"
    );
    let ready = app.get("/ready", None).await;
    ready.assert_problem(503, "NOT_READY");
    assert_eq!(ready.body["checks"]["redis"]["up"], 1);

    // The nodes come back (empty): the same key runs again, because a 503 was not stored.
    redis.nodes[0].restart();
    redis.nodes[2].restart();
    eventually("a quorum is back", std::time::Duration::from_secs(10), || async {
        app.get("/ready", None).await.status == StatusCode::OK
    })
    .await;
    let retried = app.hold("alice", event.id, &[event.seats[0]], &key).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
    assert!(retried.header("idempotent-replayed").is_none());
    app.assert_invariants().await;
}

/// A contended seat whose lock never frees answers 409 SEAT_LOCKED (retryable, not stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_locked_by_someone_else_is_409_seat_locked_and_not_stored() {
    let (redis, prefix, app) = app_on_own_redis(|c| c.redis.redlock_retry_count = 2).await;
    let event = app.create_event(1, 1, 5).await;
    let seat = event.seats[0];
    // Another holder has the seat's lock on every node.
    run_on_every_node(&redis, &["SET", &format!("{prefix}seat:{seat}"), "someone-else", "PX", "60000"]).await;
    let key = "locked-1";
    app.hold("alice", event.id, &[seat], key).await.assert_problem(409, "SEAT_LOCKED");
    assert_eq!(
        app.count("select count(*) from idempotency_records where key = 'locked-1' and state = 'FAILED'").await,
        1
    );

    run_on_every_node(&redis, &["DEL", &format!("{prefix}seat:{seat}")]).await;
    assert_eq!(app.hold("alice", event.id, &[seat], key).await.status, StatusCode::CREATED);

    // Now the seat is both held (by alice) and locked (by a stranger): bob's claim itself sees
    // the seat taken and settles SEAT_UNAVAILABLE, stored for replay, without touching the lock.
    run_on_every_node(&redis, &["SET", &format!("{prefix}seat:{seat}"), "someone-else", "PX", "60000"]).await;
    let bob = app.hold("bob", event.id, &[seat], "bob-1").await;
    bob.assert_problem(409, "SEAT_UNAVAILABLE");
    assert_eq!(bob.body["seat_ids"], serde_json::json!([seat]));
    assert_eq!(
        app.count("select count(*) from idempotency_records where key = 'bob-1' and state = 'SUCCEEDED'").await,
        1
    );
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_idempotency_outcomes_total{outcome=\"settled_at_claim\"}"), "{metrics}");
    let replay = app.hold("bob", event.id, &[seat], "bob-1").await;
    assert_eq!(replay.body, bob.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

/// The seat is free when the request claims its key, but someone takes it while the request
/// waits for the seat's (foreign-held) lock: it stops waiting and answers SEAT_UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_for_a_lock_stops_once_the_seat_is_taken() {
    let (redis, prefix, app) = app_on_own_redis(|c| {
        c.redis.redlock_retry_count = 20;
        c.redis.redlock_retry_delay_ms = 200;
    })
    .await;
    let event = app.create_event(1, 1, 2).await;
    let seat = event.seats[0];
    run_on_every_node(&redis, &["SET", &format!("{prefix}seat:{seat}"), "someone-else", "PX", "60000"]).await;
    let waiting = {
        let (client, url, token) =
            (app.client.clone(), app.url(&format!("/v1/events/{}/holds", event.id)), app.token("bob"));
        tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "bob-waits")
                .json(&serde_json::json!({ "seat_ids": [seat] }))
                .send()
                .await
                .unwrap();
            crate::support::app::read(res).await
        })
    };
    eventually("bob has claimed his key and waits for the lock", std::time::Duration::from_secs(10), || async {
        app.count("select count(*) from idempotency_records where key = 'bob-waits' and state = 'IN_PROGRESS'").await
            == 1
    })
    .await;
    // Carol's hold lands on the seat (arranged directly: the lock is not hers either).
    let mut tx = app.db.begin().await.unwrap();
    let carol: Uuid = sqlx::query_scalar(
        "insert into holds (id, event_id, user_id, status, expires_at) values (gen_random_uuid(), $1, 'carol', 'HELD', now() + interval '10 minutes') returning id",
    )
    .bind(event.id)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("update seats set hold_id = $1, hold_expires_at = now() + interval '10 minutes' where id = $2")
        .bind(carol)
        .bind(seat)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("insert into hold_seats (hold_id, seat_id) values ($1, $2)")
        .bind(carol)
        .bind(seat)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let bob = waiting.await.unwrap();
    bob.assert_problem(409, "SEAT_UNAVAILABLE");
    assert_eq!(bob.body["seat_ids"], serde_json::json!([seat]));
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_lock_acquisitions_total{outcome=\"gave_up\"}"), "{metrics}");
    app.assert_invariants().await;
}
