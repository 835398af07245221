//! Server-rendered pages for merchants (connect results, `/account`) and operators (`/`,
//! behind `OPERATOR_TOKEN`), over the same data the JSON answers carry.
//!
//! A request gets HTML only when it prefers `text/html` (a browser); every other client gets
//! the JSON the SPEC specifies, byte for byte. Pages work without JavaScript; one small script
//! (`/assets/live.js`) refreshes progress bars. Templates are askama files under `templates/`,
//! compiled in and escaped by default.

pub mod account;
pub mod callbacks;
pub mod errors;
pub mod moves;
pub mod operator;
pub mod progress;
pub mod views;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which representation a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
}

/// The request's preferred representation (`Accept`), as an extractor.
#[derive(Debug, Clone, Copy)]
pub struct Wants(pub Format);

impl Wants {
    pub fn html(self) -> bool {
        self.0 == Format::Html
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Wants {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Wants(negotiate(&parts.headers)))
    }
}

/// HTML when `Accept` ranks `text/html` (or XHTML) above JSON; JSON otherwise, including for
/// no `Accept` and `*/*` (curl, scripts, Prometheus, the platforms).
pub fn negotiate(headers: &HeaderMap) -> Format {
    let mut html = 0.0f32;
    let mut json = 0.0f32;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "text/html" | "application/xhtml+xml" => html = html.max(q),
                "application/json" => json = json.max(q),
                _ => {}
            }
        }
    }
    if html > 0.0 && html > json {
        Format::Html
    } else {
        Format::Json
    }
}

/// Content-Security-Policy of every page: only our own stylesheet and script, no framing, no
/// inline code.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'";

/// A rendered page with the headers every page carries. Callback URLs hold codes and
/// signatures: `no-referrer` keeps them from leaking to the next site, `no-store` out of caches.
pub fn page(status: StatusCode, t: &impl Template) -> Response {
    let body = match t.render() {
        Ok(b) => b,
        Err(e) => {
            // A template error is a bug; the page says so plainly and the log has the cause.
            let id = crate::telemetry::correlation_id();
            tracing::error!(correlation_id = %id, error = %e, "page could not be rendered");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("This page could not be shown (reference {id})."),
            )
                .into_response();
        }
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

pub fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

const STYLE: &str = include_str!("../../assets/style.css");
const LIVE_JS: &str = include_str!("../../assets/live.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn live_js() -> Response {
    asset("text/javascript; charset=utf-8", LIVE_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Format {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        negotiate(&h)
    }

    #[test]
    fn browsers_get_html_and_everything_else_json() {
        // Chromium's and Firefox's navigation Accept headers.
        assert_eq!(
            accept("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
            Format::Html
        );
        assert_eq!(
            accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        assert_eq!(accept("*/*"), Format::Json);
        assert_eq!(accept("application/json"), Format::Json);
        assert_eq!(accept("application/json, text/html;q=0.5"), Format::Json);
        assert_eq!(accept("text/html;q=0"), Format::Json);
        assert_eq!(accept("text/plain"), Format::Json);
        assert_eq!(negotiate(&HeaderMap::new()), Format::Json);
    }
}
