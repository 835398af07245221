//! Shopify webhook topics: the ones registered (content and lifecycle) and the compliance ones
//! set in the app's configuration. Parsed once at intake; work is decided on the enum.

use serde::{Deserialize, Serialize};

/// A topic as Shopify names it in `X-Shopify-Topic` (REST form, e.g. `products/update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    #[serde(rename = "products/create")]
    ProductsCreate,
    #[serde(rename = "products/update")]
    ProductsUpdate,
    #[serde(rename = "products/delete")]
    ProductsDelete,
    #[serde(rename = "inventory_levels/update")]
    InventoryLevelsUpdate,
    #[serde(rename = "collections/create")]
    CollectionsCreate,
    #[serde(rename = "collections/update")]
    CollectionsUpdate,
    #[serde(rename = "collections/delete")]
    CollectionsDelete,
    #[serde(rename = "discounts/create")]
    DiscountsCreate,
    #[serde(rename = "discounts/update")]
    DiscountsUpdate,
    #[serde(rename = "discounts/delete")]
    DiscountsDelete,
    #[serde(rename = "app/uninstalled")]
    AppUninstalled,
    #[serde(rename = "shop/redact")]
    ShopRedact,
    #[serde(rename = "customers/redact")]
    CustomersRedact,
    #[serde(rename = "customers/data_request")]
    CustomersDataRequest,
}

impl Topic {
    pub const ALL: &'static [Topic] = &[
        Topic::ProductsCreate,
        Topic::ProductsUpdate,
        Topic::ProductsDelete,
        Topic::InventoryLevelsUpdate,
        Topic::CollectionsCreate,
        Topic::CollectionsUpdate,
        Topic::CollectionsDelete,
        Topic::DiscountsCreate,
        Topic::DiscountsUpdate,
        Topic::DiscountsDelete,
        Topic::AppUninstalled,
        Topic::ShopRedact,
        Topic::CustomersRedact,
        Topic::CustomersDataRequest,
    ];

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::ProductsCreate => "products/create",
            Topic::ProductsUpdate => "products/update",
            Topic::ProductsDelete => "products/delete",
            Topic::InventoryLevelsUpdate => "inventory_levels/update",
            Topic::CollectionsCreate => "collections/create",
            Topic::CollectionsUpdate => "collections/update",
            Topic::CollectionsDelete => "collections/delete",
            Topic::DiscountsCreate => "discounts/create",
            Topic::DiscountsUpdate => "discounts/update",
            Topic::DiscountsDelete => "discounts/delete",
            Topic::AppUninstalled => "app/uninstalled",
            Topic::ShopRedact => "shop/redact",
            Topic::CustomersRedact => "customers/redact",
            Topic::CustomersDataRequest => "customers/data_request",
        }
    }

    /// A change to the catalogue: re-fetched, debounced.
    pub fn is_content(self) -> bool {
        !matches!(
            self,
            Topic::AppUninstalled
                | Topic::ShopRedact
                | Topic::CustomersRedact
                | Topic::CustomersDataRequest
        )
    }

    /// Mandatory compliance topics (set in the app configuration, not registered by API).
    pub fn is_compliance(self) -> bool {
        matches!(
            self,
            Topic::ShopRedact | Topic::CustomersRedact | Topic::CustomersDataRequest
        )
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_in_rest_form() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.as_str()), Some(*t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.as_str().into())
            );
        }
        assert_eq!(Topic::parse("orders/create"), None);
    }
}
