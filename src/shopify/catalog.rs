//! The shapes of the catalogue objects (SPEC §3), built one entity at a time, and the walks of
//! paginated connections that feed them.
//!
//! `shop_products.json` is `{"products": [...]}` and `shop_metadata.json` is
//! `{"collections": [...], "discounts": [...], "shop": {...}}`, every entry canonical JSON
//! with GraphQL `edges/node` wrappers removed. Each entry is shaped here from the nodes of
//! whichever query fetched it (a page of a full sync, a single-entity query after a webhook, a
//! bulk operation's lines), so every path stores the same bytes for the same data.

use serde_json::{json, Map, Value};

use super::queries as q;
use super::SyncError;
use crate::ids::ShopDomain;
use crate::objects::canonical_json;
use crate::platforms::shopify::api::ShopifyApi;
use crate::platforms::shopify::client::ShopifyError;
use crate::store::catalog::EntityRow;

/// One page of a connection: its nodes and the cursor of the next page, if any.
pub fn page(conn: &Value) -> (Vec<Value>, Option<String>) {
    let nodes = conn
        .get("edges")
        .and_then(Value::as_array)
        .map(|edges| {
            edges
                .iter()
                .filter_map(|e| e.get("node").cloned())
                .collect()
        })
        .unwrap_or_default();
    let next = conn
        .pointer("/pageInfo/hasNextPage")
        .and_then(Value::as_bool)
        .filter(|more| *more)
        .and_then(|_| conn.pointer("/pageInfo/endCursor"))
        .and_then(Value::as_str)
        .map(str::to_string);
    (nodes, next)
}

pub fn at<'v>(v: &'v Value, pointer: &str, what: &str) -> Result<&'v Value, SyncError> {
    v.pointer(pointer)
        .filter(|x| !x.is_null())
        .ok_or_else(|| ShopifyError::Permanent(format!("{what}: answer lacks {pointer}")).into())
}

pub fn id_of(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(str::to_string)
}

/// The numeric tail of a GID (`gid://shopify/Product/1001` → 1001).
pub fn gid_number(gid: &str) -> Option<i64> {
    gid.rsplit('/').next()?.parse().ok()
}

pub fn gid(kind: &str, id: i64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// Orders by the numeric tail of a GID, then by the string.
fn gid_order(v: &Value) -> (u64, String) {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let n = id
        .rsplit('/')
        .next()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_string())
}

pub struct Fetcher<'a> {
    pub api: &'a ShopifyApi,
    pub shop: &'a ShopDomain,
}

