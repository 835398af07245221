//! Facebook users and pages on PostgreSQL (see `../facebook.rs` for what each query means).

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{big, ids, locked_tx, merchant_uuid, status};
use crate::crypto::TokenCipher;
use crate::objects::keys::PageId;
use crate::store::postgres::{pg, PgDb};
use crate::store::tokens::{
    page_aad, AccountStatus, FacebookUserRecord, PageMove, SavedPage, StoredPage,
};
use crate::store::{now_secs, StoreError};

/// page_id, from_merchant, moved_at, cleaned_at, objects_deleted
type MoveRow = (String, String, i64, Option<i64>, Option<i64>);
/// merchant_uuid, name, access_token, status, status_reason
type PageRow = (String, Option<String>, Vec<u8>, String, Option<String>);

const INSERT_MERCHANT: &str =
    "INSERT INTO merchants (uuid, created_at) VALUES ($1, $2) ON CONFLICT (uuid) DO NOTHING";

pub(in crate::store::tokens) async fn save_facebook_user(
    db: &PgDb,
    merchant: Uuid,
    fb_user_id: Option<String>,
) -> Result<(), StoreError> {
    let now = now_secs();
    let mut tx = db.pool().begin().await.map_err(pg)?;
    sqlx::query(INSERT_MERCHANT)
        .bind(merchant.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    sqlx::query(
        "INSERT INTO facebook_users (merchant_uuid, fb_user_id, status, status_reason, updated_at)
         VALUES ($1, $2, 'active', NULL, $3)
         ON CONFLICT (merchant_uuid) DO UPDATE SET fb_user_id = excluded.fb_user_id,
            status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
    )
    .bind(merchant.to_string())
    .bind(fb_user_id)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)
}

pub(in crate::store::tokens) async fn facebook_user(
    db: &PgDb,
    merchant: Uuid,
) -> Result<Option<FacebookUserRecord>, StoreError> {
    let row: Option<(Option<String>, String)> =
        sqlx::query_as("SELECT fb_user_id, status FROM facebook_users WHERE merchant_uuid = $1")
            .bind(merchant.to_string())
            .fetch_optional(db.pool())
            .await
            .map_err(pg)?;
    row.map(|(fb_user_id, st)| {
        Ok(FacebookUserRecord {
            merchant,
            fb_user_id,
            status: status(&st)?,
        })
    })
    .transpose()
}

pub(in crate::store::tokens) async fn set_facebook_user_status(
    db: &PgDb,
    merchant: Uuid,
    status: AccountStatus,
    reason: Option<String>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE facebook_users SET status = $2, status_reason = $3, updated_at = $4
         WHERE merchant_uuid = $1",
    )
    .bind(merchant.to_string())
    .bind(status.as_str())
    .bind(reason)
    .bind(now_secs())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(in crate::store::tokens) async fn save_page(
    db: &PgDb,
    page: &str,
    merchant: Uuid,
    fb_user_id: Option<String>,
    name: Option<String>,
    enc: Vec<u8>,
) -> Result<SavedPage, StoreError> {
    // Who owns the page is decided on the row read below: two instances saving the same page
    // at once (even one not stored yet) take turns.
    let mut tx = locked_tx(db, "page", page).await?;
    let now = now_secs();
    let previous: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT merchant_uuid, status, fb_user_id FROM pages WHERE page_id = $1")
            .bind(page)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?;
    let mut saved = SavedPage::Saved(merchant);
    if let Some((owner, st, grantor)) = previous {
        // Returning early drops `tx`: nothing is written.
        if status(&st)? == AccountStatus::Deleting {
            return Ok(SavedPage::BeingDeleted);
        }
        if owner != merchant.to_string() {
            let same_user = grantor.is_some() && grantor == fb_user_id;
            if !same_user {
                return Ok(SavedPage::OwnedElsewhere);
            }
            let from = merchant_uuid(&owner)?;
            let move_id: i64 = sqlx::query_scalar(
                "INSERT INTO page_moves (page_id, from_merchant, to_merchant, fb_user_id, moved_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(page)
            .bind(from.to_string())
            .bind(merchant.to_string())
            .bind(grantor)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg)?;
            // The new merchant's copy is empty: its first poll must read everything.
            sqlx::query("DELETE FROM conversation_watermarks WHERE page_id = $1")
                .bind(page)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
            saved = SavedPage::Moved { from, move_id };
        }
    }
    sqlx::query(INSERT_MERCHANT)
        .bind(merchant.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
    sqlx::query(
        "INSERT INTO pages (page_id, merchant_uuid, fb_user_id, name, access_token, status,
            status_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'active', NULL, $6, $6)
         ON CONFLICT (page_id) DO UPDATE SET merchant_uuid = excluded.merchant_uuid,
            fb_user_id = excluded.fb_user_id, name = excluded.name,
            access_token = excluded.access_token,
            status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
    )
    .bind(page)
    .bind(merchant.to_string())
    .bind(fb_user_id)
    .bind(name)
    .bind(enc)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(saved)
}

pub(in crate::store::tokens) async fn page_move_cleaned(
    db: &PgDb,
    move_id: i64,
    objects: usize,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE page_moves SET cleaned_at = $2, objects_deleted = $3 WHERE id = $1")
        .bind(move_id)
        .bind(now_secs())
        .bind(big(objects))
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(())
}

