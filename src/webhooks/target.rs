//! Where webhooks may go. Without `WEBHOOK_ALLOW_PRIVATE_TARGETS`, a URL must be `https` and
//! every address its host resolves to must be public: not loopback, private, link-local,
//! shared (CGNAT), multicast, documentation or reserved, nor an IPv6 form of one of those. The
//! check runs when the endpoint is registered and again on every connection ([`PublicResolver`]
//! filters what DNS answers), so a name that later resolves elsewhere (DNS rebinding) is refused
//! too. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest URL accepted.
pub const MAX_URL: usize = 2048;

/// IPv4 ranges no webhook may reach (RFC 6890 special-purpose registry, minus the global ones).
static V4_DENIED: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
    .iter()
    .map(|net| net.parse().expect("a valid range"))
    .collect()
});

/// IPv6 ranges no webhook may reach (those embedding an IPv4 address are checked by it instead).
static V6_DENIED: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    ["::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"]
        .iter()
        .map(|net| net.parse().expect("a valid range"))
        .collect()
});

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_DENIED.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => !V6_DENIED.iter().any(|net| net.contains(&v6)),
        },
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !matches!(v6, Ipv6Addr::UNSPECIFIED | Ipv6Addr::LOCALHOST) {
        return Some(tail());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Checks a webhook URL's form (not where it resolves): absolute `https` (or `http` when
/// private targets are allowed), a host, no user name or password, no fragment, at most
/// [`MAX_URL`] characters, and a literal IP address only if it is public.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let url = Url::parse(raw).map_err(|err| format!("is not an absolute URL ({err})"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https URL".to_owned()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".to_owned());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".to_owned());
    }
    match url.host() {
        None => return Err("must name a host".to_owned()),
        Some(Host::Ipv4(v4)) => check_ip(IpAddr::V4(v4), allow_private)?,
        Some(Host::Ipv6(v6)) => check_ip(IpAddr::V6(v6), allow_private)?,
        Some(Host::Domain(_)) => {}
    }
    Ok(url)
}

fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!("must not point at a private, loopback or reserved address ({ip})"))
    }
}

/// Resolves the URL's host now and checks every address (registration-time check).
pub async fn check_resolves(url: &Url, allow_private: bool) -> Result<(), String> {
    let Some(Host::Domain(host)) = url.host() else { return Ok(()) };
    let addrs = resolve(host, allow_private).await?;
    if addrs.is_empty() { Err(format!("host {host} does not resolve")) } else { Ok(()) }
}

async fn resolve(host: &str, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|err| format!("host {host} does not resolve ({err})"))?
        .collect();
    if let Some(refused) = addrs.iter().find(|addr| !allow_private && !is_public(addr.ip())) {
        return Err(format!("host {host} resolves to a private, loopback or reserved address ({})", refused.ip()));
    }
    Ok(addrs)
}

/// A connection-time check: the error a refused target gives, so an attempt can say why.
#[derive(Debug, thiserror::Error)]
#[error("refused target: {0}")]
pub struct RefusedTarget(pub String);

/// reqwest's resolver for webhook deliveries: the system's, answering only with public addresses
/// (all of them, or an error).
pub struct PublicResolver {
    pub allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(name.as_str(), allow_private).await.map_err(RefusedTarget)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for public in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[test]
    fn urls_must_be_https_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/holdfast?x=1", false).is_ok());
        assert!(check_url("https://8.8.8.8/hook", false).is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/#frag",
            "https://127.0.0.1/",
            "https://[::1]:8443/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:10.0.0.1]/",
            "hooks.example.com",
            "",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad:?}");
        }
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url(&format!("https://example.com/{}", "a".repeat(MAX_URL)), false).is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_unless_allowed() {
        let url = Url::parse("https://localhost/hook").unwrap();
        assert!(check_resolves(&url, false).await.is_err());
        assert!(check_resolves(&url, true).await.is_ok());
    }
}
