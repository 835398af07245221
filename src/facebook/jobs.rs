//! Facebook's queued jobs. Every write to a conversation object runs in that conversation's
//! group (merges, its poll, the self-test clean-up); every write to a page's metadata in the
//! page's group (refreshes, page polls).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, value::RawValue, Value};

use super::conversations::{self, ConversationRef};
use super::pages::{self, writable_page};
use super::{graph, FbError};
use crate::crypto::sha256_hex;
use crate::ids::MerchantId;
use crate::ids::{PageId, Psid};
use crate::jobs::{DedupeKey, GroupKey, Job, JobError, JobOutput};
use crate::objects::PutOutcome;
use crate::state::AppState;
use crate::store::events::{NewEvent, Pool, RunId};

/// How long page metadata refreshes wait after a `changes` event, so a burst of edits becomes
/// one fetch.
pub const METADATA_DEBOUNCE: Duration = Duration::from_secs(2);

/// A raw, signature-checked delivery, stored exactly as received (the payload is the body).
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FacebookDelivery(pub Box<RawValue>);

impl Job for FacebookDelivery {
    const KIND: &'static str = "facebook";
    const POOL: Pool = Pool::Messages;
    type Context = AppState;

    /// An identical redelivery is a no-op.
    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(
            Self::KIND,
            &[&"sha256", &sha256_hex(self.0.get().as_bytes())],
        )
    }

    /// A delivery touches nothing until fanned out: spread over groups by its digest.
    fn group(&self) -> GroupKey {
        GroupKey::delivery(&sha256_hex(self.0.get().as_bytes()))
    }

    async fn run(_: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let mut out = JobOutput::done();
        let mut rejected = Vec::new();
        for d in batch {
            let f = super::process::jobs_of(d.0.get().as_bytes())?;
            rejected.extend(f.rejected);
            out = out.then_events(f.events);
        }
        // The usable parts went on (their jobs were also queued at intake: same dedupe keys);
        // what could not be used is recorded on this delivery's row.
        if !rejected.is_empty() {
            out = out.with_result(serde_json::json!({ "rejected": rejected }));
        }
        Ok(out)
    }
}

/// One Messenger item (message, echo, attachment, postback, referral, edit, reaction) for one
/// conversation.
#[derive(Debug, Serialize, Deserialize)]
pub struct FacebookMessage {
    pub page: PageId,
    pub psid: Psid,
    pub item: Value,
    /// For an edit or reaction that came before its message: how many times it has been
    /// queued again to wait for it (0: as delivered).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How long an edit or reaction waits for its message before its `n`-th new try: quickly at
/// first (the message is usually a moment behind), then hourly, for as long as any work is
/// retried (SPEC §9: 72 hours); then it is dropped with a warning.
fn wait_before(n: u32) -> Option<Duration> {
    const STEPS: [u64; 6] = [2, 10, 60, 300, 1_800, 3_600];
    let secs = STEPS[(n as usize).min(STEPS.len() - 1)];
    let waited: u64 = (0..n)
        .map(|k| STEPS[(k as usize).min(STEPS.len() - 1)])
        .sum();
    (waited + secs <= 72 * 3_600).then(|| Duration::from_secs(secs))
}

/// The changes of `page`/`psid` whose message was not stored, queued again for later.
fn queue_waiting(page: &PageId, psid: &Psid, waiting: Vec<(Value, u32)>) -> Vec<NewEvent> {
    let now = crate::store::now_millis();
    let mut events = Vec::new();
    for (item, wait) in waiting {
        let Some(delay) = wait_before(wait) else {
            tracing::warn!(%page, %psid, "an edit or reaction whose message never arrived is dropped");
            continue;
        };
        let again = FacebookMessage {
            page: page.clone(),
            psid: psid.clone(),
            item,
            wait: wait + 1,
        };
        events.push(again.to_event().at(now + delay.as_millis() as i64));
    }
    events
}

impl FacebookMessage {
    /// The dedupe key of the item with this id (the self-test looks its message up by it).
    pub fn dedupe_for(page: &PageId, entry_id: &str) -> DedupeKey {
        DedupeKey::new(FacebookMessage::KIND, &[page, &entry_id])
    }
}

impl Job for FacebookMessage {
    const KIND: &'static str = "facebook_message";
    const POOL: Pool = Pool::Messages;
    /// A burst into one conversation is merged in one write.
    const MAX_BATCH: usize = 500;
    /// A message that failed for good (its page is unknown or being deleted) is a person's
    /// words with nowhere to go: not kept.
    const KEEP_FAILED_PAYLOAD: bool = false;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        let id = super::messages::entry_id(&self.item).unwrap_or_default();
        if self.wait > 0 {
            return DedupeKey::new(
                Self::KIND,
                &[&self.page, &id, &format!("wait{}", self.wait)],
            );
        }
        FacebookMessage::dedupe_for(&self.page, &id)
    }

