//! Inserts on PostgreSQL: a delivery and all its jobs in one statement.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::super::{Enqueued, EventId, NewEvent};
use crate::store::StoreError;

/// Inserts `events` unless their dedupe keys exist; an existing failed or dead event is queued
/// again instead (as on SQLite). Returns the rows' ids in the callers' order. One statement
/// for the whole list (then one read of the duplicates' ids): a webhook's delivery and its
/// messages cost one round trip, not two per event.
///
/// The rows go in dedupe-key order (see the module docs), and of two events with one key the
/// first asked for is the one inserted; the other is its duplicate.
pub(super) async fn insert_all(
    conn: &mut PgConnection,
    events: &[NewEvent],
    now: i64,
) -> Result<Vec<Enqueued>, StoreError> {
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
        let inserted = insert_missing(conn, events, &todo, now).await?;
        let mut missing: Vec<&str> = Vec::new();
        for i in &todo {
            let key = events[*i].dedupe_key.as_str();
            match inserted.get(key) {
                Some(id) => {
                    ids.insert(key, Enqueued::Inserted(*id));
                }
                None => missing.push(key),
            }
        }
        if missing.is_empty() {
            todo.clear();
            break;
        }
        // A new statement sees the conflicting rows (committed, or this transaction's).
        let existing: Vec<(EventId, String)> =
            sqlx::query_as("SELECT id, dedupe_key FROM events WHERE dedupe_key = ANY($1)")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
        for (id, key) in existing {
            if let Some(k) = missing.iter().find(|m| **m == key) {
                ids.insert(k, Enqueued::Duplicate(id));
            }
        }
        todo.retain(|i| !ids.contains_key(events[*i].dedupe_key.as_str()));
    }
    if !todo.is_empty() {
        return Err(StoreError::Corrupt(
            "an event's dedupe key conflicted with a row that then vanished, twice".into(),
        ));
    }
    let out = events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            let key = ev.dedupe_key.as_str();
            let got = ids[key];
            if first_of[key] == i {
                got
            } else {
                Enqueued::Duplicate(got.id())
            }
        })
        .collect();
    Ok(out)
}

/// Inserts the events at `todo` (in that order), in one statement; the ids of those inserted
/// (or queued again), by dedupe key.
async fn insert_missing(
    conn: &mut PgConnection,
    events: &[NewEvent],
    todo: &[usize],
    now: i64,
) -> Result<HashMap<String, EventId>, StoreError> {
    let col = |f: &dyn Fn(&NewEvent) -> String| -> Vec<String> {
        todo.iter().map(|i| f(&events[*i])).collect()
    };
    let inserted: Vec<(EventId, String)> = sqlx::query_as(
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
    .bind(col(&|e| e.dedupe_key.clone()))
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
    .await?;
    Ok(inserted.into_iter().map(|(id, k)| (k, id)).collect())
}
