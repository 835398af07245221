//! The durable queue through the real binary: acknowledged deliveries survive SIGKILL and are
//! processed exactly once after a restart.

use std::collections::HashMap;
use std::time::Duration;

use salesbot_sync::store::events::EventStatus;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_sigkill_and_run_exactly_once() {
    const N: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    // On PostgreSQL the restarted server takes the killed one's jobs over when their leases
    // run out (on SQLite it re-queues them at start).
    let lease = vars(&[("JOB_LEASE_SECS", "3")]);
    let server = start_binary(dir.path(), &lease);
    let client = reqwest::Client::new();
    let url = server.url("/_testkit/webhook");
    let mut set = tokio::task::JoinSet::new();
    for i in 1..=N {
        let (c, u) = (client.clone(), url.clone());
        // 40 ms per delivery over 4 workers: about 2 s of work, so the kill lands mid-way.
        set.spawn(async move { post_testkit_delivery(&c, &u, i, 40).await });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    // Every delivery is acknowledged; once work is under way, kill the process without
    // warning (on a loaded machine the workers may not have started when the last ack lands).
    let q = stores_of(dir.path(), &[]).await.events;
    eventually("the first deliveries processed", || {
        let q = q.clone();
        async move {
            q.rows()
                .await
                .unwrap()
                .iter()
                .any(|r| r.kind == "testkit" && r.status == EventStatus::Done)
        }
    })
    .await;
    drop(q);
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let (done_before, running_before) = {
        let q = stores_of(dir.path(), &[]).await.events;
        let rows = q.rows().await.unwrap();
        assert_eq!(
            rows.iter().filter(|r| r.kind == "testkit").count(),
            N,
            "every ack is a row"
        );
        let count = |status| {
            rows.iter()
                .filter(|r| r.kind == "testkit" && r.status == status)
                .count()
        };
        (count(EventStatus::Done), count(EventStatus::Running))
    };
    assert!(
        done_before < N,
        "the kill must land before processing finished ({done_before} done)"
    );

    // A redelivery of an acknowledged event is a no-op.
    let server = start_binary(dir.path(), &lease);
    assert_eq!(
        post_testkit_delivery(&client, &server.url("/_testkit/webhook"), 1, 0).await,
        200
    );
    let q = stores_of(dir.path(), &[]).await.events;
    eventually("all deliveries processed after restart", || {
        let q = q.clone();
        async move {
            let rows = q.rows().await.unwrap();
            rows.iter()
                .filter(|r| r.kind == "testkit" && r.status == EventStatus::Done)
                .count()
                == N
                && rows.iter().filter(|r| r.kind == "testkit_effect").count() >= N
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = q.rows().await.unwrap();
    assert_eq!(rows.iter().filter(|r| r.kind == "testkit").count(), N);
    // Each effect row's dedupe key is `testkit_effect:<id>:<random>`: count per id.
    let mut effects: HashMap<String, usize> = HashMap::new();
    for r in rows.iter().filter(|r| r.kind == "testkit_effect") {
        let id = r.dedupe_key.split(':').nth(1).unwrap().to_string();
        *effects.entry(id).or_default() += 1;
    }
    assert_eq!(effects.len(), N, "every delivery processed");
    let twice: Vec<_> = effects.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    // And the handler's object exists for every delivery.
    for i in 1..=N {
        assert!(dir
            .path()
            .join(format!("objects/_testkit/{i}.json"))
            .exists());
    }
    let (status, logs) = server.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {status:?}\n{logs}"
    );
    // What the killed process was running was taken over. SQLite: the one server of the
    // file re-queues it at start; PostgreSQL: any instance takes it over once its leases run
    // out (at start if they already have, else on the reaper's next sweep).
    if running_before > 0 {
        let taken_over: &[&str] = if on_postgres() {
            &[
                "re-queued events whose lease expired",
                "re-queued events left running by a previous process",
            ]
        } else {
            &["re-queued events left running by a previous process"]
        };
        assert!(
            taken_over.iter().any(|line| logs.contains(line)),
            "{running_before} events were running at the kill: {logs}"
        );
    }
}

#[tokio::test]
async fn deliveries_are_processed_in_process_too() {
    let app = spawn_app(&[]).await;
    let url = app.url("/_testkit/webhook");
    for i in 1..=20 {
        assert_eq!(post_testkit_delivery(&app.client, &url, i, 0).await, 200);
    }
    // Forged signature: refused, nothing recorded.
    let r = app
        .client
        .post(&url)
        .header(
            "X-Testkit-Hmac-Sha256",
            sign_b64(b"wrong", b"{\"id\":\"99\"}"),
        )
        .body("{\"id\":\"99\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let events = app.state.events.clone();
    eventually("processed", || {
        let events = events.clone();
        async move {
            let s = events.stats().await.unwrap();
            s.pending == 0 && s.running == 0 && s.done == 40
        }
    })
    .await;
    assert!(!app
        .state
        .events
        .rows()
        .await
        .unwrap()
        .iter()
        .any(|r| r.dedupe_key == "testkit:99"));
    app.stop().await.unwrap();
}

/// Runs SQL on the app's events store (its SQLite file, or the PostgreSQL database).
async fn exec_events_sql(app: &TestApp, sql: String) {
    if let Some(pg) = &app.state.postgres {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pg.pool())
            .await
            .unwrap();
        return;
    }
    let path = app.state.config.events_db_path.clone();
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch(&sql).unwrap();
    })
    .await
    .unwrap();
}

const ABANDONED: &str = "jobs_abandoned_total";

#[tokio::test]
async fn a_job_whose_lease_was_taken_over_stops_before_its_next_write() {
    let app = spawn_app(&vars(&[("JOB_LEASE_SECS", "3")])).await;
    let before = app.metric(ABANDONED).await;
    let url = app.url("/_testkit/webhook");
    // A job that works 4 s before it writes its object.
    assert_eq!(
        post_testkit_delivery(&app.client, &url, 4242, 4_000).await,
        200
    );
    eventually("the job runs", || async {
        let rows = app.state.events.rows().await.unwrap();
        rows.iter()
            .any(|r| r.kind == "testkit" && r.status == EventStatus::Running)
    })
    .await;
    // Meanwhile another worker has taken its event over (as after this process was paused
    // past its lease, or cut off from the database).
    let until = salesbot_sync::store::now_millis() + 600_000;
    exec_events_sql(
        &app,
        format!(
            "UPDATE events SET locked_by = 'another-instance', locked_until = {until}
             WHERE status = 'running'"
        ),
    )
    .await;
    // The next renewal finds the lease gone: the job stops before its write, records
    // nothing, and the event stays the other worker's.
    eventually("the job is abandoned", || async {
        app.metric(ABANDONED).await > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let id = salesbot_sync::ids::GraphId::parse("4242").unwrap();
    let key = salesbot_sync::objects::keys::testkit(&id);
    assert!(
        app.state.objects.get(&key).await.unwrap().is_none(),
        "no write after the lease was lost"
    );
    let rows = app.state.events.rows().await.unwrap();
    let row = rows.iter().find(|r| r.kind == "testkit").unwrap();
    assert_eq!(row.status, EventStatus::Running, "{row:?}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_killed_instances_jobs_are_taken_over_at_once_not_after_their_lease() {
    if !on_postgres() {
        return; // one process owns a SQLite queue: it re-queues at start anyway
    }
    let dir = tempfile::tempdir().unwrap();
    // Leases far longer than the test may take: only knowing that the holder died can free
    // them in time.
    let lease = vars(&[("JOB_LEASE_SECS", "300")]);
    let server = start_binary(dir.path(), &lease);
    let client = reqwest::Client::new();
    let url = server.url("/_testkit/webhook");
    assert_eq!(post_testkit_delivery(&client, &url, 31, 3_000).await, 200);
    let q = stores_of(dir.path(), &[]).await.events;
    let running = || {
        let q = q.clone();
        async move {
            let rows = q.rows().await.unwrap();
            rows.iter()
                .any(|r| r.kind == "testkit" && r.status == EventStatus::Running)
        }
    };
    eventually("the job runs", running).await;
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    // A second instance (the restart) takes the dead one's job over and finishes it.
    let killed = std::time::Instant::now();
    let server = start_binary(dir.path(), &lease);
    eventually_within(
        Duration::from_secs(60),
        "the killed instance's job done",
        || {
            let q = q.clone();
            async move {
                let rows = q.rows().await.unwrap();
                rows.iter()
                    .any(|r| r.kind == "testkit" && r.status == EventStatus::Done)
            }
        },
    )
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(dir.path().join("objects/_testkit/31.json").exists());
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("re-queued events left running by a previous process")
            || logs.contains("re-queued events whose lease expired"),
        "{logs}"
    );
}
