//! Fanning a raw Meta delivery out into jobs: each messaging item becomes a `FacebookMessage`
//! in its conversation's group (so merges of one conversation never run concurrently and a
//! burst is merged in one write), each `changes` entry a debounced `PageRefresh`.

use serde_json::Value;

use super::jobs::{FacebookMessage, PageRefresh};
use super::messages;
use crate::crypto::sha256_hex;
use crate::ids::{PageId, Psid};
use crate::jobs::{Job, JobError};
use crate::store::events::NewEvent;

/// The jobs of one delivery, and what of it could not become a job (with the reason).
pub struct FanOut {
    pub events: Vec<NewEvent>,
    pub rejected: Vec<String>,
}

/// Splits one raw delivery into per-conversation and per-page jobs.
pub fn fan_out(body: &[u8]) -> Result<FanOut, JobError> {
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
        // A conversation another app controls (Conversation Routing) arrives under
        // `standby`, in the same item shape: stored alike.
        for item in ["messaging", "standby"]
            .into_iter()
            .filter_map(|list| entry.get(list).and_then(Value::as_array))
            .flatten()
        {
            if !messages::is_conversation_entry(item) && !super::changes::is_change(item) {
                continue; // delivery/read receipts and the like are not conversation entries
            }
            let psid =
                messages::customer_of(item, page.as_str()).and_then(|p| Psid::parse(&p).ok());
            let (Some(psid), Some(_)) = (psid, messages::entry_id(item)) else {
                rejected.push(format!("entry {ei}: messaging item without valid ids"));
                continue;
            };
            out.push(
                FacebookMessage {
                    page: page.clone(),
                    psid,
                    item: item.clone(),
                    wait: 0,
                }
                .to_event(),
            );
        }
        if entry
            .get("changes")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            out.push(
                PageRefresh {
                    page: page.clone(),
                    source: format!("{delivery_hash}:{ei}"),
                }
                .to_event(),
            );
        }
    }
    Ok(FanOut {
        events: out,
        rejected,
    })
}

/// The jobs of a delivery; a delivery none of whose parts is usable fails with the reasons.
pub fn jobs_of(body: &[u8]) -> Result<FanOut, JobError> {
    let f = fan_out(body)?;
    if !f.rejected.is_empty() {
        tracing::warn!(problems = ?f.rejected, "parts of a Facebook delivery were rejected");
        if f.events.is_empty() {
            return Err(JobError::Permanent(f.rejected.join("; ")));
        }
    }
    Ok(f)
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
        let evs = jobs_of(body).unwrap().events;
        assert_eq!(evs.len(), 4);
        assert_eq!(evs[0].group_key(), "fbconv:100:5");
        assert_eq!(
            evs[1].group_key(),
            "fbconv:100:5",
            "the echo goes to the customer's conversation"
        );
        assert_eq!(evs[2].group_key(), "fbconv:100:6");
        assert_eq!(evs[3].kind(), PageRefresh::KIND);
        assert!(
            evs[3].run_at().is_some(),
            "metadata refreshes are debounced"
        );
    }

    #[test]
    fn standby_items_and_referrals_are_conversation_entries() {
        // A routed conversation (another app controls it) and a click-to-Messenger ad.
        let body = br#"{"object":"page","entry":[{"id":"100","time":1,"standby":[
            {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":1,"message":{"mid":"m7","text":"agent?"}},
            {"sender":{"id":"7"},"recipient":{"id":"100"},"timestamp":2,"read":{"watermark":1}}
          ],"messaging":[
            {"sender":{"id":"8"},"recipient":{"id":"100"},"timestamp":3,"referral":{"ref":"x","source":"ADS","type":"OPEN_THREAD","ads_context_data":{"product_id":"42"}}},
            {"sender":{"id":"8"},"recipient":{"id":"100"},"timestamp":4,"reaction":{"mid":"m7","action":"react","reaction":"love","emoji":"x"}}
          ]}]}"#;
        let evs = jobs_of(body).unwrap().events;
        assert_eq!(
            evs.len(),
            3,
            "the read receipt is not an entry; the reaction changes one"
        );
        let mut groups: Vec<&str> = evs.iter().map(|e| e.group_key()).collect();
        groups.sort();
        assert_eq!(groups, ["fbconv:100:7", "fbconv:100:8", "fbconv:100:8"]);
        let referral: serde_json::Value =
            serde_json::json!({"sender":{"id":"8"},"timestamp":3,"referral":{}});
        assert_eq!(
            messages::entry_id(&referral).as_deref(),
            Some("referral:8:3"),
            "a referral has no mid: unique by sender and time"
        );
    }

    #[test]
    fn traversal_page_ids_are_rejected() {
        let body = br#"{"object":"page","entry":[{"id":"../../x","messaging":[
            {"sender":{"id":"5"},"recipient":{"id":"../../x"},"timestamp":1,"message":{"mid":"m1"}}]}]}"#;
        assert!(matches!(jobs_of(body), Err(JobError::Permanent(_))));
        let body = br#"{"object":"page","entry":[{"id":"100","messaging":[
            {"sender":{"id":"../5"},"recipient":{"id":"100"},"timestamp":1,"message":{"mid":"m1"}}]}]}"#;
        assert!(matches!(jobs_of(body), Err(JobError::Permanent(_))));
    }
}
