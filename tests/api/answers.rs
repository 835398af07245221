//! The answers of the connect flows and their errors, byte for byte (SPEC §4): real connects
//! through the real server and the fake platforms, compared with the answers recorded in
//! `tests/api/answers/` (recorded before the answers were built from typed results). Key order
//! counts: a field renamed, moved or dropped fails here.
//!
//! Values that differ from run to run are replaced by placeholders before the comparison:
//! merchant UUIDs, correlation ids, the app's port. A page's sync progress moves while the page
//! is rendered, so pages are compared without it; the connect's conversation polls may be done
//! or still running when Facebook's answer is written, so either is accepted.
//!
//! A missing recording is written and the test fails, so a new one is looked at before it is
//! checked in.

use std::path::Path;

use reqwest::header::ACCEPT;
use serde_json::Value;

use crate::facebook::{fb_authorize, session, signed_request, FbEnv};
use crate::helpers::*;
use crate::shopify::{authorize, Env};
use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};

const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/answers");
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Compares `actual` with the recording `name` (written, and failing, when there is none).
fn check(name: &str, actual: &str) {
    let path = Path::new(RECORDED).join(name);
    let actual = format!("{actual}\n");
    match std::fs::read_to_string(&path) {
        Ok(recorded) => assert!(
            recorded == actual,
            "{name} differs from the recorded answer\n--- recorded\n{recorded}--- now\n{actual}"
        ),
        Err(_) => {
            std::fs::create_dir_all(RECORDED).unwrap();
            std::fs::write(&path, &actual).unwrap();
            panic!("recorded {name}; check it and run again:\n{actual}");
        }
    }
}

/// Every string value of `key` anywhere in `v`.
fn values_of(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match x {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => values_of(x, key, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| values_of(x, key, out)),
        _ => {}
    }
}

/// The raw JSON text with its merchant UUIDs, correlation ids, deletion codes (wherever they
/// appear, e.g. in the status URL) and times as placeholders, and a conversation poll's
/// `success` or `pending` as one placeholder.
fn normalised_json(raw: &str) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"));
    let mut out = raw.to_string();
    for key in ["user_uuid", "correlation_id", "confirmation_code"] {
        let mut found = Vec::new();
        values_of(&v, key, &mut found);
        for value in found {
            out = out.replace(&value, &format!("<{key}>"));
        }
    }
    for key in ["requested_at", "completed_at"] {
        let field = format!("\"{key}\":");
        let mut text = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&field) {
            let from = i + field.len();
            let len = rest[from..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - from);
            text.push_str(&rest[..from]);
            text.push_str(if len > 0 { "<time>" } else { "" });
            rest = &rest[from + len..];
        }
        text.push_str(rest);
        out = text;
    }
    for status in ["success", "pending"] {
        out = out.replace(
            &format!(r#""result":{{"status":"{status}"}},"type":"conversations""#),
            r#""result":<success or pending>,"type":"conversations""#,
        );
    }
    out
}

/// A page without its sync progress blocks, with its references as placeholders.
fn normalised_page(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find(r#"<div class="sync""#) {
        out.push_str(&rest[..start]);
        out.push_str("<sync progress>");
        // The block's own `</div>` is the first at the start of a line (see `_sync.html`).
        let end = rest[start..].find("\n</div>").expect("a sync block ends");
        rest = &rest[start + end + "\n</div>".len()..];
    }
    out.push_str(rest);
    for (before, after) in [("(reference ", ')'), ("<code>", '<')] {
        let mut text = String::new();
        let mut rest = out.as_str();
        while let Some(i) = rest.find(before) {
            let from = i + before.len();
            let to = from + rest[from..].find(after).expect("a reference ends");
            text.push_str(&rest[..from]);
            text.push_str("<reference>");
            rest = &rest[to..];
        }
        text.push_str(rest);
        out = text;
    }
    out
}

/// The status, content type and body of an answer.
async fn raw(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, r.text().await.unwrap())
}

/// `status content-type` and the normalised body, as one recording.
fn describe(status: u16, kind: &str, body: &str) -> String {
    let body = if kind.starts_with("application/json") {
        normalised_json(body)
    } else if kind.starts_with("text/html") {
        normalised_page(body)
    } else {
        body.to_string()
    };
    format!("{status} {kind}\n{body}")
}

