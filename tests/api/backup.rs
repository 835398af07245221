//! Backups of a running server (SPEC §7): the online backup API gives a consistent copy while
//! webhook deliveries keep being committed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_deliveries_are_written_is_consistent_and_complete() {
    const BEFORE: usize = 300;
    const POSTERS: usize = 8;
    // Backups are of the SQLite files (on PostgreSQL the database's own backups apply).
    let app = spawn_app(&vars(&[(SQLITE_ONLY, "1")])).await;
    let url = app.url("/_testkit/webhook");

    let next_id = Arc::new(AtomicUsize::new(1));
    let acked: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters = tokio::task::JoinSet::new();
    for _ in 0..POSTERS {
        let (client, url) = (app.client.clone(), url.clone());
        let (next_id, acked, stop) = (next_id.clone(), acked.clone(), stop.clone());
        posters.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                let status = post_testkit_delivery(&client, &url, id, 0).await;
                assert_eq!(status, 200, "delivery {id} was not acknowledged");
                acked.lock().unwrap().insert(id);
            }
        });
    }

    let count = || acked.lock().unwrap().len();
    eventually("enough deliveries acknowledged", || {
        let n = count();
        async move { n >= BEFORE }
    })
    .await;

    // Everything acknowledged up to here must be in the backup.
    let before: HashSet<usize> = acked.lock().unwrap().clone();
    let report = salesbot_sync::backup::backup_all(&app.state.config, None)
        .await
        .expect("backup succeeds while deliveries arrive");

    // Deliveries kept arriving around the backup.
    let target = before.len() + 50;
    eventually("more deliveries after the backup", || {
        let n = count();
        async move { n >= target }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = posters.join_next().await {
        r.unwrap();
    }
    let total = count();

    let events = report
        .files
        .iter()
        .find(|f| f.db == "events")
        .expect("events.db in the set");
    assert_eq!(events.path, report.set_dir.join("events.db"));
    let conn = rusqlite::Connection::open_with_flags(
        &events.path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(check, vec!["ok".to_string()]);

    let in_backup: HashSet<String> = conn
        .prepare("SELECT dedupe_key FROM events WHERE kind = 'testkit'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut missing: Vec<usize> = before
        .iter()
        .copied()
        .filter(|id| !in_backup.contains(&format!("testkit:{id}")))
        .collect();
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{} of {} deliveries acknowledged before the backup are missing from it: {:?}",
        missing.len(),
        before.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        in_backup.len() < total,
        "the backup is a snapshot: deliveries after it are not in it ({} in backup, {total} acknowledged)",
        in_backup.len()
    );

    // The other databases are in the set and the whole set verifies.
    let dbs: Vec<&str> = report.files.iter().map(|f| f.db).collect();
    assert_eq!(dbs, vec!["tokens", "sessions", "events"]);
    salesbot_sync::backup::verify_set(&report.set_dir).expect("the set verifies");

    tokio::time::timeout(Duration::from_secs(60), app.stop())
        .await
        .expect("server stops")
        .unwrap();
}
