//! What the suites stand on: a service on real Postgres and Redis (`app`), fleets of
//! processes, proxies and fault injection (`cluster`), and key files (`fixtures/`).

pub mod app;
pub mod cluster;

/// An HTTP client for tests. reqwest is built without a TLS provider of its own (see
/// `holdfast::webhooks::install_tls_provider`): every client in the tests is made here.
pub fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    holdfast::webhooks::install_tls_provider();
    builder.build().expect("the test HTTP client builds")
}
