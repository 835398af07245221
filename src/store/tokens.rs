//! Merchants, shops, Facebook users and pages. Every token is encrypted with the row's key as
//! associated data, so a ciphertext moved to another row does not decrypt.

use rusqlite::{params, OptionalExtension};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{now_secs, Db, StoreError};
use crate::crypto::TokenCipher;
use crate::objects::keys::{PageId, ShopDomain};

#[derive(Clone)]
pub struct TokenStore {
    db: Db,
    cipher: TokenCipher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    Uninstalled,
    NeedsReauth,
}

impl AccountStatus {
    fn parse(s: &str) -> AccountStatus {
        match s {
            "uninstalled" => AccountStatus::Uninstalled,
            "needs_reauth" => AccountStatus::NeedsReauth,
            _ => AccountStatus::Active,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Uninstalled => "uninstalled",
            AccountStatus::NeedsReauth => "needs_reauth",
        }
    }
}

/// What an OAuth exchange with Shopify gave us.
pub struct ShopGrant {
    pub access_token: SecretString,
    pub scopes: String,
    /// Unix seconds; `None` for non-expiring offline tokens.
    pub expires_at: Option<i64>,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_expires_at: Option<i64>,
}

pub struct ShopRecord {
    pub domain: ShopDomain,
    pub merchant: Uuid,
    pub access_token: Option<SecretString>,
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub refresh_token: Option<SecretString>,
    pub refresh_token_expires_at: Option<i64>,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
}

pub struct PageRecord {
    pub page_id: PageId,
    pub merchant: Uuid,
    pub name: Option<String>,
    pub access_token: SecretString,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
}

pub struct FacebookUserRecord {
    pub merchant: Uuid,
    pub fb_user_id: Option<String>,
    pub access_token: SecretString,
    pub expires_at: Option<i64>,
    pub status: AccountStatus,
}

/// A short status line per shop/page for `/` and the logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSummary {
    pub id: String,
    pub merchant: Uuid,
    pub status: &'static str,
    pub reason: Option<String>,
}

fn shop_aad(domain: &str) -> Vec<u8> {
    format!("shop:{domain}").into_bytes()
}
fn shop_refresh_aad(domain: &str) -> Vec<u8> {
    format!("shop-refresh:{domain}").into_bytes()
}
fn page_aad(page: &str) -> Vec<u8> {
    format!("page:{page}").into_bytes()
}
fn user_aad(merchant: &Uuid) -> Vec<u8> {
    format!("fb-user:{merchant}").into_bytes()
}

