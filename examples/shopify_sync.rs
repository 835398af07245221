//! Benchmark: Shopify full sync (time, peak memory of the server) and webhook → object latency
//! of single changes, against the simulated Admin API.
//!
//! It starts the simulated Shopify in this process (on a runtime of its own), runs the real
//! server binary against it, connects the shop through the real OAuth flow (the initial full
//! sync: paged queries up to `SHOPIFY_BULK_THRESHOLD` products, a bulk operation above), then
//! makes changes one at a time on a fixed schedule — alternately a variant's price
//! (`products/update`) and an inventory level (`inventory_levels/update`) — posts Shopify's
//! signed webhook for each, and watches `shop_products.json` for the new value.
//!
//! ```text
//! cargo build --release --bins --examples
//! ./target/release/examples/shopify_sync --products 620
//! ./target/release/examples/shopify_sync --products 100000
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};
use salesbot_sync::ids::{MerchantId, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::platforms::shopify::signature::sign_webhook;
use serde_json::Value;

mod common;
use common::{free_port, percentile, start_s3, S3_BUCKET, S3_KEY, S3_SECRET};

#[derive(Parser, Debug)]
#[command(about = "Shopify full sync and per-change latency")]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/salesbot-sync")]
    bin: PathBuf,
    /// Products in the simulated shop.
    #[arg(long, default_value_t = 620)]
    products: usize,
    /// Changes made (one webhook each).
    #[arg(long, default_value_t = 40)]
    changes: usize,
    /// Seconds between changes (open loop).
    #[arg(long, default_value_t = 0.5)]
    interval: f64,
    /// Object store: `s3` (an S3 server over HTTP in this process, as in production) or
    /// `local` (the local folder backend).
    #[arg(long, default_value = "s3")]
    store: String,
    /// `SHOPIFY_BULK_THRESHOLD` of the server.
    #[arg(long, default_value_t = 2000)]
    bulk_threshold: u64,
    /// `RUST_LOG` of the server.
    #[arg(long, default_value = "warn")]
    log: String,
}

