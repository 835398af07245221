//! An in-process fake of the Shopify APIs the service calls, on a loopback port.
//!
//! Routes (the service reaches a shop at `SHOPIFY_SHOP_URL_TEMPLATE` = `http://127.0.0.1:PORT/{shop}`):
//! - `POST /{shop}/admin/oauth/access_token`: authorization-code exchange and refresh-token grant.
//! - `POST /{shop}/admin/api/{version}/graphql.json`: the GraphQL Admin API, dispatched on
//!   `operationName` (the documents of `src/shopify/queries.rs`), answering with exactly the
//!   fields those documents select, `edges{cursor,node}` + `pageInfo` connections, GIDs and
//!   `extensions.cost`. Bulk queries (`bulkOperationRunQuery`, `bulkOperation`) run in a
//!   background task for `set_bulk_delay` and, when they finish, post `bulk_operations/finish`
//!   to the shop's `BULK_OPERATIONS_FINISH` subscriptions. As on Shopify, `objectCount` is an
//!   `UnsignedInt64` (a JSON string), and `url` stays null when an operation has no objects.
//! - `GET /bulk/{shop}/{file}`: bulk results (JSONL), as the signed storage URLs Shopify hands
//!   out (`expire_bulk_urls` makes them answer 403 like an expired signature).
//!
//! Every GraphQL request is counted (per operation, per shop and in total) before any check, so
//! requests answered by `fail_next`, `throttle_next`, 401 or 404 count too.
//!
//! Catalogue (deterministic, generated lazily per shop domain): `FakeConfig::products` products
//! with 1–3 variants each (`1 + index % 3`), each variant stocked at 2 of 8 locations, except
//! the special cases named by the `pub const`s below (a product with 8 custom metafields, a
//! variant at 7 locations, the collection `big` with 120 products, a collection with exactly 50,
//! an empty one, a discount with 15 codes and one with exactly 10).
//! Product index `i` has id `gid://shopify/Product/{1001 + i}`. `FakeConfig::many_variants`
//! gives one product hundreds or thousands of variants.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Product index with more custom metafields than the first page (5) of `Products`.
pub const RICH_METAFIELDS_PRODUCT: usize = 7;
pub const RICH_METAFIELDS_COUNT: usize = 8;
/// Product index / variant index of the variant stocked at more locations than the first page (5).
pub const MANY_LOCATIONS_PRODUCT: usize = 11;
pub const MANY_LOCATIONS_VARIANT: usize = 0;
pub const MANY_LOCATIONS_COUNT: usize = 7;
/// Handle of the collection with more products than the first page (50) of `Collections`.
pub const BIG_COLLECTION_HANDLE: &str = "big";
pub const BIG_COLLECTION_SIZE: usize = 120;
/// Handle of the collection with exactly one first page (50) of products.
pub const EXACT_COLLECTION_HANDLE: &str = "exactly-fifty";
/// Handle of the collection without products.
pub const EMPTY_COLLECTION_HANDLE: &str = "empty";
/// Discount index with more codes than the first page (10) of `CodeDiscounts`.
pub const MANY_CODES_DISCOUNT: usize = 3;
pub const MANY_CODES_COUNT: usize = 15;
/// Discount index with exactly one first page (10) of codes.
pub const EXACT_CODES_DISCOUNT: usize = 4;

pub const MAX_PAGE: usize = 250;
pub const BUCKET_MAX: f64 = 2000.0;
pub const RESTORE_RATE: f64 = 1000.0;
pub const INVALID_TOKEN_BODY: &str =
    "[API] Invalid API key or access token (unrecognized login or wrong password)";

const LOCATIONS: [&str; 8] = [
    "Main Warehouse",
    "Downtown Store",
    "East Coast DC",
    "West Coast DC",
    "Pop-up Shop",
    "Outlet",
    "Returns Center",
    "Dropship Partner",
];
const LOCATION_BASE: u64 = 70001;

/// `WebhookSubscriptionTopic` enum values the fake knows (a realistic subset of Shopify's).
/// Compliance topics (`CUSTOMERS_REDACT`, `SHOP_REDACT`, ...) are not part of the enum.
pub const TOPIC_ENUM: &[&str] = &[
    "APP_UNINSTALLED",
    "APP_SUBSCRIPTIONS_UPDATE",
    "BULK_OPERATIONS_FINISH",
    "CARTS_CREATE",
    "CARTS_UPDATE",
    "CHECKOUTS_CREATE",
    "CHECKOUTS_UPDATE",
    "COLLECTIONS_CREATE",
    "COLLECTIONS_UPDATE",
    "COLLECTIONS_DELETE",
    "CUSTOMERS_CREATE",
    "CUSTOMERS_UPDATE",
    "CUSTOMERS_DELETE",
    "DISCOUNTS_CREATE",
    "DISCOUNTS_UPDATE",
    "DISCOUNTS_DELETE",
    "DISCOUNTS_REDEEMCODE_ADDED",
    "DISCOUNTS_REDEEMCODE_REMOVED",
    "FULFILLMENTS_CREATE",
    "INVENTORY_ITEMS_CREATE",
    "INVENTORY_ITEMS_UPDATE",
    "INVENTORY_ITEMS_DELETE",
    "INVENTORY_LEVELS_CONNECT",
    "INVENTORY_LEVELS_UPDATE",
    "INVENTORY_LEVELS_DISCONNECT",
    "LOCATIONS_CREATE",
    "LOCATIONS_UPDATE",
    "LOCATIONS_DELETE",
    "ORDERS_CREATE",
    "ORDERS_UPDATED",
    "ORDERS_PAID",
    "ORDERS_CANCELLED",
    "ORDERS_FULFILLED",
    "PRODUCTS_CREATE",
    "PRODUCTS_UPDATE",
    "PRODUCTS_DELETE",
    "PRODUCT_LISTINGS_ADD",
    "PRODUCT_LISTINGS_UPDATE",
    "PRODUCT_LISTINGS_REMOVE",
    "SHOP_UPDATE",
    "THEMES_PUBLISH",
];

// ---------------------------------------------------------------------------------------------
// Configuration and public handle
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub api_key: String,
    pub api_secret: String,
    pub api_version: String,
    /// Answered as `scope` by the token endpoint.
    pub scopes: String,
    /// Products per shop.
    pub products: usize,
    /// Collections per shop (the special ones are among the first 10).
    pub collections: usize,
    /// Code discounts per shop.
    pub discounts: usize,
    /// Shopify's single-query limit: a request whose requested cost exceeds it is refused with
    /// `MAX_COST_EXCEEDED` (cost model: connection = 2 + first × node, object = 1, scalar = 0).
    pub max_query_cost: u64,
    /// Run a real leaky bucket (2000 points, 1000/s) and answer `THROTTLED` when a request's
    /// requested cost exceeds what is available. Off by default: the bucket then refills fully
    /// between requests and `currentlyAvailable` is `2000 − actualQueryCost`.
    pub simulate_bucket: bool,
    /// `(product index, variant count)`: that product gets that many variants instead of
    /// `1 + index % 3` (titles and `Size` option values `Size 1`, `Size 2`, …, each stocked at
    /// 2 locations), e.g. to exercise products with 300 or 2,048 variants. Ignored when the
    /// index is not below `products`.
    pub many_variants: Option<(usize, usize)>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "fake-shopify-api-key".into(),
            api_secret: "fake-shopify-api-secret-0123456789".into(),
            api_version: "2026-10".into(),
            scopes:
                "read_product_listings,read_inventory,read_discounts,read_locations,read_products"
                    .into(),
            products: 600,
            collections: 23,
            discounts: 30,
            max_query_cost: 1000,
            simulate_bucket: false,
            many_variants: None,
        }
    }
}

/// A webhook subscription as stored by the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSubscription {
    /// `gid://shopify/WebhookSubscription/N`
    pub id: String,
    /// GraphQL enum value, e.g. `PRODUCTS_UPDATE`.
    pub topic: String,
    pub uri: String,
    pub format: String,
}

/// Catalogue sizes of one shop (deleted products excluded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogueCounts {
    pub products: usize,
    pub variants: usize,
    pub inventory_levels: usize,
    pub metafields: usize,
    pub collections: usize,
    pub collection_memberships: usize,
    pub discounts: usize,
    pub discount_codes: usize,
}

