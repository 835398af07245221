//! Messenger events in the webhook shape: which conversation they belong to, their identity,
//! the conversion of polled messages, and the merge into a conversation file.

use std::collections::HashSet;

use serde_json::{json, Value};

/// The customer of a messaging item: whichever of sender and recipient is not the page
/// (for the page's own echoes the customer is the recipient).
pub fn customer_of(item: &Value, page_id: &str) -> Option<String> {
    let sender = item.pointer("/sender/id").and_then(Value::as_str);
    let recipient = item.pointer("/recipient/id").and_then(Value::as_str);
    match (sender, recipient) {
        (Some(s), Some(r)) if s == page_id => Some(r.to_string()),
        (Some(s), _) if s != page_id => Some(s.to_string()),
        _ => None,
    }
}

/// Whether a messaging item is kept in a conversation: messages (incl. echoes and
/// attachments), postbacks and referrals (an ad or m.me link the customer came from);
/// delivery/read receipts and the like are not.
pub fn is_conversation_entry(item: &Value) -> bool {
    item.get("message").is_some()
        || item.get("postback").is_some()
        || item.get("referral").is_some()
}

/// The identity of an entry: the message `mid`, the postback's `mid`, for a referral (which
/// has none) its sender and time, else a stable key from the postback's sender, time and
/// payload.
pub fn entry_id(item: &Value) -> Option<String> {
    if super::changes::is_change(item) {
        return super::changes::change_id(item);
    }
    if let Some(mid) = item.pointer("/message/mid").and_then(Value::as_str) {
        return Some(mid.to_string());
    }
    let sender = item
        .pointer("/sender/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let ts = item.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    if item.get("message").is_none() && item.get("postback").is_none() {
        return item
            .get("referral")
            .map(|_| format!("referral:{sender}:{ts}"));
    }
    let pb = item.get("postback")?;
    if let Some(mid) = pb.get("mid").and_then(Value::as_str) {
        return Some(mid.to_string());
    }
    let payload = pb.get("payload").and_then(Value::as_str).unwrap_or("");
    Some(format!(
        "postback:{sender}:{ts}:{}",
        &crate::crypto::sha256_hex(payload.as_bytes())[..16]
    ))
}

pub(super) fn timestamp(item: &Value) -> i64 {
    item.get("timestamp").and_then(Value::as_i64).unwrap_or(0)
}

/// Merges `new` entries into `existing` (a JSON array): unique by entry id, the stored
/// version wins, sorted by timestamp then id. Returns the merged array.
pub fn merge(existing: Option<Value>, new: &[Value]) -> Value {
    merge_with_changes(existing, new).0
}

/// `merge`, where `new` may also hold edits and reactions: they are applied (oldest first)
/// after the entries are merged; those whose message is not stored are handed back.
pub fn merge_with_changes(existing: Option<Value>, new: &[Value]) -> (Value, Vec<Value>) {
    let (mut changes, entries): (Vec<&Value>, Vec<&Value>) =
        new.iter().partition(|v| super::changes::is_change(v));
    let mut merged = merge_entries(existing, entries);
    changes.sort_by_key(|c| timestamp(c));
    let mut waiting = Vec::new();
    if let Value::Array(items) = &mut merged {
        for c in changes {
            if super::changes::apply(items, c) == super::changes::Applied::NoTarget {
                waiting.push(c.clone());
            }
        }
    }
    (merged, waiting)
}

