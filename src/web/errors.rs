//! Error answers as pages for browsers. Every route answers errors as the SPEC's JSON
//! (`AppError`); for a request that prefers HTML this layer turns that answer into a page that
//! says what happened in plain words and offers to start again. It reads what the error said
//! from the `ErrorReport` the error put beside its JSON, never the JSON itself. The message is
//! already free of internal detail (see `error.rs`); the page shows it, a title for the case,
//! and the correlation id of a server-side failure.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::views::ErrorPage;
use super::{negotiate, page, Format};
use crate::error::ErrorReport;

pub async fn html_errors(req: Request, next: Next) -> Response {
    let wants = negotiate(req.headers());
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    if wants != Format::Html || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let Some(report) = response.extensions().get::<ErrorReport>().cloned() else {
        return response;
    };
    let parts = response.into_parts().0;
    let mut r = page(
        status,
        &error_page(status, &path, report.message, report.correlation_id),
    );
    // Keep what the route set (a cleared binding cookie, `WWW-Authenticate`, `Retry-After`).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().append(name.clone(), value.clone());
        }
    }
    r
}

/// The page for an error answer on `path`.
pub fn error_page(
    status: StatusCode,
    path: &str,
    message: String,
    reference: Option<String>,
) -> ErrorPage {
    let lower = message.to_ascii_lowercase();
    let title = if lower.contains("expired") {
        "This link has expired"
    } else if lower.contains("another browser") {
        "This connection was started in another browser"
    } else if lower.contains("already used") {
        "This link was already used"
    } else if lower.contains("hmac") || lower.contains("signature") {
        "We could not verify this request"
    } else if lower.contains("not granted") {
        "Access was not granted"
    } else if lower.contains("session") {
        "You are not signed in"
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        "This is not available right now"
    } else if status.is_server_error() {
        "Something went wrong on our side"
    } else if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Something is not right with this request"
    };
    let message = match (title, message.is_empty()) {
        ("We could not verify this request", _) => format!(
            "{message}. The link did not come from Shopify as it should, or it was changed on the way. Start the connection again from your Shopify admin or below."
        ),
        (_, true) => "Please start again.".to_string(),
        _ => capitalise(&message),
    };
    let (again_href, again_label) = if path.starts_with("/facebook") {
        ("/facebook/login", "Start again")
    } else if path.starts_with("/shopify") || path.starts_with("/connect") {
        ("/connect", "Start again")
    } else if path.starts_with("/account") {
        ("/account", "Back to your account")
    } else {
        ("/connect", "Start again")
    };
    ErrorPage {
        title: title.to_string(),
        message,
        reference,
        again_href: again_href.to_string(),
        again_label: again_label.to_string(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            let mut out: String = f.to_uppercase().collect();
            out.push_str(c.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}
