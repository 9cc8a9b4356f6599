//! holdfast-loadgen: drives holdfast's own scenarios against one or more instances and reports
//! throughput, latency percentiles (HdrHistogram), answers by status and code, the instances'
//! peak RSS, and the database invariants afterwards.
//!
//! Scenarios:
//! - `hot-seat`: `--clients` clients each send one hold on the same seat at the same moment,
//!   `--rounds` times (a fresh seat each round); exactly one may win per round.
//! - `spread`: each client holds a distinct seat, then confirms it, until the time or the seats
//!   run out.
//! - `browse`: 90% reads of a section's seat map, 10% holds on distinct seats.
//! - `rooms`: each client holds 1 unit for a random stay of 1 to 3 nights among 30 nights of
//!   one inventory (capacity `--seats` per night), then confirms it. Every hold of a night takes
//!   that night's lock key, so this measures the per-night serialization.
//! - `slots`: each client holds the next free 30-minute slot of one resource, then confirms it.
//! - `queue-joins`: the waiting room's own cost. For `--duration-secs`, each client joins an
//!   event's waiting room as a new user, again and again; then, for as long again, each client
//!   polls random tickets among those taken (as their owners).
//! - `on-sale`: `--clients` buyers arrive at once at an event with a waiting room (on sale a
//!   few seconds later, so all join early and are drawn): each joins, polls its ticket as
//!   `Retry-After` says (at most every `--poll-cap-ms`), and once admitted holds the next seat
//!   with its admission token and confirms it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use holdfast::auth::JwtKeys;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Barrier, Mutex};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    HotSeat,
    Spread,
    Browse,
    Rooms,
    Slots,
    QueueJoins,
    OnSale,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for holdfast")]
struct Args {
    /// Instances to spread requests over, comma-separated base URLs.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<String>,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long spread and browse run.
    #[arg(long, default_value_t = 15)]
    duration_secs: u64,
    /// Seats in the event the run creates (a multiple of 50).
    #[arg(long, default_value_t = 10_000)]
    seats: u32,
    /// hot-seat: how many stampedes, each on a fresh seat.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Checks the invariants after the run when given.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Instance PIDs whose peak RSS (VmHWM) to report.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// spread: hold only, no confirm (measures hold throughput on its own).
    #[arg(long)]
    hold_only: bool,
    /// spread --hold-only: ask for the best N seats (`best_available`) instead of naming one; runs
    /// until the deadline or until no seats are left.
    #[arg(long)]
    best_available: Option<u32>,
    /// spread --hold-only: release each hold right after taking it and wrap around the seat
    /// list, so a small event sustains the same load as a large one (for the event-size check).
    #[arg(long)]
    recycle: bool,
    /// Waiting-room scenarios: tickets admitted per minute.
    #[arg(long, default_value_t = 30_000)]
    queue_admit_per_minute: u32,
    /// Waiting-room scenarios: admitted and unfinished tickets at most.
    #[arg(long, default_value_t = 500)]
    queue_max_active: u32,
    /// on-sale: the longest a client waits between polls, whatever Retry-After says.
    #[arg(long, default_value_t = 2_000)]
    poll_cap_ms: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// A shell command to run (and wait for) once the event or inventory is set up, right
    /// before the load starts: scripts/bench.sh takes its "before" counters there, so that the
    /// set-up (an event's seats) does not count against the requests.
    #[arg(long)]
    after_setup: Option<String>,
    /// A shell command to run (and wait for) as soon as the load stops, before the invariant
    /// check: scripts/bench.sh takes its "after" counters there, so that the check's full scans
    /// do not count against the requests either.
    #[arg(long)]
    after_load: Option<String>,
}

/// Runs a hook's shell command and waits for it; a failing hook stops the run.
fn run_hook(flag: &str, command: &str) {
    let status = std::process::Command::new("sh").arg("-c").arg(command).status().expect("runs sh");
    assert!(status.success(), "{flag} command failed: {status}");
}

