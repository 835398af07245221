//! The queue on PostgreSQL, shared by every instance: the same semantics as the SQLite code in
//! the parent module (see its docs), made safe for several processes on one table.
//!
//! - A claim (one call of the `salesbot_claim` function, so its statements cost no round
//!   trips) locks rows with `FOR UPDATE SKIP LOCKED` and, before choosing a group's batch,
//!   takes `pg_try_advisory_xact_lock(hashtextextended(group_key, 0))`: checking that the
//!   group has nothing running and marking its batch running happen under that lock, so two
//!   instances never run two batches of one group at once. A group whose lock is taken is
//!   skipped, never waited for; a claim therefore never blocks.
//! - Inserts of one transaction go in dedupe-key order, so two transactions inserting
//!   overlapping keys wait on each other in the same order and cannot deadlock.
//! - Leases are the workers' heartbeats; an instance that dies stops renewing them and
//!   `reclaim_expired` (any instance) returns its events to the queue.
//! - Times are the instances' clocks, as on SQLite (run_at, leases): instances must keep their
//!   clocks in sync (NTP), which any host does.

mod listen;
mod more;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

pub use listen::{Listener, Notifier};
pub(super) use more::*;

use super::types::parse_result;
use super::{
    Claim, ClaimSpec, EnqueueError, Enqueued, Event, EventId, EventRow, EventStatus, NewEvent,
    Outcome, Pool, QueueStats, Record, RunId, Wakers,
};
use crate::store::postgres::{pg, PgDb};
use crate::store::{now_millis, StoreError, UnknownValue};

/// Candidate rows one look at the pool reads; distinct free groups among them are tried in
/// order (oldest ready head first).
const CANDIDATES: i32 = 64;
/// Looks per claim: each excludes the groups the previous ones found locked by a concurrent
/// claim, so a busy group's backlog never hides other groups' work.
const LOOKS: i32 = 4;
/// After losing a group to a concurrent claim, look again this soon: that claim may end up
/// not taking the group (its head was taken meanwhile), and no wake-up would say so.
const CONTENDED_RETRY_MS: i64 = 50;

// --- conversions --------------------------------------------------------------------------

/// A stored text enum; an unknown value is an error, never a default (as on SQLite).
pub(super) fn text<T: std::str::FromStr<Err = UnknownValue>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::from)
}

fn attempts(n: i32) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative attempt count {n}")))
}

/// The columns `outcome_row` reads, in order.
pub(super) const OUTCOME_COLUMNS: &str =
    "id, kind, group_key, status, attempts, last_error, result";

pub(super) fn outcome_row(r: &PgRow) -> Result<Outcome, StoreError> {
    Ok(Outcome {
        id: EventId(r.try_get(0).map_err(pg)?),
        kind: r.try_get(1).map_err(pg)?,
        group_key: r.try_get(2).map_err(pg)?,
        status: text(r.try_get::<&str, _>(3).map_err(pg)?)?,
        attempts: attempts(r.try_get(4).map_err(pg)?)?,
        last_error: r.try_get(5).map_err(pg)?,
        result: parse_result(r.try_get(6).map_err(pg)?),
    })
}

fn event_row(r: &PgRow) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        id: EventId(r.try_get(0).map_err(pg)?),
        kind: r.try_get(1).map_err(pg)?,
        dedupe_key: r.try_get(2).map_err(pg)?,
        group_key: r.try_get(3).map_err(pg)?,
        status: text(r.try_get::<&str, _>(4).map_err(pg)?)?,
        attempts: attempts(r.try_get(5).map_err(pg)?)?,
        last_error: r.try_get(6).map_err(pg)?,
        run_id: r.try_get::<Option<i64>, _>(7).map_err(pg)?.map(RunId),
    })
}

