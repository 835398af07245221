//! Pieces both benchmarks use: the embedded S3 server, ports, percentiles, the shop connect.

use std::path::Path;
use std::time::{Duration, SystemTime};

use salesbot_simulators::shopify::FakeShopify;
use salesbot_sync::platforms::shopify::signature::sign_oauth_query;

pub const S3_KEY: &str = "bench-access-key";
pub const S3_SECRET: &str = "bench-secret-key";
pub const S3_BUCKET: &str = "bench";

/// An S3 server (s3s over the s3s-fs file system) on a loopback port; returns its endpoint.
pub async fn start_s3(root: &Path) -> String {
    std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
    b.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let svc = service.clone();
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(socket), svc)
                .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A port that was free a moment ago (the server's address must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The `name=value` part of the response's `Set-Cookie` for `name`.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// Shopify connect of `{name}.myshopify.com` through the real OAuth flow (login → the fake
/// authorizes → signed callback); returns the callback's answer (200 asserted).
pub async fn connect_shop(
    client: &reqwest::Client,
    base: &str,
    fake: &FakeShopify,
    name: &str,
) -> reqwest::Response {
    let shop = format!("{name}.myshopify.com");
    let r = client
        .get(format!("{base}/shopify/{name}/login"))
        .send()
        .await
        .unwrap();
    let binding = set_cookie(&r, "oauth_binding_shopify").unwrap();
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let state = loc
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut params = vec![
        ("code".to_string(), fake.issue_code(&shop)),
        ("shop".to_string(), shop),
        ("state".to_string(), state),
        ("timestamp".to_string(), ts),
    ];
    let h = sign_oauth_query(fake.config().api_secret.as_bytes(), &params);
    params.push(("hmac".to_string(), h));
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let r = client
        .get(format!("{base}/shopify/callback?{q}"))
        .header("Cookie", binding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "shop connect");
    r
}
