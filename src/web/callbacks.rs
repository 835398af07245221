//! The OAuth callbacks' answers as pages: the same answers the JSON carries, told in plain
//! words, with the first syncs' live progress.

use axum::http::StatusCode;
use axum::response::Response;

use super::page;
use super::progress::{page_view, shop_view};
use super::views::{self, FacebookConnected, PageResult, ShopConnected};
use crate::connect::Step;
use crate::error::AppError;
use crate::facebook::answer::{FacebookConnected as FacebookAnswer, PageOutcome};
use crate::ids::MerchantId;
use crate::ids::PageId;
use crate::shopify::oauth::ShopifyConnected;
use crate::shopify::subscriptions::Topics;
use crate::state::AppState;
use crate::store::tokens::{AccountStatus, AccountSummary};

/// A line of the page for one of the answer's steps. `pending_ok`: work that goes on in the
/// background is shown as done, "still running".
fn step(label: &str, s: &Step, pending_ok: bool) -> views::Step {
    let detail = match s {
        Step::Success => String::new(),
        Step::Pending => "still running".into(),
        Step::Failed {
            message,
            correlation_id,
        }
        | Step::Error {
            message,
            correlation_id,
        } => match correlation_id {
            Some(id) => format!("{message} (reference {id})"),
            None => message.clone(),
        },
    };
    views::Step {
        label: label.to_string(),
        ok: s.is_success() || (s.is_pending() && pending_ok),
        detail,
    }
}

fn active(id: &str, merchant: MerchantId) -> AccountSummary {
    AccountSummary {
        id: id.to_string(),
        merchant,
        status: AccountStatus::Active,
        reason: None,
    }
}

/// `GET /shopify/callback` for a browser.
pub async fn shopify(state: &AppState, answer: &ShopifyConnected) -> Result<Response, AppError> {
    let shop = answer.shop.to_string();
    let hooks = &answer.webhook_status;
    let mut webhooks = step(
        "Webhooks registered, so changes in your shop reach us at once",
        &hooks.step,
        false,
    );
    if hooks.step.is_success() {
        let (created, existing) = match &hooks.topics {
            Some(Topics::Registered { created, existing }) => (created.len(), existing.len()),
            _ => (0, 0),
        };
        webhooks.detail = format!("{created} new, {existing} already there");
    }
    let steps = vec![
        webhooks,
        step(
            "A test webhook was received and checked",
            &answer.webhook_test,
            false,
        ),
        step(
            "Your shop was read through the Shopify Admin API",
            &answer.polling_test,
            false,
        ),
        step(
            "Your catalogue was written for the sales bot",
            &answer.upload_status.step,
            true,
        ),
    ];
    let sync = shop_view(state, &active(&shop, answer.user_uuid)).await?;
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

/// `GET /facebook/callback` for a browser: each page the merchant now has, with its steps,
/// and why each other page was not connected.
pub async fn facebook(state: &AppState, answer: &FacebookAnswer) -> Result<Response, AppError> {
    let merchant = answer.user_uuid;
    let mut pages = Vec::new();
    let mut rejected = Vec::new();
    for p in &answer.pages {
        let Ok(page_id) = PageId::parse(&p.id) else {
            continue;
        };
        let name = p.name.clone().unwrap_or_else(|| p.id.clone());
        let upload = match &p.outcome {
            PageOutcome::Refused(why) => why,
            PageOutcome::SetUp(checks) => &checks.upload,
        };
        let stored = state
            .tokens
            .page(&page_id)
            .await?
            .is_some_and(|r| r.merchant == merchant);
        if !stored {
            // Refused (another account's page, being deleted): say why.
            let why = upload
                .message()
                .unwrap_or("this page could not be connected");
            rejected.push(format!("{name}: {why}"));
            continue;
        }
        let mut steps = vec![step("Subscribed to the page's messages", upload, true)];
        if let PageOutcome::SetUp(c) = &p.outcome {
            steps.extend([
                step(
                    "A test page webhook was received",
                    &c.metadata_webhook,
                    false,
                ),
                step(
                    "A test message webhook was received and stored",
                    &c.message_webhook,
                    false,
                ),
                step(
                    "The page's details were read and saved",
                    &c.metadata_poll,
                    false,
                ),
            ]);
        }
        let sync = page_view(state, &active(&p.id, merchant)).await?;
        pages.push(PageResult { name, steps, sync });
    }
    Ok(page(StatusCode::OK, &FacebookConnected { pages, rejected }))
}
