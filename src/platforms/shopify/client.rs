//! Shopify HTTP client: OAuth token endpoint and the GraphQL Admin API, with the cost-based
//! throttle, 429 `Retry-After` and 5xx backoff handled here, bounded.
//!
//! Every URL is built from `SHOPIFY_SHOP_URL_TEMPLATE` and a validated `ShopDomain`; no host
//! ever comes from a request.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use crate::config::ShopifySettings;
use crate::ids::ShopDomain;
use crate::retry::UpstreamRetry;

/// Longest single wait we accept from `Retry-After` or the throttle arithmetic.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ShopifyError {
    /// The token is invalid or revoked: the merchant must reconnect.
    #[error("Shopify rejected the access token ({0})")]
    Unauthorized(String),
    /// Worth retrying later: network, 429, 5xx, throttled beyond our patience.
    #[error("Shopify is temporarily unavailable: {0}")]
    Transient(String),
    /// The request itself is wrong (GraphQL errors, 4xx): retrying will not help.
    #[error("Shopify request failed: {0}")]
    Permanent(String),
}

/// What the token endpoint returns (authorization code or refresh grant).
#[derive(Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub scope: String,
    pub expires_in: Option<i64>,
    pub refresh_token: Option<String>,
    pub refresh_token_expires_in: Option<i64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Built once at start-up (kept in `AppState`); cheap to clone.
#[derive(Clone)]
pub struct ShopifyClient {
    http: reqwest::Client,
    settings: ShopifySettings,
    retry: UpstreamRetry,
}

impl ShopifyClient {
    pub fn new(http: reqwest::Client, settings: ShopifySettings, retry: UpstreamRetry) -> Self {
        ShopifyClient {
            http,
            settings,
            retry,
        }
    }

    pub fn settings(&self) -> &ShopifySettings {
        &self.settings
    }

    /// The HTTP client (redirects off), e.g. for bulk result files.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https://{shop}` (or the test template) for a validated shop.
    pub fn shop_base(&self, shop: &ShopDomain) -> Result<Url, ShopifyError> {
        let raw = self
            .settings
            .shop_url_template
            .replace("{shop}", shop.as_str());
        Url::parse(raw.trim_end_matches('/'))
            .map_err(|e| ShopifyError::Permanent(format!("bad shop URL: {e}")))
    }

    fn endpoint(&self, shop: &ShopDomain, path: &str) -> Result<Url, ShopifyError> {
        let base = self.shop_base(shop)?;
        Url::parse(&format!("{}{}", base.as_str().trim_end_matches('/'), path))
            .map_err(|e| ShopifyError::Permanent(format!("bad shop URL: {e}")))
    }

    pub fn authorize_url(&self, shop: &ShopDomain, state: &str) -> Result<Url, ShopifyError> {
        let mut url = self.endpoint(shop, "/admin/oauth/authorize")?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.api_key)
            .append_pair("scope", &self.settings.scopes)
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str())
            .append_pair("state", state);
        Ok(url)
    }

    /// Exchanges an authorization code for an offline token, asking for an expiring one
    /// (Shopify then also returns `expires_in` and a `refresh_token`).
    pub async fn exchange_code(
        &self,
        shop: &ShopDomain,
        code: &str,
    ) -> Result<TokenResponse, ShopifyError> {
        self.token_request(
            shop,
            json!({
                "client_id": self.settings.api_key,
                "client_secret": self.settings.api_secret.expose_secret(),
                "code": code,
                "expiring": 1,
            }),
        )
        .await
    }

    pub async fn refresh_token(
        &self,
        shop: &ShopDomain,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, ShopifyError> {
        self.token_request(
            shop,
            json!({
                "client_id": self.settings.api_key,
                "client_secret": self.settings.api_secret.expose_secret(),
                "grant_type": "refresh_token",
                "refresh_token": refresh_token.expose_secret(),
            }),
        )
        .await
    }

    async fn token_request(
        &self,
        shop: &ShopDomain,
        body: Value,
    ) -> Result<TokenResponse, ShopifyError> {
        let url = self.endpoint(shop, "/admin/oauth/access_token")?;
        let resp =
            self.http.post(url).json(&body).send().await.map_err(|e| {
                ShopifyError::Transient(format!("token endpoint: {}", e.without_url()))
            })?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ShopifyError::Transient(format!(
                "token endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            // The body may echo what we sent; report only the status and Shopify's error code.
            let code = resp
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            return Err(if status.as_u16() == 401 || code == "invalid_grant" {
                ShopifyError::Unauthorized(format!("token endpoint answered {status} {code}"))
            } else {
                ShopifyError::Permanent(format!("token endpoint answered {status} {code}"))
            });
        }
        resp.json::<TokenResponse>().await.map_err(|_| {
            ShopifyError::Permanent("token endpoint answered without an access token".into())
        })
    }

    /// Runs one GraphQL operation and returns its `data`, waiting out throttling and
    /// transient failures (bounded).
    pub async fn graphql(
        &self,
        shop: &ShopDomain,
        token: &SecretString,
        operation: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, ShopifyError> {
        let url = self.endpoint(
            shop,
            &format!("/admin/api/{}/graphql.json", self.settings.api_version),
        )?;
        let body = json!({"query": query, "operationName": operation, "variables": variables});
        let mut backoff = self.retry.backoff();
        let mut last = String::new();
        // Attempts include throttle waits.
        for _ in 0..self.retry.attempts {
            let wait = match self.attempt(&url, token, &body).await {
                Attempt::Done(data) => return Ok(data),
                Attempt::Fail(e) => return Err(e),
                Attempt::Wait(reason, Some(d)) => {
                    last = reason;
                    d
                }
                Attempt::Wait(reason, None) => {
                    last = reason;
                    backoff.next().unwrap_or(MAX_WAIT)
                }
            };
            tracing::debug!(%shop, operation, wait_ms = wait.as_millis() as u64, reason = %last, "shopify: retrying");
            metrics::counter!("shopify_retries_total").increment(1);
            tokio::time::sleep(wait.min(MAX_WAIT)).await;
        }
        Err(ShopifyError::Transient(format!(
            "{operation}: gave up after {} attempts ({last})",
            self.retry.attempts
        )))
    }

    async fn attempt(&self, url: &Url, token: &SecretString, body: &Value) -> Attempt {
        let resp = match self
            .http
            .post(url.clone())
            .header("X-Shopify-Access-Token", token.expose_secret())
            .json(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Attempt::Wait(format!("network: {}", e.without_url()), None),
        };
        if let Some(refused) = refused(&resp) {
            return refused;
        }
        let v: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                return Attempt::Wait(format!("unreadable answer: {}", e.without_url()), None)
            }
        };
        let throttle = v.pointer("/extensions/cost/throttleStatus");
        if let Some(errors) = v
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            return graphql_errors(&v, errors, throttle);
        }
        match v.get("data") {
            Some(d) if !d.is_null() => {
                // Be a good citizen: when the bucket runs low, let it refill before the next
                // request instead of running into THROTTLED.
                if let Some(t) = throttle {
                    let available = t.get("currentlyAvailable").and_then(Value::as_f64);
                    let max = t.get("maximumAvailable").and_then(Value::as_f64);
                    if let (Some(a), Some(m)) = (available, max) {
                        if a < m * 0.1 {
                            tokio::time::sleep(throttle_wait(Some(t), m * 0.2)).await;
                        }
                    }
                }
                Attempt::Done(d.clone())
            }
            _ => Attempt::Fail(ShopifyError::Permanent(
                "GraphQL answer without data".into(),
            )),
        }
    }
}

