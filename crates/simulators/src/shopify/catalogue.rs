//! A shop's catalogue as the fake keeps it (products, variants, inventory levels, metafields,
//! collections, code discounts), how tests change it, and how they inspect it. The generated
//! starting point is in `generate`.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::generate::{build_product, gid, shop_name_for, LOCATIONS};
use super::{CatalogueCounts, FakeShopify, FakeSubscription};

/// Next ids of the per-shop sequences (each type has its own range: products 1001…,
/// collections 3001…, discounts 4001…, variants 40001…, inventory items 50001…, codes 60001…,
/// locations 70001…, metafields 80001…; GIDs carry the type, so ids only need to be unique
/// within one).
pub(super) struct IdAlloc {
    pub(super) variant: u64,
    pub(super) item: u64,
    pub(super) metafield: u64,
    /// Variants generated so far (spreads stock over the locations).
    pub(super) variants_made: usize,
}

/// One shop: its catalogue (generated on first use), its subscriptions, its last tokens and
/// its cost bucket.
pub(super) struct ShopData {
    pub(super) domain: String,
    pub(super) shop_id: u64,
    pub(super) products: Vec<Product>,
    pub(super) collections: Vec<Collection>,
    pub(super) discounts: Vec<Discount>,
    pub(super) subscriptions: Vec<FakeSubscription>,
    pub(super) last_access_token: Option<String>,
    pub(super) last_refresh_token: Option<String>,
    pub(super) update_seq: u64,
    pub(super) bucket: f64,
    pub(super) bucket_at: Instant,
    pub(super) ids: IdAlloc,
}

pub(super) struct Product {
    pub(super) id: u64,
    pub(super) title: String,
    pub(super) handle: String,
    pub(super) description: String,
    pub(super) product_type: String,
    pub(super) vendor: String,
    pub(super) tags: Vec<String>,
    pub(super) status: &'static str,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) image: Option<(String, Option<String>)>,
    pub(super) metafields: Vec<Metafield>,
    pub(super) variants: Vec<Variant>,
    pub(super) deleted: bool,
}

pub(super) struct Metafield {
    pub(super) id: u64,
    pub(super) key: String,
    pub(super) kind: &'static str,
    pub(super) value: String,
}

pub(super) struct Variant {
    pub(super) id: u64,
    pub(super) product_id: u64,
    pub(super) title: String,
    /// `Size` option value; `None` for a product's single default variant.
    pub(super) size: Option<String>,
    pub(super) sku: Option<String>,
    pub(super) price: String,
    pub(super) compare_at: Option<String>,
    pub(super) inventory_item_id: u64,
    pub(super) levels: Vec<Level>,
}

pub(super) struct Level {
    /// Index into `LOCATIONS`.
    pub(super) location: usize,
    pub(super) available: i64,
}

pub(super) struct Collection {
    pub(super) id: u64,
    pub(super) title: String,
    pub(super) handle: String,
    pub(super) description: String,
    pub(super) updated_at: String,
    /// Product indexes, in collection order.
    pub(super) products: Vec<usize>,
    pub(super) deleted: bool,
}

pub(super) struct Discount {
    pub(super) id: u64,
    pub(super) typename: &'static str,
    pub(super) title: String,
    pub(super) status: &'static str,
    pub(super) summary: String,
    pub(super) starts_at: String,
    pub(super) ends_at: Option<String>,
    pub(super) usage_limit: Option<u64>,
    pub(super) once_per_customer: bool,
    /// (code id, code)
    pub(super) codes: Vec<(u64, String)>,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) deleted: bool,
}

