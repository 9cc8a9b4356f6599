//! Multi-process fixtures for the fault suite: holdfast binaries we can pause, kill and
//! restart; a private Postgres cluster we can restart without disturbing other tests; and a
//! TCP fault proxy (latency, blackhole) in front of a Redis node.
//!
//! The proxy is ours rather than the `noxious` crate's: noxious is a Toxiproxy server's core
//! (runner, shared state, event channels) pinned to tokio-util 0.6 and rand 0.8; the two
//! faults we need fit in a page of tokio.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use holdfast::auth::JwtKeys;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::support::app::{
    Event, JWT_SECRET, RedisCluster, Res, TestDatabase, eventually, free_port, request, restartable_port, seat_ids,
};

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// One holdfast process (the real binary), stopped by its PID when dropped.
pub struct Instance {
    pub port: u16,
    pub base: String,
    child: Option<Child>,
}

/// The settings every instance in a test shares: one database, one set of Redis nodes.
pub fn shared_env(database_url: &str, redis_urls: &str, key_prefix: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url),
        ("REDIS_URLS", redis_urls),
        ("REDIS_KEY_PREFIX", key_prefix),
        ("JWT_SECRET", JWT_SECRET),
        ("RATE_LIMIT_PER_IP", "0"),
        ("RATE_LIMIT_PER_USER", "0"),
        // Load and fault tests hold many seats per user; the cap has tests of its own.
        ("HOLD_MAX_LIVE_PER_USER", "0"),
        ("HOLD_SWEEP_INTERVAL_MS", "200"),
        ("IDEMPOTENCY_SWEEP_INTERVAL_MS", "500"),
        ("RUST_LOG", "warn"),
        // Many instances share the test cluster: do not hold a full pool each while idle.
        ("DATABASE_MIN_CONNECTIONS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Instance {
    pub async fn spawn(env: &[(String, String)], extra: &[(&str, &str)]) -> Self {
        Self::spawn_on(restartable_port(), env, extra).await
    }

    /// Starts on a given port (a restarted instance keeps its place behind the balancer).
    pub async fn spawn_on(port: u16, env: &[(String, String)], extra: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        command
            .arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("the holdfast binary starts");
        let instance = Self { port, base: format!("http://127.0.0.1:{port}"), child: Some(child) };
        let client = crate::support::http_client(reqwest::Client::builder());
        let health = format!("{}/health", instance.base);
        eventually("the instance serves /health", Duration::from_secs(30), || async {
            client.get(&health).send().await.map(|r| r.status().is_success()).unwrap_or(false)
        })
        .await;
        instance
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("instance is running").id()
    }

    /// Freezes the process (SIGSTOP): it holds its locks and connections, and does nothing.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// SIGTERM: a graceful stop (drain, then finish in-flight work).
    pub fn terminate(&self) {
        signal(self.pid(), "-TERM");
    }

    /// Waits for the process to exit by itself; panics after `deadline`.
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("instance is running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(started.elapsed() < deadline, "the instance did not exit within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "-CONT");
        }
        self.kill();
    }
}

/// A Postgres cluster of this test's own, so it can be stopped and restarted freely.
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    bindir: String,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