/// What a non-2xx answer means (`None` for a 2xx).
fn refused(resp: &reqwest::Response) -> Option<Attempt> {
    let status = resp.status();
    Some(match status.as_u16() {
        200..=299 => return None,
        401 => Attempt::Fail(ShopifyError::Unauthorized(format!("HTTP {status}"))),
        // Missing scopes or a closed store: refreshing the token cannot help.
        403 => Attempt::Fail(ShopifyError::Permanent(format!(
            "HTTP {status}: the app may not do this on the shop"
        ))),
        429 => {
            let after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite())
                .map(|s| Duration::from_secs_f64(s.clamp(0.0, MAX_WAIT.as_secs_f64())))
                .unwrap_or(Duration::from_secs(2));
            Attempt::Wait("HTTP 429".into(), Some(after))
        }
        500..=599 => Attempt::Wait(format!("HTTP {status}"), None),
        _ => Attempt::Fail(ShopifyError::Permanent(format!("HTTP {status}"))),
    })
}

/// A GraphQL answer with `errors`: a throttle waits for the bucket, anything else fails.
fn graphql_errors(v: &Value, errors: &[Value], throttle: Option<&Value>) -> Attempt {
    let throttled = errors
        .iter()
        .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"));
    if throttled {
        let requested = v
            .pointer("/extensions/cost/requestedQueryCost")
            .and_then(Value::as_f64)
            .unwrap_or(100.0);
        return Attempt::Wait("THROTTLED".into(), Some(throttle_wait(throttle, requested)));
    }
    let msgs: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    Attempt::Fail(ShopifyError::Permanent(format!(
        "GraphQL errors: {}",
        msgs.join("; ")
    )))
}

enum Attempt {
    Done(Value),
    Fail(ShopifyError),
    /// Retry after the given delay (or the backoff's next delay).
    Wait(String, Option<Duration>),
}

/// Time until the leaky bucket holds `needed` points again.
fn throttle_wait(status: Option<&Value>, needed: f64) -> Duration {
    let get = |k: &str| status.and_then(|s| s.get(k)).and_then(Value::as_f64);
    let available = get("currentlyAvailable").unwrap_or(0.0);
    let rate = get("restoreRate").filter(|r| *r > 0.0).unwrap_or(50.0);
    let secs = ((needed - available).max(0.0) / rate).max(0.05);
    Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_wait_follows_the_bucket() {
        let s =
            json!({"maximumAvailable": 2000.0, "currentlyAvailable": 100.0, "restoreRate": 100.0});
        assert_eq!(throttle_wait(Some(&s), 600.0), Duration::from_secs(5));
        assert_eq!(throttle_wait(Some(&s), 50.0), Duration::from_millis(50));
        assert_eq!(throttle_wait(None, 1e9), MAX_WAIT);
    }
}
