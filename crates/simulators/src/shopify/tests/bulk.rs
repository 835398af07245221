use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::DateTime;
use serde_json::{json, Value};

use super::{client, connect, gql_errors, gql_ok, walk, SHOP};
use crate::shopify::{FakeConfig, FakeShopify, RICH_METAFIELDS_COUNT, RICH_METAFIELDS_PRODUCT};
use crate::signing;

/// Bulk documents shaped like the service's (a connection at the root): the fake reads only
/// which connection. The service runs its own documents through the fake in its tests
/// (`src/shopify/queries.rs`).
const BULK_PRODUCTS: &str = "{ products { edges { node { id title } } } }";
const BULK_VARIANTS: &str = "{ productVariants { edges { node { id inventoryItem { id } } } } }";

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
        assert_eq!(
            h("x-shopify-hmac-sha256"),
            signing::shopify_webhook_hmac(&secret, body)
        );
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