fn claimed_event(r: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(r.try_get(0).map_err(pg)?),
        kind: r.try_get(1).map_err(pg)?,
        dedupe_key: r.try_get(2).map_err(pg)?,
        group_key: r.try_get(3).map_err(pg)?,
        payload: r.try_get(4).map_err(pg)?,
        attempts: attempts(r.try_get(5).map_err(pg)?)?,
        received_at: r.try_get(6).map_err(pg)?,
        run_id: r.try_get::<Option<i64>, _>(7).map_err(pg)?.map(RunId),
    })
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// --- enqueue ------------------------------------------------------------------------------

/// Inserts `events` unless their dedupe keys exist; an existing failed or dead event is queued
/// again instead (as on SQLite). Returns the rows' ids in the callers' order, with the pools
/// that got new work. One statement for the whole list (then one read of the duplicates'
/// ids): a webhook's delivery and its messages cost one round trip, not two per event.
///
/// The rows go in dedupe-key order (see the module docs), and of two events with one key the
/// first asked for is the one inserted; the other is its duplicate.
async fn insert_all(
    conn: &mut PgConnection,
    events: &[NewEvent],
) -> Result<(Vec<Enqueued>, HashSet<Pool>), StoreError> {
    let now = now_millis();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        first_of.entry(ev.dedupe_key.as_str()).or_insert(i);
    }
    let mut ids: HashMap<&str, Enqueued> = HashMap::new();
    let mut todo: Vec<usize> = first_of.values().copied().collect();
    // Twice at most: a conflicting row can only vanish between the two statements if it was
    // pruned (finished long ago) in that instant; then the second insert goes through.
    for _ in 0..2 {
        if todo.is_empty() {
            break;
        }
        todo.sort_by(|a, b| events[*a].dedupe_key.cmp(&events[*b].dedupe_key));
        let col = |f: &dyn Fn(&NewEvent) -> String| -> Vec<String> {
            todo.iter().map(|i| f(&events[*i])).collect()
        };
        let keys = col(&|e| e.dedupe_key.clone());
        let inserted: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO events (kind, pool, dedupe_key, group_key, payload, status, attempts,
                                 run_at, received_at, run_id)
             SELECT n.kind, n.pool, n.dedupe_key, n.group_key, n.payload, 'pending', 0,
                    n.run_at, $8, n.run_id
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                         $6::bigint[], $7::bigint[])
                  WITH ORDINALITY AS n(kind, pool, dedupe_key, group_key, payload, run_at,
                                       run_id, ord)
             ORDER BY n.ord
             ON CONFLICT (dedupe_key) DO UPDATE SET status = 'pending', attempts = 0,
                payload = excluded.payload, run_at = excluded.run_at,
                received_at = excluded.received_at, run_id = excluded.run_id,
                finished_at = NULL, last_error = NULL, locked_by = NULL, locked_until = NULL,
                result = NULL
             WHERE events.status IN ('failed', 'dead')
             RETURNING id, dedupe_key",
        )
        .bind(col(&|e| e.kind.to_string()))
        .bind(col(&|e| e.pool.as_str().to_string()))
        .bind(&keys)
        .bind(col(&|e| e.group_key.clone()))
        .bind(
            todo.iter()
                .map(|i| events[*i].payload.as_slice())
                .collect::<Vec<&[u8]>>(),
        )
        .bind(
            todo.iter()
                .map(|i| events[*i].run_at.unwrap_or(now))
                .collect::<Vec<i64>>(),
        )
        .bind(
            todo.iter()
                .map(|i| events[*i].run_id.map(|r| r.0))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(pg)?;
        let mut missing: Vec<&str> = Vec::new();
        {
            let new: HashMap<String, i64> = inserted.into_iter().map(|(id, k)| (k, id)).collect();
            for i in &todo {
                let key = events[*i].dedupe_key.as_str();
                match new.get(key) {
                    Some(id) => {
                        ids.insert(key, Enqueued::Inserted(EventId(*id)));
                    }
                    None => missing.push(key),
                }
            }
        }
        if missing.is_empty() {
            todo.clear();
            break;
        }
        // A new statement sees the conflicting rows (committed, or this transaction's).
        let existing: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, dedupe_key FROM events WHERE dedupe_key = ANY($1)")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await
                .map_err(pg)?;
        for (id, key) in existing {
            if let Some(k) = missing.iter().find(|m| **m == key) {
                ids.insert(k, Enqueued::Duplicate(EventId(id)));
            }
        }
        todo.retain(|i| !ids.contains_key(events[*i].dedupe_key.as_str()));
    }
    if !todo.is_empty() {
        return Err(StoreError::Corrupt(
            "an event's dedupe key conflicted with a row that then vanished, twice".into(),
        ));
    }
    let mut pools = HashSet::new();
    let out = events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            let key = ev.dedupe_key.as_str();
            let got = ids[key];
            if first_of[key] != i {
                return Enqueued::Duplicate(got.id());
            }
            if matches!(got, Enqueued::Inserted(_)) {
                pools.insert(ev.pool);
            }
            got
        })
        .collect();
    Ok((out, pools))
}

