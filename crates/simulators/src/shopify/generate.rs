//! The deterministic catalogue of a shop, generated on first use of its domain (see the module
//! documentation of `shopify` for its shape and special cases).

use std::collections::HashSet;
use std::time::Instant;

use super::catalogue::{
    Collection, Discount, IdAlloc, Level, Metafield, Product, ShopData, Variant,
};
use super::{
    FakeConfig, BIG_COLLECTION_HANDLE, BIG_COLLECTION_SIZE, BUCKET_MAX, EMPTY_COLLECTION_HANDLE,
    EXACT_CODES_DISCOUNT, EXACT_COLLECTION_HANDLE, MANY_CODES_COUNT, MANY_CODES_DISCOUNT,
    MANY_LOCATIONS_COUNT, MANY_LOCATIONS_PRODUCT, MANY_LOCATIONS_VARIANT, RICH_METAFIELDS_COUNT,
    RICH_METAFIELDS_PRODUCT,
};
use crate::ids::fnv;

pub(super) const LOCATIONS: [&str; 8] = [
    "Main Warehouse",
    "Downtown Store",
    "East Coast DC",
    "West Coast DC",
    "Pop-up Shop",
    "Outlet",
    "Returns Center",
    "Dropship Partner",
];
/// Numeric id of `LOCATIONS[0]`; the others follow.
pub(super) const LOCATION_BASE: u64 = 70001;

const ADJECTIVES: [&str; 8] = [
    "Classic", "Vintage", "Organic", "Premium", "Everyday", "Deluxe", "Rugged", "Slim",
];
const NOUNS: [(&str, &str); 10] = [
    ("Tee", "Shirts"),
    ("Hoodie", "Sweaters"),
    ("Mug", "Kitchen"),
    ("Cap", "Hats"),
    ("Backpack", "Bags"),
    ("Sneaker", "Shoes"),
    ("Notebook", "Stationery"),
    ("Candle", "Home"),
    ("Scarf", "Accessories"),
    ("Bottle", "Kitchen"),
];
const SIZES: [&str; 3] = ["Small", "Medium", "Large"];
const VENDORS: [&str; 3] = ["Acme Apparel", "Northwind Goods", "Globex Studio"];
const TAGS: [&str; 6] = ["new", "sale", "summer", "bestseller", "eco", "gift"];
/// Keys and types of the generated `custom` metafields, in the order products get them.
const META_KEYS: [(&str, &str); 8] = [
    ("material", "single_line_text_field"),
    ("care_guide", "multi_line_text_field"),
    ("warranty_years", "number_integer"),
    ("origin", "single_line_text_field"),
    ("weight_grams", "number_integer"),
    ("features", "json"),
    ("fit", "single_line_text_field"),
    ("size_chart", "url"),
];
/// Positions of the special collections among the first ten.
const BIG_COLLECTION_AT: usize = 2;
const EXACT_COLLECTION_AT: usize = 5;
const EMPTY_COLLECTION_AT: usize = 9;

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A distinct, valid timestamp in `year` for each `n` (Shopify's `…Z` format).
pub(super) fn timestamp(year: u32, n: usize) -> String {
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        1 + (n / 28) % 12,
        1 + n % 28,
        n % 24,
        (n * 7) % 60,
        (n * 13) % 60
    )
}

