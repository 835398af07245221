//! A conversation's window (SPEC §3.1): `<psid>.json` holds its newest `CONVERSATION_WINDOW`
//! entries (and up to a quarter more, see `slack`) and older ones live in
//! `<psid>/<yyyy-mm>.json`, so the cost of storing a new
//! message does not grow with the conversation's history. This module is the pure part (what
//! goes where); `conversations::merge_with_changes` reads and writes the objects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::changes::{self, Applied};
use super::messages::{entry_id, merge_entries, timestamp};
use crate::ids::Month;

/// What one merge into the window decided.
#[derive(Debug, Default)]
pub struct WindowMerge {
    /// The new window (sorted, at most the window's size).
    pub window: Vec<Value>,
    /// Entries for month objects: rolled out of the window, or older than it on arrival.
    pub to_months: BTreeMap<Month, Vec<Value>>,
    /// Edits and reactions whose message is not in the window.
    pub unresolved: Vec<Value>,
}

/// How many entries beyond its size a window holds before the oldest move to their months.
pub fn slack(size: usize) -> usize {
    (size / 4).max(1)
}

/// The sort key of an entry: timestamp, then id.
fn order(e: &Value) -> (i64, Option<String>) {
    (timestamp(e), entry_id(e))
}

/// Merges `new` (entries, edits, reactions) into the window `current` of at most `size`.
pub fn merge(current: Option<Value>, new: &[Value], size: usize) -> WindowMerge {
    let stored: Vec<Value> = match current {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let (mut pending, entries): (Vec<&Value>, Vec<&Value>) =
        new.iter().partition(|v| changes::is_change(v));
    // A full window's oldest entry is the boundary: anything older arriving now is a late
    // entry and goes straight to its month.
    let boundary = (stored.len() >= size)
        .then(|| stored.first().map(order))
        .flatten();
    let (late, fresh): (Vec<&Value>, Vec<&Value>) = entries
        .into_iter()
        .partition(|e| boundary.as_ref().is_some_and(|b| order(e) < *b));
    let mut window = match merge_entries(Some(Value::Array(stored)), fresh) {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    pending.sort_by_key(|c| timestamp(c));
    let mut unresolved = Vec::new();
    for c in pending {
        if changes::apply(&mut window, c) == Applied::NoTarget {
            unresolved.push(c.clone());
        }
    }
    // Entries leave the window in batches: it may hold up to a quarter more than its size,
    // and when that is full the oldest go at once (one write per month they belong to). Rolling
    // one entry out with every message would rewrite a month object each time, and a busy
    // month is far larger than the window.
    let mut to_months: BTreeMap<Month, Vec<Value>> = BTreeMap::new();
    let over = if window.len() > size + slack(size) {
        window.len() - size
    } else {
        0
    };
    for e in window.drain(..over).chain(late.into_iter().cloned()) {
        to_months
            .entry(Month::of_millis(timestamp(&e)))
            .or_default()
            .push(e);
    }
    WindowMerge {
        window,
        to_months,
        unresolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000;
    // 2026-01-01T00:00:00Z
    const JAN: i64 = 1_767_225_600_000;

    fn msg(n: i64, ts: i64) -> Value {
        json!({"sender": {"id": "5"}, "timestamp": ts, "message": {"mid": format!("m{n:04}"), "text": "x"}})
    }

    fn mids(v: &[Value]) -> Vec<String> {
        v.iter()
            .map(|e| e["message"]["mid"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_window_keeps_the_newest_and_rolls_the_rest_into_their_months() {
        let all: Vec<Value> = (0..10).map(|n| msg(n, JAN + n * 10 * DAY)).collect();
        let m = merge(None, &all, 4);
        assert_eq!(mids(&m.window), ["m0006", "m0007", "m0008", "m0009"]);
        let months: Vec<String> = m.to_months.keys().map(|k| k.to_string()).collect();
        assert_eq!(months, ["2026-01", "2026-02"]);
        assert_eq!(
            mids(&m.to_months[&Month::parse("2026-01").unwrap()]),
            ["m0000", "m0001", "m0002", "m0003"]
        );
        assert_eq!(
            mids(&m.to_months[&Month::parse("2026-02").unwrap()]),
            ["m0004", "m0005"]
        );
    }

    #[test]
    fn a_late_entry_goes_to_its_month_and_a_redelivery_stays_put() {
        let window: Vec<Value> = (5..9).map(|n| msg(n, JAN + n * DAY)).collect();
        let current = Some(Value::Array(window.clone()));
        let m = merge(current.clone(), &[msg(1, JAN + DAY)], 4);
        assert_eq!(mids(&m.window), mids(&window));
        assert_eq!(mids(&m.to_months[&Month::of_millis(JAN)]), ["m0001"]);
        let again = merge(current, &[msg(6, JAN + 6 * DAY)], 4);
        assert_eq!(mids(&again.window), mids(&window));
        assert!(again.to_months.is_empty());
    }

    #[test]
    fn changes_for_messages_outside_the_window_are_handed_back() {
        let edit = json!({"sender": {"id": "5"}, "timestamp": JAN, "message_edit": {"mid": "m0001", "text": "y", "num_edit": 1}});
        let m = merge(Some(json!([msg(2, JAN)])), &[edit], 4);
        assert_eq!(m.unresolved.len(), 1);
    }
}
