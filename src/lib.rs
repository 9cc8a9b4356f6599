//! holdfast: hold and book contested inventory without ever selling it twice.
//!
//! Every state-changing request takes one path, and the modules follow it:
//! [`api`] validates → [`idempotency`] claims the key → [`lock`] takes a quorum Redlock →
//! [`db`] writes in one READ COMMITTED transaction guarded by constraints → [`jobs`] tidy up.
//! [`pipeline`] is the one place that strings those stages together.

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod jobs;
pub mod lock;
pub mod pipeline;
pub mod queue;
pub mod rate_limit;
pub mod readiness;
pub mod seat_index;
pub mod serve;
pub mod startup;
pub mod state;
pub mod streams;
pub mod telemetry;
pub mod webhooks;
