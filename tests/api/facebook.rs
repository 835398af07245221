//! Facebook end to end: the real server, a fake Graph API on loopback, objects in the embedded
//! S3 server.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::seq::SliceRandom;
use salesbot_sync::facebook::selftest::SELF_TEST_PSID;
use salesbot_sync::ids::{MerchantId, PageId, Psid};
use salesbot_sync::objects::keys;
use salesbot_sync::store::events::EventStatus;
use serde_json::{json, Value};

use crate::helpers::*;
use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};

pub struct FbEnv {
    pub app: TestApp,
    pub fake: FakeGraph,
    pub s3: S3Server,
}

pub async fn fb_env() -> FbEnv {
    fb_env_with(FakeGraphConfig::default(), &[]).await
}

pub async fn fb_env_with(config: FakeGraphConfig, extra_vars: &[(String, String)]) -> FbEnv {
    let fake = FakeGraph::start(config).await;
    let s3 = start_s3().await;
    let mut extra = fake.vars();
    extra.extend(s3.vars());
    extra.extend(extra_vars.iter().cloned());
    let app = spawn_app(&extra).await;
    FbEnv { app, fake, s3 }
}

fn secret(fake: &FakeGraph) -> String {
    fake.config().app_secret
}

/// A signed-in merchant: a session as the Shopify connect would create.
pub async fn session(app: &TestApp) -> (MerchantId, String) {
    let merchant = MerchantId::random();
    let sid = app.state.sessions.create(merchant).await.unwrap();
    (merchant, format!("session_id={sid}"))
}

/// Login → Meta dialog (approved by user `user`) → callback. Returns status and JSON.
pub async fn fb_connect(
    app: &TestApp,
    fake: &FakeGraph,
    cookie: &str,
    user: usize,
) -> (u16, Value) {
    fb_connect_at(&app.client, &app.address, fake, cookie, user).await
}