impl Fetcher<'_> {
    pub async fn run(&self, op: &str, query: &str, vars: Value) -> Result<Value, SyncError> {
        Ok(self.api.query(self.shop, op, query, vars).await?)
    }

    /// Walks a top-level connection to its end (`vars` without `after`).
    pub async fn all(
        &self,
        op: &str,
        query: &str,
        root: &str,
        mut vars: Value,
    ) -> Result<Vec<Value>, SyncError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            vars["after"] = json!(after);
            let data = self.run(op, query, vars.clone()).await?;
            let (nodes, next) = page(at(&data, &format!("/{root}"), op)?);
            out.extend(nodes);
            match next {
                Some(c) if Some(&c) != after.as_ref() => after = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// Completes a nested connection at `field` of `node` when it has more pages, with a
    /// follow-up query on the parent `id`; returns the full node list.
    pub async fn complete_nested(
        &self,
        node: &Value,
        field: &str,
        parent_id: Option<String>,
        op: &str,
        query: &str,
        conn_pointer: &str,
    ) -> Result<Vec<Value>, SyncError> {
        let conn = node.get(field).cloned().unwrap_or(Value::Null);
        let (mut nodes, mut next) = page(&conn);
        let Some(id) = parent_id else {
            return Ok(nodes);
        };
        while let Some(after) = next.take() {
            let data = self
                .run(
                    op,
                    query,
                    json!({"id": id, "first": q::FOLLOW_UP_PAGE, "after": after}),
                )
                .await?;
            let (more, n) = page(at(&data, conn_pointer, op)?);
            nodes.extend(more);
            next = n.filter(|c| *c != after);
        }
        Ok(nodes)
    }

    /// A product node's `custom` metafields, every page.
    pub async fn metafields_of(&self, product: &Value) -> Result<Vec<Value>, SyncError> {
        self.complete_nested(
            product,
            "metafields",
            id_of(product),
            "ProductMetafields",
            q::PRODUCT_METAFIELDS,
            "/product/metafields",
        )
        .await
    }

    /// A variant node's inventory levels, every page.
    pub async fn levels_of(&self, variant: &Value) -> Result<Vec<Value>, SyncError> {
        let item = variant.get("inventoryItem").cloned().unwrap_or(Value::Null);
        self.complete_nested(
            &item,
            "inventoryLevels",
            id_of(&item),
            "InventoryLevels",
            q::INVENTORY_LEVELS,
            "/inventoryItem/inventoryLevels",
        )
        .await
    }

    /// A collection node with every product handle, shaped.
    pub async fn collection(&self, node: Value) -> Result<Value, SyncError> {
        let handles = self
            .complete_nested(
                &node,
                "products",
                id_of(&node),
                "CollectionProducts",
                q::COLLECTION_PRODUCTS,
                "/collection/products",
            )
            .await?;
        Ok(shape_collection(node, handles))
    }

    /// A code discount node with every code, shaped.
    pub async fn discount(&self, node: Value) -> Result<Value, SyncError> {
        let body = node.get("codeDiscount").cloned().unwrap_or(Value::Null);
        let codes = self
            .complete_nested(
                &body,
                "codes",
                id_of(&node),
                "DiscountCodes",
                q::DISCOUNT_CODES,
                "/codeDiscountNode/codeDiscount/codes",
            )
            .await?;
        Ok(shape_discount(node, codes))
    }
}

/// A product's own fields with its metafields as a list (variants are added by
/// `with_variants`).
pub fn shape_product(mut node: Value, metafields: Vec<Value>) -> Value {
    if let Some(o) = node.as_object_mut() {
        o.insert("metafields".into(), Value::Array(metafields));
        o.remove("variants");
    }
    node
}

/// The product entry: its fields and its variants in id order.
pub fn with_variants(mut product: Value, mut variants: Vec<Value>) -> Value {
    variants.sort_by_key(gid_order);
    if let Some(o) = product.as_object_mut() {
        o.insert("variants".into(), Value::Array(variants));
    }
    product
}

/// A variant without its `product` back-reference, with inventory as
/// `[{location: {id, name}, available}]`.
pub fn shape_variant(v: Value, levels: Vec<Value>) -> Value {
    let mut o = v.as_object().cloned().unwrap_or_default();
    o.remove("product");
    o.remove("inventoryItem");
    o.remove("__parentId");
    o.insert("inventoryLevels".into(), Value::Array(shape_levels(levels)));
    Value::Object(o)
}

pub fn shape_levels(levels: Vec<Value>) -> Vec<Value> {
    levels
        .into_iter()
        .map(|l| {
            let available = l
                .get("quantities")
                .and_then(Value::as_array)
                .and_then(|qs| {
                    qs.iter()
                        .find(|q| q.get("name").and_then(Value::as_str) == Some("available"))
                })
                .and_then(|q| q.get("quantity").cloned())
                .unwrap_or(Value::Null);
            json!({"location": l.get("location").cloned().unwrap_or(Value::Null), "available": available})
        })
        .collect()
}

pub fn shape_collection(node: Value, handles: Vec<Value>) -> Value {
    let handles: Vec<Value> = handles
        .into_iter()
        .filter_map(|p| p.get("handle").cloned())
        .collect();
    let mut o = node.as_object().cloned().unwrap_or_default();
    o.remove("products");
    o.insert("productHandles".into(), Value::Array(handles));
    Value::Object(o)
}

