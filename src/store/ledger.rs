//! The deletion ledger: every shop, page and Facebook user whose data was deleted (Shopify's
//! `shop/redact`, a merchant's disconnect, Meta's data deletion), one JSON line each, appended
//! before the deletion starts.
//!
//! The records that say what was deleted live in `tokens.db`, and a backup of it from before a
//! deletion still holds the shop or page with its token: restored, it would start syncing data
//! its owner had deleted. So the ledger is a file of its own that backups do not copy and
//! `restore` does not replace; after a restore, every entry is applied again to the restored
//! records (`backup::restore`). It is never rewritten, only appended to: each line is one
//! `write` to a file opened for appending (whole, or torn only at a crash, and a torn last
//! line is skipped when read).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{now_secs, StoreError};
use crate::ids::{FacebookUserId, MerchantId, PageId, ShopDomain};

/// What was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Deleted {
    Shop {
        shop: ShopDomain,
        merchant: MerchantId,
    },
    Page {
        page: PageId,
        merchant: MerchantId,
    },
    /// Every page the user granted, and their record for each merchant.
    FacebookUser {
        user: FacebookUserId,
    },
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unix seconds: a record written later (a reinstall, a reconnect) is not this deletion's.
    pub at: i64,
    #[serde(flatten)]
    pub what: Deleted,
}

/// The ledger file (see the module docs).
#[derive(Clone)]
pub struct DeletionLedger {
    path: PathBuf,
}

impl DeletionLedger {
    pub fn at(path: PathBuf) -> DeletionLedger {
        DeletionLedger { path }
    }

    /// Where the ledger of the tokens database at `tokens_db` is: beside it.
    pub fn beside(tokens_db: &Path) -> DeletionLedger {
        DeletionLedger::at(tokens_db.with_file_name("deletions.jsonl"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `what` (synced to disk before it returns).
    pub async fn record(&self, what: Deleted) -> Result<(), StoreError> {
        let line = serde_json::to_string(&Entry {
            at: now_secs(),
            what,
        })
        .map_err(|e| StoreError::Corrupt(format!("deletion ledger entry: {e}")))?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append(&path, &line))
            .await
            .map_err(|e| StoreError::Corrupt(format!("deletion ledger task: {e}")))?
    }

    /// Every entry, oldest first (none when there is no ledger yet).
    pub fn read(&self) -> Result<Vec<Entry>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path, e)),
        };
        let mut entries = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str(line) {
                Ok(e) => entries.push(e),
                // A line torn by a crash while it was written: that deletion had not begun.
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), line = n + 1, error = %e, "skipping an unreadable deletion ledger line")
                }
            }
        }
        Ok(entries)
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("deletion ledger {}: {e}", path.display()))
}

fn append(path: &Path, line: &str) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(path, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    // After a torn last line, this entry starts a line of its own.
    let start = if ends_mid_line(&mut f).map_err(|e| io(path, e))? {
        "\n"
    } else {
        ""
    };
    f.write_all(format!("{start}{line}\n").as_bytes())
        .map_err(|e| io(path, e))?;
    f.sync_data().map_err(|e| io(path, e))
}

fn ends_mid_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_appended_and_read_back_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = DeletionLedger::beside(&dir.path().join("data/tokens.db"));
        assert_eq!(ledger.read().unwrap(), vec![]);
        let merchant = MerchantId::random();
        let shop = Deleted::Shop {
            shop: ShopDomain::parse("acme.myshopify.com").unwrap(),
            merchant,
        };
        let user = Deleted::FacebookUser {
            user: FacebookUserId::parse("1234567").unwrap(),
        };
        ledger.record(shop.clone()).await.unwrap();
        ledger.record(user.clone()).await.unwrap();
        // A crash in the middle of a third line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap();
        f.write_all(br#"{"at":1,"kind":"pa"#).unwrap();
        let read: Vec<Deleted> = ledger.read().unwrap().into_iter().map(|e| e.what).collect();
        assert_eq!(read, vec![shop.clone(), user.clone()]);
        // The next entry is not glued to the torn line.
        ledger.record(shop.clone()).await.unwrap();
        let read: Vec<Deleted> = ledger.read().unwrap().into_iter().map(|e| e.what).collect();
        assert_eq!(read, vec![shop.clone(), user, shop]);
        let text = std::fs::read_to_string(ledger.path()).unwrap();
        assert!(
            text.starts_with(r#"{"at":"#) && text.contains(r#""kind":"shop""#),
            "{text}"
        );
    }
}