async fn described(r: reqwest::Response) -> String {
    let (status, kind, body) = raw(r).await;
    describe(status, &kind, &body)
}

/// The Shopify callback for `shop_name` as JSON (or as a page for a browser).
async fn shopify_callback(env: &Env, shop_name: &str, accept: Option<&str>) -> String {
    let (params, binding) = authorize(env, shop_name).await;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let mut req = env
        .app
        .client
        .get(env.app.url(&format!("/shopify/callback?{query}")))
        .header("Cookie", binding);
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    described(req.send().await.unwrap()).await
}

async fn shopify_env(config: FakeConfig, settings: &[(&str, &str)]) -> Env {
    let fake = FakeShopify::start(config).await;
    let s3 = start_s3().await;
    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(vars(settings));
    let app = spawn_app(&extra).await;
    Env { app, fake, s3 }
}

fn small_shops() -> FakeConfig {
    FakeConfig {
        products: 60,
        ..FakeConfig::default()
    }
}

#[tokio::test]
async fn shopify_callback_answers_are_unchanged() {
    let env = shopify_env(small_shops(), &[]).await;
    check(
        "shopify_connected.txt",
        &shopify_callback(&env, "acme", None).await,
    );
    // A reinstall in a later second is a new install whose sync finds nothing changed.
    let next_second = 1000 - (chrono::Utc::now().timestamp_subsec_millis() as u64).min(999);
    tokio::time::sleep(std::time::Duration::from_millis(next_second + 10)).await;
    check(
        "shopify_reconnected.txt",
        &shopify_callback(&env, "acme", None).await,
    );
    check(
        "shopify_connected_page.txt",
        &shopify_callback(&env, "beta", Some(BROWSER)).await,
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn shopify_callback_answers_with_failures_are_unchanged() {
    let env = shopify_env(
        small_shops(),
        &[
            // Nothing listens on the discard port: the webhook self-test cannot deliver.
            (
                "SHOPIFY_WEBHOOK_ADDRESS",
                "http://127.0.0.1:9/shopify/webhook",
            ),
            // The initial sync's retries end (dead-lettered) while the callback waits.
            ("RETRY_HORIZON_HOURS", "0.0005"),
            ("SHOPIFY_INITIAL_SYNC_WAIT_SECS", "30"),
        ],
    )
    .await;
    // The subscription listing and the shop query are refused; the object store is down.
    env.fake.fail_next(403, 2);
    env.s3.set_down(true);
    check(
        "shopify_failed.txt",
        &shopify_callback(&env, "acme", None).await,
    );
    env.fake.fail_next(403, 2);
    check(
        "shopify_failed_page.txt",
        &shopify_callback(&env, "beta", Some(BROWSER)).await,
    );
    env.s3.set_down(false);
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_pending_shopify_sync_answer_is_unchanged() {
    let env = shopify_env(small_shops(), &[("SHOPIFY_INITIAL_SYNC_WAIT_SECS", "0")]).await;
    check(
        "shopify_pending.txt",
        &shopify_callback(&env, "acme", None).await,
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

async fn facebook_env(config: FakeGraphConfig, settings: &[(&str, &str)]) -> FbEnv {
    let fake = FakeGraph::start(config).await;
    let s3 = start_s3().await;
    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(vars(settings));
    let app = spawn_app(&extra).await;
    FbEnv { app, fake, s3 }
}

/// The Facebook callback of `user`'s grant to a new merchant, as JSON or as a page.
async fn facebook_callback(env: &FbEnv, user: usize, accept: Option<&str>) -> String {
    let (_, cookie) = session(&env.app).await;
    let (back, cookies) =
        fb_authorize(&env.app.client, &env.app.address, &env.fake, &cookie, user).await;
    let mut req = env.app.client.get(back).header("Cookie", cookies);
    if let Some(a) = accept {
        req = req.header(ACCEPT, a);
    }
    described(req.send().await.unwrap()).await
}

fn small_pages(pages_per_user: usize) -> FakeGraphConfig {
    FakeGraphConfig {
        pages_per_user,
        conversations_per_page: 3,
        ..FakeGraphConfig::default()
    }
}

#[tokio::test]
async fn facebook_callback_answers_are_unchanged() {
    let env = facebook_env(small_pages(3), &[]).await;
    check(
        "facebook_connected.txt",
        &facebook_callback(&env, 0, None).await,
    );
    drained(&env.app).await;
    // Users 1 and 2 administer user 0's first page too: granted to other merchants, it stays
    // where it is and is reported refused.
    let taken = env.fake.page_ids(0)[0].clone();
    env.fake.add_page_admin(1, &taken);
    env.fake.add_page_admin(2, &taken);
    check(
        "facebook_refused.txt",
        &facebook_callback(&env, 1, None).await,
    );
    drained(&env.app).await;
    check(
        "facebook_refused_page.txt",
        &facebook_callback(&env, 2, Some(BROWSER)).await,
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn facebook_callback_answers_with_failures_are_unchanged() {
    let env = facebook_env(
        small_pages(1),
        &[(
            "FACEBOOK_WEBHOOK_ADDRESS",
            "http://127.0.0.1:9/facebook/webhook",
        )],
    )
    .await;
    check(
        "facebook_failed.txt",
        &facebook_callback(&env, 0, None).await,
    );
    drained(&env.app).await;
    check(
        "facebook_failed_page.txt",
        &facebook_callback(&env, 1, Some(BROWSER)).await,
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

/// Requests refused by the connect, webhook and deletion routes, each as JSON and as a page.
async fn refusals(app: &TestApp) -> String {
    let c = &app.client;
    let requests = [
        c.get(app.url("/shopify/not%20a%20shop/login")),
        c.get(app.url("/shopify/callback")),
        c.get(
            app.url("/shopify/callback?code=c&shop=acme.myshopify.com&state=s&timestamp=1&hmac=00"),
        ),
        c.get(app.url("/facebook/login")),
        c.get(app.url("/facebook/login"))
            .header("Cookie", "session_id=forged"),
        c.get(
            app.url("/facebook/callback?error=access_denied&error_description=Permissions+error"),
        ),
        c.get(app.url("/facebook/callback?code=c")),
        c.get(app.url("/facebook/callback?code=c&state=forged")),
        c.get(
            app.url("/facebook/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"),
        ),
        c.post(app.url("/shopify/webhook")).body("{}"),
        c.post(app.url("/facebook/webhook")).body("{}"),
        c.post(app.url("/facebook/data-deletion"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(""),
        c.post(app.url("/facebook/data-deletion"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("signed_request=forged.request"),
        c.get(app.url("/facebook/data-deletion/status?code=unknown")),
        c.get(app.url("/facebook/data-deletion/status")),
    ];
    let mut out = String::new();
    for req in requests {
        for accept in [None, Some(BROWSER)] {
            let mut req = req.try_clone().unwrap();
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let r = req.build().unwrap();
            out.push_str(&format!("== {} {}\n", r.method(), r.url().path()));
            out.push_str(&described(c.execute(r).await.unwrap()).await);
            out.push('\n');
        }
    }
    out.replace(&app.address, "http://<app>")
}

#[tokio::test]
async fn refusals_are_unchanged() {
    let shopify = FakeShopify::start(small_shops()).await;
    let graph = FakeGraph::start(small_pages(1)).await;
    let mut extra = shopify.vars();
    extra.extend(graph.vars());
    let app = spawn_app(&extra).await;
    check("refusals.txt", &refusals(&app).await);
    app.stop().await.unwrap();
    // Neither platform configured.
    let app = spawn_app(&[]).await;
    check("refusals_unconfigured.txt", &refusals(&app).await);
    app.stop().await.unwrap();
}

/// Requests the webhook and deletion routes accept, with what they answer.
#[tokio::test]
async fn acceptances_are_unchanged() {
    let shopify = FakeShopify::start(small_shops()).await;
    let graph = FakeGraph::start(small_pages(1)).await;
    let s3 = start_s3().await;
    let mut extra = shopify.vars();
    extra.extend(graph.vars());
    extra.extend(s3.vars());
    let app = spawn_app(&extra).await;
    let c = &app.client;
    let shopify_secret = shopify.config().api_secret;
    let product = br#"{"id":1,"title":"t"}"#;
    let shopify_delivery = |topic: &str| {
        c.post(app.url("/shopify/webhook"))
            .header("X-Shopify-Topic", topic)
            .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
            .header("X-Shopify-Event-Id", format!("event-{topic}"))
            .header(
                "X-Shopify-Hmac-Sha256",
                sign_b64(shopify_secret.as_bytes(), product),
            )
            .body(product.to_vec())
    };
    let page = graph.page_ids(0)[0].clone();
    let delivery = serde_json::json!({
        "object": "page",
        "entry": [{"id": page, "time": 1, "changes": [{"field": "name", "value": "n"}]}]
    })
    .to_string();
    let deletion = signed_request(
        &graph.config().app_secret,
        &serde_json::json!({"algorithm": "HMAC-SHA256", "user_id": "1234", "issued_at": salesbot_sync::store::now_secs()}),
    );
    let testkit = br#"{"id":"77","delay_ms":0}"#;
    let requests = [
        shopify_delivery("products/update"),
        // A topic the service does not handle is acknowledged all the same.
        shopify_delivery("orders/create"),
        c.get(app.url(
            "/facebook/webhook?hub.mode=subscribe&hub.verify_token=fake-verify-token&hub.challenge=4711",
        )),
        c.post(app.url("/facebook/webhook"))
            .header("X-Hub-Signature-256", graph.signature_256(delivery.as_bytes()))
            .body(delivery.clone()),
        c.post(app.url("/_testkit/webhook"))
            .header(
                "X-Testkit-Hmac-Sha256",
                sign_b64(STATE_SECRET.as_bytes(), testkit),
            )
            .body(testkit.to_vec()),
        c.post(app.url("/facebook/data-deletion"))
            .form(&[("signed_request", deletion.clone())]),
        // The same request again: the original's answer.
        c.post(app.url("/facebook/data-deletion"))
            .form(&[("signed_request", deletion)]),
    ];
    let mut out = String::new();
    let mut status_url = None;
    for req in requests {
        let r = req.build().unwrap();
        out.push_str(&format!("== {} {}\n", r.method(), r.url().path()));
        let (status, kind, body) = raw(c.execute(r).await.unwrap()).await;
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            status_url = v["url"].as_str().map(str::to_string).or(status_url);
        }
        out.push_str(&describe(status, &kind, &body));
        out.push('\n');
    }
    drained(&app).await;
    let status_url = status_url.expect("the deletion answers its status URL");
    out.push_str("== GET /facebook/data-deletion/status\n");
    out.push_str(&described(c.get(status_url).send().await.unwrap()).await);
    check(
        "acceptances.txt",
        &out.replace(&app.address, "http://<app>"),
    );
    app.stop().await.unwrap();
}

/// The rate limiter's refusal, as JSON and as a page (how long to wait is a placeholder).
#[tokio::test]
async fn the_rate_limit_refusal_is_unchanged() {
    let app = spawn_app(&vars(&[
        ("LOGIN_BURST", "2"),
        ("LOGIN_RATE_PER_SECOND", "0.01"),
    ]))
    .await;
    let mut out = String::new();
    for accept in [None, Some(BROWSER)] {
        let mut status = 0;
        for _ in 0..3 {
            let mut req = app.client.get(app.url("/facebook/login"));
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let r = req.send().await.unwrap();
            status = r.status().as_u16();
            if status == 429 {
                assert!(r.headers().contains_key("retry-after"));
                out.push_str(&described(r).await);
                out.push('\n');
                break;
            }
        }
        assert_eq!(status, 429, "the third login in a burst of two is refused");
    }
    let waits: Vec<&str> = out.split("retry in ").skip(1).collect();
    assert_eq!(waits.len(), 2, "once in the JSON, once on the page: {out}");
    let mut text = out.clone();
    for w in waits {
        let n: String = w.chars().take_while(char::is_ascii_digit).collect();
        text = text.replacen(&format!("retry in {n} s"), "retry in <n> s", 1);
    }
    check("rate_limited.txt", &text);
    app.stop().await.unwrap();
}