pub(in crate::store::tokens) async fn uncleaned_page_moves(
    db: &PgDb,
) -> Result<Vec<(i64, String, String, String)>, StoreError> {
    sqlx::query_as(
        "SELECT id, page_id, from_merchant, fb_user_id FROM page_moves
         WHERE cleaned_at IS NULL ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .map_err(pg)
}

pub(in crate::store::tokens) async fn page_moves(
    db: &PgDb,
    limit: usize,
) -> Result<Vec<PageMove>, StoreError> {
    let rows: Vec<MoveRow> = sqlx::query_as(
        "SELECT page_id, from_merchant, moved_at, cleaned_at, objects_deleted
         FROM page_moves ORDER BY moved_at DESC, id DESC LIMIT $1",
    )
    .bind(big(limit))
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    rows.into_iter()
        .map(|(page_id, from, moved_at, cleaned_at, objects_deleted)| {
            Ok(PageMove {
                page_id,
                from_merchant: merchant_uuid(&from)?,
                moved_at,
                cleaned_at,
                objects_deleted,
            })
        })
        .collect()
}

pub(in crate::store::tokens) async fn merchant_has_connections(
    db: &PgDb,
    merchant: Uuid,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM shops WHERE merchant_uuid = $1 AND status != 'uninstalled')
             OR EXISTS (SELECT 1 FROM pages WHERE merchant_uuid = $1 AND status != 'deleting')",
    )
    .bind(merchant.to_string())
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}

pub(in crate::store::tokens) async fn stored_page(
    db: &PgDb,
    page: &str,
) -> Result<Option<StoredPage>, StoreError> {
    let row: Option<PageRow> = sqlx::query_as(
        "SELECT merchant_uuid, name, access_token, status, status_reason
         FROM pages WHERE page_id = $1",
    )
    .bind(page)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    row.map(|(m, name, access_token, st, status_reason)| {
        Ok(StoredPage {
            merchant: merchant_uuid(&m)?,
            name,
            access_token,
            status: status(&st)?,
            status_reason,
        })
    })
    .transpose()
}

pub(in crate::store::tokens) async fn active_pages(db: &PgDb) -> Result<Vec<PageId>, StoreError> {
    ids(
        db,
        r#"SELECT page_id FROM pages WHERE status = 'active' ORDER BY page_id COLLATE "C""#,
        None,
        |p| PageId::parse(p).ok(),
    )
    .await
}

pub(in crate::store::tokens) async fn set_page_status(
    db: &PgDb,
    page: &str,
    status: AccountStatus,
    reason: Option<String>,
) -> Result<(), StoreError> {
    // A deletion in progress is never undone by another status.
    sqlx::query(
        "UPDATE pages SET status = $2, status_reason = $3, updated_at = $4
         WHERE page_id = $1 AND status != 'deleting'",
    )
    .bind(page)
    .bind(status.as_str())
    .bind(reason)
    .bind(now_secs())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(())
}

pub(in crate::store::tokens) async fn mark_page_reauth(
    db: &PgDb,
    cipher: &TokenCipher,
    page: &str,
    rejected: &SecretString,
    reason: String,
) -> Result<bool, StoreError> {
    let mut tx = db.pool().begin().await.map_err(pg)?;
    // FOR UPDATE: a reconnect storing a new token waits until this decision is written, so a
    // token stored after the comparison is never marked.
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT access_token FROM pages WHERE page_id = $1 AND status != 'deleting' FOR UPDATE",
    )
    .bind(page)
    .fetch_optional(&mut *tx)
    .await
    .map_err(pg)?;
    let Some(stored) = stored else {
        return Ok(false);
    };
    let current = cipher.decrypt(&stored, &page_aad(page))?;
    if current.expose_secret() != rejected.expose_secret() {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE pages SET status = 'needs_reauth', status_reason = $2, updated_at = $3
         WHERE page_id = $1",
    )
    .bind(page)
    .bind(reason)
    .bind(now_secs())
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(true)
}

pub(in crate::store::tokens) async fn delete_page(
    db: &PgDb,
    page: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM pages WHERE page_id = $1")
        .bind(page)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(done.rows_affected() > 0)
}

pub(in crate::store::tokens) async fn merchants_of_facebook_user(
    db: &PgDb,
    fb_user_id: &str,
) -> Result<Vec<Uuid>, StoreError> {
    ids(
        db,
        r#"SELECT merchant_uuid FROM facebook_users WHERE fb_user_id = $1
           ORDER BY merchant_uuid COLLATE "C""#,
        Some(fb_user_id),
        |m| Uuid::parse_str(m).ok(),
    )
    .await
}

pub(in crate::store::tokens) async fn pages_granted_by(
    db: &PgDb,
    fb_user_id: &str,
) -> Result<Vec<(Uuid, PageId)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT merchant_uuid, page_id FROM pages WHERE fb_user_id = $1
           ORDER BY page_id COLLATE "C""#,
    )
    .bind(fb_user_id)
    .fetch_all(db.pool())
    .await
    .map_err(pg)?;
    Ok(rows
        .iter()
        .filter_map(|(m, p)| Some((Uuid::parse_str(m).ok()?, PageId::parse(p).ok()?)))
        .collect())
}

pub(in crate::store::tokens) async fn delete_facebook_user(
    db: &PgDb,
    merchant: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM facebook_users WHERE merchant_uuid = $1")
        .bind(merchant.to_string())
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(())
}

pub(in crate::store::tokens) async fn mark_pages_deleting(
    db: &PgDb,
    fb_user_id: &str,
    reason: &str,
) -> Result<Vec<(Uuid, PageId)>, StoreError> {
    sqlx::query(
        "UPDATE pages SET status = 'deleting', status_reason = $2, updated_at = $3
         WHERE fb_user_id = $1",
    )
    .bind(fb_user_id)
    .bind(reason)
    .bind(now_secs())
    .execute(db.pool())
    .await
    .map_err(pg)?;
    pages_granted_by(db, fb_user_id).await
}
