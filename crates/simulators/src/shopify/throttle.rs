//! Shopify's rate limits as the fake applies them: the leaky cost bucket (`simulate_bucket`),
//! the single-query cost limit, and the injected throttles, failures and delays.

use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::catalogue::ShopData;
use super::graphql::Outcome;
use super::{json_response, FakeShopify, State, BUCKET_MAX, RESTORE_RATE};
use crate::http;

impl FakeShopify {
    /// The next `n` authorised GraphQL requests answer HTTP 200 with a `THROTTLED` error, no
    /// `data`, and `currentlyAvailable` 5 points below the requested cost (a ~5 ms wait).
    pub fn throttle_next(&self, n: usize) {
        self.st().throttle_next = n;
    }

    /// The next `n` GraphQL requests (checked before authentication) answer HTTP `status`:
    /// 429 with `Retry-After: 0` and Shopify's JSON body, 5xx with a plain-text body, other
    /// codes with `{"errors": "<reason>"}`.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.st().fail_next = (status, n);
    }

    /// Delay every GraphQL answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.st().delay = d;
    }
}

impl ShopData {
    /// Refills the cost bucket at the restore rate.
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.bucket_at).as_secs_f64();
        self.bucket = (self.bucket + dt * RESTORE_RATE).min(BUCKET_MAX);
        self.bucket_at = now;
    }
}

impl State {
    /// What Shopify answers instead of running a request whose requested cost is throttled
    /// (injected, or more than the bucket holds when it is simulated) or above the single-query
    /// limit: HTTP 200 with a GraphQL error and the cost extension.
    pub(super) fn cost_refusal(&mut self, shop: &str, requested: u64) -> Option<Response> {
        let simulate = self.config.simulate_bucket;
        let max_cost = self.config.max_query_cost;
        let s = self.shop_mut(shop);
        s.refill();
        let available_now = s.bucket;
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            let avail = if simulate {
                available_now.min(requested.saturating_sub(5) as f64)
            } else {
                requested.saturating_sub(5) as f64
            };
            return Some(throttled(requested, avail));
        }
        if simulate && requested as f64 > available_now {
            return Some(throttled(requested, available_now));
        }
        if requested > max_cost {
            let avail = if simulate { available_now } else { BUCKET_MAX };
            return Some(max_cost_exceeded(requested, max_cost, avail));
        }
        None
    }

    /// Takes the actual cost of an answer from the shop's bucket; the `cost` extension.
    pub(super) fn charge(&mut self, shop: &str, requested: u64, outcome: &Outcome) -> Value {
        let actual = match outcome {
            Outcome::Data(_, a) => *a,
            Outcome::Errors(_) => 0,
        };
        let simulate = self.config.simulate_bucket;
        let s = self.shop_mut(shop);
        let avail = if simulate {
            s.bucket = (s.bucket - actual as f64).max(0.0);
            s.bucket
        } else {
            BUCKET_MAX - actual as f64
        };
        cost(requested, Some(actual), avail)
    }
}

fn max_cost_exceeded(requested: u64, max_cost: u64, available: f64) -> Response {
    let msg = format!(
        "Query cost is {requested}, which exceeds the single query max cost limit ({max_cost}).\n\nSee https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\ncost of a query is calculated.\n\nTo query larger amounts of data with fewer limits, bulk operations should be used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
    );
    let err = json!({
        "message": msg,
        "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested, "maxCost": max_cost},
    });
    json_response(
        StatusCode::OK,
        json!({"errors": [err], "extensions": {"cost": cost(requested, Some(0), available)}}),
    )
}

/// The `extensions.cost` of an answer.
fn cost(requested: u64, actual: Option<u64>, available: f64) -> Value {
    json!({
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {
            "maximumAvailable": BUCKET_MAX,
            "currentlyAvailable": available.floor().max(0.0) as u64,
            "restoreRate": RESTORE_RATE,
        },
    })
}

fn throttled(requested: u64, available: f64) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "errors": [{
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }],
            "extensions": {"cost": cost(requested, None, available)},
        }),
    )
}

/// An injected failure (`fail_next`) as Shopify answers it.
pub(super) fn failure_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    if code == StatusCode::TOO_MANY_REQUESTS {
        let mut r = json_response(
            code,
            json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        r
    } else if code.is_server_error() {
        http::plain_status(code)
    } else {
        json_response(code, json!({"errors": reason}))
    }
}
