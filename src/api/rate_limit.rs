//! The rate-limit middleware: finds the client's address and, from a verified token, the user,
//! and spends one request from each bucket of [`crate::rate_limit::RateLimits`] (this instance),
//! then of [`crate::rate_limit::ClusterLimits`] (every instance), in one Redis call.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    let mut ip = None;
    if limits.limits_ips() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let forwarded_for = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let client = limits.client_ip(peer, forwarded_for);
        if let Err(err) = limits.check_ip(client) {
            metrics::counter!("holdfast_rate_limited_total", "scope" => "ip", "counted" => "instance").increment(1);
            return err.into_response();
        }
        ip = Some(client);
    }
    let mut user = None;
    let request = if limits.limits_users() {
        // Only a verified token names a user; anything else is limited by IP alone.
        let (parts, body) = request.into_parts();
        if let Ok(caller) = super::auth::caller_of(&state.jwt, &parts) {
            if let Err(err) = limits.check_user(caller.user_id.clone()) {
                metrics::counter!("holdfast_rate_limited_total", "scope" => "user", "counted" => "instance")
                    .increment(1);
                return err.into_response();
            }
            user = Some(caller.user_id);
        }
        Request::from_parts(parts, body)
    } else {
        request
    };
    if let Some(cluster) = &state.cluster_limits {
        match cluster.check(ip, user.as_deref()).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return refused.into_response(),
            Err(err) => {
                // The instance's own limits above stand alone until the node answers again.
                metrics::counter!("holdfast_rate_limit_fallbacks_total").increment(1);
                tracing::debug!(error = %err, "cluster-wide rate limit unavailable; local limits only");
            }
        }
    }
    next.run(request).await
}
