//! Browser sessions (the `session_id` cookie) and issued OAuth states, in `sessions.db` or the
//! shared PostgreSQL database. Only SHA-256 hashes of the secret values are stored, on both
//! backends: the values are hashed here, before either backend sees them.
//!
//! `SessionStore` holds what is the same on both (hashing, lifetimes, parsing); `SessionDb` is
//! the seam, implemented once per backend (`sqlite`, `postgres`) over the shared SQL (`sql`).

mod postgres;
mod sql;
mod sqlite;

use crate::ids::MerchantId;
use std::sync::Arc;

use async_trait::async_trait;

use super::postgres::PgDb;
use super::{now_secs, Backend, Db, StoreError};

/// Sessions last 30 days; the cookie carries the same Max-Age.
pub const SESSION_TTL_SECS: i64 = 30 * 24 * 3600;

/// A session or an OAuth state as inserted: its hashed key, who it is for (a merchant UUID or
/// a provider name) and its lifetime.
pub(super) struct NewRow {
    key: String,
    owner: String,
    created_at: i64,
    expires_at: i64,
}

/// What each backend does for the session store; values arrive hashed.
#[async_trait]
trait SessionDb: Send + Sync {
    async fn ping(&self) -> Result<(), StoreError>;
    /// Inserts a session, then deletes the expired ones.
    async fn insert_session(&self, row: NewRow) -> Result<(), StoreError>;
    /// The merchant (as stored) of a session unexpired at `now`.
    async fn session_merchant(
        &self,
        id_hash: String,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
    /// Deletes one session: true when it existed.
    async fn delete_session(&self, id_hash: String) -> Result<bool, StoreError>;
    async fn delete_merchant_sessions(&self, merchant: String) -> Result<usize, StoreError>;
    /// Inserts a state (an error when the nonce exists), then deletes the expired ones.
    async fn insert_state(&self, row: NewRow) -> Result<(), StoreError>;
    /// Deletes the state if it is unexpired at `now`: true when it did.
    async fn consume_state(
        &self,
        nonce_hash: String,
        provider: String,
        now: i64,
    ) -> Result<bool, StoreError>;
}

#[derive(Clone)]
pub struct SessionStore {
    db: Arc<dyn SessionDb>,
    backend: Backend,
}

fn hash(v: &str) -> String {
    crate::crypto::sha256_hex(v.as_bytes())
}

impl SessionStore {
    pub fn new(db: Db) -> Self {
        SessionStore {
            db: Arc::new(sqlite::SqliteSessions(db.clone())),
            backend: Backend::Sqlite(db),
        }
    }

    pub fn on_postgres(pg: PgDb) -> Self {
        SessionStore {
            db: Arc::new(postgres::PgSessions(pg.clone())),
            backend: Backend::Postgres(pg),
        }
    }

    /// The database the store was opened on (for tools and tests that read it directly).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    /// Creates a session for the merchant and returns its id (the cookie value).
    pub async fn create(&self, merchant: MerchantId) -> Result<String, StoreError> {
        let id = crate::crypto::random_token(32);
        let now = now_secs();
        let row = NewRow {
            key: hash(&id),
            owner: merchant.to_string(),
            created_at: now,
            expires_at: now + SESSION_TTL_SECS,
        };
        self.db.insert_session(row).await?;
        Ok(id)
    }

    /// The merchant of a live session, or `None` for an unknown or expired one.
    pub async fn merchant(&self, session_id: &str) -> Result<Option<MerchantId>, StoreError> {
        let m = self
            .db
            .session_merchant(hash(session_id), now_secs())
            .await?;
        Ok(m.and_then(|m| MerchantId::parse(&m).ok()))
    }

    /// Ends one session (the merchant signed out); true when it was live.
    pub async fn end(&self, session_id: &str) -> Result<bool, StoreError> {
        self.db.delete_session(hash(session_id)).await
    }

    /// Ends every session of the merchant (its data is gone, so whoever holds one of its
    /// cookies must not act for it any more); returns how many were ended.
    pub async fn revoke_merchant(&self, merchant: &MerchantId) -> Result<usize, StoreError> {
        self.db.delete_merchant_sessions(merchant.to_string()).await
    }

    pub async fn record_state(
        &self,
        nonce: &str,
        provider: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let row = NewRow {
            key: hash(nonce),
            owner: provider.to_string(),
            created_at: now_secs(),
            expires_at,
        };
        self.db.insert_state(row).await
    }

