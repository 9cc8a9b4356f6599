//! The real binary: SIGTERM drains in-flight work, releases its locks, stops its loops and
//! exits 0; logs are JSON lines carrying the request id.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast::api::auth::JwtKeys;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{JWT_SECRET, TestDatabase, eventually};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the binary serves /health", Duration::from_secs(30), || async {
        client.get(format!("{base}/health")).send().await.map(|r| r.status() == StatusCode::OK).unwrap_or(false)
    })
    .await;

    let keys = JwtKeys::new(JWT_SECRET);
    let admin = keys.mint("admin", true, Duration::from_secs(600)).unwrap();
    let alice = keys.mint("alice", false, Duration::from_secs(600)).unwrap();
    let layout = json!({ "name": "Shutdown", "starts_at": "2030-01-01T00:00:00Z",
                         "layout": { "sections": 1, "rows": 1, "seats_per_row": 2, "price_cents": 100 } });
    let event: Value = client
        .post(format!("{base}/v1/events"))
        .bearer_auth(&admin)
        .header("idempotency-key", "e")
        .json(&layout)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seats: Value = client
        .get(format!("{base}/v1/events/{}/seats", event["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seat = seats["seats"][0]["id"].as_str().unwrap().to_owned();

    let in_flight = tokio::spawn({
        let (client, base, alice, event_id) =
            (client.clone(), base.clone(), alice.clone(), event["id"].as_str().unwrap().to_owned());
        async move {
            client
                .post(format!("{base}/v1/events/{event_id}/holds"))
                .bearer_auth(&alice)
                .header("idempotency-key", "in-flight")
                .json(&json!({ "seat_ids": [seat] }))
                .send()
                .await
        }
    });
    let db = sqlx::PgPool::connect(&database.url).await.unwrap();
    eventually("the hold is inside its transaction", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from pg_stat_activity where datname = current_database() and state = 'idle in transaction'")
            .fetch_one(&db).await.unwrap() >= 1
    })
    .await;

    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());

    let response = in_flight.await.unwrap().expect("the in-flight request is answered, not cut off");
    assert_eq!(response.status(), StatusCode::CREATED);
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
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from holds where status = 'HELD'").fetch_one(&db).await.unwrap(),
        1
    );
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
