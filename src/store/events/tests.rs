use std::collections::HashMap;

use super::*;
use crate::store::Backend;

pub(super) fn ev(key: &str, group: &str) -> NewEvent {
    NewEvent {
        kind: "testkit",
        pool: Pool::Messages,
        dedupe_key: key.to_string(),
        group_key: group.to_string(),
        payload: b"{}".to_vec(),
        run_at: None,
        run_id: None,
    }
}

fn in_pool(mut e: NewEvent, pool: Pool, kind: &'static str) -> NewEvent {
    e.pool = pool;
    e.kind = kind;
    e
}

pub(super) fn spec(pool: Pool, max: usize) -> ClaimSpec {
    let mut m = HashMap::new();
    m.insert("testkit", max);
    m.insert("testkit_effect", max);
    ClaimSpec {
        pool,
        max_batch: Arc::new(m),
    }
}

pub(super) const LEASE: Duration = Duration::from_secs(60);

/// The backends a test runs on: SQLite always, PostgreSQL when `TEST_DATABASE_URL` is set.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Sqlite,
    Postgres,
}

pub(super) fn kinds() -> Vec<Kind> {
    let mut v = vec![Kind::Sqlite];
    if std::env::var_os("TEST_DATABASE_URL").is_some() {
        v.push(Kind::Postgres);
    }
    v
}

/// A fresh, empty queue on `kind` (its own file, or its own database).
pub(super) struct Fresh {
    q: EventStore,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Fresh {
    type Target = EventStore;
    fn deref(&self) -> &EventStore {
        &self.q
    }
}

pub(super) async fn open(kind: Kind) -> Fresh {
    // Printed with a failing test's output: which backend failed.
    eprintln!("backend: {kind:?}");
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let q = EventStore::open(&dir.path().join("e.db")).unwrap();
            Fresh { q, _dir: Some(dir) }
        }
        Kind::Postgres => {
            let pg = crate::store::postgres::test_db()
                .await
                .expect("TEST_DATABASE_URL is set");
            Fresh {
                q: EventStore::on_postgres(pg).await.unwrap(),
                _dir: None,
            }
        }
    }
}

