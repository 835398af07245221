//! Bulk operations: `bulkOperationRunQuery` snapshots the JSONL of a query, a background
//! task moves it to `RUNNING` then `COMPLETED` (or `FAILED`) and posts
//! `bulk_operations/finish`, `bulkOperation(id:)` reports it, and `GET /bulk/{shop}/{file}`
//! serves the results as the signed storage URLs Shopify hands out.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::args::{gql_error, id_arg};
use super::catalogue::{Level, Metafield, ShopData};
use super::generate::gid;
use super::graphql::{Outcome, Reply};
use super::render::{level_node, metafield_node, render_product, render_variant};
use super::{now_rfc3339, FakeShopify, Shared, State};
use crate::http::{self, Delivery};
use crate::ids::fnv;

/// What a bulk query reads: the fake runs the two the service sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BulkKind {
    Products,
    Variants,
}

pub(super) struct BulkOp {
    shop: String,
    /// `CREATED`, `RUNNING`, `COMPLETED` or `FAILED`.
    status: &'static str,
    /// The `errorCode` this operation will fail with.
    fail_with: Option<String>,
    error_code: Option<String>,
    /// The JSONL lines, snapshotted at creation.
    lines: Vec<String>,
    object_count: usize,
    url: Option<String>,
    partial_url: Option<String>,
    created_at: String,
    /// Stays `RUNNING` until `release_bulk` (see `hold_bulk`).
    held: bool,
}

pub(super) struct BulkFile {
    body: Bytes,
    pub(super) expired: bool,
}

impl FakeShopify {
    /// How long a bulk query takes from `bulkOperationRunQuery` to `COMPLETED` (or `FAILED`);
    /// it is `RUNNING` from half that time. Default 50 ms. Applies to operations created later.
    pub fn set_bulk_delay(&self, d: Duration) {
        self.st().bulk_delay = d;
    }

    /// The next `n` `bulkOperationRunQuery` calls answer the user error `LIMIT_REACHED` (no
    /// operation is created).
    pub fn bulk_limit_reached_next(&self, n: usize) {
        self.st().bulk_limit_next = n;
    }

    /// The next bulk operation created ends `FAILED` with this `errorCode` (e.g.
    /// `INTERNAL_SERVER_ERROR`, `TIMEOUT`, `ACCESS_DENIED`), `url` null and `partialDataUrl`
    /// pointing at a file with the first half of its lines (null when that half is empty).
    pub fn fail_next_bulk(&self, error_code: &str) {
        self.st().bulk_fail_next = Some(error_code.to_string());
    }

    /// Every bulk result file created so far (full and partial) answers HTTP 403 with the
    /// storage provider's `AccessDenied` / `Request has expired` XML; later files are fine.
    pub fn expire_bulk_urls(&self) {
        for f in self.st().bulk_files.values_mut() {
            f.expired = true;
        }
    }

    /// The next `n` result files created are already expired when first read (a link that ran
    /// out between `COMPLETED` and the download).
    pub fn expire_next_bulk_files(&self, n: usize) {
        self.st().bulk_expire_next = n;
    }

    /// The `n`-th bulk operation created from now on (1: the next one) snapshots its lines as
    /// usual but stays `RUNNING` until `release_bulk`: a test can change the shop after an
    /// operation's snapshot and before its result is read.
    pub fn hold_bulk(&self, n: usize) {
        self.st().bulk_hold_in = n;
    }

    /// Lets held operations finish (each after its delay, as usual).
    pub fn release_bulk(&self) {
        for op in self.st().bulk_ops.values_mut() {
            op.held = false;
        }
    }

    /// Requests to `GET /bulk/{shop}/{file}`, whatever the answer (200, 403 or 404).
    pub fn bulk_downloads(&self) -> usize {
        self.st().bulk_downloads
    }

    /// Bulk operations created by `bulkOperationRunQuery` (user errors excluded).
    pub fn bulk_operations_started(&self) -> usize {
        self.st().bulk_started
    }

