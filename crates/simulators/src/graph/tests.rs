//! Self-tests of the fake Graph, over HTTP like the service reaches it.

use serde_json::{json, Value};
use url::Url;

use super::*;

const REDIRECT: &str = "https://app.example.com/facebook/callback";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// GET with the token as a Bearer header (like the service); `(status, body)`.
async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = client().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn url_with(fake: &FakeGraph, path: &str, query: &[(&str, &str)]) -> String {
    let mut u = Url::parse(&fake.graph_url(path)).unwrap();
    if !query.is_empty() {
        u.query_pairs_mut().extend_pairs(query);
    }
    u.to_string()
}

fn dialog_url(fake: &FakeGraph, state: &str) -> String {
    let c = fake.config();
    url_with(
        fake,
        "dialog/oauth",
        &[
            ("client_id", c.app_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "pages_messaging,pages_show_list"),
            ("response_type", "code"),
            ("state", state),
        ],
    )
}

async fn exchange_code(fake: &FakeGraph, code: &str, redirect: &str) -> (u16, Value) {
    let c = fake.config();
    let u = url_with(
        fake,
        "oauth/access_token",
        &[
            ("client_id", c.app_id.as_str()),
            ("redirect_uri", redirect),
            ("client_secret", c.app_secret.as_str()),
            ("code", code),
        ],
    );
    get(&u, None).await
}

async fn long_lived(fake: &FakeGraph, short: &str) -> (u16, Value) {
    let c = fake.config();
    let u = url_with(
        fake,
        "oauth/access_token",
        &[
            ("grant_type", "fb_exchange_token"),
            ("client_id", c.app_id.as_str()),
            ("client_secret", c.app_secret.as_str()),
            ("fb_exchange_token", short),
        ],
    );
    get(&u, None).await
}

