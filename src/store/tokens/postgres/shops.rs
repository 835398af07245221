//! Shopify shops on PostgreSQL (see `../shops.rs` for what each query means).

use uuid::Uuid;

use super::{ids, locked_tx, merchant_uuid, status};
use crate::objects::keys::ShopDomain;
use crate::store::postgres::{pg, PgDb};
use crate::store::tokens::{AccountStatus, ShopGrant, StoredShop};
use crate::store::{now_secs, StoreError};

pub(in crate::store::tokens) async fn save_shop_grant(
    db: &PgDb,
    domain: &str,
    token: Vec<u8>,
    refresh: Option<Vec<u8>>,
    grant: ShopGrant,
    merchant: Option<Uuid>,
) -> Result<Uuid, StoreError> {
    // Two instances completing the first install of one shop at once must agree on its
    // merchant: the read below and the upsert run one install at a time per domain.
    let mut tx = locked_tx(db, "shop", domain).await?;
    let now = now_secs();
    let existing: Option<String> =
        sqlx::query_scalar("SELECT merchant_uuid FROM shops WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?;
    let merchant = match existing {
        Some(m) => merchant_uuid(&m)?,
        None => merchant.unwrap_or_else(Uuid::new_v4),
    };
    sqlx::query(
        "INSERT INTO merchants (uuid, created_at) VALUES ($1, $2) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(merchant.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    sqlx::query(
        "INSERT INTO shops (domain, merchant_uuid, access_token, scopes, token_expires_at,
            refresh_token, refresh_token_expires_at, status, status_reason,
            installed_at, uninstalled_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', NULL, $8, NULL, $8)
         ON CONFLICT (domain) DO UPDATE SET
            access_token = excluded.access_token, scopes = excluded.scopes,
            token_expires_at = excluded.token_expires_at,
            refresh_token = excluded.refresh_token,
            refresh_token_expires_at = excluded.refresh_token_expires_at,
            status = 'active', status_reason = NULL,
            installed_at = excluded.installed_at, uninstalled_at = NULL,
            updated_at = excluded.updated_at",
    )
    .bind(domain)
    .bind(merchant.to_string())
    .bind(token)
    .bind(grant.scopes)
    .bind(grant.expires_at)
    .bind(refresh)
    .bind(grant.refresh_token_expires_at)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(pg)?;
    tx.commit().await.map_err(pg)?;
    Ok(merchant)
}

pub(in crate::store::tokens) async fn update_shop_tokens(
    db: &PgDb,
    domain: &str,
    token: Vec<u8>,
    refresh: Option<Vec<u8>>,
    grant: ShopGrant,
    installed_at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE shops SET access_token = $2, scopes = $3, token_expires_at = $4,
            refresh_token = $5, refresh_token_expires_at = $6, updated_at = $7
         WHERE domain = $1 AND status = 'active' AND installed_at = $8",
    )
    .bind(domain)
    .bind(token)
    .bind(grant.scopes)
    .bind(grant.expires_at)
    .bind(refresh)
    .bind(grant.refresh_token_expires_at)
    .bind(now_secs())
    .bind(installed_at)
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(done.rows_affected() == 1)
}

type ShopRow = (
    String,
    Option<Vec<u8>>,
    String,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
    String,
    Option<String>,
    i64,
);

pub(in crate::store::tokens) async fn stored_shop(
    db: &PgDb,
    domain: &str,
) -> Result<Option<StoredShop>, StoreError> {
    let row: Option<ShopRow> = sqlx::query_as(
        "SELECT merchant_uuid, access_token, scopes, token_expires_at, refresh_token,
                refresh_token_expires_at, status, status_reason, installed_at
         FROM shops WHERE domain = $1",
    )
    .bind(domain)
    .fetch_optional(db.pool())
    .await
    .map_err(pg)?;
    let Some((m, tok, scopes, exp, refresh, rexp, st, reason, installed_at)) = row else {
        return Ok(None);
    };
    Ok(Some(StoredShop {
        merchant: merchant_uuid(&m)?,
        access_token: tok,
        scopes,
        expires_at: exp,
        refresh_token: refresh,
        refresh_token_expires_at: rexp,
        status: status(&st)?,
        status_reason: reason,
        installed_at,
    }))
}

pub(in crate::store::tokens) async fn merchant_has_installed_shop(
    db: &PgDb,
    merchant: Uuid,
) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM shops
                        WHERE merchant_uuid = $1 AND status != 'uninstalled')",
    )
    .bind(merchant.to_string())
    .fetch_one(db.pool())
    .await
    .map_err(pg)
}

pub(in crate::store::tokens) async fn shop_id(
    db: &PgDb,
    domain: &str,
) -> Result<Option<i64>, StoreError> {
    let id: Option<Option<i64>> = sqlx::query_scalar("SELECT shop_id FROM shops WHERE domain = $1")
        .bind(domain)
        .fetch_optional(db.pool())
        .await
        .map_err(pg)?;
    Ok(id.flatten())
}

pub(in crate::store::tokens) async fn set_shop_id(
    db: &PgDb,
    domain: &str,
    id: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE shops SET shop_id = $2 WHERE domain = $1")
        .bind(domain)
        .bind(id)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(())
}

pub(in crate::store::tokens) async fn shop_installed_at(
    db: &PgDb,
    domain: &str,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar("SELECT installed_at FROM shops WHERE domain = $1")
        .bind(domain)
        .fetch_optional(db.pool())
        .await
        .map_err(pg)
}

pub(in crate::store::tokens) async fn active_shops(
    db: &PgDb,
) -> Result<Vec<ShopDomain>, StoreError> {
    ids(
        db,
        r#"SELECT domain FROM shops WHERE status = 'active' AND access_token IS NOT NULL
           ORDER BY domain COLLATE "C""#,
        None,
        |d| ShopDomain::parse(d).ok(),
    )
    .await
}

pub(in crate::store::tokens) async fn set_shop_status(
    db: &PgDb,
    domain: &str,
    status: AccountStatus,
    reason: Option<String>,
) -> Result<(), StoreError> {
    let now = now_secs();
    if status == AccountStatus::Uninstalled {
        // Revoke: the token is useless after uninstall and must not linger.
        sqlx::query(
            "UPDATE shops SET status = 'uninstalled', status_reason = $2,
                access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                refresh_token_expires_at = NULL, uninstalled_at = $3, updated_at = $3
             WHERE domain = $1",
        )
        .bind(domain)
        .bind(reason)
        .bind(now)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    } else {
        sqlx::query(
            "UPDATE shops SET status = $2, status_reason = $3, updated_at = $4 WHERE domain = $1",
        )
        .bind(domain)
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    }
    Ok(())
}

pub(in crate::store::tokens) async fn mark_shop_reauth(
    db: &PgDb,
    domain: &str,
    installed_at: i64,
    reason: String,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE shops SET status = 'needs_reauth', status_reason = $2, updated_at = $3
         WHERE domain = $1 AND status = 'active' AND installed_at = $4",
    )
    .bind(domain)
    .bind(reason)
    .bind(now_secs())
    .bind(installed_at)
    .execute(db.pool())
    .await
    .map_err(pg)?;
    Ok(done.rows_affected() == 1)
}

pub(in crate::store::tokens) async fn delete_shop(
    db: &PgDb,
    domain: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM shops WHERE domain = $1")
        .bind(domain)
        .execute(db.pool())
        .await
        .map_err(pg)?;
    Ok(done.rows_affected() > 0)
}