/// A stored payload, read behind the store's back.
async fn payload_of(q: &EventStore, id: EventId) -> Vec<u8> {
    match q.backend() {
        Backend::Sqlite(db) => db
            .call(move |c| {
                Ok(
                    c.query_row("SELECT payload FROM events WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap(),
        Backend::Postgres(pg) => sqlx::query_scalar("SELECT payload FROM events WHERE id = $1")
            .bind(id.0)
            .fetch_one(pg.pool())
            .await
            .unwrap(),
    }
}

/// Runs a raw statement on the store's database (constraint checks).
async fn raw(q: &EventStore, sql: &'static str) -> Result<u64, String> {
    match q.backend() {
        Backend::Sqlite(db) => db
            .call(move |c| Ok(c.execute(sql, [])? as u64))
            .await
            .map_err(|e| e.to_string()),
        Backend::Postgres(pg) => sqlx::query(sql)
            .execute(pg.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string()),
    }
}

pub(super) fn done(ids: Vec<EventId>) -> Record {
    Record {
        done: ids,
        ..Record::default()
    }
}

/// The next batch of the messages pool, one event a batch.
async fn claim_messages(q: &EventStore) -> Vec<Event> {
    q.claim("w", &spec(Pool::Messages, 1), LEASE)
        .await
        .unwrap()
        .batch()
        .unwrap()
}

pub(super) fn ids(batch: &[Event]) -> Vec<EventId> {
    batch.iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn duplicate_insert_is_a_no_op_that_names_the_original() {
    for kind in kinds() {
        let q = open(kind).await;
        let first = q.enqueue(ev("a", "g")).await.unwrap();
        assert!(matches!(first, Enqueued::Inserted(_)));
        assert_eq!(
            q.enqueue(ev("a", "g")).await.unwrap(),
            Enqueued::Duplicate(first.id())
        );
        let again = q
            .enqueue_all(vec![ev("a", "g"), ev("b", "g")])
            .await
            .unwrap();
        assert_eq!(again[0], Enqueued::Duplicate(first.id()));
        assert!(matches!(again[1], Enqueued::Inserted(_)));
        assert_eq!(q.rows().await.unwrap().len(), 2);
    }
}

/// One call with a new key, a repeated key, a pending duplicate and a failed event queued
/// again: every answer in the caller's order, the first of a repeated key is the one stored.
#[tokio::test]
async fn one_enqueue_mixes_new_repeated_pending_and_requeued_keys() {
    for kind in kinds() {
        let q = open(kind).await;
        let pending = q.enqueue(ev("pending", "g1")).await.unwrap().id();
        let failed = q.enqueue(ev("failed", "g2")).await.unwrap().id();
        q.enqueue(ev("other", "g3")).await.unwrap();
        let mut claimed = Vec::new();
        while claimed.len() < 3 {
            claimed.extend(claim_messages(&q).await);
        }
        let mut rec = Record::default();
        for e in &claimed {
            if e.id == failed {
                rec.given_up
                    .push((e.id, EventStatus::Failed, "unknown page".into()));
            } else {
                rec.retry.push((e.id, 0, "later".into()));
            }
        }
        q.record("w", rec).await.unwrap();
        let with = |key: &str, payload: &[u8]| {
            let mut e = ev(key, "g9");
            e.payload = payload.to_vec();
            e
        };
        let out = q
            .enqueue_all(vec![
                with("new", b"first"),
                with("pending", b"ignored"),
                with("new", b"second"),
                with("failed", b"again"),
            ])
            .await
            .unwrap();
        assert!(matches!(out[0], Enqueued::Inserted(_)), "{kind:?}: {out:?}");
        assert_eq!(out[1], Enqueued::Duplicate(pending), "{kind:?}");
        assert_eq!(out[2], Enqueued::Duplicate(out[0].id()), "{kind:?}");
        assert_eq!(out[3], Enqueued::Inserted(failed), "{kind:?}: requeued");
        assert_eq!(payload_of(&q, out[0].id()).await, b"first");
        assert_eq!(payload_of(&q, pending).await, b"{}");
        assert_eq!(payload_of(&q, failed).await, b"again");
        assert_eq!(q.rows().await.unwrap().len(), 4);
        assert_eq!(q.stats().await.unwrap().failed, 0);
    }
}

#[tokio::test]
async fn a_group_is_never_claimed_twice_at_once_and_pools_stay_apart() {
    for kind in kinds() {
        let q = open(kind).await;
        for i in 0..3 {
            q.enqueue(ev(&format!("a{i}"), "g1")).await.unwrap();
        }
        q.enqueue(ev("b", "g2")).await.unwrap();
        q.enqueue(in_pool(ev("s", "g3"), Pool::Sync, "testkit"))
            .await
            .unwrap();
        let first = q
            .claim("w1", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(
            first.len(),
            3,
            "the ready events of the group come together"
        );
        q.enqueue(ev("a3", "g1")).await.unwrap();
        let second = q
            .claim("w2", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].group_key, "g2");
        // g1 still running: its new event waits; the sync pool's event is not ours.
        assert!(q
            .claim("w3", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .is_none());
        let sync = q
            .claim("s1", &spec(Pool::Sync, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(sync[0].dedupe_key, "s");
        q.record("w1", done(ids(&first))).await.unwrap();
        let third = q
            .claim("w3", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(third[0].dedupe_key, "a3");
    }
}

#[tokio::test]
async fn a_group_running_in_one_pool_holds_its_events_of_every_pool() {
    for kind in kinds() {
        let q = open(kind).await;
        q.enqueue(in_pool(ev("poll", "conv"), Pool::Poll, "testkit"))
            .await
            .unwrap();
        let polling = q
            .claim("p", &spec(Pool::Poll, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        q.enqueue(ev("merge", "conv")).await.unwrap();
        assert!(
            q.claim("m", &spec(Pool::Messages, 10), LEASE)
                .await
                .unwrap()
                .batch()
                .is_none(),
            "a merge never runs beside the conversation's poll"
        );
        q.record("p", done(ids(&polling))).await.unwrap();
        let merge = q
            .claim("m", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(merge[0].dedupe_key, "merge");
    }
}

#[tokio::test]
async fn events_waiting_out_a_backoff_are_not_swept_into_a_new_arrivals_batch() {
    for kind in kinds() {
        let q = open(kind).await;
        q.enqueue(ev("old", "conv")).await.unwrap();
        let c = q
            .claim("w", &spec(Pool::Messages, 500), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        q.record(
            "w",
            Record {
                retry: vec![(c[0].id, now_millis() + 60_000, "store down".into())],
                ..Record::default()
            },
        )
        .await
        .unwrap();
        // A new message for the same conversation: it runs alone, the old one keeps its attempts.
        q.enqueue(ev("new", "conv")).await.unwrap();
        let batch = q
            .claim("w", &spec(Pool::Messages, 500), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].dedupe_key, "new");
        assert_eq!(batch[0].attempts, 1);
        q.record(
            "w",
            Record {
                retry: vec![(batch[0].id, now_millis() + 60_000, "store down".into())],
                ..Record::default()
            },
        )
        .await
        .unwrap();
        let rows = q.rows().await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.attempts).collect::<Vec<_>>(),
            vec![1, 1],
            "each event counts its own attempts"
        );
        assert!(q
            .claim("w", &spec(Pool::Messages, 500), LEASE)
            .await
            .unwrap()
            .batch()
            .is_none());
    }
}

#[tokio::test]
async fn a_ready_head_brings_its_debounced_group_along_but_not_other_groups() {
    for kind in kinds() {
        let q = open(kind).await;
        let later = ev("later", "g").at(now_millis() + 60_000);
        q.enqueue(later).await.unwrap();
        assert!(
            q.claim("w", &spec(Pool::Messages, 10), LEASE)
                .await
                .unwrap()
                .batch()
                .is_none(),
            "nothing ready yet"
        );
        q.enqueue(ev("now", "g")).await.unwrap();
        q.enqueue(ev("other-group", "h").at(now_millis() + 60_000))
            .await
            .unwrap();
        let batch = q
            .claim("w", &spec(Pool::Messages, 10), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        let keys: Vec<&str> = batch.iter().map(|e| e.dedupe_key.as_str()).collect();
        assert_eq!(
            keys,
            ["later", "now"],
            "fresh events of the group come along"
        );
        // A kind that takes one at a time always gets the ready head, not an older future event.
        let q = open(kind).await;
        q.enqueue(ev("future", "g").at(now_millis() + 60_000))
            .await
            .unwrap();
        q.enqueue(ev("ready", "g")).await.unwrap();
        let one = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].dedupe_key, "ready");
    }
}

#[tokio::test]
async fn outcomes_are_recorded_only_under_the_lease_and_follow_ups_go_with_them() {
    for kind in kinds() {
        let q = open(kind).await;
        let run = q.create_run(RunKind::Poll, RunTrigger::Cli).await.unwrap();
        q.enqueue(ev("a", "g").in_run(Some(run))).await.unwrap();
        let c = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(c[0].run_id, Some(run));
        // An intruder's outcome (e.g. after its lease was taken over) changes nothing.
        q.record(
            "intruder",
            Record {
                done: ids(&c),
                follow_ups: vec![ev("intruder-child", "h")],
                ..Record::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(q.rows().await.unwrap().len(), 1);
        assert_eq!(q.rows().await.unwrap()[0].status, EventStatus::Running);
        q.record(
            "w",
            Record {
                done: ids(&c),
                follow_ups: vec![ev("child", "h").in_run(Some(run)), ev("a", "g")],
                result: Some(r#"{"written":1}"#.into()),
                ..Record::default()
            },
        )
        .await
        .unwrap();
        let rows = q.rows().await.unwrap();
        assert_eq!(rows.len(), 2, "the duplicate follow-up is ignored");
        assert_eq!(rows[1].dedupe_key, "child");
        assert_eq!(rows[1].run_id, Some(run));
        let o = q.outcome(c[0].id).await.unwrap().unwrap();
        assert_eq!(o.status, EventStatus::Done);
        assert_eq!(o.result, Some(serde_json::json!({"written": 1})));
        let payload = payload_of(&q, c[0].id).await;
        assert!(payload.is_empty(), "a done event's payload is not kept");
        assert_eq!(q.run_jobs(run).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn given_up_events_keep_their_reason_and_requeue_brings_them_back() {
    for kind in kinds() {
        let q = open(kind).await;
        q.enqueue(ev("perm", "g1")).await.unwrap();
        q.enqueue(ev("dead", "g2")).await.unwrap();
        let a = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        let b = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        q.record(
            "w",
            Record {
                given_up: vec![
                    (a[0].id, EventStatus::Failed, "unknown page 42".into()),
                    (b[0].id, EventStatus::Dead, "store down for 72 h".into()),
                ],
                ..Record::default()
            },
        )
        .await
        .unwrap();
        let s = q.stats().await.unwrap();
        assert_eq!((s.failed, s.dead_lettered, s.pending), (1, 1, 0));
        let failures = q.recent_failures(10).await.unwrap();
        assert_eq!(failures.len(), 2);
        assert!(failures
            .iter()
            .any(|r| r.last_error.as_deref() == Some("store down for 72 h")));
        assert_eq!(q.requeue_failed().await.unwrap(), 2);
        let again = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(again[0].attempts, 1, "fresh attempts");
        assert!(
            now_millis() - again[0].received_at < 60_000,
            "a fresh retry horizon"
        );
    }
}

#[tokio::test]
async fn orphans_and_expired_leases_return_to_the_queue() {
    for kind in kinds() {
        let q = open(kind).await;
        q.enqueue(ev("a", "g")).await.unwrap();
        let c = q
            .claim("w", &spec(Pool::Messages, 1), Duration::ZERO)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert!(q
            .claim("w2", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .is_none());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.reclaim_expired().await.unwrap(), 1);
        let again = q
            .claim("w2", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(again[0].id, c[0].id);
        assert_eq!(
            q.reclaim_expired().await.unwrap(),
            0,
            "a live lease is kept"
        );
        match kind {
            // One process owns the file: whatever runs at start was left by a dead one.
            Kind::Sqlite => assert_eq!(q.recover_orphans().await.unwrap(), 1),
            // Another instance may be running it: only an expired lease comes back.
            Kind::Postgres => {
                assert_eq!(
                    q.recover_orphans().await.unwrap(),
                    0,
                    "a live lease is kept"
                );
                q.extend_lease(ids(&again), "w2", Duration::ZERO)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert_eq!(q.recover_orphans().await.unwrap(), 1);
            }
        }
        let third = q
            .claim("w3", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(third[0].attempts, 3);
    }
}

#[tokio::test]
async fn waiting_for_an_outcome_returns_when_it_is_recorded() {
    for kind in kinds() {
        let q = open(kind).await;
        let id = q.enqueue(ev("a", "g")).await.unwrap().id();
        let pending = q
            .wait_for(id, Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pending.status, EventStatus::Pending);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.wait_for(id, Duration::from_secs(30)).await });
        let c = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        let started = std::time::Instant::now();
        q.record("w", done(ids(&c))).await.unwrap();
        let o = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(o.status, EventStatus::Done);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn group_prefixes_select_exactly_their_groups() {
    for kind in kinds() {
        let q = open(kind).await;
        for (k, g) in [
            ("1", "fbconv:12:5"),
            ("2", "fbconv:12:6"),
            ("3", "fbconv:123:5"),
            ("4", "fbpage:12"),
        ] {
            q.enqueue(ev(k, g)).await.unwrap();
        }
        let c = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(c[0].group_key, "fbconv:12:5");
        let n = q
            .running_in_groups(vec!["fbpage:12".into()], vec!["fbconv:12:".into()])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let purged = q
            .purge_groups(vec!["fbpage:12".into()], vec!["fbconv:12:".into()])
            .await
            .unwrap();
        assert_eq!(purged, 2, "the running one stays, page 123 is another page");
        let left: Vec<String> = q
            .rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.group_key)
            .collect();
        assert_eq!(left, ["fbconv:12:5", "fbconv:123:5"]);
    }
}

#[tokio::test]
async fn concurrent_enqueues_all_commit() {
    for kind in kinds() {
        let q = open(kind).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..500 {
            let q = q.clone();
            set.spawn(async move { q.enqueue(ev(&format!("k{}", i % 250), "g")).await });
        }
        let mut inserted = 0;
        while let Some(r) = set.join_next().await {
            if matches!(r.unwrap().unwrap(), Enqueued::Inserted(_)) {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 250);
        assert_eq!(q.rows().await.unwrap().len(), 250);
    }
}

#[tokio::test]
async fn unknown_statuses_in_the_database_are_errors_not_defaults() {
    for kind in kinds() {
        let q = open(kind).await;
        q.enqueue(ev("a", "g")).await.unwrap();
        // The CHECK constraint refuses a status the code does not know.
        let r = raw(&q, "UPDATE events SET status = 'paused'").await;
        assert!(r.is_err(), "{r:?}");
        assert_eq!(raw(&q, "UPDATE events SET status = 'done'").await, Ok(1));
    }
}

#[tokio::test]
async fn group_queries_and_payload_rewrites_agree_on_every_backend() {
    for kind in kinds() {
        let q = open(kind).await;
        let a = q.enqueue(ev("a", "fbconv:1:1")).await.unwrap().id();
        q.enqueue(in_pool(ev("b", "fbpage:1"), Pool::Poll, "testkit_effect"))
            .await
            .unwrap();
        let c = q
            .claim("w", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .unwrap();
        assert_eq!(ids(&c), [a]);
        let open_groups = q.open_groups(vec!["testkit"]).await.unwrap();
        assert_eq!(open_groups.into_iter().collect::<Vec<_>>(), ["fbconv:1:1"]);
        assert!(q.open_groups(Vec::new()).await.unwrap().is_empty());
        assert_eq!(q.running_of_kind("testkit").await.unwrap(), 1);
        assert_eq!(q.running_of_kind("testkit_effect").await.unwrap(), 0);
        // An empty prefix, or one SQLite's byte range cannot raise, selects nothing.
        for p in ["", "fbconv:1:\u{e9}"] {
            let n = q.running_in_groups(Vec::new(), vec![p.into()]).await;
            assert_eq!(n.unwrap(), 0, "prefix {p:?}");
        }
        let payloads = q.unfinished_payloads("testkit_effect").await.unwrap();
        assert_eq!(payloads.len(), 1);
        let b = payloads[0].0;
        assert!(!q.rewrite_payload(a, Some(b"x".to_vec())).await.unwrap());
        assert!(q.rewrite_payload(b, Some(b"[1]".to_vec())).await.unwrap());
        assert_eq!(payload_of(&q, b).await, b"[1]");
        let o = q.outcome_of_key("b").await.unwrap().unwrap();
        assert_eq!((o.id, o.status), (b, EventStatus::Pending));
        assert!(q.outcome_of_key("nope").await.unwrap().is_none());
        assert!(q.rewrite_payload(b, None).await.unwrap());
        assert!(q.outcome(b).await.unwrap().is_none());
        q.record("w", done(ids(&c))).await.unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(q.prune_finished(hour, hour).await.unwrap(), 0, "kept");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            q.prune_finished(Duration::ZERO, Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(q.rows().await.unwrap().is_empty());
    }
}

/// A deletion of many pages at once: more group keys and prefixes than a statement's
/// fixed-size binding takes (SQLite binds them by name, however many).
#[tokio::test]
async fn many_groups_at_once_are_counted_and_purged() {
    for kind in kinds() {
        let q = open(kind).await;
        let pages: Vec<u32> = (1..=40).collect();
        for p in &pages {
            q.enqueue(ev(&format!("page{p}"), &format!("fbpage:{p}")))
                .await
                .unwrap();
            q.enqueue(ev(&format!("conv{p}"), &format!("fbconv:{p}:9")))
                .await
                .unwrap();
        }
        q.enqueue(ev("other", "fbpage:999")).await.unwrap();
        let c = claim_messages(&q).await;
        assert_eq!(c[0].group_key, "fbpage:1");
        let exact: Vec<String> = pages.iter().map(|p| format!("fbpage:{p}")).collect();
        let prefixes: Vec<String> = pages.iter().map(|p| format!("fbconv:{p}:")).collect();
        let n = q.running_in_groups(exact.clone(), prefixes.clone()).await;
        assert_eq!(n.unwrap(), 1, "{kind:?}");
        let purged = q.purge_groups(exact, prefixes).await.unwrap();
        assert_eq!(purged, 79, "{kind:?}: all but the running one");
        let left: Vec<String> = q
            .rows()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.group_key)
            .collect();
        assert_eq!(left, ["fbpage:1", "fbpage:999"]);
    }
}