/// Code → short → long-lived user token for a user.
async fn connect(fake: &FakeGraph, user: usize) -> String {
    let code = fake.issue_code_for(user);
    let (s, short) = exchange_code(fake, &code, REDIRECT).await;
    assert_eq!(s, 200, "{short}");
    let (s, long) = long_lived(fake, short["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 200, "{long}");
    long["access_token"].as_str().unwrap().to_string()
}

/// Follows `paging.next` like the service: `access_token` stripped, Bearer header.
async fn walk(first: &str, token: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    let mut requests = 0;
    while let Some(u) = next.take() {
        let (s, v) = get(&u, Some(token)).await;
        assert_eq!(s, 200, "{v}");
        requests += 1;
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        if let Some(n) = v.pointer("/paging/next").and_then(Value::as_str) {
            let n = Url::parse(n).unwrap();
            let q: HashMap<String, String> = n.query_pairs().into_owned().collect();
            assert_eq!(q.get("access_token").map(String::as_str), Some(token));
            let mut clean = n.clone();
            clean.set_query(None);
            clean.query_pairs_mut().extend_pairs(
                n.query_pairs()
                    .filter(|(k, _)| k != "access_token")
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
            next = Some(clean.to_string());
        }
        assert!(requests < 100, "paging did not end");
    }
    (out, requests)
}

fn error_code(v: &Value) -> (i64, Option<i64>) {
    (
        v["error"]["code"].as_i64().unwrap(),
        v["error"]["error_subcode"].as_i64(),
    )
}

#[tokio::test]
async fn fake_graph_oauth_code_token_and_long_lived() {
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let vars: HashMap<_, _> = fake.vars().into_iter().collect();
    assert_eq!(vars["FACEBOOK_GRAPH_BASE_URL"], fake.base_url());
    assert_eq!(vars["FACEBOOK_GRAPH_VERSION"], "v25.0");
    assert_eq!(vars["FACEBOOK_VERIFY_TOKEN"], VERIFY_TOKEN);

    // The dialog answers HTML and records the query; approve → callback with code + state.
    let dialog = dialog_url(&fake, "st-1");
    let r = client().get(&dialog).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("fake dialog"));
    assert_eq!(fake.dialog_requests()[0]["state"], "st-1");
    assert_eq!(fake.requests("dialog"), 1);
    assert_eq!(fake.total_requests(), 0);
    let callback = Url::parse(&fake.approve(&dialog, 0).unwrap()).unwrap();
    assert!(callback.as_str().starts_with(REDIRECT));
    let q: HashMap<String, String> = callback.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    let denied = fake.deny(&dialog).unwrap();
    assert!(denied.contains("error=access_denied") && denied.contains("state=st-1"));

    // The code is bound to the dialog's redirect_uri, and single use.
    let (s, v) = exchange_code(&fake, &q["code"], "https://evil.example/cb").await;
    assert_eq!((s, error_code(&v)), (400, (100, Some(36008))));
    let (s, short) = exchange_code(&fake, &q["code"], REDIRECT).await;
    assert_eq!(s, 200, "{short}");
    assert_eq!(short["token_type"], "bearer");
    assert_eq!(short["expires_in"], 5400);
    let short = short["access_token"].as_str().unwrap().to_string();
    assert!(short.starts_with("EAA"));
    let (s, v) = exchange_code(&fake, &q["code"], REDIRECT).await;
    assert_eq!((s, error_code(&v)), (400, (100, Some(36009))));
    assert_eq!(v["error"]["type"], "OAuthException");
    assert!(v["error"]["fbtrace_id"].as_str().unwrap().starts_with('A'));
    let (s, v) = exchange_code(&fake, "nope", REDIRECT).await;
    assert_eq!((s, error_code(&v).0), (400, 100));
    let (_, v) = exchange_code(&fake, &fake.issue_code(), "/relative").await;
    assert_eq!(error_code(&v).0, 191);
    let u = url_with(
        &fake,
        "oauth/access_token",
        &[
            ("client_id", fake.config().app_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_secret", "wrong"),
            ("code", &fake.issue_code()),
        ],
    );
    assert_eq!(error_code(&get(&u, None).await.1).0, 1);
    assert_eq!(fake.code_grants(), 1);
    assert_eq!(fake.last_redirect_uri().as_deref(), Some(REDIRECT));

    // Long-lived exchange; the short token stays valid.
    let (s, long) = long_lived(&fake, &short).await;
    assert_eq!(s, 200, "{long}");
    assert_eq!(long["expires_in"], 5_184_000);
    let long = long["access_token"].as_str().unwrap().to_string();
    assert!(long.starts_with("EAAL"));
    assert_eq!(fake.exchanges(), 1);
    assert_eq!(fake.requests("exchange"), 1);
    assert_eq!(fake.requests("token"), 6);
    let (_, v) = long_lived(&fake, "EAAgarbage").await;
    assert_eq!(error_code(&v).0, 190);

    for t in [&short, &long] {
        let (s, me) = get(&url_with(&fake, "me", &[("fields", "id,name")]), Some(t)).await;
        assert_eq!(s, 200, "{me}");
        assert_eq!(me["id"], fake.user_id(0));
        assert_eq!(me["name"], fake.user_name(0));
        assert_eq!(me.as_object().unwrap().len(), 2);
    }
    assert!(fake.last_request("me").unwrap().token_in_header);
    // Query-parameter tokens work too; distinct users are distinct.
    let other = connect(&fake, 1).await;
    let (_, me) = get(
        &url_with(&fake, "me", &[("access_token", other.as_str())]),
        None,
    )
    .await;
    assert_eq!(me["id"], fake.user_id(1));
    assert_ne!(fake.user_id(0), fake.user_id(1));
    assert!(fake
        .page_ids(0)
        .iter()
        .all(|p| !fake.page_ids(1).contains(p)));
    assert_eq!(fake.user_tokens().len(), 4);
    assert!(fake
        .all_tokens()
        .contains(&fake.page_token(&fake.page_ids(1)[0])));
    let (s, v) = get(&url_with(&fake, "me", &[]), None).await;
    assert_eq!((s, error_code(&v).0), (400, 2500));
}

#[tokio::test]
async fn fake_graph_accounts_paging_follows_next() {
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let token = connect(&fake, 0).await;
    let fields = "id,name,category,category_list,about,website,link,picture,fan_count,verification_status,location,phone,email,created_time,access_token";
    let first = url_with(
        &fake,
        "me/accounts",
        &[("fields", fields), ("limit", "100")],
    );
    let (pages, requests) = walk(&first, &token).await;
    assert_eq!(requests, 2, "page size 2 by default");
    assert_eq!(pages.len(), 3);
    let ids: Vec<&str> = pages.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, fake.page_ids(0));
    assert!(ids.iter().all(|id| id.bytes().all(|b| b.is_ascii_digit())));
    for p in &pages {
        assert_eq!(
            p["access_token"],
            fake.page_token(p["id"].as_str().unwrap())
        );
        assert!(p["access_token"].as_str().unwrap().starts_with("EAAP"));
    }
    let full = pages[0].as_object().unwrap();
    assert_eq!(full.len(), 15, "{full:?}");
    assert_eq!(pages[0]["picture"]["data"]["is_silhouette"], false);
    assert_eq!(pages[0]["location"]["country"], "Ukraine");
    assert!(pages[0]["category_list"][0]["id"].is_string());
    // The third page has no website, location, phone… (omitted, not null).
    assert!(pages[2].get("website").is_none());
    assert!(pages[2].get("name").is_some());
    assert_eq!(fake.requests("accounts"), 2);

    fake.set_accounts_page_size(1);
    let (pages, requests) = walk(&first, &token).await;
    assert_eq!((pages.len(), requests), (3, 3));
    fake.set_accounts_page_size(25);
    let (s, v) = get(&first, Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert!(v["paging"].get("next").is_none());
    assert!(v["paging"]["cursors"]["after"].is_string());

    // Default fields; a page token has no accounts.
    let (_, v) = get(&url_with(&fake, "me/accounts", &[]), Some(&token)).await;
    let keys: Vec<&String> = v["data"][0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "category",
            "category_list",
            "id",
            "name",
            "tasks"
        ]
    );
    let pt = fake.page_token(&fake.page_ids(0)[0]);
    let (_, v) = get(&url_with(&fake, "me/accounts", &[]), Some(&pt)).await;
    assert_eq!(error_code(&v).0, 100);
    // /me with a page token is the page.
    let (_, v) = get(&url_with(&fake, "me", &[]), Some(&pt)).await;
    assert_eq!(v["id"], fake.page_ids(0)[0]);
    assert!(fake.unexpected_requests().is_empty());
}

#[tokio::test]
async fn fake_graph_conversations_and_messages_paging() {
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let page = fake.page_ids(0)[0].clone();
    let token = fake.page_token(&page);
    let first = url_with(
        &fake,
        &format!("{page}/conversations"),
        &[
            ("platform", "messenger"),
            ("fields", "id,updated_time,participants"),
            ("limit", "25"),
        ],
    );
    let (convs, requests) = walk(&first, &token).await;
    assert_eq!((convs.len(), requests), (30, 2));
    let times: Vec<&str> = convs
        .iter()
        .map(|c| c["updated_time"].as_str().unwrap())
        .collect();
    assert_eq!(times[0], BASE_TIME);
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
    let c0 = &convs[0];
    assert!(c0["id"].as_str().unwrap().starts_with("t_"));
    assert_eq!(c0.as_object().unwrap().len(), 3);
    let parts = c0["participants"]["data"].as_array().unwrap();
    assert_eq!(parts[1]["id"], page.as_str());
    assert_eq!(parts[1]["name"], fake.page_name(&page));
    let psid = parts[0]["id"].as_str().unwrap();
    assert_eq!(parts[0]["email"], format!("{psid}@facebook.com"));
    assert_eq!(fake.psids(&page)[0], psid);

    // The long conversation: 60 messages over 3 pages, newest first, alternating.
    let long = fake.long_conversation_psid(&page).unwrap();
    let conv_id = fake.conversation_id(&page, &long).unwrap();
    let murl = url_with(
        &fake,
        &format!("{conv_id}/messages"),
        &[
            (
                "fields",
                "id,created_time,from,to,message,attachments,sticker",
            ),
            ("limit", "25"),
        ],
    );
    let (msgs, requests) = walk(&murl, &token).await;
    assert_eq!((msgs.len(), requests), (60, 3));
    assert_eq!(msgs, fake.conversation_messages(&page, &long));
    let times: Vec<&str> = msgs
        .iter()
        .map(|m| m["created_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]));
    for w in msgs.windows(2) {
        assert_eq!(w[0]["from"]["id"], w[1]["to"]["data"][0]["id"]);
        assert!(w[0]["id"].as_str().unwrap().starts_with("m_"));
    }
    let images = msgs
        .iter()
        .filter(|m| m.get("attachments").is_some())
        .count();
    assert_eq!(images, 12);
    let img = msgs
        .iter()
        .find(|m| m.get("attachments").is_some())
        .unwrap();
    let a = &img["attachments"]["data"][0];
    assert_eq!(a["mime_type"], "image/jpeg");
    assert!(a["image_data"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert!(msgs.iter().any(|m| m.get("sticker").is_some()));
    // A short conversation: 7 messages, one page, no `next`.
    let short = &fake.psids(&page)[0];
    let cid = fake.conversation_id(&page, short).unwrap();
    let (s, v) = get(
        &url_with(&fake, &format!("{cid}/messages"), &[("limit", "25")]),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 7);
    assert!(v["paging"].get("next").is_none());
    assert_eq!(v["data"][0].as_object().unwrap().len(), 2, "default fields");

    // A new message moves its conversation to the top; a new PSID starts a conversation.
    let oldest = fake.psids(&page).last().unwrap().clone();
    let mid = fake.add_message(&page, &oldest, "Is it still available?", false);
    assert_eq!(fake.psids(&page)[0], oldest);
    let msgs = fake.conversation_messages(&page, &oldest);
    assert_eq!(msgs[0]["id"], mid.as_str());
    assert_eq!(msgs[0]["message"], "Is it still available?");
    fake.add_message(&page, "7000000000000001", "hello", false);
    let reply = fake.add_message(&page, "7000000000000001", "hi there", true);
    let (convs, _) = walk(&first, &token).await;
    assert_eq!(convs.len(), 31);
    assert_eq!(
        convs[0]["participants"]["data"][0]["id"],
        "7000000000000001"
    );
    // Webhook fields arrive only when subscribed: the page's reply only on `message_echoes`,
    // a conversation another app controls only on `standby`.
    fake.preset_subscribed(&page, &["messages"]);
    assert!(fake.message_webhook(&page, &reply).is_none());
    fake.preset_subscribed(&page, &["messages", "message_echoes"]);
    let hook = fake.message_webhook(&page, &reply).unwrap();
    assert_eq!(hook["entry"][0]["messaging"][0]["message"]["is_echo"], true);
    assert_eq!(
        hook["entry"][0]["messaging"][0]["sender"]["id"],
        page.as_str()
    );
    fake.set_routed_elsewhere(&page, "7000000000000001", true);
    assert!(fake.message_webhook(&page, &reply).is_none());
    fake.preset_subscribed(&page, &["messages", "message_echoes", "standby"]);
    let hook = fake.message_webhook(&page, &reply).unwrap();
    assert!(hook["entry"][0].get("messaging").is_none());
    assert_eq!(
        hook["entry"][0]["standby"][0]["message"]["mid"],
        reply.as_str()
    );
    assert!(fake
        .postback_webhook(&page, "7000000000000002", "Buy", "BUY_1", 1)
        .is_none());
    fake.preset_subscribed(&page, &["messaging_postbacks", "messaging_referrals"]);
    let pb = fake
        .postback_webhook(&page, "7000000000000002", "Buy", "BUY_1", 1)
        .unwrap();
    assert_eq!(
        pb["entry"][0]["messaging"][0]["postback"]["payload"],
        "BUY_1"
    );
    let rf = fake
        .ad_referral_webhook(&page, "7000000000000002", "6045246247433", "42", 2)
        .unwrap();
    assert_eq!(
        rf["entry"][0]["messaging"][0]["referral"]["ads_context_data"]["product_id"],
        "42"
    );
    fake.preset_subscribed(&page, &[]);
    assert!(fake.signature_256(b"{}").starts_with("sha256="));

    // Page tokens only; user tokens are refused like Graph does.
    let user = connect(&fake, 0).await;
    let (s, v) = get(&first, Some(&user)).await;
    assert_eq!((s, error_code(&v).0), (400, 190));
    let other_page = fake.page_token(&fake.page_ids(0)[1]);
    let (_, v) = get(&first, Some(&other_page)).await;
    assert_eq!(error_code(&v), (100, Some(33)));
    assert_eq!(fake.requests("messages"), 4);
}

#[tokio::test]
async fn fake_graph_page_fields_and_subscriptions() {
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let page = fake.page_ids(0)[0].clone();
    let token = fake.page_token(&page);
    let (s, v) = get(
        &url_with(
            &fake,
            &page,
            &[("fields", "name,picture,location,fan_count")],
        ),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["fan_count", "id", "location", "name", "picture"]);
    fake.set_page_name(&page, "Renamed Page");
    let (_, v) = get(&url_with(&fake, &page, &[("fields", "name")]), Some(&token)).await;
    assert_eq!(v["name"], "Renamed Page");
    let (_, v) = get(
        &url_with(&fake, &page, &[("fields", "name,bogus")]),
        Some(&token),
    )
    .await;
    assert_eq!(error_code(&v).0, 100);
    let (_, v) = get(&url_with(&fake, "999", &[]), Some(&token)).await;
    assert_eq!(error_code(&v), (100, Some(33)));

    let subs = fake.graph_url(&format!("{page}/subscribed_apps"));
    let (s, v) = get(&subs, Some(&token)).await;
    assert_eq!((s, v), (200, json!({"data": []})));
    let r = client()
        .post(format!("{subs}?subscribed_fields=name,category,messages"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    let (_, v) = get(&subs, Some(&token)).await;
    assert_eq!(v["data"][0]["id"], fake.config().app_id);
    assert_eq!(v["data"][0]["name"], APP_NAME);
    assert_eq!(
        v["data"][0]["subscribed_fields"],
        json!(["name", "category", "messages"])
    );
    // Form body, bad field, user token.
    let r = client()
        .post(&subs)
        .bearer_auth(&token)
        .form(&[("subscribed_fields", "messages,nonsense")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(fake.subscribe_posts(&page), 2);
    assert_eq!(
        fake.subscribed_fields(&page),
        ["name", "category", "messages"]
    );
    let user = connect(&fake, 0).await;
    let (_, v) = get(&subs, Some(&user)).await;
    assert_eq!(error_code(&v).0, 210);
    let other = fake.page_ids(0)[1].clone();
    fake.preset_other_app(&other, "Other CRM", &["messages", "feed"]);
    fake.preset_subscribed(&other, &["messages"]);
    let (_, v) = get(
        &fake.graph_url(&format!("{other}/subscribed_apps")),
        Some(&fake.page_token(&other)),
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(fake.requests("subscribed_apps_post"), 2);
    assert_eq!(fake.requests("subscribed_apps_get"), 4);
}

#[tokio::test]
async fn fake_graph_revoked_tokens_rate_limits_and_failures() {
    let fake = FakeGraph::start(FakeGraphConfig::default()).await;
    let page = fake.page_ids(0)[0].clone();
    let old = fake.page_token(&page);
    let url = url_with(&fake, &page, &[("fields", "id,name")]);
    assert_eq!(get(&url, Some(&old)).await.0, 200);
    fake.revoke_page_token(&page);
    let r = client().get(&url).bearer_auth(&old).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("www-authenticate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), (190, Some(460)));
    assert_eq!(v["error"]["type"], "OAuthException");
    let new = fake.page_token(&page);
    assert_ne!(new, old);
    assert_eq!(get(&url, Some(&new)).await.0, 200);
    assert!(fake.all_tokens().contains(&old));
    let (_, v) = get(&url, Some("EAAnot-a-token")).await;
    assert_eq!(error_code(&v), (190, None));
    let (_, v) = get(&url, None).await;
    assert_eq!(error_code(&v).0, 104);

    let user = connect(&fake, 0).await;
    let me = url_with(&fake, "me", &[]);
    assert_eq!(get(&me, Some(&user)).await.0, 200);
    fake.revoke_user_tokens();
    assert_eq!(error_code(&get(&me, Some(&user)).await.1), (190, Some(460)));
    assert_eq!(get(&url, Some(&new)).await.0, 200, "page tokens unaffected");

    // appsecret_proof: checked when sent, required on demand.
    let proof = fake.appsecret_proof(&new);
    let with_proof = url_with(&fake, &page, &[("appsecret_proof", proof.as_str())]);
    assert_eq!(get(&with_proof, Some(&new)).await.0, 200);
    let bad = url_with(&fake, &page, &[("appsecret_proof", "00")]);
    assert_eq!(error_code(&get(&bad, Some(&new)).await.1).0, 100);
    fake.require_appsecret_proof(true);
    assert_eq!(get(&url, Some(&new)).await.0, 400);
    assert_eq!(get(&with_proof, Some(&new)).await.0, 200);
    fake.require_appsecret_proof(false);

    // Rate limits, then server failures.
    fake.reset_counters();
    fake.rate_limit_next(4, 2);
    for _ in 0..2 {
        let r = client().get(&url).bearer_auth(&new).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().contains_key("x-app-usage"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], 4);
        assert_eq!(v["error"]["type"], "OAuthException");
        assert_eq!(
            v["error"]["message"],
            "(#4) Application request limit reached"
        );
    }
    assert_eq!(get(&url, Some(&new)).await.0, 200);
    fake.rate_limit_next(613, 1);
    assert_eq!(error_code(&get(&url, Some(&new)).await.1).0, 613);
    fake.fail_next(503, 1);
    let r = client().get(&url).bearer_auth(&new).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "Service Unavailable");
    fake.fail_next(429, 1);
    assert_eq!(get(&url, Some(&new)).await.0, 429);
    assert_eq!(get(&url, Some(&new)).await.0, 200);
    assert_eq!(fake.requests("page"), 7);
    assert_eq!(fake.total_requests(), 7);

    // Wrong version and unknown edges are recorded.
    let r = client()
        .get(format!("{}/v2.0/me", fake.base_url()))
        .bearer_auth(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, v) = get(
        &fake.graph_url(&format!("{page}/feed?access_token=x")),
        None,
    )
    .await;
    assert_eq!(error_code(&v).0, 100);
    let unexpected = fake.unexpected_requests();
    assert_eq!(unexpected.len(), 2, "{unexpected:?}");
    assert_eq!(unexpected[0], "GET /v2.0/me");
    assert!(unexpected[1].ends_with("/feed?access_token=REDACTED"));
}
