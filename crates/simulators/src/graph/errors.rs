//! Graph's errors as its clients see them: HTTP 400 with `{"error":{"message","type","code",
//! "error_subcode","fbtrace_id"}}`, `WWW-Authenticate` on token errors, `x-app-usage` on rate
//! limits.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::http;
use crate::ids::random_alnum;

fn fbtrace_id() -> String {
    format!("A{}", random_alnum(22))
}

/// Graph's JSON answers, each with its trace id.
pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = http::json(status, "application/json; charset=UTF-8", &body);
    if let Ok(v) = HeaderValue::from_str(&fbtrace_id()) {
        r.headers_mut().insert("x-fb-trace-id", v);
    }
    r
}

pub(super) fn graph_error(message: &str, kind: &str, code: u32, subcode: Option<u32>) -> Response {
    let mut err = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": fbtrace_id(),
    });
    if let Some(s) = subcode {
        err["error_subcode"] = json!(s);
    }
    let mut r = json_response(StatusCode::BAD_REQUEST, json!({"error": err}));
    if code == 190 {
        let h = format!("OAuth \"Facebook Platform\" \"invalid_token\" \"{message}\"");
        if let Ok(v) = HeaderValue::from_str(&h) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

pub(super) fn invalid_token() -> Response {
    graph_error(
        "Invalid OAuth access token - Cannot parse access token",
        "OAuthException",
        190,
        None,
    )
}

pub(super) fn session_invalidated() -> Response {
    graph_error(
        "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
        "OAuthException",
        190,
        Some(460),
    )
}

pub(super) fn unsupported(method: &Method, id: &str) -> Response {
    graph_error(
        &format!(
            "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
            method.as_str().to_lowercase()
        ),
        "GraphMethodException",
        100,
        Some(33),
    )
}

pub(super) fn needs_page_token_190() -> Response {
    graph_error(
        "(#190) This method must be called with a Page Access Token",
        "OAuthException",
        190,
        None,
    )
}

pub(super) fn needs_page_token_210() -> Response {
    graph_error(
        "(#210) A page access token is required to request this resource.",
        "OAuthException",
        210,
        None,
    )
}

pub(super) fn param_error(message: &str) -> Response {
    graph_error(message, "OAuthException", 100, None)
}

pub(super) fn rate_limited(code: u32) -> Response {
    let message = match code {
        4 => "(#4) Application request limit reached".to_string(),
        17 => "(#17) User request limit reached".to_string(),
        32 => "(#32) Page request limit reached".to_string(),
        613 => "(#613) Calls to this api have exceeded the rate limit.".to_string(),
        80001 => "(#80001) There have been too many calls to this Page account. Wait a bit and try again. For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.".to_string(),
        c => format!("(#{c}) Request limit reached"),
    };
    let body = json!({"error": {
        "message": message,
        "type": "OAuthException",
        "is_transient": true,
        "code": code,
        "fbtrace_id": fbtrace_id(),
    }});
    let mut r = json_response(StatusCode::BAD_REQUEST, body);
    r.headers_mut().insert(
        "x-app-usage",
        HeaderValue::from_static(r#"{"call_count":100,"total_cputime":12,"total_time":34}"#),
    );
    r
}

/// An injected failure (`fail_next`) as Graph answers it.
pub(super) fn failure_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_server_error() {
        http::plain_status(code)
    } else {
        let mut r = graph_error("An unknown error has occurred.", "OAuthException", 1, None);
        *r.status_mut() = code;
        r
    }
}
