//! Shopify's two signatures: the webhook HMAC (base64 over the raw body) and the OAuth
//! callback HMAC (hex over the sorted query string without `hmac`).

use crate::crypto::{
    hmac_sha256_base64, hmac_sha256_hex, verify_hmac_sha256, verify_hmac_sha256_base64,
};

/// `X-Shopify-Hmac-Sha256`: base64 HMAC-SHA256 of the raw request body.
pub fn verify_webhook(secret: &[u8], body: &[u8], header: &str) -> bool {
    verify_hmac_sha256_base64(secret, body, header)
}

pub fn sign_webhook(secret: &[u8], body: &[u8]) -> String {
    hmac_sha256_base64(secret, body)
}

/// The message Shopify signs for an OAuth redirect: every query parameter except `hmac`
/// (and the legacy `signature`), sorted by name, joined as `k=v&k=v`, values as received
/// after URL-decoding.
pub fn oauth_message(params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Checks the `hmac` query parameter (hex) of an OAuth callback in constant time.
pub fn verify_oauth_query(secret: &[u8], params: &[(String, String)]) -> bool {
    let Some(hmac_hex) = params.iter().find(|(k, _)| k == "hmac").map(|(_, v)| v) else {
        return false;
    };
    let Ok(tag) = hex::decode(hmac_hex) else {
        return false;
    };
    verify_hmac_sha256(secret, oauth_message(params).as_bytes(), &tag)
}

pub fn sign_oauth_query(secret: &[u8], params: &[(String, String)]) -> String {
    hmac_sha256_hex(secret, oauth_message(params).as_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::Router;
    use salesbot_simulators::shopify::{FakeConfig, FakeShopify};

    use super::*;

    const SHOP: &str = "acme.myshopify.com";

    /// Shopify's published vectors (shared/test-vectors/vectors.json), copied here so unit
    /// tests run without the shared folder; the integration tests read the file itself.
    #[test]
    fn shopify_webhook_vector() {
        let secret = b"test_secret_key";
        let body = br#"{"foo": "bar"}"#;
        assert!(verify_webhook(
            secret,
            body,
            "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
        ));
        assert!(!verify_webhook(
            secret,
            br#"{"foo":"bar"}"#,
            "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
        ));
        assert!(!verify_webhook(
            b"other",
            body,
            "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
        ));
        assert!(!verify_webhook(secret, body, "not base64!"));
    }

    #[test]
    fn shopify_oauth_vector() {
        let mut params = vec![
            ("shop".to_string(), "some-shop.myshopify.com".to_string()),
            (
                "code".to_string(),
                "a94a110d86d2452eb3e2af4cfb8a3828".to_string(),
            ),
            ("timestamp".to_string(), "1337178173".to_string()),
        ];
        assert_eq!(
            oauth_message(&params),
            "code=a94a110d86d2452eb3e2af4cfb8a3828&shop=some-shop.myshopify.com&timestamp=1337178173"
        );
        params.push((
            "hmac".to_string(),
            "2cb1a277650a659f1b11e92a4a64275b128e037f2c3390e3c8fd2d8721dac9e2".to_string(),
        ));
        assert!(verify_oauth_query(b"hush", &params));
        params[0].1 = "evil.myshopify.com".into();
        assert!(!verify_oauth_query(b"hush", &params));
    }

    /// The simulated Shopify signs with its own code (`salesbot_simulators::signing`, written
    /// from Shopify's documentation); what it sends must verify here, as Shopify's does.
    #[tokio::test]
    async fn simulator_webhooks_verify() {
        type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/hooks",
                post(
                    |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                        seen.lock().unwrap().push((headers, body));
                        StatusCode::OK
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let fake = FakeShopify::start(FakeConfig::default()).await;
        fake.preload_subscription(SHOP, "PRODUCTS_UPDATE", &uri);
        let body = fake.product_webhook_body(SHOP, 0);
        assert_eq!(fake.emit_webhook(SHOP, "products/update", &body).await, 1);
        let (headers, raw) = seen.lock().unwrap().pop().unwrap();
        let hmac = headers["x-shopify-hmac-sha256"].to_str().unwrap();
        let secret = fake.config().api_secret;
        assert!(verify_webhook(secret.as_bytes(), &raw, hmac));
        assert!(!verify_webhook(b"another secret", &raw, hmac));
    }

    /// The install screen's link back to the app carries an `hmac` the callback accepts.
    #[tokio::test]
    async fn simulator_install_redirect_verifies() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let c = fake.config();
        let mut authorize =
            url::Url::parse(&format!("{}/{SHOP}/admin/oauth/authorize", fake.base_url())).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("client_id", &c.api_key)
            .append_pair("scope", &c.scopes)
            .append_pair("redirect_uri", "https://app.example.com/shopify/callback")
            .append_pair("state", "a-state");
        let page = reqwest::get(authorize).await.unwrap().text().await.unwrap();
        let href = page
            .split("id=\"install\" href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no install link in {page}"))
            .replace("&amp;", "&");
        let mut params: Vec<(String, String)> = url::Url::parse(&href)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert!(params.iter().any(|(k, v)| k == "state" && v == "a-state"));
        assert!(verify_oauth_query(c.api_secret.as_bytes(), &params));
        params.retain(|(k, _)| k != "state");
        assert!(!verify_oauth_query(c.api_secret.as_bytes(), &params));
    }
}
