//! `GET /facebook/login` and `GET /facebook/callback` (SPEC §4).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Redirect;
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::client::{GraphClient, GraphError};
use super::pages::{self, FbError};
use super::signature::sign_webhook;
use crate::crypto::secret_bytes;
use crate::error::AppError;
use crate::objects::keys::{self, GraphId, PageId};
use crate::routes::session::{binding_cookie, require_session, take_binding};
use crate::shopify::oauth::state_error;
use crate::state::AppState;
use crate::store::now_secs;

/// The self-test conversation's customer id: digits only, as every PSID, but starting with 0,
/// which real PSIDs never do. Its file is removed after the test.
pub const SELF_TEST_PSID: &str = "0000000000000000";
/// How long the callback waits for the self-test message to be processed.
const SELF_TEST_WAIT: Duration = Duration::from_secs(15);

pub async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<(CookieJar, Redirect), AppError> {
    let settings = super::settings(&state)?;
    let merchant = require_session(&state, &jar).await?;
    let (token, browser) = state
        .states
        .issue("facebook", Some(merchant), None)
        .await
        .map_err(state_error)?;
    let url = GraphClient::new(&state.http, settings, &state.upstream_retry).dialog_url(&token);
    let jar = jar.add(binding_cookie(browser, state.config.secure_cookies()));
    Ok((jar, Redirect::temporary(url.as_str())))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn ok() -> Value {
    json!({"status": "success"})
}

fn err(kind: &str, m: impl std::fmt::Display) -> Value {
    json!({"status": kind, "message": m.to_string()})
}

fn upstream(e: GraphError) -> AppError {
    tracing::warn!(error = %e, "Facebook OAuth step failed");
    AppError::Upstream(format!(
        "Facebook login failed ({e}); start the connection again"
    ))
}

pub async fn callback(
    State(state): State<AppState>,
    Query(q): Query<CallbackQuery>,
    jar: CookieJar,
) -> Result<(CookieJar, Json<Value>), AppError> {
    let settings = super::settings(&state)?;
    if let Some(e) = q.error {
        // The merchant declined or Meta refused; say so plainly.
        return Err(AppError::BadRequest(format!(
            "Facebook authorization was not granted: {}",
            q.error_description.unwrap_or(e)
        )));
    }
    let code = q
        .code
        .ok_or_else(|| AppError::BadRequest("Missing code parameter".into()))?;
    let state_token = q
        .state
        .ok_or_else(|| AppError::BadRequest("Missing state parameter".into()))?;
    let (browser, jar) = take_binding(jar);
    let claims = state
        .states
        .consume(&state_token, "facebook", browser.as_deref())
        .await
        .map_err(state_error)?;
    let merchant = claims
        .merchant
        .ok_or_else(|| AppError::BadRequest("Invalid UUID in state token".into()))?;

    let graph = GraphClient::new(&state.http, settings, &state.upstream_retry);
    let short = graph.exchange_code(&code).await.map_err(upstream)?;
    let long = graph
        .long_lived(&SecretString::from(short.access_token))
        .await
        .map_err(upstream)?;
    let user_token = SecretString::from(long.access_token);
    let me = graph
        .get(graph.url("me", &[("fields", "id,name")]), &user_token)
        .await
        .map_err(upstream)?;
    let fb_user_id = me.get("id").and_then(Value::as_str).map(str::to_string);
    state
        .tokens
        .save_facebook_user(
            merchant,
            fb_user_id.clone(),
            &user_token,
            long.expires_in.map(|s| now_secs() + s),
        )
        .await?;

    // Every page the merchant granted, following paging to the end.
    let accounts = graph
        .get_page_fields("me/accounts", "access_token", &user_token, true)
        .await
        .map_err(upstream)?;

    let mut public_pages = Vec::new();
    let mut webhook_test = Vec::new();
    let mut polling_test = Vec::new();
    let mut upload_status = Vec::new();
    let mut connected = Vec::new();
    for mut page_obj in accounts {
        let token = page_obj
            .as_object_mut()
            .and_then(|o| o.remove("access_token"))
            .and_then(|t| t.as_str().map(str::to_string));
        let raw_id = page_obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        public_pages.push(page_obj.clone());
        let (Ok(page), Some(token)) = (PageId::parse(&raw_id), token) else {
            tracing::warn!(page = %raw_id, "page without a valid id or token skipped");
            upload_status.push(json!({"page_id": raw_id, "result": err("failed", "invalid page id or missing page token")}));
            continue;
        };
        let token = SecretString::from(token);
        let name = page_obj
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        state
            .tokens
            .save_page(&page, merchant, fb_user_id.clone(), name, &token)
            .await?;
        connected.push((page, token));
    }
    // Every page is stored before the slower per-page work, so a client that gives up
    // waiting still leaves every page connected (webhooks and polls pick them up).
    for (page, token) in connected {
        let report = connect_page(&state, &graph, merchant, &page, &token).await;
        webhook_test.extend(report.webhook_test);
        polling_test.extend(report.polling_test);
        upload_status.push(json!({"page_id": page.as_str(), "result": report.upload}));
    }
    tracing::info!(%merchant, pages = public_pages.len(), "Facebook connected");
    Ok((
        jar,
        Json(json!({
            "user_uuid": merchant,
            "pages": {"data": public_pages, "paging": {}},
            "webhook_test": webhook_test,
            "polling_test": polling_test,
            "upload_status": upload_status,
        })),
    ))
}

struct PageReport {
    webhook_test: Vec<Value>,
    polling_test: Vec<Value>,
    upload: Value,
}

/// Subscribes the app, uploads metadata and runs the self-tests for one page. Failures are
/// reported per page; one page never stops the others.
async fn connect_page(
    state: &AppState,
    graph: &GraphClient<'_>,
    merchant: Uuid,
    page: &PageId,
    token: &SecretString,
) -> PageReport {
    let id = page.as_str();
    let mut report = PageReport {
        webhook_test: Vec::new(),
        polling_test: Vec::new(),
        upload: ok(),
    };
    let app_id = state
        .config
        .facebook
        .as_ref()
        .map(|f| f.app_id.as_str())
        .unwrap_or_default();
    if let Err(e) = ensure_subscribed(graph, app_id, page, token).await {
        report.upload = err(
            "failed",
            format!("could not subscribe the app to the page: {e}"),
        );
    }
    let meta = pages::refresh_metadata(state, page).await;

    // Webhooks: a signed metadata change and a signed message, through our public address.
    let mid = format!("m_salesbot-self-test-{}", Uuid::new_v4());
    let now_ms = now_secs() * 1000;
    let metadata_delivery = json!({
        "object": "page",
        "entry": [{"id": id, "time": now_ms, "changes": [{"field": "name", "value": "salesbot-sync self-test"}]}]
    });
    let message_delivery = json!({
        "object": "page",
        "entry": [{"id": id, "time": now_ms, "messaging": [{
            "sender": {"id": SELF_TEST_PSID},
            "recipient": {"id": id},
            "timestamp": now_ms,
            "message": {"mid": mid, "text": "salesbot-sync self-test"}
        }]}]
    });
    let meta_hook = post_delivery(state, &metadata_delivery).await;
    let msg_hook = post_delivery(state, &message_delivery).await;
    report
        .webhook_test
        .push(json!({"page_id": id, "type": "metadata", "result": meta_hook}));
    report
        .webhook_test
        .push(json!({"page_id": id, "type": "messages", "result": msg_hook}));

    // Polling: metadata and conversations with the stored page token.
    report.polling_test.push(
        json!({"page_id": id, "type": "metadata", "result": match &meta {
            Ok(_) => ok(),
            Err(e) => err("error", e),
        }}),
    );
    let conv = pages::poll_conversations(state, page).await;
    report.polling_test.push(
        json!({"page_id": id, "type": "conversations", "result": match &conv {
            Ok(_) => ok(),
            Err(e) => err("error", e),
        }}),
    );

    // Upload verification: metadata by HEAD; the test message by waiting for its processing,
    // then the test conversation is removed so merchant data never holds it.
    if report.upload["status"] != "success" {
        return report;
    }
    report.upload = if meta.is_err()
        || conv.is_err()
        || meta_hook["status"] != "success"
        || msg_hook["status"] != "success"
    {
        err("failed", "Tests failed")
    } else {
        match verify_uploads(state, merchant, page).await {
            Ok(()) => ok(),
            Err(m) => err("failed", m),
        }
    };
    report
}

async fn ensure_subscribed(
    graph: &GraphClient<'_>,
    app_id: &str,
    page: &PageId,
    token: &SecretString,
) -> Result<(), FbError> {
    const FIELDS: [&str; 3] = ["name", "category", "messages"];
    let current = graph
        .get(graph.url(&format!("{page}/subscribed_apps"), &[]), token)
        .await?;
    let already = current
        .get("data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        // Other apps subscribed to the page do not count.
        .filter(|app| app.get("id").and_then(Value::as_str) == Some(app_id))
        .any(|app| {
            let fields: Vec<&str> = app
                .get("subscribed_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            FIELDS.iter().all(|f| fields.contains(f))
        });
    if already {
        tracing::info!(%page, "app already subscribed to name,category,messages");
        return Ok(());
    }
    let r = graph
        .post(
            graph.url(
                &format!("{page}/subscribed_apps"),
                &[("subscribed_fields", "name,category,messages")],
            ),
            token,
        )
        .await?;
    if r.get("success").and_then(Value::as_bool) == Some(true) {
        Ok(())
    } else {
        Err(FbError::Graph(GraphError::Permanent(
            "subscribed_apps did not report success".into(),
        )))
    }
}

/// Posts a delivery to our own public webhook address, signed like Meta signs.
async fn post_delivery(state: &AppState, delivery: &Value) -> Value {
    let Some(settings) = state.config.facebook.as_ref() else {
        return err("error", "Facebook is not configured");
    };
    let body = delivery.to_string();
    let r = state
        .http
        .post(settings.webhook_address.clone())
        .header("Content-Type", "application/json")
        .header(
            "X-Hub-Signature-256",
            sign_webhook(secret_bytes(&settings.app_secret), body.as_bytes()),
        )
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match r {
        Ok(resp) if resp.status().is_success() => ok(),
        Ok(resp) => err(
            "error",
            format!("webhook address answered {}", resp.status()),
        ),
        Err(e) => err(
            "error",
            format!("webhook address unreachable: {}", e.without_url()),
        ),
    }
}

async fn verify_uploads(state: &AppState, merchant: Uuid, page: &PageId) -> Result<(), String> {
    let meta_key = keys::page_metadata(&merchant, page);
    match state.objects.head_sha256(&meta_key).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err("Metadata upload not found".into()),
        Err(e) => return Err(format!("Upload verification failed: {e}")),
    }
    let psid = GraphId::parse(SELF_TEST_PSID).expect("constant is digits");
    let conv_key = keys::conversation(&merchant, page, &psid);
    let deadline = tokio::time::Instant::now() + SELF_TEST_WAIT;
    let found = loop {
        match state.objects.head_sha256(&conv_key).await {
            Ok(Some(_)) => break true,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(None) => break false,
            Err(e) => return Err(format!("Upload verification failed: {e}")),
        }
    };
    // Remove the test conversation whatever happened; retry once later if it is not there
    // yet (its message may still be queued).
    let _ = state.objects.delete(&conv_key).await;
    if !found {
        // The message may still be queued: keep removing the test conversation for a while.
        let objects = state.objects.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_secs(30)).await;
                if let Ok(Some(_)) = objects.head_sha256(&conv_key).await {
                    let _ = objects.delete(&conv_key).await;
                    return;
                }
            }
        });
        return Err("Conversation upload not found".into());
    }
    Ok(())
}