    /// `bulk_operations/finish` webhooks posted (counted once each POST has been answered or
    /// has failed; failures are not retried).
    pub fn finish_webhooks_sent(&self) -> usize {
        self.st().finish_webhooks_sent
    }
}

/// The JSONL lines of a bulk query over the live catalogue.
///
/// Products: one line per product (the `Products` node without `metafields`) and one per
/// `custom` metafield (`__parentId` = the product). Variants: one line per variant (the
/// `ProductVariants` node with `inventoryItem { id }` only) and one per inventory level
/// (`__parentId` = the variant).
fn bulk_lines(s: &ShopData, kind: BulkKind) -> Vec<String> {
    let groups: Vec<(u64, Value, Vec<Value>)> = match kind {
        BulkKind::Products => s
            .live_products()
            .map(|p| {
                let (mut node, _) = render_product(s, p);
                if let Some(o) = node.as_object_mut() {
                    o.remove("metafields");
                }
                let parent = gid("Product", p.id);
                let mut metafields: Vec<&Metafield> = p.metafields.iter().collect();
                metafields.sort_by_key(|m| m.id);
                let children = metafields
                    .into_iter()
                    .map(|m| {
                        let mut line = metafield_node(m);
                        line["__parentId"] = json!(parent);
                        line
                    })
                    .collect();
                (p.id, node, children)
            })
            .collect(),
        BulkKind::Variants => s
            .live_variants()
            .map(|v| {
                let (mut node, _) = render_variant(v);
                node["inventoryItem"] = json!({"id": gid("InventoryItem", v.inventory_item_id)});
                let parent = gid("ProductVariant", v.id);
                let mut levels: Vec<&Level> = v.levels.iter().collect();
                levels.sort_by_key(|l| l.location);
                let children = levels
                    .into_iter()
                    .map(|l| {
                        let mut line = level_node(l);
                        line["__parentId"] = json!(parent);
                        line
                    })
                    .collect();
                (v.id, node, children)
            })
            .collect(),
    };
    arrange_bulk(groups)
}

/// Orders bulk lines as an ungrouped (`groupObjects: false`) operation may: parents in a
/// deterministic scrambled order; the children of every 7th parent (by id) before all parents;
/// the other children after them, interleaved across parents in another scrambled order. Each
/// parent's own children keep their connection order.
fn arrange_bulk(groups: Vec<(u64, Value, Vec<Value>)>) -> Vec<String> {
    let scrambled = |salt: &str| {
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by_key(|&i| (fnv(&format!("{salt}:{}", groups[i].0)), i));
        order
    };
    let parents = scrambled("parents");
    let children = scrambled("children");
    let interleave = |out: &mut Vec<String>, which: &[usize]| {
        let longest = which.iter().map(|&i| groups[i].2.len()).max().unwrap_or(0);
        for round in 0..longest {
            for &i in which {
                if let Some(c) = groups[i].2.get(round) {
                    out.push(c.to_string());
                }
            }
        }
    };
    let total = groups.iter().map(|g| 1 + g.2.len()).sum();
    let mut out = Vec::with_capacity(total);
    let (early, late): (Vec<usize>, Vec<usize>) = children.iter().partition(|&&i| i % 7 == 0);
    interleave(&mut out, &early);
    out.extend(parents.iter().map(|&i| groups[i].1.to_string()));
    interleave(&mut out, &late);
    out
}

