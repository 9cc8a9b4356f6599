//! Per-client-IP and per-user rate limits (governor, GCRA). Counts are per instance: behind a
//! load balancer with N instances a client gets up to N times the configured rate. The buckets
//! live here; reading the peer address, `X-Forwarded-For` and the token is the middleware's
//! (`api::rate_limit`).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use crate::config::RateLimitConfig;
use crate::error::Error;

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
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_ip: quota(config.per_ip, config.per_ip_burst).map(RateLimiter::keyed),
            per_user: quota(config.per_user, config.per_user_burst).map(RateLimiter::keyed),
            trusted_proxies: config.trusted_proxy_nets(),
            clock: DefaultClock::default(),
        }
    }

    pub fn limits_ips(&self) -> bool {
        self.per_ip.is_some()
    }

    pub fn limits_users(&self) -> bool {
        self.per_user.is_some()
    }

    /// The client's address: the socket peer, unless that peer is a trusted proxy, in which case
    /// the right-most `X-Forwarded-For` entry (`forwarded_for`: the header's values, in order)
    /// that is not itself a trusted proxy.
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        forwarded_for
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .rev()
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }

    /// Takes one request from the address's bucket (always allowed without a per-IP limit).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Error> {
        self.per_ip.as_ref().map_or(Ok(()), |limiter| self.check(limiter, &ip))
    }

    /// Takes one request from the user's bucket (always allowed without a per-user limit). Takes
    /// the id by value: the bucket is keyed by `String`, and the caller has no further use for it.
    pub fn check_user(&self, user_id: String) -> Result<(), Error> {
        self.per_user.as_ref().map_or(Ok(()), |limiter| self.check(limiter, &user_id))
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), Error> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::RateLimited { retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64 }
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

    #[test]
    fn untrusted_peers_cannot_spoof_their_address() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(limits("").client_ip(peer, ["1.2.3.4"].into_iter()), peer);
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_nearest_untrusted_hop() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let got = limits("10.0.0.0/30,10.0.0.3").client_ip(proxy, ["6.6.6.6, 198.51.100.7", "10.0.0.3"].into_iter());
        assert_eq!(got, "198.51.100.7".parse::<IpAddr>().unwrap());
    }
}
