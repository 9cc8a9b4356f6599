//! CORS (`CORS_ALLOWED_ORIGINS`): a page on an allowed origin can call every route from a
//! browser and read the answers, refusals included; any other origin gets no CORS headers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::{Res, TestApp, spawn_app, spawn_app_with};

const PAGE: &str = "https://seats.example.com";

async fn allowing_the_page() -> TestApp {
    spawn_app_with(|c| c.server.cors_allowed_origins = format!("http://localhost:5173,{PAGE}").parse().unwrap()).await
}

/// A browser's preflight for `method` on `path` from `origin`.
async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> Res {
    let response = app
        .client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization,content-type,idempotency-key")
        .send()
        .await
        .unwrap();
    TestApp::read(response).await
}

fn listed(res: &Res, header: &str) -> Vec<String> {
    res.header(header).unwrap_or_default().split(',').map(|h| h.trim().to_ascii_lowercase()).collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_on_every_route_without_a_token() {
    let app = allowing_the_page().await;
    let id = uuid::Uuid::now_v7();
    for (path, method) in [
        (format!("/v1/events/{id}/holds"), "POST"),
        (format!("/v1/holds/{id}/confirm"), "POST"),
        (format!("/v1/holds/{id}"), "DELETE"),
        (format!("/v1/inventories/{id}/nights"), "PATCH"),
        (format!("/v1/bookings/{id}/reschedule"), "POST"),
        (format!("/v1/events/{id}/seats"), "GET"),
        ("/v1/no-such-route".to_owned(), "GET"),
    ] {
        let res = preflight(&app, &path, PAGE, method).await;
        assert!(res.status.is_success(), "{path}: {res:?}");
        assert_eq!(res.header("access-control-allow-origin"), Some(PAGE), "{path}");
        assert!(listed(&res, "access-control-allow-methods").contains(&method.to_ascii_lowercase()), "{path}: {res:?}");
        let headers = listed(&res, "access-control-allow-headers");
        for needed in ["authorization", "content-type", "idempotency-key", "last-event-id", "admission-token"] {
            assert!(headers.contains(&needed.to_owned()), "{path}: {needed} not allowed: {res:?}");
        }
        assert_eq!(res.header("access-control-max-age"), Some("600"));
        assert!(res.header("access-control-allow-credentials").is_none(), "tokens are not cookies");
    }
    // The other configured origin too, as its page's browser sends it.
    let res = preflight(&app, "/v1/bookings", "http://localhost:5173", "GET").await;
    assert_eq!(res.header("access-control-allow-origin"), Some("http://localhost:5173"));
    // A preflight is not a request: no hold, no record, nothing written.
    assert_eq!(app.count("select count(*) from idempotency_records").await, 0);
}

#[tokio::test]
async fn an_allowed_origin_reads_answers_refusals_and_the_headers_a_client_needs() {
    let app = allowing_the_page().await;
    let event = app.create_event(1, 1, 2).await;
    let hold = |key: &'static str| {
        app.client
            .post(app.url(&format!("/v1/events/{}/holds", event.id)))
            .header("origin", PAGE)
            .bearer_auth(app.token("alice"))
            .header("idempotency-key", key)
            .json(&json!({ "seat_ids": [event.seats[0]] }))
    };
    let created = TestApp::read(hold("k").send().await.unwrap()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.header("access-control-allow-origin"), Some(PAGE));
    let exposed = listed(&created, "access-control-expose-headers");
    for needed in ["idempotent-replayed", "retry-after", "x-request-id", "location"] {
        assert!(exposed.contains(&needed.to_owned()), "{needed} not exposed: {created:?}");
    }
    assert!(created.header("vary").unwrap_or_default().to_ascii_lowercase().contains("origin"));
    let replayed = TestApp::read(hold("k").send().await.unwrap()).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.header("access-control-allow-origin"), Some(PAGE));

    // A refusal is readable too: the page can show its problem code.
    let unauthorized = TestApp::read(
        app.client
            .post(app.url(&format!("/v1/events/{}/holds", event.id)))
            .header("origin", PAGE)
            .header("idempotency-key", "no-token")
            .json(&json!({ "seat_ids": [event.seats[1]] }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    unauthorized.assert_problem(401, "UNAUTHENTICATED");
    assert_eq!(unauthorized.header("access-control-allow-origin"), Some(PAGE));
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers() {
    let app = allowing_the_page().await;
    for origin in ["https://evil.example.com", "https://seats.example.com.evil.example", "null"] {
        let res = preflight(&app, "/v1/bookings", origin, "GET").await;
        assert!(res.header("access-control-allow-origin").is_none(), "{origin}: {res:?}");
        let res = TestApp::read(
            app.client
                .get(app.url("/v1/bookings"))
                .header("origin", origin)
                .bearer_auth(app.token("a"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(res.header("access-control-allow-origin").is_none(), "{origin}: {res:?}");
    }
}

#[tokio::test]
async fn without_the_setting_no_cors_headers_are_sent_and_a_preflight_is_405() {
    let app = spawn_app().await;
    let res = preflight(&app, "/v1/bookings", PAGE, "GET").await;
    res.assert_problem(405, "METHOD_NOT_ALLOWED");
    assert!(res.header("access-control-allow-origin").is_none());
    let res = TestApp::read(app.client.get(app.url("/health")).header("origin", PAGE).send().await.unwrap()).await;
    assert!(res.header("access-control-allow-origin").is_none());
}