/// After a commit: this instance's workers at once, the other instances' through the
/// notifier (coalesced, outside any transaction; see `listen`).
fn wake_local(wakers: &Wakers, pools: impl IntoIterator<Item = Pool>) {
    let pools: Vec<Pool> = pools.into_iter().collect();
    for p in &pools {
        wakers.wake(*p);
    }
    if let Some(n) = wakers.remote.get() {
        n.pools(pools);
    }
}

/// `enqueue` / `enqueue_together`: no transaction around it, because the insert is one
/// statement, atomic on its own (a second one only runs in the prune race `insert_all`
/// describes, for events whose keys the first found taken; if it fails, the caller's retry
/// finds the first ones as duplicates). Saves the BEGIN and COMMIT round trips on every
/// webhook. The pool timing out (every connection busy for its acquire timeout) is `Busy`, so
/// the intake answers 503 and the sender retries, as when the SQLite writer's queue is full.
pub(super) async fn enqueue_together(
    db: &PgDb,
    wakers: &Wakers,
    events: Vec<NewEvent>,
) -> Result<Vec<Enqueued>, EnqueueError> {
    let mut conn = db.pool().acquire().await.map_err(|e| match e {
        sqlx::Error::PoolTimedOut => EnqueueError::Busy,
        e => EnqueueError::Store(pg(e)),
    })?;
    let (out, pools) = insert_all(&mut conn, &events).await?;
    drop(conn);
    wake_local(wakers, pools);
    Ok(out)
}

pub(super) async fn enqueue_all(
    db: &PgDb,
    wakers: &Wakers,
    events: Vec<NewEvent>,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut conn = db.pool().acquire().await.map_err(pg)?;
    let (out, pools) = insert_all(&mut conn, &events).await?;
    drop(conn);
    wake_local(wakers, pools);
    Ok(out)
}

// --- claim --------------------------------------------------------------------------------

