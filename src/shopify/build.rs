//! Writing a shop's two objects from the catalogue store, streamed.
//!
//! The bytes are produced row by row (each row is already canonical JSON, rows in id order),
//! so memory stays bounded whatever the catalogue's size, and they are the same bytes
//! `canonical_json` gives for the whole object. `ObjectStore::put_stream_if_changed` hashes
//! them while spooling and writes them only when the stored object's `sha256` differs.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};

use super::SyncError;
use crate::ids::{MerchantId, ShopDomain};
use crate::objects::keys;
use crate::objects::PutOutcome;
use crate::state::AppState;
use crate::store::catalog::{CatalogStore, EntityKind};
use crate::store::{now_millis, StoreError};

/// A shop's objects are rebuilt at most this often (a busy shop's changes coalesce).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// `shop_products.json`
    Products,
    /// `shop_metadata.json`
    Metadata,
}

/// An object's bytes, in order: the rows (each already canonical JSON) between the literal
/// parts of its JSON.
fn render<'a>(
    catalog: &'a CatalogStore,
    shop: &'a ShopDomain,
    object: Object,
    shop_body: Option<Vec<u8>>,
) -> BoxStream<'a, Result<Bytes, StoreError>> {
    let text = |t: &'static [u8]| stream::once(async move { Ok(Bytes::from_static(t)) });
    match object {
        Object::Products => text(br#"{"products":["#)
            .chain(rows(catalog, shop, EntityKind::Product))
            .chain(text(b"]}"))
            .boxed(),
        Object::Metadata => {
            let shop_body = Bytes::from(shop_body.unwrap_or_else(|| b"null".to_vec()));
            text(br#"{"collections":["#)
                .chain(rows(catalog, shop, EntityKind::Collection))
                .chain(text(br#"],"discounts":["#))
                .chain(rows(catalog, shop, EntityKind::Discount))
                .chain(text(br#"],"shop":"#))
                .chain(stream::once(async move { Ok(shop_body) }))
                .chain(text(b"}"))
                .boxed()
        }
    }
}

/// The bodies of every row of `kind`, comma-separated. The scan starts when the stream is
/// first polled; dropping the stream (an error elsewhere) stops it.
fn rows<'a>(
    catalog: &'a CatalogStore,
    shop: &'a ShopDomain,
    kind: EntityKind,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'a {
    stream::once(async move { catalog.bodies(shop, kind) })
        .flatten()
        .enumerate()
        .flat_map(|(i, body)| {
            let comma = (i > 0).then(|| Ok(Bytes::from_static(b",")));
            stream::iter(comma.into_iter().chain(std::iter::once(body)))
        })
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
    let bytes = render(catalog, shop, object, shop_body).map_err(SyncError::from);
    let (outcome, size) = state.objects.put_stream_if_changed(&key, bytes).await?;
    tracing::debug!(%key, ?outcome, total_ms = started.elapsed().as_millis() as u64, "object built");
    Ok((outcome, size))
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
    let started = now_millis();
    let mut out = Vec::new();
    for o in objects {
        let (outcome, size) = write(state, shop, merchant, *o).await?;
        tracing::debug!(%shop, object = ?o, ?outcome, bytes = size, "shop object built");
        out.push((*o, outcome));
    }
    // Recorded once the objects are written ("last updated" on the merchant's page), as of
    // the build's start (the interval above is measured between starts).
    state.catalog.set_built_at(shop, started).await?;
    Ok(out)
}
