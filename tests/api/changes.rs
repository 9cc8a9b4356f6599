//! The change feed (`GET /v1/changes`): every change, once, in an order no consumer falls
//! through, even though transactions commit out of order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::app::{Res, TestApp, eventually, request, spawn_app, spawn_app_with};
use crate::support::cluster::{Clients, Fleet};

/// Reads the feed from `after` until a page comes back empty: every change readable now, and
/// the cursor to go on with.
async fn read_all(client: &reqwest::Client, base: &str, token: &str, after: Option<&str>) -> (Vec<Value>, String) {
    let mut changes = Vec::new();
    let mut cursor = after.map(str::to_owned);
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}/v1/changes?limit=37&after={c}"),
            None => format!("{base}/v1/changes?limit=37"),
        };
        let res = request(client, Method::GET, &path, Some(token), None, None).await.unwrap();
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        let page = res.body["changes"].as_array().unwrap().clone();
        let next = res.body["next_cursor"].as_str().unwrap().to_owned();
        if page.is_empty() {
            if let Some(c) = &cursor {
                assert_eq!(&next, c, "an empty page returns the cursor it was given");
            }
            return (changes, next);
        }
        assert_eq!(page.last().unwrap()["cursor"], json!(next), "next_cursor is the last change's cursor");
        changes.extend(page);
        cursor = Some(next);
    }
}

impl TestApp {
    async fn feed(&self, after: Option<&str>) -> (Vec<Value>, String) {
        read_all(&self.client, &format!("http://{}", self.addr), &self.admin_token(), after).await
    }

    /// The whole feed once it holds at least `n` changes. Other tests' transactions on the same
    /// Postgres server hold the feed back while they run, so what just committed may take a
    /// moment to become readable.
    async fn feed_of_at_least(&self, n: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let (changes, _) = self.feed(None).await;
            if changes.len() >= n {
                return changes;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the feed has {} of {n} changes", changes.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn of_type<'a>(changes: &'a [Value], kind: &str) -> Vec<&'a Value> {
    changes.iter().filter(|c| c["type"] == kind).collect()
}

#[tokio::test]
async fn the_feed_never_passes_a_transaction_that_is_still_open() {
    let app = spawn_app().await;
    let (_, start) = app.feed(None).await;

    // A transaction writes a change (an event created straight in SQL) and stays open.
    let mut open = PgConnection::connect(&app.database.url).await.unwrap();
    let mut tx = open.begin().await.unwrap();
    let slow_event = Uuid::new_v4();
    sqlx::query(
        "insert into events (id, name, starts_at, created_by) values ($1, 'slow', now() + interval '1 day', 'sql')",
    )
    .bind(slow_event)
    .execute(&mut *tx)
    .await
    .unwrap();

    // Meanwhile later transactions commit their changes.
    let event = app.create_event(1, 1, 4).await;
    let held = app.hold("alice", event.id, &event.seats[..2], &Uuid::new_v4().to_string()).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");

    // The feed does not move past the open transaction: nothing after `start` is readable yet.
    let (early, cursor) = app.feed(Some(&start)).await;
    assert!(early.is_empty(), "the feed passed an open transaction: {early:?}");
    assert_eq!(cursor, start);

    tx.commit().await.unwrap();

    // Once it commits, a consumer that kept its cursor gets it, and everything after, once.
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor = start.clone();
    let started = Instant::now();
    loop {
        let (more, next) = app.feed(Some(&cursor)).await;
        seen.extend(more);
        cursor = next;
        if seen.iter().any(|c| c["type"] == "hold.created") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the feed never delivered the late commit: {seen:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ids: HashSet<&str> = seen.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), seen.len(), "a change was delivered twice");
    let created: Vec<&Value> = of_type(&seen, "event.created");
    assert_eq!(created.len(), 2, "{seen:?}");
    assert_eq!(created[0]["subject"]["id"], json!(slow_event), "the late commit comes first: it began first");
    assert_eq!(created[1]["subject"]["id"], json!(event.id));
    assert_eq!(of_type(&seen, "hold.created").len(), 1);
    assert_eq!(of_type(&seen, "seats.changed").len(), 1);
    assert_eq!(held.body["id"], of_type(&seen, "hold.created")[0]["subject"]["id"]);
}

#[tokio::test]
async fn each_change_says_what_happened_and_the_public_ones_say_nothing_of_who() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let held = app.hold("alice", event.id, &event.seats[..2], &Uuid::new_v4().to_string()).await;
    let hold_id = held.id();
    let booking = app.confirm("alice", hold_id).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    let other = app.hold("bob", event.id, &event.seats[2..3], &Uuid::new_v4().to_string()).await;
    let released =
        app.send(Method::DELETE, &format!("/v1/holds/{}", other.id()), Some(&app.token("bob")), None, None).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);

