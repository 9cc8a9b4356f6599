//! Signed webhooks, delivered to a real HTTP receiver on loopback that checks every signature
//! with the Standard Webhooks reference library: delivery once the receiver comes up, retries
//! with the same `webhook-id`, redelivery after the delivering instance is SIGKILLed, nothing for
//! a rolled-back transaction, 410 and long failure disabling the endpoint, no redirects, no
//! private targets unless allowed, and the endpoints' own API.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection as _;
use uuid::Uuid;

use crate::support::app::{TestApp, eventually, free_port, spawn_app, spawn_app_with};
use crate::support::cluster::{Clients, Fleet};

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// Never answers (the connection stays open).
    Hang,
    /// 302 to this URL.
    Redirect(String),
}

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    received: Vec<Received>,
}

/// A webhook receiver on loopback: records every request, answers as scripted, then 200.
struct Receiver {
    port: u16,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answers: &[Answer]) -> Self {
        Self::start_on(0, answers).await
    }

    async fn start_on(port: u16, answers: &[Answer]) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script { answers: answers.iter().cloned().collect(), received: Vec::new() }));
        let state = script.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let answer = {
                    let mut script = state.lock().unwrap();
                    script.received.push(Received { headers, body });
                    script.answers.pop_front().unwrap_or(Answer::Status(200))
                };
                match answer {
                    Answer::Status(code) => AxumStatus::from_u16(code).unwrap().into_response(),
                    Answer::Hang => std::future::pending::<Response>().await,
                    Answer::Redirect(to) => (AxumStatus::FOUND, [("location", to)]).into_response(),
                }
            }
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { port, script, server }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Checks a request's signature with the specification's own library.
#[track_caller]
fn assert_signed(secret: &str, request: &Received) {
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    webhook.verify(request.body.as_bytes(), &request.headers).unwrap_or_else(|e| panic!("bad signature: {e:?}"));
    assert_eq!(request.header("content-type"), "application/json");
    // The body is the change event; its id is the webhook-id.
    assert_eq!(request.json()["id"].as_str().unwrap(), request.header("webhook-id"));
}

/// An app that may deliver to loopback, with fast retries.
async fn spawn_hooked() -> TestApp {
    spawn_app_with(|config| {
        config.webhooks.allow_private_targets = true;
        config.webhooks.retry_base_ms = 100;
        config.webhooks.poll_interval_ms = 50;
        config.webhooks.timeout_ms = 2_000;
    })
    .await
}

async fn register(app: &TestApp, url: &str, types: &[&str]) -> (Uuid, String) {
    let key = Uuid::new_v4().to_string();
    let body = json!({ "url": url, "event_types": types, "description": "test receiver" });
    let res = app.send(Method::POST, "/v1/webhooks", Some(&app.admin_token()), Some(&key), Some(&body)).await;
    assert_eq!(res.status, StatusCode::CREATED, "{res:?}");
    let secret = res.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (res.id(), secret)
}

async fn deliveries(app: &TestApp, webhook: Uuid) -> Vec<Value> {
    let res = app
        .send(Method::GET, &format!("/v1/webhooks/{webhook}/deliveries"), Some(&app.admin_token()), None, None)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    res.body["deliveries"].as_array().unwrap().clone()
}

async fn webhook(app: &TestApp, id: Uuid) -> Value {
    let res = app.send(Method::GET, &format!("/v1/webhooks/{id}"), Some(&app.admin_token()), None, None).await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    res.body
}

