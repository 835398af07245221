//! An in-process fake of the Shopify APIs the service calls, on a loopback port.
//!
//! Routes (the service reaches a shop at `SHOPIFY_SHOP_URL_TEMPLATE` =
//! `http://127.0.0.1:PORT/{shop}`):
//! - `GET /{shop}/admin/oauth/authorize`: the install screen, back to the app with a signed
//!   `hmac`.
//! - `POST /{shop}/admin/oauth/access_token`: authorization-code exchange and refresh-token grant.
//! - `POST /{shop}/admin/api/{version}/graphql.json`: the GraphQL Admin API, dispatched on
//!   `operationName` (the documents of salesbot-sync's `src/shopify/queries.rs`), answering
//!   with exactly the fields those documents select, `edges{cursor,node}` + `pageInfo`
//!   connections, GIDs and `extensions.cost`. Bulk queries (`bulkOperationRunQuery`,
//!   `bulkOperation`) run in a background task for `set_bulk_delay` and, when they finish, post
//!   `bulk_operations/finish` to the shop's `BULK_OPERATIONS_FINISH` subscriptions. As on
//!   Shopify, `objectCount` is an `UnsignedInt64` (a JSON string), and `url` stays null when an
//!   operation has no objects.
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
//!
//! Layout: this module holds the handle ([`FakeShopify`]), its configuration and the shared
//! state; `catalogue` and `generate` the shop data, `render` its GraphQL shapes, `graphql` the
//! operations (a table: name, requested cost, handler) and `args` their arguments, `throttle`
//! the cost bucket and failure injection, `bulk` bulk operations, `oauth` the install screen and
//! token endpoint, `webhooks` subscriptions and deliveries.

mod args;
mod bulk;
mod catalogue;
mod generate;
mod graphql;
mod oauth;
mod render;
mod throttle;
mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use axum::extract::State as AxState;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::http::{self, Listener, Server};
use bulk::{BulkFile, BulkOp};
use catalogue::ShopData;
use generate::gid;

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

/// The largest `first` Shopify accepts on a connection.
pub const MAX_PAGE: usize = 250;
/// The cost bucket (points) and how fast it refills (points per second).
pub const BUCKET_MAX: f64 = 2000.0;
pub const RESTORE_RATE: f64 = 1000.0;
/// `errors` of the 401 answered for an unknown or revoked access token.
pub const INVALID_TOKEN_BODY: &str =
    "[API] Invalid API key or access token (unrecognized login or wrong password)";

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
    state: Shared,
    server: Server,
}

type Shared = Arc<Mutex<State>>;

impl FakeShopify {
    pub async fn start(config: FakeConfig) -> FakeShopify {
        let listener = Listener::bind().await;
        let base_url = listener.base_url();
        let state = Arc::new_cyclic(|me: &Weak<Mutex<State>>| {
            let mut st = State::new(config);
            st.base_url = base_url;
            st.me = me.clone();
            Mutex::new(st)
        });
        let server = listener.serve(router(state.clone()));
        FakeShopify { state, server }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        http::lock(&self.state)
    }

    pub fn config(&self) -> FakeConfig {
        self.st().config.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.server.base_url()
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
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct State {
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
    /// `hold_bulk`: the how-many-th operation created from now is held (0: none).
    bulk_hold_in: usize,
    bulk_seq: u64,
    bulk_ops: HashMap<u64, BulkOp>,
    /// (shop, file name) → result file.
    bulk_files: HashMap<(String, String), BulkFile>,
    bulk_downloads: usize,
    bulk_started: usize,
    finish_webhooks_sent: usize,
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
            bulk_hold_in: 0,
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
}

/// The fake's routes (see the module documentation).
fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/{shop}/admin/oauth/access_token",
            post(oauth::token_handler),
        )
        .route(
            "/{shop}/admin/oauth/authorize",
            get(oauth::authorize_handler),
        )
        .route(
            "/{shop}/admin/api/{version}/graphql.json",
            post(graphql::graphql_handler),
        )
        .route("/bulk/{shop}/{file}", get(bulk::bulk_file_handler))
        .fallback(fallback_handler)
        .with_state(state)
}

/// Records what no route matched (`unexpected_requests`), so tests see calls the service
/// should not make.
async fn fallback_handler(AxState(state): AxState<Shared>, method: Method, uri: Uri) -> Response {
    http::lock(&state)
        .unexpected
        .push(format!("{method} {uri}"));
    json_response(StatusCode::NOT_FOUND, json!({"errors": "Not Found"}))
}

/// Shopify's JSON answers.
fn json_response(status: StatusCode, body: Value) -> Response {
    http::json(status, "application/json; charset=utf-8", &body)
}

/// Timestamps of events that happen now (bulk operations, webhook deliveries).
fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}
