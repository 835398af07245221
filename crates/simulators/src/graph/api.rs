//! Requests as the fake Graph sees them: routed on the path after the version, counted by kind
//! (see `KINDS`) before any check, then refused by an injected failure or rate limit, or
//! authenticated and answered.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use super::errors::{failure_response, graph_error, json_response, rate_limited, unsupported};
use super::{GraphRequest, Shared, State};
use crate::http;

enum Route {
    Dialog,
    Token,
    Me,
    Accounts,
    SubscribedApps(String),
    Conversations(String),
    Messages(String),
    Node(String),
    WrongVersion,
    Unrouted(String),
}

/// Who a request's token belongs to.
pub(super) enum Caller {
    /// A user token, by user index.
    User(usize),
    /// A page token, by page id.
    Page(String),
}

/// One request: its parameters are the query's, then the body's (which win).
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Vec<(String, String)>,
    body: Vec<(String, String)>,
    params: HashMap<String, String>,
    /// From the `Authorization` header, else the `access_token` parameter.
    pub(super) token: Option<String>,
    token_in_header: bool,
}

impl Req {
    fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Req {
        let query = parse_pairs(uri.query().unwrap_or("").as_bytes());
        let body = parse_body(headers, body);
        let mut params = HashMap::new();
        for (k, v) in query.iter().chain(body.iter()) {
            params.insert(k.clone(), v.clone());
        }
        let from_header = header_token(headers);
        let token_in_header = from_header.is_some();
        let token = from_header.or_else(|| params.get("access_token").cloned());
        Req {
            method: method.clone(),
            path: uri.path().to_string(),
            query,
            body,
            params,
            token,
            token_in_header,
        }
    }

    pub(super) fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }

    /// What `last_request` reports.
    fn record(&self) -> GraphRequest {
        GraphRequest {
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            body: self.body.clone(),
            token: self.token.clone(),
            token_in_header: self.token_in_header,
        }
    }

    /// The counter a request goes to (see `KINDS`).
    fn kind(&self, route: &Route) -> String {
        match route {
            Route::Dialog => "dialog".to_string(),
            Route::Token if self.param("grant_type") == Some("fb_exchange_token") => {
                "exchange".into()
            }
            Route::Token => "token".into(),
            Route::Me => "me".into(),
            Route::Accounts => "accounts".into(),
            Route::SubscribedApps(_) => {
                format!("subscribed_apps_{}", self.method.as_str().to_lowercase())
            }
            Route::Conversations(_) => "conversations".into(),
            Route::Messages(_) => "messages".into(),
            Route::Node(id) if id.starts_with("t_") => "conversation".into(),
            Route::Node(_) => "page".into(),
            Route::WrongVersion | Route::Unrouted(_) => "unexpected".into(),
        }
    }
}

fn parse_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    if body.is_empty() {
        return Vec::new();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            return m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
        }
    }
    parse_pairs(body)
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn redact(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| match k.as_str() {
            "access_token" | "client_secret" | "fb_exchange_token" | "code" | "appsecret_proof" => {
                format!("{k}=REDACTED")
            }
            _ => format!("{k}={v}"),
        })
        .collect();
    format!("{path}?{}", q.join("&"))
}

impl State {
    fn route(&self, method: &Method, path: &str) -> Route {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.first() != Some(&self.config.version.as_str()) {
            return Route::WrongVersion;
        }
        let get = method == Method::GET;
        match (&segs[1..], method.as_str()) {
            (["dialog", "oauth"], "GET") => Route::Dialog,
            (["oauth", "access_token"], "GET" | "POST") => Route::Token,
            (["me"], "GET") => Route::Me,
            (["me", "accounts"], "GET") => Route::Accounts,
            ([id, "subscribed_apps"], "GET" | "POST" | "DELETE") if *id != "me" => {
                Route::SubscribedApps(id.to_string())
            }
            ([id, "conversations"], _) if get && *id != "me" => {
                Route::Conversations(id.to_string())
            }
            ([id, "messages"], _) if get => Route::Messages(id.to_string()),
            ([id], _) if get && !id.is_empty() => Route::Node(id.to_string()),
            ([id, ..], _) => Route::Unrouted(id.to_string()),
            _ => Route::Unrouted(String::new()),
        }
    }

    fn handle(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let req = Req::parse(method, uri, headers, body);
        let route = self.route(method, &req.path);
        let kind = req.kind(&route);
        *self.counts.entry(kind.clone()).or_default() += 1;
        self.last_requests.insert(kind, req.record());
        if let Route::Dialog = route {
            self.dialog_requests.push(req.query.into_iter().collect());
            return self.dialog_page(uri);
        }
        self.total += 1;
        if self.fail_next.1 > 0 {
            self.fail_next.1 -= 1;
            return failure_response(self.fail_next.0);
        }
        match &route {
            Route::WrongVersion => {
                self.unexpected
                    .push(format!("{method} {}", redact(&req.path, &req.query)));
                return graph_error(
                    &format!("Unknown path components: {}", req.path),
                    "OAuthException",
                    2500,
                    None,
                );
            }
            Route::Unrouted(id) => {
                self.unexpected
                    .push(format!("{method} {}", redact(&req.path, &req.query)));
                return unsupported(method, id);
            }
            Route::Token => return self.handle_token(&req),
            _ => {}
        }
        if self.rate_limit_next.1 > 0 {
            self.rate_limit_next.1 -= 1;
            return rate_limited(self.rate_limit_next.0);
        }
        match self.answer(&route, &req) {
            Ok(v) => json_response(StatusCode::OK, v),
            Err(r) => r,
        }
    }

    /// A Graph call's answer, for the caller its token says.
    fn answer(&mut self, route: &Route, req: &Req) -> Result<Value, Response> {
        let me = matches!(route, Route::Me | Route::Accounts);
        let caller = self.authenticate(req, me)?;
        match route {
            Route::Me => self.handle_me(req, &caller),
            Route::Accounts => self.handle_accounts(req, &caller),
            Route::SubscribedApps(id) => self.handle_subscribed_apps(req, &caller, id),
            Route::Conversations(id) => self.handle_conversations(req, &caller, id),
            Route::Messages(id) => self.handle_messages(req, &caller, id),
            Route::Node(id) => self.handle_node(req, &caller, id),
            Route::Dialog | Route::Token | Route::WrongVersion | Route::Unrouted(_) => {
                unreachable!("answered before authentication")
            }
        }
    }
}

/// Every request: Graph's routes are too irregular (`/{id}`, `/{id}/{edge}`, `/me`) for the
/// router, so one handler routes them.
pub(super) async fn handler(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    http::lock(&state).handle(&method, &uri, &headers, &body)
}
