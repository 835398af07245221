//! The token store's SQL, the same text on both backends (`$n` placeholders; see
//! `store::sqlite` for how SQLite binds them). Text sorts `COLLATE "C"` (byte order, which is
//! SQLite's default and not PostgreSQL's), and NULLs sort where SQLite puts them.

use super::TokenColumn;

// ---------------------------------------------------------------------------------------------
// Merchants, summaries

pub(super) const INSERT_MERCHANT: &str =
    "INSERT INTO merchants (uuid, created_at) VALUES ($1, $2) ON CONFLICT (uuid) DO NOTHING";
pub(super) const MERCHANT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM merchants WHERE uuid = $1)";
pub(super) const SHOP_SUMMARIES: &str = r#"SELECT domain, merchant_uuid, status, status_reason
    FROM shops ORDER BY domain COLLATE "C""#;
pub(super) const PAGE_SUMMARIES: &str = r#"SELECT page_id, merchant_uuid, status, status_reason
    FROM pages ORDER BY page_id COLLATE "C""#;
pub(super) const MERCHANT_SHOPS: &str = r#"SELECT domain, merchant_uuid, status, status_reason
    FROM shops WHERE merchant_uuid = $1 ORDER BY domain COLLATE "C""#;
pub(super) const MERCHANT_PAGES: &str = r#"SELECT page_id, merchant_uuid, status, status_reason,
    name FROM pages WHERE merchant_uuid = $1
    ORDER BY name COLLATE "C" NULLS FIRST, page_id COLLATE "C""#;

// ---------------------------------------------------------------------------------------------
// Key rotation

/// How many tokens are stored (COUNT of a column skips its NULLs).
pub(super) const COUNT_TOKENS: &str = "SELECT (SELECT COUNT(access_token) FROM shops)
    + (SELECT COUNT(refresh_token) FROM shops) + (SELECT COUNT(access_token) FROM pages)";

