//! Test harness: the real server on port 0, a fresh database per test (dropped afterwards),
//! a per-test Redis key prefix on the shared nodes, or private redis-server processes for
//! tests that stop and start nodes. Requests go over real HTTP.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use holdfast::auth::JwtKeys;
use holdfast::config::Config;
use holdfast::startup::Application;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef";

#[derive(Parser)]
struct ConfigArgs {
    #[command(flatten)]
    config: Config,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set: run the tests with scripts/test.sh"))
}

/// The server's maintenance database URL (same server as DATABASE_URL, database `postgres`).
fn admin_url() -> String {
    let url = env("DATABASE_URL");
    let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&url);
    format!("{base}/postgres")
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The separate `/metrics` listener, when the test set `METRICS_LISTEN_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// A pool on the test database, for arranging state and checking invariants directly.
    pub db: PgPool,
    pub jwt: JwtKeys,
    /// Held for its Drop, which drops the database.
    #[allow(dead_code)]
    pub database: TestDatabase,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Defaults for tests: limits off, fast sweeps, the shared Redis nodes with a private prefix.
pub fn test_config(database_url: &str) -> Config {
    let prefix = format!("test:{}:", Uuid::new_v4().simple());
    let args = ConfigArgs::try_parse_from([
        "holdfast",
        "--listen-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--redis-urls",
        &env("REDIS_URLS"),
        "--redis-key-prefix",
        &prefix,
        "--jwt-secret",
        JWT_SECRET,
    ])
    .expect("test configuration parses");
    let mut config = args.config;
    config.rate_limits.per_ip = 0;
    config.rate_limits.per_user = 0;
    config.holds.max_live_per_user = 0;
    config.server.shutdown_drain_seconds = 0;
    config.jobs.hold_sweep_interval_ms = 100;
    config.jobs.idempotency_sweep_interval_ms = 200;
    config.database.max_connections = 30;
    config.database.min_connections = Some(1);
    config.redis.timeout_ms = 250;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A fresh database on the test Postgres server, dropped (with its connections) on drop.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("holdfast_test_{}", Uuid::new_v4().simple());
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.expect("connect to the test Postgres server");
        sqlx::query(sqlx::AssertSqlSafe(format!("create database \"{name}\""))).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await: use a thread with a runtime of its own.
        let (name, url) = (self.name.clone(), admin_url());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&url).await {
                    let sql = format!("drop database if exists \"{name}\" with (force)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
                }
            });
        })
        .join()
        .ok();
    }
}

/// An instance built from `config`, serving in the background until the sender is used or
/// dropped: its address, its `/metrics` listener if any, the sender and the serving task.
pub async fn serve(
    config: Config,
) -> (SocketAddr, Option<SocketAddr>, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let app = Application::build(config).await.expect("application builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    (addr, metrics_addr, tx, server)
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let database = TestDatabase::create().await;
    let mut config = test_config(&database.url);
    configure(&mut config);
    let (addr, metrics_addr, tx, server) = serve(config).await;
    let db = PgPool::connect(&database.url).await.unwrap();
    TestApp {
        addr,
        metrics_addr,
        // Below the server's 10 s idle keep-alive limit (HTTP_HEADER_READ_TIMEOUT_MS), so a pooled
        // connection is never reused just as the server closes it.
        client: crate::support::http_client(
            reqwest::Client::builder().pool_max_idle_per_host(200).pool_idle_timeout(Duration::from_secs(5)),
        ),
        db,
        jwt: JwtKeys::new(JWT_SECRET),
        database,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Res {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn id(&self) -> Uuid {
        self.body["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no id in {self:?}"))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
    }
}

/// Sends one request; an error means no HTTP answer came back (refused, reset, cut off).
pub async fn request(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&Value>,
) -> Result<Res, reqwest::Error> {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await?;
    Ok(read(response).await)
}

pub async fn read(response: reqwest::Response) -> Res {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Res { status, headers, body }
}

/// The seat ids of a seat-map page (`GET /v1/events/{id}/seats`), in map order.
pub fn seat_ids(page: &Value) -> Vec<Uuid> {
    page["seats"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().parse().unwrap()).collect()
}

#[derive(Clone)]
pub struct Event {
    pub id: Uuid,
    pub seats: Vec<Uuid>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, user: &str) -> String {
        self.jwt.mint(user, false, Duration::from_secs(3600)).unwrap()
    }

    pub fn admin_token(&self) -> String {
        self.jwt.mint("admin", true, Duration::from_secs(3600)).unwrap()
    }

    /// Sends a request with an optional bearer token, Idempotency-Key and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Res {
        request(&self.client, method, &self.url(path), token, key, body).await.expect("request reaches the server")
    }

    pub async fn read(response: reqwest::Response) -> Res {
        read(response).await
    }

    pub async fn get(&self, path: &str, user: Option<&str>) -> Res {
        let token = user.map(|u| self.token(u));
        self.send(Method::GET, path, token.as_deref(), None, None).await
    }

    pub async fn post(&self, path: &str, user: &str, key: &str, body: &Value) -> Res {
        self.send(Method::POST, path, Some(&self.token(user)), Some(key), Some(body)).await
    }

    /// Creates an event of `sections × rows × per_row` seats and lists its seat ids in order.
    pub async fn create_event(&self, sections: u32, rows: u32, per_row: u32) -> Event {
        let body = json!({
            "name": "Test event",
            "starts_at": "2030-06-01T19:30:00Z",
            "layout": { "sections": sections, "rows": rows, "seats_per_row": per_row, "price_cents": 2500 },
        });
        let res = self
            .send(Method::POST, "/v1/events", Some(&self.admin_token()), Some(&Uuid::new_v4().to_string()), Some(&body))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
        let id = res.id();
        let seats = self.get(&format!("/v1/events/{id}/seats?limit=10000"), None).await;
        let seats = seat_ids(&seats.body);
        Event { id, seats }
    }

    pub async fn hold(&self, user: &str, event: Uuid, seats: &[Uuid], key: &str) -> Res {
        self.post(&format!("/v1/events/{event}/holds"), user, key, &json!({ "seat_ids": seats })).await
    }

    pub async fn hold_with_ttl(&self, user: &str, event: Uuid, seats: &[Uuid], ttl: i64) -> Res {
        let body = json!({ "seat_ids": seats, "ttl_seconds": ttl });
        self.post(&format!("/v1/events/{event}/holds"), user, &Uuid::new_v4().to_string(), &body).await
    }

    pub async fn confirm(&self, user: &str, hold: Uuid) -> Res {
        self.post(&format!("/v1/holds/{hold}/confirm"), user, &Uuid::new_v4().to_string(), &json!({})).await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db).await.unwrap()
    }

    pub async fn assert_invariants(&self) {
        assert_invariants(&self.db).await;
    }

    /// The sum of a metric's series on /metrics whose labels contain `labels` (e.g.
    /// `outcome="claimed"`; empty for all), or 0 when there is none yet.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (series, value) = rest.rsplit_once(' ')?;
                (series.is_empty() || series.starts_with('{')).then_some(())?;
                series.contains(labels).then(|| value.parse::<f64>().unwrap())
            })
            .sum()
    }
}

/// The one number a `select count(*) ...` answers.
pub async fn count(db: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// The booking invariants (`holdfast::db::invariants`), read straight from the database.
pub async fn assert_invariants(db: &PgPool) {
    let violations = holdfast::db::invariants::violations(db).await.unwrap();
    assert!(violations.is_empty(), "invariants violated: {violations:?}");
}

/// Polls `check` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// A private redis-server process, stopped by its PID when dropped.
pub struct RedisNode {
    pub port: u16,
    child: Option<Child>,
}

/// A port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free port for a server that a test stops and starts again on the same port (Postgres,
/// Redis, holdfast instances): one below the kernel's ephemeral range. A port from that range
/// ([`free_port`]) can be handed, while its server is down, to another test's listener or to
/// any outgoing connection on the machine, and the restart then fails to bind (seen once in CI:
/// `pg_ctl start` failing after `stop_immediate`). Below the range only another call of this
/// function can pick it, at random among several thousand ports, and only if it is free then.
pub fn restartable_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    let span = u128::from(ephemeral_start - low);
    for _ in 0..100 {
        let port = low + (Uuid::new_v4().as_u128() % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

impl RedisNode {
    pub fn start() -> Self {
        let mut node = Self { port: restartable_port(), child: None };
        node.restart();
        node
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with no persistence: a restarted node has forgotten every key.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

impl RedisCluster {
    pub fn start(n: usize) -> Self {
        Self { nodes: (0..n).map(|_| RedisNode::start()).collect() }
    }
    pub fn urls(&self) -> String {
        self.nodes.iter().map(RedisNode::url).collect::<Vec<_>>().join(",")
    }
}