/// The shop name the fake answers for a domain (`acme-store.myshopify.com` → `Acme Store`).
pub(super) fn shop_name_for(domain: &str) -> String {
    let label = domain.split('.').next().unwrap_or(domain);
    label
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `gid://shopify/{kind}/{id}`
pub(super) fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

/// Product index `i` (id `1001 + i`) with `n_var` variants: `Default Title` when there is one,
/// `Small`/`Medium`/`Large` up to 3, or `Size 1`, `Size 2`, … when `sized` (each at 2 locations).
pub(super) fn build_product(i: usize, n_var: usize, sized: bool, ids: &mut IdAlloc) -> Product {
    let id = 1001 + i as u64;
    let (title, handle, description) = product_texts(i, id);
    let status = if i % 25 == 24 {
        "ARCHIVED"
    } else if i % 10 == 9 {
        "DRAFT"
    } else {
        "ACTIVE"
    };
    let image = product_image(i, &title, &handle);
    // Metafield ids are allocated before variant ids, as they always were: ids stay stable.
    let metafields = build_metafields(i, id, ids);
    let variants = build_variants(i, id, n_var, sized, ids);
    Product {
        id,
        title,
        handle,
        description,
        product_type: NOUNS[(i / ADJECTIVES.len()) % NOUNS.len()].1.to_string(),
        vendor: VENDORS[i % VENDORS.len()].to_string(),
        tags: (0..i % 4)
            .map(|t| TAGS[(i + t) % TAGS.len()].to_string())
            .collect(),
        status,
        created_at: timestamp(2024, i),
        updated_at: timestamp(2025, i),
        image,
        metafields,
        variants,
        deleted: false,
    }
}

/// Title, handle and description: every 50th product has accents, some descriptions have
/// quotes, newlines, tabs and markup, some are empty.
fn product_texts(i: usize, id: u64) -> (String, String, String) {
    let adj = ADJECTIVES[i % ADJECTIVES.len()];
    let (noun, _) = NOUNS[(i / ADJECTIVES.len()) % NOUNS.len()];
    let (title, handle) = if i % 50 == 13 {
        (
            format!("Café Crème {noun} {id}"),
            format!("cafe-creme-{}-{id}", noun.to_lowercase()),
        )
    } else {
        (
            format!("{adj} {noun} {id}"),
            format!("{}-{}-{id}", adj.to_lowercase(), noun.to_lowercase()),
        )
    };
    let description = if i % 9 == 4 {
        format!("The \"{adj}\" {noun}.\nLine two — with a tab\tand <b>markup</b>.")
    } else if i % 11 == 10 {
        String::new()
    } else {
        format!(
            "A {} {} for every day.",
            adj.to_lowercase(),
            noun.to_lowercase()
        )
    };
    (title, handle, description)
}

/// The featured image (URL, alt text): none on every 6th product, alt text on even ones.
fn product_image(i: usize, title: &str, handle: &str) -> Option<(String, Option<String>)> {
    if i % 6 == 5 {
        return None;
    }
    Some((
        format!("https://cdn.shopify.com/s/files/1/0600/0001/files/{handle}.jpg?v=1700000000"),
        i.is_multiple_of(2).then(|| format!("{title} front view")),
    ))
}

fn build_metafields(i: usize, id: u64, ids: &mut IdAlloc) -> Vec<Metafield> {
    let n_meta = if i == RICH_METAFIELDS_PRODUCT {
        RICH_METAFIELDS_COUNT
    } else {
        i % 3
    };
    (0..n_meta)
        .map(|m| {
            let (key, kind) = META_KEYS[m % META_KEYS.len()];
            let value = match kind {
                "number_integer" => ((i + m) % 5 + 1).to_string(),
                "json" => format!(
                    "{{\"waterproof\":{},\"layers\":{}}}",
                    i.is_multiple_of(2),
                    m
                ),
                "multi_line_text_field" => "Wash cold.\nDry flat.".to_string(),
                "url" => format!("https://example.com/size-charts/{id}"),
                _ => format!("{key} value {id}"),
            };
            let mf = Metafield {
                id: ids.metafield,
                key: key.to_string(),
                kind,
                value,
            };
            ids.metafield += 1;
            mf
        })
        .collect()
}

fn build_variants(i: usize, id: u64, n_var: usize, sized: bool, ids: &mut IdAlloc) -> Vec<Variant> {
    let base = 999 + (i as u64 * 137) % 9000;
    let mut variants = Vec::with_capacity(n_var);
    for j in 0..n_var {
        let size = if sized {
            Some(format!("Size {}", j + 1))
        } else if n_var == 1 {
            None
        } else {
            Some(SIZES[j % SIZES.len()].to_string())
        };
        let levels = variant_levels(i, j, sized, ids.variants_made);
        let price = base + j as u64 * 500;
        variants.push(Variant {
            id: ids.variant,
            product_id: id,
            title: size.clone().unwrap_or_else(|| "Default Title".into()),
            size,
            sku: if i % 17 == 16 {
                None
            } else {
                Some(format!("SKU-{id}-{}", j + 1))
            },
            price: money(price),
            compare_at: i.is_multiple_of(4).then(|| money(price + 1000)),
            inventory_item_id: ids.item,
            levels,
        });
        ids.variant += 1;
        ids.item += 1;
        ids.variants_made += 1;
    }
    variants
}

/// Variant `j` of product `i` is stocked at 2 locations spread by `made` (the variants
/// generated before it), or at `MANY_LOCATIONS_COUNT` for the special variant.
fn variant_levels(i: usize, j: usize, sized: bool, made: usize) -> Vec<Level> {
    let n_levels = if !sized && i == MANY_LOCATIONS_PRODUCT && j == MANY_LOCATIONS_VARIANT {
        MANY_LOCATIONS_COUNT
    } else {
        2
    };
    let mut locs: Vec<usize> = if n_levels > 2 {
        (0..n_levels).collect()
    } else {
        (0..n_levels)
            .map(|k| (made + k * 3) % LOCATIONS.len())
            .collect()
    };
    locs.sort_unstable();
    locs.into_iter()
        .map(|loc| Level {
            location: loc,
            available: ((i * 31 + j * 17 + loc * 7) % 50) as i64 - 3,
        })
        .collect()
}

impl ShopData {
    pub(super) fn generate(domain: &str, cfg: &FakeConfig) -> ShopData {
        let mut ids = IdAlloc {
            variant: 40001,
            item: 50001,
            metafield: 80001,
            variants_made: 0,
        };
        let products = (0..cfg.products)
            .map(|i| match cfg.many_variants {
                Some((p, n)) if p == i => build_product(i, n.max(1), true, &mut ids),
                _ => build_product(i, 1 + i % 3, false, &mut ids),
            })
            .collect();
        ShopData {
            domain: domain.to_string(),
            shop_id: 10_000_000 + fnv(domain) % 90_000_000,
            products,
            collections: (0..cfg.collections)
                .map(|k| generate_collection(k, cfg.products))
                .collect(),
            discounts: generate_discounts(cfg.discounts),
            subscriptions: Vec::new(),
            last_access_token: None,
            last_refresh_token: None,
            update_seq: 0,
            bucket: BUCKET_MAX,
            bucket_at: Instant::now(),
            ids,
        }
    }
}

/// The `k`-th collection of a shop with `np` products.
fn generate_collection(k: usize, np: usize) -> Collection {
    let (title, handle, members): (String, String, Vec<usize>) = match k {
        BIG_COLLECTION_AT => (
            "Big Collection".into(),
            BIG_COLLECTION_HANDLE.into(),
            (0..np.min(BIG_COLLECTION_SIZE))
                .map(|p| (p * 5) % np.max(1))
                .collect(),
        ),
        EXACT_COLLECTION_AT => (
            "Exactly Fifty".into(),
            EXACT_COLLECTION_HANDLE.into(),
            (0..np.min(50)).map(|p| np - 1 - p).collect(),
        ),
        EMPTY_COLLECTION_AT => ("Empty".into(), EMPTY_COLLECTION_HANDLE.into(), Vec::new()),
        _ => {
            let (noun, _) = NOUNS[k % NOUNS.len()];
            (
                format!("{noun} Picks {k}"),
                format!("{}-picks-{k}", noun.to_lowercase()),
                (0..np).filter(|p| (p * 7 + k).is_multiple_of(23)).collect(),
            )
        }
    };
    Collection {
        id: 3001 + k as u64,
        description: if k % 4 == 1 {
            String::new()
        } else {
            format!("Hand-picked: {title}.")
        },
        title,
        handle,
        updated_at: timestamp(2025, 100 + k),
        products: dedup(members),
        deleted: false,
    }
}

/// `n` code discounts of the three kinds, their codes numbered across the shop from 60001.
fn generate_discounts(n: usize) -> Vec<Discount> {
    let mut code_id = 60001u64;
    (0..n)
        .map(|k| {
            let n_codes = match k {
                MANY_CODES_DISCOUNT => MANY_CODES_COUNT,
                EXACT_CODES_DISCOUNT => 10,
                _ => 1 + k % 2,
            };
            let codes = (0..n_codes)
                .map(|c| {
                    let v = (code_id, format!("SAVE{k}-{}", c + 1));
                    code_id += 1;
                    v
                })
                .collect();
            generate_discount(k, codes)
        })
        .collect()
}

fn generate_discount(k: usize, codes: Vec<(u64, String)>) -> Discount {
    let (typename, title, summary) = match k % 3 {
        0 => (
            "DiscountCodeBasic",
            format!("Save {}%", 5 + (k % 6) * 5),
            format!("{}% off entire order", 5 + (k % 6) * 5),
        ),
        1 => (
            "DiscountCodeBxgy",
            format!("Buy 2 get 1 #{k}"),
            "Buy 2 items, get 1 item free".to_string(),
        ),
        _ => (
            "DiscountCodeFreeShipping",
            format!("Free shipping #{k}"),
            "Free shipping on all products • Minimum purchase of $50.00".to_string(),
        ),
    };
    Discount {
        id: 4001 + k as u64,
        typename,
        title,
        status: if k % 7 == 6 {
            "EXPIRED"
        } else if k % 11 == 10 {
            "SCHEDULED"
        } else {
            "ACTIVE"
        },
        summary,
        starts_at: timestamp(2025, 200 + k),
        ends_at: (!k.is_multiple_of(2)).then(|| timestamp(2027, k)),
        usage_limit: (k % 3 == 2).then_some(100),
        once_per_customer: k % 2 == 1,
        codes,
        created_at: timestamp(2025, 180 + k),
        updated_at: timestamp(2025, 150 + k),
        deleted: false,
    }
}

/// Keeps the first of repeated product indexes (a collection lists a product once).
fn dedup(v: Vec<usize>) -> Vec<usize> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|x| seen.insert(*x)).collect()
}
