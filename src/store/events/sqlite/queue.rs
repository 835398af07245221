//! The claim, outcomes and leases on SQLite: each one transaction on the writer's connection,
//! which nothing else writes (see `writer`), so a claim's look and its update cannot be
//! interleaved with another claim's.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::super::rows::{ClaimReq, Found, Outcomes, Recorded};
use super::super::{Enqueued, Event, EventId, Pool};
use super::writer::insert_event;
use crate::store::StoreError;

/// Claims the oldest ready event of the pool whose group has nothing running, with the other
/// events of its group and kind that are ready or have never been tried.
pub(super) fn claim(c: &mut Connection, req: &ClaimReq) -> Result<Found, StoreError> {
    // Deferred: a look that finds nothing commits without writing (no fsync).
    let tx = c.transaction()?;
    let head: Option<(EventId, String, String)> = tx
        .prepare_cached(
            "SELECT e.id, e.group_key, e.kind FROM events e
             WHERE e.status = 'pending' AND e.pool = ?1 AND e.run_at <= ?2
               AND NOT EXISTS (SELECT 1 FROM events r
                               WHERE r.status = 'running' AND r.group_key = e.group_key)
             ORDER BY e.run_at, e.id LIMIT 1",
        )?
        .query_row(params![req.pool, req.now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((head, group, kind)) = head else {
        // When the pool's next event becomes ready (a debounce or backoff running out), so an
        // idle worker can sleep exactly until then.
        let next: Option<i64> = tx
            .prepare_cached(
                "SELECT MIN(run_at) FROM events
                 WHERE status = 'pending' AND pool = ?1 AND run_at > ?2",
            )?
            .query_row(params![req.pool, req.now], |r| r.get(0))?;
        return Ok(Found::Idle {
            next_run_at: next,
            contended: false,
        });
    };
    let max = req.max_batch(&kind);
    let events = tx
        .prepare_cached(
            "UPDATE events SET status = 'running', attempts = attempts + 1,
                    locked_by = ?1, locked_until = ?2
             WHERE id = ?3
                OR id IN (SELECT id FROM events
                          WHERE status = 'pending' AND group_key = ?4 AND kind = ?5
                            AND id != ?3 AND (run_at <= ?6 OR attempts = 0)
                          ORDER BY id LIMIT ?7)
             RETURNING id, kind, dedupe_key, group_key, payload, attempts, received_at,
                       run_id",
        )?
        .query_map(
            params![
                req.worker,
                req.locked_until,
                head,
                group,
                kind,
                req.now,
                (max - 1) as i64
            ],
            |r| {
                Ok(Event {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    dedupe_key: r.get(2)?,
                    group_key: r.get(3)?,
                    payload: r.get(4)?,
                    attempts: r.get(5)?,
                    received_at: r.get(6)?,
                    run_id: r.get(7)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    tx.commit()?;
    Ok(Found::Batch(events))
}

/// Records how a batch ended, in one transaction (see `EventDb::record`).
pub(super) fn record(c: &mut Connection, out: &Outcomes) -> Result<Recorded, StoreError> {
    let tx = c.transaction()?;
    let mut touched: Vec<EventId> = Vec::new();
    for id in &out.done {
        let n = tx
            .prepare_cached(
                "UPDATE events SET status = 'done', finished_at = ?1, locked_by = NULL,
                        locked_until = NULL, last_error = NULL, payload = x'', result = ?2
                 WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
            )?
            .execute(params![out.now, out.result, id, out.worker])?;
        if n == 1 {
            touched.push(*id);
        }
    }
    // Follow-ups only when the parent really completed under this lease: after a lease was
    // taken over, the new holder produces them.
    let follow_ups = if touched.is_empty() {
        Vec::new()
    } else {
        out.follow_ups
            .iter()
            .map(|ev| insert_event(&tx, ev, out.now))
            .collect::<Result<Vec<Enqueued>, _>>()?
    };
    touched.extend(retry_and_give_up(&tx, out)?);
    // The group is free again: the pools that have work waiting in it.
    let mut waiting: Vec<Pool> = Vec::new();
    if let Some(first) = touched.first() {
        let mut st = tx.prepare_cached(
            "SELECT DISTINCT p.pool FROM events p
             WHERE p.status = 'pending'
               AND p.group_key = (SELECT group_key FROM events WHERE id = ?1)",
        )?;
        for p in st.query_map([first], |r| r.get::<_, Pool>(0))? {
            waiting.push(p?);
        }
    }
    tx.commit()?;
    Ok(Recorded {
        follow_ups,
        waiting,
    })
}

/// The retries and the events given up, of those still held; returns the ones changed.
fn retry_and_give_up(tx: &Transaction<'_>, out: &Outcomes) -> Result<Vec<EventId>, StoreError> {
    let mut touched = Vec::new();
    for (id, at, reason) in &out.retry {
        let n = tx
            .prepare_cached(
                "UPDATE events SET status = 'pending', run_at = ?1, last_error = ?2,
                        locked_by = NULL, locked_until = NULL
                 WHERE id = ?3 AND status = 'running' AND locked_by = ?4",
            )?
            .execute(params![at, reason, id, out.worker])?;
        if n == 1 {
            touched.push(*id);
        }
    }
    for g in &out.given_up {
        let n = tx
            .prepare_cached(
                "UPDATE events SET status = ?1, finished_at = ?2, last_error = ?3,
                        locked_by = NULL, locked_until = NULL,
                        payload = CASE WHEN ?6 THEN x'' ELSE payload END
                 WHERE id = ?4 AND status = 'running' AND locked_by = ?5",
            )?
            .execute(params![
                g.status,
                out.now,
                g.reason,
                g.id,
                out.worker,
                g.forget_payload
            ])?;
        if n == 1 {
            touched.push(g.id);
        }
    }
    Ok(touched)
}

/// Renews the lease of the events still running under `worker`'s.
pub(super) fn extend_lease(
    c: &mut Connection,
    ids: &[EventId],
    worker: &str,
    until: i64,
) -> Result<usize, StoreError> {
    let tx = c.transaction()?;
    let mut renewed = 0;
    for id in ids {
        renewed += tx
            .prepare_cached(
                "UPDATE events SET locked_until = ?1
             WHERE id = ?2 AND locked_by = ?3 AND status = 'running'",
            )?
            .execute(params![until, id, worker])?;
    }
    tx.commit()?;
    Ok(renewed)
}

/// Events whose lease ran out (before `now`) back to `pending`.
pub(super) fn reclaim_expired(c: &mut Connection, now: i64) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
         WHERE status = 'running' AND locked_until < ?1",
        [now],
    )?)
}

/// Every running event back to `pending`: at start, only the process holding the queue lock
/// calls this, so whatever runs was left by a process that died.
pub(super) fn recover_orphans(c: &mut Connection) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE events SET status = 'pending', locked_by = NULL, locked_until = NULL
         WHERE status = 'running'",
        [],
    )?)
}