impl State {
    /// `bulkOperationRunQuery`: validates, snapshots the JSONL and schedules completion.
    pub(super) fn run_bulk(&mut self, shop: &str, vars: &Value) -> Reply {
        let Some(document) = vars["query"].as_str() else {
            return Err(gql_error(
                "Variable $query of type String! was provided invalid value",
                "INVALID_VARIABLE",
            ));
        };
        if self.bulk_limit_next > 0 {
            self.bulk_limit_next -= 1;
            return Ok(bulk_user_error(
                Value::Null,
                "The maximum number of bulk query operations for this app and shop has been reached. Wait for one to finish.".into(),
                "LIMIT_REACHED",
            ));
        }
        let kind = match bulk_kind(document) {
            Ok(kind) => kind,
            Err(refused) => return Ok(refused),
        };
        if let Some(id) = self.running_bulk(shop) {
            return Ok(bulk_user_error(
                Value::Null,
                format!(
                    "A bulk query operation for this app and shop is already in progress: {}.",
                    gid("BulkOperation", id)
                ),
                "OPERATION_IN_PROGRESS",
            ));
        }
        let lines = bulk_lines(self.shop_mut(shop), kind);
        self.bulk_seq += 1;
        let id = self.bulk_seq;
        let fail_with = self.bulk_fail_next.take();
        let held = self.bulk_hold_in == 1;
        self.bulk_hold_in = self.bulk_hold_in.saturating_sub(1);
        self.bulk_ops.insert(
            id,
            BulkOp {
                shop: shop.to_string(),
                status: "CREATED",
                fail_with,
                error_code: None,
                lines,
                object_count: 0,
                url: None,
                partial_url: None,
                created_at: now_rfc3339(),
                held,
            },
        );
        self.bulk_started += 1;
        self.schedule_bulk(id);
        Ok(Outcome::Data(
            json!({"bulkOperationRunQuery": {
                "bulkOperation": {"id": gid("BulkOperation", id), "status": "CREATED"},
                "userErrors": [],
            }}),
            10,
        ))
    }

    /// The shop's oldest operation still `CREATED` or `RUNNING` (Shopify runs one at a time).
    fn running_bulk(&self, shop: &str) -> Option<u64> {
        self.bulk_ops
            .iter()
            .filter(|(_, op)| op.shop == shop && matches!(op.status, "CREATED" | "RUNNING"))
            .map(|(id, _)| *id)
            .min()
    }

    /// Moves the operation to `RUNNING` after half the bulk delay and finishes it after the
    /// whole delay (a held one once released, too), then posts the `bulk_operations/finish` webhooks.
    fn schedule_bulk(&mut self, id: u64) {
        let delay = self.bulk_delay;
        let me = self.me.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (not reachable through HTTP): finish at once, without webhooks.
            self.bulk_set_running(id);
            self.bulk_finish(id);
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(delay / 2).await;
            match me.upgrade() {
                Some(st) => http::lock(&st).bulk_set_running(id),
                None => return,
            }
            tokio::time::sleep(delay - delay / 2).await;
            loop {
                match me.upgrade() {
                    Some(st) if http::lock(&st).bulk_ops.get(&id).is_some_and(|op| op.held) => {}
                    Some(_) => break,
                    None => return,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let posts = match me.upgrade() {
                Some(st) => http::lock(&st).bulk_finish(id),
                None => return,
            };
            let client = http::client(Duration::from_secs(5));
            for post in posts {
                // Counted whether answered or failed (see `finish_webhooks_sent`); never retried.
                let _ = http::deliver(&client, post).await;
                match me.upgrade() {
                    Some(st) => http::lock(&st).finish_webhooks_sent += 1,
                    None => return,
                }
            }
        });
    }

    fn bulk_set_running(&mut self, id: u64) {
        if let Some(op) = self.bulk_ops.get_mut(&id) {
            if op.status == "CREATED" {
                op.status = "RUNNING";
            }
        }
    }

