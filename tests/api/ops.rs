//! Health, readiness, metrics, request ids and rate limits.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::app::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_ready_answer_ok_with_everything_up() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(ready.body["checks"]["postgres"], "up");
    assert_eq!(ready.body["checks"]["redis"]["up"], 3);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(Uuid::parse_str(res.headers()["x-request-id"].to_str().unwrap()).is_ok());
    let res = app.client.get(app.url("/v1/nowhere")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn metrics_expose_requests_locks_idempotency_and_holds() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 3).await;
    let hold = app.hold("alice", event.id, &[event.seats[0]], "m").await;
    app.confirm("alice", hold.id()).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "holdfast_http_requests_total{method=\"POST\",route=\"/v1/events/{event_id}/holds\",status=\"201\"}",
        "holdfast_http_request_duration_seconds_bucket",
        "holdfast_lock_acquisitions_total{outcome=\"acquired\"}",
        "holdfast_lock_acquire_duration_seconds_bucket",
        // A new key whose lock is free is executed at once, its record written with the effect.
        "holdfast_idempotency_outcomes_total{outcome=\"executed_at_once\"}",
        "holdfast_holds_created_total",
        "holdfast_holds_confirmed_total",
        "holdfast_bookings_created_total",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    assert!(!text.contains(&event.id.to_string()), "no raw ids in labels");
}

#[tokio::test]
async fn per_ip_rate_limits_answer_429_but_never_limit_health() {
    let app = spawn_app_with(|c| {
        c.rate_limits.per_ip = 1;
        c.rate_limits.per_ip_burst = Some(3);
    })
    .await;
    let event = app.create_event(1, 1, 1).await; // uses one token of the burst
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.get(&format!("/v1/events/{}", event.id), None).await);
    }
    let limited = statuses.iter().find(|r| r.status == StatusCode::TOO_MANY_REQUESTS).expect("some request is limited");
    limited.assert_problem(429, "RATE_LIMITED");
    assert!(limited.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    for _ in 0..20 {
        assert_eq!(app.get("/health", None).await.status, StatusCode::OK);
        assert_ne!(app.get("/ready", None).await.status, StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test]
async fn per_user_rate_limits_apply_to_each_user_separately() {
    let app = spawn_app_with(|c| {
        c.rate_limits.per_user = 1;
        c.rate_limits.per_user_burst = Some(2);
    })
    .await;
    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(app.get("/v1/bookings", Some("alice")).await.status);
    }
    assert!(alice.contains(&StatusCode::TOO_MANY_REQUESTS), "{alice:?}");
    assert_eq!(app.get("/v1/bookings", Some("bob")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_header_and_problem() {
    let app = spawn_app().await;
    let res = app.get("/openapi.json", None).await;
    assert_eq!(res.status, reqwest::StatusCode::OK);
    let doc = &res.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/v1/events", "post"),
        ("/v1/events/{event_id}", "get"),
        ("/v1/events/{event_id}/seats", "get"),
        ("/v1/events/{event_id}/holds", "post"),
        ("/v1/events/{event_id}/bookings", "post"),
        ("/v1/holds/{hold_id}", "get"),
        ("/v1/holds/{hold_id}", "delete"),
        ("/v1/holds/{hold_id}/extend", "post"),
        ("/v1/holds/{hold_id}/confirm", "post"),
        ("/v1/bookings", "get"),
        ("/v1/bookings/{booking_id}", "get"),
        ("/v1/bookings/{booking_id}/cancel", "post"),
        ("/v1/bookings/{booking_id}/reschedule", "post"),
        ("/v1/bookings/{booking_id}/history", "get"),
        ("/v1/inventories", "post"),
        ("/v1/inventories/{inventory_id}/nights", "patch"),
        ("/v1/inventories/{inventory_id}/availability", "get"),
        ("/v1/inventories/{inventory_id}/holds", "post"),
        ("/v1/resources", "post"),
        ("/v1/resources/{resource_id}", "get"),
        ("/v1/resources/{resource_id}/availability", "get"),
        ("/v1/resources/{resource_id}/holds", "post"),
        ("/v1/admin/integrity", "get"),
        ("/v1/changes", "get"),
        ("/v1/events/{event_id}/stream", "get"),
        ("/v1/inventories/{inventory_id}/stream", "get"),
        ("/v1/resources/{resource_id}/stream", "get"),
        ("/v1/events/{event_id}", "patch"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{webhook_id}", "get"),
        ("/v1/webhooks/{webhook_id}", "delete"),
        ("/v1/webhooks/{webhook_id}/deliveries", "get"),
        ("/v1/events/{event_id}/queue", "post"),
        ("/v1/events/{event_id}/queue", "get"),
        ("/v1/queue/{ticket_id}", "get"),
        ("/v1/queue/{ticket_id}", "delete"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, method) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        if method == "post" && !path.starts_with("/v1/admin") {
            let params = op["parameters"].as_array().unwrap_or_else(|| panic!("{method} {path} has parameters"));
            let key = params.iter().find(|p| p["name"] == "Idempotency-Key").expect("Idempotency-Key documented");
            assert_eq!(key["in"], "header");
            assert_eq!(key["required"], true, "{method} {path}");
            let ok = op["responses"].as_object().unwrap().iter().find(|(s, _)| s.starts_with('2')).unwrap().1;
            assert!(ok["headers"]["Idempotent-Replayed"].is_object(), "{method} {path}");
        }
        if op["security"][0].get("bearer").is_some() {
            assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object(), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
        }
    }
    let hold = &doc["paths"]["/v1/events/{event_id}/holds"]["post"];
    assert!(hold["responses"]["409"]["content"]["application/problem+json"].is_object(), "{hold}");
    assert!(hold["responses"]["503"]["headers"]["Retry-After"].is_object(), "{hold}");
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
    assert!(doc["components"]["schemas"]["HoldView"].is_object());
    for kind in ["events/{event_id}", "inventories/{inventory_id}", "resources/{resource_id}"] {
        let stream = &doc["paths"][format!("/v1/{kind}/stream")]["get"];
        assert!(stream["responses"]["200"]["content"]["text/event-stream"].is_object(), "{stream}");
        assert!(stream["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Last-Event-ID"), "{stream}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
