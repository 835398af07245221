//! How Graph answers a read: `fields` selects exactly the fields returned (`id` is always
//! added to nodes; absent values are omitted; unknown fields are refused with code 100), and
//! edges are cursor-paginated with `paging.cursors` and absolute `paging.next` / `previous`
//! links that carry `access_token`.

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Map, Value};
use url::Url;

use super::api::Req;
use super::errors::{graph_error, param_error};
use super::{State, DEFAULT_LIMIT, MAX_LIMIT};

#[derive(Clone, Debug)]
pub(super) struct Field {
    name: String,
    sub: Option<Vec<Field>>,
}

pub(super) fn default_fields(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field {
            name: n.to_string(),
            sub: None,
        })
        .collect()
}

/// `a,b{c,d},e.limit(5){f}` → fields (modifiers ignored).
pub(super) fn parse_fields(s: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '{' | '(' => {
                depth += 1;
                cur.push(ch);
            }
            '}' | ')' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth == 0 => {
                push_field(&mut out, &cur);
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    push_field(&mut out, &cur);
    out
}

fn push_field(out: &mut Vec<Field>, raw: &str) {
    let raw = raw.trim();
    if raw.is_empty() {
        return;
    }
    let end = raw.find(['{', '.', '(']).unwrap_or(raw.len());
    let sub = raw.find('{').and_then(|i| {
        raw.rfind('}')
            .filter(|&j| j > i)
            .map(|j| parse_fields(&raw[i + 1..j]))
    });
    out.push(Field {
        name: raw[..end].trim().to_string(),
        sub,
    });
}

/// The requested fields of a node (in request order, `id` added), or Graph's error for a
/// field the node type does not have.
pub(super) fn select(
    full: &Map<String, Value>,
    fields: &[Field],
    node_type: &str,
    known: &[&str],
) -> Result<Value, Response> {
    let mut out = Map::new();
    for f in fields {
        if !known.contains(&f.name.as_str()) {
            return Err(graph_error(
                &format!(
                    "(#100) Tried accessing nonexisting field ({}) on node type ({node_type})",
                    f.name
                ),
                "OAuthException",
                100,
                None,
            ));
        }
        if let Some(v) = full.get(&f.name) {
            let v = match &f.sub {
                Some(sub) => filter_sub(v, sub),
                None => v.clone(),
            };
            out.insert(f.name.clone(), v);
        }
    }
    if let Some(id) = full.get("id") {
        out.entry("id").or_insert_with(|| id.clone());
    }
    Ok(Value::Object(out))
}

fn filter_sub(v: &Value, sub: &[Field]) -> Value {
    match v {
        Value::Object(m) if m.contains_key("data") => {
            let mut m = m.clone();
            let inner = filter_sub(&m["data"], sub);
            m.insert("data".into(), inner);
            Value::Object(m)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for f in sub {
                if let Some(x) = m.get(&f.name) {
                    let x = match &f.sub {
                        Some(s) => filter_sub(x, s),
                        None => x.clone(),
                    };
                    out.insert(f.name.clone(), x);
                }
            }
            if let Some(id) = m.get("id") {
                out.entry("id").or_insert_with(|| id.clone());
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| filter_sub(x, sub)).collect()),
        other => other.clone(),
    }
}

fn encode_cursor(kind: &str, key: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}:{key}"))
}

fn decode_cursor(kind: &str, cursor: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let (k, key) = s.split_once(':')?;
    (k == kind).then_some(())?;
    key.parse().ok()
}

/// The `fields` of a request, or the node type's default ones.
pub(super) fn fields(req: &Req, default: &[&str]) -> Vec<Field> {
    match req.param("fields").map(parse_fields) {
        Some(f) if !f.is_empty() => f,
        _ => default_fields(default),
    }
}

/// The `limit` of an edge request (1 to `MAX_LIMIT`, `DEFAULT_LIMIT` when absent).
pub(super) fn limit(req: &Req) -> Result<usize, Response> {
    match req.param("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<i64>()
            .map(|n| (n.max(1) as usize).min(MAX_LIMIT))
            .map_err(|_| param_error("(#100) Param limit must be an integer")),
    }
}

impl State {
    /// One page of an edge. `items` are in answer order; `desc` says whether their keys
    /// decrease along it. Cursors are opaque (base64) keys.
    pub(super) fn paged(
        &self,
        req: &Req,
        items: Vec<(u64, Value)>,
        desc: bool,
        limit: usize,
        kind: &str,
    ) -> Result<Value, Response> {
        let cursor = |name: &str| -> Result<Option<u64>, Response> {
            match req.param(name) {
                None => Ok(None),
                Some(c) => decode_cursor(kind, c).map(Some).ok_or_else(|| {
                    param_error(&format!(
                        "(#100) The parameter {name} is not a valid cursor"
                    ))
                }),
            }
        };
        let after = cursor("after")?;
        let before = cursor("before")?;
        let later = |k: u64, c: u64| if desc { k < c } else { k > c };
        let (page, has_next): (Vec<(u64, Value)>, bool) = if let Some(b) = before {
            let prior: Vec<_> = items.into_iter().filter(|(k, _)| later(b, *k)).collect();
            let start = prior.len().saturating_sub(limit);
            (prior.into_iter().skip(start).collect(), true)
        } else {
            let rest: Vec<_> = items
                .into_iter()
                .filter(|(k, _)| after.is_none_or(|a| later(*k, a)))
                .collect();
            let has_next = rest.len() > limit;
            (rest.into_iter().take(limit).collect(), has_next)
        };
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(json!({"data": []}));
        };
        let first = encode_cursor(kind, first.0);
        let last = encode_cursor(kind, last.0);
        let mut paging = json!({"cursors": {"before": first, "after": last}});
        if has_next {
            paging["next"] = json!(self.link(req, limit, "after", &last));
        }
        if after.is_some() || before.is_some() {
            paging["previous"] = json!(self.link(req, limit, "before", &first));
        }
        let data: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
        Ok(json!({"data": data, "paging": paging}))
    }

    /// Absolute paging link: the request's query with `access_token` and the cursor.
    fn link(&self, req: &Req, limit: usize, name: &str, cursor: &str) -> String {
        let mut u = Url::parse(&format!("{}{}", self.base_url, req.path)).unwrap();
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("access_token", req.token.as_deref().unwrap_or_default());
            for (k, v) in &req.query {
                if !matches!(k.as_str(), "access_token" | "after" | "before" | "limit") {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("limit", &limit.to_string());
            q.append_pair(name, cursor);
        }
        u.to_string()
    }
}
