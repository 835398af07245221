//! GraphQL Admin API documents. Every request names its operation (`operationName`), and every
//! connection is read as `edges { cursor node }` + `pageInfo` and paginated to the end.
//!
//! Page sizes keep each query's requested cost under Shopify's 1,000-point single-query limit
//! (a connection costs 2 + first × the cost of one node; objects cost 1, scalars 0): nested
//! connections are fetched shallowly and followed up one parent at a time when they have more.

pub const PRODUCTS_PAGE: u32 = 50;
pub const VARIANTS_PAGE: u32 = 40;
pub const COLLECTIONS_PAGE: u32 = 10;
pub const DISCOUNTS_PAGE: u32 = 25;
/// Page size of the one-parent follow-up queries (cost ≈ 2 + 250 × a few points).
pub const FOLLOW_UP_PAGE: u32 = 100;
pub const WEBHOOKS_PAGE: u32 = 100;

/// Only the shop's id (for lifecycle webhooks of shops connected before ids were recorded).
pub const SHOP_ID: &str = r#"query ShopId {
  shop {
    id
  }
}"#;

pub const SHOP: &str = r#"query Shop {
  shop {
    id
    name
    description
    myshopifyDomain
    url
    primaryDomain { url host }
    currencyCode
    enabledPresentmentCurrencies
    ianaTimezone
    contactEmail
    shipsToCountries
  }
}"#;

