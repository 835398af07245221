//! Writing a shop's two objects from the catalogue store, streamed.
//!
//! The bytes are produced row by row (each row is already canonical JSON, rows in id order),
//! so memory stays bounded whatever the catalogue's size, and they are the same bytes
//! `canonical_json` gives for the whole object. They are hashed while spooled; when the
//! stored object's `sha256` (a HEAD) is the same nothing is written; otherwise the spool is
//! uploaded (multipart above 8 MiB).

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::mpsc;

use super::SyncError;
use crate::crypto::Sha256Stream;
use crate::ids::{MerchantId, ShopDomain};
use crate::objects::keys;
use crate::objects::PutOutcome;
use crate::state::AppState;
use crate::store::catalog::{CatalogStore, EntityKind};
use crate::store::now_millis;

/// Chunks handed from the reading thread to the upload.
const CHUNK: usize = 1024 * 1024;
/// Pieces handed from the rendering to the spooling thread: large writes for the hash and the
/// spool, few of them in memory at once.
const PIECE: usize = 256 * 1024;
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

/// Produces an object's bytes, in order, into `out`.
async fn render(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    object: Object,
    shop_body: Option<&[u8]>,
    out: &mut Pieces,
) -> Result<(), SyncError> {
    match object {
        Object::Products => {
            out.put(br#"{"products":["#).await?;
            rows(catalog, shop, EntityKind::Product, out).await?;
            out.put(b"]}").await?;
        }
        Object::Metadata => {
            out.put(br#"{"collections":["#).await?;
            rows(catalog, shop, EntityKind::Collection, out).await?;
            out.put(br#"],"discounts":["#).await?;
            rows(catalog, shop, EntityKind::Discount, out).await?;
            out.put(br#"],"shop":"#).await?;
            out.put(shop_body.unwrap_or(b"null")).await?;
            out.put(b"}").await?;
        }
    }
    Ok(())
}

/// The bodies of every row of `kind`, comma-separated. Returning early drops the scan, which
/// stops it.
async fn rows(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    kind: EntityKind,
    out: &mut Pieces,
) -> Result<(), SyncError> {
    let mut bodies = catalog.bodies(shop, kind);
    let mut first = true;
    while let Some(body) = bodies.try_next().await? {
        if !first {
            out.put(b",").await?;
        }
        first = false;
        out.put(&body).await?;
    }
    Ok(())
}

/// An object's bytes on their way to the spooling thread. Rows are ~1 KiB: they are gathered
/// into PIECE-sized pieces, so the hash and the spool file see a few large writes instead of
/// two small ones per row.
struct Pieces {
    pending: Vec<u8>,
    to_spool: mpsc::Sender<Vec<u8>>,
}

impl Pieces {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), SyncError> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= PIECE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SyncError> {
        let piece = std::mem::replace(&mut self.pending, Vec::with_capacity(PIECE));
        // The spooling thread stops taking pieces only when it failed (and says why).
        self.to_spool
            .send(piece)
            .await
            .map_err(|_| SyncError::Internal("spooling an object stopped".into()))
    }
}

/// One pass over the rows: the bytes are hashed while they are spooled (in memory up to
/// SPOOL_IN_MEMORY, then to a temporary file) on the blocking pool, so the rows are read once,
/// memory stays bounded whatever the size and the hashing is off the async runtime. Returns
/// the hash, the size and the spool, rewound.
async fn spool_object(
    catalog: &CatalogStore,
    shop: &ShopDomain,
    object: Object,
    shop_body: Option<&[u8]>,
) -> Result<(String, usize, tempfile::SpooledTempFile), SyncError> {
    let (to_spool, mut pieces) = mpsc::channel::<Vec<u8>>(1);
    let spooler = tokio::task::spawn_blocking(move || -> Result<_, SyncError> {
        let failed = |e: std::io::Error| SyncError::Internal(format!("spooling an object: {e}"));
        let mut hasher = Sha256Stream::new();
        let mut spool = tempfile::SpooledTempFile::new(SPOOL_IN_MEMORY);
        let mut size = 0;
        while let Some(piece) = pieces.blocking_recv() {
            hasher.update(&piece[..]);
            spool.write_all(&piece).map_err(failed)?;
            size += piece.len();
        }
        spool.seek(SeekFrom::Start(0)).map_err(failed)?;
        Ok((hasher.hex(), size, spool))
    });
    let mut out = Pieces {
        pending: Vec::with_capacity(PIECE),
        to_spool,
    };
    let rendered = match render(catalog, shop, object, shop_body, &mut out).await {
        Ok(()) => out.flush().await,
        Err(e) => Err(e),
    };
    // The spooler ends when its channel closes.
    drop(out);
    // A spooling error is why a render stopped; otherwise the render's error, if any.
    let spooled = spooler.await.map_err(blocking_err)??;
    rendered.map(|()| spooled)
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
    let catalog = &state.catalog;
    let shop_body = match object {
        Object::Metadata => catalog.shop_body(shop).await?,
        Object::Products => None,
    };

    let started = std::time::Instant::now();
    let (sha, size, mut spool) = spool_object(catalog, shop, object, shop_body.as_deref()).await?;
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
