//! Pages in a real headless Chromium, driven over WebDriver (chromedriver): the demo's connect
//! flow clicked through end to end, a shop that needs reconnecting, an expired OAuth state, the
//! operator sign-in. Screenshots go to `target/screenshots/` for review; every page is checked
//! for console errors (a CSP violation or a script error is one).
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test` (the README's test command). A missing browser fails these tests: it never
//! skips them.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn executable(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_string());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} not found: the page tests need Chromium and ChromeDriver (Debian packages \
         `chromium` and `chromium-driver`). Run `scripts/test`, which installs them, or set {var}."
    );
    path
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session and the chromedriver behind it; both end when it is dropped.
pub struct Browser {
    pub client: Client,
    driver_url: String,
    session: String,
    name: &'static str,
    shots: std::sync::atomic::AtomicUsize,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl Browser {
    pub async fn start(name: &'static str) -> Browser {
        let chromium = executable("CHROMIUM", CHROMIUM);
        let chromedriver = executable("CHROMEDRIVER", CHROMEDRIVER);
        let port = free_port();
        let driver = Driver(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{driver_url}/status")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // As root in a container Chromium needs --no-sandbox; the network flags keep it from
        // calling Google's services, which this machine cannot reach.
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a Chromium session starts");
        let session = client.session_id().await.unwrap().expect("session id");
        Browser {
            client,
            driver_url,
            session,
            name,
            shots: Default::default(),
            _profile: profile,
            _driver: driver,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared ({e}); see target/screenshots"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut v = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            v.push(e.text().await.unwrap());
        }
        v
    }

    /// Waits until `what` holds of the texts of every `css` element (at least one).
    pub async fn until_texts(
        &self,
        css: &str,
        limit: Duration,
        what: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let t = self.texts(css).await;
            if !t.is_empty() && what(&t) {
                return t;
            }
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("{css}: condition not met within {limit:?}; last texts {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Saves a PNG under `target/screenshots/<test>-<n>-<step>.png`.
    pub async fn screenshot(&self, step: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let n = self
            .shots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        std::fs::write(dir.join(format!("{}-{n}-{step}.png", self.name)), png).unwrap();
    }

    /// The console's errors since the last call (chromedriver's log endpoint).
    pub async fn console_errors(&self) -> Vec<String> {
        let r: Value = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["value"]
            .as_array()
            .expect("browser log entries")
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "console errors: {errors:#?}");
    }

    pub async fn end(self) {
        let _ = self.client.close().await;
    }
}

/// `salesbot-sync demo` as a process, with the link it prints.
struct Demo {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary_command(dir.path(), &Default::default())
        .args([
            "demo",
            "--port",
            "0",
            "--dir",
            "./demo-data",
            "--every",
            "0.5",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("open") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let link = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo prints its link");
    let base = link.split("/connect").next().unwrap().to_string();
    assert!(link.ends_with("/connect?shop=demo-shop"), "{link}");
    Demo { child, base, dir }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_connect_flow_clicked_through_ends_with_everything_synced() {
    let demo = start_demo();
    let b = Browser::start("demo").await;
    b.goto(&format!("{}/connect?shop=demo-shop", demo.base))
        .await;
    b.screenshot("connect").await;
    b.assert_no_console_errors().await;

    // Shop: the simulated install screen, then our page with the first sync's live progress.
    b.click("#connect-shop").await;
    let installed = Instant::now();
    b.click("#install").await;
    assert_eq!(
        b.text("#connected").await,
        "Your shop demo-shop.myshopify.com is connected"
    );
    let steps = b.texts("ul.steps li").await;
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps.iter().all(|s| s.starts_with('✓')), "{steps:?}");
    b.screenshot("shop-connected").await;
    let states = b
        .until_texts("[data-sync] [data-state]", Duration::from_secs(60), |t| {
            t.iter().all(|s| s == "Synced")
        })
        .await;
    assert_eq!(states.len(), 1);
    // `cargo test browser -- --nocapture` prints how long the flow took (for the README).
    eprintln!(
        "demo: 1,200 products synced {:?} after Install",
        installed.elapsed()
    );
    assert_eq!(b.text("[data-sync] [data-percent]").await, "100 %");
    assert!(b
        .text("[data-sync] [data-detail]")
        .await
        .contains("1200 products synced"));
    b.screenshot("shop-synced").await;
    b.assert_no_console_errors().await;

    // Pages: the simulated Facebook dialog, then each page with its initial poll.
    b.click("#connect-facebook").await;
    let allowed = Instant::now();
    b.click("#allow").await;
    assert_eq!(
        b.text("#connected").await,
        "Your Facebook Pages are connected"
    );
    b.until_texts("[data-sync] [data-state]", Duration::from_secs(60), |t| {
        t.len() == 3 && t.iter().all(|s| s == "Synced")
    })
    .await;
    eprintln!(
        "demo: 3 pages × 30 conversations synced {:?} after Continue",
        allowed.elapsed()
    );
    let details = b.texts("[data-sync] [data-detail]").await;
    assert!(
        details
            .iter()
            .all(|d| d.contains("30 conversations synced")),
        "{details:?}"
    );
    b.screenshot("pages-synced").await;
    b.assert_no_console_errors().await;

    // The account page: the shop and the three pages synced, the bot's prefix.
    b.click("#go-account").await;
    let states = b
        .until_texts("[data-sync] [data-state]", Duration::from_secs(30), |t| {
            t.len() == 4 && t.iter().all(|s| s == "Synced")
        })
        .await;
    assert_eq!(states.len(), 4);
    assert!(b.texts("[data-percent]").await.iter().all(|p| p == "100 %"));
    let prefix = b.text("#prefix").await;
    assert!(
        prefix.starts_with("users/") && prefix.ends_with('/'),
        "{prefix}"
    );
    b.screenshot("account").await;
    b.assert_no_console_errors().await;

    // The simulators keep working: a price change and a customer message arrive as objects.
    let objects = demo.dir.path().join("demo-data/objects");
    assert!(objects.join(&prefix).is_dir(), "objects under the prefix");
    eventually_within(
        Duration::from_secs(30),
        "a simulated message stored",
        || {
            let objects = objects.clone();
            async move {
                files_under(&objects).iter().any(|f| {
                    std::fs::read_to_string(f)
                        .is_ok_and(|s| s.contains("Is the demo product still in stock?"))
                })
            }
        },
    )
    .await;
    b.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_needing_reconnect_shows_why_and_its_reconnect_link() {
    let env = crate::shopify::env().await;
    // Connected in the browser (the simulated install screen), which signs it in.
    let b = Browser::start("reconnect").await;
    b.goto(&env.app.url("/shopify/acme/login")).await;
    b.click("#install").await;
    b.wait_for("#connected").await;
    let shop = salesbot_sync::ids::ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = env.app.state.tokens.shop(&shop).await.unwrap().unwrap();
    assert!(env
        .app
        .state
        .tokens
        .mark_shop_reauth(
            &shop,
            rec.installed_at,
            "Shopify refused the token refresh: invalid_grant".into()
        )
        .await
        .unwrap());
    b.goto(&env.app.url("/account")).await;
    let card = "#shop-acme\\.myshopify\\.com";
    assert_eq!(
        b.text(&format!("{card} [data-state]")).await,
        "Needs reconnect"
    );
    let detail = b.text(&format!("{card} [data-detail]")).await;
    assert!(
        detail.contains("could not be renewed") && detail.contains("Reconnect"),
        "{detail}"
    );
    // The stored diagnosis is for operators, not shown to the merchant.
    assert!(!detail.contains("invalid_grant"), "{detail}");
    let link = b.wait_for(&format!("{card} a.reconnect")).await;
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/shopify/acme/login")
    );
    b.screenshot("needs-reconnect").await;
    b.assert_no_console_errors().await;

    // The link starts the connection again: to Shopify's install screen for that shop.
    link.click().await.unwrap();
    b.wait_for("#install").await;
    assert_eq!(b.path().await, "/acme.myshopify.com/admin/oauth/authorize");
    b.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_forged_callback_shows_an_error_page_with_start_again() {
    let env = crate::shopify::env().await;
    let shop = "acme.myshopify.com";
    let now = chrono::Utc::now().timestamp();
    // A state issued eleven minutes ago (they live ten), signed with the service's secret.
    let claims: salesbot_sync::oauth_state::StateClaims = serde_json::from_value(json!({
        "p": "shopify", "n": "n0nce", "s": shop, "b": "0".repeat(64),
        "i": now - 660, "e": now - 60,
    }))
    .expect("claims in their wire form");
    let state = env.app.state.states.sign(&claims);
    let mut params = vec![
        ("code".to_string(), env.fake.issue_code(shop)),
        ("shop".to_string(), shop.to_string()),
        ("state".to_string(), state),
        ("timestamp".to_string(), (now - 600).to_string()),
    ];
    let secret = env.fake.config().api_secret;
    let hmac =
        salesbot_sync::platforms::shopify::signature::sign_oauth_query(secret.as_bytes(), &params);
    params.push(("hmac".to_string(), hmac));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();

    let b = Browser::start("errors").await;
    b.goto(&env.app.url(&format!("/shopify/callback?{query}")))
        .await;
    assert_eq!(b.text("#error h1").await, "This link has expired");
    assert!(b
        .text("#error-message")
        .await
        .contains("start the connection again"));
    assert_eq!(
        b.wait_for("#start-again")
            .await
            .attr("href")
            .await
            .unwrap()
            .as_deref(),
        Some("/connect")
    );
    b.screenshot("expired").await;

    // A changed signature: refused, in plain words, with no internal detail.
    let forged = query.replace("hmac=", "hmac=00");
    b.goto(&env.app.url(&format!("/shopify/callback?{forged}")))
        .await;
    assert_eq!(
        b.text("#error h1").await,
        "We could not verify this request"
    );
    let source = b.client.source().await.unwrap();
    assert!(!source.contains(&secret), "no secret on the page");
    b.screenshot("forged").await;
    // The failed callbacks are the page's status (400/401), not a script error: the console
    // shows only those loads.
    let errors = b.console_errors().await;
    assert!(
        errors.iter().all(|e| e.contains("status of 40")),
        "only the failed loads themselves: {errors:#?}"
    );

    // Start again leads to the connect page.
    b.click("#start-again").await;
    b.wait_for("#connect-shop").await;
    b.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_in_the_browser_and_see_the_status_page() {
    let token = "operator-token-for-the-browser-test-0123456789";
    let app = spawn_app(&vars(&[("OPERATOR_TOKEN", token)])).await;
    let b = Browser::start("operator").await;
    b.goto(&app.url("/")).await;
    // Not signed in: the sign-in form, which refuses a wrong token.
    b.wait_for("#token")
        .await
        .send_keys("wrong-token")
        .await
        .unwrap();
    b.click("#sign-in").await;
    b.wait_for("#login-failed").await;
    b.wait_for("#token").await.send_keys(token).await.unwrap();
    b.click("#sign-in").await;
    b.wait_for("#queue").await;
    assert_eq!(b.path().await, "/");
    assert!(b.text("#last-poll").await.contains("no poll has run yet"));
    b.screenshot("operator").await;
    let source = b.client.source().await.unwrap();
    assert!(!source.contains(token), "the token is not on the page");
    // The wrong token's 401 is the only console entry.
    let errors = b.console_errors().await;
    assert!(
        errors.iter().all(|e| e.contains("status of 401")),
        "{errors:#?}"
    );
    b.end().await;
}

/// Signs the browser in as the session `cookie` (`session_id=…`) on `app`'s origin, as if it
/// had connected that merchant's shop. (Set by script: ChromeDriver refuses a cookie for an
/// IP address host through WebDriver's cookie command.)
async fn sign_in_as(b: &Browser, app: &TestApp, cookie: &str) {
    b.goto(&app.url("/connect")).await;
    b.client
        .execute(
            "document.cookie = arguments[0] + '; path=/';",
            vec![json!(cookie)],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_connected_elsewhere_moves_when_its_user_confirms_it_on_the_account_page() {
    let env = crate::facebook::fb_env().await;
    let app = &env.app;
    let (a, cookie_a) = crate::facebook::session(app).await;
    assert_eq!(
        crate::facebook::fb_connect(app, &env.fake, &cookie_a, 0)
            .await
            .0,
        200
    );
    let (b_merchant, cookie_b) = crate::facebook::session(app).await;
    assert_eq!(
        crate::facebook::fb_connect(app, &env.fake, &cookie_b, 0)
            .await
            .0,
        200
    );
    drained(app).await;
    let page = env.fake.page_ids(0)[0].clone();
    let page_id = salesbot_sync::ids::PageId::parse(&page).unwrap();

    // Merchant B's account offers the page; nothing has moved.
    let b = Browser::start("page-move").await;
    sign_in_as(&b, app, &cookie_b).await;
    b.goto(&app.url("/account")).await;
    let card = format!("#movable-{page}");
    b.wait_for(&card).await;
    b.screenshot("offered").await;
    let rec = app.state.tokens.page(&page_id).await.unwrap().unwrap();
    assert_eq!(rec.merchant, a);
    b.click(&format!("{card} button.move")).await;
    b.wait_for("#notice").await;
    assert!(b.text("#notice").await.contains("moved to this account"));
    assert_eq!(b.path().await, "/account");
    // It is B's now, listed with B's pages and no longer offered.
    b.wait_for(&format!("#page-{page}")).await;
    assert!(b.client.find(Locator::Css(&card)).await.is_err());
    b.screenshot("moved").await;
    b.assert_no_console_errors().await;
    let rec = app.state.tokens.page(&page_id).await.unwrap().unwrap();
    assert_eq!(rec.merchant, b_merchant);

    // Merchant A sees that it left, and when.
    sign_in_as(&b, app, &cookie_a).await;
    b.goto(&app.url("/account")).await;
    let left = b.text(&format!("#moved-{page}")).await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        left.contains("moved to another account on") && left.contains(&today),
        "{left}"
    );
    assert!(b
        .client
        .find(Locator::Css(&format!("#page-{page}")))
        .await
        .is_err());
    b.screenshot("left").await;
    b.assert_no_console_errors().await;
    b.end().await;
    drained(app).await;
}
