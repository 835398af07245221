//! Facebook hardening (issue 12): `signed_request` freshness and replay, page ownership, sessions
//! ending with the data, no stored user token. The real server, the fake Graph API, objects in
//! the embedded S3 server.

use std::time::Duration;

use salesbot_sync::facebook::deletion::DataDeletion;
use salesbot_sync::ids::{MerchantId, PageId, Psid};
use salesbot_sync::jobs::Job;
use salesbot_sync::objects::keys;
use salesbot_sync::store::now_secs;
use salesbot_sync::store::tokens::ShopGrant;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::facebook::{fb_connect, fb_env, fb_env_with, read, session, signed_request, FbEnv};
use crate::helpers::*;

/// Posts a data deletion request for `user` issued at `issued_at`: status and JSON.
async fn delete_request(env: &FbEnv, user: &str, issued_at: i64) -> (u16, Value) {
    let signed = signed_request(
        &env.fake.config().app_secret,
        &json!({"algorithm": "HMAC-SHA256", "user_id": user, "issued_at": issued_at}),
    );
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", signed)])
        .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn status_at(env: &FbEnv, url: &str) -> Value {
    env.app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_done(env: &FbEnv, url: &str) {
    for _ in 0..600 {
        if status_at(env, url).await["status"] == "done" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the deletion did not finish: {}", status_at(env, url).await);
}

/// Queued or finished data deletion jobs.
async fn deletion_jobs(env: &FbEnv) -> usize {
    env.app
        .state
        .events
        .rows()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == DataDeletion::KIND)
        .count()
}

async fn deletion_rows(env: &FbEnv) -> i64 {
    count_tokens_sql(&env.app, "SELECT COUNT(*) FROM data_deletions".into()).await
}

/// The status of `/facebook/login` with this cookie (307 with a live session).
async fn login_status(env: &FbEnv, cookie: &str) -> u16 {
    env.app
        .client
        .get(env.app.url("/facebook/login"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_day_old_signed_request_is_refused_and_deletes_nothing() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = PageId::parse(&env.fake.page_ids(0)[0]).unwrap();

    let (status, body) = delete_request(&env, &env.fake.user_id(0), now_secs() - 24 * 3600).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("too old"),
        "{body}"
    );
    drained(&env.app).await;
    assert_eq!(deletion_rows(&env).await, 0, "nothing recorded");
    assert_eq!(deletion_jobs(&env).await, 0, "nothing queued");
    assert!(env.app.state.tokens.page(&page).await.unwrap().is_some());
    assert!(read(&env.s3, &keys::page_metadata(&merchant, &page)).is_some());
    assert_eq!(
        login_status(&env, &cookie).await,
        307,
        "the session still works"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_signed_request_from_the_future_is_refused() {
    let env = fb_env().await;
    let user = env.fake.user_id(0);
    let (status, body) = delete_request(&env, &user, now_secs() + 3600).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("future"),
        "{body}"
    );
    // A request without issued_at is refused as well.
    let signed = signed_request(
        &env.fake.config().app_secret,
        &json!({"algorithm": "HMAC-SHA256", "user_id": user}),
    );
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", signed)])
        .await;
    assert_eq!(r.status(), 400);
    // A little skew is tolerated.
    let (status, body) = delete_request(&env, &user, now_secs() + 30).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(deletion_rows(&env).await, 1);
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_replayed_signed_request_answers_the_original_and_queues_nothing_new() {
    let env = fb_env().await;
    let (_, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let user = env.fake.user_id(0);
    let issued = now_secs() - 60;
    let (status, first) = delete_request(&env, &user, issued).await;
    assert_eq!(status, 200, "{first}");
    let url = first["url"].as_str().unwrap().to_string();
    wait_done(&env, &url).await;
    let done = status_at(&env, &url).await;

    let (status, again) = delete_request(&env, &user, issued).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again, first,
        "the original confirmation code and status URL"
    );
    drained(&env.app).await;
    assert_eq!(deletion_jobs(&env).await, 1, "no second deletion queued");
    assert_eq!(deletion_rows(&env).await, 1);
    assert_eq!(
        status_at(&env, &url).await,
        done,
        "the status URL still answers"
    );
    env.app.stop().await.unwrap();
}

/// The per-page upload result of `page` in a callback answer.
fn upload_result<'a>(body: &'a Value, page: &str) -> &'a Value {
    &body["upload_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["page_id"] == page)
        .unwrap_or_else(|| panic!("no upload_status for {page}: {body}"))["result"]
}

#[tokio::test]
async fn a_page_granted_by_another_user_is_not_taken_over() {
    let env = fb_env().await;
    let (a, cookie_a) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie_a, 0).await.0, 200);
    drained(&env.app).await;
    let p = env.fake.page_ids(0)[0].clone();
    let page = PageId::parse(&p).unwrap();
    // User 1 administers P too and grants it from merchant B's session.
    env.fake.add_page_admin(1, &p);
    let (b, cookie_b) = session(&env.app).await;
    let (status, body) = fb_connect(&env.app, &env.fake, &cookie_b, 1).await;
    assert_eq!(status, 200, "{body}");
    let result = upload_result(&body, &p);
    assert_eq!(result["status"], "failed", "{body}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("connected to another account"),
        "{message}"
    );
    assert!(
        !message.contains(&a.to_string()),
        "no id of the other merchant"
    );
    // User 1's own pages connect as usual.
    for own in env.fake.page_ids(1).iter().filter(|q| **q != p) {
        assert_eq!(upload_result(&body, own)["status"], "success", "{body}");
    }
    drained(&env.app).await;
    let rec = env.app.state.tokens.page(&page).await.unwrap().unwrap();
    assert_eq!(rec.merchant, a, "A keeps P");
    assert!(read(&env.s3, &keys::page_metadata(&a, &page)).is_some());
    assert!(env
        .app
        .state
        .objects
        .list(&keys::page_prefix(&b, &page))
        .await
        .unwrap()
        .is_empty());
    assert!(env
        .app
        .state
        .tokens
        .page_moves(10)
        .await
        .unwrap()
        .is_empty());
    env.app.stop().await.unwrap();
}

/// The merchant's `/account` as JSON.
async fn account_json(env: &FbEnv, cookie: &str) -> Value {
    let r = env
        .app
        .client
        .get(env.app.url("/account"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Posts the move form of `page` with `cookie` (and the form token, when given): the status.
async fn post_move(env: &FbEnv, cookie: &str, page: &str, csrf: Option<&str>) -> u16 {
    let form: Vec<(&str, &str)> = csrf.map(|c| vec![("csrf", c)]).unwrap_or_default();
    let r = env
        .app
        .client
        .post(env.app.url(&format!("/account/pages/{page}/move")))
        .header("Cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

fn owner(page: &str) -> PageId {
    PageId::parse(page).unwrap()
}

#[tokio::test]
async fn a_connect_from_another_account_moves_nothing_until_the_user_confirms_one_page() {
    let env = fb_env().await;
    let (a, cookie_a) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie_a, 0).await.0, 200);
    drained(&env.app).await;
    let pages = env.fake.page_ids(0);
    let page = PageId::parse(&pages[0]).unwrap();
    assert!(read(&env.s3, &keys::page_metadata(&a, &page)).is_some());

    // The same Facebook user, now signed in as merchant B: every page stays with A.
    let (b, cookie_b) = session(&env.app).await;
    let (status, body) = fb_connect(&env.app, &env.fake, &cookie_b, 0).await;
    assert_eq!(status, 200, "{body}");
    for p in &pages {
        let result = upload_result(&body, p);
        assert_eq!(result["status"], "failed", "{body}");
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains("connected to another account"),
            "{message}"
        );
        assert!(message.contains("account page"), "{message}");
    }
    drained(&env.app).await;
    for p in &pages {
        let rec = env.app.state.tokens.page(&owner(p)).await.unwrap().unwrap();
        assert_eq!(rec.merchant, a, "A keeps {p}");
    }
    assert!(env
        .app
        .state
        .objects
        .list(&keys::merchant_prefix(&b))
        .await
        .unwrap()
        .is_empty());
    assert!(env
        .app
        .state
        .tokens
        .page_moves(10)
        .await
        .unwrap()
        .is_empty());
    // B's account offers each page, one form each.
    let offered = account_json(&env, &cookie_b).await;
    let movable: Vec<&str> = offered["movable_pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(movable.len(), pages.len(), "{offered}");

    // Confirmed for one page, with the session's form token.
    let csrf = crate::pages::csrf_of(&crate::pages::account_html(&env.app, &cookie_b).await);
    assert_eq!(post_move(&env, &cookie_b, &pages[0], None).await, 403);
    // Someone else (merchant C, connected by Facebook user 1) cannot move A's page.
    let (_, cookie_c) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie_c, 1).await.0, 200);
    let csrf_c = crate::pages::csrf_of(&crate::pages::account_html(&env.app, &cookie_c).await);
    assert_eq!(
        post_move(&env, &cookie_c, &pages[0], Some(&csrf_c)).await,
        403
    );
    assert_eq!(
        post_move(&env, &cookie_b, &pages[0], Some(&csrf)).await,
        303
    );
    drained(&env.app).await;
    assert_eq!(
        env.app
            .state
            .tokens
            .page(&page)
            .await
            .unwrap()
            .unwrap()
            .merchant,
        b
    );
    for p in &pages[1..] {
        let rec = env.app.state.tokens.page(&owner(p)).await.unwrap().unwrap();
        assert_eq!(rec.merchant, a, "only the confirmed page moves");
        assert!(read(&env.s3, &keys::page_metadata(&a, &owner(p))).is_some());
    }
    // B's copy is complete: its first poll read every conversation again.
    assert!(read(&env.s3, &keys::page_metadata(&b, &page)).is_some());
    let long = env.fake.long_conversation_psid(&pages[0]).unwrap();
    let conv = keys::conversation(&b, &page, &Psid::parse(&long).unwrap());
    assert_eq!(read(&env.s3, &conv).unwrap().as_array().unwrap().len(), 60);
    // A's copy of that page is gone.
    let left = env
        .app
        .state
        .objects
        .list(&keys::page_prefix(&a, &page))
        .await
        .unwrap();
    assert!(left.is_empty(), "A's copy deleted: {left:?}");
    // A sees that it left, and when; the status lists the move without merchant ids.
    let a_view = account_json(&env, &cookie_a).await;
    let gone = a_view["moved_away"].as_array().unwrap();
    assert_eq!(gone.len(), 1, "{a_view}");
    assert_eq!(gone[0]["id"], pages[0].as_str());
    assert!((gone[0]["moved_at"].as_i64().unwrap() - now_secs()).abs() < 600);
    assert!(!a_view.to_string().contains(&b.to_string()));
    let index: Value = env.app.get("/").await.json().await.unwrap();
    let moved = index["integrations"]["facebook"]["moved"]
        .as_array()
        .unwrap();
    assert_eq!(moved.len(), 1, "{index}");
    assert_eq!(moved[0]["old_copy"], "deleted", "{index}");
    assert!(!index.to_string().contains(&a.to_string()));
    let metrics = env.app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("facebook_page_moves_total"), "{metrics}");
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn data_deletion_ends_the_session_of_a_merchant_left_with_nothing() {
    let env = fb_env().await;
    // Merchant A has only Facebook pages; merchant C also has a shop.
    let (_, cookie_a) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie_a, 0).await.0, 200);
    let c = MerchantId::random();
    let shop = salesbot_sync::ids::ShopDomain::parse("still-here.myshopify.com").unwrap();
    let grant = ShopGrant {
        access_token: SecretString::from("shpat_x".to_string()),
        scopes: "read_products".into(),
        expires_at: None,
        refresh_token: None,
        refresh_token_expires_at: None,
    };
    env.app
        .state
        .tokens
        .save_shop_grant(&shop, grant, Some(c))
        .await
        .unwrap();
    let cookie_c = format!(
        "session_id={}",
        env.app.state.sessions.create(c).await.unwrap()
    );
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie_c, 1).await.0, 200);
    drained(&env.app).await;

    for user in [0, 1] {
        let (status, body) = delete_request(&env, &env.fake.user_id(user), now_secs()).await;
        assert_eq!(status, 200, "{body}");
        wait_done(&env, body["url"].as_str().unwrap()).await;
    }
    assert_eq!(
        login_status(&env, &cookie_a).await,
        400,
        "A's session ended"
    );
    assert_eq!(
        login_status(&env, &cookie_c).await,
        307,
        "C keeps its shop's session"
    );
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn no_user_token_is_stored_after_connect() {
    let env = fb_env().await;
    let (merchant, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let user = env
        .app
        .state
        .tokens
        .facebook_user(merchant)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        user.fb_user_id,
        Some(env.fake.user_id(0)),
        "who connected is kept"
    );
    // Every token column left belongs to a shop or a page: the user token has none.
    let columns: Vec<(String, String)> = match &env.app.state.postgres {
        Some(pg) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND column_name LIKE '%token%'",
        )
        .fetch_all(pg.pool())
        .await
        .unwrap(),
        None => env
            .app
            .state
            .tokens
            .backend()
            .sqlite()
            .unwrap()
            .call(|c| {
                let mut st = c.prepare(
                    "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
                     WHERE m.type = 'table' AND p.name LIKE '%token%'",
                )?;
                let v = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
            .unwrap(),
    };
    assert!(!columns.is_empty());
    assert!(
        columns.iter().all(|(t, _)| t == "shops" || t == "pages"),
        "{columns:?}"
    );
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_move_whose_clean_up_was_never_queued_is_cleaned_at_start_up() {
    let env = fb_env().await;
    let (a, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    let page = PageId::parse(&env.fake.page_ids(0)[0]).unwrap();
    assert!(read(&env.s3, &keys::page_metadata(&a, &page)).is_some());
    // A move the store recorded, as if the process stopped before its job was queued.
    let (b, p, user) = (MerchantId::random(), page.to_string(), env.fake.user_id(0));
    let (a_text, b_text) = (a.to_string(), b.to_string());
    // Ids this test made (a UUID, digits): safe in the statement's text.
    exec_tokens_sql(
        &env.app,
        format!(
            "INSERT INTO merchants (uuid, created_at) VALUES ('{b_text}', 1);
             UPDATE pages SET merchant_uuid = '{b_text}' WHERE page_id = '{p}';
             INSERT INTO page_moves (page_id, from_merchant, to_merchant, fb_user_id, moved_at)
             VALUES ('{p}', '{a_text}', '{b_text}', '{user}', 1)"
        ),
    )
    .await;
    salesbot_sync::facebook::deletion::resume_pending(&env.app.state)
        .await
        .unwrap();
    drained(&env.app).await;
    let left = env
        .app
        .state
        .objects
        .list(&keys::page_prefix(&a, &page))
        .await
        .unwrap();
    assert!(left.is_empty(), "A's copy deleted: {left:?}");
    let moves = env.app.state.tokens.page_moves(10).await.unwrap();
    assert!(moves[0].cleaned_at.is_some());
    assert!(moves[0].objects_deleted.unwrap() > 0);
    env.app.stop().await.unwrap();
}

/// Makes the queue refuse (`on`) or take again data deletion jobs: a trigger on the events
/// table fails their insert, as a full or failing queue would.
async fn refuse_deletion_jobs(app: &TestApp, on: bool) {
    let (sqlite, postgres) = if on {
        (
            "CREATE TRIGGER refuse_deletions BEFORE INSERT ON events
             WHEN NEW.kind = 'facebook_data_deletion'
             BEGIN SELECT RAISE(ABORT, 'queue refused the job'); END;",
            "CREATE FUNCTION refuse_deletions() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'queue refused the job'; END $$;
             CREATE TRIGGER refuse_deletions BEFORE INSERT ON events FOR EACH ROW
             WHEN (NEW.kind = 'facebook_data_deletion') EXECUTE FUNCTION refuse_deletions();",
        )
    } else {
        (
            "DROP TRIGGER refuse_deletions;",
            "DROP TRIGGER refuse_deletions ON events; DROP FUNCTION refuse_deletions();",
        )
    };
    if let Some(pg) = &app.state.postgres {
        sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_string()))
            .execute(pg.pool())
            .await
            .unwrap();
        return;
    }
    let db = app.state.events.backend().sqlite().unwrap().clone();
    db.call(move |c| {
        c.execute_batch(sqlite)?;
        Ok(())
    })
    .await
    .unwrap();
}

/// A connected page, then a deletion request for its user recorded while the queue refused
/// the job: the request's `issued_at` and the recorded confirmation code.
async fn deletion_refused_by_the_queue(env: &FbEnv) -> (i64, String) {
    let (_, cookie) = session(&env.app).await;
    assert_eq!(fb_connect(&env.app, &env.fake, &cookie, 0).await.0, 200);
    drained(&env.app).await;
    refuse_deletion_jobs(&env.app, true).await;
    let issued = now_secs() - 60;
    let (status, body) = delete_request(env, &env.fake.user_id(0), issued).await;
    assert!(
        status >= 500,
        "the refused job is an error: {status} {body}"
    );
    refuse_deletion_jobs(&env.app, false).await;
    drained(&env.app).await;
    assert_eq!(deletion_jobs(env).await, 0, "nothing queued");
    let pending = env.app.state.tokens.unfinished_deletions().await.unwrap();
    assert_eq!(pending.len(), 1, "the request is recorded: {pending:?}");
    (issued, pending[0].0.clone())
}

fn status_url(env: &FbEnv, code: &str) -> String {
    env.app
        .url(&format!("/facebook/data-deletion/status?code={code}"))
}

#[tokio::test]
async fn a_deletion_whose_job_the_queue_refused_is_queued_by_the_replayed_request() {
    let env = fb_env().await;
    let (issued, code) = deletion_refused_by_the_queue(&env).await;
    let (status, again) = delete_request(&env, &env.fake.user_id(0), issued).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["confirmation_code"], code.as_str());
    wait_done(&env, &status_url(&env, &code)).await;
    let page = PageId::parse(&env.fake.page_ids(0)[0]).unwrap();
    assert!(env.app.state.tokens.page(&page).await.unwrap().is_none());
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_deletion_whose_job_the_queue_refused_is_queued_by_the_next_poll_without_a_restart() {
    let env = fb_env().await;
    let (_, code) = deletion_refused_by_the_queue(&env).await;
    poll_everything(&env.app).await;
    wait_done(&env, &status_url(&env, &code)).await;
    let page = PageId::parse(&env.fake.page_ids(0)[0]).unwrap();
    assert!(env.app.state.tokens.page(&page).await.unwrap().is_none());
    env.app.stop().await.unwrap();
}

#[tokio::test]
async fn signed_deletion_requests_are_never_rate_limited_while_unsigned_ones_are() {
    // A slow refill, so the burst (20) is all a client gets during the test.
    let env = fb_env_with(
        Default::default(),
        &vars(&[("LOGIN_RATE_PER_SECOND", "0.05")]),
    )
    .await;
    let user = env.fake.user_id(0);
    // Meta's requests: many more than the burst, from one address, all accepted.
    for i in 0..30 {
        let (status, body) = delete_request(&env, &user, now_secs() - 60 - i).await;
        assert_eq!(status, 200, "signed request {}: {body}", i + 1);
    }
    // Unsigned ones use the client's allowance, then get 429.
    let forged = |n: i64| {
        signed_request(
            "not-the-app-secret",
            &json!({"algorithm": "HMAC-SHA256", "user_id": user, "issued_at": now_secs() - n}),
        )
    };
    for i in 0..20 {
        let r = env
            .app
            .post_form("/facebook/data-deletion", &[("signed_request", forged(i))])
            .await;
        assert_eq!(r.status(), 401, "unsigned request {} of the burst", i + 1);
    }
    let r = env
        .app
        .post_form("/facebook/data-deletion", &[("signed_request", forged(99))])
        .await;
    assert_eq!(r.status(), 429);
    // Meta is still let through.
    let (status, body) = delete_request(&env, &user, now_secs() - 30).await;
    assert_eq!(status, 200, "{body}");
    drained(&env.app).await;
    env.app.stop().await.unwrap();
}
