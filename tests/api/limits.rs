//! Nothing grows without bound and nothing gets stuck: the per-user cap on live holds, paged
//! reads, a cheap `/ready`, slow clients cut off, a connection cap, purges that drain, one
//! integrity run at a time, and a panic that does not strand its key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::slots::future_hour;
use crate::support::app::{eventually, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_holds_by_one_user_with_a_cap_of_five_give_exactly_five() {
    let app = Arc::new(spawn_app_with(|c| c.holds.max_live_per_user = 5).await);
    let event = app.create_event(1, 2, 20).await;
    let attempts = (0..20).map(|i| {
        let (app, event_id, seat) = (app.clone(), event.id, event.seats[i]);
        tokio::spawn(async move { app.hold("alice", event_id, &[seat], &format!("h{i}")).await })
    });
    let results: Vec<_> = join_all(attempts).await.into_iter().map(Result::unwrap).collect();
    let created = results.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(created, 5, "{results:?}");
    for refused in results.iter().filter(|r| r.status != StatusCode::CREATED) {
        refused.assert_problem(409, "TOO_MANY_HOLDS");
        assert_eq!(refused.body["limit"], 5);
    }
    // Another user is not affected; releasing one hold frees a place (the cap counts live holds).
    assert_eq!(app.hold("bob", event.id, &[event.seats[30]], "b").await.status, StatusCode::CREATED);
    let first = results.iter().find(|r| r.status == StatusCode::CREATED).unwrap().id();
    let token = app.token("alice");
    app.send(reqwest::Method::DELETE, &format!("/v1/holds/{first}"), Some(&token), None, None).await;
    assert_eq!(app.hold("alice", event.id, &[event.seats[31]], "again").await.status, StatusCode::CREATED);
    // Rooms and slots count too.
    let inventory = app.create_inventory("2027-04-01", "2027-04-03", 5, 0).await;
    app.room_hold("alice", inventory, "2027-04-01", "2027-04-02", 1).await.assert_problem(409, "TOO_MANY_HOLDS");
    assert_eq!(app.count("select count(*) from holds where user_id = 'alice' and status = 'HELD'").await, 5);
}

#[tokio::test]
async fn slot_availability_and_booking_history_come_a_page_at_a_time() {
    let app = spawn_app().await;
    let resource = app.create_resource(json!({})).await;
    let day = future_hour(3).date_naive();
    let (from, to) = (day.to_string(), day.succ_opt().unwrap().to_string());
    let page = |cursor: Option<String>| {
        let (app, from, to) = (&app, from.clone(), to.clone());
        async move {
            let mut path =
                format!("/v1/resources/{resource}/availability?from={from}&to={to}&duration_minutes=60&limit=10");
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={}", c.replace('+', "%2B")));
            }
            app.get(&path, None).await
        }
    };
    let mut starts = Vec::new();
    let mut cursor = None;
    loop {
        let res = page(cursor.clone()).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        let slots = res.body["slots"].as_array().unwrap();
        assert!(slots.len() <= 10);
        starts.extend(slots.iter().map(|s| s["start"].as_str().unwrap().to_owned()));
        match res.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let whole = app
        .get(&format!("/v1/resources/{resource}/availability?from={from}&to={to}&duration_minutes=60&limit=1000"), None)
        .await;
    let whole: Vec<String> =
        whole.body["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap().to_owned()).collect();
    assert_eq!(whole.len(), 47, "hour-long slots every 30 minutes: {whole:?}");
    assert_eq!(starts, whole, "the pages together are the whole day, each start once, in order");
    app.get(&format!("/v1/resources/{resource}/availability?from={from}&to={to}&duration_minutes=60&limit=5000"), None)
        .await
        .assert_problem(422, "VALIDATION_FAILED");

    // History: a hold, three extensions, a confirm: 5 entries, read 2 at a time.
    let event = app.create_event(1, 1, 1).await;
    let hold = app.hold("alice", event.id, &event.seats, "h").await.id();
    for i in 0..3 {
        let res = app
            .post(&format!("/v1/holds/{hold}/extend"), "alice", &format!("e{i}"), &json!({ "ttl_seconds": 300 }))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
    }
    let booking = app.confirm("alice", hold).await.id();
    let mut entries = 0;
    let mut cursor: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/bookings/{booking}/history?limit=2&cursor={c}"),
            None => format!("/v1/bookings/{booking}/history?limit=2"),
        };
        let res = app.get(&path, Some("alice")).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        entries += res.body["entries"].as_array().unwrap().len();
        pages += 1;
        match res.body["next_cursor"].as_i64() {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let all = app.get(&format!("/v1/bookings/{booking}/history"), Some("alice")).await;
    assert_eq!(entries, all.body["entries"].as_array().unwrap().len());
    assert!(entries >= 5 && pages >= 3, "{entries} entries in {pages} pages");
    app.get(&format!("/v1/bookings/{booking}/history?limit=0"), Some("alice"))
        .await
        .assert_problem(422, "VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_is_computed_once_a_second_on_its_own_connection_and_metrics_can_listen_apart() {
    let app = Arc::new(spawn_app_with(|c| c.server.metrics_listen_addr = Some("127.0.0.1:0".parse().unwrap())).await);
    let before = app.metric("holdfast_readiness_probes_total", "").await;
    let started = Instant::now();
    let calls = (0..200).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { app.get("/ready", None).await.status })
    });
    let statuses: Vec<_> = join_all(calls).await.into_iter().map(Result::unwrap).collect();
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    let seconds = started.elapsed().as_secs_f64().ceil();
    let probes = app.metric("holdfast_readiness_probes_total", "").await - before;
    assert!(probes >= 1.0 && probes <= seconds + 1.0, "{probes} probes for 200 calls in {seconds} s");
    // The probe ran on its own connection, not on the business pool's.
    let probe_sessions: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where datname = current_database() and application_name = 'holdfast-probe'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(probe_sessions, 1);

    let metrics_addr = app.metrics_addr.expect("a separate metrics listener");
    let scrape = app.client.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    assert!(scrape.text().await.unwrap().contains("holdfast_readiness_probes_total"));
    let other = app.client.get(format!("http://{metrics_addr}/v1/bookings")).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "only /metrics is served there");
}

