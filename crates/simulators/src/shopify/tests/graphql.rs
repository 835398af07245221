use serde_json::{json, Value};

use super::{connect, gql, gql_ok, walk, SHOP};
use crate::shopify::{
    FakeConfig, FakeShopify, BIG_COLLECTION_HANDLE, BIG_COLLECTION_SIZE, EXACT_COLLECTION_HANDLE,
    MANY_CODES_DISCOUNT, MANY_LOCATIONS_PRODUCT, MANY_LOCATIONS_VARIANT, RICH_METAFIELDS_PRODUCT,
};

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
