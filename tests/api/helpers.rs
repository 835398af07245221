//! Shared test scaffolding: the real server on a random port (`spawn_app`), an S3 server
//! embedded in the test process (s3s + s3s-fs over real HTTP), and signing helpers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use salesbot_sync::config::Settings;
use salesbot_sync::jobs::{PoolSizes, WorkerConfig};
use salesbot_sync::startup::Application;
use salesbot_sync::state::AppState;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const S3_KEY: &str = "test-access-key";
pub const S3_SECRET: &str = "test-secret-key-for-s3s";
pub const S3_BUCKET: &str = "salesbot-test";
pub const STATE_SECRET: &str = "test-state-secret-0123456789abcdef0123456789";
pub const ENCRYPTION_KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Requests the embedded S3 server saw, by HTTP method (POST is DeleteObjects here), and
/// the faults it is told to inject.
#[derive(Default)]
pub struct S3Counters {
    pub put: AtomicUsize,
    pub head: AtomicUsize,
    pub get: AtomicUsize,
    pub delete: AtomicUsize,
    pub post: AtomicUsize,
    /// While set, every request is answered 503 (an outage of the store).
    pub down: std::sync::atomic::AtomicBool,
    /// Milliseconds every DELETE and POST waits before it is served.
    pub delete_delay_ms: std::sync::atomic::AtomicU64,
    /// Milliseconds every PUT waits before it is served.
    pub put_delay_ms: std::sync::atomic::AtomicU64,
}

pub struct S3Server {
    pub endpoint: String,
    pub root: TempDir,
    pub counters: Arc<S3Counters>,
    stop: CancellationToken,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl S3Server {
    pub fn puts(&self) -> usize {
        self.counters.put.load(Ordering::SeqCst)
    }
    pub fn gets(&self) -> usize {
        self.counters.get.load(Ordering::SeqCst)
    }
    /// DeleteObjects requests (batched deletes).
    pub fn delete_batches(&self) -> usize {
        self.counters.post.load(Ordering::SeqCst)
    }
    /// Starts or ends an outage: every request answers 503 meanwhile.
    pub fn set_down(&self, down: bool) {
        self.counters.down.store(down, Ordering::SeqCst);
    }
    pub fn set_put_delay(&self, d: Duration) {
        self.counters
            .put_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn set_delete_delay(&self, d: Duration) {
        self.counters
            .delete_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    /// Path of an object's body in the s3s-fs folder.
    pub fn object_path(&self, key: &str) -> std::path::PathBuf {
        self.root.path().join(S3_BUCKET).join(key)
    }
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("SPACES_KEY".into(), S3_KEY.into()),
            ("SPACES_SECRET".into(), S3_SECRET.into()),
            ("SPACES_BUCKET".into(), S3_BUCKET.into()),
            ("SPACES_REGION".into(), "us-east-1".into()),
            ("SPACES_ENDPOINT".into(), self.endpoint.clone()),
        ]
    }
}

/// Starts s3s-fs on a loopback port with one bucket and signature checking on.
pub async fn start_s3() -> S3Server {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join(S3_BUCKET)).unwrap();
    let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let counters = Arc::new(S3Counters::default());
    let stop = CancellationToken::new();
    let (c, s) = (counters.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let socket = tokio::select! {
                r = listener.accept() => match r { Ok((sock, _)) => sock, Err(_) => continue },
                _ = s.cancelled() => break,
            };
            let svc = service.clone();
            let c = c.clone();
            let handler = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = match *req.method() {
                        hyper::Method::PUT => Some(&c.put),
                        hyper::Method::HEAD => Some(&c.head),
                        hyper::Method::GET => Some(&c.get),
                        hyper::Method::DELETE => Some(&c.delete),
                        hyper::Method::POST => Some(&c.post),
                        _ => None,
                    };
                    let delay = match *req.method() {
                        hyper::Method::DELETE | hyper::Method::POST => {
                            c.delete_delay_ms.load(Ordering::SeqCst)
                        }
                        hyper::Method::PUT => c.put_delay_ms.load(Ordering::SeqCst),
                        _ => 0,
                    };
                    let down = c.down.load(Ordering::SeqCst);
                    if let (Some(n), false) = (counter, down) {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    let svc = svc.clone();
                    async move {
                        if down {
                            return Ok(hyper::Response::builder()
                                .status(503)
                                .header("content-type", "application/xml")
                                .body(s3s::Body::from(
                                    "<Error><Code>ServiceUnavailable</Code><Message>outage</Message></Error>"
                                        .to_string(),
                                ))
                                .unwrap());
                        }
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        hyper::service::Service::call(&svc, req).await
                    }
                },
            );
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), handler)
                    .await;
            });
        }
    });
    S3Server {
        endpoint: format!("http://{addr}"),
        root,
        counters,
        stop,
    }
}