impl ShopData {
    /// The next `updated_at` of the shop: now (whole seconds, as Shopify stamps them), and
    /// later than every generated timestamp (all in 2025) and every earlier stamp.
    pub(super) fn next_stamp(&mut self) -> String {
        let now = Utc::now().timestamp().max(0) as u64;
        self.update_seq = now.max(self.update_seq + 1);
        DateTime::<Utc>::from_timestamp(self.update_seq as i64, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    pub(super) fn touch(&mut self, product: usize) {
        let stamp = self.next_stamp();
        self.products[product].updated_at = stamp;
    }

    pub(super) fn live_products(&self) -> impl Iterator<Item = &Product> {
        self.products.iter().filter(|p| !p.deleted)
    }

    pub(super) fn counts(&self) -> CatalogueCounts {
        let mut c = CatalogueCounts::default();
        for p in self.live_products() {
            c.products += 1;
            c.metafields += p.metafields.len();
            c.variants += p.variants.len();
            c.inventory_levels += p.variants.iter().map(|v| v.levels.len()).sum::<usize>();
        }
        c.collections = self.live_collections().count();
        c.collection_memberships = self
            .live_collections()
            .map(|col| {
                col.products
                    .iter()
                    .filter(|&&p| !self.products[p].deleted)
                    .count()
            })
            .sum();
        c.discounts = self.live_discounts().count();
        c.discount_codes = self.live_discounts().map(|d| d.codes.len()).sum();
        c
    }

    pub(super) fn live_collections(&self) -> impl Iterator<Item = &Collection> {
        self.collections.iter().filter(|c| !c.deleted)
    }

    pub(super) fn live_discounts(&self) -> impl Iterator<Item = &Discount> {
        self.discounts.iter().filter(|d| !d.deleted)
    }

    pub(super) fn live_variants(&self) -> impl Iterator<Item = &Variant> {
        self.live_products().flat_map(|p| p.variants.iter())
    }

    /// The live product and variant of an inventory item.
    pub(super) fn item_lookup(&self, item: u64) -> Option<(&Product, &Variant)> {
        self.live_products().find_map(|p| {
            p.variants
                .iter()
                .find(|v| v.inventory_item_id == item)
                .map(|v| (p, v))
        })
    }

    pub(super) fn product_by_id(&self, id: u64) -> Option<&Product> {
        self.live_products().find(|p| p.id == id)
    }

    pub(super) fn variant_by_item(&self, item: u64) -> Option<&Variant> {
        self.live_products()
            .flat_map(|p| p.variants.iter())
            .find(|v| v.inventory_item_id == item)
    }
}

impl FakeShopify {
    /// Shops holding a live access token (connected to the app).
    pub fn connected_shops(&self) -> Vec<String> {
        let st = self.st();
        let mut v: Vec<String> = st
            .shops
            .keys()
            .filter(|s| st.access_tokens.values().any(|owner| owner == *s))
            .cloned()
            .collect();
        v.sort();
        v
    }

    pub fn set_variant_price(&self, shop: &str, product: usize, variant: usize, price: &str) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        s.products[product].variants[variant].price = price.to_string();
        s.touch(product);
    }

    /// Shopify's numeric id of the shop (what lifecycle and compliance bodies carry).
    pub fn shop_id(&self, shop: &str) -> u64 {
        self.st().shop_mut(shop).shop_id
    }

    pub fn set_product_title(&self, shop: &str, product: usize, title: &str) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        s.products[product].title = title.to_string();
        s.touch(product);
    }

