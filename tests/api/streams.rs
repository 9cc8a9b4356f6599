//! Live availability streams (Server-Sent Events), read over real HTTP as a browser's
//! EventSource would: across instances, resumed after a disconnect, and with a stalled client
//! beside a healthy one.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::support::app::{TestApp, eventually, spawn_app, spawn_app_with};
use crate::support::cluster::{Clients, Fleet};
use sqlx::Connection as _;

/// One message of a stream.
#[derive(Debug, Clone)]
struct Message {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A stream being read, message by message.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}: {:?}", response.headers());
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Stream { response, buffer: String::new() }
    }

    /// The next message (heartbeat comments skipped), or None at the end of the stream.
    async fn next(&mut self, within: Duration) -> Option<Message> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() && id.is_none() {
                    continue; // a comment: the heartbeat
                }
                return Some(Message { id, event, data: serde_json::from_str(&data).unwrap_or(Value::Null) });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no message within {within:?}; buffered: {:?}", self.buffer);
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => return None,
                Ok(Err(err)) => panic!("stream broke: {err}"),
                Err(_) => panic!("no message within {within:?}; buffered: {:?}", self.buffer),
            }
        }
    }

    /// The next message that is not `ready`.
    async fn next_change(&mut self, within: Duration) -> Message {
        loop {
            let message = self.next(within).await.expect("the stream ended");
            if message.event != "ready" {
                return message;
            }
        }
    }
}