/// One call of `salesbot_claim` (migrations/postgres/0002_claim_function.sql): the candidate
/// groups, their advisory locks, the head and the batch in the server, in one round trip.
pub(super) async fn claim(
    db: &PgDb,
    worker: &str,
    spec: &ClaimSpec,
    lease: Duration,
) -> Result<Claim, StoreError> {
    let now = now_millis();
    let (kinds, maxes): (Vec<&str>, Vec<i32>) = spec
        .max_batch
        .iter()
        .map(|(k, n)| (*k, i32::try_from(*n).unwrap_or(i32::MAX)))
        .unzip();
    let rows = sqlx::query(
        "SELECT id, kind, dedupe_key, group_key, payload, attempts, received_at, run_id,
                next_run_at, contended
         FROM salesbot_claim($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(spec.pool.as_str())
    .bind(worker)
    .bind(now)
    .bind(now.saturating_add(ms(lease)))
    .bind(&kinds)
    .bind(&maxes)
    .bind(CANDIDATES)
    .bind(LOOKS)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    match rows.first() {
        Some(r) if r.try_get::<Option<i64>, _>(0).map_err(pg)?.is_none() => {
            let next: Option<i64> = r.try_get(8).map_err(pg)?;
            let contended: bool = r.try_get(9).map_err(pg)?;
            let mut next_run_at = next.filter(|t| *t > now);
            if contended {
                let soon = now + CONTENDED_RETRY_MS;
                next_run_at = Some(next_run_at.map_or(soon, |t| t.min(soon)));
            }
            Ok(Claim::Idle { next_run_at })
        }
        None => Err(StoreError::Corrupt("salesbot_claim returned no row".into())),
        Some(_) => {
            let mut events = rows
                .iter()
                .map(claimed_event)
                .collect::<Result<Vec<_>, _>>()?;
            events.sort_by_key(|e| e.id);
            Ok(Claim::Batch(events))
        }
    }
}

// --- outcomes and leases ------------------------------------------------------------------

pub(super) async fn record(
    db: &PgDb,
    wakers: &Wakers,
    worker: &str,
    rec: Record,
) -> Result<(), StoreError> {
    if rec.follow_ups.is_empty() && rec.retry.is_empty() && rec.given_up.is_empty() {
        return record_done(db, wakers, worker, &rec.done, rec.result.as_deref()).await;
    }
    let mut tx = db.pool().begin().await.map_err(pg)?;
    let now = now_millis();
    let done: Vec<i64> = rec.done.iter().map(|id| id.0).collect();
    let mut touched: HashSet<i64> = sqlx::query_scalar::<_, i64>(
        "UPDATE events SET status = 'done', finished_at = $1, locked_by = NULL,
                locked_until = NULL, last_error = NULL, payload = ''::bytea, result = $2
         WHERE id = ANY($3) AND status = 'running' AND locked_by = $4
         RETURNING id",
    )
    .bind(now)
    .bind(&rec.result)
    .bind(&done)
    .bind(worker)
    .fetch_all(&mut *tx)
    .await
    .map_err(pg)?
    .into_iter()
    .collect();
    // Follow-ups only when the parent really completed under this lease: after a lease was
    // taken over, the new holder produces them.
    let mut follow_pools = HashSet::new();
    if !touched.is_empty() && !rec.follow_ups.is_empty() {
        follow_pools = insert_all(&mut tx, &rec.follow_ups).await?.1;
    }
    let (ids, ats, reasons): (Vec<i64>, Vec<i64>, Vec<String>) = rec
        .retry
        .iter()
        .map(|(id, at, reason)| (id.0, *at, reason.clone()))
        .collect();
    // Each list in one statement (arrays unnested), skipped when empty: a round trip apiece.
    if !ids.is_empty() {
        let retried: Vec<i64> = sqlx::query_scalar(
            "UPDATE events e SET status = 'pending', run_at = r.at, last_error = r.reason,
                    locked_by = NULL, locked_until = NULL
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS r(id, at, reason)
             WHERE e.id = r.id AND e.status = 'running' AND e.locked_by = $4
             RETURNING e.id",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&reasons)
        .bind(worker)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        touched.extend(retried);
    }
    let mut gids = Vec::new();
    let mut statuses = Vec::new();
    let mut why = Vec::new();
    let mut forget = Vec::new();
    for (id, status, reason) in &rec.given_up {
        gids.push(id.0);
        statuses.push(status.as_str());
        why.push(reason.clone());
        forget.push(rec.forget_failed_payloads && *status == EventStatus::Failed);
    }
    if !gids.is_empty() {
        let given_up: Vec<i64> = sqlx::query_scalar(
            "UPDATE events e SET status = g.status, finished_at = $5, last_error = g.reason,
                    locked_by = NULL, locked_until = NULL,
                    payload = CASE WHEN g.forget THEN ''::bytea ELSE e.payload END
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[])
                  AS g(id, status, reason, forget)
             WHERE e.id = g.id AND e.status = 'running' AND e.locked_by = $6
             RETURNING e.id",
        )
        .bind(&gids)
        .bind(&statuses)
        .bind(&why)
        .bind(&forget)
        .bind(now)
        .bind(worker)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        touched.extend(given_up);
    }
    // The group is free again: wake the pools that have work waiting in it, on every
    // instance (another pool's worker would otherwise only notice on its idle poll).
    let mut pools: HashSet<Pool> = HashSet::new();
    if let Some(first) = rec
        .done
        .iter()
        .chain(rec.retry.iter().map(|r| &r.0))
        .chain(rec.given_up.iter().map(|g| &g.0))
        .find(|id| touched.contains(&id.0))
    {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT p.pool FROM events p
             WHERE p.status = 'pending'
               AND p.group_key = (SELECT group_key FROM events WHERE id = $1)",
        )
        .bind(first.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg)?;
        for n in names {
            pools.insert(text(&n)?);
        }
    }
    tx.commit().await.map_err(pg)?;
    wake_local(wakers, follow_pools.into_iter().chain(pools));
    wakers.finished.notify_waiters();
    if let Some(n) = wakers.remote.get() {
        n.finished();
    }
    Ok(())
}

/// The common outcome (a batch done, nothing to queue): one statement, so no transaction, that
/// marks the events done under this worker's lease and names the pools with work waiting in
/// their groups (the same as `record`'s last steps; the pending rows it reads are not the
/// ones it updates).
async fn record_done(
    db: &PgDb,
    wakers: &Wakers,
    worker: &str,
    done: &[EventId],
    result: Option<&str>,
) -> Result<(), StoreError> {
    let ids: Vec<i64> = done.iter().map(|id| id.0).collect();
    let names: Vec<String> = sqlx::query_scalar(
        "WITH d AS (
            UPDATE events SET status = 'done', finished_at = $1, locked_by = NULL,
                   locked_until = NULL, last_error = NULL, payload = ''::bytea, result = $2
            WHERE id = ANY($3) AND status = 'running' AND locked_by = $4
            RETURNING group_key)
         SELECT DISTINCT p.pool FROM events p
         WHERE p.status = 'pending' AND p.group_key IN (SELECT group_key FROM d)",
    )
    .bind(now_millis())
    .bind(result)
    .bind(&ids)
    .bind(worker)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    let pools = names
        .iter()
        .map(|n| text::<Pool>(n))
        .collect::<Result<Vec<_>, _>>()?;
    wake_local(wakers, pools);
    wakers.finished.notify_waiters();
    if let Some(n) = wakers.remote.get() {
        n.finished();
    }
    Ok(())
}