/// Cloneable handle on the running fake. The server stops when the last handle is dropped.
#[derive(Clone)]
pub struct FakeShopify {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

type Shared = Arc<Mutex<State>>;

impl FakeShopify {
    pub async fn start(config: FakeConfig) -> FakeShopify {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new_cyclic(|me: &Weak<Mutex<State>>| {
            let mut st = State::new(config);
            st.base_url = format!("http://{addr}");
            st.me = me.clone();
            Mutex::new(st)
        });
        let app = Router::new()
            .route("/{shop}/admin/oauth/access_token", post(token_handler))
            .route("/{shop}/admin/oauth/authorize", get(authorize_handler))
            .route(
                "/{shop}/admin/api/{version}/graphql.json",
                post(graphql_handler),
            )
            .route("/bulk/{shop}/{file}", get(bulk_file_handler))
            .fallback(fallback_handler)
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        FakeShopify {
            state,
            addr,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> FakeConfig {
        self.st().config.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/{shop}` (for `SHOPIFY_SHOP_URL_TEMPLATE`).
    pub fn shop_url_template(&self) -> String {
        format!("{}/{{shop}}", self.base_url())
    }

    /// `{base}/{shop}/admin/api/{version}/graphql.json`
    pub fn graphql_url(&self, shop: &str) -> String {
        format!(
            "{}/{shop}/admin/api/{}/graphql.json",
            self.base_url(),
            self.st().config.api_version
        )
    }

    /// `{base}/{shop}/admin/oauth/access_token`
    pub fn token_url(&self, shop: &str) -> String {
        format!("{}/{shop}/admin/oauth/access_token", self.base_url())
    }

    /// Service settings pointing at this fake: `SHOPIFY_API_KEY`, `SHOPIFY_API_SECRET`,
    /// `SHOPIFY_API_VERSION`, `SHOPIFY_SCOPES`, `SHOPIFY_SHOP_URL_TEMPLATE`.
    pub fn vars(&self) -> Vec<(String, String)> {
        let c = self.config();
        vec![
            ("SHOPIFY_API_KEY".into(), c.api_key),
            ("SHOPIFY_API_SECRET".into(), c.api_secret),
            ("SHOPIFY_API_VERSION".into(), c.api_version),
            ("SHOPIFY_SCOPES".into(), c.scopes),
            ("SHOPIFY_SHOP_URL_TEMPLATE".into(), self.shop_url_template()),
        ]
    }

    // --- OAuth -----------------------------------------------------------------------------

    /// A fresh single-use authorization code for `shop` (creates the shop if needed).
    pub fn issue_code(&self, shop: &str) -> String {
        let mut st = self.st();
        st.shop_mut(shop);
        let code = random_hex(16);
        st.codes.insert(code.clone(), shop.to_string());
        code
    }

    /// Expiring-token mode: exchanges and refreshes also answer `expires_in`, `refresh_token`
    /// and `refresh_token_expires_in`.
    pub fn set_expiring(&self, on: bool) {
        self.st().expiring = on;
    }

    /// All of the shop's access and refresh tokens stop working (uninstall / revocation).
    pub fn revoke_tokens(&self, shop: &str) {
        let mut st = self.st();
        st.access_tokens.retain(|_, s| s != shop);
        st.refresh_tokens.retain(|_, (s, _)| s != shop);
    }

    /// The shop's access tokens stop working (as after `expires_in`); refresh tokens stay valid.
    pub fn expire_access_tokens(&self, shop: &str) {
        self.st().access_tokens.retain(|_, s| s != shop);
    }

    /// The most recently issued access token of the shop (live or not).
    pub fn last_access_token(&self, shop: &str) -> Option<String> {
        self.st()
            .shops
            .get(shop)
            .and_then(|s| s.last_access_token.clone())
    }

    /// The most recently issued refresh token of the shop (live or not).
    pub fn last_refresh_token(&self, shop: &str) -> Option<String> {
        self.st()
            .shops
            .get(shop)
            .and_then(|s| s.last_refresh_token.clone())
    }

    pub fn is_live_token(&self, shop: &str, token: &str) -> bool {
        self.st().access_tokens.get(token).map(String::as_str) == Some(shop)
    }

    /// Successful authorization-code exchanges.
    pub fn token_exchanges(&self) -> usize {
        self.st().token_exchanges
    }

    /// Successful refresh-token grants.
    pub fn refreshes(&self) -> usize {
        self.st().refreshes
    }

    /// Token-endpoint requests answered 400.
    pub fn rejected_token_requests(&self) -> usize {
        self.st().rejected_token_requests
    }

    /// The last token-endpoint request body, parsed (JSON or form).
    pub fn last_token_request(&self) -> Option<Value> {
        self.st().last_token_request.clone()
    }

    // --- Failure injection -----------------------------------------------------------------

    /// The next `n` authorised GraphQL requests answer HTTP 200 with a `THROTTLED` error, no
    /// `data`, and `currentlyAvailable` 5 points below the requested cost (a ~5 ms wait).
    pub fn throttle_next(&self, n: usize) {
        self.st().throttle_next = n;
    }

    /// The next `n` GraphQL requests (checked before authentication) answer HTTP `status`:
    /// 429 with `Retry-After: 0` and Shopify's JSON body, 5xx with a plain-text body, other
    /// codes with `{"errors": "<reason>"}`.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.st().fail_next = (status, n);
    }

    /// Delay every GraphQL answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.st().delay = d;
    }

    // --- Bulk operations -------------------------------------------------------------------

    /// How long a bulk query takes from `bulkOperationRunQuery` to `COMPLETED` (or `FAILED`);
    /// it is `RUNNING` from half that time. Default 50 ms. Applies to operations created later.
    pub fn set_bulk_delay(&self, d: Duration) {
        self.st().bulk_delay = d;
    }

    /// The next `n` `bulkOperationRunQuery` calls answer the user error `LIMIT_REACHED` (no
    /// operation is created).
    pub fn bulk_limit_reached_next(&self, n: usize) {
        self.st().bulk_limit_next = n;
    }

    /// The next bulk operation created ends `FAILED` with this `errorCode` (e.g.
    /// `INTERNAL_SERVER_ERROR`, `TIMEOUT`, `ACCESS_DENIED`), `url` null and `partialDataUrl`
    /// pointing at a file with the first half of its lines (null when that half is empty).
    pub fn fail_next_bulk(&self, error_code: &str) {
        self.st().bulk_fail_next = Some(error_code.to_string());
    }

    /// Every bulk result file created so far (full and partial) answers HTTP 403 with the
    /// storage provider's `AccessDenied` / `Request has expired` XML; later files are fine.
    pub fn expire_bulk_urls(&self) {
        for f in self.st().bulk_files.values_mut() {
            f.expired = true;
        }
    }

    /// The next `n` result files created are already expired when first read (a link that ran
    /// out between `COMPLETED` and the download).
    pub fn expire_next_bulk_files(&self, n: usize) {
        self.st().bulk_expire_next = n;
    }

    /// Requests to `GET /bulk/{shop}/{file}`, whatever the answer (200, 403 or 404).
    pub fn bulk_downloads(&self) -> usize {
        self.st().bulk_downloads
    }

    /// Bulk operations created by `bulkOperationRunQuery` (user errors excluded).
    pub fn bulk_operations_started(&self) -> usize {
        self.st().bulk_started
    }

    /// `bulk_operations/finish` webhooks posted (counted once each POST has been answered or
    /// has failed; failures are not retried).
    pub fn finish_webhooks_sent(&self) -> usize {
        self.st().finish_webhooks_sent
    }

    // --- Catalogue changes -----------------------------------------------------------------

    /// Delivers `topic` with `body` to every subscription of it the shop has, as Shopify
    /// does after a change; returns how many deliveries were answered 200.
    pub async fn emit_webhook(&self, shop: &str, topic: &str, body: &Value) -> usize {
        let posts = self.st().webhook_posts(shop, topic, body.to_string());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let mut ok = 0;
        for post in posts {
            let mut req = client.post(&post.uri);
            for (k, v) in &post.headers {
                req = req.header(*k, v);
            }
            if let Ok(r) = req.body(post.body).send().await {
                ok += usize::from(r.status().is_success());
            }
        }
        ok
    }

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

    // --- Webhook bodies (REST shapes, as Shopify posts them) --------------------------------

    /// `products/create` / `products/update` body of a product: `id` (numeric),
    /// `admin_graphql_api_id`, `title`, `handle`, `updated_at` and `variants` (`id`,
    /// `inventory_item_id`, `price`), from the current data.
    pub fn product_webhook_body(&self, shop: &str, product: usize) -> Value {
        let mut st = self.st();
        let p = &st.shop_mut(shop).products[product];
        let variants: Vec<Value> = p
            .variants
            .iter()
            .map(|v| {
                json!({
                    "id": v.id,
                    "inventory_item_id": v.inventory_item_id,
                    "price": v.price,
                })
            })
            .collect();
        json!({
            "id": p.id,
            "admin_graphql_api_id": gid("Product", p.id),
            "title": p.title,
            "handle": p.handle,
            "updated_at": p.updated_at,
            "variants": variants,
        })
    }

    /// `inventory_levels/update` body of a variant's `level`-th inventory level:
    /// `inventory_item_id` and `location_id` (numeric), `available`, `updated_at` (the
    /// product's) and `admin_graphql_api_id` (`gid://shopify/InventoryLevel/…`).
    pub fn inventory_level_webhook_body(
        &self,
        shop: &str,
        product: usize,
        variant: usize,
        level: usize,
    ) -> Value {
        let mut st = self.st();
        let p = &st.shop_mut(shop).products[product];
        let v = &p.variants[variant];
        let l = &v.levels[level];
        let location = LOCATION_BASE + l.location as u64;
        json!({
            "inventory_item_id": v.inventory_item_id,
            "location_id": location,
            "available": l.available,
            "updated_at": p.updated_at,
            "admin_graphql_api_id": format!(
                "gid://shopify/InventoryLevel/{location}?inventory_item_id={}",
                v.inventory_item_id
            ),
        })
    }

    /// `collections/create` / `collections/update` body of the `k`-th collection: `id`
    /// (numeric), `admin_graphql_api_id`, `title`, `handle`, `updated_at`.
    pub fn collection_webhook_body(&self, shop: &str, k: usize) -> Value {
        let mut st = self.st();
        let c = &st.shop_mut(shop).collections[k];
        json!({
            "id": c.id,
            "admin_graphql_api_id": gid("Collection", c.id),
            "title": c.title,
            "handle": c.handle,
            "updated_at": c.updated_at,
        })
    }

    /// `discounts/create` / `discounts/update` body of the `k`-th code discount:
    /// `admin_graphql_api_id` (`gid://shopify/DiscountCodeNode/N`), `title`, `status`
    /// (`ACTIVE`, `EXPIRED`, `SCHEDULED`), `created_at`, `updated_at`.
    pub fn discount_webhook_body(&self, shop: &str, k: usize) -> Value {
        let mut st = self.st();
        let d = &st.shop_mut(shop).discounts[k];
        json!({
            "admin_graphql_api_id": gid("DiscountCodeNode", d.id),
            "title": d.title,
            "status": d.status,
            "created_at": d.created_at,
            "updated_at": d.updated_at,
        })
    }

    // --- Webhook subscriptions -------------------------------------------------------------

    /// Stores a subscription as if created earlier; returns its GID.
    pub fn preload_subscription(&self, shop: &str, topic: &str, uri: &str) -> String {
        let mut st = self.st();
        let id = st.next_subscription_id();
        st.shop_mut(shop).subscriptions.push(FakeSubscription {
            id: id.clone(),
            topic: topic.to_string(),
            uri: uri.to_string(),
            format: "JSON".into(),
        });
        id
    }

    pub fn subscriptions(&self, shop: &str) -> Vec<FakeSubscription> {
        self.st()
            .shops
            .get(shop)
            .map(|s| s.subscriptions.clone())
            .unwrap_or_default()
    }

    /// Subscriptions stored by `WebhookSubscriptionCreate` (duplicates refused are not counted).
    pub fn subscription_creates(&self) -> usize {
        self.st().subscription_creates
    }

    // --- Counters --------------------------------------------------------------------------

    /// GraphQL requests with this `operationName`, all shops, whatever the answer.
    pub fn requests(&self, op: &str) -> usize {
        self.st().op_requests.get(op).copied().unwrap_or(0)
    }

    /// GraphQL requests with this `operationName` for one shop.
    pub fn shop_requests(&self, shop: &str, op: &str) -> usize {
        self.st()
            .shop_op_requests
            .get(&(shop.to_string(), op.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The most GraphQL requests for `shop` ever answered at the same time (1 when every
    /// client of the shop waits for its previous answer before asking again).
    pub fn max_in_flight(&self, shop: &str) -> usize {
        self.st().max_in_flight.get(shop).copied().unwrap_or(0)
    }

    pub fn total_graphql_requests(&self) -> usize {
        self.st().total_graphql
    }

    /// The last request body (`{"query","operationName","variables"}`) of an operation.
    pub fn last_request(&self, op: &str) -> Option<Value> {
        self.st().last_bodies.get(op).cloned()
    }

    /// `METHOD path` of requests no route matched.
    pub fn unexpected_requests(&self) -> Vec<String> {
        self.st().unexpected.clone()
    }

    /// Zeroes every request counter (tokens and data are kept).
    pub fn reset_counters(&self) {
        let mut st = self.st();
        st.op_requests.clear();
        st.shop_op_requests.clear();
        st.total_graphql = 0;
        st.token_exchanges = 0;
        st.refreshes = 0;
        st.rejected_token_requests = 0;
        st.subscription_creates = 0;
        st.max_in_flight.clear();
        st.bulk_downloads = 0;
        st.bulk_started = 0;
        st.finish_webhooks_sent = 0;
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

// ---------------------------------------------------------------------------------------------
// State and catalogue
// ---------------------------------------------------------------------------------------------

pub struct State {
    config: FakeConfig,
    expiring: bool,
    shops: HashMap<String, ShopData>,
    /// code → shop
    codes: HashMap<String, String>,
    /// access token → shop
    access_tokens: HashMap<String, String>,
    /// refresh token → (shop, access token issued with it)
    refresh_tokens: HashMap<String, (String, String)>,
    throttle_next: usize,
    fail_next: (u16, usize),
    delay: Duration,
    /// GraphQL requests being answered now, per shop, and the most ever at once.
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
    op_requests: HashMap<String, usize>,
    shop_op_requests: HashMap<(String, String), usize>,
    total_graphql: usize,
    token_exchanges: usize,
    refreshes: usize,
    rejected_token_requests: usize,
    subscription_creates: usize,
    last_bodies: HashMap<String, Value>,
    last_token_request: Option<Value>,
    unexpected: Vec<String>,
    subscription_seq: u64,
    /// `http://127.0.0.1:PORT`, for bulk result URLs.
    base_url: String,
    /// The state itself, for the tasks that finish bulk operations.
    me: Weak<Mutex<State>>,
    bulk_delay: Duration,
    bulk_limit_next: usize,
    bulk_fail_next: Option<String>,
    bulk_expire_next: usize,
    bulk_seq: u64,
    bulk_ops: HashMap<u64, BulkOp>,
    /// (shop, file name) → result file.
    bulk_files: HashMap<(String, String), BulkFile>,
    bulk_downloads: usize,
    bulk_started: usize,
    finish_webhooks_sent: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BulkKind {
    Products,
    Variants,
}

struct BulkOp {
    shop: String,
    /// `CREATED`, `RUNNING`, `COMPLETED` or `FAILED`.
    status: &'static str,
    /// The `errorCode` this operation will fail with.
    fail_with: Option<String>,
    error_code: Option<String>,
    /// The JSONL lines, snapshotted at creation.
    lines: Vec<String>,
    object_count: usize,
    url: Option<String>,
    partial_url: Option<String>,
    created_at: String,
}

struct BulkFile {
    body: Bytes,
    expired: bool,
}

/// A webhook to post once the state lock is released.
struct WebhookPost {
    uri: String,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// Next ids of the per-shop sequences (each type has its own range: products 1001…,
/// collections 3001…, discounts 4001…, variants 40001…, inventory items 50001…, codes 60001…,
/// locations 70001…, metafields 80001…; GIDs carry the type, so ids only need to be unique
/// within one).
struct IdAlloc {
    variant: u64,
    item: u64,
    metafield: u64,
    /// Variants generated so far (spreads stock over the locations).
    variants_made: usize,
}

struct ShopData {
    domain: String,
    shop_id: u64,
    products: Vec<Product>,
    collections: Vec<Collection>,
    discounts: Vec<Discount>,
    subscriptions: Vec<FakeSubscription>,
    last_access_token: Option<String>,
    last_refresh_token: Option<String>,
    update_seq: u64,
    bucket: f64,
    bucket_at: Instant,
    ids: IdAlloc,
}

struct Product {
    id: u64,
    title: String,
    handle: String,
    description: String,
    product_type: String,
    vendor: String,
    tags: Vec<String>,
    status: &'static str,
    created_at: String,
    updated_at: String,
    image: Option<(String, Option<String>)>,
    metafields: Vec<Metafield>,
    variants: Vec<Variant>,
    deleted: bool,
}

struct Metafield {
    id: u64,
    key: String,
    kind: &'static str,
    value: String,
}

struct Variant {
    id: u64,
    product_id: u64,
    title: String,
    /// `Size` option value; `None` for a product's single default variant.
    size: Option<String>,
    sku: Option<String>,
    price: String,
    compare_at: Option<String>,
    inventory_item_id: u64,
    levels: Vec<Level>,
}

struct Level {
    /// Index into `LOCATIONS`.
    location: usize,
    available: i64,
}

struct Collection {
    id: u64,
    title: String,
    handle: String,
    description: String,
    updated_at: String,
    /// Product indexes, in collection order.
    products: Vec<usize>,
    deleted: bool,
}

struct Discount {
    id: u64,
    typename: &'static str,
    title: String,
    status: &'static str,
    summary: String,
    starts_at: String,
    ends_at: Option<String>,
    usage_limit: Option<u64>,
    once_per_customer: bool,
    /// (code id, code)
    codes: Vec<(u64, String)>,
    created_at: String,
    updated_at: String,
    deleted: bool,
}

const ADJECTIVES: [&str; 8] = [
    "Classic", "Vintage", "Organic", "Premium", "Everyday", "Deluxe", "Rugged", "Slim",
];
const NOUNS: [(&str, &str); 10] = [
    ("Tee", "Shirts"),
    ("Hoodie", "Sweaters"),
    ("Mug", "Kitchen"),
    ("Cap", "Hats"),
    ("Backpack", "Bags"),
    ("Sneaker", "Shoes"),
    ("Notebook", "Stationery"),
    ("Candle", "Home"),
    ("Scarf", "Accessories"),
    ("Bottle", "Kitchen"),
];
const SIZES: [&str; 3] = ["Small", "Medium", "Large"];
const VENDORS: [&str; 3] = ["Acme Apparel", "Northwind Goods", "Globex Studio"];
const TAGS: [&str; 6] = ["new", "sale", "summer", "bestseller", "eco", "gift"];

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn timestamp(year: u32, n: usize) -> String {
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        1 + (n / 28) % 12,
        1 + n % 28,
        n % 24,
        (n * 7) % 60,
        (n * 13) % 60
    )
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn shop_name_for(domain: &str) -> String {
    let label = domain.split('.').next().unwrap_or(domain);
    label
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// Product index `i` (id `1001 + i`) with `n_var` variants: `Default Title` when there is one,
/// `Small`/`Medium`/`Large` up to 3, or `Size 1`, `Size 2`, … when `sized` (each at 2 locations).
fn build_product(i: usize, n_var: usize, sized: bool, ids: &mut IdAlloc) -> Product {
    let id = 1001 + i as u64;
    let adj = ADJECTIVES[i % ADJECTIVES.len()];
    let (noun, ptype) = NOUNS[(i / ADJECTIVES.len()) % NOUNS.len()];
    let (title, handle) = if i % 50 == 13 {
        (
            format!("Café Crème {noun} {id}"),
            format!("cafe-creme-{}-{id}", noun.to_lowercase()),
        )
    } else {
        (
            format!("{adj} {noun} {id}"),
            format!("{}-{}-{id}", adj.to_lowercase(), noun.to_lowercase()),
        )
    };
    let description = if i % 9 == 4 {
        format!("The \"{adj}\" {noun}.\nLine two — with a tab\tand <b>markup</b>.")
    } else if i % 11 == 10 {
        String::new()
    } else {
        format!(
            "A {} {} for every day.",
            adj.to_lowercase(),
            noun.to_lowercase()
        )
    };
    let tags = (0..i % 4)
        .map(|t| TAGS[(i + t) % TAGS.len()].to_string())
        .collect();
    let status = if i % 25 == 24 {
        "ARCHIVED"
    } else if i % 10 == 9 {
        "DRAFT"
    } else {
        "ACTIVE"
    };
    let image = if i % 6 == 5 {
        None
    } else {
        Some((
            format!("https://cdn.shopify.com/s/files/1/0600/0001/files/{handle}.jpg?v=1700000000"),
            if i.is_multiple_of(2) {
                Some(format!("{title} front view"))
            } else {
                None
            },
        ))
    };
    let n_meta = if i == RICH_METAFIELDS_PRODUCT {
        RICH_METAFIELDS_COUNT
    } else {
        i % 3
    };
    let meta_keys: [(&str, &str); 8] = [
        ("material", "single_line_text_field"),
        ("care_guide", "multi_line_text_field"),
        ("warranty_years", "number_integer"),
        ("origin", "single_line_text_field"),
        ("weight_grams", "number_integer"),
        ("features", "json"),
        ("fit", "single_line_text_field"),
        ("size_chart", "url"),
    ];
    let metafields = (0..n_meta)
        .map(|m| {
            let (key, kind) = meta_keys[m % meta_keys.len()];
            let value = match kind {
                "number_integer" => ((i + m) % 5 + 1).to_string(),
                "json" => format!(
                    "{{\"waterproof\":{},\"layers\":{}}}",
                    i.is_multiple_of(2),
                    m
                ),
                "multi_line_text_field" => "Wash cold.\nDry flat.".to_string(),
                "url" => format!("https://example.com/size-charts/{id}"),
                _ => format!("{key} value {id}"),
            };
            let mf = Metafield {
                id: ids.metafield,
                key: key.to_string(),
                kind,
                value,
            };
            ids.metafield += 1;
            mf
        })
        .collect();
    let base = 999 + (i as u64 * 137) % 9000;
    let mut variants = Vec::with_capacity(n_var);
    for j in 0..n_var {
        let size = if sized {
            Some(format!("Size {}", j + 1))
        } else if n_var == 1 {
            None
        } else {
            Some(SIZES[j % SIZES.len()].to_string())
        };
        let n_levels = if !sized && i == MANY_LOCATIONS_PRODUCT && j == MANY_LOCATIONS_VARIANT {
            MANY_LOCATIONS_COUNT
        } else {
            2
        };
        let mut locs: Vec<usize> = (0..n_levels)
            .map(|k| (ids.variants_made + k * 3) % LOCATIONS.len())
            .collect();
        if n_levels > 2 {
            locs = (0..n_levels).collect();
        }
        locs.sort_unstable();
        let levels = locs
            .into_iter()
            .map(|loc| Level {
                location: loc,
                available: ((i * 31 + j * 17 + loc * 7) % 50) as i64 - 3,
            })
            .collect();
        let price = base + j as u64 * 500;
        variants.push(Variant {
            id: ids.variant,
            product_id: id,
            title: size.clone().unwrap_or_else(|| "Default Title".into()),
            size,
            sku: if i % 17 == 16 {
                None
            } else {
                Some(format!("SKU-{id}-{}", j + 1))
            },
            price: money(price),
            compare_at: if i.is_multiple_of(4) {
                Some(money(price + 1000))
            } else {
                None
            },
            inventory_item_id: ids.item,
            levels,
        });
        ids.variant += 1;
        ids.item += 1;
        ids.variants_made += 1;
    }
    Product {
        id,
        title,
        handle,
        description,
        product_type: ptype.to_string(),
        vendor: VENDORS[i % VENDORS.len()].to_string(),
        tags,
        status,
        created_at: timestamp(2024, i),
        updated_at: timestamp(2025, i),
        image,
        metafields,
        variants,
        deleted: false,
    }
}

impl ShopData {
    fn generate(domain: &str, cfg: &FakeConfig) -> ShopData {
        let mut ids = IdAlloc {
            variant: 40001,
            item: 50001,
            metafield: 80001,
            variants_made: 0,
        };
        let products = (0..cfg.products)
            .map(|i| match cfg.many_variants {
                Some((p, n)) if p == i => build_product(i, n.max(1), true, &mut ids),
                _ => build_product(i, 1 + i % 3, false, &mut ids),
            })
            .collect();
        let np = cfg.products;
        let big_at = 2usize;
        let exact_at = 5usize;
        let empty_at = 9usize;
        let collections = (0..cfg.collections)
            .map(|k| {
                let (title, handle, members): (String, String, Vec<usize>) = if k == big_at {
                    (
                        "Big Collection".into(),
                        BIG_COLLECTION_HANDLE.into(),
                        (0..np.min(BIG_COLLECTION_SIZE))
                            .map(|p| (p * 5) % np.max(1))
                            .collect(),
                    )
                } else if k == exact_at {
                    (
                        "Exactly Fifty".into(),
                        EXACT_COLLECTION_HANDLE.into(),
                        (0..np.min(50)).map(|p| np - 1 - p).collect(),
                    )
                } else if k == empty_at {
                    ("Empty".into(), EMPTY_COLLECTION_HANDLE.into(), Vec::new())
                } else {
                    let (noun, _) = NOUNS[k % NOUNS.len()];
                    (
                        format!("{noun} Picks {k}"),
                        format!("{}-picks-{k}", noun.to_lowercase()),
                        (0..np).filter(|p| (p * 7 + k) % 23 == 0).collect(),
                    )
                };
                Collection {
                    id: 3001 + k as u64,
                    description: if k % 4 == 1 {
                        String::new()
                    } else {
                        format!("Hand-picked: {title}.")
                    },
                    title,
                    handle,
                    updated_at: timestamp(2025, 100 + k),
                    products: dedup(members),
                    deleted: false,
                }
            })
            .collect();

        let mut code_id = 60001u64;
        let discounts = (0..cfg.discounts)
            .map(|k| {
                let (typename, title, summary) = match k % 3 {
                    0 => (
                        "DiscountCodeBasic",
                        format!("Save {}%", 5 + (k % 6) * 5),
                        format!("{}% off entire order", 5 + (k % 6) * 5),
                    ),
                    1 => (
                        "DiscountCodeBxgy",
                        format!("Buy 2 get 1 #{k}"),
                        "Buy 2 items, get 1 item free".to_string(),
                    ),
                    _ => (
                        "DiscountCodeFreeShipping",
                        format!("Free shipping #{k}"),
                        "Free shipping on all products • Minimum purchase of $50.00".to_string(),
                    ),
                };
                let n_codes = match k {
                    MANY_CODES_DISCOUNT => MANY_CODES_COUNT,
                    EXACT_CODES_DISCOUNT => 10,
                    _ => 1 + k % 2,
                };
                let codes = (0..n_codes)
                    .map(|c| {
                        let v = (code_id, format!("SAVE{k}-{}", c + 1));
                        code_id += 1;
                        v
                    })
                    .collect();
                Discount {
                    id: 4001 + k as u64,
                    typename,
                    title,
                    status: if k % 7 == 6 {
                        "EXPIRED"
                    } else if k % 11 == 10 {
                        "SCHEDULED"
                    } else {
                        "ACTIVE"
                    },
                    summary,
                    starts_at: timestamp(2025, 200 + k),
                    ends_at: if k % 2 == 0 {
                        None
                    } else {
                        Some(timestamp(2027, k))
                    },
                    usage_limit: if k % 3 == 2 { Some(100) } else { None },
                    once_per_customer: k % 2 == 1,
                    codes,
                    created_at: timestamp(2025, 180 + k),
                    updated_at: timestamp(2025, 150 + k),
                    deleted: false,
                }
            })
            .collect();

        ShopData {
            domain: domain.to_string(),
            shop_id: 10_000_000 + fnv(domain) % 90_000_000,
            products,
            collections,
            discounts,
            subscriptions: Vec::new(),
            last_access_token: None,
            last_refresh_token: None,
            update_seq: 0,
            bucket: BUCKET_MAX,
            bucket_at: Instant::now(),
            ids,
        }
    }

    /// The next `updated_at` of the shop: now (whole seconds, as Shopify stamps them), and
    /// later than every generated timestamp (all in 2025) and every earlier stamp.
    fn next_stamp(&mut self) -> String {
        let now = Utc::now().timestamp().max(0) as u64;
        self.update_seq = now.max(self.update_seq + 1);
        DateTime::<Utc>::from_timestamp(self.update_seq as i64, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn touch(&mut self, product: usize) {
        let stamp = self.next_stamp();
        self.products[product].updated_at = stamp;
    }

    fn live_products(&self) -> impl Iterator<Item = &Product> {
        self.products.iter().filter(|p| !p.deleted)
    }

    fn counts(&self) -> CatalogueCounts {
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

    fn live_collections(&self) -> impl Iterator<Item = &Collection> {
        self.collections.iter().filter(|c| !c.deleted)
    }

    fn live_discounts(&self) -> impl Iterator<Item = &Discount> {
        self.discounts.iter().filter(|d| !d.deleted)
    }

    fn live_variants(&self) -> impl Iterator<Item = &Variant> {
        self.live_products().flat_map(|p| p.variants.iter())
    }

    /// The live product and variant of an inventory item.
    fn item_lookup(&self, item: u64) -> Option<(&Product, &Variant)> {
        self.live_products().find_map(|p| {
            p.variants
                .iter()
                .find(|v| v.inventory_item_id == item)
                .map(|v| (p, v))
        })
    }

    fn product_by_id(&self, id: u64) -> Option<&Product> {
        self.live_products().find(|p| p.id == id)
    }

    fn variant_by_item(&self, item: u64) -> Option<&Variant> {
        self.live_products()
            .flat_map(|p| p.variants.iter())
            .find(|v| v.inventory_item_id == item)
    }

    /// Refills the cost bucket at the restore rate.
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.bucket_at).as_secs_f64();
        self.bucket = (self.bucket + dt * RESTORE_RATE).min(BUCKET_MAX);
        self.bucket_at = now;
    }
}

fn dedup(v: Vec<usize>) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|x| seen.insert(*x)).collect()
}

// ---------------------------------------------------------------------------------------------
// Rendering: connections, cursors, nodes
// ---------------------------------------------------------------------------------------------

fn encode_cursor(key: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{{\"last_id\":{key},\"last_value\":\"{key}\"}}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["last_id"].as_u64()
}

/// Items after the cursor key, at most `first`, and whether more follow.
fn paginate<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&T) -> u64,
    first: usize,
    after: Option<u64>,
) -> (Vec<&'a T>, bool) {
    let mut it = items
        .into_iter()
        .filter(move |t| after.is_none_or(|a| key(t) > a));
    let page: Vec<&T> = it.by_ref().take(first).collect();
    let more = it.next().is_some();
    (page, more)
}

fn connection(edges: Vec<(u64, Value)>, has_next: bool) -> Value {
    let end = edges.last().map(|(k, _)| encode_cursor(*k));
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|(k, node)| json!({"cursor": encode_cursor(k), "node": node}))
        .collect();
    json!({
        "edges": edges,
        "pageInfo": {"hasNextPage": has_next, "endCursor": end},
    })
}

/// Metafields connection and its actual cost.
fn metafields_conn(p: &Product, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(&p.metafields, |m| m.id, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|m| (m.id, metafield_node(m)))
        .collect();
    (connection(edges, more), cost)
}

fn metafield_node(m: &Metafield) -> Value {
    json!({"namespace": "custom", "key": m.key, "type": m.kind, "value": m.value})
}

/// An `InventoryLevel` node: `location { id name }` and `quantities(names: ["available"])`.
fn level_node(l: &Level) -> Value {
    let loc = LOCATION_BASE + l.location as u64;
    json!({
        "location": {"id": gid("Location", loc), "name": LOCATIONS[l.location]},
        "quantities": [{"name": "available", "quantity": l.available}],
    })
}

fn levels_conn(v: &Variant, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(
        &v.levels,
        |l| LOCATION_BASE + l.location as u64,
        first,
        after,
    );
    let cost = 2 + 3 * page.len() as u64;
    let edges = page
        .into_iter()
        .map(|l| (LOCATION_BASE + l.location as u64, level_node(l)))
        .collect();
    (connection(edges, more), cost)
}

fn collection_products_conn(
    s: &ShopData,
    c: &Collection,
    first: usize,
    after: Option<u64>,
) -> (Value, u64) {
    let positions: Vec<(u64, usize)> = c
        .products
        .iter()
        .enumerate()
        .filter(|(_, &p)| !s.products[p].deleted)
        .map(|(pos, &p)| (pos as u64 + 1, p))
        .collect();
    let (page, more) = paginate(&positions, |(k, _)| *k, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|(k, p)| (*k, json!({"handle": s.products[*p].handle})))
        .collect();
    (connection(edges, more), cost)
}

fn codes_conn(d: &Discount, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(&d.codes, |(id, _)| *id, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|(id, code)| (*id, json!({"code": code})))
        .collect();
    (connection(edges, more), cost)
}

fn variant_quantity(v: &Variant) -> i64 {
    v.levels.iter().map(|l| l.available).sum()
}

/// `availableForSale` of a variant.
fn variant_available(v: &Variant) -> bool {
    variant_quantity(v) > 0
}

/// `totalInventory` of a product.
fn product_total(p: &Product) -> i64 {
    p.variants.iter().map(variant_quantity).sum()
}

fn render_product(s: &ShopData, p: &Product) -> (Value, u64) {
    let (metafields, mcost) = metafields_conn(p, 5, None);
    let total = product_total(p);
    let prices: Vec<(f64, &String)> = p
        .variants
        .iter()
        .map(|v| (v.price.parse::<f64>().unwrap_or(0.0), &v.price))
        .collect();
    let min = prices
        .iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1.clone())
        .unwrap_or_else(|| "0.0".into());
    let max = prices
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1.clone())
        .unwrap_or_else(|| "0.0".into());
    let options = if p.variants.len() <= 1 {
        json!([{"name": "Title", "values": ["Default Title"]}])
    } else {
        let values: Vec<&str> = p
            .variants
            .iter()
            .filter_map(|v| v.size.as_deref())
            .collect();
        json!([{"name": "Size", "values": values}])
    };
    let image = p
        .image
        .as_ref()
        .map(|(url, alt)| json!({"url": url, "altText": alt}));
    let node = json!({
        "id": gid("Product", p.id),
        "title": p.title,
        "handle": p.handle,
        "description": p.description,
        "productType": p.product_type,
        "vendor": p.vendor,
        "tags": p.tags,
        "status": p.status,
        "onlineStoreUrl": if p.status == "ACTIVE" {
            Value::String(format!("https://{}/products/{}", s.domain, p.handle))
        } else {
            Value::Null
        },
        "totalInventory": total,
        "createdAt": p.created_at,
        "updatedAt": p.updated_at,
        "options": options,
        "featuredImage": image,
        "priceRangeV2": {
            "minVariantPrice": {"amount": min, "currencyCode": "USD"},
            "maxVariantPrice": {"amount": max, "currencyCode": "USD"},
        },
        "metafields": metafields,
    });
    (node, 6 + mcost)
}

fn render_variant(v: &Variant) -> (Value, u64) {
    let (levels, lcost) = levels_conn(v, 5, None);
    let q = variant_quantity(v);
    let selected = match &v.size {
        Some(s) => json!([{"name": "Size", "value": s}]),
        None => json!([{"name": "Title", "value": "Default Title"}]),
    };
    let node = json!({
        "id": gid("ProductVariant", v.id),
        "title": v.title,
        "sku": v.sku,
        "price": v.price,
        "compareAtPrice": v.compare_at,
        "availableForSale": variant_available(v),
        "inventoryQuantity": q,
        "selectedOptions": selected,
        "product": {"id": gid("Product", v.product_id)},
        "inventoryItem": {
            "id": gid("InventoryItem", v.inventory_item_id),
            "inventoryLevels": levels,
        },
    });
    (node, 4 + lcost)
}

fn render_collection(s: &ShopData, c: &Collection) -> (Value, u64) {
    let (products, pcost) = collection_products_conn(s, c, 50, None);
    let node = json!({
        "id": gid("Collection", c.id),
        "title": c.title,
        "handle": c.handle,
        "description": c.description,
        "updatedAt": c.updated_at,
        "products": products,
    });
    (node, 1 + pcost)
}

fn render_discount(d: &Discount) -> (Value, u64) {
    let (codes, ccost) = codes_conn(d, 10, None);
    let node = json!({
        "id": gid("DiscountCodeNode", d.id),
        "codeDiscount": {
            "__typename": d.typename,
            "title": d.title,
            "status": d.status,
            "summary": d.summary,
            "startsAt": d.starts_at,
            "endsAt": d.ends_at,
            "usageLimit": d.usage_limit,
            "appliesOncePerCustomer": d.once_per_customer,
            "codes": codes,
        },
    });
    (node, 2 + ccost)
}

fn render_shop(s: &ShopData) -> Value {
    let name = shop_name_for(&s.domain);
    let label = s.domain.split('.').next().unwrap_or(&s.domain).to_string();
    json!({
        "id": gid("Shop", s.shop_id),
        "name": name,
        "description": format!("{name}: quality goods since 2019."),
        "myshopifyDomain": s.domain,
        "url": format!("https://{}", s.domain),
        "primaryDomain": {
            "url": format!("https://{}", s.domain),
            "host": s.domain,
        },
        "currencyCode": "USD",
        "enabledPresentmentCurrencies": ["USD", "CAD", "EUR"],
        "ianaTimezone": "America/New_York",
        "contactEmail": format!("owner@{label}.example.com"),
        "shipsToCountries": ["US", "CA", "GB"],
    })
}

// ---------------------------------------------------------------------------------------------
// Bulk operation results (JSONL)
// ---------------------------------------------------------------------------------------------

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The JSONL lines of a bulk query over the live catalogue.
///
/// Products: one line per product (the `Products` node without `metafields`) and one per
/// `custom` metafield (`__parentId` = the product). Variants: one line per variant (the
/// `ProductVariants` node with `inventoryItem { id }` only) and one per inventory level
/// (`__parentId` = the variant).
fn bulk_lines(s: &ShopData, kind: BulkKind) -> Vec<String> {
    let groups: Vec<(u64, Value, Vec<Value>)> = match kind {
        BulkKind::Products => s
            .live_products()
            .map(|p| {
                let (mut node, _) = render_product(s, p);
                if let Some(o) = node.as_object_mut() {
                    o.remove("metafields");
                }
                let parent = gid("Product", p.id);
                let mut metafields: Vec<&Metafield> = p.metafields.iter().collect();
                metafields.sort_by_key(|m| m.id);
                let children = metafields
                    .into_iter()
                    .map(|m| {
                        let mut line = metafield_node(m);
                        line["__parentId"] = json!(parent);
                        line
                    })
                    .collect();
                (p.id, node, children)
            })
            .collect(),
        BulkKind::Variants => s
            .live_variants()
            .map(|v| {
                let (mut node, _) = render_variant(v);
                node["inventoryItem"] = json!({"id": gid("InventoryItem", v.inventory_item_id)});
                let parent = gid("ProductVariant", v.id);
                let mut levels: Vec<&Level> = v.levels.iter().collect();
                levels.sort_by_key(|l| l.location);
                let children = levels
                    .into_iter()
                    .map(|l| {
                        let mut line = level_node(l);
                        line["__parentId"] = json!(parent);
                        line
                    })
                    .collect();
                (v.id, node, children)
            })
            .collect(),
    };
    arrange_bulk(groups)
}

/// Orders bulk lines as an ungrouped (`groupObjects: false`) operation may: parents in a
/// deterministic scrambled order; the children of every 7th parent (by id) before all parents;
/// the other children after them, interleaved across parents in another scrambled order. Each
/// parent's own children keep their connection order.
fn arrange_bulk(groups: Vec<(u64, Value, Vec<Value>)>) -> Vec<String> {
    let scrambled = |salt: &str| {
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by_key(|&i| (fnv(&format!("{salt}:{}", groups[i].0)), i));
        order
    };
    let parents = scrambled("parents");
    let children = scrambled("children");
    let interleave = |out: &mut Vec<String>, which: &[usize]| {
        let longest = which.iter().map(|&i| groups[i].2.len()).max().unwrap_or(0);
        for round in 0..longest {
            for &i in which {
                if let Some(c) = groups[i].2.get(round) {
                    out.push(c.to_string());
                }
            }
        }
    };
    let total = groups.iter().map(|g| 1 + g.2.len()).sum();
    let mut out = Vec::with_capacity(total);
    let (early, late): (Vec<usize>, Vec<usize>) = children.iter().partition(|&&i| i % 7 == 0);
    interleave(&mut out, &early);
    out.extend(parents.iter().map(|&i| groups[i].1.to_string()));
    interleave(&mut out, &late);
    out
}

// ---------------------------------------------------------------------------------------------
// GraphQL execution
// ---------------------------------------------------------------------------------------------

fn gql_error(message: impl Into<String>, code: &str) -> Value {
    json!({
        "message": message.into(),
        "locations": [{"line": 2, "column": 3}],
        "extensions": {"code": code},
    })
}

fn first_arg(vars: &Value) -> Result<usize, Value> {
    match &vars["first"] {
        Value::Null => Err(gql_error(
            "you must provide one of first or last",
            "argumentLiteralsIncompatible",
        )),
        v => match v.as_u64() {
            Some(n) if n as usize <= MAX_PAGE => Ok(n as usize),
            Some(n) => Err(gql_error(
                format!("The value of `first` ({n}) exceeds the maximum of {MAX_PAGE}"),
                "argumentLiteralsIncompatible",
            )),
            None => Err(gql_error(
                format!("Variable $first of type Int! was provided invalid value: {v}"),
                "INVALID_VARIABLE",
            )),
        },
    }
}

fn after_arg(vars: &Value) -> Result<Option<u64>, Value> {
    match &vars["after"] {
        Value::Null => Ok(None),
        Value::String(c) => decode_cursor(c).map(Some).ok_or_else(|| {
            gql_error(
                "Invalid cursor for current pagination sort.",
                "argumentLiteralsIncompatible",
            )
        }),
        v => Err(gql_error(
            format!("Variable $after of type String was provided invalid value: {v}"),
            "INVALID_VARIABLE",
        )),
    }
}

/// `Ok(Some(n))` for `gid://shopify/{kind}/n`, `Ok(None)` for a GID of another type.
fn id_arg(vars: &Value, kind: &str) -> Result<Option<u64>, Value> {
    let raw = match &vars["id"] {
        Value::String(s) => s.clone(),
        Value::Null => {
            return Err(gql_error(
                "Variable $id of type ID! was provided invalid value",
                "INVALID_VARIABLE",
            ))
        }
        v => v.to_string(),
    };
    let invalid = || {
        gql_error(
            format!("Invalid global id '{raw}'"),
            "argumentLiteralsIncompatible",
        )
    };
    let rest = raw.strip_prefix("gid://shopify/").ok_or_else(invalid)?;
    let (k, n) = rest.split_once('/').ok_or_else(invalid)?;
    let n: u64 = n.parse().map_err(|_| invalid())?;
    Ok((k == kind).then_some(n))
}

/// The `$query` search string: `None` when null, absent or blank.
fn query_arg(vars: &Value) -> Result<Option<String>, Value> {
    match &vars["query"] {
        Value::Null => Ok(None),
        Value::String(q) if q.trim().is_empty() => Ok(None),
        Value::String(q) => Ok(Some(q.trim().to_string())),
        v => Err(gql_error(
            format!("Variable $query of type String was provided invalid value: {v}"),
            "INVALID_VARIABLE",
        )),
    }
}

fn unsupported_search(q: &str, supported: &str) -> Value {
    gql_error(
        format!("Unsupported search query '{q}': this fake understands only {supported}"),
        "argumentLiteralsIncompatible",
    )
}

/// A search value without its quotes (`'…'`, `"…"` or none).
fn unquote(v: &str) -> Option<&str> {
    let v = v.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q) {
            return inner.strip_suffix(q).filter(|i| !i.contains(q));
        }
    }
    (!v.is_empty() && !v.contains(['\'', '"']) && !v.contains(char::is_whitespace)).then_some(v)
}

/// `Products` search: `updated_at:>='<RFC3339>'` (or `>`; single, double or no quotes) →
/// `(cutoff, inclusive)`; `None` for every product; any other term is an error.
fn updated_at_filter(vars: &Value) -> Result<Option<(DateTime<Utc>, bool)>, Value> {
    let Some(q) = query_arg(vars)? else {
        return Ok(None);
    };
    let bad = || unsupported_search(&q, "updated_at:>='<RFC3339>' and updated_at:>'<RFC3339>'");
    let rest = q.strip_prefix("updated_at:").ok_or_else(bad)?;
    let (inclusive, value) = match rest.strip_prefix(">=") {
        Some(v) => (true, v),
        None => (false, rest.strip_prefix('>').ok_or_else(bad)?),
    };
    let value = unquote(value).ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(value).map_err(|_| {
        gql_error(
            format!("Invalid updated_at value '{value}' in search query '{q}': expected an RFC 3339 date-time"),
            "argumentLiteralsIncompatible",
        )
    })?;
    Ok(Some((at.with_timezone(&Utc), inclusive)))
}

fn updated_since(p: &Product, filter: Option<(DateTime<Utc>, bool)>) -> bool {
    let Some((cutoff, inclusive)) = filter else {
        return true;
    };
    match DateTime::parse_from_rfc3339(&p.updated_at) {
        Ok(t) if inclusive => t >= cutoff,
        Ok(t) => t > cutoff,
        Err(_) => false,
    }
}

/// `ProductVariants` search: `product_ids:1001,1002,…` (numeric ids; `product_id:1001` too)
/// → the product ids; `None` for every variant; any other term is an error.
fn product_ids_filter(vars: &Value) -> Result<Option<HashSet<u64>>, Value> {
    let Some(q) = query_arg(vars)? else {
        return Ok(None);
    };
    let bad = || unsupported_search(&q, "product_ids:<id>,<id>,… (numeric product ids)");
    let rest = q
        .strip_prefix("product_ids:")
        .or_else(|| q.strip_prefix("product_id:"))
        .ok_or_else(bad)?;
    let list = unquote(rest).ok_or_else(bad)?;
    list.split(',')
        .map(|n| n.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<HashSet<u64>, Value>>()
        .map(Some)
}

/// Requested cost of an operation (Shopify's model: connection = 2 + first × node cost,
/// object = 1, scalar/enum = 0), `None` for an unknown operation.
fn requested_cost(op: &str, vars: &Value) -> Option<u64> {
    let first = vars["first"].as_u64().unwrap_or(0).min(MAX_PAGE as u64);
    Some(match op {
        "Shop" => 2,
        "ShopId" => 1,
        // product 1 + options/featuredImage/priceRangeV2/min/max 5 + metafields (2 + 5)
        "Products" => 2 + first * 13,
        "ProductMetafields" => 1 + 2 + first,
        // variant 1 + selectedOptions/product/inventoryItem 3 + levels (2 + 5 × 3)
        "ProductVariants" => 2 + first * 21,
        "InventoryLevels" => 1 + 2 + first * 3,
        // collection 1 + products (2 + 50)
        "Collections" => 2 + first * 53,
        "CollectionProducts" => 1 + 2 + first,
        // node 1 + codeDiscount 1 + codes (2 + 10)
        "CodeDiscounts" => 2 + first * 14,
        "DiscountCodes" => 1 + 1 + 2 + first,
        "WebhookSubscriptions" => 2 + first,
        "WebhookSubscriptionCreate" => 10,
        "ProductsCount" => 1,
        "ProductIds" => 2 + first,
        // product 13 + variants (2 + first × 21)
        "Product" => 13 + 2 + first * 21,
        // item 1 + variant 1 + product 1 + levels (2 + 5 × 3)
        "InventoryItem" => 3 + 17,
        "Collection" => 53,
        "CodeDiscount" => 14,
        "BulkOperationRunQuery" => 10,
        "BulkOperation" => 1,
        _ => return None,
    })
}

enum Outcome {
    /// `data` and the actual cost.
    Data(Value, u64),
    /// GraphQL `errors` (HTTP 200), no `data`.
    Errors(Vec<Value>),
}

impl State {
    fn new(config: FakeConfig) -> State {
        State {
            config,
            expiring: false,
            shops: HashMap::new(),
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            throttle_next: 0,
            fail_next: (500, 0),
            delay: Duration::ZERO,
            in_flight: HashMap::new(),
            max_in_flight: HashMap::new(),
            op_requests: HashMap::new(),
            shop_op_requests: HashMap::new(),
            total_graphql: 0,
            token_exchanges: 0,
            refreshes: 0,
            rejected_token_requests: 0,
            subscription_creates: 0,
            last_bodies: HashMap::new(),
            last_token_request: None,
            unexpected: Vec::new(),
            subscription_seq: 900_000,
            base_url: String::new(),
            me: Weak::new(),
            bulk_delay: Duration::from_millis(50),
            bulk_limit_next: 0,
            bulk_fail_next: None,
            bulk_expire_next: 0,
            bulk_seq: 5_000_000,
            bulk_ops: HashMap::new(),
            bulk_files: HashMap::new(),
            bulk_downloads: 0,
            bulk_started: 0,
            finish_webhooks_sent: 0,
        }
    }

    fn shop_mut(&mut self, domain: &str) -> &mut ShopData {
        let cfg = &self.config;
        self.shops
            .entry(domain.to_string())
            .or_insert_with(|| ShopData::generate(domain, cfg))
    }

    fn next_subscription_id(&mut self) -> String {
        self.subscription_seq += 1;
        gid("WebhookSubscription", self.subscription_seq)
    }

    fn execute(&mut self, shop: &str, op: &str, vars: &Value) -> Result<Outcome, Value> {
        match op {
            "WebhookSubscriptionCreate" => return self.create_subscription(shop, vars),
            "BulkOperationRunQuery" => return self.run_bulk(shop, vars),
            "BulkOperation" => return self.bulk_status(shop, vars),
            _ => {}
        }
        let s = &*self.shop_mut(shop);
        let out = match op {
            "Shop" => Outcome::Data(json!({"shop": render_shop(s)}), 2),
            "ShopId" => Outcome::Data(json!({"shop": {"id": render_shop(s)["id"]}}), 1),
            "Products" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let filter = updated_at_filter(vars)?;
                let matching = s.live_products().filter(|p| updated_since(p, filter));
                let (page, more) = paginate(matching, |p| p.id, first, after);
                let mut cost = 2;
                let edges = page
                    .into_iter()
                    .map(|p| {
                        let (node, c) = render_product(s, p);
                        cost += 1 + c;
                        (p.id, node)
                    })
                    .collect();
                Outcome::Data(json!({"products": connection(edges, more)}), cost)
            }
            "ProductMetafields" => {
                let (id, first, after) =
                    (id_arg(vars, "Product")?, first_arg(vars)?, after_arg(vars)?);
                match id.and_then(|id| s.product_by_id(id)) {
                    Some(p) => {
                        let (conn, c) = metafields_conn(p, first, after);
                        Outcome::Data(json!({"product": {"metafields": conn}}), 1 + c)
                    }
                    None => Outcome::Data(json!({"product": null}), 1),
                }
            }
            "ProductsCount" => Outcome::Data(
                json!({"productsCount": {"count": s.live_products().count(), "precision": "EXACT"}}),
                1,
            ),
            "ProductIds" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let (page, more) = paginate(s.live_products(), |p| p.id, first, after);
                let cost = 2 + page.len() as u64;
                let edges = page
                    .into_iter()
                    .map(|p| (p.id, json!({"id": gid("Product", p.id)})))
                    .collect();
                Outcome::Data(json!({"products": connection(edges, more)}), cost)
            }
            "Product" => {
                let (id, first, after) =
                    (id_arg(vars, "Product")?, first_arg(vars)?, after_arg(vars)?);
                match id.and_then(|id| s.product_by_id(id)) {
                    Some(p) => {
                        let (mut node, pcost) = render_product(s, p);
                        let mut sorted: Vec<&Variant> = p.variants.iter().collect();
                        sorted.sort_by_key(|v| v.id);
                        let (page, more) = paginate(sorted, |v| v.id, first, after);
                        let mut cost = 1 + pcost + 2;
                        let edges = page
                            .into_iter()
                            .map(|v| {
                                let (mut vnode, c) = render_variant(v);
                                if let Some(o) = vnode.as_object_mut() {
                                    o.remove("product");
                                }
                                cost += c.saturating_sub(1);
                                (v.id, vnode)
                            })
                            .collect();
                        node["variants"] = connection(edges, more);
                        Outcome::Data(json!({"product": node}), cost)
                    }
                    None => Outcome::Data(json!({"product": null}), 1),
                }
            }
            "InventoryItem" => {
                match id_arg(vars, "InventoryItem")?.and_then(|id| s.item_lookup(id)) {
                    Some((p, v)) => {
                        let (levels, lcost) = levels_conn(v, 5, None);
                        Outcome::Data(
                            json!({"inventoryItem": {
                                "id": gid("InventoryItem", v.inventory_item_id),
                                "variant": {
                                    "id": gid("ProductVariant", v.id),
                                    "inventoryQuantity": variant_quantity(v),
                                    "availableForSale": variant_available(v),
                                    "product": {
                                        "id": gid("Product", p.id),
                                        "totalInventory": product_total(p),
                                    },
                                },
                                "inventoryLevels": levels,
                            }}),
                            3 + lcost,
                        )
                    }
                    None => Outcome::Data(json!({"inventoryItem": null}), 1),
                }
            }
            "Collection" => {
                let id = id_arg(vars, "Collection")?;
                match id.and_then(|id| s.live_collections().find(|c| c.id == id)) {
                    Some(c) => {
                        let (node, k) = render_collection(s, c);
                        Outcome::Data(json!({"collection": node}), k)
                    }
                    None => Outcome::Data(json!({"collection": null}), 1),
                }
            }
            "CodeDiscount" => {
                let id = id_arg(vars, "DiscountCodeNode")?;
                match id.and_then(|id| s.live_discounts().find(|d| d.id == id)) {
                    Some(d) => {
                        let (node, k) = render_discount(d);
                        Outcome::Data(json!({"codeDiscountNode": node}), k)
                    }
                    None => Outcome::Data(json!({"codeDiscountNode": null}), 1),
                }
            }
            "ProductVariants" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let products = product_ids_filter(vars)?;
                let all = s
                    .live_products()
                    .filter(|p| products.as_ref().is_none_or(|ids| ids.contains(&p.id)))
                    .flat_map(|p| p.variants.iter());
                let (page, more) = paginate(all, |v| v.id, first, after);
                let mut cost = 2;
                let edges = page
                    .into_iter()
                    .map(|v| {
                        let (node, c) = render_variant(v);
                        cost += c;
                        (v.id, node)
                    })
                    .collect();
                Outcome::Data(json!({"productVariants": connection(edges, more)}), cost)
            }
            "InventoryLevels" => {
                let (id, first, after) = (
                    id_arg(vars, "InventoryItem")?,
                    first_arg(vars)?,
                    after_arg(vars)?,
                );
                match id.and_then(|id| s.variant_by_item(id)) {
                    Some(v) => {
                        let (conn, c) = levels_conn(v, first, after);
                        Outcome::Data(json!({"inventoryItem": {"inventoryLevels": conn}}), 1 + c)
                    }
                    None => Outcome::Data(json!({"inventoryItem": null}), 1),
                }
            }
            "Collections" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let (page, more) = paginate(s.live_collections(), |c| c.id, first, after);
                let mut cost = 2;
                let edges = page
                    .into_iter()
                    .map(|c| {
                        let (node, k) = render_collection(s, c);
                        cost += k;
                        (c.id, node)
                    })
                    .collect();
                Outcome::Data(json!({"collections": connection(edges, more)}), cost)
            }
            "CollectionProducts" => {
                let (id, first, after) = (
                    id_arg(vars, "Collection")?,
                    first_arg(vars)?,
                    after_arg(vars)?,
                );
                match id.and_then(|id| s.live_collections().find(|c| c.id == id)) {
                    Some(c) => {
                        let (conn, k) = collection_products_conn(s, c, first, after);
                        Outcome::Data(json!({"collection": {"products": conn}}), 1 + k)
                    }
                    None => Outcome::Data(json!({"collection": null}), 1),
                }
            }
            "CodeDiscounts" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let (page, more) = paginate(s.live_discounts(), |d| d.id, first, after);
                let mut cost = 2;
                let edges = page
                    .into_iter()
                    .map(|d| {
                        let (node, k) = render_discount(d);
                        cost += k;
                        (d.id, node)
                    })
                    .collect();
                Outcome::Data(json!({"codeDiscountNodes": connection(edges, more)}), cost)
            }
            "DiscountCodes" => {
                let (id, first, after) = (
                    id_arg(vars, "DiscountCodeNode")?,
                    first_arg(vars)?,
                    after_arg(vars)?,
                );
                match id.and_then(|id| s.live_discounts().find(|d| d.id == id)) {
                    Some(d) => {
                        let (conn, k) = codes_conn(d, first, after);
                        Outcome::Data(
                            json!({"codeDiscountNode": {"codeDiscount": {"codes": conn}}}),
                            2 + k,
                        )
                    }
                    None => Outcome::Data(json!({"codeDiscountNode": null}), 1),
                }
            }
            "WebhookSubscriptions" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let key = |w: &FakeSubscription| {
                    w.id.rsplit('/')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                let (page, more) = paginate(&s.subscriptions, key, first, after);
                let cost = 2 + page.len() as u64;
                let edges = page
                    .into_iter()
                    .map(|w| (key(w), json!({"id": w.id, "topic": w.topic, "uri": w.uri})))
                    .collect();
                Outcome::Data(
                    json!({"webhookSubscriptions": connection(edges, more)}),
                    cost,
                )
            }
            other => {
                let field = {
                    let mut c = other.chars();
                    match c.next() {
                        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                        None => String::new(),
                    }
                };
                Outcome::Errors(vec![json!({
                    "message": format!("Field '{field}' doesn't exist on type 'QueryRoot'"),
                    "locations": [{"line": 2, "column": 3}],
                    "path": ["query", field],
                    "extensions": {
                        "code": "undefinedField",
                        "typeName": "QueryRoot",
                        "fieldName": field,
                    },
                })])
            }
        };
        Ok(out)
    }

    /// `bulkOperationRunQuery`: validates, snapshots the JSONL and schedules completion.
    fn run_bulk(&mut self, shop: &str, vars: &Value) -> Result<Outcome, Value> {
        let Some(document) = vars["query"].as_str() else {
            return Err(gql_error(
                "Variable $query of type String! was provided invalid value",
                "INVALID_VARIABLE",
            ));
        };
        let user_error = |field: Value, message: String, code: &str| {
            Ok(Outcome::Data(
                json!({"bulkOperationRunQuery": {
                    "bulkOperation": null,
                    "userErrors": [{"field": field, "message": message, "code": code}],
                }}),
                10,
            ))
        };
        if self.bulk_limit_next > 0 {
            self.bulk_limit_next -= 1;
            return user_error(
                Value::Null,
                "The maximum number of bulk query operations for this app and shop has been reached. Wait for one to finish.".into(),
                "LIMIT_REACHED",
            );
        }
        let kind = if document.contains("productVariants") {
            BulkKind::Variants
        } else if document.contains("products") {
            BulkKind::Products
        } else {
            return user_error(
                json!(["query"]),
                "Bulk queries must contain at least one connection (this fake runs `products` and `productVariants`).".into(),
                "INVALID",
            );
        };
        let mut running: Vec<u64> = self
            .bulk_ops
            .iter()
            .filter(|(_, op)| op.shop == shop && matches!(op.status, "CREATED" | "RUNNING"))
            .map(|(id, _)| *id)
            .collect();
        running.sort_unstable();
        if let Some(id) = running.first() {
            return user_error(
                Value::Null,
                format!(
                    "A bulk query operation for this app and shop is already in progress: {}.",
                    gid("BulkOperation", *id)
                ),
                "OPERATION_IN_PROGRESS",
            );
        }
        let lines = bulk_lines(self.shop_mut(shop), kind);
        self.bulk_seq += 1;
        let id = self.bulk_seq;
        let fail_with = self.bulk_fail_next.take();
        self.bulk_ops.insert(
            id,
            BulkOp {
                shop: shop.to_string(),
                status: "CREATED",
                fail_with,
                error_code: None,
                lines,
                object_count: 0,
                url: None,
                partial_url: None,
                created_at: now_rfc3339(),
            },
        );
        self.bulk_started += 1;
        self.schedule_bulk(id);
        Ok(Outcome::Data(
            json!({"bulkOperationRunQuery": {
                "bulkOperation": {"id": gid("BulkOperation", id), "status": "CREATED"},
                "userErrors": [],
            }}),
            10,
        ))
    }

    /// Moves the operation to `RUNNING` after half the bulk delay and finishes it after the
    /// whole delay, then posts the `bulk_operations/finish` webhooks.
    fn schedule_bulk(&mut self, id: u64) {
        let delay = self.bulk_delay;
        let me = self.me.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (not reachable through HTTP): finish at once, without webhooks.
            self.bulk_set_running(id);
            self.bulk_finish(id);
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(delay / 2).await;
            match me.upgrade() {
                Some(st) => lock(&st).bulk_set_running(id),
                None => return,
            }
            tokio::time::sleep(delay - delay / 2).await;
            let posts = match me.upgrade() {
                Some(st) => lock(&st).bulk_finish(id),
                None => return,
            };
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            for post in posts {
                let mut req = client.post(&post.uri);
                for (k, v) in &post.headers {
                    req = req.header(*k, v);
                }
                let _ = req.body(post.body).send().await;
                match me.upgrade() {
                    Some(st) => lock(&st).finish_webhooks_sent += 1,
                    None => return,
                }
            }
        });
    }