/// The statuses a `seats.changed` message gives, by seat id.
fn seat_statuses(message: &Message) -> Vec<(String, String)> {
    assert_eq!(message.event, "seats.changed", "{message:?}");
    message.data["seats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

impl TestApp {
    fn stream_url(&self, event: Uuid) -> String {
        self.url(&format!("/v1/events/{event}/stream"))
    }
}

#[tokio::test]
async fn a_hold_through_one_instance_reaches_a_stream_client_on_another() {
    let fleet = Fleet::start().await;
    // Polling every minute: only the notification can bring the change within the test's time.
    let slow_poll = [("STREAM_POLL_INTERVAL_MS", "60000")];
    let a = fleet.spawn(&slow_poll).await;
    let b = fleet.spawn(&slow_poll).await;
    let clients = Clients::new();
    let event = clients.create_event(&a.base, 4).await;

    let map = clients.send(&b.base, Method::GET, &format!("/v1/events/{}/seats", event.id), "x", None, None).await;
    let map = map.unwrap();
    let cursor = map.body["feed_cursor"].as_str().unwrap().to_owned();
    assert!(map.body["seats"][0]["version"].is_i64(), "{:?}", map.body);
    let url = format!("{}/v1/events/{}/stream?after={cursor}", b.base, event.id);
    let mut stream = Stream::open(&clients.http, &url, None).await;
    let ready = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ready.event, "ready");

    let started = Instant::now();
    let held = clients.hold(&a.base, "alice", event.id, &event.seats[..1], "k1").await.unwrap();
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let change = stream.next_change(Duration::from_secs(5)).await;
    assert_eq!(seat_statuses(&change), [(event.seats[0].to_string(), "HELD".to_owned())]);
    assert!(change.id.is_some());
    let delay = started.elapsed();
    assert!(delay < Duration::from_secs(3), "took {delay:?}");
    // Public: nothing about who.
    let text = change.data.to_string();
    assert!(!text.contains("alice") && !text.contains(held.body["id"].as_str().unwrap()), "{text}");
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_last_event_id_gets_every_change_it_missed_once() {
    let app = spawn_app().await;
    let event = app.create_event(1, 6, 10).await;
    let mut stream = Stream::open(&app.client, &app.stream_url(event.id), None).await;
    let first = app.hold("alice", event.id, &event.seats[..1], "first").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let seen = stream.next_change(Duration::from_secs(5)).await;
    let last_id = seen.id.clone().unwrap();
    drop(stream);

    // 50 changes while disconnected.
    for (i, seat) in event.seats[1..51].iter().enumerate() {
        let res = app.hold("bob", event.id, &[*seat], &format!("missed-{i}")).await;
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    }
    let mut stream = Stream::open(&app.client, &app.stream_url(event.id), Some(&last_id)).await;
    let mut got = Vec::new();
    let mut ids = HashSet::new();
    while got.len() < 50 {
        let message = stream.next_change(Duration::from_secs(10)).await;
        assert!(ids.insert(message.id.clone().unwrap()), "sent twice: {message:?}");
        got.extend(seat_statuses(&message));
    }
    let expected: Vec<(String, String)> =
        event.seats[1..51].iter().map(|s| (s.to_string(), "HELD".to_owned())).collect();
    assert_eq!(got, expected, "every missed change, in order, once");

    // Then live ones, with nothing repeated in between.
    let res = app.hold("carol", event.id, &event.seats[51..52], "live").await;
    assert_eq!(res.status, StatusCode::CREATED);
    let live = stream.next_change(Duration::from_secs(5)).await;
    assert_eq!(seat_statuses(&live), [(event.seats[51].to_string(), "HELD".to_owned())]);
}

#[tokio::test]
async fn a_stalled_client_is_reset_and_never_delays_a_healthy_one() {
    let app = spawn_app_with(|c| {
        c.streams.client_buffer = 2;
        c.holds.max_seats = 300;
    })
    .await;
    let event = app.create_event(1, 20, 50).await;
    let url = app.stream_url(event.id);

    // A client that asks for the stream and never reads a byte, on a tiny receive window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut stalled = socket.connect(app.addr).await.unwrap();
    let path = format!("/v1/events/{}/stream", event.id);
    stalled
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut healthy = Stream::open(&app.client, &url, None).await;
    eventually("both streams are open", Duration::from_secs(5), || async {
        app.metric("holdfast_stream_clients", "").await == 2.0
    })
    .await;

    // Large changes (about 25 kB each): 300 seats held, then released, over and over until the
    // stalled client's socket, the server's buffers and its queue are full and it is dropped.
    // The healthy client gets every change meanwhile, each within moments.
    let mut round = 0;
    while app.metric("holdfast_stream_resets_total", "reason=\"slow_client\"").await < 1.0 {
        assert!(round < 300, "the stalled client was never dropped");
        round += 1;
        let seats = &event.seats[(round % 3) * 300..(round % 3 + 1) * 300];
        let held = app.hold("alice", event.id, seats, &format!("big-{round}")).await;
        assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
        let change = healthy.next_change(Duration::from_secs(3)).await;
        assert_eq!(seat_statuses(&change).len(), 300);
        let released =
            app.send(Method::DELETE, &format!("/v1/holds/{}", held.id()), Some(&app.token("alice")), None, None).await;
        assert_eq!(released.status, StatusCode::NO_CONTENT);
        let change = healthy.next_change(Duration::from_secs(3)).await;
        assert!(seat_statuses(&change).iter().all(|(_, status)| status == "AVAILABLE"));
    }
    // Dropped from the hub: one client left.
    eventually("the stalled client left the hub", Duration::from_secs(5), || async {
        app.metric("holdfast_stream_clients", "").await == 1.0
    })
    .await;
    drop(stalled);
}

#[tokio::test]
async fn a_last_event_id_this_database_never_sent_gets_a_reset_then_live_changes() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    // Ahead of every position (say, an id from another database): waiting for it would be
    // silence for ever.
    let mut stream = Stream::open(&app.client, &app.stream_url(event.id), Some("9000000000000000000-1")).await;
    let first = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((first.event.as_str(), &first.data["reason"]), ("reset", &json!("cursor_unknown")), "{first:?}");
    let held = app.hold("alice", event.id, &event.seats[..1], "k1").await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let change = stream.next_change(Duration::from_secs(5)).await;
    assert_eq!(seat_statuses(&change), [(event.seats[0].to_string(), "HELD".to_owned())]);
    assert_eq!(app.metric("holdfast_stream_resets_total", "reason=\"cursor_unknown\"").await, 1.0);
}

#[tokio::test]
async fn streams_refuse_what_they_cannot_serve() {
    let app = spawn_app_with(|c| c.streams.max_clients = 1).await;
    let event = app.create_event(1, 1, 2).await;
    app.get(&format!("/v1/events/{}/stream", Uuid::new_v4()), None).await.assert_problem(404, "NOT_FOUND");
    app.get(&format!("/v1/inventories/{}/stream", Uuid::new_v4()), None).await.assert_problem(404, "NOT_FOUND");
    app.get(&format!("/v1/resources/{}/stream", Uuid::new_v4()), None).await.assert_problem(404, "NOT_FOUND");
    for bad in ["12", "1-x", "-1-1"] {
        let res = app.client.get(app.stream_url(event.id)).header("last-event-id", bad).send().await.unwrap();
        TestApp::read(res).await.assert_problem(422, "VALIDATION_FAILED");
        app.get(&format!("/v1/events/{}/stream?after={bad}", event.id), None)
            .await
            .assert_problem(422, "VALIDATION_FAILED");
    }
    let _one = Stream::open(&app.client, &app.stream_url(event.id), None).await;
    let second = app.get(&format!("/v1/events/{}/stream", event.id), None).await;
    second.assert_problem(503, "TOO_MANY_STREAMS");
    assert!(second.header("retry-after").is_some());
}

#[tokio::test]
async fn nights_and_slots_have_streams_too() {
    nights_stream_as_objects(false).await;
}

/// With COMPACT_NIGHT_CHANGES the hold's nights are stored compact, and streamed as the same objects.
#[tokio::test]
async fn compact_night_changes_stream_as_the_objects_they_replace() {
    nights_stream_as_objects(true).await;
}

async fn nights_stream_as_objects(compact: bool) {
    let app = spawn_app_with(|c| c.streams.compact_night_changes = compact).await;
    let admin = app.admin_token();
    let inventory = app
        .send(
            Method::POST,
            "/v1/inventories",
            Some(&admin),
            Some("inv"),
            Some(&json!({ "name": "Doubles", "from": "2030-03-01", "to": "2030-03-04", "capacity": 5 })),
        )
        .await;
    assert_eq!(inventory.status, StatusCode::CREATED, "{inventory:?}");
    let inventory_id = inventory.id();
    let mut stream = Stream::open(&app.client, &app.url(&format!("/v1/inventories/{inventory_id}/stream")), None).await;
    let body = json!({ "check_in": "2030-03-01", "check_out": "2030-03-03", "quantity": 2 });
    let held = app.post(&format!("/v1/inventories/{inventory_id}/holds"), "alice", "room", &body).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    // (The inventory's creation may come first: it committed just before the stream opened.)
    let mut change = stream.next_change(Duration::from_secs(5)).await;
    if change.event == "inventory.nights_changed" {
        change = stream.next_change(Duration::from_secs(5)).await;
    }
    assert_eq!(change.event, "nights.changed");
    let nights: Vec<(String, i64)> = change.data["nights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["night"].as_str().unwrap().to_owned(), n["available"].as_i64().unwrap()))
        .collect();
    assert_eq!(nights, [("2030-03-01".to_owned(), 3), ("2030-03-02".to_owned(), 3)]);
    assert_eq!(
        change.data["nights"][1],
        json!({ "night": "2030-03-02", "capacity": 5, "overbooking_allowance": 0, "closed": false,
                "held": 2, "booked": 0, "available": 3, "version": 1 })
    );
    assert!(!change.data.to_string().contains("alice"));
    let stored = app
        .count("select count(*) from audit_log where type = 'nights.changed' and jsonb_typeof(data) = 'array'")
        .await;
    assert_eq!(stored, i64::from(compact));
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats_and_an_expired_cursor_gets_reset() {
    let app = spawn_app_with(|c| {
        c.streams.heartbeat_ms = 200;
        c.jobs.outbox_retention_hours = 1;
        c.jobs.outbox_purge_interval_ms = 50;
    })
    .await;
    // A change older than the retention, written straight in SQL with triggers off, then purged.
    let mut conn = sqlx::PgConnection::connect(&app.database.url).await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    for sql in [
        "set local session_replication_role = replica",
        "insert into audit_log (type, scope_id, actor, actor_role, at) values ('seats.changed', '00000000-0000-0000-0000-0000000000e1', 'system', 'system', now() - interval '3 hours')",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let event = app.create_event(1, 1, 2).await;
    eventually("the old change is purged", Duration::from_secs(30), || async {
        app.count("select count(*) from change_log_horizon where id > 0").await == 1
    })
    .await;

    let url = format!("{}?after=0-0", app.stream_url(event.id));
    let mut stream = Stream::open(&app.client, &url, None).await;
    let first = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.event, "reset", "{first:?}");
    assert_eq!(first.data["reason"], "cursor_expired");
    assert!(first.id.is_some(), "a reset says where live messages start");

    // Nothing happens on the event: heartbeat comments keep the connection visibly alive.
    let started = Instant::now();
    let mut raw = String::new();
    while !raw.contains("\n:") && !raw.starts_with(':') {
        assert!(started.elapsed() < Duration::from_secs(3), "no heartbeat: {raw:?}");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(1), stream.response.chunk()).await {
            raw.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
