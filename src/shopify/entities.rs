//! Fetching single entities after a webhook: one product (every variant), one inventory item,
//! one collection, one discount; and a window of products changed since a time (a bulk edit,
//! the reconciliation poll).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::catalog::{
    at, gid, gid_number, inventory_pairs, page, row, shape_levels, shape_product, shape_variant,
    with_variants, Fetcher,
};
use super::queries as q;
use super::SyncError;
use crate::store::catalog::EntityRow;

/// A product's row and its `(inventory item, variant)` pairs.
pub struct FetchedProduct {
    pub row: EntityRow,
    pub items: Vec<(i64, i64)>,
}

/// A product entry from its shaped fields and its variant nodes (levels complete).
fn assemble(
    product: Value,
    variants: Vec<(Value, Vec<Value>)>,
) -> Result<FetchedProduct, SyncError> {
    let nodes: Vec<Value> = variants.iter().map(|(v, _)| v.clone()).collect();
    let items = inventory_pairs(&nodes);
    let shaped = variants
        .into_iter()
        .map(|(v, levels)| shape_variant(v, levels))
        .collect();
    Ok(FetchedProduct {
        row: row(&with_variants(product, shaped))?,
        items,
    })
}

/// One product with every variant (paged: products may have 2,048); `None` when it is gone.
pub async fn product(f: &Fetcher<'_>, id: i64) -> Result<Option<FetchedProduct>, SyncError> {
    let product_gid = gid("Product", id);
    let mut shaped: Option<Value> = None;
    let mut variants = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = f
            .run(
                "Product",
                q::PRODUCT,
                json!({"id": product_gid, "first": q::PRODUCT_VARIANTS_PAGE, "after": after}),
            )
            .await?;
        let Some(node) = data.get("product").filter(|p| !p.is_null()) else {
            return Ok(None);
        };
        if shaped.is_none() {
            let metafields = f.metafields_of(node).await?;
            shaped = Some(shape_product(node.clone(), metafields));
        }
        let (nodes, next) = page(node.get("variants").unwrap_or(&Value::Null));
        for v in nodes {
            let levels = f.levels_of(&v).await?;
            variants.push((v, levels));
        }
        match next {
            Some(c) if Some(&c) != after.as_ref() => after = Some(c),
            _ => break,
        }
    }
    let Some(product) = shaped else {
        return Ok(None);
    };
    Ok(Some(assemble(product, variants)?))
}

/// What an inventory change does to its variant and product.
pub struct InventoryChange {
    pub product: i64,
    pub variant: String,
    pub inventory_quantity: Value,
    pub available_for_sale: Value,
    pub total_inventory: Value,
    /// Shaped levels, every page.
    pub levels: Vec<Value>,
}

/// One inventory item's levels and what they change; `None` when the item is gone.
pub async fn inventory_item(
    f: &Fetcher<'_>,
    item: i64,
) -> Result<Option<InventoryChange>, SyncError> {
    let data = f
        .run(
            "InventoryItem",
            q::INVENTORY_ITEM,
            json!({"id": gid("InventoryItem", item)}),
        )
        .await?;
    let Some(node) = data.get("inventoryItem").filter(|n| !n.is_null()) else {
        return Ok(None);
    };
    let variant = &node["variant"];
    let Some(product) = variant
        .pointer("/product/id")
        .and_then(Value::as_str)
        .and_then(gid_number)
    else {
        return Ok(None);
    };
    let levels = f
        .complete_nested(
            node,
            "inventoryLevels",
            super::catalog::id_of(node),
            "InventoryLevels",
            q::INVENTORY_LEVELS,
            "/inventoryItem/inventoryLevels",
        )
        .await?;
    Ok(Some(InventoryChange {
        product,
        variant: variant
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        inventory_quantity: variant
            .get("inventoryQuantity")
            .cloned()
            .unwrap_or(Value::Null),
        available_for_sale: variant
            .get("availableForSale")
            .cloned()
            .unwrap_or(Value::Null),
        total_inventory: variant
            .pointer("/product/totalInventory")
            .cloned()
            .unwrap_or(Value::Null),
        levels: shape_levels(levels),
    }))
}

/// Applies an inventory change to a stored product entry; `None` when the entry does not
/// hold that variant (the caller fetches the whole product then).
pub fn apply_inventory(body: &[u8], change: &InventoryChange) -> Option<Value> {
    let mut entry: Value = serde_json::from_slice(body).ok()?;
    let variant = entry
        .get_mut("variants")?
        .as_array_mut()?
        .iter_mut()
        .find(|v| v.get("id").and_then(Value::as_str) == Some(change.variant.as_str()))?;
    let o = variant.as_object_mut()?;
    o.insert(
        "inventoryQuantity".into(),
        change.inventory_quantity.clone(),
    );
    o.insert("availableForSale".into(), change.available_for_sale.clone());
    o.insert(
        "inventoryLevels".into(),
        Value::Array(change.levels.clone()),
    );
    if let Some(p) = entry.as_object_mut() {
        p.insert("totalInventory".into(), change.total_inventory.clone());
    }
    Some(entry)
}

