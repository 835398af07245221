//! Bulk operations (`bulkOperationRunQuery`): start one, wait for it (the
//! `bulk_operations/finish` webhook wakes the wait early, `bulkOperation(id:)` is polled
//! otherwise), and stream its JSONL result line by line.
//!
//! Results are not grouped under their parents (API 2026-01 and later), so callers stage the
//! lines and assemble them at the end (`full_sync`).

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::queries as q;
use super::SyncError;
use crate::ids::ShopDomain;
use crate::platforms::shopify::api::ShopifyApi;
use crate::platforms::shopify::client::ShopifyError;

/// First and longest wait between two status polls while an operation runs.
const POLL_FIRST: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(10);
/// Longest line accepted in a result file (a product with its fields is a few KiB).
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why an operation could not give a usable result.
#[derive(Debug)]
pub enum Unusable {
    /// Shopify refused to start it (another one runs, a limit): try later.
    Busy(String),
    /// It failed (with or without partial data), was canceled, or expired: start another, or
    /// read the catalogue page by page.
    Failed(String),
}

/// How a started (or resumed) operation ended.
pub enum Finished {
    /// Its result file (`None`: no objects matched).
    Completed(Option<String>),
    Unusable(Unusable),
}

/// Starts a bulk query; returns the operation's GID.
pub async fn start(
    api: &ShopifyApi,
    shop: &ShopDomain,
    document: &str,
) -> Result<Result<String, Unusable>, SyncError> {
    let data = api
        .query(
            shop,
            "BulkOperationRunQuery",
            q::BULK_RUN,
            json!({"query": document}),
        )
        .await?;
    let payload = &data["bulkOperationRunQuery"];
    if let Some(e) = payload["userErrors"].as_array().and_then(|e| e.first()) {
        let code = e["code"].as_str().unwrap_or_default();
        let message = e["message"].as_str().unwrap_or_default();
        return Ok(Err(Unusable::Busy(format!("{code}: {message}"))));
    }
    match payload.pointer("/bulkOperation/id").and_then(Value::as_str) {
        Some(id) => Ok(Ok(id.to_string())),
        None => Err(
            ShopifyError::Permanent("bulkOperationRunQuery answered no operation".into()).into(),
        ),
    }
}

/// Waits until the operation is done.
pub async fn wait(api: &ShopifyApi, shop: &ShopDomain, op: &str) -> Result<Finished, SyncError> {
    let mut pause = POLL_FIRST;
    loop {
        let finished = api.bulk_finished(shop);
        let data = api
            .query(shop, "BulkOperation", q::BULK_STATUS, json!({"id": op}))
            .await?;
        let node = &data["bulkOperation"];
        if node.is_null() {
            return Ok(Finished::Unusable(Unusable::Failed(format!(
                "bulk operation {op} is unknown"
            ))));
        }
        let status = node["status"].as_str().unwrap_or_default();
        match status {
            "COMPLETED" => {
                return Ok(Finished::Completed(
                    node["url"].as_str().map(str::to_string),
                ))
            }
            "FAILED" | "CANCELED" | "CANCELING" | "EXPIRED" => {
                let code = node["errorCode"].as_str().unwrap_or("none");
                let partial = if node["partialDataUrl"].is_string() {
                    " (partial data only)"
                } else {
                    ""
                };
                return Ok(Finished::Unusable(Unusable::Failed(format!(
                    "bulk operation {status}, error {code}{partial}"
                ))));
            }
            _ => {}
        }
        // Woken by the finish webhook, or the next poll.
        tokio::select! {
            _ = finished.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }

        pause = (pause * 2).min(POLL_MAX);
    }
}

/// An operation's result file, read line by line.
pub struct ResultFile {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    pending: Vec<u8>,
    start: usize,
    done: bool,
}

impl ResultFile {
    /// Opens the file; `None` when the link no longer works (expired), so the operation must
    /// run again.
    pub async fn open(api: &ShopifyApi, url: &str) -> Result<Option<ResultFile>, SyncError> {
        let url = url::Url::parse(url)
            .map_err(|e| ShopifyError::Permanent(format!("bulk result URL: {e}")))?;
        // The link is Shopify's own signed storage URL: nothing of ours is sent along.
        let resp = api
            .client()
            .http()
            .get(url)
            // A large catalogue's file takes a while: the client's default 60 s is for
            // API calls.
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| ShopifyError::Transient(format!("bulk result: {}", e.without_url())))?;
        match resp.status().as_u16() {
            200..=299 => {}
            401 | 403 | 404 | 410 => return Ok(None),
            s if s >= 500 || s == 429 => {
                return Err(
                    ShopifyError::Transient(format!("bulk result answered HTTP {s}")).into(),
                )
            }
            s => {
                return Err(
                    ShopifyError::Permanent(format!("bulk result answered HTTP {s}")).into(),
                )
            }
        }
        Ok(Some(ResultFile {
            body: resp.bytes_stream().boxed(),
            pending: Vec::new(),
            start: 0,
            done: false,
        }))
    }

    /// The next line, parsed; `None` at the end of the file.
    pub async fn next(&mut self) -> Result<Option<Value>, SyncError> {
        loop {
            if let Some(nl) = self.pending[self.start..].iter().position(|b| *b == b'\n') {
                let line = &self.pending[self.start..self.start + nl];
                self.start += nl + 1;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse(line).map(Some);
            }
            if self.done {
                let rest = &self.pending[self.start..];
                if rest.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let v = parse(rest)?;
                self.start = self.pending.len();
                return Ok(Some(v));
            }
            self.pending.drain(..self.start);
            self.start = 0;
            if self.pending.len() > MAX_LINE {
                return Err(
                    ShopifyError::Permanent("bulk result has an over-long line".into()).into(),
                );
            }
            match self.body.next().await {
                Some(chunk) => self.pending.extend_from_slice(&chunk.map_err(|e| {
                    ShopifyError::Transient(format!("bulk result: {}", e.without_url()))
                })?),
                None => self.done = true,
            }
        }
    }
}

fn parse(line: &[u8]) -> Result<Value, SyncError> {
    serde_json::from_slice(line)
        .map_err(|e| ShopifyError::Permanent(format!("bulk result line is not JSON: {e}")).into())
}
