//! The real binary: SIGTERM drains in-flight work, releases its locks, stops its loops and
//! exits 0; logs are JSON lines carrying the request id.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::app::{JWT_SECRET, TestDatabase, count, eventually, free_port};
use crate::support::cluster::Clients;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_an_in_flight_booking_finish_then_exits_cleanly() {
    let database = TestDatabase::create().await;
    let port = free_port();
    let prefix = format!("shutdown:{}:", Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("REDIS_KEY_PREFIX", &prefix)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("RATE_LIMIT_PER_IP", "0")
        .env("RATE_LIMIT_PER_USER", "0")
        .env("HOLD_MAX_LIVE_PER_USER", "0")
        // Every commit waits 1.5 s: a request is surely in flight when SIGTERM arrives.
        .env("HOLDFAST_FAULT_PRE_COMMIT_DELAY_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the holdfast binary starts");
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stdout, lines) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };

    let client = crate::support::http_client(reqwest::Client::builder());
    let base = format!("http://127.0.0.1:{port}");
    eventually("the binary serves /health", Duration::from_secs(30), || async {
        client.get(format!("{base}/health")).send().await.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
    })
    .await;

    let clients = Clients::new();
    let event = clients.create_event(&base, 2).await;
    let seat = event.seats[0];
    let in_flight = tokio::spawn({
        let (clients, base) = (clients.clone(), base.clone());
        async move { clients.hold(&base, "alice", event.id, &[seat], "in-flight").await }
    });
    let db = sqlx::PgPool::connect(&database.url).await.unwrap();
    eventually("the hold is inside its transaction", Duration::from_secs(10), || async {
        count(&db, "select count(*) from pg_stat_activity where datname = current_database() and state = 'idle in transaction'").await >= 1
    })
    .await;

    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());

    let response = in_flight.await.unwrap().expect("the in-flight request is answered, not cut off");
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "holdfast did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    reader.join().unwrap();
    assert!(client.get(format!("{base}/health")).send().await.is_err(), "no longer accepting");

    // The hold committed, and its lock was released on the way out.
    assert_eq!(count(&db, "select count(*) from holds where status = 'HELD'").await, 1);
    let redis_url = std::env::var("REDIS_URLS").unwrap().split(',').next().unwrap().to_owned();
    let mut redis = redis::Client::open(redis_url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await.unwrap();
    assert!(left.is_empty(), "locks left behind: {left:?}");

    // Logs are JSON lines, and request logs carry the request id.
    let lines = lines.lock().unwrap().clone();
    let parsed: Vec<Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    assert!(parsed.iter().any(|l| l["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty())), "{lines:?}");
    assert!(parsed.iter().any(|l| l["fields"]["message"] == "holdfast stopped"), "{lines:?}");
    db.close().await;
}

/// On SIGTERM the instance first drains: `/ready` answers 503 at once so the balancer takes it
/// out, while requests are still served for SHUTDOWN_DRAIN_SECONDS; only then does it stop
/// accepting and exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_first_answers_ready_503_while_still_serving_then_exits() {
    let database = TestDatabase::create().await;
    let redis_urls = std::env::var("REDIS_URLS").unwrap();
    let env =
        crate::support::cluster::shared_env(&database.url, &redis_urls, &format!("drain:{}:", Uuid::new_v4().simple()));
    let mut instance = crate::support::cluster::Instance::spawn(&env, &[("SHUTDOWN_DRAIN_SECONDS", "3")]).await;
    let base = instance.base.clone();
    let client = crate::support::http_client(reqwest::Client::builder());
    let ready = || async { client.get(format!("{base}/ready")).send().await.map(|r| r.status()).ok() };
    eventually("the instance is ready", Duration::from_secs(10), || async { ready().await == Some(StatusCode::OK) })
        .await;
    let clients = Clients::new();
    let event = clients.create_event(&base, 4).await;

    let signalled = Instant::now();
    instance.terminate();
    eventually("/ready answers 503 while draining", Duration::from_secs(2), || async {
        ready().await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    // Still serving: health, reads and a booking.
    assert_eq!(client.get(format!("{base}/health")).send().await.unwrap().status(), StatusCode::OK);
    let hold = clients.hold(&base, "alice", event.id, &event.seats[..1], "during-drain").await.unwrap();
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    assert!(signalled.elapsed() < Duration::from_secs(3), "all of that happened inside the drain");

    let status = instance.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() >= Duration::from_secs(3), "it kept serving for the whole drain");
    assert!(client.get(format!("{base}/health")).send().await.is_err(), "no longer accepting");
}
