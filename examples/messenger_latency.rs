//! Benchmark: Messenger end-to-end latency (webhook acknowledged → message in its conversation
//! object) under load, while Shopify full syncs keep the sync pool busy.
//!
//! It starts the simulated Graph and Shopify APIs in this process, runs the real server binary
//! against them (local object store in a temporary folder), connects shops and a page through
//! the real OAuth flows, starts the full syncs with `salesbot-sync poll --shop …` (through the
//! server's queue), then posts signed deliveries on a fixed schedule (open loop) over many
//! conversations and watches the conversation files for each message.
//!
//! ```text
//! cargo build --release --examples
//! ./target/release/examples/messenger_latency --bin target/release/salesbot-sync
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};
use serde_json::{json, Value};

mod common;
use common::{free_port, percentile, start_s3, S3_BUCKET, S3_KEY, S3_SECRET};

#[derive(Parser, Debug)]
#[command(about = "Messenger end-to-end latency with Shopify syncs running")]
struct Args {
    /// The server binary.
    #[arg(long, default_value = "target/release/salesbot-sync")]
    bin: PathBuf,
    /// Deliveries per second (open loop).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Conversations the deliveries are spread over.
    #[arg(long, default_value_t = 200)]
    conversations: usize,
    /// Shops fully synced during the load.
    #[arg(long, default_value_t = 4)]
    shops: usize,
    /// Products per shop.
    #[arg(long, default_value_t = 2000)]
    products: usize,
    /// Delay of every simulated Shopify answer (keeps the syncs running).
    #[arg(long, default_value_t = 40)]
    shopify_delay_ms: u64,
    /// Object store: `s3` (an S3 server over HTTP in this process, as in production) or
    /// `local` (the local folder backend, which fsyncs every object).
    #[arg(long, default_value = "local")]
    store: String,
    /// Every store in this PostgreSQL database (it should be empty) instead of SQLite files.
    #[arg(long)]
    database_url: Option<String>,
    /// Server instances (several need --database-url); deliveries go to each in turn.
    #[arg(long, default_value_t = 1)]
    instances: usize,
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(
    s3: Option<&str>,
    dir: &Path,
    port: u16,
    shopify: &FakeShopify,
    graph: &FakeGraph,
    shops: usize,
    database: Option<&str>,
) -> Vec<(String, String)> {
    let p = |n: &str| dir.join(n).display().to_string();
    let mut v: Vec<(String, String)> = vec![
        ("BIND_ADDR".into(), format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL".into(), format!("http://127.0.0.1:{port}")),
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
        ("WORKERS_SYNC".into(), shops.max(1).to_string()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    v.extend(shopify.vars());
    v.extend(graph.vars());
    if let Some(url) = database {
        v.push(("DATABASE_URL".into(), url.to_string()));
    }
    if let Some(endpoint) = s3 {
        v.extend([
            ("SPACES_KEY".into(), S3_KEY.into()),
            ("SPACES_SECRET".into(), S3_SECRET.into()),
            ("SPACES_BUCKET".into(), S3_BUCKET.into()),
            ("SPACES_REGION".into(), "us-east-1".into()),
            ("SPACES_ENDPOINT".into(), endpoint.to_string()),
        ]);
    }
    v
}

async fn queue(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["queue"]
        .clone()
}

async fn settle(client: &reqwest::Client, base: &str) {
    loop {
        let q = queue(client, base).await;
        let ready_now = q["pending"].as_i64() == Some(0) && q["running"].as_i64() == Some(0);
        if ready_now {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect_page(
    client: &reqwest::Client,
    base: &str,
    fake: &FakeGraph,
    cookie: &str,
) -> Value {
    let r = client
        .get(format!("{base}/facebook/login"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let binding = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("oauth_binding_facebook="))
        .unwrap();
    let dialog = r.headers()["location"].to_str().unwrap().to_string();
    let back = fake.approve(&dialog, 0).unwrap();
    let r = client
        .get(back.split('#').next().unwrap())
        .header("Cookie", format!("{cookie}; {binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "page connect");
    r.json().await.unwrap()
}

/// Watches conversation files and records when each `mid` first appears.
fn watch(
    dir: PathBuf,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Objects are replaced by a rename, so the inode tells a new version apart even within
        // one tick of the file system's clock.
        let mut versions: HashMap<PathBuf, (u64, SystemTime)> = HashMap::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let now = Instant::now();
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = e.path();
                let Ok(meta) = e.metadata() else {
                    continue;
                };
                let version = (
                    std::os::unix::fs::MetadataExt::ino(&meta),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                );
                if versions.get(&path) == Some(&version) {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                versions.insert(path, version);
                // A substring scan, not a JSON parse: the watcher shares the cores with the
                // server and should cost as little as possible.
                let text = String::from_utf8_lossy(&bytes);
                let mut s = seen.lock().unwrap();
                for part in text.split("\"m_bench_").skip(1) {
                    let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
                    s.entry(format!("m_bench_{digits}")).or_insert(now);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // Children run in a temporary folder: resolve the binary from here.
    args.bin = std::fs::canonicalize(&args.bin).map_err(|e| {
        anyhow::anyhow!(
            "cannot find {}: {e} (build it with cargo build --release)",
            args.bin.display()
        )
    })?;
    // The simulators answer on a runtime of their own, so serving the syncs never delays the
    // load generator's schedule (which would be counted as the server's latency).
    let (tx, rx) = std::sync::mpsc::channel();
    let products = args.products;
    let dir = tempfile::tempdir()?;
    let s3_root = dir.path().join("s3");
    let use_s3 = args.store == "s3";
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let shopify = FakeShopify::start(FakeConfig {
                products,
                ..FakeConfig::default()
            })
            .await;
            let graph = FakeGraph::start(FakeGraphConfig {
                pages_per_user: 1,
                conversations_per_page: 3,
                ..FakeGraphConfig::default()
            })
            .await;
            let s3 = if use_s3 {
                Some(start_s3(&s3_root).await)
            } else {
                None
            };
            tx.send((shopify, graph, s3)).unwrap();
            std::future::pending::<()>().await
        })
    });
    let (shopify, graph, s3) = rx.recv()?;
    if args.instances > 1 && args.database_url.is_none() {
        anyhow::bail!("several instances share one PostgreSQL database: pass --database-url");
    }
    let mut servers = Vec::new();
    let mut vars = Vec::new();
    for _ in 0..args.instances.max(1) {
        let port = free_port();
        vars = env(
            s3.as_deref(),
            dir.path(),
            port,
            &shopify,
            &graph,
            args.shops,
            args.database_url.as_deref(),
        );
        let child = Command::new(&args.bin)
            .arg("serve")
            .envs(vars.iter().cloned())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (build it with cargo build --release)",
                    args.bin.display()
                )
            })?;
        servers.push(Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        });
    }
    let server = &servers[0];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    for _ in 0..200 {
        if client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!(
        "connecting {} shops ({} products each) and a page…",
        args.shops, args.products
    );
    let mut cookie = String::new();
    for i in 0..args.shops.max(1) {
        let r = common::connect_shop(&client, &server.base, &shopify, &format!("bench{i}")).await;
        cookie = common::set_cookie(&r, "session_id").unwrap();
    }
    let page_answer = connect_page(&client, &server.base, &graph, &cookie).await;
    let merchant = page_answer["user_uuid"].as_str().unwrap().to_string();
    let page = graph.page_ids(0)[0].clone();
    settle(&client, &server.base).await;

    // The full syncs: queued by the CLI into the server's queue, slow answers keep them going.
    shopify.set_delay(Duration::from_millis(args.shopify_delay_ms));
    let mut polls = Vec::new();
    for i in 0..args.shops {
        polls.push(
            Command::new(&args.bin)
                .args(["poll", "--shop", &format!("bench{i}")])
                .envs(vars.iter().cloned())
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let syncing_since = Instant::now();
    while queue(&client, &server.base).await["running"]
        .as_i64()
        .unwrap_or(0)
        < args.shops as i64
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if syncing_since.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("the syncs did not start");
        }
    }

    let objects_root = if use_s3 {
        dir.path().join("s3").join(S3_BUCKET)
    } else {
        dir.path().join("objects")
    };
    let conv_dir = objects_root
        .join("users")
        .join(&merchant)
        .join("facebook")
        .join(&page)
        .join("conversations");
    std::fs::create_dir_all(&conv_dir)?;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch(conv_dir, seen.clone(), stop.clone());

    let total = (args.rate * args.seconds as f64) as usize;
    eprintln!(
        "posting {total} deliveries at {}/s over {} conversations while {} syncs run…",
        args.rate, args.conversations, args.shops
    );
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("{}/facebook/webhook", s.base))
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let base_ts = 1_800_000_000_000i64;
    for i in 0..total {
        let at = started + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(at.into()).await;
        let psid = format!("9100{:06}", i % args.conversations);
        let mid = format!("m_bench_{i}");
        let body = json!({"object": "page", "entry": [{"id": page, "time": base_ts + i as i64, "messaging": [{
            "sender": {"id": psid}, "recipient": {"id": page}, "timestamp": base_ts + i as i64,
            "message": {"mid": mid, "text": "how much is the blue one?"}}]}]}).to_string();
        let sig = graph.signature_256(body.as_bytes());
        let url = urls[i % urls.len()].clone();
        let (client, sent) = (client.clone(), sent.clone());
        tasks.spawn(async move {
            sent.lock().unwrap().insert(mid, at);
            let r = client
                .post(url)
                .header("X-Hub-Signature-256", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = r.map(|r| r.status().is_success()).unwrap_or(false);
            (ok, at.elapsed())
        });
    }
    let mut acks = Vec::with_capacity(total);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        let (ok, d) = r?;
        if ok {
            acks.push(d)
        } else {
            failed += 1
        }
    }
    let send_window = started.elapsed();
    let syncs_running = queue(&client, &server.base).await["running"]
        .as_i64()
        .unwrap_or(0);
    // Wait for the last messages to land (or give up after 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    shopify.set_delay(Duration::ZERO);
    for mut p in polls {
        let _ = p.kill();
        let _ = p.wait();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    if std::env::var("BENCH_TIMELINE").is_ok() {
        // Worst end-to-end latency per second of sending, to see whether the tail is a stall.
        let mut worst: std::collections::BTreeMap<u64, Duration> = Default::default();
        for (mid, at) in sent.iter() {
            if let Some(t) = seen.get(mid) {
                let sec = at.saturating_duration_since(started).as_secs();
                let w = worst.entry(sec).or_default();
                *w = (*w).max(t.saturating_duration_since(*at));
            }
        }
        for (sec, w) in worst {
            eprintln!("  second {sec:>3}: worst {}", ms(w));
        }
    }
    let mut e2e: Vec<Duration> = sent
        .iter()
        .filter_map(|(mid, at)| seen.get(mid).map(|t| t.saturating_duration_since(*at)))
        .collect();
    e2e.sort();
    acks.sort();
    println!("deliveries: {total} at {}/s over {} conversations, {} Shopify full syncs running ({} still running at the end)", args.rate, args.conversations, args.shops, syncs_running);
    println!(
        "acknowledged: {} ({} failed) in {:.1} s; ack p50 {} p99 {} max {}",
        acks.len(),
        failed,
        send_window.as_secs_f64(),
        ms(percentile(&acks, 0.5)),
        ms(percentile(&acks, 0.99)),
        ms(percentile(&acks, 1.0))
    );
    println!(
        "end to end (ack → in the object): stored {} of {}; p50 {} p99 {} max {}",
        e2e.len(),
        total,
        ms(percentile(&e2e, 0.5)),
        ms(percentile(&e2e, 0.99)),
        ms(percentile(&e2e, 1.0))
    );
    if std::env::var("BENCH_METRICS").is_ok() {
        let text = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await?
            .text()
            .await?;
        for line in text
            .lines()
            .filter(|l| l.contains("kind=\"facebook_message\"") && !l.starts_with('#'))
        {
            eprintln!("  {line}");
        }
    }
    drop(servers);
    Ok(())
}
