//! An in-process fake of the Meta Graph API and the Facebook Login dialog, on a loopback port.
//!
//! The service reaches it through `FACEBOOK_GRAPH_BASE_URL` and `FACEBOOK_DIALOG_BASE_URL`
//! (both `http://127.0.0.1:PORT`); every path starts with the configured version (`v25.0`):
//! - `GET /{v}/dialog/oauth`: the login dialog (200 HTML; the query is recorded). Tests usually
//!   read the service's redirect instead and turn it into a callback with `approve` / `deny`.
//! - `GET|POST /{v}/oauth/access_token`: code → short-lived user token, and
//!   `grant_type=fb_exchange_token` → long-lived user token.
//! - `GET /{v}/me`, `GET /{v}/me/accounts`: the user (or, with a page token, the page) and the
//!   user's pages with their page tokens.
//! - `GET|POST|DELETE /{v}/{page}/subscribed_apps`, `GET /{v}/{page}`,
//!   `GET /{v}/{page}/conversations`, `GET /{v}/{conversation}/messages`,
//!   `GET /{v}/{conversation}`.
//!
//! Like Graph: tokens are read from `Authorization: Bearer …` (or `OAuth …`) or the
//! `access_token` parameter; `fields` selects exactly the fields returned (`id` is always added
//! to nodes; absent values are omitted; unknown fields are refused with code 100); edges are
//! cursor-paginated with `paging.cursors` and an absolute `paging.next` that carries
//! `access_token` (omitted on the last page); `appsecret_proof` is checked when sent (and can be
//! required); errors are HTTP 400 with `{"error":{"message","type","code","error_subcode",
//! "fbtrace_id"}}`.
//!
//! Every request except the dialog is counted (per kind, see `KINDS`, and in total) before any
//! check, so requests answered by `fail_next`, `rate_limit_next` or an error count too.
//!
//! Data (deterministic apart from random tokens and message ids, generated per user index on
//! first use): each user has `pages_per_user` pages; each page has `conversations_per_page`
//! conversations of `messages_per_conversation` messages, except the conversation at
//! `LONG_CONVERSATION_INDEX` with `LONG_CONVERSATION_MESSAGES`. Messages alternate customer →
//! page → customer…; message `j` (chronological, from 0) has an image attachment when
//! `j % 5 == 4` (with empty text when `j % 10 == 9`) and is a sticker (empty text) when
//! `j % 13 == 12` and has no image. The newest generated message is at `BASE_TIME`; conversation
//! `k` is `2k` hours older. Every third page (global index `% 3 == 2`) has no about, website,
//! location, phone, emails or username (Graph omits such fields).
//!
//! Layout: this module holds the handle ([`FakeGraph`]), its configuration and the shared state;
//! `api` routes and counts requests, `fields` selects fields and pages edges, `errors` shapes
//! Graph's errors, `oauth` the login dialog, codes and tokens, `pages` users and pages,
//! `conversations` Messenger conversations, `webhooks` page subscriptions and deliveries.

// Graph answers an error as a whole HTTP response, built once per request: boxing it to keep
// `Result` small would buy nothing.
#![allow(clippy::result_large_err)]

mod api;
mod conversations;
mod errors;
mod fields;
mod oauth;
mod pages;
mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};

use crate::http::{self, Listener, Server};
use oauth::{Code, PageToken, UserToken};
use pages::{Page, User};

