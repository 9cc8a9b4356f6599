//! The waiting room (issue 13, part 2): a fair order (early joiners drawn at random at on-sale,
//! later ones in arrival order), admissions paced across instances without a leader and within
//! `max_active_shoppers`, and no seat held without a live admission.

use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{Res, TestApp, eventually, read, seat_ids, spawn_app_with};
use crate::support::cluster::{Clients, Fleet, run_load};

/// An event of `seats` seats with a waiting room, on sale at `on_sale_at` (None: now).
fn event_body(seats: u32, on_sale_at: Option<DateTime<Utc>>, queue: Value) -> Value {
    let mut body = json!({
        "name": "On-sale", "starts_at": "2030-06-01T19:30:00Z", "queue": queue,
        "layout": { "sections": 1, "rows": 1, "seats_per_row": seats, "price_cents": 100 },
    });
    if let Some(at) = on_sale_at {
        body["on_sale_at"] = json!(at.to_rfc3339());
    }
    body
}

async fn create(app: &TestApp, body: &Value) -> (Uuid, Vec<Uuid>) {
    let created = app.send(Method::POST, "/v1/events", Some(&app.admin_token()), Some(&new_key()), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let id = created.id();
    let seats = seat_ids(&app.get(&format!("/v1/events/{id}/seats"), None).await.body);
    (id, seats)
}

fn new_key() -> String {
    Uuid::new_v4().to_string()
}

async fn join(app: &TestApp, user: &str, event: Uuid) -> Res {
    app.send(Method::POST, &format!("/v1/events/{event}/queue"), Some(&app.token(user)), Some(&new_key()), None).await
}

async fn ticket(app: &TestApp, user: &str, ticket: &str) -> Res {
    app.get(&format!("/v1/queue/{ticket}"), Some(user)).await
}

/// A hold (or a direct booking) sent with an `Admission-Token` header.
async fn claim(app: &TestApp, user: &str, path: &str, seats: &[Uuid], admission: Option<&str>) -> Res {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(app.token(user))
        .header("idempotency-key", new_key())
        .json(&json!({ "seat_ids": seats }));
    if let Some(token) = admission {
        request = request.header("admission-token", token);
    }
    read(request.send().await.unwrap()).await
}

/// Polls the ticket until `ready` holds; answers its last state.
async fn ticket_until(app: &TestApp, user: &str, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = ticket(app, user, id).await;
        assert_eq!(got.status, StatusCode::OK, "{got:?}");
        if ready(&got.body) {
            return got.body;
        }
        assert!(Instant::now() < deadline, "{what}: the ticket stayed {:?}", got.body);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Spearman's rank correlation of two samples without ties.
fn spearman(x: &[f64], y: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        for (rank, &i) in order.iter().enumerate() {
            r[i] = rank as f64;
        }
        r
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

#[tokio::test]
async fn early_joiners_are_drawn_at_random_and_later_ones_keep_their_arrival_order() {
    let app = spawn_app_with(|c| c.jobs.queue_pace_interval_ms = 50).await;
    let app = std::sync::Arc::new(app);
    // admit_per_minute 0: nobody is admitted, so positions stay put while we read them.
    let (event, _) =
        create(&app, &event_body(10, Some(Utc::now() + Span::hours(1)), json!({ "admit_per_minute": 0 }))).await;

    const EARLY: usize = 2000;
    let joined = {
        let app = app.clone();
        run_load(EARLY, 32, move |i| {
            let app = app.clone();
            async move {
                let res = join(&app, &format!("early-{i}"), event).await;
                assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
                (i, res.body)
            }
        })
        .await
    };
    // Before the draw there is no order to tell.
    for (_, body) in joined.iter().take(20) {
        assert_eq!(body["status"], "waiting", "{body}");
        assert!(body["position"].is_null(), "no position before the draw: {body}");
        assert!(body["estimated_wait_seconds"].as_i64().unwrap() > 3000, "{body}");
    }
    // Joining again (another key) answers the same ticket.
    let again = join(&app, "early-7", event).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    let first = joined.iter().find(|(i, _)| *i == 7).unwrap();
    assert_eq!(again.body["ticket_id"], first.1["ticket_id"]);

    // On sale now: the next pacing round draws.
    let opened = app
        .send(
            Method::PATCH,
            &format!("/v1/events/{event}"),
            Some(&app.admin_token()),
            None,
            Some(&json!({ "on_sale_at": Utc::now().to_rfc3339() })),
        )
        .await;
    assert_eq!(opened.status, StatusCode::OK, "{opened:?}");
    assert_eq!(opened.body["queue"]["enabled"], true, "{opened:?}");
    let (probe_user, probe) = (format!("early-{}", joined[0].0), joined[0].1["ticket_id"].as_str().unwrap().to_owned());
    ticket_until(&app, &probe_user, &probe, "the draw", |t| t["position"].is_i64()).await;

    let positions = {
        let (app, joined) = (app.clone(), std::sync::Arc::new(joined));
        run_load(EARLY, 32, move |k| {
            let (app, joined) = (app.clone(), joined.clone());
            async move {
                let (i, body) = &joined[k];
                let got = ticket(&app, &format!("early-{i}"), body["ticket_id"].as_str().unwrap()).await;
                assert_eq!(got.status, StatusCode::OK, "{got:?}");
                assert!(got.header("retry-after").is_some(), "{got:?}");
                let joined_at: DateTime<Utc> = body["joined_at"].as_str().unwrap().parse().unwrap();
                (joined_at, got.body["position"].as_i64().expect("a position after the draw"))
            }
        })
        .await
    };
    let mut seen: Vec<i64> = positions.iter().map(|(_, p)| *p).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=EARLY as i64).collect::<Vec<_>>(), "every early joiner has one place");
    // Join time (ties broken by the place, which only makes a correlation more likely).
    let x: Vec<f64> = positions.iter().map(|(at, p)| at.timestamp_micros() as f64 + *p as f64 * 1e-6).collect();
    let y: Vec<f64> = positions.iter().map(|(_, p)| *p as f64).collect();
    let rho = spearman(&x, &y);
    assert!(rho.abs() < 0.1, "join time and place are correlated: Spearman rho = {rho:.3}");

    // Later arrivals follow, in the order they came.
    let mut last = EARLY as i64;
    for i in 0..30 {
        let res = join(&app, &format!("late-{i}"), event).await;
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
        let position = res.body["position"].as_i64().expect("a late joiner has a place at once");
        assert_eq!(position, last + 1, "late joiner {i}: {res:?}");
        last = position;
    }
}

#[tokio::test]
async fn no_seat_without_a_live_admission_and_an_ended_admission_lets_the_next_in() {
    let app = spawn_app_with(|c| c.jobs.queue_pace_interval_ms = 50).await;
    let queue = json!({ "admit_per_minute": 60000, "max_active_shoppers": 1, "admission_ttl_seconds": 3 });
    let (event, seats) = create(&app, &event_body(10, None, queue)).await;
    let (other, other_seats) = create(&app, &event_body(4, None, json!({ "admit_per_minute": 60000 }))).await;
    let holds = format!("/v1/events/{event}/holds");
    let bookings = format!("/v1/events/{event}/bookings");

    claim(&app, "alice", &holds, &seats[..1], None).await.assert_problem(403, "NOT_ADMITTED");
    claim(&app, "alice", &bookings, &seats[..1], None).await.assert_problem(403, "NOT_ADMITTED");
    assert_eq!(app.count("select count(*) from holds").await, 0, "nothing was written");

    let alice = join(&app, "alice", event).await;
    assert_eq!(alice.status, StatusCode::CREATED, "{alice:?}");
    let alice_id = alice.body["ticket_id"].as_str().unwrap().to_owned();
    let admitted = ticket_until(&app, "alice", &alice_id, "alice's admission", |t| t["status"] == "admitted").await;
    let alice_token = admitted["admission_token"].as_str().unwrap().to_owned();
    assert!(admitted["admission_expires_at"].is_string(), "{admitted}");
    // One active shopper at most: bob waits while alice's admission lasts.
    let bob = join(&app, "bob", event).await;
    let bob_id = bob.body["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(bob.body["status"], "waiting", "{bob:?}");
    // Others' tickets are not there for you.
    ticket(&app, "bob", &alice_id).await.assert_problem(404, "NOT_FOUND");

    // The token is alice's, for this event, as it was issued.
    claim(&app, "bob", &holds, &seats[..1], Some(&alice_token)).await.assert_problem(403, "NOT_ADMITTED");
    let other_path = format!("/v1/events/{other}/holds");
    claim(&app, "alice", &other_path, &other_seats[..1], Some(&alice_token)).await.assert_problem(403, "NOT_ADMITTED");
    let mut forged = alice_token.clone();
    forged.push('A');
    claim(&app, "alice", &holds, &seats[..1], Some(&forged)).await.assert_problem(403, "NOT_ADMITTED");
    claim(&app, "alice", &holds, &seats[..1], Some("v1.x.y")).await.assert_problem(403, "NOT_ADMITTED");
    let held = claim(&app, "alice", &holds, &seats[..1], Some(&alice_token)).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    // Admins need no admission.
    let admin = app
        .send(
            Method::POST,
            &holds,
            Some(&app.admin_token()),
            Some(&new_key()),
            Some(&json!({ "seat_ids": [seats[1]] })),
        )
        .await;
    assert_eq!(admin.status, StatusCode::CREATED, "{admin:?}");

    // Alice's admission runs out: her token no longer works, and bob is let in.
    let bob_admitted = ticket_until(&app, "bob", &bob_id, "bob's admission", |t| t["status"] == "admitted").await;
    let ended = ticket(&app, "alice", &alice_id).await;
    assert_eq!((ended.body["status"].as_str(), ended.body["ended"].as_str()), (Some("expired"), Some("expired")));
    claim(&app, "alice", &holds, &seats[2..3], Some(&alice_token)).await.assert_problem(403, "NOT_ADMITTED");

    // Bob buys: his booking ends his admission at once (his token, still unexpired, no longer
    // holds seats) and carol, next in line, is admitted before bob's admission would have run out.
    let bob_token = bob_admitted["admission_token"].as_str().unwrap().to_owned();
    let carol = join(&app, "carol", event).await;
    let carol_id = carol.body["ticket_id"].as_str().unwrap().to_owned();
    let bob_hold = claim(&app, "bob", &holds, &seats[3..4], Some(&bob_token)).await;
    assert_eq!(bob_hold.status, StatusCode::CREATED, "{bob_hold:?}");
    let booked = app.confirm("bob", bob_hold.id()).await;
    assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
    let bob_after = ticket_until(&app, "bob", &bob_id, "bob's booking", |t| t["ended"] == "booked").await;
    assert_eq!(bob_after["status"], "expired", "{bob_after}");
    claim(&app, "bob", &holds, &seats[4..5], Some(&bob_token)).await.assert_problem(403, "NOT_ADMITTED");
    let carol_admitted =
        ticket_until(&app, "carol", &carol_id, "carol's admission", |t| t["status"] == "admitted").await;
    let carol_token = carol_admitted["admission_token"].as_str().unwrap();
    // A direct booking with a live admission goes through too.
    let direct = claim(&app, "carol", &bookings, &seats[5..6], Some(carol_token)).await;
    assert_eq!(direct.status, StatusCode::CREATED, "{direct:?}");

    // Leaving ends a ticket for good: joining again answers it, ended.
    let dave = join(&app, "dave", event).await;
    let dave_id = dave.body["ticket_id"].as_str().unwrap().to_owned();
    let left = app.send(Method::DELETE, &format!("/v1/queue/{dave_id}"), Some(&app.token("dave")), None, None).await;
    assert_eq!(left.status, StatusCode::NO_CONTENT, "{left:?}");
    let rejoined = join(&app, "dave", event).await;
    assert_eq!(rejoined.status, StatusCode::OK, "{rejoined:?}");
    assert_eq!((rejoined.body["ticket_id"].as_str(), rejoined.body["ended"].as_str()), (Some(&*dave_id), Some("left")));

    // Settings are an object (serde alone would read a struct from an array of its fields).
    let mut bad = event_body(2, None, json!([true, 10]));
    let admin = app.admin_token();
    let refused = app.send(Method::POST, "/v1/events", Some(&admin), Some(&new_key()), Some(&bad)).await;
    refused.assert_problem(422, "VALIDATION_FAILED");
    bad["queue"] = json!({ "admit_per_minute": -1 });
    let refused = app.send(Method::POST, "/v1/events", Some(&admin), Some(&new_key()), Some(&bad)).await;
    refused.assert_problem(422, "VALIDATION_FAILED");
    let path = format!("/v1/events/{event}");
    let refused = app.send(Method::PATCH, &path, Some(&admin), None, Some(&json!({ "queue": [null, null] }))).await;
    refused.assert_problem(422, "VALIDATION_FAILED");
    let off = app.send(Method::PATCH, &path, Some(&admin), None, Some(&json!({ "queue": null }))).await;
    assert_eq!(off.body["queue"]["enabled"], false, "{off:?}");
    // Without its waiting room, the event's seats need no admission again (each instance learns
    // it within one pacing round; until then it refuses from memory, writing nothing).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let free = claim(&app, "frank", &holds, &seats[6..7], None).await;
        if free.status == StatusCode::CREATED {
            break;
        }
        free.assert_problem(403, "NOT_ADMITTED");
        assert!(Instant::now() < deadline, "the waiting room stayed on: {free:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An event without a waiting room has no line to join.
    let plain = app.create_event(1, 1, 2).await;
    join(&app, "erin", plain.id).await.assert_problem(409, "QUEUE_NOT_ENABLED");
    join(&app, "erin", Uuid::new_v4()).await.assert_problem(404, "NOT_FOUND");
    app.assert_invariants().await;
}

/// Admitted so far, and admitted and unfinished now, as the admin endpoint counts them.
async fn counts(clients: &Clients, base: &str, event: Uuid) -> (i64, i64) {
    let res = clients.send(base, Method::GET, &format!("/v1/events/{event}/queue"), "admin", None, None).await.unwrap();
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    (res.body["admitted_total"].as_i64().unwrap(), res.body["active"].as_i64().unwrap())
}

#[tokio::test]
async fn three_instances_pace_admissions_at_the_set_rate_with_one_killed_midway() {
    let mut fleet = Fleet::start().await;
    let mut instances = fleet.spawn_many(3, &[("QUEUE_PACE_INTERVAL_MS", "100")]).await;
    let clients = Clients::new();
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let make = |queue: Value| {
        let body = event_body(10, Some(Utc::now() + Span::hours(1)), queue);
        let (clients, base) = (clients.clone(), bases[0].clone());
        async move {
            let res = clients.send(&base, Method::POST, "/v1/events", "admin", Some(&new_key()), Some(&body)).await;
            let res = res.unwrap();
            assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
            res.id()
        }
    };
    // A: 600 a minute, no cap that matters. B: fast, but at most 5 shoppers at once.
    let paced = make(json!({ "admit_per_minute": 600, "max_active_shoppers": 1000000 })).await;
    let capped = make(json!({ "admit_per_minute": 60000, "max_active_shoppers": 5 })).await;
    for (event, n) in [(paced, 400), (capped, 40)] {
        let (clients, bases) = (clients.clone(), bases.clone());
        run_load(n, 16, move |i| {
            let (clients, base) = (clients.clone(), bases[i % 3].clone());
            async move {
                let path = format!("/v1/events/{event}/queue");
                let res = clients.send(&base, Method::POST, &path, &format!("u{i}"), Some(&new_key()), None).await;
                assert_eq!(res.unwrap().status, StatusCode::CREATED);
            }
        })
        .await;
    }
    let now = json!({ "on_sale_at": Utc::now().to_rfc3339() });
    for event in [paced, capped] {
        let path = format!("/v1/events/{event}");
        let res = clients.send(&bases[1], Method::PATCH, &path, "admin", None, Some(&now)).await.unwrap();
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
    }

    // The rate, measured from the first admissions over about 12 s, instance 0 SIGKILLed at 6 s.
    eventually("the first admissions", Duration::from_secs(10), || async {
        counts(&clients, &bases[2], paced).await.0 > 0
    })
    .await;
    let (start_count, _) = counts(&clients, &bases[2], paced).await;
    let started = Instant::now();
    let mut killed = false;
    let mut most_active = 0;
    while started.elapsed() < Duration::from_secs(12) {
        if !killed && started.elapsed() > Duration::from_secs(6) {
            instances[0].kill();
            killed = true;
        }
        let base = if killed { &bases[1 + (most_active as usize % 2)] } else { &bases[0] };
        let (_, active) = counts(&clients, base, capped).await;
        assert!(active <= 5, "max_active_shoppers exceeded: {active} active");
        most_active = most_active.max(active);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (end_count, _) = counts(&clients, &bases[2], paced).await;
    let per_minute = (end_count - start_count) as f64 * 60.0 / started.elapsed().as_secs_f64();
    assert!((540.0..=660.0).contains(&per_minute), "admitted {per_minute:.0} a minute (setting: 600)");
    assert_eq!(most_active, 5, "the capped queue fills its 5 places");
    let (capped_total, _) = counts(&clients, &bases[1], capped).await;
    assert_eq!(capped_total, 5, "nobody beyond the cap while all 5 admissions last");

    // The queue's truth is in Postgres: with every Redis node gone, a new waiting room opens,
    // a buyer joins through one instance and is admitted by the others' pacing.
    for node in &mut fleet.redis.nodes {
        node.stop();
    }
    let body = event_body(4, None, json!({ "admit_per_minute": 60000 }));
    let created = clients.send(&bases[1], Method::POST, "/v1/events", "admin", Some(&new_key()), Some(&body)).await;
    let created = created.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let path = format!("/v1/events/{}/queue", created.id());
    let joined = clients.send(&bases[2], Method::POST, &path, "late", Some(&new_key()), None).await.unwrap();
    assert_eq!(joined.status, StatusCode::CREATED, "{joined:?}");
    let ticket = format!("/v1/queue/{}", joined.body["ticket_id"].as_str().unwrap());
    eventually("an admission without Redis", Duration::from_secs(10), || {
        let (clients, base, ticket) = (clients.clone(), bases[1].clone(), ticket.clone());
        async move {
            let res = clients.send(&base, Method::GET, &ticket, "late", None, None).await.unwrap();
            res.body["status"] == "admitted"
        }
    })
    .await;
}
