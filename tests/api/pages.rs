//! The merchant and operator pages over HTTP: operator access, content negotiation (JSON
//! unchanged for everything but browsers), the account page's JSON and its disconnect forms.

use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE};
use serde_json::Value;

use crate::facebook::{fb_connect, fb_env};
use crate::helpers::*;
use salesbot_sync::ids::{PageId, ShopDomain};
use salesbot_sync::objects::keys;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const TOKEN: &str = "an-operator-token-of-at-least-32-characters";

/// A production app: every required setting, against fakes and the embedded S3 server.
async fn production_app() -> (TestApp, S3Server) {
    let s3 = start_s3().await;
    let shopify = salesbot_simulators::shopify::FakeShopify::start(Default::default()).await;
    let graph = salesbot_simulators::graph::FakeGraph::start(Default::default()).await;
    let mut extra = vars(&[("APP_ENV", "production"), ("OPERATOR_TOKEN", TOKEN)]);
    extra.extend(shopify.vars());
    extra.extend(graph.vars());
    extra.extend(s3.vars());
    (spawn_app(&extra).await, s3)
}

#[tokio::test]
async fn in_production_status_and_metrics_need_the_operator_token() {
    let (app, _s3) = production_app().await;
    for path in ["/", "/metrics"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), 401, "{path} without a token");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "error");
        let wrong = app
            .client
            .get(app.url(path))
            .header(AUTHORIZATION, "Bearer not-the-token-not-the-token-not-it")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let ok = app
            .client
            .get(app.url(path))
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path} with the token");
        let text = ok.text().await.unwrap();
        assert!(!text.contains(TOKEN));
        if path == "/" {
            let v: Value = serde_json::from_str(&text).expect("scripts still get JSON");
            assert_eq!(v["environment"], "production");
        } else {
            assert!(text.contains("# TYPE"), "Prometheus text");
        }
    }
    // Health routes stay open; a browser is sent to the sign-in form.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let r = app
        .client
        .get(app.url("/"))
        .header(ACCEPT, BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/operator/login?next=%2F");

    // The form's cookie works for browsers; it is not the token and is HttpOnly.
    let r = app
        .post_form("/operator/login", &[("token", TOKEN), ("next", "/")])
        .await;
    assert_eq!(r.status(), 303);
    let cookie = set_cookie(&r, "operator_session").expect("cookie set");
    assert!(!cookie.contains(TOKEN));
    let raw = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        raw.contains("HttpOnly") && raw.contains("SameSite=Strict"),
        "{raw}"
    );
    let page = app
        .client
        .get(app.url("/"))
        .header(ACCEPT, BROWSER)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"queue\""), "the operator page");
    assert!(!html.contains(TOKEN));
    let wrong = app
        .post_form("/operator/login", &[("token", "nope"), ("next", "/")])
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(set_cookie(&wrong, "operator_session").is_none());
    // `next` returns only to an operator page: never off the site, however it is spelled
    // (browsers drop the tab of `/%09/evil.example` and go to `//evil.example`).
    for evil in [
        "/\t/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
    ] {
        let form = format!("/operator/login?next={}", urlencoding(evil));
        let html = app.get(&form).await.text().await.unwrap();
        assert!(!html.contains("evil.example"), "{evil}: {html}");
        let r = app
            .post_form("/operator/login", &[("token", TOKEN), ("next", evil)])
            .await;
        assert_eq!(r.headers()["location"], "/", "{evil}");
    }
    let r = app
        .post_form("/operator/login", &[("token", TOKEN), ("next", "/metrics")])
        .await;
    assert_eq!(r.headers()["location"], "/metrics");
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn production_refuses_to_start_without_an_operator_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_vars(dir.path(), &vars(&[("APP_ENV", "production")]));
    env.insert("OPERATOR_TOKEN".into(), "short".into());
    let out = binary_command(dir.path(), &env)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OPERATOR_TOKEN is malformed (must be at least 32 characters)"),
        "{err}"
    );
    env.remove("OPERATOR_TOKEN");
    let out = binary_command(dir.path(), &env)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("OPERATOR_TOKEN is missing"));
}

