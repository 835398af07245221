//! What the signed bodies of the lifecycle and compliance topics must look like.
//!
//! Shopify signs the body of a webhook but not its headers: a captured, correctly signed
//! `customers/redact` body re-sent with `X-Shopify-Topic: shop/redact` passes the signature
//! check. So the topics that delete or revoke are acted on only when their body has the shape
//! Shopify documents for *that* topic, names the header's shop, and carries the shop's id as
//! recorded at connect (checked by the intake).
//!
//! Documented shapes (<https://shopify.dev/docs/apps/build/privacy-law-compliance>, and the
//! Shop resource for `app/uninstalled`):
//! - `shop/redact`: `shop_id`, `shop_domain`; nothing about a customer;
//! - `customers/redact`: `shop_id`, `shop_domain`, `customer`, `orders_to_redact`;
//! - `customers/data_request`: `shop_id`, `shop_domain`, `customer`, `orders_requested`,
//!   `data_request`;
//! - `app/uninstalled`: the shop object (`id`, `myshopify_domain`, …); no compliance fields.

use serde_json::Value;

use super::topics::Topic;

/// Who a lifecycle or compliance body says it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The shop's myshopify domain, lower case.
    pub domain: String,
    /// Shopify's numeric id of the shop.
    pub shop_id: i64,
}

/// Why a body was refused: `reason` labels the rejection metric, `message` is the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

fn refused(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

/// Fields only compliance bodies carry.
const CUSTOMER_FIELDS: &[&str] = &[
    "customer",
    "orders_to_redact",
    "orders_requested",
    "data_request",
];

/// Whether the topic's body must be checked (its processing deletes or revokes something, or
/// answers for the merchant's customers).
pub fn is_checked(topic: Topic) -> bool {
    matches!(
        topic,
        Topic::AppUninstalled
            | Topic::ShopRedact
            | Topic::CustomersRedact
            | Topic::CustomersDataRequest
    )
}

/// An integer id, as a JSON number or a decimal string.
fn id_field(v: &Value, field: &str) -> Option<i64> {
    match v.get(field)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

fn domain_field(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// Checks a checked topic's body against its documented shape.
pub fn check(topic: Topic, body: &[u8]) -> Result<Claimed, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| refused("invalid_body", format!("{topic} body is not JSON")))?;
    if !v.is_object() {
        return Err(refused(
            "invalid_body",
            format!("{topic} body is not a JSON object"),
        ));
    }
    let has = |f: &str| v.get(f).is_some_and(|x| !x.is_null());
    let wrong_shape = || {
        refused(
            "wrong_shape",
            format!("{topic} body does not have the shape Shopify sends for {topic}"),
        )
    };
    let (id, domain) = match topic {
        Topic::AppUninstalled => {
            // The Shop resource; a compliance body relabelled as an uninstall has none of it.
            if has("shop_id") || CUSTOMER_FIELDS.iter().any(|f| has(f)) {
                return Err(wrong_shape());
            }
            (id_field(&v, "id"), domain_field(&v, "myshopify_domain"))
        }
        Topic::ShopRedact => {
            if CUSTOMER_FIELDS.iter().any(|f| has(f)) {
                return Err(wrong_shape());
            }
            (id_field(&v, "shop_id"), domain_field(&v, "shop_domain"))
        }
        Topic::CustomersRedact => {
            if !v.get("customer").is_some_and(Value::is_object) || has("data_request") {
                return Err(wrong_shape());
            }
            (id_field(&v, "shop_id"), domain_field(&v, "shop_domain"))
        }
        Topic::CustomersDataRequest => {
            if !v.get("customer").is_some_and(Value::is_object)
                || !v.get("data_request").is_some_and(Value::is_object)
            {
                return Err(wrong_shape());
            }
            (id_field(&v, "shop_id"), domain_field(&v, "shop_domain"))
        }
        _ => return Err(wrong_shape()),
    };
    match (id, domain) {
        (Some(shop_id), Some(domain)) => Ok(Claimed { domain, shop_id }),
        _ => Err(wrong_shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "acme.myshopify.com";

    fn ok(topic: Topic, body: &str) -> Claimed {
        check(topic, body.as_bytes()).unwrap_or_else(|e| panic!("{topic}: {e:?}"))
    }

    fn refused_reason(topic: Topic, body: &str) -> &'static str {
        check(topic, body.as_bytes()).unwrap_err().reason
    }

    // Bodies as Shopify's documentation shows them.
    const SHOP_REDACT: &str = r#"{"shop_id":954889,"shop_domain":"acme.myshopify.com"}"#;
    const CUSTOMERS_REDACT: &str = r#"{"shop_id":954889,"shop_domain":"acme.myshopify.com","customer":{"id":191167,"email":"john@example.com","phone":"555-625-1199"},"orders_to_redact":[299938,280263,220458]}"#;
    const DATA_REQUEST: &str = r#"{"shop_id":954889,"shop_domain":"acme.myshopify.com","orders_requested":[299938,280263,220458],"customer":{"id":191167,"email":"john@example.com","phone":"555-625-1199"},"data_request":{"id":9999}}"#;
    const UNINSTALLED: &str = r#"{"id":954889,"name":"Acme","email":"owner@example.com","domain":"acme.example","myshopify_domain":"ACME.myshopify.com","plan_name":"basic"}"#;

    #[test]
    fn documented_bodies_pass_with_their_shop() {
        let want = Claimed {
            domain: SHOP.into(),
            shop_id: 954889,
        };
        assert_eq!(ok(Topic::ShopRedact, SHOP_REDACT), want);
        assert_eq!(ok(Topic::CustomersRedact, CUSTOMERS_REDACT), want);
        assert_eq!(ok(Topic::CustomersDataRequest, DATA_REQUEST), want);
        assert_eq!(ok(Topic::AppUninstalled, UNINSTALLED), want);
    }

    #[test]
    fn relabelled_bodies_are_refused() {
        for body in [CUSTOMERS_REDACT, DATA_REQUEST, UNINSTALLED] {
            assert_eq!(refused_reason(Topic::ShopRedact, body), "wrong_shape");
        }
        for body in [CUSTOMERS_REDACT, DATA_REQUEST, SHOP_REDACT] {
            assert_eq!(refused_reason(Topic::AppUninstalled, body), "wrong_shape");
        }
        for body in [SHOP_REDACT, UNINSTALLED, DATA_REQUEST] {
            assert_eq!(refused_reason(Topic::CustomersRedact, body), "wrong_shape");
        }
        for body in [SHOP_REDACT, UNINSTALLED, CUSTOMERS_REDACT] {
            assert_eq!(
                refused_reason(Topic::CustomersDataRequest, body),
                "wrong_shape"
            );
        }
    }

    #[test]
    fn bodies_without_ids_or_not_json_are_refused() {
        assert_eq!(
            refused_reason(Topic::ShopRedact, r#"{"shop_domain":"acme.myshopify.com"}"#),
            "wrong_shape"
        );
        assert_eq!(
            refused_reason(
                Topic::ShopRedact,
                r#"{"shop_id":-4,"shop_domain":"acme.myshopify.com"}"#
            ),
            "wrong_shape"
        );
        assert_eq!(refused_reason(Topic::ShopRedact, "[1]"), "invalid_body");
        assert_eq!(
            refused_reason(Topic::AppUninstalled, "nope"),
            "invalid_body"
        );
        assert_eq!(
            ok(
                Topic::ShopRedact,
                r#"{"shop_id":"954889","shop_domain":"acme.myshopify.com"}"#
            )
            .shop_id,
            954889
        );
    }
}
