use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn healthz_readyz_and_index_answer() {
    let app = spawn_app(&[]).await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);

    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["object_store"], "ok");

    let r = app.get("/").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["storage"], "local");
    assert_eq!(body["integrations"]["shopify"]["configured"], false);
    assert_eq!(body["integrations"]["facebook"]["configured"], false);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn index_reports_configuration_without_secrets() {
    let s3 = start_s3().await;
    let mut extra = s3.vars();
    extra.extend(vars(&[
        ("SHOPIFY_API_KEY", "shopify-key"),
        ("SHOPIFY_API_SECRET", "shopify-secret-do-not-leak"),
    ]));
    let app = spawn_app(&extra).await;
    let text = app.get("/").await.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["storage"], "s3");
    assert_eq!(body["integrations"]["shopify"]["configured"], true);
    for secret in [
        "shopify-secret-do-not-leak",
        S3_SECRET,
        STATE_SECRET,
        ENCRYPTION_KEY_B64,
    ] {
        assert!(!text.contains(secret), "secret in / answer");
    }
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_when_the_object_store_is_unreachable() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let extra = vars(&[
        ("SPACES_KEY", "k"),
        ("SPACES_SECRET", "s"),
        ("SPACES_BUCKET", "bucket"),
        ("SPACES_ENDPOINT", &format!("http://{addr}")),
    ]);
    let app = spawn_app(&extra).await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["object_store"], "failed");
    assert_eq!(body["checks"]["tokens_db"], "ok");
    app.stop().await.unwrap();
}

/// How long the service reuses a ready answer (`routes::health::READY_CACHED_FOR`).
const READY_CACHED_FOR: Duration = Duration::from_secs(3);

#[tokio::test]
async fn readyz_reuses_its_answer_instead_of_asking_the_bucket_each_time() {
    let s3 = start_s3().await;
    let app = spawn_app(&s3.vars()).await;
    let heads = || s3.counters.head.load(std::sync::atomic::Ordering::SeqCst);
    let before = heads();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(app.get("/readyz").await.status(), 200);
    }
    let elapsed = started.elapsed();
    // One HeadBucket, plus one per window that passed meanwhile (a slow machine may take
    // longer than one window for the ten requests); asked each time, it would be ten.
    let windows = (elapsed.as_secs_f64() / READY_CACHED_FOR.as_secs_f64()).floor() as usize;
    let asked = heads() - before;
    assert!(
        asked <= 1 + windows && asked < 10,
        "{asked} HeadBucket requests for 10 /readyz in {elapsed:?}"
    );
    // An outage is reported once the answer has expired, and a recovery just as soon.
    s3.set_down(true);
    eventually("readyz reports the outage", || async {
        app.get("/readyz").await.status() == 503
    })
    .await;
    s3.set_down(false);
    eventually("readyz reports the recovery", || async {
        app.get("/readyz").await.status() == 200
    })
    .await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unconfigured_integration_answers_503_naming_the_variables() {
    let app = spawn_app(&[]).await;
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("SHOPIFY_API_KEY") && msg.contains("SHOPIFY_API_SECRET"),
        "{msg}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let extra = vars(&[
        ("SHOPIFY_API_KEY", "k"),
        ("SHOPIFY_API_SECRET", "s"),
        ("MAX_BODY_BYTES", "1024"),
    ]);
    let app = spawn_app(&extra).await;
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Hmac-Sha256", "x")
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = spawn_app(&vars(&[
        ("SHOPIFY_API_KEY", "k"),
        ("SHOPIFY_API_SECRET", "s"),
    ]))
    .await;
    // Start a slow upload (body trickles in), then ask the server to stop: the request
    // already being served must still get its answer.
    let url = app.url("/shopify/webhook");
    let client = app.client.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let req = tokio::spawn(async move {
        client
            .post(url)
            .header("X-Shopify-Hmac-Sha256", "AAAA")
            .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
            .send()
            .await
    });
    tx.send(Ok(b"{".to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.shutdown.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tx.send(Ok(b"}".to_vec())).await.unwrap();
    drop(tx);
    let r = req.await.unwrap().expect("in-flight request answered");
    assert_eq!(r.status(), 401, "answered (bad signature), not dropped");
    app.handle.await.unwrap().unwrap();
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_format() {
    let app = spawn_app(&vars(&[
        ("SHOPIFY_API_KEY", "k"),
        ("SHOPIFY_API_SECRET", "metrics-secret"),
    ]))
    .await;
    let body = br#"{"id":1}"#;
    let good = sign_b64(b"metrics-secret", body);
    for sig in [good.as_str(), "AAAA"] {
        app.client
            .post(app.url("/shopify/webhook"))
            .header("X-Shopify-Topic", "products/update")
            .header("X-Shopify-Shop-Domain", "metrics.myshopify.com")
            .header("X-Shopify-Hmac-Sha256", sig)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
    }
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for needle in [
        "webhooks_received_total{source=\"shopify\"}",
        "webhooks_rejected_total{source=\"shopify\",reason=\"bad_signature\"}",
        "queue_depth{status=\"pending\"}",
        "queue_oldest_pending_age_seconds",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("metrics-secret"));
    app.stop().await.unwrap();
}
