//! The merchant's pages: `/connect` (where a merchant starts), `/account` (every shop and page
//! with its state, the object prefix the bot reads, reconnect and disconnect), and
//! `/account/progress` (the same states as JSON, for the live script).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use serde_json::json;

use super::progress::{page_view, shop_view, SyncView};
use super::views::{AccountItem, AccountPage, ConnectPage};
use super::{page, Wants};
use crate::crypto::{constant_time_eq, hmac_sha256_hex, secret_bytes};
use crate::error::AppError;
use crate::facebook::disconnect::PageDisconnect;
use crate::ids::MerchantId;
use crate::ids::{PageId, ShopDomain};
use crate::jobs::Job;
use crate::objects::keys;
use crate::session::{remove_session_cookie, session_merchant, SESSION_COOKIE};
use crate::shopify::lifecycle::ShopDisconnect;
use crate::state::AppState;
use crate::store::tokens::AccountStatus;

#[derive(Deserialize)]
pub struct ConnectQuery {
    shop: Option<String>,
}

/// Where a merchant starts: the shop's name, then Shopify's install screen.
pub async fn connect(
    State(state): State<AppState>,
    Query(q): Query<ConnectQuery>,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let signed_in = session_merchant(&state, &jar).await?.is_some();
    let hint = q
        .shop
        .filter(|s| ShopDomain::normalize(s).is_ok())
        .unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        &ConnectPage {
            shop_hint: hint,
            shopify_on: state.config.shopify.is_some(),
            signed_in,
        },
    ))
}

/// The form of `/connect`: to the shop's login route (which validates the name again).
pub async fn connect_shopify(Query(q): Query<ConnectQuery>) -> Result<Redirect, AppError> {
    let raw = q.shop.unwrap_or_default();
    let shop =
        ShopDomain::normalize(raw.trim()).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(Redirect::to(&format!("/shopify/{shop}/login")))
}

/// The merchant of the session; a clear 401 otherwise.
pub(super) async fn signed_in(
    state: &AppState,
    jar: &CookieJar,
) -> Result<(MerchantId, String), AppError> {
    let not_signed_in = || {
        AppError::Unauthorized(
            "You are not signed in (or your session ended): connect your shop to sign in".into(),
        )
    };
    let session = jar
        .get(SESSION_COOKIE)
        .map(|c| c.value().to_string())
        .ok_or_else(not_signed_in)?;
    let merchant = state
        .sessions
        .merchant(&session)
        .await?
        .ok_or_else(not_signed_in)?;
    Ok((merchant, session))
}

/// A form token bound to the session (HMAC with the state secret), so another site cannot make
/// a signed-in browser disconnect anything.
pub(super) fn csrf_token(state: &AppState, session: &str) -> String {
    let mut mac = hmac_sha256_hex(
        secret_bytes(&state.config.state_token_secret),
        format!("account-form:{session}").as_bytes(),
    );
    // 16 bytes of the MAC are plenty for a form token.
    mac.truncate(32);
    mac
}

pub(super) fn check_csrf(
    state: &AppState,
    session: &str,
    sent: Option<&str>,
) -> Result<(), AppError> {
    let want = csrf_token(state, session);
    match sent {
        Some(s) if constant_time_eq(s.as_bytes(), want.as_bytes()) => Ok(()),
        _ => Err(AppError::Forbidden(
            "this form has expired; open your account page and try again".into(),
        )),
    }
}

/// Every shop and page of the merchant with its state.
async fn views(
    state: &AppState,
    merchant: MerchantId,
) -> Result<(Vec<AccountItem>, Vec<AccountItem>), AppError> {
    let mut shops = Vec::new();
    for s in state.tokens.merchant_shops(merchant).await? {
        let sync = shop_view(state, &s).await?;
        let handle = s.id.trim_end_matches(".myshopify.com").to_string();
        let reconnect = matches!(
            s.status,
            AccountStatus::NeedsReauth | AccountStatus::Uninstalled
        )
        .then(|| format!("/shopify/{handle}/login"));
        shops.push(AccountItem {
            disconnect: format!("/account/shops/{}/disconnect", s.id),
            can_disconnect: s.status != AccountStatus::Deleting,
            id: s.id.clone(),
            title: s.id.clone(),
            sync,
            reconnect,
        });
    }
    let mut pages = Vec::new();
    for (s, name) in state.tokens.merchant_pages(merchant).await? {
        let sync = page_view(state, &s).await?;
        let reconnect =
            (s.status == AccountStatus::NeedsReauth).then(|| "/facebook/login".to_string());
        pages.push(AccountItem {
            disconnect: format!("/account/pages/{}/disconnect", s.id),
            can_disconnect: s.status != AccountStatus::Deleting,
            title: name.unwrap_or_else(|| format!("Page {}", s.id)),
            id: s.id.clone(),
            sync,
            reconnect,
        });
    }
    Ok((shops, pages))
}