/// Latencies in microseconds, from 1 µs to 60 s, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

struct Recorder {
    latency: BTreeMap<&'static str, Histogram<u64>>,
    answers: BTreeMap<String, u64>,
}

impl Recorder {
    fn new() -> Self {
        Self { latency: BTreeMap::new(), answers: BTreeMap::new() }
    }

    fn record(&mut self, op: &'static str, took: Duration, answer: &str) {
        self.latency.entry(op).or_insert_with(latency_histogram).saturating_record(took.as_micros() as u64);
        *self.answers.entry(format!("{op} {answer}")).or_default() += 1;
    }

    fn merge(&mut self, other: Recorder) {
        for (op, h) in other.latency {
            self.latency.entry(op).or_insert_with(latency_histogram).add(h).unwrap();
        }
        for (k, v) in other.answers {
            *self.answers.entry(k).or_default() += v;
        }
    }

    fn count(&self, prefix: &str) -> u64 {
        self.answers.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }
}

struct Client {
    http: reqwest::Client,
    targets: Vec<String>,
    token: String,
}

impl Client {
    fn for_user(http: &reqwest::Client, targets: &[String], keys: &JwtKeys, user: &str) -> Self {
        let token = keys.mint(user, false, Duration::from_secs(3600)).unwrap();
        Self { http: http.clone(), targets: targets.to_vec(), token }
    }

    fn target(&self, i: usize) -> &str {
        &self.targets[i % self.targets.len()]
    }

    async fn post(&self, i: usize, path: &str, body: &Value) -> (Duration, String, Value) {
        self.post_with(i, path, body, None).await
    }

    /// A POST with a new Idempotency-Key, and an `Admission-Token` when given.
    async fn post_with(
        &self,
        i: usize,
        path: &str,
        body: &Value,
        admission: Option<&str>,
    ) -> (Duration, String, Value) {
        let started = Instant::now();
        let mut request = self
            .http
            .post(format!("{}{path}", self.target(i)))
            .bearer_auth(&self.token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(body);
        if let Some(token) = admission {
            request = request.header("admission-token", token);
        }
        Self::finish(started, request.send().await).await
    }

    /// Confirms the hold in a 201 hold answer, recording the outcome.
    async fn confirm(&self, i: usize, hold: &Value, rec: &mut Recorder) {
        let path = format!("/v1/holds/{}/confirm", hold["id"].as_str().unwrap());
        let (took, answer, _) = self.post(i, &path, &json!({ "payment_reference": "loadgen" })).await;
        rec.record("confirm", took, &answer);
    }

    async fn delete(&self, i: usize, path: &str) -> (Duration, String) {
        let started = Instant::now();
        let result = self.http.delete(format!("{}{path}", self.target(i))).bearer_auth(&self.token).send().await;
        let (took, answer, _) = Self::finish(started, result).await;
        (took, answer)
    }

    async fn get(&self, i: usize, path: &str) -> (Duration, String, Value) {
        let started = Instant::now();
        let result = self.http.get(format!("{}{path}", self.target(i))).send().await;
        Self::finish(started, result).await
    }

    /// A body-less POST with the given Idempotency-Key; also answers Retry-After.
    async fn post_keyed(&self, i: usize, path: &str, key: &str) -> (Duration, String, Value, Option<Duration>) {
        let started = Instant::now();
        let result = self
            .http
            .post(format!("{}{path}", self.target(i)))
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .send()
            .await;
        let retry = Self::retry_after(&result);
        let (took, answer, body) = Self::finish(started, result).await;
        (took, answer, body, retry)
    }

    fn retry_after(result: &Result<reqwest::Response, reqwest::Error>) -> Option<Duration> {
        let value = result.as_ref().ok()?.headers().get("retry-after")?.to_str().ok()?;
        value.parse().ok().map(Duration::from_secs)
    }

    /// A GET as this client's user.
    async fn get_as(&self, i: usize, path: &str) -> (Duration, String, Value) {
        let started = Instant::now();
        let result = self.http.get(format!("{}{path}", self.target(i))).bearer_auth(&self.token).send().await;
        Self::finish(started, result).await
    }

    /// Polls a waiting-room ticket; also answers its Retry-After.
    async fn poll(&self, i: usize, ticket: &str) -> (Duration, String, Value, Option<Duration>) {
        let started = Instant::now();
        let result =
            self.http.get(format!("{}/v1/queue/{ticket}", self.target(i))).bearer_auth(&self.token).send().await;
        let retry = Self::retry_after(&result);
        let (took, answer, body) = Self::finish(started, result).await;
        (took, answer, body, retry)
    }

    async fn finish(started: Instant, result: Result<reqwest::Response, reqwest::Error>) -> (Duration, String, Value) {
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let took = started.elapsed();
                let answer = match body["code"].as_str() {
                    Some(code) => format!("{status} {code}"),
                    None => status.to_string(),
                };
                (took, answer, body)
            }
            Err(err) => (
                started.elapsed(),
                format!("transport-error {}", if err.is_timeout() { "timeout" } else { "connect" }),
                Value::Null,
            ),
        }
    }
}

