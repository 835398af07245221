//! Queue groups, poll runs and first-sync progress on PostgreSQL (`groups.rs`, `runs.rs`,
//! `progress.rs` on SQLite).

use std::collections::HashSet;

use sqlx::Row;

use super::super::groups::usable_prefix;
use super::super::progress::Tracked;
use super::super::types::parse_result;
use super::super::{EventId, Outcome, RunId, RunKind, RunRecord, RunTrigger};
use super::{outcome_row, text, OUTCOME_COLUMNS};
use crate::store::postgres::{pg, PgDb};
use crate::store::{now_millis, StoreError};

// --- groups -------------------------------------------------------------------------------

/// `group_key` is one of `$1` or starts with one of `$2`. `starts_with` instead of LIKE: no
/// character of a prefix is a wildcard, and no collation decides what a prefix is. Prefixes
/// SQLite's range cannot express select nothing here either.
const IN_GROUPS: &str =
    "(group_key = ANY($1) OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS p(prefix)
                                     WHERE starts_with(group_key, p.prefix)))";

fn usable(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| usable_prefix(p)).collect()
}

pub(in super::super) async fn open_groups(
    db: &PgDb,
    kinds: Vec<&'static str>,
) -> Result<HashSet<String>, StoreError> {
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT group_key FROM events
         WHERE status IN ('pending', 'running') AND kind = ANY($1)",
    )
    .bind(&kinds)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    Ok(groups.into_iter().collect())
}

pub(in super::super) async fn running_of_kind(
    db: &PgDb,
    kind: &'static str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE status = 'running' AND kind = $1")
        .bind(kind)
        .fetch_one(db.pool())
        .await
        .map_err(pg)
}

pub(in super::super) async fn running_in_groups(
    db: &PgDb,
    exact: Vec<String>,
    prefixes: Vec<String>,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM events WHERE status = 'running' AND {IN_GROUPS}"
    )))
    .bind(&exact)
    .bind(usable(prefixes))
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}

pub(in super::super) async fn purge_groups(
    db: &PgDb,
    exact: Vec<String>,
    prefixes: Vec<String>,
) -> Result<usize, StoreError> {
    let n = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM events WHERE status != 'running' AND {IN_GROUPS}"
    )))
    .bind(&exact)
    .bind(usable(prefixes))
    .execute(db.pool())
    .await
    .map_err(pg)?
    .rows_affected();
    Ok(n as usize)
}

pub(in super::super) async fn unfinished_payloads(
    db: &PgDb,
    kind: &'static str,
) -> Result<Vec<(EventId, Vec<u8>)>, StoreError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, payload FROM events
         WHERE kind = $1 AND status IN ('pending', 'failed', 'dead')",
    )
    .bind(kind)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    Ok(rows.into_iter().map(|(id, p)| (EventId(id), p)).collect())
}

pub(in super::super) async fn rewrite_payload(
    db: &PgDb,
    id: EventId,
    payload: Option<Vec<u8>>,
) -> Result<bool, StoreError> {
    let q = match payload {
        Some(p) => {
            sqlx::query("UPDATE events SET payload = $1 WHERE id = $2 AND status != 'running'")
                .bind(p)
                .bind(id.0)
        }
        None => sqlx::query("DELETE FROM events WHERE id = $1 AND status != 'running'").bind(id.0),
    };
    let n = q.execute(db.pool()).await.map_err(pg)?.rows_affected();
    Ok(n == 1)
}

// --- runs ---------------------------------------------------------------------------------

pub(in super::super) async fn create_run(
    db: &PgDb,
    kind: RunKind,
    trigger: RunTrigger,
) -> Result<RunId, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO runs (kind, trigger, started_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(trigger.as_str())
    .bind(now_millis())
    .fetch_one(db.pool())
    .await
    .map_err(pg)?;
    Ok(RunId(id))
}

