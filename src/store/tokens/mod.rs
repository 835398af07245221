//! Merchants, shops, Facebook users and pages, and the per-conversation poll watermarks. Every
//! token is encrypted with the row's key as associated data (`Aad`), so a ciphertext moved to
//! another row does not decrypt.
//!
//! `TokenStore` holds what is the same on both backends: encryption, parsing stored values
//! into records, the decisions (which merchant a grant joins, whether a page may move), the
//! key rotation loop and the clock. `TokenDb` is the seam, implemented once per backend
//! (`sqlite`, `postgres`) over the shared SQL (`sql`); its methods take and return rows with
//! tokens still encrypted. Each area (`shops`, `facebook`, `deletions`, `watermarks`) holds its
//! records, its store methods and its part of the seam.

mod deletions;
mod facebook;
mod postgres;
mod shops;
mod sql;
mod sqlite;
mod watermarks;

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{postgres::PgDb, text_enum, Backend, Db, StoreError};
use crate::crypto::TokenCipher;
use crate::ids::MerchantId;
use crate::ids::{PageId, ShopDomain};

pub use deletions::{DeletionRecorded, DeletionStatus};
pub use facebook::{PageMove, SavedPage};
pub use watermarks::Watermark;

#[derive(Clone)]
pub struct TokenStore {
    db: Arc<dyn TokenDb>,
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
    pub merchant: MerchantId,
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
    pub merchant: MerchantId,
    pub name: Option<String>,
    pub access_token: SecretString,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
}

/// Who connected a merchant's Facebook pages. Their user token is not kept: only the page
/// tokens do later work, and data deletion needs only the user id.
pub struct FacebookUserRecord {
    pub merchant: MerchantId,
    pub fb_user_id: Option<String>,
    pub status: AccountStatus,
}

/// A short status line per shop/page for `/` and the logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountSummary {
    pub id: String,
    pub merchant: MerchantId,
    pub status: AccountStatus,
    pub reason: Option<String>,
}

/// The associated data a token is sealed under: the row it belongs to. These bytes are part
/// of every stored ciphertext; changing them makes every stored token undecryptable.
#[derive(Debug, Clone, Copy)]
enum Aad<'a> {
    /// A shop's access token: `shop:<domain>`.
    Shop(&'a str),
    /// A shop's refresh token: `shop-refresh:<domain>`.
    ShopRefresh(&'a str),
    /// A page's access token: `page:<page id>`.
    Page(&'a str),
}

impl Aad<'_> {
    fn bytes(self) -> Vec<u8> {
        match self {
            Aad::Shop(domain) => format!("shop:{domain}"),
            Aad::ShopRefresh(domain) => format!("shop-refresh:{domain}"),
            Aad::Page(page) => format!("page:{page}"),
        }
        .into_bytes()
    }
}

/// Every encrypted column, for the key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenColumn {
    ShopAccess,
    ShopRefresh,
    PageAccess,
}

impl TokenColumn {
    const ALL: [TokenColumn; 3] = [
        TokenColumn::ShopAccess,
        TokenColumn::ShopRefresh,
        TokenColumn::PageAccess,
    ];

    /// The associated data of this column's value in the row keyed `id`.
    fn aad(self, id: &str) -> Aad<'_> {
        match self {
            TokenColumn::ShopAccess => Aad::Shop(id),
            TokenColumn::ShopRefresh => Aad::ShopRefresh(id),
            TokenColumn::PageAccess => Aad::Page(id),
        }
    }
}

/// A stored token: its column, its row's key (domain or page id) and its ciphertext.
struct EncryptedToken {
    column: TokenColumn,
    id: String,
    ciphertext: Vec<u8>,
}

/// A token to re-encrypt: written as `new` only if the row still holds `old`.
struct TokenSwap {
    column: TokenColumn,
    id: String,
    old: Vec<u8>,
    new: Vec<u8>,
}

/// A summary line as stored (merchant and status not yet parsed).
struct SummaryRow {
    id: String,
    merchant: String,
    status: String,
    reason: Option<String>,
}

/// Held while a shop's token is refreshed; `release` frees it. Dropped without `release`
/// (the caller's future was cancelled), it must free it too.
#[async_trait]
trait HeldLock: Send {
    async fn release(self: Box<Self>);
}

/// What each backend does for the token store, beside what each area adds (`ShopDb`,
/// `FacebookDb`, `DeletionDb`, `WatermarkDb`). Tokens arrive and leave encrypted.
#[async_trait]
trait TokenDb:
    shops::ShopDb + facebook::FacebookDb + deletions::DeletionDb + watermarks::WatermarkDb
{
    async fn ping(&self) -> Result<(), StoreError>;
    /// Every shop, by domain in byte order.
    async fn shop_summaries(&self) -> Result<Vec<SummaryRow>, StoreError>;
    /// Every page, by id in byte order.
    async fn page_summaries(&self) -> Result<Vec<SummaryRow>, StoreError>;
    async fn merchant_shops(&self, merchant: String) -> Result<Vec<SummaryRow>, StoreError>;
    /// The merchant's pages with their names, by name (NULL first) then id, in byte order.
    async fn merchant_pages(
        &self,
        merchant: String,
    ) -> Result<Vec<(SummaryRow, Option<String>)>, StoreError>;
    async fn merchant_exists(&self, merchant: String) -> Result<bool, StoreError>;
    /// Every stored token (none of the NULL ones).
    async fn encrypted_tokens(&self) -> Result<Vec<EncryptedToken>, StoreError>;
    /// Writes every swap in one transaction, and only if each row still holds its `old` value
    /// and no other token is stored: false (and nothing changed) otherwise.
    async fn replace_tokens(&self, swaps: Vec<TokenSwap>) -> Result<bool, StoreError>;
    /// Waits until no other caller (on PostgreSQL: no other instance) refreshes `domain`.
    async fn lock_shop_refresh(&self, domain: String) -> Result<Box<dyn HeldLock>, StoreError>;
}

