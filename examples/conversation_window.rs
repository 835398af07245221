//! What storing one new message costs as a conversation grows (SPEC §3.1): bytes read and
//! written per message and the merge's CPU time (parse, merge, serialise, hash), for
//! conversations of 100, 10,000 and 100,000 entries, with the window and month objects, and
//! with the whole conversation in one object as before. Object-store round trips are the same
//! count in both layouts (a GET and a PUT of the window, plus a month object's when entries
//! roll over); what grows is their size, which this prints.
//!
//! ```sh
//! cargo run --release --example conversation_window [-- --window 1000 --messages 300]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Parser;
use salesbot_sync::crypto::sha256_hex;
use salesbot_sync::facebook::{messages, window};
use salesbot_sync::ids::Month;
use salesbot_sync::objects::canonical_json;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// `CONVERSATION_WINDOW`.
    #[arg(long, default_value_t = 1_000)]
    window: usize,
    /// New messages stored one at a time per conversation size.
    #[arg(long, default_value_t = 300)]
    messages: usize,
}

/// 2026-01-01T00:00:00Z; one message a minute (100,000 span about ten weeks).
const START: i64 = 1_767_225_600_000;

fn entry(i: usize) -> Value {
    json!({
        "sender": {"id": "7100000000000001"},
        "recipient": {"id": "104700001000001"},
        "timestamp": START + i as i64 * 60_000,
        "message": {"mid": format!("m_{i:08}_aGVsbG8gd29ybGQgdGhpcyBpcyBhIG1pZA"),
                    "text": "Hi! Is the blue hoodie still available in size M?"},
    })
}

/// The serialised bytes and their SHA-256, as every object write computes them.
fn encode(v: &Value) -> Vec<u8> {
    let bytes = canonical_json(v).expect("serialisable");
    std::hint::black_box(sha256_hex(&bytes));
    bytes
}

struct Figures {
    micros: Vec<u128>,
    read: usize,
    written: usize,
}

impl Figures {
    fn line(&mut self, layout: &str, n: usize) {
        self.micros.sort_unstable();
        let pct = |p: f64| self.micros[((self.micros.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        let per = self.micros.len();
        println!(
            "{n:>8} {layout:<7} {:>10.1} {:>10.1} {:>9.2} {:>9.2}",
            self.read as f64 / per as f64 / 1024.0,
            self.written as f64 / per as f64 / 1024.0,
            pct(0.5),
            pct(0.99),
        );
    }
}

/// Windowed layout: the conversation split once, then `m` messages merged one at a time.
fn windowed(n: usize, m: usize, size: usize) -> Figures {
    let all: Vec<Value> = (0..n).map(entry).collect();
    let split = window::merge(None, &all, size);
    let mut win = encode(&Value::Array(split.window));
    let mut months: BTreeMap<Month, Vec<u8>> = split
        .to_months
        .into_iter()
        .map(|(k, v)| (k, encode(&Value::Array(v))))
        .collect();
    let mut f = Figures {
        micros: Vec::new(),
        read: 0,
        written: 0,
    };
    for i in n..n + m {
        let t = Instant::now();
        let current: Value = serde_json::from_slice(&win).expect("json");
        let merged = window::merge(Some(current), &[entry(i)], size);
        f.read += win.len();
        win = encode(&Value::Array(merged.window));
        f.written += win.len();
        for (month, entries) in merged.to_months {
            let old = months.remove(&month).unwrap_or_else(|| b"[]".to_vec());
            f.read += old.len();
            let cur: Value = serde_json::from_slice(&old).expect("json");
            let bytes = encode(&messages::merge(Some(cur), &entries));
            f.written += bytes.len();
            months.insert(month, bytes);
        }
        f.micros.push(t.elapsed().as_micros());
    }
    f
}

/// The layout before: the whole conversation read and written for each message.
fn whole(n: usize, m: usize) -> Figures {
    let all: Vec<Value> = (0..n).map(entry).collect();
    let mut obj = encode(&Value::Array(all));
    let mut f = Figures {
        micros: Vec::new(),
        read: 0,
        written: 0,
    };
    for i in n..n + m {
        let t = Instant::now();
        let current: Value = serde_json::from_slice(&obj).expect("json");
        f.read += obj.len();
        obj = encode(&messages::merge(Some(current), &[entry(i)]));
        f.written += obj.len();
        f.micros.push(t.elapsed().as_micros());
    }
    f
}

fn main() {
    let args = Args::parse();
    println!(
        "window {} entries; {} new messages per size",
        args.window, args.messages
    );
    println!(
        "{:>8} {:<7} {:>10} {:>10} {:>9} {:>9}",
        "entries", "layout", "read KiB", "write KiB", "p50 ms", "p99 ms"
    );
    for n in [100, 10_000, 100_000] {
        windowed(n, args.messages, args.window).line("window", n);
        // The old layout at 100,000 entries takes ~0.1 s a message: fewer samples.
        let m = if n >= 100_000 {
            args.messages / 10
        } else {
            args.messages
        };
        whole(n, m.max(10)).line("whole", n);
    }
}
