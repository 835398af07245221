//! The GraphQL Admin API endpoint: one table of the operations the service's documents name
//! (`operationName` → requested cost, handler), and the checks Shopify makes before running
//! one (API version, injected failures, access token, cost).

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::args::{
    after_arg, first_arg, id_arg, product_ids_filter, updated_at_filter, updated_since,
};
use super::catalogue::{ShopData, Variant};
use super::generate::gid;
use super::render::{
    codes_conn, collection_products_conn, connection, levels_conn, metafields_conn, paginate,
    product_total, render_collection, render_discount, render_product, render_shop, render_variant,
    variant_available, variant_quantity,
};
use super::{json_response, FakeSubscription, Shared, State, INVALID_TOKEN_BODY, MAX_PAGE};
use crate::http;

/// What an operation answers.
pub(super) enum Outcome {
    /// `data` and the actual cost.
    Data(Value, u64),
    /// GraphQL `errors` (HTTP 200), no `data`.
    Errors(Vec<Value>),
}

/// An operation's answer, or the GraphQL error its variables earn.
pub(super) type Reply = Result<Outcome, Value>;

/// One operation: its name, its requested cost from `first` (Shopify's model: connection =
/// 2 + first × node cost, object = 1, scalar/enum = 0) and how it runs.
struct Operation {
    name: &'static str,
    cost: fn(u64) -> u64,
    run: Run,
}

enum Run {
    /// Reads the shop's catalogue.
    Read(fn(&ShopData, &Value) -> Reply),
    /// Changes the fake's state (subscriptions, bulk operations).
    Write(fn(&mut State, &str, &Value) -> Reply),
}

/// Every operation of the service's documents (`src/shopify/queries.rs`). Costs in comments
/// count the nested objects and connections the document selects.
const OPERATIONS: &[Operation] = &[
    // shop 1 + primaryDomain 1
    op("Shop", |_| 2, Run::Read(shop)),
    op("ShopId", |_| 1, Run::Read(shop_id)),
    // product 1 + options/featuredImage/priceRangeV2/min/max 5 + metafields (2 + 5)
    op("Products", |first| 2 + first * 13, Run::Read(products)),
    op(
        "ProductMetafields",
        |first| 1 + 2 + first,
        Run::Read(product_metafields),
    ),
    op("ProductsCount", |_| 1, Run::Read(products_count)),
    op("ProductIds", |first| 2 + first, Run::Read(product_ids)),
    // product 13 + variants (2 + first × 21)
    op("Product", |first| 13 + 2 + first * 21, Run::Read(product)),
    // item 1 + variant 1 + product 1 + levels (2 + 5 × 3)
    op("InventoryItem", |_| 3 + 17, Run::Read(inventory_item)),
    // variant 1 + selectedOptions/product/inventoryItem 3 + levels (2 + 5 × 3)
    op(
        "ProductVariants",
        |first| 2 + first * 21,
        Run::Read(product_variants),
    ),
    op(
        "InventoryLevels",
        |first| 1 + 2 + first * 3,
        Run::Read(inventory_levels),
    ),
    // collection 1 + products (2 + 50)
    op(
        "Collections",
        |first| 2 + first * 53,
        Run::Read(collections),
    ),
    op("Collection", |_| 53, Run::Read(collection)),
    op(
        "CollectionProducts",
        |first| 1 + 2 + first,
        Run::Read(collection_products),
    ),
    // node 1 + codeDiscount 1 + codes (2 + 10)
    op(
        "CodeDiscounts",
        |first| 2 + first * 14,
        Run::Read(code_discounts),
    ),
    op("CodeDiscount", |_| 14, Run::Read(code_discount)),
    op(
        "DiscountCodes",
        |first| 1 + 1 + 2 + first,
        Run::Read(discount_codes),
    ),
    op(
        "WebhookSubscriptions",
        |first| 2 + first,
        Run::Read(webhook_subscriptions),
    ),
    op(
        "WebhookSubscriptionCreate",
        |_| 10,
        Run::Write(State::create_subscription),
    ),
    op("BulkOperationRunQuery", |_| 10, Run::Write(State::run_bulk)),
    op("BulkOperation", |_| 1, Run::Write(State::bulk_status)),
];

const fn op(name: &'static str, cost: fn(u64) -> u64, run: Run) -> Operation {
    Operation { name, cost, run }
}

fn find(name: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|o| o.name == name)
}

/// Requested cost of an operation, `None` for an unknown one.
pub(super) fn requested_cost(op: &str, vars: &Value) -> Option<u64> {
    let first = vars["first"].as_u64().unwrap_or(0).min(MAX_PAGE as u64);
    find(op).map(|o| (o.cost)(first))
}