impl TokenColumn {
    /// Row key and value of each stored token of the column.
    pub(super) fn select_sql(self) -> &'static str {
        match self {
            TokenColumn::ShopAccess => {
                "SELECT domain, access_token FROM shops WHERE access_token IS NOT NULL"
            }
            TokenColumn::ShopRefresh => {
                "SELECT domain, refresh_token FROM shops WHERE refresh_token IS NOT NULL"
            }
            TokenColumn::PageAccess => "SELECT page_id, access_token FROM pages",
        }
    }

    /// Replaces `$3` (the value read) with `$2` in the row keyed `$1`: compare and swap.
    pub(super) fn replace_sql(self) -> &'static str {
        match self {
            TokenColumn::ShopAccess => {
                "UPDATE shops SET access_token = $2 WHERE domain = $1 AND access_token = $3"
            }
            TokenColumn::ShopRefresh => {
                "UPDATE shops SET refresh_token = $2 WHERE domain = $1 AND refresh_token = $3"
            }
            TokenColumn::PageAccess => {
                "UPDATE pages SET access_token = $2 WHERE page_id = $1 AND access_token = $3"
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shops

pub(super) const SHOP_MERCHANT: &str = "SELECT merchant_uuid FROM shops WHERE domain = $1";
pub(super) const UPSERT_SHOP: &str = "INSERT INTO shops (domain, merchant_uuid, access_token,
        scopes, token_expires_at, refresh_token, refresh_token_expires_at, status, status_reason,
        installed_at, uninstalled_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', NULL, $8, NULL, $8)
    ON CONFLICT (domain) DO UPDATE SET
        access_token = excluded.access_token, scopes = excluded.scopes,
        token_expires_at = excluded.token_expires_at,
        refresh_token = excluded.refresh_token,
        refresh_token_expires_at = excluded.refresh_token_expires_at,
        status = 'active', status_reason = NULL,
        installed_at = excluded.installed_at, uninstalled_at = NULL,
        updated_at = excluded.updated_at";
pub(super) const UPDATE_SHOP_TOKENS: &str = "UPDATE shops SET access_token = $2, scopes = $3,
        token_expires_at = $4, refresh_token = $5, refresh_token_expires_at = $6, updated_at = $7
    WHERE domain = $1 AND status = 'active' AND installed_at = $8";
pub(super) const SHOP: &str = "SELECT merchant_uuid, access_token, scopes, token_expires_at,
        refresh_token, refresh_token_expires_at, status, status_reason, installed_at
    FROM shops WHERE domain = $1";
pub(super) const MERCHANT_HAS_INSTALLED_SHOP: &str = "SELECT EXISTS (SELECT 1 FROM shops
    WHERE merchant_uuid = $1 AND status != 'uninstalled')";
pub(super) const SHOP_ID: &str = "SELECT shop_id FROM shops WHERE domain = $1";
pub(super) const SET_SHOP_ID: &str = "UPDATE shops SET shop_id = $2 WHERE domain = $1";
pub(super) const SHOP_INSTALLED_AT: &str = "SELECT installed_at FROM shops WHERE domain = $1";
pub(super) const ACTIVE_SHOPS: &str = r#"SELECT domain FROM shops
    WHERE status = 'active' AND access_token IS NOT NULL ORDER BY domain COLLATE "C""#;
/// Uninstalled: the token is useless after uninstall and must not linger.
pub(super) const REVOKE_SHOP: &str = "UPDATE shops SET status = 'uninstalled',
        status_reason = $2, access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
        refresh_token_expires_at = NULL, uninstalled_at = $3, updated_at = $3
    WHERE domain = $1";
pub(super) const SET_SHOP_STATUS: &str =
    "UPDATE shops SET status = $2, status_reason = $3, updated_at = $4 WHERE domain = $1";
pub(super) const MARK_SHOP_REAUTH: &str = "UPDATE shops SET status = 'needs_reauth',
        status_reason = $2, updated_at = $3
    WHERE domain = $1 AND status = 'active' AND installed_at = $4";
pub(super) const DELETE_SHOP: &str = "DELETE FROM shops WHERE domain = $1";

// ---------------------------------------------------------------------------------------------
// Facebook users and pages

pub(super) const UPSERT_FACEBOOK_USER: &str = "INSERT INTO facebook_users
        (merchant_uuid, fb_user_id, status, status_reason, updated_at)
    VALUES ($1, $2, 'active', NULL, $3)
    ON CONFLICT (merchant_uuid) DO UPDATE SET fb_user_id = excluded.fb_user_id,
        status = 'active', status_reason = NULL, updated_at = excluded.updated_at";
pub(super) const FACEBOOK_USER: &str =
    "SELECT fb_user_id, status FROM facebook_users WHERE merchant_uuid = $1";
pub(super) const SET_FACEBOOK_USER_STATUS: &str = "UPDATE facebook_users SET status = $2,
    status_reason = $3, updated_at = $4 WHERE merchant_uuid = $1";
pub(super) const PAGE_OWNER: &str =
    "SELECT merchant_uuid, status, fb_user_id FROM pages WHERE page_id = $1";
pub(super) const INSERT_PAGE_MOVE: &str = "INSERT INTO page_moves
        (page_id, from_merchant, to_merchant, fb_user_id, moved_at)
    VALUES ($1, $2, $3, $4, $5) RETURNING id";
/// The watermarks say what the old merchant's copy holds; the new merchant's copy is empty,
/// so its first poll must read everything.
pub(super) const DELETE_PAGE_WATERMARKS: &str =
    "DELETE FROM conversation_watermarks WHERE page_id = $1";
pub(super) const UPSERT_PAGE: &str = "INSERT INTO pages (page_id, merchant_uuid, fb_user_id,
        name, access_token, status, status_reason, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, 'active', NULL, $6, $6)
    ON CONFLICT (page_id) DO UPDATE SET merchant_uuid = excluded.merchant_uuid,
        fb_user_id = excluded.fb_user_id, name = excluded.name,
        access_token = excluded.access_token,
        status = 'active', status_reason = NULL, updated_at = excluded.updated_at";
pub(super) const PAGE_MOVE_CLEANED: &str =
    "UPDATE page_moves SET cleaned_at = $2, objects_deleted = $3 WHERE id = $1";
pub(super) const UNCLEANED_PAGE_MOVES: &str = "SELECT id, page_id, from_merchant, fb_user_id
    FROM page_moves WHERE cleaned_at IS NULL ORDER BY id";
pub(super) const PAGE_MOVES: &str = "SELECT page_id, from_merchant, moved_at, cleaned_at,
    objects_deleted FROM page_moves ORDER BY moved_at DESC, id DESC LIMIT $1";
pub(super) const PAGE_MOVES_FROM: &str = "SELECT page_id, from_merchant, moved_at, cleaned_at,
    objects_deleted FROM page_moves WHERE from_merchant = $1
    ORDER BY moved_at DESC, id DESC LIMIT $2";
pub(super) const MERCHANT_HAS_CONNECTIONS: &str = "SELECT
    EXISTS (SELECT 1 FROM shops WHERE merchant_uuid = $1 AND status != 'uninstalled')
    OR EXISTS (SELECT 1 FROM pages WHERE merchant_uuid = $1 AND status != 'deleting')";
pub(super) const PAGE: &str = "SELECT merchant_uuid, name, access_token, status, status_reason
    FROM pages WHERE page_id = $1";
