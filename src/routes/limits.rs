//! Per-request limits at the edge: the whole-request timeout and the per-client rate limit on
//! the anonymous routes that write (OAuth logins and Meta's data-deletion callback).
//!
//! The header-read timeout and the connection cap live in the accept loop (`startup`), since
//! they act before a request exists.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{canonical_ip, EdgeSettings};
use crate::error::AppError;

/// How often the limiter forgets clients whose allowance is full again, so its memory stays
/// proportional to the clients of the last moments rather than every address ever seen.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// How long a request may take: the OAuth callbacks do the connect work while the merchant
/// waits, everything else is quick.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeouts {
    pub default: Duration,
    pub callbacks: Duration,
}

impl RequestTimeouts {
    pub fn new(edge: &EdgeSettings) -> RequestTimeouts {
        RequestTimeouts {
            default: edge.request_timeout,
            callbacks: edge.callback_timeout,
        }
    }

    fn for_path(&self, path: &str) -> Duration {
        match path {
            "/shopify/callback" | "/facebook/callback" => self.callbacks,
            _ => self.default,
        }
    }
}

/// Answers 503 (the JSON error shape) when a request, body read included, takes longer than
/// `HTTP_REQUEST_TIMEOUT_SECS` (`HTTP_CALLBACK_TIMEOUT_SECS` for the OAuth callbacks). One
/// timer per request: cheap enough for the webhook intake.
pub async fn request_timeout(
    State(limits): State<RequestTimeouts>,
    req: Request,
    next: Next,
) -> Response {
    let limit = limits.for_path(req.uri().path());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("http_request_timeouts_total").increment(1);
            AppError::Unavailable(format!(
                "the request did not complete within {} s",
                limit.as_secs_f64()
            ))
            .into_response()
        }
    }
}

/// A keyed GCRA limiter: `LOGIN_BURST` requests at once per client, refilled at
/// `LOGIN_RATE_PER_SECOND`.
pub struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    edge: EdgeSettings,
    /// Whether `X-Forwarded-For` from a peer outside `TRUSTED_PROXIES` was logged: once per
    /// router, because behind a proxy that is not listed every request carries it.
    warned_untrusted: AtomicBool,
}

impl LoginLimiter {
    pub fn new(edge: &EdgeSettings) -> Arc<LoginLimiter> {
        let burst = NonZeroU32::new(edge.login_burst).unwrap_or(NonZeroU32::MIN);
        // The config bounds the rate, so the period is a positive, finite duration.
        let period = Duration::from_secs_f64(1.0 / edge.login_rate_per_second);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = Arc::new(LoginLimiter {
            limiter: governor::RateLimiter::keyed(quota),
            edge: edge.clone(),
            warned_untrusted: AtomicBool::new(false),
        });
        // Outside a runtime (a router built in a plain unit test) nothing is spawned; the map
        // then just keeps its entries.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak: Weak<LoginLimiter> = Arc::downgrade(&limiter);
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(FORGET_EVERY).await;
                    // Ends with the router that owns the limiter.
                    let Some(l) = weak.upgrade() else { break };
                    l.limiter.retain_recent();
                    l.limiter.shrink_to_fit();
                }
            });
        }
        limiter
    }

    /// The client a request is counted against: the peer, unless the peer is a trusted proxy,
    /// in which case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
    /// (entries further left were written by the client and prove nothing).
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        // A request that did not come through the listener has no peer; such requests share
        // one allowance rather than escaping the limit.
        let Some(peer) = peer.map(|p| canonical_ip(p.ip())) else {
            return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        };
        if !self.edge.is_trusted_proxy(peer) {
            if headers.contains_key("x-forwarded-for") {
                self.warn_untrusted_forwarding(peer);
            }
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage to the left of trusted hops: keep the last address we could trust.
                break;
            };
            client = ip;
            if !self.edge.is_trusted_proxy(ip) {
                break;
            }
        }
        client
    }
}

