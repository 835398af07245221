//! HTTP plumbing shared by both fakes: a server on a loopback port that stops with its last
//! handle, the shapes of their answers, and the client side of their webhook deliveries.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A bound loopback port. Its address is known before the app that serves it is built, since
/// the fakes put their own base URL in what they answer (paging links, bulk result URLs).
pub(crate) struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Any free port on 127.0.0.1. A fake that cannot listen is of no use to the test or demo
    /// that starts it, hence the panic.
    pub(crate) async fn bind() -> Listener {
        let inner = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a fake needs a free loopback port");
        let addr = inner.local_addr().expect("a bound listener has an address");
        Listener { inner, addr }
    }

    /// `http://127.0.0.1:PORT`
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `app` in the background until the last clone of the returned handle is dropped.
    pub(crate) fn serve(self, app: Router) -> Server {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(self.inner, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Server {
            addr: self.addr,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }
}

/// A running fake's server; cloneable, it stops when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Server {
    addr: SocketAddr,
    _stop: Arc<StopOnDrop>,
}

impl Server {
    /// `http://127.0.0.1:PORT`
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Locks a fake's state even when a panicking test poisoned it, so that one failed assertion
/// does not turn every later request of the run into a second failure.
pub(crate) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JSON answer; each platform spells its content type its own way.
pub(crate) fn json(status: StatusCode, content_type: &'static str, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

/// What both platforms answer for a 5xx: a plain-text reason, not their JSON error shape.
pub(crate) fn plain_status(code: StatusCode) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        code.canonical_reason().unwrap_or("Error").to_string(),
    )
        .into_response()
}

/// A page a browser test or a demo visitor sees (Shopify's install screen, Facebook's login
/// dialog), marked as simulated so nobody takes it for the real platform. `body` is HTML.
pub(crate) fn html_page(title: &str, banner: &str, body: &str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>{title}</title></head><body><p>{banner}</p>{body}</body></html>"),
    )
        .into_response()
}

/// Escapes text for HTML (the fakes' pages show names, scopes and URLs).
pub(crate) fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A webhook to post, built while the state is locked and sent once it is released.
pub(crate) struct Delivery {
    pub uri: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// A client for deliveries. A service that hangs must not hold a fake's task forever, hence
/// the timeout.
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// Posts one delivery; the HTTP status, or why there was none.
pub(crate) async fn deliver(client: &reqwest::Client, delivery: Delivery) -> Result<u16, String> {
    let mut req = client.post(&delivery.uri);
    for (k, v) in &delivery.headers {
        req = req.header(*k, v);
    }
    let r = req
        .body(delivery.body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.status().as_u16())
}
