//! Shopify OAuth: the install screen at `/admin/oauth/authorize` (which sends the browser back
//! with a signed `hmac`), and the token endpoint's authorization-code and refresh-token grants.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};
use url::Url;

use super::generate::shop_name_for;
use super::{json_response, FakeShopify, Shared, State};
use crate::http;
use crate::ids::random_hex;
use crate::signing;

impl FakeShopify {
    /// A fresh single-use authorization code for `shop` (creates the shop if needed).
    pub fn issue_code(&self, shop: &str) -> String {
        self.st().issue_code(shop)
    }

    /// Expiring-token mode: exchanges and refreshes also answer `expires_in`, `refresh_token`
    /// and `refresh_token_expires_in`.
    pub fn set_expiring(&self, on: bool) {
        self.st().expiring = on;
    }

    /// All of the shop's access and refresh tokens stop working (uninstall / revocation).
    pub fn revoke_tokens(&self, shop: &str) {
        let mut st = self.st();
        st.access_tokens.retain(|_, s| s != shop);
        st.refresh_tokens.retain(|_, (s, _)| s != shop);
    }

    /// The shop's access tokens stop working (as after `expires_in`); refresh tokens stay valid.
    pub fn expire_access_tokens(&self, shop: &str) {
        self.st().access_tokens.retain(|_, s| s != shop);
    }

    /// The most recently issued access token of the shop (live or not).
    pub fn last_access_token(&self, shop: &str) -> Option<String> {
        self.st()
            .shops
            .get(shop)
            .and_then(|s| s.last_access_token.clone())
    }

    /// The most recently issued refresh token of the shop (live or not).
    pub fn last_refresh_token(&self, shop: &str) -> Option<String> {
        self.st()
            .shops
            .get(shop)
            .and_then(|s| s.last_refresh_token.clone())
    }

    pub fn is_live_token(&self, shop: &str, token: &str) -> bool {
        self.st().access_tokens.get(token).map(String::as_str) == Some(shop)
    }

    /// Successful authorization-code exchanges.
    pub fn token_exchanges(&self) -> usize {
        self.st().token_exchanges
    }

    /// Successful refresh-token grants.
    pub fn refreshes(&self) -> usize {
        self.st().refreshes
    }

    /// Token-endpoint requests answered 400.
    pub fn rejected_token_requests(&self) -> usize {
        self.st().rejected_token_requests
    }

    /// The last token-endpoint request body, parsed (JSON or form).
    pub fn last_token_request(&self) -> Option<Value> {
        self.st().last_token_request.clone()
    }
}

impl State {
    /// A fresh single-use authorization code for `shop` (creates the shop if needed).
    fn issue_code(&mut self, shop: &str) -> String {
        self.shop_mut(shop);
        let code = random_hex(16);
        self.codes.insert(code.clone(), shop.to_string());
        code
    }

    /// The token endpoint: an authorization code (single use, bound to its shop) or, in
    /// expiring mode, a refresh token (rotated on use) for a new access token.
    fn handle_token(&mut self, shop: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let params = parse_params(headers, body);
        self.last_token_request = Some(params.clone());
        let text = |k: &str| match &params[k] {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        };
        let reject = |st: &mut State, description: &str| {
            st.rejected_token_requests += 1;
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": description}),
            )
        };
        if text("client_id").as_deref() != Some(self.config.api_key.as_str())
            || text("client_secret").as_deref() != Some(self.config.api_secret.as_str())
        {
            return reject(self, "The client credentials are invalid");
        }
        match text("grant_type").as_deref() {
            None | Some("authorization_code") => {
                let code = text("code").unwrap_or_default();
                if self.codes.get(&code).map(String::as_str) != Some(shop) {
                    return reject(
                        self,
                        "The authorization code was not found or was already used",
                    );
                }
                self.codes.remove(&code);
                self.token_exchanges += 1;
                let body = self.mint(shop);
                json_response(StatusCode::OK, body)
            }
            Some("refresh_token") => {
                let rt = text("refresh_token").unwrap_or_default();
                match self.refresh_tokens.get(&rt) {
                    Some((s, _)) if s == shop => {}
                    _ => return reject(self, "The refresh token is invalid or has expired"),
                }
                let (_, old_access) = self.refresh_tokens.remove(&rt).unwrap();
                self.access_tokens.remove(&old_access);
                self.refreshes += 1;
                let body = self.mint(shop);
                json_response(StatusCode::OK, body)
            }
            Some(_) => reject(self, "Unsupported grant_type"),
        }
    }

    /// Issues a new access token (and refresh token in expiring mode) for the shop.
    fn mint(&mut self, shop: &str) -> Value {
        let access = format!("shpat_{}", random_hex(16));
        self.access_tokens.insert(access.clone(), shop.to_string());
        let mut body = json!({"access_token": access, "scope": self.config.scopes});
        let expiring = self.expiring;
        let refresh = expiring.then(|| format!("shprt_{}", random_hex(16)));
        if let Some(r) = &refresh {
            self.refresh_tokens
                .insert(r.clone(), (shop.to_string(), access.clone()));
            body["expires_in"] = json!(3600);
            body["refresh_token"] = json!(r);
            body["refresh_token_expires_in"] = json!(7_776_000);
        }
        let s = self.shop_mut(shop);
        s.last_access_token = Some(access);
        if refresh.is_some() {
            s.last_refresh_token = refresh;
        }
        body
    }
}

