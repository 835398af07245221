//! The platforms' signatures, written from their documentation. Nothing here calls the
//! service: the fakes sign with this module and the service verifies with its own code, so a
//! signing bug on either side makes the service's tests fail instead of cancelling out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 (RFC 2104 over SHA-256), the primitive of every signature below.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Shopify webhooks ("Verify webhooks"): the `X-Shopify-Hmac-Sha256` header is the base64 of
/// HMAC-SHA256 over the raw request body, keyed with the app's client secret.
pub fn shopify_webhook_hmac(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(secret.as_bytes(), body))
}

/// Shopify OAuth redirects ("Verify a request"): the `hmac` query parameter is the lowercase
/// hex of HMAC-SHA256, keyed with the client secret, over every other parameter (`hmac` and the
/// legacy `signature` left out) sorted by name and joined as `name=value` with `&`.
pub fn shopify_oauth_hmac(secret: &str, params: &[(String, String)]) -> String {
    let mut signed: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .collect();
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let message = signed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    hex::encode(hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

/// Meta webhooks ("Validate payloads"): `X-Hub-Signature-256` is `sha256=` followed by the
/// lowercase hex of HMAC-SHA256 over the raw body, keyed with the app secret.
pub fn meta_signature_256(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// Meta's `appsecret_proof` ("Secure requests"): the lowercase hex of HMAC-SHA256 over the
/// access token, keyed with the app secret.
pub fn meta_appsecret_proof(secret: &str, token: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: the primitive itself against the standard's arithmetic.
    #[test]
    fn hmac_sha256_rfc_4231_vector() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Shopify's published vectors (the project's shared/test-vectors/vectors.json), copied
    /// here so the crate's tests need nothing outside it. Webhook: Shopify/shopify-app-js
    /// `packages/apps/shopify-api/lib/webhooks/__tests__/validate.test.ts`.
    #[test]
    fn shopify_webhook_vector() {
        let body = br#"{"foo": "bar"}"#;
        assert_eq!(
            shopify_webhook_hmac("test_secret_key", body),
            "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
        );
        // The raw bytes are signed: the same JSON spelled differently signs differently.
        assert_ne!(
            shopify_webhook_hmac("test_secret_key", br#"{"foo":"bar"}"#),
            "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="
        );
    }

    /// OAuth: Shopify/shopify_python_api `test/session_test.py` (`test_hmac_calculation`).
    #[test]
    fn shopify_oauth_vector() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let expected = "2cb1a277650a659f1b11e92a4a64275b128e037f2c3390e3c8fd2d8721dac9e2";
        let signed = params(&[
            ("shop", "some-shop.myshopify.com"),
            ("code", "a94a110d86d2452eb3e2af4cfb8a3828"),
            ("timestamp", "1337178173"),
        ]);
        assert_eq!(shopify_oauth_hmac("hush", &signed), expected);
        // `hmac` and `signature` are not part of the message, whatever their place.
        let mut with_own = signed.clone();
        with_own.insert(0, ("hmac".into(), expected.into()));
        with_own.push(("signature".into(), "legacy".into()));
        assert_eq!(shopify_oauth_hmac("hush", &with_own), expected);
        assert_ne!(shopify_oauth_hmac("other", &signed), expected);
    }

    /// Meta publishes no vector; its rule is the same HMAC as RFC 4231's, spelled as hex.
    #[test]
    fn meta_signatures_are_hex_hmacs() {
        assert_eq!(
            meta_signature_256("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            meta_appsecret_proof("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
