//! What the suites stand on: a service on real Postgres and Redis (`app`), fleets of
//! processes, proxies and fault injection (`cluster`), and key files (`fixtures/`).

pub mod app;
pub mod cluster;
