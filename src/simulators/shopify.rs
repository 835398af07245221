//! An in-process fake of the Shopify APIs the service calls, on a loopback port.
//!
//! Routes (the service reaches a shop at `SHOPIFY_SHOP_URL_TEMPLATE` = `http://127.0.0.1:PORT/{shop}`):
//! - `POST /{shop}/admin/oauth/access_token`: authorization-code exchange and refresh-token grant.
//! - `POST /{shop}/admin/api/{version}/graphql.json`: the GraphQL Admin API, dispatched on
//!   `operationName` (the documents of `src/shopify/queries.rs`), answering with exactly the
//!   fields those documents select, `edges{cursor,node}` + `pageInfo` connections, GIDs and
//!   `extensions.cost`.
//!
//! Every GraphQL request is counted (per operation, per shop and in total) before any check, so
//! requests answered by `fail_next`, `throttle_next`, 401 or 404 count too.
//!
//! Catalogue (deterministic, generated lazily per shop domain): `FakeConfig::products` products
//! with 1–3 variants each (`1 + index % 3`), each variant stocked at 2 of 8 locations, except
//! the special cases named by the `pub const`s below (a product with 8 custom metafields, a
//! variant at 7 locations, the collection `big` with 120 products, a collection with exactly 50,
//! an empty one, a discount with 15 codes and one with exactly 10).
//! Product index `i` has id `gid://shopify/Product/{1001 + i}`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
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
        let state = Arc::new(Mutex::new(State::new(config)));
        let app = Router::new()
            .route("/{shop}/admin/oauth/access_token", post(token_handler))
            .route(
                "/{shop}/admin/api/{version}/graphql.json",
                post(graphql_handler),
            )
            .fallback(fallback_handler)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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

    // --- Catalogue changes -----------------------------------------------------------------

    pub fn set_variant_price(&self, shop: &str, product: usize, variant: usize, price: &str) {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        s.products[product].variants[variant].price = price.to_string();
        s.touch(product);
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

    pub fn metafield_count(&self, shop: &str, product: usize) -> usize {
        self.st().shop_mut(shop).products[product].metafields.len()
    }

    /// Handles of a collection's products, by collection handle.
    pub fn collection_product_handles(&self, shop: &str, handle: &str) -> Vec<String> {
        let mut st = self.st();
        let s = st.shop_mut(shop);
        let c = s.collections.iter().find(|c| c.handle == handle);
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
    size: Option<&'static str>,
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

impl ShopData {
    fn generate(domain: &str, cfg: &FakeConfig) -> ShopData {
        let mut products = Vec::with_capacity(cfg.products);
        let mut variant_id = 40001u64;
        let mut item_id = 50001u64;
        let mut metafield_id = 80001u64;
        let mut global_variant = 0usize;
        for i in 0..cfg.products {
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
                    if i % 2 == 0 { Some(format!("{title} front view")) } else { None },
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
                        "json" => format!("{{\"waterproof\":{},\"layers\":{}}}", i % 2 == 0, m),
                        "multi_line_text_field" => "Wash cold.\nDry flat.".to_string(),
                        "url" => format!("https://example.com/size-charts/{id}"),
                        _ => format!("{key} value {id}"),
                    };
                    let mf = Metafield {
                        id: metafield_id,
                        key: key.to_string(),
                        kind,
                        value,
                    };
                    metafield_id += 1;
                    mf
                })
                .collect();
            let n_var = 1 + i % 3;
            let base = 999 + (i as u64 * 137) % 9000;
            let mut variants = Vec::with_capacity(n_var);
            for (j, size) in SIZES.iter().copied().enumerate().take(n_var) {
                let n_levels = if i == MANY_LOCATIONS_PRODUCT && j == MANY_LOCATIONS_VARIANT {
                    MANY_LOCATIONS_COUNT
                } else {
                    2
                };
                let mut locs: Vec<usize> = (0..n_levels)
                    .map(|k| (global_variant + k * 3) % LOCATIONS.len())
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
                    id: variant_id,
                    product_id: id,
                    title: if n_var == 1 {
                        "Default Title".into()
                    } else {
                        size.into()
                    },
                    size: if n_var == 1 { None } else { Some(size) },
                    sku: if i % 17 == 16 {
                        None
                    } else {
                        Some(format!("SKU-{id}-{}", j + 1))
                    },
                    price: money(price),
                    compare_at: if i % 4 == 0 {
                        Some(money(price + 1000))
                    } else {
                        None
                    },
                    inventory_item_id: item_id,
                    levels,
                });
                variant_id += 1;
                item_id += 1;
                global_variant += 1;
            }
            products.push(Product {
                id,
                title,
                handle,
                description,
                product_type: ptype.to_string(),
                vendor: VENDORS[i % VENDORS.len()].to_string(),
                tags,
                status,
                created_at: timestamp(2025, i),
                updated_at: timestamp(2026, i),
                image,
                metafields,
                variants,
                deleted: false,
            });
        }

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
                    updated_at: timestamp(2026, 100 + k),
                    products: dedup(members),
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
        }
    }

    fn touch(&mut self, product: usize) {
        self.update_seq += 1;
        let n = self.update_seq as usize;
        self.products[product].updated_at = format!(
            "2026-12-{:02}T{:02}:{:02}:{:02}Z",
            1 + (n / 86400) % 28,
            (n / 3600) % 24,
            (n / 60) % 60,
            n % 60
        );
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
        c.collections = self.collections.len();
        c.collection_memberships = self
            .collections
            .iter()
            .map(|col| {
                col.products
                    .iter()
                    .filter(|&&p| !self.products[p].deleted)
                    .count()
            })
            .sum();
        c.discounts = self.discounts.len();
        c.discount_codes = self.discounts.iter().map(|d| d.codes.len()).sum();
        c
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
        .map(|m| {
            (
                m.id,
                json!({"namespace": "custom", "key": m.key, "type": m.kind, "value": m.value}),
            )
        })
        .collect();
    (connection(edges, more), cost)
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
        .map(|l| {
            let loc = LOCATION_BASE + l.location as u64;
            (
                loc,
                json!({
                    "location": {"id": gid("Location", loc), "name": LOCATIONS[l.location]},
                    "quantities": [{"name": "available", "quantity": l.available}],
                }),
            )
        })
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

fn render_product(s: &ShopData, p: &Product) -> (Value, u64) {
    let (metafields, mcost) = metafields_conn(p, 5, None);
    let total: i64 = p.variants.iter().map(variant_quantity).sum();
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
        let values: Vec<&str> = p.variants.iter().filter_map(|v| v.size).collect();
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
    let selected = match v.size {
        Some(s) => json!([{"name": "Size", "value": s}]),
        None => json!([{"name": "Title", "value": "Default Title"}]),
    };
    let node = json!({
        "id": gid("ProductVariant", v.id),
        "title": v.title,
        "sku": v.sku,
        "price": v.price,
        "compareAtPrice": v.compare_at,
        "availableForSale": q > 0,
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

/// Requested cost of an operation (Shopify's model: connection = 2 + first × node cost,
/// object = 1, scalar/enum = 0), `None` for an unknown operation.
fn requested_cost(op: &str, vars: &Value) -> Option<u64> {
    let first = vars["first"].as_u64().unwrap_or(0).min(MAX_PAGE as u64);
    Some(match op {
        "Shop" => 2,
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
        if op == "WebhookSubscriptionCreate" {
            return self.create_subscription(shop, vars);
        }
        let s = &*self.shop_mut(shop);
        let out = match op {
            "Shop" => Outcome::Data(json!({"shop": render_shop(s)}), 2),
            "Products" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let (page, more) = paginate(s.live_products(), |p| p.id, first, after);
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
            "ProductVariants" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let all = s.live_products().flat_map(|p| p.variants.iter());
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
                let (page, more) = paginate(&s.collections, |c| c.id, first, after);
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
                match id.and_then(|id| s.collections.iter().find(|c| c.id == id)) {
                    Some(c) => {
                        let (conn, k) = collection_products_conn(s, c, first, after);
                        Outcome::Data(json!({"collection": {"products": conn}}), 1 + k)
                    }
                    None => Outcome::Data(json!({"collection": null}), 1),
                }
            }
            "CodeDiscounts" => {
                let (first, after) = (first_arg(vars)?, after_arg(vars)?);
                let (page, more) = paginate(&s.discounts, |d| d.id, first, after);
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
                match id.and_then(|id| s.discounts.iter().find(|d| d.id == id)) {
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
}