pub const DEFAULT_VERSION: &str = "v25.0";
pub const VERIFY_TOKEN: &str = "fake-verify-token";
/// `name` of our app in `subscribed_apps`.
pub const APP_NAME: &str = "Salesbot";
pub const SHORT_LIVED_EXPIRES_IN: u64 = 5400;
pub const LONG_LIVED_EXPIRES_IN: u64 = 5_184_000;
/// Default `limit` of an edge, and the largest one honoured.
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 100;
/// Index (0 = most recent) of the generated conversation with more messages than the others.
pub const LONG_CONVERSATION_INDEX: usize = 2;
pub const LONG_CONVERSATION_MESSAGES: usize = 60;
/// Time of the newest generated message (Graph format).
pub const BASE_TIME: &str = "2026-11-20T10:00:00+0000";
/// Request kinds counted by `requests` (`dialog` is not part of `total_requests`).
pub const KINDS: &[&str] = &[
    "token",
    "exchange",
    "me",
    "accounts",
    "subscribed_apps_get",
    "subscribed_apps_post",
    "subscribed_apps_delete",
    "page",
    "conversation",
    "conversations",
    "messages",
    "unexpected",
    "dialog",
];
/// Scopes the page tasks of `/me/accounts` report.
pub const PAGE_TASKS: &[&str] = &[
    "ADVERTISE",
    "ANALYZE",
    "CREATE_CONTENT",
    "MESSAGING",
    "MODERATE",
    "MANAGE",
];
/// Page webhook fields `subscribed_apps` accepts (a realistic subset of Graph's).
pub const PAGE_WEBHOOK_FIELDS: &[&str] = &[
    "about",
    "category",
    "conversations",
    "description",
    "email",
    "feed",
    "general_info",
    "hours",
    "leadgen",
    "location",
    "mention",
    "message_deliveries",
    "message_echoes",
    "message_edits",
    "message_reactions",
    "message_reads",
    "messages",
    "messaging_account_linking",
    "messaging_handovers",
    "messaging_optins",
    "messaging_optouts",
    "messaging_postbacks",
    "messaging_referrals",
    "name",
    "phone",
    "picture",
    "ratings",
    "standby",
    "website",
];
pub const STICKER_URL: &str =
    "https://scontent.example/v/t39.1997-6/851557_369239266556155_759568595_n.png?_nc_cat=1";

// ---------------------------------------------------------------------------------------------
// Configuration and public handle
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct FakeGraphConfig {
    /// Digits.
    pub app_id: String,
    pub app_secret: String,
    /// Path segment, e.g. `v25.0`.
    pub version: String,
    pub pages_per_user: usize,
    pub conversations_per_page: usize,
    pub messages_per_conversation: usize,
}

impl Default for FakeGraphConfig {
    fn default() -> Self {
        Self {
            app_id: "1234567890123456".into(),
            app_secret: "5f2b7c1d9e8a4b3c6d0e1f2a3b4c5d6e".into(),
            version: DEFAULT_VERSION.into(),
            pages_per_user: 3,
            conversations_per_page: 30,
            messages_per_conversation: 7,
        }
    }
}

/// One request as the fake saw it (see `last_request`).
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Form or JSON body parameters (POST).
    pub body: Vec<(String, String)>,
    /// The access token used, from the header or the parameters.
    pub token: Option<String>,
    /// Whether the token came in the `Authorization` header.
    pub token_in_header: bool,
}

impl GraphRequest {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Cloneable handle on the running fake. The server stops when the last handle is dropped.
#[derive(Clone)]
pub struct FakeGraph {
    state: Shared,
    server: Server,
}

type Shared = Arc<Mutex<State>>;

impl FakeGraph {
    pub async fn start(config: FakeGraphConfig) -> FakeGraph {
        let listener = Listener::bind().await;
        let state = Arc::new(Mutex::new(State::new(config, listener.base_url())));
        let app = Router::new()
            .fallback(api::handler)
            .with_state(state.clone());
        let server = listener.serve(app);
        FakeGraph { state, server }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        http::lock(&self.state)
    }

    pub fn config(&self) -> FakeGraphConfig {
        self.st().config.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `{base}/{version}/{path}`
    pub fn graph_url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.base_url(),
            self.st().config.version,
            path.trim_start_matches('/')
        )
    }

    /// Service settings pointing at this fake: `FACEBOOK_APP_ID`, `FACEBOOK_APP_SECRET`,
    /// `FACEBOOK_VERIFY_TOKEN`, `FACEBOOK_GRAPH_VERSION`, `FACEBOOK_GRAPH_BASE_URL`,
    /// `FACEBOOK_DIALOG_BASE_URL`.
    pub fn vars(&self) -> Vec<(String, String)> {
        let c = self.config();
        vec![
            ("FACEBOOK_APP_ID".into(), c.app_id),
            ("FACEBOOK_APP_SECRET".into(), c.app_secret),
            ("FACEBOOK_VERIFY_TOKEN".into(), VERIFY_TOKEN.into()),
            ("FACEBOOK_GRAPH_VERSION".into(), c.version),
            ("FACEBOOK_GRAPH_BASE_URL".into(), self.base_url()),
            ("FACEBOOK_DIALOG_BASE_URL".into(), self.base_url()),
        ]
    }