    /// Consumes a state: true exactly once for an issued, unexpired nonce of that provider.
    pub async fn consume_state(&self, nonce: &str, provider: &str) -> Result<bool, StoreError> {
        self.db
            .consume_state(hash(nonce), provider.to_string(), now_secs())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbKind;
    use rusqlite::params;

    /// The store on each available backend: SQLite always (with the directory its file lives
    /// in), PostgreSQL when `TEST_DATABASE_URL` is set.
    async fn stores() -> Vec<(SessionStore, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), DbKind::Sessions).unwrap();
        let mut out = vec![(SessionStore::new(db), Some(dir))];
        if let Some(pg) = crate::store::postgres::test_db().await {
            out.push((SessionStore::on_postgres(pg), None));
        }
        out
    }

    #[tokio::test]
    async fn sessions_resolve_and_unknown_ids_do_not() {
        for (s, dir) in stores().await {
            let m = MerchantId::random();
            let id = s.create(m).await.unwrap();
            assert_eq!(s.merchant(&id).await.unwrap(), Some(m));
            assert_eq!(s.merchant("nope").await.unwrap(), None);
            s.ping().await.unwrap();
            // The raw id is not stored.
            match (s.backend(), dir) {
                (Backend::Sqlite(_), Some(dir)) => {
                    let raw = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
                    assert!(!raw.windows(id.len()).any(|w| w == id.as_bytes()));
                }
                (Backend::Postgres(pg), _) => {
                    let stored: Vec<String> = sqlx::query_scalar("SELECT id_hash FROM sessions")
                        .fetch_all(pg.pool())
                        .await
                        .unwrap();
                    assert_eq!(stored, vec![hash(&id)]);
                    assert!(!stored.contains(&id));
                }
                _ => unreachable!("a SQLite store comes with its directory"),
            }
        }
    }

    #[tokio::test]
    async fn expired_sessions_do_not_resolve_and_are_cleaned_up() {
        for (s, _dir) in stores().await {
            let m = MerchantId::random();
            let id = s.create(m).await.unwrap();
            let h = hash(&id);
            let past = now_secs() - 1;
            match s.backend() {
                Backend::Sqlite(db) => db
                    .call(move |c| {
                        c.execute(
                            "UPDATE sessions SET expires_at = ?1 WHERE id_hash = ?2",
                            params![past, h],
                        )?;
                        Ok(())
                    })
                    .await
                    .unwrap(),
                Backend::Postgres(pg) => {
                    sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id_hash = $2")
                        .bind(past)
                        .bind(&h)
                        .execute(pg.pool())
                        .await
                        .unwrap();
                }
            }
            assert_eq!(s.merchant(&id).await.unwrap(), None);
            // The next session's creation removes the expired one.
            s.create(m).await.unwrap();
            assert_eq!(s.revoke_merchant(&m).await.unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn revoking_a_merchant_ends_only_its_sessions() {
        for (s, _dir) in stores().await {
            let (a, b) = (MerchantId::random(), MerchantId::random());
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
    }

    #[tokio::test]
    async fn states_are_single_use_and_expire() {
        for (s, _dir) in stores().await {
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
            // Recording the same nonce twice is refused on both backends.
            s.record_state("n3", "shopify", now_secs() + 600)
                .await
                .unwrap();
            assert!(s
                .record_state("n3", "shopify", now_secs() + 600)
                .await
                .is_err());
        }
    }

    /// Another instance on the same test database: a pool of its own, connected (and its
    /// migrations checked) the way the service connects.
    async fn second_instance(pg: &PgDb) -> PgDb {
        let name: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(pg.pool())
            .await
            .unwrap();
        let mut url = url::Url::parse(&std::env::var("TEST_DATABASE_URL").unwrap()).unwrap();
        url.set_path(&name);
        let settings = crate::config::DatabaseSettings {
            url: secrecy::SecretString::from(url.to_string()),
            max_connections: 8,
        };
        PgDb::connect(&settings).await.unwrap()
    }

    /// Two instances (two stores, two pools) on one database: of many concurrent consumptions
    /// of one state exactly one succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_states_are_single_use_across_instances() {
        let Some(pg) = crate::store::postgres::test_db().await else {
            return;
        };
        let a = SessionStore::on_postgres(pg.clone());
        let b = SessionStore::on_postgres(second_instance(&pg).await);
        for round in 0..20 {
            let nonce = format!("race-{round}");
            a.record_state(&nonce, "shopify", now_secs() + 600)
                .await
                .unwrap();
            let tries = (0..8).map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                let n = nonce.clone();
                tokio::spawn(async move { s.consume_state(&n, "shopify").await.unwrap() })
            });
            let won = futures::future::join_all(tries)
                .await
                .into_iter()
                .filter(|r| *r.as_ref().unwrap())
                .count();
            assert_eq!(won, 1, "round {round}");
        }
    }
}
