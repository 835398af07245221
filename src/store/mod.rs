//! SQLite stores: tokens (merchants, shops, Facebook users, pages), sessions (browser sessions,
//! OAuth states) and events (the durable webhook inbox / job queue). Each lives in its own file
//! so it can be backed up, restored and sized on its own.

pub mod catalog;
pub mod copy;
pub mod events;
pub mod pg;
pub mod sessions;
mod text_enum;
pub mod ticks;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

pub use events::EventStore;
pub use sessions::SessionStore;
pub(crate) use text_enum::text_enum;
pub use text_enum::UnknownValue;
pub use tokens::TokenStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("could not open database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("stored token could not be decrypted: {0}")]
    Cipher(#[from] crate::crypto::CipherError),
    #[error("database worker stopped")]
    Closed,
    #[error("PostgreSQL error: {0}")]
    Postgres(String),
}

/// Which database a file holds; selects its migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Tokens,
    Sessions,
    Events,
    /// The Shopify catalogue cache (not backed up).
    Catalog,
}

impl DbKind {
    pub fn name(self) -> &'static str {
        match self {
            DbKind::Tokens => "tokens",
            DbKind::Sessions => "sessions",
            DbKind::Events => "events",
            DbKind::Catalog => "catalog",
        }
    }

    pub fn migrations(self) -> Migrations<'static> {
        match self {
            DbKind::Tokens => Migrations::new(vec![
                M::up(include_str!("../../migrations/tokens/0001_init.sql")),
                M::up(include_str!("../../migrations/tokens/0002_deletions.sql")),
                M::up(include_str!(
                    "../../migrations/tokens/0003_page_grantor.sql"
                )),
                M::up(include_str!(
                    "../../migrations/tokens/0004_statuses_watermarks.sql"
                )),
                M::up(include_str!("../../migrations/tokens/0005_shop_ids.sql")),
                M::up(include_str!(
                    "../../migrations/tokens/0006_facebook_security.sql"
                )),
            ]),
            DbKind::Sessions => Migrations::new(vec![M::up(include_str!(
                "../../migrations/sessions/0001_init.sql"
            ))]),
            DbKind::Events => Migrations::new(vec![
                M::up(include_str!("../../migrations/events/0001_init.sql")),
                M::up(include_str!("../../migrations/events/0002_typed_jobs.sql")),
                M::up(include_str!("../../migrations/events/0003_progress.sql")),
            ]),
            DbKind::Catalog => Migrations::new(vec![M::up(include_str!(
                "../../migrations/catalog/0001_init.sql"
            ))]),
        }
    }
}

/// Opens a database file with the pragmas every connection needs and brings its schema up to
/// date. WAL lets readers (backups, the CLI) run beside the server's writer.
pub fn open_connection(path: &Path, kind: DbKind) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    configure(&conn)?;
    if kind == DbKind::Catalog {
        // The catalogue is written a few rows at a time and read in whole scans (which go
        // through a connection of their own): a big cache would only hold a shop's rows in
        // memory after a full sync. 8 MiB keeps the indexes hot.
        conn.pragma_update(None, "cache_size", -8_000)?;
    }
    kind.migrations().to_latest(&mut conn)?;
    Ok(conn)
}

pub fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed transaction survives power loss, which is what "acknowledged" promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 32 MiB page cache: the queue's hot pages stay in memory instead of being re-read.
    conn.pragma_update(None, "cache_size", -32_000)?;
    Ok(())
}

/// Where a store's rows live: its SQLite file, or the shared PostgreSQL database. Every store
/// has both; the rest of the code never knows which one runs.
#[derive(Clone)]
pub enum Backend {
    Sqlite(Db),
    Postgres(pg::PgDb),
}

impl Backend {
    /// The SQLite database, for SQLite-only tools (backup, restore, tests).
    pub fn sqlite(&self) -> Option<&Db> {
        match self {
            Backend::Sqlite(db) => Some(db),
            Backend::Postgres(_) => None,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Backend::Sqlite(db) => db.ping().await,
            Backend::Postgres(pg) => pg.ping().await,
        }
    }
}

/// In a store method: the SQLite `Db` to run the method's SQLite code on, or — on PostgreSQL —
/// return at once with the result of `$call` (the method's PostgreSQL version).
#[allow(unused_macros)] // until every store has its PostgreSQL version
macro_rules! sqlite_or {
    ($backend:expr, $pg:ident => $call:expr) => {
        match $backend {
            $crate::store::Backend::Sqlite(db) => db,
            $crate::store::Backend::Postgres($pg) => return $call.await,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use sqlite_or;

/// One connection behind a mutex, used from async code through `spawn_blocking`. The token and
/// session stores see a handful of writes per OAuth flow, far below what one connection serves.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

impl Db {
    pub fn open(path: &Path, kind: DbKind) -> Result<Db, StoreError> {
        let conn = open_connection(path, kind)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn call<F, R>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still fine.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Synchronous access for the CLI and tests.
    pub fn blocking<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        for kind in [
            DbKind::Tokens,
            DbKind::Sessions,
            DbKind::Events,
            DbKind::Catalog,
        ] {
            kind.migrations().validate().unwrap();
        }
    }

    #[test]
    fn open_twice_is_idempotent_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/t.db");
        drop(open_connection(&p, DbKind::Tokens).unwrap());
        let c = open_connection(&p, DbKind::Tokens).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
