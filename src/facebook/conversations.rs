//! Polling Messenger conversations against their watermarks.
//!
//! A page poll lists the page's conversations and picks those whose Graph `updated_time` is
//! newer than their watermark (or that have none); each of those is then read by a job of its
//! own, in the conversation's queue group, newest message first, back to the newest message
//! the previous poll stored (no gap), merged by `mid`, and its watermark moved. An unchanged
//! page therefore costs one conversation listing: no object is read or written.
//!
//! Every write of a conversation object goes through `merge_entries` here (webhook merges and
//! polls alike).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pages::{active_page, on_graph_error, writable_page};
use super::{graph, messages, window, FbError};
use crate::crypto::sha256_hex;
use crate::ids::{MerchantId, Month};
use crate::ids::{PageId, Psid};
use crate::objects::keys;
use crate::objects::{canonical_json, ObjectError, PutOutcome};
use crate::platforms::facebook::client::{GraphClient, GraphError};
use crate::state::AppState;
use crate::store::tokens::{PageRecord, Watermark};

const LIST_PAGE_SIZE: &str = "100";
const MESSAGES_PAGE_SIZE: &str = "25";
const MESSAGE_FIELDS: &str = "id,created_time,from,to,message,attachments,sticker";
/// A guard against a paging loop in one conversation.
const MAX_MESSAGE_PAGES: usize = 10_000;

/// A conversation as listed by Graph, with its customer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConversationRef {
    pub psid: Psid,
    /// Graph's conversation id (`t_…`), checked to be a plain token.
    pub conversation_id: String,
    /// `updated_time`, unix ms.
    pub updated_time: i64,
}

fn plain_conversation_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Every conversation of the page (every page of the listing).
async fn list(state: &AppState, rec: &PageRecord) -> Result<Vec<ConversationRef>, FbError> {
    let graph = graph(state)?;
    let page = &rec.page_id;
    let url = graph.url(
        &format!("{page}/conversations"),
        &[
            ("platform", "messenger"),
            ("fields", "id,updated_time,participants"),
            ("limit", LIST_PAGE_SIZE),
        ],
    );
    let listed = match graph.get_all(url, &rec.access_token).await {
        Ok(c) => c,
        Err(e) => return Err(on_graph_error(state, rec, e).await),
    };
    let mut out = Vec::with_capacity(listed.len());
    for conv in listed {
        let Some(id) = conv
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| plain_conversation_id(id))
        else {
            continue;
        };
        let psid = conv
            .pointer("/participants/data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("id").and_then(Value::as_str))
            .find(|id| *id != page.as_str())
            .and_then(|id| Psid::parse(id).ok());
        let updated = conv
            .get("updated_time")
            .and_then(Value::as_str)
            .and_then(messages::parse_graph_time);
        match (psid, updated) {
            (Some(psid), Some(updated_time)) => out.push(ConversationRef {
                psid,
                conversation_id: id.to_string(),
                updated_time,
            }),
            _ => tracing::debug!(%page, "conversation without a customer id or time skipped"),
        }
    }
    Ok(out)
}

/// The page's conversations that changed since their watermark, how many it has, and the
/// merchant the page belongs to now.
pub async fn changed(
    state: &AppState,
    page: &PageId,
) -> Result<(Vec<ConversationRef>, usize, MerchantId), FbError> {
    let rec = active_page(state, page).await?;
    let all = list(state, &rec).await?;
    let marks: HashMap<String, i64> = state.tokens.watermark_times(page).await?;
    let total = all.len();
    let changed = all
        .into_iter()
        .filter(|c| {
            marks
                .get(c.psid.as_str())
                .is_none_or(|seen| c.updated_time > *seen)
        })
        .collect();
    Ok((changed, total, rec.merchant))
}

/// What one conversation poll did.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationPolled {
    pub object: PutOutcome,
    /// Messages read from Graph.
    pub fetched: usize,
    /// Whether the whole conversation was read (no usable watermark).
    pub full: bool,
}

