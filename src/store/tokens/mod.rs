//! Merchants, shops, Facebook users and pages, and the per-conversation poll watermarks. Every
//! token is encrypted with the row's key as associated data, so a ciphertext moved to another
//! row does not decrypt.
//!
//! `shops` and `facebook` hold the queries of each integration; this module the shared parts.

mod deletions;
mod facebook;
mod postgres;
mod shops;
mod watermarks;

use rusqlite::{params, OptionalExtension};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{postgres::PgDb, sqlite_or, text_enum, Backend, Db, StoreError};
use crate::crypto::TokenCipher;
use crate::objects::keys::{PageId, ShopDomain};

pub use deletions::{DeletionRecorded, DeletionStatus};
pub use facebook::{PageMove, SavedPage};
pub use watermarks::Watermark;

#[derive(Clone)]
pub struct TokenStore {
    backend: Backend,
    cipher: TokenCipher,
}

text_enum!(
    /// Where a shop or page stands. The SQL of each table allows the states that table can be
    /// in; reading anything else is an error.
    AccountStatus, "account status" {
        Active => "active",
        /// A shop whose app was uninstalled (its token is deleted).
        Uninstalled => "uninstalled",
        /// The token was refused and cannot be refreshed: the merchant must reconnect.
        NeedsReauth => "needs_reauth",
        /// A page whose data is being deleted: nothing may write to it any more.
        Deleting => "deleting",
    }
);

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
    /// Unix seconds of the latest (re)install.
    pub installed_at: i64,
}

pub struct PageRecord {
    pub page_id: PageId,
    pub merchant: Uuid,
    pub name: Option<String>,
    pub access_token: SecretString,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
}

/// Who connected a merchant's Facebook pages. Their user token is not kept: only the page
/// tokens do later work, and data deletion needs only the user id.
pub struct FacebookUserRecord {
    pub merchant: Uuid,
    pub fb_user_id: Option<String>,
    pub status: AccountStatus,
}

/// A short status line per shop/page for `/` and the logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSummary {
    pub id: String,
    pub merchant: Uuid,
    pub status: AccountStatus,
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

