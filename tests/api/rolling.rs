//! A rolling restart behind HAProxy under load loses nothing: each instance, on SIGTERM, answers
//! `/ready` 503 while it keeps serving (SHUTDOWN_DRAIN_SECONDS), the balancer takes it out, and
//! only then does it stop accepting. Clients see no 5xx and no connection error, not even the
//! balancer's own 503. The balancer runs the shipped `deploy/haproxy.cfg` (no retries, no
//! redispatch), so nothing hides a refused connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::app::{assert_invariants, eventually};
use crate::support::cluster::{Clients, Fleet, Haproxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_three_instances_behind_haproxy_loses_no_request() {
    let fleet = Fleet::start().await;
    let drain = [("SHUTDOWN_DRAIN_SECONDS", "2")];
    let mut instances = fleet.spawn_many(3, &drain).await;
    let ports: Vec<u16> = instances.iter().map(|i| i.port).collect();
    let lb = Haproxy::start_shipped(&ports).await;
    for i in 0..3 {
        eventually("haproxy sees every instance up", Duration::from_secs(10), || async {
            lb.server_status(i).await == "UP"
        })
        .await;
    }
    let clients = Clients::new();
    let event = clients.create_event(&lb.base, 4000).await;

    // Eight clients send reads and holds (each on its own seat, with its own key) without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (clients, base, stop, event) = (clients.clone(), lb.base.clone(), stop.clone(), event.clone());
            tokio::spawn(async move {
                let (mut sent, mut failures) = (0usize, Vec::new());
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let res = if n % 4 == 0 && w * 500 + n / 4 < event.seats.len() {
                        let seat = event.seats[w * 500 + n / 4];
                        let key = format!("roll-{w}-{n}");
                        let body = json!({ "seat_ids": [seat] });
                        let path = format!("/v1/events/{}/holds", event.id);
                        clients
                            .send(&base, Method::POST, &path, &format!("user-{w}-{n}"), Some(&key), Some(&body))
                            .await
                    } else {
                        clients
                            .send(&base, Method::GET, &format!("/v1/events/{}", event.id), "reader", None, None)
                            .await
                    };
                    sent += 1;
                    n += 1;
                    match res {
                        Ok(res) if res.status.is_server_error() => {
                            failures.push(format!("{}: {:?}", res.status, res.body))
                        }
                        Ok(res) if !res.status.is_success() => failures.push(format!("unexpected {res:?}")),
                        Ok(_) => {}
                        Err(err) => failures.push(format!("connection error: {err}")),
                    }
                }
                (sent, failures)
            })
        })
        .collect();

    let started = Instant::now();
    for (i, port) in ports.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        instances[i].terminate();
        eventually("haproxy takes the draining instance out", Duration::from_secs(5), || async {
            lb.server_status(i).await.starts_with("DOWN")
        })
        .await;
        let status = instances[i].wait_for_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "instance {i} exited with {status:?}");
        instances[i] = fleet.spawn_on(*port, &drain).await;
        eventually("haproxy puts the new instance back", Duration::from_secs(15), || async {
            lb.server_status(i).await == "UP"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    let mut failures = Vec::new();
    for worker in workers {
        let (n, f) = worker.await.unwrap();
        sent += n;
        failures.extend(f);
    }
    let elapsed = started.elapsed();
    assert!(sent > 500, "the load ran throughout: {sent} requests in {elapsed:?}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the rolling restart: {failures:?}",
        failures.len()
    );
    assert_invariants(&fleet.db().await).await;
}
