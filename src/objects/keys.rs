//! The object layout (SPEC §3) and the only place object keys are built.
//!
//! Keys are made from validated identifiers only: a `ShopDomain` is a `*.myshopify.com`
//! domain, a `GraphId` is digits only, a merchant is a UUID. An `ObjectKey` cannot be built from
//! a raw string outside this module, so no route can write outside a merchant's prefix.

use std::fmt;

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("invalid shop domain {0:?}: expected <name>.myshopify.com (letters, digits, hyphens)")]
    Shop(String),
    #[error("invalid Graph ID {0:?}: expected digits only")]
    Graph(String),
}

const MYSHOPIFY: &str = ".myshopify.com";

/// A validated `<name>.myshopify.com` domain, lower-case. Deserialising validates too, so a
/// queued job whose payload holds a bad domain fails to decode instead of running.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ShopDomain(String);

impl TryFrom<String> for ShopDomain {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        ShopDomain::parse(&s)
    }
}

impl From<ShopDomain> for String {
    fn from(s: ShopDomain) -> String {
        s.0
    }
}

impl ShopDomain {
    /// Strict: exactly Shopify's shop-domain rule, `[a-z0-9][a-z0-9-]*\.myshopify\.com`.
    pub fn parse(s: &str) -> Result<ShopDomain, InvalidId> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower
            .strip_suffix(MYSHOPIFY)
            .ok_or_else(|| InvalidId::Shop(s.to_string()))?;
        let ok = !name.is_empty()
            && name.len() <= 60
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(ShopDomain(lower))
        } else {
            Err(InvalidId::Shop(s.to_string()))
        }
    }

    /// Lenient form for the login route: a bare store name gets `.myshopify.com` appended
    /// (`acme` → `acme.myshopify.com`); everything else must pass `parse`.
    pub fn normalize(s: &str) -> Result<ShopDomain, InvalidId> {
        let t = s.trim();
        if !t.contains('.') {
            ShopDomain::parse(&format!("{t}{MYSHOPIFY}"))
        } else {
            ShopDomain::parse(t)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShopDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Facebook Graph ID (page id, PSID): digits only. Deserialising validates too.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct GraphId(String);

impl TryFrom<String> for GraphId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        GraphId::parse(&s)
    }
}

impl From<GraphId> for String {
    fn from(s: GraphId) -> String {
        s.0
    }
}

pub type PageId = GraphId;
pub type Psid = GraphId;

impl GraphId {
    pub fn parse(s: &str) -> Result<GraphId, InvalidId> {
        if !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(GraphId(s.to_string()))
        } else {
            Err(InvalidId::Graph(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GraphId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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

pub fn merchant_prefix(merchant: &Uuid) -> ObjectKey {
    ObjectKey(format!("users/{}/", merchant.hyphenated()))
}

pub fn shop_prefix(merchant: &Uuid, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("users/{}/shopify/{}/", merchant.hyphenated(), shop))
}

pub fn shop_metadata(merchant: &Uuid, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("{}shop_metadata.json", shop_prefix(merchant, shop)))
}

pub fn shop_products(merchant: &Uuid, shop: &ShopDomain) -> ObjectKey {
    ObjectKey(format!("{}shop_products.json", shop_prefix(merchant, shop)))
}

pub fn page_prefix(merchant: &Uuid, page: &PageId) -> ObjectKey {
    ObjectKey(format!(
        "users/{}/facebook/{}/",
        merchant.hyphenated(),
        page
    ))
}

pub fn page_metadata(merchant: &Uuid, page: &PageId) -> ObjectKey {
    ObjectKey(format!("{}page_metadata.json", page_prefix(merchant, page)))
}

pub fn conversation(merchant: &Uuid, page: &PageId, psid: &Psid) -> ObjectKey {
    ObjectKey(format!(
        "{}conversations/{}.json",
        page_prefix(merchant, page),
        psid
    ))
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
    fn shop_domains() {
        assert_eq!(
            ShopDomain::normalize("acme").unwrap().as_str(),
            "acme.myshopify.com"
        );
        assert_eq!(
            ShopDomain::normalize("ACME-2.myshopify.com")
                .unwrap()
                .as_str(),
            "acme-2.myshopify.com"
        );
        for bad in [
            "evil.com",
            "a.myshopify.com.evil.com",
            "../x",
            "",
            ".myshopify.com",
            "-a.myshopify.com",
            "a_b.myshopify.com",
            "a/b.myshopify.com",
            "a.b.myshopify.com",
            "acme.myshopify.com/",
            "acme.myshopify.com:8080",
            "user@acme.myshopify.com",
        ] {
            assert!(ShopDomain::normalize(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn graph_ids() {
        assert!(GraphId::parse("1234567890").is_ok());
        for bad in ["", "../../x", "12a", "1/2", "-1", "1 2", "١٢"] {
            assert!(GraphId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn layout() {
        let m = Uuid::parse_str("0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d").unwrap();
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let page = GraphId::parse("111").unwrap();
        let psid = GraphId::parse("222").unwrap();
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
        let m = Uuid::new_v4();
        let p = page_prefix(&m, &GraphId::parse("1").unwrap());
        assert!(ObjectKey::from_listing(&p, &format!("{p}conversations/2.json")).is_some());
        assert!(ObjectKey::from_listing(&p, &format!("{p}../x")).is_none());
        assert!(ObjectKey::from_listing(&p, "users/other/x").is_none());
        assert!(backup("tokens", "../x").is_none());
        assert!(backup("tokens", "tokens-20260101T000000Z.db").is_some());
    }
}
