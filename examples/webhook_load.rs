//! Load tool: posts N correctly signed Shopify webhook deliveries to a running server and
//! prints throughput and acknowledgement latency (p50/p99/max).
//!
//! The path measured is the production one: signature check + durable insert + 200.
//!
//! ```text
//! SHOPIFY_API_KEY=k SHOPIFY_API_SECRET=bench-secret cargo run --release &
//! cargo run --release --example webhook_load -- --secret bench-secret -n 20000 -c 64
//! cargo run --release --example webhook_load -- --secret bench-secret -n 10000 -c 64 --rate 1000
//! ```
//!
//! With `--rate`, requests are sent on a fixed schedule (open loop) and latency is measured
//! from each request's scheduled time, so a stalled server cannot hide its queueing delay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
#[command(about = "Post signed Shopify webhook deliveries and report acknowledgement latency")]
struct Args {
    /// Webhook address; several, comma-separated, are used in turn (instances sharing one
    /// PostgreSQL database).
    #[arg(
        long,
        default_value = "http://127.0.0.1:5000/shopify/webhook",
        value_delimiter = ','
    )]
    url: Vec<String>,
    /// SHOPIFY_API_SECRET of the server.
    #[arg(long)]
    secret: String,
    /// Number of deliveries.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    count: usize,
    /// Concurrent requests in flight at most.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Target deliveries per second (open loop); unset = as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct shops the deliveries are spread over.
    #[arg(long, default_value_t = 50)]
    shops: usize,
    /// Body size in bytes (a product payload is typically 1-4 KiB).
    #[arg(long, default_value_t = 1500)]
    body_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let run_id = salesbot_sync::crypto::random_token(6);
    let filler = "x".repeat(args.body_bytes.saturating_sub(60));
    let sem = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let scheduled = match args.rate {
            Some(r) => started + Duration::from_secs_f64(i as f64 / r),
            None => Instant::now(),
        };
        if args.rate.is_some() {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let permit = sem.clone().acquire_owned().await?;
        let body = format!(r#"{{"id":{i},"title":"Product {i}","body_html":"{filler}"}}"#);
        let sig = salesbot_sync::platforms::shopify::signature::sign_webhook(
            args.secret.as_bytes(),
            body.as_bytes(),
        );
        let shop = format!("load-shop-{}.myshopify.com", i % args.shops.max(1));
        let req = client
            .post(&args.url[i % args.url.len()])
            .header("X-Shopify-Topic", "products/update")
            .header("X-Shopify-Shop-Domain", shop)
            .header("X-Shopify-Event-Id", format!("{run_id}-{i}"))
            .header("X-Shopify-Hmac-Sha256", sig)
            .header("Content-Type", "application/json")
            .body(body);
        tasks.spawn(async move {
            let r = req.send().await;
            let latency = scheduled.elapsed();
            drop(permit);
            (r.map(|r| r.status().as_u16()).unwrap_or(0), latency)
        });
    }
    let mut latencies = Vec::with_capacity(args.count);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(r) = tasks.join_next().await {
        let (status, latency) = r?;
        *statuses.entry(status).or_default() += 1;
        if status == 200 {
            latencies.push(latency);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[idx]
    };
    let ok = latencies.len();
    println!(
        "deliveries: {} (concurrency {}, rate {})",
        args.count,
        args.concurrency,
        args.rate
            .map(|r| format!("{r}/s"))
            .unwrap_or_else(|| "unlimited".into())
    );
    println!("statuses:   {statuses:?} (0 = connection error)");
    println!("elapsed:    {:.3} s", elapsed.as_secs_f64());
    println!(
        "throughput: {:.0} acknowledged deliveries/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "ack latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if ok != args.count {
        anyhow::bail!(
            "{} deliveries were not acknowledged with 200",
            args.count - ok
        );
    }
    Ok(())
}
