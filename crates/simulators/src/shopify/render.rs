//! The catalogue in the shapes of the Admin GraphQL API: nodes with exactly the fields the
//! service's documents select, and `edges { cursor node }` + `pageInfo` connections. Each
//! renderer also returns the node's actual query cost.

use base64::Engine;
use serde_json::{json, Value};

use super::catalogue::{Collection, Discount, Level, Metafield, Product, ShopData, Variant};
use super::generate::{gid, shop_name_for, LOCATIONS, LOCATION_BASE};

/// Opaque cursors shaped like Shopify's (base64 JSON with the last key).
pub(super) fn encode_cursor(key: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{{\"last_id\":{key},\"last_value\":\"{key}\"}}"))
}

pub(super) fn decode_cursor(cursor: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["last_id"].as_u64()
}

/// Items after the cursor key, at most `first`, and whether more follow.
pub(super) fn paginate<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&T) -> u64,
    first: usize,
    after: Option<u64>,
) -> (Vec<&'a T>, bool) {
    let mut it = items
        .into_iter()
        .filter(move |t| after.is_none_or(|a| key(t) > a));
    let page: Vec<&T> = it.by_ref().take(first).collect();
    let more = it.next().is_some();
    (page, more)
}

pub(super) fn connection(edges: Vec<(u64, Value)>, has_next: bool) -> Value {
    let end = edges.last().map(|(k, _)| encode_cursor(*k));
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|(k, node)| json!({"cursor": encode_cursor(k), "node": node}))
        .collect();
    json!({
        "edges": edges,
        "pageInfo": {"hasNextPage": has_next, "endCursor": end},
    })
}

/// Metafields connection and its actual cost.
pub(super) fn metafields_conn(p: &Product, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(&p.metafields, |m| m.id, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|m| (m.id, metafield_node(m)))
        .collect();
    (connection(edges, more), cost)
}

pub(super) fn metafield_node(m: &Metafield) -> Value {
    json!({"namespace": "custom", "key": m.key, "type": m.kind, "value": m.value})
}

/// An `InventoryLevel` node: `location { id name }` and `quantities(names: ["available"])`.
pub(super) fn level_node(l: &Level) -> Value {
    let loc = LOCATION_BASE + l.location as u64;
    json!({
        "location": {"id": gid("Location", loc), "name": LOCATIONS[l.location]},
        "quantities": [{"name": "available", "quantity": l.available}],
    })
}

pub(super) fn levels_conn(v: &Variant, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(
        &v.levels,
        |l| LOCATION_BASE + l.location as u64,
        first,
        after,
    );
    let cost = 2 + 3 * page.len() as u64;
    let edges = page
        .into_iter()
        .map(|l| (LOCATION_BASE + l.location as u64, level_node(l)))
        .collect();
    (connection(edges, more), cost)
}

pub(super) fn collection_products_conn(
    s: &ShopData,
    c: &Collection,
    first: usize,
    after: Option<u64>,
) -> (Value, u64) {
    let positions: Vec<(u64, usize)> = c
        .products
        .iter()
        .enumerate()
        .filter(|(_, &p)| !s.products[p].deleted)
        .map(|(pos, &p)| (pos as u64 + 1, p))
        .collect();
    let (page, more) = paginate(&positions, |(k, _)| *k, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|(k, p)| (*k, json!({"handle": s.products[*p].handle})))
        .collect();
    (connection(edges, more), cost)
}

pub(super) fn codes_conn(d: &Discount, first: usize, after: Option<u64>) -> (Value, u64) {
    let (page, more) = paginate(&d.codes, |(id, _)| *id, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|(id, code)| (*id, json!({"code": code})))
        .collect();
    (connection(edges, more), cost)
}

pub(super) fn variant_quantity(v: &Variant) -> i64 {
    v.levels.iter().map(|l| l.available).sum()
}

/// `availableForSale` of a variant.
pub(super) fn variant_available(v: &Variant) -> bool {
    variant_quantity(v) > 0
}

/// `totalInventory` of a product.
pub(super) fn product_total(p: &Product) -> i64 {
    p.variants.iter().map(variant_quantity).sum()
}

