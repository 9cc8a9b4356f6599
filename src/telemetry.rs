//! Logs (tracing, pretty or JSON) and the Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        // JSON lines carry the request span's fields (request_id, method, path) on every event.
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Latency buckets in seconds: histograms (not summaries), so replicas can be summed.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Rows per batched claim statement (at most 256).
const BATCH_ROW_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// From a change to its webhook delivery: seconds when all is well, hours while a receiver is down.
const DELIVERY_LATENCY_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];

/// HELP text of every metric family, registered with the recorder at start-up, so that every
/// family on `/metrics` has `# HELP` (a unit test keeps this list complete).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    ("holdfast_http_requests_total", "HTTP requests by method, matched route and status."),
    ("holdfast_http_request_duration_seconds", "HTTP request latency by method, matched route and status."),
    ("holdfast_command_duration_seconds", "Time to execute one state-changing command, by command."),
    ("holdfast_stage_duration_seconds", "Time spent in each pipeline stage (claim, plan, lock, transaction)."),
    ("holdfast_lock_acquisitions_total", "Quorum lock acquisitions by outcome."),
    ("holdfast_lock_acquire_duration_seconds", "Time to acquire (or give up on) a quorum lock, by outcome."),
    ("holdfast_lock_node_replies_total", "Replies of each Redis node to lock calls, by node and reply."),
    ("holdfast_lock_extensions_total", "Lock extensions before commit, by outcome."),
    (
        "holdfast_commits_refused_total",
        "Transactions rolled back before commit, by reason (e.g. too little lock validity).",
    ),
    (
        "holdfast_idempotency_outcomes_total",
        "Idempotency-Key outcomes: executed_at_once (no claim first, record written with the effect), claimed, replayed, in_progress, key_reused, taken_over, settled_at_claim.",
    ),
    ("holdfast_idempotency_purged_total", "Idempotency records deleted after their retention."),
    (
        "holdfast_changes_purge_passed_total",
        "Change events the purge moved past (deleted, or history kept for ever) after OUTBOX_RETENTION_HOURS.",
    ),
    ("holdfast_stream_clients", "Live stream clients (Server-Sent Events) connected to this instance."),
    (
        "holdfast_stream_resets_total",
        "Streams told to re-read (event: reset), by reason: slow_client, cursor_expired, cursor_unknown, too_far_behind.",
    ),
    (
        "holdfast_stream_fanout_delay_seconds",
        "From a change's statement to its publication to this instance's stream clients.",
    ),
    (
        "holdfast_queue_joins_total",
        "Waiting-room tickets taken (joins that found the user's ticket already there count too).",
    ),
    (
        "holdfast_queue_busy_total",
        "Waiting-room joins and database polls answered 503 QUEUE_BUSY: no turn at the database within a second.",
    ),
    ("holdfast_queue_admitted_total", "Waiting-room tickets admitted by this instance's pacing rounds."),
    (
        "holdfast_queue_admissions_expired_total",
        "Waiting-room admissions that ran out unused, ended by this instance's pacing rounds.",
    ),
    (
        "holdfast_queue_polls_total",
        "Ticket polls by where the answer came from: memory (no database read) or database.",
    ),
    (
        "holdfast_webhook_deliveries_total",
        "Webhook delivery attempts by outcome: delivered, http_error, gone, timeout, connect_error, refused_target, error.",
    ),
    (
        "holdfast_webhook_delivery_latency_seconds",
        "From a change to its successful webhook delivery (retries included).",
    ),
    ("holdfast_webhook_attempt_duration_seconds", "Time one webhook delivery attempt took."),
    (
        "holdfast_webhook_oldest_undelivered_seconds",
        "Age of the oldest change not yet delivered to each enabled webhook endpoint (0: none waiting).",
    ),
    ("holdfast_webhook_endpoints_disabled_total", "Webhook endpoints disabled, by reason: gone, failing."),
    (
        "holdfast_best_available_choices_total",
        "Best-available choices, by where they were made: memory (this instance's copy of the seat map), postgres.",
    ),
    (
        "holdfast_best_available_rechosen_total",
        "Best-available holds whose first choice was taken meanwhile and that chose again once.",
    ),
    ("holdfast_idempotency_recovered_total", "In-flight idempotency records whose lease ran out, marked FAILED."),
    ("holdfast_claim_batch_rows", "Claims per batched claim statement for contended seats."),
    ("holdfast_holds_created_total", "Holds created (seats, rooms and slots)."),
    ("holdfast_holds_confirmed_total", "Holds confirmed into bookings."),
    (
        "holdfast_hold_plans_total",
        "Plans of a confirm, extend or release, by where the hold came from: read, or memory (this instance created or extended it).",
    ),
    (
        "holdfast_hold_plans_reread_total",
        "Commands planned from memory whose hold had changed elsewhere since (extended, released, confirmed): read again under the lock.",
    ),
    ("holdfast_holds_released_total", "Holds released by their owner or an admin."),
    ("holdfast_holds_extended_total", "Holds extended."),
    ("holdfast_holds_expired_total", "Holds marked EXPIRED by the sweeper."),
    (
        "holdfast_hold_sweeps_yielded_total",
        "Sweeper batches rolled back because a request held a row they needed (tried again next tick).",
    ),
    ("holdfast_bookings_created_total", "Bookings created (confirmed holds and direct bookings)."),
    ("holdfast_bookings_cancelled_total", "Bookings cancelled."),
    ("holdfast_bookings_rescheduled_total", "Slot bookings moved to another slot."),
    ("holdfast_events_created_total", "Events created."),
    (
        "holdfast_rate_limited_total",
        "Requests refused with 429, by limit (ip or user) and where it was counted (instance or cluster).",
    ),
    (
        "holdfast_rate_limit_fallbacks_total",
        "Requests let through on this instance's own limits because the cluster-wide limits' Redis did not answer.",
    ),
    ("holdfast_readiness_probes_total", "Dependency probes run by /ready (at most one a second per instance)."),
    ("holdfast_job_runs_total", "Background job ticks that finished, by job."),
    ("holdfast_job_errors_total", "Background job ticks that failed (and will be retried), by job."),
    (
        "holdfast_integrity_checks_skipped_total",
        "Periodic integrity ticks that did not run the checks: another instance ran them less than three quarters of an interval ago, or is running them.",
    ),
    (
        "holdfast_invariant_violations",
        "Rows violating each booking invariant at the last integrity run (alert above 0).",
    ),
    ("holdfast_redis_node_up", "Whether each Redis lock node answers a PING (1) or not (0)."),
    ("holdfast_redis_nodes_up", "How many Redis lock nodes answer a PING."),
    ("holdfast_db_pool_connections", "Business pool connections, by state (open, idle)."),
];

fn describe_all() {
    for (name, help) in DESCRIPTIONS {
        // The kind given here is not rendered; the recorder keeps the HELP text by name.
        metrics::describe_counter!(*name, *help);
    }
}

/// The process-wide Prometheus recorder: installed on first use, shared afterwards
/// (a process can have only one global recorder, and tests build many applications).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full("holdfast_claim_batch_rows".into()), BATCH_ROW_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("holdfast_webhook_delivery_latency_seconds".into()),
                    DELIVERY_LATENCY_BUCKETS,
                )
                .expect("bucket list is not empty")
                .install_recorder()
                .inspect(|_| describe_all())
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

#[cfg(test)]
mod tests {
    /// Every metric name the code records has HELP text in [`super::DESCRIPTIONS`].
    #[test]
    fn every_metric_family_is_described() {
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    let is_metric = piece.starts_with("holdfast_")
                        && piece.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && !piece.starts_with("holdfast_test");
                    if is_metric && !super::DESCRIPTIONS.iter().any(|(name, _)| *name == piece) {
                        missing.push(format!("{piece} ({})", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "metrics without HELP text: {missing:?}");
    }
}
