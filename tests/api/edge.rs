//! The edge against slow and abusive clients: header-read and whole-request timeouts, the
//! connection cap, and the per-client login rate limit with trusted-proxy `X-Forwarded-For`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn shopify_on(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vars(&[
        ("SHOPIFY_API_KEY", "edge-key"),
        ("SHOPIFY_API_SECRET", "edge-secret"),
    ]);
    v.extend(vars(extra));
    v
}

/// Reads until the server closes the connection (EOF or reset) and returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn login(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/shopify/acme/login"));
    if let Some(xff) = forwarded_for {
        req = req.header("X-Forwarded-For", xff);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn half_a_request_line_is_closed_within_the_header_timeout() {
    let app = spawn_app(&vars(&[("HTTP_HEADER_TIMEOUT_SECS", "1")])).await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    stream.write_all(b"GET /healthz HT").await.unwrap();
    let started = Instant::now();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream)).await;
    assert!(
        closed.is_ok(),
        "a connection with half a request line was still open after 10 s"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, expected about the 1 s header timeout"
    );
    // Whole requests on other connections are unaffected.
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_whose_body_never_completes_gets_503_within_the_request_timeout() {
    let app = spawn_app(&vars(&[("HTTP_REQUEST_TIMEOUT_SECS", "1")])).await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    // The head is complete (so the header timeout does not apply); the body stops half-way.
    stream
        .write_all(
            b"POST /shopify/webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"id\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // The answer, not necessarily a close: stop once the JSON body is in.
        while !String::from_utf8_lossy(&got).contains("\"message\"") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    })
    .await
    .expect("no answer within 10 s to a request whose body never arrives");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains(r#""status":"error""#) && text.contains("did not complete within 1 s"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_counted() {
    let app = spawn_app(&vars(&[("HTTP_MAX_CONNECTIONS", "2")])).await;
    // Two idle connections hold both places (each has a request in flight, so the server
    // keeps them).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut third))
        .await
        .expect("the connection over the cap is closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(text.contains("too many connections"), "{text}");

    // A place freed is a place usable again.
    drop(held.pop());
    let client = reqwest::Client::new();
    eventually("a connection is accepted again", || {
        let client = client.clone();
        let url = app.url("/healthz");
        async move { matches!(client.get(url).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    drop(held);
    let metrics = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_connections_refused_total"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_21st_login_in_a_second_from_one_client_gets_429_with_retry_after() {
    // A slow refill so that a loaded machine taking over a second for 20 requests does not
    // earn the client another place; the burst is the default.
    let app = spawn_app(&shopify_on(&[("LOGIN_RATE_PER_SECOND", "0.05")])).await;
    for i in 0..20 {
        let r = login(&app, None).await;
        assert_eq!(r.status(), 307, "login {} of the burst", i + 1);
    }
    let r = login(&app, None).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("too many requests"));
    // The other anonymous write routes share the client's allowance...
    let r = app
        .post_form("/facebook/data-deletion", &[("signed_request", "x.y")])
        .await;
    assert_eq!(r.status(), 429);
    // ...while the signed webhook intake is never rate limited.
    for _ in 0..30 {
        let r = app
            .client
            .post(app.url("/shopify/webhook"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 429);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_rate_limited_total")
                && l.contains(r#"route="/shopify/{shop}/login""#)),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn through_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    // The default TRUSTED_PROXIES trusts loopback, where nginx connects from (and so do we).
    let app = spawn_app(&shopify_on(&[("LOGIN_RATE_PER_SECOND", "0.05")])).await;
    for _ in 0..20 {
        assert_eq!(login(&app, Some("203.0.113.1")).await.status(), 307);
    }
    assert_eq!(login(&app, Some("203.0.113.1")).await.status(), 429);
    // What the client wrote itself sits left of the address nginx appends: not believed.
    assert_eq!(
        login(&app, Some("198.51.100.9, 203.0.113.1"))
            .await
            .status(),
        429
    );
    // Another client behind the same proxy, and the proxy's own requests, are not limited.
    assert_eq!(login(&app, Some("203.0.113.2")).await.status(), 307);
    assert_eq!(login(&app, None).await.status(), 307);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    let app = spawn_app(&shopify_on(&[
        ("LOGIN_RATE_PER_SECOND", "0.05"),
        ("TRUSTED_PROXIES", "10.0.0.1"),
    ]))
    .await;
    // A new made-up client address on every request does not buy a fresh allowance.
    for i in 0..20 {
        let xff = format!("203.0.113.{}", i + 1);
        assert_eq!(login(&app, Some(&xff)).await.status(), 307);
    }
    assert_eq!(login(&app, Some("203.0.113.200")).await.status(), 429);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_logged_once_without_its_value() {
    // We connect from loopback, which this configuration does not trust: as a Docker bridge
    // or a proxy on another Droplet would be without TRUSTED_PROXIES.
    let dir = tempfile::tempdir().unwrap();
    let server = start_binary(dir.path(), &vars(&[("TRUSTED_PROXIES", "10.0.0.1")]));
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = client
            .post(server.url("/facebook/data-deletion"))
            .header("X-Forwarded-For", format!("203.0.113.{}, evil-{i}", 70 + i))
            .form(&[("signed_request", "x.y")])
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 429, "within the allowance");
    }
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("not in TRUSTED_PROXIES"))
        .collect();
    assert_eq!(warnings.len(), 1, "once, not per request: {warnings:?}");
    assert!(
        warnings[0].contains("127.0.0.1"),
        "names the peer: {}",
        warnings[0]
    );
    assert!(
        !logs.contains("203.0.113.7") && !logs.contains("evil"),
        "the header's value is not logged: {logs}"
    );
}
