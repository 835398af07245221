//! `POST /shopify/webhook`: signature, headers, durable dedupe, fast acknowledgement.

use crate::helpers::*;

const SECRET: &str = "test_secret_key";

async fn app() -> TestApp {
    spawn_app(&vars(&[
        ("SHOPIFY_API_KEY", "key"),
        ("SHOPIFY_API_SECRET", SECRET),
    ]))
    .await
}

fn post(app: &TestApp, body: &[u8]) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .body(body.to_vec())
}

#[tokio::test]
async fn published_vector_is_accepted_and_recorded() {
    let v = test_vectors();
    let vector = &v["shopify_webhook"][0];
    assert_eq!(vector["secret"], SECRET);
    let app = app().await;
    let body = vector["raw_body"].as_str().unwrap().as_bytes();
    let sig = vector["header_X-Shopify-Hmac-Sha256"].as_str().unwrap();
    let r = post(&app, body)
        .header("X-Shopify-Hmac-Sha256", sig)
        .header("X-Shopify-Event-Id", "evt-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json, serde_json::json!({"status": "success"}));
    let rows = app.state.events.rows().await.unwrap();
    assert_eq!(rows.len(), 1);
    // A content topic: keyed by its content (the event id header is not signed).
    assert!(
        rows[0].dedupe_key.starts_with("shopify:sha256:"),
        "{}",
        rows[0].dedupe_key
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn forged_or_missing_signatures_are_401_and_store_nothing() {
    let app = app().await;
    let body = br#"{"id":1}"#;
    let cases: Vec<Option<String>> = vec![
        None,
        Some(sign_b64(b"wrong-secret", body)),
        Some("not-base64!!".into()),
        Some(sign_b64(SECRET.as_bytes(), b"{\"id\":2}")),
    ];
    for sig in cases {
        let mut req = post(&app, body);
        if let Some(s) = &sig {
            req = req.header("X-Shopify-Hmac-Sha256", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{sig:?}");
    }
    // Compliance topics too.
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", "shop/redact")
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header("X-Shopify-Hmac-Sha256", sign_b64(b"nope", body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(app.state.events.rows().await.unwrap().is_empty());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn missing_headers_and_bad_shops_are_400() {
    let app = app().await;
    let body = br#"{"id":1}"#;
    let sig = sign_b64(SECRET.as_bytes(), body);
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header("X-Shopify-Hmac-Sha256", &sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Hmac-Sha256", &sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for shop in ["evil.com", "a.myshopify.com.evil.com", "../x"] {
        let r = app
            .client
            .post(app.url("/shopify/webhook"))
            .header("X-Shopify-Topic", "products/update")
            .header("X-Shopify-Shop-Domain", shop)
            .header("X-Shopify-Hmac-Sha256", &sig)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{shop}");
    }
    assert!(app.state.events.rows().await.unwrap().is_empty());
    app.stop().await.unwrap();
}

/// Posts `body` signed, as `topic`, with the given id headers; its status.
async fn post_ids(
    app: &TestApp,
    topic: &str,
    body: &[u8],
    event: Option<&str>,
    webhook: Option<&str>,
) -> u16 {
    let mut req = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header("X-Shopify-Hmac-Sha256", sign_b64(SECRET.as_bytes(), body))
        .body(body.to_vec());
    if let Some(e) = event {
        req = req.header("X-Shopify-Event-Id", e);
    }
    if let Some(w) = webhook {
        req = req.header("X-Shopify-Webhook-Id", w);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn dedupe_keys(app: &TestApp) -> Vec<String> {
    let mut keys: Vec<String> = app
        .state
        .events
        .rows()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.dedupe_key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn content_deliveries_are_deduplicated_by_their_body_whatever_ids_they_carry() {
    let app = app().await;
    let body = br#"{"id":1,"updated_at":"2026-12-07T10:00:00Z"}"#;
    // Shopify's redeliveries, and the same captured body re-sent under made-up ids.
    for (event, webhook) in [
        (Some("e-1"), Some("w-1")),
        (Some("e-1"), Some("w-1")),
        (None, Some("w-2")),
        (Some("forged-1"), None),
        (Some("forged-2"), Some("forged-w")),
    ] {
        assert_eq!(
            post_ids(&app, "products/update", body, event, webhook).await,
            200
        );
    }
    let keys = dedupe_keys(&app).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("shopify:sha256:"), "{keys:?}");
    // Another change of the product is another body; the same body as another topic too.
    let later = br#"{"id":1,"updated_at":"2026-12-07T10:00:05Z"}"#;
    assert_eq!(
        post_ids(&app, "products/update", later, Some("e-1"), None).await,
        200
    );
    assert_eq!(
        post_ids(&app, "products/create", body, Some("e-9"), None).await,
        200
    );
    assert_eq!(dedupe_keys(&app).await.len(), 3);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn lifecycle_redeliveries_are_deduplicated_by_event_id_then_webhook_id() {
    let app = app().await;
    let body = br#"{"shop_id":1,"shop_domain":"acme.myshopify.com","customer":{"id":1},"orders_to_redact":[2]}"#;
    for _ in 0..3 {
        let status = post_ids(&app, "customers/redact", body, Some("e-1"), Some("w-1")).await;
        assert_eq!(status, 200);
    }
    for _ in 0..2 {
        let status = post_ids(&app, "customers/redact", body, None, Some("w-2")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        dedupe_keys(&app).await,
        vec!["shopify:event:e-1", "shopify:webhook:w-2"]
    );
    app.stop().await.unwrap();
}