const SHOP: &str = "bench.myshopify.com";

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmHWM` (peak resident set) and `VmRSS` of a process, in MiB.
fn memory_of(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn queue_idle(client: &reqwest::Client, base: &str) -> bool {
    let Ok(r) = client.get(format!("{base}/")).send().await else {
        return false;
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["queue"]["pending"].as_i64() == Some(0) && v["queue"]["running"].as_i64() == Some(0)
}

/// Watches one object file and records when each awaited marker first appears in it.
fn watch(
    path: PathBuf,
    awaited: Arc<Mutex<HashMap<String, Option<Instant>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut version = None;
        let mut versions = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let now = Instant::now();
            if let Ok(meta) = std::fs::metadata(&path) {
                let v = (
                    std::os::unix::fs::MetadataExt::ino(&meta),
                    meta.modified().ok(),
                    meta.len(),
                );
                if version != Some(v) {
                    if let Ok(bytes) = std::fs::read(&path) {
                        version = Some(v);
                        versions += 1;
                        let text = String::from_utf8_lossy(&bytes);
                        let mut a = awaited.lock().unwrap();
                        for (marker, seen) in a.iter_mut().filter(|(_, s)| s.is_none()) {
                            if text.contains(marker.as_str()) {
                                *seen = Some(now);
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        versions
    })
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
    topic: &str,
    id: &str,
    body: &Value,
) {
    let bytes = serde_json::to_vec(body).unwrap();
    let r = client
        .post(format!("{base}/shopify/webhook"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Shop-Domain", SHOP)
        .header(
            "X-Shopify-Hmac-Sha256",
            sign_webhook(secret.as_bytes(), &bytes),
        )
        .header("X-Shopify-Event-Id", id)
        .header(
            "X-Shopify-Triggered-At",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "webhook");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    args.bin = std::fs::canonicalize(&args.bin).map_err(|e| {
        anyhow::anyhow!(
            "cannot find {}: {e} (build it with cargo build --release)",
            args.bin.display()
        )
    })?;
    let dir = tempfile::tempdir()?;
    let s3_root = dir.path().join("s3");
    let use_s3 = args.store == "s3";
    let products = args.products;
    let (tx, rx) = std::sync::mpsc::channel();
    let generated = Instant::now();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let fake = FakeShopify::start(FakeConfig {
                products,
                ..FakeConfig::default()
            })
            .await;
            let s3 = if use_s3 {
                Some(start_s3(&s3_root).await)
            } else {
                None
            };
            tx.send((fake, s3)).unwrap();
            std::future::pending::<()>().await
        })
    });
    let (fake, s3) = rx.recv()?;
    eprintln!(
        "simulated shop with {products} products ready in {:.1} s",
        generated.elapsed().as_secs_f64()
    );

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("BIND_ADDR".into(), format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL".into(), base.clone()),
        (
            "STATE_TOKEN_SECRET".into(),
            "bench-state-secret-0123456789abcdef0123".into(),
        ),
        (
            "TOKEN_ENCRYPTION_KEY".into(),
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        ),
        ("TOKEN_DB_PATH".into(), p("tokens.db")),
        ("SESSION_DB_PATH".into(), p("sessions.db")),
        ("EVENTS_DB_PATH".into(), p("events.db")),
        ("CATALOG_DB_PATH".into(), p("catalog.db")),
        ("STORAGE_DIR".into(), p("objects")),
        ("BACKUP_DIR".into(), p("backups")),
        ("SHOPIFY_INITIAL_SYNC_WAIT_SECS".into(), "0".into()),
        ("RUST_LOG".into(), args.log.clone()),
        (
            "SHOPIFY_BULK_THRESHOLD".into(),
            args.bulk_threshold.to_string(),
        ),
    ];
    vars.extend(fake.vars());
    if let Some(endpoint) = &s3 {
        vars.extend([
            ("SPACES_KEY".into(), S3_KEY.into()),
            ("SPACES_SECRET".into(), S3_SECRET.into()),
            ("SPACES_BUCKET".into(), S3_BUCKET.into()),
            ("SPACES_REGION".into(), "us-east-1".into()),
            ("SPACES_ENDPOINT".into(), endpoint.clone()),
        ]);
    }
    let child = Command::new(&args.bin)
        .arg("serve")
        .envs(vars.iter().cloned())
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();
    let _server = Server(child);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. The initial full sync.
    let (baseline_peak, _) = memory_of(pid);
    let started = Instant::now();
    let answer: Value = common::connect_shop(&client, &base, &fake, "bench")
        .await
        .json()
        .await
        .unwrap();
    let merchant = MerchantId::parse(answer["user_uuid"].as_str().unwrap()).unwrap();
    let shop = ShopDomain::parse(SHOP).unwrap();
    let key = keys::shop_products(&merchant, &shop);
    let object = match &s3 {
        Some(_) => dir.path().join("s3").join(S3_BUCKET).join(key.as_str()),
        None => dir.path().join("objects").join(key.as_str()),
    };
    let mut sampled_peak: f64 = 0.0;
    while !(object.exists() && queue_idle(&client, &base).await) {
        sampled_peak = sampled_peak.max(memory_of(pid).1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full_sync = started.elapsed();
    let (peak, rss) = memory_of(pid);
    let calls_full = fake.total_graphql_requests();
    let bulk = fake.bulk_operations_started();
    let size = std::fs::metadata(&object)?.len();
    println!(
        "full sync of {products} products ({}): {:.1} s, {calls_full} GraphQL requests, \
         shop_products.json {:.1} MiB",
        if bulk > 0 {
            "bulk operation"
        } else {
            "paged queries"
        },
        full_sync.as_secs_f64(),
        size as f64 / 1048576.0
    );
    println!(
        "server memory: peak RSS {peak:.0} MiB (before connecting {baseline_peak:.0} MiB), \
         RSS after the sync {rss:.0} MiB"
    );

    // 2. Single changes, one webhook each.
    let awaited: Arc<Mutex<HashMap<String, Option<Instant>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch(object.clone(), awaited.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    fake.reset_counters();
    let secret = fake.config().api_secret;
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut product_changes = 0;
    let tick = Duration::from_secs_f64(args.interval);
    let begin = Instant::now();
    for i in 0..args.changes {
        let due = begin + tick * i as u32;
        tokio::time::sleep_until(due.into()).await;
        // Spread over the catalogue (a prime stride), never the same product twice in a row.
        let product = (i * 7919 + 13) % products;
        let (marker, topic, body) = if i % 2 == 0 {
            let price = format!("{}.{:02}", 70_000 + i, 17);
            fake.set_variant_price(SHOP, product, 0, &price);
            product_changes += 1;
            (
                format!("\"{price}\""),
                "products/update",
                fake.product_webhook_body(SHOP, product),
            )
        } else {
            let qty = 880_000 + i as i64;
            fake.set_available(SHOP, product, 0, 0, qty);
            (
                format!(":{qty}"),
                "inventory_levels/update",
                fake.inventory_level_webhook_body(SHOP, product, 0, 0),
            )
        };
        awaited.lock().unwrap().insert(marker.clone(), None);
        sent.insert(marker, Instant::now());
        post(&client, &base, &secret, topic, &format!("bench-{i}"), &body).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = awaited.lock().unwrap().values().all(Option::is_some);
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let versions = watcher.join().unwrap();
    let a = awaited.lock().unwrap();
    let mut latencies: Vec<Duration> = a
        .iter()
        .filter_map(|(m, seen)| seen.map(|t| t.duration_since(sent[m])))
        .collect();
    latencies.sort();
    let missing = a.values().filter(|s| s.is_none()).count();
    let calls = fake.total_graphql_requests();
    let (peak_after, _) = memory_of(pid);
    println!(
        "{} changes every {} ms ({} price, {} inventory): webhook → object p50 {}, p99 {}, \
         max {}{}",
        args.changes,
        tick.as_millis(),
        product_changes,
        args.changes - product_changes,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        if missing > 0 {
            format!(", {missing} never seen")
        } else {
            String::new()
        }
    );
    println!(
        "GraphQL requests per change: {:.2} (Product {}, InventoryItem {}, other {}); \
         shop_products.json versions written: {}",
        calls as f64 / args.changes as f64,
        fake.requests("Product"),
        fake.requests("InventoryItem"),
        calls - fake.requests("Product") - fake.requests("InventoryItem"),
        versions.saturating_sub(1)
    );
    println!("server peak RSS over the whole run: {peak_after:.0} MiB");
    Ok(())
}