#[derive(Deserialize)]
pub struct AccountQuery {
    notice: Option<String>,
}

fn notice_text(code: &str) -> Option<String> {
    match code {
        "shop-disconnecting" => Some("The shop is being disconnected and its data deleted.".into()),
        "page-disconnecting" => {
            Some("The page is being disconnected and its conversations deleted.".into())
        }
        "page-moved" => Some(
            "The page was moved to this account; its conversations are being read again.".into(),
        ),
        _ => None,
    }
}

pub async fn account(
    State(state): State<AppState>,
    Query(q): Query<AccountQuery>,
    wants: Wants,
    jar: CookieJar,
) -> Result<Response, AppError> {
    let (merchant, session) = signed_in(&state, &jar).await?;
    let (shops, pages) = views(&state, merchant).await?;
    let movable = super::moves::movable(&state, merchant).await?;
    let moved_away = super::moves::moved_away(&state, merchant).await?;
    let prefix = keys::merchant_prefix(&merchant).as_str().to_string();
    if !wants.html() {
        let item = |i: &AccountItem| json!({"id": i.id, "name": i.title, "sync": i.sync});
        return Ok(Json(json!({
            "user_uuid": merchant,
            "prefix": prefix,
            "shops": shops.iter().map(item).collect::<Vec<_>>(),
            "pages": pages.iter().map(item).collect::<Vec<_>>(),
            "movable_pages": movable,
            "moved_away": moved_away,
        }))
        .into_response());
    }
    Ok(page(
        StatusCode::OK,
        &AccountPage {
            prefix,
            shops,
            pages,
            csrf: csrf_token(&state, &session),
            facebook_on: state.config.facebook.is_some(),
            notice: q.notice.as_deref().and_then(notice_text),
            movable,
            moved_away,
        },
    ))
}

/// The states of the merchant's shops and pages, for the live script.
pub async fn progress(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Json<serde_json::Value>, AppError> {
    let (merchant, _) = signed_in(&state, &jar).await?;
    let (shops, pages) = views(&state, merchant).await?;
    let syncs: Vec<SyncView> = shops.into_iter().chain(pages).map(|i| i.sync).collect();
    Ok(Json(json!({ "syncs": syncs })))
}

/// Ends this browser's session (the merchant's others stay) and clears its cookie. The form
/// token keeps another site from signing a merchant out.
pub async fn sign_out(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<DisconnectForm>,
) -> Result<(CookieJar, Redirect), AppError> {
    let (merchant, session) = signed_in(&state, &jar).await?;
    check_csrf(&state, &session, form.csrf.as_deref())?;
    state.sessions.end(&session).await?;
    tracing::info!(%merchant, "merchant signed out");
    Ok((remove_session_cookie(jar), Redirect::to("/connect")))
}

#[derive(Deserialize)]
pub struct DisconnectForm {
    pub(super) csrf: Option<String>,
}

pub async fn disconnect_shop(
    State(state): State<AppState>,
    Path(shop): Path<String>,
    jar: CookieJar,
    Form(form): Form<DisconnectForm>,
) -> Result<Redirect, AppError> {
    let (merchant, session) = signed_in(&state, &jar).await?;
    check_csrf(&state, &session, form.csrf.as_deref())?;
    let shop = ShopDomain::parse(&shop).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let owned = state
        .tokens
        .shop(&shop)
        .await?
        .is_some_and(|r| r.merchant == merchant);
    if !owned {
        return Err(AppError::NotFound("no such shop in your account".into()));
    }
    state
        .events
        .enqueue(ShopDisconnect::new(shop.clone(), merchant).to_event())
        .await?;
    tracing::info!(%shop, %merchant, "shop disconnect requested by its merchant");
    Ok(Redirect::to("/account?notice=shop-disconnecting"))
}

pub async fn disconnect_page(
    State(state): State<AppState>,
    Path(page_id): Path<String>,
    jar: CookieJar,
    Form(form): Form<DisconnectForm>,
) -> Result<Redirect, AppError> {
    let (merchant, session) = signed_in(&state, &jar).await?;
    check_csrf(&state, &session, form.csrf.as_deref())?;
    let page_id = PageId::parse(&page_id).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let owned = state
        .tokens
        .page(&page_id)
        .await?
        .is_some_and(|r| r.merchant == merchant);
    if !owned {
        return Err(AppError::NotFound("no such page in your account".into()));
    }
    state
        .events
        .enqueue(PageDisconnect::new(page_id.clone(), merchant).to_event())
        .await?;
    tracing::info!(page = %page_id, %merchant, "page disconnect requested by its merchant");
    Ok(Redirect::to("/account?notice=page-disconnecting"))
}