impl PgCluster {
    pub fn start() -> Self {
        let bindir = std::env::var("HOLDFAST_PG_BINDIR").expect("HOLDFAST_PG_BINDIR is set by scripts/test.sh");
        let dir = std::env::temp_dir().join(format!("holdfast-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = Self { port: restartable_port(), dir, bindir };
        if is_root() {
            // Postgres refuses to run as root: the cluster belongs to the postgres user.
            assert!(
                Command::new("chown").args(["postgres", cluster.dir.to_str().unwrap()]).status().unwrap().success()
            );
        }
        let data = cluster.dir.join("data");
        let status = cluster
            .pg_command("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        cluster.start_server();
        cluster
    }

    fn pg_command(&self, tool: &str) -> Command {
        let path = format!("{}/{tool}", self.bindir);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &path]);
            command
        } else {
            Command::new(path)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start_server(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let status = self
            .pg_command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                &options,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        if !status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "pg_ctl start failed on port {}; the server's log ends:\n{}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    /// Stops at once, like a crash: no checkpoint, clients cut off mid-statement.
    pub fn stop_immediate(&self) {
        let data = self.dir.join("data");
        let _ = self
            .pg_command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every chunk is delayed this long before it is passed on.
    Latency(Duration),
    /// Bytes vanish: connections stay open and nothing comes back.
    Blackhole,
}

/// A TCP proxy in front of one upstream port, whose fault can be switched at any time.
pub struct FaultProxy {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<Mutex<Fault>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let current = *fault.lock().unwrap();
        match current {
            Fault::None => {}
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Blackhole => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl FaultProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let shared = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = shared.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (upstream_read, upstream_write) = upstream.into_split();
                    tokio::join!(
                        pump(client_read, upstream_write, fault.clone()),
                        pump(upstream_read, client_write, fault)
                    );
                });
            }
        });
        Self { port, fault, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drives `n` requests built by `make` through `concurrency` workers; returns what each got.
pub async fn run_load<F, Fut, T>(n: usize, concurrency: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (make, next, results) = (make.clone(), next.clone(), results.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let out = make(i).await;
                    results.lock().unwrap().push(out);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap()
}

/// A deadline-bounded wait that also reports how long the wait took.
pub async fn timed<T>(fut: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = fut.await;
    (out, started.elapsed())
}

/// HAProxy in front of instances, health-checking /ready as docker-compose.yml's does.
pub struct Haproxy {
    pub base: String,
    child: Child,
    config: PathBuf,
    stats: PathBuf,
}

impl Haproxy {
    /// A balancer for the fault suite: retries and redispatch on, so a killed instance's
    /// refused connections are tried elsewhere.
    pub async fn start(backends: &[u16]) -> Self {
        let servers: String =
            backends.iter().enumerate().map(|(i, p)| format!("    server s{i} 127.0.0.1:{p} check\n")).collect();
        Self::start_with(|port, stats| {
            format!(
                "global\n    maxconn 4096\n    stats socket {stats} level admin\n\
                 defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    timeout server 15s\n    \
                 retries 3\n    option redispatch\n\
                 frontend http\n    bind 127.0.0.1:{port}\n    default_backend holdfast\n\
                 backend holdfast\n    balance roundrobin\n    option httpchk GET /ready\n    \
                 http-check expect status 200\n    default-server inter 300ms fall 2 rise 2\n{servers}"
            )
        })
        .await
    }

    /// The shipped `deploy/haproxy.cfg`, as it is, but bound to loopback and pointing at
    /// `backends` (named s0, s1, ...), with a stats socket for the test to read.
    pub async fn start_shipped(backends: &[u16]) -> Self {
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg")).unwrap();
        Self::start_with(|port, stats| {
            let mut config = String::new();
            for line in shipped.lines() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("server ") {
                    continue; // replaced below
                } else if trimmed.starts_with("bind ") {
                    config.push_str(&format!("    bind 127.0.0.1:{port}\n"));
                } else {
                    config.push_str(line);
                    config.push('\n');
                }
                if trimmed == "global" {
                    config.push_str(&format!("    stats socket {stats} level admin\n"));
                }
            }
            for (i, p) in backends.iter().enumerate() {
                config.push_str(&format!("    server s{i} 127.0.0.1:{p} check\n"));
            }
            config
        })
        .await
    }

    async fn start_with(config_for: impl FnOnce(u16, &str) -> String) -> Self {
        let port = free_port();
        let name = Uuid::new_v4().simple();
        let config = std::env::temp_dir().join(format!("holdfast-haproxy-{name}.cfg"));
        let stats = std::env::temp_dir().join(format!("holdfast-haproxy-{name}.sock"));
        std::fs::write(&config, config_for(port, stats.to_str().unwrap())).unwrap();
        let child = Command::new("haproxy")
            .args(["-f", config.to_str().unwrap(), "-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy is installed (scripts/dev-env.sh installs it)");
        let proxy = Self { base: format!("http://127.0.0.1:{port}"), child, config, stats };
        let client = crate::support::http_client(reqwest::Client::builder());
        let health = format!("{}/health", proxy.base);
        eventually("haproxy forwards /health", Duration::from_secs(15), || async {
            client.get(&health).send().await.map(|r| r.status().is_success()).unwrap_or(false)
        })
        .await;
        proxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.stats);
    }
}

impl Haproxy {
    /// The balancer's view of backend server `s{index}`: "UP", "DOWN", "UP 1/2"...
    pub async fn server_status(&self, index: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut socket) = tokio::net::UnixStream::connect(&self.stats).await else {
            return String::new();
        };
        socket.write_all(b"show stat\n").await.unwrap();
        let mut csv = String::new();
        socket.read_to_string(&mut csv).await.unwrap();
        let server = format!("s{index}");
        csv.lines()
            .map(|line| line.split(',').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&"holdfast") && fields.get(1) == Some(&server.as_str()))
            .and_then(|fields| fields.get(17).map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }
}

/// A client for several instances at once.
#[derive(Clone)]
pub struct Clients {
    pub http: reqwest::Client,
    jwt: Arc<JwtKeys>,
}

impl Clients {
    pub fn new() -> Self {
        Self {
            http: crate::support::http_client(
                reqwest::Client::builder().pool_max_idle_per_host(1024).pool_idle_timeout(Duration::from_secs(5)),
            ),
            jwt: Arc::new(JwtKeys::new(JWT_SECRET)),
        }
    }