/// Every product (no `$query`), or those a search selects (`updated_at:>='…'` for
/// reconciliation and bulk edits).
pub const PRODUCTS: &str = r#"query Products($first: Int!, $after: String, $query: String) {
  products(first: $first, after: $after, query: $query, sortKey: ID) {
    edges {
      cursor
      node {
        id
        title
        handle
        description
        productType
        vendor
        tags
        status
        onlineStoreUrl
        totalInventory
        createdAt
        updatedAt
        options { name values }
        featuredImage { url altText }
        priceRangeV2 {
          minVariantPrice { amount currencyCode }
          maxVariantPrice { amount currencyCode }
        }
        metafields(namespace: "custom", first: 5) {
          edges { cursor node { namespace key type value } }
          pageInfo { hasNextPage endCursor }
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"#;

pub const PRODUCT_METAFIELDS: &str = r#"query ProductMetafields($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    metafields(namespace: "custom", first: $first, after: $after) {
      edges { cursor node { namespace key type value } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

/// Every variant (no `$query`), or those of some products (`product_ids:1,2,3`).
pub const PRODUCT_VARIANTS: &str = r#"query ProductVariants($first: Int!, $after: String, $query: String) {
  productVariants(first: $first, after: $after, query: $query, sortKey: ID) {
    edges {
      cursor
      node {
        id
        title
        sku
        price
        compareAtPrice
        availableForSale
        inventoryQuantity
        selectedOptions { name value }
        product { id }
        inventoryItem {
          id
          inventoryLevels(first: 5) {
            edges { cursor node { location { id name } quantities(names: ["available"]) { name quantity } } }
            pageInfo { hasNextPage endCursor }
          }
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"#;

pub const INVENTORY_LEVELS: &str = r#"query InventoryLevels($id: ID!, $first: Int!, $after: String) {
  inventoryItem(id: $id) {
    inventoryLevels(first: $first, after: $after) {
      edges { cursor node { location { id name } quantities(names: ["available"]) { name quantity } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

pub const COLLECTIONS: &str = r#"query Collections($first: Int!, $after: String) {
  collections(first: $first, after: $after, sortKey: ID) {
    edges {
      cursor
      node {
        id
        title
        handle
        description
        updatedAt
        products(first: 50) {
          edges { cursor node { handle } }
          pageInfo { hasNextPage endCursor }
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"#;

pub const COLLECTION_PRODUCTS: &str = r#"query CollectionProducts($id: ID!, $first: Int!, $after: String) {
  collection(id: $id) {
    products(first: $first, after: $after) {
      edges { cursor node { handle } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

pub const CODE_DISCOUNTS: &str = r#"query CodeDiscounts($first: Int!, $after: String) {
  codeDiscountNodes(first: $first, after: $after, sortKey: ID) {
    edges {
      cursor
      node {
        id
        codeDiscount {
          __typename
          ... on DiscountCodeBasic { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
          ... on DiscountCodeBxgy { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
          ... on DiscountCodeFreeShipping { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
          ... on DiscountCodeApp { title status startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
        }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}"#;

pub const DISCOUNT_CODES: &str = r#"query DiscountCodes($id: ID!, $first: Int!, $after: String) {
  codeDiscountNode(id: $id) {
    codeDiscount {
      ... on DiscountCodeBasic { codes(first: $first, after: $after) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeBxgy { codes(first: $first, after: $after) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeFreeShipping { codes(first: $first, after: $after) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeApp { codes(first: $first, after: $after) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
    }
  }
}"#;

/// Page size of the ids-only product listing (cost 2 + 250).
pub const PRODUCT_IDS_PAGE: u32 = 250;
/// Variants of one product per page of `PRODUCT` (cost ≈ 13 + 2 + 40 × 21 < 1,000).
pub const PRODUCT_VARIANTS_PAGE: u32 = 40;

pub const PRODUCTS_COUNT: &str = r#"query ProductsCount {
  productsCount(limit: null) { count precision }
}"#;

/// Ids of every product, to find deletions cheaply.
pub const PRODUCT_IDS: &str = r#"query ProductIds($first: Int!, $after: String) {
  products(first: $first, after: $after, sortKey: ID) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

/// One product with the fields of `PRODUCTS`, and its variants with the fields of
/// `PRODUCT_VARIANTS` (without `product`), paged by `$after` (products may have 2,048).
pub const PRODUCT: &str = r#"query Product($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    id
    title
    handle
    description
    productType
    vendor
    tags
    status
    onlineStoreUrl
    totalInventory
    createdAt
    updatedAt
    options { name values }
    featuredImage { url altText }
    priceRangeV2 {
      minVariantPrice { amount currencyCode }
      maxVariantPrice { amount currencyCode }
    }
    metafields(namespace: "custom", first: 5) {
      edges { cursor node { namespace key type value } }
      pageInfo { hasNextPage endCursor }
    }
    variants(first: $first, after: $after, sortKey: ID) {
      edges {
        cursor
        node {
          id
          title
          sku
          price
          compareAtPrice
          availableForSale
          inventoryQuantity
          selectedOptions { name value }
          inventoryItem {
            id
            inventoryLevels(first: 5) {
              edges { cursor node { location { id name } quantities(names: ["available"]) { name quantity } } }
              pageInfo { hasNextPage endCursor }
            }
          }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

/// An inventory item: its levels and what they change on its variant and product.
pub const INVENTORY_ITEM: &str = r#"query InventoryItem($id: ID!) {
  inventoryItem(id: $id) {
    id
    variant {
      id
      inventoryQuantity
      availableForSale
      product { id totalInventory }
    }
    inventoryLevels(first: 5) {
      edges { cursor node { location { id name } quantities(names: ["available"]) { name quantity } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

/// One collection with the fields of `COLLECTIONS`.
pub const COLLECTION: &str = r#"query Collection($id: ID!) {
  collection(id: $id) {
    id
    title
    handle
    description
    updatedAt
    products(first: 50) {
      edges { cursor node { handle } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

/// One code discount with the fields of `CODE_DISCOUNTS`.
pub const CODE_DISCOUNT: &str = r#"query CodeDiscount($id: ID!) {
  codeDiscountNode(id: $id) {
    id
    codeDiscount {
      __typename
      ... on DiscountCodeBasic { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeBxgy { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeFreeShipping { title status summary startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
      ... on DiscountCodeApp { title status startsAt endsAt usageLimit appliesOncePerCustomer codes(first: 10) { edges { cursor node { code } } pageInfo { hasNextPage endCursor } } }
    }
  }
}"#;

/// Starts a bulk query (the documents below); children are not grouped under their parents.
pub const BULK_RUN: &str = r#"mutation BulkOperationRunQuery($query: String!) {
  bulkOperationRunQuery(query: $query, groupObjects: false) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}"#;

pub const BULK_STATUS: &str = r#"query BulkOperation($id: ID!) {
  bulkOperation(id: $id) {
    id
    status
    errorCode
    objectCount
    url
    partialDataUrl
  }
}"#;

/// Bulk document of every product with its `custom` metafields (the fields of `PRODUCTS`).
/// Metafield lines carry `__parentId` = the product.
pub const BULK_PRODUCTS: &str = r#"{
  products {
    edges {
      node {
        id
        title
        handle
        description
        productType
        vendor
        tags
        status
        onlineStoreUrl
        totalInventory
        createdAt
        updatedAt
        options { name values }
        featuredImage { url altText }
        priceRangeV2 {
          minVariantPrice { amount currencyCode }
          maxVariantPrice { amount currencyCode }
        }
        metafields(namespace: "custom") {
          edges { node { namespace key type value } }
        }
      }
    }
  }
}"#;

/// Bulk document of every variant with its inventory levels (the fields of
/// `PRODUCT_VARIANTS`). Level lines carry `__parentId` = the variant (or its inventory item).
pub const BULK_VARIANTS: &str = r#"{
  productVariants {
    edges {
      node {
        id
        title
        sku
        price
        compareAtPrice
        availableForSale
        inventoryQuantity
        selectedOptions { name value }
        product { id }
        inventoryItem {
          id
          inventoryLevels {
            edges { node { location { id name } quantities(names: ["available"]) { name quantity } } }
          }
        }
      }
    }
  }
}"#;

pub const WEBHOOK_SUBSCRIPTIONS: &str = r#"query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    edges { cursor node { id topic uri } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

pub const WEBHOOK_SUBSCRIPTION_CREATE: &str = r#"mutation WebhookSubscriptionCreate($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}"#;

/// Topics registered at connect (SPEC §4), as GraphQL enum values with their REST names.
/// Compliance topics (`customers/data_request`, `customers/redact`, `shop/redact`) cannot be
/// subscribed through the API; they are set in the app's configuration.
pub const TOPICS: &[(&str, &str)] = &[
    ("PRODUCTS_CREATE", "products/create"),
    ("PRODUCTS_UPDATE", "products/update"),
    ("PRODUCTS_DELETE", "products/delete"),
    ("INVENTORY_LEVELS_UPDATE", "inventory_levels/update"),
    ("COLLECTIONS_CREATE", "collections/create"),
    ("COLLECTIONS_UPDATE", "collections/update"),
    ("COLLECTIONS_DELETE", "collections/delete"),
    ("DISCOUNTS_CREATE", "discounts/create"),
    ("DISCOUNTS_UPDATE", "discounts/update"),
    ("DISCOUNTS_DELETE", "discounts/delete"),
    ("APP_UNINSTALLED", "app/uninstalled"),
    ("BULK_OPERATIONS_FINISH", "bulk_operations/finish"),
];

#[cfg(test)]
mod tests {
    use salesbot_simulators::shopify::{FakeConfig, FakeShopify};
    use serde_json::{json, Value};

    use super::*;

    const SHOP: &str = "acme.myshopify.com";

    /// One GraphQL call to the simulated Shopify with a document of this file.
    async fn call(fake: &FakeShopify, token: &str, document: &str, variables: Value) -> Value {
        let r = reqwest::Client::new()
            .post(fake.graphql_url(SHOP))
            .header("X-Shopify-Access-Token", token)
            .json(&json!({"query": document, "variables": variables}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v.get("errors").is_none(), "{v}");
        v["data"].clone()
    }

    /// The simulated Shopify (a crate of its own, which cannot see this file) recognises the
    /// service's bulk documents: `BULK_RUN` with `BULK_PRODUCTS` reads products and their
    /// metafields, with `BULK_VARIANTS` variants and their inventory levels, and `BULK_STATUS`
    /// reports the result.
    #[tokio::test]
    async fn the_simulator_runs_the_bulk_documents() {
        let fake = FakeShopify::start(FakeConfig {
            products: 30,
            ..FakeConfig::default()
        })
        .await;
        let c = fake.config();
        let token: Value = reqwest::Client::new()
            .post(fake.token_url(SHOP))
            .json(
                &json!({"client_id": c.api_key, "client_secret": c.api_secret,
                "code": fake.issue_code(SHOP)}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["access_token"].as_str().unwrap();
        let counts = fake.counts(SHOP);
        for (document, parent, lines) in [
            (
                BULK_PRODUCTS,
                "gid://shopify/Product/",
                counts.products + counts.metafields,
            ),
            (
                BULK_VARIANTS,
                "gid://shopify/ProductVariant/",
                counts.variants + counts.inventory_levels,
            ),
        ] {
            let run = call(&fake, token, BULK_RUN, json!({"query": document})).await;
            let run = &run["bulkOperationRunQuery"];
            assert_eq!(run["userErrors"], json!([]), "{run}");
            let id = run["bulkOperation"]["id"].clone();
            let op = loop {
                let status = call(&fake, token, BULK_STATUS, json!({"id": id})).await;
                let op = status["bulkOperation"].clone();
                if op["status"] == "COMPLETED" {
                    break op;
                }
                assert!(
                    matches!(op["status"].as_str(), Some("CREATED" | "RUNNING")),
                    "{op}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            };
            assert_eq!(op["objectCount"], lines.to_string().as_str());
            let body = reqwest::get(op["url"].as_str().unwrap())
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let parents: Vec<Value> = body
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|l| l.get("__parentId").is_none())
                .collect();
            assert!(!parents.is_empty());
            assert!(parents
                .iter()
                .all(|p| p["id"].as_str().unwrap().starts_with(parent)));
        }
    }
}
