//! Per-client-IP and per-user rate limits (governor, GCRA). Counts are per instance: behind a
//! load balancer with N instances a client gets up to N times the configured rate.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::error::ApiError;
use crate::config::Config;
use crate::state::AppState;

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
    trusted_proxies: Vec<IpNet>,
    clock: DefaultClock,
}

fn quota(rate: u32, burst: Option<u32>) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0")));
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl RateLimits {
    pub fn new(config: &Config) -> Self {
        Self {
            per_ip: quota(config.rate_limit_per_ip, config.rate_limit_per_ip_burst).map(RateLimiter::keyed),
            per_user: quota(config.rate_limit_per_user, config.rate_limit_per_user_burst).map(RateLimiter::keyed),
            trusted_proxies: config.trusted_proxy_nets(),
            clock: DefaultClock::default(),
        }
    }

    /// The client's address: the socket peer, unless that peer is a trusted proxy, in which case
    /// the right-most X-Forwarded-For entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
        })
    }

    /// Forgets keys that have been quiet long enough to be back at full burst.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
        }
    }
}

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    if let Some(limiter) = &limits.per_ip {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let ip = limits.client_ip(peer, request.headers());
        if let Err(err) = limits.check(limiter, &ip) {
            metrics::counter!("holdfast_rate_limited_total", "scope" => "ip").increment(1);
            return err.into_response();
        }
    }
    if let Some(limiter) = &limits.per_user {
        let (parts, body) = request.into_parts();
        // Only a verified token names a user; anything else is limited by IP alone.
        if let Ok(caller) = state.jwt.caller_of(&parts)
            && let Err(err) = limits.check(limiter, &caller.user_id)
        {
            metrics::counter!("holdfast_rate_limited_total", "scope" => "user").increment(1);
            return err.into_response();
        }
        return next.run(Request::from_parts(parts, body)).await;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &str) -> RateLimits {
        RateLimits {
            per_ip: None,
            per_user: None,
            trusted_proxies: trusted.split(',').filter_map(crate::config::parse_net).collect(),
            clock: DefaultClock::default(),
        }
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn untrusted_peers_cannot_spoof_their_address() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(limits("").client_ip(peer, &xff("1.2.3.4")), peer);
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_nearest_untrusted_hop() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let got = limits("10.0.0.0/30,10.0.0.3").client_ip(proxy, &xff("6.6.6.6, 198.51.100.7, 10.0.0.3"));
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().unwrap());
    }
}