    /// Completes (or fails) the operation, stores its files, and returns the finish webhooks
    /// to post.
    fn bulk_finish(&mut self, id: u64) -> Vec<Delivery> {
        let base = self.base_url.clone();
        let Some(op) = self.bulk_ops.get_mut(&id) else {
            return Vec::new();
        };
        if !matches!(op.status, "CREATED" | "RUNNING") {
            return Vec::new();
        }
        let shop = op.shop.clone();
        let jsonl = |lines: &[String]| {
            let mut body = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for l in lines {
                body.push_str(l);
                body.push('\n');
            }
            Bytes::from(body)
        };
        let mut files = Vec::new();
        // The lines live on in the files only.
        let lines = std::mem::take(&mut op.lines);
        match op.fail_with.take() {
            None => {
                op.status = "COMPLETED";
                op.object_count = lines.len();
                if !lines.is_empty() {
                    let name = format!("{id}.jsonl");
                    op.url = Some(format!("{base}/bulk/{shop}/{name}"));
                    files.push((name, jsonl(&lines)));
                }
            }
            Some(code) => {
                op.status = "FAILED";
                op.error_code = Some(code);
                let half = &lines[..lines.len() / 2];
                op.object_count = half.len();
                if !half.is_empty() {
                    let name = format!("{id}-partial.jsonl");
                    op.partial_url = Some(format!("{base}/bulk/{shop}/{name}"));
                    files.push((name, jsonl(half)));
                }
            }
        }
        let body = json!({
            "admin_graphql_api_id": gid("BulkOperation", id),
            "completed_at": now_rfc3339(),
            "created_at": op.created_at,
            "error_code": op.error_code.as_ref().map(|c| c.to_lowercase()),
            "status": op.status.to_lowercase(),
            "type": "query",
        })
        .to_string();
        for (name, data) in files {
            let expired = self.bulk_expire_next > 0;
            self.bulk_expire_next = self.bulk_expire_next.saturating_sub(1);
            self.bulk_files.insert(
                (shop.clone(), name),
                BulkFile {
                    body: data,
                    expired,
                },
            );
        }
        self.webhook_posts(&shop, "bulk_operations/finish", body)
    }

    /// `bulkOperation(id:)`; `null` for unknown ids and other shops' operations.
    pub(super) fn bulk_status(&mut self, shop: &str, vars: &Value) -> Reply {
        let id = id_arg(vars, "BulkOperation")?;
        let node = match id.and_then(|id| self.bulk_ops.get(&id).map(|op| (id, op))) {
            Some((id, op)) if op.shop == shop => json!({
                "id": gid("BulkOperation", id),
                "status": op.status,
                "errorCode": op.error_code,
                // UnsignedInt64 is serialised as a string.
                "objectCount": op.object_count.to_string(),
                "url": op.url,
                "partialDataUrl": op.partial_url,
            }),
            _ => Value::Null,
        };
        Ok(Outcome::Data(json!({ "bulkOperation": node }), 1))
    }

    /// `GET /bulk/{shop}/{file}`.
    fn serve_bulk_file(&mut self, shop: &str, file: &str) -> Response {
        self.bulk_downloads += 1;
        let xml = |status: StatusCode, code: &str, message: &str| {
            (
                status,
                [(header::CONTENT_TYPE, "application/xml")],
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"),
            )
                .into_response()
        };
        match self.bulk_files.get(&(shop.to_string(), file.to_string())) {
            Some(f) if f.expired => {
                xml(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired")
            }
            Some(f) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jsonl")],
                f.body.clone(),
            )
                .into_response(),
            None => xml(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            ),
        }
    }
}

/// Which catalogue a bulk document reads, or the user error Shopify answers for a document
/// without a connection.
fn bulk_kind(document: &str) -> Result<BulkKind, Outcome> {
    if document.contains("productVariants") {
        Ok(BulkKind::Variants)
    } else if document.contains("products") {
        Ok(BulkKind::Products)
    } else {
        Err(bulk_user_error(
            json!(["query"]),
            "Bulk queries must contain at least one connection (this fake runs `products` and `productVariants`).".into(),
            "INVALID",
        ))
    }
}

/// `bulkOperationRunQuery`'s answer when no operation is created.
fn bulk_user_error(field: Value, message: String, code: &str) -> Outcome {
    Outcome::Data(
        json!({"bulkOperationRunQuery": {
            "bulkOperation": null,
            "userErrors": [{"field": field, "message": message, "code": code}],
        }}),
        10,
    )
}

/// `GET /bulk/{shop}/{file}`
pub(super) async fn bulk_file_handler(
    AxState(state): AxState<Shared>,
    Path((shop, file)): Path<(String, String)>,
) -> Response {
    http::lock(&state).serve_bulk_file(&shop, &file)
}