/// What Shopify answers for a root field it does not have.
fn undefined_field(op: &str) -> Outcome {
    let field = {
        let mut c = op.chars();
        match c.next() {
            Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
            None => String::new(),
        }
    };
    Outcome::Errors(vec![json!({
        "message": format!("Field '{field}' doesn't exist on type 'QueryRoot'"),
        "locations": [{"line": 2, "column": 3}],
        "path": ["query", field],
        "extensions": {
            "code": "undefinedField",
            "typeName": "QueryRoot",
            "fieldName": field,
        },
    })])
}

impl State {
    fn execute(&mut self, shop: &str, op: &str, vars: &Value) -> Reply {
        match find(op).map(|o| &o.run) {
            Some(Run::Read(f)) => f(self.shop_mut(shop), vars),
            Some(Run::Write(f)) => f(self, shop, vars),
            None => Ok(undefined_field(op)),
        }
    }

    /// Answers one GraphQL request, counted first whatever the answer.
    fn handle_graphql(
        &mut self,
        shop: &str,
        version: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let op = parsed.as_ref().and_then(operation_name);
        self.count_request(shop, op.as_deref(), parsed.as_ref());
        if let Some(refused) = self.refusal(shop, version, headers) {
            return refused;
        }
        let (Some(body), Some(op)) = (parsed, op) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"errors": {"query": "Required parameter missing or invalid"}}),
            );
        };
        let vars = match &body["variables"] {
            Value::Null => json!({}),
            v => v.clone(),
        };
        let requested = requested_cost(&op, &vars).unwrap_or(0);
        if let Some(refused) = self.cost_refusal(shop, requested) {
            return refused;
        }
        let outcome = self
            .execute(shop, &op, &vars)
            .unwrap_or_else(|e| Outcome::Errors(vec![e]));
        let ext = json!({"cost": self.charge(shop, requested, &outcome)});
        let body = match outcome {
            Outcome::Data(data, _) => json!({"data": data, "extensions": ext}),
            Outcome::Errors(errors) => json!({"errors": errors, "extensions": ext}),
        };
        json_response(StatusCode::OK, body)
    }

    fn count_request(&mut self, shop: &str, op: Option<&str>, body: Option<&Value>) {
        self.total_graphql += 1;
        let Some(op) = op else {
            return;
        };
        *self.op_requests.entry(op.to_string()).or_default() += 1;
        *self
            .shop_op_requests
            .entry((shop.to_string(), op.to_string()))
            .or_default() += 1;
        if let Some(b) = body {
            self.last_bodies.insert(op.to_string(), b.clone());
        }
    }

    /// What Shopify answers instead when a check before the document is read fails: the API
    /// version exists (404), an injected failure (`fail_next`), the access token belongs to
    /// the shop (401).
    fn refusal(&mut self, shop: &str, version: &str, headers: &HeaderMap) -> Option<Response> {
        if version != self.config.api_version {
            return Some(json_response(
                StatusCode::NOT_FOUND,
                json!({"errors": "Not Found"}),
            ));
        }
        if self.fail_next.1 > 0 {
            self.fail_next.1 -= 1;
            return Some(super::throttle::failure_response(self.fail_next.0));
        }
        let token = headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if self.access_tokens.get(token).map(String::as_str) != Some(shop) {
            return Some(json_response(
                StatusCode::UNAUTHORIZED,
                json!({"errors": INVALID_TOKEN_BODY}),
            ));
        }
        None
    }
}

/// The operation a request runs: `operationName`, or the name of the document's operation.
fn operation_name(body: &Value) -> Option<String> {
    if let Some(op) = body["operationName"].as_str().filter(|s| !s.is_empty()) {
        return Some(op.to_string());
    }
    // Like GraphQL servers: a document with a single named operation needs no operationName.
    let q = body["query"].as_str()?;
    let mut words = q.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    while let Some(w) = words.next() {
        if w == "query" || w == "mutation" {
            return words.find(|w| !w.is_empty()).map(str::to_string);
        }
    }
    None
}