    fn group(&self) -> GroupKey {
        GroupKey::conversation(&self.page, &self.psid)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        // One group = one conversation, but be strict anyway: bucket by (page, psid).
        let mut by_conv: BTreeMap<(PageId, Psid), Vec<(Value, u32)>> = BTreeMap::new();
        for m in batch {
            by_conv
                .entry((m.page, m.psid))
                .or_default()
                .push((m.item, m.wait));
        }
        let (mut written, mut later) = (0, Vec::new());
        for ((page, psid), items) in by_conv {
            // A merge needs no token: a page waiting for re-authorisation keeps its messages.
            let rec = writable_page(state, &page).await?;
            let waits: Vec<(String, u32)> = items
                .iter()
                .filter_map(|(i, w)| super::messages::entry_id(i).map(|id| (id, *w)))
                .collect();
            let values = items.into_iter().map(|(i, _)| i).collect();
            let (outcome, _, waiting) =
                conversations::merge_with_changes(state, &rec, &psid, values).await?;
            written += usize::from(outcome == PutOutcome::Written);
            tracing::debug!(%page, %psid, ?outcome, waiting = waiting.len(), "conversation merged");
            let waiting = waiting.into_iter().map(|i| {
                let id = super::messages::entry_id(&i);
                let w = waits
                    .iter()
                    .find(|(x, _)| Some(x) == id.as_ref())
                    .map_or(0, |(_, w)| *w);
                (i, w)
            });
            later.extend(queue_waiting(&page, &psid, waiting.collect()));
        }
        let result = json!({"written": written, "waiting_for_their_message": later.len()});
        Ok(JobOutput::done().with_result(result).then_events(later))
    }
}

/// A page metadata refresh after `changes` events (one fetch per batch), or at connect.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageRefresh {
    pub page: PageId,
    /// The delivery and entry it came from, or `connect:<ms>` (older rows have none).
    #[serde(default)]
    pub source: String,
}

impl PageRefresh {
    /// The connect callback's refresh: at once, not debounced.
    pub fn connect(page: PageId) -> PageRefresh {
        PageRefresh {
            page,
            source: format!("connect:{}", crate::store::now_millis()),
        }
    }
}

impl Job for PageRefresh {
    const KIND: &'static str = "facebook_page";
    const POOL: Pool = Pool::Poll;
    const MAX_BATCH: usize = 100;
    const DELAY: Duration = METADATA_DEBOUNCE;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.page, &self.source])
    }

    fn group(&self) -> GroupKey {
        GroupKey::page(&self.page)
    }

    fn delay(&self) -> Duration {
        if self.source.starts_with("connect:") {
            Duration::ZERO
        } else {
            METADATA_DEBOUNCE
        }
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let mut done = HashSet::new();
        for job in batch {
            if done.insert(job.page.clone()) {
                let outcome = pages::refresh_metadata(state, &job.page).await?;
                tracing::debug!(page = %job.page, ?outcome, "page metadata refreshed");
            }
        }
        Ok(JobOutput::done())
    }
}

/// Why a page is polled.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PollReason {
    /// Right after connect; `at` is the connect time (unix ms), for the dedupe key.
    Initial { at: i64 },
    /// Part of a poll run (scheduled or from the CLI).
    Poll { run: RunId },
}

/// A poll of one page: its metadata, then a `ConversationPoll` for each conversation that
/// changed since its watermark (follow-ups, in their conversations' groups).
#[derive(Debug, Serialize, Deserialize)]
pub struct PagePoll {
    pub page: PageId,
    #[serde(flatten)]
    pub reason: PollReason,
}