/// Reads until the peer closes the connection; true if it did within `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    while started.elapsed() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_trickles_its_headers_is_cut_off_while_others_are_served() {
    let app = spawn_app_with(|c| c.server.header_read_timeout_ms = 700).await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickle = async {
        // One more header byte every 200 ms: never done, always "active".
        for _ in 0..20 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let served = async {
        for _ in 0..10 {
            assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
        }
    };
    tokio::join!(trickle, served);
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await, "the slow connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(|c| c.server.max_connections = 2).await;
    let idle_a = TcpStream::connect(app.addr).await.unwrap();
    let idle_b = TcpStream::connect(app.addr).await.unwrap();
    // Both idle connections hold the two permits: a third request waits in the accept queue.
    let client = crate::support::http_client(reqwest::Client::builder().timeout(Duration::from_millis(600)));
    let url = app.url("/health");
    eventually("both idle connections are accepted", Duration::from_secs(5), || async {
        client.get(&url).send().await.is_err()
    })
    .await;
    drop(idle_a);
    let patient = crate::support::http_client(reqwest::Client::builder().timeout(Duration::from_secs(5)));
    assert_eq!(patient.get(&url).send().await.unwrap().status(), StatusCode::OK);
    drop(idle_b);
}

#[tokio::test]
async fn a_panic_marks_the_key_failed_at_once_and_a_retry_runs_again() {
    let app = spawn_app_with(|c| c.faults.panic_once = Some("create_hold".into())).await;
    let event = app.create_event(1, 1, 2).await;
    let first = app.hold("alice", event.id, &[event.seats[0]], "k").await;
    first.assert_problem(500, "INTERNAL");
    assert!(!first.body.to_string().contains("panicked"), "no internals: {first:?}");
    let state: String =
        sqlx::query_scalar("select state from idempotency_records where user_id = 'alice' and key = 'k'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(state, "FAILED", "not IN_PROGRESS for the whole lease");
    let retry = app.hold("alice", event.id, &[event.seats[0]], "k").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn extend_refuses_a_hold_that_lost_a_seat() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 3).await;
    let hold = app.hold("alice", event.id, &event.seats[..2], "h").await;
    let hold_id = hold.id();
    let expiry = hold.body["expires_at"].clone();
    // Tamper: the hold no longer owns one of its seats.
    sqlx::query("update seats set hold_id = null, hold_expires_at = null where id = $1")
        .bind(event.seats[1])
        .execute(&app.db)
        .await
        .unwrap();
    let res = app.post(&format!("/v1/holds/{hold_id}/extend"), "alice", "e", &json!({ "ttl_seconds": 800 })).await;
    res.assert_problem(409, "CONCURRENT_MODIFICATION");
    let now = app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await;
    assert_eq!(now.body["expires_at"], expiry, "nothing moved");
}

#[tokio::test]
async fn the_idempotency_purge_drains_every_expired_record_each_tick() {
    let app = spawn_app_with(|c| {
        c.jobs.batch_size = 50;
        c.jobs.idempotency_sweep_interval_ms = 1000;
    })
    .await;
    sqlx::query(
        "insert into idempotency_records
                (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body, updated_at)
         select 'u', 'old-' || i, '\\x00', 'SUCCEEDED', gen_random_uuid(), now() - interval '3 days', 201, '{}',
                now() - interval '3 days'
           from generate_series(1, 5000) i",
    )
    .execute(&app.db)
    .await
    .unwrap();
    // 50 rows a tick would take 100 ticks (well over a minute); draining takes one or two.
    eventually("every expired record is purged", Duration::from_secs(5), || async {
        app.count("select count(*) from idempotency_records where user_id = 'u'").await == 0
    })
    .await;
}