impl LoginLimiter {
    /// Logs, the first time only, that a peer outside `TRUSTED_PROXIES` sent `X-Forwarded-For`:
    /// typically a proxy that is not listed (Docker's bridge, nginx on another Droplet), which
    /// makes every client share the proxy's allowance. Only the peer is logged: the header is
    /// whatever the sender wrote. Returns whether it logged.
    fn warn_untrusted_forwarding(&self, peer: IpAddr) -> bool {
        if self.warned_untrusted.swap(true, Ordering::Relaxed) {
            return false;
        }
        tracing::warn!(
            %peer,
            "X-Forwarded-For received from {peer}, which is not in TRUSTED_PROXIES: the header \
             is ignored and requests are rate-limited by the peer's address. If {peer} is your \
             reverse proxy, add it to TRUSTED_PROXIES (logged once)"
        );
        true
    }
}

/// An `X-Forwarded-For` entry: an address, possibly `v4:port` or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical_ip(s.ip()))
}

/// Route layer for the anonymous write routes: 429 with `Retry-After` once a client has used
/// its allowance.
pub async fn limit_logins(
    State(limiter): State<Arc<LoginLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    limit(&limiter, req, next).await
}

/// Lets `req` through unless its client has used its allowance (429 with `Retry-After`).
pub async fn limit(limiter: &LoginLimiter, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = limiter.client(peer, req.headers());
    match limiter.limiter.check_key(&client) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds, rounded up: a client that waits as told is let through.
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            metrics::counter!("http_rate_limited_total", "route" => route).increment(1);
            let mut response = AppError::TooManyRequests(format!(
                "too many requests from this address; retry in {secs} s"
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &str) -> Arc<LoginLimiter> {
        let vars = [("TRUSTED_PROXIES".to_string(), trusted.to_string())].into();
        let s = crate::config::Settings::from_vars(&vars).unwrap();
        LoginLimiter::new(&s.edge)
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn callbacks_have_their_own_timeout() {
        let t = RequestTimeouts {
            default: Duration::from_secs(30),
            callbacks: Duration::from_secs(300),
        };
        assert_eq!(t.for_path("/shopify/callback"), t.callbacks);
        assert_eq!(t.for_path("/facebook/callback"), t.callbacks);
        assert_eq!(t.for_path("/shopify/webhook"), t.default);
        assert_eq!(t.for_path("/shopify/callback/x"), t.default);
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_warned_about_once() {
        let l = limiter("10.0.0.1");
        let stranger: SocketAddr = "172.17.0.1:4000".parse().unwrap();
        assert_eq!(
            l.client(Some(stranger), &xff("203.0.113.9")),
            "172.17.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(l.warned_untrusted.load(Ordering::Relaxed), "warned");
        // Every later request, from any peer, finds it done.
        assert!(!l.warn_untrusted_forwarding(stranger.ip()));
        l.client(Some(stranger), &xff("203.0.113.10"));
        assert!(!l.warn_untrusted_forwarding("192.0.2.1".parse().unwrap()));
        // Without the header there is nothing to warn about.
        let quiet = limiter("10.0.0.1");
        quiet.client(Some(stranger), &HeaderMap::new());
        assert!(!quiet.warned_untrusted.load(Ordering::Relaxed));
        assert!(
            quiet.warn_untrusted_forwarding(stranger.ip()),
            "the first one logs"
        );
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let l = limiter("127.0.0.1,10.0.0.0/8");
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        // nginx appends the address it saw; what the client wrote is to its left.
        let h = xff("1.1.1.1, 203.0.113.9");
        assert_eq!(
            l.client(Some(proxy), &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            l.client(Some(stranger), &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A chain of trusted proxies is walked through.
        let h = xff("203.0.113.9, 10.1.1.1");
        assert_eq!(
            l.client(Some(proxy), &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            l.client(Some(proxy), &HeaderMap::new()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            l.client(Some(proxy), &xff("not-an-ip")),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            l.client(Some(proxy), &xff("[2001:db8::1]:443")),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
