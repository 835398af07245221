//! Queue handlers for Meta deliveries.
//!
//! A delivery is stored raw and fanned out here: each messaging item becomes an event grouped
//! by its conversation (so merges of one conversation never run concurrently and a burst is
//! merged in one write), each `changes` entry a debounced page refresh. Follow-ups commit in
//! the same transaction that marks the delivery done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::messages;
use super::pages::{self, FbError, METADATA_DEBOUNCE};
use super::{MESSAGE_KIND, PAGE_KIND};
use crate::jobs::{Handler, JobError};
use crate::objects::keys::{GraphId, PageId};
use crate::objects::sha256_hex;
use crate::state::AppState;
use crate::store::events::{Event, NewEvent};
use crate::store::now_millis;

#[derive(Serialize, Deserialize)]
struct MessageJob {
    page: String,
    psid: String,
    item: Value,
}

#[derive(Serialize, Deserialize)]
struct PageJob {
    page: String,
}

/// Splits one raw delivery into per-conversation and per-page events.
pub fn fan_out(body: &[u8]) -> Result<Vec<NewEvent>, JobError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| JobError::Permanent(format!("delivery is not JSON: {e}")))?;
    let delivery_hash = &sha256_hex(body)[..24];
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    for (ei, entry) in v
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let raw_id = entry.get("id").and_then(Value::as_str).unwrap_or("");
        let Ok(page) = PageId::parse(raw_id) else {
            rejected.push(format!("entry {ei}: invalid page id {raw_id:?}"));
            continue;
        };
        for item in entry
            .get("messaging")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !messages::is_conversation_entry(item) {
                continue; // delivery/read receipts and the like are not conversation entries
            }
            let psid =
                messages::customer_of(item, page.as_str()).and_then(|p| GraphId::parse(&p).ok());
            let (Some(psid), Some(id)) = (psid, messages::entry_id(item)) else {
                rejected.push(format!("entry {ei}: messaging item without valid ids"));
                continue;
            };
            let job = MessageJob {
                page: page.to_string(),
                psid: psid.to_string(),
                item: item.clone(),
            };
            out.push(NewEvent::new(
                MESSAGE_KIND,
                format!("fbmsg:{page}:{id}"),
                format!("fbconv:{page}:{psid}"),
                serde_json::to_vec(&job).expect("job serialises"),
            ));
        }
        if entry
            .get("changes")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            let mut ev = NewEvent::new(
                PAGE_KIND,
                format!("fbpage:{page}:{delivery_hash}:{ei}"),
                format!("fbpage:{page}"),
                serde_json::to_vec(&PageJob {
                    page: page.to_string(),
                })
                .expect("job serialises"),
            );
            ev.run_at = Some(now_millis() + METADATA_DEBOUNCE.as_millis() as i64);
            out.push(ev);
        }
    }
    if !rejected.is_empty() {
        tracing::warn!(problems = ?rejected, "parts of a Facebook delivery were rejected");
        if out.is_empty() {
            return Err(JobError::Permanent(rejected.join("; ")));
        }
    }
    Ok(out)
}

pub struct DeliveryHandler;

#[async_trait::async_trait]
impl Handler for DeliveryHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        let mut out = Vec::new();
        for e in events {
            out.extend(fan_out(&e.payload)?);
        }
        Ok(out)
    }
}

/// Merges a batch of messaging items of one conversation in one write.
pub struct MessageHandler {
    pub state: AppState,
}

#[async_trait::async_trait]
impl Handler for MessageHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        // One group = one conversation, but be strict anyway: bucket by (page, psid).
        let mut by_conv: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
        for e in events {
            let job: MessageJob = serde_json::from_slice(&e.payload)
                .map_err(|err| JobError::Permanent(format!("bad message job: {err}")))?;
            by_conv
                .entry((job.page, job.psid))
                .or_default()
                .push(job.item);
        }
        for ((page, psid), items) in by_conv {
            let page = PageId::parse(&page).map_err(|e| JobError::Permanent(e.to_string()))?;
            let psid = GraphId::parse(&psid).map_err(|e| JobError::Permanent(e.to_string()))?;
            // A merge needs no token: a page waiting for re-authorisation keeps its messages.
            let rec = self
                .state
                .tokens
                .page(&page)
                .await
                .map_err(FbError::from)?
                .ok_or_else(|| FbError::UnknownPage(page.to_string()))?;
            let outcome = pages::merge_entries(&self.state, &rec, &psid, items).await?;
            tracing::debug!(%page, %psid, ?outcome, "conversation merged");
        }
        Ok(vec![])
    }
}

/// Re-fetches page metadata after `changes` events (one fetch per batch).
pub struct PageHandler {
    pub state: AppState,
}

#[async_trait::async_trait]
impl Handler for PageHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        let mut done = std::collections::HashSet::new();
        for e in events {
            let job: PageJob = serde_json::from_slice(&e.payload)
                .map_err(|err| JobError::Permanent(format!("bad page job: {err}")))?;
            if !done.insert(job.page.clone()) {
                continue;
            }
            let page = PageId::parse(&job.page).map_err(|e| JobError::Permanent(e.to_string()))?;
            match pages::refresh_metadata(&self.state, &page).await {
                Ok(outcome) => tracing::debug!(%page, ?outcome, "page metadata refreshed"),
                Err(e @ FbError::UnknownPage(_)) => return Err(e.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_groups_by_conversation_and_skips_receipts() {
        let body = br#"{"object":"page","entry":[{"id":"100","time":1,"messaging":[
            {"sender":{"id":"5"},"recipient":{"id":"100"},"timestamp":1,"message":{"mid":"m1","text":"hi"}},
            {"sender":{"id":"100"},"recipient":{"id":"5"},"timestamp":2,"message":{"mid":"m2","is_echo":true,"text":"hello"}},
            {"sender":{"id":"5"},"recipient":{"id":"100"},"timestamp":3,"delivery":{"mids":["m2"]}},
            {"sender":{"id":"6"},"recipient":{"id":"100"},"timestamp":4,"postback":{"title":"Buy","payload":"B"}}
          ]},{"id":"100","changes":[{"field":"name","value":"New"}]}]}"#;
        let evs = fan_out(body).unwrap();
        assert_eq!(evs.len(), 4);
        assert_eq!(evs[0].group_key, "fbconv:100:5");
        assert_eq!(
            evs[1].group_key, "fbconv:100:5",
            "the echo goes to the customer's conversation"
        );
        assert_eq!(evs[2].group_key, "fbconv:100:6");
        assert_eq!(evs[3].kind, PAGE_KIND);
        assert!(evs[3].run_at.is_some());
    }

    #[test]
    fn traversal_page_ids_are_rejected() {
        let body = br#"{"object":"page","entry":[{"id":"../../x","messaging":[
            {"sender":{"id":"5"},"recipient":{"id":"../../x"},"timestamp":1,"message":{"mid":"m1"}}]}]}"#;
        assert!(matches!(fan_out(body), Err(JobError::Permanent(_))));
        let body = br#"{"object":"page","entry":[{"id":"100","messaging":[
            {"sender":{"id":"../5"},"recipient":{"id":"100"},"timestamp":1,"message":{"mid":"m1"}}]}]}"#;
        assert!(matches!(fan_out(body), Err(JobError::Permanent(_))));
    }
}