    fn bulk_set_running(&mut self, id: u64) {
        if let Some(op) = self.bulk_ops.get_mut(&id) {
            if op.status == "CREATED" {
                op.status = "RUNNING";
            }
        }
    }

    /// Completes (or fails) the operation, stores its files, and returns the finish webhooks
    /// to post.
    fn bulk_finish(&mut self, id: u64) -> Vec<WebhookPost> {
        let base = self.base_url.clone();
        let Some(op) = self.bulk_ops.get_mut(&id) else {
            return Vec::new();
        };
        if !matches!(op.status, "CREATED" | "RUNNING") {
            return Vec::new();
        }
        let shop = op.shop.clone();
        let jsonl = |lines: &[String]| {
            let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for l in lines {
                body.push_str(l);
                body.push('\n');
            }
            Bytes::from(body)
        };
        let mut files = Vec::new();
        // The lines live on in the files only.
        let lines = std::mem::take(&mut op.lines);
        match op.fail_with.take() {
            None => {
                op.status = "COMPLETED";
                op.object_count = lines.len();
                if !lines.is_empty() {
                    let name = format!("{id}.jsonl");
                    op.url = Some(format!("{base}/bulk/{shop}/{name}"));
                    files.push((name, jsonl(&lines)));
                }
            }
            Some(code) => {
                op.status = "FAILED";
                op.error_code = Some(code);
                let half = &lines[..lines.len() / 2];
                op.object_count = half.len();
                if !half.is_empty() {
                    let name = format!("{id}-partial.jsonl");
                    op.partial_url = Some(format!("{base}/bulk/{shop}/{name}"));
                    files.push((name, jsonl(half)));
                }
            }
        }
        let body = json!({
            "admin_graphql_api_id": gid("BulkOperation", id),
            "completed_at": now_rfc3339(),
            "created_at": op.created_at,
            "error_code": op.error_code.as_ref().map(|c| c.to_lowercase()),
            "status": op.status.to_lowercase(),
            "type": "query",
        })
        .to_string();
        for (name, data) in files {
            let expired = self.bulk_expire_next > 0;
            self.bulk_expire_next = self.bulk_expire_next.saturating_sub(1);
            self.bulk_files.insert(
                (shop.clone(), name),
                BulkFile {
                    body: data,
                    expired,
                },
            );
        }
        self.webhook_posts(&shop, "bulk_operations/finish", body)
    }