    // --- Failure injection -----------------------------------------------------------------

    /// The next `n` Graph calls (not the token endpoint; checked before the token) answer HTTP
    /// 400 with the rate-limit error `code` (4, 17, 32, 613, 80001…), type `OAuthException`,
    /// `is_transient: true`.
    pub fn rate_limit_next(&self, code: u32, n: usize) {
        self.st().rate_limit_next = (code, n);
    }

    /// The next `n` requests (any route but the dialog, checked first) answer HTTP `status`:
    /// 5xx with a plain-text body, other codes with Graph's error shape, code 1.
    pub fn fail_next(&self, status: u16, n: usize) {
        self.st().fail_next = (status, n);
    }

    // --- Counters --------------------------------------------------------------------------

    /// Requests of one kind (see `KINDS`), whatever the answer.
    pub fn requests(&self, kind: &str) -> usize {
        self.st().counts.get(kind).copied().unwrap_or(0)
    }

    /// All requests but the dialog's.
    pub fn total_requests(&self) -> usize {
        self.st().total
    }

    pub fn last_request(&self, kind: &str) -> Option<GraphRequest> {
        self.st().last_requests.get(kind).cloned()
    }

    /// Zeroes the request counters (tokens, data and `unexpected_requests` are kept).
    pub fn reset_counters(&self) {
        let mut st = self.st();
        st.counts.clear();
        st.total = 0;
        st.code_grants = 0;
        st.exchanges = 0;
        st.subscribe_posts.clear();
        st.last_requests.clear();
    }

    /// `METHOD path?query` (secrets redacted) of requests no route matched (wrong version,
    /// unknown edge, wrong method).
    pub fn unexpected_requests(&self) -> Vec<String> {
        self.st().unexpected.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

struct State {
    config: FakeGraphConfig,
    base_url: String,
    users: Vec<User>,
    pages: HashMap<String, Page>,
    /// conversation id → page id
    conv_pages: HashMap<String, String>,
    codes: HashMap<String, Code>,
    user_tokens: HashMap<String, UserToken>,
    user_token_order: Vec<String>,
    page_tokens: HashMap<String, PageToken>,
    page_token_order: Vec<String>,
    seq: u64,
    clock: DateTime<Utc>,
    accounts_page_size: usize,
    fail_next: (u16, usize),
    rate_limit_next: (u32, usize),
    require_proof: bool,
    counts: HashMap<String, usize>,
    total: usize,
    code_grants: usize,
    exchanges: usize,
    subscribe_posts: HashMap<String, usize>,
    last_requests: HashMap<String, GraphRequest>,
    last_redirect_uri: Option<String>,
    dialog_requests: Vec<HashMap<String, String>>,
    unexpected: Vec<String>,
}

impl State {
    fn new(config: FakeGraphConfig, base_url: String) -> State {
        State {
            config,
            base_url,
            users: Vec::new(),
            pages: HashMap::new(),
            conv_pages: HashMap::new(),
            codes: HashMap::new(),
            user_tokens: HashMap::new(),
            user_token_order: Vec::new(),
            page_tokens: HashMap::new(),
            page_token_order: Vec::new(),
            seq: 0,
            clock: base_time(),
            accounts_page_size: 2,
            fail_next: (500, 0),
            rate_limit_next: (4, 0),
            require_proof: false,
            counts: HashMap::new(),
            total: 0,
            code_grants: 0,
            exchanges: 0,
            subscribe_posts: HashMap::new(),
            last_requests: HashMap::new(),
            last_redirect_uri: None,
            dialog_requests: Vec::new(),
            unexpected: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Now (whole seconds), but always after the previous tick.
    fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now().with_nanosecond(0).unwrap();
        let t = now.max(self.clock + Duration::seconds(1));
        self.clock = t;
        t
    }

    fn page(&self, page_id: &str) -> &Page {
        self.pages
            .get(page_id)
            .unwrap_or_else(|| panic!("fake_graph: unknown page {page_id}"))
    }

    fn page_mut(&mut self, page_id: &str) -> &mut Page {
        self.pages
            .get_mut(page_id)
            .unwrap_or_else(|| panic!("fake_graph: unknown page {page_id}"))
    }
}

/// Time of the newest generated message (`BASE_TIME`).
fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
}

/// Graph's time format (`2026-11-20T10:00:00+0000`).
fn graph_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}
