//! The value types of settings: secrets and URLs that never show in logs, comma lists, ranges.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// A secret that never shows up in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("must be at least 16 characters".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// A connection URL with its secrets hidden: the password of `user:password@`, and the value
/// of a `password=` query parameter (as libpq and sqlx accept it).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme) = out.find("://") {
        let authority_end = out[scheme + 3..].find(['/', '?', '#']).map_or(out.len(), |i| scheme + 3 + i);
        if let Some(at) = out[scheme + 3..authority_end].rfind('@') {
            let at = scheme + 3 + at;
            if let Some(colon) = out[scheme + 3..at].find(':') {
                out.replace_range(scheme + 3 + colon + 1..at, "[redacted]");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

/// Database URL with its password redacted in `Debug`.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err("must start with postgres:// or postgresql://".into());
        }
        Ok(Self(s.to_owned()))
    }
}

/// Comma-separated list, as used by `REDIS_URLS` and `TRUSTED_PROXIES`. `Debug` redacts any
/// password an item carries (Redis URLs may).
#[derive(Clone, Default)]
pub struct CommaList(pub Vec<String>);

impl fmt::Debug for CommaList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|item| redact_url(item))).finish()
    }
}

impl FromStr for CommaList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()))
    }
}

/// `CORS_ALLOWED_ORIGINS`: the origins whose pages may call the API from a browser, as a browser
/// sends them in `Origin` (`https://app.example.com`, `http://localhost:3000`: scheme, host and
/// port if not the default, nothing else), comma-separated; `*` alone for any origin; empty for
/// none (no CORS headers at all). Stored lower-cased, as browsers send them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    #[default]
    Off,
    Any,
    List(Vec<String>),
}

impl FromStr for CorsOrigins {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let items: Vec<&str> = s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
        match items.as_slice() {
            [] => Ok(Self::Off),
            ["*"] => Ok(Self::Any),
            _ => items.iter().copied().map(origin).collect::<Result<_, _>>().map(Self::List),
        }
    }
}

/// One origin, checked with the `url` crate (WHATWG URL parsing, as browsers do): `http` or
/// `https`, a host and an optional port, nothing else. A path, a query, a user, a trailing slash or
/// a default port written out would never match a browser's `Origin`, so they are refused, with
/// the origin to write instead.
fn origin(item: &str) -> Result<String, String> {
    let url = url::Url::parse(item).map_err(|e| format!("{item:?} is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{item:?} is not an origin: the scheme must be http or https"));
    }
    let origin = url.origin().ascii_serialization();
    if !item.eq_ignore_ascii_case(&origin) {
        return Err(format!("{item:?} is not an origin as a browser sends it: write {origin:?}"));
    }
    Ok(origin)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `10.0.0.0/8` or a single address (as a /32 or /128).
pub(crate) fn parse_net(value: &str) -> Option<IpNet> {
    value.parse::<IpNet>().ok().or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_debug_hides_the_password() {
        let url: DatabaseUrl = "postgres://app:hunter2@db:5432/holdfast".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:[redacted]@db"), "{shown}");
    }

    #[test]
    fn urls_in_the_start_up_log_hide_every_password() {
        let url: DatabaseUrl = "postgres://app@db:5432/holdfast?sslmode=require&password=hunter2".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=require&password=[redacted]"), "{shown}");
        let redis: CommaList = "redis://:s3cret@r1:6379,redis://user:pw2@r2:6379/0,redis://r3:6379".parse().unwrap();
        let shown = format!("{redis:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pw2"), "{shown}");
        assert!(shown.contains("redis://r3:6379") && shown.contains("user:[redacted]@r2"), "{shown}");
        assert_eq!(redact_url("redis://r:1/0?x=@y"), "redis://r:1/0?x=@y");
    }

    #[test]
    fn cors_origins_are_browser_origins_or_refused() {
        assert_eq!("".parse::<CorsOrigins>().unwrap(), CorsOrigins::Off);
        assert_eq!(" * ".parse::<CorsOrigins>().unwrap(), CorsOrigins::Any);
        assert_eq!(
            "https://App.example.com, http://localhost:3000".parse::<CorsOrigins>().unwrap(),
            CorsOrigins::List(vec!["https://app.example.com".into(), "http://localhost:3000".into()])
        );
        for bad in [
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://app.example.com:99999",
            "https://app.example.com:443",
            "https://",
            "*,https://app.example.com",
        ] {
            assert!(bad.parse::<CorsOrigins>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret: Secret = "0123456789abcdef-very-secret".parse().unwrap();
        assert!(!format!("{secret:?}").contains("very-secret"));
        assert!("short".parse::<Secret>().is_err());
    }

    #[test]
    fn comma_list_trims_and_drops_empty_parts() {
        let list: CommaList = " redis://a:1 , ,redis://b:2,".parse().unwrap();
        assert_eq!(list.0, vec!["redis://a:1", "redis://b:2"]);
    }
}