/// Two instances on one database run the checks about once an interval between them, not once
/// each, and store what the last run found (which the instance that skips publishes).
#[tokio::test]
async fn the_periodic_integrity_check_runs_once_an_interval_across_instances() {
    let configure = |c: &mut holdfast::config::Config| {
        c.jobs.integrity_check_interval_seconds = 1;
        c.jobs.idempotency_sweep_interval_ms = 3_600_000; // leaves the stuck record below alone
    };
    let app = spawn_app_with(configure).await;
    let mut config = crate::support::app::test_config(&app.database.url);
    configure(&mut config);
    let (_, _, stop, server) = crate::support::app::serve(config).await;

    // Both instances tick about once a second (one process: the counters are their sums).
    let ticks = || app.metric("holdfast_job_runs_total", "job=\"integrity_check\"");
    let skips = || app.metric("holdfast_integrity_checks_skipped_total", "");
    let (ticks_before, skips_before, started) = (ticks().await, skips().await, Instant::now());
    eventually("both instances tick eight times between them", Duration::from_secs(20), || async {
        ticks().await >= ticks_before + 8.0
    })
    .await;
    let (ticked, skipped) = (ticks().await - ticks_before, skips().await - skips_before);
    let elapsed = started.elapsed().as_secs_f64();
    let ran = ticked - skipped;
    // Runs start at least 0.75 s apart (one more may have started just before we looked).
    assert!(ran <= elapsed / 0.75 + 1.0, "{ran} runs in {elapsed:.1} s ({ticked} ticks, {skipped} skipped)");

    // While a run started less than the spacing ago, neither instance runs: every tick skips.
    sqlx::query("update periodic_runs set started_at = now() + interval '1 hour' where job = 'integrity_check'")
        .execute(&app.db)
        .await
        .unwrap();
    let (ticks_before, skips_before) = (ticks().await, skips().await);
    eventually("both instances tick four more times", Duration::from_secs(20), || async {
        ticks().await >= ticks_before + 4.0
    })
    .await;
    let (ticked, skipped) = (ticks().await - ticks_before, skips().await - skips_before);
    // (A run already under way when the row moved may finish: at most one.)
    assert!(ticked - skipped <= 1.0, "{ticked} ticks, {skipped} skipped while a run was recent");
    sqlx::query("update periodic_runs set started_at = now() - interval '1 hour' where job = 'integrity_check'")
        .execute(&app.db)
        .await
        .unwrap();

    // What the last run found is stored: a record stuck IN_PROGRESS past its lease, once seen.
    sqlx::query(
        "insert into idempotency_records (user_id, key, fingerprint, state, claim_token, lease_until)
         values ('u', 'stuck', '\\x00', 'IN_PROGRESS', gen_random_uuid(), now() - interval '1 minute')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let stuck = "idempotency record stuck IN_PROGRESS past its lease";
    eventually("the stored result names the stuck record", Duration::from_secs(10), || async {
        let result: Option<serde_json::Value> =
            sqlx::query_scalar("select result from periodic_runs where job = 'integrity_check'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        result == Some(json!({ stuck: 1 }))
    })
    .await;
    assert_eq!(app.metric("holdfast_invariant_violations", &format!("check=\"{stuck}\"")).await, 1.0);
    let _ = stop.send(());
    server.await.unwrap();
}

#[tokio::test]
async fn the_periodic_integrity_check_runs_on_one_instance_at_a_time() {
    let app = spawn_app_with(|c| c.jobs.integrity_check_interval_seconds = 1).await;
    // Another instance is running the checks right now: it holds the advisory lock.
    let mut other = app.db.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(7525352680829580148)").execute(&mut *other).await.unwrap();
    let skipped = app.metric("holdfast_integrity_checks_skipped_total", "").await;
    eventually("this instance skips its run", Duration::from_secs(5), || async {
        app.metric("holdfast_integrity_checks_skipped_total", "").await > skipped
    })
    .await;
    other.rollback().await.unwrap();
    let runs = app.metric("holdfast_job_runs_total", "job=\"integrity_check\"").await;
    let skipped = app.metric("holdfast_integrity_checks_skipped_total", "").await;
    eventually("and runs again once the lock is free", Duration::from_secs(5), || async {
        app.metric("holdfast_job_runs_total", "job=\"integrity_check\"").await > runs + 1.0
            && app.metric("holdfast_integrity_checks_skipped_total", "").await == skipped
    })
    .await;
}