pub(super) fn render_product(s: &ShopData, p: &Product) -> (Value, u64) {
    let (metafields, mcost) = metafields_conn(p, 5, None);
    let total = product_total(p);
    let prices: Vec<(f64, &String)> = p
        .variants
        .iter()
        .map(|v| (v.price.parse::<f64>().unwrap_or(0.0), &v.price))
        .collect();
    let min = prices
        .iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1.clone())
        .unwrap_or_else(|| "0.0".into());
    let max = prices
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|x| x.1.clone())
        .unwrap_or_else(|| "0.0".into());
    let options = if p.variants.len() <= 1 {
        json!([{"name": "Title", "values": ["Default Title"]}])
    } else {
        let values: Vec<&str> = p
            .variants
            .iter()
            .filter_map(|v| v.size.as_deref())
            .collect();
        json!([{"name": "Size", "values": values}])
    };
    let image = p
        .image
        .as_ref()
        .map(|(url, alt)| json!({"url": url, "altText": alt}));
    let node = json!({
        "id": gid("Product", p.id),
        "title": p.title,
        "handle": p.handle,
        "description": p.description,
        "productType": p.product_type,
        "vendor": p.vendor,
        "tags": p.tags,
        "status": p.status,
        "onlineStoreUrl": if p.status == "ACTIVE" {
            Value::String(format!("https://{}/products/{}", s.domain, p.handle))
        } else {
            Value::Null
        },
        "totalInventory": total,
        "createdAt": p.created_at,
        "updatedAt": p.updated_at,
        "options": options,
        "featuredImage": image,
        "priceRangeV2": {
            "minVariantPrice": {"amount": min, "currencyCode": "USD"},
            "maxVariantPrice": {"amount": max, "currencyCode": "USD"},
        },
        "metafields": metafields,
    });
    (node, 6 + mcost)
}

pub(super) fn render_variant(v: &Variant) -> (Value, u64) {
    let (levels, lcost) = levels_conn(v, 5, None);
    let q = variant_quantity(v);
    let selected = match &v.size {
        Some(s) => json!([{"name": "Size", "value": s}]),
        None => json!([{"name": "Title", "value": "Default Title"}]),
    };
    let node = json!({
        "id": gid("ProductVariant", v.id),
        "title": v.title,
        "sku": v.sku,
        "price": v.price,
        "compareAtPrice": v.compare_at,
        "availableForSale": variant_available(v),
        "inventoryQuantity": q,
        "selectedOptions": selected,
        "product": {"id": gid("Product", v.product_id)},
        "inventoryItem": {
            "id": gid("InventoryItem", v.inventory_item_id),
            "inventoryLevels": levels,
        },
    });
    (node, 4 + lcost)
}

pub(super) fn render_collection(s: &ShopData, c: &Collection) -> (Value, u64) {
    let (products, pcost) = collection_products_conn(s, c, 50, None);
    let node = json!({
        "id": gid("Collection", c.id),
        "title": c.title,
        "handle": c.handle,
        "description": c.description,
        "updatedAt": c.updated_at,
        "products": products,
    });
    (node, 1 + pcost)
}

pub(super) fn render_discount(d: &Discount) -> (Value, u64) {
    let (codes, ccost) = codes_conn(d, 10, None);
    let node = json!({
        "id": gid("DiscountCodeNode", d.id),
        "codeDiscount": {
            "__typename": d.typename,
            "title": d.title,
            "status": d.status,
            "summary": d.summary,
            "startsAt": d.starts_at,
            "endsAt": d.ends_at,
            "usageLimit": d.usage_limit,
            "appliesOncePerCustomer": d.once_per_customer,
            "codes": codes,
        },
    });
    (node, 2 + ccost)
}

pub(super) fn render_shop(s: &ShopData) -> Value {
    let name = shop_name_for(&s.domain);
    let label = s.domain.split('.').next().unwrap_or(&s.domain).to_string();
    json!({
        "id": gid("Shop", s.shop_id),
        "name": name,
        "description": format!("{name}: quality goods since 2019."),
        "myshopifyDomain": s.domain,
        "url": format!("https://{}", s.domain),
        "primaryDomain": {
            "url": format!("https://{}", s.domain),
            "host": s.domain,
        },
        "currencyCode": "USD",
        "enabledPresentmentCurrencies": ["USD", "CAD", "EUR"],
        "ianaTimezone": "America/New_York",
        "contactEmail": format!("owner@{label}.example.com"),
        "shipsToCountries": ["US", "CA", "GB"],
    })
}