pub fn shape_discount(node: Value, codes: Vec<Value>) -> Value {
    let body = node.get("codeDiscount").cloned().unwrap_or(Value::Null);
    let codes: Vec<Value> = codes
        .into_iter()
        .filter_map(|c| c.get("code").cloned())
        .collect();
    let mut o = Map::new();
    o.insert("id".into(), node.get("id").cloned().unwrap_or(Value::Null));
    if let Some(b) = body.as_object() {
        for (k, v) in b {
            match k.as_str() {
                "codes" => {}
                "__typename" => {
                    o.insert("type".into(), v.clone());
                }
                _ => {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
    }
    o.insert("codes".into(), Value::Array(codes));
    Value::Object(o)
}

/// A shaped entry as a store row (canonical bytes, id from its GID).
pub fn row(entry: &Value) -> Result<EntityRow, SyncError> {
    let gid = entry.get("id").and_then(Value::as_str).unwrap_or_default();
    let id = gid_number(gid).ok_or_else(|| {
        ShopifyError::Permanent(format!("an entry without a numeric id: {gid:?}"))
    })?;
    let body = canonical_json(entry)
        .map_err(|e| SyncError::Internal(format!("serialising an entry: {e}")))?;
    Ok(EntityRow {
        id,
        body,
        handle: entry
            .get("handle")
            .and_then(Value::as_str)
            .map(str::to_string),
        updated_at: entry
            .get("updatedAt")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// `(inventory item, variant)` ids of a product entry's variants (for the item index); the
/// item ids come from the variant nodes before shaping drops them.
pub fn inventory_pairs(variants: &[Value]) -> Vec<(i64, i64)> {
    variants
        .iter()
        .filter_map(|v| {
            let item = v.pointer("/inventoryItem/id").and_then(Value::as_str)?;
            let id = v.get("id").and_then(Value::as_str)?;
            Some((gid_number(item)?, gid_number(id)?))
        })
        .collect()
}

/// The callback's `shopify_data`: the shop object and counts.
pub fn summary(shop: Value, products: i64, collections: i64, discounts: i64) -> Value {
    json!({
        "shop": shop,
        "products_count": products,
        "collections_count": collections,
        "discounts_count": discounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_reads_nodes_and_next_cursor() {
        let conn = json!({
            "edges": [{"cursor": "a", "node": {"id": 1}}, {"cursor": "b", "node": {"id": 2}}],
            "pageInfo": {"hasNextPage": true, "endCursor": "b"}
        });
        let (nodes, next) = page(&conn);
        assert_eq!(nodes, vec![json!({"id": 1}), json!({"id": 2})]);
        assert_eq!(next.as_deref(), Some("b"));
        let last = json!({"edges": [], "pageInfo": {"hasNextPage": false, "endCursor": null}});
        assert_eq!(page(&last), (vec![], None));
    }

    #[test]
    fn variants_are_flattened() {
        let v = json!({
            "id": "gid://shopify/ProductVariant/2", "title": "S", "price": "9.00",
            "product": {"id": "gid://shopify/Product/1"},
            "inventoryItem": {"id": "gid://shopify/InventoryItem/3"}
        });
        assert_eq!(inventory_pairs(std::slice::from_ref(&v)), vec![(3, 2)]);
        let levels = vec![json!({
            "location": {"id": "gid://shopify/Location/1", "name": "Main"},
            "quantities": [{"name": "available", "quantity": 4}]
        })];
        let out = shape_variant(v, levels);
        assert_eq!(out["inventoryLevels"][0]["available"], 4);
        assert!(out.get("product").is_none() && out.get("inventoryItem").is_none());
    }

    #[test]
    fn rows_are_canonical_and_numbered_by_their_gid() {
        let p = with_variants(
            shape_product(
                json!({"title": "T", "id": "gid://shopify/Product/1001", "handle": "t"}),
                vec![],
            ),
            vec![
                json!({"id": "gid://shopify/ProductVariant/9"}),
                json!({"id": "gid://shopify/ProductVariant/10"}),
            ],
        );
        let r = row(&p).unwrap();
        assert_eq!(r.id, 1001);
        assert_eq!(r.handle.as_deref(), Some("t"));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"handle":"t","id":"gid://shopify/Product/1001","metafields":[],"title":"T","variants":[{"id":"gid://shopify/ProductVariant/9"},{"id":"gid://shopify/ProductVariant/10"}]}"#
        );
    }
}
