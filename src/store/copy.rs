//! `salesbot-sync copy-to-postgres`: every SQLite store copied into an empty PostgreSQL
//! database, row for row (the schemas match; see `migrations/postgres/0001_init.sql`), then
//! verified by counting. Tokens are copied as stored — still encrypted with
//! `TOKEN_ENCRYPTION_KEY`, which the PostgreSQL install keeps using. Events that were running
//! when the SQLite server stopped are copied as pending (no process holds them any more).

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use sqlx::{Postgres, QueryBuilder, Row};

use super::postgres::PgDb;
use super::{open_connection, DbKind, StoreError};
use crate::config::Settings;

/// (SQLite database, SQLite table, PostgreSQL table), parents before children.
const TABLES: &[(DbKind, &str, &str)] = &[
    (DbKind::Tokens, "merchants", "merchants"),
    (DbKind::Tokens, "shops", "shops"),
    (DbKind::Tokens, "facebook_users", "facebook_users"),
    (DbKind::Tokens, "pages", "pages"),
    (DbKind::Tokens, "data_deletions", "data_deletions"),
    (
        DbKind::Tokens,
        "conversation_watermarks",
        "conversation_watermarks",
    ),
    (DbKind::Tokens, "page_moves", "page_moves"),
    (DbKind::Sessions, "sessions", "sessions"),
    (DbKind::Sessions, "oauth_states", "oauth_states"),
    (DbKind::Events, "events", "events"),
    (DbKind::Events, "runs", "runs"),
    (DbKind::Events, "tracked_syncs", "tracked_syncs"),
    (DbKind::Catalog, "shops", "catalog_shops"),
    (DbKind::Catalog, "entities", "entities"),
    (DbKind::Catalog, "inventory_items", "inventory_items"),
    (DbKind::Catalog, "staged_products", "staged_products"),
    (DbKind::Catalog, "staged_variants", "staged_variants"),
    (DbKind::Catalog, "staged_children", "staged_children"),
];

/// Tables whose ids PostgreSQL assigns: their identity continues after the copied ids.
const IDENTITIES: &[&str] = &["events", "runs", "page_moves"];

/// Rows per INSERT (PostgreSQL allows 65,535 binds per statement).
const BATCH: usize = 500;

/// What was copied, per PostgreSQL table.
#[derive(Debug, Default)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
}

impl CopyReport {
    pub fn summary(&self) -> String {
        let total: u64 = self.tables.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = self
            .tables
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        format!(
            "copied {total} rows into PostgreSQL and verified the counts: {}",
            parts.join(", ")
        )
    }
}

fn path_of(settings: &Settings, kind: DbKind) -> &Path {
    match kind {
        DbKind::Tokens => &settings.token_db_path,
        DbKind::Sessions => &settings.session_db_path,
        DbKind::Events => &settings.events_db_path,
        DbKind::Catalog => &settings.catalog_db_path,
    }
}

/// PostgreSQL column name → type name, in table order.
async fn pg_columns(db: &PgDb, table: &str) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn count(db: &PgDb, table: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db.pool())
        .await?;
    Ok(n as u64)
}

/// Every row of a SQLite table, with the columns the PostgreSQL table has (the schemas
/// match; this keeps a missing optional column an error of the copy rather than a panic).
async fn read_sqlite(
    path: std::path::PathBuf,
    kind: DbKind,
    table: &str,
    columns: &[(String, String)],
) -> Result<Vec<Vec<SqlValue>>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {table}",
        columns
            .iter()
            .map(|(c, _)| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    tokio::task::spawn_blocking(move || {
        let conn = open_connection(&path, kind)?;
        let mut st = conn.prepare(&sql)?;
        let n = st.column_count();
        let rows = st
            .query_map([], |r| (0..n).map(|i| r.get::<_, SqlValue>(i)).collect())?
            .collect::<Result<Vec<Vec<SqlValue>>, _>>()?;
        Ok::<_, StoreError>(rows)
    })
    .await
    .map_err(|_| StoreError::Closed)?
}

/// One multi-row INSERT of copied rows, each value bound as its PostgreSQL column's type.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    to: &str,
    columns: &[(String, String)],
    chunk: &[Vec<SqlValue>],
) -> Result<(), StoreError> {
    let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("INSERT INTO {to} ({}) ", names.join(", ")));
    q.push_values(chunk, |mut b, row| {
        for ((name, ty), v) in columns.iter().zip(row) {
            // Work a stopped server was doing belongs to nobody now.
            let v = match (to, name.as_str(), v) {
                ("events", "status", SqlValue::Text(s)) if s == "running" => {
                    SqlValue::Text("pending".into())
                }
                ("events", "locked_by" | "locked_until", _) => SqlValue::Null,
                _ => v.clone(),
            };
            match (ty.as_str(), v) {
                ("bigint" | "integer", SqlValue::Integer(i)) => b.push_bind(i),
                ("bigint" | "integer", SqlValue::Null) => b.push_bind(None::<i64>),
                ("bytea", SqlValue::Blob(x)) => b.push_bind(x),
                ("bytea", SqlValue::Text(x)) => b.push_bind(x.into_bytes()),
                ("bytea", SqlValue::Null) => b.push_bind(None::<Vec<u8>>),
                (_, SqlValue::Text(x)) => b.push_bind(x),
                (_, SqlValue::Integer(i)) => b.push_bind(i.to_string()),
                (_, SqlValue::Real(f)) => b.push_bind(f.to_string()),
                (_, SqlValue::Blob(x)) => b.push_bind(String::from_utf8_lossy(&x).into_owned()),
                (_, SqlValue::Null) => b.push_bind(None::<String>),
            };
        }
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Copies every store; refuses (before writing anything) when the database is not empty.
pub async fn copy_to_postgres(settings: &Settings, db: &PgDb) -> anyhow::Result<CopyReport> {
    for (_, _, table) in TABLES {
        if count(db, table).await? > 0 {
            anyhow::bail!(
                "the PostgreSQL database is not empty ({table} has rows): copy into a new, empty database"
            );
        }
    }
    let mut report = CopyReport::default();
    let mut tx = db.pool().begin().await?;
    for (kind, from, to) in TABLES {
        let path = path_of(settings, *kind).to_path_buf();
        if !path.exists() {
            report.tables.push((to, 0));
            continue;
        }
        let columns = pg_columns(db, to).await?;
        let rows = read_sqlite(path, *kind, from, &columns).await?;
        let copied = rows.len() as u64;
        for chunk in rows.chunks(BATCH) {
            insert_rows(&mut tx, to, &columns, chunk).await?;
        }
        report.tables.push((to, copied));
    }
    for table in IDENTITIES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // Verified after the commit, by counting what the database now holds.
    for (table, copied) in &report.tables {
        let now = count(db, table).await?;
        if now != *copied {
            anyhow::bail!("{table}: copied {copied} rows but the database holds {now}");
        }
    }
    Ok(report)
}
