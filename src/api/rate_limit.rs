//! The rate-limit middleware: finds the client's address and, from a verified token, the user,
//! and spends one request from each bucket of [`crate::rate_limit::RateLimits`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if limits.limits_ips() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let forwarded_for = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let ip = limits.client_ip(peer, forwarded_for);
        if let Err(err) = limits.check_ip(ip) {
            metrics::counter!("holdfast_rate_limited_total", "scope" => "ip").increment(1);
            return err.into_response();
        }
    }
    if limits.limits_users() {
        let (parts, body) = request.into_parts();
        // Only a verified token names a user; anything else is limited by IP alone.
        if let Ok(caller) = super::auth::caller_of(&state.jwt, &parts)
            && let Err(err) = limits.check_user(caller.user_id)
        {
            metrics::counter!("holdfast_rate_limited_total", "scope" => "user").increment(1);
            return err.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}
