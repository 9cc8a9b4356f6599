//! The fault suite: real holdfast processes against real Postgres and Redis nodes, under
//! SIGSTOP, SIGKILL, Redis node loss and slowness, a Postgres crash-restart, row-lock stalls
//! and a stampede. Every scenario ends with the invariants read straight from the database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::app::{Event, RedisCluster, Res, TestDatabase, assert_invariants, count, eventually};
use crate::support::cluster::{
    Clients, Fault, FaultProxy, Fleet, Haproxy, Instance, PgCluster, prefix, run_load, shared_env, timed,
};

async fn redis_key_exists(url: &str, key: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await.map(|n| n == 1).unwrap_or(false)
}

/// An instance frozen (SIGSTOP) while it holds a seat's lock, past the lock's TTL; a second
/// instance books the seat; the first resumes and is refused by Postgres, never told 201.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_lock_holder_resumes_into_a_refusal() {
    let fleet = Fleet::start().await;
    let (redis, prefix) = (&fleet.redis, &fleet.prefix);
    let lock = [("REDLOCK_TTL_MS", "500"), ("REDLOCK_COMMIT_MARGIN_MS", "100")];
    let paused = fleet.spawn(&[lock[0], lock[1], ("HOLDFAST_FAULT_POST_LOCK_DELAY_MS", "1500")]).await;
    let other = fleet.spawn(&[lock[0], lock[1], ("REDLOCK_RETRY_COUNT", "20")]).await;
    let clients = Clients::new();
    let event = clients.create_event(&other.base, 3).await;
    let seat = event.seats[0];
    let key = format!("{prefix}seat:{seat}");

    let first = tokio::spawn({
        let (clients, base) = (clients.clone(), paused.base.clone());
        async move { clients.hold(&base, "alice", event.id, &[seat], "alice-1").await }
    });
    let node = redis.nodes[0].url();
    eventually("the first instance holds the seat's lock", Duration::from_secs(10), || redis_key_exists(&node, &key))
        .await;
    paused.pause();
    eventually("the frozen holder's lock expires", Duration::from_secs(10), || async {
        let mut any = false;
        for n in &redis.nodes {
            any |= redis_key_exists(&n.url(), &key).await;
        }
        !any
    })
    .await;

    let second = clients.hold(&other.base, "bob", event.id, &[seat], "bob-1").await.unwrap();
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    paused.resume();
    let first = first.await.unwrap().expect("the resumed instance answers");
    assert!(
        first.status == StatusCode::CONFLICT || first.status == StatusCode::SERVICE_UNAVAILABLE,
        "the resumed holder hears 409 or 503, never 201: {first:?}"
    );
    let db = fleet.db().await;
    assert_eq!(count(&db, "select count(*) from seats where hold_id is not null").await, 1);
    assert_eq!(count(&db, "select count(*) from holds where status = 'HELD'").await, 1);
    assert_invariants(&db).await;
}

