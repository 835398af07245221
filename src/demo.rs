//! `salesbot-sync demo`: the real service against the simulated Shopify Admin and Graph APIs
//! (the `salesbot-simulators` crate, the same fakes the tests use) on loopback, with demo app
//! credentials and the local object store under `./demo-data`. A newcomer opens the printed
//! link, connects the demo shop, then the demo pages, and watches the data arrive: every few
//! seconds the simulated platforms change a product and receive a Messenger message, and send
//! the webhooks the real platforms would send.
//!
//! Only with the `demo` feature (on by default): `--no-default-features` leaves the
//! simulators, and this command, out of the binary.
//!
//! Nothing here reaches a real platform: every platform URL points at the simulators, and the
//! configuration is built from scratch (the environment and `.env` are not read), so no real
//! credential or bucket can be picked up. It refuses to start with `APP_ENV=production`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use salesbot_simulators::graph::{FakeGraph, FakeGraphConfig};
use salesbot_simulators::shopify::{FakeConfig, FakeShopify};

use crate::config::Settings;
use crate::startup::Application;

/// The shop the connect page suggests.
pub const DEMO_SHOP: &str = "demo-shop";

pub struct DemoOptions {
    /// 0: any free port.
    pub port: u16,
    pub dir: PathBuf,
    /// How often the simulators change something.
    pub every: Duration,
}

/// Why the demo will not start, if it should not.
pub fn refuse(env: &HashMap<String, String>) -> Option<String> {
    let app_env = env.get("APP_ENV").map(|v| v.trim().to_ascii_lowercase());
    if matches!(app_env.as_deref(), Some("production" | "prod")) {
        return Some(
            "the demo does not run with APP_ENV=production: it uses simulated platforms and demo credentials. Unset APP_ENV (or run `serve` for production)".into(),
        );
    }
    None
}

/// Secrets of the demo's databases, kept beside them so a second run can read the tokens of
/// the first (they encrypt demo tokens only).
fn demo_secrets(dir: &Path) -> anyhow::Result<(String, String)> {
    let path = dir.join("demo-secrets.json");
    if let Ok(bytes) = std::fs::read(&path) {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if let (Some(s), Some(k)) = (v["state_secret"].as_str(), v["token_key"].as_str()) {
            return Ok((s.to_string(), k.to_string()));
        }
    }
    let state = crate::crypto::random_token(32);
    let key =
        base64::engine::general_purpose::STANDARD.encode(rand::thread_rng().gen::<[u8; 32]>());
    std::fs::write(
        &path,
        serde_json::json!({"state_secret": state, "token_key": key}).to_string(),
    )?;
    Ok((state, key))
}

/// A free loopback port (the service binds it right after).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The service's settings: every platform on the simulators, everything stored under `dir`.
fn settings(
    dir: &Path,
    port: u16,
    shopify: &FakeShopify,
    graph: &FakeGraph,
) -> anyhow::Result<Settings> {
    let (state_secret, token_key) = demo_secrets(dir)?;
    let path = |name: &str| dir.join(name).display().to_string();
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.extend(shopify.vars());
    vars.extend(graph.vars());
    for (k, v) in [
        ("APP_ENV", "development".to_string()),
        ("BIND_ADDR", format!("127.0.0.1:{port}")),
        ("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}")),
        ("STATE_TOKEN_SECRET", state_secret),
        ("TOKEN_ENCRYPTION_KEY", token_key),
        ("TOKEN_DB_PATH", path("tokens.db")),
        ("SESSION_DB_PATH", path("sessions.db")),
        ("EVENTS_DB_PATH", path("events.db")),
        ("CATALOG_DB_PATH", path("catalog.db")),
        ("STORAGE_DIR", path("objects")),
        ("BACKUP_DIR", path("backups")),
    ] {
        vars.insert(k.to_string(), v);
    }
    Settings::from_vars(&vars).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let shopify = FakeShopify::start(FakeConfig {
        products: 1200,
        ..FakeConfig::default()
    })
    .await;
    // A little latency per Admin API call, so the first sync's progress can be watched.
    shopify.set_delay(Duration::from_millis(60));
    let graph = FakeGraph::start(FakeGraphConfig::default()).await;
    let port = if opts.port == 0 {
        free_port()?
    } else {
        opts.port
    };
    let settings = settings(&opts.dir, port, &shopify, &graph)?;
    let app = Application::build(settings).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    println!();
    println!(
        "salesbot-sync demo: simulated Shopify and Facebook on this machine, no accounts needed."
    );
    println!("  open   {base}/connect?shop={DEMO_SHOP}");
    println!("  then   connect the demo shop, then \"Connect your Facebook Page\"");
    println!("  data   {}", opts.dir.join("objects").display());
    println!("  stop   Ctrl-C");
    println!();
    let stop = app.shutdown_token();
    let traffic = tokio::spawn(simulate(
        shopify.clone(),
        graph.clone(),
        format!("{base}/facebook/webhook"),
        opts.every,
        stop.clone(),
    ));
    let served = app.run_until_stopped().await;
    stop.cancel();
    let _ = traffic.await;
    served
}

/// Every `every`: a price change in each connected shop and a customer message on each
/// subscribed page, each followed by the webhook the platform sends.
async fn simulate(
    shopify: FakeShopify,
    graph: FakeGraph,
    facebook_webhook: String,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        for shop in shopify.connected_shops() {
            let product = n * 7 % shopify.product_slots(&shop).max(1);
            let price = format!("{}.{:02}", 10 + n % 90, n % 100);
            shopify.set_variant_price(&shop, product, 0, &price);
            let body = shopify.product_webhook_body(&shop, product);
            let sent = shopify.emit_webhook(&shop, "products/update", &body).await;
            tracing::info!(target: "demo", %shop, product, %price, deliveries = sent, "simulated a price change");
        }
        for page in graph.page_ids(0) {
            if graph.subscribed_fields(&page).is_empty() {
                continue;
            }
            let psids = graph.psids(&page);
            let Some(psid) = psids.get(n % psids.len().max(1)) else {
                continue;
            };
            let text = format!("Hi! Is the demo product still in stock? (message {n})");
            let mid = graph.add_message(&page, psid, &text, false);
            // None: the page is not subscribed to the field that carries it.
            let Some(body) = graph.message_webhook(&page, &mid) else {
                continue;
            };
            match graph.emit_webhook(&facebook_webhook, &body).await {
                Ok(status) => {
                    tracing::info!(target: "demo", %page, status, "simulated a Messenger message")
                }
                Err(e) => {
                    tracing::warn!(target: "demo", %page, error = %e, "the simulated message was not delivered")
                }
            }
        }
    }
}
