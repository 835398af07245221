//! A built-in job kind for tests and benchmarks (feature `testkit`, never in release builds).
//!
//! `POST /_testkit/webhook` (`routes::testkit`) takes the same path as a platform webhook:
//! HMAC-SHA256 check of the raw body (base64 in `X-Testkit-Hmac-Sha256`, keyed with
//! `STATE_TOKEN_SECRET`), durable insert (`accept`), 200. The job sleeps `delay_ms`, writes
//! `_testkit/<id>.json` (idempotent) and records its effect as a follow-up `TestkitEffect` with
//! a unique dedupe key. The follow-up commits in the same transaction that marks the delivery
//! done, so counting effect rows counts completed runs exactly: a run cut off by a crash leaves
//! none.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::ids::GraphId;
use crate::jobs::{DedupeKey, GroupKey, IntakeError, Job, JobError, JobOutput};
use crate::objects::keys::testkit as testkit_key;
use crate::state::AppState;
use crate::store::events::Pool;

#[derive(Debug, Serialize, Deserialize)]
pub struct TestkitDelivery {
    id: String,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TestkitEffect {
    id: String,
    nonce: String,
}

/// Queues a signed test delivery.
pub async fn accept(state: &AppState, body: &[u8]) -> Result<(), IntakeError> {
    let d: TestkitDelivery =
        serde_json::from_slice(body).map_err(|e| IntakeError::Refused(e.to_string()))?;
    GraphId::parse(&d.id).map_err(|e| IntakeError::Refused(e.to_string()))?;
    state.events.enqueue(d.to_event()).await?;
    Ok(())
}

fn id_of(raw: &str) -> Result<GraphId, JobError> {
    GraphId::parse(raw).map_err(|e| JobError::Permanent(e.to_string()))
}

impl Job for TestkitDelivery {
    const KIND: &'static str = "testkit";
    const POOL: Pool = Pool::Messages;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.id])
    }

    fn group(&self) -> GroupKey {
        // Validated at intake; an id that no longer parses gets a group of its own anyway.
        match GraphId::parse(&self.id) {
            Ok(id) => GroupKey::testkit(&id),
            Err(_) => GroupKey::testkit_effects(),
        }
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let mut out = JobOutput::done();
        for d in batch {
            let id = id_of(&d.id)?;
            tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
            state
                .objects
                .put_json_if_changed(&testkit_key(&id), &json!({"id": id.as_str()}))
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            out = out.then(&TestkitEffect {
                id: id.to_string(),
                nonce: crate::crypto::random_token(12),
            });
        }
        Ok(out)
    }
}

/// Effect rows need no processing; the job just completes them.
impl Job for TestkitEffect {
    const KIND: &'static str = "testkit_effect";
    const POOL: Pool = Pool::Messages;
    const MAX_BATCH: usize = 500;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.id, &self.nonce])
    }

    fn group(&self) -> GroupKey {
        GroupKey::testkit_effects()
    }

    async fn run(_: &AppState, _: Vec<Self>) -> Result<JobOutput, JobError> {
        Ok(JobOutput::done())
    }
}
