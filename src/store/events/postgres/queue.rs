//! The claim, outcomes and leases on PostgreSQL, safe for several instances on one table
//! (see the module docs of `postgres`).

use std::collections::HashSet;

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::super::rows::{ClaimReq, Found, Outcomes, Recorded};
use super::super::{Event, EventId, Pool};
use super::insert::insert_all;
use crate::store::postgres::PgDb;
use crate::store::StoreError;

/// Candidate rows one look at the pool reads; distinct free groups among them are tried in
/// order (oldest ready head first).
const CANDIDATES: i32 = 64;
/// Looks per claim: each excludes the groups the previous ones found locked by a concurrent
/// claim, so a busy group's backlog never hides other groups' work.
const LOOKS: i32 = 4;

pub(super) fn attempts(n: i32) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative attempt count {n}")))
}

fn claimed_event(r: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        dedupe_key: r.try_get(2)?,
        group_key: r.try_get(3)?,
        payload: r.try_get(4)?,
        attempts: attempts(r.try_get(5)?)?,
        received_at: r.try_get(6)?,
        run_id: r.try_get(7)?,
    })
}

/// One call of `salesbot_claim` (migrations/postgres/0002_claim_function.sql): the candidate
/// groups, their advisory locks, the head and the batch in the server, in one round trip.
pub(super) async fn claim(db: &PgDb, req: &ClaimReq) -> Result<Found, StoreError> {
    // Kinds not listed take one, in the function as in `ClaimReq::max_batch`.
    let (kinds, maxes): (Vec<&str>, Vec<i32>) = req
        .max_batch
        .keys()
        .map(|k| (*k, i32::try_from(req.max_batch(k)).unwrap_or(i32::MAX)))
        .unzip();
    let rows = sqlx::query(
        "SELECT id, kind, dedupe_key, group_key, payload, attempts, received_at, run_id,
                next_run_at, contended
         FROM salesbot_claim($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(req.pool)
    .bind(&req.worker)
    .bind(req.now)
    .bind(req.locked_until)
    .bind(&kinds)
    .bind(&maxes)
    .bind(CANDIDATES)
    .bind(LOOKS)
    .fetch_all(db.pool())
    .await?;
    match rows.first() {
        Some(r) if r.try_get::<Option<i64>, _>(0)?.is_none() => Ok(Found::Idle {
            next_run_at: r.try_get(8)?,
            contended: r.try_get(9)?,
        }),
        None => Err(StoreError::Corrupt("salesbot_claim returned no row".into())),
        Some(_) => Ok(Found::Batch(
            rows.iter().map(claimed_event).collect::<Result<_, _>>()?,
        )),
    }
}

/// Records how a batch ended, in one transaction (see `EventDb::record`); a batch that is only
/// done takes one statement (`record_done`).
pub(super) async fn record(db: &PgDb, out: &Outcomes) -> Result<Recorded, StoreError> {
    if out.follow_ups.is_empty() && out.retry.is_empty() && out.given_up.is_empty() {
        return record_done(db, out).await;
    }
    let mut tx = db.pool().begin().await?;
    let mut touched: HashSet<EventId> = sqlx::query_scalar::<_, EventId>(
        "UPDATE events SET status = 'done', finished_at = $1, locked_by = NULL,
                locked_until = NULL, last_error = NULL, payload = ''::bytea, result = $2
         WHERE id = ANY($3) AND status = 'running' AND locked_by = $4
         RETURNING id",
    )
    .bind(out.now)
    .bind(&out.result)
    .bind(&out.done)
    .bind(&out.worker)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    // Follow-ups only when the parent really completed under this lease: after a lease was
    // taken over, the new holder produces them.
    let mut follow_ups = Vec::new();
    if !touched.is_empty() && !out.follow_ups.is_empty() {
        follow_ups = insert_all(&mut tx, &out.follow_ups, out.now).await?;
    }
    touched.extend(retry_and_give_up(&mut tx, out).await?);
    // The group is free again: the pools that have work waiting in it.
    let mut waiting = Vec::new();
    if let Some(first) = out
        .done
        .iter()
        .chain(out.retry.iter().map(|r| &r.0))
        .chain(out.given_up.iter().map(|g| &g.id))
        .find(|id| touched.contains(id))
    {
        waiting = sqlx::query_scalar(
            "SELECT DISTINCT p.pool FROM events p
             WHERE p.status = 'pending'
               AND p.group_key = (SELECT group_key FROM events WHERE id = $1)",
        )
        .bind(first)
        .fetch_all(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded {
        follow_ups,
        waiting,
    })
}

/// The retries and the events given up, of those still held, each list in one statement
/// (arrays unnested, skipped when empty: a round trip apiece); the ones changed.
async fn retry_and_give_up(
    tx: &mut sqlx::PgConnection,
    out: &Outcomes,
) -> Result<Vec<EventId>, StoreError> {
    let mut touched = Vec::new();
    if !out.retry.is_empty() {
        let (ids, ats, reasons): (Vec<EventId>, Vec<i64>, Vec<&str>) = out
            .retry
            .iter()
            .map(|(id, at, reason)| (*id, *at, reason.as_str()))
            .collect();
        let retried: Vec<EventId> = sqlx::query_scalar(
            "UPDATE events e SET status = 'pending', run_at = r.at, last_error = r.reason,
                    locked_by = NULL, locked_until = NULL
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS r(id, at, reason)
             WHERE e.id = r.id AND e.status = 'running' AND e.locked_by = $4
             RETURNING e.id",
        )
        .bind(&ids)
        .bind(&ats)
        .bind(&reasons)
        .bind(&out.worker)
        .fetch_all(&mut *tx)
        .await?;
        touched.extend(retried);
    }
    if !out.given_up.is_empty() {
        let g = &out.given_up;
        let given_up: Vec<EventId> = sqlx::query_scalar(
            "UPDATE events e SET status = g.status, finished_at = $5, last_error = g.reason,
                    locked_by = NULL, locked_until = NULL,
                    payload = CASE WHEN g.forget THEN ''::bytea ELSE e.payload END
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bool[])
                  AS g(id, status, reason, forget)
             WHERE e.id = g.id AND e.status = 'running' AND e.locked_by = $6
             RETURNING e.id",
        )
        .bind(g.iter().map(|g| g.id).collect::<Vec<_>>())
        .bind(g.iter().map(|g| g.status.as_str()).collect::<Vec<_>>())
        .bind(g.iter().map(|g| g.reason.as_str()).collect::<Vec<_>>())
        .bind(g.iter().map(|g| g.forget_payload).collect::<Vec<_>>())
        .bind(out.now)
        .bind(&out.worker)
        .fetch_all(&mut *tx)
        .await?;
        touched.extend(given_up);
    }
    Ok(touched)
}

/// The common outcome (a batch done, nothing to queue): one statement, so no transaction, that
/// marks the events done under this worker's lease and names the pools with work waiting in
/// their groups (the same as `record`'s last steps; the pending rows it reads are not the
/// ones it updates).
async fn record_done(db: &PgDb, out: &Outcomes) -> Result<Recorded, StoreError> {
    let waiting: Vec<Pool> = sqlx::query_scalar(
        "WITH d AS (
            UPDATE events SET status = 'done', finished_at = $1, locked_by = NULL,
                   locked_until = NULL, last_error = NULL, payload = ''::bytea, result = $2
            WHERE id = ANY($3) AND status = 'running' AND locked_by = $4
            RETURNING group_key)
         SELECT DISTINCT p.pool FROM events p
         WHERE p.status = 'pending' AND p.group_key IN (SELECT group_key FROM d)",
    )
    .bind(out.now)
    .bind(&out.result)
    .bind(&out.done)
    .bind(&out.worker)
    .fetch_all(db.pool())
    .await?;
    Ok(Recorded {
        follow_ups: Vec::new(),
        waiting,
    })
}

/// Events whose lease ran out, or whose holder is dead, back to `pending`. A worker id is
/// `<instance>:<pool>:<n>`, and a running instance holds its liveness lock
/// (`store::postgres::INSTANCE_ALIVE_CLASS`, `hashtext(<instance>)`) for as long as its
/// database session lives: when no session holds it, the process died (or lost the database,
/// and then its jobs stop at their next write: see `crate::fence`). Holders of another form
/// (older versions) are waited out. Rows locked right now (their holder is recording an
/// outcome or renewing the lease) are skipped, not waited for: the next sweep sees them.
pub(super) async fn reclaim_expired(db: &PgDb, now: i64) -> Result<usize, StoreError> {
    let n = sqlx::query(
        "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
         WHERE id IN (
             SELECT e.id FROM events e
             WHERE e.status = 'running'
               AND (e.locked_until < $1
                    OR (strpos(e.locked_by, ':') > 0
                        AND NOT EXISTS (
                            SELECT 1 FROM pg_locks l
                            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                              AND l.classid = ($2::int4)::oid
                              AND l.objid = (hashtext(split_part(e.locked_by, ':', 1)))::oid)))
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(crate::store::postgres::INSTANCE_ALIVE_CLASS)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(n as usize)
}

/// The heartbeat: renews only rows still running under this worker's lease.
pub(super) async fn extend_lease(
    db: &PgDb,
    ids: &[EventId],
    worker: &str,
    until: i64,
) -> Result<usize, StoreError> {
    let renewed = sqlx::query(
        "UPDATE events SET locked_until = $1
         WHERE id = ANY($2) AND locked_by = $3 AND status = 'running'",
    )
    .bind(until)
    .bind(ids)
    .bind(worker)
    .execute(db.pool())
    .await?
    .rows_affected();
    Ok(renewed as usize)
}