#[tokio::test]
async fn a_confirmed_booking_is_delivered_signed_once_the_receiver_is_up() {
    let app = spawn_hooked().await;
    let port = free_port();
    let (hook, secret) = register(&app, &format!("http://127.0.0.1:{port}/hook"), &["booking.confirmed"]).await;

    let event = app.create_event(1, 1, 2).await;
    let hold = app.hold("alice", event.id, &event.seats[..1], &Uuid::new_v4().to_string()).await;
    let booking = app.confirm("alice", hold.id()).await;
    assert_eq!(booking.status, StatusCode::CREATED, "{booking:?}");

    // Nobody listens yet: attempts fail to connect and are retried.
    eventually("a failed attempt", Duration::from_secs(20), || async {
        let list = deliveries(&app, hook).await;
        list.first().is_some_and(|d| {
            d["attempts"].as_array().unwrap().iter().any(|a| a["outcome"] == "connect_error")
                && d["status"] == "pending"
                && d["next_attempt_at"].is_string()
        })
    })
    .await;

    let receiver = Receiver::start_on(port, &[]).await;
    eventually("the booking reaches the receiver", Duration::from_secs(20), || async {
        !receiver.received().is_empty()
    })
    .await;
    let got = receiver.received();
    assert_signed(&secret, &got[0]);
    let change = got[0].json();
    assert_eq!(change["type"], "booking.confirmed", "{change}");
    assert_eq!(change["subject"]["id"].as_str().unwrap(), booking.id().to_string());
    assert_eq!(change["subject"]["event_id"].as_str().unwrap(), event.id.to_string());

    eventually("the delivery is recorded as delivered", Duration::from_secs(10), || async {
        deliveries(&app, hook).await.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    // Only the subscribed type: the hold's own events were not queued.
    let list = deliveries(&app, hook).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let last = list[0]["attempts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["outcome"].as_str(), last["response_status"].as_i64()), (Some("delivered"), Some(200)));
    let endpoint = webhook(&app, hook).await;
    assert_eq!((endpoint["status"].as_str(), endpoint["pending_deliveries"].as_i64()), (Some("enabled"), Some(0)));
    assert!(endpoint.get("failing_since").is_none(), "{endpoint}");
    assert!(endpoint.get("secret").is_none(), "the secret is shown only once");
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt_with_the_same_id() {
    let app = spawn_hooked().await;
    let receiver = Receiver::start(&[Answer::Status(500), Answer::Status(503), Answer::Status(500)]).await;
    let (hook, secret) = register(&app, &receiver.url(), &["hold.created"]).await;
    let before = app.metric("holdfast_webhook_deliveries_total", "outcome=\"delivered\"").await;

    let event = app.create_event(1, 1, 1).await;
    let hold = app.hold("bob", event.id, &event.seats, &Uuid::new_v4().to_string()).await;
    assert_eq!(hold.status, StatusCode::CREATED, "{hold:?}");

    eventually("four attempts, the last delivered", Duration::from_secs(30), || async {
        deliveries(&app, hook).await.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 4, "{got:?}");
    for request in &got {
        assert_signed(&secret, request);
        assert_eq!(request.header("webhook-id"), got[0].header("webhook-id"));
        assert_eq!(request.body, got[0].body, "every attempt sends the same bytes");
    }
    assert_eq!(got[0].json()["subject"]["id"].as_str().unwrap(), hold.id().to_string());

    let list = deliveries(&app, hook).await;
    let attempts = list[0]["attempts"].as_array().unwrap();
    let seen: Vec<_> =
        attempts.iter().map(|a| (a["attempt"].as_i64().unwrap(), a["response_status"].as_i64())).collect();
    assert_eq!(seen, [(1, Some(500)), (2, Some(503)), (3, Some(500)), (4, Some(200))]);
    for failed in &attempts[..3] {
        assert_eq!(failed["outcome"], "http_error");
        assert!(failed["next_attempt_at"].is_string() && failed["duration_ms"].is_i64(), "{failed}");
    }
    assert_eq!(list[0]["attempt_count"], 4);
    let after = app.metric("holdfast_webhook_deliveries_total", "outcome=\"delivered\"").await;
    assert!(after > before, "{before} -> {after}");
    assert!(app.metric("holdfast_webhook_deliveries_total", "outcome=\"http_error\"").await >= 3.0);
}

#[tokio::test]
async fn an_event_whose_transaction_rolled_back_is_never_delivered() {
    let app = spawn_hooked().await;
    let receiver = Receiver::start(&[]).await;
    let (hook, secret) = register(&app, &receiver.url(), &["event.created"]).await;

    // An event written and rolled back: its trigger wrote the change, inside the transaction.
    let ghost = Uuid::new_v4();
    let mut conn = sqlx::PgConnection::connect(&app.database.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "insert into events (id, name, starts_at, created_by) values ($1, 'ghost', now() + interval '1 day', 'x')",
    )
    .bind(ghost)
    .execute(&mut *tx)
    .await
    .unwrap();
    let written: i64 =
        sqlx::query_scalar("select count(*) from audit_log where type = 'event.created' and scope_id = $1")
            .bind(ghost)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(written, 1, "the trigger wrote the change inside the transaction");
    tx.rollback().await.unwrap();

    let event = app.create_event(1, 1, 1).await;
    eventually("the committed event is delivered", Duration::from_secs(20), || async {
        deliveries(&app, hook).await.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_signed(&secret, &got[0]);
    assert_eq!(got[0].json()["subject"]["id"].as_str().unwrap(), event.id.to_string());
    assert!(got.iter().all(|r| !r.body.contains(&ghost.to_string())));
    assert_eq!(deliveries(&app, hook).await.len(), 1);
}

#[tokio::test]
async fn a_delivering_instance_killed_mid_flight_is_replaced_by_another() {
    let fleet = Fleet::start().await;
    let settings = [
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("WEBHOOK_POLL_INTERVAL_MS", "50"),
        ("WEBHOOK_RETRY_BASE_MS", "100"),
        ("WEBHOOK_TIMEOUT_MS", "2000"),
    ];
    let clients = Clients::new();
    // The first request is never answered: the instance that sent it dies waiting.
    let receiver = Receiver::start(&[Answer::Hang]).await;
    let mut a = fleet.spawn(&settings).await;
    let body = json!({ "url": receiver.url(), "event_types": ["event.created"] });
    let key = Uuid::new_v4().to_string();
    let created = clients.send(&a.base, Method::POST, "/v1/webhooks", "admin", Some(&key), Some(&body)).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let (hook, secret) = (created.id(), created.body["secret"].as_str().unwrap().to_owned());
    let event = clients.create_event(&a.base, 1).await;

    eventually("instance A sends the event", Duration::from_secs(20), || async { !receiver.received().is_empty() })
        .await;
    a.kill();

    let b = fleet.spawn(&settings).await;
    eventually("instance B delivers it after A's lease runs out", Duration::from_secs(30), || async {
        receiver.received().len() >= 2
    })
    .await;
    let got = receiver.received();
    for request in &got {
        assert_signed(&secret, request);
        assert_eq!(request.header("webhook-id"), got[0].header("webhook-id"));
        assert_eq!(request.json()["subject"]["id"].as_str().unwrap(), event.id.to_string());
    }
    let path = format!("/v1/webhooks/{hook}/deliveries");
    eventually("the delivery is recorded as delivered", Duration::from_secs(10), || async {
        let res = clients.send(&b.base, Method::GET, &path, "admin", None, None).await.unwrap();
        res.body["deliveries"][0]["status"] == "delivered"
    })
    .await;
    let res = clients.send(&b.base, Method::GET, &path, "admin", None, None).await.unwrap();
    let delivery = &res.body["deliveries"][0];
    // Attempt 1 died with instance A and left no record; attempt 2 delivered it.
    assert_eq!(delivery["attempt_count"], 2, "{delivery}");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!((attempts[0]["attempt"].as_i64(), attempts[0]["outcome"].as_str()), (Some(2), Some("delivered")));
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_so_does_failing_for_too_long() {
    let app = spawn_hooked().await;
    let gone = Receiver::start(&[Answer::Status(410)]).await;
    let failing = Receiver::start(&[Answer::Status(500), Answer::Status(500), Answer::Status(500)]).await;
    let (gone_hook, _) = register(&app, &gone.url(), &["event.created"]).await;
    let (failing_hook, _) = register(&app, &failing.url(), &["event.created"]).await;
    // The second endpoint has been failing for longer than WEBHOOK_DISABLE_AFTER_HOURS (72).
    sqlx::query("update webhook_endpoints set failing_since = now() - interval '73 hours' where id = $1")
        .bind(failing_hook)
        .execute(&app.db)
        .await
        .unwrap();

    app.create_event(1, 1, 1).await;
    eventually("both endpoints are disabled", Duration::from_secs(20), || async {
        webhook(&app, gone_hook).await["status"] == "disabled"
            && webhook(&app, failing_hook).await["status"] == "disabled"
    })
    .await;
    let gone_view = webhook(&app, gone_hook).await;
    assert!(gone_view["disabled_reason"].as_str().unwrap().contains("410"), "{gone_view}");
    let failing_view = webhook(&app, failing_hook).await;
    assert!(
        failing_view["disabled_reason"].as_str().unwrap().contains("WEBHOOK_DISABLE_AFTER_HOURS"),
        "{failing_view}"
    );
    assert_eq!(failing.received().len(), 1, "disabled after the first failure past the limit");

    // A disabled endpoint is sent nothing more, while a healthy one gets the next event.
    let control = Receiver::start(&[]).await;
    let (control_hook, _) = register(&app, &control.url(), &["event.created"]).await;
    let next = app.create_event(1, 1, 1).await;
    eventually("a healthy endpoint gets the next event", Duration::from_secs(20), || async {
        deliveries(&app, control_hook).await.iter().any(|d| d["status"] == "delivered" && d["event_id"].is_string())
            && control.received().iter().any(|r| r.body.contains(&next.id.to_string()))
    })
    .await;
    assert_eq!(gone.received().len(), 1);
    assert_eq!(failing.received().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = spawn_hooked().await;
    let elsewhere = Receiver::start(&[]).await;
    let redirecting = Receiver::start(&[Answer::Redirect(elsewhere.url())]).await;
    let (hook, _) = register(&app, &redirecting.url(), &["event.created"]).await;
    app.create_event(1, 1, 1).await;
    eventually("the redirect is recorded as a failed attempt", Duration::from_secs(20), || async {
        deliveries(&app, hook).await.first().is_some_and(|d| {
            d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["response_status"] == 302 && a["outcome"] == "http_error")
        })
    })
    .await;
    // Retried at the same URL (which now answers 200), never at the redirect's target.
    eventually("delivered on retry", Duration::from_secs(20), || async {
        deliveries(&app, hook).await.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let receiver = Receiver::start(&[]).await;
    for url in [
        receiver.url(),
        format!("https://127.0.0.1:{}/hook", receiver.port),
        format!("https://localhost:{}/hook", receiver.port),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[::1]/hook".to_owned(),
        "https://10.0.0.1/hook".to_owned(),
        "https://user:pw@example.com/hook".to_owned(),
    ] {
        let body = json!({ "url": url, "event_types": ["event.created"] });
        let res =
            app.send(Method::POST, "/v1/webhooks", Some(&admin), Some(&Uuid::new_v4().to_string()), Some(&body)).await;
        res.assert_problem(422, "WEBHOOK_TARGET_REFUSED");
    }
    assert_eq!(app.count("select count(*) from webhook_endpoints").await, 0);

    // Already registered (say, when private targets were allowed): refused when delivering,
    // whether the address is literal or comes from DNS.
    for url in
        [format!("https://127.0.0.1:{}/hook", receiver.port), format!("https://localhost:{}/hook", receiver.port)]
    {
        sqlx::query(
            "insert into webhook_endpoints (id, url, event_types, secret, created_by)
             values ($1, $2, '{event.created}', 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD', 'admin')",
        )
        .bind(Uuid::now_v7())
        .bind(url)
        .execute(&app.db)
        .await
        .unwrap();
    }
    app.create_event(1, 1, 1).await;
    eventually("both deliveries are refused", Duration::from_secs(20), || async {
        let outcomes: Vec<String> =
            sqlx::query_scalar("select outcome from webhook_attempts").fetch_all(&app.db).await.unwrap();
        outcomes.iter().filter(|o| *o == "refused_target").count() >= 2
    })
    .await;
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn endpoints_are_listed_read_and_deleted_by_admins_only() {
    let app = spawn_hooked().await;
    let admin = app.admin_token();
    let receiver = Receiver::start(&[]).await;

    // A retried registration answers the same endpoint and secret.
    let key = Uuid::new_v4().to_string();
    let body = json!({ "url": receiver.url(), "event_types": ["booking.confirmed", "hold.created"] });
    let first = app.send(Method::POST, "/v1/webhooks", Some(&admin), Some(&key), Some(&body)).await;
    let again = app.send(Method::POST, "/v1/webhooks", Some(&admin), Some(&key), Some(&body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        (again.body["id"].clone(), again.body["secret"].clone()),
        (first.body["id"].clone(), first.body["secret"].clone())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    register(&app, &receiver.url(), &["seats.changed"]).await;
    register(&app, &receiver.url(), &["event.created"]).await;

    let user = app.token("mallory");
    let res = app.send(Method::POST, "/v1/webhooks", Some(&user), Some(&Uuid::new_v4().to_string()), Some(&body)).await;
    res.assert_problem(403, "FORBIDDEN");
    app.send(Method::GET, "/v1/webhooks", Some(&user), None, None).await.assert_problem(403, "FORBIDDEN");
    for bad in [
        json!({ "url": receiver.url(), "event_types": [] }),
        json!({ "url": receiver.url(), "event_types": ["booking.*"] }),
        json!({ "url": receiver.url(), "event_types": ["hold.created"], "description": "" }),
        json!({ "url": format!("{}\n", receiver.url()), "event_types": ["hold.created"] }),
        json!({ "url": receiver.url(), "event_types": ["hold.created"], "secret": "mine" }),
    ] {
        let res =
            app.send(Method::POST, "/v1/webhooks", Some(&admin), Some(&Uuid::new_v4().to_string()), Some(&bad)).await;
        res.assert_problem(422, "VALIDATION_FAILED");
    }

    let page = app.send(Method::GET, "/v1/webhooks?limit=2", Some(&admin), None, None).await;
    assert_eq!(page.body["webhooks"].as_array().unwrap().len(), 2, "{page:?}");
    let next = page.body["next_cursor"].as_str().unwrap().to_owned();
    let rest = app.send(Method::GET, &format!("/v1/webhooks?limit=2&after={next}"), Some(&admin), None, None).await;
    assert_eq!(rest.body["webhooks"].as_array().unwrap().len(), 1, "{rest:?}");
    assert!(rest.body.get("next_cursor").is_none());
    assert!(page.body["webhooks"].as_array().unwrap().iter().all(|w| w.get("secret").is_none()));

    let id = first.id();
    let one = webhook(&app, id).await;
    assert_eq!(one["event_types"], json!(["booking.confirmed", "hold.created"]));
    let path = format!("/v1/webhooks/{id}");
    let deleted = app.send(Method::DELETE, &path, Some(&admin), None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    app.send(Method::GET, &path, Some(&admin), None, None).await.assert_problem(404, "NOT_FOUND");
    app.send(Method::DELETE, &path, Some(&admin), None, None).await.assert_problem(404, "NOT_FOUND");
    app.send(Method::GET, &format!("{path}/deliveries"), Some(&admin), None, None)
        .await
        .assert_problem(404, "NOT_FOUND");
}
