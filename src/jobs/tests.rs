//! The runner's semantics against a real queue file, with small job types of their own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ids::GraphId;
use crate::store::events::{EventRow, EventStatus, EventStore};

#[derive(Clone, Default)]
struct Ctx {
    calls: Arc<AtomicUsize>,
    /// Runs that fail before the first success.
    fail_times: usize,
    batch_sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    id: String,
    #[serde(default)]
    forever: bool,
}

impl Job for Flaky {
    const KIND: &'static str = "testkit";
    const POOL: Pool = Pool::Messages;
    const MAX_BATCH: usize = 50;
    type Context = Ctx;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.id])
    }

    fn group(&self) -> GroupKey {
        GroupKey::testkit(&GraphId::parse("1").unwrap())
    }

    fn retry_forever(&self) -> bool {
        self.forever
    }

    async fn run(ctx: &Ctx, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let n = ctx.calls.fetch_add(1, Ordering::SeqCst);
        ctx.batch_sizes.lock().unwrap().push(batch.len());
        if batch.iter().any(|j| j.id == "panic") {
            panic!("a bug in a job");
        }
        if n < ctx.fail_times {
            return Err(JobError::Retry(format!("try {n}")));
        }
        Ok(JobOutput::done().with_result(serde_json::json!({"batch": batch.len()})))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Broken;

impl Job for Broken {
    const KIND: &'static str = "testkit_effect";
    const POOL: Pool = Pool::Sync;
    type Context = Ctx;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&"broken"])
    }

    fn group(&self) -> GroupKey {
        GroupKey::testkit_effects()
    }

    async fn run(_: &Ctx, _: Vec<Self>) -> Result<JobOutput, JobError> {
        Err(JobError::Permanent("unknown page 42".into()))
    }
}

fn fast(horizon: Duration) -> WorkerConfig {
    WorkerConfig {
        pools: PoolSizes {
            messages: 2,
            sync: 1,
            poll: 1,
        },
        lease: Duration::from_secs(30),
        retry: RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            horizon,
        },
        idle_poll: Duration::from_millis(20),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    q: EventStore,
    stop: CancellationToken,
    set: tokio::task::JoinSet<()>,
}

fn start(ctx: Ctx, horizon: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let q = EventStore::open(&dir.path().join("e.db")).unwrap();
    let mut reg = Registry::default();
    reg.register::<Flaky>().register::<Broken>();
    let stop = CancellationToken::new();
    let set = spawn_workers(
        q.clone(),
        Arc::new(reg),
        ctx,
        ("test", fast(horizon)),
        stop.clone(),
    );
    Harness {
        _dir: dir,
        q,
        stop,
        set,
    }
}

