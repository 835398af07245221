//! Several instances on one PostgreSQL database: two real server processes on different ports,
//! deliveries spread over both, one killed with SIGKILL mid-load. These run in the PostgreSQL
//! pass of the suite (`scripts/test`, CI: `TEST_DATABASE_URL` set); SQLite has one server per
//! queue file by design (the queue lock, tested in `queue.rs`).

use std::collections::HashMap;
use std::time::Duration;

use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};
use salesbot_sync::ids::{MerchantId, PageId, Psid, ShopDomain};
use salesbot_sync::objects::keys;
use serde_json::Value;
use sqlx::Row;

use crate::facebook::{fb_connect, session};
use crate::helpers::*;
use crate::operations::shopify_connect;
use crate::recovery::served_at;

async fn pg(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap()
}

/// Every message mid stored under `objects`, with how many times.
fn stored_mids(objects: &std::path::Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut stack = vec![objects.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            // A write in progress (`.tmp-…`, renamed into place when complete) is not an
            // object: counting it would count its conversation twice.
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(&p).unwrap_or_default())
            else {
                continue;
            };
            for item in v.as_array().into_iter().flatten() {
                if let Some(mid) = item.pointer("/message/mid").and_then(Value::as_str) {
                    *seen.entry(mid.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_queue_and_the_survivor_finishes_a_killed_ones_work() {
    if !on_postgres() {
        return; // the PostgreSQL pass runs it
    }
    let database = fresh_database_url().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let mut shared = fake.vars();
    shared.extend(vars(&[
        ("DATABASE_URL", &database),
        ("STORAGE_DIR", &objects.path().display().to_string()),
        ("JOB_LEASE_SECS", "3"),
        // A tick every 2 seconds, on both instances.
        ("POLL_SCHEDULE", "*/2 * * * * *"),
        ("POLL_WINDOW_MINUTES", "0"),
    ]));
    // A merchant with a connected page, set up through an app on the shared database.
    let setup_dir = tempfile::tempdir().unwrap();
    let setup = spawn_app_at(setup_dir.path(), &shared).await;
    let (merchant, cookie) = session(&setup).await;
    assert_eq!(fb_connect(&setup, &fake, &cookie, 0).await.0, 200);
    drained(&setup).await;
    setup.stop().await.unwrap();
    let page = fake.page_ids(0)[0].clone();

    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_binary(da.path(), &served_at(free_port(), shared.clone()));
    let b = start_binary(db.path(), &served_at(free_port(), shared.clone()));
    let client = reqwest::Client::new();
    let urls = [a.url("/facebook/webhook"), b.url("/facebook/webhook")];

    // 400 messages over 20 conversations, alternating between the instances, 16 at a time;
    // instance B is killed with SIGKILL half way.
    let mut acked = Vec::new();
    let mut b = Some(b);
    let bodies: Vec<(usize, String, String)> = (0..400)
        .map(|i| {
            let psid = format!("88800{:04}", i % 20);
            let mid = format!("m_inst_{i}");
            let body = format!(
                r#"{{"object":"page","entry":[{{"id":"{page}","time":{t},"messaging":[{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{page}"}},"timestamp":{t},"message":{{"mid":"{mid}","text":"msg {i}"}}}}]}}]}}"#,
                t = 1_700_000_000_000i64 + i as i64 * 1000
            );
            (i, mid, body)
        })
        .collect();
    for chunk in bodies.chunks(16) {
        if chunk[0].0 >= 200 {
            if let Some(mut killed) = b.take() {
                killed.child.kill().unwrap();
                killed.child.wait().unwrap();
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (i, mid, body) in chunk.iter().cloned() {
            let url = urls[i % 2].clone();
            let (client, sig) = (client.clone(), fake.signature_256(body.as_bytes()));
            set.spawn(async move {
                let r = client
                    .post(url)
                    .header("X-Hub-Signature-256", sig)
                    .body(body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                (mid, r.map(|r| r.status().as_u16()).unwrap_or(0))
            });
        }
        while let Some(r) = set.join_next().await {
            let (mid, status) = r.unwrap();
            if status == 200 {
                acked.push(mid);
            }
        }
    }
    assert!(
        acked.len() >= 290,
        "both served until the kill: {} acknowledged",
        acked.len()
    );

    // Every acknowledged message is stored exactly once: the survivor takes over what the
    // killed instance had queued or leased once its leases (3 s) run out.
    let mut last = HashMap::new();
    for _ in 0..120 {
        last = stored_mids(objects.path());
        if acked.iter().all(|m| last.contains_key(m)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let missing: Vec<&String> = acked.iter().filter(|m| !last.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages never stored: {missing:?}",
        missing.len()
    );
    let twice: Vec<(&String, &usize)> = last.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let key = keys::conversation(
        &merchant,
        &PageId::parse(&page).unwrap(),
        &Psid::parse("888000000").unwrap(),
    );
    assert!(objects.path().join(key.as_str()).exists());

    // Each 2-second tick fired once across both instances: one poll run per claimed tick.
    // The survivor stops first, so no tick lands between the two counts.
    let (_, logs) = a.terminate();
    let pool = pg(&database).await;
    let ticks: i64 = sqlx::query("SELECT COUNT(*) FROM scheduler_ticks WHERE job = 'poll'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    let runs: i64 = sqlx::query("SELECT COUNT(*) FROM runs WHERE trigger = 'schedule'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(ticks >= 2, "ticks fired: {ticks}");
    // Never two runs for one tick; the killed instance may have claimed a tick and died
    // before queueing its run (that tick is lost, the next one comes), so one fewer is fine.
    assert!(
        runs <= ticks && runs + 1 >= ticks,
        "one poll run per tick, whichever instance fired it: {runs} runs, {ticks} ticks"
    );
    assert!(
        !logs.contains(&database),
        "the database URL is never logged"
    );
}

/// Renames acme's product `n` at the fake Shopify and posts the signed `products/update`
/// delivery (with event id `event`) to the server at `base`; returns the HTTP status.
async fn rename_product(
    client: &reqwest::Client,
    base: &str,
    shopify: &FakeShopify,
    (n, title, event): (usize, &str, &str),
) -> u16 {
    shopify.set_product_title("acme.myshopify.com", n, title);
    let body = shopify
        .product_webhook_body("acme.myshopify.com", n)
        .to_string();
    let secret = shopify.config().api_secret;
    client
        .post(format!("{base}/shopify/webhook"))
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_b64(secret.as_bytes(), body.as_bytes()),
        )
        .header("X-Shopify-Event-Id", event)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `n` signed Messenger deliveries to `url`, one message each over `conversations`
/// conversations; returns the mids acknowledged with 200.
async fn deliver_messages(
    fake: &FakeGraph,
    url: &str,
    page: &str,
    tag: &str,
    n: usize,
) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for i in 0..n {
        let psid = format!("77700{:04}", i % 4);
        let mid = format!("m_{tag}_{i}");
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"{page}","time":{t},"messaging":[{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{page}"}},"timestamp":{t},"message":{{"mid":"{mid}","text":"msg {i}"}}}}]}}]}}"#,
            t = 1_700_000_000_000i64 + i as i64 * 1000
        );
        let r = client
            .post(url)
            .header("X-Hub-Signature-256", fake.signature_256(body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            acked.push(mid);
        }
    }
    acked
}

/// Waits until the queue shows a running event of each kind, leased before `b` started.
async fn running_kinds(pool: &sqlx::PgPool, kinds: &[&str]) {
    eventually_within(
        Duration::from_secs(30),
        "jobs of each kind running",
        || async {
            let running: Vec<String> =
                sqlx::query("SELECT DISTINCT kind FROM events WHERE status = 'running'")
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
            kinds.iter().all(|k| running.iter().any(|r| r == k))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_instance_abandons_its_leased_work_and_every_message_is_stored_once() {
    if !on_postgres() {
        return; // the PostgreSQL pass runs it
    }
    let database = fresh_database_url().unwrap();
    let s3 = start_s3().await;
    let graph = FakeGraph::start(FakeGraphConfig::default()).await;
    let shopify = FakeShopify::start(FakeConfig::default()).await;
    let mut shared = graph.vars();
    shared.extend(shopify.vars());
    shared.extend(s3.vars());
    shared.extend(vars(&[
        ("DATABASE_URL", &database),
        ("JOB_LEASE_SECS", "3"),
        ("SHOPIFY_WEBHOOK_DEBOUNCE_MS", "0"),
    ]));
    // A merchant with a shop and a page, set up through an app on the shared database.
    let setup_dir = tempfile::tempdir().unwrap();
    let setup = spawn_app_at(setup_dir.path(), &shared).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (answer, cookie) = shopify_connect(&client, &setup.address, &shopify, "acme").await;
    let merchant = MerchantId::parse(answer["user_uuid"].as_str().unwrap()).unwrap();
    assert_eq!(fb_connect(&setup, &graph, &cookie, 0).await.0, 200);
    drained(&setup).await;
    setup.stop().await.unwrap();
    let page = graph.page_ids(0)[0].clone();

    // Instance A alone, with every object write taking 2 s: it holds a shop sync and
    // conversation merges when it is frozen.
    let da = tempfile::tempdir().unwrap();
    let a = start_binary(da.path(), &served_at(free_port(), shared.clone()));
    s3.set_put_delay(Duration::from_secs(2));
    let mut acked = deliver_messages(&graph, &a.url("/facebook/webhook"), &page, "a", 40).await;
    let renamed = (1, "Renamed while paused", "paused-1");
    assert_eq!(
        rename_product(&client, &a.url(""), &shopify, renamed).await,
        200
    );
    let pool = pg(&database).await;
    running_kinds(&pool, &["facebook_message", "shopify"]).await;
    a.pause();

    // Instance B takes A's work over once A's leases ran out with no renewal (A's session,
    // and so its liveness lock, is still open: it is not dead, only frozen).
    s3.set_put_delay(Duration::ZERO);
    let db = tempfile::tempdir().unwrap();
    let b = start_binary(db.path(), &served_at(free_port(), shared.clone()));
    acked.extend(deliver_messages(&graph, &b.url("/facebook/webhook"), &page, "b", 8).await);
    assert_eq!(acked.len(), 48, "every delivery acknowledged");
    let root = s3.root.path().join(S3_BUCKET);
    eventually_within(
        Duration::from_secs(60),
        "B stores every message",
        || async {
            let stored = stored_mids(&root);
            acked.iter().all(|m| stored.contains_key(m))
        },
    )
    .await;
    let products = s3.object_path(
        keys::shop_products(&merchant, &ShopDomain::parse("acme.myshopify.com").unwrap()).as_str(),
    );
    eventually_within(
        Duration::from_secs(30),
        "B writes the shop's change",
        || async {
            String::from_utf8_lossy(&std::fs::read(&products).unwrap_or_default())
                .contains("Renamed while paused")
        },
    )
    .await;

    // A wakes up: it writes nothing more for the work it lost, and says so.
    a.resume();
    eventually_within(Duration::from_secs(30), "A abandons its jobs", || async {
        a.logs().contains("job abandoned")
    })
    .await;
    eventually_within(Duration::from_secs(30), "queue settled", || async {
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) FROM events WHERE status IN ('pending', 'running', 'failed', 'dead')",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        open == 0
    })
    .await;
    let stored = stored_mids(&root);
    let missing: Vec<&String> = acked.iter().filter(|m| !stored.contains_key(*m)).collect();
    assert!(missing.is_empty(), "never stored: {missing:?}");
    let twice: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(
        String::from_utf8_lossy(&std::fs::read(&products).unwrap())
            .contains("Renamed while paused"),
        "the older snapshot was not written last"
    );
    let abandoned = a
        .logs()
        .lines()
        .filter(|l| l.contains("job abandoned"))
        .count();
    assert!(
        abandoned >= 2,
        "the shop sync and a merge abandoned: {abandoned}"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_refresh_a_shops_token_once() {
    if !on_postgres() {
        return; // the PostgreSQL pass runs it
    }
    let database = fresh_database_url().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let fake = FakeShopify::start(FakeConfig::default()).await;
    fake.set_expiring(true);
    let mut shared = fake.vars();
    shared.extend(vars(&[
        ("DATABASE_URL", &database),
        ("STORAGE_DIR", &objects.path().display().to_string()),
        ("SHOPIFY_WEBHOOK_DEBOUNCE_MS", "0"),
    ]));
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_binary(da.path(), &served_at(free_port(), shared.clone()));
    let b = start_binary(db.path(), &served_at(free_port(), shared.clone()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (answer, _) = shopify_connect(&client, &a.url(""), &fake, "acme").await;
    assert_eq!(answer["upload_status"]["status"], "success", "{answer}");
    let refreshes = fake.refreshes();
    // The access token expires; changes reach both instances at once.
    fake.expire_access_tokens("acme.myshopify.com");
    let secret = fake.config().api_secret;
    let mut set = tokio::task::JoinSet::new();
    for (n, base) in [a.url(""), b.url(""), a.url(""), b.url("")]
        .into_iter()
        .enumerate()
    {
        fake.set_product_title("acme.myshopify.com", n, &format!("Renamed {n}"));
        let body = fake
            .product_webhook_body("acme.myshopify.com", n)
            .to_string();
        let sig = sign_b64(secret.as_bytes(), body.as_bytes());
        let client = client.clone();
        set.spawn(async move {
            client
                .post(format!("{base}/shopify/webhook"))
                .header("X-Shopify-Topic", "products/update")
                .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
                .header("X-Shopify-Hmac-Sha256", sig)
                .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    let pool = pg(&database).await;
    eventually_within(Duration::from_secs(30), "every delivery processed", || async {
        let open: i64 = sqlx::query(
            "SELECT COUNT(*) FROM events WHERE kind = 'shopify' AND status IN ('pending', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        open == 0
    })
    .await;
    assert_eq!(
        fake.refreshes(),
        refreshes + 1,
        "one refresh across both instances"
    );
    let status: String =
        sqlx::query("SELECT status FROM shops WHERE domain = 'acme.myshopify.com'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(status, "active", "no refresh token was spent twice");
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_to_postgres_moves_a_sqlite_install_that_keeps_working() {
    if !on_postgres() {
        return; // the PostgreSQL pass runs it
    }
    // A SQLite install: a shop, three pages, a session, and a delivery still pending.
    let dir = tempfile::tempdir().unwrap();
    let shopify = FakeShopify::start(FakeConfig::default()).await;
    let graph = FakeGraph::start(FakeGraphConfig::default()).await;
    let mut extra = shopify.vars();
    extra.extend(graph.vars());
    extra.extend(vars(&[
        (SQLITE_ONLY, "1"),
        ("SHOPIFY_WEBHOOK_DEBOUNCE_MS", "4000"),
    ]));
    let app = spawn_app_at(dir.path(), &extra).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (answer, cookie) = shopify_connect(&client, &app.address, &shopify, "acme").await;
    let merchant = answer["user_uuid"].as_str().unwrap().to_string();
    let (status, _) = crate::facebook::fb_connect(&app, &graph, &cookie, 0).await;
    assert_eq!(status, 200);
    drained(&app).await;
    let renamed = (3, "Moved to PostgreSQL", "moved-1");
    assert_eq!(
        rename_product(&client, &app.address, &shopify, renamed).await,
        200
    );
    app.stop().await.unwrap();

    // The copy: into a new database, verified.
    let database = fresh_database_url().unwrap();
    let mut env = test_vars(dir.path(), &extra);
    env.insert("DATABASE_URL".into(), database.clone());
    let out = binary_command(dir.path(), &env)
        .arg("copy-to-postgres")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified the counts"), "{stdout}");
    assert!(!stdout.contains(&database));
    // A second copy into the same (no longer empty) database is refused, changing nothing.
    let again = binary_command(dir.path(), &env)
        .arg("copy-to-postgres")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // The same install on PostgreSQL: the session still signs the merchant in, the pending
    // delivery runs, the tokens decrypt (the shop syncs), the UUID is the same.
    let mut on_pg = extra.clone();
    on_pg.retain(|(k, _)| k != SQLITE_ONLY);
    on_pg.extend(vars(&[("DATABASE_URL", &database)]));
    // Same folder: the same local object store (the SQLite files there are no longer read).
    let app = spawn_app_at(dir.path(), &on_pg).await;
    let account: Value = app
        .client
        .get(app.url("/account"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["user_uuid"], merchant.as_str());
    assert_eq!(account["pages"].as_array().unwrap().len(), 3);
    let products = objects_of(dir.path(), &merchant);
    eventually_within(
        Duration::from_secs(20),
        "the pending delivery ran on PostgreSQL",
        || {
            let products = products.clone();
            async move {
                std::fs::read_to_string(&products).is_ok_and(|s| s.contains("Moved to PostgreSQL"))
            }
        },
    )
    .await;
    app.stop().await.unwrap();
}

fn objects_of(dir: &std::path::Path, merchant: &str) -> std::path::PathBuf {
    let merchant = MerchantId::parse(merchant).unwrap();
    let shop = salesbot_sync::ids::ShopDomain::parse("acme.myshopify.com").unwrap();
    dir.join("objects")
        .join(keys::shop_products(&merchant, &shop).as_str())
}