    /// The deliveries Shopify makes of `topic` (`products/update`) for `shop`: one per HTTP
    /// subscription of that topic (`PRODUCTS_UPDATE`), signed with the app secret.
    fn webhook_posts(&self, shop: &str, topic: &str, body: String) -> Vec<WebhookPost> {
        let shop = shop.to_string();
        let enum_name = topic.replace('/', "_").to_ascii_uppercase();
        let secret = self.config.api_secret.clone();
        let version = self.config.api_version.clone();
        let hmac = base64::engine::general_purpose::STANDARD.encode(crate::crypto::hmac_sha256(
            secret.as_bytes(),
            body.as_bytes(),
        ));
        self.shops
            .get(&shop)
            .map(|s| s.subscriptions.as_slice())
            .unwrap_or_default()
            .iter()
            .filter(|w| w.topic == enum_name)
            .filter(|w| w.uri.starts_with("http://") || w.uri.starts_with("https://"))
            .map(|w| WebhookPost {
                uri: w.uri.clone(),
                headers: vec![
                    ("Content-Type", "application/json".to_string()),
                    ("X-Shopify-Topic", topic.to_string()),
                    ("X-Shopify-Shop-Domain", shop.clone()),
                    ("X-Shopify-Hmac-Sha256", hmac.clone()),
                    ("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string()),
                    ("X-Shopify-Webhook-Id", uuid::Uuid::new_v4().to_string()),
                    ("X-Shopify-Triggered-At", now_rfc3339()),
                    ("X-Shopify-API-Version", version.clone()),
                ],
                body: body.clone(),
            })
            .collect()
    }

    /// `bulkOperation(id:)`; `null` for unknown ids and other shops' operations.
    fn bulk_status(&mut self, shop: &str, vars: &Value) -> Result<Outcome, Value> {
        let id = id_arg(vars, "BulkOperation")?;
        let node = match id.and_then(|id| self.bulk_ops.get(&id).map(|op| (id, op))) {
            Some((id, op)) if op.shop == shop => json!({
                "id": gid("BulkOperation", id),
                "status": op.status,
                "errorCode": op.error_code,
                // UnsignedInt64 is serialised as a string.
                "objectCount": op.object_count.to_string(),
                "url": op.url,
                "partialDataUrl": op.partial_url,
            }),
            _ => Value::Null,
        };
        Ok(Outcome::Data(json!({ "bulkOperation": node }), 1))
    }

    /// `GET /bulk/{shop}/{file}`.
    fn serve_bulk_file(&mut self, shop: &str, file: &str) -> Response {
        self.bulk_downloads += 1;
        let xml = |status: StatusCode, code: &str, message: &str| {
            (
                status,
                [(header::CONTENT_TYPE, "application/xml")],
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"),
            )
                .into_response()
        };
        match self.bulk_files.get(&(shop.to_string(), file.to_string())) {
            Some(f) if f.expired => {
                xml(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
            }
            Some(f) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jsonl")],
                f.body.clone(),
            )
                .into_response(),
            None => xml(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
        }
    }

    fn create_subscription(&mut self, shop: &str, vars: &Value) -> Result<Outcome, Value> {
        let topic = vars["topic"].as_str().unwrap_or_default().to_string();
        if !TOPIC_ENUM.contains(&topic.as_str()) {
            return Ok(Outcome::Errors(vec![json!({
                "message": format!(
                    "Variable $topic of type WebhookSubscriptionTopic! was provided invalid value"
                ),
                "locations": [{"line": 1, "column": 35}],
                "extensions": {
                    "code": "INVALID_VARIABLE",
                    "value": vars["topic"],
                    "problems": [{
                        "path": [],
                        "explanation": format!(
                            "Expected \"{topic}\" to be one of: {}",
                            TOPIC_ENUM.join(", ")
                        ),
                    }],
                },
            })]));
        }
        let input = &vars["webhookSubscription"];
        if !input.is_object() {
            return Ok(Outcome::Errors(vec![gql_error(
                "Variable $webhookSubscription of type WebhookSubscriptionInput! was provided invalid value",
                "INVALID_VARIABLE",
            )]));
        }
        let uri = input["uri"]
            .as_str()
            .or_else(|| input["callbackUrl"].as_str())
            .unwrap_or_default()
            .to_string();
        let format = input["format"].as_str().unwrap_or("JSON").to_string();
        let user_error = |message: &str| {
            Outcome::Data(
                json!({"webhookSubscriptionCreate": {
                    "webhookSubscription": null,
                    "userErrors": [{"field": ["webhookSubscription", "callbackUrl"], "message": message}],
                }}),
                10,
            )
        };
        if uri.is_empty() {
            return Ok(user_error("Address can't be blank"));
        }
        if self
            .shop_mut(shop)
            .subscriptions
            .iter()
            .any(|w| w.topic == topic && w.uri == uri)
        {
            return Ok(user_error("Address for this topic has already been taken"));
        }
        let id = self.next_subscription_id();
        let sub = FakeSubscription {
            id: id.clone(),
            topic: topic.clone(),
            uri: uri.clone(),
            format,
        };
        self.shop_mut(shop).subscriptions.push(sub);
        self.subscription_creates += 1;
        Ok(Outcome::Data(
            json!({"webhookSubscriptionCreate": {
                "webhookSubscription": {"id": id, "topic": topic, "uri": uri},
                "userErrors": [],
            }}),
            10,
        ))
    }

    fn handle_graphql(
        &mut self,
        shop: &str,
        version: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        self.total_graphql += 1;
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let op = parsed.as_ref().and_then(operation_name);
        if let Some(op) = &op {
            *self.op_requests.entry(op.clone()).or_default() += 1;
            *self
                .shop_op_requests
                .entry((shop.to_string(), op.clone()))
                .or_default() += 1;
            if let Some(p) = &parsed {
                self.last_bodies.insert(op.clone(), p.clone());
            }
        }

        if version != self.config.api_version {
            return json_response(StatusCode::NOT_FOUND, json!({"errors": "Not Found"}));
        }
        if self.fail_next.1 > 0 {
            self.fail_next.1 -= 1;
            return failure_response(self.fail_next.0);
        }
        let token = headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if self.access_tokens.get(token).map(String::as_str) != Some(shop) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({"errors": INVALID_TOKEN_BODY}),
            );
        }
        let (Some(body), Some(op)) = (parsed, op) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"errors": {"query": "Required parameter missing or invalid"}}),
            );
        };
        let vars = match &body["variables"] {
            Value::Null => json!({}),
            v => v.clone(),
        };
        let requested = requested_cost(&op, &vars).unwrap_or(0);
        let simulate = self.config.simulate_bucket;
        let max_cost = self.config.max_query_cost;

        let s = self.shop_mut(shop);
        s.refill();
        let available_now = s.bucket;
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            let avail = if simulate {
                available_now.min(requested.saturating_sub(5) as f64)
            } else {
                requested.saturating_sub(5) as f64
            };
            return throttled(requested, avail);
        }
        if simulate && requested as f64 > available_now {
            return throttled(requested, available_now);
        }
        if requested > max_cost {
            let msg = format!(
                "Query cost is {requested}, which exceeds the single query max cost limit ({max_cost}).\n\nSee https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\ncost of a query is calculated.\n\nTo query larger amounts of data with fewer limits, bulk operations should be used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
            );
            let err = json!({
                "message": msg,
                "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": max_cost},
            });
            let avail = if simulate { available_now } else { BUCKET_MAX };
            return json_response(
                StatusCode::OK,
                json!({"errors": [err], "extensions": {"cost": cost(requested, Some(0), avail)}}),
            );
        }
        let outcome = match self.execute(shop, &op, &vars) {
            Ok(o) => o,
            Err(e) => Outcome::Errors(vec![e]),
        };
        let actual = match &outcome {
            Outcome::Data(_, a) => *a,
            Outcome::Errors(_) => 0,
        };
        let s = self.shop_mut(shop);
        let avail = if simulate {
            s.bucket = (s.bucket - actual as f64).max(0.0);
            s.bucket
        } else {
            BUCKET_MAX - actual as f64
        };
        let ext = json!({"cost": cost(requested, Some(actual), avail)});
        let body = match outcome {
            Outcome::Data(data, _) => json!({"data": data, "extensions": ext}),
            Outcome::Errors(errors) => json!({"errors": errors, "extensions": ext}),
        };
        json_response(StatusCode::OK, body)
    }

    fn handle_token(&mut self, shop: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let params = parse_params(headers, body);
        self.last_token_request = Some(params.clone());
        let text = |k: &str| match &params[k] {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            v => Some(v.to_string()),
        };
        let reject = |st: &mut State, description: &str| {
            st.rejected_token_requests += 1;
            json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": description}),
            )
        };
        if text("client_id").as_deref() != Some(self.config.api_key.as_str())
            || text("client_secret").as_deref() != Some(self.config.api_secret.as_str())
        {
            return reject(self, "The client credentials are invalid");
        }
        match text("grant_type").as_deref() {
            None | Some("authorization_code") => {
                let code = text("code").unwrap_or_default();
                if self.codes.get(&code).map(String::as_str) != Some(shop) {
                    return reject(
                        self,
                        "The authorization code was not found or was already used",
                    );
                }
                self.codes.remove(&code);
                self.token_exchanges += 1;
                let body = self.mint(shop);
                json_response(StatusCode::OK, body)
            }
            Some("refresh_token") => {
                let rt = text("refresh_token").unwrap_or_default();
                match self.refresh_tokens.get(&rt) {
                    Some((s, _)) if s == shop => {}
                    _ => return reject(self, "The refresh token is invalid or has expired"),
                }
                let (_, old_access) = self.refresh_tokens.remove(&rt).unwrap();
                self.access_tokens.remove(&old_access);
                self.refreshes += 1;
                let body = self.mint(shop);
                json_response(StatusCode::OK, body)
            }
            Some(_) => reject(self, "Unsupported grant_type"),
        }
    }

    /// Issues a new access token (and refresh token in expiring mode) for the shop.
    fn mint(&mut self, shop: &str) -> Value {
        let access = format!("shpat_{}", random_hex(16));
        self.access_tokens.insert(access.clone(), shop.to_string());
        let mut body = json!({"access_token": access, "scope": self.config.scopes});
        let expiring = self.expiring;
        let refresh = expiring.then(|| format!("shprt_{}", random_hex(16)));
        if let Some(r) = &refresh {
            self.refresh_tokens
                .insert(r.clone(), (shop.to_string(), access.clone()));
            body["expires_in"] = json!(3600);
            body["refresh_token"] = json!(r);
            body["refresh_token_expires_in"] = json!(7_776_000);
        }
        let s = self.shop_mut(shop);
        s.last_access_token = Some(access);
        if refresh.is_some() {
            s.last_refresh_token = refresh;
        }
        body
    }
}

