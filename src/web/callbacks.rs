//! The OAuth callbacks' answers as pages: the same JSON the SPEC specifies, told in plain words,
//! with the first syncs' live progress.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use uuid::Uuid;

use super::page;
use super::progress::{page_view, shop_view};
use super::views::{FacebookConnected, PageResult, ShopConnected, Step};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::tokens::{AccountStatus, AccountSummary};

fn ok(v: &Value) -> bool {
    v["status"] == "success"
}

/// A step from one of the answer's `{status, message}` results.
fn step(label: &str, v: &Value, pending_ok: bool) -> Step {
    let pending = v["status"] == "pending";
    let detail = if ok(v) {
        String::new()
    } else if pending {
        "still running".into()
    } else {
        let mut d = v["message"].as_str().unwrap_or("not done").to_string();
        if let Some(id) = v["correlation_id"].as_str() {
            d.push_str(&format!(" (reference {id})"));
        }
        d
    };
    Step {
        label: label.to_string(),
        ok: ok(v) || (pending && pending_ok),
        detail,
    }
}

fn active(id: &str, merchant: Uuid) -> AccountSummary {
    AccountSummary {
        id: id.to_string(),
        merchant,
        status: AccountStatus::Active,
        reason: None,
    }
}

fn merchant_of(body: &Value) -> Result<Uuid, AppError> {
    body["user_uuid"]
        .as_str()
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("callback answer without user_uuid")))
}

/// `GET /shopify/callback` for a browser.
pub async fn shopify(state: &AppState, body: &Value) -> Result<Response, AppError> {
    let merchant = merchant_of(body)?;
    let shop = body["shop"].as_str().unwrap_or_default().to_string();
    let hooks = &body["webhook_status"];
    let mut webhooks = step(
        "Webhooks registered, so changes in your shop reach us at once",
        hooks,
        false,
    );
    if ok(hooks) {
        let n = |k: &str| hooks[k].as_array().map_or(0, Vec::len);
        webhooks.detail = format!("{} new, {} already there", n("created"), n("existing"));
    }
    let steps = vec![
        webhooks,
        step(
            "A test webhook was received and checked",
            &body["webhook_test"],
            false,
        ),
        step(
            "Your shop was read through the Shopify Admin API",
            &body["polling_test"],
            false,
        ),
        step(
            "Your catalogue was written for the sales bot",
            &body["upload_status"],
            true,
        ),
    ];
    let sync = shop_view(state, &active(&shop, merchant)).await?;
    Ok(page(
        StatusCode::OK,
        &ShopConnected {
            shop,
            steps,
            syncs: vec![sync],
            facebook_on: state.config.facebook.is_some(),
        },
    ))
}

fn results_of<'a>(body: &'a Value, list: &str, page_id: &str) -> Vec<&'a Value> {
    body[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["page_id"] == page_id)
        .collect()
}

/// `GET /facebook/callback` for a browser.
pub async fn facebook(state: &AppState, body: &Value) -> Result<Response, AppError> {
    let merchant = merchant_of(body)?;
    let mut pages = Vec::new();
    let mut rejected = Vec::new();
    let listed = body["pages"]["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for p in &listed {
        let Some(id) = p["id"].as_str() else { continue };
        let name = p["name"].as_str().unwrap_or(id).to_string();
        let upload = results_of(body, "upload_status", id);
        let stored = state
            .tokens
            .page(&match crate::objects::keys::PageId::parse(id) {
                Ok(p) => p,
                Err(_) => continue,
            })
            .await?
            .is_some_and(|r| r.merchant == merchant);
        if !stored {
            // Refused (another account's page, being deleted): say why.
            let why = upload
                .first()
                .and_then(|u| u["result"]["message"].as_str())
                .unwrap_or("this page could not be connected");
            rejected.push(format!("{name}: {why}"));
            continue;
        }
        let mut steps = Vec::new();
        for t in results_of(body, "webhook_test", id) {
            let label = if t["type"] == "messages" {
                "A test message webhook was received and stored"
            } else {
                "A test page webhook was received"
            };
            steps.push(step(label, &t["result"], false));
        }
        for t in results_of(body, "polling_test", id) {
            if t["type"] == "metadata" {
                steps.push(step(
                    "The page's details were read and saved",
                    &t["result"],
                    false,
                ));
            }
        }
        if let Some(u) = upload.first() {
            steps.insert(
                0,
                step("Subscribed to the page's messages", &u["result"], true),
            );
        }
        let sync = page_view(state, &active(id, merchant)).await?;
        pages.push(PageResult { name, steps, sync });
    }
    Ok(page(StatusCode::OK, &FacebookConnected { pages, rejected }))
}
