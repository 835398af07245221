//! Operations: the seed 7.2 backup/restore scenario end to end, the backup CLI, the scheduler,
//! and secrets kept out of logs.

use std::collections::HashMap;
use std::time::Duration;

use salesbot_sync::config::Settings;
use salesbot_sync::ids::{MerchantId, PageId, Psid, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::platforms::shopify::signature::{sign_oauth_query, sign_webhook};
use serde_json::Value;

use crate::facebook::fb_connect;
use crate::helpers::*;
use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};

struct Fakes {
    shopify: FakeShopify,
    graph: FakeGraph,
    s3: S3Server,
}

async fn fakes() -> Fakes {
    Fakes {
        shopify: FakeShopify::start(FakeConfig {
            products: 60,
            ..FakeConfig::default()
        })
        .await,
        graph: FakeGraph::start(FakeGraphConfig {
            pages_per_user: 1,
            conversations_per_page: 3,
            ..FakeGraphConfig::default()
        })
        .await,
        s3: start_s3().await,
    }
}

impl Fakes {
    fn vars(&self) -> Vec<(String, String)> {
        let mut v = self.shopify.vars();
        v.extend(self.graph.vars());
        v.extend(self.s3.vars());
        v
    }
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

/// Where Shopify sends the browser back after the merchant approves: a signed query.
fn shopify_callback_url(base: &str, fake: &FakeShopify, shop: &str, state: String) -> String {
    let mut params = vec![
        ("code".to_string(), fake.issue_code(shop)),
        ("shop".to_string(), shop.to_string()),
        ("state".to_string(), state),
        ("timestamp".to_string(), now()),
    ];
    let h = sign_oauth_query(fake.config().api_secret.as_bytes(), &params);
    params.push(("hmac".to_string(), h));
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    format!("{base}/shopify/callback?{q}")
}

fn state_of(redirect: &reqwest::Response) -> String {
    let loc = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let state = loc.query_pairs().find(|(k, _)| k == "state").unwrap().1;
    state.to_string()
}

/// A Shopify connection and a Facebook connection started in two tabs of one browser (one
/// cookie jar) both finish: each provider's flow has its own binding cookie.
#[tokio::test]
async fn parallel_shopify_and_facebook_flows_in_one_browser_both_succeed() {
    let f = fakes().await;
    let app = spawn_app(&f.vars()).await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let base = app.address.clone();
    let r = browser
        .get(format!("{base}/shopify/acme/login"))
        .send()
        .await
        .unwrap();
    let state = state_of(&r);
    let r = browser
        .get(shopify_callback_url(
            &base,
            &f.shopify,
            "acme.myshopify.com",
            state,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "signed in");

    // Tab 1 starts adding a second shop, tab 2 starts connecting Facebook, then both return.
    let r = browser
        .get(format!("{base}/shopify/beta/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let shop_state = state_of(&r);
    let r = browser
        .get(format!("{base}/facebook/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let back = f
        .graph
        .approve(r.headers()["location"].to_str().unwrap(), 0)
        .unwrap();
    let r = browser
        .get(shopify_callback_url(
            &base,
            &f.shopify,
            "beta.myshopify.com",
            shop_state,
        ))
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, 200, "Shopify flow: {body}");
    let r = browser
        .get(back.split('#').next().unwrap())
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, 200, "Facebook flow: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["pages"]["data"].as_array().unwrap().len(), 1, "{body}");
    app.stop().await.unwrap();
}

/// Shopify connect through `base` (any running server); returns (json, session cookie).
pub async fn shopify_connect(
    client: &reqwest::Client,
    base: &str,
    fake: &FakeShopify,
    name: &str,
) -> (Value, String) {
    let shop = format!("{name}.myshopify.com");
    let r = client
        .get(format!("{base}/shopify/{name}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let binding = set_cookie(&r, "oauth_binding_shopify").unwrap();
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = loc
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let r = client
        .get(shopify_callback_url(base, fake, &shop, state))
        .header("Cookie", binding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = set_cookie(&r, "session_id").unwrap();
    (r.json().await.unwrap(), cookie)
}

/// Seed chapter 7.2: connect a shop and a page, back up, lose the databases, restore,
/// restart — the same UUIDs, and webhooks and polls keep writing to the same keys.
#[tokio::test]
async fn backup_lose_restore_restart_keeps_uuids_and_keys() {
    let f = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    // Backups are of the SQLite files (on PostgreSQL the database's own backups apply).
    let mut sqlite = f.vars();
    sqlite.extend(vars(&[(SQLITE_ONLY, "1")]));
    let app = spawn_app_at(dir.path(), &sqlite).await;

    let (shop_json, cookie) = shopify_connect(&app.client, &app.address, &f.shopify, "acme").await;
    let uuid = MerchantId::parse(shop_json["user_uuid"].as_str().unwrap()).unwrap();
    let (status, fb_json) = fb_connect(&app, &f.graph, &cookie, 0).await;
    assert_eq!(status, 200, "{fb_json}");
    assert_eq!(
        fb_json["user_uuid"],
        uuid.to_string(),
        "Facebook joins the Shopify merchant"
    );
    drained(&app).await;

    let report = salesbot_sync::backup::backup_all(&app.state.config, None)
        .await
        .unwrap();
    app.stop().await.unwrap();

    // Lose every database.
    for name in ["tokens.db", "sessions.db", "events.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{name}{suffix}")));
        }
    }
    let settings = Settings::from_vars(&test_vars(dir.path(), &sqlite)).unwrap();
    let restored = salesbot_sync::backup::restore(&settings, &report.set_dir).unwrap();
    assert_eq!(restored.restored.len(), 3);

    // Restart on the restored databases.
    let app = spawn_app_at(dir.path(), &sqlite).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let page = PageId::parse(&f.graph.page_ids(0)[0]).unwrap();
    assert_eq!(
        app.state
            .tokens
            .shop(&shop)
            .await
            .unwrap()
            .unwrap()
            .merchant,
        uuid
    );
    assert_eq!(
        app.state
            .tokens
            .page(&page)
            .await
            .unwrap()
            .unwrap()
            .merchant,
        uuid
    );

    // A Shopify webhook after a product rename rewrites the same key.
    f.shopify
        .set_product_title("acme.myshopify.com", 0, "Premium Snowboard Pro");
    let body = br#"{"id":1001,"title":"Premium Snowboard Pro"}"#;
    let r = app
        .client
        .post(app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header("X-Shopify-Event-Id", "after-restore-1")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(f.shopify.config().api_secret.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A Messenger message for a new customer lands in the same page folder.
    let msg = format!(
        r#"{{"object":"page","entry":[{{"id":"{page}","time":1,"messaging":[{{"sender":{{"id":"123456789"}},"recipient":{{"id":"{page}"}},"timestamp":1700000000000,"message":{{"mid":"m_after_restore","text":"hello again"}}}}]}}]}}"#
    );
    let r = app
        .client
        .post(app.url("/facebook/webhook"))
        .header("X-Hub-Signature-256", f.graph.signature_256(msg.as_bytes()))
        .body(msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drained(&app).await;
    let read = |k: keys::ObjectKey| -> Value {
        serde_json::from_slice(&std::fs::read(f.s3.object_path(k.as_str())).unwrap()).unwrap()
    };
    assert_eq!(
        read(keys::shop_products(&uuid, &shop))["products"][0]["title"],
        "Premium Snowboard Pro"
    );
    let conv = read(keys::conversation(
        &uuid,
        &page,
        &Psid::parse("123456789").unwrap(),
    ));
    assert_eq!(conv[0]["message"]["mid"], "m_after_restore");

    // Polls keep writing to the same keys.
    f.graph.set_page_name(page.as_str(), "New Store Name");
    let run = poll_everything(&app).await;
    assert_eq!(run.failed(), 0, "{}: {:?}", run.line(), run.failures);
    assert_eq!(
        read(keys::page_metadata(&uuid, &page))["name"],
        "New Store Name"
    );
    let listed = app
        .state
        .objects
        .list(&keys::merchant_prefix(&uuid))
        .await
        .unwrap();
    assert!(listed.len() >= 4, "{listed:?}");

    // Reconnecting the same shop after the restore answers the same UUID.
    let (again, _) = shopify_connect(&app.client, &app.address, &f.shopify, "acme").await;
    assert_eq!(again["user_uuid"], uuid.to_string());
    drained(&app).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn backup_and_restore_commands_report_and_refuse_bad_sets() {
    let dir = tempfile::tempdir().unwrap();
    let env = test_vars(dir.path(), &vars(&[(SQLITE_ONLY, "1")]));
    // Some data to back up.
    {
        let settings = Settings::from_vars(&env).unwrap();
        let state = salesbot_sync::state::AppState::build(settings)
            .await
            .unwrap();
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        state
            .tokens
            .save_shop_grant(
                &shop,
                salesbot_sync::store::tokens::ShopGrant {
                    access_token: secrecy::SecretString::from("shpat_x".to_string()),
                    scopes: String::new(),
                    expires_at: None,
                    refresh_token: None,
                    refresh_token_expires_at: None,
                },
                None,
            )
            .await
            .unwrap();
    }
    let out = binary_command(dir.path(), &env)
        .arg("backup")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One set folder (beside it, the last backup's outcome for the operator page).
    let sets: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(sets.len(), 1);
    let last = salesbot_sync::backup::last_outcome(&dir.path().join("backups")).unwrap();
    assert!(last.ok, "{}", last.detail);
    let set = sets[0].clone();

    // A damaged copy is refused with one line, exit non-zero, live data untouched.
    let tokens_copy = set.join("tokens.db");
    let mut bytes = std::fs::read(&tokens_copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&tokens_copy, bytes).unwrap();
    let live_before = std::fs::read(dir.path().join("tokens.db")).unwrap();
    let out = binary_command(dir.path(), &env)
        .args(["restore", "--from"])
        .arg(&set)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("tokens.db"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("tokens.db")).unwrap(),
        live_before
    );

    // A folder that is not a backup set.
    let out = binary_command(dir.path(), &env)
        .args(["restore", "--from", "/nonexistent-backup"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    for cmd in [
        &["backup", "--help"][..],
        &["restore", "--help"],
        &["poll", "--help"],
        &["rotate-key", "--help"],
    ] {
        let out = binary_command(dir.path(), &HashMap::new())
            .args(cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd:?}");
    }
}

#[tokio::test]
async fn the_scheduler_polls_and_backs_up_on_its_schedules() {
    let f = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let mut extra = f.vars();
    extra.extend(vars(&[
        ("POLL_SCHEDULE", "* * * * * *"),
        ("POLL_WINDOW_MINUTES", "0"),
        ("BACKUP_SCHEDULE", "*/2 * * * * *"),
        ("BACKUP_KEEP", "2"),
        // The backup job is for SQLite files (none is scheduled on PostgreSQL).
        (SQLITE_ONLY, "1"),
    ]));
    let app = spawn_app_at(dir.path(), &extra).await;
    shopify_connect(&app.client, &app.address, &f.shopify, "acme").await;
    drained(&app).await;
    let before = f.shopify.requests("Shop");
    eventually("two scheduled polls", || {
        let f = &f;
        async move { f.shopify.requests("Shop") >= before + 2 }
    })
    .await;
    // Each tick is a run of queued jobs; finished runs get their summary.
    let events = app.state.events.clone();
    eventually("a scheduled run summarised", || {
        let events = events.clone();
        async move {
            events.runs(false, 10).await.unwrap().iter().any(|r| {
                r.summary
                    .as_ref()
                    .is_some_and(|s| s["shops"]["ok"] == 1 && s["subscription_checks"]["ok"] == 1)
            })
        }
    })
    .await;
    eventually("scheduled backups, pruned to BACKUP_KEEP", || {
        let d = dir.path().join("backups");
        async move {
            let n = std::fs::read_dir(&d)
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.path().join("manifest.json").exists())
                        .count()
                })
                .unwrap_or(0);
            n == 2
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let n = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("manifest.json").exists())
        .count();
    assert_eq!(n, 2, "BACKUP_KEEP respected");
    app.stop().await.unwrap();
}

/// A callback whose work failed in the object store answers a plain message and a
/// correlation id; the cause (key, bucket, endpoint) is only in the log line with that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_in_a_callback_answers_a_correlation_id_not_the_bucket_or_key() {
    let f = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut extra = f.vars();
    extra.extend(vars(&[
        ("RUST_LOG", "info"),
        ("BIND_ADDR", &format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}")),
        // The initial sync's retries end (dead-lettered) while the callback waits for it.
        ("RETRY_HORIZON_HOURS", "0.0005"),
        ("SHOPIFY_INITIAL_SYNC_WAIT_SECS", "30"),
    ]));
    let server = start_binary(dir.path(), &extra);
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    f.s3.set_down(true);
    let (answer, _) = shopify_connect(&client, &base, &f.shopify, "acme").await;
    let upload = &answer["upload_status"];
    assert_eq!(upload["status"], "failed", "{answer}");
    let id = upload["correlation_id"].as_str().expect("a correlation id");
    let text = answer.to_string();
    let endpoint = f.s3.endpoint.trim_start_matches("http://").to_string();
    for leak in [
        S3_BUCKET,
        endpoint.as_str(),
        "users/",
        "shop_products",
        "503",
    ] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    let (_, logs) = server.terminate();
    let line = logs
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("no log line with {id}:\n{logs}"));
    assert!(line.contains("users/"), "the cause is logged: {line}");
}

/// The whole connect flow of both platforms through the real binary at debug level: no
/// secret or token ever appears in a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs() {
    let f = fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut extra = f.vars();
    extra.extend(vars(&[
        ("RUST_LOG", "debug"),
        ("BIND_ADDR", &format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}")),
    ]));
    let server = start_binary(dir.path(), &extra);
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (_, cookie) = shopify_connect(&client, &base, &f.shopify, "acme").await;
    // Facebook connect against the child process.
    let r = client
        .get(format!("{base}/facebook/login"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let binding = set_cookie(&r, "oauth_binding_facebook").unwrap();
    let back = f
        .graph
        .approve(r.headers()["location"].to_str().unwrap(), 0)
        .unwrap();
    let r = client
        .get(back.split('#').next().unwrap())
        .header("Cookie", format!("{cookie}; {binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A forged webhook too (rejections are logged).
    let r = client
        .post(format!("{base}/shopify/webhook"))
        .header("X-Shopify-Hmac-Sha256", "AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, logs) = server.terminate();
    assert!(status.success());
    assert!(
        logs.contains("shop connected") && logs.contains("Facebook connected"),
        "flows ran"
    );

    let session = cookie.trim_start_matches("session_id=").to_string();
    let mut secrets = vec![
        f.shopify.config().api_secret,
        f.graph.config().app_secret,
        S3_SECRET.to_string(),
        STATE_SECRET.to_string(),
        ENCRYPTION_KEY_B64.to_string(),
        session,
    ];
    secrets.extend(f.shopify.last_access_token("acme.myshopify.com"));
    secrets.extend(f.graph.all_tokens());
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !logs.contains(&s),
            "a secret appeared in the logs: {}…",
            &s[..4.min(s.len())]
        );
    }
}