pub(super) async fn requeue_failed(db: &PgDb, wakers: &Wakers) -> Result<usize, StoreError> {
    let mut tx = db.pool().begin().await.map_err(pg)?;
    let now = now_millis();
    let n = sqlx::query(
        "UPDATE events SET status = 'pending', attempts = 0, run_at = $1, received_at = $1,
                finished_at = NULL, locked_by = NULL, locked_until = NULL
         WHERE status IN ('failed', 'dead')",
    )
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(pg)?
    .rows_affected();
    tx.commit().await.map_err(pg)?;
    wake_local(wakers, Pool::ALL.iter().copied());
    Ok(n as usize)
}

/// Events whose lease ran out back to `pending`. Rows locked right now (their holder is
/// recording an outcome or renewing the lease) are skipped, not waited for: they are not
/// abandoned, and the next sweep sees them if they are.
pub(super) async fn reclaim_expired(db: &PgDb) -> Result<usize, StoreError> {
    let n = sqlx::query(
        "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
         WHERE id IN (SELECT id FROM events WHERE status = 'running' AND locked_until < $1
                      FOR UPDATE SKIP LOCKED)",
    )
    .bind(now_millis())
    .execute(db.pool())
    .await
    .map_err(pg)?
    .rows_affected();
    Ok(n as usize)
}