pub(in super::super) async fn run_jobs(db: &PgDb, run: RunId) -> Result<Vec<Outcome>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTCOME_COLUMNS} FROM events WHERE run_id = $1 ORDER BY id"
    )))
    .bind(run.0)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.iter().map(outcome_row).collect()
}

pub(in super::super) async fn run_open_jobs(db: &PgDb, run: RunId) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE run_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(run.0)
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}

pub(in super::super) async fn finish_run(
    db: &PgDb,
    run: RunId,
    summary: String,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE runs SET finished_at = $1, summary = $2 WHERE id = $3 AND finished_at IS NULL",
    )
    .bind(now_millis())
    .bind(summary)
    .bind(run.0)
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(in super::super) async fn runs(
    db: &PgDb,
    unfinished_only: bool,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, trigger, started_at, finished_at, summary FROM runs
         WHERE finished_at IS NULL OR NOT $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(unfinished_only)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.iter()
        .map(|r| {
            Ok(RunRecord {
                id: RunId(r.try_get(0).map_err(pg)?),
                kind: text(r.try_get::<&str, _>(1).map_err(pg)?)?,
                trigger: text(r.try_get::<&str, _>(2).map_err(pg)?)?,
                started_at: r.try_get(3).map_err(pg)?,
                finished_at: r.try_get(4).map_err(pg)?,
                summary: parse_result(r.try_get(5).map_err(pg)?),
            })
        })
        .collect()
}

// --- first-sync progress ------------------------------------------------------------------

pub(in super::super) async fn track(
    db: &PgDb,
    target: String,
    event: EventId,
    run: Option<RunId>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tracked_syncs (target, event_id, run_id, done, total, started_at, updated_at)
         VALUES ($1, $2, $3, 0, NULL, $4, $4)
         ON CONFLICT (target) DO UPDATE SET event_id = $2, run_id = $3, done = 0,
             total = NULL, started_at = $4, updated_at = $4
         WHERE tracked_syncs.event_id != $2",
    )
    .bind(target)
    .bind(event.0)
    .bind(run.map(|r| r.0))
    .bind(now_millis())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(in super::super) async fn report_progress(
    db: &PgDb,
    event: EventId,
    done: i64,
    total: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tracked_syncs SET done = $2, total = COALESCE($3, total), updated_at = $4
         WHERE event_id = $1",
    )
    .bind(event.0)
    .bind(done)
    .bind(total)
    .bind(now_millis())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(in super::super) async fn tracked(
    db: &PgDb,
    target: &str,
) -> Result<Option<Tracked>, StoreError> {
    let row = sqlx::query(
        "SELECT target, event_id, run_id, done, total, started_at, updated_at
         FROM tracked_syncs WHERE target = $1",
    )
    .bind(target)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    row.map(|r| {
        Ok(Tracked {
            target: r.try_get(0).map_err(pg)?,
            event_id: EventId(r.try_get(1).map_err(pg)?),
            run_id: r.try_get::<Option<i64>, _>(2).map_err(pg)?.map(RunId),
            done: r.try_get(3).map_err(pg)?,
            total: r.try_get(4).map_err(pg)?,
            started_at: r.try_get(5).map_err(pg)?,
            updated_at: r.try_get(6).map_err(pg)?,
        })
    })
    .transpose()
}

pub(in super::super) async fn untrack(db: &PgDb, target: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM tracked_syncs WHERE target = $1")
        .bind(target)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(())
}

pub(in super::super) async fn run_group_progress(
    db: &PgDb,
    run: RunId,
    group_prefix: &str,
) -> Result<(i64, i64), StoreError> {
    // starts_with: the prefix without LIKE's wildcards or the collation's idea of order (the
    // SQLite code's byte range selects the same rows).
    sqlx::query_as(
        "SELECT COALESCE(SUM(CASE WHEN status NOT IN ('pending', 'running') THEN 1 ELSE 0 END),
                         0)::bigint,
                COUNT(*)
         FROM events WHERE run_id = $1 AND starts_with(group_key, $2)",
    )
    .bind(run.0)
    .bind(group_prefix)
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}
