//! PostgreSQL, when `DATABASE_URL` is set: every store in one database, shared by every
//! instance of the service. One pool; the schema is `migrations/postgres/`, applied at start
//! (sqlx's migrator takes an advisory lock, so instances starting together migrate once).

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::StoreError;
use crate::config::DatabaseSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The pool every PostgreSQL store shares.
#[derive(Clone, Debug)]
pub struct PgDb {
    pool: PgPool,
}

impl PgDb {
    /// Connects and brings the schema up to date.
    pub async fn connect(settings: &DatabaseSettings) -> Result<PgDb, StoreError> {
        let options: PgConnectOptions = settings
            .url
            .expose_secret()
            .parse()
            .map_err(StoreError::Postgres)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name("salesbot-sync"))
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgDb { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Advisory lock key every running instance holds shared, and offline commands (rotate-key)
/// take exclusive: "no instance is running" across every machine on the database.
const INSTANCES_LOCK: i64 = 0x5a1e_5b07_0001;

/// Held for as long as the process serves (a pooled connection kept out of the pool, closed
/// when the guard drops: back in the pool it would keep holding the session lock).
pub struct InstanceGuard {
    _conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl PgDb {
    /// Marks this process as a running instance until the guard is dropped (or the process
    /// dies: the lock goes with its connection).
    pub async fn running_instance(&self) -> Result<InstanceGuard, StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(INSTANCES_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(InstanceGuard { _conn: conn })
    }

    /// For commands that must run with no instance serving: `None` while one is.
    pub async fn no_instance_running(&self) -> Result<Option<InstanceGuard>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(INSTANCES_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(InstanceGuard { _conn: conn }))
    }
}

/// Test support: a fresh, empty database on the server `TEST_DATABASE_URL` names (each test
/// its own, so tests run in parallel), migrated. `None` when the variable is unset: the
/// PostgreSQL variants of the tests run only where a server is configured (CI always).
pub async fn test_db() -> Option<PgDb> {
    let base = std::env::var("TEST_DATABASE_URL").ok()?;
    let name = format!("salesbot_test_{}", uuid::Uuid::new_v4().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("TEST_DATABASE_URL does not connect: {e}"));
    // The name is ours (a UUID's hex digits): nothing outside goes into the statement.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("CREATE DATABASE for a test");
    admin.close().await;
    let mut url = url::Url::parse(&base).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    let settings = DatabaseSettings {
        url: secrecy::SecretString::from(url.to_string()),
        max_connections: 8,
    };
    Some(
        PgDb::connect(&settings)
            .await
            .expect("test database migrates"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_test_database_has_every_table() {
        let Some(db) = test_db().await else { return };
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
        for t in [
            "shops",
            "pages",
            "sessions",
            "events",
            "runs",
            "entities",
            "catalog_shops",
        ] {
            assert!(names.contains(&t), "{t} in {names:?}");
        }
        db.ping().await.unwrap();
    }

    #[tokio::test]
    async fn offline_commands_see_running_instances_on_any_machine() {
        let Some(db) = test_db().await else { return };
        let free = db.no_instance_running().await.unwrap();
        assert!(free.is_some(), "nothing runs yet");
        drop(free);
        let a = db.running_instance().await.unwrap();
        let b = db.running_instance().await.unwrap();
        assert!(db.no_instance_running().await.unwrap().is_none());
        drop(a);
        assert!(
            db.no_instance_running().await.unwrap().is_none(),
            "b still runs"
        );
        drop(b);
        // The guards' connections were closed, not returned to the pool holding the lock.
        // (The server notices a closed connection at once; allow it a moment.)
        let mut free = None;
        for _ in 0..50 {
            free = db.no_instance_running().await.unwrap();
            if free.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(free.is_some());
    }
}