fn operation_name(body: &Value) -> Option<String> {
    if let Some(op) = body["operationName"].as_str().filter(|s| !s.is_empty()) {
        return Some(op.to_string());
    }
    // Like GraphQL servers: a document with a single named operation needs no operationName.
    let q = body["query"].as_str()?;
    let mut words = q.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    while let Some(w) = words.next() {
        if w == "query" || w == "mutation" {
            return words.find(|w| !w.is_empty()).map(str::to_string);
        }
    }
    None
}

fn parse_params(headers: &HeaderMap, body: &[u8]) -> Value {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
            return v;
        }
    }
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Value::Object(map)
}

fn cost(requested: u64, actual: Option<u64>, available: f64) -> Value {
    json!({
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {
            "maximumAvailable": BUCKET_MAX,
            "currentlyAvailable": available.floor().max(0.0) as u64,
            "restoreRate": RESTORE_RATE,
        },
    })
}

fn throttled(requested: u64, available: f64) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "errors": [{
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }],
            "extensions": {"cost": cost(requested, None, available)},
        }),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn failure_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    if code == StatusCode::TOO_MANY_REQUESTS {
        let mut r = json_response(
            code,
            json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        r
    } else if code.is_server_error() {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            reason.to_string(),
        )
            .into_response()
    } else {
        json_response(code, json!({"errors": reason}))
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP handlers
// ---------------------------------------------------------------------------------------------

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The install screen a merchant sees at `/admin/oauth/authorize`: "Install" sends the browser
/// back to `redirect_uri` with a fresh code and the parameters Shopify signs (`code`, `host`,
/// `shop`, `state`, `timestamp`, then `hmac` over them).
async fn authorize_handler(
    AxState(state): AxState<Shared>,
    Path(shop): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut st = lock(&state);
    let page = |body: String| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>Install app</title></head><body><p>fake Shopify (simulated, nothing leaves this machine)</p>{body}</body></html>"),
        )
            .into_response()
    };
    if q.get("client_id") != Some(&st.config.api_key) {
        return page(
            "<p id=\"authorize-error\">Oauth error invalid_request: The client_id is invalid.</p>"
                .into(),
        );
    }
    let Some(redirect) = q.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) else {
        return page("<p id=\"authorize-error\">Oauth error invalid_request: The redirect_uri is missing or not absolute.</p>".into());
    };
    st.shop_mut(&shop);
    let code = random_hex(16);
    st.codes.insert(code.clone(), shop.clone());
    let host = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "admin.shopify.com/store/{}",
        shop.trim_end_matches(".myshopify.com")
    ));
    let mut params = vec![
        ("code".to_string(), code),
        ("host".to_string(), host),
        ("shop".to_string(), shop.clone()),
        (
            "state".to_string(),
            q.get("state").cloned().unwrap_or_default(),
        ),
        ("timestamp".to_string(), Utc::now().timestamp().to_string()),
    ];
    let hmac =
        crate::shopify::signature::sign_oauth_query(st.config.api_secret.as_bytes(), &params);
    params.push(("hmac".to_string(), hmac));
    let mut u = redirect;
    u.query_pairs_mut().extend_pairs(params.iter());
    let href = u.as_str().replace('&', "&amp;").replace('"', "&quot;");
    let name = shop_name_for(&shop);
    let scopes = q.get("scope").cloned().unwrap_or_default();
    page(format!(
        "<h1>Install the app on {}</h1><p>It asks for: {}</p><p><a id=\"install\" href=\"{href}\">Install app</a></p>",
        name.replace('<', "&lt;"),
        scopes.replace('<', "&lt;"),
    ))
}

