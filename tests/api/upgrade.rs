//! Rolling upgrades: migrations run at start-up (README), so for a while instances of the
//! previous release serve beside this release's schema. What they write must still be served, and
//! what this release writes must still read right to them. Their statements are replayed here
//! verbatim, as they sent them, against this release's schema and service.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::support::app::spawn_app;

/// The previous release's hold statement (`db::holds::create` before the migration
/// `hold_seats_in_the_hold_row`), which records a hold's seats as rows of `hold_seats`.
const PREVIOUS_CREATE_HOLD: &str = r#"with hold as (
             insert into holds (id, event_id, user_id, status, expires_at)
             values ($1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second')
             returning expires_at, created_at
         ), claimed as (
             update seats
                set hold_id = $1, hold_expires_at = (select expires_at from hold), version = version + 1
              where event_id = $2 and id = any($5)
                and booking_id is null
                and (hold_id is null or hold_expires_at <= now())
                and exists (select 1 from events e
                             where e.id = $2 and e.starts_at > now()
                               and ($6 or ((e.on_sale_at is null or e.on_sale_at <= now())
                                           and (not e.queue_enabled
                                                or exists (select 1 from queue_tickets t
                                                            where t.id = $7 and t.event_id = $2 and t.user_id = $3
                                                              and t.status = 'admitted'
                                                              and t.admission_expires_at > now())))))
             returning id, price_cents, version
         ), recorded as (
             insert into hold_seats (hold_id, seat_id) select $1, id from claimed returning seat_id
         ), logged as (
             insert into audit_log (hold_id, entity, to_status, detail, type, scope_id, data, actor, actor_role, request_id)
             select $1, 'hold', 'HELD', jsonb_build_object('expires_at', hold.expires_at), 'seats.changed', $2,
                    coalesce((select jsonb_agg(jsonb_build_array(c.id, 'HELD', c.version) order by c.id) from claimed c),
                             '[]'),
                    change_actor(), change_actor_role(), change_request_id()
               from hold
              where change_logged_hold() = $1
         )
         select array(select seat_id from recorded order by seat_id) as "claimed!",
                (select coalesce(sum(price_cents), 0)::int8 from claimed) as "total_cents!",
                hold.expires_at as "expires_at!", hold.created_at as "created_at!",
                (select max_seats_per_buyer from events where id = $2) as buyer_limit
           from hold"#;

/// The previous release's BEGIN settings: who acts, and the hold whose statement logs itself
/// (`""` for none). It had no `holdfast.logged_scope`.
async fn previous_release_begin(tx: &mut sqlx::PgConnection, user: &str, logged_hold: &str) {
    sqlx::query(
        "select set_config('holdfast.actor', $1, true), set_config('holdfast.actor_role', 'user', true),
                set_config('holdfast.request_id', '', true), set_config('holdfast.logged_hold', $2, true)",
    )
    .bind(user)
    .bind(logged_hold)
    .execute(tx)
    .await
    .unwrap();
}

/// Makes a hold as the previous release did: its BEGIN's settings, then its statement.
async fn previous_release_hold(db: &sqlx::PgPool, user: &str, event: Uuid, seats: &[Uuid]) -> Uuid {
    let hold_id = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    previous_release_begin(&mut tx, user, &hold_id.to_string()).await;
    let claimed: Vec<Uuid> = sqlx::query_scalar(PREVIOUS_CREATE_HOLD)
        .bind(hold_id)
        .bind(event)
        .bind(user)
        .bind(600_i64)
        .bind(seats)
        .bind(false)
        .bind(None::<Uuid>)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(claimed.len(), seats.len(), "the previous release's statement claims every seat");
    tx.commit().await.unwrap();
    hold_id
}

fn sorted(seats: &[Uuid]) -> serde_json::Value {
    let mut ids: Vec<String> = seats.iter().map(Uuid::to_string).collect();
    ids.sort();
    json!(ids)
}