/// The same through any running server at `base`.
pub async fn fb_connect_at(
    client: &reqwest::Client,
    base: &str,
    fake: &FakeGraph,
    cookie: &str,
    user: usize,
) -> (u16, Value) {
    let (back, cookies) = fb_authorize(client, base, fake, cookie, user).await;
    let r = client
        .get(back)
        .header("Cookie", cookies)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Login → Meta dialog (approved by user `user`): the callback URL and the cookies to send.
pub async fn fb_authorize(
    client: &reqwest::Client,
    base: &str,
    fake: &FakeGraph,
    cookie: &str,
    user: usize,
) -> (String, String) {
    let r = client
        .get(format!("{base}/facebook/login"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let binding = set_cookie(&r, "oauth_binding_facebook").expect("binding cookie set at login");
    let dialog = r.headers()["location"].to_str().unwrap().to_string();
    let back = fake.approve(&dialog, user).expect("dialog approves");
    let back = back.split('#').next().unwrap().to_string();
    assert!(
        back.starts_with(&format!("{base}/facebook/callback")),
        "{back}"
    );
    (back, format!("{cookie}; {binding}"))
}

pub fn read(s3: &S3Server, key: &keys::ObjectKey) -> Option<Value> {
    std::fs::read(s3.object_path(key.as_str()))
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

pub async fn post_signed(app: &TestApp, fake: &FakeGraph, body: &[u8]) -> u16 {
    app.client
        .post(app.url("/facebook/webhook"))
        .header("X-Hub-Signature-256", fake.signature_256(body))
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn login_requires_a_session_and_redirects_to_the_dialog() {
    let env = fb_env().await;
    let r = env.app.get("/facebook/login").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Missing session_id cookie"
    );
    let r = env
        .app
        .client
        .get(env.app.url("/facebook/login"))
        .header("Cookie", "session_id=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Invalid or expired session"
    );

    let (_, cookie) = session(&env.app).await;
    let r = env
        .app
        .client
        .get(env.app.url("/facebook/login"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(loc.path(), "/v25.0/dialog/oauth");
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(
        q["scope"],
        "pages_messaging,pages_show_list,pages_manage_metadata"
    );
    assert_eq!(q["client_id"], env.fake.config().app_id);
    assert_eq!(q["redirect_uri"], env.app.url("/facebook/callback"));
    assert!(!q["state"].is_empty());
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn full_connect_flow_stores_pages_subscribes_and_uploads_without_tokens() {
    let env = fb_env().await;
    env.fake.set_accounts_page_size(1);
    let (merchant, cookie) = session(&env.app).await;
    let (status, body) = fb_connect(&env.app, &env.fake, &cookie, 0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_uuid"], merchant.to_string());
    let pages = env.fake.page_ids(0);
    assert_eq!(body["pages"]["data"].as_array().unwrap().len(), pages.len());
    let text = body.to_string();
    assert!(!text.contains("access_token"));
    for t in env.fake.all_tokens() {
        assert!(!text.contains(&t), "a token leaked into the answer");
    }
    for entry in body["webhook_test"].as_array().unwrap() {
        assert_eq!(entry["result"]["status"], "success", "{entry}");
    }
    assert_eq!(
        body["webhook_test"].as_array().unwrap().len(),
        2 * pages.len()
    );
    for entry in body["polling_test"].as_array().unwrap() {
        // The conversations are polled in the background: done already, or still pending.
        let expected: &[&str] = if entry["type"] == "conversations" {
            &["success", "pending"]
        } else {
            &["success"]
        };
        let status = entry["result"]["status"].as_str().unwrap();
        assert!(expected.contains(&status), "{entry}");
    }
    for entry in body["upload_status"].as_array().unwrap() {
        assert_eq!(entry["result"]["status"], "success", "{entry}");
    }
    drained(&env.app).await;

    let self_test = Psid::parse(SELF_TEST_PSID).unwrap();
    for p in &pages {
        let page = PageId::parse(p).unwrap();
        let meta = read(&env.s3, &keys::page_metadata(&merchant, &page)).expect("metadata written");
        assert_eq!(meta["id"], p.as_str());
        assert!(meta.get("access_token").is_none());
        assert_eq!(env.fake.subscribe_posts(p), 1);
        // Conversations polled, self-test conversation removed.
        assert!(read(&env.s3, &keys::conversation(&merchant, &page, &self_test)).is_none());
        let psids = env.fake.psids(p);
        assert_eq!(psids.len(), 30);
        let long = env.fake.long_conversation_psid(p).unwrap();
        let conv = read(
            &env.s3,
            &keys::conversation(&merchant, &page, &Psid::parse(&long).unwrap()),
        )
        .expect("conversation written");
        let items = conv.as_array().unwrap();
        assert_eq!(items.len(), 60);
        let ts: Vec<i64> = items
            .iter()
            .map(|m| m["timestamp"].as_i64().unwrap())
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "sorted by timestamp");
        assert!(
            items.iter().any(|m| m["message"]["is_echo"] == true),
            "page replies kept"
        );
        assert!(items.iter().any(|m| m["message"]["attachments"].is_array()));
    }
    let everything = walk_objects(&env.s3);
    for t in env.fake.all_tokens() {
        assert!(!everything.contains(&t), "a token was written to an object");
    }

    // Reconnecting does not subscribe again.
    let (status, _) = fb_connect(&env.app, &env.fake, &cookie, 0).await;
    assert_eq!(status, 200);
    for p in &pages {
        assert_eq!(env.fake.subscribe_posts(p), 1);
    }
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

pub fn walk_objects(s3: &S3Server) -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push_str(&t);
            }
        }
    }
    let mut out = String::new();
    walk(s3.root.path(), &mut out);
    out
}

#[tokio::test]
async fn a_dialog_link_forwarded_to_another_browser_connects_nothing() {
    let env = fb_env().await;
    let (_, attacker) = session(&env.app).await;
    let r = env
        .app
        .client
        .get(env.app.url("/facebook/login"))
        .header("Cookie", &attacker)
        .send()
        .await
        .unwrap();
    let dialog = r.headers()["location"].to_str().unwrap().to_string();
    // The victim approves in their own browser, which has no binding cookie.
    let back = env.fake.approve(&dialog, 1).unwrap();
    let r = env
        .app
        .client
        .get(back.split('#').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for p in env.fake.page_ids(1) {
        let page = PageId::parse(&p).unwrap();
        assert!(env.app.state.tokens.page(&page).await.unwrap().is_none());
    }
    assert_eq!(env.fake.exchanges(), 0, "the code is never exchanged");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn another_apps_subscription_does_not_count() {
    let env = fb_env().await;
    let page = env.fake.page_ids(0)[0].clone();
    env.fake
        .preset_other_app(&page, "Some CRM", &["name", "category", "messages"]);
    let (_, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    assert_eq!(env.fake.subscribe_posts(&page), 1);
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn verify_handshake() {
    let env = fb_env().await;
    let url = |token: &str, mode: &str| {
        env.app.url(&format!(
            "/facebook/webhook?hub.mode={mode}&hub.verify_token={token}&hub.challenge=1158201444"
        ))
    };
    let r = env
        .app
        .client
        .get(url("fake-verify-token", "subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "1158201444");
    for (t, m) in [
        ("wrong", "subscribe"),
        ("fake-verify-token", "unsubscribe"),
        ("", "subscribe"),
    ] {
        let r = env.app.client.get(url(t, m)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{t} {m}");
    }
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn deliveries_are_verified_over_the_raw_bytes() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    // Non-ASCII escaped the way Meta sends it: the signature is over these exact bytes.
    let body = format!(
        r#"{{"object":"page","entry":[{{"id":"{page}","time":1,"messaging":[{{"sender":{{"id":"4242"}},"recipient":{{"id":"{page}"}},"timestamp":1700000000000,"message":{{"mid":"m_umlaut","text":"Gr\u00fc\u00dfe \u00e4"}}}}]}}]}}"#
    );
    assert!(body.contains("\\u00e4"));
    assert_eq!(post_signed(&env.app, &env.fake, body.as_bytes()).await, 200);
    drained(&env.app).await;
    let conv = read(
        &env.s3,
        &keys::conversation(
            &merchant,
            &PageId::parse(&page).unwrap(),
            &Psid::parse("4242").unwrap(),
        ),
    )
    .unwrap();
    assert_eq!(conv[0]["message"]["text"], "Grüße ä");

    // Forged: 401 and nothing recorded.
    let before = env.app.state.events.rows().await.unwrap().len();
    let forged = body.replace("m_umlaut", "m_forged");
    let r = env
        .app
        .client
        .post(env.app.url("/facebook/webhook"))
        .header(
            "X-Hub-Signature-256",
            env.fake.signature_256(body.as_bytes()),
        )
        .body(forged.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = env
        .app
        .client
        .post(env.app.url("/facebook/webhook"))
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(env.app.state.events.rows().await.unwrap().len(), before);

    // Legacy sha1 alone is accepted; object must be "page".
    let sha1_body = body.replace("m_umlaut", "m_sha1");
    let sig1 = {
        use hmac::Mac;
        let mut m =
            <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(secret(&env.fake).as_bytes()).unwrap();
        m.update(sha1_body.as_bytes());
        format!("sha1={}", hex::encode(m.finalize().into_bytes()))
    };
    let r = env
        .app
        .client
        .post(env.app.url("/facebook/webhook"))
        .header("X-Hub-Signature", sig1)
        .body(sha1_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let not_page = br#"{"object":"user","entry":[]}"#;
    assert_eq!(post_signed(&env.app, &env.fake, not_page).await, 400);
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_deliveries_for_one_conversation_lose_nothing() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let psid = "777000111";
    let mut bodies: Vec<String> = (0..200)
        .map(|i| {
            // Alternate customer messages and page echoes; timestamps unique.
            let (from, to, echo) = if i % 2 == 0 { (psid, page.as_str(), "") } else { (page.as_str(), psid, r#","is_echo":true"#) };
            format!(
                r#"{{"object":"page","entry":[{{"id":"{page}","time":{t},"messaging":[{{"sender":{{"id":"{from}"}},"recipient":{{"id":"{to}"}},"timestamp":{t},"message":{{"mid":"m_c{i}","text":"msg {i}"{echo}}}}}]}}]}}"#,
                t = 1_700_000_000_000i64 + i as i64 * 1000
            )
        })
        .collect();
    bodies.shuffle(&mut rand::thread_rng());
    let send_all = |bodies: Vec<String>| {
        let (client, url, fake) = (
            env.app.client.clone(),
            env.app.url("/facebook/webhook"),
            env.fake.clone(),
        );
        async move {
            let mut set = tokio::task::JoinSet::new();
            for b in bodies {
                let (client, url, sig) = (
                    client.clone(),
                    url.clone(),
                    fake.signature_256(b.as_bytes()),
                );
                set.spawn(async move {
                    client
                        .post(url)
                        .header("X-Hub-Signature-256", sig)
                        .body(b)
                        .send()
                        .await
                        .unwrap()
                        .status()
                });
            }
            while let Some(s) = set.join_next().await {
                assert_eq!(s.unwrap(), 200);
            }
        }
    };
    send_all(bodies.clone()).await;
    drained(&env.app).await;
    let key = keys::conversation(
        &merchant,
        &PageId::parse(&page).unwrap(),
        &Psid::parse(psid).unwrap(),
    );
    let conv = read(&env.s3, &key).unwrap();
    let items = conv.as_array().unwrap();
    assert_eq!(items.len(), 200);
    let mids: Vec<String> = items
        .iter()
        .map(|m| m["message"]["mid"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..200).map(|i| format!("m_c{i}")).collect();
    assert_eq!(mids, expected, "all 200, once each, in timestamp order");

    // The same 200 again: no new PUT.
    let puts = env.s3.puts();
    bodies.shuffle(&mut rand::thread_rng());
    send_all(bodies).await;
    drained(&env.app).await;
    assert_eq!(env.s3.puts(), puts, "redeliveries change nothing");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_page_ids_and_unknown_pages_write_nothing_and_fail_with_a_reason() {
    let env = fb_env().await;
    let traversal = br#"{"object":"page","entry":[{"id":"../../x","time":1,"messaging":[{"sender":{"id":"5"},"recipient":{"id":"../../x"},"timestamp":1,"message":{"mid":"m_t","text":"x"}}]}]}"#;
    assert_eq!(post_signed(&env.app, &env.fake, traversal).await, 200);
    let unknown = br#"{"object":"page","entry":[{"id":"999999","time":1,"messaging":[{"sender":{"id":"5"},"recipient":{"id":"999999"},"timestamp":1,"message":{"mid":"m_u","text":"x"}}]}]}"#;
    assert_eq!(post_signed(&env.app, &env.fake, unknown).await, 200);
    drained(&env.app).await;
    let rows = env.app.state.events.rows().await.unwrap();
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == EventStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 2, "{rows:?}");
    assert!(failed
        .iter()
        .any(|r| r.last_error.as_deref().unwrap().contains("invalid page id")));
    assert!(failed.iter().any(|r| r
        .last_error
        .as_deref()
        .unwrap()
        .contains("unknown page 999999")));
    assert!(
        failed.iter().all(|r| r.attempts == 1),
        "not retried forever"
    );
    assert!(walk_objects(&env.s3).is_empty(), "no object written");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn changes_refetch_metadata_and_polls_merge_new_messages() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let pid = PageId::parse(&page).unwrap();

    env.fake.set_page_name(&page, "Renamed Store");
    let change = format!(
        r#"{{"object":"page","entry":[{{"id":"{page}","time":2,"changes":[{{"field":"name","value":"Renamed Store"}}]}}]}}"#
    );
    assert_eq!(
        post_signed(&env.app, &env.fake, change.as_bytes()).await,
        200
    );
    drained(&env.app).await;
    assert_eq!(
        read(&env.s3, &keys::page_metadata(&merchant, &pid)).unwrap()["name"],
        "Renamed Store"
    );

    // A poll with nothing new writes nothing.
    let puts = env.s3.puts();
    let report = poll_everything(&env.app).await;
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert_eq!(report.written, 0);
    assert_eq!(env.s3.puts(), puts);

    // New messages (one from the page) appear after the next poll.
    let psid = env.fake.psids(&page)[5].clone();
    let m1 = env
        .fake
        .add_message(&page, &psid, "is this in stock?", false);
    let m2 = env.fake.add_message(&page, &psid, "yes it is", true);
    env.fake.rate_limit_next(4, 2);
    let report = poll_everything(&env.app).await;
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert_eq!(report.written, 1);
    assert_eq!(
        report.conversations.ok, 1,
        "only the changed conversation is read"
    );
    let conv = read(
        &env.s3,
        &keys::conversation(&merchant, &pid, &Psid::parse(&psid).unwrap()),
    )
    .unwrap();
    let mids: Vec<&str> = conv
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"]["mid"].as_str().unwrap())
        .collect();
    assert_eq!(&mids[mids.len() - 2..], &[m1.as_str(), m2.as_str()]);
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_page_token_marks_that_page_and_others_continue() {
    let env = fb_env().await;
    let (_, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let pages = env.fake.page_ids(0);
    env.fake.revoke_page_token(&pages[0]);
    let report = poll_everything(&env.app).await;
    assert_eq!((report.pages.ok, report.pages.failed), (pages.len() - 1, 1));
    let index: Value = env.app.get("/").await.json().await.unwrap();
    assert_eq!(
        index["integrations"]["facebook"]["pages"]["needs_reauth"][0]["id"],
        pages[0].as_str()
    );
    let report = poll_everything(&env.app).await;
    assert_eq!(
        (report.pages.ok, report.pages.failed),
        (pages.len() - 1, 0),
        "not polled until reconnected"
    );
    env.app.stop().await.unwrap();
}

pub fn signed_request(secret: &str, payload: &Value) -> String {
    let p = URL_SAFE_NO_PAD.encode(payload.to_string());
    let sig = URL_SAFE_NO_PAD.encode(salesbot_sync::crypto::hmac_sha256(
        secret.as_bytes(),
        p.as_bytes(),
    ));
    format!("{sig}.{p}")
}

#[tokio::test]
async fn data_deletion_callback_deletes_the_users_pages_and_reports_status() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let user = env.fake.user_id(0);
    let page = PageId::parse(&env.fake.page_ids(0)[0]).unwrap();
    assert!(read(&env.s3, &keys::page_metadata(&merchant, &page)).is_some());

    // Forged signature.
    let forged = signed_request(
        "wrong-secret",
        &json!({"algorithm": "HMAC-SHA256", "user_id": user, "issued_at": 1}),
    );
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", forged)])
        .await;
    assert_eq!(r.status(), 401);

    let good = signed_request(
        &secret(&env.fake),
        &json!({"algorithm": "HMAC-SHA256", "user_id": user, "issued_at": salesbot_sync::store::now_secs()}),
    );
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", good)])
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let code = body["confirmation_code"].as_str().unwrap();
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&env.app.url("/facebook/data-deletion/status?code=")));
    // Meta is answered at once; the deletion finishes in the queue.
    let status_of = || async {
        env.app
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    for _ in 0..600 {
        if status_of().await["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read(&env.s3, &keys::page_metadata(&merchant, &page)).is_none());
    let left = env
        .app
        .state
        .objects
        .list(&keys::merchant_prefix(&merchant))
        .await
        .unwrap();
    assert!(left.is_empty(), "every page object deleted: {left:?}");
    assert!(env.app.state.tokens.page(&page).await.unwrap().is_none());
    assert!(env
        .app
        .state
        .tokens
        .facebook_user(merchant)
        .await
        .unwrap()
        .is_none());
    let status: Value = env
        .app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "done");
    assert_eq!(status["pages_deleted"], env.fake.page_ids(0).len());
    assert!(status["objects_deleted"].as_u64().unwrap() > 0);
    assert_eq!(status["confirmation_code"], code);
    let r = env
        .app
        .get("/facebook/data-deletion/status?code=nope")
        .await;
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(10)).await;
    env.app.stop().await.unwrap();
}

/// A delivery with the same items in a new envelope (Meta retries with its own `time`).
fn redelivered(body: &Value) -> Vec<u8> {
    let mut again = body.clone();
    again["entry"][0]["time"] = json!(1_900_000_000_000i64);
    again.to_string().into_bytes()
}

#[tokio::test]
async fn every_messenger_field_is_subscribed_and_each_reaches_its_conversation() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let pid = PageId::parse(&page).unwrap();
    let every = [
        "category",
        "message_echoes",
        "message_edits",
        "message_reactions",
        "messages",
        "messaging_postbacks",
        "messaging_referrals",
        "name",
        "standby",
    ];
    let sorted = |mut f: Vec<String>| {
        f.sort();
        f
    };
    assert_eq!(sorted(env.fake.subscribed_fields(&page)), every);

    // The page's reply (only on `message_echoes`), a conversation a help desk controls (only
    // on `standby`), a button tap and a click-to-Messenger ad: the fake sends each only on its
    // subscribed field, and each becomes an entry of its conversation.
    let psids = env.fake.psids(&page);
    let (psid, routed_psid) = (psids[3].clone(), psids[4].clone());
    let reply = env.fake.add_message(&page, &psid, "We ship tomorrow", true);
    env.fake.set_routed_elsewhere(&page, &routed_psid, true);
    let routed = env
        .fake
        .add_message(&page, &routed_psid, "Can an agent help?", false);
    let t = 1_800_000_000_000i64;
    let bodies = [
        env.fake.message_webhook(&page, &reply).unwrap(),
        env.fake.message_webhook(&page, &routed).unwrap(),
        env.fake
            .postback_webhook(&page, &psid, "Buy now", "BUY_42", t)
            .unwrap(),
        env.fake
            .ad_referral_webhook(&page, &psid, "6045246247433", "42", t + 100)
            .unwrap(),
    ];
    assert!(bodies[1]["entry"][0]["standby"].is_array());
    for body in &bodies {
        let status = post_signed(&env.app, &env.fake, body.to_string().as_bytes()).await;
        assert_eq!(status, 200);
    }
    drained(&env.app).await;
    let conv = |p: &str| {
        read(
            &env.s3,
            &keys::conversation(&merchant, &pid, &Psid::parse(p).unwrap()),
        )
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
    };
    let items = conv(&psid);
    assert!(items
        .iter()
        .any(|i| i["message"]["mid"] == reply.as_str() && i["message"]["is_echo"] == true));
    assert!(items.iter().any(|i| i["postback"]["payload"] == "BUY_42"));
    let referrals: Vec<&Value> = items
        .iter()
        .filter(|i| i.get("referral").is_some())
        .collect();
    assert_eq!(referrals.len(), 1, "{items:?}");
    assert_eq!(
        referrals[0]["referral"]["ads_context_data"]["product_id"],
        "42"
    );
    assert!(conv(&routed_psid)
        .iter()
        .any(|i| i["message"]["mid"] == routed.as_str()));

    // Each redelivered in a new envelope: nothing is written.
    let puts = env.s3.puts();
    for body in &bodies {
        assert_eq!(
            post_signed(&env.app, &env.fake, &redelivered(body)).await,
            200
        );
    }
    drained(&env.app).await;
    assert_eq!(env.s3.puts(), puts, "a redelivery writes nothing");
    assert_eq!(conv(&psid).len(), items.len());

    // A page subscribed before these fields existed is re-subscribed by the next poll.
    env.fake
        .preset_subscribed(&page, &["name", "category", "messages"]);
    let posts = env.fake.subscribe_posts(&page);
    let report = poll_everything(&env.app).await;
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert_eq!(env.fake.subscribe_posts(&page), posts + 1);
    assert_eq!(sorted(env.fake.subscribed_fields(&page)), every);
    // Already complete: the next poll posts nothing.
    poll_everything(&env.app).await;
    assert_eq!(env.fake.subscribe_posts(&page), posts + 1);
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn edits_and_reactions_change_their_message_even_when_they_come_first() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let psid = env.fake.psids(&page)[2].clone();
    let key = keys::conversation(
        &merchant,
        &PageId::parse(&page).unwrap(),
        &Psid::parse(&psid).unwrap(),
    );
    let message = |mid: &str| {
        read(&env.s3, &key)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["message"]["mid"] == mid)
            .map(|e| e["message"].clone())
    };
    let (app, fake) = (&env.app, &env.fake);
    let post = |body: Value| {
        let bytes = body.to_string().into_bytes();
        async move { post_signed(app, fake, &bytes).await }
    };

    let mid = env
        .fake
        .add_message(&page, &psid, "the blue hoodie?", false);
    assert_eq!(
        post(env.fake.message_webhook(&page, &mid).unwrap()).await,
        200
    );
    let t = 1_800_000_000_000i64;
    let edit = env
        .fake
        .edit_message(&page, &mid, "the red hoodie?", t)
        .unwrap();
    let love = env
        .fake
        .reaction_webhook(&page, &psid, &mid, ("react", true), t + 1)
        .unwrap();
    assert_eq!(post(edit.clone()).await, 200);
    assert_eq!(post(love.clone()).await, 200);
    drained(&env.app).await;
    let m = message(&mid).unwrap();
    assert_eq!(m["text"], "the red hoodie?");
    assert_eq!(
        m["edits"],
        json!([{"text": "the blue hoodie?", "timestamp": t}])
    );
    assert_eq!(m["reactions"][0]["sender"], page.as_str());
    assert_eq!(m["reactions"][0]["reaction"], "love");

    // Redelivered in new envelopes: nothing is written.
    let puts = env.s3.puts();
    for body in [&edit, &love] {
        assert_eq!(
            post_signed(&env.app, &env.fake, &redelivered(body)).await,
            200
        );
    }
    drained(&env.app).await;
    assert_eq!(env.s3.puts(), puts, "a redelivered change writes nothing");

    // The page takes its reaction back.
    let unlove = env
        .fake
        .reaction_webhook(&page, &psid, &mid, ("unreact", true), t + 2)
        .unwrap();
    assert_eq!(post(unlove).await, 200);
    drained(&env.app).await;
    assert!(message(&mid).unwrap().get("reactions").is_none());

    // An edit delivered before its message: kept, and applied once the message is stored.
    let late = env.fake.add_message(&page, &psid, "size M", false);
    let early_edit = env
        .fake
        .edit_message(&page, &late, "size L", t + 3)
        .unwrap();
    let original = {
        let mut m = env.fake.message_webhook(&page, &late).unwrap();
        m["entry"][0]["messaging"][0]["message"]["text"] = json!("size M");
        m
    };
    assert_eq!(post(early_edit).await, 200);
    let events = env.app.state.events.clone();
    eventually("the early edit waits in the queue", || {
        let events = events.clone();
        async move {
            events
                .rows()
                .await
                .unwrap()
                .iter()
                .any(|r| r.dedupe_key.contains("wait1") && r.status == EventStatus::Pending)
        }
    })
    .await;
    assert!(message(&late).is_none());
    assert_eq!(post(original).await, 200);
    eventually("the early edit applied", || async {
        message(&late).is_some_and(|m| m["text"] == "size L" && m["edits"][0]["text"] == "size M")
    })
    .await;
    env.app.stop().await.unwrap();
}

/// One signed delivery of `items` (messaging items) for `page`.
fn delivery_of(page: &str, items: Vec<Value>) -> Vec<u8> {
    json!({"object": "page", "entry": [{"id": page, "time": 1, "messaging": items}]})
        .to_string()
        .into_bytes()
}

fn customer_message(page: &str, psid: &str, mid: &str, ts: i64) -> Value {
    json!({"sender": {"id": psid}, "recipient": {"id": page}, "timestamp": ts,
           "message": {"mid": mid, "text": format!("text of {mid}")}})
}

/// Every mid of the conversation's window and month objects, with the month objects' names.
fn conversation_mids(
    s3: &S3Server,
    window_key: &keys::ObjectKey,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let path = s3.object_path(window_key.as_str());
    let mids_of = |p: &std::path::Path| -> Vec<String> {
        let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"]["mid"].as_str().unwrap().to_string())
            .collect()
    };
    let window = mids_of(&path);
    let folder = path.with_extension("");
    let mut months: Vec<String> = std::fs::read_dir(&folder)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    months.sort();
    let mut older = Vec::new();
    for m in &months {
        older.extend(mids_of(&folder.join(m)));
    }
    (window, older, months)
}

#[tokio::test]
async fn a_long_conversation_keeps_its_newest_entries_in_the_window_and_the_rest_by_month() {
    let env = fb_env_with(
        FakeGraphConfig::default(),
        &vars(&[("CONVERSATION_WINDOW", "100")]),
    )
    .await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let pid = PageId::parse(&page).unwrap();
    let psid = "7100000000000001";
    let key = keys::conversation(&merchant, &pid, &Psid::parse(psid).unwrap());
    // 2026-01-01T00:00:00Z; 230 messages, one every 13.9 hours: the oldest 130 span three months.
    let jan = 1_767_225_600_000i64;
    let step = 50_000_000i64;
    let mids: Vec<String> = (0..230).map(|i| format!("m_long_{i:04}")).collect();
    for chunk in (0..230).collect::<Vec<i64>>().chunks(23) {
        let items = chunk
            .iter()
            .map(|&i| customer_message(&page, psid, &mids[i as usize], jan + i * step))
            .collect();
        assert_eq!(
            post_signed(&env.app, &env.fake, &delivery_of(&page, items)).await,
            200
        );
        drained(&env.app).await;
    }
    let (window, older, months) = conversation_mids(&env.s3, &key);
    // The newest 100, and up to 25 more before a batch moves out.
    assert!((100..=125).contains(&window.len()), "{}", window.len());
    assert_eq!(
        window,
        mids[230 - window.len()..],
        "the window holds the newest"
    );
    assert_eq!(months, ["2026-01.json", "2026-02.json", "2026-03.json"]);
    let mut all = older.clone();
    all.extend(window.clone());
    all.sort();
    assert_eq!(all, mids, "every entry exactly once");

    // A late message from January goes to its month; the window is not rewritten.
    let late = "m_long_late";
    let puts = env.s3.puts();
    let items = vec![customer_message(
        &page,
        psid,
        late,
        jan + 5 * 86_400_000 + 1,
    )];
    assert_eq!(
        post_signed(&env.app, &env.fake, &delivery_of(&page, items)).await,
        200
    );
    drained(&env.app).await;
    assert_eq!(env.s3.puts(), puts + 1, "one month object written");
    let jan_obj: Value = serde_json::from_slice(
        &std::fs::read(
            env.s3
                .object_path(key.as_str())
                .with_extension("")
                .join("2026-01.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(jan_obj
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"]["mid"] == late));
    let (window_after, _, _) = conversation_mids(&env.s3, &key);
    assert_eq!(window_after, window);

    // A conversation stored whole by an earlier version (over the window) is split on its
    // next merge, losing nothing.
    let legacy_psid = "7100000000000002";
    let legacy_key = keys::conversation(&merchant, &pid, &Psid::parse(legacy_psid).unwrap());
    let legacy: Vec<Value> = (0..250)
        .map(|i| customer_message(&page, legacy_psid, &format!("m_old_{i:04}"), jan + i * step))
        .collect();
    env.app
        .state
        .objects
        .put_json_if_changed(&legacy_key, &legacy)
        .await
        .unwrap();
    let items = vec![customer_message(
        &page,
        legacy_psid,
        "m_old_new",
        jan + 300 * step,
    )];
    assert_eq!(
        post_signed(&env.app, &env.fake, &delivery_of(&page, items)).await,
        200
    );
    drained(&env.app).await;
    let (window, older, _) = conversation_mids(&env.s3, &legacy_key);
    assert_eq!(window.len(), 100);
    assert_eq!(window.last().unwrap(), "m_old_new");
    assert_eq!(older.len() + window.len(), 251);
    let mut all = older;
    all.extend(window);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 251, "nothing lost, nothing twice");
    env.app.stop().await.unwrap();
}