fn parse_uuid(s: String) -> Result<Uuid, rusqlite::Error> {
    Uuid::parse_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A shop's row as stored, its tokens still encrypted: each backend reads it, and one piece of
/// code decrypts it, so both backends give the same record (and the same errors).
struct StoredShop {
    merchant: Uuid,
    access_token: Option<Vec<u8>>,
    scopes: String,
    expires_at: Option<i64>,
    refresh_token: Option<Vec<u8>>,
    refresh_token_expires_at: Option<i64>,
    status: AccountStatus,
    status_reason: Option<String>,
    installed_at: i64,
}

/// A page's row as stored, its token still encrypted (see `StoredShop`).
struct StoredPage {
    merchant: Uuid,
    name: Option<String>,
    access_token: Vec<u8>,
    status: AccountStatus,
    status_reason: Option<String>,
}

/// The first column of `sql` (one optional text parameter), parsed with `parse`. Rows were
/// validated on the way in; anything that no longer parses is skipped (never polled).
async fn ids<T>(
    db: &Db,
    sql: &'static str,
    param: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let rows: Vec<String> = db
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

impl TokenStore {
    pub fn new(db: Db, cipher: TokenCipher) -> Self {
        TokenStore {
            backend: Backend::Sqlite(db),
            cipher,
        }
    }

    /// The store in the shared PostgreSQL database. Tokens are encrypted with the same cipher
    /// and associated data as on SQLite, before they reach SQL.
    pub fn on_postgres(pg: PgDb, cipher: TokenCipher) -> Self {
        TokenStore {
            backend: Backend::Postgres(pg),
            cipher,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }

    pub async fn shop_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::shop_summaries(pg));
        summaries_of(
            db,
            "SELECT domain, merchant_uuid, status, status_reason FROM shops ORDER BY domain",
            None,
        )
        .await
    }

    pub async fn page_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::page_summaries(pg));
        summaries_of(
            db,
            "SELECT page_id, merchant_uuid, status, status_reason FROM pages ORDER BY page_id",
            None,
        )
        .await
    }

    /// One merchant's shops (for their account page).
    pub async fn merchant_shops(&self, merchant: Uuid) -> Result<Vec<AccountSummary>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::merchant_shops(pg, merchant));
        summaries_of(
            db,
            "SELECT domain, merchant_uuid, status, status_reason FROM shops
             WHERE merchant_uuid = ?1 ORDER BY domain",
            Some(merchant),
        )
        .await
    }

    /// One merchant's pages, with their names.
    pub async fn merchant_pages(
        &self,
        merchant: Uuid,
    ) -> Result<Vec<(AccountSummary, Option<String>)>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::merchant_pages(pg, merchant));
        db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT page_id, merchant_uuid, status, status_reason, name FROM pages
                     WHERE merchant_uuid = ?1 ORDER BY name, page_id",
            )?;
            let v = st
                .query_map([merchant.to_string()], |r| {
                    Ok((
                        AccountSummary {
                            id: r.get(0)?,
                            merchant: parse_uuid(r.get(1)?)?,
                            status: r.get(2)?,
                            reason: r.get(3)?,
                        },
                        r.get(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(v)
        })
        .await
    }

    /// When a poll last read one of the page's conversations (unix ms; stored in seconds).
    pub async fn page_last_polled(&self, page: &PageId) -> Result<Option<i64>, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::page_last_polled(pg, page));
        let page = page.to_string();
        db.call(move |c| {
            Ok(c.prepare_cached(
                "SELECT MAX(polled_at) * 1000 FROM conversation_watermarks WHERE page_id = ?1",
            )?
            .query_row([page], |r| r.get(0))?)
        })
        .await
    }

    pub async fn merchant_exists(&self, merchant: Uuid) -> Result<bool, StoreError> {
        let db = sqlite_or!(&self.backend, pg => postgres::merchant_exists(pg, merchant));
        db.call(move |c| {
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

    /// Re-encrypts every stored token with `new` in one transaction; returns how many values
    /// were re-encrypted. Fails without changing anything if any value does not decrypt.
    pub async fn rotate_key(&self, new: TokenCipher) -> Result<usize, StoreError> {
        let old = self.cipher.clone();
        let db = sqlite_or!(&self.backend, pg => postgres::rotate_key(pg, &old, &new));
        db.call(move |c| {
            let tx = c.transaction()?;
            let mut n = 0;
            for (table, key, col, prefix) in TOKEN_COLUMNS {
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

    /// Runs `f` while no other caller refreshes `shop`'s token — on PostgreSQL across every
    /// instance of the service (a session advisory lock on a connection of its own, released
    /// when `f` ends, whatever it returns, or when the call is dropped). On SQLite only one
    /// process runs, and the in-process single-flight of the caller is all it takes: `f` just
    /// runs. The error is the lock's only; `f`'s own outcome is its `T`.
    pub async fn with_shop_refresh_lock<F, Fut, T>(
        &self,
        shop: &ShopDomain,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        match &self.backend {
            Backend::Sqlite(_) => Ok(f().await),
            Backend::Postgres(pg) => postgres::with_shop_refresh_lock(pg, shop, f).await,
        }
    }
}

/// Every encrypted column: (table, key column, token column, associated-data prefix). The
/// prefixes are those of `shop_aad`, `shop_refresh_aad` and `page_aad`.
const TOKEN_COLUMNS: [(&str, &str, &str, &str); 3] = [
    ("shops", "domain", "access_token", "shop"),
    ("shops", "domain", "refresh_token", "shop-refresh"),
    ("pages", "page_id", "access_token", "page"),
];

async fn summaries_of(
    db: &Db,
    sql: &'static str,
    merchant: Option<Uuid>,
) -> Result<Vec<AccountSummary>, StoreError> {
    db.call(move |c| {
        let mut st = c.prepare_cached(sql)?;
        let params: Vec<String> = merchant.iter().map(Uuid::to_string).collect();
        let v = st
            .query_map(rusqlite::params_from_iter(params), |r| {
                Ok(AccountSummary {
                    id: r.get(0)?,
                    merchant: parse_uuid(r.get(1)?)?,
                    status: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    })
    .await
}

#[cfg(test)]
mod tests;
