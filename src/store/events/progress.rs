//! How far the first sync of a connected shop or page got, for the merchant's pages.
//!
//! The job itself stays the source of truth (pending, running, done, failed and why); a
//! `tracked_syncs` row only says which job is the first sync of a target and, while it runs,
//! how many items it has read. Pages count their conversations from the connect's poll run.

use super::{EventId, EventStore, RunId};
use crate::store::{now_millis, StoreError};

/// The first sync of one target, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub target: String,
    pub event_id: EventId,
    pub run_id: Option<RunId>,
    pub done: i64,
    pub total: Option<i64>,
    pub started_at: i64,
    pub updated_at: i64,
}

impl EventStore {
    /// Records `event` as the first sync of `target` (a reconnect replaces the previous one).
    pub async fn track(
        &self,
        target: String,
        event: EventId,
        run: Option<RunId>,
    ) -> Result<(), StoreError> {
        self.db.track(target, event, run, now_millis()).await
    }

    /// Progress of a running job; a job that is not a tracked first sync changes nothing.
    pub async fn report_progress(
        &self,
        event: EventId,
        done: i64,
        total: Option<i64>,
    ) -> Result<(), StoreError> {
        self.db
            .report_progress(event, done, total, now_millis())
            .await
    }

    /// The tracked first sync of `target`, if any.
    pub async fn tracked(&self, target: &str) -> Result<Option<Tracked>, StoreError> {
        self.db.tracked(target.to_string()).await
    }

    /// Forgets the tracked first sync of `target` (the shop or page is gone).
    pub async fn untrack(&self, target: &str) -> Result<(), StoreError> {
        self.db.untrack(target.to_string()).await
    }

    /// Of the jobs of `run` whose group starts with `group_prefix`: (finished, all).
    pub async fn run_group_progress(
        &self,
        run: RunId,
        group_prefix: &str,
    ) -> Result<(i64, i64), StoreError> {
        // The groups in [prefix, prefix + char::MAX) as bytes start with the prefix (page ids
        // are digits, but the rule should not depend on it).
        let lo = group_prefix.to_string();
        let hi = format!("{group_prefix}\u{10FFFF}");
        self.db.run_group_progress(run, lo, hi).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_is_reported_for_tracked_jobs_only() {
        for kind in crate::store::events::tests::kinds() {
            let store = crate::store::events::tests::open(kind).await;
            store
                .track("shop:a".into(), EventId(7), None)
                .await
                .unwrap();
            store
                .report_progress(EventId(7), 40, Some(100))
                .await
                .unwrap();
            store.report_progress(EventId(8), 1, Some(1)).await.unwrap();
            let t = store.tracked("shop:a").await.unwrap().unwrap();
            assert_eq!((t.done, t.total), (40, Some(100)));
            // A total once known stays when a report does not repeat it.
            store.report_progress(EventId(7), 50, None).await.unwrap();
            let t = store.tracked("shop:a").await.unwrap().unwrap();
            assert_eq!((t.done, t.total), (50, Some(100)));
            // The same job tracked again keeps its progress; another job starts from zero.
            store
                .track("shop:a".into(), EventId(7), None)
                .await
                .unwrap();
            assert_eq!(store.tracked("shop:a").await.unwrap().unwrap().done, 50);
            store
                .track("shop:a".into(), EventId(9), None)
                .await
                .unwrap();
            let t = store.tracked("shop:a").await.unwrap().unwrap();
            assert_eq!((t.event_id, t.done, t.total), (EventId(9), 0, None));
            assert!(store.tracked("shop:b").await.unwrap().is_none());
            store.untrack("shop:a").await.unwrap();
            assert!(store.tracked("shop:a").await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn run_group_progress_counts_finished_jobs_of_a_prefix() {
        use crate::store::events::tests::{done, ev, ids, spec, LEASE};
        use crate::store::events::{Pool, RunKind, RunTrigger};
        for kind in crate::store::events::tests::kinds() {
            let q = crate::store::events::tests::open(kind).await;
            let run = q.create_run(RunKind::Poll, RunTrigger::Cli).await.unwrap();
            for (k, g) in [
                ("1", "fbconv:12:5"),
                ("2", "fbconv:12:6"),
                ("3", "fbconv:123:5"),
            ] {
                q.enqueue(ev(k, g).in_run(Some(run))).await.unwrap();
            }
            let c = q
                .claim("w", &spec(Pool::Messages, 1), LEASE)
                .await
                .unwrap()
                .batch()
                .unwrap();
            q.record("w", done(ids(&c))).await.unwrap();
            assert_eq!(
                q.run_group_progress(run, "fbconv:12:").await.unwrap(),
                (1, 2)
            );
            assert_eq!(q.run_group_progress(run, "fbconv:").await.unwrap(), (1, 3));
            assert_eq!(q.run_group_progress(run, "fbpage:").await.unwrap(), (0, 0));
            assert_eq!(q.run_open_jobs(run).await.unwrap(), 2);
            q.finish_run(run, serde_json::json!({"ok": true}))
                .await
                .unwrap();
            let runs = q.runs(false, 10).await.unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].summary, Some(serde_json::json!({"ok": true})));
            assert!(q.runs(true, 10).await.unwrap().is_empty());
        }
    }
}