pub async fn collection(f: &Fetcher<'_>, id: i64) -> Result<Option<EntityRow>, SyncError> {
    let data = f
        .run(
            "Collection",
            q::COLLECTION,
            json!({"id": gid("Collection", id)}),
        )
        .await?;
    match data.get("collection").filter(|c| !c.is_null()) {
        Some(node) => Ok(Some(row(&f.collection(node.clone()).await?)?)),
        None => Ok(None),
    }
}

pub async fn discount(f: &Fetcher<'_>, id: i64) -> Result<Option<EntityRow>, SyncError> {
    let data = f
        .run(
            "CodeDiscount",
            q::CODE_DISCOUNT,
            json!({"id": gid("DiscountCodeNode", id)}),
        )
        .await?;
    match data.get("codeDiscountNode").filter(|c| !c.is_null()) {
        Some(node) => Ok(Some(row(&f.discount(node.clone()).await?)?)),
        None => Ok(None),
    }
}

/// Products a search selects (`updated_at:>='…'`), each complete, read a page at a time so
/// memory stays bounded.
pub struct ProductSearch<'a> {
    f: &'a Fetcher<'a>,
    search: String,
    after: Option<String>,
    done: bool,
    /// The newest `updatedAt` seen so far.
    pub newest: Option<String>,
}

impl<'a> ProductSearch<'a> {
    pub fn new(f: &'a Fetcher<'a>, search: String) -> Self {
        ProductSearch {
            f,
            search,
            after: None,
            done: false,
            newest: None,
        }
    }

    /// The next page of complete products; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<FetchedProduct>>, SyncError> {
        if self.done {
            return Ok(None);
        }
        let f = self.f;
        let data = f
            .run(
                "Products",
                q::PRODUCTS,
                json!({"first": q::PRODUCTS_PAGE, "after": self.after, "query": self.search}),
            )
            .await?;
        let (nodes, next) = page(at(&data, "/products", "Products")?);
        match next {
            Some(c) if Some(&c) != self.after.as_ref() => self.after = Some(c),
            _ => self.done = true,
        }
        let mut products: BTreeMap<i64, Value> = BTreeMap::new();
        for node in nodes {
            let Some(id) = node.get("id").and_then(Value::as_str).and_then(gid_number) else {
                continue;
            };
            if let Some(u) = node.get("updatedAt").and_then(Value::as_str) {
                if self.newest.as_deref().is_none_or(|n| u > n) {
                    self.newest = Some(u.to_string());
                }
            }
            let metafields = f.metafields_of(&node).await?;
            products.insert(id, shape_product(node, metafields));
        }
        if products.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let variants = variants_of(f, products.keys().copied().collect()).await?;
        let mut by_product: BTreeMap<i64, Vec<(Value, Vec<Value>)>> = BTreeMap::new();
        for (pid, v, levels) in variants {
            by_product.entry(pid).or_default().push((v, levels));
        }
        let fetched = products
            .into_iter()
            .map(|(id, p)| assemble(p, by_product.remove(&id).unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(fetched))
    }
}

/// Every variant of these products, with complete levels: `(product, node, levels)`.
async fn variants_of(
    f: &Fetcher<'_>,
    products: Vec<i64>,
) -> Result<Vec<(i64, Value, Vec<Value>)>, SyncError> {
    let ids: Vec<String> = products.iter().map(i64::to_string).collect();
    let search = format!("product_ids:{}", ids.join(","));
    let nodes = f
        .all(
            "ProductVariants",
            q::PRODUCT_VARIANTS,
            "productVariants",
            json!({"first": q::VARIANTS_PAGE, "query": search}),
        )
        .await?;
    let mut out = Vec::with_capacity(nodes.len());
    for v in nodes {
        let Some(pid) = v
            .pointer("/product/id")
            .and_then(Value::as_str)
            .and_then(gid_number)
        else {
            continue;
        };
        let levels = f.levels_of(&v).await?;
        out.push((pid, v, levels));
    }
    Ok(out)
}

/// Ids of every product (the cheap listing that finds deletions).
pub async fn all_product_ids(f: &Fetcher<'_>) -> Result<Vec<i64>, SyncError> {
    let nodes = f
        .all(
            "ProductIds",
            q::PRODUCT_IDS,
            "products",
            json!({"first": q::PRODUCT_IDS_PAGE}),
        )
        .await?;
    Ok(nodes
        .iter()
        .filter_map(|n| n.get("id").and_then(Value::as_str).and_then(gid_number))
        .collect())
}
