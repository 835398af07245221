//! Browser sessions (the `session_id` cookie) and issued OAuth states, in `sessions.db` or the
//! shared PostgreSQL database (the `postgres` module below). Only SHA-256 hashes of the secret
//! values are stored, on both backends: the values are hashed before either sees them.

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::pg::{pg as pg_err, PgDb};
use super::{now_secs, sqlite_or, Backend, Db, StoreError};

/// Sessions last 30 days; the cookie carries the same Max-Age.
pub const SESSION_TTL_SECS: i64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct SessionStore {
    backend: Backend,
}

fn hash(v: &str) -> String {
    hex::encode(Sha256::digest(v.as_bytes()))
}

impl SessionStore {
    pub fn new(db: Db) -> Self {
        SessionStore {
            backend: Backend::Sqlite(db),
        }
    }

    pub fn on_postgres(pg: PgDb) -> Self {
        SessionStore {
            backend: Backend::Postgres(pg),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    /// Creates a session for the merchant and returns its id (the cookie value).
    pub async fn create(&self, merchant: Uuid) -> Result<String, StoreError> {
        let id = crate::config::random_token(32);
        let h = hash(&id);
        let db = sqlite_or!(&self.backend, pg => async {
            postgres::create(pg, &h, merchant).await.map(|()| id)
        });
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::merchant(pg, &h));
        let m: Option<String> = db
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
        let db = sqlite_or!(&self.backend, pg => postgres::revoke_merchant(pg, &m));
        db.call(move |c| Ok(c.execute("DELETE FROM sessions WHERE merchant_uuid = ?1", [m])?))
            .await
    }

    pub async fn record_state(
        &self,
        nonce: &str,
        provider: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (n, p) = (hash(nonce), provider.to_string());
        let db = sqlite_or!(&self.backend, pg => postgres::record_state(pg, &n, &p, expires_at));
        db.call(move |c| {
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
        let db = sqlite_or!(&self.backend, pg => postgres::consume_state(pg, &n, &p));
        db.call(move |c| {
            Ok(c.execute(
                "DELETE FROM oauth_states WHERE nonce = ?1 AND provider = ?2 AND expires_at > ?3",
                params![n, p, now_secs()],
            )? == 1)
        })
        .await
    }
}

/// The PostgreSQL versions of the methods (the same statements; only hashes reach them).
mod postgres {
    use super::*;

    pub async fn create(pg: &PgDb, id_hash: &str, merchant: Uuid) -> Result<(), StoreError> {
        let now = now_secs();
        sqlx::query(
            "INSERT INTO sessions (id_hash, merchant_uuid, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(merchant.to_string())
        .bind(now)
        .bind(now + SESSION_TTL_SECS)
        .execute(pg.pool())
        .await
        .map_err(pg_err)?;
        // Opportunistic clean-up, as on SQLite (index `sessions_by_expiry`).
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(pg.pool())
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    pub async fn merchant(pg: &PgDb, id_hash: &str) -> Result<Option<Uuid>, StoreError> {
        let m: Option<String> = sqlx::query_scalar(
            "SELECT merchant_uuid FROM sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_secs())
        .fetch_optional(pg.pool())
        .await
        .map_err(pg_err)?;
        Ok(m.and_then(|m| Uuid::parse_str(&m).ok()))
    }

    pub async fn revoke_merchant(pg: &PgDb, merchant: &str) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM sessions WHERE merchant_uuid = $1")
            .bind(merchant)
            .execute(pg.pool())
            .await
            .map_err(pg_err)?;
        Ok(done.rows_affected() as usize)
    }

    pub async fn record_state(
        pg: &PgDb,
        nonce_hash: &str,
        provider: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let now = now_secs();
        sqlx::query(
            "INSERT INTO oauth_states (nonce, provider, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(nonce_hash)
        .bind(provider)
        .bind(now)
        .bind(expires_at)
        .execute(pg.pool())
        .await
        .map_err(pg_err)?;
        sqlx::query("DELETE FROM oauth_states WHERE expires_at <= $1")
            .bind(now)
            .execute(pg.pool())
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    /// One DELETE: when two instances consume the same state at once, the second waits on the
    /// first's row lock, finds the row gone and deletes nothing, so exactly one gets `true`.
    pub async fn consume_state(
        pg: &PgDb,
        nonce_hash: &str,
        provider: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM oauth_states WHERE nonce = $1 AND provider = $2 AND expires_at > $3",
        )
        .bind(nonce_hash)
        .bind(provider)
        .bind(now_secs())
        .execute(pg.pool())
        .await
        .map_err(pg_err)?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbKind;

    /// The store on each available backend: SQLite always (with the directory its file lives
    /// in), PostgreSQL when `TEST_DATABASE_URL` is set.
    async fn stores() -> Vec<(SessionStore, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), DbKind::Sessions).unwrap();
        let mut out = vec![(SessionStore::new(db), Some(dir))];
        if let Some(pg) = crate::store::pg::test_db().await {
            out.push((SessionStore::on_postgres(pg), None));
        }
        out
    }

    #[tokio::test]
    async fn sessions_resolve_and_unknown_ids_do_not() {
        for (s, dir) in stores().await {
            let m = Uuid::new_v4();
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
            let m = Uuid::new_v4();
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
        let Some(pg) = crate::store::pg::test_db().await else {
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
