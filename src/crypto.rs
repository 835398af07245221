//! Encryption of tokens at rest and the HMAC checks every signature goes through.

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Lower-case hex SHA-256 of `bytes` (object digests, stored hashes of secret values).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(bytes))
}

/// Version byte in front of every ciphertext so the format can change without guessing.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// AES-256-GCM with a random nonce per value. Stored form: `version || nonce || ciphertext+tag`.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: Aes256Gcm,
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("encrypted value is malformed")]
    Malformed,
    #[error("encrypted value could not be decrypted (wrong TOKEN_ENCRYPTION_KEY?)")]
    Decrypt,
}

impl TokenCipher {
    pub fn new(key: &[u8; 32]) -> Self {
        TokenCipher {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// `aad` binds the ciphertext to its row (e.g. the shop domain), so a value copied to
    /// another row does not decrypt.
    pub fn encrypt(&self, plaintext: &str, aad: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                aes_gcm::aead::Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, stored: &[u8], aad: &[u8]) -> Result<SecretString, CipherError> {
        if stored.len() < 1 + NONCE_LEN + 16 || stored[0] != FORMAT_V1 {
            return Err(CipherError::Malformed);
        }
        let nonce = Nonce::from_slice(&stored[1..1 + NONCE_LEN]);
        let pt = self
            .cipher
            .decrypt(
                nonce,
                aes_gcm::aead::Payload {
                    msg: &stored[1 + NONCE_LEN..],
                    aad,
                },
            )
            .map_err(|_| CipherError::Decrypt)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| CipherError::Malformed)
    }
}

pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time check of an HMAC-SHA256 tag.
pub fn verify_hmac_sha256(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// Constant-time check of an HMAC-SHA1 tag (Meta's legacy `X-Hub-Signature`).
pub fn verify_hmac_sha1(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

pub fn secret_bytes(s: &SecretString) -> &[u8] {
    s.expose_secret().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_random_nonce() {
        let c = TokenCipher::new(&[7u8; 32]);
        let a = c.encrypt("shpat_secret", b"acme.myshopify.com");
        let b = c.encrypt("shpat_secret", b"acme.myshopify.com");
        assert_ne!(a, b, "nonce must differ per value");
        assert_eq!(
            c.decrypt(&a, b"acme.myshopify.com")
                .unwrap()
                .expose_secret(),
            "shpat_secret"
        );
    }

    #[test]
    fn wrong_key_aad_or_tampering_fails() {
        let c = TokenCipher::new(&[7u8; 32]);
        let mut a = c.encrypt("tok", b"row1");
        assert!(c.decrypt(&a, b"row2").is_err());
        assert!(TokenCipher::new(&[8u8; 32]).decrypt(&a, b"row1").is_err());
        let last = a.len() - 1;
        a[last] ^= 1;
        assert!(c.decrypt(&a, b"row1").is_err());
        assert!(c.decrypt(&[1, 2, 3], b"row1").is_err());
    }

    #[test]
    fn hmac_checks() {
        let tag = hmac_sha256(b"k", b"msg");
        assert!(verify_hmac_sha256(b"k", b"msg", &tag));
        assert!(!verify_hmac_sha256(b"k", b"msg2", &tag));
        assert!(!verify_hmac_sha256(b"k", b"msg", &tag[..31]));
    }
}