fn parse_uuid(s: String) -> Result<Uuid, rusqlite::Error> {
    Uuid::parse_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl TokenStore {
    pub fn new(db: Db, cipher: TokenCipher) -> Self {
        TokenStore { db, cipher }
    }

    /// The first column of `sql` (one optional text parameter), parsed with `parse`. Rows were
    /// validated on the way in; anything that no longer parses is skipped (never polled).
    async fn ids<T>(
        &self,
        sql: &'static str,
        param: Option<String>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let rows: Vec<String> = self
            .db
            .call(move |c| {
                let mut st = c.prepare_cached(sql)?;
                let v = match param {
                    Some(p) => st
                        .query_map([p], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?,
                    None => st
                        .query_map([], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?,
                };
                Ok(v)
            })
            .await?;
        Ok(rows.iter().filter_map(|r| parse(r)).collect())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

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
        self.db
            .call(move |c| {
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

    /// Replaces the tokens of an active shop after a refresh, leaving its install state alone;
    /// false when the shop is no longer active (e.g. uninstalled meanwhile).
    pub async fn update_shop_tokens(
        &self,
        domain: &ShopDomain,
        grant: ShopGrant,
    ) -> Result<bool, StoreError> {
        let d = domain.as_str().to_string();
        let token = self
            .cipher
            .encrypt(grant.access_token.expose_secret(), &shop_aad(&d));
        let refresh = grant.refresh_token.as_ref().map(|r| {
            self.cipher
                .encrypt(r.expose_secret(), &shop_refresh_aad(&d))
        });
        self.db
            .call(move |c| {
                Ok(c.execute(
                    "UPDATE shops SET access_token = ?2, scopes = ?3, token_expires_at = ?4,
                        refresh_token = ?5, refresh_token_expires_at = ?6, updated_at = ?7
                     WHERE domain = ?1 AND status = 'active'",
                    params![
                        d,
                        token,
                        grant.scopes,
                        grant.expires_at,
                        refresh,
                        grant.refresh_token_expires_at,
                        now_secs()
                    ],
                )? == 1)
            })
            .await
    }

    pub async fn shop(&self, domain: &ShopDomain) -> Result<Option<ShopRecord>, StoreError> {
        let d = domain.as_str().to_string();
        let row = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT merchant_uuid, access_token, scopes, token_expires_at, refresh_token,
                            refresh_token_expires_at, status, status_reason
                     FROM shops WHERE domain = ?1",
                    [&d],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<Vec<u8>>>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<Vec<u8>>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, String>(6)?,
                            r.get::<_, Option<String>>(7)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((m, tok, scopes, exp, refresh, rexp, status, reason)) = row else {
            return Ok(None);
        };
        let d = domain.as_str();
        Ok(Some(ShopRecord {
            domain: domain.clone(),
            merchant: parse_uuid(m)?,
            access_token: tok
                .map(|t| self.cipher.decrypt(&t, &shop_aad(d)))
                .transpose()?,
            scopes,
            expires_at: exp,
            refresh_token: refresh
                .map(|t| self.cipher.decrypt(&t, &shop_refresh_aad(d)))
                .transpose()?,
            refresh_token_expires_at: rexp,
            status: AccountStatus::parse(&status),
            status_reason: reason,
        }))
    }

    /// When the shop was last (re)installed, unix seconds.
    pub async fn shop_installed_at(&self, domain: &ShopDomain) -> Result<Option<i64>, StoreError> {
        let d = domain.as_str().to_string();
        self.db
            .call(move |c| {
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
        self.ids(
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
        let d = domain.as_str().to_string();
        self.db
            .call(move |c| {
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
                        params![d, status.as_str(), reason, now],
                    )?;
                }
                Ok(())
            })
            .await
    }

    /// Removes every record of the shop (Shopify's `shop/redact`).
    pub async fn delete_shop(&self, domain: &ShopDomain) -> Result<bool, StoreError> {
        let d = domain.as_str().to_string();
        self.db
            .call(move |c| Ok(c.execute("DELETE FROM shops WHERE domain = ?1", [d])? > 0))
            .await
    }

    pub async fn shop_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        self.summaries(
            "SELECT domain, merchant_uuid, status, status_reason FROM shops ORDER BY domain",
        )
        .await
    }

    pub async fn page_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        self.summaries(
            "SELECT page_id, merchant_uuid, status, status_reason FROM pages ORDER BY page_id",
        )
        .await
    }

    async fn summaries(&self, sql: &'static str) -> Result<Vec<AccountSummary>, StoreError> {
        self.db
            .call(move |c| {
                let mut st = c.prepare(sql)?;
                let v = st
                    .query_map([], |r| {
                        let status: String = r.get(2)?;
                        Ok(AccountSummary {
                            id: r.get(0)?,
                            merchant: parse_uuid(r.get(1)?)?,
                            status: AccountStatus::parse(&status).as_str(),
                            reason: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    pub async fn merchant_exists(&self, merchant: Uuid) -> Result<bool, StoreError> {
        self.db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT 1 FROM merchants WHERE uuid = ?1",
                    [merchant.to_string()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
            })
            .await
    }

    /// Stores the merchant's long-lived Facebook user token (one per merchant).
    pub async fn save_facebook_user(
        &self,
        merchant: Uuid,
        fb_user_id: Option<String>,
        token: &SecretString,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let enc = self
            .cipher
            .encrypt(token.expose_secret(), &user_aad(&merchant));
        self.db
            .call(move |c| {
                let now = now_secs();
                c.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
                c.execute(
                    "INSERT INTO facebook_users (merchant_uuid, fb_user_id, access_token, expires_at, status, status_reason, updated_at)
                     VALUES (?1, ?2, ?3, ?4, 'active', NULL, ?5)
                     ON CONFLICT(merchant_uuid) DO UPDATE SET fb_user_id = excluded.fb_user_id,
                        access_token = excluded.access_token, expires_at = excluded.expires_at,
                        status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
                    params![merchant.to_string(), fb_user_id, enc, expires_at, now],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn facebook_user(
        &self,
        merchant: Uuid,
    ) -> Result<Option<FacebookUserRecord>, StoreError> {
        let row = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT fb_user_id, access_token, expires_at, status FROM facebook_users WHERE merchant_uuid = ?1",
                    [merchant.to_string()],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, String>(3)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((uid, tok, exp, status)) = row else {
            return Ok(None);
        };
        Ok(Some(FacebookUserRecord {
            merchant,
            fb_user_id: uid,
            access_token: self.cipher.decrypt(&tok, &user_aad(&merchant))?,
            expires_at: exp,
            status: AccountStatus::parse(&status),
        }))
    }

    pub async fn set_facebook_user_status(
        &self,
        merchant: Uuid,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE facebook_users SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE merchant_uuid = ?1",
                    params![merchant.to_string(), status.as_str(), reason, now_secs()],
                )?;
                Ok(())
            })
            .await
    }

    /// Stores a page token. A page already owned by another merchant is moved only when
    /// `allow_move` is set; otherwise the existing owner is kept and returned.
    pub async fn save_page(
        &self,
        page: &PageId,
        merchant: Uuid,
        fb_user_id: Option<String>,
        name: Option<String>,
        token: &SecretString,
    ) -> Result<Uuid, StoreError> {
        let p = page.as_str().to_string();
        let enc = self.cipher.encrypt(token.expose_secret(), &page_aad(&p));
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let now = now_secs();
                tx.execute(
                    "INSERT OR IGNORE INTO merchants (uuid, created_at) VALUES (?1, ?2)",
                    params![merchant.to_string(), now],
                )?;
                let previous: Option<String> = tx
                    .query_row("SELECT merchant_uuid FROM pages WHERE page_id = ?1", [&p], |r| r.get(0))
                    .optional()?;
                if let Some(prev) = previous.filter(|m| *m != merchant.to_string()) {
                    // The page's admin connected it to another merchant: its objects follow
                    // the new owner from now on. Logged, as it moves data between accounts.
                    tracing::warn!(page = %p, from = %prev, to = %merchant, "page moved to another merchant");
                }
                tx.execute(
                    "INSERT INTO pages (page_id, merchant_uuid, fb_user_id, name, access_token, status, status_reason, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'active', NULL, ?6, ?6)
                     ON CONFLICT(page_id) DO UPDATE SET merchant_uuid = excluded.merchant_uuid,
                        fb_user_id = excluded.fb_user_id, name = excluded.name,
                        access_token = excluded.access_token,
                        status = 'active', status_reason = NULL, updated_at = excluded.updated_at",
                    params![p, merchant.to_string(), fb_user_id, name, enc, now],
                )?;
                tx.commit()?;
                Ok(merchant)
            })
            .await
    }

    pub async fn page(&self, page: &PageId) -> Result<Option<PageRecord>, StoreError> {
        let p = page.as_str().to_string();
        let row = self
            .db
            .call(move |c| {
                Ok(c.query_row(
                    "SELECT merchant_uuid, name, access_token, status, status_reason FROM pages WHERE page_id = ?1",
                    [&p],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    },
                )
                .optional()?)
            })
            .await?;
        let Some((m, name, tok, status, reason)) = row else {
            return Ok(None);
        };
        Ok(Some(PageRecord {
            page_id: page.clone(),
            merchant: parse_uuid(m)?,
            name,
            access_token: self.cipher.decrypt(&tok, &page_aad(page.as_str()))?,
            status: AccountStatus::parse(&status),
            status_reason: reason,
        }))
    }

    pub async fn active_pages(&self) -> Result<Vec<PageId>, StoreError> {
        self.ids(
            "SELECT page_id FROM pages WHERE status = 'active' ORDER BY page_id",
            None,
            |p| PageId::parse(p).ok(),
        )
        .await
    }

    pub async fn set_page_status(
        &self,
        page: &PageId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let p = page.as_str().to_string();
        self.db
            .call(move |c| {
                c.execute(
                    "UPDATE pages SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE page_id = ?1",
                    params![p, status.as_str(), reason, now_secs()],
                )?;
                Ok(())
            })
            .await
    }

    pub async fn delete_page(&self, page: &PageId) -> Result<bool, StoreError> {
        let p = page.as_str().to_string();
        self.db
            .call(move |c| Ok(c.execute("DELETE FROM pages WHERE page_id = ?1", [p])? > 0))
            .await
    }

    /// Re-encrypts every stored token with `new` in one transaction; returns how many values
    /// were re-encrypted. Fails without changing anything if any value does not decrypt.
    pub async fn rotate_key(&self, new: TokenCipher) -> Result<usize, StoreError> {
        let old = self.cipher.clone();
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let mut n = 0;
                // (table, key column, token column, associated-data prefix)
                let columns: [(&str, &str, &str, &str); 4] = [
                    ("shops", "domain", "access_token", "shop"),
                    ("shops", "domain", "refresh_token", "shop-refresh"),
                    ("facebook_users", "merchant_uuid", "access_token", "fb-user"),
                    ("pages", "page_id", "access_token", "page"),
                ];
                for (table, key, col, prefix) in columns {
                    let rows: Vec<(String, Vec<u8>)> = {
                        let mut st = tx.prepare(&format!(
                            "SELECT {key}, {col} FROM {table} WHERE {col} IS NOT NULL"
                        ))?;
                        let v = st
                            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<Result<Vec<_>, _>>()?;
                        v
                    };
                    for (id, blob) in rows {
                        let aad = format!("{prefix}:{id}").into_bytes();
                        let plain = old.decrypt(&blob, &aad)?;
                        let fresh = new.encrypt(plain.expose_secret(), &aad);
                        tx.execute(
                            &format!("UPDATE {table} SET {col} = ?1 WHERE {key} = ?2"),
                            params![fresh, id],
                        )?;
                        n += 1;
                    }
                }
                tx.commit()?;
                Ok(n)
            })
            .await
    }

    /// Merchants whose Facebook login was made by `fb_user_id` (Meta's data-deletion callback
    /// names the app-scoped user id).
    pub async fn merchants_of_facebook_user(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        self.ids(
            "SELECT merchant_uuid FROM facebook_users WHERE fb_user_id = ?1",
            Some(fb_user_id.to_string()),
            |m| Uuid::parse_str(m).ok(),
        )
        .await
    }

    /// (merchant, page) of every page granted by the Facebook user `fb_user_id`.
    pub async fn pages_granted_by(
        &self,
        fb_user_id: &str,
    ) -> Result<Vec<(Uuid, PageId)>, StoreError> {
        let id = fb_user_id.to_string();
        let rows: Vec<(String, String)> = self
            .db
            .call(move |c| {
                let mut st = c.prepare(
                    "SELECT merchant_uuid, page_id FROM pages WHERE fb_user_id = ?1 ORDER BY page_id",
                )?;
                let v = st
                    .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|(m, p)| Some((Uuid::parse_str(m).ok()?, PageId::parse(p).ok()?)))
            .collect())
    }

    pub async fn delete_facebook_user(&self, merchant: Uuid) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                c.execute(
                    "DELETE FROM facebook_users WHERE merchant_uuid = ?1",
                    [merchant.to_string()],
                )?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DbKind;

    fn store(dir: &std::path::Path) -> TokenStore {
        let db = Db::open(&dir.join("tokens.db"), DbKind::Tokens).unwrap();
        TokenStore::new(db, TokenCipher::new(&[9u8; 32]))
    }

    fn grant(tok: &str) -> ShopGrant {
        ShopGrant {
            access_token: SecretString::from(tok.to_string()),
            scopes: "read_products".into(),
            expires_at: None,
            refresh_token: None,
            refresh_token_expires_at: None,
        }
    }

    #[tokio::test]
    async fn tokens_are_not_in_the_database_file_in_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let m = s
            .save_shop_grant(&shop, grant("shpat_PLAINTEXT_SHOP_TOKEN_123"), None)
            .await
            .unwrap();
        s.save_page(
            &PageId::parse("1234").unwrap(),
            m,
            Some("55".into()),
            Some("Page".into()),
            &SecretString::from("EAAG_PLAINTEXT_PAGE_TOKEN".to_string()),
        )
        .await
        .unwrap();
        s.save_facebook_user(
            m,
            Some("55".into()),
            &SecretString::from("EAAG_PLAINTEXT_USER_TOKEN".to_string()),
            Some(1),
        )
        .await
        .unwrap();
        // Checkpoint so the WAL contents land in the main file too; then read both raw.
        s.db()
            .call(|c| {
                c.pragma_update(None, "wal_checkpoint", "FULL")?;
                Ok(())
            })
            .await
            .unwrap();
        let mut raw = std::fs::read(dir.path().join("tokens.db")).unwrap();
        raw.extend(std::fs::read(dir.path().join("tokens.db-wal")).unwrap_or_default());
        for needle in [
            "PLAINTEXT_SHOP_TOKEN",
            "PLAINTEXT_PAGE_TOKEN",
            "PLAINTEXT_USER_TOKEN",
        ] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in the raw database file"
            );
        }
        // And it still decrypts.
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert_eq!(
            rec.access_token.unwrap().expose_secret(),
            "shpat_PLAINTEXT_SHOP_TOKEN_123"
        );
    }

    #[tokio::test]
    async fn reinstall_keeps_the_merchant_uuid_and_uninstall_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let m1 = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        assert_eq!(m1.get_version_num(), 4);
        s.set_shop_status(
            &shop,
            AccountStatus::Uninstalled,
            Some("app/uninstalled".into()),
        )
        .await
        .unwrap();
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert!(rec.access_token.is_none());
        assert_eq!(rec.status, AccountStatus::Uninstalled);
        assert!(s.active_shops().await.unwrap().is_empty());
        let m2 = s.save_shop_grant(&shop, grant("t2"), None).await.unwrap();
        assert_eq!(m1, m2);
        assert_eq!(s.active_shops().await.unwrap(), vec![shop]);
    }

    #[tokio::test]
    async fn rotate_key_re_encrypts_everything() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let m = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        let page = PageId::parse("7").unwrap();
        s.save_page(&page, m, None, None, &SecretString::from("p1".to_string()))
            .await
            .unwrap();
        s.save_facebook_user(m, None, &SecretString::from("u1".to_string()), None)
            .await
            .unwrap();
        let new = TokenCipher::new(&[2u8; 32]);
        assert_eq!(s.rotate_key(new.clone()).await.unwrap(), 3);
        assert!(s.shop(&shop).await.is_err(), "the old key no longer reads");
        let rotated = TokenStore::new(s.db().clone(), new);
        assert_eq!(
            rotated
                .shop(&shop)
                .await
                .unwrap()
                .unwrap()
                .access_token
                .unwrap()
                .expose_secret(),
            "t1"
        );
        assert_eq!(
            rotated
                .page(&page)
                .await
                .unwrap()
                .unwrap()
                .access_token
                .expose_secret(),
            "p1"
        );
        assert_eq!(
            rotated
                .facebook_user(m)
                .await
                .unwrap()
                .unwrap()
                .access_token
                .expose_secret(),
            "u1"
        );
        // Rotating with the wrong current key fails and changes nothing.
        assert!(s.rotate_key(TokenCipher::new(&[3u8; 32])).await.is_err());
        assert_eq!(
            rotated
                .page(&page)
                .await
                .unwrap()
                .unwrap()
                .access_token
                .expose_secret(),
            "p1"
        );
    }

    #[tokio::test]
    async fn wrong_key_cannot_read_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        let other = TokenStore::new(s.db().clone(), TokenCipher::new(&[1u8; 32]));
        assert!(matches!(
            other.shop(&shop).await,
            Err(StoreError::Cipher(_))
        ));
    }
}
