//! Self-tests of the fake Shopify, over HTTP like the service reaches it. Shared helpers here,
//! the tests by area in the submodules.

mod bulk;
mod catalogue;
mod graphql;
mod oauth;

use serde_json::{json, Value};

use super::FakeShopify;

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
