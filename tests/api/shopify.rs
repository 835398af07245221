//! Shopify end to end: the real server, a fake Shopify on loopback, objects in the embedded S3.

use std::time::Duration;

use salesbot_sync::ids::{MerchantId, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::platforms::shopify::signature::{sign_oauth_query, sign_webhook};
use salesbot_sync::poll::Target;
use salesbot_sync::shopify::sync::full as sync_shop;

/// The debounce of the burst tests: longer than 500 deliveries take on a loaded CI machine.
pub const BURST_DEBOUNCE_MS: u64 = 10_000;
use salesbot_sync::store::events::EventStatus;
use serde_json::{json, Value};

use crate::helpers::*;
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};

pub struct Env {
    pub app: TestApp,
    pub fake: FakeShopify,
    pub s3: S3Server,
}

pub async fn env_with(config: FakeConfig) -> Env {
    env_with_vars(config, &[]).await
}

/// An app with these settings too, against a new fake.
pub async fn env_with_vars(config: FakeConfig, settings: &[(String, String)]) -> Env {
    env_on_fake(FakeShopify::start(config).await, settings).await
}

/// An app against an already started fake.
pub async fn env_on_fake(fake: FakeShopify, settings: &[(String, String)]) -> Env {
    let s3 = start_s3().await;
    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(settings.iter().cloned());
    let app = spawn_app(&extra).await;
    Env { app, fake, s3 }
}

pub async fn env() -> Env {
    env_with(FakeConfig::default()).await
}

fn secret(fake: &FakeShopify) -> String {
    fake.config().api_secret
}

/// Login → (Shopify authorizes) → callback. Returns the callback's status, JSON and cookie.
pub async fn connect(env: &Env, shop_name: &str) -> (u16, Value, Option<String>) {
    let (params, binding) = authorize(env, shop_name).await;
    callback(env, &params, &binding).await
}

/// Login → (Shopify authorizes): the signed callback query and the binding cookie.
pub async fn authorize(env: &Env, shop_name: &str) -> (Vec<(String, String)>, String) {
    let shop = format!("{shop_name}.myshopify.com");
    let r = env
        .app
        .client
        .get(env.app.url(&format!("/shopify/{shop_name}/login")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307, "login redirects");
    let binding = set_cookie(&r, "oauth_binding_shopify").expect("binding cookie set at login");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let url = url::Url::parse(&location).unwrap();
    assert!(
        location.starts_with(&format!(
            "{}/{shop}/admin/oauth/authorize",
            env.fake.base_url()
        )),
        "{location}"
    );
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], env.fake.config().api_key);
    assert_eq!(q["scope"], env.fake.config().scopes);
    assert_eq!(q["redirect_uri"], env.app.url("/shopify/callback"));
    let state = q["state"].clone();

    let code = env.fake.issue_code(&shop);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut params = vec![
        ("code".to_string(), code),
        ("shop".to_string(), shop.clone()),
        ("state".to_string(), state),
        ("timestamp".to_string(), ts),
        (
            "host".to_string(),
            "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvYWNtZQ".to_string(),
        ),
    ];
    let hmac = sign_oauth_query(secret(&env.fake).as_bytes(), &params);
    params.push(("hmac".to_string(), hmac));
    (params, binding)
}

pub async fn callback(
    env: &Env,
    params: &[(String, String)],
    cookie: &str,
) -> (u16, Value, Option<String>) {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let r = env
        .app
        .client
        .get(env.app.url(&format!("/shopify/callback?{query}")))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("session_id="))
        .map(str::to_string);
    let body = r.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json, cookie)
}

