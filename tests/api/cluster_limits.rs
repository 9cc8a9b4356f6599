//! Rate limits counted across instances (issue 13, part 5): a user's limit holds for the whole
//! fleet, not once per instance; and when the limits' Redis node is gone, requests go on under
//! each instance's own limits.

use std::time::Instant;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};

use crate::support::app::free_port;
use crate::support::cluster::{Clients, Fleet, Instance};

const LIMITS: [(&str, &str); 2] = [("RATE_LIMIT_PER_USER", "10"), ("RATE_LIMIT_PER_USER_BURST", "10")];

async fn metric(clients: &Clients, instance: &Instance, name: &str) -> f64 {
    let text = clients.http.get(format!("{}/metrics", instance.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test]
async fn a_users_limit_holds_across_three_instances() {
    let fleet = Fleet::start().await;
    // A generous Redis timeout: this test counts the fleet's bucket, not what a slow node does
    // (requests that fall back to their instance's own limits are counted below all the same).
    let mut settings = LIMITS.to_vec();
    settings.push(("REDIS_TIMEOUT_MS", "2000"));
    let instances = fleet.spawn_many(3, &settings).await;
    let clients = Clients::new();
    let started = Instant::now();
    let requests = (0..100).map(|i| {
        let (clients, base) = (clients.clone(), instances[i % 3].base.clone());
        async move { clients.send(&base, Method::GET, "/v1/bookings", "erin", None, None).await.unwrap() }
    });
    let answers = join_all(requests).await;
    let elapsed = started.elapsed();
    let ok = answers.iter().filter(|r| r.status == StatusCode::OK).count();
    for refused in answers.iter().filter(|r| r.status != StatusCode::OK) {
        refused.assert_problem(429, "RATE_LIMITED");
        assert!(refused.header("retry-after").is_some(), "{refused:?}");
    }
    // One bucket for the fleet: the burst plus the rate over the time taken (each instance's own
    // bucket would let three times that through). A request whose cluster check timed out went on
    // under its instance's limits alone: at most one more 200 each.
    let mut fallbacks = 0.0;
    for instance in &instances {
        fallbacks += metric(&clients, instance, "holdfast_rate_limit_fallbacks_total").await;
    }
    assert!(fallbacks < 10.0, "{fallbacks} requests were not counted by the fleet's bucket");
    let allowed = 10.0 + 10.0 * elapsed.as_secs_f64() + 1.0 + fallbacks;
    assert!(ok >= 10 && (ok as f64) <= allowed, "{ok} answered 200 in {elapsed:?} (at most {allowed:.1})");
}

#[tokio::test]
async fn without_the_limits_redis_each_instance_keeps_its_own_limits() {
    let fleet = Fleet::start().await;
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let mut settings = LIMITS.to_vec();
    settings.push(("RATE_LIMIT_REDIS_URL", &dead));
    let instance = fleet.spawn(&settings).await;
    let clients = Clients::new();
    let mut statuses = Vec::new();
    for _ in 0..15 {
        statuses
            .push(clients.send(&instance.base, Method::GET, "/v1/bookings", "frank", None, None).await.unwrap().status);
    }
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "the local limit still applies: {statuses:?}");
    assert!(metric(&clients, &instance, "holdfast_rate_limit_fallbacks_total").await >= 10.0);
}
