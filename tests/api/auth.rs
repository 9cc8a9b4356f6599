//! Tokens and ownership: another user's hold or booking is a 404, never the data.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::app::spawn_app;

#[tokio::test]
async fn another_user_cannot_read_release_confirm_extend_or_cancel_what_is_yours() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 5).await;
    let hold_id = app.hold("alice", event.id, &[event.seats[0]], "h").await.id();
    let booking_id = app
        .post(&format!("/v1/events/{}/bookings", event.id), "alice", "b", &json!({ "seat_ids": [event.seats[1]] }))
        .await
        .id();
    let mallory = app.token("mallory");

    let attempts = [
        app.get(&format!("/v1/holds/{hold_id}"), Some("mallory")).await,
        app.send(Method::DELETE, &format!("/v1/holds/{hold_id}"), Some(&mallory), None, None).await,
        app.post(&format!("/v1/holds/{hold_id}/confirm"), "mallory", "m1", &json!({})).await,
        app.post(&format!("/v1/holds/{hold_id}/extend"), "mallory", "m2", &json!({ "ttl_seconds": 60 })).await,
        app.get(&format!("/v1/bookings/{booking_id}"), Some("mallory")).await,
        app.post(&format!("/v1/bookings/{booking_id}/cancel"), "mallory", "m3", &json!({})).await,
    ];
    for res in &attempts {
        res.assert_problem(404, "NOT_FOUND");
        assert!(!res.body.to_string().contains("alice"), "{res:?}");
    }
    assert!(app.get("/v1/bookings", Some("mallory")).await.body["bookings"].as_array().unwrap().is_empty());
    // Nothing moved.
    assert_eq!(app.get(&format!("/v1/holds/{hold_id}"), Some("alice")).await.body["status"], "HELD");
    assert_eq!(app.get(&format!("/v1/bookings/{booking_id}"), Some("alice")).await.body["status"], "CONFIRMED");
}

#[tokio::test]
async fn writes_need_a_valid_token_and_events_need_an_admin() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1, 2).await;
    let path = format!("/v1/events/{}/holds", event.id);
    let body = json!({ "seat_ids": [event.seats[0]] });

    app.send(Method::POST, &path, None, Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");
    app.send(Method::POST, &path, Some("not-a-jwt"), Some("k"), Some(&body))
        .await
        .assert_problem(401, "UNAUTHENTICATED");
    let forged = holdfast::auth::JwtKeys::new("another-secret-entirely-0000")
        .mint("alice", true, std::time::Duration::from_secs(60))
        .unwrap();
    app.send(Method::POST, &path, Some(&forged), Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");
    // Leeway is 5 s; a token that expired in 1970 is plainly expired.
    let old = {
        let claims = holdfast::auth::Claims { sub: "alice".into(), role: None, exp: 1_000_000 };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(crate::support::app::JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    app.send(Method::POST, &path, Some(&old), Some("k"), Some(&body)).await.assert_problem(401, "UNAUTHENTICATED");

    let create = json!({ "name": "x", "starts_at": "2030-01-01T00:00:00Z", "layout": { "sections": 1, "rows": 1, "seats_per_row": 1, "price_cents": 1 } });
    app.post("/v1/events", "alice", "e", &create).await.assert_problem(403, "FORBIDDEN");
    assert_eq!(app.count("select count(*) from holds").await, 0);
    assert_eq!(app.count("select count(*) from events").await, 1);

    // Reads of events and seats are public.
    assert_eq!(app.get(&format!("/v1/events/{}", event.id), None).await.status, StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/events/{}/seats", event.id), None).await.status, StatusCode::OK);
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/support/fixtures/jwt").join(name)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Signs `claims` with a fixture key (RS256 or ES256) or the HS256 test secret, under `kid`.
fn sign(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(&std::fs::read(fixture("rsa-private.der")).unwrap()),
        Algorithm::ES256 => EncodingKey::from_ec_der(&std::fs::read(fixture("ec-private.der")).unwrap()),
        _ => EncodingKey::from_secret(crate::support::app::JWT_SECRET.as_bytes()),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn identity_provider_tokens_rs256_and_es256_are_verified_with_the_jwks_and_iss_aud_nbf_hold() {
    let app = crate::support::app::spawn_app_with(|c| {
        c.auth.jwt_jwks_path = Some(fixture("jwks.json"));
        c.auth.jwt_issuer = Some("https://id.example.test/".into());
        c.auth.jwt_audience = Some("holdfast".into());
    })
    .await;
    let good =
        |sub: &str| json!({ "sub": sub, "exp": now() + 600, "iss": "https://id.example.test/", "aud": "holdfast" });
    let bookings = |token: String| {
        let app = &app;
        async move { app.send(Method::GET, "/v1/bookings", Some(&token), None, None).await }
    };
    use jsonwebtoken::Algorithm::{ES256, HS256, RS256};
    assert_eq!(bookings(sign(RS256, Some("test-rsa"), &good("alice"))).await.status, StatusCode::OK);
    assert_eq!(bookings(sign(ES256, Some("test-ec"), &good("bob"))).await.status, StatusCode::OK);
    assert_eq!(bookings(sign(HS256, None, &good("carol"))).await.status, StatusCode::OK, "HS256 stays for development");

    let mut refused = vec![
        ("unknown kid", sign(RS256, Some("nope"), &good("alice"))),
        ("no kid", sign(RS256, None, &good("alice"))),
        ("key of another algorithm", sign(ES256, Some("test-rsa"), &good("alice"))),
    ];
    let mut wrong = |what: &'static str, change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = good("alice");
        change(&mut claims);
        refused.push((what, sign(RS256, Some("test-rsa"), &claims)));
    };
    wrong("other issuer", &|c| c["iss"] = json!("https://evil.example.test/"));
    wrong("no issuer", &|c| drop(c.as_object_mut().unwrap().remove("iss")));
    wrong("other audience", &|c| c["aud"] = json!("someone-else"));
    wrong("no audience", &|c| drop(c.as_object_mut().unwrap().remove("aud")));
    wrong("not valid yet", &|c| c["nbf"] = json!(now() + 3600));
    wrong("expired", &|c| c["exp"] = json!(now() - 3600));
    for (what, token) in refused {
        let res = bookings(token).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{what}: {res:?}");
        res.assert_problem(401, "UNAUTHENTICATED");
    }
    // A token valid from a minute ago passes.
    let mut recent = good("alice");
    recent["nbf"] = json!(now() - 60);
    assert_eq!(bookings(sign(RS256, Some("test-rsa"), &recent)).await.status, StatusCode::OK);
}
