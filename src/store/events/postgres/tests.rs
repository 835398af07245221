//! Several instances on one database: each `EventStore` here has its own pool, listener and
//! wake-ups, as two processes would. Skipped when `TEST_DATABASE_URL` is unset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::tests::{done, ev, ids, spec, LEASE};
use super::super::{Enqueued, EventId, EventStatus, EventStore, Pool, Record};
use crate::config::DatabaseSettings;
use crate::store::postgres::{test_db, PgDb};
use crate::store::Backend;

fn in_pool(mut e: super::super::NewEvent, pool: Pool) -> super::super::NewEvent {
    e.pool = pool;
    e
}

/// Two instances on one fresh database: the second connects by URL like a second process.
async fn two_instances() -> Option<(EventStore, EventStore)> {
    let a = test_db().await?;
    let base = std::env::var("TEST_DATABASE_URL").ok()?;
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(a.pool().connect_options().get_database().unwrap());
    let b = PgDb::connect(&DatabaseSettings {
        url: secrecy::SecretString::from(url.to_string()),
        max_connections: 8,
    })
    .await
    .unwrap();
    Some((
        EventStore::on_postgres(a).await.unwrap(),
        EventStore::on_postgres(b).await.unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_claim_a_row_or_run_a_group_twice_at_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    const EVENTS: usize = 200;
    const GROUPS: usize = 10;
    let batch = (0..EVENTS)
        .map(|i| ev(&format!("e{i}"), &format!("g{}", i % GROUPS)))
        .collect();
    a.enqueue_all(batch).await.unwrap();

    // Per group: batches running now (as the claimers see them); per event: times claimed.
    let running: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let claimed: Arc<Mutex<HashMap<EventId, usize>>> = Arc::default();
    let overlaps = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut set = tokio::task::JoinSet::new();
    for (s, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for w in 0..4 {
            let (store, running, claimed, overlaps) = (
                store.clone(),
                running.clone(),
                claimed.clone(),
                overlaps.clone(),
            );
            set.spawn(async move {
                let worker = format!("s{s}w{w}");
                let deadline = Instant::now() + Duration::from_secs(60);
                while claimed.lock().unwrap().len() < EVENTS && Instant::now() < deadline {
                    let claim = store.claim(&worker, &spec(Pool::Messages, 5), LEASE).await;
                    let Some(batch) = claim.unwrap().batch() else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    };
                    let group = batch[0].group_key.clone();
                    assert!(batch.iter().all(|e| e.group_key == group));
                    {
                        let mut r = running.lock().unwrap();
                        let n = r.entry(group.clone()).or_default();
                        if *n > 0 {
                            overlaps.lock().unwrap().push(group.clone());
                        }
                        *n += 1;
                        let mut c = claimed.lock().unwrap();
                        for e in &batch {
                            *c.entry(e.id).or_default() += 1;
                        }
                    }
                    // Hold the group a moment, so overlapping claims would have time to happen.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    // Leaves the count before the commit frees the group: a later claim of it
                    // is never mistaken for an overlap.
                    *running.lock().unwrap().get_mut(&group).unwrap() -= 1;
                    store.record(&worker, done(ids(&batch))).await.unwrap();
                }
            });
        }
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    assert!(
        overlaps.lock().unwrap().is_empty(),
        "groups run twice at once: {:?}",
        overlaps.lock().unwrap()
    );
    {
        let claimed = claimed.lock().unwrap();
        assert_eq!(claimed.len(), EVENTS, "every event was claimed");
        assert!(
            claimed.values().all(|n| *n == 1),
            "no event was claimed twice"
        );
    }
    let rows = b.rows().await.unwrap();
    assert_eq!(rows.len(), EVENTS);
    assert!(rows
        .iter()
        .all(|r| r.status == EventStatus::Done && r.attempts == 1));
    let s = a.stats().await.unwrap();
    assert_eq!((s.done, s.pending, s.running), (EVENTS as i64, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_keys_queued_on_two_instances_are_stored_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    // Opposite orders: the inserts of the two transactions would deadlock if taken as given.
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:02}")).collect();
    let forward = keys.iter().map(|k| ev(k, "g")).collect::<Vec<_>>();
    let backward = keys.iter().rev().map(|k| ev(k, "g")).collect::<Vec<_>>();
    let (ra, rb) = tokio::join!(a.enqueue_together(forward), b.enqueue_together(backward));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut inserted = 0;
    for (i, x) in ra.iter().enumerate() {
        let y = rb[keys.len() - 1 - i];
        assert_eq!(x.id(), y.id(), "both name the one row of {}", keys[i]);
        inserted += [*x, y]
            .iter()
            .filter(|e| matches!(e, Enqueued::Inserted(_)))
            .count();
    }
    assert_eq!(inserted, keys.len(), "each key inserted exactly once");
    assert_eq!(a.rows().await.unwrap().len(), keys.len());
}

#[tokio::test]
async fn an_expired_lease_of_a_dead_instance_is_taken_over_and_finished() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let id = a.enqueue(ev("job", "g")).await.unwrap().id();
    // A claims and then "dies": its heartbeat stops, so the lease runs out.
    let held = a
        .claim(
            "a-worker",
            &spec(Pool::Messages, 1),
            Duration::from_millis(500),
        )
        .await
        .unwrap()
        .batch()
        .unwrap();
    assert!(
        b.claim("b-worker", &spec(Pool::Messages, 1), LEASE)
            .await
            .unwrap()
            .batch()
            .is_none(),
        "a live lease is respected by the other instance"
    );
    assert_eq!(b.recover_orphans().await.unwrap(), 0, "the lease is live");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.reclaim_expired().await.unwrap(), 1);
    let taken = b
        .claim("b-worker", &spec(Pool::Messages, 1), LEASE)
        .await
        .unwrap()
        .batch()
        .unwrap();
    assert_eq!(ids(&taken), ids(&held));
    assert_eq!(taken[0].attempts, 2);
    b.record(
        "b-worker",
        Record {
            done: vec![id],
            result: Some(r#"{"by":"b"}"#.into()),
            ..Record::default()
        },
    )
    .await
    .unwrap();
    // The old holder coming back to life changes nothing.
    a.record(
        "a-worker",
        Record {
            given_up: vec![(id, EventStatus::Failed, "late".into())],
            ..Record::default()
        },
    )
    .await
    .unwrap();
    let o = a.outcome(id).await.unwrap().unwrap();
    assert_eq!(o.status, EventStatus::Done);
    assert_eq!(o.result, Some(serde_json::json!({"by": "b"})));
}

#[tokio::test]
async fn work_queued_or_finished_on_one_instance_wakes_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let wakers = b.wakers();
    let work = wakers.pool(Pool::Messages).notified();
    tokio::pin!(work);
    work.as_mut().enable();
    let started = Instant::now();
    let id = a.enqueue(ev("x", "g")).await.unwrap().id();
    tokio::time::timeout(Duration::from_secs(1), work)
        .await
        .expect("B's idle worker woke for work queued on A");

    let finished = wakers.finished.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    let c = a
        .claim("w", &spec(Pool::Messages, 1), LEASE)
        .await
        .unwrap()
        .batch()
        .unwrap();
    a.record("w", done(ids(&c))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), finished)
        .await
        .expect("B's waiters woke for a job finished on A");
    assert!(started.elapsed() < Duration::from_secs(2));
    let o = b.outcome(id).await.unwrap().unwrap();
    assert_eq!(o.status, EventStatus::Done);
}

#[tokio::test]
async fn the_listener_reconnects_after_its_connection_is_killed() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let Backend::Postgres(pg) = b.backend() else {
        unreachable!()
    };
    // Every listener connection of this database (A's and B's): both must come back.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(pg.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true, true], "two listeners were connected");
    // The reconnect (after its first backoff) wakes everyone once, to cover the gap; wait it
    // out so the wake-up below can only come from the new LISTEN.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wakers = b.wakers();
    // That wake-up leaves a permit for the next idle worker: take it first.
    let stored = tokio::time::timeout(
        Duration::from_millis(50),
        wakers.pool(Pool::Sync).notified(),
    )
    .await;
    assert!(stored.is_ok(), "the reconnect woke the pools");
    let work = wakers.pool(Pool::Sync).notified();
    tokio::pin!(work);
    work.as_mut().enable();
    a.enqueue(in_pool(ev("after", "g"), Pool::Sync))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), work)
        .await
        .expect("B listens again after losing its connection");
}
