//! The queue's SQL that is the same text on both backends (`$n` placeholders; see
//! `store::sqlite` for how SQLite binds them). What differs for real lives with its backend:
//! inserts (one multi-row statement on PostgreSQL), the claim, outcomes and leases (arrays,
//! `SKIP LOCKED` and advisory locks on PostgreSQL; the writer's transaction on SQLite).

// --- queue upkeep --------------------------------------------------------------------------

/// Fresh attempts and a fresh retry horizon (`$1`: now) for every failed and dead event.
pub(super) const REQUEUE_FAILED: &str =
    "UPDATE events SET status = 'pending', attempts = 0, run_at = $1, received_at = $1,
            finished_at = NULL, locked_by = NULL, locked_until = NULL
     WHERE status IN ('failed', 'dead')";

/// Finished rows older than a cutoff (`$1`), in one transaction: done events, given-up
/// events, finished runs.
pub(super) const PRUNE_DONE: &str = "DELETE FROM events WHERE status = 'done' AND finished_at < $1";
pub(super) const PRUNE_GIVEN_UP: &str =
    "DELETE FROM events WHERE status IN ('failed', 'dead') AND finished_at < $1";
pub(super) const PRUNE_RUNS: &str =
    "DELETE FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1";

// --- reads ---------------------------------------------------------------------------------

pub(super) const STATUS_COUNTS: &str = "SELECT status, COUNT(*) FROM events GROUP BY status";
/// Work that is due (`$1`: now): jobs scheduled later in a poll window, or waiting out a
/// backoff, are not late.
pub(super) const OLDEST_DUE: &str = "SELECT MIN(received_at) FROM events
     WHERE status = 'running' OR (status = 'pending' AND run_at <= $1)";

/// Signs that a process works the queue (`$1`: now): leases not run out yet (a job claimed
/// or heartbeated within its lease), and when the newest event arrived.
pub(super) const ACTIVITY: &str = "SELECT
     (SELECT COUNT(*) FROM events WHERE status = 'running' AND locked_until > $1),
     (SELECT MAX(received_at) FROM events)";

/// The columns of an `EventRow`, in order.
pub(super) const ROWS: &str =
    "SELECT id, kind, dedupe_key, group_key, status, attempts, last_error, run_id
     FROM events ORDER BY id";
/// The `EventRow` columns of the newest given-up events (`$1`: how many). NULLS LAST is
/// where SQLite puts them in a descending order anyway; PostgreSQL needs telling.
pub(super) const RECENT_FAILURES: &str =
    "SELECT id, kind, dedupe_key, group_key, status, attempts, last_error, run_id
     FROM events WHERE status IN ('failed', 'dead')
     ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT $1";

/// The columns of a `StoredOutcome`, in order, by id / by dedupe key / of a run's jobs.
pub(super) const OUTCOME: &str =
    "SELECT id, kind, group_key, status, attempts, last_error, result FROM events WHERE id = $1";
pub(super) const OUTCOME_OF_KEY: &str =
    "SELECT id, kind, group_key, status, attempts, last_error, result
     FROM events WHERE dedupe_key = $1";
pub(super) const RUN_JOBS: &str = "SELECT id, kind, group_key, status, attempts, last_error, result
     FROM events WHERE run_id = $1 ORDER BY id";

// --- groups and payloads -------------------------------------------------------------------

pub(super) const RUNNING_OF_KIND: &str =
    "SELECT COUNT(*) FROM events WHERE status = 'running' AND kind = $1";
pub(super) const UNFINISHED_PAYLOADS: &str = "SELECT id, payload FROM events
     WHERE kind = $1 AND status IN ('pending', 'failed', 'dead')";
pub(super) const SET_PAYLOAD: &str =
    "UPDATE events SET payload = $1 WHERE id = $2 AND status != 'running'";
pub(super) const DELETE_EVENT: &str = "DELETE FROM events WHERE id = $1 AND status != 'running'";

/// Groups with a pending or running event of one of `kinds` kinds (`$1` … `$kinds`). Only
/// for at least one kind: `IN ()` is not SQL on PostgreSQL.
pub(super) fn open_groups(kinds: usize) -> String {
    let list: Vec<String> = (1..=kinds).map(|i| format!("${i}")).collect();
    format!(
        "SELECT DISTINCT group_key FROM events
         WHERE status IN ('pending', 'running') AND kind IN ({})",
        list.join(", ")
    )
}

/// Events running in the given groups, with the statement's values.
pub(super) fn running_in_groups(exact: &[String], prefixes: &[String]) -> (String, Vec<String>) {
    let (filter, values) = in_groups(exact, prefixes);
    (
        format!("SELECT COUNT(*) FROM events WHERE status = 'running' AND {filter}"),
        values,
    )
}

/// Deletes the events of the given groups that are not running, with the statement's values.
pub(super) fn purge_groups(exact: &[String], prefixes: &[String]) -> (String, Vec<String>) {
    let (filter, values) = in_groups(exact, prefixes);
    (
        format!("DELETE FROM events WHERE status != 'running' AND {filter}"),
        values,
    )
}

