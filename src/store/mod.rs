//! The stores: tokens (merchants, shops, Facebook users, pages), sessions (browser sessions,
//! OAuth states), events (the durable webhook inbox / job queue), the Shopify catalogue cache
//! and scheduler ticks. Each runs on SQLite (a file of its own, so it can be backed up,
//! restored and sized on its own; `sqlite`) or on the shared PostgreSQL database (`postgres`).

pub mod catalog;
pub mod copy;
pub mod events;
pub mod ledger;
pub mod postgres;
pub mod sessions;
pub mod sqlite;
mod text_enum;
pub mod ticks;
pub mod tokens;

use std::path::PathBuf;

pub use events::EventStore;
pub use sessions::SessionStore;
pub use sqlite::{configure, open_connection, Db, DbKind};
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
    Postgres(#[from] sqlx::Error),
    #[error("PostgreSQL migration failed: {0}")]
    PgMigration(#[from] sqlx::migrate::MigrateError),
    /// A stored value that no longer parses (an unknown status, a malformed UUID): an error,
    /// never silently a default.
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    /// The running job no longer holds its queue lease: it must not write (see `fence`).
    #[error(transparent)]
    LeaseLost(#[from] crate::fence::LeaseLost),
}

impl From<UnknownValue> for StoreError {
    fn from(e: UnknownValue) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Where a store's rows live: its SQLite file, or the shared PostgreSQL database. Every store
/// has both; the rest of the code never knows which one runs.
#[derive(Clone)]
pub enum Backend {
    Sqlite(Db),
    Postgres(postgres::PgDb),
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
