//! SQLite: one file per store, opened with the pragmas every connection needs and migrated
//! to the latest schema (`migrations/<store>/`); `Db` runs a store's blocking SQLite calls
//! off the async runtime.
//!
//! SQL texts shared with PostgreSQL use its `$1, $2, …` placeholders. SQLite reads `$1` as a
//! *named* parameter and numbers named parameters by first appearance, so a text that uses
//! `$2` before `$1` would bind values to the wrong places if bound by position: `numbered`
//! binds each value to its name instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::StoreError;

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
    // PostgreSQL's "C" collation (byte order), so SQL shared with PostgreSQL can sort text the
    // same way on both (SQLite's own BINARY is byte order too, under another name).
    conn.create_collation("C", |a: &str, b: &str| a.cmp(b))?;
    Ok(())
}

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

/// Placeholder names `$1` … `$32`, for `numbered`.
const NAMES: [&str; 32] = [
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14", "$15",
    "$16", "$17", "$18", "$19", "$20", "$21", "$22", "$23", "$24", "$25", "$26", "$27", "$28",
    "$29", "$30", "$31", "$32",
];

/// The values of a statement written with `$1, $2, …` placeholders, each bound to its own
/// name (see the module comment): `stmt.execute(numbered(&[&a, &b]).as_slice())`.
pub fn numbered<'a>(values: &[&'a dyn ToSql]) -> Vec<(&'static str, &'a dyn ToSql)> {
    assert!(values.len() <= NAMES.len(), "more than 32 SQL parameters");
    NAMES.iter().copied().zip(values.iter().copied()).collect()
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
    fn numbered_placeholders_bind_by_name_whatever_their_order() {
        let c = Connection::open_in_memory().unwrap();
        configure(&c).unwrap();
        let (a, b): (i64, String) = c
            .prepare("SELECT $2 + 0, $1 || 'x'")
            .unwrap()
            .query_row(numbered(&[&"b", &40]).as_slice(), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((a, b.as_str()), (40, "bx"));
    }

    #[test]
    fn c_collation_compares_bytes_as_on_postgresql() {
        let c = Connection::open_in_memory().unwrap();
        configure(&c).unwrap();
        let v: Vec<String> = c
            .prepare(
                r#"SELECT x FROM (SELECT 'b' AS x UNION SELECT 'B' UNION SELECT 'a')
                   ORDER BY x COLLATE "C""#,
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(v, ["B", "a", "b"]);
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
