//! Group and dedupe keys of queued jobs, built only here and only from validated ids.
//!
//! A group is the object a job writes (a shop, a page's metadata, one conversation): jobs of
//! one group never run concurrently, whichever process and pool runs them. The key texts are
//! the ones earlier versions stored, so rows queued before an upgrade keep their groups.

use std::fmt;

use crate::ids::{FacebookUserId, GraphId, PageId, Psid, ShopDomain};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey(String);

impl GroupKey {
    /// Everything that touches one shop: deliveries, syncs, polls, redaction.
    pub fn shop(shop: &ShopDomain) -> GroupKey {
        GroupKey(format!("shopify:{shop}"))
    }

    /// A page's metadata object (refreshes and the page part of a poll).
    pub fn page(page: &PageId) -> GroupKey {
        GroupKey(format!("fbpage:{page}"))
    }

    /// One conversation object: merges and its poll.
    pub fn conversation(page: &PageId, psid: &Psid) -> GroupKey {
        GroupKey(format!("fbconv:{page}:{psid}"))
    }

    /// The prefix shared by every conversation group of a page.
    pub fn conversations_of(page: &PageId) -> String {
        format!("fbconv:{page}:")
    }

    /// A raw Meta delivery (it touches nothing until fanned out): spread by its digest.
    pub fn delivery(sha256_hex: &str) -> GroupKey {
        GroupKey(format!(
            "facebook:{}",
            &sha256_hex[..16.min(sha256_hex.len())]
        ))
    }

    /// Work for one Facebook user (their data deletion).
    pub fn facebook_user(user: &FacebookUserId) -> GroupKey {
        GroupKey(format!("fbuser:{user}"))
    }

    /// A merchant's disconnect of one page (beside the page's groups: it waits for them).
    pub fn page_disconnect(page: &PageId) -> GroupKey {
        GroupKey(format!("fbdisconnect:{page}"))
    }

    /// Test-only kinds (feature `testkit`).
    pub fn testkit(id: &GraphId) -> GroupKey {
        GroupKey(format!("testkit:{id}"))
    }

    pub fn testkit_effects() -> GroupKey {
        GroupKey("testkit_effect".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<kind>:<part>:<part>…`: the kind first, so keys of different kinds never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupeKey(String);

impl DedupeKey {
    /// Parts are validated ids, digests, or platform event ids (visible ASCII from a header,
    /// capped in length here so a key stays a key).
    pub fn new(kind: &str, parts: &[&dyn fmt::Display]) -> DedupeKey {
        let mut s = kind.to_string();
        for p in parts {
            s.push(':');
            let part = p.to_string();
            s.extend(part.chars().filter(|c| c.is_ascii_graphic()).take(200));
        }
        DedupeKey(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_stored_shape() {
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let page = PageId::parse("100").unwrap();
        let psid = Psid::parse("5").unwrap();
        assert_eq!(GroupKey::shop(&shop).as_str(), "shopify:acme.myshopify.com");
        assert_eq!(
            GroupKey::conversation(&page, &psid).as_str(),
            "fbconv:100:5"
        );
        assert!(GroupKey::conversation(&page, &psid)
            .as_str()
            .starts_with(&GroupKey::conversations_of(&page)));
        assert_eq!(
            DedupeKey::new("shopify", &[&"event", &"abc 1\n"]).as_str(),
            "shopify:event:abc1"
        );
    }
}