impl Harness {
    async fn until(&self, f: impl Fn(&[EventRow]) -> bool) -> Vec<EventRow> {
        for _ in 0..1000 {
            let rows = self.q.rows().await.unwrap();
            if f(&rows) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached: {:?}", self.q.rows().await.unwrap());
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.set.join_next().await.is_some() {}
    }
}

fn finished(rows: &[EventRow]) -> bool {
    !rows.is_empty() && rows.iter().all(|r| r.status.is_finished())
}

fn flaky(id: &str) -> Flaky {
    Flaky {
        id: id.into(),
        forever: false,
    }
}

#[tokio::test]
async fn retries_then_succeeds_and_permanent_failures_fail_at_once() {
    let ctx = Ctx {
        fail_times: 2,
        ..Ctx::default()
    };
    let h = start(ctx.clone(), Duration::from_secs(3600));
    let id = h.q.enqueue(flaky("1").to_event()).await.unwrap().id();
    h.q.enqueue(Broken.to_event()).await.unwrap();
    let rows = h.until(finished).await;
    assert_eq!(rows[0].status, EventStatus::Done);
    assert_eq!(rows[0].attempts, 3);
    assert_eq!(rows[1].status, EventStatus::Failed);
    assert_eq!(rows[1].last_error.as_deref(), Some("unknown page 42"));
    assert_eq!(rows[1].attempts, 1, "permanent failures are not retried");
    let o = h.q.outcome(id).await.unwrap().unwrap();
    assert_eq!(o.result, Some(serde_json::json!({"batch": 1})));
    h.stop().await;
}

#[tokio::test]
async fn an_undecodable_payload_fails_alone_and_its_batch_mates_run() {
    let ctx = Ctx::default();
    let dir = tempfile::tempdir().unwrap();
    let q = EventStore::open(&dir.path().join("e.db")).unwrap();
    // Queue first, start the workers after, so all three are claimed as one batch.
    let mut bad = flaky("bad").to_event();
    bad.payload = br#"{"id": 7}"#.to_vec();
    q.enqueue(flaky("a").to_event()).await.unwrap();
    q.enqueue(bad).await.unwrap();
    q.enqueue(flaky("b").to_event()).await.unwrap();
    let mut reg = Registry::default();
    reg.register::<Flaky>();
    let stop = CancellationToken::new();
    let mut set = spawn_workers(
        q.clone(),
        Arc::new(reg),
        ctx.clone(),
        ("test", fast(Duration::from_secs(3600))),
        stop.clone(),
    );
    let h = Harness {
        _dir: dir,
        q,
        stop: stop.clone(),
        set: std::mem::take(&mut set),
    };
    let rows = h.until(finished).await;
    let status: Vec<EventStatus> = rows.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        [EventStatus::Done, EventStatus::Failed, EventStatus::Done]
    );
    assert!(rows[1]
        .last_error
        .as_deref()
        .unwrap()
        .contains("could not be decoded"));
    assert_eq!(*ctx.batch_sizes.lock().unwrap(), vec![2]);
    h.stop().await;
}

#[tokio::test]
async fn unknown_kinds_fail_with_a_reason() {
    let h = start(Ctx::default(), Duration::from_secs(3600));
    let mut e = flaky("1").to_event();
    e.kind = "from_a_newer_version";
    h.q.enqueue(e).await.unwrap();
    let rows = h.until(finished).await;
    assert_eq!(rows[0].status, EventStatus::Failed);
    assert!(rows[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("no job type"));
    h.stop().await;
}

#[tokio::test]
async fn retryable_work_is_dead_lettered_after_its_horizon_not_after_a_count() {
    let ctx = Ctx {
        fail_times: usize::MAX,
        ..Ctx::default()
    };
    let h = start(ctx.clone(), Duration::from_millis(600));
    h.q.enqueue(flaky("1").to_event()).await.unwrap();
    h.q.enqueue(
        Flaky {
            id: "compliance".into(),
            forever: true,
        }
        .to_event(),
    )
    .await
    .unwrap();
    let rows = h
        .until(|rows| rows.iter().any(|r| r.status == EventStatus::Dead))
        .await;
    assert_eq!(rows[0].status, EventStatus::Dead);
    assert!(
        rows[0].attempts > 3,
        "retried until the horizon: {}",
        rows[0].attempts
    );
    assert_eq!(
        rows[0].last_error.as_deref().map(|e| e.starts_with("try")),
        Some(true)
    );
    // Compliance work keeps trying past the horizon.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rows = h.q.rows().await.unwrap();
    assert_ne!(rows[1].status, EventStatus::Dead);
    assert!(!rows[1].status.is_finished());
    assert_eq!(h.q.stats().await.unwrap().dead_lettered, 1);
    h.stop().await;
}

#[tokio::test]
async fn a_panicking_job_is_retried_and_the_worker_survives() {
    let ctx = Ctx::default();
    let h = start(ctx.clone(), Duration::from_millis(300));
    h.q.enqueue(flaky("panic").to_event()).await.unwrap();
    let rows = h.until(finished).await;
    assert_eq!(rows[0].status, EventStatus::Dead);
    assert!(rows[0].last_error.as_deref().unwrap().contains("panicked"));
    // The workers still run work.
    h.q.enqueue(flaky("after").to_event()).await.unwrap();
    let rows = h.until(|r| r.len() == 2 && finished(r)).await;
    assert_eq!(rows[1].status, EventStatus::Done);
    h.stop().await;
}
