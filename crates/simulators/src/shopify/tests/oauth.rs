use serde_json::{json, Value};

use super::{client, connect, exchange, gql, gql_ok, SHOP};
use crate::shopify::{FakeConfig, FakeShopify, INVALID_TOKEN_BODY};

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
