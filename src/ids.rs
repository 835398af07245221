//! Validated identifiers: the only forms in which a shop, a page, a customer, a Facebook user or
//! a merchant travels through the service. Each is its own type, so a page id cannot be passed
//! where a customer's id is expected, and each validates when it is parsed or deserialised, so
//! a queued job whose payload holds a bad id fails to decode instead of running. Object keys
//! (`objects::keys`) and queue groups (`jobs`) are built only from these.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("invalid shop domain {0:?}: expected <name>.myshopify.com (letters, digits, hyphens)")]
    Shop(String),
    #[error("invalid Graph ID {0:?}: expected digits only")]
    Graph(String),
    #[error("invalid merchant id {0:?}: expected a UUID")]
    Merchant(String),
}

const MYSHOPIFY: &str = ".myshopify.com";

/// A validated `<name>.myshopify.com` domain, lower-case.
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

/// Whether `s` has the form of a Graph ID: 1 to 32 ASCII digits.
fn is_graph_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Declares a Graph ID type (digits only): the same rules, a type of its own.
macro_rules! graph_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<$name, InvalidId> {
                if is_graph_id(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(InvalidId::Graph(s.to_string()))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                if is_graph_id(&s) {
                    Ok($name(s))
                } else {
                    Err(InvalidId::Graph(s))
                }
            }
        }

        impl From<$name> for String {
            fn from(s: $name) -> String {
                s.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

graph_id!(
    /// A Facebook Page's id.
    PageId
);
graph_id!(
    /// A customer's page-scoped id (PSID): who a conversation is with.
    Psid
);
graph_id!(
    /// A Facebook user's app-scoped id (who connected pages; whose data Meta asks to delete).
    FacebookUserId
);
graph_id!(
    /// Any other Graph ID (the test-only job kind's ids).
    GraphId
);

/// A merchant: the UUID v4 under which every object of theirs is stored (`users/<uuid>/`).
/// Serialised and stored as the hyphenated UUID text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct MerchantId(Uuid);

impl MerchantId {
    /// A new merchant's id (random).
    pub fn random() -> MerchantId {
        MerchantId(Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Result<MerchantId, InvalidId> {
        Uuid::parse_str(s)
            .map(MerchantId)
            .map_err(|_| InvalidId::Merchant(s.chars().take(64).collect()))
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<Uuid> for MerchantId {
    fn from(u: Uuid) -> MerchantId {
        MerchantId(u)
    }
}

impl FromStr for MerchantId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<MerchantId, InvalidId> {
        MerchantId::parse(s)
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
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
        assert!(PageId::parse("1234567890").is_ok());
        for bad in [
            "",
            "../../x",
            "12a",
            "1/2",
            "-1",
            "1 2",
            "١٢",
            &"1".repeat(33),
        ] {
            assert!(PageId::parse(bad).is_err(), "{bad:?} accepted");
            assert!(Psid::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Deserialising validates too.
        assert!(serde_json::from_str::<Psid>(r#""12a""#).is_err());
        assert_eq!(
            serde_json::from_str::<Psid>(r#""12""#).unwrap().as_str(),
            "12"
        );
    }

    #[test]
    fn merchant_ids_are_uuid_text() {
        let m = MerchantId::parse("0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d").unwrap();
        assert_eq!(m.to_string(), "0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#""0b7e7a1e-33c4-4b7c-9b7e-1e2f3a4b5c6d""#
        );
        assert!(MerchantId::parse("../x").is_err());
        assert_ne!(MerchantId::random(), MerchantId::random());
    }
}

/// A UTC calendar month (`yyyy-mm`): where a conversation's entries older than its window
/// are kept (`conversations/<psid>/<yyyy-mm>.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// The UTC month of a Unix time in milliseconds (before 1970 or unreadable: 1970-01).
    pub fn of_millis(ms: i64) -> Month {
        use chrono::Datelike;
        let t = chrono::DateTime::from_timestamp_millis(ms.max(0)).unwrap_or_default();
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    /// `yyyy-mm` with a four-digit year and a month 01–12.
    pub fn parse(s: &str) -> Option<Month> {
        let (y, m) = s.split_once('-')?;
        let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return None;
        }
        let month: u32 = m.parse().ok()?;
        let year: i32 = y.parse().ok()?;
        (1..=12).contains(&month).then_some(Month { year, month })
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}