#[allow(dead_code)]
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub state: AppState,
    pub dir: Option<TempDir>,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET path` with the app's client (cookies kept).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// `POST path` with a form body.
    pub async fn post_form<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        form: &T,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A counter's value in `/metrics` (0 when absent). The recorder is global to the test
    /// binary, so tests compare values before and after, never absolute ones.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Stops the server the way SIGTERM would and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.unwrap()
    }
}

/// Passed in a test's settings, keeps that test on SQLite when the suite runs on PostgreSQL
/// (tests of SQLite files themselves: backups, restores, the queue file's lock). Not a setting
/// of the service: it is removed before the settings are read.
pub const SQLITE_ONLY: &str = "SALESBOT_TEST_SQLITE_ONLY";

/// Whether this run puts the apps' stores in PostgreSQL (`TEST_DATABASE_URL` set).
pub fn on_postgres() -> bool {
    std::env::var_os("TEST_DATABASE_URL").is_some()
}

/// A fresh, empty database on the `TEST_DATABASE_URL` server (one per app, so tests run in
/// parallel and a restarted app finds its own data): its URL. Works from sync and async tests
/// (the statement runs on a thread of its own).
pub fn fresh_database_url() -> Option<String> {
    let base = std::env::var("TEST_DATABASE_URL").ok()?;
    let name = format!("salesbot_api_{}", uuid::Uuid::new_v4().simple());
    let b = base.clone();
    let n = name.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use sqlx::Executor;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&b)
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL does not connect: {e}"));
            pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {n}")))
                .await
                .expect("CREATE DATABASE");
            pool.close().await;
        })
    })
    .join()
    .expect("test database created");
    let mut url = url::Url::parse(&base).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&name);
    Some(url.to_string())
}

/// Settings for a test: temp paths, random port, fixed secrets, then `extra` on top.
pub fn test_vars(dir: &std::path::Path, extra: &[(String, String)]) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1:0".to_string()),
        ("STATE_TOKEN_SECRET", STATE_SECRET.to_string()),
        ("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY_B64.to_string()),
        ("TOKEN_DB_PATH", dir.join("tokens.db").display().to_string()),
        (
            "SESSION_DB_PATH",
            dir.join("sessions.db").display().to_string(),
        ),
        (
            "EVENTS_DB_PATH",
            dir.join("events.db").display().to_string(),
        ),
        (
            "CATALOG_DB_PATH",
            dir.join("catalog.db").display().to_string(),
        ),
        ("STORAGE_DIR", dir.join("objects").display().to_string()),
        ("BACKUP_DIR", dir.join("backups").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.clone(), v.clone());
    }
    // On a PostgreSQL run every app gets a database of its own, kept in a file beside the
    // SQLite paths so an app restarted on the same folder finds the same database.
    if vars.remove(SQLITE_ONLY).is_none() && !vars.contains_key("DATABASE_URL") && on_postgres() {
        let marker = dir.join("database-url");
        let url = std::fs::read_to_string(&marker).ok().unwrap_or_else(|| {
            let url = fresh_database_url().expect("TEST_DATABASE_URL is set");
            std::fs::create_dir_all(dir).ok();
            std::fs::write(&marker, &url).expect("database marker written");
            url
        });
        vars.insert("DATABASE_URL".into(), url);
        vars.entry("DATABASE_MAX_CONNECTIONS".into())
            .or_insert_with(|| "4".into());
    }
    vars
}

/// Test timing for the workers: short backoffs and idle polls. Pool sizes and the retry
/// horizon stay as configured (tests set `RETRY_HORIZON_HOURS` when they need to).
pub fn fast_workers(w: &mut WorkerConfig) {
    w.pools = PoolSizes {
        messages: 4,
        sync: 2,
        poll: 2,
    };
    // At most 30 s (a test may set a shorter JOB_LEASE_SECS).
    w.lease = w.lease.min(Duration::from_secs(30));
    w.retry.min_delay = Duration::from_millis(20);
    w.retry.max_delay = Duration::from_millis(200);
    w.idle_poll = Duration::from_millis(50);
}

pub async fn spawn_app(extra: &[(String, String)]) -> TestApp {
    // `TEST_LOG=1 cargo test …` shows the apps' logs (filtered by RUST_LOG).
    if std::env::var_os("TEST_LOG").is_some() {
        salesbot_sync::telemetry::init(salesbot_sync::config::LogFormat::Text);
    }
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, extra).await
}

/// A port that was free a moment ago: the app's own address must be known before it starts
/// (its webhook self-tests post to `PUBLIC_BASE_URL`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn_app_in(dir: TempDir, extra: &[(String, String)]) -> TestApp {
    let mut app = spawn_app_at(dir.path(), extra).await;
    app.dir = Some(dir);
    app
}

/// The app on databases and objects under `path` (which outlives the app, e.g. to restart).
pub async fn spawn_app_at(path: &std::path::Path, extra: &[(String, String)]) -> TestApp {
    let port = free_port();
    let mut all = vec![
        ("BIND_ADDR".to_string(), format!("127.0.0.1:{port}")),
        (
            "PUBLIC_BASE_URL".to_string(),
            format!("http://127.0.0.1:{port}"),
        ),
    ];
    all.extend(extra.iter().cloned());
    let vars = test_vars(path, &all);
    let settings = Settings::from_vars(&vars).expect("test settings");
    let app = Application::build_with(settings, fast_workers)
        .await
        .expect("application builds");
    let port = app.port();
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        state,
        dir: None,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown,
        handle,
    }
}

pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `f` until it returns true or 30 s pass (generous: CI machines are shared).
pub async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(30), what, f).await
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// The published vectors in the project's shared/test-vectors/vectors.json: in the folder
/// that holds the repository, or further up when the repository is a worktree nested deeper
/// (`wt/<name>` beside `main`).
pub fn test_vectors() -> serde_json::Value {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = repo
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared/test-vectors/vectors.json"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no shared/test-vectors/vectors.json above {}",
                repo.display()
            )
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The real binary as a child process (for crash, signal and exit-code tests).
pub struct ChildServer {
    pub child: std::process::Child,
    pub port: u16,
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ChildServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGSTOP: the process is frozen (as by a VM pause) with its connections open.
    pub fn pause(&self) {
        unsafe_kill(self.child.id(), "STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        unsafe_kill(self.child.id(), "CONT");
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        unsafe_kill(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        // Give the reader thread a moment to drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        let logs = self.logs();
        (status, logs)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn binary_command(
    dir: &std::path::Path,
    env: &HashMap<String, String>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_salesbot-sync"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(dir)
        .stdin(std::process::Stdio::null());
    cmd
}

/// Starts `salesbot-sync serve` and waits until it logs its port.
pub fn start_binary(dir: &std::path::Path, extra: &[(String, String)]) -> ChildServer {
    let mut env = test_vars(dir, extra);
    env.entry("RUST_LOG".into()).or_insert("info".into());
    spawn_binary(dir, env)
}

/// Starts `salesbot-sync serve` with exactly `env` (JSON logs forced) and waits for its port.
pub fn spawn_binary(dir: &std::path::Path, mut env: HashMap<String, String>) -> ChildServer {
    use std::io::BufRead;
    env.insert("LOG_FORMAT".into(), "json".into());
    let mut child = binary_command(dir, &env)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "salesbot-sync listening" {
                    let _ = tx.send(v["port"].as_u64().unwrap() as u16);
                }
            }
            l.lock().unwrap().push(line);
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {}", lines.lock().unwrap().join("\n")));
    ChildServer {
        child,
        port,
        stderr: lines,
    }
}

pub fn sign_b64(secret: &[u8], body: &[u8]) -> String {
    salesbot_sync::platforms::shopify::signature::sign_webhook(secret, body)
}

/// Waits until the app's queue has nothing pending or running.
pub async fn drained(app: &TestApp) {
    let events = app.state.events.clone();
    eventually("queue drained", || {
        let events = events.clone();
        async move {
            let s = events.stats().await.unwrap();
            s.pending == 0 && s.running == 0
        }
    })
    .await;
}

/// Posts a signed delivery of the built-in `testkit` kind; 0 when the connection failed.
pub async fn post_testkit_delivery(
    client: &reqwest::Client,
    url: &str,
    id: usize,
    delay_ms: u64,
) -> u16 {
    let body = serde_json::to_vec(&serde_json::json!({"id": id.to_string(), "delay_ms": delay_ms}))
        .unwrap();
    match client
        .post(url)
        .header(
            "X-Testkit-Hmac-Sha256",
            sign_b64(STATE_SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// `name=value` of the cookie `name` set by a response.
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// Polls now through the queue, as `salesbot-sync poll` does, and waits for the run.
pub async fn poll_now(
    app: &TestApp,
    target: salesbot_sync::poll::Target,
) -> salesbot_sync::poll::RunSummary {
    let (run, _) = salesbot_sync::poll::start(
        &app.state,
        target,
        salesbot_sync::store::events::RunTrigger::Cli,
        Duration::ZERO,
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        salesbot_sync::poll::wait(&app.state, run),
    )
    .await
    .expect("the poll run finishes")
    .unwrap()
}

/// Polls every connected shop and page now.
pub async fn poll_everything(app: &TestApp) -> salesbot_sync::poll::RunSummary {
    poll_now(app, salesbot_sync::poll::Target::Everything).await
}

/// Runs one statement without parameters on the app's tokens store, on whichever backend it
/// is (tests that set up a past state directly: a row as an older version left it).
pub async fn exec_tokens_sql(app: &TestApp, sql: String) {
    if let Some(pg) = &app.state.postgres {
        // Possibly several statements: the simple query protocol.
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(pg.pool())
            .await
            .unwrap();
        return;
    }
    let db = app.state.tokens.backend().sqlite().unwrap().clone();
    db.call(move |c| {
        c.execute_batch(&sql)?;
        Ok(())
    })
    .await
    .unwrap();
}

/// `SELECT COUNT(*) …` (or any one-integer query) on the app's tokens store, either backend.
pub async fn count_tokens_sql(app: &TestApp, sql: String) -> i64 {
    if let Some(pg) = &app.state.postgres {
        return sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pg.pool())
            .await
            .unwrap();
    }
    let db = app.state.tokens.backend().sqlite().unwrap().clone();
    db.call(move |c| Ok(c.query_row(&sql, [], |r| r.get(0))?))
        .await
        .unwrap()
}

/// The stores of an app that ran (or runs) on `dir` with `extra` settings: its SQLite files,
/// or on a PostgreSQL run its database — for tests that look at what a process left behind.
pub async fn stores_of(
    dir: &std::path::Path,
    extra: &[(String, String)],
) -> salesbot_sync::state::Stores {
    let settings = Settings::from_vars(&test_vars(dir, extra)).expect("test settings");
    salesbot_sync::state::Stores::open(&settings)
        .await
        .expect("the stores open")
}