async fn token_handler(
    AxState(state): AxState<Shared>,
    Path(shop): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state).handle_token(&shop, &headers, &body)
}

async fn graphql_handler(
    AxState(state): AxState<Shared>,
    Path((shop, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = {
        let mut st = lock(&state);
        let n = st.in_flight.entry(shop.clone()).or_default();
        *n += 1;
        let now = *n;
        let max = st.max_in_flight.entry(shop.clone()).or_default();
        *max = (*max).max(now);
        st.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = lock(&state);
    if let Some(n) = st.in_flight.get_mut(&shop) {
        *n -= 1;
    }
    st.handle_graphql(&shop, &version, &headers, &body)
}

async fn bulk_file_handler(
    AxState(state): AxState<Shared>,
    Path((shop, file)): Path<(String, String)>,
) -> Response {
    lock(&state).serve_bulk_file(&shop, &file)
}

async fn fallback_handler(
    AxState(state): AxState<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    lock(&state).unexpected.push(format!("{method} {uri}"));
    json_response(StatusCode::NOT_FOUND, json!({"errors": "Not Found"}))
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the fake
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "acme-store.myshopify.com";

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn exchange(fake: &FakeShopify, shop: &str, code: &str) -> (u16, Value) {
        let c = fake.config();
        let r = client()
            .post(fake.token_url(shop))
            .json(&json!({"client_id": c.api_key, "client_secret": c.api_secret, "code": code}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn connect(fake: &FakeShopify, shop: &str) -> String {
        let code = fake.issue_code(shop);
        let (status, body) = exchange(fake, shop, &code).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    async fn gql(
        fake: &FakeShopify,
        shop: &str,
        token: &str,
        op: &str,
        variables: Value,
    ) -> reqwest::Response {
        client()
            .post(fake.graphql_url(shop))
            .header("X-Shopify-Access-Token", token)
            .json(&json!({
                "query": format!("query {op} {{ __typename }}"),
                "operationName": op,
                "variables": variables,
            }))
            .send()
            .await
            .unwrap()
    }

    async fn gql_ok(fake: &FakeShopify, shop: &str, token: &str, op: &str, vars: Value) -> Value {
        let r = gql(fake, shop, token, op, vars).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v.get("errors").is_none(), "{op}: {v}");
        assert!(
            v["extensions"]["cost"]["requestedQueryCost"].is_u64(),
            "{v}"
        );
        v
    }

    /// Walks a top-level connection at `path` to the end; returns all nodes.
    async fn walk(
        fake: &FakeShopify,
        token: &str,
        op: &str,
        path: &str,
        first: u64,
        extra: Value,
    ) -> Vec<Value> {
        let mut nodes = Vec::new();
        let mut after = Value::Null;
        loop {
            let mut vars = extra.clone();
            vars["first"] = json!(first);
            vars["after"] = after.clone();
            let v = gql_ok(fake, SHOP, token, op, vars).await;
            let mut conn = &v["data"];
            for p in path.split('.') {
                conn = &conn[p];
            }
            for e in conn["edges"].as_array().unwrap() {
                assert!(e["cursor"].is_string());
                nodes.push(e["node"].clone());
            }
            if !conn["pageInfo"]["hasNextPage"].as_bool().unwrap() {
                return nodes;
            }
            after = conn["pageInfo"]["endCursor"].clone();
        }
    }

    #[tokio::test]
    async fn fake_shopify_token_exchange_and_refresh() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let code = fake.issue_code(SHOP);
        let (status, body) = exchange(&fake, SHOP, &code).await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        assert!(token.starts_with("shpat_"));
        assert_eq!(body["scope"], fake.config().scopes);
        assert!(body.get("refresh_token").is_none());
        assert_eq!(fake.last_access_token(SHOP).as_deref(), Some(token));
        assert_eq!(fake.token_exchanges(), 1);

        // Single use, bound to its shop, and the secret must match.
        let (status, body) = exchange(&fake, SHOP, &code).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        let other = fake.issue_code("other.myshopify.com");
        assert_eq!(exchange(&fake, SHOP, &other).await.0, 400);
        let bad = client()
            .post(fake.token_url(SHOP))
            .json(&json!({"client_id": fake.config().api_key, "client_secret": "nope", "code": fake.issue_code(SHOP)}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(fake.token_exchanges(), 1);
        assert_eq!(fake.rejected_token_requests(), 3);

        // Form-encoded bodies work too.
        let c = fake.config();
        let form = client()
            .post(fake.token_url(SHOP))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "client_id={}&client_secret={}&code={}",
                c.api_key,
                c.api_secret,
                fake.issue_code(SHOP)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 200);

        // Expiring tokens, then a refresh rotates both.
        fake.set_expiring(true);
        let code = fake.issue_code(SHOP);
        let (_, body) = exchange(&fake, SHOP, &code).await;
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["refresh_token_expires_in"], 7_776_000);
        let access = body["access_token"].as_str().unwrap().to_string();
        let refresh = body["refresh_token"].as_str().unwrap().to_string();
        assert!(refresh.starts_with("shprt_"));
        let r = gql(&fake, SHOP, &access, "Shop", json!({})).await;
        assert_eq!(r.status(), 200);
        let r = client()
            .post(fake.token_url(SHOP))
            .json(
                &json!({"client_id": c.api_key, "client_secret": c.api_secret,
                "grant_type": "refresh_token", "refresh_token": refresh}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let new_access = body["access_token"].as_str().unwrap();
        assert_ne!(new_access, access);
        assert_ne!(body["refresh_token"].as_str().unwrap(), refresh);
        assert_eq!(fake.refreshes(), 1);
        assert_eq!(
            gql(&fake, SHOP, &access, "Shop", json!({})).await.status(),
            401
        );
        let shop = gql_ok(&fake, SHOP, new_access, "Shop", json!({})).await;
        assert_eq!(shop["data"]["shop"]["name"], "Acme Store");
        assert_eq!(shop["data"]["shop"]["myshopifyDomain"], SHOP);
        // The old refresh token is gone.
        let r = client()
            .post(fake.token_url(SHOP))
            .json(
                &json!({"client_id": c.api_key, "client_secret": c.api_secret,
                "grant_type": "refresh_token", "refresh_token": refresh}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }

    #[tokio::test]
    async fn fake_shopify_products_walk_and_follow_ups() {
        let fake = FakeShopify::start(FakeConfig {
            products: 620,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;

        let products = walk(&fake, &token, "Products", "products", 50, json!({})).await;
        assert_eq!(products.len(), 620);
        assert_eq!(fake.requests("Products"), 13);
        let ids: Vec<&str> = products.iter().map(|p| p["id"].as_str().unwrap()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 620);
        assert_eq!(ids[0], "gid://shopify/Product/1001");
        let p = &products[0];
        for k in [
            "id",
            "title",
            "handle",
            "description",
            "productType",
            "vendor",
            "tags",
            "status",
            "onlineStoreUrl",
            "totalInventory",
            "createdAt",
            "updatedAt",
            "options",
            "featuredImage",
            "priceRangeV2",
            "metafields",
        ] {
            assert!(p.get(k).is_some(), "missing {k}");
        }
        assert_eq!(p.as_object().unwrap().len(), 16);
        assert!(p["priceRangeV2"]["minVariantPrice"]["amount"].is_string());

        // Product #7: 5 metafields inline, the other 3 through ProductMetafields.
        let rich = &products[RICH_METAFIELDS_PRODUCT]["metafields"];
        assert_eq!(rich["edges"].as_array().unwrap().len(), 5);
        assert_eq!(rich["pageInfo"]["hasNextPage"], true);
        let rest = gql_ok(
            &fake,
            SHOP,
            &token,
            "ProductMetafields",
            json!({"id": products[RICH_METAFIELDS_PRODUCT]["id"], "first": 100,
                "after": rich["pageInfo"]["endCursor"]}),
        )
        .await;
        let conn = &rest["data"]["product"]["metafields"];
        assert_eq!(conn["edges"].as_array().unwrap().len(), 3);
        assert_eq!(conn["pageInfo"]["hasNextPage"], false);

        // Variants and the 7-location variant.
        let variants = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            40,
            json!({}),
        )
        .await;
        assert_eq!(variants.len(), fake.variants_len(SHOP));
        let many = fake.variant_id(SHOP, MANY_LOCATIONS_PRODUCT, MANY_LOCATIONS_VARIANT);
        let v = variants.iter().find(|v| v["id"] == many.as_str()).unwrap();
        let levels = &v["inventoryItem"]["inventoryLevels"];
        assert_eq!(levels["edges"].as_array().unwrap().len(), 5);
        let rest = gql_ok(
            &fake,
            SHOP,
            &token,
            "InventoryLevels",
            json!({"id": v["inventoryItem"]["id"], "first": 100,
                "after": levels["pageInfo"]["endCursor"]}),
        )
        .await;
        assert_eq!(
            rest["data"]["inventoryItem"]["inventoryLevels"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // Collections: "big" needs CollectionProducts for 70 more.
        let cols = walk(&fake, &token, "Collections", "collections", 10, json!({})).await;
        assert_eq!(cols.len(), 23);
        let big = cols
            .iter()
            .find(|c| c["handle"] == BIG_COLLECTION_HANDLE)
            .unwrap();
        assert_eq!(big["products"]["edges"].as_array().unwrap().len(), 50);
        let rest = walk(
            &fake,
            &token,
            "CollectionProducts",
            "collection.products",
            100,
            json!({"id": big["id"]}),
        )
        .await;
        assert_eq!(rest.len(), BIG_COLLECTION_SIZE);
        let exact = cols
            .iter()
            .find(|c| c["handle"] == EXACT_COLLECTION_HANDLE)
            .unwrap();
        assert_eq!(exact["products"]["pageInfo"]["hasNextPage"], false);

        // Discounts: 15 codes on one.
        let discounts = walk(
            &fake,
            &token,
            "CodeDiscounts",
            "codeDiscountNodes",
            25,
            json!({}),
        )
        .await;
        assert_eq!(discounts.len(), 30);
        let d = &discounts[MANY_CODES_DISCOUNT];
        assert_eq!(
            d["codeDiscount"]["codes"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        let rest = gql_ok(
            &fake,
            SHOP,
            &token,
            "DiscountCodes",
            json!({"id": d["id"], "first": 100,
                "after": d["codeDiscount"]["codes"]["pageInfo"]["endCursor"]}),
        )
        .await;
        assert_eq!(
            rest["data"]["codeDiscountNode"]["codeDiscount"]["codes"]["edges"]
                .as_array()
                .unwrap()
                .len(),
            5
        );

        // Changes show up; too-large pages are refused like Shopify does.
        fake.set_variant_price(SHOP, 0, 0, "12.34");
        let v = gql_ok(&fake, SHOP, &token, "Products", json!({"first": 1})).await;
        let node = &v["data"]["products"]["edges"][0]["node"];
        assert_eq!(node["priceRangeV2"]["minVariantPrice"]["amount"], "12.34");
        let v: Value = gql(&fake, SHOP, &token, "Products", json!({"first": 250}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED");
        let v: Value = gql(&fake, SHOP, &token, "Nope", json!({}))
            .await
            .json()
            .await
            .unwrap();
        assert!(v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("doesn't exist"));
    }

    #[tokio::test]
    async fn fake_shopify_throttle_and_failures() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let token = connect(&fake, SHOP).await;
        fake.throttle_next(2);
        for _ in 0..2 {
            let r = gql(&fake, SHOP, &token, "Products", json!({"first": 50})).await;
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            assert!(v.get("data").is_none());
            assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED");
            let c = &v["extensions"]["cost"];
            let requested = c["requestedQueryCost"].as_f64().unwrap();
            let available = c["throttleStatus"]["currentlyAvailable"].as_f64().unwrap();
            assert!(available < requested);
            assert_eq!(c["throttleStatus"]["restoreRate"], 1000.0);
            assert_eq!(c["throttleStatus"]["maximumAvailable"], 2000.0);
        }
        gql_ok(&fake, SHOP, &token, "Products", json!({"first": 50})).await;
        assert_eq!(fake.requests("Products"), 3);

        fake.fail_next(429, 1);
        let r = gql(&fake, SHOP, &token, "Shop", json!({})).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "0");
        fake.fail_next(503, 2);
        for _ in 0..2 {
            let r = gql(&fake, SHOP, &token, "Shop", json!({})).await;
            assert_eq!(r.status(), 503);
            assert_eq!(r.text().await.unwrap(), "Service Unavailable");
        }
        gql_ok(&fake, SHOP, &token, "Shop", json!({})).await;
        assert_eq!(fake.total_graphql_requests(), 7);
    }

    #[tokio::test]
    async fn fake_shopify_rejects_revoked_tokens_and_wrong_version() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let token = connect(&fake, SHOP).await;
        gql_ok(&fake, SHOP, &token, "Shop", json!({})).await;
        // A token only works for its own shop.
        let r = gql(&fake, "other.myshopify.com", &token, "Shop", json!({})).await;
        assert_eq!(r.status(), 401);
        fake.revoke_tokens(SHOP);
        let r = gql(&fake, SHOP, &token, "Shop", json!({})).await;
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"], INVALID_TOKEN_BODY);
        let token = connect(&fake, SHOP).await;
        let r = client()
            .post(format!(
                "{}/{SHOP}/admin/api/2024-01/graphql.json",
                fake.base_url()
            ))
            .header("X-Shopify-Access-Token", &token)
            .json(&json!({"query": "query Shop { shop { id } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(fake.requests("Shop"), 4);
    }

    #[tokio::test]
    async fn fake_shopify_webhook_subscriptions() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let token = connect(&fake, SHOP).await;
        let uri = "https://app.example.com/shopify/webhook";
        fake.preload_subscription(SHOP, "PRODUCTS_UPDATE", uri);
        let create = |topic: &'static str| {
            let fake = fake.clone();
            let token = token.clone();
            async move {
                gql_ok(
                    &fake,
                    SHOP,
                    &token,
                    "WebhookSubscriptionCreate",
                    json!({"topic": topic, "webhookSubscription": {"uri": uri, "format": "JSON"}}),
                )
                .await
            }
        };
        let v = create("PRODUCTS_CREATE").await;
        let created = &v["data"]["webhookSubscriptionCreate"];
        assert_eq!(created["userErrors"], json!([]));
        assert_eq!(created["webhookSubscription"]["topic"], "PRODUCTS_CREATE");
        assert_eq!(created["webhookSubscription"]["uri"], uri);
        let v = create("PRODUCTS_UPDATE").await;
        let dup = &v["data"]["webhookSubscriptionCreate"];
        assert!(dup["webhookSubscription"].is_null());
        assert_eq!(
            dup["userErrors"][0]["message"],
            "Address for this topic has already been taken"
        );
        let v: Value = gql(
            &fake,
            SHOP,
            &token,
            "WebhookSubscriptionCreate",
            json!({"topic": "SHOP_REDACT", "webhookSubscription": {"uri": uri}}),
        )
        .await
        .json()
        .await
        .unwrap();
        assert!(v.get("data").is_none());
        assert!(v["errors"][0]["message"].is_string());
        assert_eq!(fake.subscription_creates(), 1);
        let listed = walk(
            &fake,
            &token,
            "WebhookSubscriptions",
            "webhookSubscriptions",
            1,
            json!({}),
        )
        .await;
        assert_eq!(listed.len(), 2);
        assert_eq!(fake.subscriptions(SHOP).len(), 2);
        assert_eq!(listed[0]["topic"], "PRODUCTS_UPDATE");
    }

    // --- Searches, counts and single-entity lookups -------------------------------------------

    fn ids_of(nodes: &[Value]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect()
    }

    async fn gql_errors(fake: &FakeShopify, token: &str, op: &str, vars: Value) -> Value {
        let r = gql(fake, SHOP, token, op, vars).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v.get("data").is_none(), "{op}: {v}");
        assert!(v["errors"][0]["message"].is_string(), "{op}: {v}");
        v
    }

    #[tokio::test]
    async fn fake_shopify_products_search_count_and_ids() {
        let fake = FakeShopify::start(FakeConfig {
            products: 60,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        let all = walk(&fake, &token, "Products", "products", 50, json!({})).await;
        assert_eq!(all.len(), 60);
        for q in [json!(null), json!("  ")] {
            let v = walk(
                &fake,
                &token,
                "Products",
                "products",
                50,
                json!({"query": q}),
            )
            .await;
            assert_eq!(v.len(), 60);
        }

        fake.set_product_title(SHOP, 5, "Renamed");
        fake.set_product_title(SHOP, 9, "Renamed too");
        let t5 = fake.product_webhook_body(SHOP, 5)["updated_at"]
            .as_str()
            .unwrap()
            .to_string();
        let (p5, p9) = (fake.product_id(SHOP, 5), fake.product_id(SHOP, 9));
        for q in [
            format!("updated_at:>='{t5}'"),
            format!("updated_at:>=\"{t5}\""),
            format!("updated_at:>={t5}"),
            "updated_at:>='2026-11-30T19:00:00-05:00'".to_string(),
        ] {
            let v = walk(
                &fake,
                &token,
                "Products",
                "products",
                1,
                json!({"query": q}),
            )
            .await;
            assert_eq!(ids_of(&v), vec![p5.clone(), p9.clone()], "{q}");
            assert_eq!(v[0]["title"], "Renamed");
        }
        for q in [format!("updated_at:>'{t5}'"), format!("updated_at:>{t5}")] {
            let v = walk(
                &fake,
                &token,
                "Products",
                "products",
                50,
                json!({"query": q}),
            )
            .await;
            assert_eq!(ids_of(&v), vec![p9.clone()], "{q}");
        }
        for q in [
            json!("title:Renamed"),
            json!("updated_at:<'2026-01-01T00:00:00Z'"),
            json!("updated_at:>='yesterday'"),
            json!("updated_at:>='2026-01-01T00:00:00Z"),
            json!("updated_at:>='2026-01-01T00:00:00Z' AND status:active"),
            json!(42),
        ] {
            gql_errors(&fake, &token, "Products", json!({"first": 5, "query": q})).await;
        }

        // Counts and ids-only listing follow deletions and additions.
        let count = |fake: FakeShopify, token: String| async move {
            let v = gql_ok(&fake, SHOP, &token, "ProductsCount", json!({})).await;
            assert_eq!(v["data"]["productsCount"]["precision"], "EXACT");
            v["data"]["productsCount"]["count"].as_u64().unwrap()
        };
        assert_eq!(count(fake.clone(), token.clone()).await, 60);
        fake.remove_product(SHOP, 3);
        assert_eq!(count(fake.clone(), token.clone()).await, 59);
        let idx = fake.add_product(SHOP);
        assert_eq!(idx, 60);
        assert_eq!(count(fake.clone(), token.clone()).await, 60);
        assert_eq!(fake.product_slots(SHOP), 61);
        assert_eq!(fake.variant_count(SHOP, idx), 1);
        let new_id = fake.product_id(SHOP, idx);
        assert_eq!(new_id, "gid://shopify/Product/1061");
        let newest = fake.product_webhook_body(SHOP, idx)["updated_at"]
            .as_str()
            .unwrap()
            .to_string();
        let v = walk(
            &fake,
            &token,
            "Products",
            "products",
            50,
            json!({"query": format!("updated_at:>='{newest}'")}),
        )
        .await;
        assert_eq!(ids_of(&v), vec![new_id.clone()]);
        assert_eq!(v[0]["createdAt"], newest.as_str());
        assert_eq!(
            v[0]["options"],
            json!([{"name": "Title", "values": ["Default Title"]}])
        );

        let ids = walk(&fake, &token, "ProductIds", "products", 7, json!({})).await;
        assert_eq!(ids.len(), 60);
        assert!(ids.iter().all(|n| n.as_object().unwrap().len() == 1));
        assert_eq!(ids.last().unwrap()["id"], new_id.as_str());
        assert!(!ids
            .iter()
            .any(|n| n["id"] == fake.product_id(SHOP, 3).as_str()));
        let v = gql_ok(&fake, SHOP, &token, "ProductIds", json!({"first": 250})).await;
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 252);
        assert_eq!(v["data"]["products"]["pageInfo"]["hasNextPage"], false);
    }

    #[tokio::test]
    async fn fake_shopify_variants_by_product_ids() {
        let fake = FakeShopify::start(FakeConfig {
            products: 40,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        let q = json!({"query": "product_ids:1001,1003,1006"});
        let v = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            2,
            q.clone(),
        )
        .await;
        let expected: Vec<String> = [0, 2, 5]
            .iter()
            .flat_map(|&p| (0..fake.variant_count(SHOP, p)).map(move |j| (p, j)))
            .map(|(p, j)| fake.variant_id(SHOP, p, j))
            .collect();
        assert_eq!(ids_of(&v), expected);
        fake.remove_product(SHOP, 2);
        let v = walk(&fake, &token, "ProductVariants", "productVariants", 40, q).await;
        assert_eq!(v.len(), 1 + 3);
        assert!(v.iter().all(
            |n| ["gid://shopify/Product/1001", "gid://shopify/Product/1006"]
                .contains(&n["product"]["id"].as_str().unwrap())
        ));
        let v = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            40,
            json!({"query": "product_ids:99999"}),
        )
        .await;
        assert!(v.is_empty());
        for q in [
            "product_ids:abc",
            "product_ids:",
            "sku:SKU-1001-1",
            "product_ids:1, 2",
        ] {
            gql_errors(
                &fake,
                &token,
                "ProductVariants",
                json!({"first": 5, "query": q}),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn fake_shopify_product_and_inventory_item() {
        let fake = FakeShopify::start(FakeConfig {
            products: 30,
            many_variants: Some((4, 300)),
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        let products = walk(&fake, &token, "Products", "products", 10, json!({})).await;
        let pid = fake.product_id(SHOP, 4);
        let listed = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            40,
            json!({"query": "product_ids:1005"}),
        )
        .await;
        assert_eq!(listed.len(), 300);

        let r = gql_ok(
            &fake,
            SHOP,
            &token,
            "Product",
            json!({"id": pid, "first": 40}),
        )
        .await;
        assert_eq!(
            r["extensions"]["cost"]["requestedQueryCost"],
            13 + 2 + 40 * 21
        );
        let mut node = r["data"]["product"].clone();
        let variants_conn = node.as_object_mut().unwrap().remove("variants").unwrap();
        assert_eq!(variants_conn["edges"].as_array().unwrap().len(), 40);
        assert_eq!(variants_conn["pageInfo"]["hasNextPage"], true);
        assert_eq!(node, products[4]);
        let variants = walk(
            &fake,
            &token,
            "Product",
            "product.variants",
            40,
            json!({"id": pid}),
        )
        .await;
        assert_eq!(variants.len(), 300);
        for (got, want) in variants.iter().zip(&listed) {
            let mut want = want.clone();
            want.as_object_mut().unwrap().remove("product");
            assert_eq!(got, &want);
        }
        for id in [
            json!("gid://shopify/Product/999999"),
            json!("gid://shopify/Collection/3001"),
        ] {
            let r = gql_ok(
                &fake,
                SHOP,
                &token,
                "Product",
                json!({"id": id, "first": 5}),
            )
            .await;
            assert!(r["data"]["product"].is_null());
        }
        fake.remove_product(SHOP, 1);
        let r = gql_ok(
            &fake,
            SHOP,
            &token,
            "Product",
            json!({"id": fake.product_id(SHOP, 1), "first": 5}),
        )
        .await;
        assert!(r["data"]["product"].is_null());
        gql_errors(&fake, &token, "Product", json!({"id": "nope", "first": 5})).await;
        gql_errors(&fake, &token, "Product", json!({"id": pid})).await;

        // InventoryItem agrees with ProductVariants / Products, and follows set_available.
        let (p, j) = (MANY_LOCATIONS_PRODUCT, MANY_LOCATIONS_VARIANT);
        let item = fake.inventory_item_id(SHOP, p, j);
        let check = |fake: FakeShopify, token: String| {
            let item = item.clone();
            async move {
                let r = gql_ok(&fake, SHOP, &token, "InventoryItem", json!({"id": item})).await;
                assert_eq!(r["extensions"]["cost"]["requestedQueryCost"], 20);
                let got = r["data"]["inventoryItem"].clone();
                let vid = fake.variant_id(SHOP, p, j);
                let v = walk(
                    &fake,
                    &token,
                    "ProductVariants",
                    "productVariants",
                    40,
                    json!({}),
                )
                .await
                .into_iter()
                .find(|v| v["id"] == vid.as_str())
                .unwrap();
                let pr = walk(&fake, &token, "Products", "products", 50, json!({}))
                    .await
                    .into_iter()
                    .find(|x| x["id"] == v["product"]["id"])
                    .unwrap();
                assert_eq!(
                    got,
                    json!({
                        "id": item,
                        "variant": {
                            "id": vid,
                            "inventoryQuantity": v["inventoryQuantity"],
                            "availableForSale": v["availableForSale"],
                            "product": {"id": pr["id"], "totalInventory": pr["totalInventory"]},
                        },
                        "inventoryLevels": v["inventoryItem"]["inventoryLevels"],
                    })
                );
                got
            }
        };
        let before = check(fake.clone(), token.clone()).await;
        assert_eq!(
            before["inventoryLevels"]["pageInfo"]["hasNextPage"], true,
            "{before}"
        );
        fake.set_available(SHOP, p, j, 0, 1000);
        let after = check(fake.clone(), token.clone()).await;
        assert_eq!(
            after["inventoryLevels"]["edges"][0]["node"]["quantities"][0]["quantity"],
            1000
        );
        assert_eq!(after["variant"]["availableForSale"], true);
        assert!(
            after["variant"]["product"]["totalInventory"]
                .as_i64()
                .unwrap()
                > before["variant"]["product"]["totalInventory"]
                    .as_i64()
                    .unwrap()
        );
        let body = fake.inventory_level_webhook_body(SHOP, p, j, 0);
        assert_eq!(body["available"], 1000);
        assert_eq!(
            format!("gid://shopify/InventoryItem/{}", body["inventory_item_id"]),
            item
        );
        assert_eq!(
            format!("gid://shopify/Location/{}", body["location_id"]),
            after["inventoryLevels"]["edges"][0]["node"]["location"]["id"]
                .as_str()
                .unwrap()
        );
        assert_eq!(
            body["updated_at"],
            fake.product_webhook_body(SHOP, p)["updated_at"]
        );
        for id in [
            "gid://shopify/InventoryItem/1",
            "gid://shopify/Product/1001",
        ] {
            let r = gql_ok(&fake, SHOP, &token, "InventoryItem", json!({"id": id})).await;
            assert!(r["data"]["inventoryItem"].is_null());
        }

        let body = fake.product_webhook_body(SHOP, 2);
        assert_eq!(body["id"], 1003);
        assert_eq!(
            body["admin_graphql_api_id"],
            fake.product_id(SHOP, 2).as_str()
        );
        assert_eq!(body["handle"], fake.product_handle(SHOP, 2).as_str());
        let vs = body["variants"].as_array().unwrap();
        assert_eq!(vs.len(), 3);
        assert_eq!(
            format!("gid://shopify/ProductVariant/{}", vs[1]["id"]),
            fake.variant_id(SHOP, 2, 1)
        );
        assert_eq!(
            format!("gid://shopify/InventoryItem/{}", vs[1]["inventory_item_id"]),
            fake.inventory_item_id(SHOP, 2, 1)
        );
        assert_eq!(vs[1]["price"], fake.variant_price(SHOP, 2, 1).as_str());
    }

    #[tokio::test]
    async fn fake_shopify_single_collection_and_discount() {
        let fake = FakeShopify::start(FakeConfig::default()).await;
        let token = connect(&fake, SHOP).await;
        let cols = walk(&fake, &token, "Collections", "collections", 10, json!({})).await;
        let k = 2; // the big collection
        let cid = fake.collection_id(SHOP, k);
        assert_eq!(cols[k]["id"], cid.as_str());
        let r = gql_ok(&fake, SHOP, &token, "Collection", json!({"id": cid})).await;
        assert_eq!(r["data"]["collection"], cols[k]);
        assert_eq!(r["extensions"]["cost"]["requestedQueryCost"], 53);

        fake.set_collection_title(SHOP, k, "Huge Collection");
        let r = gql_ok(&fake, SHOP, &token, "Collection", json!({"id": cid})).await;
        let c = &r["data"]["collection"];
        assert_eq!(c["title"], "Huge Collection");
        assert!(c["updatedAt"].as_str().unwrap() > cols[k]["updatedAt"].as_str().unwrap());
        let body = fake.collection_webhook_body(SHOP, k);
        assert_eq!(
            body,
            json!({"id": 3003, "admin_graphql_api_id": cid, "title": "Huge Collection",
                "handle": BIG_COLLECTION_HANDLE, "updated_at": c["updatedAt"]})
        );

        fake.remove_collection(SHOP, k);
        let r = gql_ok(&fake, SHOP, &token, "Collection", json!({"id": cid})).await;
        assert!(r["data"]["collection"].is_null());
        let r = gql_ok(
            &fake,
            SHOP,
            &token,
            "CollectionProducts",
            json!({"id": cid, "first": 10}),
        )
        .await;
        assert!(r["data"]["collection"].is_null());
        let cols = walk(&fake, &token, "Collections", "collections", 10, json!({})).await;
        assert_eq!(cols.len(), 22);
        assert!(!cols.iter().any(|c| c["id"] == cid.as_str()));
        assert_eq!(fake.collections_len(SHOP), 22);
        assert!(fake
            .collection_product_handles(SHOP, BIG_COLLECTION_HANDLE)
            .is_empty());

        let discounts = walk(
            &fake,
            &token,
            "CodeDiscounts",
            "codeDiscountNodes",
            25,
            json!({}),
        )
        .await;
        let k = MANY_CODES_DISCOUNT;
        let did = fake.discount_id(SHOP, k);
        assert_eq!(discounts[k]["id"], did.as_str());
        let r = gql_ok(&fake, SHOP, &token, "CodeDiscount", json!({"id": did})).await;
        assert_eq!(r["data"]["codeDiscountNode"], discounts[k]);
        assert_eq!(r["extensions"]["cost"]["requestedQueryCost"], 14);
        let before = fake.discount_webhook_body(SHOP, k);
        fake.set_discount_title(SHOP, k, "Mega sale");
        let r = gql_ok(&fake, SHOP, &token, "CodeDiscount", json!({"id": did})).await;
        assert_eq!(
            r["data"]["codeDiscountNode"]["codeDiscount"]["title"],
            "Mega sale"
        );
        let body = fake.discount_webhook_body(SHOP, k);
        assert_eq!(body["admin_graphql_api_id"], did.as_str());
        assert_eq!(body["title"], "Mega sale");
        assert_eq!(body["status"], discounts[k]["codeDiscount"]["status"]);
        assert_eq!(body["created_at"], before["created_at"]);
        assert!(body["updated_at"].as_str().unwrap() > before["updated_at"].as_str().unwrap());
        assert!(body["created_at"].as_str().unwrap() < body["updated_at"].as_str().unwrap());

        fake.remove_discount(SHOP, k);
        let r = gql_ok(&fake, SHOP, &token, "CodeDiscount", json!({"id": did})).await;
        assert!(r["data"]["codeDiscountNode"].is_null());
        let r = gql_ok(
            &fake,
            SHOP,
            &token,
            "DiscountCodes",
            json!({"id": did, "first": 10}),
        )
        .await;
        assert!(r["data"]["codeDiscountNode"].is_null());
        let discounts = walk(
            &fake,
            &token,
            "CodeDiscounts",
            "codeDiscountNodes",
            25,
            json!({}),
        )
        .await;
        assert_eq!(discounts.len(), 29);
        assert_eq!(fake.discounts_len(SHOP), 29);
        for (op, id) in [
            ("Collection", "gid://shopify/Collection/1"),
            ("CodeDiscount", "gid://shopify/DiscountCodeNode/1"),
        ] {
            let r = gql_ok(&fake, SHOP, &token, op, json!({"id": id})).await;
            assert!(r["data"].as_object().unwrap().values().all(Value::is_null));
        }
        gql_errors(&fake, &token, "Collection", json!({"id": 7})).await;
        gql_errors(&fake, &token, "CodeDiscount", json!({})).await;
    }

    #[tokio::test]
    async fn fake_shopify_many_variants() {
        let fake = FakeShopify::start(FakeConfig {
            products: 30,
            many_variants: Some((3, 2048)),
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        assert_eq!(fake.variant_count(SHOP, 3), 2048);
        let all = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            40,
            json!({}),
        )
        .await;
        assert_eq!(all.len(), fake.variants_len(SHOP));
        let ids: HashSet<String> = all
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
        let items: HashSet<String> = all
            .iter()
            .map(|v| v["inventoryItem"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), all.len());
        assert_eq!(items.len(), all.len());
        let mine: Vec<&Value> = all
            .iter()
            .filter(|v| v["product"]["id"] == "gid://shopify/Product/1004")
            .collect();
        assert_eq!(mine.len(), 2048);
        for (j, v) in mine.iter().enumerate() {
            let size = format!("Size {}", j + 1);
            assert_eq!(v["title"], size.as_str());
            assert_eq!(
                v["selectedOptions"],
                json!([{"name": "Size", "value": size}])
            );
            let levels = &v["inventoryItem"]["inventoryLevels"];
            assert_eq!(levels["edges"].as_array().unwrap().len(), 2);
            assert_eq!(levels["pageInfo"]["hasNextPage"], false);
        }
        let pid = fake.product_id(SHOP, 3);
        let variants = walk(
            &fake,
            &token,
            "Product",
            "product.variants",
            40,
            json!({"id": pid}),
        )
        .await;
        assert_eq!(variants.len(), 2048);
        assert_eq!(fake.requests("Product"), 52);
        let r = gql_ok(
            &fake,
            SHOP,
            &token,
            "Product",
            json!({"id": pid, "first": 1}),
        )
        .await;
        let options = &r["data"]["product"]["options"][0];
        assert_eq!(options["name"], "Size");
        assert_eq!(options["values"].as_array().unwrap().len(), 2048);

        // A new product's ids do not collide with the generated ones.
        let idx = fake.add_product(SHOP);
        let vid = fake.variant_id(SHOP, idx, 0);
        let item = fake.inventory_item_id(SHOP, idx, 0);
        assert!(!ids.contains(&vid));
        assert!(!items.contains(&item));
        assert_eq!(fake.variant_levels(SHOP, idx, 0).len(), 2);
    }

    // --- Bulk operations ------------------------------------------------------------------------

    use crate::shopify::queries::{BULK_PRODUCTS, BULK_VARIANTS};

    async fn bulk_run(fake: &FakeShopify, token: &str, document: &str) -> Value {
        let v = gql_ok(
            fake,
            SHOP,
            token,
            "BulkOperationRunQuery",
            json!({"query": document}),
        )
        .await;
        v["data"]["bulkOperationRunQuery"].clone()
    }

    async fn bulk_status(fake: &FakeShopify, token: &str, id: &Value) -> Value {
        let v = gql_ok(fake, SHOP, token, "BulkOperation", json!({"id": id})).await;
        v["data"]["bulkOperation"].clone()
    }

    /// Polls until the operation is COMPLETED or FAILED.
    async fn bulk_wait(fake: &FakeShopify, token: &str, id: &Value) -> Value {
        for _ in 0..1000 {
            let op = bulk_status(fake, token, id).await;
            if matches!(op["status"].as_str(), Some("COMPLETED" | "FAILED")) {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("bulk operation {id} did not finish");
    }

    /// Starts a bulk query, waits for it to finish; returns the final status.
    async fn bulk_done(fake: &FakeShopify, token: &str, document: &str) -> Value {
        let run = bulk_run(fake, token, document).await;
        assert_eq!(run["userErrors"], json!([]), "{run}");
        bulk_wait(fake, token, &run["bulkOperation"]["id"]).await
    }

    /// GET a bulk URL: status, content type, body.
    async fn download(url: &Value) -> (u16, String, String) {
        let r = client().get(url.as_str().unwrap()).send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, r.text().await.unwrap())
    }

    fn jsonl(body: &str) -> Vec<Value> {
        assert!(body.is_empty() || body.ends_with('\n'));
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Checks the ordering of an ungrouped bulk file: parents not in id order, some children
    /// before every parent, and each parent's children in `expected` order.
    fn check_order(lines: &[Value], expected: &HashMap<String, Vec<Value>>) {
        let first_parent = lines.iter().position(|l| l.get("__parentId").is_none());
        let first_parent = first_parent.expect("no parent lines");
        assert!(first_parent > 0, "no children before the parents");
        let parents: Vec<u64> = lines
            .iter()
            .filter(|l| l.get("__parentId").is_none())
            .map(|l| {
                l["id"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = parents.clone();
        sorted.sort_unstable();
        assert_ne!(parents, sorted, "parents are in id order");
        let mut children: HashMap<String, Vec<Value>> = HashMap::new();
        for l in lines {
            if let Some(p) = l.get("__parentId") {
                let mut c = l.clone();
                c.as_object_mut().unwrap().remove("__parentId");
                children
                    .entry(p.as_str().unwrap().to_string())
                    .or_default()
                    .push(c);
            }
        }
        let expected: HashMap<String, Vec<Value>> = expected
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(children, expected);
    }

    #[tokio::test]
    async fn fake_shopify_bulk_products_lifecycle() {
        let fake = FakeShopify::start(FakeConfig {
            products: 60,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        fake.remove_product(SHOP, 10);
        let products = walk(&fake, &token, "Products", "products", 50, json!({})).await;
        let mut metafields = HashMap::new();
        for p in &products {
            let v = walk(
                &fake,
                &token,
                "ProductMetafields",
                "product.metafields",
                100,
                json!({"id": p["id"]}),
            )
            .await;
            metafields.insert(p["id"].as_str().unwrap().to_string(), v);
        }

        fake.set_bulk_delay(Duration::from_millis(400));
        let run = bulk_run(&fake, &token, BULK_PRODUCTS).await;
        assert_eq!(run["userErrors"], json!([]));
        assert_eq!(run["bulkOperation"]["status"], "CREATED");
        let id = run["bulkOperation"]["id"].clone();
        assert!(id
            .as_str()
            .unwrap()
            .starts_with("gid://shopify/BulkOperation/"));
        assert_eq!(fake.bulk_operations_started(), 1);
        // Changes after creation are not in the snapshot.
        fake.set_product_title(SHOP, 0, "After the snapshot");

        let again = bulk_run(&fake, &token, BULK_VARIANTS).await;
        assert!(again["bulkOperation"].is_null());
        assert_eq!(
            again["userErrors"],
            json!([{"field": null, "code": "OPERATION_IN_PROGRESS", "message": format!(
                "A bulk query operation for this app and shop is already in progress: {}.",
                id.as_str().unwrap()
            )}])
        );
        assert_eq!(fake.bulk_operations_started(), 1);
        let early = bulk_status(&fake, &token, &id).await;
        assert!(matches!(
            early["status"].as_str(),
            Some("CREATED" | "RUNNING")
        ));
        assert_eq!(early["objectCount"], "0");
        assert!(early["url"].is_null());
        assert!(early["errorCode"].is_null());

        let op = bulk_wait(&fake, &token, &id).await;
        assert_eq!(op["status"], "COMPLETED");
        assert!(op["errorCode"].is_null());
        assert!(op["partialDataUrl"].is_null());
        let n = id.as_str().unwrap().rsplit('/').next().unwrap();
        assert_eq!(
            op["url"],
            format!("{}/bulk/{SHOP}/{n}.jsonl", fake.base_url()).as_str()
        );
        let (status, ct, body) = download(&op["url"]).await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/jsonl");
        let lines = jsonl(&body);
        assert_eq!(op["objectCount"], lines.len().to_string().as_str());
        let counts = fake.counts(SHOP);
        assert_eq!(lines.len(), counts.products + counts.metafields);
        let mut parents: Vec<Value> = lines
            .iter()
            .filter(|l| l.get("__parentId").is_none())
            .cloned()
            .collect();
        parents.sort_by_key(|p| {
            p["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        let expected: Vec<Value> = products
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p.as_object_mut().unwrap().remove("metafields");
                p
            })
            .collect();
        assert_eq!(parents, expected);
        check_order(&lines, &metafields);
        // The 8 metafields of the rich product (index 7, a 7th parent) precede every product.
        let first_parent = lines
            .iter()
            .position(|l| l.get("__parentId").is_none())
            .unwrap();
        let rich = fake.product_id(SHOP, RICH_METAFIELDS_PRODUCT);
        let rich_lines: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i]["__parentId"] == rich.as_str())
            .collect();
        assert_eq!(rich_lines.len(), RICH_METAFIELDS_COUNT);
        assert!(rich_lines.iter().all(|&i| i < first_parent));
        for l in lines.iter().filter(|l| l.get("__parentId").is_some()) {
            let mut keys: Vec<&String> = l.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["__parentId", "key", "namespace", "type", "value"]);
        }
        assert_eq!(fake.bulk_downloads(), 1);

        // Deterministic: a second run gives the same file (with the new title).
        fake.set_bulk_delay(Duration::from_millis(20));
        let op2 = bulk_done(&fake, &token, BULK_PRODUCTS).await;
        assert_ne!(op2["url"], op["url"]);
        let (_, _, body2) = download(&op2["url"]).await;
        let lines2 = jsonl(&body2);
        assert_eq!(lines2.len(), lines.len());
        let positions = |ls: &[Value]| -> Vec<Value> {
            ls.iter()
                .map(|l| {
                    l.get("__parentId")
                        .cloned()
                        .unwrap_or_else(|| l["id"].clone())
                })
                .collect()
        };
        assert_eq!(positions(&lines2), positions(&lines));
        assert!(lines2.iter().any(|l| l["title"] == "After the snapshot"));
        assert!(!lines.iter().any(|l| l["title"] == "After the snapshot"));
        assert_eq!(fake.bulk_operations_started(), 2);

        // User errors: limit reached, a document without a connection; unknown ids are null.
        fake.bulk_limit_reached_next(1);
        let r = bulk_run(&fake, &token, BULK_PRODUCTS).await;
        assert!(r["bulkOperation"].is_null());
        assert_eq!(r["userErrors"][0]["code"], "LIMIT_REACHED");
        let r = bulk_run(&fake, &token, "{ shop { id } }").await;
        assert!(r["bulkOperation"].is_null());
        assert_eq!(r["userErrors"][0]["code"], "INVALID");
        assert_eq!(fake.bulk_operations_started(), 2);
        gql_errors(&fake, &token, "BulkOperationRunQuery", json!({})).await;
        let r = bulk_status(&fake, &token, &json!("gid://shopify/BulkOperation/1")).await;
        assert!(r.is_null());
        let other = connect(&fake, "other.myshopify.com").await;
        let v = client()
            .post(fake.graphql_url("other.myshopify.com"))
            .header("X-Shopify-Access-Token", &other)
            .json(&json!({"query": "query BulkOperation { __typename }",
                "operationName": "BulkOperation", "variables": {"id": id}}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert!(v["data"]["bulkOperation"].is_null(), "{v}");
        let (status, _, _) = download(&json!(format!(
            "{}/bulk/{SHOP}/nope.jsonl",
            fake.base_url()
        )))
        .await;
        assert_eq!(status, 404);
        assert!(fake.unexpected_requests().is_empty());
    }

    #[tokio::test]
    async fn fake_shopify_bulk_variants_failure_and_expiry() {
        let fake = FakeShopify::start(FakeConfig {
            products: 40,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        let variants = walk(
            &fake,
            &token,
            "ProductVariants",
            "productVariants",
            40,
            json!({}),
        )
        .await;
        let mut levels = HashMap::new();
        for v in &variants {
            let all = walk(
                &fake,
                &token,
                "InventoryLevels",
                "inventoryItem.inventoryLevels",
                100,
                json!({"id": v["inventoryItem"]["id"]}),
            )
            .await;
            levels.insert(v["id"].as_str().unwrap().to_string(), all);
        }

        let op = bulk_done(&fake, &token, BULK_VARIANTS).await;
        assert_eq!(op["status"], "COMPLETED");
        let (status, _, body) = download(&op["url"]).await;
        assert_eq!(status, 200);
        let lines = jsonl(&body);
        let counts = fake.counts(SHOP);
        assert_eq!(lines.len(), counts.variants + counts.inventory_levels);
        check_order(&lines, &levels);
        let mut parents: Vec<Value> = lines
            .iter()
            .filter(|l| l.get("__parentId").is_none())
            .cloned()
            .collect();
        parents.sort_by_key(|p| {
            p["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        let expected: Vec<Value> = variants
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v["inventoryItem"] = json!({"id": v["inventoryItem"]["id"]});
                v
            })
            .collect();
        assert_eq!(parents, expected);

        // A failure with partial data: the first half of the same lines.
        fake.fail_next_bulk("INTERNAL_SERVER_ERROR");
        let failed = bulk_done(&fake, &token, BULK_VARIANTS).await;
        assert_eq!(failed["status"], "FAILED");
        assert_eq!(failed["errorCode"], "INTERNAL_SERVER_ERROR");
        assert!(failed["url"].is_null());
        let half = lines.len() / 2;
        assert_eq!(failed["objectCount"], half.to_string().as_str());
        let (status, ct, partial) = download(&failed["partialDataUrl"]).await;
        assert_eq!(status, 200);
        assert_eq!(ct, "application/jsonl");
        assert_eq!(jsonl(&partial), lines[..half].to_vec());
        // The failure was for one operation only.
        let ok = bulk_done(&fake, &token, BULK_PRODUCTS).await;
        assert_eq!(ok["status"], "COMPLETED");

        // Expired URLs answer 403 with the storage XML; later files download fine.
        fake.expire_bulk_urls();
        for url in [&op["url"], &failed["partialDataUrl"], &ok["url"]] {
            let (status, _, body) = download(url).await;
            assert_eq!(status, 403);
            assert_eq!(
                body,
                r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"#
            );
        }
        let fresh = bulk_done(&fake, &token, BULK_VARIANTS).await;
        let (status, _, body) = download(&fresh["url"]).await;
        assert_eq!(status, 200);
        assert_eq!(jsonl(&body), lines);
        assert_eq!(fake.bulk_downloads(), 6);
        assert_eq!(fake.bulk_operations_started(), 4);
        fake.reset_counters();
        assert_eq!(fake.bulk_downloads(), 0);
        assert_eq!(fake.bulk_operations_started(), 0);
    }

    #[tokio::test]
    async fn fake_shopify_bulk_finish_webhook() {
        type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/hooks",
                post(
                    |AxState(seen): AxState<Seen>, headers: HeaderMap, body: Bytes| async move {
                        seen.lock().unwrap().push((headers, body));
                        StatusCode::OK
                    },
                ),
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let fake = FakeShopify::start(FakeConfig {
            products: 20,
            ..FakeConfig::default()
        })
        .await;
        let token = connect(&fake, SHOP).await;
        fake.preload_subscription(SHOP, "BULK_OPERATIONS_FINISH", &uri);
        fake.preload_subscription(SHOP, "PRODUCTS_UPDATE", &uri);
        // Deliveries that fail are ignored.
        fake.preload_subscription(SHOP, "BULK_OPERATIONS_FINISH", "http://127.0.0.1:1/down");

        let wait_sent = |n: usize| {
            let fake = fake.clone();
            async move {
                for _ in 0..500 {
                    if fake.finish_webhooks_sent() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{n} finish webhooks were not sent");
            }
        };
        let op = bulk_done(&fake, &token, BULK_PRODUCTS).await;
        wait_sent(2).await;
        fake.fail_next_bulk("TIMEOUT");
        let failed = bulk_done(&fake, &token, BULK_PRODUCTS).await;
        wait_sent(4).await;
        assert_eq!(fake.finish_webhooks_sent(), 4);

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        let secret = fake.config().api_secret;
        let mut event_ids = HashSet::new();
        for ((headers, body), (op, status, code)) in seen.iter().zip([
            (&op, "completed", Value::Null),
            (&failed, "failed", json!("timeout")),
        ]) {
            let h = |k: &str| headers[k].to_str().unwrap().to_string();
            assert_eq!(h("x-shopify-topic"), "bulk_operations/finish");
            assert_eq!(h("x-shopify-shop-domain"), SHOP);
            assert_eq!(h("x-shopify-api-version"), fake.config().api_version);
            assert!(crate::shopify::signature::verify_webhook(
                secret.as_bytes(),
                body,
                &h("x-shopify-hmac-sha256")
            ));
            assert!(DateTime::parse_from_rfc3339(&h("x-shopify-triggered-at")).is_ok());
            assert!(event_ids.insert(h("x-shopify-event-id")));
            assert!(!h("x-shopify-webhook-id").is_empty());
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["admin_graphql_api_id"], op["id"]);
            assert_eq!(v["status"], status);
            assert_eq!(v["error_code"], code);
            assert_eq!(v["type"], "query");
            for k in ["created_at", "completed_at"] {
                assert!(DateTime::parse_from_rfc3339(v[k].as_str().unwrap()).is_ok());
            }
            assert_eq!(v.as_object().unwrap().len(), 6);
        }
    }
}
