//! Writing a shop's two objects from the catalogue store, streamed.
//!
//! The bytes are produced row by row (each row is already canonical JSON, rows in id order),
//! so memory stays bounded whatever the catalogue's size, and they are the same bytes
//! `canonical_json` gives for the whole object. They are hashed while spooled; when the
//! stored object's `sha256` (a HEAD) is the same nothing is written; otherwise the spool is
//! uploaded (multipart above 8 MiB).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use tokio::sync::mpsc;

use super::SyncError;
use crate::crypto::Sha256Stream;
use crate::ids::MerchantId;
use crate::ids::ShopDomain;
use crate::objects::keys;
use crate::objects::PutOutcome;
use crate::state::AppState;
use crate::store::catalog::{CatalogStore, EntityKind};
use crate::store::now_millis;

/// Chunks handed from the reading thread to the upload.
const CHUNK: usize = 1024 * 1024;
/// Objects up to this size are spooled in memory, larger ones in a temporary file.
const SPOOL_IN_MEMORY: usize = 8 * 1024 * 1024;
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
    merchant: &MerchantId,
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

    // One pass over the rows, on the blocking pool: the bytes are hashed while they are
    // spooled (in memory up to SPOOL_IN_MEMORY, then to a temporary file), so the rows are
    // read once and memory stays bounded whatever the size.
    let (c, s) = (catalog.clone(), shop.clone());
    let started = std::time::Instant::now();
    let (sha, size, mut spool) = tokio::task::spawn_blocking(move || -> Result<_, SyncError> {
        let mut hasher = Sha256Stream::new();
        let mut size = 0;
        let mut spool = tempfile::SpooledTempFile::new(SPOOL_IN_MEMORY);
        // Rows are ~1 KiB: gathered into CHUNK-sized pieces, so the hash and the spool file
        // see a few large writes instead of two small ones per row.
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut failed: Option<std::io::Error> = None;
        let mut flush = |pending: &mut Vec<u8>, failed: &mut Option<std::io::Error>| {
            hasher.update(&pending[..]);
            if let Err(e) = spool.write_all(pending) {
                *failed = Some(e);
            }
            pending.clear();
            failed.is_none()
        };
        render(&c, &s, object, shop_body.as_deref(), &mut |bytes| {
            size += bytes.len();
            pending.extend_from_slice(bytes);
            pending.len() < CHUNK || flush(&mut pending, &mut failed)
        })?;
        flush(&mut pending, &mut failed);
        if let Some(e) = failed {
            return Err(SyncError::Internal(format!("spooling an object: {e}")));
        }
        spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| SyncError::Internal(format!("spooling an object: {e}")))?;
        Ok((hasher.hex(), size, spool))
    })
    .await
    .map_err(blocking_err)??;
    let rendered = started.elapsed();
    if state.objects.head_sha256(&key).await?.as_deref() == Some(sha.as_str()) {
        metrics::counter!("uploads_total", "result" => "unchanged").increment(1);
        return Ok((PutOutcome::Unchanged, size));
    }

    // The spooled bytes, read in chunks into the upload (multipart above 8 MiB).
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let reader = tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match spool.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        if tx.blocking_send(Ok(buf)).is_err() {
            return;
        }
    });
    let mut upload = state.objects.begin_upload(&key, &sha).await?;
    let mut written = 0;
    while let Some(chunk) = rx.recv().await {
        let chunk =
            chunk.map_err(|e| SyncError::Internal(format!("reading a spooled object: {e}")))?;
        written += chunk.len();
        upload.write(&state.objects, &chunk).await?;
    }
    reader.await.map_err(blocking_err)?;
    if written != size {
        return Err(SyncError::Internal(format!(
            "{key}: {written} bytes spooled, {size} expected"
        )));
    }
    upload.finish(&state.objects).await?;
    metrics::counter!("uploads_total", "result" => "written").increment(1);
    tracing::debug!(%key, render_ms = rendered.as_millis() as u64, total_ms = started.elapsed().as_millis() as u64, "object uploaded");
    Ok((PutOutcome::Written, size))
}

/// Writes the objects that may have changed, at most once per `MIN_INTERVAL` per shop.
pub async fn write_all(
    state: &AppState,
    shop: &ShopDomain,
    merchant: &MerchantId,
    objects: &[Object],
) -> Result<Vec<(Object, PutOutcome)>, SyncError> {
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    // Measured between starts: a build that takes longer than the interval is followed by
    // the next one at once.
    if let Some(last) = state.catalog.state(shop).await?.built_at {
        let since = now_millis() - last;
        if since >= 0 && (since as u128) < MIN_INTERVAL.as_millis() {
            tokio::time::sleep(MIN_INTERVAL - Duration::from_millis(since as u64)).await;
        }
    }
    state.catalog.set_built_at(shop, now_millis()).await?;
    let mut out = Vec::new();
    for o in objects {
        let (outcome, size) = write(state, shop, merchant, *o).await?;
        tracing::debug!(%shop, object = ?o, ?outcome, bytes = size, "shop object built");
        out.push((*o, outcome));
    }
    Ok(out)
}