    pub fn token(&self, user: &str) -> String {
        self.jwt.mint(user, user == "admin", Duration::from_secs(3600)).unwrap()
    }

    pub async fn send(
        &self,
        base: &str,
        method: Method,
        path: &str,
        user: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Res, reqwest::Error> {
        request(&self.http, method, &format!("{base}{path}"), Some(&self.token(user)), key, body).await
    }

    pub async fn hold(
        &self,
        base: &str,
        user: &str,
        event: Uuid,
        seats: &[Uuid],
        key: &str,
    ) -> Result<Res, reqwest::Error> {
        self.send(
            base,
            Method::POST,
            &format!("/v1/events/{event}/holds"),
            user,
            Some(key),
            Some(&json!({ "seat_ids": seats })),
        )
        .await
    }

    /// The status /ready answers with, or None when nothing answers.
    pub async fn ready(&self, base: &str) -> Option<StatusCode> {
        self.send(base, Method::GET, "/ready", "x", None, None).await.ok().map(|r| r.status)
    }

    pub async fn create_event(&self, base: &str, seats: u32) -> Event {
        let body = json!({ "name": "Chaos", "starts_at": "2030-01-01T00:00:00Z",
                           "layout": { "sections": 1, "rows": 1, "seats_per_row": seats, "price_cents": 100 } });
        let created = self
            .send(base, Method::POST, "/v1/events", "admin", Some(&Uuid::new_v4().to_string()), Some(&body))
            .await
            .unwrap();
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        let id = created.id();
        let seats = self
            .send(base, Method::GET, &format!("/v1/events/{id}/seats?limit=10000"), "admin", None, None)
            .await
            .unwrap();
        let seats = seat_ids(&seats.body);
        Event { id, seats }
    }
}

/// A fresh Redis key prefix, so tests sharing nodes never see each other's locks.
pub fn prefix() -> String {
    format!("chaos:{}:", Uuid::new_v4().simple())
}

/// The usual fault-suite setup: three Redis nodes, a fresh database, a private key prefix, and
/// the settings every instance of the test shares.
pub struct Fleet {
    pub redis: RedisCluster,
    pub database: TestDatabase,
    pub prefix: String,
    env: Vec<(String, String)>,
}

impl Fleet {
    pub async fn start() -> Self {
        let redis = RedisCluster::start(3);
        let database = TestDatabase::create().await;
        let prefix = prefix();
        let env = shared_env(&database.url, &redis.urls(), &prefix);
        Self { redis, database, prefix, env }
    }

    pub async fn spawn(&self, extra: &[(&str, &str)]) -> Instance {
        Instance::spawn(&self.env, extra).await
    }

    pub async fn spawn_on(&self, port: u16, extra: &[(&str, &str)]) -> Instance {
        Instance::spawn_on(port, &self.env, extra).await
    }

    pub async fn spawn_many(&self, n: usize, extra: &[(&str, &str)]) -> Vec<Instance> {
        let mut instances = Vec::with_capacity(n);
        for _ in 0..n {
            instances.push(self.spawn(extra).await);
        }
        instances
    }

    pub async fn db(&self) -> PgPool {
        PgPool::connect(&self.database.url).await.unwrap()
    }
}
