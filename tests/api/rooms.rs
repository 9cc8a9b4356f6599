//! Quantity inventory per night, through HTTP: counters never go over, every transition moves
//! them in the same transaction, stop-sell and capacity changes, and the integrity check.

use std::sync::Arc;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::app::{Res, TestApp, eventually, spawn_app};

impl TestApp {
    pub async fn create_inventory(&self, from: &str, to: &str, capacity: i64, allowance: i64) -> Uuid {
        let body = json!({ "name": "Double room", "from": from, "to": to, "capacity": capacity,
                           "overbooking_allowance": allowance });
        let key = Uuid::new_v4().to_string();
        let res = self.send(Method::POST, "/v1/inventories", Some(&self.admin_token()), Some(&key), Some(&body)).await;
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
        res.id()
    }

    pub async fn room_hold(&self, user: &str, inventory: Uuid, check_in: &str, check_out: &str, quantity: i64) -> Res {
        let body = json!({ "check_in": check_in, "check_out": check_out, "quantity": quantity });
        self.post(&format!("/v1/inventories/{inventory}/holds"), user, &Uuid::new_v4().to_string(), &body).await
    }

    pub async fn patch_nights(&self, inventory: Uuid, body: &Value) -> Res {
        let path = format!("/v1/inventories/{inventory}/nights");
        self.send(Method::PATCH, &path, Some(&self.admin_token()), None, Some(body)).await
    }

