//! Per-client-IP and per-user rate limits, in two lines. First each instance's own buckets
//! (governor, GCRA, in memory): they refuse a flood without a network call. Then the same limits
//! counted across every instance ([`ClusterLimits`]: GCRA in one Lua script on one Redis node,
//! `RATE_LIMIT_REDIS_URL`), so that behind N instances a client gets its rate once, not N times.
//! If that node does not answer in time, the request goes on with the local limits alone (and
//! `holdfast_rate_limit_fallbacks_total` counts it): the limiter never fails a request. Reading
//! the peer address, `X-Forwarded-For` and the token is the middleware's (`api::rate_limit`).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{RateLimitConfig, RedisConfig};
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

/// GCRA over several keys at once, on the Redis server's clock (so instances' clocks do not
/// matter). For each key i: its theoretical arrival time `tat` (µs), the emission interval
/// `ARGV[2i-1]` (µs per request) and the tolerance `ARGV[2i]` (µs: interval × (burst − 1)). The
/// first key over its limit stops the check: returns {i, µs until a request would pass};
/// {0, 0} when every key took its request.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  if tat - now > tolerance then
    return {i, tat - now - tolerance}
  end
  local new = tat + emission
  redis.call('SET', KEYS[i], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
end
return {0, 0}
"#;

/// One limit as the script takes it.
#[derive(Debug, Clone, Copy)]
struct Cell {
    emission_us: u64,
    tolerance_us: u64,
}

impl Cell {
    fn new(rate: u32, burst: Option<u32>) -> Option<Self> {
        let rate = u64::from(NonZeroU32::new(rate)?.get());
        let burst = u64::from(burst.filter(|b| *b > 0).unwrap_or((rate as u32).saturating_mul(2)));
        let emission_us = (1_000_000 / rate).max(1);
        Some(Self { emission_us, tolerance_us: emission_us * burst.saturating_sub(1) })
    }
}

/// The per-IP and per-user limits, counted across every instance (see the module's text).
pub struct ClusterLimits {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    per_ip: Option<Cell>,
    per_user: Option<Cell>,
}

/// Why a cluster-wide check could not decide.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("rate-limit Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rate-limit Redis did not answer in time")]
    Timeout,
}

impl ClusterLimits {
    /// None when neither limit is on.
    pub fn new(config: &RateLimitConfig, redis: &RedisConfig) -> Result<Option<Self>, redis::RedisError> {
        let (per_ip, per_user) =
            (Cell::new(config.per_ip, config.per_ip_burst), Cell::new(config.per_user, config.per_user_burst));
        if per_ip.is_none() && per_user.is_none() {
            return Ok(None);
        }
        let Some(url) = config.redis_url.clone().or_else(|| redis.urls.0.first().cloned()) else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(redis.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(redis::Client::open(url.as_str())?, manager)?;
        Ok(Some(Self {
            conn,
            script: Script::new(GCRA),
            prefix: format!("{}rl:", redis.key_prefix),
            timeout,
            per_ip,
            per_user,
        }))
    }

    /// Takes one request from the IP's and the user's cluster-wide buckets (those that are on).
    /// `Ok(Err(..))`: refused; `Err(..)`: Redis could not decide (the caller lets it through).
    pub async fn check(&self, ip: Option<IpAddr>, user: Option<&str>) -> Result<Result<(), Error>, ClusterError> {
        let mut invocation = self.script.prepare_invoke();
        let mut scopes = Vec::with_capacity(2);
        if let (Some(ip), Some(cell)) = (ip, self.per_ip) {
            invocation.key(format!("{}ip:{ip}", self.prefix)).arg(cell.emission_us).arg(cell.tolerance_us);
            scopes.push("ip");
        }
        if let (Some(user), Some(cell)) = (user, self.per_user) {
            invocation.key(format!("{}user:{user}", self.prefix)).arg(cell.emission_us).arg(cell.tolerance_us);
            scopes.push("user");
        }
        if scopes.is_empty() {
            return Ok(Ok(()));
        }
        let mut conn = self.conn.clone();
        let (refused, wait_us): (usize, u64) = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| ClusterError::Timeout)??;
        if refused == 0 {
            return Ok(Ok(()));
        }
        let scope = scopes.get(refused - 1).copied().unwrap_or("ip");
        metrics::counter!("holdfast_rate_limited_total", "scope" => scope, "counted" => "cluster").increment(1);
        let retry_after_secs = (wait_us as f64 / 1e6).ceil().max(1.0) as u64;
        Ok(Err(Error::RateLimited { retry_after_secs }))
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
    fn cells_space_requests_by_the_rate_and_allow_the_burst() {
        let cell = Cell::new(10, None).unwrap();
        assert_eq!((cell.emission_us, cell.tolerance_us), (100_000, 1_900_000));
        let cell = Cell::new(4, Some(1)).unwrap();
        assert_eq!((cell.emission_us, cell.tolerance_us), (250_000, 0));
        assert!(Cell::new(0, Some(5)).is_none());
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
