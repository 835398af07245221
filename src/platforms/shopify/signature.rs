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
    use super::*;

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
}
