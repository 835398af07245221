//! Page metadata and conversations: fetch, convert, merge, write. Used by the webhook handlers,
//! the callback's self-tests and polling.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;

use super::client::{GraphClient, GraphError};
use super::messages;
use crate::jobs::JobError;
use crate::objects::keys::{self, GraphId, PageId};
use crate::objects::{ObjectError, PutOutcome};
use crate::poll::{poll_each, PollReport};
use crate::state::AppState;
use crate::store::tokens::{AccountStatus, PageRecord};
use crate::store::StoreError;

const PAGES_AT_ONCE: usize = 4;
const PAGE_SIZE: &str = "25";
const MESSAGE_FIELDS: &str = "id,created_time,from,to,message,attachments,sticker";

#[derive(Debug, thiserror::Error)]
pub enum FbError {
    #[error("unknown page {0}: it is not connected")]
    UnknownPage(String),
    #[error("page {0} needs to be reconnected: {1}")]
    NeedsReauth(String, String),
    #[error("Facebook is not configured")]
    NotConfigured,
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FbError> for JobError {
    fn from(e: FbError) -> Self {
        match &e {
            FbError::Graph(GraphError::Transient(_)) | FbError::Objects(_) | FbError::Store(_) => {
                JobError::Retry(e.to_string())
            }
            _ => JobError::Permanent(e.to_string()),
        }
    }
}

pub fn client(state: &AppState) -> Result<GraphClient<'_>, FbError> {
    let settings = state
        .config
        .facebook
        .as_ref()
        .ok_or(FbError::NotConfigured)?;
    Ok(GraphClient::new(
        &state.http,
        settings,
        &state.upstream_retry,
    ))
}

/// The page's record, if it is connected and usable.
pub async fn active_page(state: &AppState, page: &PageId) -> Result<PageRecord, FbError> {
    let rec = state
        .tokens
        .page(page)
        .await?
        .ok_or_else(|| FbError::UnknownPage(page.to_string()))?;
    if rec.status == AccountStatus::NeedsReauth {
        return Err(FbError::NeedsReauth(
            page.to_string(),
            rec.status_reason.clone().unwrap_or_default(),
        ));
    }
    Ok(rec)
}

/// Turns a Graph 190 into a page marked for re-authorisation.
async fn on_graph_error(state: &AppState, page: &PageId, e: GraphError) -> FbError {
    if let GraphError::InvalidToken(m) = &e {
        tracing::warn!(%page, reason = %m, "page token rejected: the merchant must reconnect Facebook");
        if let Err(se) = state
            .tokens
            .set_page_status(page, AccountStatus::NeedsReauth, Some(m.clone()))
            .await
        {
            return se.into();
        }
        return FbError::NeedsReauth(page.to_string(), m.clone());
    }
    e.into()
}

/// Fetches the page's own fields with its token and writes `page_metadata.json` if changed.
pub async fn refresh_metadata(state: &AppState, page: &PageId) -> Result<PutOutcome, FbError> {
    let rec = active_page(state, page).await?;
    let graph = client(state)?;
    let mut meta = match graph
        .get_page_fields(page.as_str(), "", &rec.access_token, false)
        .await
    {
        Ok(mut v) => v.pop().unwrap_or(Value::Null),
        Err(e) => return Err(on_graph_error(state, page, e).await),
    };
    if let Some(o) = meta.as_object_mut() {
        // Never store a token, whatever Graph sends back.
        o.remove("access_token");
    }
    Ok(state
        .objects
        .put_json_if_changed(&keys::page_metadata(&rec.merchant, page), &meta)
        .await?)
}

/// Merges webhook-shaped entries into one conversation file.
pub async fn merge_entries(
    state: &AppState,
    rec: &PageRecord,
    psid: &GraphId,
    entries: Vec<Value>,
) -> Result<PutOutcome, FbError> {
    let key = keys::conversation(&rec.merchant, &rec.page_id, psid);
    Ok(state
        .objects
        .update_json(&key, move |cur| messages::merge(cur, &entries))
        .await?)
}

