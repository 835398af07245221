//! Durable orchestration: store outages, expiring tokens, serialised writers, large pages,
//! unchanged polls and deletions racing merges — the real server, fakes, the embedded S3.

use std::time::{Duration, Instant};

use salesbot_simulators::graph::FakeGraphConfig;
use salesbot_simulators::shopify::FakeConfig;
use salesbot_sync::ids::{PageId, Psid, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::platforms::shopify::signature::sign_webhook;
use salesbot_sync::poll::Target;
use salesbot_sync::store::events::EventStatus;
use salesbot_sync::store::tokens::AccountStatus;
use serde_json::{json, Value};

use crate::facebook::{fb_connect, fb_env, fb_env_with, read, session, signed_request};
use crate::helpers::*;
use crate::shopify::{connect, env_with};

/// A signed Messenger delivery of one customer message.
fn message_body(page: &str, psid: &str, mid: &str, ts: i64) -> String {
    json!({"object": "page", "entry": [{"id": page, "time": ts, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": page}, "timestamp": ts,
        "message": {"mid": mid, "text": format!("text of {mid}")}
    }]}]})
    .to_string()
}

async fn post_message(env: &crate::facebook::FbEnv, body: &str) -> u16 {
    crate::facebook::post_signed(&env.app, &env.fake, body.as_bytes()).await
}