/// Reads the conversation newest first back to its watermark, merges what was read and moves
/// the watermark. The watermark is trusted only while the object it describes exists.
pub async fn poll_one(
    state: &AppState,
    page: &PageId,
    conv: &ConversationRef,
) -> Result<ConversationPolled, FbError> {
    let rec = active_page(state, page).await?;
    let graph = graph(state)?;
    let key = keys::conversation(&rec.merchant, page, &conv.psid);
    // The watermark describes an object: it is trusted only while that object exists.
    let stored = state.objects.head_sha256(&key).await?;
    let mark = match &stored {
        Some(_) => state.tokens.watermark(page, &conv.psid).await?,
        None => None,
    };
    let (fresh, newest) = match read_back(graph, &rec, conv, mark.as_ref()).await {
        Ok(r) => r,
        Err(e) => return Err(on_graph_error(state, &rec, e).await),
    };
    let fetched = fresh.len();
    // A deletion that started while we read wins: nothing is written for the page then.
    let rec = writable_page(state, page).await?;
    let (object, sha) = match (&stored, fresh.is_empty()) {
        // Nothing newer than what is stored (the conversation's time moved for something
        // that is not a message): no read or write of the object, just the watermark.
        (Some(sha), true) => (PutOutcome::Unchanged, sha.clone()),
        _ => merge_entries(state, &rec, &conv.psid, fresh).await?,
    };
    let (newest_ts, newest_mid) = match newest {
        Some((ts, mid)) => (Some(ts), Some(mid)),
        None => (
            mark.as_ref().and_then(|m| m.newest_ts),
            mark.as_ref().and_then(|m| m.newest_mid.clone()),
        ),
    };
    state
        .tokens
        .save_watermark(
            page,
            &conv.psid,
            Watermark {
                conversation_id: conv.conversation_id.clone(),
                updated_time: conv.updated_time,
                newest_ts,
                newest_mid,
                object_sha256: Some(sha),
            },
        )
        .await?;
    Ok(ConversationPolled {
        object,
        fetched,
        full: mark.is_none(),
    })
}

/// Messages newer than the watermark in the webhook shape, and the newest one's (time, mid).
async fn read_back(
    graph: &GraphClient,
    rec: &PageRecord,
    conv: &ConversationRef,
    mark: Option<&Watermark>,
) -> Result<(Vec<Value>, Option<(i64, String)>), GraphError> {
    let page = rec.page_id.as_str();
    let mut fresh = Vec::new();
    let mut newest: Option<(i64, String)> = None;
    let mut next = Some(graph.url(
        &format!("{}/messages", conv.conversation_id),
        &[("fields", MESSAGE_FIELDS), ("limit", MESSAGES_PAGE_SIZE)],
    ));
    let mut pages = 0;
    'pages: while let Some(url) = next.take() {
        pages += 1;
        let v = graph.get(url, &rec.access_token).await?;
        for m in v
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| messages::from_graph(m, page))
        {
            let ts = m.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
            let mid = messages::entry_id(&m).unwrap_or_default();
            if let Some(w) = mark {
                // Joined the stored part: the previous poll read everything from here back.
                if w.newest_mid.as_deref() == Some(mid.as_str())
                    || w.newest_ts.is_some_and(|t| ts < t)
                {
                    break 'pages;
                }
            }
            if newest.as_ref().is_none_or(|(t, _)| ts > *t) {
                newest = Some((ts, mid));
            }
            fresh.push(m);
        }
        if pages < MAX_MESSAGE_PAGES {
            next = graph.next_page(&v);
        }
    }
    Ok((fresh, newest))
}