/// An instance is SIGKILLed with requests in flight (before and inside their transactions);
/// clients retry with the same keys on another instance: one effect each, and a stable answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_cut_off_by_a_crash_complete_once_when_retried_elsewhere() {
    for fault in ["HOLDFAST_FAULT_POST_LOCK_DELAY_MS", "HOLDFAST_FAULT_PRE_COMMIT_DELAY_MS"] {
        let fleet = Fleet::start().await;
        let quick =
            [("IDEMPOTENCY_LEASE_SECONDS", "2"), ("REDLOCK_TTL_MS", "1000"), ("REDLOCK_COMMIT_MARGIN_MS", "200")];
        let mut doomed = fleet.spawn(&[quick[0], quick[1], quick[2], (fault, "3000")]).await;
        let survivor = fleet.spawn(&quick).await;
        let clients = Clients::new();
        let event = clients.create_event(&survivor.base, 10).await;
        let db = fleet.db().await;

        let in_flight: Vec<_> = (0..10)
            .map(|i| {
                let (clients, base, seat) = (clients.clone(), doomed.base.clone(), event.seats[i]);
                tokio::spawn(
                    async move { clients.hold(&base, "alice", event.id, &[seat], &format!("crash-{i}")).await },
                )
            })
            .collect();
        // In flight: each has taken its seat's lock and sits in the fault's delay, after the lock
        // or inside its transaction. (A new key whose lock is free is not claimed IN_PROGRESS
        // first: its record is written with its effect, so there is no record to wait for.)
        let scrape = format!("{}/metrics", doomed.base);
        eventually("all ten hold their locks and are in flight", Duration::from_secs(10), || async {
            let text = clients.http.get(&scrape).send().await.unwrap().text().await.unwrap();
            text.lines().any(|l| l == "holdfast_lock_acquisitions_total{outcome=\"acquired\"} 10")
        })
        .await;
        assert_eq!(count(&db, "select count(*) from holds").await, 0, "{fault}: nothing committed yet");
        doomed.kill();
        for request in in_flight {
            assert!(request.await.unwrap().is_err(), "{fault}: a killed instance cannot have answered");
        }

        // Retry each key on the survivor until it settles (in-flight leases and dead locks lapse).
        let mut answers = HashMap::new();
        for i in 0..10 {
            let key = format!("crash-{i}");
            let deadline = Instant::now() + Duration::from_secs(20);
            let answer = loop {
                let res = clients.hold(&survivor.base, "alice", event.id, &[event.seats[i]], &key).await.unwrap();
                if res.status == StatusCode::CREATED {
                    break res;
                }
                assert!(["IDEMPOTENCY_IN_PROGRESS", "SEAT_LOCKED"].contains(&res.code()), "{fault}: {res:?}");
                assert!(Instant::now() < deadline, "{fault}: {key} did not settle: {res:?}");
                tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
            };
            answers.insert(key, answer);
        }
        for (key, answer) in &answers {
            let again = clients
                .hold(&survivor.base, "alice", event.id, &[event.seats[key[6..].parse::<usize>().unwrap()]], key)
                .await
                .unwrap();
            assert_eq!(again.body, answer.body, "{fault}: the same answer every time");
            assert_eq!(again.header("idempotent-replayed"), Some("true"));
        }
        assert_eq!(count(&db, "select count(*) from holds").await, 10, "{fault}: exactly one effect per request");
        assert_eq!(count(&db, "select count(*) from seats where hold_id is not null").await, 10);
        assert_invariants(&db).await;
    }
}

/// The same key sent to three instances at the same moment executes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_to_three_instances_at_once_executes_once() {
    let fleet = Fleet::start().await;
    let instances = fleet.spawn_many(3, &[]).await;
    let clients = Clients::new();
    let event = clients.create_event(&instances[0].base, 20).await;
    let db = fleet.db().await;

    for round in 0..10 {
        let seats = vec![event.seats[2 * round], event.seats[2 * round + 1]];
        let key = format!("race-{round}");
        let responses = futures_util::future::join_all(instances.iter().flat_map(|instance| {
            let (clients, seats, key) = (&clients, seats.clone(), key.clone());
            (0..3).map(move |_| {
                let (seats, key) = (seats.clone(), key.clone());
                async move { clients.hold(&instance.base, "alice", event.id, &seats, &key).await.unwrap() }
            })
        }))
        .await;
        let created: Vec<&Res> = responses.iter().filter(|r| r.status == StatusCode::CREATED).collect();
        assert!(!created.is_empty(), "round {round}: {responses:?}");
        assert!(created.iter().all(|r| r.body == created[0].body), "round {round}: identical answers");
        for r in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
            r.assert_problem(409, "IDEMPOTENCY_IN_PROGRESS");
        }
    }
    assert_eq!(count(&db, "select count(*) from holds").await, 10, "one execution per key");
    assert_invariants(&db).await;
}