fn mids(conv: &Value) -> Vec<String> {
    conv.as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"]["mid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_while_a_conversation_is_busy_loses_nothing() {
    // A short retry horizon (3 minutes): the outage must be ridden out well inside it.
    let env = fb_env_with(
        FakeGraphConfig {
            pages_per_user: 1,
            conversations_per_page: 2,
            ..FakeGraphConfig::default()
        },
        &vars(&[("RETRY_HORIZON_HOURS", "0.05")]),
    )
    .await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let psid = "777000222";

    env.s3.set_down(true);
    let started = Instant::now();
    // 200 messages at 5 per second into one conversation, all during the outage.
    for i in 0..200 {
        let at = started + Duration::from_millis(200 * i);
        tokio::time::sleep_until(at.into()).await;
        let body = message_body(
            &page,
            psid,
            &format!("m_out{i}"),
            1_700_000_000_000 + i as i64,
        );
        assert_eq!(
            post_message(&env, &body).await,
            200,
            "acknowledged during the outage"
        );
    }
    let stats = env.app.state.events.stats().await.unwrap();
    assert!(
        stats.pending > 0,
        "the merges are waiting for the store: {stats:?}"
    );
    env.s3.set_down(false);

    let key = keys::conversation(
        &merchant,
        &PageId::parse(&page).unwrap(),
        &Psid::parse(psid).unwrap(),
    );
    eventually_within(Duration::from_secs(120), "all 200 messages stored", || {
        let s3 = &env.s3;
        let key = &key;
        async move { read(s3, key).is_some_and(|c| c.as_array().unwrap().len() == 200) }
    })
    .await;
    let stored = mids(&read(&env.s3, &key).unwrap());
    let expected: Vec<String> = (0..200).map(|i| format!("m_out{i}")).collect();
    assert_eq!(stored, expected, "each once, in order");
    drained(&env.app).await;
    let stats = env.app.state.events.stats().await.unwrap();
    assert_eq!((stats.dead_lettered, stats.failed), (0, 0), "{stats:?}");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_that_expires_mid_sync_is_refreshed_and_a_refused_refresh_needs_reauth() {
    let env = env_with(FakeConfig {
        products: 300,
        ..FakeConfig::default()
    })
    .await;
    env.fake.set_expiring(true);
    assert_eq!(connect(&env, "acme").await.0, 200);
    drained(&env.app).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();

    // The token dies after a few pages of the catalogue; the sync refreshes and completes.
    env.fake.set_delay(Duration::from_millis(20));
    env.fake
        .set_product_title("acme.myshopify.com", 250, "Late in the catalogue");
    env.fake.reset_counters();
    let app = &env.app;
    let poll = tokio::spawn({
        let state = app.state.clone();
        let shop = shop.clone();
        async move {
            let (run, _) = salesbot_sync::poll::start(
                &state,
                Target::Shop(shop),
                salesbot_sync::store::events::RunTrigger::Cli,
                Duration::ZERO,
            )
            .await
            .unwrap();
            salesbot_sync::poll::wait(&state, run).await.unwrap()
        }
    });
    eventually("the sync is under way", || async {
        env.fake.requests("Shop") >= 1
    })
    .await;
    env.fake.expire_access_tokens("acme.myshopify.com");
    let report = poll.await.unwrap();
    env.fake.set_delay(Duration::ZERO);
    assert_eq!(
        (report.shops.ok, report.shops.failed),
        (1, 0),
        "{:?}",
        report.failures
    );
    assert_eq!(env.fake.refreshes(), 1, "one refresh, on the 401");
    let uuid = env
        .app
        .state
        .tokens
        .shop(&shop)
        .await
        .unwrap()
        .unwrap()
        .merchant;
    let products: Value = serde_json::from_slice(
        &std::fs::read(
            env.s3
                .object_path(keys::shop_products(&uuid, &shop).as_str()),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(products["products"].as_array().unwrap().len(), 300);
    assert_eq!(products["products"][250]["title"], "Late in the catalogue");
    assert_eq!(
        env.app
            .state
            .tokens
            .shop(&shop)
            .await
            .unwrap()
            .unwrap()
            .status,
        AccountStatus::Active
    );

    // Both tokens revoked: the refresh is refused, and only then is the shop marked.
    env.fake.revoke_tokens("acme.myshopify.com");
    let report = poll_now(&env.app, Target::Shop(shop.clone())).await;
    assert_eq!(report.shops.failed, 1);
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert_eq!(rec.status, AccountStatus::NeedsReauth);
    assert!(
        rec.status_reason
            .as_deref()
            .unwrap()
            .contains("refused the token refresh"),
        "{:?}",
        rec.status_reason
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_poll_and_a_webhook_sync_of_one_shop_never_overlap() {
    let env = env_with(FakeConfig {
        products: 120,
        ..FakeConfig::default()
    })
    .await;
    assert_eq!(connect(&env, "acme").await.0, 200);
    drained(&env.app).await;
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    env.fake.reset_counters();
    // A slow poll: it reads the catalogue before the price changes.
    env.fake.set_delay(Duration::from_millis(40));
    let poll = tokio::spawn({
        let state = env.app.state.clone();
        async move {
            let (run, _) = salesbot_sync::poll::start(
                &state,
                Target::Everything,
                salesbot_sync::store::events::RunTrigger::Cli,
                Duration::ZERO,
            )
            .await
            .unwrap();
            salesbot_sync::poll::wait(&state, run).await.unwrap()
        }
    });
    eventually("the poll has started reading the shop", || async {
        env.fake.requests("Shop") >= 1
    })
    .await;
    env.fake
        .set_variant_price("acme.myshopify.com", 3, 0, "999.00");
    let body = br#"{"id":1004}"#;
    let r = env
        .app
        .client
        .post(env.app.url("/shopify/webhook"))
        .header("X-Shopify-Topic", "products/update")
        .header("X-Shopify-Shop-Domain", "acme.myshopify.com")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(env.fake.config().api_secret.as_bytes(), body),
        )
        .header("X-Shopify-Event-Id", "price-change-1")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report = poll.await.unwrap();
    assert_eq!(report.shops.ok, 1);
    drained(&env.app).await;
    env.fake.set_delay(Duration::ZERO);
    assert_eq!(
        env.fake.max_in_flight("acme.myshopify.com"),
        1,
        "the webhook's sync waited for the poll"
    );
    let uuid = env
        .app
        .state
        .tokens
        .shop(&shop)
        .await
        .unwrap()
        .unwrap()
        .merchant;
    let products: Value = serde_json::from_slice(
        &std::fs::read(
            env.s3
                .object_path(keys::shop_products(&uuid, &shop).as_str()),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        products["products"][3]["variants"][0]["price"], "999.00",
        "the newer snapshot is the one stored"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_2000_conversations_connects_in_seconds_and_polls_in_the_background() {
    let env = fb_env_with(
        FakeGraphConfig {
            pages_per_user: 1,
            conversations_per_page: 2000,
            messages_per_conversation: 2,
            ..FakeGraphConfig::default()
        },
        &[],
    )
    .await;
    let (merchant, cookie) = session(&env.app).await;
    let started = Instant::now();
    let (status, body) = fb_connect(&env.app, &env.fake, &cookie, 0).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        elapsed < Duration::from_secs(5),
        "the callback took {elapsed:?}"
    );
    let page = env.fake.page_ids(0)[0].clone();
    assert_eq!(env.fake.subscribe_posts(&page), 1, "the page is subscribed");
    let conversations = body["polling_test"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "conversations")
        .unwrap()
        .clone();
    assert_eq!(conversations["result"]["status"], "pending", "{body}");
    let prefix = keys::page_prefix(&merchant, &PageId::parse(&page).unwrap());
    let objects = env.app.state.objects.clone();
    eventually_within(
        Duration::from_secs(300),
        "every conversation polled",
        || {
            let (objects, prefix) = (objects.clone(), prefix.clone());
            async move {
                // 2,000 conversations and the metadata.
                objects.list(&prefix).await.unwrap().len() == 2001
            }
        },
    )
    .await;
    drained(&env.app).await;
    let stats = env.app.state.events.stats().await.unwrap();
    assert_eq!((stats.failed, stats.dead_lettered), (0, 0), "{stats:?}");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn an_unchanged_poll_reads_and_writes_no_object_body() {
    let shop_env = env_with(FakeConfig {
        products: 60,
        ..FakeConfig::default()
    })
    .await;
    // One app with both platforms: reuse the Shopify env's S3 and add a Graph fake.
    let graph = salesbot_simulators::graph::FakeGraph::start(FakeGraphConfig {
        pages_per_user: 2,
        conversations_per_page: 40,
        ..FakeGraphConfig::default()
    })
    .await;
    let mut extra = shop_env.fake.vars();
    extra.extend(graph.vars());
    extra.extend(shop_env.s3.vars());
    let app = spawn_app(&extra).await;
    let env = crate::shopify::Env {
        app,
        fake: shop_env.fake.clone(),
        s3: shop_env.s3,
    };
    let (status, _, cookie) = connect(&env, "acme").await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    assert_eq!(fb_connect(&env.app, &graph, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    // The first scheduled-style poll after connect reads what the initial polls already did.
    let first = poll_everything(&env.app).await;
    assert_eq!(first.failed(), 0, "{:?}", first.failures);

    let (puts, gets) = (env.s3.puts(), env.s3.gets());
    let report = poll_everything(&env.app).await;
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert_eq!((report.shops.ok, report.pages.ok), (1, 2));
    assert_eq!(
        report.conversations.ok, 0,
        "no conversation changed, none is read"
    );
    assert_eq!(report.written, 0);
    assert_eq!(env.s3.puts(), puts, "0 PUT");
    assert_eq!(env.s3.gets(), gets, "0 object-body GET");
    env.app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_racing_merges_leaves_nothing_of_the_page() {
    let env = fb_env_with(
        FakeGraphConfig {
            pages_per_user: 1,
            conversations_per_page: 5,
            ..FakeGraphConfig::default()
        },
        &[],
    )
    .await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let pid = PageId::parse(&page).unwrap();
    // Slow writes, so merges are in flight when the deletion starts.
    env.s3.set_put_delay(Duration::from_millis(150));
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..60 {
        let body = message_body(
            &page,
            &format!("55500{}", i % 6),
            &format!("m_race{i}"),
            1_700_000_000_000 + i,
        );
        let (client, url, sig) = (
            env.app.client.clone(),
            env.app.url("/facebook/webhook"),
            env.fake.signature_256(body.as_bytes()),
        );
        sent.spawn(async move {
            client
                .post(url)
                .header("X-Hub-Signature-256", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(s) = sent.join_next().await {
        assert_eq!(s.unwrap(), 200);
    }
    eventually("merges in flight", || async {
        env.app.state.events.stats().await.unwrap().running > 0
    })
    .await;
    let request = signed_request(
        &env.fake.config().app_secret,
        &json!({"algorithm": "HMAC-SHA256", "user_id": env.fake.user_id(0), "issued_at": salesbot_sync::store::now_secs()}),
    );
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", request)])
        .await;
    assert_eq!(r.status(), 200);
    let status_url = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // Deliveries keep arriving after the request, too.
    for i in 60..70 {
        let body = message_body(
            &page,
            "555001",
            &format!("m_race{i}"),
            1_700_000_000_000 + i,
        );
        assert_eq!(post_message(&env, &body).await, 200);
    }
    eventually("the deletion is done", || {
        let (client, url) = (env.app.client.clone(), status_url.clone());
        async move {
            let s: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            s["status"] == "done"
        }
    })
    .await;
    drained(&env.app).await;
    env.s3.set_put_delay(Duration::ZERO);
    let left = env
        .app
        .state
        .objects
        .list(&keys::page_prefix(&merchant, &pid))
        .await
        .unwrap();
    assert!(left.is_empty(), "nothing of the page remains: {left:?}");
    assert!(env.app.state.tokens.page(&pid).await.unwrap().is_none());
    // No queued event still holds one of the page's messages.
    let rows = env.app.state.events.rows().await.unwrap();
    let leftovers: Vec<_> = rows
        .iter()
        .filter(|r| r.group_key.starts_with(&format!("fbconv:{page}:")))
        .filter(|r| r.status != EventStatus::Done)
        .collect();
    assert!(
        leftovers.iter().all(|r| r.status == EventStatus::Failed),
        "{leftovers:?}"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_shopify_syncs_do_not_delay_messenger_merges() {
    let shop_env = env_with(FakeConfig {
        products: 120,
        ..FakeConfig::default()
    })
    .await;
    let graph = salesbot_simulators::graph::FakeGraph::start(FakeGraphConfig {
        pages_per_user: 1,
        conversations_per_page: 2,
        ..FakeGraphConfig::default()
    })
    .await;
    let mut extra = shop_env.fake.vars();
    extra.extend(graph.vars());
    extra.extend(shop_env.s3.vars());
    let app = spawn_app(&extra).await;
    let env = crate::shopify::Env {
        app,
        fake: shop_env.fake.clone(),
        s3: shop_env.s3,
    };
    for name in ["acme", "bravo", "charlie", "delta"] {
        assert_eq!(connect(&env, name).await.0, 200);
    }
    let (_, _, cookie) = connect(&env, "echo").await;
    let cookie = cookie.unwrap().split(';').next().unwrap().to_string();
    assert_eq!(fb_connect(&env.app, &graph, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let merchant = env
        .app
        .state
        .tokens
        .shop(&ShopDomain::parse("echo.myshopify.com").unwrap())
        .await
        .unwrap()
        .unwrap()
        .merchant;

    // Every shop's poll is slow (a dozen calls of 300 ms: seconds each), filling the sync pool.
    env.fake.set_delay(Duration::from_millis(300));
    let polls = tokio::spawn({
        let state = env.app.state.clone();
        async move {
            let (run, _) = salesbot_sync::poll::start(
                &state,
                Target::Everything,
                salesbot_sync::store::events::RunTrigger::Cli,
                Duration::ZERO,
            )
            .await
            .unwrap();
            salesbot_sync::poll::wait(&state, run).await.unwrap()
        }
    });
    eventually("the syncs are running", || async {
        env.fake.requests("Products") >= 2
    })
    .await;
    let page = graph.page_ids(0)[0].clone();
    let key = keys::conversation(
        &merchant,
        &PageId::parse(&page).unwrap(),
        &Psid::parse("888000111").unwrap(),
    );
    let body = message_body(&page, "888000111", "m_fast", 1_700_000_000_000);
    let sent = Instant::now();
    assert_eq!(
        crate::facebook::post_signed(&env.app, &graph, body.as_bytes()).await,
        200
    );
    eventually_within(Duration::from_secs(5), "the message merged", || {
        let (s3, key) = (&env.s3, &key);
        async move { read(s3, key).is_some() }
    })
    .await;
    let latency = sent.elapsed();
    assert!(
        env.app.state.events.stats().await.unwrap().running > 0,
        "the syncs were still running"
    );
    assert!(latency < Duration::from_secs(2), "merged after {latency:?}");
    env.fake.set_delay(Duration::ZERO);
    polls.await.unwrap();
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn the_webhook_self_tests_and_cleanup_leave_no_test_conversation() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    let (status, body) = fb_connect(&env.app, &env.fake, &cookie, 0).await;
    assert_eq!(status, 200, "{body}");
    drained(&env.app).await;
    let psid = Psid::parse(salesbot_sync::facebook::selftest::SELF_TEST_PSID).unwrap();
    for p in env.fake.page_ids(0) {
        let page = PageId::parse(&p).unwrap();
        assert!(read(&env.s3, &keys::conversation(&merchant, &page, &psid)).is_none());
    }
    let rows = env.app.state.events.rows().await.unwrap();
    let cleanups: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == "facebook_self_test")
        .collect();
    assert_eq!(cleanups.len(), env.fake.page_ids(0).len());
    assert!(
        cleanups.iter().all(|r| r.status == EventStatus::Done),
        "{cleanups:?}"
    );
    env.app.stop().await.unwrap();
}