/// The parameters Shopify adds to the app's `redirect_uri` when the merchant installs it, with
/// `hmac` last, signed by the fake's own signer (see `signing`).
fn install_redirect_params(
    secret: &str,
    shop: &str,
    code: String,
    state: String,
) -> Vec<(String, String)> {
    let host = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "admin.shopify.com/store/{}",
        shop.trim_end_matches(".myshopify.com")
    ));
    let mut params = vec![
        ("code".to_string(), code),
        ("host".to_string(), host),
        ("shop".to_string(), shop.to_string()),
        ("state".to_string(), state),
        ("timestamp".to_string(), Utc::now().timestamp().to_string()),
    ];
    let hmac = signing::shopify_oauth_hmac(secret, &params);
    params.push(("hmac".to_string(), hmac));
    params
}

fn install_page(body: &str) -> Response {
    http::html_page(
        "Install app",
        "fake Shopify (simulated, nothing leaves this machine)",
        body,
    )
}

/// The install screen a merchant sees at `/admin/oauth/authorize`: "Install" sends the browser
/// back to `redirect_uri` with a fresh code and the parameters Shopify signs (`code`, `host`,
/// `shop`, `state`, `timestamp`, then `hmac` over them).
pub(super) async fn authorize_handler(
    AxState(state): AxState<Shared>,
    Path(shop): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut st = http::lock(&state);
    if q.get("client_id") != Some(&st.config.api_key) {
        return install_page(
            "<p id=\"authorize-error\">Oauth error invalid_request: The client_id is invalid.</p>",
        );
    }
    let Some(redirect) = q.get("redirect_uri").and_then(|r| Url::parse(r).ok()) else {
        return install_page("<p id=\"authorize-error\">Oauth error invalid_request: The redirect_uri is missing or not absolute.</p>");
    };
    let code = st.issue_code(&shop);
    let oauth_state = q.get("state").cloned().unwrap_or_default();
    let params = install_redirect_params(&st.config.api_secret, &shop, code, oauth_state);
    let mut u = redirect;
    u.query_pairs_mut().extend_pairs(params.iter());
    let scopes = q.get("scope").cloned().unwrap_or_default();
    install_page(&format!(
        "<h1>Install the app on {}</h1><p>It asks for: {}</p><p><a id=\"install\" href=\"{}\">Install app</a></p>",
        http::escape_html(&shop_name_for(&shop)),
        http::escape_html(&scopes),
        http::escape_html(u.as_str()),
    ))
}

/// `POST /{shop}/admin/oauth/access_token`
pub(super) async fn token_handler(
    AxState(state): AxState<Shared>,
    Path(shop): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    http::lock(&state).handle_token(&shop, &headers, &body)
}

/// The token request's parameters, from a JSON or a form body (the service may send either).
fn parse_params(headers: &HeaderMap, body: &[u8]) -> Value {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
            return v;
        }
    }
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Value::Object(map)
}
