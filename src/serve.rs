//! The HTTP accept loop. `axum::serve` offers neither a header read timeout nor a connection
//! cap, so this is its loop with both, on hyper-util's connection builder:
//!
//! - **Slow clients are cut off.** hyper's HTTP/1 `header_read_timeout` (it needs a timer)
//!   closes a connection whose request headers have not all arrived in time, so a few hundred
//!   trickling connections cannot hold every file descriptor.
//! - **At most `HTTP_MAX_CONNECTIONS` connections.** Each accepted connection holds a permit
//!   until it closes; with none left, the loop stops accepting and new connections wait in the
//!   kernel's accept queue instead of failing the process with EMFILE.
//! - **Graceful stop.** When `stop` resolves the loop stops accepting and asks every connection
//!   to finish its current request and close (hyper's graceful shutdown), then waits for them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long to wait, after `stop`, for open connections to finish.
    pub grace: Duration,
}

/// Serves `app` on `listener` until `stop` resolves, then drains open connections.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, stop: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (socket, remote) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            request
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), TowerToHyperService::new(app));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("open connections did not finish within the grace period");
    }
}