/// `POST /{shop}/admin/api/{version}/graphql.json`, after `set_delay`. Requests of a shop
/// being answered at once are counted (`max_in_flight`) to show whether the service waits for
/// one answer before asking again.
pub(super) async fn graphql_handler(
    AxState(state): AxState<Shared>,
    Path((shop, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = {
        let mut st = http::lock(&state);
        let n = st.in_flight.entry(shop.clone()).or_default();
        *n += 1;
        let now = *n;
        let max = st.max_in_flight.entry(shop.clone()).or_default();
        *max = (*max).max(now);
        st.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = http::lock(&state);
    if let Some(n) = st.in_flight.get_mut(&shop) {
        *n -= 1;
    }
    st.handle_graphql(&shop, &version, &headers, &body)
}

// ---------------------------------------------------------------------------------------------
// Read operations
// ---------------------------------------------------------------------------------------------

fn shop(s: &ShopData, _: &Value) -> Reply {
    Ok(Outcome::Data(json!({"shop": render_shop(s)}), 2))
}

fn shop_id(s: &ShopData, _: &Value) -> Reply {
    Ok(Outcome::Data(
        json!({"shop": {"id": render_shop(s)["id"]}}),
        1,
    ))
}

/// `products(first, after, query)`: the `updated_at` search of scheduled polls.
fn products(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let filter = updated_at_filter(vars)?;
    let matching = s.live_products().filter(|p| updated_since(p, filter));
    let (page, more) = paginate(matching, |p| p.id, first, after);
    let mut cost = 2;
    let edges = page
        .into_iter()
        .map(|p| {
            let (node, c) = render_product(s, p);
            cost += 1 + c;
            (p.id, node)
        })
        .collect();
    Ok(Outcome::Data(
        json!({"products": connection(edges, more)}),
        cost,
    ))
}

fn product_metafields(s: &ShopData, vars: &Value) -> Reply {
    let (id, first, after) = (id_arg(vars, "Product")?, first_arg(vars)?, after_arg(vars)?);
    Ok(match id.and_then(|id| s.product_by_id(id)) {
        Some(p) => {
            let (conn, c) = metafields_conn(p, first, after);
            Outcome::Data(json!({"product": {"metafields": conn}}), 1 + c)
        }
        None => Outcome::Data(json!({"product": null}), 1),
    })
}

fn products_count(s: &ShopData, _: &Value) -> Reply {
    Ok(Outcome::Data(
        json!({"productsCount": {"count": s.live_products().count(), "precision": "EXACT"}}),
        1,
    ))
}

fn product_ids(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let (page, more) = paginate(s.live_products(), |p| p.id, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|p| (p.id, json!({"id": gid("Product", p.id)})))
        .collect();
    Ok(Outcome::Data(
        json!({"products": connection(edges, more)}),
        cost,
    ))
}

/// `product(id)` with a page of its variants (without their `product`).
fn product(s: &ShopData, vars: &Value) -> Reply {
    let (id, first, after) = (id_arg(vars, "Product")?, first_arg(vars)?, after_arg(vars)?);
    let Some(p) = id.and_then(|id| s.product_by_id(id)) else {
        return Ok(Outcome::Data(json!({"product": null}), 1));
    };
    let (mut node, pcost) = render_product(s, p);
    let mut sorted: Vec<&Variant> = p.variants.iter().collect();
    sorted.sort_by_key(|v| v.id);
    let (page, more) = paginate(sorted, |v| v.id, first, after);
    let mut cost = 1 + pcost + 2;
    let edges = page
        .into_iter()
        .map(|v| {
            let (mut vnode, c) = render_variant(v);
            if let Some(o) = vnode.as_object_mut() {
                o.remove("product");
            }
            cost += c.saturating_sub(1);
            (v.id, vnode)
        })
        .collect();
    node["variants"] = connection(edges, more);
    Ok(Outcome::Data(json!({"product": node}), cost))
}

fn inventory_item(s: &ShopData, vars: &Value) -> Reply {
    let Some((p, v)) = id_arg(vars, "InventoryItem")?.and_then(|id| s.item_lookup(id)) else {
        return Ok(Outcome::Data(json!({"inventoryItem": null}), 1));
    };
    let (levels, lcost) = levels_conn(v, 5, None);
    Ok(Outcome::Data(
        json!({"inventoryItem": {
            "id": gid("InventoryItem", v.inventory_item_id),
            "variant": {
                "id": gid("ProductVariant", v.id),
                "inventoryQuantity": variant_quantity(v),
                "availableForSale": variant_available(v),
                "product": {
                    "id": gid("Product", p.id),
                    "totalInventory": product_total(p),
                },
            },
            "inventoryLevels": levels,
        }}),
        3 + lcost,
    ))
}

/// `productVariants(first, after, query)`: the `product_ids` search of webhook follow-ups.
fn product_variants(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let products = product_ids_filter(vars)?;
    let all = s
        .live_products()
        .filter(|p| products.as_ref().is_none_or(|ids| ids.contains(&p.id)))
        .flat_map(|p| p.variants.iter());
    let (page, more) = paginate(all, |v| v.id, first, after);
    let mut cost = 2;
    let edges = page
        .into_iter()
        .map(|v| {
            let (node, c) = render_variant(v);
            cost += c;
            (v.id, node)
        })
        .collect();
    Ok(Outcome::Data(
        json!({"productVariants": connection(edges, more)}),
        cost,
    ))
}

fn inventory_levels(s: &ShopData, vars: &Value) -> Reply {
    let (id, first, after) = (
        id_arg(vars, "InventoryItem")?,
        first_arg(vars)?,
        after_arg(vars)?,
    );
    Ok(match id.and_then(|id| s.variant_by_item(id)) {
        Some(v) => {
            let (conn, c) = levels_conn(v, first, after);
            Outcome::Data(json!({"inventoryItem": {"inventoryLevels": conn}}), 1 + c)
        }
        None => Outcome::Data(json!({"inventoryItem": null}), 1),
    })
}

fn collections(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let (page, more) = paginate(s.live_collections(), |c| c.id, first, after);
    let mut cost = 2;
    let edges = page
        .into_iter()
        .map(|c| {
            let (node, k) = render_collection(s, c);
            cost += k;
            (c.id, node)
        })
        .collect();
    Ok(Outcome::Data(
        json!({"collections": connection(edges, more)}),
        cost,
    ))
}

fn collection(s: &ShopData, vars: &Value) -> Reply {
    let id = id_arg(vars, "Collection")?;
    Ok(
        match id.and_then(|id| s.live_collections().find(|c| c.id == id)) {
            Some(c) => {
                let (node, k) = render_collection(s, c);
                Outcome::Data(json!({"collection": node}), k)
            }
            None => Outcome::Data(json!({"collection": null}), 1),
        },
    )
}

fn collection_products(s: &ShopData, vars: &Value) -> Reply {
    let (id, first, after) = (
        id_arg(vars, "Collection")?,
        first_arg(vars)?,
        after_arg(vars)?,
    );
    Ok(
        match id.and_then(|id| s.live_collections().find(|c| c.id == id)) {
            Some(c) => {
                let (conn, k) = collection_products_conn(s, c, first, after);
                Outcome::Data(json!({"collection": {"products": conn}}), 1 + k)
            }
            None => Outcome::Data(json!({"collection": null}), 1),
        },
    )
}

fn code_discounts(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let (page, more) = paginate(s.live_discounts(), |d| d.id, first, after);
    let mut cost = 2;
    let edges = page
        .into_iter()
        .map(|d| {
            let (node, k) = render_discount(d);
            cost += k;
            (d.id, node)
        })
        .collect();
    Ok(Outcome::Data(
        json!({"codeDiscountNodes": connection(edges, more)}),
        cost,
    ))
}

fn code_discount(s: &ShopData, vars: &Value) -> Reply {
    let id = id_arg(vars, "DiscountCodeNode")?;
    Ok(
        match id.and_then(|id| s.live_discounts().find(|d| d.id == id)) {
            Some(d) => {
                let (node, k) = render_discount(d);
                Outcome::Data(json!({"codeDiscountNode": node}), k)
            }
            None => Outcome::Data(json!({"codeDiscountNode": null}), 1),
        },
    )
}

fn discount_codes(s: &ShopData, vars: &Value) -> Reply {
    let (id, first, after) = (
        id_arg(vars, "DiscountCodeNode")?,
        first_arg(vars)?,
        after_arg(vars)?,
    );
    Ok(
        match id.and_then(|id| s.live_discounts().find(|d| d.id == id)) {
            Some(d) => {
                let (conn, k) = codes_conn(d, first, after);
                Outcome::Data(
                    json!({"codeDiscountNode": {"codeDiscount": {"codes": conn}}}),
                    2 + k,
                )
            }
            None => Outcome::Data(json!({"codeDiscountNode": null}), 1),
        },
    )
}

fn webhook_subscriptions(s: &ShopData, vars: &Value) -> Reply {
    let (first, after) = (first_arg(vars)?, after_arg(vars)?);
    let key = |w: &FakeSubscription| {
        w.id.rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (page, more) = paginate(&s.subscriptions, key, first, after);
    let cost = 2 + page.len() as u64;
    let edges = page
        .into_iter()
        .map(|w| (key(w), json!({"id": w.id, "topic": w.topic, "uri": w.uri})))
        .collect();
    Ok(Outcome::Data(
        json!({"webhookSubscriptions": connection(edges, more)}),
        cost,
    ))
}