fn object(env: &Env, key: &keys::ObjectKey) -> Value {
    let bytes = std::fs::read(env.s3.object_path(key.as_str()))
        .unwrap_or_else(|e| panic!("{key} missing: {e}"));
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn full_connect_flow_through_the_real_server() {
    let env = env().await;
    let (status, body, cookie) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();

    // The answer: SPEC §4 fields, statuses as objects, no token anywhere.
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    assert_eq!(uuid.as_uuid().get_version_num(), 4);
    assert_eq!(body["shop"], "acme.myshopify.com");
    assert_eq!(body["scope"], env.fake.config().scopes);
    assert_eq!(body["webhook_status"]["status"], "success", "{body}");
    assert_eq!(
        body["webhook_test"],
        serde_json::json!({"status": "success"})
    );
    assert_eq!(
        body["polling_test"],
        serde_json::json!({"status": "success"})
    );
    assert_eq!(body["upload_status"]["status"], "success", "{body}");
    assert_eq!(body["shopify_data"]["products_count"], 600);
    assert_eq!(body["shopify_data"]["collections_count"], 23);
    assert_eq!(body["shopify_data"]["discounts_count"], 30);
    assert_eq!(
        body["shopify_data"]["shop"]["myshopifyDomain"],
        "acme.myshopify.com"
    );
    let text = body.to_string();
    let token = env.fake.last_access_token("acme.myshopify.com").unwrap();
    assert!(
        !text.contains(&token),
        "access token leaked into the answer"
    );
    assert!(!text.contains("access_token"));

    // The session cookie.
    let cookie = cookie.expect("session cookie set");
    assert!(cookie.starts_with("session_id="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http base URL: no Secure flag"
    );

    // Webhooks registered once per topic, for our address.
    let subs = env.fake.subscriptions("acme.myshopify.com");
    assert_eq!(subs.len(), 12);
    assert!(subs.iter().any(|s| s.topic == "BULK_OPERATIONS_FINISH"));
    assert!(subs
        .iter()
        .all(|s| s.uri == env.app.url("/shopify/webhook")));
    assert!(subs.iter().any(|s| s.topic == "APP_UNINSTALLED"));

    // Objects: complete, wrappers removed, nested connections followed to the end.
    let products = object(&env, &keys::shop_products(&uuid, &shop));
    let list = products["products"].as_array().unwrap();
    assert_eq!(list.len(), 600);
    let counts = env.fake.counts("acme.myshopify.com");
    let variants: usize = list
        .iter()
        .map(|p| p["variants"].as_array().unwrap().len())
        .sum();
    assert_eq!(variants, counts.variants);
    let levels: usize = list
        .iter()
        .flat_map(|p| p["variants"].as_array().unwrap())
        .map(|v| v["inventoryLevels"].as_array().unwrap().len())
        .sum();
    assert_eq!(levels, counts.inventory_levels);
    let metafields: usize = list
        .iter()
        .map(|p| p["metafields"].as_array().unwrap().len())
        .sum();
    assert_eq!(metafields, counts.metafields);
    assert!(
        !products.to_string().contains("\"edges\""),
        "edges/node wrappers removed"
    );
    let p0 = &list[0];
    assert_eq!(
        p0["variants"][0]["price"],
        env.fake.variant_price("acme.myshopify.com", 0, 0)
    );
    assert!(p0["variants"][0]["inventoryLevels"][0]["available"].is_i64());

    let meta = object(&env, &keys::shop_metadata(&uuid, &shop));
    assert_eq!(
        meta["shop"]["name"],
        env.fake.shop_name("acme.myshopify.com")
    );
    let big = meta["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["handle"] == "big")
        .unwrap();
    assert_eq!(big["productHandles"].as_array().unwrap().len(), 120);
    let codes: usize = meta["discounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["codes"].as_array().unwrap().len())
        .sum();
    assert_eq!(codes, counts.discount_codes);
    assert!(!meta.to_string().contains(&token) && !products.to_string().contains(&token));

    // The token is stored, encrypted, for this merchant.
    let rec = app_shop(&env, &shop).await;
    assert_eq!(rec, uuid);

    // Reconnecting (reinstall) keeps the UUID and registers nothing twice. Installs are
    // recorded to the second, and a reinstall within the same second is the same install (its
    // initial sync is the same job): wait for the next second so this one is new.
    let next_second = 1000 - (chrono::Utc::now().timestamp_subsec_millis() as u64).min(999);
    tokio::time::sleep(std::time::Duration::from_millis(next_second + 10)).await;
    let creates = env.fake.subscription_creates();
    let (status, again, _) = connect(&env, "acme").await;
    assert_eq!(status, 200);
    assert_eq!(again["user_uuid"], body["user_uuid"]);
    assert_eq!(env.fake.subscription_creates(), creates);
    assert_eq!(env.fake.subscriptions("acme.myshopify.com").len(), 12);
    assert_eq!(
        again["upload_status"]["shop_products"], "unchanged",
        "{again}"
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

async fn app_shop(env: &Env, shop: &ShopDomain) -> MerchantId {
    env.app
        .state
        .tokens
        .shop(shop)
        .await
        .unwrap()
        .unwrap()
        .merchant
}

#[tokio::test]
async fn existing_subscriptions_of_other_pages_are_found_and_kept() {
    let env = env().await;
    // Registered earlier (e.g. before a restore), and something of another app.
    for i in 0..120 {
        env.fake.preload_subscription(
            "acme.myshopify.com",
            "PRODUCTS_UPDATE",
            &format!("https://other.example/{i}"),
        );
    }
    env.fake.preload_subscription(
        "acme.myshopify.com",
        "PRODUCTS_CREATE",
        &env.app.url("/shopify/webhook"),
    );
    let (status, body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        env.fake.subscription_creates(),
        11,
        "the existing one (past page 1) is reused"
    );
    assert!(body["webhook_status"]["existing"]
        .to_string()
        .contains("products/create"));
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn login_rejects_invalid_shops_without_any_outbound_request() {
    let env = env().await;
    for shop in [
        "evil.com",
        "a.myshopify.com.evil.com",
        "..%2Fx",
        "a%2Fb",
        "x.myshopify.com%3A443",
    ] {
        let r = env
            .app
            .client
            .get(env.app.url(&format!("/shopify/{shop}/login")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{shop}");
        let body: Value = r.json().await.unwrap();
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("invalid shop domain"));
    }
    assert_eq!(
        env.fake.total_graphql_requests() + env.fake.token_exchanges(),
        0
    );
    assert!(env.fake.unexpected_requests().is_empty());
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn callback_rejects_forged_hmac_bad_state_replays_and_other_shops() {
    let env = env().await;
    let shop = "acme.myshopify.com".to_string();
    let login = |name: &'static str| {
        let env = &env;
        async move {
            let r = env
                .app
                .client
                .get(env.app.url(&format!("/shopify/{name}/login")))
                .send()
                .await
                .unwrap();
            let cookie = set_cookie(&r, "oauth_binding_shopify").unwrap();
            let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
            let state = loc
                .query_pairs()
                .find(|(k, _)| k == "state")
                .unwrap()
                .1
                .to_string();
            (state, cookie)
        }
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string()
    };
    let signed = |mut p: Vec<(String, String)>, key: &str| {
        let h = sign_oauth_query(key.as_bytes(), &p);
        p.push(("hmac".into(), h));
        p
    };
    let base = |state: String, shop: &str| {
        vec![
            ("code".to_string(), env.fake.issue_code(shop)),
            ("shop".to_string(), shop.to_string()),
            ("state".to_string(), state),
            ("timestamp".to_string(), now()),
        ]
    };

    // Forged: signed with the wrong secret, or tampered after signing, or unsigned.
    let (st, ck) = login("acme").await;
    let (s, _, _) = callback(
        &env,
        &signed(base(st.clone(), &shop), "not-the-secret"),
        &ck,
    )
    .await;
    assert_eq!(s, 401);
    let mut tampered = signed(base(st.clone(), &shop), &secret(&env.fake));
    tampered[0].1 = "another-code".into();
    assert_eq!(callback(&env, &tampered, &ck).await.0, 401);
    assert_eq!(
        callback(&env, &base(st.clone(), &shop), &ck).await.0,
        400,
        "no hmac at all"
    );
    // Garbage state, correctly signed.
    assert_eq!(
        callback(
            &env,
            &signed(base("garbage".into(), &shop), &secret(&env.fake)),
            &ck
        )
        .await
        .0,
        400
    );
    // A state issued for another shop.
    let (other_state, other_ck) = login("other").await;
    // The genuine state from another browser (a forwarded link): refused, not burned.
    let (s, b, _) = callback(
        &env,
        &signed(base(st.clone(), &shop), &secret(&env.fake)),
        &other_ck,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("another browser"),
        "{b}"
    );
    let (s, b, _) = callback(
        &env,
        &signed(base(st.clone(), &shop), &secret(&env.fake)),
        "",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b, _) = callback(
        &env,
        &signed(base(other_state, &shop), &secret(&env.fake)),
        &other_ck,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("another shop"),
        "{b}"
    );
    // A bad shop in a signed callback never reaches the network.
    let (s, _, _) = callback(
        &env,
        &signed(base(st.clone(), "evil.com"), &secret(&env.fake)),
        &ck,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(env.fake.token_exchanges(), 0);
    // The genuine one works once; a replay of the same state fails.
    let good = signed(base(st, &shop), &secret(&env.fake));
    let (s, b, _) = callback(&env, &good, &ck).await;
    assert_eq!(s, 200, "{b}");
    let replay = signed(
        vec![
            ("code".to_string(), env.fake.issue_code(&shop)),
            ("shop".to_string(), shop.clone()),
            ("state".to_string(), good[2].1.clone()),
            ("timestamp".to_string(), now()),
        ],
        &secret(&env.fake),
    );
    let (s, b, _) = callback(&env, &replay, &ck).await;
    assert_eq!(s, 400);
    assert!(
        b["message"].as_str().unwrap().contains("already used"),
        "{b}"
    );
    assert_eq!(env.fake.token_exchanges(), 1);
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn published_oauth_vector_verifies() {
    let v = test_vectors();
    let vector = &v["shopify_oauth_query"][0];
    let mut params: Vec<(String, String)> = vector["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        salesbot_sync::platforms::shopify::signature::oauth_message(&params),
        vector["signed_message"].as_str().unwrap()
    );
    params.push(("hmac".into(), vector["hmac_hex"].as_str().unwrap().into()));
    assert!(
        salesbot_sync::platforms::shopify::signature::verify_oauth_query(
            vector["secret"].as_str().unwrap().as_bytes(),
            &params
        )
    );
}

#[tokio::test]
async fn unchanged_poll_writes_nothing_and_a_price_change_writes_products_only() {
    let env = env().await;
    let (status, body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let products_key = keys::shop_products(&uuid, &shop);
    let meta_key = keys::shop_metadata(&uuid, &shop);
    let meta_before = std::fs::metadata(env.s3.object_path(meta_key.as_str()))
        .unwrap()
        .modified()
        .unwrap();

    let puts = env.s3.puts();
    let gets = env.s3.gets();
    let report = poll_everything(&env.app).await;
    assert_eq!(
        (
            report.shops.ok,
            report.shops.failed,
            report.written,
            report.unchanged
        ),
        (1, 0, 0, 2)
    );
    assert_eq!(env.s3.puts(), puts, "unchanged data is not uploaded");
    assert_eq!(env.s3.gets(), gets, "change detection never downloads");

    env.fake
        .set_variant_price("acme.myshopify.com", 3, 0, "123.45");
    let out = sync_shop(&env.app.state, &shop).await.unwrap();
    assert_eq!(env.s3.puts(), puts + 1, "exactly one object written");
    assert_eq!(serde_json::to_value(out.shop_products).unwrap(), "written");
    assert_eq!(
        serde_json::to_value(out.shop_metadata).unwrap(),
        "unchanged"
    );
    let products = object(&env, &products_key);
    assert_eq!(products["products"][3]["variants"][0]["price"], "123.45");
    let meta_after = std::fs::metadata(env.s3.object_path(meta_key.as_str()))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(meta_before, meta_after);
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_burst_of_500_updates_to_one_product_is_one_query_not_500() {
    // A delivery received after a read started may describe a later change, so it is read
    // again; a debounce longer than the burst takes on a loaded machine makes every delivery
    // arrive before the first read.
    let env = env_with_vars(
        FakeConfig::default(),
        &vars(&[(
            "SHOPIFY_WEBHOOK_DEBOUNCE_MS",
            &BURST_DEBOUNCE_MS.to_string(),
        )]),
    )
    .await;
    let (status, _, _) = connect(&env, "acme").await;
    assert_eq!(status, 200);
    drained(&env.app).await;
    env.fake.reset_counters();
    env.fake
        .set_product_title("acme.myshopify.com", 10, "Renamed in a burst");
    let deliveries_before = env
        .app
        .state
        .events
        .rows()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == "shopify")
        .count();

    // 500 changes of one product: Shopify's bodies differ by `updated_at`.
    let bodies: Vec<(Vec<u8>, String)> = (0..500)
        .map(|i| {
            let at = format!("2026-12-07T10:{:02}:{:02}Z", i / 60, i % 60);
            let body = json!({"id": 1011, "title": "Renamed in a burst", "updated_at": at});
            let body = body.to_string().into_bytes();
            let sig = sign_webhook(secret(&env.fake).as_bytes(), &body);
            (body, sig)
        })
        .collect();
    let started = std::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, (body, sig)) in bodies.into_iter().enumerate() {
        let (client, url) = (env.app.client.clone(), env.app.url("/shopify/webhook"));
        set.spawn(async move {
            client
                .post(url)
                .header("X-Shopify-Topic", "products/update")
                .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
                .header("X-Shopify-Hmac-Sha256", sig)
                .header("X-Shopify-Event-Id", format!("burst-{i}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    let burst = started.elapsed();
    assert!(
        burst.as_millis() < BURST_DEBOUNCE_MS as u128,
        "the burst took {burst:?}"
    );
    drained(&env.app).await;
    assert_eq!(
        (env.fake.requests("Product"), env.fake.requests("Shop")),
        (1, 0),
        "one product query for 500 deliveries, no catalogue read"
    );
    let rows = env.app.state.events.rows().await.unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.kind == "shopify").count() - deliveries_before,
        500
    );
    assert!(
        rows.iter().all(|r| r.status == EventStatus::Done),
        "{rows:?}"
    );
    let uuid = app_shop(&env, &ShopDomain::parse("acme.myshopify.com").unwrap()).await;
    let products = object(
        &env,
        &keys::shop_products(&uuid, &ShopDomain::parse("acme.myshopify.com").unwrap()),
    );
    assert_eq!(products["products"][10]["title"], "Renamed in a burst");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn throttling_429_and_5xx_are_waited_out() {
    let env = env().await;
    let (status, _, _) = connect(&env, "acme").await;
    assert_eq!(status, 200);
    drained(&env.app).await;
    env.fake
        .set_variant_price("acme.myshopify.com", 0, 0, "1.00");
    env.fake.throttle_next(3);
    env.fake.fail_next(429, 2);
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let out = sync_shop(&env.app.state, &shop).await.unwrap();
    assert_eq!(serde_json::to_value(out.shop_products).unwrap(), "written");
    env.fake.fail_next(503, 1);
    sync_shop(&env.app.state, &shop).await.unwrap();
    // Endless 5xx: a bounded number of attempts, then a retryable error.
    env.fake.reset_counters();
    env.fake.fail_next(500, 100);
    let mut retry = env.app.state.upstream_retry.clone();
    retry.min_delay = Duration::from_millis(5);
    retry.max_delay = Duration::from_millis(20);
    let quick = env.app.state.clone().with_upstream_retry(retry);
    let started = std::time::Instant::now();
    let err = sync_shop(&quick, &shop).await.unwrap_err();
    assert!(err.to_string().contains("temporarily unavailable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        env.fake.total_graphql_requests(),
        quick.upstream_retry.attempts,
        "bounded attempts (of the first query)"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn revoked_token_marks_reauth_and_other_shops_keep_syncing() {
    let env = env().await;
    assert_eq!(connect(&env, "acme").await.0, 200);
    assert_eq!(connect(&env, "bravo").await.0, 200);
    drained(&env.app).await;
    env.fake.revoke_tokens("acme.myshopify.com");
    env.fake
        .set_variant_price("bravo.myshopify.com", 0, 0, "7.77");
    let report = poll_everything(&env.app).await;
    assert_eq!((report.shops.ok, report.shops.failed), (1, 1));
    assert_eq!(report.written, 1, "bravo's change is still written");
    assert!(report.failures[0].0.contains("acme"));
    let index: Value = env.app.get("/").await.json().await.unwrap();
    let needs = &index["integrations"]["shopify"]["shops"]["needs_reauth"];
    assert_eq!(needs[0]["id"], "acme.myshopify.com", "{index}");
    // Not polled again until the merchant reconnects.
    let report = poll_everything(&env.app).await;
    assert_eq!((report.shops.ok, report.shops.failed), (1, 0));
    assert_eq!(connect(&env, "acme").await.0, 200);
    let report = poll_everything(&env.app).await;
    assert_eq!((report.shops.ok, report.shops.failed), (2, 0));
    env.app.stop().await.unwrap();
}

/// The body Shopify sends for `topic` (documented shapes), about `shop`.
fn topic_body(topic: &str, shop: &str, shop_id: u64) -> Vec<u8> {
    let customer = json!({"id": 191167, "email": "john@example.com", "phone": "555-625-1199"});
    match topic {
        "app/uninstalled" => json!({"id": shop_id, "name": "Acme", "myshopify_domain": shop}),
        "shop/redact" => json!({"shop_id": shop_id, "shop_domain": shop}),
        "customers/redact" => json!({"shop_id": shop_id, "shop_domain": shop,
            "customer": customer, "orders_to_redact": [299938]}),
        "customers/data_request" => json!({"shop_id": shop_id, "shop_domain": shop,
            "customer": customer, "orders_requested": [299938], "data_request": {"id": 9999}}),
        _ => json!({"id": 1011, "title": "Mug"}),
    }
    .to_string()
    .into_bytes()
}

/// Posts a correctly signed delivery of `body` as `topic` for acme.
async fn post_signed(env: &Env, topic: &str, body: &[u8], event_id: &str) -> u16 {
    env.app
        .client
        .post(env.app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(secret(&env.fake).as_bytes(), body),
        )
        .header("X-Shopify-Event-Id", event_id)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn post_topic(env: &Env, topic: &str, event_id: &str, triggered_at: Option<&str>) -> u16 {
    let shop = "acme.myshopify.com";
    let body = topic_body(topic, shop, env.fake.shop_id(shop));
    let mut req = env
        .app
        .client
        .post(env.app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", shop)
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(secret(&env.fake).as_bytes(), &body),
        )
        .header("X-Shopify-Event-Id", event_id);
    if let Some(t) = triggered_at {
        req = req.header("X-Shopify-Triggered-At", t);
    }
    req.body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn app_uninstalled_deletes_the_token_and_stops_polling() {
    let env = env().await;
    assert_eq!(connect(&env, "acme").await.0, 200);
    drained(&env.app).await;
    // An uninstall from before the latest install is stale and ignored.
    assert_eq!(
        post_topic(
            &env,
            "app/uninstalled",
            "u-old",
            Some("2020-01-01T00:00:00Z")
        )
        .await,
        200
    );
    drained(&env.app).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    assert!(env
        .app
        .state
        .tokens
        .shop(&shop)
        .await
        .unwrap()
        .unwrap()
        .access_token
        .is_some());

    // Uninstalled at Shopify (it revokes the token), then told.
    env.fake.revoke_tokens(shop.as_str());
    assert_eq!(post_topic(&env, "app/uninstalled", "u-1", None).await, 200);
    drained(&env.app).await;
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(rec.access_token.is_none() && rec.refresh_token.is_none());
    assert!(env
        .app
        .state
        .tokens
        .active_shops()
        .await
        .unwrap()
        .is_empty());
    env.fake.reset_counters();
    let report = poll_everything(&env.app).await;
    assert_eq!(report.shops.ok + report.shops.failed, 0);
    let report = poll_now(&env.app, Target::Shop(shop.clone())).await;
    assert_eq!(
        report.shops.failed, 1,
        "asked for by name, it reports why it was not polled"
    );
    assert!(
        report.failures[0].1.contains("not connected"),
        "{:?}",
        report.failures
    );
    assert_eq!(env.fake.total_graphql_requests(), 0);
    // A product update trailing the uninstall fails for good, with a reason, not retried.
    assert_eq!(
        post_topic(&env, "products/update", "late-1", None).await,
        200
    );
    drained(&env.app).await;
    let rows = env.app.state.events.rows().await.unwrap();
    let late = rows
        .iter()
        .find(|r| r.kind == "shopify" && r.status != EventStatus::Done)
        .unwrap();
    assert_eq!(late.status, EventStatus::Failed);
    assert!(late
        .last_error
        .as_deref()
        .unwrap()
        .contains("not connected"));
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn shop_redact_deletes_objects_and_records_and_customer_topics_are_acknowledged() {
    let env = env().await;
    let (_, body, _) = connect(&env, "acme").await;
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    assert!(env
        .s3
        .object_path(keys::shop_products(&uuid, &shop).as_str())
        .exists());

    for (topic, id) in [
        ("customers/data_request", "c-1"),
        ("customers/redact", "c-2"),
    ] {
        assert_eq!(post_topic(&env, topic, id, None).await, 200);
    }
    drained(&env.app).await;
    assert!(env.app.state.tokens.shop(&shop).await.unwrap().is_some());

    // Uninstalled at Shopify, its `app/uninstalled` lost; 48 hours later:
    env.fake.revoke_tokens(shop.as_str());
    assert_eq!(post_topic(&env, "shop/redact", "r-1", None).await, 200);
    drained(&env.app).await;
    assert!(env.app.state.tokens.shop(&shop).await.unwrap().is_none());
    assert!(!env
        .s3
        .object_path(keys::shop_products(&uuid, &shop).as_str())
        .exists());
    assert!(!env
        .s3
        .object_path(keys::shop_metadata(&uuid, &shop).as_str())
        .exists());
    let rows = env.app.state.events.rows().await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == EventStatus::Done),
        "{rows:?}"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_signed_body_cannot_be_replayed_to_redact_another_shop() {
    let env = env().await;
    assert_eq!(connect(&env, "acme").await.0, 200);
    drained(&env.app).await;
    // A genuinely signed body of another shop's event, re-labelled for acme.
    let body = br#"{"shop_id":2,"shop_domain":"other.myshopify.com"}"#;
    for topic in ["shop/redact", "app/uninstalled"] {
        let r = env
            .app
            .client
            .post(env.app.url("/shopify/webhook"))
            .header("X-Shopify-Topic", topic)
            .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
            .header(
                "X-Shopify-Hmac-Sha256",
                sign_webhook(secret(&env.fake).as_bytes(), body),
            )
            .header("X-Shopify-Event-Id", format!("replay-{topic}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{topic}");
    }
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(rec.access_token.is_some());
    env.app.stop().await.unwrap();
}

const IGNORED_INSTALLED: &str =
    r#"webhooks_ignored_total{source="shopify",topic="app/uninstalled",reason="still_installed"}"#;
const IGNORED_REDACT: &str =
    r#"webhooks_ignored_total{source="shopify",topic="shop/redact",reason="still_installed"}"#;

/// Posts acme's own lifecycle bodies again (as captured), under fresh event ids and a
/// `Triggered-At` of now (the header is not signed: a replayer sets what it likes).
async fn replay_lifecycle(env: &Env, round: &str) {
    let now = chrono::Utc::now().to_rfc3339();
    for topic in ["app/uninstalled", "shop/redact"] {
        let event = format!("replay-{round}-{topic}");
        assert_eq!(post_topic(env, topic, &event, Some(&now)).await, 200);
        let event = format!("replay-{round}-{topic}-bare");
        assert_eq!(post_topic(env, topic, &event, None).await, 200);
    }
    drained(&env.app).await;
}

#[tokio::test]
async fn captured_lifecycle_bodies_change_nothing_while_the_shop_is_installed() {
    let env = env().await;
    let (_, body, _) = connect(&env, "acme").await;
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let (ignored, ignored_redact) = (
        env.app.metric(IGNORED_INSTALLED).await,
        env.app.metric(IGNORED_REDACT).await,
    );
    // Installed: Shopify still takes the token, so neither body is believed.
    replay_lifecycle(&env, "installed").await;
    acme_intact(&env, &uuid).await;
    assert_eq!(env.app.metric(IGNORED_INSTALLED).await - ignored, 2.0);
    // (Two redactions in one run of the shop's queue are judged once.)
    assert!(env.app.metric(IGNORED_REDACT).await - ignored_redact >= 1.0);

    // A genuine uninstall (Shopify revokes the token) is acted on; a reinstall follows, and
    // the bodies of the earlier install are replayed against the new one.
    env.fake.revoke_tokens("acme.myshopify.com");
    assert_eq!(post_topic(&env, "app/uninstalled", "u-1", None).await, 200);
    drained(&env.app).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(rec.access_token.is_none(), "uninstalled");
    assert_eq!(connect(&env, "acme").await.0, 200);
    drained(&env.app).await;
    replay_lifecycle(&env, "reinstalled").await;
    acme_intact(&env, &uuid).await;
    env.app.stop().await.unwrap();
}

const WRONG_SHAPE: &str = r#"webhooks_rejected_total{source="shopify",reason="wrong_shape"}"#;
const ID_MISMATCH: &str = r#"webhooks_rejected_total{source="shopify",reason="shop_id_mismatch"}"#;

/// Objects and connection of acme are all still there.
async fn acme_intact(env: &Env, uuid: &MerchantId) {
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(rec.access_token.is_some(), "still connected");
    assert!(env
        .s3
        .object_path(keys::shop_products(uuid, &shop).as_str())
        .exists());
    assert!(env
        .s3
        .object_path(keys::shop_metadata(uuid, &shop).as_str())
        .exists());
}

#[tokio::test]
async fn a_signed_customer_body_relabelled_as_redact_or_uninstall_changes_nothing() {
    let env = env().await;
    let (_, body, _) = connect(&env, "acme").await;
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let shop = "acme.myshopify.com";
    let id = env.fake.shop_id(shop);
    let before = env.app.metric(WRONG_SHAPE).await;
    // A captured, correctly signed compliance body of this very shop, replayed under the
    // topics that delete and revoke.
    for (captured, as_topic) in [
        ("customers/redact", "shop/redact"),
        ("customers/data_request", "shop/redact"),
        ("customers/redact", "app/uninstalled"),
        ("shop/redact", "app/uninstalled"),
        ("app/uninstalled", "shop/redact"),
        ("shop/redact", "customers/redact"),
    ] {
        let body = topic_body(captured, shop, id);
        let event = format!("relabel-{captured}-{as_topic}");
        assert_eq!(
            post_signed(&env, as_topic, &body, &event).await,
            400,
            "{captured} as {as_topic}"
        );
    }
    drained(&env.app).await;
    acme_intact(&env, &uuid).await;
    assert!(env
        .app
        .state
        .events
        .rows()
        .await
        .unwrap()
        .iter()
        .all(|r| !r.dedupe_key.contains("relabel")));
    assert_eq!(env.app.metric(WRONG_SHAPE).await - before, 6.0);
    env.app.stop().await.unwrap();
}

/// As for shops connected before shop ids were recorded.
async fn forget_shop_ids(env: &Env) {
    exec_tokens_sql(&env.app, "UPDATE shops SET shop_id = NULL".into()).await;
}

#[tokio::test]
async fn lifecycle_bodies_must_carry_the_shop_id_recorded_at_connect() {
    let env = env().await;
    let (_, body, _) = connect(&env, "acme").await;
    drained(&env.app).await;
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let id = env.fake.shop_id(shop.as_str());
    assert_eq!(
        env.app.state.tokens.shop_id(&shop).await.unwrap(),
        Some(id as i64),
        "recorded at connect"
    );
    let before = env.app.metric(ID_MISMATCH).await;
    // Right shape, right domain, another shop's id (a body of an earlier shop of that name).
    for topic in ["shop/redact", "app/uninstalled"] {
        let body = topic_body(topic, shop.as_str(), id + 1);
        assert_eq!(
            post_signed(&env, topic, &body, &format!("other-id-{topic}")).await,
            400
        );
    }
    drained(&env.app).await;
    acme_intact(&env, &uuid).await;

    // A shop connected before ids were recorded: its id comes from the catalogue's copy of
    // the shop object (no API call), and is checked and recorded the same way.
    forget_shop_ids(&env).await;
    env.fake.reset_counters();
    let body = topic_body("shop/redact", shop.as_str(), id + 1);
    assert_eq!(
        post_signed(&env, "shop/redact", &body, "old-shop-wrong").await,
        400
    );
    assert_eq!(env.fake.total_graphql_requests(), 0);
    assert_eq!(
        env.app.state.tokens.shop_id(&shop).await.unwrap(),
        Some(id as i64)
    );
    drained(&env.app).await;
    acme_intact(&env, &uuid).await;
    // And without a catalogue either: asked of Shopify, once.
    forget_shop_ids(&env).await;
    env.app.state.catalog.remove_shop(&shop).await.unwrap();
    assert_eq!(
        post_topic(&env, "customers/redact", "old-shop-right", None).await,
        200
    );
    assert_eq!(env.fake.requests("ShopId"), 1);
    assert_eq!(
        post_topic(&env, "customers/redact", "old-shop-again", None).await,
        200
    );
    assert_eq!(env.fake.requests("ShopId"), 1, "recorded, not asked again");
    assert_eq!(env.app.metric(ID_MISMATCH).await - before, 3.0);
    env.app.stop().await.unwrap();
}

/// The merchant the session cookie `session_id=…` signs in, if it still does.
async fn signed_in(env: &Env, cookie: &str) -> Option<MerchantId> {
    let sid = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("session_id=");
    env.app.state.sessions.merchant(sid).await.unwrap()
}

#[tokio::test]
async fn sessions_end_when_the_merchants_last_shop_is_uninstalled_or_redacted() {
    let env = env().await;
    let (_, body, cookie) = connect(&env, "acme").await;
    let cookie = cookie.expect("a session cookie");
    drained(&env.app).await;
    let merchant = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    assert_eq!(signed_in(&env, &cookie).await, Some(merchant));
    env.fake.revoke_tokens("acme.myshopify.com");
    assert_eq!(post_topic(&env, "app/uninstalled", "u-1", None).await, 200);
    drained(&env.app).await;
    assert_eq!(
        signed_in(&env, &cookie).await,
        None,
        "uninstalled: signed out"
    );

    // Reinstalled: signed in again; the redaction (48 h after an uninstall) signs out too.
    let (_, _, cookie) = connect(&env, "acme").await;
    let cookie = cookie.unwrap();
    drained(&env.app).await;
    assert_eq!(signed_in(&env, &cookie).await, Some(merchant));
    env.fake.revoke_tokens("acme.myshopify.com");
    assert_eq!(post_topic(&env, "shop/redact", "r-1", None).await, 200);
    drained(&env.app).await;
    assert_eq!(signed_in(&env, &cookie).await, None, "redacted: signed out");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn expiring_tokens_are_stored_and_refreshed_before_use() {
    let env = env().await;
    env.fake.set_expiring(true);
    let (status, body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200, "{body}");
    drained(&env.app).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(rec.expires_at.is_some() && rec.refresh_token.is_some());

    // Make the stored token look nearly expired: the next sync refreshes first.
    let soon = chrono::Utc::now().timestamp() + 10;
    exec_tokens_sql(
        &env.app,
        format!("UPDATE shops SET token_expires_at = {soon}"),
    )
    .await;
    env.fake.expire_access_tokens("acme.myshopify.com");
    let before = env.fake.refreshes();
    sync_shop(&env.app.state, &shop).await.unwrap();
    assert_eq!(env.fake.refreshes(), before + 1);
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(env.fake.is_live_token(
        "acme.myshopify.com",
        secrecy::ExposeSecret::expose_secret(rec.access_token.as_ref().unwrap())
    ));
    // The refreshed token is used without another refresh.
    sync_shop(&env.app.state, &shop).await.unwrap();
    assert_eq!(env.fake.refreshes(), before + 1);
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_initial_sync_answers_pending_and_finishes_in_the_background() {
    let fake = FakeShopify::start(FakeConfig::default()).await;
    let s3 = start_s3().await;
    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(vars(&[("SHOPIFY_INITIAL_SYNC_WAIT_SECS", "1")]));
    let app = spawn_app(&extra).await;
    let env = Env { app, fake, s3 };
    env.fake.set_delay(Duration::from_millis(30));
    let (status, body, _) = connect(&env, "slow").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["upload_status"],
        serde_json::json!({"status": "pending"})
    );
    let uuid = MerchantId::parse(body["user_uuid"].as_str().unwrap()).unwrap();
    let key = keys::shop_products(&uuid, &ShopDomain::parse("slow.myshopify.com").unwrap());
    let path = env.s3.object_path(key.as_str());
    eventually("background sync finished", || {
        let path = path.clone();
        async move { path.exists() }
    })
    .await;
    env.fake.set_delay(Duration::ZERO);
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_redacted_shop_stays_deleted_after_a_restore_of_an_older_backup() {
    // Backups and restores are of the SQLite files.
    let env = env_with_vars(FakeConfig::default(), &vars(&[(SQLITE_ONLY, "1")])).await;
    assert_eq!(connect(&env, "acme").await.0, 200);
    assert_eq!(connect(&env, "bravo").await.0, 200);
    drained(&env.app).await;
    let backup = salesbot_sync::backup::backup_all(&env.app.state.config, None)
        .await
        .unwrap();
    // After the backup: acme is uninstalled and, 48 hours later, redacted.
    env.fake.revoke_tokens("acme.myshopify.com");
    assert_eq!(post_topic(&env, "shop/redact", "r-1", None).await, 200);
    drained(&env.app).await;
    let acme = ShopDomain::parse("acme.myshopify.com").unwrap();
    assert!(env.app.state.tokens.shop(&acme).await.unwrap().is_none());

    let Env { mut app, .. } = env;
    let _dir = app.dir.take();
    let config = app.state.config.clone();
    app.stop().await.unwrap();
    let set = backup.set_dir.clone();
    let report = tokio::task::spawn_blocking(move || salesbot_sync::backup::restore(&config, &set))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.deletions_reapplied, 1, "{}", report.summary());
    // The restored records hold bravo, not acme: nothing would sync acme's data back.
    let restored = report.restored.iter().find(|r| r.db == "tokens").unwrap();
    let tokens = rusqlite::Connection::open(&restored.path).unwrap();
    let shops: Vec<String> = tokens
        .prepare("SELECT domain FROM shops ORDER BY domain")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(shops, vec!["bravo.myshopify.com"]);
}

#[tokio::test]
async fn a_redaction_of_a_shop_the_database_forgot_still_deletes_its_objects() {
    let env = env().await;
    let (status, acme_body, _) = connect(&env, "acme").await;
    assert_eq!(status, 200);
    let (status, bravo_body, _) = connect(&env, "bravo").await;
    assert_eq!(status, 200);
    drained(&env.app).await;
    let merchant = |b: &Value| MerchantId::parse(b["user_uuid"].as_str().unwrap()).unwrap();
    let (acme_uuid, bravo_uuid) = (merchant(&acme_body), merchant(&bravo_body));
    let acme = ShopDomain::parse("acme.myshopify.com").unwrap();
    let bravo = ShopDomain::parse("bravo.myshopify.com").unwrap();
    let stored = |m: &MerchantId, shop: &ShopDomain| {
        env.s3
            .object_path(keys::shop_products(m, shop).as_str())
            .exists()
    };
    assert!(stored(&acme_uuid, &acme) && stored(&bravo_uuid, &bravo));

    // The database no longer knows acme (a tokens.db restored from before its install); its
    // objects are still in the bucket. Uninstalled at Shopify, then 48 hours later:
    env.app.state.tokens.delete_shop(&acme).await.unwrap();
    env.fake.revoke_tokens(acme.as_str());
    assert_eq!(post_topic(&env, "shop/redact", "r-1", None).await, 200);
    drained(&env.app).await;

    assert!(!stored(&acme_uuid, &acme));
    assert!(!env
        .s3
        .object_path(keys::shop_metadata(&acme_uuid, &acme).as_str())
        .exists());
    // Nothing of another merchant's shop went with it.
    assert!(stored(&bravo_uuid, &bravo));
    assert!(env
        .s3
        .object_path(keys::shop_metadata(&bravo_uuid, &bravo).as_str())
        .exists());
    let rows = env.app.state.events.rows().await.unwrap();
    assert!(
        rows.iter().all(|r| r.status == EventStatus::Done),
        "{rows:?}"
    );
    env.app.stop().await.unwrap();
}