#[tokio::test]
async fn only_browsers_get_html_everything_else_the_same_json() {
    let app = spawn_app(&[]).await;
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html;q=0.5"),
    ] {
        let mut req = app.client.get(app.url("/shopify/callback?shop=x"));
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        let r = req.send().await.unwrap();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{accept:?}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "error");
        let index = app.client.get(app.url("/"));
        let index = match accept {
            Some(a) => index.header(ACCEPT, a),
            None => index,
        };
        let v: Value = index.send().await.unwrap().json().await.unwrap();
        assert_eq!(v["service"], "salesbot-sync", "{accept:?}");
    }
    // A browser gets a page for the same error, same status, with a way to start again.
    let r = app
        .client
        .get(app.url("/facebook/login"))
        .header(ACCEPT, BROWSER)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = r.text().await.unwrap();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status}"
    );
    assert!(html.contains("id=\"start-again\""), "{html}");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
}

/// Files (objects) under a folder of the S3 server's store, at any depth.
fn objects_under(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// The `csrf` field of the account page's forms.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a disconnect form")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

pub async fn account_html(app: &TestApp, cookie: &str) -> String {
    let r = app
        .client
        .get(app.url("/account"))
        .header(ACCEPT, BROWSER)
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_account_lists_the_shop_and_disconnecting_it_deletes_its_data() {
    let env = crate::shopify::env().await;
    let (status, _, cookie) = crate::shopify::connect(&env, "acme").await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap().split(';').next().unwrap().to_string();
    let app = &env.app;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let merchant = app
        .state
        .tokens
        .shop(&shop)
        .await
        .unwrap()
        .unwrap()
        .merchant;

    // JSON for scripts: the prefix and the shop's state from its first sync's job.
    let v: Value = app
        .client
        .get(app.url("/account"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["prefix"], format!("users/{merchant}/"));
    assert_eq!(v["shops"][0]["id"], "acme.myshopify.com");
    assert_eq!(v["shops"][0]["sync"]["state"], "synced");
    assert_eq!(v["shops"][0]["sync"]["percent"], 100);
    let progress: Value = app
        .client
        .get(app.url("/account/progress"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(progress["syncs"][0]["target"], "shop:acme.myshopify.com");
    assert_eq!(progress["syncs"][0]["finished"], true);
    // No session: a clear 401, never another merchant's data.
    assert_eq!(app.get("/account").await.status(), 401);
    assert_eq!(app.get("/account/progress").await.status(), 401);

    // The page shows no token.
    let html = account_html(app, &cookie).await;
    let token = env.fake.last_access_token("acme.myshopify.com").unwrap();
    assert!(!html.contains(&token));
    let csrf = csrf_of(&html);

    // Without the form token, or for a shop of another merchant: refused, nothing queued.
    let path = "/account/shops/acme.myshopify.com/disconnect";
    let post = |form: Vec<(&'static str, String)>, cookie: String, path: &'static str| {
        let client = app.client.clone();
        let url = app.url(path);
        async move {
            client
                .post(url)
                .header(COOKIE, cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(vec![], cookie.clone(), path).await.status(), 403);
    assert_eq!(
        post(vec![("csrf", "0".repeat(32))], cookie.clone(), path)
            .await
            .status(),
        403
    );
    let (_, other) = crate::facebook::session(app).await;
    let other_html_csrf = {
        // Another merchant's session has its own form token, and does not own the shop.
        let html = app
            .client
            .get(app.url("/account"))
            .header(ACCEPT, BROWSER)
            .header(COOKIE, &other)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!html.contains("acme.myshopify.com"));
        html
    };
    assert!(!other_html_csrf.contains(&csrf));
    assert!(app.state.tokens.shop(&shop).await.unwrap().is_some());

    // With it: the same deletion as Shopify's shop/redact.
    let prefix = keys::shop_prefix(&merchant, &shop);
    assert!(objects_under(&env.s3.object_path(prefix.as_str())) > 0);
    let r = post(vec![("csrf", csrf)], cookie.clone(), path).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/account?notice=shop-disconnecting"
    );
    eventually("the shop deleted", || async {
        app.state.tokens.shop(&shop).await.unwrap().is_none()
    })
    .await;
    assert!(
        objects_under(&env.s3.object_path(prefix.as_str())) == 0,
        "no object of the shop is left"
    );
    // Its last shop gone, the merchant's session ends with it (the step after the shop's
    // record is deleted).
    eventually("the merchant's session ended", || async {
        let r = app.client.get(app.url("/account")).header(COOKIE, &cookie);
        r.send().await.unwrap().status() == 401
    })
    .await;
}

#[tokio::test]
async fn disconnecting_a_page_deletes_that_page_only() {
    let env = fb_env().await;
    let (merchant, cookie) = crate::facebook::session(&env.app).await;
    let (status, v) = fb_connect(&env.app, &env.fake, &cookie, 0).await;
    assert_eq!(status, 200, "{v}");
    let pages = env.fake.page_ids(0);
    let (gone, kept) = (
        PageId::parse(&pages[0]).unwrap(),
        PageId::parse(&pages[1]).unwrap(),
    );
    let app = &env.app;
    let html = account_html(app, &cookie).await;
    for p in &pages {
        assert!(html.contains(&format!("/account/pages/{p}/disconnect")));
        assert!(
            !html.contains(&env.fake.page_token(p)),
            "no page token on the page"
        );
    }
    let csrf = csrf_of(&html);
    drained(app).await;
    let r = app
        .client
        .post(app.url(&format!("/account/pages/{gone}/disconnect")))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    eventually("the page deleted", || async {
        app.state.tokens.page(&gone).await.unwrap().is_none()
    })
    .await;
    let gone_dir = env
        .s3
        .object_path(keys::page_prefix(&merchant, &gone).as_str());
    assert_eq!(objects_under(&gone_dir), 0, "its objects are gone");
    assert!(
        app.state.tokens.page(&kept).await.unwrap().is_some(),
        "the other page stays"
    );
    let kept_dir = env
        .s3
        .object_path(keys::page_prefix(&merchant, &kept).as_str());
    assert!(objects_under(&kept_dir) > 0, "and keeps its objects");
    assert!(
        env.fake.subscribed_fields(gone.as_str()).is_empty(),
        "the app unsubscribed from it"
    );
    // The merchant still has pages: still signed in; the page is no longer listed.
    let html = account_html(app, &cookie).await;
    assert!(!html.contains(&format!("/account/pages/{gone}/disconnect")));
    assert!(html.contains(&format!("/account/pages/{kept}/disconnect")));
}

#[test]
fn the_demo_refuses_production_settings() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("APP_ENV".to_string(), "production".to_string())].into();
    let out = binary_command(dir.path(), &env)
        .args(["demo", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not run with APP_ENV=production"),
        "{err}"
    );
    assert!(
        !dir.path().join("demo-data").exists(),
        "nothing was created"
    );
}

#[tokio::test]
async fn a_merchant_signs_out_with_the_account_form_and_only_that_session_ends() {
    let (app, _s3) = production_app().await;
    let app = &app;
    let (merchant, cookie) = crate::facebook::session(app).await;
    let other = format!(
        "session_id={}",
        app.state.sessions.create(merchant).await.unwrap()
    );
    let html = account_html(app, &cookie).await;
    assert!(html.contains("action=\"/account/sign-out\""), "{html}");
    let csrf = csrf_of(&html);
    let sign_out = |form: Vec<(&'static str, String)>, cookie: String| {
        let request = app.client.post(app.url("/account/sign-out"));
        async move {
            let r = request.header(COOKIE, cookie).form(&form).send().await;
            r.unwrap()
        }
    };
    // Without the form token (another site's form): refused, still signed in.
    assert_eq!(sign_out(vec![], cookie.clone()).await.status(), 403);
    account_html(app, &cookie).await; // still 200

    let r = sign_out(vec![("csrf", csrf)], cookie.clone()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/connect");
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cleared.starts_with("session_id=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The old cookie no longer works, even if the browser kept it; the merchant's other
    // browser stays signed in.
    let gone = app.client.get(app.url("/account")).header(COOKIE, &cookie);
    assert_eq!(gone.send().await.unwrap().status(), 401);
    account_html(app, &other).await;
}
