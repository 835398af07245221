//! The object layout (SPEC §3) and the only place object keys are built.
//!
//! Keys are made from validated identifiers only (`crate::ids`): a `ShopDomain` is a
//! `*.myshopify.com` domain, page and customer ids are digits only, a merchant is a UUID. An `ObjectKey` cannot be built from
//! a raw string outside this module, so no route can write outside a merchant's prefix.

use std::fmt;

#[cfg(feature = "testkit")]
use crate::ids::GraphId;
use crate::ids::{MerchantId, Month, PageId, Psid, ShopDomain};

/// A key built by this module. Prefix keys end in `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Re-validates a key read back from a listing (e.g. when deleting a prefix): it must lie
    /// under `prefix` and contain no empty, `.` or `..` segment.
    pub fn from_listing(prefix: &ObjectKey, key: &str) -> Option<ObjectKey> {
        let rest = key.strip_prefix(prefix.as_str())?;
        let ok = !rest.is_empty()
            && rest
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        ok.then(|| ObjectKey(key.to_string()))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The prefix under which every merchant's prefix lies.
pub fn users_prefix() -> ObjectKey {
    ObjectKey("users/".to_string())
}

/// The merchant named by a listed "folder" under `users/` (`users/<uuid>/`); `None` for
/// anything else, so only a valid UUID ever becomes part of a key again.
pub fn merchant_of_listing(folder: &str) -> Option<MerchantId> {
    let id = folder.strip_prefix("users/")?.strip_suffix('/')?;
    MerchantId::parse(id).ok()
}

pub fn merchant_prefix(merchant: &MerchantId) -> ObjectKey {
    ObjectKey(format!("users/{}/", merchant))
}

pub fn shop_prefix(merchant: &MerchantId, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("users/{}/shopify/{}/", merchant, shop))
}

pub fn shop_metadata(merchant: &MerchantId, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("{}shop_metadata.json", shop_prefix(merchant, shop)))
}

pub fn shop_products(merchant: &MerchantId, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("{}shop_products.json", shop_prefix(merchant, shop)))
}

pub fn page_prefix(merchant: &MerchantId, page: &PageId) -> ObjectKey {
    ObjectKey(format!("users/{}/facebook/{}/", merchant, page))
}

pub fn page_metadata(merchant: &MerchantId, page: &PageId) -> ObjectKey {
    ObjectKey(format!("{}page_metadata.json", page_prefix(merchant, page)))
}

pub fn conversation(merchant: &MerchantId, page: &PageId, psid: &Psid) -> ObjectKey {
    ObjectKey(format!(
        "{}conversations/{}.json",
        page_prefix(merchant, page),
        psid
    ))
}

/// The folder of a conversation's month objects (entries older than its window).
pub fn conversation_months(merchant: &MerchantId, page: &PageId, psid: &Psid) -> ObjectKey {
    ObjectKey(format!(
        "{}conversations/{}/",
        page_prefix(merchant, page),
        psid
    ))
}

/// One month of a conversation's older entries: `conversations/<psid>/<yyyy-mm>.json`.
pub fn conversation_month(
    merchant: &MerchantId,
    page: &PageId,
    psid: &Psid,
    month: &Month,
) -> ObjectKey {
    ObjectKey(format!(
        "{}{month}.json",
        conversation_months(merchant, page, psid)
    ))
}

/// The month a listed key under `conversation_months` names, if it is one.
pub fn month_of_listing(folder: &ObjectKey, key: &ObjectKey) -> Option<Month> {
    let name = key.as_str().strip_prefix(folder.as_str())?;
    Month::parse(name.strip_suffix(".json")?)
}

/// Prefix of every database backup in the object store.
pub fn backups_prefix() -> ObjectKey {
    ObjectKey("backups/".to_string())
}

/// Database backups: `backups/<set>/<file>`; both parts are built by the backup module (a
/// timestamp and a file name) and must be plain names.
pub fn backup(set: &str, file: &str) -> Option<ObjectKey> {
    let db = set;
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (plain(db) && plain(file)).then(|| ObjectKey(format!("backups/{db}/{file}")))
}

/// Keys written by the built-in self-test kind (feature `testkit` only).
#[cfg(feature = "testkit")]
pub fn testkit(name: &GraphId) -> ObjectKey {
    ObjectKey(format!("_testkit/{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_folders_name_merchants() {
        let id = "0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d";
        assert_eq!(
            merchant_of_listing(&format!("users/{id}/")).map(|m| m.to_string()),
            Some(id.to_string())
        );
        for bad in [
            "users/../",
            "users/x/",
            &format!("users/{id}"),
            &format!("backups/{id}/"),
            &format!("users/{id}/shopify/"),
        ] {
            assert!(merchant_of_listing(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn layout() {
        let m = MerchantId::parse("0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d").unwrap();
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let page = PageId::parse("111").unwrap();
        let psid = Psid::parse("222").unwrap();
        assert_eq!(
            shop_products(&m, &shop).as_str(),
            "users/0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d/shopify/acme.myshopify.com/shop_products.json"
        );
        assert_eq!(
            shop_metadata(&m, &shop).as_str(),
            "users/0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d/shopify/acme.myshopify.com/shop_metadata.json"
        );
        assert_eq!(
            page_metadata(&m, &page).as_str(),
            "users/0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d/facebook/111/page_metadata.json"
        );
        assert_eq!(
            conversation(&m, &page, &psid).as_str(),
            "users/0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d/facebook/111/conversations/222.json"
        );
    }

    #[test]
    fn listing_keys_stay_under_their_prefix() {
        let m = MerchantId::random();
        let p = page_prefix(&m, &PageId::parse("1").unwrap());
        assert!(ObjectKey::from_listing(&p, &format!("{p}conversations/2.json")).is_some());
        assert!(ObjectKey::from_listing(&p, &format!("{p}../x")).is_none());
        assert!(ObjectKey::from_listing(&p, "users/other/x").is_none());
        assert!(backup("tokens", "../x").is_none());
        assert!(backup("tokens", "tokens-20260101T000000Z.db").is_some());
    }
}
