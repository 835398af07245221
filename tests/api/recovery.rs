//! Work that outlives a process: the real binary killed with SIGKILL mid-job and started again,
//! and `salesbot-sync poll` working through the server's queue (or alone).

use std::time::Duration;

use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};
use salesbot_sync::ids::{MerchantId, PageId, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::store::events::EventStatus;
use serde_json::{json, Value};

use crate::facebook::{fb_connect_at, signed_request};
use crate::helpers::*;
use crate::operations::shopify_connect;

/// Settings for a binary whose public address is known before it starts (self-tests post
/// to it).
pub fn served_at(port: u16, mut extra: Vec<(String, String)>) -> Vec<(String, String)> {
    extra.extend(vars(&[
        ("BIND_ADDR", &format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL", &format!("http://127.0.0.1:{port}")),
    ]));
    extra
}

fn kill(mut server: ChildServer) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

fn products_file(
    dir: &std::path::Path,
    merchant: &MerchantId,
    shop: &ShopDomain,
) -> std::path::PathBuf {
    dir.join("objects")
        .join(keys::shop_products(merchant, shop).as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_shop_sync_killed_mid_way_finishes_after_a_restart() {
    let fake = FakeShopify::start(FakeConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut extra = fake.vars();
    // On PostgreSQL the restarted process takes the killed one's job over once its lease
    // runs out (SQLite re-queues it at start: one process owns the file).
    extra.extend(vars(&[
        ("SHOPIFY_INITIAL_SYNC_WAIT_SECS", "0"),
        ("JOB_LEASE_SECS", "3"),
    ]));
    let server = start_binary(dir.path(), &served_at(free_port(), extra.clone()));
    fake.set_delay(Duration::from_millis(40));
    let client = no_redirects();
    let (answer, _) = shopify_connect(&client, &server.url(""), &fake, "acme").await;
    assert_eq!(answer["upload_status"]["status"], "pending", "{answer}");
    let merchant = MerchantId::parse(answer["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    eventually("the initial sync is under way", || async {
        fake.requests("ProductVariants") >= 2
    })
    .await;
    kill(server);
    assert!(
        !products_file(dir.path(), &merchant, &shop).exists(),
        "the kill landed before the sync finished"
    );

    fake.set_delay(Duration::ZERO);
    let server = start_binary(dir.path(), &served_at(free_port(), extra));
    let path = products_file(dir.path(), &merchant, &shop);
    eventually("the sync finished after the restart", || {
        let path = path.clone();
        async move { path.exists() }
    })
    .await;
    let products: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(products["products"].as_array().unwrap().len(), 600);
    let q = stores_of(dir.path(), &[]).await.events;
    let sync = q
        .rows()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "shopify_sync")
        .unwrap();
    assert_eq!(sync.status, EventStatus::Done);
    assert!(
        sync.attempts >= 2,
        "resumed, not started anew by someone else"
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_deletion_killed_mid_way_finishes_after_a_restart() {
    let graph = FakeGraph::start(FakeGraphConfig {
        pages_per_user: 2,
        conversations_per_page: 5,
        ..FakeGraphConfig::default()
    })
    .await;
    let s3 = start_s3().await;
    let dir = tempfile::tempdir().unwrap();
    let mut extra = graph.vars();
    extra.extend(s3.vars());
    // On PostgreSQL the restarted server takes the job over when its lease runs out.
    extra.extend(vars(&[("JOB_LEASE_SECS", "3")]));
    let server = start_binary(dir.path(), &served_at(free_port(), extra.clone()));
    // A signed-in merchant, as the Shopify connect would leave one.
    let sessions = stores_of(dir.path(), &[]).await.sessions;
    let merchant = MerchantId::random();
    let cookie = format!("session_id={}", sessions.create(merchant).await.unwrap());
    let client = no_redirects();
    let (status, body) = fb_connect_at(&client, &server.url(""), &graph, &cookie, 0).await;
    assert_eq!(status, 200, "{body}");
    let pages: Vec<PageId> = graph
        .page_ids(0)
        .iter()
        .map(|p| PageId::parse(p).unwrap())
        .collect();
    let merchant_dir = s3.object_path(keys::merchant_prefix(&merchant).as_str());
    let count = |d: &std::path::Path| walk_files(d).len();
    eventually("the initial polls stored every conversation", || async {
        count(&merchant_dir) >= pages.len() * 6
    })
    .await;

    // Each DeleteObjects request takes seconds: the kill lands inside the deletion.
    s3.set_delete_delay(Duration::from_secs(3));
    let request = signed_request(
        &graph.config().app_secret,
        &json!({"algorithm": "HMAC-SHA256", "user_id": graph.user_id(0), "issued_at": salesbot_sync::store::now_secs()}),
    );
    let r = client
        .post(server.url("/facebook/data-deletion"))
        .form(&[("signed_request", request)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let code = r.json::<Value>().await.unwrap()["confirmation_code"]
        .as_str()
        .unwrap()
        .to_string();
    eventually("the deletion is deleting", || async {
        s3.delete_batches() >= 1
    })
    .await;
    kill(server);
    s3.set_delete_delay(Duration::ZERO);

    let server = start_binary(dir.path(), &served_at(free_port(), extra));
    let status_url = server.url(&format!("/facebook/data-deletion/status?code={code}"));
    eventually("the deletion finished after the restart", || {
        let (client, url) = (client.clone(), status_url.clone());
        async move {
            let s: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            s["status"] == "done"
        }
    })
    .await;
    let left = walk_files(&merchant_dir);
    assert!(left.is_empty(), "objects left: {left:?}");
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    // Taken over at start (SQLite: the file's one server; PostgreSQL: the dead instance's
    // liveness lock is free), or on PostgreSQL by the reaper's next sweep.
    assert!(
        logs.contains("re-queued events left running")
            || (on_postgres() && logs.contains("re-queued events whose lease expired")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_command_works_through_the_servers_queue_or_alone() {
    let fake = FakeShopify::start(FakeConfig {
        products: 40,
        ..FakeConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = served_at(free_port(), fake.vars());
    let server = start_binary(dir.path(), &extra);
    let client = no_redirects();
    let (answer, _) = shopify_connect(&client, &server.url(""), &fake, "acme").await;
    let merchant = MerchantId::parse(answer["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let path = products_file(dir.path(), &merchant, &shop);
    let price = |path: &std::path::Path| -> String {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v["products"][2]["variants"][0]["price"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually("initial sync", || {
        let path = path.clone();
        async move { path.exists() }
    })
    .await;

    let env = test_vars(dir.path(), &extra);
    fake.set_variant_price("acme.myshopify.com", 2, 0, "41.00");
    let out = binary_command(dir.path(), &env)
        .args(["poll", "--shop", "acme"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shops ok 1 failed 0"), "{stdout}");
    assert_eq!(price(&path), "41.00");
    // The server's workers ran it: the server holds the queue lock.
    assert!(server.logs().contains("shop synced"), "{}", server.logs());
    let (status, _) = server.terminate();
    assert!(status.success());

    // With no server, the command works the queue itself.
    fake.set_variant_price("acme.myshopify.com", 2, 0, "42.00");
    let out = binary_command(dir.path(), &env)
        .arg("poll")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shops ok 1 failed 0"), "{stdout}");
    assert_eq!(price(&path), "42.00");

    // A shop that is not connected is reported as a failure, with a non-zero exit.
    let out = binary_command(dir.path(), &env)
        .args(["poll", "--shop", "nobody"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not connected"));
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
