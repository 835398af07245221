//! Pieces both benchmarks use: the embedded S3 server, ports, percentiles.

use std::path::Path;
use std::time::Duration;

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