pub(super) fn merge_entries(existing: Option<Value>, new: Vec<&Value>) -> Value {
    let mut items: Vec<Value> = existing
        .and_then(|v| match v {
            Value::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_default();
    let mut seen: HashSet<String> = items.iter().filter_map(entry_id).collect();
    for n in new {
        if let Some(id) = entry_id(n) {
            if seen.insert(id) {
                items.push((*n).clone());
            }
        }
    }
    items.sort_by(|a, b| {
        timestamp(a)
            .cmp(&timestamp(b))
            .then_with(|| entry_id(a).cmp(&entry_id(b)))
    });
    Value::Array(items)
}

/// Graph `created_time` (`2026-11-20T10:00:00+0000`) → epoch milliseconds.
pub fn parse_graph_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A message from the Graph API (`/{conversation}/messages`) in the webhook shape.
pub fn from_graph(msg: &Value, page_id: &str) -> Option<Value> {
    let mid = msg.get("id").and_then(Value::as_str)?;
    let from = msg.pointer("/from/id").and_then(Value::as_str)?;
    let to = msg
        .pointer("/to/data/0/id")
        .and_then(Value::as_str)
        .unwrap_or(page_id);
    let ts = msg
        .get("created_time")
        .and_then(Value::as_str)
        .and_then(parse_graph_time)?;
    let mut message = serde_json::Map::new();
    message.insert("mid".into(), json!(mid));
    if let Some(text) = msg
        .get("message")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        message.insert("text".into(), json!(text));
    }
    let attachments: Vec<Value> = msg
        .pointer("/attachments/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(attachment_from_graph)
        .collect();
    if !attachments.is_empty() {
        message.insert("attachments".into(), Value::Array(attachments));
    }
    if let Some(sticker) = msg.get("sticker").and_then(Value::as_str) {
        message.insert("sticker".into(), json!(sticker));
    }
    if from == page_id {
        message.insert("is_echo".into(), json!(true));
    }
    Some(json!({
        "sender": {"id": from},
        "recipient": {"id": to},
        "timestamp": ts,
        "message": Value::Object(message),
    }))
}

fn attachment_from_graph(a: &Value) -> Value {
    let mime = a.get("mime_type").and_then(Value::as_str).unwrap_or("");
    let kind = match mime.split('/').next() {
        Some("image") => "image",
        Some("video") => "video",
        Some("audio") => "audio",
        _ => "file",
    };
    let url = a
        .pointer("/image_data/url")
        .or_else(|| a.pointer("/video_data/url"))
        .or_else(|| a.get("file_url"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({"type": kind, "payload": {"url": url}, "name": a.get("name"), "mime_type": mime})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(mid: &str, ts: i64, from: &str, to: &str) -> Value {
        json!({"sender": {"id": from}, "recipient": {"id": to}, "timestamp": ts, "message": {"mid": mid, "text": mid}})
    }

    #[test]
    fn echoes_belong_to_the_customer() {
        assert_eq!(
            customer_of(&msg("a", 1, "555", "100"), "100").as_deref(),
            Some("555")
        );
        assert_eq!(
            customer_of(&msg("a", 1, "100", "555"), "100").as_deref(),
            Some("555")
        );
        assert_eq!(customer_of(&json!({}), "100"), None);
    }

    #[test]
    fn merge_is_unique_sorted_and_idempotent() {
        let a = msg("m1", 30, "5", "1");
        let b = msg("m2", 10, "1", "5");
        let c = msg("m3", 20, "5", "1");
        let once = merge(None, &[a.clone(), b.clone(), c.clone(), a.clone()]);
        let ids: Vec<_> = once
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"]["mid"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["m2", "m3", "m1"]);
        assert_eq!(merge(Some(once.clone()), &[c, b]), once);
    }

    #[test]
    fn graph_messages_convert_to_webhook_shape() {
        let g = json!({
            "id": "m_1", "created_time": "2026-11-20T10:00:00+0000",
            "from": {"id": "100", "name": "Page"}, "to": {"data": [{"id": "555"}]},
            "message": "hi", "attachments": {"data": [{"mime_type": "image/jpeg", "image_data": {"url": "https://x/y.jpg"}}]}
        });
        let w = from_graph(&g, "100").unwrap();
        assert_eq!(w["sender"]["id"], "100");
        assert_eq!(w["recipient"]["id"], "555");
        assert_eq!(w["timestamp"], 1_795_168_800_000i64);
        assert_eq!(w["message"]["is_echo"], true);
        assert_eq!(w["message"]["attachments"][0]["type"], "image");
        assert_eq!(customer_of(&w, "100").as_deref(), Some("555"));
    }

    #[test]
    fn postbacks_have_stable_ids() {
        let p = json!({"sender": {"id": "5"}, "recipient": {"id": "1"}, "timestamp": 7, "postback": {"title": "Buy", "payload": "BUY_1"}});
        assert!(is_conversation_entry(&p));
        assert_eq!(entry_id(&p), entry_id(&p.clone()));
        assert!(!is_conversation_entry(
            &json!({"delivery": {"mids": ["x"]}})
        ));
        assert!(!is_conversation_entry(&json!({"read": {"watermark": 1}})));
    }
}
