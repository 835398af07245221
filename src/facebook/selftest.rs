//! The connect self-test: correctly signed synthetic deliveries posted to our own public
//! webhook address (a metadata change and a message from a reserved customer id), and the job
//! that verifies the message reached the object store and then removes its conversation, so
//! merchant data never holds it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::jobs::FacebookMessage;
use crate::config::FacebookSettings;
use crate::connect::Step;
use crate::crypto::secret_bytes;
use crate::ids::{PageId, Psid};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::keys;
use crate::platforms::facebook::signature::sign_webhook;
use crate::state::AppState;
use crate::store::events::{EventStatus, Pool};
use crate::store::{now_millis, now_secs};

/// The self-test conversation's customer id: digits only, as every PSID, but starting with 0,
/// which real PSIDs never do.
pub const SELF_TEST_PSID: &str = "0000000000000000";
/// How long the verification waits for the test message to be queued at all (the delivery may
/// never have arrived) before giving up. Once queued, it waits for the merge however long it
/// takes (a store outage), so the test conversation is never written after its removal.
const VERIFY_FOR: Duration = Duration::from_secs(600);
const RECHECK: Duration = Duration::from_millis(250);
/// Rechecks slow down once the merge is late (a store outage, a long queue).
const RECHECK_LATE: Duration = Duration::from_secs(5);
const LATE_AFTER: Duration = Duration::from_secs(30);

pub fn self_test_psid() -> Psid {
    Psid::parse(SELF_TEST_PSID).expect("the constant is digits")
}

/// Posts a delivery to our own public webhook address, signed like Meta signs.
async fn post_delivery(state: &AppState, settings: &FacebookSettings, delivery: &Value) -> Step {
    let body = delivery.to_string();
    let r = state
        .http
        .post(settings.webhook_address.clone())
        .header("Content-Type", "application/json")
        .header(
            "X-Hub-Signature-256",
            sign_webhook(secret_bytes(&settings.app_secret), body.as_bytes()),
        )
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match r {
        Ok(resp) if resp.status().is_success() => Step::Success,
        Ok(resp) => Step::error(format!("webhook address answered {}", resp.status())),
        Err(e) => Step::error(format!("webhook address unreachable: {}", e.without_url())),
    }
}

/// The two webhook self-tests of a page.
pub struct Posted {
    pub metadata: Step,
    pub message: Step,
    /// The test message's `mid`, for the verification job.
    pub mid: String,
}

pub async fn post_test_deliveries(
    state: &AppState,
    settings: &FacebookSettings,
    page: &PageId,
) -> Posted {
    let id = page.as_str();
    let mid = format!("m_salesbot-self-test-{}", Uuid::new_v4());
    let now_ms = now_secs() * 1000;
    let metadata = json!({
        "object": "page",
        "entry": [{"id": id, "time": now_ms, "changes": [{"field": "name", "value": "salesbot-sync self-test"}]}]
    });
    let message = json!({
        "object": "page",
        "entry": [{"id": id, "time": now_ms, "messaging": [{
            "sender": {"id": SELF_TEST_PSID},
            "recipient": {"id": id},
            "timestamp": now_ms,
            "message": {"mid": mid, "text": "salesbot-sync self-test"}
        }]}]
    });
    Posted {
        metadata: post_delivery(state, settings, &metadata).await,
        message: post_delivery(state, settings, &message).await,
        mid,
    }
}

/// Waits for the test message's merge, checks its conversation object exists, then removes
/// it. Runs in the test conversation's group, so it never overlaps the merge.
#[derive(Debug, Serialize, Deserialize)]
pub struct SelfTestCleanup {
    pub page: PageId,
    pub mid: String,
    /// Give up after this (unix ms).
    pub until: i64,
}

impl SelfTestCleanup {
    pub fn new(page: PageId, mid: String) -> SelfTestCleanup {
        SelfTestCleanup {
            page,
            mid,
            until: now_millis() + VERIFY_FOR.as_millis() as i64,
        }
    }
}

impl Job for SelfTestCleanup {
    const KIND: &'static str = "facebook_self_test";
    /// A HEAD and a DELETE on one conversation: short work, beside the merges.
    const POOL: Pool = Pool::Messages;
    /// The test message is normally merged within this.
    const DELAY: Duration = Duration::from_millis(200);
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.page, &self.mid])
    }

    fn group(&self) -> GroupKey {
        GroupKey::conversation(&self.page, &self_test_psid())
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let Some(rec) = state.tokens.page(&job.page).await.map_err(store)? else {
            // Disconnected or deleted meanwhile: its objects went with it.
            return Ok(
                JobOutput::done().with_result(Step::failed("the page is no longer connected"))
            );
        };
        let key = keys::conversation(&rec.merchant, &job.page, &self_test_psid());
        let message = state
            .events
            .outcome_of_key(FacebookMessage::dedupe_for(&job.page, &job.mid).as_str())
            .await
            .map_err(store)?;
        let verdict = match message.map(|o| (o.status, o.last_error)) {
            Some((EventStatus::Done, _)) => match state.objects.head_sha256(&key).await {
                Ok(Some(_)) => Step::Success,
                Ok(None) => Step::failed("Conversation upload not found"),
                Err(e) => return Err(JobError::Retry(e.to_string())),
            },
            Some((status, reason)) if status.is_finished() => Step::failed(format!(
                "the test message was not processed: {}",
                reason.unwrap_or_default()
            )),
            Some(_) => return Err(later(job, "waiting for the self-test message's merge")),
            None if now_millis() < job.until => {
                return Err(later(job, "waiting for the self-test message"))
            }
            None => Step::failed("the test message never reached the queue"),
        };
        // Whatever the verdict, merchant data never keeps the test conversation.
        state
            .objects
            .delete(&key)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        Ok(JobOutput::done().with_result(verdict))
    }
}

fn later(job: &SelfTestCleanup, reason: &str) -> JobError {
    let started = job.until - VERIFY_FOR.as_millis() as i64;
    let late = now_millis() - started > LATE_AFTER.as_millis() as i64;
    JobError::Later {
        after: if late { RECHECK_LATE } else { RECHECK },
        reason: reason.into(),
    }
}

fn store(e: crate::store::StoreError) -> JobError {
    JobError::Retry(e.to_string())
}
