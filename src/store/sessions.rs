//! Browser sessions (the `session_id` cookie) and issued OAuth states. Only SHA-256 hashes of
//! the secret values are stored.

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{now_secs, Db, StoreError};

/// Sessions last 30 days; the cookie carries the same Max-Age.
pub const SESSION_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct SessionStore {
    db: Db,
}

fn hash(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

impl SessionStore {
    pub fn new(db: Db) -> Self {
        SessionStore { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates a session for the merchant and returns its id (the cookie value).
    pub async fn create(&self, merchant: Uuid) -> Result<String, StoreError> {
        let id = crate::config::random_token(32);
        let h = hash(&id);
        self.db
            .call(move |c| {
                let now = now_secs();
                c.execute(
                    "INSERT INTO sessions (id_hash, merchant_uuid, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![h, merchant.to_string(), now, now + SESSION_TTL_SECS],
                )?;
                // Opportunistic clean-up keeps the table small without a separate job.
                c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
                Ok(())
            })
            .await?;
        Ok(id)
    }

    /// The merchant of a live session, or `None` for an unknown or expired one.
    pub async fn merchant(&self, session_id: &str) -> Result<Option<Uuid>, StoreError> {
        let h = hash(session_id);
        let m: Option<String> = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT merchant_uuid FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                    params![h, now_secs()],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        Ok(m.and_then(|m| Uuid::parse_str(&m).ok()))
    }

    /// Ends every session of the merchant (its data is gone, so whoever holds one of its
    /// cookies must not act for it any more); returns how many were ended.
    pub async fn revoke_merchant(&self, merchant: &Uuid) -> Result<usize, StoreError> {
        let m = merchant.to_string();
        self.db
            .call(move |c| Ok(c.execute("DELETE FROM sessions WHERE merchant_uuid = ?1", [m])?))
            .await
    }

    pub async fn record_state(
        &self,
        nonce: &str,
        provider: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (n, p) = (hash(nonce), provider.to_string());
        self.db
            .call(move |c| {
                let now = now_secs();
                c.execute(
                    "INSERT INTO oauth_states (nonce, provider, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![n, p, now, expires_at],
                )?;
                c.execute("DELETE FROM oauth_states WHERE expires_at <= ?1", [now])?;
                Ok(())
            })
            .await
    }

    /// Consumes a state: true exactly once for an issued, unexpired nonce of that provider.
    pub async fn consume_state(&self, nonce: &str, provider: &str) -> Result<bool, StoreError> {
        let (n, p) = (hash(nonce), provider.to_string());
        self.db
            .call(move |c| {
                Ok(c.execute(
                    "DELETE FROM oauth_states WHERE nonce = ?1 AND provider = ?2 AND expires_at > ?3",
                    params![n, p, now_secs()],
                )? == 1)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbKind;

    #[tokio::test]
    async fn sessions_resolve_and_unknown_ids_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = SessionStore::new(Db::open(&dir.path().join("s.db"), DbKind::Sessions).unwrap());
        let m = Uuid::new_v4();
        let id = s.create(m).await.unwrap();
        assert_eq!(s.merchant(&id).await.unwrap(), Some(m));
        assert_eq!(s.merchant("nope").await.unwrap(), None);
        // The raw id is not stored.
        let raw = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
        assert!(!raw.windows(id.len()).any(|w| w == id.as_bytes()));
    }

    #[tokio::test]
    async fn revoking_a_merchant_ends_only_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let s = SessionStore::new(Db::open(&dir.path().join("s.db"), DbKind::Sessions).unwrap());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (a1, a2, b1) = (
            s.create(a).await.unwrap(),
            s.create(a).await.unwrap(),
            s.create(b).await.unwrap(),
        );
        assert_eq!(s.revoke_merchant(&a).await.unwrap(), 2);
        assert_eq!(s.merchant(&a1).await.unwrap(), None);
        assert_eq!(s.merchant(&a2).await.unwrap(), None);
        assert_eq!(s.merchant(&b1).await.unwrap(), Some(b));
        assert_eq!(s.revoke_merchant(&a).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn states_are_single_use_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = SessionStore::new(Db::open(&dir.path().join("s.db"), DbKind::Sessions).unwrap());
        s.record_state("n1", "shopify", now_secs() + 600)
            .await
            .unwrap();
        assert!(!s.consume_state("n1", "facebook").await.unwrap());
        assert!(s.consume_state("n1", "shopify").await.unwrap());
        assert!(!s.consume_state("n1", "shopify").await.unwrap());
        s.record_state("n2", "shopify", now_secs() - 1)
            .await
            .unwrap();
        assert!(!s.consume_state("n2", "shopify").await.unwrap());
    }
}
