//! Moving a page here from another account, and the pages that left: both on `/account`.
//!
//! A connect never moves a page connected to another merchant (see `facebook::moves`): the
//! Facebook user who connected it there sees it on this account page, one form per page, and
//! moves it with a POST carrying the session's form token. The merchant it left sees that it
//! went, and when.

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::Form;
use axum_extra::extract::cookie::CookieJar;

use super::account::{check_csrf, signed_in, DisconnectForm};
use super::views::{MovableItem, MovedItem};
use crate::error::AppError;
use crate::facebook::moves::{self, Confirmed, MoveRefused};
use crate::ids::{MerchantId, PageId};
use crate::state::AppState;

/// Moves listed on the account page of the merchant a page left (newest first).
const MOVES_SHOWN: usize = 50;

/// The page's name as stored, else its id.
async fn title(state: &AppState, page: &PageId) -> Result<String, AppError> {
    let name = state.tokens.page(page).await?.and_then(|r| r.name);
    Ok(name.unwrap_or_else(|| format!("Page {page}")))
}

/// Pages of another account that this merchant's Facebook user connected there.
pub async fn movable(state: &AppState, merchant: MerchantId) -> Result<Vec<MovableItem>, AppError> {
    let mut items = Vec::new();
    for page in moves::movable_here(state, merchant).await? {
        items.push(MovableItem {
            title: title(state, &page).await?,
            action: format!("/account/pages/{page}/move"),
            id: page.to_string(),
        });
    }
    Ok(items)
}

/// Pages that moved from this merchant to another one (and are not back).
pub async fn moved_away(
    state: &AppState,
    merchant: MerchantId,
) -> Result<Vec<MovedItem>, AppError> {
    let mut items = Vec::new();
    for m in state.tokens.page_moves_from(merchant, MOVES_SHOWN).await? {
        let Ok(page) = PageId::parse(&m.page_id) else {
            continue;
        };
        let owner = state.tokens.page(&page).await?.map(|r| r.merchant);
        if owner == Some(merchant) {
            continue; // moved back since
        }
        let when = chrono::DateTime::from_timestamp(m.moved_at, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        items.push(MovedItem {
            title: title(state, &page).await?,
            id: m.page_id,
            moved_at: m.moved_at,
            when,
        });
    }
    Ok(items)
}

/// `POST /account/pages/{page}/move`: the merchant's Facebook user confirms that this page,
/// which they connected to another account, moves here.
pub async fn move_page(
    State(state): State<AppState>,
    Path(page): Path<String>,
    jar: CookieJar,
    Form(form): Form<DisconnectForm>,
) -> Result<Redirect, AppError> {
    let (merchant, session) = signed_in(&state, &jar).await?;
    check_csrf(&state, &session, form.csrf.as_deref())?;
    let page = PageId::parse(&page).map_err(|e| AppError::BadRequest(e.to_string()))?;
    match moves::confirm(&state, merchant, &page).await {
        Ok(Confirmed::Moved { .. }) | Ok(Confirmed::AlreadyHere) => {
            tracing::info!(%page, %merchant, "page move confirmed by its merchant's Facebook user");
            Ok(Redirect::to("/account?notice=page-moved"))
        }
        Err(e @ MoveRefused::NotTheirs) | Err(e @ MoveRefused::BeingDeleted) => {
            Err(AppError::Forbidden(e.to_string()))
        }
        Err(MoveRefused::Store(e)) => Err(e.into()),
        Err(MoveRefused::Enqueue(e)) => Err(e.into()),
    }
}