pub(super) const ACTIVE_PAGES: &str =
    r#"SELECT page_id FROM pages WHERE status = 'active' ORDER BY page_id COLLATE "C""#;
/// A deletion in progress is never undone by another status.
pub(super) const SET_PAGE_STATUS: &str = "UPDATE pages SET status = $2, status_reason = $3,
    updated_at = $4 WHERE page_id = $1 AND status != 'deleting'";
pub(super) const WRITABLE_PAGE_TOKEN: &str =
    "SELECT access_token FROM pages WHERE page_id = $1 AND status != 'deleting'";
/// Compare and swap: only while `$4` (the token that was compared) is still the stored one
/// and the page is not being deleted, so a token a reconnect stored after the comparison is
/// never marked.
pub(super) const MARK_PAGE_REAUTH: &str = "UPDATE pages SET status = 'needs_reauth',
        status_reason = $2, updated_at = $3
    WHERE page_id = $1 AND status != 'deleting' AND access_token = $4";
pub(super) const DELETE_PAGE: &str = "DELETE FROM pages WHERE page_id = $1";
pub(super) const MERCHANTS_OF_FACEBOOK_USER: &str = r#"SELECT merchant_uuid FROM facebook_users
    WHERE fb_user_id = $1 ORDER BY merchant_uuid COLLATE "C""#;
pub(super) const PAGES_GRANTED_BY: &str = r#"SELECT merchant_uuid, page_id FROM pages
    WHERE fb_user_id = $1 ORDER BY page_id COLLATE "C""#;
pub(super) const DELETE_FACEBOOK_USER: &str = "DELETE FROM facebook_users WHERE merchant_uuid = $1";
pub(super) const MARK_PAGES_DELETING: &str = "UPDATE pages SET status = 'deleting',
    status_reason = $2, updated_at = $3 WHERE fb_user_id = $1";

// ---------------------------------------------------------------------------------------------
// Data deletion requests

/// A concurrent insert of the same request (same user and `issued_at`) makes this one wait for
/// it, then do nothing.
pub(super) const INSERT_DELETION: &str = "INSERT INTO data_deletions
        (confirmation_code, fb_user_id, status, requested_at, issued_at)
    VALUES ($1, $2, 'pending', $3, $4)
    ON CONFLICT (fb_user_id, issued_at) DO NOTHING";
pub(super) const DELETION_CODE: &str = "SELECT confirmation_code FROM data_deletions
    WHERE fb_user_id = $1 AND issued_at = $2";
/// Once: a resumed job that finishes again leaves the first record alone.
pub(super) const DELETION_DONE: &str = "UPDATE data_deletions SET status = 'done',
        completed_at = $2, detail = $3, pages_deleted = $4, objects_deleted = $5,
        events_deleted = $6
    WHERE confirmation_code = $1 AND status != 'done'";
pub(super) const DELETION_STATUS: &str = "SELECT status, requested_at, completed_at,
    pages_deleted, objects_deleted FROM data_deletions WHERE confirmation_code = $1";
pub(super) const UNFINISHED_DELETIONS: &str = r#"SELECT confirmation_code, fb_user_id
    FROM data_deletions WHERE status IN ('pending', 'failed')
    ORDER BY requested_at, confirmation_code COLLATE "C""#;

// ---------------------------------------------------------------------------------------------
// Watermarks

pub(super) const WATERMARK_TIMES: &str =
    "SELECT psid, updated_time FROM conversation_watermarks WHERE page_id = $1";
pub(super) const WATERMARK: &str = "SELECT conversation_id, updated_time, newest_ts, newest_mid,
    object_sha256 FROM conversation_watermarks WHERE page_id = $1 AND psid = $2";
/// Nothing is recorded for a page that is gone or being deleted.
pub(super) const SAVE_WATERMARK: &str = "INSERT INTO conversation_watermarks
        (page_id, psid, conversation_id, updated_time, newest_ts, newest_mid, object_sha256,
         polled_at)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8
    WHERE EXISTS (SELECT 1 FROM pages WHERE page_id = $1 AND status != 'deleting')
    ON CONFLICT (page_id, psid) DO UPDATE SET
        conversation_id = excluded.conversation_id,
        updated_time = excluded.updated_time, newest_ts = excluded.newest_ts,
        newest_mid = excluded.newest_mid, object_sha256 = excluded.object_sha256,
        polled_at = excluded.polled_at";
/// Stored in seconds, shown in milliseconds.
pub(super) const PAGE_LAST_POLLED: &str =
    "SELECT MAX(polled_at) * 1000 FROM conversation_watermarks WHERE page_id = $1";
