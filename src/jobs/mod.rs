//! Background loops, run on every instance at once. Each batch takes its rows with
//! `for update skip locked` and a limit, so instances share the work without a leader and
//! without blocking requests. Reads and writes already treat an expired hold as free; the
//! sweeper only tidies statuses, seat pointers and counters. A loop logs and survives errors,
//! and stops when shutdown begins.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::{changes, holds, invariants, queue as queue_rows, webhooks};
use crate::idempotency;
use crate::state::AppState;

/// ±20% jitter, so instances started together do not sweep in lockstep.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.8..1.2))
}

fn spawn_loop<F, Fut>(name: &'static str, every: Duration, shutdown: CancellationToken, mut tick: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(jittered(every)) => {}
            }
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = tick() => outcome,
            };
            match outcome {
                Ok(()) => metrics::counter!("holdfast_job_runs_total", "job" => name).increment(1),
                Err(err) => {
                    metrics::counter!("holdfast_job_errors_total", "job" => name).increment(1);
                    tracing::warn!(job = name, error = %err, "background job failed; will retry");
                }
            }
        }
        tracing::debug!(job = name, "background job stopped");
    })
}

pub fn spawn_all(state: &AppState) -> Vec<JoinHandle<()>> {
    let config = &state.config;
    let batch = config.jobs.batch_size;
    vec![
        {
            let state = state.clone();
            spawn_loop(
                "hold_expiry",
                Duration::from_millis(config.jobs.hold_sweep_interval_ms),
                state.shutdown.clone(),
                move || {
                    let state = state.clone();
                    async move {
                        drain(&state, batch, || async {
                            let mut tx = state.db.begin().await?;
                            let expired = match holds::expire_batch(&mut tx, batch).await {
                                Err(err) if holds::sweep_yielded(&err) => {
                                    // A request holds a row this batch needs, and may be waiting
                                    // for one of ours: let go of them now, and leave it be.
                                    tx.rollback().await?;
                                    metrics::counter!("holdfast_hold_sweeps_yielded_total").increment(1);
                                    return Ok(0);
                                }
                                expired => expired?,
                            };
                            tx.commit().await?;
                            metrics::counter!("holdfast_holds_expired_total").increment(expired);
                            if expired > 0 {
                                state.hub.written.notify_one();
                            }
                            Ok(expired)
                        })
                        .await
                    }
                },
            )
        },
        {
            let state = state.clone();
            let every = Duration::from_millis(config.jobs.idempotency_sweep_interval_ms);
            spawn_loop("idempotency_sweep", every, state.shutdown.clone(), move || {
                let state = state.clone();
                async move {
                    drain(&state, batch, || async {
                        let recovered = idempotency::recover_stale(&state.db, batch).await?;
                        metrics::counter!("holdfast_idempotency_recovered_total").increment(recovered);
                        Ok(recovered)
                    })
                    .await?;
                    // Everything past its retention goes, every tick: keyed writes arrive at
                    // thousands a second, so a fixed number of rows per tick would fall behind.
                    let retention = Duration::from_secs(state.config.idempotency.retention_seconds as u64);
                    drain(&state, batch, || async {
                        let purged = idempotency::purge_expired(&state.db, retention, batch).await?;
                        metrics::counter!("holdfast_idempotency_purged_total").increment(purged);
                        Ok(purged)
                    })
                    .await
                }
            })
        },
        {
            let state = state.clone();
            let every = Duration::from_millis(config.jobs.outbox_purge_interval_ms);
            spawn_loop("change_purge", every, state.shutdown.clone(), move || {
                let state = state.clone();
                async move {
                    let retention = state.config.jobs.outbox_retention_hours;
                    drain(&state, batch, || async {
                        let passed = changes::purge_batch(&state.db, retention, batch).await?;
                        metrics::counter!("holdfast_changes_purge_passed_total").increment(passed);
                        Ok(passed)
                    })
                    .await?;
                    // Finished webhook deliveries (and their attempts) are kept as long.
                    drain(&state, batch, || async { Ok(webhooks::purge_finished(&state.db, retention, batch).await?) })
                        .await
                }
            })
        },
        {
            let state = state.clone();
            let every = Duration::from_millis(config.jobs.queue_pace_interval_ms);
            spawn_loop("queue_pacing", every, state.shutdown.clone(), move || {
                let state = state.clone();
                async move { Ok(pace_queues(&state).await?) }
            })
        },
        {
            let state = state.clone();
            let every = Duration::from_secs(config.jobs.integrity_check_interval_seconds);
            // Once per interval across the cluster: the timers run at 0.8-1.2 intervals, so a
            // spacing of three quarters lets a lone instance run at every tick.
            let spacing = every.mul_f64(0.75);
            spawn_loop("integrity_check", every, state.shutdown.clone(), move || {
                let state = state.clone();
                async move {
                    match invariants::periodic(&state.db, spacing).await? {
                        invariants::Periodic::Ran(violations) => {
                            if !violations.is_empty() {
                                tracing::error!(?violations, "booking invariants violated");
                            }
                            invariants::report(&violations);
                        }
                        invariants::Periodic::Skipped(last) => {
                            metrics::counter!("holdfast_integrity_checks_skipped_total").increment(1);
                            if let Some(last) = last {
                                invariants::report(&last);
                            }
                        }
                    }
                    Ok(())
                }
            })
        },
        {
            let state = state.clone();
            spawn_loop("maintenance", Duration::from_secs(5), state.shutdown.clone(), move || {
                let state = state.clone();
                async move {
                    state.rate_limits.retain_recent();
                    state.metrics.run_upkeep();
                    report_gauges(&state).await;
                    Ok(())
                }
            })
        },
    ]
}

