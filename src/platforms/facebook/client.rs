//! Meta Graph API client. Tokens travel in the `Authorization` header, never in URLs we build;
//! `paging.next` links (which Graph returns with an `access_token` parameter) are followed only
//! when they point at the configured Graph host, with that parameter removed.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::FacebookSettings;
use crate::retry::UpstreamRetry;

/// Fields of `page_metadata.json` (SPEC §3).
pub const PAGE_FIELDS: &str = "id,name,category,category_list,about,website,link,picture,fan_count,verification_status,location,phone,email,created_time";
/// The same without the fields a Graph version may not know (`email`, `created_time`); used
/// when Graph refuses the full list. `emails` (a list) stands in for `email`.
pub const PAGE_FIELDS_FALLBACK: &str = "id,name,category,category_list,about,website,link,picture,fan_count,verification_status,location,phone,emails";
/// Most pages a paginated walk follows (a guard against a paging loop).
const MAX_PAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph error 190: the token is expired or revoked; the merchant must reconnect.
    #[error("Facebook rejected the access token ({0})")]
    InvalidToken(String),
    /// Rate limits (4, 17, 32, 613), 5xx, network: worth retrying later.
    #[error("Facebook is temporarily unavailable: {0}")]
    Transient(String),
    /// Graph error 100 about a field it does not have.
    #[error("Facebook does not know a requested field: {0}")]
    UnknownField(String),
    #[error("Facebook request failed: {0}")]
    Permanent(String),
}

#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Built once at start-up (kept in `AppState`); cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    settings: FacebookSettings,
    retry: UpstreamRetry,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, settings: FacebookSettings, retry: UpstreamRetry) -> Self {
        GraphClient {
            http,
            settings,
            retry,
        }
    }

    pub fn settings(&self) -> &FacebookSettings {
        &self.settings
    }

    fn base(&self) -> String {
        format!(
            "{}/{}",
            self.settings.graph_base_url.as_str().trim_end_matches('/'),
            self.settings.graph_version
        )
    }

    /// `{graph}/{version}/{path}` with query parameters. `path` segments are validated IDs or
    /// fixed names.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut u = Url::parse(&format!("{}/{}", self.base(), path.trim_start_matches('/')))
            .expect("graph base URL is validated at start-up");
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    pub fn dialog_url(&self, state: &str) -> Url {
        let mut u = Url::parse(&format!(
            "{}/{}/dialog/oauth",
            self.settings.dialog_base_url.as_str().trim_end_matches('/'),
            self.settings.graph_version
        ))
        .expect("dialog base URL is validated at start-up");
        u.query_pairs_mut()
            .append_pair("client_id", &self.settings.app_id)
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str())
            .append_pair(
                "scope",
                "pages_messaging,pages_show_list,pages_manage_metadata",
            )
            .append_pair("response_type", "code")
            .append_pair("state", state);
        u
    }

    /// Code → short-lived user token.
    pub async fn exchange_code(&self, code: &str) -> Result<TokenAnswer, GraphError> {
        let url = self.url(
            "oauth/access_token",
            &[
                ("client_id", &self.settings.app_id),
                ("redirect_uri", self.settings.redirect_uri.as_str()),
                ("client_secret", self.settings.app_secret.expose_secret()),
                ("code", code),
            ],
        );
        self.token(url).await
    }

    /// Short-lived → long-lived user token (about 60 days).
    pub async fn long_lived(&self, short: &SecretString) -> Result<TokenAnswer, GraphError> {
        let url = self.url(
            "oauth/access_token",
            &[
                ("grant_type", "fb_exchange_token"),
                ("client_id", &self.settings.app_id),
                ("client_secret", self.settings.app_secret.expose_secret()),
                ("fb_exchange_token", short.expose_secret()),
            ],
        );
        self.token(url).await
    }

    async fn token(&self, url: Url) -> Result<TokenAnswer, GraphError> {
        let v = self.send(reqwest::Method::GET, url, None).await?;
        serde_json::from_value(v)
            .map_err(|_| GraphError::Permanent("token answer without access_token".into()))
    }

    /// Page fields: the SPEC list, or the fallback list when Graph refuses a field; `email` is
    /// then filled from `emails`.
    pub async fn get_page_fields(
        &self,
        path: &str,
        extra: &str,
        token: &SecretString,
        all_pages: bool,
    ) -> Result<Vec<Value>, GraphError> {
        let run = |fields: &'static str| {
            let f = if extra.is_empty() {
                fields.to_string()
            } else {
                format!("{fields},{extra}")
            };
            let url = self.url(path, &[("fields", f.as_str()), ("limit", "100")]);
            async move {
                if all_pages {
                    self.get_all(url, token).await
                } else {
                    self.get(url, token).await.map(|v| vec![v])
                }
            }
        };
        match run(PAGE_FIELDS).await {
            Err(GraphError::UnknownField(m)) => {
                tracing::info!(reason = %m, "Graph refused a page field; using the fallback list");
                let mut items = run(PAGE_FIELDS_FALLBACK).await?;
                for item in &mut items {
                    if let Some(o) = item.as_object_mut() {
                        if let Some(first) = o
                            .remove("emails")
                            .and_then(|e| e.as_array().and_then(|a| a.first().cloned()))
                        {
                            o.insert("email".into(), first);
                        }
                    }
                }
                Ok(items)
            }
            other => other,
        }
    }

    pub async fn get(&self, url: Url, token: &SecretString) -> Result<Value, GraphError> {
        self.send(reqwest::Method::GET, url, Some(token)).await
    }

    pub async fn post(&self, url: Url, token: &SecretString) -> Result<Value, GraphError> {
        self.send(reqwest::Method::POST, url, Some(token)).await
    }

    pub async fn delete(&self, url: Url, token: &SecretString) -> Result<Value, GraphError> {
        self.send(reqwest::Method::DELETE, url, Some(token)).await
    }

    /// Every item of a paginated edge, following `paging.next` to the end.
    pub async fn get_all(
        &self,
        first: Url,
        token: &SecretString,
    ) -> Result<Vec<Value>, GraphError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            let v = self.get(url, token).await?;
            if let Some(items) = v.get("data").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            pages += 1;
            next = self.next_page(&v);
            if pages >= MAX_PAGES {
                return Err(GraphError::Permanent("paging did not end".into()));
            }
        }
        Ok(out)
    }

    /// The `paging.next` link, if it is on our Graph host; `access_token` stripped.
    pub fn next_page(&self, v: &Value) -> Option<Url> {
        let raw = v.pointer("/paging/next").and_then(Value::as_str)?;
        let u = Url::parse(raw).ok()?;
        let base = &self.settings.graph_base_url;
        if u.scheme() != base.scheme()
            || u.host() != base.host()
            || u.port_or_known_default() != base.port_or_known_default()
        {
            tracing::warn!("ignoring a paging link to another host");
            return None;
        }
        let mut clean = u.clone();
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "access_token")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        clean.set_query(None);
        if !kept.is_empty() {
            clean.query_pairs_mut().extend_pairs(kept);
        }
        Some(clean)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: Url,
        token: Option<&SecretString>,
    ) -> Result<Value, GraphError> {
        let mut backoff = self.retry.backoff();
        let mut last = GraphError::Transient("no attempt made".into());
        for attempt in 0..self.retry.attempts {
            if attempt > 0 {
                let d = backoff.next().unwrap_or(Duration::from_secs(20));
                metrics::counter!("facebook_retries_total").increment(1);
                tokio::time::sleep(d).await;
            }
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(t) = token {
                req = req.bearer_auth(t.expose_secret());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = GraphError::Transient(format!("network: {}", e.without_url()));
                    continue;
                }
            };
            let status = resp.status();
            let body: Value = match resp.json().await {
                Ok(v) => v,
                Err(_) if status.is_server_error() => {
                    last = GraphError::Transient(format!("HTTP {status}"));
                    continue;
                }
                Err(_) => {
                    return Err(GraphError::Permanent(format!(
                        "HTTP {status}, unreadable body"
                    )))
                }
            };
            if status.is_success() && body.get("error").is_none() {
                return Ok(body);
            }
            match classify(status.as_u16(), &body) {
                e @ GraphError::Transient(_) => last = e,
                e => return Err(e),
            }
        }
        Err(last)
    }
}