/// Hold traffic with contention (40 clients' worth on 30 seats) from `workers` concurrent
/// clients; returns every answer or transport error.
async fn hold_traffic(
    clients: &Clients,
    bases: &[String],
    event: &Event,
    requests: usize,
    workers: usize,
) -> Vec<Result<Res, String>> {
    let (clients, bases, event_id, seats) = (clients.clone(), bases.to_vec(), event.id, event.seats.clone());
    let batch = Uuid::new_v4().simple().to_string();
    run_load(requests, workers, move |i| {
        let (clients, base, seat) = (clients.clone(), bases[i % bases.len()].clone(), seats[(i * 7) % seats.len()]);
        let key = format!("load-{batch}-{i}");
        async move {
            clients.hold(&base, &format!("user-{}", i % 40), event_id, &[seat], &key).await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// The answers allowed under a fault: success, a business refusal, or a retryable refusal.
/// Never a 500, never a hang.
fn assert_only_expected(answers: &[Result<Res, String>], allowed_5xx: &[&str]) {
    for answer in answers {
        let res = answer.as_ref().unwrap_or_else(|e| panic!("no answer: {e}"));
        match res.status.as_u16() {
            201 => {}
            409 => assert!(["SEAT_UNAVAILABLE", "SEAT_LOCKED"].contains(&res.code()), "{res:?}"),
            503 | 504 => assert!(allowed_5xx.contains(&res.code()), "{res:?}"),
            _ => panic!("unexpected answer {res:?}"),
        }
    }
}

/// What clients were told is true: every 201 hold exists, held, on its seat.
async fn assert_told_truth(db: &PgPool, answers: &[Result<Res, String>]) {
    for res in answers.iter().flatten().filter(|r| r.status == StatusCode::CREATED) {
        let exists: i64 =
            sqlx::query_scalar("select count(*) from holds where id = $1").bind(res.id()).fetch_one(db).await.unwrap();
        assert_eq!(exists, 1, "a 201 hold is missing: {res:?}");
    }
}

/// A Redis node stops mid-load and comes back empty (it had no persistence); another does the
/// same later. Holds keep working on the quorum; nothing is sold twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_nodes_lost_and_restarted_empty_under_load_never_double_sell() {
    let mut fleet = Fleet::start().await;
    let a = fleet.spawn(&[("REDIS_TIMEOUT_MS", "100")]).await;
    let b = fleet.spawn(&[("REDIS_TIMEOUT_MS", "100")]).await;
    let clients = Clients::new();
    let event = clients.create_event(&a.base, 30).await;
    let bases = [a.base.clone(), b.base.clone()];
    let db = fleet.db().await;
    let redis = &mut fleet.redis;

    let mut answers = hold_traffic(&clients, &bases, &event, 150, 8).await;
    redis.nodes[0].stop();
    answers.extend(hold_traffic(&clients, &bases, &event, 150, 8).await);
    redis.nodes[0].restart(); // empty: it forgot every lock it had
    answers.extend(hold_traffic(&clients, &bases, &event, 150, 8).await);
    redis.nodes[1].stop();
    answers.extend(hold_traffic(&clients, &bases, &event, 150, 8).await);
    redis.nodes[1].restart();
    answers.extend(hold_traffic(&clients, &bases, &event, 150, 8).await);

    assert_only_expected(&answers, &["LOCK_UNAVAILABLE"]);
    let created = answers.iter().flatten().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(created as i64, count(&db, "select count(*) from holds").await);
    assert_eq!(created, 30, "each seat held exactly once (holds last 10 minutes): {created}");
    assert_told_truth(&db, &answers).await;
    assert_invariants(&db).await;
}

/// One Redis node becomes slow (200 ms a round trip), then a blackhole; later two nodes are
/// blackholed. Every answer comes back within a bound set by the per-node timeout, never a
/// hang; with one node sick writes succeed, with two they answer 503 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_blackholed_redis_nodes_cannot_hang_a_request() {
    let redis = RedisCluster::start(3);
    let proxies = [FaultProxy::start(redis.nodes[1].port).await, FaultProxy::start(redis.nodes[2].port).await];
    let urls = format!("{},{},{}", redis.nodes[0].url(), proxies[0].url(), proxies[1].url());
    let database = TestDatabase::create().await;
    let env = shared_env(&database.url, &urls, &prefix());
    // 100 ms per node call, 1 retry: the worst acquisition is about 2 × 100 ms + the retry delay.
    let instance = Instance::spawn(&env, &[("REDIS_TIMEOUT_MS", "100"), ("REDLOCK_RETRY_COUNT", "1")]).await;
    let clients = Clients::new();
    let event = clients.create_event(&instance.base, 40).await;
    let db = PgPool::connect(&database.url).await.unwrap();
    let bound = Duration::from_secs(2); // ten times the lock path's own worst case

    let mut seat = 0;
    for fault in [Fault::Latency(Duration::from_millis(200)), Fault::Blackhole] {
        proxies[0].set(fault);
        for _ in 0..5 {
            let (res, took) =
                timed(clients.hold(&instance.base, "alice", event.id, &[event.seats[seat]], &format!("k-{seat}")))
                    .await;
            let res = res.unwrap();
            assert_eq!(res.status, StatusCode::CREATED, "{fault:?}: {res:?}");
            assert!(took < bound, "{fault:?}: took {took:?}");
            seat += 1;
        }
    }
    proxies[1].set(Fault::Blackhole);
    for _ in 0..5 {
        let (res, took) =
            timed(clients.hold(&instance.base, "alice", event.id, &[event.seats[seat]], &format!("k-{seat}"))).await;
        res.unwrap().assert_problem(503, "LOCK_UNAVAILABLE");
        assert!(took < bound, "two sick nodes: took {took:?}");
        seat += 1;
    }
    let (ready, took) = timed(clients.send(&instance.base, Method::GET, "/ready", "x", None, None)).await;
    ready.unwrap().assert_problem(503, "NOT_READY");
    assert!(took < bound, "/ready took {took:?}");

    proxies[0].set(Fault::None);
    proxies[1].set(Fault::None);
    eventually("the quorum recovers", Duration::from_secs(10), || async {
        clients.ready(&instance.base).await == Some(StatusCode::OK)
    })
    .await;
    let res = clients.hold(&instance.base, "alice", event.id, &[event.seats[seat]], "after").await.unwrap();
    assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    assert_eq!(count(&db, "select count(*) from holds").await, 11);
    assert_invariants(&db).await;
}

/// Postgres crashes (immediate stop) under load and comes back: in-flight requests get 503
/// problem+json, nothing is half-written, /ready goes 503 then 200, and the pool recovers
/// without restarting holdfast.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_crash_restart_under_load_is_survived_without_a_restart() {
    let redis = RedisCluster::start(3);
    let pg = PgCluster::start();
    let env = shared_env(&pg.url(), &redis.urls(), &prefix());
    let instance =
        Instance::spawn(&env, &[("DATABASE_ACQUIRE_TIMEOUT_MS", "500"), ("IDEMPOTENCY_LEASE_SECONDS", "1")]).await;
    let clients = Clients::new();
    let event = clients.create_event(&instance.base, 30).await;
    let bases = [instance.base.clone()];

    let load = {
        let (clients, event) = (clients.clone(), Event { id: event.id, seats: event.seats.clone() });
        tokio::spawn(async move { hold_traffic(&clients, &bases, &event, 400, 6).await })
    };
    let db_url = pg.url();
    eventually("load is running", Duration::from_secs(10), || async {
        match PgPool::connect(&db_url).await {
            Ok(db) => count(&db, "select count(*) from holds").await >= 10,
            Err(_) => false,
        }
    })
    .await;
    pg.stop_immediate();
    eventually("/ready reports the outage", Duration::from_secs(10), || async {
        clients.ready(&instance.base).await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let during = clients.hold(&instance.base, "alice", event.id, &[event.seats[0]], "during-outage").await.unwrap();
    assert!([503, 504].contains(&during.status.as_u16()), "{during:?}");
    assert_eq!(during.header("content-type"), Some("application/problem+json"));
    pg.start_server();
    eventually("/ready recovers without restarting holdfast", Duration::from_secs(30), || async {
        clients.ready(&instance.base).await == Some(StatusCode::OK)
    })
    .await;

    let answers = load.await.unwrap();
    assert_only_expected(&answers, &["DATABASE_UNAVAILABLE", "TIMEOUT", "LOCK_UNAVAILABLE"]);
    let db = PgPool::connect(&pg.url()).await.unwrap();
    assert_told_truth(&db, &answers).await;
    // Nothing half-written: every hold row has its seats, and every seat's hold exists.
    assert_eq!(
        count(
            &db,
            "select count(*) from holds h where not exists (select 1 from hold_seats hs where hs.hold_id = h.id)"
        )
        .await,
        0
    );
    eventually("stale in-flight records are recovered", Duration::from_secs(15), || async {
        count(&db, "select count(*) from idempotency_records where state = 'IN_PROGRESS' and lease_until < now()").await
            == 0
    })
    .await;
    let after = clients.hold(&instance.base, "carol", event.id, &[event.seats[29]], "after-restart").await.unwrap();
    assert!([201, 409].contains(&after.status.as_u16()), "{after:?}");
    assert_invariants(&db).await;
}

/// A competing session sits on the seat rows: requests answer within their bounds with a
/// clear 504 (lock_timeout), write nothing, and succeed once the rows are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_database_answers_within_bounds_and_writes_nothing() {
    let fleet = Fleet::start().await;
    let instance = fleet.spawn(&[("DATABASE_LOCK_TIMEOUT_MS", "300"), ("REQUEST_TIMEOUT_MS", "3000")]).await;
    let clients = Clients::new();
    let event = clients.create_event(&instance.base, 5).await;
    let db = fleet.db().await;

    let mut blocker = db.begin().await.unwrap();
    sqlx::query("select id from seats where event_id = $1 for update")
        .bind(event.id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    for i in 0..3 {
        let (res, took) =
            timed(clients.hold(&instance.base, "alice", event.id, &[event.seats[i]], &format!("stall-{i}"))).await;
        let res = res.unwrap();
        res.assert_problem(504, "TIMEOUT");
        assert!(took < Duration::from_secs(3), "answered within the request timeout: {took:?}");
    }
    assert_eq!(count(&db, "select count(*) from holds").await, 0);
    blocker.rollback().await.unwrap();
    let res = clients.hold(&instance.base, "alice", event.id, &[event.seats[0]], "stall-0").await.unwrap();
    assert_eq!(res.status, StatusCode::CREATED, "the same key runs again: {res:?}");
    assert_invariants(&db).await;
}

/// A thousand clients on one seat across three instances: exactly one hold; everyone else
/// hears 409 (SEAT_UNAVAILABLE or SEAT_LOCKED), and nobody waits long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_of_a_thousand_on_one_seat_across_three_instances_has_one_winner() {
    let fleet = Fleet::start().await;
    let instances = fleet.spawn_many(3, &[]).await;
    let clients = Clients::new();
    let event = clients.create_event(&instances[0].base, 2).await;
    let seat = event.seats[0];

    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let answers =
        run_load(1000, 1000, {
            let clients = clients.clone();
            move |i| {
                let (clients, base) = (clients.clone(), bases[i % 3].clone());
                async move {
                    timed(clients.hold(&base, &format!("fan-{i}"), event.id, &[seat], &format!("stampede-{i}"))).await
                }
            }
        })
        .await;
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
    latencies.sort();
    let statuses: Vec<u16> =
        answers.iter().map(|(res, _)| res.as_ref().expect("every client is answered").status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "exactly one winner");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 999, "everyone else hears 409");
    eprintln!(
        "stampede latency: p50 {:?}, p99 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1]
    );
    let db = fleet.db().await;
    assert_eq!(count(&db, "select count(*) from holds").await, 1);
    assert_invariants(&db).await;
}

/// Three instances behind HAProxy checking /ready; one is SIGKILLed under load. The balancer
/// drops it, traffic continues on the survivors, clients that were cut off retry with their
/// keys and settle once, and hold expiry keeps running without the dead instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_behind_haproxy_survives_losing_an_instance() {
    let fleet = Fleet::start().await;
    let quick = [("IDEMPOTENCY_LEASE_SECONDS", "2"), ("REDLOCK_TTL_MS", "1000"), ("REDLOCK_COMMIT_MARGIN_MS", "200")];
    let mut instances = fleet.spawn_many(3, &quick).await;
    let lb = Haproxy::start(&instances.iter().map(|i| i.port).collect::<Vec<_>>()).await;
    let clients = Clients::new();
    let event = clients.create_event(&lb.base, 60).await;
    let db = fleet.db().await;

    let load = {
        let (clients, base, event) =
            (clients.clone(), lb.base.clone(), Event { id: event.id, seats: event.seats.clone() });
        tokio::spawn(async move {
            run_load(300, 6, move |i| {
                let (clients, base, seat) = (clients.clone(), base.clone(), event.seats[i % 60]);
                async move {
                    let key = format!("lb-{i}");
                    // A client that is cut off (502/503 from the balancer, or a reset) retries its key.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let settled = |res: &Res| {
                            (res.status.is_client_error() || res.status == StatusCode::CREATED)
                                && !["IDEMPOTENCY_IN_PROGRESS", "SEAT_LOCKED"].contains(&res.code())
                        };
                        match clients.hold(&base, &format!("user-{i}"), event.id, &[seat], &key).await {
                            Ok(res) if settled(&res) => return (key, res),
                            _ => {}
                        }
                        assert!(Instant::now() < deadline, "{key} never settled");
                        tokio::time::sleep(Duration::from_millis(100)).await; // client back-off
                    }
                }
            })
            .await
        })
    };
    eventually("load is flowing", Duration::from_secs(20), || async {
        count(&db, "select count(*) from holds").await >= 20
    })
    .await;
    instances[1].kill();
    let answers = load.await.unwrap();

    assert_eq!(answers.len(), 300);
    let created: HashMap<String, Res> = answers.into_iter().filter(|(_, r)| r.status == StatusCode::CREATED).collect();
    assert_eq!(created.len(), 60, "each of the 60 seats held once");
    assert_eq!(count(&db, "select count(*) from holds").await, 60, "one effect per settled request");

    // The balancer has dropped the dead instance: a run of requests all succeed.
    for i in 0..30 {
        let res =
            clients.send(&lb.base, Method::GET, &format!("/v1/events/{}", event.id), "x", None, None).await.unwrap();
        assert_eq!(res.status, StatusCode::OK, "request {i} after the kill: {res:?}");
    }
    // Background work does not depend on the dead instance: a short hold still expires.
    let extra = clients.create_event(&lb.base, 1).await;
    let short = clients
        .send(
            &lb.base,
            Method::POST,
            &format!("/v1/events/{}/holds", extra.id),
            "dora",
            Some("short"),
            Some(&json!({ "seat_ids": [extra.seats[0]], "ttl_seconds": 1 })),
        )
        .await
        .unwrap();
    assert_eq!(short.status, StatusCode::CREATED, "{short:?}");
    let short_id = short.id();
    eventually("a survivor's sweeper expires the hold", Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, String>("select status from holds where id = $1")
            .bind(short_id)
            .fetch_one(&db)
            .await
            .unwrap()
            == "EXPIRED"
    })
    .await;
    assert_invariants(&db).await;
}

