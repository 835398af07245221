//! The full sync's side of the catalogue: staging tables filled while a sync reads Shopify,
//! read back in id order to assemble `entities`, and the sync's end.

use async_trait::async_trait;

use super::CatalogStore;
use crate::ids::ShopDomain;
use crate::store::StoreError;

/// What each backend does for a full sync. A batch of staged rows is one transaction, a row
/// staged again (in the same batch or later) replaces the earlier one.
#[async_trait]
pub(super) trait StagingDb: Send + Sync {
    async fn clear_staging(&self, shop: String) -> Result<(), StoreError>;
    async fn stage_products(
        &self,
        shop: String,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<(), StoreError>;
    async fn stage_variants(
        &self,
        shop: String,
        rows: Vec<(i64, i64, Vec<u8>)>,
    ) -> Result<(), StoreError>;
    async fn stage_children(
        &self,
        shop: String,
        rows: Vec<(String, i64, Vec<u8>)>,
    ) -> Result<(), StoreError>;
    async fn staged_products(
        &self,
        shop: String,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// `products` is not empty.
    async fn staged_variants_of(
        &self,
        shop: String,
        products: Vec<i64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError>;
    /// `parents` is not empty; they come back in byte order.
    async fn staged_children_of(
        &self,
        shop: String,
        parents: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// One transaction: the rows of older generations and the items of products that went
    /// are deleted, the shop's generation and sync time recorded, staging emptied. Returns
    /// how many rows were deleted.
    async fn finish_full_sync(
        &self,
        shop: String,
        generation: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError>;
}

impl CatalogStore {
    pub async fn clear_staging(&self, shop: &ShopDomain) -> Result<(), StoreError> {
        self.db.clear_staging(shop.to_string()).await
    }

    pub async fn stage_products(
        &self,
        shop: &ShopDomain,
        rows: Vec<(i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.db.stage_products(shop.to_string(), rows).await
    }

    /// `(product, variant, body)` rows.
    pub async fn stage_variants(
        &self,
        shop: &ShopDomain,
        rows: Vec<(i64, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.db.stage_variants(shop.to_string(), rows).await
    }

    /// `(parent GID, position in the file, body)` rows of a bulk file's child lines.
    pub async fn stage_children(
        &self,
        shop: &ShopDomain,
        rows: Vec<(String, i64, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.db.stage_children(shop.to_string(), rows).await
    }

    /// Staged products after `after` in id order, at most `limit`.
    pub async fn staged_products(
        &self,
        shop: &ShopDomain,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .staged_products(shop.to_string(), after, limit)
            .await
    }

    /// Staged variants of these products: `(product, variant, body)` in (product, variant)
    /// order.
    pub async fn staged_variants_of(
        &self,
        shop: &ShopDomain,
        products: Vec<i64>,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        self.db.staged_variants_of(shop.to_string(), products).await
    }

    /// Staged child lines of these parents: `(parent, body)` in file order per parent.
    pub async fn staged_children_of(
        &self,
        shop: &ShopDomain,
        parents: Vec<String>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        self.db.staged_children_of(shop.to_string(), parents).await
    }

    /// Ends a full sync: rows it did not see are deleted, the shop's generation and sync
    /// time are recorded, staging is emptied.
    pub async fn finish_full_sync(
        &self,
        shop: &ShopDomain,
        generation: i64,
        now_secs: i64,
    ) -> Result<usize, StoreError> {
        self.db
            .finish_full_sync(shop.to_string(), generation, now_secs)
            .await
    }
}
