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
pub const INSTANCES_LOCK: i64 = 0x5a1e_5b07_0001;

/// First key of the advisory lock each running instance holds alone, the second being
/// `hashtext(<instance id>)`: PostgreSQL releases it when the instance's session ends (the
/// process died, or lost the database), so the reaper takes a dead instance's leases over at
/// once instead of waiting for them to run out (`events::postgres::queue::reclaim_expired`).
pub const INSTANCE_ALIVE_CLASS: i32 = 0x5a1e_5b08;

/// Takes this instance's own lock (see `INSTANCE_ALIVE_CLASS`) on `conn`, without waiting:
/// `false` when another session holds that key (two instance ids with one hash, about one
/// chance in four billion; that instance's leases then only end by running out).
async fn hold_alive_lock(
    conn: &mut sqlx::PgConnection,
    instance: &str,
) -> Result<bool, StoreError> {
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(INSTANCE_ALIVE_CLASS)
        .bind(instance)
        .fetch_one(&mut *conn)
        .await?;
    if !got {
        tracing::warn!(instance, "this instance's liveness lock is held by another session; its leases will only end by running out");
    }
    Ok(got)
}

/// How often a running instance checks that it still holds the instances lock: a session
/// lock ends with its session, so a database restart (or a killed backend) frees it silently,
/// and an offline command would then run beside this instance.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(3);
/// Longest wait for a connection or the liveness check before counting it as lost.
const LOCK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Held for as long as the process serves, or an offline command runs; dropping it releases
/// the lock (its connection is closed, never returned to the pool holding the session lock).
pub struct InstanceGuard {
    /// An offline command's exclusive lock: a pooled connection kept out of the pool.
    _conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    /// A running instance's shared lock: the watchdog owns its connection.
    watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        // Ending the watchdog drops its connection, which ends the session and its lock.
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
    }
}

impl PgDb {
    /// Marks this process as a running instance until the guard is dropped (or the process
    /// dies: the lock goes with its connection). The lock is held on a connection of its own,
    /// outside the pool, and a watchdog takes it again when that connection is lost.
    pub async fn running_instance(&self, instance: &str) -> Result<InstanceGuard, StoreError> {
        let options = self.pool.connect_options();
        let mut conn = lock_connection(&options).await?;
        // Waits while an offline command holds the lock exclusively: a server does not start
        // in the middle of a key rotation.
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(INSTANCES_LOCK)
            .execute(&mut conn)
            .await?;
        hold_alive_lock(&mut conn, instance).await?;
        let watch = LockWatch {
            options,
            instance: instance.to_string(),
            conn: Some(conn),
            reported: false,
        };
        Ok(InstanceGuard {
            _conn: None,
            watchdog: Some(tokio::spawn(watch.run())),
        })
    }

    /// For commands that must run with no instance serving: `None` while one is.
    pub async fn no_instance_running(&self) -> Result<Option<InstanceGuard>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.close_on_drop();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(INSTANCES_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(InstanceGuard {
            _conn: Some(conn),
            watchdog: None,
        }))
    }
}

async fn lock_connection(options: &PgConnectOptions) -> Result<sqlx::PgConnection, StoreError> {
    use sqlx::Connection as _;
    tokio::time::timeout(
        LOCK_CONNECT_TIMEOUT,
        sqlx::PgConnection::connect_with(options),
    )
    .await
    .map_err(|_| StoreError::Postgres(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())))?
    .map_err(StoreError::Postgres)
}

/// A running instance's shared lock, checked every [`LOCK_CHECK_EVERY`].
struct LockWatch {
    options: std::sync::Arc<PgConnectOptions>,
    /// Whose liveness lock the connection holds too.
    instance: String,
    /// The connection holding the lock; `None` while it is not held.
    conn: Option<sqlx::PgConnection>,
    /// Whether this loss was logged already (one line per loss, not one per check).
    reported: bool,
}

impl LockWatch {
    async fn run(mut self) {
        loop {
            tokio::time::sleep(LOCK_CHECK_EVERY).await;
            if let Some(conn) = self.conn.as_mut() {
                let check = sqlx::query("SELECT 1").execute(&mut *conn);
                if let Ok(Ok(_)) = tokio::time::timeout(LOCK_CONNECT_TIMEOUT, check).await {
                    continue;
                }
                // Its session is gone (or unusable): so is the lock.
                self.conn = None;
            }
            self.retake().await;
        }
    }

    /// Connects again and takes the shared lock back, without waiting: while an offline
    /// command holds it exclusively, that command is running beside this instance.
    async fn retake(&mut self) {
        let attempt = async {
            let mut conn = lock_connection(&self.options).await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1)")
                .bind(INSTANCES_LOCK)
                .fetch_one(&mut conn)
                .await?;
            if got {
                hold_alive_lock(&mut conn, &self.instance).await?;
            }
            Ok::<_, StoreError>(got.then_some(conn))
        };
        match attempt.await {
            Ok(Some(conn)) => {
                tracing::warn!("the instances lock was lost with its database connection (a database restart?); reconnected and took it again");
                self.conn = Some(conn);
                self.reported = false;
            }
            Ok(None) if !self.reported => {
                tracing::error!("the instances lock was lost and another process (rotate-key?) now holds it exclusively while this instance runs; retrying");
                self.reported = true;
            }
            Err(e) if !self.reported => {
                tracing::warn!(error = %e, "the instances lock was lost with its database connection; retrying");
                self.reported = true;
            }
            Ok(None) | Err(_) => {}
        }
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
        let a = db.running_instance("a").await.unwrap();
        let b = db.running_instance("b").await.unwrap();
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