    /// Sets the `available` quantity of the variant's `level`-th inventory level.
    pub fn set_available(&self, shop: &str, product: usize, variant: usize, level: usize, q: i64) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        s.products[product].variants[variant].levels[level].available = q;
        s.touch(product);
    }

    /// Deletes a product (it disappears from every connection; indexes of others are kept).
    pub fn remove_product(&self, shop: &str, product: usize) {
        self.st().shop_mut(shop).products[product].deleted = true;
    }

    /// Creates a live product with one variant (`Default Title`, stocked at 2 locations) whose
    /// `createdAt`/`updatedAt` are the newest of the shop; returns its index (its id is
    /// `gid://shopify/Product/{1001 + index}`). It sorts last in every ID-sorted connection.
    pub fn add_product(&self, shop: &str) -> usize {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        let idx = s.products.len();
        let p = build_product(idx, 1, false, &mut s.ids);
        s.products.push(p);
        s.touch(idx);
        s.products[idx].created_at = s.products[idx].updated_at.clone();
        idx
    }

    /// Renames the `k`-th collection and makes its `updatedAt` the newest of the shop.
    pub fn set_collection_title(&self, shop: &str, k: usize, title: &str) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        let stamp = s.next_stamp();
        let c = &mut s.collections[k];
        c.title = title.to_string();
        c.updated_at = stamp;
    }

    /// Deletes the `k`-th collection: it disappears from `Collections`, and `Collection` /
    /// `CollectionProducts` answer `null` for it.
    pub fn remove_collection(&self, shop: &str, k: usize) {
        self.st().shop_mut(shop).collections[k].deleted = true;
    }

    /// Renames the `k`-th code discount and makes its `updated_at` the newest of the shop.
    pub fn set_discount_title(&self, shop: &str, k: usize, title: &str) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        let stamp = s.next_stamp();
        let d = &mut s.discounts[k];
        d.title = title.to_string();
        d.updated_at = stamp;
    }

    /// Deletes the `k`-th code discount: it disappears from `CodeDiscounts`, and
    /// `CodeDiscount` / `DiscountCodes` answer `null` for it.
    pub fn remove_discount(&self, shop: &str, k: usize) {
        self.st().shop_mut(shop).discounts[k].deleted = true;
    }

    // --- Catalogue inspection --------------------------------------------------------------

    pub fn counts(&self, shop: &str) -> CatalogueCounts {
        self.st().shop_mut(shop).counts()
    }

    pub fn products_len(&self, shop: &str) -> usize {
        self.counts(shop).products
    }

    pub fn variants_len(&self, shop: &str) -> usize {
        self.counts(shop).variants
    }

    pub fn collections_len(&self, shop: &str) -> usize {
        self.counts(shop).collections
    }

    pub fn discounts_len(&self, shop: &str) -> usize {
        self.counts(shop).discounts
    }

    /// Product count per shop before any deletion (valid product indexes are `0..n`).
    pub fn product_slots(&self, shop: &str) -> usize {
        self.st().shop_mut(shop).products.len()
    }

    pub fn product_id(&self, shop: &str, product: usize) -> String {
        gid("Product", self.st().shop_mut(shop).products[product].id)
    }

    pub fn product_title(&self, shop: &str, product: usize) -> String {
        self.st().shop_mut(shop).products[product].title.clone()
    }

    pub fn product_handle(&self, shop: &str, product: usize) -> String {
        self.st().shop_mut(shop).products[product].handle.clone()
    }

    pub fn variant_count(&self, shop: &str, product: usize) -> usize {
        self.st().shop_mut(shop).products[product].variants.len()
    }

    pub fn variant_id(&self, shop: &str, product: usize, variant: usize) -> String {
        gid(
            "ProductVariant",
            self.st().shop_mut(shop).products[product].variants[variant].id,
        )
    }

    pub fn variant_price(&self, shop: &str, product: usize, variant: usize) -> String {
        self.st().shop_mut(shop).products[product].variants[variant]
            .price
            .clone()
    }

    pub fn inventory_item_id(&self, shop: &str, product: usize, variant: usize) -> String {
        gid(
            "InventoryItem",
            self.st().shop_mut(shop).products[product].variants[variant].inventory_item_id,
        )
    }

    /// `(location name, available)` of each level of a variant.
    pub fn variant_levels(&self, shop: &str, product: usize, variant: usize) -> Vec<(String, i64)> {
        self.st().shop_mut(shop).products[product].variants[variant]
            .levels
            .iter()
            .map(|l| (LOCATIONS[l.location].to_string(), l.available))
            .collect()
    }

    /// `gid://shopify/Collection/N` of the `k`-th collection.
    pub fn collection_id(&self, shop: &str, k: usize) -> String {
        gid("Collection", self.st().shop_mut(shop).collections[k].id)
    }

    /// `gid://shopify/DiscountCodeNode/N` of the `k`-th code discount.
    pub fn discount_id(&self, shop: &str, k: usize) -> String {
        gid("DiscountCodeNode", self.st().shop_mut(shop).discounts[k].id)
    }

    pub fn metafield_count(&self, shop: &str, product: usize) -> usize {
        self.st().shop_mut(shop).products[product].metafields.len()
    }

    /// Handles of a collection's products, by collection handle.
    pub fn collection_product_handles(&self, shop: &str, handle: &str) -> Vec<String> {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        let c = s
            .collections
            .iter()
            .find(|c| !c.deleted && c.handle == handle);
        c.map(|c| {
            c.products
                .iter()
                .filter(|&&p| !s.products[p].deleted)
                .map(|&p| s.products[p].handle.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    pub fn discount_codes(&self, shop: &str, discount: usize) -> Vec<String> {
        self.st().shop_mut(shop).discounts[discount]
            .codes
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The shop name the fake answers for a domain (`acme-store.myshopify.com` → `Acme Store`).
    pub fn shop_name(&self, shop: &str) -> String {
        shop_name_for(shop)
    }
}