/// The heartbeat: renews only rows still running under this worker's lease.
pub(super) async fn extend_lease(
    db: &PgDb,
    ids: Vec<EventId>,
    worker: &str,
    lease: Duration,
) -> Result<(), StoreError> {
    let until = now_millis().saturating_add(ms(lease));
    let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
    sqlx::query(
        "UPDATE events SET locked_until = $1
         WHERE id = ANY($2) AND locked_by = $3 AND status = 'running'",
    )
    .bind(until)
    .bind(&ids)
    .bind(worker)
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(super) async fn prune_finished(
    db: &PgDb,
    done_cutoff: i64,
    given_up_cutoff: i64,
) -> Result<usize, StoreError> {
    let mut tx = db.pool().begin().await.map_err(pg)?;
    let mut n = 0;
    for (sql, cutoff) in [
        (
            "DELETE FROM events WHERE status = 'done' AND finished_at < $1",
            done_cutoff,
        ),
        (
            "DELETE FROM events WHERE status IN ('failed', 'dead') AND finished_at < $1",
            given_up_cutoff,
        ),
        (
            "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1",
            given_up_cutoff,
        ),
    ] {
        n += sqlx::query(sql)
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(pg)?
            .rows_affected();
    }
    tx.commit().await.map_err(pg)?;
    Ok(n as usize)
}

// --- reads --------------------------------------------------------------------------------

pub(super) async fn stats(db: &PgDb) -> Result<QueueStats, StoreError> {
    let mut s = QueueStats::default();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM events GROUP BY status")
            .fetch_all(db.pool())
            .await
            .map_err(pg)?;
    for (status, n) in rows {
        match text::<EventStatus>(&status)? {
            EventStatus::Pending => s.pending = n,
            EventStatus::Running => s.running = n,
            EventStatus::Done => s.done = n,
            EventStatus::Failed => s.failed = n,
            EventStatus::Dead => s.dead_lettered = n,
        }
    }
    // Work that is due: jobs scheduled later in a poll window, or waiting out a backoff, are
    // not late.
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(received_at) FROM events
         WHERE status = 'running' OR (status = 'pending' AND run_at <= $1)",
    )
    .bind(now_millis())
    .fetch_one(db.pool())
    .await
    .map_err(pg)?;
    s.oldest_pending_age_ms = oldest.map(|o| (now_millis() - o).max(0)).unwrap_or(0);
    Ok(s)
}

const ROW_COLUMNS: &str = "id, kind, dedupe_key, group_key, status, attempts, last_error, run_id";

pub(super) async fn rows(db: &PgDb) -> Result<Vec<EventRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM events ORDER BY id"
    )))
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.iter().map(event_row).collect()
}

pub(super) async fn recent_failures(db: &PgDb, limit: usize) -> Result<Vec<EventRow>, StoreError> {
    // NULLS LAST: where SQLite puts them in a descending order (it sorts NULL lowest).
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ROW_COLUMNS} FROM events WHERE status IN ('failed', 'dead')
         ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT $1"
    )))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.iter().map(event_row).collect()
}

pub(super) async fn outcome(db: &PgDb, id: EventId) -> Result<Option<Outcome>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTCOME_COLUMNS} FROM events WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    row.as_ref().map(outcome_row).transpose()
}

pub(super) async fn outcome_of_key(
    db: &PgDb,
    dedupe_key: &str,
) -> Result<Option<Outcome>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {OUTCOME_COLUMNS} FROM events WHERE dedupe_key = $1"
    )))
    .bind(dedupe_key)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    row.as_ref().map(outcome_row).transpose()
}

#[cfg(test)]
mod tests;