/// `group_key` is one of `exact` or starts with one of `prefixes`, with its values (bound
/// `$1`, `$2`, … in order). A prefix is the byte range from itself to itself with its last
/// byte raised by one, compared as bytes (`COLLATE "C"`, the same order on both backends):
/// unlike LIKE, no character of a prefix is a wildcard. The store passes only prefixes that
/// such a range can express (`groups::usable_prefix`); nothing at all selects nothing.
fn in_groups(exact: &[String], prefixes: &[String]) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    for g in exact {
        values.push(g.clone());
        clauses.push(format!("group_key = ${}", values.len()));
    }
    for p in prefixes {
        let mut upper = p.clone().into_bytes();
        if let Some(b) = upper.last_mut() {
            *b += 1;
        }
        values.push(p.clone());
        // A prefix the range cannot express would have no valid upper bound: "" selects
        // nothing (nothing is below it).
        values.push(String::from_utf8(upper).unwrap_or_default());
        let (lo, hi) = (values.len() - 1, values.len());
        clauses.push(format!(
            r#"(group_key COLLATE "C" >= ${lo} AND group_key COLLATE "C" < ${hi})"#
        ));
    }
    if clauses.is_empty() {
        return ("FALSE".into(), values);
    }
    (format!("({})", clauses.join(" OR ")), values)
}

// --- runs ----------------------------------------------------------------------------------

pub(super) const CREATE_RUN: &str =
    "INSERT INTO runs (kind, trigger, started_at) VALUES ($1, $2, $3) RETURNING id";
/// How many of a run's jobs are still pending or running (cheap: an index count).
pub(super) const RUN_OPEN_JOBS: &str =
    "SELECT COUNT(*) FROM events WHERE run_id = $1 AND status IN ('pending', 'running')";
pub(super) const FINISH_RUN: &str =
    "UPDATE runs SET finished_at = $1, summary = $2 WHERE id = $3 AND finished_at IS NULL";
/// The columns of a `StoredRun`, newest first; `$1`: unfinished ones only, `$2`: how many.
pub(super) const RUNS: &str = "SELECT id, kind, trigger, started_at, finished_at, summary
     FROM runs WHERE finished_at IS NULL OR NOT $1 ORDER BY id DESC LIMIT $2";
/// Of the jobs of run `$1` whose group is in [`$2`, `$3`) as bytes: (finished, all). A
/// range instead of LIKE: no character of the prefix is a wildcard.
pub(super) const RUN_GROUP_PROGRESS: &str = r#"SELECT
        COALESCE(SUM(CASE WHEN status NOT IN ('pending', 'running') THEN 1 ELSE 0 END), 0),
        COUNT(*)
     FROM events
     WHERE run_id = $1 AND group_key COLLATE "C" >= $2 AND group_key COLLATE "C" < $3"#;

// --- first-sync progress -------------------------------------------------------------------

/// Records event `$2` (run `$3`) as the first sync of `$1` at `$4`; the same event tracked
/// again keeps its progress, another one starts from zero.
pub(super) const TRACK: &str =
    "INSERT INTO tracked_syncs (target, event_id, run_id, done, total, started_at, updated_at)
     VALUES ($1, $2, $3, 0, NULL, $4, $4)
     ON CONFLICT (target) DO UPDATE SET event_id = $2, run_id = $3, done = 0,
         total = NULL, started_at = $4, updated_at = $4
     WHERE tracked_syncs.event_id != $2";
/// A total once known stays when a report does not repeat it.
pub(super) const REPORT_PROGRESS: &str =
    "UPDATE tracked_syncs SET done = $2, total = COALESCE($3, total), updated_at = $4
     WHERE event_id = $1";
/// The columns of a `Tracked`, in order.
pub(super) const TRACKED: &str =
    "SELECT target, event_id, run_id, done, total, started_at, updated_at
     FROM tracked_syncs WHERE target = $1";
pub(super) const UNTRACK: &str = "DELETE FROM tracked_syncs WHERE target = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_filters_number_their_values_in_order() {
        let (sql, values) =
            running_in_groups(&["fbpage:1".into()], &["fbconv:1:".into(), "x~".into()]);
        assert!(sql.contains("group_key = $1"), "{sql}");
        assert!(sql.contains(r#"group_key COLLATE "C" >= $2 AND group_key COLLATE "C" < $3"#));
        assert!(sql.contains(r#"group_key COLLATE "C" >= $4 AND group_key COLLATE "C" < $5"#));
        assert_eq!(
            values,
            ["fbpage:1", "fbconv:1:", "fbconv:1;", "x~", "x\u{7f}"]
        );
        let (none, values) = purge_groups(&[], &[]);
        assert!(none.ends_with("AND FALSE"), "{none}");
        assert!(values.is_empty());
    }
}
