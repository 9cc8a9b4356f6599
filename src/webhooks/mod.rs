//! Signed webhooks: every instance fans change events out to the registered endpoints and
//! delivers them, sharing the work without a leader (see the migration `webhooks` and
//! [`crate::db::webhooks`]).
//!
//! - **Fan-out**: an endpoint's events are read from the change log after its own cursor, with
//!   the feed's commit-safe gate, and queued (one delivery row each) in the transaction that
//!   moves the cursor: each event is queued exactly once per endpoint.
//! - **Delivery**: at least once. A due delivery is claimed with a lease (`next_attempt_at`
//!   moves past the request timeout), sent, and settled. A non-2xx answer, a timeout or a
//!   connection failure is retried after `WEBHOOK_RETRY_BASE_MS` × 2^(attempt−1), capped at
//!   720 × the base, ±20% jitter, until `WEBHOOK_RETRY_HOURS` after the event was queued. A 410
//!   disables the endpoint; so does failing without a success for `WEBHOOK_DISABLE_AFTER_HOURS`.
//!   An instance killed mid-flight leaves its lease to run out: another instance sends again,
//!   with the same `webhook-id`.
//! - **Requests**: Standard Webhooks headers ([`sign`]), body the change event as the feed
//!   shows it, no redirects followed, only public targets ([`target`]), the answer read up to
//!   [`RESPONSE_LIMIT`] bytes.

pub mod sign;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::config::WebhooksConfig;
use crate::db::changes::{self, Read};
use crate::db::webhooks::{self as rows, AttemptResult, Claimed, Queued};
use crate::pipeline::views;
use crate::state::AppState;

/// How much of a receiver's answer is read (then the connection is dropped).
pub const RESPONSE_LIMIT: usize = 4 * 1024;
/// Endpoints one fan-out pass handles, and events per endpoint per pass.
const FAN_OUT_ENDPOINTS: i64 = 50;
const FAN_OUT_EVENTS: i64 = 500;
/// The longest back-off, in units of the base delay (an hour with the default 5 s).
const MAX_BACKOFF_FACTOR: u32 = 720;
/// How long an error text is kept.
const MAX_ERROR_CHARS: usize = 300;

/// rustls's cryptography: ring rather than aws-lc-rs (a long C build). rustls 0.23.48 deprecates
/// ring's provider only for its lack of post-quantum key exchange, which outbound webhooks can
/// do without.
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    #[allow(deprecated)]
    rustls::crypto::ring::default_provider()
}

/// Makes ring the process's default TLS provider. reqwest is built without a provider of its
/// own, so any `reqwest::Client` built in this process (by a test or a tool linking this crate)
/// needs it; the delivery client brings its own configuration. Safe to call more than once.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = crypto_provider().install_default();
    });
}

/// The HTTP client deliveries use: rustls with Mozilla's roots, the public-only resolver, no
/// redirects, no proxy, the attempt timeout.
pub fn client(config: &WebhooksConfig) -> reqwest::Result<reqwest::Client> {
    install_tls_provider();
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let timeout = Duration::from_millis(config.timeout_ms);
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(target::PublicResolver { allow_private: config.allow_private_targets }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("holdfast-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// The delay before retry number `attempt` (1 for the first retry), before jitter.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(1 << doublings).min(base * MAX_BACKOFF_FACTOR)
}

/// Starts this instance's webhook loop: fan out, claim due deliveries, send them (at most
/// `WEBHOOK_CONCURRENCY` at once), report the backlog.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = state.config.webhooks.clone();
        let client = match client(&config) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "cannot build the webhook client: webhooks will not be delivered");
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(config.concurrency as usize));
        let every = Duration::from_millis(config.poll_interval_ms);
        let lease_ms = config.timeout_ms as i64 + 2_000;
        let mut last_report = Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tokio::time::sleep(every.mul_f64(rand::rng().random_range(0.8..1.2))) => {}
            }
            if let Err(err) = fan_out(&state).await {
                metrics::counter!("holdfast_job_errors_total", "job" => "webhook_fan_out").increment(1);
                tracing::warn!(error = %err, "webhook fan-out failed; will retry");
            }
            let free = permits.available_permits();
            if free > 0 {
                match rows::claim_due(&state.db, free as i64, lease_ms).await {
                    Ok(claimed) => {
                        for delivery in claimed {
                            let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
                            let (state, client) = (state.clone(), client.clone());
                            state.tasks.clone().spawn(async move {
                                deliver(&state, &client, delivery).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(err) => {
                        metrics::counter!("holdfast_job_errors_total", "job" => "webhook_delivery").increment(1);
                        tracing::warn!(error = %err, "claiming webhook deliveries failed; will retry");
                    }
                }
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                if let Ok(ages) = rows::oldest_undelivered(&state.db).await {
                    for (endpoint, age) in ages {
                        metrics::gauge!("holdfast_webhook_oldest_undelivered_seconds", "endpoint" => endpoint.to_string())
                            .set(age);
                    }
                }
            }
        }
        tracing::debug!("webhook loop stopped");
    })
}

