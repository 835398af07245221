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
    #[serde(rename = "bulk_operations/finish")]
    BulkOperationsFinish,
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
        Topic::BulkOperationsFinish,
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
            Topic::BulkOperationsFinish => "bulk_operations/finish",
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
                | Topic::BulkOperationsFinish
        )
    }

    /// Mandatory compliance topics (set in the app configuration, not registered by API).
    pub fn is_compliance(self) -> bool {
        matches!(
            self,
            Topic::ShopRedact | Topic::CustomersRedact | Topic::CustomersDataRequest
        )
    }

    /// Which kind of entity a content topic names, and whether it deletes it.
    pub fn entity(self) -> Option<(EntityTopic, bool)> {
        Some(match self {
            Topic::ProductsCreate | Topic::ProductsUpdate => (EntityTopic::Product, false),
            Topic::ProductsDelete => (EntityTopic::Product, true),
            Topic::InventoryLevelsUpdate => (EntityTopic::InventoryItem, false),
            Topic::CollectionsCreate | Topic::CollectionsUpdate => (EntityTopic::Collection, false),
            Topic::CollectionsDelete => (EntityTopic::Collection, true),
            Topic::DiscountsCreate | Topic::DiscountsUpdate => (EntityTopic::Discount, false),
            Topic::DiscountsDelete => (EntityTopic::Discount, true),
            _ => return None,
        })
    }
}

/// What a content topic's body names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityTopic {
    Product,
    InventoryItem,
    Collection,
    Discount,
}

/// The id of the entity a content delivery's body names (Shopify's REST shapes: `id` for
/// products and collections, `inventory_item_id` for inventory levels, the GraphQL
/// `admin_graphql_api_id` of a code discount). `None`: the body names none we keep (an
/// automatic discount) or is not what the topic promises.
pub fn entity_id(kind: EntityTopic, body: &serde_json::Value) -> Option<i64> {
    let number = |v: &serde_json::Value| v.as_i64().or_else(|| v.as_str()?.parse().ok());
    match kind {
        EntityTopic::Product | EntityTopic::Collection => body.get("id").and_then(number),
        EntityTopic::InventoryItem => body.get("inventory_item_id").and_then(number),
        EntityTopic::Discount => body
            .get("admin_graphql_api_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|g| g.strip_prefix("gid://shopify/DiscountCodeNode/"))
            .and_then(|n| n.parse().ok()),
    }
    .filter(|id| *id > 0)
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