    /// (night, held, booked, available) per night of the range.
    pub async fn nights(&self, inventory: Uuid, from: &str, to: &str) -> Vec<(String, i64, i64, i64)> {
        let res = self.get(&format!("/v1/inventories/{inventory}/availability?from={from}&to={to}"), None).await;
        assert_eq!(res.status, StatusCode::OK, "{res:?}");
        res.body["nights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let int = |k: &str| n[k].as_i64().unwrap();
                (n["night"].as_str().unwrap().to_owned(), int("held"), int("booked"), int("available"))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_holds_on_capacity_ten_exactly_ten_succeed() {
    let app = Arc::new(spawn_app().await);
    let inventory = app.create_inventory("2027-03-01", "2027-03-08", 10, 0).await;

    let responses = join_all((0..20).map(|i| {
        let app = app.clone();
        async move { app.room_hold(&format!("guest-{i}"), inventory, "2027-03-02", "2027-03-05", 1).await }
    }))
    .await;

    let created = responses.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(created, 10, "{:?}", responses.iter().map(|r| (r.status, r.code().to_owned())).collect::<Vec<_>>());
    for loser in responses.iter().filter(|r| r.status != StatusCode::CREATED) {
        loser.assert_problem(409, "INSUFFICIENT_INVENTORY");
        assert_eq!(loser.body["available"], 0, "{loser:?}");
        assert_eq!(loser.body["night"], "2027-03-02", "names the first short night: {loser:?}");
    }
    let nights = app.nights(inventory, "2027-03-01", "2027-03-06").await;
    let held: Vec<i64> = nights.iter().map(|n| n.1).collect();
    assert_eq!(held, vec![0, 10, 10, 10, 0], "{nights:?}");
    let over = app.count("select count(*) from inventory_nights where held + booked > capacity").await;
    assert_eq!(over, 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn confirm_cancel_release_and_expiry_move_every_nights_counters() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-05", 5, 0).await;

    let hold = app.room_hold("alice", inventory, "2027-03-01", "2027-03-04", 2).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    assert_eq!(hold.body["kind"], "rooms");
    assert_eq!(hold.body["quantity"], 2);
    assert_eq!(hold.body["check_out"], "2027-03-04");
    assert_eq!(
        app.nights(inventory, "2027-03-01", "2027-03-05").await.iter().map(|n| n.1).collect::<Vec<_>>(),
        [2, 2, 2, 0]
    );

    let booking = app.confirm("alice", hold.id()).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!(booking.body["kind"], "rooms");
    let nights = app.nights(inventory, "2027-03-01", "2027-03-05").await;
    assert_eq!(
        nights.iter().map(|n| (n.1, n.2, n.3)).collect::<Vec<_>>(),
        [(0, 2, 3), (0, 2, 3), (0, 2, 3), (0, 0, 5)]
    );

    let cancel = app.post(&format!("/v1/bookings/{}/cancel", booking.id()), "alice", "c-1", &json!({})).await;
    assert_eq!(cancel.status, StatusCode::OK, "{cancel:?}");
    let nights = app.nights(inventory, "2027-03-01", "2027-03-05").await;
    assert!(nights.iter().all(|n| (n.1, n.2, n.3) == (0, 0, 5)), "cancel restores every night: {nights:?}");

    let released = app.room_hold("bob", inventory, "2027-03-02", "2027-03-03", 5).await;
    assert_eq!(released.status, StatusCode::CREATED, "{released:?}");
    let res =
        app.send(Method::DELETE, &format!("/v1/holds/{}", released.id()), Some(&app.token("bob")), None, None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{res:?}");
    assert!(app.nights(inventory, "2027-03-02", "2027-03-03").await.iter().all(|n| n.1 == 0));

    let body = json!({ "check_in": "2027-03-03", "check_out": "2027-03-05", "quantity": 3, "ttl_seconds": 1 });
    let short = app.post(&format!("/v1/inventories/{inventory}/holds"), "carol", "short", &body).await;
    assert_eq!(short.status, StatusCode::CREATED, "{short:?}");
    let hold_id = short.id();
    eventually("the sweeper expires the hold and gives its units back", std::time::Duration::from_secs(10), || async {
        let status: String = sqlx::query_scalar("select status from holds where id = $1")
            .bind(hold_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        status == "EXPIRED" && app.count("select coalesce(sum(held), 0)::int8 from inventory_nights").await == 0
    })
    .await;
    assert_eq!(holdfast::db::inventories::counter_mismatches(&app.db).await.unwrap(), 0);
    app.assert_invariants().await;
}

/// An app whose sweeper does not run, and an inventory of one night (2027-03-01) with one unit,
/// held by a hold past its expiry.
async fn one_unit_held_by_a_dead_hold() -> (TestApp, Uuid, Uuid) {
    let app = crate::support::app::spawn_app_with(|c| c.jobs.hold_sweep_interval_ms = 3_600_000).await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-02", 1, 0).await;
    let body = json!({ "check_in": "2027-03-01", "check_out": "2027-03-02", "quantity": 1, "ttl_seconds": 1 });
    let first = app.post(&format!("/v1/inventories/{inventory}/holds"), "alice", "a", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    eventually("the hold's expiry passes", std::time::Duration::from_secs(5), || async {
        app.count("select count(*) from holds where expires_at <= now()").await == 1
    })
    .await;
    (app, inventory, first.id())
}

/// A transaction that holds every night row of the inventory (as a request does while it holds
/// them), until it commits.
async fn keep_the_nights(app: &TestApp, inventory: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut busy = app.db.begin().await.unwrap();
    sqlx::query("select 1 from inventory_nights where inventory_id = $1 for update")
        .bind(inventory)
        .execute(&mut *busy)
        .await
        .unwrap();
    busy
}

#[tokio::test]
async fn an_expired_hold_frees_its_units_at_once_even_before_the_sweeper() {
    let (app, inventory, _) = one_unit_held_by_a_dead_hold().await;
    assert_eq!(app.nights(inventory, "2027-03-01", "2027-03-02").await[0].3, 1, "availability ignores the dead hold");
    // A dead hold does not block a new one, nor lowering the capacity, even before the sweeper.
    let lower = app.patch_nights(inventory, &json!({ "from": "2027-03-01", "to": "2027-03-02", "capacity": 0 })).await;
    assert_eq!(lower.status, StatusCode::OK, "{lower:?}");
    assert_eq!(lower.body["nights"][0]["capacity"], 0);
    let restore =
        app.patch_nights(inventory, &json!({ "from": "2027-03-01", "to": "2027-03-02", "capacity": 1 })).await;
    assert_eq!(restore.status, StatusCode::OK, "{restore:?}");
    let second = app.room_hold("bob", inventory, "2027-03-01", "2027-03-02", 1).await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_hold_waiting_behind_the_sweeper_gets_the_units_it_frees() {
    let (app, inventory, dead) = one_unit_held_by_a_dead_hold().await;
    let version = "select version from inventory_nights";
    let before = app.count(version).await;
    // A sweeper (which takes no lock in Redis) expires the hold and gives its unit back, and has
    // not committed yet when the next hold's statement starts: that statement waits for the
    // night's row, then finds the unit free.
    let mut sweeper = app.db.begin().await.unwrap();
    assert_eq!(holdfast::db::holds::expire_batch(&mut sweeper, 10).await.unwrap(), 1);
    let taker = app.room_hold("bob", inventory, "2027-03-01", "2027-03-02", 1);
    let sweeper_commits = async {
        let waiting =
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'";
        eventually("the hold's statement waiting behind the sweeper", std::time::Duration::from_secs(10), || async {
            app.count(waiting).await > 0
        })
        .await;
        sweeper.commit().await.unwrap();
    };
    let (taker, ()) = tokio::join!(taker, sweeper_commits);
    assert_eq!(taker.status, StatusCode::CREATED, "{taker:?}");
    assert_eq!(app.nights(inventory, "2027-03-01", "2027-03-02").await[0].1, 1);
    assert_eq!(app.count(version).await, before + 2, "the sweeper's change and the hold's, each counted");
    let status: String =
        sqlx::query_scalar("select status from holds where id = $1").bind(dead).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, "EXPIRED");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_sweeper_yields_to_a_hold_that_expires_the_same_dead_hold() {
    let (app, inventory, dead) = one_unit_held_by_a_dead_hold().await;
    let waiting = |n: i64| {
        let app = &app;
        async move {
            let sql =
                "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'";
            eventually("transactions waiting for a lock", std::time::Duration::from_secs(10), || async {
                app.count(sql).await >= n
            })
            .await;
        }
    };
    // The night is busy, and both queue for it: first bob's hold, then a sweeper batch that has
    // already taken the dead hold's row. When the night is free, the hold finds it full, and goes
    // to expire the dead hold that the sweeper has, while the sweeper waits for the night.
    let busy = keep_the_nights(&app, inventory).await;
    let taker = app.room_hold("bob", inventory, "2027-03-01", "2027-03-02", 1);
    let sweeper = async {
        waiting(1).await;
        let mut sweeper = app.db.begin().await.unwrap();
        let swept = holdfast::db::holds::expire_batch(&mut sweeper, 10).await;
        sweeper.rollback().await.unwrap();
        swept
    };
    let night_freed = async {
        waiting(2).await;
        busy.commit().await.unwrap();
    };
    let (taker, swept, ()) = tokio::join!(taker, sweeper, night_freed);
    // The sweeper gave way at once: no deadlock for Postgres to break, and the hold got the night.
    let err = swept.expect_err("the sweeper must give way, not wait for the hold");
    assert!(holdfast::db::holds::sweep_yielded(&err), "{err:?}");
    assert_eq!(taker.status, StatusCode::CREATED, "{taker:?}");
    let status: String =
        sqlx::query_scalar("select status from holds where id = $1").bind(dead).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, "EXPIRED");
    assert_eq!(app.nights(inventory, "2027-03-01", "2027-03-02").await[0].1, 1);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_sweeper_kept_from_a_night_tries_again_at_its_next_tick() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-02", 1, 0).await;
    let body = json!({ "check_in": "2027-03-01", "check_out": "2027-03-02", "quantity": 1, "ttl_seconds": 2 });
    let hold = app.post(&format!("/v1/inventories/{inventory}/holds"), "alice", "a", &body).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    // Someone keeps the night's row from before the hold expires.
    let busy = keep_the_nights(&app, inventory).await;
    eventually("the sweeper giving way to the row's holder", std::time::Duration::from_secs(10), || async {
        app.metric("holdfast_hold_sweeps_yielded_total", "").await >= 2.0
    })
    .await;
    let status = "select status from holds";
    let status_now = || async { sqlx::query_scalar::<_, String>(status).fetch_one(&app.db).await.unwrap() };
    assert_eq!(status_now().await, "HELD", "each batch rolled back");
    assert_eq!(app.metric("holdfast_job_errors_total", "hold_expiry").await, 0.0, "giving way is not an error");
    busy.commit().await.unwrap();
    eventually("the sweeper expiring the hold once the row is free", std::time::Duration::from_secs(10), || async {
        status_now().await == "EXPIRED"
    })
    .await;
    assert_eq!(app.count("select held::int8 from inventory_nights").await, 0);
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_stop_sell_refuses_stays_that_cross_it_and_capacity_cannot_go_below_what_is_sold() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-05", 3, 0).await;
    let hold = app.room_hold("alice", inventory, "2027-03-01", "2027-03-03", 2).await;
    assert_eq!(hold.status, StatusCode::CREATED);

    // Stop-sell on the second night: a stay that crosses it is refused, naming it.
    let closed =
        app.patch_nights(inventory, &json!({ "from": "2027-03-02", "to": "2027-03-03", "closed": true })).await;
    assert_eq!(closed.status, StatusCode::OK, "{closed:?}");
    assert_eq!(closed.body["nights"][0]["closed"], true);
    let refused = app.room_hold("bob", inventory, "2027-03-01", "2027-03-04", 1).await;
    refused.assert_problem(409, "INSUFFICIENT_INVENTORY");
    assert_eq!(refused.body["night"], "2027-03-02");
    assert_eq!(refused.body["closed"], true);
    let other = app.room_hold("bob", inventory, "2027-03-03", "2027-03-04", 1).await;
    assert_eq!(other.status, StatusCode::CREATED, "other nights still sell: {other:?}");

    // Lowering capacity below what is held or sold is refused; nothing changes.
    let lower = app.patch_nights(inventory, &json!({ "from": "2027-03-01", "to": "2027-03-05", "capacity": 1 })).await;
    lower.assert_problem(409, "CAPACITY_BELOW_SOLD");
    assert_eq!(lower.body["night"], "2027-03-01");
    assert_eq!(lower.body["sold"], 2);
    let caps = app.count("select count(*) from inventory_nights where capacity = 3").await;
    assert_eq!(caps, 4, "the refused PATCH changed nothing");

    // Reopening, raising capacity and extending the range on sale.
    let reopen = app
        .patch_nights(inventory, &json!({ "from": "2027-03-01", "to": "2027-03-07", "closed": false, "capacity": 4 }))
        .await;
    assert_eq!(reopen.status, StatusCode::OK, "{reopen:?}");
    assert_eq!(reopen.body["nights"].as_array().unwrap().len(), 6);
    let stay = app.room_hold("bob", inventory, "2027-03-01", "2027-03-07", 2).await;
    assert_eq!(stay.status, StatusCode::CREATED, "{stay:?}");
    let full = app.room_hold("carol", inventory, "2027-03-01", "2027-03-02", 1).await;
    full.assert_problem(409, "INSUFFICIENT_INVENTORY");
    assert_eq!(full.body["available"], 0);

    // Nights not on sale at all are refused like closed ones.
    let outside = app.room_hold("dave", inventory, "2027-03-07", "2027-03-08", 1).await;
    outside.assert_problem(409, "INSUFFICIENT_INVENTORY");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_overbooking_allowance_sells_past_capacity_and_bad_stays_are_refused() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-02", 1, 1).await;
    for user in ["a", "b"] {
        assert_eq!(app.room_hold(user, inventory, "2027-03-01", "2027-03-02", 1).await.status, StatusCode::CREATED);
    }
    app.room_hold("c", inventory, "2027-03-01", "2027-03-02", 1).await.assert_problem(409, "INSUFFICIENT_INVENTORY");

    app.room_hold("c", inventory, "2027-03-02", "2027-03-01", 1).await.assert_problem(422, "VALIDATION_FAILED");
    app.room_hold("c", inventory, "2027-03-01", "2027-03-02", 0).await.assert_problem(422, "VALIDATION_FAILED");
    app.room_hold("c", Uuid::new_v4(), "2027-03-01", "2027-03-02", 1).await.assert_problem(404, "NOT_FOUND");
    let res = app.send(Method::POST, "/v1/inventories", Some(&app.token("mallory")), Some("k"), Some(&json!({}))).await;
    res.assert_problem(403, "FORBIDDEN");
    let availability = app.get(&format!("/v1/inventories/{inventory}/availability?from=2027-03-01"), None).await;
    availability.assert_problem(422, "VALIDATION_FAILED");
    app.assert_invariants().await;
}

#[tokio::test]
async fn a_retried_room_hold_books_once_and_replays_its_answer() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-03", 4, 0).await;
    let body = json!({ "check_in": "2027-03-01", "check_out": "2027-03-03", "quantity": 2 });
    let path = format!("/v1/inventories/{inventory}/holds");
    let first = app.post(&path, "alice", "same-key", &body).await;
    let again = app.post(&path, "alice", "same-key", &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.body, again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(app.nights(inventory, "2027-03-01", "2027-03-03").await.iter().all(|n| n.1 == 2));
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_integrity_check_is_clean_and_catches_a_tampered_counter() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-03-01", "2027-03-03", 5, 0).await;
    let hold = app.room_hold("alice", inventory, "2027-03-01", "2027-03-03", 2).await;
    app.confirm("alice", hold.id()).await;
    app.room_hold("bob", inventory, "2027-03-02", "2027-03-03", 1).await;

    let admin = app.admin_token();
    let res = app.send(Method::GET, "/v1/admin/integrity", Some(&admin), None, None).await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    assert_eq!(res.body["ok"], true, "{res:?}");
    app.get("/v1/admin/integrity", Some("alice")).await.assert_problem(403, "FORBIDDEN");

    // A counter moved outside the service is caught, by the endpoint and in the metric.
    sqlx::query("update inventory_nights set held = held + 1 where night = '2027-03-01'")
        .execute(&app.db)
        .await
        .unwrap();
    let res = app.send(Method::GET, "/v1/admin/integrity", Some(&admin), None, None).await;
    assert_eq!(res.body["ok"], false, "{res:?}");
    assert_eq!(res.body["violations"][0]["check"], "night counters differ from its live holds and bookings");
    assert_eq!(res.body["violations"][0]["count"], 1);
    let raw = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        raw.contains(
            "holdfast_invariant_violations{check=\"night counters differ from its live holds and bookings\"} 1"
        ),
        "{raw}"
    );
}