/// One fan-out pass: queues the new events of every endpoint no other instance is handling.
pub async fn fan_out(state: &AppState) -> Result<u64, sqlx::Error> {
    let mut tx = state.db.begin().await?;
    let endpoints = rows::lock_for_fan_out(&mut tx, FAN_OUT_ENDPOINTS).await?;
    let mut queued = 0;
    for endpoint in endpoints {
        match changes::read(&state.db, Some(endpoint.cursor), Some(&endpoint.event_types), FAN_OUT_EVENTS).await? {
            Read::Expired { oldest } => {
                tracing::error!(endpoint = %endpoint.id, from = %endpoint.cursor, to = %oldest,
                    "webhook endpoint fell behind OUTBOX_RETENTION_HOURS: events in between were purged and are not delivered");
                rows::queue(&mut tx, endpoint.id, &[], oldest).await?;
            }
            Read::Ahead { .. } => {
                // Only a change log restored from a logical dump gets here (the invariants report
                // it): delivering from anywhere else would skip or repeat events, so nothing is.
                tracing::error!(endpoint = %endpoint.id, cursor = %endpoint.cursor,
                    "webhook endpoint's cursor lies ahead of the change log (this database did not issue it): nothing is delivered to it");
            }
            Read::Page(page) if page.next != endpoint.cursor => {
                let events: Vec<Queued> = page
                    .changes
                    .iter()
                    .map(|row| Queued {
                        position: row.position(),
                        event_id: row.uid(),
                        r#type: row.r#type.clone(),
                        payload: serde_json::to_string(&views::change(row)).expect("a change serializes"),
                        occurred_at: row.at,
                    })
                    .collect();
                queued += rows::queue(&mut tx, endpoint.id, &events, page.next).await?;
            }
            Read::Page(_) => {}
        }
    }
    tx.commit().await?;
    Ok(queued)
}

/// Sends one claimed delivery and records how it went.
async fn deliver(state: &AppState, client: &reqwest::Client, delivery: Claimed) {
    let config = &state.config.webhooks;
    let started_at = Utc::now();
    let clock = Instant::now();
    let (outcome, status_code, error) = send(client, &delivery, config.allow_private_targets).await;
    let elapsed = clock.elapsed();
    metrics::counter!("holdfast_webhook_deliveries_total", "outcome" => outcome).increment(1);
    metrics::histogram!("holdfast_webhook_attempt_duration_seconds").record(elapsed.as_secs_f64());
    let retry_at = match outcome {
        "delivered" | "gone" => None,
        _ => next_attempt(config, &delivery, started_at),
    };
    let result = AttemptResult {
        started_at,
        duration_ms: elapsed.as_millis().min(i32::MAX as u128) as i32,
        status_code,
        outcome,
        error,
    };
    match rows::record_attempt(&state.db, &delivery, &result, retry_at, config.disable_after_hours as i64).await {
        Ok(recorded) => {
            if outcome == "delivered" {
                let latency = (Utc::now() - delivery.occurred_at).to_std().unwrap_or_default();
                metrics::histogram!("holdfast_webhook_delivery_latency_seconds").record(latency.as_secs_f64());
            }
            if let Some(reason) = recorded.disabled {
                metrics::counter!("holdfast_webhook_endpoints_disabled_total", "reason" => reason).increment(1);
                tracing::warn!(endpoint = %delivery.endpoint_id, reason, "webhook endpoint disabled");
            }
        }
        // The lease runs out and the delivery is sent again: at least once.
        Err(err) => tracing::warn!(error = %err, event = %delivery.event_id, "could not record a webhook attempt"),
    }
}

/// When to try again, or None once the retry window is over.
fn next_attempt(config: &WebhooksConfig, delivery: &Claimed, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = chrono::Duration::hours(config.retry_hours as i64);
    if now - delivery.queued_at >= window {
        return None;
    }
    let delay = backoff(Duration::from_millis(config.retry_base_ms), delivery.attempt)
        .mul_f64(rand::rng().random_range(0.8..1.2));
    Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)))
}

/// One attempt: (outcome, HTTP status if any, error text if any).
async fn send(
    client: &reqwest::Client,
    delivery: &Claimed,
    allow_private: bool,
) -> (&'static str, Option<i32>, Option<String>) {
    // A literal address never goes through the resolver: check it here too.
    if let Err(why) = target::check_url(&delivery.url, allow_private) {
        return ("refused_target", None, Some(format!("url {why}")));
    }
    let Some(key) = sign::key_of(&delivery.secret) else {
        return ("error", None, Some("the endpoint's secret is unreadable".to_owned()));
    };
    let id = delivery.event_id.to_string();
    let timestamp = Utc::now().timestamp();
    let request = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sign::signature(&key, &id, timestamp, &delivery.payload))
        .body(delivery.payload.clone());
    match request.send().await {
        Ok(mut response) => {
            let status = response.status();
            let mut read = 0;
            while read < RESPONSE_LIMIT {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            let code = Some(i32::from(status.as_u16()));
            if status.is_success() {
                ("delivered", code, None)
            } else if status == reqwest::StatusCode::GONE {
                ("gone", code, None)
            } else {
                ("http_error", code, Some(format!("the receiver answered {status}")))
            }
        }
        Err(err) => {
            let outcome = if refused_target(&err) {
                "refused_target"
            } else if err.is_timeout() {
                "timeout"
            } else if err.is_connect() {
                "connect_error"
            } else {
                "error"
            };
            (outcome, None, Some(error_text(err.without_url())))
        }
    }
}

fn refused_target(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<target::RefusedTarget>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes, on one line, bounded (never the URL: it may carry a token).
fn error_text(err: reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_the_base_and_caps_at_720_times_it() {
        let base = Duration::from_secs(5);
        let delays: Vec<u64> = (1..=13).map(|n| backoff(base, n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]);
        assert_eq!(backoff(base, 0), base);
        assert_eq!(backoff(base, i32::MAX), base * MAX_BACKOFF_FACTOR);
        // Enough attempts to cover a day: the schedule's first 24 hours.
        let mut total = Duration::ZERO;
        let mut attempts = 0;
        while total < Duration::from_secs(24 * 3600) {
            attempts += 1;
            total += backoff(base, attempts);
        }
        assert_eq!(attempts, 33);
    }
}