    let changes = app.feed_of_at_least(10).await;
    let types: Vec<&str> = changes.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "event.created",
            "hold.created",
            "seats.changed",
            "hold.confirmed",
            "booking.confirmed",
            "seats.changed",
            "hold.created",
            "seats.changed",
            "hold.released",
            "seats.changed"
        ],
        "{changes:#?}"
    );
    let created = &changes[1];
    assert_eq!(created["subject"], json!({ "kind": "hold", "id": hold_id, "event_id": event.id }));
    assert_eq!(created["actor"], json!({ "id": "alice", "role": "user" }));
    assert_eq!(created["data"]["status"], "HELD");
    assert_eq!(created["data"]["user_id"], "alice");
    assert!(created["request_id"].is_string(), "{created}");
    let confirmed = &changes[4];
    assert_eq!(confirmed["subject"]["id"], booking.body["id"]);
    assert_eq!(confirmed["data"]["hold_id"], json!(hold_id));

    // Seat changes are public: seat ids, statuses and versions only.
    let seats = |c: &Value| -> Vec<(Value, Value)> {
        assert_eq!(c["data"].as_object().unwrap().keys().collect::<Vec<_>>(), ["seats"], "{c}");
        c["data"]["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut keys: Vec<&String> = s.as_object().unwrap().keys().collect();
                keys.sort();
                assert_eq!(keys, ["id", "status", "version"], "{s}");
                (s["id"].clone(), s["status"].clone())
            })
            .collect()
    };
    let mut first_two: Vec<Value> = event.seats[..2].iter().map(|s| json!(s)).collect();
    first_two.sort_by_key(|v| v.as_str().unwrap().to_owned());
    assert_eq!(seats(&changes[2]), first_two.iter().map(|s| (s.clone(), json!("HELD"))).collect::<Vec<_>>());
    assert_eq!(seats(&changes[5]), first_two.iter().map(|s| (s.clone(), json!("BOOKED"))).collect::<Vec<_>>());
    assert_eq!(seats(&changes[9]), [(json!(event.seats[2]), json!("AVAILABLE"))]);

    // A filter by type, and pages of one, give the same changes.
    let token = app.admin_token();
    let only =
        app.send(Method::GET, "/v1/changes?types=hold.created,booking.confirmed", Some(&token), None, None).await;
    let only_types: Vec<&str> =
        only.body["changes"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(only_types, ["hold.created", "booking.confirmed", "hold.created"]);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..changes.len() {
        let path = match &cursor {
            Some(c) => format!("/v1/changes?limit=1&after={c}"),
            None => "/v1/changes?limit=1".to_owned(),
        };
        let page = app.send(Method::GET, &path, Some(&token), None, None).await;
        paged.extend(page.body["changes"].as_array().unwrap().clone());
        cursor = Some(page.body["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(paged, changes);
}

/// The stream tailer expands `seats.changed` rows itself instead of asking Postgres (issue 10):
/// what it reads of every row is what the feed's SQL function `change_data` makes of it.
#[tokio::test]
async fn the_tailer_reads_every_row_as_the_feed_does() {
    use holdfast::db::changes::{Position, tail};
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let held = app.hold("alice", event.id, &event.seats[..3], &Uuid::new_v4().to_string()).await;
    assert_eq!(app.confirm("alice", held.id()).await.status, StatusCode::CREATED);
    let other = app.hold("bob", event.id, &event.seats[3..], &Uuid::new_v4().to_string()).await;
    let released =
        app.send(Method::DELETE, &format!("/v1/holds/{}", other.id()), Some(&app.token("bob")), None, None).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT);
    // Shapes no trigger writes, each as change_data leaves or reads them.
    sqlx::query(
        r#"insert into audit_log (type, scope_id, data, actor, actor_role)
           values ('seats.changed', $1, '[]', 'x', 'system'), ('seats.changed', $1, '[["a"], "b", {"c": 1}, null, [1, 2, 3, 4]]', 'x', 'system'),
                  ('seats.changed', $1, '{"seats": []}', 'x', 'system'), ('seats.changed', $1, null, 'x', 'system')"#,
    )
    .bind(event.id)
    .execute(&app.db)
    .await
    .unwrap();

    let expected: Vec<(i64, Option<Value>)> =
        sqlx::query_as("select id, change_data(type, data) from audit_log where type is not null order by txid, id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(expected.len() >= 8, "{expected:?}");
    // Rows of a transaction older than one still open stay hidden a moment: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        let rows = tail(&app.db, Position { txid: 0, id: 0 }, 1000).await.unwrap();
        let read: Vec<(i64, Option<Value>)> =
            rows.into_iter().filter(|r| r.r#type.is_some()).map(|r| (r.id, r.data)).collect();
        if read.len() >= expected.len() || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(read, expected);
}

#[tokio::test]
async fn the_feed_is_for_admins_and_refuses_what_it_cannot_read() {
    let app = spawn_app().await;
    let user = app.token("alice");
    let admin = app.admin_token();
    app.send(Method::GET, "/v1/changes", None, None, None).await.assert_problem(401, "UNAUTHENTICATED");
    app.send(Method::GET, "/v1/changes", Some(&user), None, None).await.assert_problem(403, "FORBIDDEN");
    for bad in [
        "after=12",
        "after=1-x",
        "after=-1-2",
        "after=99999999999999999999-1",
        "after=1-2%00",
        "limit=0",
        "limit=1001",
        "types=hold.created,nope",
        "types=",
        "types=hold.created%00",
    ] {
        let res = app.send(Method::GET, &format!("/v1/changes?{bad}"), Some(&admin), None, None).await;
        assert!(res.status.is_client_error(), "{bad}: {res:?}");
        assert_eq!(res.headers["content-type"], "application/problem+json", "{bad}");
    }
    let res = app.send(Method::GET, "/v1/changes?after=5-5&limit=1000", Some(&admin), None, None).await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    assert_eq!(res.body["next_cursor"], "5-5");
    // A cursor beyond everything this database has made readable was never issued by it (one
    // from another database): 410, not an empty page to poll in silence for ever. While a
    // transaction is open the readable end stays at or before its id (other tests move it).
    let end: i64 = sqlx::query_scalar("select pg_snapshot_xmin(pg_current_snapshot())::text::int8")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut open = app.db.begin().await.unwrap();
    let xid: i64 = sqlx::query_scalar("select pg_current_xact_id()::text::int8").fetch_one(&mut *open).await.unwrap();
    for ahead in [format!("{xid}-1"), format!("{}-0", xid + 1_000_000), "9000000000000000000-1".to_owned()] {
        let res = app.send(Method::GET, &format!("/v1/changes?after={ahead}"), Some(&admin), None, None).await;
        res.assert_problem(410, "CURSOR_EXPIRED");
        assert_eq!(res.body["oldest_cursor"], "0-0", "{ahead}: {res:?}");
    }
    open.rollback().await.unwrap();
    // A readable end seen earlier is where a stream's `ready` may stand: valid.
    let res = app.send(Method::GET, &format!("/v1/changes?after={end}-0"), Some(&admin), None, None).await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
}

/// A change log whose positions run ahead of the cluster's transaction ids (restored from a
/// logical dump into a new cluster) is reported by the invariants, not left to hide changes.
#[tokio::test]
async fn a_change_log_from_another_cluster_is_an_invariant_violation() {
    let app = spawn_app().await;
    app.create_event(1, 1, 2).await;
    app.assert_invariants().await;
    sqlx::query(
        "insert into audit_log (txid, type, scope_id, actor, actor_role)
         values ('9000000000000000000', 'event.created', gen_random_uuid(), 'x', 'system')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let violations = holdfast::db::invariants::violations(&app.db).await.unwrap();
    assert_eq!(violations, [("change log position beyond this database's transaction ids", 1)]);
}

#[tokio::test]
async fn changes_past_their_retention_are_purged_and_their_cursors_expire() {
    let app = spawn_app_with(|c| {
        c.jobs.outbox_retention_hours = 1;
        c.jobs.outbox_purge_interval_ms = 50;
        c.jobs.batch_size = 2;
    })
    .await;
    // Old changes, written straight in SQL with triggers off: availability changes (purged) and
    // a hold's history (kept for ever).
    let hold_id = Uuid::new_v4();
    let mut conn = PgConnection::connect(&app.database.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for sql in [
        "set local session_replication_role = replica",
        "insert into events (id, name, starts_at, created_by) values ('00000000-0000-0000-0000-0000000000e1', 'old', now(), 'sql')",
        "insert into holds (id, event_id, user_id, status, expires_at) values ($1, '00000000-0000-0000-0000-0000000000e1', 'u', 'RELEASED', now())",
        "insert into audit_log (type, scope_id, actor, actor_role, at) values ('seats.changed', '00000000-0000-0000-0000-0000000000e1', 'system', 'system', now() - interval '3 hours')",
        "insert into audit_log (hold_id, entity, to_status, actor, actor_role, at) values ($1, 'hold', 'HELD', 'u', 'user', now() - interval '3 hours')",
        "insert into audit_log (type, scope_id, actor, actor_role, at) values ('seats.changed', '00000000-0000-0000-0000-0000000000e1', 'system', 'system', now() - interval '2 hours')",
        "insert into audit_log (type, scope_id, actor, actor_role, at) values ('seats.changed', '00000000-0000-0000-0000-0000000000e1', 'system', 'system', now() - interval '2 hours')",
    ] {
        let query = sqlx::query(sql);
        let query = if sql.contains("$1") { query.bind(hold_id) } else { query };
        query.execute(&mut *tx).await.unwrap();
    }
    let last_old: (i64, i64) = sqlx::query_as("select pg_current_xact_id()::text::int8, max(id) from audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let event = app.create_event(1, 1, 2).await;

    // The purge passes the old changes in batches of two and stops at the first recent one.
    let horizon = format!("{}-{}", last_old.0, last_old.1);
    eventually("the purge reaches the recent changes", Duration::from_secs(30), || async {
        let res = app.send(Method::GET, "/v1/changes?after=0-0", Some(&app.admin_token()), None, None).await;
        res.status == StatusCode::GONE && res.body["oldest_cursor"] == json!(horizon)
    })
    .await;
    let res = app.send(Method::GET, "/v1/changes?after=0-0", Some(&app.admin_token()), None, None).await;
    res.assert_problem(410, "CURSOR_EXPIRED");
    assert_eq!(
        app.count("select count(*) from audit_log where type = 'seats.changed' and at < now() - interval '1 hour'")
            .await,
        0
    );
    assert_eq!(
        app.count("select count(*) from audit_log where hold_id is not null and at < now() - interval '1 hour'").await,
        1,
        "a hold's history is kept"
    );
    // Without a cursor the feed starts at the oldest change kept; the horizon itself is valid.
    let changes = app.feed_of_at_least(1).await;
    assert_eq!(changes[0]["type"], "event.created");
    assert_eq!(changes[0]["subject"]["id"], json!(event.id));
    let (from_horizon, _) = app.feed(Some(&horizon)).await;
    assert_eq!(from_horizon, changes);
}

/// 200 clients over 3 instances hold, then confirm or release, at once. Read from the start,
/// the feed has every effect the clients were told of, exactly once, and each subject's changes
/// in the order they happened (versions only go up).
#[tokio::test]
async fn every_effect_of_concurrent_requests_over_three_instances_is_in_the_feed_once() {
    let fleet = Fleet::start().await;
    let instances = fleet.spawn_many(3, &[]).await;
    let clients = Arc::new(Clients::new());
    let event = clients.create_event(&instances[0].base, 200).await;
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();

    // As a client does: a retryable refusal (a lock or the database busy under the whole test
    // suite's load) is retried with the same Idempotency-Key.
    async fn retrying(
        clients: &Clients,
        base: &str,
        method: Method,
        path: &str,
        user: &str,
        body: Option<&Value>,
    ) -> Res {
        let key = Uuid::new_v4().to_string();
        for _ in 0..50 {
            let res = clients.send(base, method.clone(), path, user, Some(&key), body).await.unwrap();
            let retry = res.status.is_server_error()
                || matches!(res.code(), "SEAT_LOCKED" | "IDEMPOTENCY_IN_PROGRESS" | "CONCURRENT_MODIFICATION");
            if !retry {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{method} {path} kept failing");
    }

    let mut tasks = Vec::new();
    for (i, seat) in event.seats.iter().copied().enumerate() {
        let (fleet, bases) = (clients.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{i}");
            let base = &bases[i % 3];
            let body = json!({ "seat_ids": [seat] });
            let path = format!("/v1/events/{}/holds", event.id);
            let held = retrying(&fleet, base, Method::POST, &path, &user, Some(&body)).await;
            assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
            let hold_id = held.id();
            let base = &bases[(i + 1) % 3];
            if i % 2 == 0 {
                let path = format!("/v1/holds/{hold_id}/confirm");
                let booked = retrying(&fleet, base, Method::POST, &path, &user, Some(&json!({}))).await;
                assert_eq!(booked.status, StatusCode::CREATED, "{booked:?}");
                (seat, hold_id, Some(booked.id()))
            } else {
                let path = format!("/v1/holds/{hold_id}");
                let released = retrying(&fleet, base, Method::DELETE, &path, &user, None).await;
                assert_eq!(released.status, StatusCode::NO_CONTENT, "{released:?}");
                (seat, hold_id, None)
            }
        }));
    }
    let mut told = Vec::new();
    for task in tasks {
        told.push(task.await.unwrap());
    }

    let client = crate::support::http_client(reqwest::Client::builder());
    let token = clients.token("admin");
    let mut changes: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let expected = 1 + 200 * 2 + 100 * 3 + 100 * 2;
    let started = Instant::now();
    while changes.len() < expected {
        assert!(started.elapsed() < Duration::from_secs(60), "the feed has {} of {expected} changes", changes.len());
        let (more, next) = read_all(&client, &bases[2], &token, cursor.as_deref()).await;
        changes.extend(more);
        cursor = Some(next);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(changes.len(), expected, "more changes than effects");
    let ids: HashSet<&str> = changes.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), changes.len(), "a change was delivered twice");

    // Each effect a client was told of, exactly once.
    let mut by_subject: HashMap<(String, String), usize> = HashMap::new();
    for c in &changes {
        *by_subject.entry((c["type"].as_str().unwrap().to_owned(), c["subject"]["id"].to_string())).or_default() += 1;
    }
    let once = |kind: &str, id: Uuid| {
        assert_eq!(by_subject.get(&(kind.to_owned(), json!(id).to_string())), Some(&1), "{kind} of {id}");
    };
    for (_, hold_id, booking) in &told {
        once("hold.created", *hold_id);
        match booking {
            Some(booking_id) => {
                once("hold.confirmed", *hold_id);
                once("booking.confirmed", *booking_id);
            }
            None => once("hold.released", *hold_id),
        }
    }

    // Each hold's changes in the order they happened, each seat's versions only going up, and
    // each seat ending where the database says.
    let mut hold_history: HashMap<String, Vec<&str>> = HashMap::new();
    let mut seat_versions: HashMap<String, (i64, String)> = HashMap::new();
    for c in &changes {
        match c["subject"]["kind"].as_str().unwrap() {
            "hold" => {
                hold_history.entry(c["subject"]["id"].to_string()).or_default().push(c["type"].as_str().unwrap());
            }
            "event" if c["type"] == "seats.changed" => {
                for seat in c["data"]["seats"].as_array().unwrap() {
                    let version = seat["version"].as_i64().unwrap();
                    let status = seat["status"].as_str().unwrap().to_owned();
                    let last = seat_versions.insert(seat["id"].as_str().unwrap().to_owned(), (version, status));
                    assert!(last.is_none_or(|(last, _)| last < version), "seat versions out of order: {seat}");
                }
            }
            _ => {}
        }
    }
    for (_, hold_id, booking) in &told {
        let end = if booking.is_some() { "hold.confirmed" } else { "hold.released" };
        assert_eq!(hold_history[&json!(hold_id).to_string()], ["hold.created", end], "hold {hold_id}");
    }
    for (seat, _, booking) in &told {
        let (_, status) = &seat_versions[&seat.to_string()];
        assert_eq!(status, if booking.is_some() { "BOOKED" } else { "AVAILABLE" }, "seat {seat}");
    }
    drop(instances);
    drop(fleet);
}

/// A feed cursor `TXID-ID` as its two numbers.
fn position(cursor: &Value) -> (i64, i64) {
    let (txid, id) = cursor.as_str().unwrap().split_once('-').unwrap();
    (txid.parse().unwrap(), id.parse().unwrap())
}

/// The next `n` changes after `cursor` other than `event.created`, read one per page (so that a
/// cursor falls between every two parts of a row), and the cursor after the last.
async fn one_per_page(app: &TestApp, mut cursor: String, n: usize) -> (Vec<Value>, String) {
    let mut seen: Vec<Value> = Vec::new();
    let started = Instant::now();
    while seen.len() < n {
        let res = app
            .send(Method::GET, &format!("/v1/changes?limit=1&after={cursor}"), Some(&app.admin_token()), None, None)
            .await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        let page = res.body["changes"].as_array().unwrap();
        assert!(page.len() <= 1, "{res:?}");
        if let Some(change) = page.first() {
            assert_eq!(change["cursor"], res.body["next_cursor"]);
            // (The event's creation may become readable only now: other tests' transactions
            // hold the feed back.)
            if change["type"] != "event.created" {
                seen.push(change.clone());
            }
        } else {
            assert!(started.elapsed() < Duration::from_secs(30), "the changes never became readable: {seen:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        cursor = res.body["next_cursor"].as_str().unwrap().to_owned();
    }
    (seen, cursor)
}

#[tokio::test]
async fn a_seat_hold_and_its_confirm_each_write_one_change_row_that_the_feed_reads_as_two_and_three_events() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let (_, start) = app.feed(None).await;
    let held = app.hold("alice", event.id, &event.seats[..2], "one-row").await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let hold_id = held.id();

    // One row: the hold's history and its seats' availability together.
    let rows: Vec<(Option<String>, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "select entity, type, scope_id from audit_log where hold_id = $1 or scope_id = $2 and type = 'seats.changed'",
    )
    .bind(hold_id)
    .bind(event.id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows, [(Some("hold".to_owned()), Some("seats.changed".to_owned()), Some(event.id))]);

    // Read one change per page: the two events come one after the other, each once, each with
    // its own cursor and id, and a cursor between them loses neither.
    let (seen, cursor) = one_per_page(&app, start.clone(), 2).await;
    let (created, seats) = (&seen[0], &seen[1]);
    assert_eq!(created["type"], "hold.created", "{seen:?}");
    assert_eq!(created["subject"]["id"], json!(hold_id));
    assert_eq!(created["data"]["status"], "HELD");
    assert_eq!(created["data"]["user_id"], "alice");
    assert_eq!(created["data"]["expires_at"].as_str().map(|s| s.is_empty()), Some(false), "{created}");
    assert_eq!(created["request_id"], seats["request_id"]);
    assert_eq!(seats["type"], "seats.changed", "{seen:?}");
    assert_eq!(seats["subject"]["id"], json!(event.id));
    let mut listed: Vec<&str> =
        seats["data"]["seats"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut asked: Vec<String> = event.seats[..2].iter().map(Uuid::to_string).collect();
    asked.sort_unstable();
    assert_eq!(listed, asked);
    assert!(seats["data"]["seats"].as_array().unwrap().iter().all(|s| s["status"] == "HELD" && s["version"] == 1));
    assert_ne!(created["id"], seats["id"]);
    let ((t1, i1), (t2, i2)) = (position(&created["cursor"]), position(&seats["cursor"]));
    assert_eq!((t1, i1 + 1), (t2, i2), "the history part sits just before its row's own position");
    let (rest, _) = app.feed(Some(&cursor)).await;
    assert!(
        rest.iter().all(|c| c["subject"]["id"] != json!(hold_id) && c["subject"]["id"] != json!(event.id)),
        "{rest:?}"
    );

    // Filtered by type, a page ends after the whole row: the other part is not served again.
    let res = app
        .send(
            Method::GET,
            &format!("/v1/changes?types=hold.created&after={start}"),
            Some(&app.admin_token()),
            None,
            None,
        )
        .await;
    assert_eq!(res.body["changes"].as_array().unwrap().len(), 1, "{res:?}");
    assert_eq!(res.body["changes"][0]["id"], created["id"]);
    let after_row = res.body["next_cursor"].as_str().unwrap().to_owned();
    let res = app
        .send(
            Method::GET,
            &format!("/v1/changes?types=seats.changed&after={after_row}"),
            Some(&app.admin_token()),
            None,
            None,
        )
        .await;
    assert!(res.body["changes"].as_array().unwrap().iter().all(|c| c["id"] != seats["id"]), "{res:?}");

    // The confirm: one row, the booking's, carrying the hold's change, the booking's and the
    // seats sold (migration `one_change_row_per_confirm`).
    let confirmed = app.confirm("alice", hold_id).await;
    assert_eq!(confirmed.status, StatusCode::CREATED, "{confirmed:?}");
    let rows: Vec<(String, Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "select entity, hold_from_status, to_status, type from audit_log
          where hold_id = $1 or scope_id = $2 and type = 'seats.changed' order by id",
    )
    .bind(hold_id)
    .bind(event.id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let kinds = |entity: &str, hold_from: Option<&str>, to: &str, kind: Option<&str>| {
        (entity.to_owned(), hold_from.map(str::to_owned), Some(to.to_owned()), kind.map(str::to_owned))
    };
    assert_eq!(
        rows,
        [
            kinds("hold", None, "HELD", Some("seats.changed")),
            kinds("booking", Some("HELD"), "CONFIRMED", Some("seats.changed"))
        ]
    );
    // Read one per page, so that cursors fall between the row's three events: each comes once,
    // in the order the triggers wrote them, at three consecutive positions, the last the row's.
    let (after_confirm, cursor) = one_per_page(&app, cursor, 3).await;
    let types: Vec<&str> = after_confirm.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["hold.confirmed", "booking.confirmed", "seats.changed"], "{after_confirm:?}");
    assert_eq!(after_confirm[0]["subject"], json!({ "kind": "hold", "id": hold_id, "event_id": event.id }));
    assert_eq!(after_confirm[0]["data"], json!({ "status": "CONFIRMED", "user_id": "alice" }));
    assert_eq!(after_confirm[1]["subject"]["kind"], "booking");
    assert_eq!(after_confirm[1]["subject"]["id"], confirmed.body["id"]);
    assert_eq!(after_confirm[1]["data"]["status"], "CONFIRMED");
    assert_eq!(after_confirm[1]["data"]["hold_id"], json!(hold_id));
    assert_eq!(after_confirm[1]["data"]["total_cents"], confirmed.body["total_cents"]);
    let positions: Vec<(i64, i64)> = after_confirm.iter().map(|c| position(&c["cursor"])).collect();
    let (txid, last) = positions[2];
    assert_eq!(positions, [(txid, last - 2), (txid, last - 1), (txid, last)]);
    let row_id: i64 = sqlx::query_scalar("select id from audit_log where booking_id = $1")
        .bind(Uuid::parse_str(confirmed.body["id"].as_str().unwrap()).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(last, row_id, "the availability part sits at its row's own position");
    let ids: HashSet<&str> = after_confirm.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{after_confirm:?}");
    let sold = after_confirm[2]["data"]["seats"].as_array().unwrap();
    assert!(sold.iter().all(|s| s["status"] == "BOOKED" && s["version"] == 2), "{sold:?}");
    assert_eq!(sold.len(), 2);
    // The same three, whole pages: nothing more, nothing twice.
    let (again, _) = app.feed(Some(&start)).await;
    let again: Vec<&Value> = again.iter().filter(|c| c["type"] != "event.created").collect();
    assert_eq!(again.len(), 5, "{again:?}");
    assert_eq!(
        again[2..].iter().map(|c| &c["id"]).collect::<Vec<_>>(),
        after_confirm.iter().map(|c| &c["id"]).collect::<Vec<_>>()
    );
    let (rest, _) = app.feed(Some(&cursor)).await;
    assert!(rest.iter().all(|c| c["type"] == "event.created"), "{rest:?}");
    app.assert_invariants().await;
}

/// A night change's `(night, held, booked)`, as the feed tells it.
fn nights_told(change: &Value) -> Vec<(String, i64, i64)> {
    assert_eq!(change["type"], "nights.changed", "{change}");
    change["data"]["nights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["night"].as_str().unwrap().to_owned(), n["held"].as_i64().unwrap(), n["booked"].as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_room_hold_and_its_confirm_log_their_nights_in_their_own_rows_and_an_expiry_before_a_hold_is_announced() {
    let app = spawn_app_with(|c| c.jobs.hold_sweep_interval_ms = 3_600_000).await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-04", 2, 0).await;
    let held = app.room_hold("alice", inventory, "2027-03-01", "2027-03-03", 1).await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let hold_id = held.id();
    let booking = app.confirm("alice", hold_id).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");

    // One row for the hold (its history and its nights), one for the confirm (the hold's change,
    // the booking's and the nights sold): no row of the `nights_changed` trigger.
    let rows: Vec<(String, Option<String>, String, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "select entity, hold_from_status, to_status, type, scope_id from audit_log where hold_id = $1 order by id",
    )
    .bind(hold_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let row = |entity: &str, hold_from: Option<&str>, to: &str| {
        (
            entity.to_owned(),
            hold_from.map(str::to_owned),
            to.to_owned(),
            Some("nights.changed".to_owned()),
            Some(inventory),
        )
    };
    assert_eq!(rows, [row("hold", None, "HELD"), row("booking", Some("HELD"), "CONFIRMED")]);
    assert_eq!(app.count("select count(*) from audit_log where hold_id is null and type = 'nights.changed'").await, 0);

    // A hold that finds its night taken by a dead hold (past its expiry, not swept) expires it
    // first: that expiry is announced, and so is the new hold's night, each once.
    let body = json!({ "check_in": "2027-03-01", "check_out": "2027-03-02", "quantity": 1, "ttl_seconds": 1 });
    let dead = app.post(&format!("/v1/inventories/{inventory}/holds"), "carol", "c", &body).await;
    assert_eq!(dead.status, StatusCode::CREATED, "{dead:?}");
    eventually("carol's hold expires", Duration::from_secs(5), || async {
        app.count("select count(*) from holds where user_id = 'carol' and expires_at <= now()").await == 1
    })
    .await;
    let bob = app.room_hold("bob", inventory, "2027-03-01", "2027-03-02", 1).await;
    assert_eq!(bob.status, StatusCode::CREATED, "{bob:?}");

    let changes = app.feed_of_at_least(13).await;
    let types: Vec<&str> = changes.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "inventory.created",
            "inventory.nights_changed",
            "hold.created",
            "nights.changed",
            "hold.confirmed",
            "booking.confirmed",
            "nights.changed",
            "hold.created",
            "nights.changed",
            "hold.expired",
            "nights.changed",
            "hold.created",
            "nights.changed"
        ],
        "{changes:#?}"
    );
    let night = |n: &str, held: i64, booked: i64| (format!("2027-03-0{n}"), held, booked);
    assert_eq!(nights_told(&changes[3]), [night("1", 1, 0), night("2", 1, 0)]);
    assert_eq!(nights_told(&changes[6]), [night("1", 0, 1), night("2", 0, 1)]);
    assert_eq!(nights_told(&changes[8]), [night("1", 1, 1)]);
    assert_eq!(nights_told(&changes[10]), [night("1", 0, 1)], "carol's expiry");
    assert_eq!(nights_told(&changes[12]), [night("1", 1, 1)], "bob's hold");
    assert_eq!(changes[2]["subject"]["id"], json!(hold_id));
    assert_eq!(changes[3]["subject"]["kind"], "inventory");
    assert_eq!(changes[3]["subject"]["id"], json!(inventory));
    assert_eq!(changes[2]["request_id"], changes[3]["request_id"]);
    assert_eq!(changes[4]["subject"]["id"], json!(hold_id));
    assert_eq!(changes[4]["subject"]["inventory_id"], json!(inventory));
    assert_eq!(changes[5]["subject"]["id"], booking.body["id"]);
    let (txid, last) = position(&changes[6]["cursor"]);
    assert_eq!(
        [position(&changes[4]["cursor"]), position(&changes[5]["cursor"])],
        [(txid, last - 2), (txid, last - 1)],
        "the confirm's three events at consecutive positions"
    );
    assert_eq!(changes[9]["subject"]["id"], dead.body["id"]);
    assert_eq!(changes[11]["subject"]["id"], bob.body["id"]);
    assert_eq!(app.nights(inventory, "2027-03-01", "2027-03-02").await[0].3, 0);

    // A transaction that names an inventory whose nights log themselves (as the service's BEGIN
    // does) gives units back, or changes a night of another inventory, by another statement:
    // refused, not left unannounced.
    let other = app.create_inventory("2027-03-01", "2027-03-02", 2, 0).await;
    let mut conn = PgConnection::connect(&app.database.url).await.unwrap();
    for (target, change) in
        [(inventory, "booked = booked - 1"), (inventory, "capacity = 3"), (other, "held = held + 1")]
    {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "select set_config('holdfast.logged_hold', $1, true), set_config('holdfast.logged_scope', $2, true)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(inventory.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
        let refused = sqlx::query(sqlx::AssertSqlSafe(format!(
            "update inventory_nights set {change}, version = version + 1 where inventory_id = $1 and night = '2027-03-01'"
        )))
        .bind(target)
        .execute(&mut *tx)
        .await
        .unwrap_err();
        let refused = refused.as_database_error().unwrap();
        assert_eq!(refused.code().as_deref(), Some("P0001"), "{change}: {refused}");
        assert!(refused.message().contains("changed outside the statement that logs"), "{refused}");
        tx.rollback().await.unwrap();
    }
    app.assert_invariants().await;
}

/// A slot change's `(taken, freed)` spans, as the feed tells them.
fn slots_told(change: &Value) -> (Vec<(DateTime<Utc>, DateTime<Utc>)>, Vec<(DateTime<Utc>, DateTime<Utc>)>) {
    assert_eq!(change["type"], "slots.changed", "{change}");
    let spans = |key: &str| {
        change["data"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["start"].as_str().unwrap().parse().unwrap(), s["end"].as_str().unwrap().parse().unwrap()))
            .collect()
    };
    (spans("taken"), spans("freed"))
}

#[tokio::test]
async fn a_slot_hold_logs_the_slot_it_takes_in_its_own_row_and_an_expiry_before_it_is_announced() {
    let app = spawn_app_with(|c| c.jobs.hold_sweep_interval_ms = 3_600_000).await;
    let resource = app.create_resource(json!({})).await;
    let start = crate::slots::future_hour(3);
    let end = start + chrono::Duration::minutes(30);
    let body = json!({ "start": start.to_rfc3339(), "end": end.to_rfc3339(), "ttl_seconds": 1 });
    let dead = app.post(&format!("/v1/resources/{resource}/holds"), "carol", "c", &body).await;
    assert_eq!(dead.status, StatusCode::CREATED, "{dead:?}");

    // One row: the hold's history and the slot it took.
    let rows: Vec<(String, String, Option<String>, Option<Uuid>)> =
        sqlx::query_as("select entity, to_status, type, scope_id from audit_log where hold_id = $1 order by id")
            .bind(dead.id())
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, [("hold".to_owned(), "HELD".to_owned(), Some("slots.changed".to_owned()), Some(resource))]);

    // A hold on the same slot after that one's expiry (not swept): the expiry gives the slot
    // back, announced by the trigger; the new hold's row announces the slot taken again.
    eventually("carol's hold expires", Duration::from_secs(5), || async {
        app.count("select count(*) from holds where user_id = 'carol' and expires_at <= now()").await == 1
    })
    .await;
    let bob = app.slot_hold("bob", resource, start, end).await;
    assert_eq!(bob.status, StatusCode::CREATED, "{bob:?}");
    let changes = app.feed_of_at_least(7).await;
    let types: Vec<&str> = changes.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "resource.created",
            "hold.created",
            "slots.changed",
            "hold.expired",
            "slots.changed",
            "hold.created",
            "slots.changed"
        ],
        "{changes:#?}"
    );
    let slot = vec![(start, end)];
    assert_eq!(slots_told(&changes[2]), (slot.clone(), vec![]));
    assert_eq!(slots_told(&changes[4]), (vec![], slot.clone()), "carol's expiry");
    assert_eq!(slots_told(&changes[6]), (slot, vec![]), "bob's hold");
    assert_eq!(changes[1]["subject"]["id"], dead.body["id"]);
    assert_eq!(changes[3]["subject"]["id"], dead.body["id"]);
    assert_eq!(changes[5]["subject"]["id"], bob.body["id"]);
    assert_eq!(changes[6]["subject"]["id"], json!(resource));
    assert_eq!(changes[5]["request_id"], changes[6]["request_id"]);
    assert_eq!(app.count("select count(*) from audit_log where hold_id is null and type = 'slots.changed'").await, 1);

    // Bob's confirm changes no slot: one row, the booking's, carrying the hold's change too.
    let booking = app.confirm("bob", bob.id()).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    let rows: Vec<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
        "select entity, hold_from_status, to_status, type from audit_log where hold_id = $1 order by id",
    )
    .bind(bob.id())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("hold".to_owned(), None, "HELD".to_owned(), Some("slots.changed".to_owned())),
            ("booking".to_owned(), Some("HELD".to_owned()), "CONFIRMED".to_owned(), None)
        ]
    );
    let changes = app.feed_of_at_least(9).await;
    let confirm = &changes[7..];
    let types: Vec<&str> = confirm.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["hold.confirmed", "booking.confirmed"], "{changes:#?}");
    assert_eq!(confirm[0]["subject"], json!({ "kind": "hold", "id": bob.body["id"], "resource_id": resource }));
    assert_eq!(confirm[1]["subject"]["id"], booking.body["id"]);
    let (txid, last) = position(&confirm[1]["cursor"]);
    assert_eq!(position(&confirm[0]["cursor"]), (txid, last - 1));

    // A transaction that names a resource whose slots log themselves inserts a claim for
    // another hold, or for its hold on another resource, by another statement: refused.
    let logged = Uuid::new_v4();
    let later = (start + chrono::Duration::hours(2), start + chrono::Duration::hours(3));
    let mut conn = PgConnection::connect(&app.database.url).await.unwrap();
    for (hold, on) in [(Uuid::new_v4(), resource), (logged, Uuid::new_v4())] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "select set_config('holdfast.logged_hold', $1, true), set_config('holdfast.logged_scope', $2, true)",
        )
        .bind(logged.to_string())
        .bind(resource.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
        let refused = sqlx::query(
            "insert into slot_claims (hold_id, resource_id, span, blocked)
             values ($1, $2, tstzrange($3, $4, '[)'), tstzrange($3, $4, '[)'))",
        )
        .bind(hold)
        .bind(on)
        .bind(later.0)
        .bind(later.1)
        .execute(&mut *tx)
        .await
        .unwrap_err();
        let refused = refused.as_database_error().unwrap();
        assert_eq!(refused.code().as_deref(), Some("P0001"), "{refused}");
        assert!(refused.message().contains("outside the statement that logs"), "{refused}");
        tx.rollback().await.unwrap();
    }
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_hold_written_by_anyone_else_is_logged_by_the_triggers_and_no_seat_change_goes_unannounced() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 3).await;
    let claim = |hold: Uuid, seat: Uuid| {
        [
            sqlx::query("insert into holds (id, event_id, user_id, status, expires_at) values ($1, $2, 'sql', 'HELD', now() + interval '1 minute')")
                .bind(hold)
                .bind(event.id),
            sqlx::query("update seats set hold_id = $1, hold_expires_at = now() + interval '1 minute', version = version + 1 where id = $2")
                .bind(hold)
                .bind(seat),
            sqlx::query("insert into hold_seats (hold_id, seat_id) values ($1, $2)").bind(hold).bind(seat),
        ]
    };
    // Straight in SQL, as any writer but the service: the triggers write the hold's and the
    // seat's changes.
    let hold = Uuid::new_v4();
    let mut conn = PgConnection::connect(&app.database.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    for statement in claim(hold, event.seats[0]) {
        statement.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let changes = app.feed_of_at_least(3).await;
    let created: Vec<_> =
        changes.iter().filter(|c| c["type"] == "hold.created" && c["subject"]["id"] == json!(hold)).collect();
    assert_eq!(created.len(), 1, "{changes:?}");
    let held: Vec<_> = of_type(&changes, "seats.changed")
        .into_iter()
        .filter(|c| {
            c["data"]["seats"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["id"] == json!(event.seats[0]) && s["status"] == "HELD")
        })
        .collect();
    assert_eq!(held.len(), 1, "{changes:?}");

    // A transaction that names a hold whose changes log themselves (as the service's BEGIN does)
    // claims a seat for another hold, by another statement: refused, not left unannounced.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('holdfast.logged_hold', $1, true)")
        .bind(Uuid::new_v4().to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let [insert, update, _] = claim(Uuid::new_v4(), event.seats[1]);
    insert.execute(&mut *tx).await.unwrap();
    let refused = update.execute(&mut *tx).await.unwrap_err();
    let refused = refused.as_database_error().unwrap();
    assert_eq!(refused.code().as_deref(), Some("P0001"), "{refused}");
    assert!(refused.message().contains("changed outside the statement that logs"), "{refused}");
    tx.rollback().await.unwrap();
    app.assert_invariants().await;
}

#[tokio::test]
async fn two_change_events_at_one_position_are_an_invariant_violation() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let hold = app.hold("alice", event.id, &event.seats[..1], "shared").await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    app.assert_invariants().await;

    // In one transaction, a row, then a row of several events whose positions below its own
    // take the first's, as if the ids had stopped stepping by 3: a hold's row of two events one
    // above it, then a confirm's row of three two above it. Each is caught.
    let mut conn = PgConnection::connect(&app.database.url).await.unwrap();
    let rows_above = [
        "insert into audit_log (id, hold_id, entity, to_status, type, scope_id, data, actor, actor_role)
         overriding system value values ($1 + 1, $2, 'hold', 'HELD', 'seats.changed', $4, '[]', 'sql', 'system')",
        "insert into audit_log (id, hold_id, booking_id, entity, hold_from_status, to_status, type, scope_id, data,
                                actor, actor_role)
         overriding system value values ($1 + 2, $2, $3, 'booking', 'HELD', 'CONFIRMED', 'seats.changed', $4, '[]',
                                         'sql', 'system')",
    ];
    for (caught, above) in rows_above.into_iter().enumerate() {
        let mut tx = conn.begin().await.unwrap();
        let id: i64 = sqlx::query_scalar(
            "insert into audit_log (id, type, scope_id, actor, actor_role) overriding system value
             values (nextval(pg_get_serial_sequence('audit_log', 'id')) + 1, 'seats.changed', $1, 'sql', 'system')
             returning id",
        )
        .bind(event.id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        sqlx::query(above)
            .bind(id)
            .bind(hold.id())
            .bind(Uuid::new_v4())
            .bind(event.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let violations = holdfast::db::invariants::violations(&app.db).await.unwrap();
        let expected = ("two change events at one feed position", caught as i64 + 1);
        assert!(violations.contains(&expected), "{violations:?}");
    }
}

/// The nights of every `nights.changed` in the feed, in feed order.
async fn nights_in_feed(app: &TestApp, n: usize) -> Vec<Value> {
    app.feed_of_at_least(n)
        .await
        .into_iter()
        .filter(|c| c["type"] == "nights.changed")
        .map(|c| c["data"].clone())
        .collect()
}

/// With COMPACT_NIGHT_CHANGES, room holds and confirms store their nights compact, and the feed
/// tells exactly what the object form told: the same holds, confirms and nights on two services,
/// one storing objects and one compact, give the same night changes.
#[tokio::test]
async fn compact_night_changes_read_in_the_feed_as_the_objects_they_replace() {
    let mut told = Vec::new();
    for compact in [false, true] {
        let app = spawn_app_with(|c| c.streams.compact_night_changes = compact).await;
        let inventory = app.create_inventory("2027-03-01", "2027-03-04", 3, 1).await;
        let alice = app.room_hold("alice", inventory, "2027-03-01", "2027-03-03", 2).await;
        assert_eq!(alice.status, StatusCode::CREATED, "{alice:?}");
        let booking = app.confirm("alice", alice.id()).await;
        assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
        let bob = app.room_hold("bob", inventory, "2027-03-02", "2027-03-04", 2).await;
        assert_eq!(bob.status, StatusCode::CREATED, "{bob:?}");

        let stored = app
            .count("select count(*) from audit_log where type = 'nights.changed' and jsonb_typeof(data) = 'array'")
            .await;
        assert_eq!(stored, if compact { 3 } else { 0 }, "compact: {compact}");
        // inventory.created, inventory.nights_changed, then per hold 2 and per confirm 3 events.
        told.push(nights_in_feed(&app, 9).await);
        app.assert_invariants().await;
    }
    assert_eq!(told[0].len(), 3, "{told:#?}");
    assert_eq!(told[1], told[0], "compact nights read as the objects they replace");
    // Bob's second night: 2 booked, 2 held, of 3 and 1 over.
    assert_eq!(
        told[1][2]["nights"][0],
        json!({ "night": "2027-03-02", "capacity": 3, "overbooking_allowance": 1, "closed": false,
                "held": 2, "booked": 2, "available": 0, "version": 3 })
    );
}

/// Compact nights expand, in Postgres (`change_data`, which the feed and webhooks read) and in the
/// service (`nights_changed_data`, which the live streams read), to the very objects
/// `nights_json` makes, closed and full nights too; data already in the object form is left as it is.
#[tokio::test]
async fn compact_nights_expand_alike_in_postgres_and_in_the_service() {
    use holdfast::db::changes::nights_changed_data;

    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-04", 4, 2).await;
    sqlx::query(
        "update inventory_nights set closed = night = '2027-03-01', held = 1, booked = case when night = '2027-03-03' then 5 else 2 end,
                version = version + 1
          where inventory_id = $1",
    )
    .bind(inventory)
    .execute(&app.db)
    .await
    .unwrap();
    let (compact, objects, expanded): (Value, Value, Value) = sqlx::query_as(
        "select jsonb_agg(nights_compact(n) order by night),
                jsonb_build_object('nights', jsonb_agg(nights_json(n) order by night)),
                change_data('nights.changed', jsonb_agg(nights_compact(n) order by night))
           from inventory_nights n where inventory_id = $1",
    )
    .bind(inventory)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let available: Vec<&Value> = objects["nights"].as_array().unwrap().iter().map(|n| &n["available"]).collect();
    assert_eq!(available, [&json!(0), &json!(3), &json!(0)], "{objects}");
    assert_eq!(expanded, objects);
    assert_eq!(nights_changed_data(compact), objects);

    // Counts past the capacity (no night can hold them, but the expansion clamps as nights_json does).
    let odd = json!([["2027-01-01", 1, 0, false, 2, 0, 5]]);
    let (in_postgres,): (Value,) =
        sqlx::query_as("select change_data('nights.changed', $1)").bind(&odd).fetch_one(&app.db).await.unwrap();
    assert_eq!(in_postgres["nights"][0]["available"], json!(0));
    assert_eq!(nights_changed_data(odd), in_postgres);
    for (kind, already) in [("nights.changed", objects.clone()), ("inventory.nights_changed", objects)] {
        let (read,): (Value,) =
            sqlx::query_as("select change_data($1, $2)").bind(kind).bind(&already).fetch_one(&app.db).await.unwrap();
        assert_eq!(read, already);
        assert_eq!(nights_changed_data(already.clone()), already);
    }
}

/// The two night forms are inlined into the statements that call them (a SQL function is only
/// when declared no less volatile than its body): else each room hold, room confirm and night
/// trigger parses and plans the function's body again at every execution.
#[tokio::test]
async fn the_night_forms_are_inlined_into_the_statements_that_call_them() {
    let app = spawn_app().await;
    let plan: Vec<(String,)> =
        sqlx::query_as("explain (verbose, costs off) select nights_json(n), nights_compact(n) from inventory_nights n")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let plan = plan.into_iter().map(|(line,)| line).collect::<Vec<_>>().join("\n");
    assert!(plan.contains("jsonb_build_object(") && plan.contains("jsonb_build_array("), "{plan}");
    assert!(!plan.contains("nights_json(") && !plan.contains("nights_compact("), "{plan}");
}