/// Merges webhook-shaped entries into one conversation file. Callers run in the
/// conversation's queue group, so no other writer touches the object meanwhile.
pub async fn merge_entries(
    state: &AppState,
    rec: &PageRecord,
    psid: &Psid,
    entries: Vec<Value>,
) -> Result<(PutOutcome, String), FbError> {
    let (outcome, sha, _) = merge_with_changes(state, rec, psid, entries).await?;
    Ok((outcome, sha))
}

/// `merge_entries` for items that may hold edits and reactions; also returns the changes
/// whose message is not stored yet. The window (`<psid>.json`) is read and written whole;
/// month objects only when entries roll over into them, a late entry belongs there, or a
/// change's message is not in the window. Month objects are written before the window, so an
/// entry that leaves the window is in its month first (a crash between the two leaves it in
/// both for a moment, never in neither). Parsing, merging and hashing run on the blocking
/// pool, not the threads that answer webhooks.
pub async fn merge_with_changes(
    state: &AppState,
    rec: &PageRecord,
    psid: &Psid,
    items: Vec<Value>,
) -> Result<(PutOutcome, String, Vec<Value>), FbError> {
    let key = keys::conversation(&rec.merchant, &rec.page_id, psid);
    let current = state.objects.get_with_sha256(&key).await?;
    let stored_sha = current.as_ref().and_then(|(_, sha)| sha.clone());
    let size = state.config.conversation_window;
    let k = key.to_string();
    let (merged, bytes, sha) = tokio::task::spawn_blocking(move || {
        let bad = |e: serde_json::Error| ObjectError::BadJson {
            key: k.clone(),
            reason: e.to_string(),
        };
        let cur = match current {
            Some((body, _)) => Some(serde_json::from_slice::<Value>(&body).map_err(bad)?),
            None => None,
        };
        let mut m = window::merge(cur, &items, size);
        let bytes = canonical_json(&std::mem::take(&mut m.window)).map_err(bad)?;
        let sha = sha256_hex(&bytes);
        Ok::<_, ObjectError>((m, bytes, sha))
    })
    .await
    .map_err(|e| ObjectError::Io {
        key: key.to_string(),
        reason: format!("merge task: {e}"),
    })??;
    let (mut outcome, waiting) =
        merge_months(state, rec, psid, merged.to_months, merged.unresolved).await?;
    // A conversation with no entry yet (only a change waiting for its message) has no object.
    let nothing = stored_sha.is_none() && bytes.as_slice() == b"[]";
    if stored_sha.as_deref() != Some(sha.as_str()) && !nothing {
        state
            .objects
            .put(&key, bytes, &sha, "application/json")
            .await?;
        outcome = PutOutcome::Written;
    }
    Ok((outcome, sha, waiting))
}

/// Writes entries into their month objects and looks for the messages of `changes` there
/// (newest month first); returns whether anything was written and the changes still without
/// their message.
async fn merge_months(
    state: &AppState,
    rec: &PageRecord,
    psid: &Psid,
    mut months: BTreeMap<Month, Vec<Value>>,
    mut changes: Vec<Value>,
) -> Result<(PutOutcome, Vec<Value>), FbError> {
    let folder = keys::conversation_months(&rec.merchant, &rec.page_id, psid);
    if !changes.is_empty() {
        for k in state.objects.list(&folder).await? {
            if let Some(m) = keys::month_of_listing(&folder, &k) {
                months.entry(m).or_default();
            }
        }
    }
    let mut outcome = PutOutcome::Unchanged;
    for (month, entries) in months.into_iter().rev() {
        let mut items = entries;
        items.extend(changes.iter().cloned());
        if items.is_empty() {
            continue;
        }
        let key = keys::conversation_month(&rec.merchant, &rec.page_id, psid, &month);
        let mut left = Vec::new();
        let (o, _) = state
            .objects
            .update_json(&key, |cur| {
                let (merged, w) = messages::merge_with_changes(cur, &items);
                left = w;
                merged
            })
            .await?;
        changes = left;
        if o == PutOutcome::Written {
            outcome = o;
        }
    }
    Ok((outcome, changes))
}
