//! A page's records and objects: who may write to it, its metadata, its app subscription, and
//! merging Messenger entries into its conversations. Used by the jobs and the callback.

use secrecy::SecretString;
use serde_json::Value;

use super::{graph, FbError};
use crate::ids::PageId;
use crate::objects::keys;
use crate::objects::PutOutcome;
use crate::platforms::facebook::client::{GraphClient, GraphError};
use crate::state::AppState;
use crate::store::tokens::{AccountStatus, PageRecord};

/// Fields the app subscribes a page to (SPEC §3.1): the page changes it refreshes metadata
/// on, and every Messenger field a conversation entry arrives on. Meta sends the page's own
/// replies only on `message_echoes`, and every event of a conversation another app controls
/// (Page Inbox, a help desk) only on `standby`.
pub const SUBSCRIBED_FIELDS: [&str; 9] = [
    "name",
    "category",
    "messages",
    "message_echoes",
    "messaging_postbacks",
    "messaging_referrals",
    "message_edits",
    "message_reactions",
    "standby",
];

/// The page's record if anything may still be written for it: connected and not being
/// deleted. A page waiting for re-authorisation still takes merges (they need no token).
pub async fn writable_page(state: &AppState, page: &PageId) -> Result<PageRecord, FbError> {
    let rec = state
        .tokens
        .page(page)
        .await?
        .ok_or_else(|| FbError::UnknownPage(page.to_string()))?;
    if rec.status == AccountStatus::Deleting {
        return Err(FbError::Deleting(page.to_string()));
    }
    Ok(rec)
}

/// The page's record if its token can be used: writable and not waiting for reconnection.
pub async fn active_page(state: &AppState, page: &PageId) -> Result<PageRecord, FbError> {
    let rec = writable_page(state, page).await?;
    if rec.status == AccountStatus::NeedsReauth {
        return Err(FbError::NeedsReauth(
            page.to_string(),
            rec.status_reason.clone().unwrap_or_default(),
        ));
    }
    Ok(rec)
}

/// Turns a Graph 190 on the record's token into a page marked for re-authorisation (unless a
/// reconnect replaced the token meanwhile, or the page is being deleted).
pub async fn on_graph_error(state: &AppState, rec: &PageRecord, e: GraphError) -> FbError {
    let page = &rec.page_id;
    if let GraphError::InvalidToken(m) = &e {
        match state
            .tokens
            .mark_page_reauth(page, &rec.access_token, m.clone())
            .await
        {
            Ok(true) => {
                tracing::warn!(%page, reason = %m, "page token rejected: the merchant must reconnect Facebook")
            }
            Ok(false) => {
                tracing::info!(%page, "a replaced page token was rejected; the page stays as it is")
            }
            Err(se) => return se.into(),
        }
        return FbError::NeedsReauth(page.to_string(), m.clone());
    }
    e.into()
}

/// Fetches the page's own fields with its token and writes `page_metadata.json` if changed.
pub async fn refresh_metadata(state: &AppState, page: &PageId) -> Result<PutOutcome, FbError> {
    let rec = active_page(state, page).await?;
    let mut meta = match graph(state)?
        .get_page_fields(page.as_str(), "", &rec.access_token, false)
        .await
    {
        Ok(mut v) => v.pop().unwrap_or(Value::Null),
        Err(e) => return Err(on_graph_error(state, &rec, e).await),
    };
    if let Some(o) = meta.as_object_mut() {
        // Never store a token, whatever Graph sends back.
        o.remove("access_token");
    }
    // Re-checked after the fetch: a deletion that started meanwhile wins.
    writable_page(state, page).await?;
    Ok(state
        .objects
        .put_json_if_changed(&keys::page_metadata(&rec.merchant, page), &meta)
        .await?)
}

/// Removes our app's subscription to the page (`DELETE /{page}/subscribed_apps`).
pub async fn unsubscribe(
    graph: &GraphClient,
    page: &PageId,
    token: &SecretString,
) -> Result<(), FbError> {
    graph
        .delete(graph.url(&format!("{page}/subscribed_apps"), &[]), token)
        .await?;
    Ok(())
}

/// Subscribes the app to every field of [`SUBSCRIBED_FIELDS`] unless *this* app already is
/// (another app's subscription does not count). Returns the fields that were missing (empty:
/// nothing was done).
pub async fn ensure_subscribed(
    graph: &GraphClient,
    page: &PageId,
    token: &SecretString,
) -> Result<Vec<&'static str>, FbError> {
    let app_id = graph.settings().app_id.as_str();
    let current = graph
        .get(graph.url(&format!("{page}/subscribed_apps"), &[]), token)
        .await?;
    let ours: Vec<&str> = current
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|app| app.get("id").and_then(Value::as_str) == Some(app_id))
        .flat_map(|app| {
            app.get("subscribed_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
        })
        .collect();
    let missing: Vec<&'static str> = SUBSCRIBED_FIELDS
        .into_iter()
        .filter(|f| !ours.contains(f))
        .collect();
    if missing.is_empty() {
        tracing::debug!(%page, "app already subscribed to every field");
        return Ok(missing);
    }
    let r = graph
        .post(
            graph.url(
                &format!("{page}/subscribed_apps"),
                &[("subscribed_fields", &SUBSCRIBED_FIELDS.join(","))],
            ),
            token,
        )
        .await?;
    if r.get("success").and_then(Value::as_bool) == Some(true) {
        Ok(missing)
    } else {
        Err(FbError::Graph(GraphError::Permanent(
            "subscribed_apps did not report success".into(),
        )))
    }
}
