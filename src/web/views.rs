//! The pages' templates (`templates/*.html`) and what each one is given.

use askama::Template;

use super::progress::SyncView;
use crate::store::events::QueueStats;

/// One thing a connect set up, and whether it worked.
#[derive(Debug, Clone)]
pub struct Step {
    pub label: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub message: String,
    pub reference: Option<String>,
    pub again_href: String,
    pub again_label: String,
}

#[derive(Template)]
#[template(path = "connect.html")]
pub struct ConnectPage {
    pub shop_hint: String,
    pub shopify_on: bool,
    pub signed_in: bool,
}

#[derive(Template)]
#[template(path = "shopify_connected.html")]
pub struct ShopConnected {
    pub shop: String,
    pub steps: Vec<Step>,
    pub syncs: Vec<SyncView>,
    pub facebook_on: bool,
}

pub struct PageResult {
    pub name: String,
    pub steps: Vec<Step>,
    pub sync: SyncView,
}

#[derive(Template)]
#[template(path = "facebook_connected.html")]
pub struct FacebookConnected {
    pub pages: Vec<PageResult>,
    pub rejected: Vec<String>,
}

pub struct AccountItem {
    /// For element ids: the shop domain or page id.
    pub id: String,
    pub title: String,
    pub sync: SyncView,
    pub reconnect: Option<String>,
    pub can_disconnect: bool,
    pub disconnect: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub prefix: String,
    pub shops: Vec<AccountItem>,
    pub pages: Vec<AccountItem>,
    pub csrf: String,
    pub facebook_on: bool,
    pub notice: Option<String>,
    /// Pages of another account this merchant's Facebook user may move here.
    pub movable: Vec<MovableItem>,
    /// Pages that left this account for another one.
    pub moved_away: Vec<MovedItem>,
}

#[derive(serde::Serialize)]
pub struct MovableItem {
    pub id: String,
    pub title: String,
    /// The form's target.
    #[serde(skip)]
    pub action: String,
}

#[derive(serde::Serialize)]
pub struct MovedItem {
    pub id: String,
    pub title: String,
    /// Unix seconds.
    pub moved_at: i64,
    /// As shown: UTC date and time.
    #[serde(skip)]
    pub when: String,
}

#[derive(Template)]
#[template(path = "operator_login.html")]
pub struct OperatorLogin {
    pub failed: bool,
    pub next: String,
}

pub struct AccountCounts {
    pub label: &'static str,
    pub active: usize,
    pub needs: usize,
    pub uninstalled: usize,
    pub deleting: usize,
}

pub struct FailureRow {
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "operator.html")]
pub struct OperatorPage {
    pub version: &'static str,
    pub environment: &'static str,
    pub storage: &'static str,
    pub signed_in: bool,
    pub queue: QueueStats,
    pub oldest: String,
    pub failures: Vec<FailureRow>,
    pub accounts: Vec<AccountCounts>,
    /// (shop or page, reason)
    pub needs: Vec<(String, String)>,
    pub last_poll: String,
    pub last_backup: String,
    pub shopify_on: bool,
    pub facebook_on: bool,
}
