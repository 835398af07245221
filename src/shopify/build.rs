//! Writing a shop's two objects from the catalogue store, streamed.
//!
//! The bytes are produced row by row (each row is already canonical JSON, rows in id order),
//! so memory stays bounded whatever the catalogue's size, and they are the same bytes
//! `canonical_json` gives for the whole object. A first pass hashes them; when the stored
//! object's `sha256` (a HEAD) is the same nothing is written; otherwise a second pass uploads
//! them (multipart above 8 MiB).

use std::time::Duration;

use sha2::Digest;
use tokio::sync::mpsc;

use super::SyncError;
use crate::objects::keys::{self, ShopDomain};
use crate::objects::{Hasher, PutOutcome};
use crate::state::AppState;
use crate::store::catalog::{CatalogStore, EntityKind};
use crate::store::now_millis;

/// Chunks handed from the reading thread to the upload.
const CHUNK: usize = 1024 * 1024;
/// A shop's objects are rebuilt at most this often (a busy shop's changes coalesce).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// `shop_products.json`
    Products,
    /// `shop_metadata.json`
    Metadata,
}

/// Produces an object's bytes, in order, to `sink` (false from `sink` stops it). Blocking.
fn render(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    object: Object,
    shop_body: Option<&[u8]>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), SyncError> {
    let rows = |kind: EntityKind, sink: &mut dyn FnMut(&[u8]) -> bool| {
        let mut first = true;
        catalog.for_each_body(shop, kind, |body| {
            let go = first || sink(b",");
            first = false;
            go && sink(body)
        })
    };
    match object {
        Object::Products => {
            sink(br#"{"products":["#);
            rows(EntityKind::Product, sink)?;
            sink(b"]}");
        }
        Object::Metadata => {
            sink(br#"{"collections":["#);
            rows(EntityKind::Collection, sink)?;
            sink(br#"],"discounts":["#);
            rows(EntityKind::Discount, sink)?;
            sink(br#"],"shop":"#);
            sink(shop_body.unwrap_or(b"null"));
            sink(b"}");
        }
    }
    Ok(())
}

fn blocking_err(e: tokio::task::JoinError) -> SyncError {
    SyncError::Internal(format!("building an object: {e}"))
}

/// Writes the object if its bytes changed; returns what happened and its size.
pub async fn write(
    state: &AppState,
    shop: &ShopDomain,
    merchant: &uuid::Uuid,
    object: Object,
) -> Result<(PutOutcome, usize), SyncError> {
    let key = match object {
        Object::Products => keys::shop_products(merchant, shop),
        Object::Metadata => keys::shop_metadata(merchant, shop),
    };
    let catalog = state.catalog.clone();
    let shop_body = match object {
        Object::Metadata => catalog.shop_body(shop).await?,
        Object::Products => None,
    };

    // Pass 1: the hash, on the blocking pool.
    let (c, s, b) = (catalog.clone(), shop.clone(), shop_body.clone());
    let (sha, size) = tokio::task::spawn_blocking(move || -> Result<_, SyncError> {
        let mut hasher = Hasher::new();
        let mut size = 0;
        render(&c, &s, object, b.as_deref(), &mut |bytes| {
            hasher.update(bytes);
            size += bytes.len();
            true
        })?;
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await
    .map_err(blocking_err)??;
    if state.objects.head_sha256(&key).await?.as_deref() == Some(sha.as_str()) {
        metrics::counter!("uploads_total", "result" => "unchanged").increment(1);
        return Ok((PutOutcome::Unchanged, size));
    }

    // Pass 2: the same bytes, streamed into the upload.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let (c, s) = (catalog.clone(), shop.clone());
    let producer = tokio::task::spawn_blocking(move || -> Result<(), SyncError> {
        let mut buf = Vec::with_capacity(CHUNK);
        let mut open = true;
        render(&c, &s, object, shop_body.as_deref(), &mut |bytes| {
            buf.extend_from_slice(bytes);
            if buf.len() >= CHUNK {
                open = tx.blocking_send(std::mem::take(&mut buf)).is_ok();
            }
            open
        })?;
        if open && !buf.is_empty() {
            let _ = tx.blocking_send(buf);
        }
        Ok(())
    });
    let mut upload = state.objects.begin_upload(&key, &sha).await?;
    let mut written = 0;
    while let Some(chunk) = rx.recv().await {
        written += chunk.len();
        upload.write(&state.objects, &chunk).await?;
    }
    producer.await.map_err(blocking_err)??;
    if written != size {
        // The rows changed between the passes: only a writer outside the shop's queue
        // group could do that. Upload nothing rather than bytes that do not match the hash.
        return Err(SyncError::Internal(format!(
            "{key} changed while it was written ({written} bytes, {size} expected)"
        )));
    }
    upload.finish(&state.objects).await?;
    metrics::counter!("uploads_total", "result" => "written").increment(1);
    Ok((PutOutcome::Written, size))
}

/// Writes the objects that may have changed, at most once per `MIN_INTERVAL` per shop.
pub async fn write_all(
    state: &AppState,
    shop: &ShopDomain,
    merchant: &uuid::Uuid,
    objects: &[Object],
) -> Result<Vec<(Object, PutOutcome)>, SyncError> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(last) = state.catalog.state(shop).await?.built_at {
        let since = now_millis() - last;
        if since >= 0 && (since as u128) < MIN_INTERVAL.as_millis() {
            tokio::time::sleep(MIN_INTERVAL - Duration::from_millis(since as u64)).await;
        }
    }
    let mut out = Vec::new();
    for o in objects {
        let (outcome, size) = write(state, shop, merchant, *o).await?;
        tracing::debug!(%shop, object = ?o, ?outcome, bytes = size, "shop object built");
        out.push((*o, outcome));
    }
    state.catalog.set_built_at(shop, now_millis()).await?;
    Ok(out)
}