/// Maps a Graph error answer to what can be done about it.
fn classify(status: u16, body: &Value) -> GraphError {
    let err = body.get("error");
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let what = format!("HTTP {status}, code {}: {message}", code.unwrap_or(0));
    match code {
        Some(190) | Some(102) => GraphError::InvalidToken(what),
        Some(100) if message.contains("nonexisting field") => GraphError::UnknownField(what),
        Some(4) | Some(17) | Some(32) | Some(613) | Some(1) | Some(2) => {
            GraphError::Transient(what)
        }
        _ if status >= 500 || status == 429 => GraphError::Transient(what),
        _ => GraphError::Permanent(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn graph_errors_are_classified() {
        let e =
            |code: i64| json!({"error": {"message": "m", "type": "OAuthException", "code": code}});
        assert!(matches!(
            classify(400, &e(190)),
            GraphError::InvalidToken(_)
        ));
        for c in [4, 17, 32, 613] {
            assert!(
                matches!(classify(400, &e(c)), GraphError::Transient(_)),
                "{c}"
            );
        }
        assert!(matches!(classify(400, &e(100)), GraphError::Permanent(_)));
        let unknown = json!({"error": {"message": "(#100) Tried accessing nonexisting field (email) on node type (Page)", "code": 100}});
        assert!(matches!(
            classify(400, &unknown),
            GraphError::UnknownField(_)
        ));
        assert!(matches!(
            classify(503, &json!({})),
            GraphError::Transient(_)
        ));
    }
}
