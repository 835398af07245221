//! Limits at the HTTP edge: timeouts, the connection cap, the login rate limit and the proxies
//! whose `X-Forwarded-For` is believed.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::reader::Reader;

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSettings {
    /// A connection that has not sent a whole request head within this long is closed
    /// (`HTTP_HEADER_TIMEOUT_SECS`): a slow client cannot hold a connection open for free.
    pub header_timeout: Duration,
    /// A request (body read and handler) that takes longer is answered 503
    /// (`HTTP_REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// The same for the OAuth callbacks (`HTTP_CALLBACK_TIMEOUT_SECS`), which run the connect
    /// self-tests and the initial sync while the merchant waits (longer for Facebook accounts
    /// with many pages; the nginx example allows them 300 s).
    pub callback_timeout: Duration,
    /// Connections served at once; more are refused (`HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Login-type requests a client is allowed per second, sustained (`LOGIN_RATE_PER_SECOND`).
    pub login_rate_per_second: f64,
    /// Login-type requests a client may send at once before the rate applies (`LOGIN_BURST`).
    pub login_burst: u32,
    /// Peers whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
}

pub const DEFAULT_TRUSTED_PROXIES: &str = "127.0.0.1,::1";

impl EdgeSettings {
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address, so the
/// list and the rate-limit keys do not depend on how the listener was bound.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

pub(super) fn read_edge(r: &mut Reader<'_>) -> EdgeSettings {
    let header_timeout = secs(r, "HTTP_HEADER_TIMEOUT_SECS", 10.0);
    let request_timeout = secs(r, "HTTP_REQUEST_TIMEOUT_SECS", 30.0);
    let callback_timeout = secs(r, "HTTP_CALLBACK_TIMEOUT_SECS", 300.0);
    let max_connections =
        match r.parse::<usize>("HTTP_MAX_CONNECTIONS", "1024", "a number of connections") {
            Some(0) => {
                r.problems
                    .push("HTTP_MAX_CONNECTIONS is malformed (must be at least 1)".into());
                1024
            }
            Some(n) => n,
            None => 1024,
        };
    let login_rate_per_second = match r.parse::<f64>(
        "LOGIN_RATE_PER_SECOND",
        "1",
        "a number of requests per second",
    ) {
        // Below one request a day the limiter's period would overflow nothing useful.
        Some(v) if v.is_finite() && (1.0 / 86_400.0..=1_000_000.0).contains(&v) => v,
        Some(v) => {
            r.problems.push(format!(
                    "LOGIN_RATE_PER_SECOND is malformed (expected a positive number of requests per second, got {v})"
                ));
            1.0
        }
        None => 1.0,
    };
    let login_burst = match r.parse::<u32>("LOGIN_BURST", "20", "a number of requests") {
        Some(0) => {
            r.problems
                .push("LOGIN_BURST is malformed (must be at least 1)".into());
            20
        }
        Some(n) => n,
        None => 20,
    };
    let raw = r.string_or("TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES);
    let mut trusted_proxies = Vec::new();
    let mut bad = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_net(item) {
            Some(net) => trusted_proxies.push(net),
            None => bad.push(item.to_string()),
        }
    }
    if !bad.is_empty() {
        r.problems.push(format!(
            "TRUSTED_PROXIES is malformed (expected comma-separated IP addresses or CIDR ranges, e.g. 127.0.0.1,10.0.0.0/8; bad: {})",
            bad.join(", ")
        ));
    }
    EdgeSettings {
        header_timeout,
        request_timeout,
        callback_timeout,
        max_connections,
        login_rate_per_second,
        login_burst,
        trusted_proxies,
    }
}

/// An address is a one-address network; IPv4-mapped IPv6 forms are folded into IPv4.
fn parse_net(item: &str) -> Option<IpNet> {
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(IpNet::from(canonical_ip(ip)));
    }
    item.parse::<IpNet>().ok().map(|n| n.trunc())
}

/// A positive number of seconds (fractions allowed; tests use short ones).
fn secs(r: &mut Reader<'_>, name: &str, default: f64) -> Duration {
    let raw = r.get(name).map(str::to_string);
    match raw {
        None => Duration::from_secs_f64(default),
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Duration::from_secs_f64(s),
            _ => {
                r.problems.push(format!(
                    "{name} is malformed (expected a positive number of seconds, got {v:?})"
                ));
                Duration::from_secs_f64(default)
            }
        },
    }
}
