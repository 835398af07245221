//! Fetches a shop's complete catalogue (every page of every connection) and shapes the two
//! objects of SPEC §3: `shop_metadata.json` and `shop_products.json`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::api::ShopifyApi;
use super::client::ShopifyError;
use super::queries as q;
use super::SyncError;
use crate::objects::keys::ShopDomain;

pub struct Catalog {
    pub shop: Value,
    pub products: Vec<Value>,
    pub collections: Vec<Value>,
    pub discounts: Vec<Value>,
}

impl Catalog {
    pub fn metadata_json(&self) -> Value {
        json!({"shop": self.shop, "collections": self.collections, "discounts": self.discounts})
    }

    pub fn products_json(&self) -> Value {
        json!({"products": self.products})
    }

    /// The callback's `shopify_data`: the shop object and counts, not the catalogue itself.
    pub fn summary(&self) -> Value {
        json!({
            "shop": self.shop,
            "products_count": self.products.len(),
            "collections_count": self.collections.len(),
            "discounts_count": self.discounts.len(),
        })
    }
}

/// One page of a connection: its nodes and the cursor of the next page, if any.
fn page(conn: &Value) -> (Vec<Value>, Option<String>) {
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

fn at<'v>(v: &'v Value, pointer: &str, what: &str) -> Result<&'v Value, SyncError> {
    v.pointer(pointer)
        .filter(|x| !x.is_null())
        .ok_or_else(|| ShopifyError::Permanent(format!("{what}: answer lacks {pointer}")).into())
}

fn id_of(v: &Value) -> Option<String> {
    v.get("id").and_then(Value::as_str).map(str::to_string)
}

struct Fetcher<'a> {
    api: &'a ShopifyApi,
    shop: &'a ShopDomain,
}

impl Fetcher<'_> {
    async fn run(&self, op: &str, query: &str, vars: Value) -> Result<Value, SyncError> {
        self.api.query(self.shop, op, query, vars).await
    }

    /// Walks a top-level connection to its end.
    async fn all(
        &self,
        op: &str,
        query: &str,
        root: &str,
        first: u32,
    ) -> Result<Vec<Value>, SyncError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = self
                .run(op, query, json!({"first": first, "after": after}))
                .await?;
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
    async fn complete_nested(
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
}

pub async fn fetch_catalog(api: &ShopifyApi, shop: &ShopDomain) -> Result<Catalog, SyncError> {
    let f = Fetcher { api, shop };
    let shop_obj = at(&f.run("Shop", q::SHOP, json!({})).await?, "/shop", "Shop")?.clone();

    // Products, with every custom metafield.
    let mut products: Vec<Value> = Vec::new();
    for mut p in f
        .all("Products", q::PRODUCTS, "products", q::PRODUCTS_PAGE)
        .await?
    {
        let metafields = f
            .complete_nested(
                &p,
                "metafields",
                id_of(&p),
                "ProductMetafields",
                q::PRODUCT_METAFIELDS,
                "/product/metafields",
            )
            .await?;
        if let Some(o) = p.as_object_mut() {
            o.insert("metafields".into(), Value::Array(metafields));
            o.insert("variants".into(), Value::Array(Vec::new()));
        }
        products.push(p);
    }
    let index: HashMap<String, usize> = products
        .iter()
        .enumerate()
        .filter_map(|(i, p)| id_of(p).map(|id| (id, i)))
        .collect();

    // Variants, each with inventory per location, attached to their product.
    for v in f
        .all(
            "ProductVariants",
            q::PRODUCT_VARIANTS,
            "productVariants",
            q::VARIANTS_PAGE,
        )
        .await?
    {
        let item = v.get("inventoryItem").cloned().unwrap_or(Value::Null);
        let levels = f
            .complete_nested(
                &item,
                "inventoryLevels",
                id_of(&item),
                "InventoryLevels",
                q::INVENTORY_LEVELS,
                "/inventoryItem/inventoryLevels",
            )
            .await?;
        let product_id = v.pointer("/product/id").and_then(Value::as_str);
        let Some(&i) = product_id.and_then(|id| index.get(id)) else {
            // A variant created after the product pages were read: the next sync has both.
            continue;
        };
        let variant = shape_variant(v, levels);
        if let Some(list) = products[i]
            .get_mut("variants")
            .and_then(Value::as_array_mut)
        {
            list.push(variant);
        }
    }
    let mut products: Vec<Value> = products.into_iter().map(shape_product).collect();
    products.sort_by_key(gid_order);

    // Collections with every product handle.
    let mut collections = Vec::new();
    for c in f
        .all(
            "Collections",
            q::COLLECTIONS,
            "collections",
            q::COLLECTIONS_PAGE,
        )
        .await?
    {
        let handles: Vec<Value> = f
            .complete_nested(
                &c,
                "products",
                id_of(&c),
                "CollectionProducts",
                q::COLLECTION_PRODUCTS,
                "/collection/products",
            )
            .await?
            .into_iter()
            .filter_map(|p| p.get("handle").cloned())
            .collect();
        let mut o = c.as_object().cloned().unwrap_or_default();
        o.remove("products");
        o.insert("productHandles".into(), Value::Array(handles));
        collections.push(Value::Object(o));
    }
    collections.sort_by_key(gid_order);

    // Code discounts with every code.
    let mut discounts = Vec::new();
    for d in f
        .all(
            "CodeDiscounts",
            q::CODE_DISCOUNTS,
            "codeDiscountNodes",
            q::DISCOUNTS_PAGE,
        )
        .await?
    {
        let body = d.get("codeDiscount").cloned().unwrap_or(Value::Null);
        let codes: Vec<Value> = f
            .complete_nested(
                &body,
                "codes",
                id_of(&d),
                "DiscountCodes",
                q::DISCOUNT_CODES,
                "/codeDiscountNode/codeDiscount/codes",
            )
            .await?
            .into_iter()
            .filter_map(|c| c.get("code").cloned())
            .collect();
        let mut o = Map::new();
        o.insert("id".into(), d.get("id").cloned().unwrap_or(Value::Null));
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
        discounts.push(Value::Object(o));
    }
    discounts.sort_by_key(gid_order);

    Ok(Catalog {
        shop: shop_obj,
        products,
        collections,
        discounts,
    })
}

/// Orders by the numeric tail of a GID (`gid://shopify/Product/1001`), then by the string.
fn gid_order(v: &Value) -> (u64, String) {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
    let n = id
        .rsplit('/')
        .next()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    (n, id.to_string())
}

/// A variant without its `product` back-reference, with inventory as
/// `[{location: {id, name}, available}]`.
fn shape_variant(v: Value, levels: Vec<Value>) -> Value {
    let mut o = v.as_object().cloned().unwrap_or_default();
    o.remove("product");
    o.remove("inventoryItem");
    let levels: Vec<Value> = levels
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
        .collect();
    o.insert("inventoryLevels".into(), Value::Array(levels));
    Value::Object(o)
}

fn shape_product(mut p: Value) -> Value {
    if let Some(list) = p.get_mut("variants").and_then(Value::as_array_mut) {
        list.sort_by_key(gid_order);
    }
    p
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
        let levels = vec![json!({
            "location": {"id": "gid://shopify/Location/1", "name": "Main"},
            "quantities": [{"name": "available", "quantity": 4}]
        })];
        let out = shape_variant(v, levels);
        assert_eq!(out["inventoryLevels"][0]["available"], 4);
        assert!(out.get("product").is_none() && out.get("inventoryItem").is_none());
    }
}