/// Fetches the page's conversations (every page of them) and merges new messages of each.
/// Messages are read newest first and paging stops at a page with nothing new.
pub async fn poll_conversations(
    state: &AppState,
    page: &PageId,
) -> Result<(usize, usize), FbError> {
    let rec = active_page(state, page).await?;
    let graph = client(state)?;
    let token: &SecretString = &rec.access_token;
    let url = graph.url(
        &format!("{page}/conversations"),
        &[
            ("platform", "messenger"),
            ("fields", "id,updated_time,participants"),
            ("limit", PAGE_SIZE),
        ],
    );
    let conversations = match graph.get_all(url, token).await {
        Ok(c) => c,
        Err(e) => return Err(on_graph_error(state, page, e).await),
    };
    let (mut written, mut unchanged) = (0, 0);
    for conv in conversations {
        let Some(conv_id) = conv.get("id").and_then(Value::as_str) else {
            continue;
        };
        let psid = conv
            .pointer("/participants/data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("id").and_then(Value::as_str))
            .find(|id| *id != page.as_str())
            .and_then(|id| GraphId::parse(id).ok());
        let Some(psid) = psid else {
            tracing::debug!(%page, "conversation without a valid customer id skipped");
            continue;
        };
        // Conversation ids look like `t_123`; they go into a URL path, so check them.
        if !conv_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            continue;
        }
        let key = keys::conversation(&rec.merchant, page, &psid);
        let known: HashSet<String> = match state.objects.get(&key).await? {
            Some(b) => serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(messages::entry_id)
                .collect(),
            None => HashSet::new(),
        };
        let mut fresh = Vec::new();
        let mut next = Some(graph.url(
            &format!("{conv_id}/messages"),
            &[("fields", MESSAGE_FIELDS), ("limit", PAGE_SIZE)],
        ));
        while let Some(u) = next.take() {
            let v = match graph.get(u, token).await {
                Ok(v) => v,
                Err(e) => return Err(on_graph_error(state, page, e).await),
            };
            let batch: Vec<Value> = v
                .get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| messages::from_graph(m, page.as_str()))
                .collect();
            let any_new = batch
                .iter()
                .any(|m| messages::entry_id(m).is_some_and(|id| !known.contains(&id)));
            fresh.extend(batch);
            if any_new {
                next = graph.next_page(&v);
            }
        }
        match merge_entries(state, &rec, &psid, fresh).await? {
            PutOutcome::Written => written += 1,
            PutOutcome::Unchanged => unchanged += 1,
        }
    }
    Ok((written, unchanged))
}

/// Metadata and conversations of one page.
pub async fn poll_page(state: &AppState, page: &PageId) -> Result<(usize, usize), FbError> {
    let started = Instant::now();
    let result = async {
        let meta = refresh_metadata(state, page).await?;
        let (w, u) = poll_conversations(state, page).await?;
        let meta_written = usize::from(meta == PutOutcome::Written);
        Ok((w + meta_written, u + 1 - meta_written))
    }
    .await;
    metrics::counter!("poll_runs_total", "source" => "facebook").increment(1);
    metrics::histogram!("poll_duration_seconds", "source" => "facebook")
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("poll_failures_total", "source" => "facebook").increment(1);
        tracing::warn!(%page, error = %e, "page poll failed");
    }
    result
}

/// Polls every active page; one failing page never stops the others.
pub async fn poll_all_pages(state: &AppState) -> Result<PollReport, FbError> {
    let pages = state.tokens.active_pages().await?;
    Ok(poll_each(pages, PAGES_AT_ONCE, |p| async move {
        let r = poll_page(state, &p).await;
        (p, r)
    })
    .await)
}

/// How long handlers wait before refreshing metadata after a `changes` event, so a burst of
/// edits becomes one fetch.
pub const METADATA_DEBOUNCE: Duration = Duration::from_secs(2);