async fn setup_event(client: &Client, admin: &str, seats: u32) -> (Uuid, Vec<Uuid>, Vec<String>) {
    let per_section = 1000.min(seats);
    let sections = seats.div_ceil(per_section);
    let rows = per_section / 50;
    let body = json!({ "name": "Load test", "starts_at": "2030-01-01T00:00:00Z",
                       "layout": { "sections": sections, "rows": rows, "seats_per_row": 50, "price_cents": 1000 } });
    let response = client
        .http
        .post(format!("{}/v1/events", client.target(0)))
        .bearer_auth(admin)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .expect("create the event");
    let event: Value = response.json().await.unwrap();
    let id: Uuid = event["id"].as_str().expect("event created (is the token an admin's?)").parse().unwrap();
    let mut ids = Vec::with_capacity(seats as usize);
    let mut names = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/events/{id}/seats?limit=10000", client.target(0));
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.http.get(url).send().await.unwrap().json().await.unwrap();
        for seat in page["seats"].as_array().unwrap() {
            ids.push(seat["id"].as_str().unwrap().parse().unwrap());
            names.insert(seat["section"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    (id, ids, names.into_iter().collect())
}

async fn merge_all(tasks: Vec<tokio::task::JoinHandle<Recorder>>, total: &Mutex<Recorder>) {
    for task in tasks {
        let rec = task.await.unwrap();
        total.lock().await.merge(rec);
    }
}

/// Creates an inventory or resource as admin; returns its id.
async fn create(client: &Client, admin: &str, path: &str, body: &Value) -> Uuid {
    let response = client
        .http
        .post(format!("{}{path}", client.target(0)))
        .bearer_auth(admin)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .json(body)
        .send()
        .await
        .expect("create the inventory or resource");
    let created: Value = response.json().await.unwrap();
    created["id"].as_str().unwrap_or_else(|| panic!("not created: {created}")).parse().unwrap()
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let keys = JwtKeys::new(&args.jwt_secret);
    let admin = keys.mint("loadgen-admin", true, Duration::from_secs(3600)).unwrap();
    holdfast::webhooks::install_tls_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(16))
        // Below holdfast's 10 s idle keep-alive limit (HTTP_HEADER_READ_TIMEOUT_MS).
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let probe = Client { http: http.clone(), targets: args.targets.clone(), token: admin.clone() };
    let seat_scenario =
        matches!(args.scenario, Scenario::HotSeat | Scenario::Spread | Scenario::Browse | Scenario::OnSale);
    let (event, seats, sections) = if seat_scenario {
        setup_event(&probe, &admin, args.seats).await
    } else {
        (Uuid::nil(), Vec::new(), Vec::new())
    };
    let waiting_room = matches!(args.scenario, Scenario::QueueJoins | Scenario::OnSale);
    let event = if waiting_room {
        // A waiting room of its own, on sale in a few seconds (queue-joins: never).
        let body = json!({ "name": "Waiting room", "starts_at": "2030-01-01T00:00:00Z",
                           "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1000 } });
        let queue_event =
            if args.scenario == Scenario::OnSale { event } else { create(&probe, &admin, "/v1/events", &body).await };
        let on_sale_at = match args.scenario {
            Scenario::OnSale => chrono::Utc::now() + chrono::Duration::seconds(5),
            _ => chrono::Utc::now() + chrono::Duration::days(365),
        };
        let settings = json!({ "on_sale_at": on_sale_at, "queue": { "enabled": true,
            "admit_per_minute": args.queue_admit_per_minute, "max_active_shoppers": args.queue_max_active,
            "admission_ttl_seconds": 120 } });
        let patched = probe
            .http
            .patch(format!("{}/v1/events/{queue_event}", probe.target(0)))
            .bearer_auth(&admin)
            .json(&settings)
            .send()
            .await
            .expect("open the waiting room");
        assert!(patched.status().is_success(), "open the waiting room: {}", patched.text().await.unwrap_or_default());
        queue_event
    } else {
        event
    };
    if let Some(command) = &args.after_setup {
        run_hook("--after-setup", command);
    }
    let seats = Arc::new(seats);
    let next_seat = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Recorder::new()));
    let mut winners_per_round = Vec::new();
    let mut p99_per_round = Vec::new();
    let mut queue_rates: Option<(f64, f64)> = None;

    let started = Instant::now();
    match args.scenario {
        Scenario::HotSeat => {
            for round in 0..args.rounds {
                let seat = seats[round];
                let barrier = Arc::new(Barrier::new(args.clients));
                let tasks: Vec<_> = (0..args.clients)
                    .map(|i| {
                        let client = Client::for_user(&http, &args.targets, &keys, &format!("fan-{i}"));
                        let (barrier, total) = (barrier.clone(), total.clone());
                        tokio::spawn(async move {
                            barrier.wait().await;
                            let (took, answer, _) = client
                                .post(i, &format!("/v1/events/{event}/holds"), &json!({ "seat_ids": [seat] }))
                                .await;
                            total.lock().await.record("hold", took, &answer);
                            (answer == "201", took)
                        })
                    })
                    .collect();
                let mut winners = 0;
                let mut round = latency_histogram();
                for task in tasks {
                    let (won, took) = task.await.unwrap();
                    winners += won as usize;
                    round.saturating_record(took.as_micros() as u64);
                }
                winners_per_round.push(winners);
                p99_per_round.push(round.value_at_quantile(0.99) as f64 / 1000.0);
            }
        }
        Scenario::Spread | Scenario::Browse => {
            let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    let client = Client::for_user(&http, &args.targets, &keys, &format!("user-{i}"));
                    let (seats, next_seat, sections, scenario) =
                        (seats.clone(), next_seat.clone(), sections.clone(), args.scenario);
                    let confirm = scenario == Scenario::Spread && !args.hold_only;
                    let (recycle, best_available) = (args.recycle, args.best_available);
                    tokio::spawn(async move {
                        let mut rec = Recorder::new();
                        let mut n = i;
                        while Instant::now() < deadline {
                            n += 1;
                            if scenario == Scenario::Browse && rand::rng().random_bool(0.9) {
                                let section = &sections[rand::rng().random_range(0..sections.len())];
                                let (took, answer, _) = client
                                    .get(n, &format!("/v1/events/{event}/seats?section={section}&limit=1000"))
                                    .await;
                                rec.record("browse", took, &answer);
                                continue;
                            }
                            let request = match best_available {
                                Some(quantity) => json!({ "best_available": { "quantity": quantity } }),
                                None => {
                                    let index = next_seat.fetch_add(1, Ordering::Relaxed);
                                    let index = if recycle { index % seats.len() } else { index };
                                    let Some(seat) = seats.get(index) else { break };
                                    json!({ "seat_ids": [seat] })
                                }
                            };
                            let (took, answer, body) =
                                client.post(n, &format!("/v1/events/{event}/holds"), &request).await;
                            if best_available.is_some() && body["code"] == "NO_SEATS_AVAILABLE" {
                                break;
                            }
                            rec.record("hold", took, &answer);
                            if recycle && answer == "201" {
                                let hold = body["id"].as_str().unwrap().to_owned();
                                let (took, answer) = client.delete(n, &format!("/v1/holds/{hold}")).await;
                                rec.record("release", took, &answer);
                            }
                            if confirm && answer == "201" {
                                client.confirm(n, &body, &mut rec).await;
                            }
                        }
                        rec
                    })
                })
                .collect();
            merge_all(tasks, &total).await;
        }
        Scenario::QueueJoins => {
            let tickets = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
            let run = Duration::from_secs(args.duration_secs);
            let deadline = Instant::now() + run;
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    let (http, targets, keys, tickets) =
                        (http.clone(), args.targets.clone(), JwtKeys::new(&args.jwt_secret), tickets.clone());
                    tokio::spawn(async move {
                        let mut rec = Recorder::new();
                        let mut n = 0;
                        while Instant::now() < deadline {
                            n += 1;
                            let client = Client::for_user(&http, &targets, &keys, &format!("q{i}-{n}"));
                            let (took, answer, body) =
                                client.post(n, &format!("/v1/events/{event}/queue"), &Value::Null).await;
                            rec.record("join", took, &answer);
                            if let Some(ticket) = body["ticket_id"].as_str() {
                                tickets.lock().unwrap().push((client.token, ticket.to_owned()));
                            }
                        }
                        rec
                    })
                })
                .collect();
            merge_all(tasks, &total).await;
            let tickets = Arc::new(std::mem::take(&mut *tickets.lock().unwrap()));
            let polls_from = Instant::now();
            let deadline = polls_from + run;
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    let (http, targets, tickets) = (http.clone(), args.targets.clone(), tickets.clone());
                    tokio::spawn(async move {
                        let mut rec = Recorder::new();
                        let mut n = i;
                        while Instant::now() < deadline && !tickets.is_empty() {
                            n += 1;
                            let (token, ticket) = &tickets[rand::rng().random_range(0..tickets.len())];
                            let client = Client { http: http.clone(), targets: targets.clone(), token: token.clone() };
                            let (took, answer, _) = client.get_as(n, &format!("/v1/queue/{ticket}")).await;
                            rec.record("poll", took, &answer);
                        }
                        rec
                    })
                })
                .collect();
            merge_all(tasks, &total).await;
            let polls = total.lock().await.count("poll 200") as f64;
            let joins = total.lock().await.count("join 201") as f64;
            queue_rates = Some((joins / run.as_secs_f64(), polls / polls_from.elapsed().as_secs_f64()));
        }
        Scenario::OnSale => {
            let poll_cap = Duration::from_millis(args.poll_cap_ms);
            let barrier = Arc::new(Barrier::new(args.clients));
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    let client = Client::for_user(&http, &args.targets, &keys, &format!("buyer-{i}"));
                    let (barrier, seats, next_seat) = (barrier.clone(), seats.clone(), next_seat.clone());
                    tokio::spawn(async move {
                        let mut rec = Recorder::new();
                        barrier.wait().await;
                        // A client that is told 503 (the stampede outran the database pool) comes
                        // back after Retry-After, as a well-behaved one does, with the same key.
                        let key = Uuid::new_v4().to_string();
                        let path = format!("/v1/events/{event}/queue");
                        let body = loop {
                            let (took, answer, body, retry) = client.post_keyed(i, &path, &key).await;
                            rec.record("join", took, &answer);
                            match retry {
                                Some(wait) if answer.starts_with("503") => tokio::time::sleep(wait).await,
                                _ => break body,
                            }
                        };
                        let Some(ticket) = body["ticket_id"].as_str().map(str::to_owned) else { return rec };
                        let mut n = i;
                        let token = loop {
                            n += 1;
                            let (took, answer, body, retry) = client.poll(n, &ticket).await;
                            rec.record("poll", took, &answer);
                            match body["status"].as_str() {
                                Some("admitted") => break body["admission_token"].as_str().unwrap().to_owned(),
                                Some("waiting") | None => {}
                                Some(_) => return rec,
                            }
                            tokio::time::sleep(retry.unwrap_or(poll_cap).min(poll_cap)).await;
                        };
                        let Some(seat) = seats.get(next_seat.fetch_add(1, Ordering::Relaxed)) else { return rec };
                        let (took, answer, body) = client
                            .post_with(
                                n,
                                &format!("/v1/events/{event}/holds"),
                                &json!({ "seat_ids": [seat] }),
                                Some(&token),
                            )
                            .await;
                        rec.record("hold", took, &answer);
                        if answer == "201" {
                            client.confirm(n, &body, &mut rec).await;
                        }
                        rec
                    })
                })
                .collect();
            merge_all(tasks, &total).await;
        }
        Scenario::Rooms | Scenario::Slots => {
            let hold_path = match args.scenario {
                Scenario::Rooms => {
                    let body = json!({ "name": "Load room", "from": "2030-01-01", "to": "2030-01-31", "capacity": args.seats });
                    format!("/v1/inventories/{}/holds", create(&probe, &admin, "/v1/inventories", &body).await)
                }
                _ => {
                    let week: serde_json::Map<String, Value> =
                        ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
                            .iter()
                            .map(|d| (d.to_string(), json!([{ "open": "00:00", "close": "24:00" }])))
                            .collect();
                    let body = json!({ "name": "Load court", "time_zone": "UTC", "opening_hours": week,
                                       "slot_granularity_minutes": 30 });
                    format!("/v1/resources/{}/holds", create(&probe, &admin, "/v1/resources", &body).await)
                }
            };
            // Slots from a day after tomorrow on, one after another.
            let first_slot =
                (chrono::Utc::now() + chrono::Duration::days(2)).date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
            let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
            let tasks: Vec<_> = (0..args.clients)
                .map(|i| {
                    let client = Client::for_user(&http, &args.targets, &keys, &format!("user-{i}"));
                    let (next, hold_path, scenario, confirm) =
                        (next_seat.clone(), hold_path.clone(), args.scenario, !args.hold_only);
                    tokio::spawn(async move {
                        let mut rec = Recorder::new();
                        let mut n = i;
                        while Instant::now() < deadline {
                            n += 1;
                            let body = if scenario == Scenario::Rooms {
                                let check_in = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap()
                                    + chrono::Duration::days(rand::rng().random_range(0..28));
                                let nights = rand::rng().random_range(1..=3);
                                json!({ "check_in": check_in, "check_out": check_in + chrono::Duration::days(nights),
                                        "quantity": 1 })
                            } else {
                                let start = first_slot
                                    + chrono::Duration::minutes(30 * next.fetch_add(1, Ordering::Relaxed) as i64);
                                json!({ "start": start, "end": start + chrono::Duration::minutes(30) })
                            };
                            let (took, answer, body) = client.post(n, &hold_path, &body).await;
                            rec.record("hold", took, &answer);
                            if confirm && answer == "201" {
                                client.confirm(n, &body, &mut rec).await;
                            }
                        }
                        rec
                    })
                })
                .collect();
            merge_all(tasks, &total).await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = Arc::try_unwrap(total).ok().unwrap().into_inner();
    if let Some(command) = &args.after_load {
        run_hook("--after-load", command);
    }

    let violations = match &args.database_url {
        Some(url) => {
            let db = sqlx::PgPool::connect(url).await.expect("connect for the invariant check");
            Some(holdfast::db::invariants::violations(&db).await.expect("run the invariant checks"))
        }
        None => None,
    };
    let rss: Vec<(u32, Option<u64>)> = args.pids.iter().map(|p| (*p, peak_rss_kib(*p))).collect();
    // Nothing wedged: every instance is ready again once the load stops.
    let mut ready_after = Vec::new();
    for target in &args.targets {
        let status = http.get(format!("{target}/ready")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        ready_after.push(status);
    }

    let holds_ok = total.count("hold 201") as f64;
    let flows_ok = total.count("confirm 201") as f64;
    let requests: u64 = total.answers.values().sum();
    let mut latency = serde_json::Map::new();
    for (op, h) in &total.latency {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        latency.insert(
            op.to_string(),
            json!({ "count": h.len(), "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0 }),
        );
    }
    let report = json!({
        "scenario": format!(
            "{:?}{}{}",
            args.scenario,
            if args.hold_only { " (hold only)" } else { "" },
            if args.recycle { " (recycled)" } else { "" }
        ),
        "targets": args.targets.len(),
        "clients": args.clients,
        "event_seats": args.seats,
        "elapsed_s": elapsed,
        "requests": requests,
        "requests_per_s": requests as f64 / elapsed,
        "holds_per_s": holds_ok / elapsed,
        "flows_per_s": flows_ok / elapsed,
        "latency": latency,
        "answers": total.answers,
        "hot_seat_winners_per_round": winners_per_round,
        "queue_joins_per_s": queue_rates.map(|r| r.0),
        "queue_polls_per_s": queue_rates.map(|r| r.1),
        "hot_seat_p99_ms_per_round": p99_per_round,
        "ready_after": ready_after,
        "peak_rss_kib": rss.iter().map(|(p, r)| json!({ "pid": p, "vm_hwm_kib": r })).collect::<Vec<_>>(),
        "invariant_violations": violations.as_ref().map(|v| v.iter().map(|(n, c)| json!({ "check": n, "rows": c })).collect::<Vec<_>>()),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "scenario {:?} on {} instance(s), {} clients, {} seats, {:.1} s",
            args.scenario,
            args.targets.len(),
            args.clients,
            args.seats,
            elapsed
        );
        println!(
            "requests/s {:.0}   holds/s {:.0}   hold+confirm flows/s {:.0}",
            requests as f64 / elapsed,
            holds_ok / elapsed,
            flows_ok / elapsed
        );
        for (op, l) in &latency {
            println!(
                "{op:>8}: n={} p50 {} ms  p95 {} ms  p99 {} ms  max {} ms",
                l["count"], l["p50_ms"], l["p95_ms"], l["p99_ms"], l["max_ms"]
            );
        }
        for (answer, n) in &total.answers {
            println!("  {answer}: {n}");
        }
        if let Some((joins, polls)) = queue_rates {
            println!("waiting room: {joins:.0} joins/s, then {polls:.0} ticket polls/s");
        }
        if !winners_per_round.is_empty() {
            println!("hot-seat winners per round: {winners_per_round:?}");
            println!("hot-seat p99 per round (ms): {p99_per_round:?}");
        }
        for (pid, r) in &rss {
            println!("peak RSS of {pid}: {} MiB", r.map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or("?".into()));
        }
        println!("/ready after the run: {ready_after:?}");
        match &violations {
            Some(v) if v.is_empty() => println!("invariants: all hold"),
            Some(v) => println!("INVARIANTS VIOLATED: {v:?}"),
            None => println!("invariants: not checked (no --database-url)"),
        }
    }
    let failed = violations.is_some_and(|v| !v.is_empty())
        || winners_per_round.iter().any(|w| *w != 1)
        || ready_after.iter().any(|s| *s != 200);
    std::process::exit(if failed { 1 } else { 0 });
}
