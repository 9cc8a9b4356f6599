//! A Rust/Actix peer for scripts/bench-peers.sh (issue 10): the shape issue 10 compared holdfast
//! against. A hold lives only in Redis (one Lua script sets every seat's key with NX, or none);
//! Postgres sees one read per hold (the seats exist and are not sold) and one INSERT per
//! confirm (the booking rows, whose unique seat key is the final guard). No idempotency, no
//! authentication, no change history. It answers the part of holdfast's API the load
//! generator's `spread` scenario uses: POST /v1/events, GET /v1/events/{id}/seats,
//! POST /v1/events/{id}/holds, POST /v1/holds/{id}/confirm, GET /ready.
//! Settings: DATABASE_URL, REDIS_URL, LISTEN_ADDR, DATABASE_MAX_CONNECTIONS (default 20).

use actix_web::{App, HttpResponse, HttpServer, web};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use redis::aio::ConnectionManager;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

const HOLD_MS: u64 = 600_000;

const SCHEMA: &str = "
create table if not exists peer_events (
  id uuid primary key, name text not null, starts_at timestamptz not null);
create table if not exists peer_seats (
  id uuid primary key, event_id uuid not null references peer_events, section text not null);
create index if not exists peer_seats_event on peer_seats (event_id, id);
create table if not exists peer_bookings (
  id uuid primary key, hold_id uuid not null, seat_id uuid not null unique, event_id uuid not null,
  created_at timestamptz not null default now());";

/// KEYS: the hold's key, then one key per seat. ARGV: hold id, TTL in ms, the hold's value.
/// Sets every key or none.
const HOLD_SCRIPT: &str = "
for i = 2, #KEYS do
  if redis.call('exists', KEYS[i]) == 1 then return 0 end
end
for i = 2, #KEYS do redis.call('set', KEYS[i], ARGV[1], 'px', ARGV[2]) end
redis.call('set', KEYS[1], ARGV[3], 'px', ARGV[2])
return 1";

struct State {
    db: Pool,
    redis: ConnectionManager,
    hold: redis::Script,
}

type Answer = Result<HttpResponse, Problem>;

#[derive(Debug)]
struct Problem(u16, &'static str);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.1)
    }
}

impl actix_web::ResponseError for Problem {
    fn error_response(&self) -> HttpResponse {
        let status = actix_web::http::StatusCode::from_u16(self.0).unwrap();
        HttpResponse::build(status).json(json!({ "status": self.0, "code": self.1 }))
    }
}

fn internal<E: std::fmt::Debug>(err: E) -> Problem {
    eprintln!("{err:?}");
    Problem(500, "INTERNAL")
}

#[derive(Deserialize)]
struct Layout {
    sections: i32,
    rows: i32,
    seats_per_row: i32,
}

#[derive(Deserialize)]
struct NewEvent {
    name: String,
    starts_at: String,
    layout: Layout,
}

async fn create_event(state: web::Data<State>, body: web::Json<NewEvent>) -> Answer {
    let l = &body.layout;
    if [l.sections, l.rows, l.seats_per_row].iter().any(|n| !(1..=1000).contains(n)) {
        return Err(Problem(400, "VALIDATION_FAILED"));
    }
    let mut db = state.db.get().await.map_err(internal)?;
    let tx = db.transaction().await.map_err(internal)?;
    let id = Uuid::new_v4();
    tx.execute(
        "insert into peer_events (id, name, starts_at) values ($1, $2, $3::text::timestamptz)",
        &[&id, &body.name, &body.starts_at],
    )
    .await
    .map_err(|_| Problem(400, "VALIDATION_FAILED"))?;
    tx.execute(
        "insert into peer_seats (id, event_id, section)
         select gen_random_uuid(), $1, 'S' || s from generate_series(1, $2::int) s,
                generate_series(1, $3::int * $4::int) n",
        &[&id, &l.sections, &l.rows, &l.seats_per_row],
    )
    .await
    .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    Ok(HttpResponse::Created().json(json!({ "id": id, "name": body.name })))
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    cursor: Option<Uuid>,
}

async fn list_seats(state: web::Data<State>, event: web::Path<Uuid>, page: web::Query<Page>) -> Answer {
    let limit = page.limit.unwrap_or(100).clamp(1, 10_000);
    let db = state.db.get().await.map_err(internal)?;
    let rows = db
        .query(
            "select id, section from peer_seats
              where event_id = $1 and ($2::uuid is null or id > $2) order by id limit $3",
            &[&*event, &page.cursor, &limit],
        )
        .await
        .map_err(internal)?;
    let seats: Vec<_> =
        rows.iter().map(|r| json!({ "id": r.get::<_, Uuid>(0), "section": r.get::<_, String>(1) })).collect();
    let next = (rows.len() as i64 == limit).then(|| rows.last().unwrap().get::<_, Uuid>(0));
    Ok(HttpResponse::Ok().json(json!({ "seats": seats, "next_cursor": next })))
}

#[derive(Deserialize)]
struct NewHold {
    seat_ids: Vec<Uuid>,
}

