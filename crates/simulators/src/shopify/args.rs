//! GraphQL variables of the operations, checked as Shopify checks them: a wrong type, a page
//! too large, a malformed cursor or GID, or a search term the fake does not understand is a
//! GraphQL error (HTTP 200, no `data`), never silently ignored.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::catalogue::Product;
use super::render::decode_cursor;
use super::MAX_PAGE;

/// A GraphQL error entry with Shopify's `extensions.code`.
pub(super) fn gql_error(message: impl Into<String>, code: &str) -> Value {
    json!({
        "message": message.into(),
        "locations": [{"line": 2, "column": 3}],
        "extensions": {"code": code},
    })
}

pub(super) fn first_arg(vars: &Value) -> Result<usize, Value> {
    match &vars["first"] {
        Value::Null => Err(gql_error(
            "you must provide one of first or last",
            "argumentLiteralsIncompatible",
        )),
        v => match v.as_u64() {
            Some(n) if n as usize <= MAX_PAGE => Ok(n as usize),
            Some(n) => Err(gql_error(
                format!("The value of `first` ({n}) exceeds the maximum of {MAX_PAGE}"),
                "argumentLiteralsIncompatible",
            )),
            None => Err(gql_error(
                format!("Variable $first of type Int! was provided invalid value: {v}"),
                "INVALID_VARIABLE",
            )),
        },
    }
}

pub(super) fn after_arg(vars: &Value) -> Result<Option<u64>, Value> {
    match &vars["after"] {
        Value::Null => Ok(None),
        Value::String(c) => decode_cursor(c).map(Some).ok_or_else(|| {
            gql_error(
                "Invalid cursor for current pagination sort.",
                "argumentLiteralsIncompatible",
            )
        }),
        v => Err(gql_error(
            format!("Variable $after of type String was provided invalid value: {v}"),
            "INVALID_VARIABLE",
        )),
    }
}

/// `Ok(Some(n))` for `gid://shopify/{kind}/n`, `Ok(None)` for a GID of another type.
pub(super) fn id_arg(vars: &Value, kind: &str) -> Result<Option<u64>, Value> {
    let raw = match &vars["id"] {
        Value::String(s) => s.clone(),
        Value::Null => {
            return Err(gql_error(
                "Variable $id of type ID! was provided invalid value",
                "INVALID_VARIABLE",
            ))
        }
        v => v.to_string(),
    };
    let invalid = || {
        gql_error(
            format!("Invalid global id '{raw}'"),
            "argumentLiteralsIncompatible",
        )
    };
    let rest = raw.strip_prefix("gid://shopify/").ok_or_else(invalid)?;
    let (k, n) = rest.split_once('/').ok_or_else(invalid)?;
    let n: u64 = n.parse().map_err(|_| invalid())?;
    Ok((k == kind).then_some(n))
}

/// The `$query` search string: `None` when null, absent or blank.
fn query_arg(vars: &Value) -> Result<Option<String>, Value> {
    match &vars["query"] {
        Value::Null => Ok(None),
        Value::String(q) if q.trim().is_empty() => Ok(None),
        Value::String(q) => Ok(Some(q.trim().to_string())),
        v => Err(gql_error(
            format!("Variable $query of type String was provided invalid value: {v}"),
            "INVALID_VARIABLE",
        )),
    }
}

fn unsupported_search(q: &str, supported: &str) -> Value {
    gql_error(
        format!("Unsupported search query '{q}': this fake understands only {supported}"),
        "argumentLiteralsIncompatible",
    )
}

/// A search value without its quotes (`'…'`, `"…"` or none).
fn unquote(v: &str) -> Option<&str> {
    let v = v.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q) {
            return inner.strip_suffix(q).filter(|i| !i.contains(q));
        }
    }
    (!v.is_empty() && !v.contains(['\'', '"']) && !v.contains(char::is_whitespace)).then_some(v)
}

/// `Products` search: `updated_at:>='<RFC3339>'` (or `>`; single, double or no quotes) →
/// `(cutoff, inclusive)`; `None` for every product; any other term is an error.
pub(super) fn updated_at_filter(vars: &Value) -> Result<Option<(DateTime<Utc>, bool)>, Value> {
    let Some(q) = query_arg(vars)? else {
        return Ok(None);
    };
    let bad = || unsupported_search(&q, "updated_at:>='<RFC3339>' and updated_at:>'<RFC3339>'");
    let rest = q.strip_prefix("updated_at:").ok_or_else(bad)?;
    let (inclusive, value) = match rest.strip_prefix(">=") {
        Some(v) => (true, v),
        None => (false, rest.strip_prefix('>').ok_or_else(bad)?),
    };
    let value = unquote(value).ok_or_else(bad)?;
    let at = DateTime::parse_from_rfc3339(value).map_err(|_| {
        gql_error(
            format!("Invalid updated_at value '{value}' in search query '{q}': expected an RFC 3339 date-time"),
            "argumentLiteralsIncompatible",
        )
    })?;
    Ok(Some((at.with_timezone(&Utc), inclusive)))
}

pub(super) fn updated_since(p: &Product, filter: Option<(DateTime<Utc>, bool)>) -> bool {
    let Some((cutoff, inclusive)) = filter else {
        return true;
    };
    match DateTime::parse_from_rfc3339(&p.updated_at) {
        Ok(t) if inclusive => t >= cutoff,
        Ok(t) => t > cutoff,
        Err(_) => false,
    }
}

/// `ProductVariants` search: `product_ids:1001,1002,…` (numeric ids; `product_id:1001` too)
/// → the product ids; `None` for every variant; any other term is an error.
pub(super) fn product_ids_filter(vars: &Value) -> Result<Option<HashSet<u64>>, Value> {
    let Some(q) = query_arg(vars)? else {
        return Ok(None);
    };
    let bad = || unsupported_search(&q, "product_ids:<id>,<id>,… (numeric product ids)");
    let rest = q
        .strip_prefix("product_ids:")
        .or_else(|| q.strip_prefix("product_id:"))
        .ok_or_else(bad)?;
    let list = unquote(rest).ok_or_else(bad)?;
    list.split(',')
        .map(|n| n.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<HashSet<u64>, Value>>()
        .map(Some)
}
