//! holdfast's HTTP tests: one binary, real Postgres and Redis, real HTTP.

mod auth;
mod chaos;
mod cluster;
mod concurrency;
mod helpers;
mod idempotency;
mod lifecycle;
mod ops;
mod redis_faults;
mod shutdown;
mod validation;