impl Job for PagePoll {
    const KIND: &'static str = "facebook_page_poll";
    const POOL: Pool = Pool::Poll;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        match self.reason {
            PollReason::Initial { at } => {
                DedupeKey::new(Self::KIND, &[&self.page, &"initial", &at])
            }
            PollReason::Poll { run } => DedupeKey::new(Self::KIND, &[&self.page, &"run", &run]),
        }
    }

    fn group(&self) -> GroupKey {
        GroupKey::page(&self.page)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let page = &batch[0].page;
        let started = std::time::Instant::now();
        let r = async {
            let meta = pages::refresh_metadata(state, page).await?;
            let (changed, total, owner) = conversations::changed(state, page).await?;
            Ok::<_, FbError>((meta, changed, total, owner))
        }
        .await;
        metrics::counter!("poll_runs_total", "source" => "facebook").increment(1);
        metrics::histogram!("poll_duration_seconds", "source" => "facebook")
            .record(started.elapsed().as_secs_f64());
        let (meta, changed, total, owner) = r.map_err(|e| {
            metrics::counter!("poll_failures_total", "source" => "facebook").increment(1);
            tracing::warn!(%page, error = %e, "page poll failed");
            JobError::from(e)
        })?;
        tracing::info!(%page, conversations = total, changed = changed.len(), "page polled");
        let written = usize::from(meta == PutOutcome::Written);
        let result = json!({
            "written": written,
            "unchanged": 1 - written,
            "conversations": total,
            "changed": changed.len(),
        });
        let follow_ups = changed.into_iter().map(|conversation| {
            ConversationPoll {
                page: page.clone(),
                conversation,
                owner: Some(owner),
            }
            .to_event()
        });
        Ok(JobOutput::done()
            .with_result(result)
            .then_events(follow_ups))
    }
}

/// One conversation read back to its watermark and merged.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationPoll {
    pub page: PageId,
    #[serde(flatten)]
    pub conversation: ConversationRef,
    /// The merchant the page belonged to when the poll was asked for (rows queued by earlier
    /// versions have none).
    #[serde(default)]
    pub owner: Option<MerchantId>,
}

impl Job for ConversationPoll {
    const KIND: &'static str = "facebook_conversation_poll";
    const POOL: Pool = Pool::Poll;
    type Context = AppState;

    /// The same conversation state is read once, whichever polls ask for it — per owner: a
    /// page moved to another merchant starts with an empty copy that needs the same state read
    /// again.
    fn dedupe_key(&self) -> DedupeKey {
        let (page, psid, updated) = (
            &self.page,
            &self.conversation.psid,
            &self.conversation.updated_time,
        );
        match &self.owner {
            Some(owner) => DedupeKey::new(Self::KIND, &[page, psid, updated, owner]),
            None => DedupeKey::new(Self::KIND, &[page, psid, updated]),
        }
    }

    fn group(&self) -> GroupKey {
        GroupKey::conversation(&self.page, &self.conversation.psid)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let job = &batch[0];
        let polled = conversations::poll_one(state, &job.page, &job.conversation).await?;
        let written = usize::from(polled.object == PutOutcome::Written);
        Ok(JobOutput::done().with_result(json!({
            "written": written,
            "unchanged": 1 - written,
            "fetched": polled.fetched,
            "full": polled.full,
        })))
    }
}

/// The daily check that the app is still subscribed to the page (Meta drops subscriptions,
/// e.g. after a page role change); a missing one is re-created.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageSubscriptionCheck {
    pub page: PageId,
    pub run: RunId,
}

impl Job for PageSubscriptionCheck {
    const KIND: &'static str = "facebook_subscriptions";
    const POOL: Pool = Pool::Poll;
    type Context = AppState;

    fn dedupe_key(&self) -> DedupeKey {
        DedupeKey::new(Self::KIND, &[&self.page, &self.run])
    }

    fn group(&self) -> GroupKey {
        GroupKey::page(&self.page)
    }

    async fn run(state: &AppState, batch: Vec<Self>) -> Result<JobOutput, JobError> {
        let page = &batch[0].page;
        let rec = pages::active_page(state, page).await?;
        let missing = match pages::ensure_subscribed(graph(state)?, page, &rec.access_token).await {
            Ok(m) => m,
            Err(FbError::Graph(e)) => {
                return Err(pages::on_graph_error(state, &rec, e).await.into())
            }
            Err(e) => return Err(e.into()),
        };
        if !missing.is_empty() {
            metrics::counter!("subscriptions_repaired_total", "platform" => "facebook")
                .increment(1);
            tracing::warn!(%page, missing = %missing.join(","), "the app's page subscription lacked fields and has been re-created with every field");
        }
        Ok(JobOutput::done().with_result(json!({"missing": missing})))
    }
}
