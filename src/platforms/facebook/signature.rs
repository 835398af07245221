//! Meta's signatures: `X-Hub-Signature-256` (and the legacy sha1 `X-Hub-Signature`) over the
//! raw request bytes, and the `signed_request` of the data deletion callback.

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::crypto::{hmac_sha256_hex, verify_hmac_sha1, verify_hmac_sha256};

#[derive(Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    Missing,
    Invalid,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// sha256 when present; the legacy sha1 header only when it is the only one.
pub fn verify_webhook(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> SignatureCheck {
    if let Some(v) = header(headers, "x-hub-signature-256") {
        return match v.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) {
            Some(tag) if verify_hmac_sha256(secret, body, &tag) => SignatureCheck::Valid,
            _ => SignatureCheck::Invalid,
        };
    }
    if let Some(v) = header(headers, "x-hub-signature") {
        return match v.strip_prefix("sha1=").and_then(|h| hex::decode(h).ok()) {
            Some(tag) if verify_hmac_sha1(secret, body, &tag) => SignatureCheck::Valid,
            _ => SignatureCheck::Invalid,
        };
    }
    SignatureCheck::Missing
}

/// `sha256=<lowercase hex>` for our own self-test deliveries.
pub fn sign_webhook(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret, body))
}

/// Verifies a `signed_request` (`base64url(sig).base64url(payload)`, HMAC-SHA256 of the
/// payload part with the app secret) and returns the payload.
pub fn parse_signed_request(secret: &[u8], signed: &str) -> Option<Value> {
    let (sig, payload) = signed.trim().split_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')).ok()?;
    if !verify_hmac_sha256(secret, payload.as_bytes(), &sig) {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let alg = v.get("algorithm").and_then(Value::as_str).unwrap_or("");
    alg.eq_ignore_ascii_case("HMAC-SHA256").then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hmac_sha256;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn sha256_preferred_sha1_only_alone() {
        let body = br#"{"object":"page","entry":[{"messaging":[{"message":{"text":"h\u00e4"}}]}]}"#;
        let good256 = sign_webhook(b"s", body);
        let good1 = format!("sha1={}", {
            use hmac::Mac;
            let mut m = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(b"s").unwrap();
            m.update(body);
            hex::encode(m.finalize().into_bytes())
        });
        assert_eq!(
            verify_webhook(
                b"s",
                &headers(&[("x-hub-signature-256", good256.clone())]),
                body
            ),
            SignatureCheck::Valid
        );
        assert_eq!(
            verify_webhook(b"s", &headers(&[("x-hub-signature", good1.clone())]), body),
            SignatureCheck::Valid
        );
        // A bad sha256 is not rescued by a good sha1.
        assert_eq!(
            verify_webhook(
                b"s",
                &headers(&[
                    ("x-hub-signature-256", "sha256=00".into()),
                    ("x-hub-signature", good1)
                ]),
                body
            ),
            SignatureCheck::Invalid
        );
        assert_eq!(
            verify_webhook(b"s", &HeaderMap::new(), body),
            SignatureCheck::Missing
        );
        // Re-serialised JSON (unescaped ä) does not verify: only the raw bytes do.
        let reserialised =
            serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
        assert_ne!(reserialised, body.to_vec());
        assert_eq!(
            verify_webhook(
                b"s",
                &headers(&[("x-hub-signature-256", good256)]),
                &reserialised
            ),
            SignatureCheck::Invalid
        );
    }

    #[test]
    fn signed_request_round_trip() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"algorithm":"HMAC-SHA256","issued_at":1,"user_id":"123"}"#);
        let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(b"secret", payload.as_bytes()));
        let v = parse_signed_request(b"secret", &format!("{sig}.{payload}")).unwrap();
        assert_eq!(v["user_id"], "123");
        assert!(parse_signed_request(b"other", &format!("{sig}.{payload}")).is_none());
        assert!(parse_signed_request(b"secret", "garbage").is_none());
    }
}
