//! holdfast's HTTP tests: one binary, real Postgres and Redis, real HTTP.

mod auth;
mod best_available;
mod changes;
mod chaos;
mod cluster_limits;
mod concurrency;
mod cors;
mod history;
mod idempotency;
mod inputs;
mod lifecycle;
mod limits;
mod onsale;
mod ops;
mod queue;
mod redis_faults;
mod rolling;
mod rooms;
mod shutdown;
mod slots;
mod streams;
mod support;
mod upgrade;
mod validation;
mod webhooks;