async fn create_hold(state: web::Data<State>, event: web::Path<Uuid>, body: web::Json<NewHold>) -> Answer {
    let mut seats = body.seat_ids.clone();
    seats.sort();
    seats.dedup();
    if seats.is_empty() || seats.len() > 10 {
        return Err(Problem(400, "VALIDATION_FAILED"));
    }
    let db = state.db.get().await.map_err(internal)?;
    let statement = db
        .prepare_cached(
            "select count(*) filter (where not exists (select 1 from peer_bookings b where b.seat_id = s.id)),
                    count(*)
               from peer_seats s where s.id = any($1) and s.event_id = $2",
        )
        .await
        .map_err(internal)?;
    let row = db.query_one(&statement, &[&seats, &*event]).await.map_err(internal)?;
    drop(db);
    let (free, found): (i64, i64) = (row.get(0), row.get(1));
    if found != seats.len() as i64 {
        return Err(Problem(404, "SEAT_NOT_FOUND"));
    }
    if free != found {
        return Err(Problem(409, "SEAT_UNAVAILABLE"));
    }
    let id = Uuid::new_v4();
    let value = format!("{}|{}", event, seats.iter().map(Uuid::to_string).collect::<Vec<_>>().join(","));
    let mut invocation = state.hold.prepare_invoke();
    invocation.key(format!("hold:{id}"));
    for seat in &seats {
        invocation.key(format!("seat:{seat}"));
    }
    invocation.arg(id.to_string()).arg(HOLD_MS).arg(&value);
    let mut redis = state.redis.clone();
    let set: i64 = invocation.invoke_async(&mut redis).await.map_err(internal)?;
    if set == 0 {
        return Err(Problem(409, "SEAT_UNAVAILABLE"));
    }
    Ok(HttpResponse::Created().json(json!({ "id": id, "event_id": *event, "seat_ids": seats })))
}

async fn confirm_hold(state: web::Data<State>, hold: web::Path<Uuid>) -> Answer {
    let mut redis = state.redis.clone();
    let value: Option<String> =
        redis::cmd("GET").arg(format!("hold:{hold}")).query_async(&mut redis).await.map_err(internal)?;
    let Some(value) = value else { return Err(Problem(410, "HOLD_EXPIRED")) };
    let (event, seats) = value.split_once('|').ok_or_else(|| internal("bad hold value"))?;
    let event: Uuid = event.parse().map_err(internal)?;
    let seats: Vec<Uuid> = seats.split(',').map(str::parse).collect::<Result<_, _>>().map_err(internal)?;
    let db = state.db.get().await.map_err(internal)?;
    let statement = db
        .prepare_cached(
            "insert into peer_bookings (id, hold_id, seat_id, event_id)
             select gen_random_uuid(), $1, seat, $3 from unnest($2::uuid[]) seat",
        )
        .await
        .map_err(internal)?;
    match db.execute(&statement, &[&*hold, &seats, &event]).await {
        Ok(_) => {}
        Err(err) if err.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
            return Err(Problem(409, "HOLD_NOT_ACTIVE"));
        }
        Err(err) => return Err(internal(err)),
    }
    drop(db);
    let mut del = redis::cmd("DEL");
    del.arg(format!("hold:{hold}"));
    for seat in &seats {
        del.arg(format!("seat:{seat}"));
    }
    let _: i64 = del.query_async(&mut redis).await.map_err(internal)?;
    Ok(HttpResponse::Created().json(json!({ "hold_id": *hold, "seat_ids": seats })))
}

async fn ready(state: web::Data<State>) -> Answer {
    let db = state.db.get().await.map_err(|_| Problem(503, "NOT_READY"))?;
    db.execute("select 1", &[]).await.map_err(|_| Problem(503, "NOT_READY"))?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let config: tokio_postgres::Config = env("DATABASE_URL", "postgres://postgres@127.0.0.1/postgres").parse().unwrap();
    let manager =
        Manager::from_config(config, tokio_postgres::NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let size = env("DATABASE_MAX_CONNECTIONS", "20").parse().unwrap();
    let db = Pool::builder(manager).max_size(size).build().unwrap();
    db.get().await.unwrap().batch_execute(SCHEMA).await.unwrap();
    let client = redis::Client::open(env("REDIS_URL", "redis://127.0.0.1:6379")).unwrap();
    let redis = ConnectionManager::new(client).await.unwrap();
    let state = web::Data::new(State { db, redis, hold: redis::Script::new(HOLD_SCRIPT) });
    let addr = env("LISTEN_ADDR", "127.0.0.1:8080");
    println!("peer-actix listening on {addr}");
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/ready", web::get().to(ready))
            .route("/v1/events", web::post().to(create_event))
            .route("/v1/events/{id}/seats", web::get().to(list_seats))
            .route("/v1/events/{id}/holds", web::post().to(create_hold))
            .route("/v1/holds/{id}/confirm", web::post().to(confirm_hold))
    })
    .bind(addr)?
    .run()
    .await
}
