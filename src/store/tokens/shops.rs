//! Shopify shops: grants, token rotation, install state.

use rusqlite::{params, OptionalExtension};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{
    ids, parse_uuid, postgres, shop_aad, shop_refresh_aad, AccountStatus, ShopGrant, ShopRecord,
    StoredShop, TokenStore,
};
use crate::objects::keys::ShopDomain;
use crate::store::{now_secs, sqlite_or, StoreError};

impl TokenStore {
    /// Records a (re)install. The shop keeps its merchant UUID across reinstalls; a new shop
    /// joins `merchant` when given (a logged-in merchant adding a shop), else gets a new UUID.
    pub async fn save_shop_grant(
        &self,
        domain: &ShopDomain,
        grant: ShopGrant,
        merchant: Option<Uuid>,
    ) -> Result<Uuid, StoreError> {
        let domain = domain.as_str().to_string();
        let token = self
            .cipher
            .encrypt(grant.access_token.expose_secret(), &shop_aad(&domain));
        let refresh = grant.refresh_token.as_ref().map(|r| {
            self.cipher
                .encrypt(r.expose_secret(), &shop_refresh_aad(&domain))
        });
        let db = sqlite_or!(&self.backend, pg =>
            postgres::save_shop_grant(pg, &domain, token, refresh, grant, merchant));
        db.call(move |c| {
            let tx = c.transaction()?;
            let now = now_secs();
            let existing: Option<String> = tx
                .query_row(
                    "SELECT merchant_uuid FROM shops WHERE domain = ?1",
                    [&domain],
                    |r| r.get(0),
                )
                .optional()?;
            let merchant = match existing {
                Some(m) => parse_uuid(m)?,
                None => merchant.unwrap_or_else(Uuid::new_v4),
            };
            tx.execute(
                "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                params![merchant.to_string(), now],
            )?;
            tx.execute(
                "INSERT INTO shops (domain, merchant_uuid, access_token, scopes, token_expires_at,
                        refresh_token, refresh_token_expires_at, status, status_reason,
                        installed_at, uninstalled_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', NULL, ?8, NULL, ?8)
                     ON CONFLICT(domain) DO UPDATE SET
                        access_token = excluded.access_token, scopes = excluded.scopes,
                        token_expires_at = excluded.token_expires_at,
                        refresh_token = excluded.refresh_token,
                        refresh_token_expires_at = excluded.refresh_token_expires_at,
                        status = 'active', status_reason = NULL,
                        installed_at = excluded.installed_at, uninstalled_at = NULL,
                        updated_at = excluded.updated_at",
                params![
                    domain,
                    merchant.to_string(),
                    token,
                    grant.scopes,
                    grant.expires_at,
                    refresh,
                    grant.refresh_token_expires_at,
                    now
                ],
            )?;
            tx.commit()?;
            Ok(merchant)
        })
        .await
    }

    /// Replaces the tokens of the install made at `installed_at` (compare and swap: a
    /// refresh that raced a reinstall must not overwrite the new grant); false when the shop
    /// is no longer active or was reinstalled meanwhile.
    pub async fn update_shop_tokens(
        &self,
        domain: &ShopDomain,
        grant: ShopGrant,
        installed_at: i64,
    ) -> Result<bool, StoreError> {
        let d = domain.as_str().to_string();
        let token = self
            .cipher
            .encrypt(grant.access_token.expose_secret(), &shop_aad(&d));
        let refresh = grant.refresh_token.as_ref().map(|r| {
            self.cipher
                .encrypt(r.expose_secret(), &shop_refresh_aad(&d))
        });
        let db = sqlite_or!(&self.backend, pg =>
            postgres::update_shop_tokens(pg, &d, token, refresh, grant, installed_at));
        db.call(move |c| {
            Ok(c.execute(
                "UPDATE shops SET access_token = ?2, scopes = ?3, token_expires_at = ?4,
                        refresh_token = ?5, refresh_token_expires_at = ?6, updated_at = ?7
                     WHERE domain = ?1 AND status = 'active' AND installed_at = ?8",
                params![
                    d,
                    token,
                    grant.scopes,
                    grant.expires_at,
                    refresh,
                    grant.refresh_token_expires_at,
                    now_secs(),
                    installed_at
                ],
            )? == 1)
        })
        .await
    }

    pub async fn shop(&self, domain: &ShopDomain) -> Result<Option<ShopRecord>, StoreError> {
        let Some(row) = self.stored_shop(domain).await? else {
            return Ok(None);
        };
        let d = domain.as_str();
        Ok(Some(ShopRecord {
            domain: domain.clone(),
            merchant: row.merchant,
            access_token: row
                .access_token
                .map(|t| self.cipher.decrypt(&t, &shop_aad(d)))
                .transpose()?,
            scopes: row.scopes,
            expires_at: row.expires_at,
            refresh_token: row
                .refresh_token
                .map(|t| self.cipher.decrypt(&t, &shop_refresh_aad(d)))
                .transpose()?,
            refresh_token_expires_at: row.refresh_token_expires_at,
            status: row.status,
            status_reason: row.status_reason,
            installed_at: row.installed_at,
        }))
    }