#[tokio::test]
async fn holds_made_by_the_previous_release_are_read_extended_confirmed_and_released() {
    let app = spawn_app().await;
    let event = app.create_event(1, 2, 4).await;
    let (kept, let_go) = (&event.seats[0..2], &event.seats[2..5]);
    let confirmed = previous_release_hold(&app.db, "alice", event.id, kept).await;
    let released = previous_release_hold(&app.db, "alice", event.id, let_go).await;
    assert_eq!(app.count("select count(*) from hold_seats_before").await, 5, "their seat rows are kept as they were");

    let read = app.get(&format!("/v1/holds/{confirmed}"), Some("alice")).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(read.body["seat_ids"], sorted(kept));
    assert_eq!(read.body["total_cents"], 5000);
    let extended =
        app.post(&format!("/v1/holds/{confirmed}/extend"), "alice", "e", &json!({ "ttl_seconds": 900 })).await;
    assert_eq!(extended.status, StatusCode::OK, "{extended:?}");
    let booking = app.confirm("alice", confirmed).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!(booking.body["seat_ids"], sorted(kept));
    assert_eq!(booking.body["total_cents"], 5000);

    let token = app.token("alice");
    let res = app.send(Method::DELETE, &format!("/v1/holds/{released}"), Some(&token), None, None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{res:?}");
    assert_eq!(app.hold("bob", event.id, let_go, "b").await.status, StatusCode::CREATED, "the released seats are free");
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_previous_release_reads_this_releases_holds_from_hold_seats() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let seats = &event.seats[1..3];
    let hold = app.hold("alice", event.id, seats, "h").await.id();
    let direct = app
        .post(&format!("/v1/events/{}/bookings", event.id), "bob", "d", &json!({ "seat_ids": [event.seats[3]] }))
        .await;
    assert_eq!(direct.status, StatusCode::CREATED, "{direct:?}");

    // Where the previous release looks for a hold's seats (`hold_seats`), for both kinds of hold.
    let seats_of = |hold: Uuid| {
        sqlx::query_scalar::<_, Uuid>("select seat_id from hold_seats where hold_id = $1 order by seat_id")
            .bind(hold)
            .fetch_all(&app.db)
    };
    let mut expected = seats.to_vec();
    expected.sort();
    assert_eq!(seats_of(hold).await.unwrap(), expected);
    let direct_hold: Uuid = direct.body["hold_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(seats_of(direct_hold).await.unwrap(), vec![event.seats[3]]);
    // This release writes them only in the hold's row.
    assert_eq!(app.count("select count(*) from hold_seats_before").await, 0);
    assert_eq!(app.count("select count(*) from holds where cardinality(seat_ids) > 0").await, 2);
}

/// The previous release's room hold statement (`db::inventories::create_hold` before the
/// migration `room_and_slot_holds_log_their_availability`): the triggers log its hold and its nights.
const PREVIOUS_CREATE_ROOM_HOLD: &str = r#"with hold as (
             insert into holds (id, inventory_id, user_id, status, expires_at)
             values ($1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second')
             returning expires_at, created_at
         ), taken as (
             update inventory_nights
                set held = held + $7, version = version + 1
              where inventory_id = $2 and night >= $5 and night < $6 and not closed
                and held + booked + $7 <= capacity + overbooking_allowance
             returning night
         ), recorded as (
             insert into hold_nights (hold_id, inventory_id, night, quantity)
             select $1, $2, night, $7 from taken
             returning night
         )
         select (select count(*) from recorded) as "nights!", hold.expires_at as "expires_at!",
                hold.created_at as "created_at!"
           from hold"#;

/// The previous release's room confirm (`db::bookings::confirm_hold` for rooms, before the same
/// migration): it writes the hold's and the booking's change rows itself, with its hold named in
/// `holdfast.logged_hold`, and leaves the nights to the `nights_changed` trigger.
const PREVIOUS_CONFIRM_ROOM_HOLD: &str = r#"with moved as (
                     update holds set status = 'CONFIRMED', version = version + 1, updated_at = now()
                      where id = $1 and version = $2 and status = 'HELD' and expires_at > now()
                     returning id, inventory_id
                 ), booking as (
                     insert into bookings (id, inventory_id, hold_id, user_id, status, payment_reference, total_cents)
                     select $3, inventory_id, id, $4, 'CONFIRMED', $5, 0 from moved
                     returning created_at
                 ), logged as (
                     insert into audit_log (hold_id, booking_id, entity, from_status, to_status, actor, actor_role, request_id)
                     select $1, r.booking_id, r.entity, r.from_status, 'CONFIRMED',
                            change_actor(), change_actor_role(), change_request_id()
                       from moved
                      cross join lateral (values (1, null::uuid, 'hold', 'HELD'), (2, $3, 'booking', null))
                                 as r(ord, booking_id, entity, from_status)
                      where change_logged_hold() = $1 and exists (select 1 from booking)
                      order by r.ord
                 ), nights as (
                     update inventory_nights n
                        set held = n.held - hn.quantity, booked = n.booked + hn.quantity, version = n.version + 1
                       from hold_nights hn
                      where hn.hold_id = $1 and n.inventory_id = hn.inventory_id and n.night = hn.night
                        and exists (select 1 from booking)
                     returning 1
                 )
                 select exists (select 1 from moved) as "moved!",
                        '{}'::uuid[] as "sold!",
                        (select created_at from booking) as created_at,
                        (select count(*) from nights) as "nights_moved!""#;

/// Makes a room hold as the previous release did (`ttl_seconds` below zero: one already past its
/// expiry, that no sweeper has reached yet).
async fn previous_release_room_hold(
    db: &sqlx::PgPool,
    inventory: Uuid,
    (check_in, check_out): (&str, &str),
    quantity: i32,
    ttl_seconds: i64,
) -> Uuid {
    let date = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
    let hold_id = Uuid::now_v7();
    let mut tx = db.begin().await.unwrap();
    previous_release_begin(&mut tx, "alice", "").await;
    let taken: i64 = sqlx::query_scalar(PREVIOUS_CREATE_ROOM_HOLD)
        .bind(hold_id)
        .bind(inventory)
        .bind("alice")
        .bind(ttl_seconds)
        .bind(date(check_in))
        .bind(date(check_out))
        .bind(quantity)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(taken, (date(check_out) - date(check_in)).num_days());
    tx.commit().await.unwrap();
    hold_id
}

#[tokio::test]
async fn room_holds_and_confirms_of_the_previous_release_still_announce_their_nights_once() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-05-01", "2027-05-04", 3, 0).await;
    let hold_id = previous_release_room_hold(&app.db, inventory, ("2027-05-01", "2027-05-03"), 2, 600).await;
    assert_eq!(app.count("select count(*) from hold_nights_before").await, 2, "its night rows are kept as they were");
    assert_eq!(app.count("select count(*) from holds where stay is not null").await, 0);

    let booking_id = Uuid::now_v7();
    let version: i64 =
        sqlx::query_scalar("select version from holds where id = $1").bind(hold_id).fetch_one(&app.db).await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    previous_release_begin(&mut tx, "alice", &hold_id.to_string()).await;
    let moved: bool = sqlx::query_scalar(PREVIOUS_CONFIRM_ROOM_HOLD)
        .bind(hold_id)
        .bind(version)
        .bind(booking_id)
        .bind("alice")
        .bind(None::<String>)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(moved);
    tx.commit().await.unwrap();

    // Each statement's nights, announced once: by the trigger, as before this release.
    let told: Vec<(Option<Uuid>, serde_json::Value)> = sqlx::query_as(
        "select hold_id, data from audit_log where type = 'nights.changed' and scope_id = $1 order by id",
    )
    .bind(inventory)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let counts = |data: &serde_json::Value| -> Vec<(i64, i64)> {
        data["nights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["held"].as_i64().unwrap(), n["booked"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(told.iter().all(|(hold, _)| hold.is_none()), "the trigger's rows: {told:?}");
    assert_eq!(counts(&told[0].1), [(2, 0), (2, 0)]);
    assert_eq!(counts(&told[1].1), [(0, 2), (0, 2)]);
    let history: Vec<(String, String)> =
        sqlx::query_as("select entity, to_status from audit_log where hold_id = $1 order by id")
            .bind(hold_id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let history: Vec<(&str, &str)> = history.iter().map(|(e, s)| (e.as_str(), s.as_str())).collect();
    assert_eq!(history, [("hold", "HELD"), ("hold", "CONFIRMED"), ("booking", "CONFIRMED")]);

    // This release serves what it wrote.
    let read = app.get(&format!("/v1/bookings/{booking_id}"), Some("alice")).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(app.nights(inventory, "2027-05-01", "2027-05-03").await.iter().map(|n| n.3).collect::<Vec<_>>(), [1, 1]);
    app.assert_invariants().await;
}

#[tokio::test]
async fn room_holds_made_by_the_previous_release_are_read_expired_confirmed_and_cancelled() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-07-01", "2027-07-04", 2, 0).await;
    let live = previous_release_room_hold(&app.db, inventory, ("2027-07-01", "2027-07-03"), 1, 600).await;
    let dead = previous_release_room_hold(&app.db, inventory, ("2027-07-03", "2027-07-04"), 2, -5).await;
    assert_eq!(app.count("select count(*) from hold_nights_before").await, 3, "their night rows are kept as they were");

    let read = app.get(&format!("/v1/holds/{live}"), Some("alice")).await;
    assert_eq!(read.status, StatusCode::OK, "{read:?}");
    assert_eq!(
        (&read.body["check_in"], &read.body["check_out"], &read.body["quantity"]),
        (&json!("2027-07-01"), &json!("2027-07-03"), &json!(1))
    );
    // The dead hold no longer holds its night, swept or not.
    let held = |nights: Vec<(String, i64, i64, i64)>| nights.iter().map(|n| (n.1, n.2)).collect::<Vec<_>>();
    assert_eq!(held(app.nights(inventory, "2027-07-01", "2027-07-04").await), [(1, 0), (1, 0), (0, 0)]);
    // A hold that needs its night expires it first.
    let taker = app.room_hold("bob", inventory, "2027-07-03", "2027-07-04", 2).await;
    assert_eq!(taker.status, StatusCode::CREATED, "{taker:?}");
    let status: String =
        sqlx::query_scalar("select status from holds where id = $1").bind(dead).fetch_one(&app.db).await.unwrap();
    assert_eq!(status, "EXPIRED");

    let booking = app.confirm("alice", live).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!((&booking.body["check_in"], &booking.body["quantity"]), (&json!("2027-07-01"), &json!(1)));
    assert_eq!(held(app.nights(inventory, "2027-07-01", "2027-07-04").await), [(0, 1), (0, 1), (2, 0)]);
    let cancel = app.post(&format!("/v1/bookings/{}/cancel", booking.id()), "alice", "c", &json!({})).await;
    assert_eq!(cancel.status, StatusCode::OK, "{cancel:?}");
    assert_eq!(held(app.nights(inventory, "2027-07-01", "2027-07-04").await), [(0, 0), (0, 0), (2, 0)]);
    app.assert_invariants().await;
}

#[tokio::test]
async fn the_previous_release_reads_and_confirms_this_releases_room_holds_through_hold_nights() {
    let app = spawn_app().await;
    let inventory = app.create_inventory("2027-06-01", "2027-06-05", 5, 0).await;
    let hold = app.room_hold("alice", inventory, "2027-06-02", "2027-06-04", 2).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");
    let hold_id = hold.id();
    // This release writes the stay in the hold's row only.
    assert_eq!(app.count("select count(*) from hold_nights_before").await, 0);
    let stay: (String, i32) = sqlx::query_as("select stay::text, quantity from holds where id = $1")
        .bind(hold_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stay, ("[2027-06-02,2027-06-04)".to_owned(), 2));

    // Where the previous release looks for a hold's nights (`hold_nights`): one row a night.
    let nights: Vec<(chrono::NaiveDate, i32)> =
        sqlx::query_as("select night, quantity from hold_nights where hold_id = $1 order by night")
            .bind(hold_id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let date = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
    assert_eq!(nights, [(date("2027-06-02"), 2), (date("2027-06-03"), 2)]);

    // The previous release confirms it: its statement moves the units of every night of the stay.
    let version: i64 =
        sqlx::query_scalar("select version from holds where id = $1").bind(hold_id).fetch_one(&app.db).await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    previous_release_begin(&mut tx, "alice", &hold_id.to_string()).await;
    let confirmed = sqlx::query(PREVIOUS_CONFIRM_ROOM_HOLD)
        .bind(hold_id)
        .bind(version)
        .bind(Uuid::now_v7())
        .bind("alice")
        .bind(None::<String>)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert!(confirmed.get::<bool, _>("moved!"));
    assert_eq!(confirmed.get::<i64, _>("nights_moved!"), 2);
    tx.commit().await.unwrap();
    let counts: Vec<(i64, i64)> =
        app.nights(inventory, "2027-06-01", "2027-06-05").await.iter().map(|n| (n.1, n.2)).collect();
    assert_eq!(counts, [(0, 0), (0, 2), (0, 2), (0, 0)], "(held, booked) a night");
    app.assert_invariants().await;
}

/// The previous release's slot hold statement (`db::resources::create_hold` before the migration
/// `room_and_slot_holds_log_their_availability`): the triggers log its hold and its slot.
const PREVIOUS_CREATE_SLOT_HOLD: &str = r#"with hold as (
             insert into holds (id, resource_id, user_id, status, expires_at)
             values ($1, $2, $3, 'HELD', now() + $4::int8 * interval '1 second')
             returning id, expires_at, created_at
         ), claim as (
             insert into slot_claims (hold_id, resource_id, span, blocked)
             select id, $2, tstzrange($5, $6, '[)'), tstzrange($7, $8, '[)') from hold
         )
         select expires_at as "expires_at!", created_at as "created_at!" from hold"#;

#[tokio::test]
async fn slot_holds_of_the_previous_release_still_announce_their_slot_once() {
    let app = spawn_app().await;
    let resource = app.create_resource(json!({})).await;
    let start = crate::slots::future_hour(4);
    let end = start + chrono::Duration::minutes(30);
    let hold_id = Uuid::now_v7();
    let mut tx = app.db.begin().await.unwrap();
    previous_release_begin(&mut tx, "alice", "").await;
    sqlx::query(PREVIOUS_CREATE_SLOT_HOLD)
        .bind(hold_id)
        .bind(resource)
        .bind("alice")
        .bind(600_i64)
        .bind(start)
        .bind(end)
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Its hold and its slot, each announced once, by the triggers.
    let rows: Vec<(Option<Uuid>, Option<String>)> =
        sqlx::query_as("select hold_id, type from audit_log where hold_id = $1 or scope_id = $2 order by id")
            .bind(hold_id)
            .bind(resource)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let rows: Vec<(Option<Uuid>, Option<&str>)> = rows.iter().map(|(h, t)| (*h, t.as_deref())).collect();
    assert_eq!(rows, [(None, Some("resource.created")), (Some(hold_id), None), (None, Some("slots.changed"))]);

    // This release confirms it, and refuses the slot to anyone else.
    let booking = app.confirm("alice", hold_id).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");
    assert_eq!(app.slot_hold("bob", resource, start, end).await.status, StatusCode::CONFLICT);
    app.assert_invariants().await;
}

/// The previous release's read of an existing key (`idempotency::claim_alone`, from the migration
/// `idempotency_packed_answers` on), which takes either form of the answer and unpacks a packed
/// one with the same format-1 dictionary (`idempotency::packed`, pinned by its digest).
const PREVIOUS_READ_RECORD: &str = r#"select fingerprint, state, claim_token, lease_until > now() as "lease_live!", response_status, response_body,
                      response_packed
               from idempotency_records where user_id = $1 and key = $2"#;

/// The read of releases before that migration, which knows only `response_body`.
const OLDER_READ_RECORD: &str = r#"select fingerprint, state, claim_token, lease_until > now() as "lease_live!", response_status, response_body
               from idempotency_records where user_id = $1 and key = $2"#;

/// The previous release's record insert (`holdfast_record`, seven parameters), as it sends it by
/// default: the answer as jsonb, nothing packed.
const PREVIOUS_RECORD: &str = "insert into idempotency_records
        (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body, response_packed)
    values ($1, $2, $3, 'SUCCEEDED', $4, now(), $5, $6, null)";

/// The record insert of releases before the migration (six parameters, the answer as jsonb).
const OLDER_RECORD: &str = "insert into idempotency_records
        (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
    values ($1, $2, $3, 'SUCCEEDED', $4, now(), $5, $6)";

/// Answers are packed by default: the previous release reads that form, and what it and older
/// releases write (JSON) replays from this one. With `IDEMPOTENCY_PACKED_ANSWERS=false`, for an
/// upgrade from a release older than the previous one, answers stay where those read them.
#[tokio::test]
async fn answers_packed_by_default_stay_readable_to_the_previous_release() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 4).await;
    let held = app.hold("alice", event.id, &[event.seats[0]], "alice-1").await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let row = sqlx::query(PREVIOUS_READ_RECORD).bind("alice").bind("alice-1").fetch_one(&app.db).await.unwrap();
    assert_eq!(row.get::<String, _>("state"), "SUCCEEDED");
    assert_eq!(row.get::<Option<serde_json::Value>, _>("response_body"), None, "packed by default");
    let packed: Vec<u8> = row.get::<Option<Vec<u8>>, _>("response_packed").expect("a packed answer");
    assert_eq!(holdfast::idempotency::packed::unpack(&packed).unwrap(), held.body);

    // What the previous release and the ones before it write, beside this release, replays here.
    let event = app.create_event(1, 1, 4).await;
    for (user, seat, insert) in [("bob", event.seats[0], PREVIOUS_RECORD), ("carol", event.seats[1], OLDER_RECORD)] {
        let key = format!("{user}-1");
        let held = app.hold(user, event.id, &[seat], &key).await;
        assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
        let fingerprint: Vec<u8> =
            sqlx::query_scalar("delete from idempotency_records where key = $1 returning fingerprint")
                .bind(&key)
                .fetch_one(&app.db)
                .await
                .unwrap();
        sqlx::query(insert)
            .bind(user)
            .bind(&key)
            .bind(&fingerprint)
            .bind(Uuid::new_v4())
            .bind(201_i16)
            .bind(&held.body)
            .execute(&app.db)
            .await
            .unwrap();
        let replay = app.hold(user, event.id, &[seat], &key).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!((replay.status, &replay.body), (held.status, &held.body));
    }

    // Turned off, answers are JSON, which releases before the packed form read.
    let json = crate::support::app::spawn_app_with(|config| config.idempotency.packed_answers = false).await;
    let event = json.create_event(1, 1, 4).await;
    let held = json.hold("dave", event.id, &[event.seats[0]], "dave-1").await;
    assert_eq!(held.status, StatusCode::CREATED, "{held:?}");
    let row = sqlx::query(OLDER_READ_RECORD).bind("dave").bind("dave-1").fetch_one(&json.db).await.unwrap();
    assert_eq!(row.get::<Option<serde_json::Value>, _>("response_body"), Some(held.body.clone()));
    app.assert_invariants().await;
}