/// Rooms per night and time slots under the same faults: an instance SIGKILLed with requests in
/// flight, and a Redis node lost and restarted empty. Cut-off or retryable requests are retried
/// with the same key on the survivor until they settle. No night over capacity, no slot booked
/// twice, one effect per key, and every 201 true.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_and_slots_survive_a_crash_and_redis_loss_without_overselling() {
    let mut fleet = Fleet::start().await;
    let settings = [
        ("REDIS_TIMEOUT_MS", "100"),
        ("IDEMPOTENCY_LEASE_SECONDS", "2"),
        ("REDLOCK_TTL_MS", "1000"),
        ("REDLOCK_COMMIT_MARGIN_MS", "200"),
    ];
    let mut doomed = fleet.spawn(&settings).await;
    let survivor = fleet.spawn(&settings).await;
    let clients = Clients::new();
    let admin = |path: &'static str, body: serde_json::Value| {
        let (clients, base) = (clients.clone(), survivor.base.clone());
        async move {
            let key = Uuid::new_v4().to_string();
            let res = clients.send(&base, Method::POST, path, "admin", Some(&key), Some(&body)).await.unwrap();
            assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
            res.id()
        }
    };
    let inventory =
        admin("/v1/inventories", json!({ "name": "Twin", "from": "2027-05-01", "to": "2027-05-04", "capacity": 8 }))
            .await;
    let resource = admin(
        "/v1/resources",
        json!({ "name": "Court", "time_zone": "UTC", "opening_hours": crate::slots::all_week("00:00", "24:00"),
                "slot_granularity_minutes": 30 }),
    )
    .await;
    // 48 room holds for 8 units, and 5 groups of 4 slot holds that all overlap within a group.
    let base_time = crate::slots::future_hour(4);
    let mut requests: Vec<(String, serde_json::Value)> = (0..48)
        .map(|_| {
            let body = json!({ "check_in": "2027-05-01", "check_out": "2027-05-04", "quantity": 1 });
            (format!("/v1/inventories/{inventory}/holds"), body)
        })
        .collect();
    for group in 0..5 {
        for offset in [0, 30, 0, 30] {
            let start = base_time + chrono::Duration::minutes(group * 180 + offset);
            let body = json!({ "start": start, "end": start + chrono::Duration::minutes(60) });
            requests.push((format!("/v1/resources/{resource}/holds"), body));
        }
    }
    let requests = std::sync::Arc::new(requests);
    let db = fleet.db().await;

    let send_range = |range: std::ops::Range<usize>, bases: Vec<String>| {
        let (clients, requests) = (clients.clone(), requests.clone());
        let start = range.start;
        run_load(range.len(), 6, move |i| {
            let i = start + i;
            let (clients, requests, base) = (clients.clone(), requests.clone(), bases[i % bases.len()].clone());
            async move {
                let (path, body) = &requests[i];
                let (user, key) = (format!("guest-{i}"), format!("k-{i}"));
                let answer = clients.send(&base, Method::POST, path, &user, Some(&key), Some(body)).await;
                (i, answer.map_err(|e| e.to_string()))
            }
        })
    };
    let both = vec![doomed.base.clone(), survivor.base.clone()];
    let mut answers = send_range(0..22, both.clone()).await;
    fleet.redis.nodes[0].stop();
    let in_flight = tokio::spawn(send_range(22..46, both));
    eventually("the second wave is under way", Duration::from_secs(10), || async {
        count(&db, "select count(*) from idempotency_records").await >= 30
    })
    .await;
    doomed.kill();
    answers.extend(in_flight.await.unwrap());
    fleet.redis.nodes[0].restart(); // empty: it forgot every lock it had
    answers.extend(send_range(46..requests.len(), vec![survivor.base.clone()]).await);

    // Settle every request: retry the cut-off and the retryable ones with the same key.
    let mut settled = HashMap::new();
    for (i, answer) in answers {
        let mut answer = answer;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(res) = &answer {
                match (res.status.as_u16(), res.code()) {
                    (201, _) | (409, "INSUFFICIENT_INVENTORY" | "SLOT_UNAVAILABLE") => break,
                    (409, "SEAT_LOCKED" | "IDEMPOTENCY_IN_PROGRESS") | (503, "LOCK_UNAVAILABLE") => {}
                    _ => panic!("request {i}: unexpected answer {res:?}"),
                }
            }
            assert!(Instant::now() < deadline, "request {i} did not settle: {answer:?}");
            tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
            let (path, body) = &requests[i];
            answer = clients
                .send(&survivor.base, Method::POST, path, &format!("guest-{i}"), Some(&format!("k-{i}")), Some(body))
                .await
                .map_err(|e| e.to_string());
        }
        settled.insert(i, answer.unwrap());
    }

    let won = |from: usize, to: usize| (from..to).filter(|i| settled[i].status == StatusCode::CREATED).count();
    assert_eq!(won(0, 48), 8, "exactly the capacity is held");
    assert_eq!(won(48, 68), 5, "one slot per group of overlapping requests");
    assert_eq!(count(&db, "select count(*) from holds where inventory_id is not null").await, 8, "one effect per key");
    assert_eq!(count(&db, "select count(*) from holds where resource_id is not null").await, 5);
    assert_eq!(count(&db, "select count(*) from inventory_nights where held = 8").await, 3);
    for res in settled.values().filter(|r| r.status == StatusCode::CREATED) {
        let exists: i64 = sqlx::query_scalar("select count(*) from holds where id = $1 and status = 'HELD'")
            .bind(res.id())
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(exists, 1, "a 201 is true: {res:?}");
    }
    assert_invariants(&db).await;
}
