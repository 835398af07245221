//! Incremental Shopify sync: per-entity updates from webhooks, reconciliation, bulk full syncs.

use std::time::Duration;

use salesbot_simulators::shopify::FakeConfig;
use salesbot_sync::ids::{MerchantId, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::platforms::shopify::signature::sign_webhook;
use serde_json::Value;

use crate::helpers::*;
use crate::shopify::{connect, Env};

const SHOP: &str = "acme.myshopify.com";

/// A connected shop whose initial sync is done; counters zeroed.
async fn connected(config: FakeConfig, extra: &[(&str, &str)]) -> (Env, MerchantId) {
    let (env, uuid) = connected_keeping_counts(config, extra).await;
    env.fake.reset_counters();
    (env, uuid)
}

async fn connected_keeping_counts(config: FakeConfig, extra: &[(&str, &str)]) -> (Env, MerchantId) {
    let env = crate::shopify::env_with_vars(config, &vars(extra)).await;
    let (status, body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upload_status"]["status"], "success", "{body}");
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    (env, uuid)
}

fn shop() -> ShopDomain {
    ShopDomain::parse(SHOP).unwrap()
}

fn bytes_of(env: &Env, key: &keys::ObjectKey) -> Vec<u8> {
    std::fs::read(env.s3.object_path(key.as_str())).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn products_of(env: &Env, uuid: &MerchantId) -> Value {
    serde_json::from_slice(&bytes_of(env, &keys::shop_products(uuid, &shop()))).unwrap()
}

fn metadata_of(env: &Env, uuid: &MerchantId) -> Value {
    serde_json::from_slice(&bytes_of(env, &keys::shop_metadata(uuid, &shop()))).unwrap()
}

fn product_by_id<'a>(products: &'a Value, gid: &str) -> Option<&'a Value> {
    products["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == gid)
}

async fn post_webhook(env: &Env, topic: &str, event_id: &str, body: &Value) -> u16 {
    let body = serde_json::to_vec(body).unwrap();
    env.app
        .client
        .post(env.app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", SHOP)
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(env.fake.config().api_secret.as_bytes(), &body),
        )
        .header("X-Shopify-Event-Id", event_id)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every GraphQL operation the fake answered since the last reset, with counts, by name.
fn calls(env: &Env) -> Vec<(&'static str, usize)> {
    [
        "Shop",
        "ProductsCount",
        "Products",
        "ProductVariants",
        "ProductIds",
        "Product",
        "ProductMetafields",
        "InventoryItem",
        "InventoryLevels",
        "Collections",
        "Collection",
        "CollectionProducts",
        "CodeDiscounts",
        "CodeDiscount",
        "DiscountCodes",
        "BulkOperationRunQuery",
        "BulkOperation",
    ]
    .into_iter()
    .map(|op| (op, env.fake.requests(op)))
    .filter(|(_, n)| *n > 0)
    .collect::<std::collections::BTreeMap<_, _>>()
    .into_iter()
    .collect()
}

/// Whether the products object lists `variant` of product `gid` at `price`.
fn has_price(env: &Env, uuid: &MerchantId, gid: &Value, variant: &Value, price: &str) -> bool {
    let p = products_of(env, uuid);
    product_by_id(&p, gid.as_str().unwrap()).unwrap()["variants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["id"] == *variant && v["price"] == price)
}

#[tokio::test]
async fn a_change_whose_object_write_failed_reaches_the_object_on_the_retry() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let gid = Value::from(env.fake.product_id(SHOP, 3));
    let variant = Value::from(env.fake.variant_id(SHOP, 3, 0));
    env.fake.set_variant_price(SHOP, 3, 0, "77.70");
    // The object store is down when the change is applied: the catalogue has the new price,
    // the object cannot be written.
    env.s3.set_down(true);
    let body = env.fake.product_webhook_body(SHOP, 3);
    assert_eq!(
        post_webhook(&env, "products/update", "outage-1", &body).await,
        200
    );
    eventually("the first run failed on the store", || async {
        let rows = env.app.state.events.rows().await.unwrap();
        rows.iter()
            .any(|r| r.kind == "shopify" && r.attempts >= 1 && r.last_error.is_some())
    })
    .await;
    env.s3.set_down(false);
    // The retry must not find "nothing to do": the acknowledged change reaches the object.
    eventually("the new price in the object", || async {
        has_price(&env, &uuid, &gid, &variant, "77.70")
    })
    .await;
    drained(&env.app).await;
    assert!(has_price(&env, &uuid, &gid, &variant, "77.70"));
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_price_change_is_one_product_query_and_one_write() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let puts = env.s3.puts();
    let gid = env.fake.product_id(SHOP, 3);
    let variant = env.fake.variant_id(SHOP, 3, 0);
    env.fake.set_variant_price(SHOP, 3, 0, "123.45");
    let body = env.fake.product_webhook_body(SHOP, 3);
    assert_eq!(
        post_webhook(&env, "products/update", "price-1", &body).await,
        200
    );

    eventually_within(
        Duration::from_secs(10),
        "the new price in the object",
        || async {
            let p = products_of(&env, &uuid);
            product_by_id(&p, &gid).unwrap()["variants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["id"] == variant && v["price"] == "123.45")
        },
    )
    .await;
    drained(&env.app).await;
    assert_eq!(
        calls(&env),
        vec![("Product", 1)],
        "one product query, nothing else"
    );
    assert_eq!(env.s3.puts(), puts + 1, "shop_products.json only");
    assert!(env.fake.unexpected_requests().is_empty());
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn an_inventory_update_is_one_lookup_and_an_unknown_item_finds_its_product() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let gid = env.fake.product_id(SHOP, 7);
    env.fake.set_available(SHOP, 7, 0, 1, 42);
    let body = env.fake.inventory_level_webhook_body(SHOP, 7, 0, 1);
    assert_eq!(
        post_webhook(&env, "inventory_levels/update", "inv-1", &body).await,
        200
    );
    let levels = env.fake.variant_levels(SHOP, 7, 0);
    eventually_within(
        Duration::from_secs(10),
        "the new level in the object",
        || async {
            let p = products_of(&env, &uuid);
            let v = &product_by_id(&p, &gid).unwrap()["variants"][0];
            v.to_string().contains("42")
        },
    )
    .await;
    drained(&env.app).await;
    assert_eq!(calls(&env), vec![("InventoryItem", 1)]);
    // The variant's levels and totals are those Shopify has now.
    let p = products_of(&env, &uuid);
    let v = &product_by_id(&p, &gid).unwrap()["variants"][0];
    let stored: Vec<i64> = v["inventory_levels"]
        .as_array()
        .or_else(|| v["inventoryLevels"].as_array())
        .expect("levels in the variant")
        .iter()
        .map(|l| {
            l.pointer("/available")
                .or_else(|| l.pointer("/quantities/0/quantity"))
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN)
        })
        .collect();
    let expected: Vec<i64> = levels.iter().map(|(_, q)| *q).collect();
    assert_eq!(stored, expected, "{v}");

    // An item the store has never seen (a product created while the webhook was lost): the
    // item's lookup names the product, which is then read once.
    let idx = env.fake.add_product(SHOP);
    let new_gid = env.fake.product_id(SHOP, idx);
    env.fake.reset_counters();
    let body = env.fake.inventory_level_webhook_body(SHOP, idx, 0, 0);
    assert_eq!(
        post_webhook(&env, "inventory_levels/update", "inv-2", &body).await,
        200
    );
    eventually("the unknown item's product in the object", || async {
        product_by_id(&products_of(&env, &uuid), &new_gid).is_some()
    })
    .await;
    drained(&env.app).await;
    assert_eq!(calls(&env), vec![("InventoryItem", 1), ("Product", 1)]);
    env.app.stop().await.unwrap();
}

/// The available quantities of one variant's levels in the products object.
fn stored_levels(env: &Env, uuid: &MerchantId, product: usize, variant: usize) -> Vec<i64> {
    let p = products_of(env, uuid);
    let gid = env.fake.product_id(SHOP, product);
    let v = &product_by_id(&p, &gid).unwrap()["variants"][variant];
    v["inventory_levels"]
        .as_array()
        .or_else(|| v["inventoryLevels"].as_array())
        .expect("levels in the variant")
        .iter()
        .map(|l| {
            l.pointer("/available")
                .or_else(|| l.pointer("/quantities/0/quantity"))
                .and_then(Value::as_i64)
                .unwrap_or(i64::MIN)
        })
        .collect()
}

/// A stock change delivered while a full sync runs, after the sync read the levels (the bulk
/// operation's snapshot) and before it stored them, reaches the object: the sync stamps the
/// items with the time of its read, so the delivery counts as newer and is applied after it.
#[tokio::test]
async fn a_stock_change_delivered_during_a_full_sync_reaches_the_object() {
    use salesbot_sync::jobs::Job;
    use salesbot_sync::shopify::jobs::{ShopifySync, SyncReason};
    let (env, uuid) = connected(FakeConfig::default(), &[("SHOPIFY_BULK_THRESHOLD", "0")]).await;
    // Products, then variants with their levels: the second operation is held once it has
    // taken its snapshot.
    env.fake.hold_bulk(2);
    let full = ShopifySync {
        shop: shop(),
        reason: SyncReason::Initial { installed_at: 1 },
    };
    env.app.state.events.enqueue(full.to_event()).await.unwrap();
    eventually("the variants' snapshot is taken", || async {
        env.fake.bulk_operations_started() == 2
    })
    .await;
    env.fake.set_available(SHOP, 7, 0, 1, 4242);
    let body = env.fake.inventory_level_webhook_body(SHOP, 7, 0, 1);
    assert_eq!(
        post_webhook(&env, "inventory_levels/update", "during-sync", &body).await,
        200
    );
    env.fake.release_bulk();
    drained(&env.app).await;
    let expected: Vec<i64> = env
        .fake
        .variant_levels(SHOP, 7, 0)
        .iter()
        .map(|(_, q)| *q)
        .collect();
    assert_eq!(expected[1], 4242);
    assert_eq!(stored_levels(&env, &uuid, 7, 0), expected);
    assert_eq!(env.fake.bulk_operations_started(), 2, "one full sync ran");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_deleted_product_leaves_the_object_after_one_lookup() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let before = products_of(&env, &uuid)["products"]
        .as_array()
        .unwrap()
        .len();
    let gid = env.fake.product_id(SHOP, 12);
    let id: i64 = gid.rsplit('/').next().unwrap().parse().unwrap();
    env.fake.remove_product(SHOP, 12);
    let body = serde_json::json!({"id": id});
    assert_eq!(
        post_webhook(&env, "products/delete", "del-1", &body).await,
        200
    );
    eventually("the product gone from the object", || async {
        product_by_id(&products_of(&env, &uuid), &gid).is_none()
    })
    .await;
    drained(&env.app).await;
    assert_eq!(
        products_of(&env, &uuid)["products"]
            .as_array()
            .unwrap()
            .len(),
        before - 1
    );
    // One lookup confirms the deletion (Shopify answers `product: null`); the collections
    // that listed it are read again (their handles).
    assert_eq!(env.fake.requests("Product"), 1);
    assert!(
        calls(&env)
            .iter()
            .all(|(op, _)| *op == "Collection" || *op == "Product"),
        "{:?}",
        calls(&env)
    );
    // A collection listing the product no longer names it.
    let handle = env.fake.product_handle(SHOP, 12);
    let meta = metadata_of(&env, &uuid);
    assert!(
        !meta.to_string().contains(&format!("\"{handle}\"")),
        "{handle} still in shop_metadata.json"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_burst_of_500_updates_to_10_products_is_10_queries_and_at_most_2_writes() {
    // Every delivery arrives before the first read (see the one-product burst test).
    let debounce = crate::shopify::BURST_DEBOUNCE_MS.to_string();
    let (env, uuid) = connected(
        FakeConfig::default(),
        &[("SHOPIFY_WEBHOOK_DEBOUNCE_MS", &debounce)],
    )
    .await;
    let puts = env.s3.puts();
    let products: Vec<usize> = (20..30).collect();
    for &p in &products {
        env.fake.set_product_title(SHOP, p, &format!("Burst {p}"));
    }
    let bodies: Vec<Value> = products
        .iter()
        .map(|&p| env.fake.product_webhook_body(SHOP, p))
        .collect();
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let env = std::sync::Arc::new(env);
    for i in 0..500 {
        // Each a change of its own (Shopify's bodies differ by `updated_at`).
        let mut body = bodies[i % 10].clone();
        body["updated_at"] = format!("2026-12-07T10:{:02}:{:02}Z", i / 60, i % 60).into();
        let env = env.clone();
        set.spawn(
            async move { post_webhook(&env, "products/update", &format!("b-{i}"), &body).await },
        );
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    let burst = started.elapsed();
    assert!(
        burst.as_millis() < crate::shopify::BURST_DEBOUNCE_MS as u128,
        "the burst took {burst:?}"
    );
    drained(&env.app).await;
    let p = products_of(&env, &uuid);
    for &i in &products {
        let gid = env.fake.product_id(SHOP, i);
        assert_eq!(
            product_by_id(&p, &gid).unwrap()["title"],
            format!("Burst {i}")
        );
    }
    assert_eq!(calls(&env), vec![("Product", 10)]);
    let writes = env.s3.puts() - puts;
    assert!((1..=2).contains(&writes), "{writes} object writes");
    let env = std::sync::Arc::try_unwrap(env).ok().unwrap();
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn collection_and_discount_webhooks_fetch_that_one_entity() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    env.fake.set_collection_title(SHOP, 4, "Winter picks");
    let body = env.fake.collection_webhook_body(SHOP, 4);
    assert_eq!(
        post_webhook(&env, "collections/update", "c-1", &body).await,
        200
    );
    env.fake.set_discount_title(SHOP, 2, "Half off");
    let body = env.fake.discount_webhook_body(SHOP, 2);
    assert_eq!(
        post_webhook(&env, "discounts/update", "d-1", &body).await,
        200
    );
    eventually("both in shop_metadata.json", || async {
        let m = metadata_of(&env, &uuid).to_string();
        m.contains("Winter picks") && m.contains("Half off")
    })
    .await;
    drained(&env.app).await;
    assert_eq!(calls(&env), vec![("CodeDiscount", 1), ("Collection", 1)]);

    env.fake.reset_counters();
    env.fake.remove_collection(SHOP, 4);
    let id: i64 = env
        .fake
        .collection_id(SHOP, 4)
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let body = serde_json::json!({"id": id});
    assert_eq!(
        post_webhook(&env, "collections/delete", "c-2", &body).await,
        200
    );
    eventually("the collection gone", || async {
        !metadata_of(&env, &uuid)
            .to_string()
            .contains("Winter picks")
    })
    .await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn reconciliation_picks_up_changes_whose_webhooks_never_came() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    // Three changes Shopify never told us about: a price, a new product, a deletion.
    env.fake.set_variant_price(SHOP, 5, 0, "77.70");
    let added = env.fake.add_product(SHOP);
    let gone = env.fake.product_id(SHOP, 9);
    env.fake.remove_product(SHOP, 9);
    env.fake.set_discount_title(SHOP, 1, "Quietly renamed");

    let report = poll_everything(&env.app).await;
    assert_eq!((report.shops.ok, report.shops.failed), (1, 0));
    let p = products_of(&env, &uuid);
    let five = product_by_id(&p, &env.fake.product_id(SHOP, 5)).unwrap();
    assert_eq!(five["variants"][0]["price"], "77.70");
    assert!(product_by_id(&p, &env.fake.product_id(SHOP, added)).is_some());
    assert!(product_by_id(&p, &gone).is_none());
    assert!(metadata_of(&env, &uuid)
        .to_string()
        .contains("Quietly renamed"));
    // A window query and an ids listing, not a full read: the catalogue has 600 products in
    // 12 pages of 50 (a full read asks ProductsCount and reads every page).
    assert_eq!(env.fake.requests("ProductsCount"), 0, "{:?}", calls(&env));
    assert!(env.fake.requests("Products") <= 2, "{:?}", calls(&env));
    let window = env.fake.last_request("Products").unwrap();
    assert!(
        window["variables"]["query"]
            .as_str()
            .unwrap_or("")
            .starts_with("updated_at:>="),
        "{window}"
    );
    env.app.stop().await.unwrap();
}

/// The objects of one shop synced through the paged path and through the bulk path.
async fn objects_via(config: FakeConfig, threshold: &str) -> (Vec<u8>, Vec<u8>, Env) {
    let (env, uuid) =
        connected_keeping_counts(config, &[("SHOPIFY_BULK_THRESHOLD", threshold)]).await;
    let products = bytes_of(&env, &keys::shop_products(&uuid, &shop()));
    let metadata = bytes_of(&env, &keys::shop_metadata(&uuid, &shop()));
    (products, metadata, env)
}

#[tokio::test]
async fn a_bulk_full_sync_writes_the_same_bytes_as_the_paged_one() {
    let config = FakeConfig {
        products: 300,
        many_variants: Some((4, 300)),
        ..FakeConfig::default()
    };
    let (paged_p, paged_m, paged) = objects_via(config.clone(), "100000").await;
    let (bulk_p, bulk_m, bulk) = objects_via(config, "0").await;
    assert_eq!(paged.fake.bulk_operations_started(), 0);
    assert!(bulk.fake.bulk_operations_started() >= 1);
    assert_eq!(
        String::from_utf8_lossy(&paged_p),
        String::from_utf8_lossy(&bulk_p),
        "shop_products.json"
    );
    assert_eq!(paged_m, bulk_m, "shop_metadata.json");

    // The 300-variant product is complete, every variant with both locations' levels.
    let p: Value = serde_json::from_slice(&bulk_p).unwrap();
    let many = product_by_id(&p, &bulk.fake.product_id(SHOP, 4)).unwrap();
    let variants = many["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 300);
    assert_eq!(bulk.fake.variant_count(SHOP, 4), 300);
    assert_eq!(p["products"].as_array().unwrap().len(), 300);
    paged.app.stop().await.unwrap();
    bulk.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_300_variant_product_updated_by_webhook_is_complete() {
    let config = FakeConfig {
        products: 20,
        many_variants: Some((3, 300)),
        ..FakeConfig::default()
    };
    let (env, uuid) = connected(config, &[]).await;
    env.fake.set_variant_price(SHOP, 3, 299, "3.99");
    let body = env.fake.product_webhook_body(SHOP, 3);
    assert_eq!(
        post_webhook(&env, "products/update", "many-1", &body).await,
        200
    );
    let last = env.fake.variant_id(SHOP, 3, 299);
    eventually("the last variant's price", || async {
        let p = products_of(&env, &uuid);
        product_by_id(&p, &env.fake.product_id(SHOP, 3)).unwrap()["variants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["id"] == last && v["price"] == "3.99")
    })
    .await;
    drained(&env.app).await;
    let p = products_of(&env, &uuid);
    let variants = product_by_id(&p, &env.fake.product_id(SHOP, 3)).unwrap()["variants"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(variants, 300);
    // Pages of 40 variants: ceil(300 / 40) = 8 product queries.
    assert_eq!(env.fake.requests("Product"), 8, "{:?}", calls(&env));
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn bulk_failures_limits_and_expired_links_still_end_complete() {
    let config = FakeConfig {
        products: 120,
        ..FakeConfig::default()
    };
    // 1. A bulk operation that fails: the paged path reads the catalogue instead.
    let fake = salesbot_simulators::shopify::FakeShopify::start(config.clone()).await;
    fake.fail_next_bulk("INTERNAL_SERVER_ERROR");
    let env = env_on(fake, &[("SHOPIFY_BULK_THRESHOLD", "0")]).await;
    let (status, body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    assert_eq!(
        products_of(&env, &uuid)["products"]
            .as_array()
            .unwrap()
            .len(),
        120
    );
    assert!(env.fake.requests("Products") >= 1, "paged fallback");
    let reference = bytes_of(&env, &keys::shop_products(&uuid, &shop()));

    // 2. LIMIT_REACHED at the next full sync: the job retries later and then completes.
    env.fake.bulk_limit_reached_next(1);
    env.fake.reset_counters();
    let out = salesbot_sync::shopify::sync::full(&env.app.state, &shop()).await;
    assert!(out.is_err(), "a refused bulk start is retried by the queue");
    let out = salesbot_sync::shopify::sync::full(&env.app.state, &shop())
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(out.shop_products).unwrap(),
        "unchanged"
    );
    assert_eq!(
        env.fake.bulk_operations_started(),
        2,
        "products and variants"
    );

    // 3. A result link that has expired when it is read: the operation runs once more.
    env.fake.reset_counters();
    env.fake.expire_next_bulk_files(1);
    salesbot_sync::shopify::sync::full(&env.app.state, &shop())
        .await
        .unwrap();
    assert_eq!(
        env.fake.bulk_operations_started(),
        3,
        "products twice, variants once"
    );
    assert_eq!(
        bytes_of(&env, &keys::shop_products(&uuid, &shop())),
        reference
    );
    env.app.stop().await.unwrap();
}

/// An app against an already started fake.
async fn env_on(fake: salesbot_simulators::shopify::FakeShopify, extra: &[(&str, &str)]) -> Env {
    crate::shopify::env_on_fake(fake, &vars(extra)).await
}

#[tokio::test]
async fn a_bulk_edit_of_many_products_is_read_with_a_window_search() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let edited: Vec<usize> = (100..160).collect();
    for &p in &edited {
        env.fake
            .set_product_title(SHOP, p, &format!("Bulk edit {p}"));
    }
    let bodies: Vec<Value> = edited
        .iter()
        .map(|&p| env.fake.product_webhook_body(SHOP, p))
        .collect();
    let env = std::sync::Arc::new(env);
    let mut set = tokio::task::JoinSet::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let env = env.clone();
        set.spawn(
            async move { post_webhook(&env, "products/update", &format!("e-{i}"), &body).await },
        );
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    drained(&env.app).await;
    let p = products_of(&env, &uuid);
    for &i in &edited {
        let gid = env.fake.product_id(SHOP, i);
        assert_eq!(
            product_by_id(&p, &gid).unwrap()["title"],
            format!("Bulk edit {i}")
        );
    }
    // One search (pages of 50) instead of 60 product queries; products a batch missed (the
    // deliveries may arrive in more than one batch) are read on their own.
    assert!(env.fake.requests("Products") >= 1, "{:?}", calls(&env));
    assert!(env.fake.requests("Product") < 30, "{:?}", calls(&env));
    let search = env.fake.last_request("Products").unwrap();
    assert!(
        search["variables"]["query"]
            .as_str()
            .unwrap_or("")
            .starts_with("updated_at:>="),
        "{search}"
    );
    let env = std::sync::Arc::try_unwrap(env).ok().unwrap();
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn an_update_body_relabelled_as_a_delete_removes_nothing() {
    let (env, uuid) = connected(FakeConfig::default(), &[]).await;
    let gid = env.fake.product_id(SHOP, 12);
    let collection = env.fake.collection_id(SHOP, 4);
    let before = products_of(&env, &uuid);
    let meta_before = metadata_of(&env, &uuid);
    // Correctly signed bodies Shopify sent for updates, re-sent under the delete topics (the
    // topic header is not signed).
    let body = env.fake.product_webhook_body(SHOP, 12);
    assert_eq!(
        post_webhook(&env, "products/delete", "relabel-p", &body).await,
        200
    );
    let body = env.fake.collection_webhook_body(SHOP, 4);
    assert_eq!(
        post_webhook(&env, "collections/delete", "relabel-c", &body).await,
        200
    );
    drained(&env.app).await;
    assert!(product_by_id(&products_of(&env, &uuid), &gid).is_some());
    assert_eq!(products_of(&env, &uuid), before);
    assert!(metadata_of(&env, &uuid).to_string().contains(&collection));
    assert_eq!(metadata_of(&env, &uuid), meta_before);
    // Each was looked up once, and Shopify still has it.
    assert_eq!(
        (
            env.fake.requests("Product"),
            env.fake.requests("Collection")
        ),
        (1, 1)
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_catalogue_is_moved_aside_and_rebuilt_from_shopify_at_start_up() {
    // The catalogue file is what this is about; on PostgreSQL it is a set of tables.
    let (env, uuid) = connected(FakeConfig::default(), &[(SQLITE_ONLY, "1")]).await;
    let Env { mut app, fake, s3 } = env;
    let dir = app.dir.take().unwrap();
    app.stop().await.unwrap();
    // Garbage in the file. Its write-ahead log goes, as a process that stops closes it: the
    // stopped app's connections may outlive it in this test process and keep theirs.
    std::fs::write(dir.path().join("catalog.db"), vec![0xa5; 64 * 1024]).unwrap();
    for wal in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(wal));
    }
    // The products object goes too: the rebuilt catalogue must write it again.
    let products = s3.object_path(keys::shop_products(&uuid, &shop()).as_str());
    std::fs::remove_file(&products).unwrap();

    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(vars(&[(SQLITE_ONLY, "1")]));
    let app = spawn_app_at(dir.path(), &extra).await;
    let aside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("catalog.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside: {aside:?}");
    let moved = std::fs::read(dir.path().join(&aside[0])).unwrap();
    assert!(moved.iter().all(|b| *b == 0xa5), "the garbage itself");

    drained(&app).await;
    let state = app.state.catalog.state(&shop()).await.unwrap();
    assert!(state.generation > 0, "the shop was read in full again");
    let rebuilt: Value = serde_json::from_slice(&std::fs::read(&products).unwrap()).unwrap();
    assert_eq!(
        rebuilt["products"].as_array().unwrap().len(),
        fake.config().products,
        "every product is in the object again"
    );
    app.stop().await.unwrap();
}
