//! OAuth `state` tokens (SPEC §8): HMAC-SHA256 signed, expiring after 10 minutes, single use.
//!
//! Form: `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`. The signature
//! rejects forgeries without touching the database; the nonce, recorded at issue time and
//! deleted at use, makes each state single use.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::crypto::sha256_hex;
use crate::crypto::{hmac_sha256, verify_hmac_sha256};
use crate::ids::MerchantId;
use crate::store::{now_secs, SessionStore, StoreError};

pub const STATE_TTL_SECS: i64 = 600;

/// The platform a flow connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Shopify,
    Facebook,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Shopify => "shopify",
            Provider::Facebook => "facebook",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    #[serde(rename = "p")]
    pub provider: Provider,
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub merchant: Option<MerchantId>,
    /// The shop the flow was started for (Shopify), so a state cannot be used for another.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub shop: Option<String>,
    /// SHA-256 (hex) of the browser-binding cookie set at login: the callback must come from
    /// the browser that started the flow (no login CSRF, no pages granted into another
    /// merchant's account through a forwarded dialog link).
    #[serde(rename = "b")]
    pub binding: String,
    #[serde(rename = "i")]
    pub issued_at: i64,
    #[serde(rename = "e")]
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("invalid OAuth state")]
    Malformed,
    #[error("invalid OAuth state signature")]
    BadSignature,
    #[error("OAuth state expired; start the connection again")]
    Expired,
    #[error("OAuth state was issued for another flow")]
    WrongProvider,
    #[error("this connection was started in another browser; start it again here")]
    WrongBrowser,
    #[error("OAuth state already used; start the connection again")]
    Replayed,
    #[error("OAuth state could not be checked")]
    Store,
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "state store failed");
        StateError::Store
    }
}

#[derive(Clone)]
pub struct StateSigner {
    secret: SecretString,
    sessions: SessionStore,
}

impl StateSigner {
    pub fn new(secret: SecretString, sessions: SessionStore) -> Self {
        StateSigner { secret, sessions }
    }

    fn key(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }

    pub fn sign(&self, claims: &StateClaims) -> String {
        let body =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise to JSON"));
        let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(self.key(), body.as_bytes()));
        format!("{body}.{sig}")
    }

    /// Checks signature, provider and expiry at `now`, without consuming.
    pub fn verify_at(
        &self,
        token: &str,
        provider: Provider,
        now: i64,
    ) -> Result<StateClaims, StateError> {
        let (body, sig) = token.split_once('.').ok_or(StateError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| StateError::Malformed)?;
        if !verify_hmac_sha256(self.key(), body.as_bytes(), &sig) {
            return Err(StateError::BadSignature);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| StateError::Malformed)?;
        let claims: StateClaims =
            serde_json::from_slice(&raw).map_err(|_| StateError::Malformed)?;
        if claims.provider != provider {
            return Err(StateError::WrongProvider);
        }
        if now >= claims.expires_at {
            return Err(StateError::Expired);
        }
        Ok(claims)
    }

    /// Issues a state and records its nonce. Returns the state and the browser-binding value
    /// to set as a cookie.
    pub async fn issue(
        &self,
        provider: Provider,
        merchant: Option<MerchantId>,
        shop: Option<String>,
    ) -> Result<(String, String), StateError> {
        let now = now_secs();
        let browser = crate::crypto::random_token(16);
        let claims = StateClaims {
            provider,
            nonce: crate::crypto::random_token(16),
            merchant,
            shop,
            binding: sha256_hex(browser.as_bytes()),
            issued_at: now,
            expires_at: now + STATE_TTL_SECS,
        };
        self.sessions
            .record_state(&claims.nonce, provider.as_str(), claims.expires_at)
            .await?;
        Ok((self.sign(&claims), browser))
    }

    /// Verifies and consumes a state: succeeds once per issued state, from the browser that
    /// holds the binding cookie.
    pub async fn consume(
        &self,
        token: &str,
        provider: Provider,
        browser: Option<&str>,
    ) -> Result<StateClaims, StateError> {
        let claims = self.verify_at(token, provider, now_secs())?;
        let bound = browser.is_some_and(|b| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                sha256_hex(b.as_bytes()).as_bytes(),
                claims.binding.as_bytes(),
            ))
        });
        if !bound {
            return Err(StateError::WrongBrowser);
        }
        if !self
            .sessions
            .consume_state(&claims.nonce, provider.as_str())
            .await?
        {
            return Err(StateError::Replayed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, DbKind};

    fn signer(dir: &std::path::Path) -> StateSigner {
        let db = Db::open(&dir.join("s.db"), DbKind::Sessions).unwrap();
        StateSigner::new(SecretString::from("k".repeat(32)), SessionStore::new(db))
    }

    #[tokio::test]
    async fn round_trip_carries_the_merchant_and_is_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let m = MerchantId::random();
        let (t, b) = s.issue(Provider::Facebook, Some(m), None).await.unwrap();
        assert_eq!(
            s.consume(&t, Provider::Facebook, None).await,
            Err(StateError::WrongBrowser)
        );
        assert_eq!(
            s.consume(&t, Provider::Facebook, Some("other")).await,
            Err(StateError::WrongBrowser)
        );
        let c = s.consume(&t, Provider::Facebook, Some(&b)).await.unwrap();
        assert_eq!(c.merchant, Some(m));
        assert_eq!(
            s.consume(&t, Provider::Facebook, Some(&b)).await,
            Err(StateError::Replayed)
        );
    }

    #[tokio::test]
    async fn tampering_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let (t, b) = s
            .issue(Provider::Shopify, None, Some("a.myshopify.com".into()))
            .await
            .unwrap();
        let (body, sig) = t.split_once('.').unwrap();
        // Swap the claims for forged ones but keep the old signature.
        let mut claims: StateClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        claims.shop = Some("evil.myshopify.com".into());
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            s.consume(&format!("{forged_body}.{sig}"), Provider::Shopify, Some(&b))
                .await,
            Err(StateError::BadSignature)
        );
        // A state signed with another key.
        let other = StateSigner::new(SecretString::from("x".repeat(32)), s.sessions.clone());
        assert_eq!(
            s.consume(&other.sign(&claims), Provider::Shopify, Some(&b))
                .await,
            Err(StateError::BadSignature)
        );
        assert_eq!(
            s.consume("garbage", Provider::Shopify, Some(&b)).await,
            Err(StateError::Malformed)
        );
        assert_eq!(
            s.consume(&t, Provider::Facebook, Some(&b)).await,
            Err(StateError::WrongProvider)
        );
        // The untouched state still works once.
        assert!(s.consume(&t, Provider::Shopify, Some(&b)).await.is_ok());
    }

    #[tokio::test]
    async fn expired_states_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let (t, _) = s.issue(Provider::Shopify, None, None).await.unwrap();
        let now = now_secs();
        assert!(s
            .verify_at(&t, Provider::Shopify, now + STATE_TTL_SECS - 5)
            .is_ok());
        assert_eq!(
            s.verify_at(&t, Provider::Shopify, now + STATE_TTL_SECS + 1),
            Err(StateError::Expired)
        );
        // Signed but already past its expiry.
        let claims = StateClaims {
            provider: Provider::Shopify,
            nonce: "n".into(),
            merchant: None,
            shop: None,
            binding: sha256_hex(b"x"),
            issued_at: now - 700,
            expires_at: now - 100,
        };
        s.sessions
            .record_state("n", Provider::Shopify.as_str(), now + 600)
            .await
            .unwrap();
        assert_eq!(
            s.consume(&s.sign(&claims), Provider::Shopify, Some("x"))
                .await,
            Err(StateError::Expired)
        );
    }
}