    async fn stored_shop(&self, domain: &ShopDomain) -> Result<Option<StoredShop>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::stored_shop(pg, domain.as_str()));
        let d = domain.as_str().to_string();
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT merchant_uuid, access_token, scopes, token_expires_at, refresh_token,
                        refresh_token_expires_at, status, status_reason, installed_at
                 FROM shops WHERE domain = ?1",
                [&d],
                |r| {
                    Ok(StoredShop {
                        merchant: parse_uuid(r.get(0)?)?,
                        access_token: r.get(1)?,
                        scopes: r.get(2)?,
                        expires_at: r.get(3)?,
                        refresh_token: r.get(4)?,
                        refresh_token_expires_at: r.get(5)?,
                        status: r.get(6)?,
                        status_reason: r.get(7)?,
                        installed_at: r.get(8)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Whether the merchant still has a shop installed (active or waiting for re-authorisation).
    pub async fn merchant_has_installed_shop(&self, merchant: Uuid) -> Result<bool, StoreError> {
        let db =
            sqlite_or!(&self.backend, pg => postgres::merchant_has_installed_shop(pg, merchant));
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM shops
                                    WHERE merchant_uuid = ?1 AND status != 'uninstalled')",
                [merchant.to_string()],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Shopify's numeric id of the shop, when known.
    pub async fn shop_id(&self, domain: &ShopDomain) -> Result<Option<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::shop_id(pg, domain.as_str()));
        let d = domain.as_str().to_string();
        db.call(move |c| {
            Ok(
                c.query_row("SELECT shop_id FROM shops WHERE domain = ?1", [d], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten(),
            )
        })
        .await
    }

    /// Records Shopify's id of the shop (a no-op for a shop that is not stored).
    pub async fn set_shop_id(&self, domain: &ShopDomain, id: i64) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::set_shop_id(pg, domain.as_str(), id));
        let d = domain.as_str().to_string();
        db.call(move |c| {
            c.execute(
                "UPDATE shops SET shop_id = ?2 WHERE domain = ?1",
                params![d, id],
            )?;
            Ok(())
        })
        .await
    }

    /// When the shop was last (re)installed, unix seconds.
    pub async fn shop_installed_at(&self, domain: &ShopDomain) -> Result<Option<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::shop_installed_at(pg, domain.as_str()));
        let d = domain.as_str().to_string();
        db.call(move |c| {
            Ok(c.query_row(
                "SELECT installed_at FROM shops WHERE domain = ?1",
                [d],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Domains of every shop that should be polled.
    pub async fn active_shops(&self) -> Result<Vec<ShopDomain>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::active_shops(pg));
        ids(
            db,
            "SELECT domain FROM shops WHERE status = 'active' AND access_token IS NOT NULL ORDER BY domain",
            None,
            |d| ShopDomain::parse(d).ok(),
        )
        .await
    }

    pub async fn set_shop_status(
        &self,
        domain: &ShopDomain,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::set_shop_status(pg, domain.as_str(), status, reason));
        let d = domain.as_str().to_string();
        db.call(move |c| {
                let now = now_secs();
                if status == AccountStatus::Uninstalled {
                    // Revoke: the token is useless after uninstall and must not linger.
                    c.execute(
                        "UPDATE shops SET status = 'uninstalled', status_reason = ?2,
                            access_token = NULL, refresh_token = NULL, token_expires_at = NULL,
                            refresh_token_expires_at = NULL, uninstalled_at = ?3, updated_at = ?3
                         WHERE domain = ?1",
                        params![d, reason, now],
                    )?;
                } else {
                    c.execute(
                        "UPDATE shops SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE domain = ?1",
                        params![d, status, reason, now],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Marks the install made at `installed_at` as needing re-authorisation (not a newer one).
    pub async fn mark_shop_reauth(
        &self,
        domain: &ShopDomain,
        installed_at: i64,
        reason: String,
    ) -> Result<bool, StoreError> {
        let db = sqlite_or!(&self.backend, pg =>
            postgres::mark_shop_reauth(pg, domain.as_str(), installed_at, reason));
        let d = domain.as_str().to_string();
        db.call(move |c| {
            Ok(c.execute(
                "UPDATE shops SET status = 'needs_reauth', status_reason = ?2, updated_at = ?3
                     WHERE domain = ?1 AND status = 'active' AND installed_at = ?4",
                params![d, reason, now_secs(), installed_at],
            )? == 1)
        })
        .await
    }

    /// Removes every record of the shop (Shopify's `shop/redact`).
    pub async fn delete_shop(&self, domain: &ShopDomain) -> Result<bool, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::delete_shop(pg, domain.as_str()));
        let d = domain.as_str().to_string();
        db.call(move |c| Ok(c.execute("DELETE FROM shops WHERE domain = ?1", [d])? > 0))
            .await
    }
}