/// The longest one tick keeps draining; the next tick carries on where it stopped.
const DRAIN_BUDGET: Duration = Duration::from_secs(30);

type JobResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs `batch_once` (one bounded batch, committed by itself, returning the rows it handled)
/// until a batch comes back short: everything due is handled this tick, in batches small enough
/// never to hold many row locks or a long transaction. Stops early on shutdown or after
/// [`DRAIN_BUDGET`].
async fn drain<F, Fut>(state: &AppState, batch: i64, mut batch_once: F) -> JobResult<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = JobResult<u64>>,
{
    let started = std::time::Instant::now();
    loop {
        let handled = batch_once().await?;
        if (handled as i64) < batch || state.shutdown.is_cancelled() || started.elapsed() > DRAIN_BUDGET {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
}

/// One pacing round for every open queue (each in its own transaction), then this instance's
/// memory of them refreshed.
async fn pace_queues(state: &AppState) -> Result<(), sqlx::Error> {
    for queue in queue_rows::queues(&state.db).await? {
        let mut tx = state.db.begin().await?;
        let paced = queue_rows::pace(&mut tx, queue.event_id).await?;
        tx.commit().await?;
        if let Some(paced) = paced {
            metrics::counter!("holdfast_queue_admitted_total").increment(paced.admitted as u64);
            metrics::counter!("holdfast_queue_admissions_expired_total").increment(paced.expired as u64);
            if paced.ranked > 0 {
                tracing::info!(event_id = %queue.event_id, ranked = paced.ranked, "queue tickets ranked");
            }
        }
    }
    for event_id in state.queues.replace(queue_rows::queues(&state.db).await?) {
        // Right after the draw every remembered ticket would ask Postgres for its new rank:
        // one read of them all instead.
        state.queues.learn_ranks(&queue_rows::waiting_ranks(&state.db, event_id).await?);
    }
    Ok(())
}

/// Redis node liveness and pool usage, for dashboards and alerts.
pub async fn report_gauges(state: &AppState) {
    let nodes = state.redlock.ping_all().await;
    for (label, up) in state.redlock.node_labels().zip(&nodes) {
        metrics::gauge!("holdfast_redis_node_up", "node" => label.to_owned()).set(if *up { 1.0 } else { 0.0 });
    }
    metrics::gauge!("holdfast_redis_nodes_up").set(nodes.iter().filter(|up| **up).count() as f64);
    metrics::gauge!("holdfast_db_pool_connections", "state" => "open").set(state.db.size() as f64);
    metrics::gauge!("holdfast_db_pool_connections", "state" => "idle").set(state.db.num_idle() as f64);
}
