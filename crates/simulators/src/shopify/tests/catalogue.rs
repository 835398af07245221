use std::collections::HashSet;

use serde_json::{json, Value};

use super::{connect, gql_errors, gql_ok, ids_of, walk, SHOP};
use crate::shopify::{
    FakeConfig, FakeShopify, BIG_COLLECTION_HANDLE, MANY_CODES_DISCOUNT, MANY_LOCATIONS_PRODUCT,
    MANY_LOCATIONS_VARIANT,
};

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
