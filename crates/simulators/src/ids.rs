//! Identifiers shared by both fakes: deterministic hashes for generated data, random tokens.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// FNV-1a: a stable hash (unlike `std`'s, which is seeded per process), so that generated
/// data and orders are the same in every run.
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// `n` random ASCII letters and digits.
pub(crate) fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}
