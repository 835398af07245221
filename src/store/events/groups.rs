//! Queries over queue groups: what runs in a page's groups, and purging them (data deletion).

use std::collections::HashSet;

use super::{EventId, EventStore};
use crate::store::StoreError;

/// Whether a prefix can select groups: it is matched as a byte range whose upper bound is the
/// prefix with its last byte raised by one (`sql::in_groups`), which needs a last byte that
/// stays within ASCII. An empty prefix, or one ending past ASCII, selects nothing.
fn usable_prefix(p: &str) -> bool {
    matches!(p.as_bytes().last(), Some(b) if *b < 0x7f)
}

fn usable(prefixes: Vec<String>) -> Vec<String> {
    prefixes.into_iter().filter(|p| usable_prefix(p)).collect()
}

impl EventStore {
    /// Groups with a pending or running event of one of `kinds`.
    pub async fn open_groups(
        &self,
        kinds: Vec<&'static str>,
    ) -> Result<HashSet<String>, StoreError> {
        if kinds.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(self.db.open_groups(kinds).await?.into_iter().collect())
    }

    /// Events of `kind` running now.
    pub async fn running_of_kind(&self, kind: &'static str) -> Result<i64, StoreError> {
        self.db.running_of_kind(kind).await
    }

    /// Events running now in the given groups (exact keys or key prefixes).
    pub async fn running_in_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<i64, StoreError> {
        self.db.running_in_groups(exact, usable(prefixes)).await
    }

    /// Deletes every event of the given groups that is not running (their payloads may hold a
    /// person's messages); returns how many.
    pub async fn purge_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError> {
        self.db.purge_groups(exact, usable(prefixes)).await
    }

    /// Payloads of unfinished (pending, failed, dead) events of `kind`.
    pub async fn unfinished_payloads(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(EventId, Vec<u8>)>, StoreError> {
        self.db.unfinished_payloads(kind).await
    }

    /// Replaces the payload of an event that is not running (`None` deletes the event).
    pub async fn rewrite_payload(
        &self,
        id: EventId,
        payload: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        match payload {
            Some(p) => self.db.set_payload(id, p).await,
            None => self.db.delete_event(id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_prefixes_a_byte_range_can_express_are_used() {
        assert!(usable_prefix("fbconv:12:"));
        assert!(usable_prefix("x~"));
        assert!(!usable_prefix(""));
        assert!(!usable_prefix("x\u{7f}"));
        assert!(!usable_prefix("fbconv:1:\u{e9}"));
    }
}
