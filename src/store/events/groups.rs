//! Queries over queue groups: what runs in a page's groups, and purging them (data deletion).

use rusqlite::{params, params_from_iter};

use super::{postgres, EventId, EventStore};
use crate::store::{sqlite_or, StoreError};

/// `group_key` matches one of `exact` or starts with one of `prefixes`, as SQL with params.
/// A prefix that is empty or ends in a byte past ASCII selects nothing (see `usable_prefix`).
fn group_filter(exact: &[String], prefixes: &[String]) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    for g in exact {
        clauses.push("group_key = ?".to_string());
        params.push(g.clone());
    }
    for p in prefixes {
        // A range instead of LIKE: it uses the index, and no character of the prefix is a
        // wildcard. The upper bound is the prefix with its last byte raised by one.
        if !usable_prefix(p) {
            continue;
        }
        let mut upper = p.clone().into_bytes();
        if let Some(b) = upper.last_mut() {
            *b += 1;
        }
        clauses.push("(group_key >= ? AND group_key < ?)".to_string());
        params.push(p.clone());
        params.push(String::from_utf8(upper).unwrap_or_default());
    }
    if clauses.is_empty() {
        return ("0".into(), params);
    }
    (format!("({})", clauses.join(" OR ")), params)
}

/// Whether a prefix can select groups: the SQLite range needs a last byte it can raise within
/// ASCII, so an empty prefix or one ending past ASCII selects nothing — on both backends.
pub(super) fn usable_prefix(p: &str) -> bool {
    matches!(p.as_bytes().last(), Some(b) if *b < 0x7f)
}

impl EventStore {
    /// Groups with a pending or running event of one of `kinds`.
    pub async fn open_groups(
        &self,
        kinds: Vec<&'static str>,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::open_groups(pg, kinds))
            .call(move |c| {
                let sql = format!(
                    "SELECT DISTINCT group_key FROM events
                     WHERE status IN ('pending', 'running') AND kind IN ({})",
                    vec!["?"; kinds.len()].join(", ")
                );
                let mut st = c.prepare(&sql)?;
                let v = st
                    .query_map(params_from_iter(kinds), |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(v)
            })
            .await
    }

    /// Events of `kind` running now.
    pub async fn running_of_kind(&self, kind: &'static str) -> Result<i64, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::running_of_kind(pg, kind))
            .call(move |c| {
                Ok(c.prepare_cached(
                    "SELECT COUNT(*) FROM events WHERE status = 'running' AND kind = ?1",
                )?
                .query_row([kind], |r| r.get(0))?)
            })
            .await
    }

    /// Events running now in the given groups (exact keys or key prefixes).
    pub async fn running_in_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<i64, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::running_in_groups(pg, exact, prefixes))
            .call(move |c| {
                let (filter, params) = group_filter(&exact, &prefixes);
                let sql =
                    format!("SELECT COUNT(*) FROM events WHERE status = 'running' AND {filter}");
                Ok(c.query_row(&sql, params_from_iter(params), |r| r.get(0))?)
            })
            .await
    }

    /// Deletes every event of the given groups that is not running (their payloads may hold a
    /// person's messages); returns how many.
    pub async fn purge_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::purge_groups(pg, exact, prefixes));
        self.write_durable(move |c| {
            let (filter, params) = group_filter(&exact, &prefixes);
            let sql = format!("DELETE FROM events WHERE status != 'running' AND {filter}");
            Ok(c.execute(&sql, params_from_iter(params))?)
        })
        .await
    }

    /// Payloads of unfinished (pending, failed, dead) events of `kind`.
    pub async fn unfinished_payloads(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(EventId, Vec<u8>)>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::unfinished_payloads(pg, kind))
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, payload FROM events
                     WHERE kind = ?1 AND status IN ('pending', 'failed', 'dead')",
                )?;
                let v = st
                    .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// Replaces the payload of an event that is not running (`None` deletes the event).
    pub async fn rewrite_payload(
        &self,
        id: EventId,
        payload: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::rewrite_payload(pg, id, payload));
        self.write_durable(move |c| {
            let n = match payload {
                Some(p) => c.execute(
                    "UPDATE events SET payload = ?1 WHERE id = ?2 AND status != 'running'",
                    params![p, id],
                )?,
                None => c.execute(
                    "DELETE FROM events WHERE id = ?1 AND status != 'running'",
                    [id],
                )?,
            };
            Ok(n == 1)
        })
        .await
    }
}