/// A stored merchant UUID; one that does not parse is an error, never skipped.
fn merchant_uuid(s: &str) -> Result<MerchantId, StoreError> {
    MerchantId::parse(s)
        .map_err(|e| StoreError::Corrupt(format!("stored merchant UUID is invalid: {e}")))
}

/// Ids read back from a list query. Rows were validated on the way in; anything that no
/// longer parses is skipped (never polled).
fn parsed<T>(rows: Vec<String>, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    rows.iter().filter_map(|r| parse(r)).collect()
}

/// A count or limit as a BIGINT (saturating: a `usize` beyond `i64` means "no limit" here).
fn big(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn summary(row: SummaryRow) -> Result<AccountSummary, StoreError> {
    Ok(AccountSummary {
        id: row.id,
        merchant: merchant_uuid(&row.merchant)?,
        status: row.status.parse()?,
        reason: row.reason,
    })
}

fn summaries(rows: Vec<SummaryRow>) -> Result<Vec<AccountSummary>, StoreError> {
    rows.into_iter().map(summary).collect()
}

impl TokenStore {
    pub fn new(db: Db, cipher: TokenCipher) -> Self {
        TokenStore {
            db: Arc::new(sqlite::SqliteTokens(db.clone())),
            backend: Backend::Sqlite(db),
            cipher,
        }
    }

    /// The store in the shared PostgreSQL database. Tokens are encrypted with the same cipher
    /// and associated data as on SQLite, before they reach SQL.
    pub fn on_postgres(pg: PgDb, cipher: TokenCipher) -> Self {
        TokenStore {
            db: Arc::new(postgres::PgTokens(pg.clone())),
            backend: Backend::Postgres(pg),
            cipher,
        }
    }

    /// The database the store was opened on (for tools and tests that read it directly).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    fn seal(&self, token: &SecretString, aad: Aad) -> Vec<u8> {
        self.cipher.encrypt(token.expose_secret(), &aad.bytes())
    }

    fn open(&self, ciphertext: &[u8], aad: Aad) -> Result<SecretString, StoreError> {
        Ok(self.cipher.decrypt(ciphertext, &aad.bytes())?)
    }

    /// Cheap liveness probe for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await
    }

    pub async fn shop_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        summaries(self.db.shop_summaries().await?)
    }

    pub async fn page_summaries(&self) -> Result<Vec<AccountSummary>, StoreError> {
        summaries(self.db.page_summaries().await?)
    }

    /// One merchant's shops (for their account page).
    pub async fn merchant_shops(
        &self,
        merchant: MerchantId,
    ) -> Result<Vec<AccountSummary>, StoreError> {
        summaries(self.db.merchant_shops(merchant.to_string()).await?)
    }

    /// One merchant's pages, with their names.
    pub async fn merchant_pages(
        &self,
        merchant: MerchantId,
    ) -> Result<Vec<(AccountSummary, Option<String>)>, StoreError> {
        self.db
            .merchant_pages(merchant.to_string())
            .await?
            .into_iter()
            .map(|(row, name)| Ok((summary(row)?, name)))
            .collect()
    }

    pub async fn merchant_exists(&self, merchant: MerchantId) -> Result<bool, StoreError> {
        self.db.merchant_exists(merchant.to_string()).await
    }

    /// Re-encrypts every stored token with `new` in one transaction; returns how many values
    /// were re-encrypted. Fails without changing anything if any value does not decrypt, or if
    /// a token was written meanwhile (the command runs with no instance serving, so that only
    /// happens when one started anyway).
    pub async fn rotate_key(&self, new: TokenCipher) -> Result<usize, StoreError> {
        let mut swaps = Vec::new();
        for token in self.db.encrypted_tokens().await? {
            let aad = token.column.aad(&token.id);
            let plain = self.open(&token.ciphertext, aad)?;
            let fresh = new.encrypt(plain.expose_secret(), &aad.bytes());
            swaps.push(TokenSwap {
                column: token.column,
                id: token.id,
                old: token.ciphertext,
                new: fresh,
            });
        }
        let n = swaps.len();
        if !self.db.replace_tokens(swaps).await? {
            return Err(StoreError::Corrupt(
                "tokens changed while the key was rotated; nothing was re-encrypted (run it again)"
                    .into(),
            ));
        }
        Ok(n)
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
        let lock = self.db.lock_shop_refresh(shop.as_str().to_string()).await?;
        let out = f().await;
        lock.release().await;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
