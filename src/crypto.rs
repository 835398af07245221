//! The one home of the service's cryptography: encryption of tokens at rest, hashing (object
//! and backup digests, stored hashes of secret values), the keyed MACs every signature, form
//! token and signed cookie goes through, constant-time comparison, and random tokens.

use std::io::Read;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// `bytes` random bytes from the operating system, URL-safe base64 without padding: session
/// ids, nonces, confirmation codes, correlation ids, generated development secrets.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A fresh random AES-256 key (`TOKEN_ENCRYPTION_KEY` for a development run without one).
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

/// Lower-case hex SHA-256 of `bytes` (object digests, stored hashes of secret values).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of bytes that arrive in pieces (an object spooled or streamed): the same digest
/// `sha256_hex` gives for all of them at once.
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    pub fn new() -> Sha256Stream {
        Sha256Stream::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Lower-case hex, as `sha256_hex`.
    pub fn hex(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Length and lower-case hex SHA-256 of everything `reader` yields, read in 1 MiB chunks so
/// memory stays flat whatever the size (a catalogue object, a database backup).
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<(u64, String)> {
    let mut hash = Sha256Stream::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hash.hex()))
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

/// HMAC-SHA256 as lower-case hex (Shopify's OAuth query signature, form tokens, signed
/// cookies).
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    hex::encode(hmac_sha256(key, msg))
}

/// HMAC-SHA256 as standard base64 (Shopify's and the testkit's webhook signature).
pub fn hmac_sha256_base64(key: &[u8], msg: &[u8]) -> String {
    STANDARD.encode(hmac_sha256(key, msg))
}

/// Constant-time check of a standard-base64 HMAC-SHA256 tag (surrounding spaces ignored);
/// a tag that is not base64 fails.
pub fn verify_hmac_sha256_base64(key: &[u8], msg: &[u8], tag: &str) -> bool {
    match STANDARD.decode(tag.trim()) {
        Ok(tag) => verify_hmac_sha256(key, msg, &tag),
        Err(_) => false,
    }
}

/// Whether two secrets (tokens, form tokens, MACs as text) are equal, in time that does not
/// depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
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
        assert_eq!(hmac_sha256_hex(b"k", b"msg"), hex::encode(&tag));
        let b64 = hmac_sha256_base64(b"k", b"msg");
        assert!(verify_hmac_sha256_base64(b"k", b"msg", &format!(" {b64} ")));
        assert!(!verify_hmac_sha256_base64(b"k", b"msg2", &b64));
        assert!(!verify_hmac_sha256_base64(b"k", b"msg", "not base64!"));
    }

    #[test]
    fn streamed_and_whole_digests_agree() {
        // RFC 6234's "abc".
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        let mut s = Sha256Stream::new();
        s.update(b"a");
        s.update(b"bc");
        assert_eq!(s.hex(), abc);
        let big = vec![7u8; (1 << 20) + 3];
        assert_eq!(
            sha256_reader(&big[..]).unwrap(),
            (big.len() as u64, sha256_hex(&big))
        );
    }

    #[test]
    fn tokens_and_comparisons() {
        let t = random_token(12);
        assert_eq!(t.len(), 16, "12 bytes are 16 base64 characters");
        assert_ne!(t, random_token(12));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }
}
