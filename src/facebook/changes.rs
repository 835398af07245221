//! Edits and reactions (SPEC §3.1): they change a stored entry and are not entries.
//!
//! `message_edit` (`{mid, text, num_edit}`) replaces the entry's `message.text`, appends the
//! text it replaced to `message.edits` (`[{text, timestamp}]`, oldest first) and records the
//! highest edit applied in `message.num_edit`, so a redelivered or older edit changes nothing.
//! `reaction` (`{mid, action, reaction, emoji}`) sets or removes its sender's reaction in
//! `message.reactions` (one per sender, sorted by sender).
//!
//! A change whose message is not stored yet (Meta does not order deliveries) is handed back;
//! the merge job queues it again for later (`jobs::FacebookMessage::wait`), so it is kept in
//! the durable queue until its message arrives.

use serde_json::{json, Map, Value};

/// What applying one change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// Already applied (a redelivery) or older than what is stored: nothing changed.
    Unchanged,
    /// Its message is not in the entries given.
    NoTarget,
}

/// Whether a messaging item is an edit or a reaction.
pub fn is_change(item: &Value) -> bool {
    item.get("message_edit").is_some() || item.get("reaction").is_some()
}

/// The identity of a change (its queue dedupe key): an edit by its message and edit number, a
/// reaction by its sender, message, time and action.
pub fn change_id(item: &Value) -> Option<String> {
    if let Some(e) = item.get("message_edit") {
        let mid = e.get("mid").and_then(Value::as_str)?;
        let n = e.get("num_edit").and_then(Value::as_i64).unwrap_or(0);
        return Some(format!("edit:{mid}:{n}"));
    }
    let r = item.get("reaction")?;
    let mid = r.get("mid").and_then(Value::as_str)?;
    let sender = item.pointer("/sender/id").and_then(Value::as_str)?;
    let ts = item.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    let action = r.get("action").and_then(Value::as_str).unwrap_or("");
    Some(format!("reaction:{sender}:{mid}:{ts}:{action}"))
}

/// Applies `change` to the entry it names among `entries`.
pub fn apply(entries: &mut [Value], change: &Value) -> Applied {
    let (key, body) = match (change.get("message_edit"), change.get("reaction")) {
        (Some(e), _) => ("edit", e),
        (None, Some(r)) => ("reaction", r),
        _ => return Applied::Unchanged,
    };
    let Some(mid) = body.get("mid").and_then(Value::as_str) else {
        return Applied::Unchanged;
    };
    let Some(message) = entries
        .iter_mut()
        .filter_map(|e| e.get_mut("message").and_then(Value::as_object_mut))
        .find(|m| m.get("mid").and_then(Value::as_str) == Some(mid))
    else {
        return Applied::NoTarget;
    };
    if key == "edit" {
        apply_edit(message, body, change.get("timestamp"))
    } else {
        let sender = change.pointer("/sender/id").cloned().unwrap_or(Value::Null);
        apply_reaction(message, body, sender)
    }
}

fn apply_edit(message: &mut Map<String, Value>, edit: &Value, at: Option<&Value>) -> Applied {
    let n = edit.get("num_edit").and_then(Value::as_i64).unwrap_or(0);
    let highest = message.get("num_edit").and_then(Value::as_i64).unwrap_or(0);
    if n <= highest {
        return Applied::Unchanged;
    }
    let before = message.get("text").cloned().unwrap_or(json!(""));
    let stamp = at.cloned().unwrap_or(Value::Null);
    let edits = message.entry("edits").or_insert_with(|| json!([]));
    if let Some(list) = edits.as_array_mut() {
        list.push(json!({"text": before, "timestamp": stamp}));
    }
    let text = edit.get("text").cloned().unwrap_or(json!(""));
    message.insert("text".into(), text);
    message.insert("num_edit".into(), json!(n));
    Applied::Changed
}

fn apply_reaction(message: &mut Map<String, Value>, r: &Value, sender: Value) -> Applied {
    let mut list: Vec<Value> = message
        .get("reactions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = list.clone();
    list.retain(|x| x.get("sender") != Some(&sender));
    if r.get("action").and_then(Value::as_str) == Some("react") {
        let mut mine = json!({"sender": sender});
        for field in ["reaction", "emoji"] {
            if let Some(v) = r.get(field) {
                mine[field] = v.clone();
            }
        }
        list.push(mine);
    }
    list.sort_by(|a, b| a["sender"].to_string().cmp(&b["sender"].to_string()));
    if list == before {
        return Applied::Unchanged;
    }
    if list.is_empty() {
        message.remove("reactions");
    } else {
        message.insert("reactions".into(), Value::Array(list));
    }
    Applied::Changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Value> {
        vec![
            json!({"sender": {"id": "5"}, "timestamp": 1, "message": {"mid": "m1", "text": "blue?"}}),
        ]
    }

    fn edit(n: i64, text: &str, ts: i64) -> Value {
        json!({"sender": {"id": "5"}, "timestamp": ts, "message_edit": {"mid": "m1", "text": text, "num_edit": n}})
    }

    fn reaction(sender: &str, action: &str, ts: i64) -> Value {
        json!({"sender": {"id": sender}, "timestamp": ts, "reaction": {"mid": "m1", "action": action, "reaction": "love", "emoji": "\u{2764}"}})
    }

    #[test]
    fn edits_keep_the_previous_texts_and_ignore_redeliveries() {
        let mut e = entries();
        assert_eq!(apply(&mut e, &edit(1, "red?", 2)), Applied::Changed);
        assert_eq!(apply(&mut e, &edit(2, "green?", 3)), Applied::Changed);
        assert_eq!(apply(&mut e, &edit(1, "red?", 2)), Applied::Unchanged);
        assert_eq!(apply(&mut e, &edit(2, "green?", 3)), Applied::Unchanged);
        let m = &e[0]["message"];
        assert_eq!(m["text"], "green?");
        assert_eq!(
            m["edits"],
            json!([{"text": "blue?", "timestamp": 2}, {"text": "red?", "timestamp": 3}])
        );
        let other = json!({"sender": {"id": "5"}, "timestamp": 4, "message_edit": {"mid": "m9", "text": "x", "num_edit": 1}});
        assert_eq!(apply(&mut e, &other), Applied::NoTarget);
    }

    #[test]
    fn reactions_are_one_per_sender_and_removable() {
        let mut e = entries();
        assert_eq!(apply(&mut e, &reaction("5", "react", 2)), Applied::Changed);
        assert_eq!(
            apply(&mut e, &reaction("5", "react", 2)),
            Applied::Unchanged
        );
        assert_eq!(
            apply(&mut e, &reaction("100", "react", 3)),
            Applied::Changed
        );
        assert_eq!(e[0]["message"]["reactions"].as_array().unwrap().len(), 2);
        assert_eq!(
            apply(&mut e, &reaction("5", "unreact", 4)),
            Applied::Changed
        );
        assert_eq!(
            e[0]["message"]["reactions"],
            json!([{"sender": "100", "reaction": "love", "emoji": "\u{2764}"}])
        );
        assert_eq!(
            apply(&mut e, &reaction("100", "unreact", 5)),
            Applied::Changed
        );
        assert!(e[0]["message"].get("reactions").is_none());
    }

    #[test]
    fn changes_have_stable_ids() {
        assert!(is_change(&edit(1, "x", 1)) && is_change(&reaction("5", "react", 1)));
        assert_eq!(change_id(&edit(1, "x", 1)).as_deref(), Some("edit:m1:1"));
        assert_ne!(
            change_id(&reaction("5", "react", 1)),
            change_id(&reaction("5", "unreact", 2))
        );
    }
}
