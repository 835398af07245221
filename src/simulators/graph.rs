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

#![allow(dead_code, clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use hmac::{Hmac, Mac};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use url::Url;

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

const USER_FIELDS: &[&str] = &["id", "name", "first_name", "last_name", "short_name"];
const USER_DEFAULT: &[&str] = &["id", "name"];
/// `email` and `created_time` are accepted although Graph's Page node has `emails` (a list)
/// and no `created_time`: the service asks for them.
const PAGE_FIELDS: &[&str] = &[
    "id",
    "name",
    "category",
    "category_list",
    "about",
    "description",
    "website",
    "link",
    "picture",
    "fan_count",
    "followers_count",
    "verification_status",
    "location",
    "phone",
    "emails",
    "email",
    "created_time",
    "username",
    "is_published",
    "single_line_address",
    "access_token",
    "tasks",
];
const PAGE_DEFAULT: &[&str] = &["id", "name"];
const ACCOUNT_DEFAULT: &[&str] = &[
    "access_token",
    "category",
    "category_list",
    "name",
    "id",
    "tasks",
];
const CONVERSATION_FIELDS: &[&str] = &[
    "id",
    "updated_time",
    "participants",
    "link",
    "message_count",
    "unread_count",
    "snippet",
    "can_reply",
    "is_subscribed",
];
const CONVERSATION_DEFAULT: &[&str] = &["id", "updated_time"];
const MESSAGE_FIELDS: &[&str] = &[
    "id",
    "created_time",
    "from",
    "to",
    "message",
    "attachments",
    "sticker",
    "tags",
];
const MESSAGE_DEFAULT: &[&str] = &["id", "created_time"];
/// The fields `conversation_messages` renders (what the service asks for).
const MESSAGE_FULL: &[&str] = &[
    "id",
    "created_time",
    "from",
    "to",
    "message",
    "attachments",
    "sticker",
];

const USER_NAMES: [(&str, &str); 6] = [
    ("Alex", "Morgan"),
    ("Olena", "Kovalenko"),
    ("Jordan", "Diaz"),
    ("Priya", "Natarajan"),
    ("Sam", "O'Neill"),
    ("Mei", "Chen"),
];
/// (name, category id, category, username)
const PAGE_TEMPLATES: [(&str, &str, &str, &str); 6] = [
    (
        "Acme Coffee Roasters",
        "128673187201735",
        "Coffee Shop",
        "acmecoffee",
    ),
    (
        "Kyiv Bike Repair",
        "187724814583579",
        "Bicycle Repair Service",
        "kyivbikerepair",
    ),
    (
        "Café Ünïcode & Sons",
        "192831537402299",
        "Bakery",
        "cafeunicode",
    ),
    (
        "Northwind Florist",
        "169207329791658",
        "Florist",
        "northwindflorist",
    ),
    (
        "Globex Sneakers",
        "186230924744328",
        "Shoe Store",
        "globexsneakers",
    ),
    (
        "Bloom & Co. Cosmetics",
        "2236",
        "Beauty, Cosmetic & Personal Care",
        "bloomco",
    ),
];
const CUSTOMER_NAMES: [&str; 10] = [
    "Taylor Kim",
    "José Álvarez",
    "Zoë O'Brien",
    "Андрій Шевченко",
    "李雷",
    "Fatima Zahra",
    "Noah Williams",
    "Emma \"Em\" Johnson",
    "Lukas Müller",
    "Aisha Bello",
];
const CUSTOMER_LINES: [&str; 8] = [
    "Hi! Is the blue hoodie still available?",
    "How much is shipping to Lviv?",
    "Do you have it in size M? 👕",
    "Ціна актуальна?",
    "My order #1042 hasn't arrived yet, tracking says \"pending\"",
    "Can I pick it up tomorrow at 10:00?",
    "Thanks!! 🙏",
    "Here is what I mean:\nthe one on the left",
];
const PAGE_LINES: [&str; 6] = [
    "Hello! Yes, it's in stock.",
    "Shipping is free over $50 — otherwise $4.99.",
    "We have sizes S–XL.",
    "Sure, see you tomorrow.\nOur address: 12 Main St.",
    "Sorry for the delay! Let me check <order #1042>.",
    "You're welcome! 😊",
];

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
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

type Shared = Arc<Mutex<State>>;

impl FakeGraph {
    pub async fn start(config: FakeGraphConfig) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::new(config, format!("http://{addr}"))));
        let app = Router::new().fallback(handler).with_state(state.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        FakeGraph {
            state,
            addr,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> FakeGraphConfig {
        self.st().config.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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

    // --- OAuth -----------------------------------------------------------------------------

    /// A fresh single-use authorization code for user 0 (any `redirect_uri` is accepted).
    pub fn issue_code(&self) -> String {
        self.issue_code_for(0)
    }

    /// A fresh single-use authorization code for user `user_index` (each user has its own
    /// pages); any absolute `redirect_uri` is accepted when it is exchanged.
    pub fn issue_code_for(&self, user_index: usize) -> String {
        self.st().issue_code(user_index, None)
    }

    /// What the browser gets when user `user_index` accepts the dialog at `dialog_url` (the
    /// service's redirect `Location`): `{redirect_uri}?code=…&state=…#_=_`. The code is bound to
    /// that `redirect_uri`. Err when the dialog URL is not one Facebook would accept.
    pub fn approve(&self, dialog_url: &str, user_index: usize) -> Result<String, String> {
        let (redirect, q) = self.check_dialog(dialog_url)?;
        let code = self.st().issue_code(user_index, Some(redirect.to_string()));
        let mut u = redirect;
        {
            let mut pairs = u.query_pairs_mut();
            pairs.append_pair("code", &code);
            if let Some(s) = q.get("state") {
                pairs.append_pair("state", s);
            }
        }
        u.set_fragment(Some("_=_"));
        Ok(u.to_string())
    }

    /// What the browser gets when the user cancels the dialog at `dialog_url`.
    pub fn deny(&self, dialog_url: &str) -> Result<String, String> {
        let (mut u, q) = self.check_dialog(dialog_url)?;
        {
            let mut pairs = u.query_pairs_mut();
            pairs
                .append_pair("error", "access_denied")
                .append_pair("error_code", "200")
                .append_pair("error_description", "Permissions error")
                .append_pair("error_reason", "user_denied");
            if let Some(s) = q.get("state") {
                pairs.append_pair("state", s);
            }
        }
        u.set_fragment(Some("_=_"));
        Ok(u.to_string())
    }

    fn check_dialog(&self, dialog_url: &str) -> Result<(Url, HashMap<String, String>), String> {
        check_dialog(&self.config(), dialog_url)
    }

    /// Queries of the dialog requests received over HTTP.
    pub fn dialog_requests(&self) -> Vec<HashMap<String, String>> {
        self.st().dialog_requests.clone()
    }

    /// `redirect_uri` of the last code exchange.
    pub fn last_redirect_uri(&self) -> Option<String> {
        self.st().last_redirect_uri.clone()
    }

    /// Successful code → token exchanges.
    pub fn code_grants(&self) -> usize {
        self.st().code_grants
    }

    /// Successful short → long-lived exchanges.
    pub fn exchanges(&self) -> usize {
        self.st().exchanges
    }

    /// Refuse Graph calls (not the token endpoint) without a valid `appsecret_proof`, like an
    /// app with "Require App Secret" on.
    pub fn require_appsecret_proof(&self, on: bool) {
        self.st().require_proof = on;
    }

    /// `hex(HMAC-SHA256(app_secret, token))`
    pub fn appsecret_proof(&self, token: &str) -> String {
        hmac_hex(&self.config().app_secret, token.as_bytes())
    }

    // --- Users, pages, tokens --------------------------------------------------------------

    /// App-scoped id (digits) of user `user_index`.
    pub fn user_id(&self, user_index: usize) -> String {
        let mut st = self.st();
        st.ensure_user(user_index);
        st.users[user_index].id.clone()
    }

    pub fn user_name(&self, user_index: usize) -> String {
        let mut st = self.st();
        st.ensure_user(user_index);
        st.users[user_index].name()
    }

    /// Page ids (digits) of user `user_index`, in `/me/accounts` order.
    pub fn page_ids(&self, user_index: usize) -> Vec<String> {
        let mut st = self.st();
        st.ensure_user(user_index);
        st.users[user_index].page_ids.clone()
    }

    /// Makes user `user_index` an admin of `page_id` too (as a page with several admins is):
    /// it is listed last in their `/me/accounts`, with the page's one token.
    pub fn add_page_admin(&self, user_index: usize, page_id: &str) {
        let mut st = self.st();
        st.ensure_user(user_index);
        assert!(st.pages.contains_key(page_id), "unknown page {page_id}");
        let ids = &mut st.users[user_index].page_ids;
        if !ids.iter().any(|p| p == page_id) {
            ids.push(page_id.to_string());
        }
    }

    pub fn page_name(&self, page_id: &str) -> String {
        self.st().page(page_id).name.clone()
    }

    /// The page's current token (what `/me/accounts` answers).
    pub fn page_token(&self, page_id: &str) -> String {
        self.st().page(page_id).token.clone()
    }

    /// Every user token issued (short- and long-lived, live or not), in issue order.
    pub fn user_tokens(&self) -> Vec<String> {
        self.st().user_token_order.clone()
    }

    /// Every user and page token issued (live or not): for leak checks.
    pub fn all_tokens(&self) -> Vec<String> {
        let st = self.st();
        st.user_token_order
            .iter()
            .chain(st.page_token_order.iter())
            .cloned()
            .collect()
    }

    /// The page's current token stops working (Graph answers 190 / subcode 460); a new one is
    /// minted, which `/me/accounts` and `page_token` answer from now on.
    pub fn revoke_page_token(&self, page_id: &str) {
        let mut st = self.st();
        let old = st.page(page_id).token.clone();
        if let Some(t) = st.page_tokens.get_mut(&old) {
            t.revoked = true;
        }
        let new = st.mint_page_token(page_id);
        st.pages.get_mut(page_id).unwrap().token = new;
    }

    /// Every user token issued so far stops working (190 / 460). Page tokens are not affected.
    pub fn revoke_user_tokens(&self) {
        for t in self.st().user_tokens.values_mut() {
            t.revoked = true;
        }
    }

    pub fn set_accounts_page_size(&self, n: usize) {
        self.st().accounts_page_size = n.max(1);
    }

    pub fn set_page_name(&self, page_id: &str, name: &str) {
        self.st().page_mut(page_id).name = name.to_string();
    }

    // --- Webhook subscriptions -------------------------------------------------------------

    /// Our app is subscribed to the page with these fields (as if done earlier).
    pub fn preset_subscribed(&self, page_id: &str, fields: &[&str]) {
        self.st().page_mut(page_id).subscribed = fields.iter().map(|f| f.to_string()).collect();
    }

    /// Another app (not ours) is subscribed to the page with these fields.
    pub fn preset_other_app(&self, page_id: &str, app_name: &str, fields: &[&str]) {
        self.st().page_mut(page_id).other_apps.push((
            app_name.to_string(),
            fields.iter().map(|f| f.to_string()).collect(),
        ));
    }

    /// Fields our app is subscribed to (empty: not subscribed).
    pub fn subscribed_fields(&self, page_id: &str) -> Vec<String> {
        self.st().page(page_id).subscribed.clone()
    }

    /// `POST /{page}/subscribed_apps` requests for the page (whatever the answer).
    pub fn subscribe_posts(&self, page_id: &str) -> usize {
        self.st().subscribe_posts.get(page_id).copied().unwrap_or(0)
    }

    // --- Conversations ---------------------------------------------------------------------

    /// PSIDs of the page's conversations, most recently updated first.
    pub fn psids(&self, page_id: &str) -> Vec<String> {
        let st = self.st();
        let mut convs: Vec<&Conversation> = st.page(page_id).conversations.iter().collect();
        convs.sort_by_key(|c| std::cmp::Reverse(c.key));
        convs.iter().map(|c| c.psid.clone()).collect()
    }

    /// PSID of the generated long conversation of the page.
    pub fn long_conversation_psid(&self, page_id: &str) -> Option<String> {
        self.st().page(page_id).long_psid.clone()
    }

    pub fn conversation_id(&self, page_id: &str, psid: &str) -> Option<String> {
        self.st()
            .page(page_id)
            .conversations
            .iter()
            .find(|c| c.psid == psid)
            .map(|c| c.id.clone())
    }

    /// Messages between the page and `psid`, newest first, in Graph shape (fields `id`,
    /// `created_time`, `from`, `to`, `message`, `attachments`, `sticker`).
    pub fn conversation_messages(&self, page_id: &str, psid: &str) -> Vec<Value> {
        let st = self.st();
        let page = st.page(page_id);
        let Some(conv) = page.conversations.iter().find(|c| c.psid == psid) else {
            return Vec::new();
        };
        let fields = default_fields(MESSAGE_FULL);
        conv.messages
            .iter()
            .rev()
            .map(|m| {
                select(
                    &render_message(page, conv, m),
                    &fields,
                    "Message",
                    MESSAGE_FIELDS,
                )
            })
            .map(|r| r.unwrap_or(Value::Null))
            .collect()
    }

    /// Number of messages on the page, all conversations.
    pub fn message_count(&self, page_id: &str) -> usize {
        self.st()
            .page(page_id)
            .conversations
            .iter()
            .map(|c| c.messages.len())
            .sum()
    }

    /// Appends a text message (creating the conversation if `psid` is new) and moves the
    /// conversation to the top. Its time is now, or 1 s after the previous added message.
    /// Returns the message id.
    pub fn add_message(&self, page_id: &str, psid: &str, text: &str, from_page: bool) -> String {
        self.st().add_message(page_id, psid, text, from_page, false)
    }

    /// Like `add_message`, with an image attachment and no text.
    pub fn add_image_message(&self, page_id: &str, psid: &str, from_page: bool) -> String {
        self.st().add_message(page_id, psid, "", from_page, true)
    }

    /// The Messenger webhook delivery Meta would send for a stored message
    /// (`{"object":"page","entry":[{"id","time","messaging":[…]}]}`; page messages are echoes).
    pub fn message_webhook(&self, page_id: &str, mid: &str) -> Value {
        let st = self.st();
        let page = st.page(page_id);
        let (conv, m) = page
            .conversations
            .iter()
            .find_map(|c| c.messages.iter().find(|m| m.id == mid).map(|m| (c, m)))
            .unwrap_or_else(|| panic!("no message {mid} on page {page_id}"));
        let ts = m.created.timestamp_millis();
        let (sender, recipient) = if m.from_page {
            (page.id.as_str(), conv.psid.as_str())
        } else {
            (conv.psid.as_str(), page.id.as_str())
        };
        let mut message = json!({"mid": m.id});
        if !m.text.is_empty() {
            message["text"] = json!(m.text);
        }
        if let Some(img) = &m.image {
            message["attachments"] = json!([{"type": "image", "payload": {"url": img.url()}}]);
        }
        if m.sticker {
            message["sticker_id"] = json!(369239263222822u64);
            message["attachments"] = json!([{"type": "image", "payload": {"url": STICKER_URL, "sticker_id": 369239263222822u64}}]);
        }
        if m.from_page {
            message["is_echo"] = json!(true);
            message["app_id"] = json!(st.config.app_id.parse::<u64>().unwrap_or(0));
        }
        json!({
            "object": "page",
            "entry": [{
                "id": page.id,
                "time": ts,
                "messaging": [{
                    "sender": {"id": sender},
                    "recipient": {"id": recipient},
                    "timestamp": ts,
                    "message": message,
                }],
            }],
        })
    }

    /// `X-Hub-Signature-256` value for a webhook body: `sha256=hex(HMAC-SHA256(app_secret, body))`.
    /// Delivers a webhook `body` to the app's callback `url`, signed as Meta signs it
    /// (`X-Hub-Signature-256`); returns the HTTP status.
    pub async fn emit_webhook(&self, url: &str, body: &Value) -> Result<u16, String> {
        let bytes = body.to_string().into_bytes();
        let sig = self.signature_256(&bytes);
        let r = reqwest::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(bytes)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.status().as_u16())
    }

    pub fn signature_256(&self, body: &[u8]) -> String {
        format!("sha256={}", hmac_hex(&self.config().app_secret, body))
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
// State and data
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

struct User {
    id: String,
    first_name: String,
    last_name: String,
    page_ids: Vec<String>,
}

impl User {
    fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

struct Code {
    user: usize,
    redirect_uri: Option<String>,
    used: bool,
}

struct UserToken {
    user: usize,
    revoked: bool,
}

struct PageToken {
    page_id: String,
    revoked: bool,
}

struct Page {
    id: String,
    owner: usize,
    global: usize,
    name: String,
    category_id: &'static str,
    category: &'static str,
    username: Option<String>,
    sparse: bool,
    token: String,
    subscribed: Vec<String>,
    other_apps: Vec<(String, Vec<String>)>,
    conversations: Vec<Conversation>,
    long_psid: Option<String>,
}

struct Conversation {
    id: String,
    number: u64,
    psid: String,
    customer_name: String,
    /// Sort key: higher = more recently updated.
    key: u64,
    updated: DateTime<Utc>,
    /// Chronological.
    messages: Vec<Message>,
}

struct Message {
    id: String,
    seq: u64,
    created: DateTime<Utc>,
    from_page: bool,
    text: String,
    image: Option<Image>,
    sticker: bool,
}

struct Image {
    id: u64,
    size: u64,
    width: u32,
    height: u32,
}

impl Image {
    fn url(&self) -> String {
        format!(
            "https://scontent.example/v/t1.15752-9/{}_n.jpg?stp=dst-jpg_s2048x2048&_nc_cat=101&oh=00_AfB{:x}&oe=6745A1B2",
            self.id, self.id
        )
    }

    fn render(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "mime_type": "image/jpeg",
            "name": format!("photo-{}.jpg", self.id),
            "size": self.size,
            "image_data": {
                "width": self.width,
                "height": self.height,
                "max_width": 2048,
                "max_height": 2048,
                "url": self.url(),
                "preview_url": self.url().replace("s2048x2048", "p100x100"),
                "image_type": 1,
                "render_as_sticker": false,
            },
        })
    }
}

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
}

fn graph_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+0000").to_string()
}

fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn new_mid() -> String {
    let mut buf = [0u8; 30];
    rand::thread_rng().fill(&mut buf[..]);
    format!(
        "m_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

fn fbtrace_id() -> String {
    format!("A{}", random_alnum(22))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn hmac_hex(key: &str, msg: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
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

    fn issue_code(&mut self, user: usize, redirect_uri: Option<String>) -> String {
        self.ensure_user(user);
        let code = format!("AQ{}", random_alnum(62));
        self.codes.insert(
            code.clone(),
            Code {
                user,
                redirect_uri,
                used: false,
            },
        );
        code
    }

    fn mint_user_token(&mut self, user: usize, long: bool) -> String {
        let token = format!(
            "{}{}",
            if long { "EAAL" } else { "EAAB" },
            random_alnum(180)
        );
        self.user_tokens.insert(
            token.clone(),
            UserToken {
                user,
                revoked: false,
            },
        );
        self.user_token_order.push(token.clone());
        token
    }

    fn mint_page_token(&mut self, page_id: &str) -> String {
        let token = format!("EAAP{}", random_alnum(180));
        self.page_tokens.insert(
            token.clone(),
            PageToken {
                page_id: page_id.to_string(),
                revoked: false,
            },
        );
        self.page_token_order.push(token.clone());
        token
    }

    fn ensure_user(&mut self, user: usize) {
        while self.users.len() <= user {
            let u = self.users.len();
            self.generate_user(u);
        }
    }

    fn generate_user(&mut self, u: usize) {
        let (first, last) = USER_NAMES[u % USER_NAMES.len()];
        let last = if u >= USER_NAMES.len() {
            format!("{last} {u}")
        } else {
            last.to_string()
        };
        let id = (10_161_000_000_000_000u64 + (u as u64 + 1) * 104_729).to_string();
        let ppu = self.config.pages_per_user;
        let page_ids = (0..ppu)
            .map(|p| self.generate_page(u, u * ppu + p))
            .collect();
        self.users.push(User {
            id,
            first_name: first.to_string(),
            last_name: last,
            page_ids,
        });
    }

    fn generate_page(&mut self, owner: usize, g: usize) -> String {
        let id = (104_700_000_000_000u64 + (g as u64 + 1) * 1_000_003).to_string();
        let (name, category_id, category, username) = PAGE_TEMPLATES[g % PAGE_TEMPLATES.len()];
        let name = if g >= PAGE_TEMPLATES.len() {
            format!("{name} {g}")
        } else {
            name.to_string()
        };
        let sparse = g % 3 == 2;
        let token = self.mint_page_token(&id);
        let n = self.config.conversations_per_page;
        let per = self.config.messages_per_conversation;
        let long_at = (n > 0).then(|| LONG_CONVERSATION_INDEX.min(n - 1));
        let mut conversations = Vec::with_capacity(n);
        let mut long_psid = None;
        // Oldest first, so that sequence numbers grow with time.
        for k in (0..n).rev() {
            let psid = (2_400_000_000_000_000u64 + g as u64 * 10_000_000 + (k as u64 + 1) * 7_919)
                .to_string();
            let m = if Some(k) == long_at {
                long_psid = Some(psid.clone());
                LONG_CONVERSATION_MESSAGES
            } else {
                per
            };
            let newest = base_time() - Duration::hours(2 * k as i64) - Duration::minutes(g as i64);
            let mut messages = Vec::with_capacity(m);
            for j in 0..m {
                let seq = self.next_seq();
                let from_page = j % 2 == 1;
                let image = (j % 5 == 4).then(|| Image {
                    id: 1_000_000_000_000_000 + seq,
                    size: 20_000 + (seq * 7_919) % 180_000,
                    width: if j % 2 == 0 { 960 } else { 1080 },
                    height: if j % 2 == 0 { 1280 } else { 1080 },
                });
                let sticker = image.is_none() && j % 13 == 12;
                let text = if sticker || (image.is_some() && j % 10 == 9) {
                    String::new()
                } else if from_page {
                    PAGE_LINES[(k + j) % PAGE_LINES.len()].to_string()
                } else {
                    CUSTOMER_LINES[(k + j) % CUSTOMER_LINES.len()].to_string()
                };
                messages.push(Message {
                    id: new_mid(),
                    seq,
                    created: newest - Duration::minutes(5 * (m - 1 - j) as i64),
                    from_page,
                    text,
                    image,
                    sticker,
                });
            }
            let key = self.next_seq();
            let number = 10_000_000_000_000_000u64 + g as u64 * 1_000_000 + k as u64 + 1;
            let conv = Conversation {
                id: format!("t_{number}"),
                number,
                psid,
                customer_name: CUSTOMER_NAMES[(g + k) % CUSTOMER_NAMES.len()].to_string(),
                key,
                updated: newest,
                messages,
            };
            self.conv_pages.insert(conv.id.clone(), id.clone());
            conversations.push(conv);
        }
        self.pages.insert(
            id.clone(),
            Page {
                id: id.clone(),
                owner,
                global: g,
                name,
                category_id,
                category,
                username: (!sparse).then(|| username.to_string()),
                sparse,
                token,
                subscribed: Vec::new(),
                other_apps: Vec::new(),
                conversations,
                long_psid,
            },
        );
        id
    }

    fn add_message(
        &mut self,
        page_id: &str,
        psid: &str,
        text: &str,
        from_page: bool,
        image: bool,
    ) -> String {
        let now = self.tick();
        let seq = self.next_seq();
        let key = self.next_seq();
        let mid = new_mid();
        let page = self.page_mut(page_id);
        let idx = match page.conversations.iter().position(|c| c.psid == psid) {
            Some(i) => i,
            None => {
                let number = 10_200_000_000_000_000u64 + seq;
                page.conversations.push(Conversation {
                    id: format!("t_{number}"),
                    number,
                    psid: psid.to_string(),
                    customer_name: CUSTOMER_NAMES
                        [(fnv(psid) % CUSTOMER_NAMES.len() as u64) as usize]
                        .to_string(),
                    key,
                    updated: now,
                    messages: Vec::new(),
                });
                page.conversations.len() - 1
            }
        };
        let conv = &mut page.conversations[idx];
        conv.messages.push(Message {
            id: mid.clone(),
            seq,
            created: now,
            from_page,
            text: text.to_string(),
            image: image.then(|| Image {
                id: 1_000_000_000_000_000 + seq,
                size: 20_000 + (seq * 7_919) % 180_000,
                width: 1080,
                height: 1080,
            }),
            sticker: false,
        });
        conv.key = key;
        conv.updated = now;
        let conv_id = conv.id.clone();
        self.conv_pages.insert(conv_id, page_id.to_string());
        mid
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn render_user(u: &User) -> Map<String, Value> {
    let v = json!({
        "id": u.id,
        "name": u.name(),
        "first_name": u.first_name,
        "last_name": u.last_name,
        "short_name": u.first_name,
    });
    v.as_object().unwrap().clone()
}

fn render_page(p: &Page) -> Map<String, Value> {
    let handle = p.username.clone().unwrap_or_else(|| p.id.clone());
    let mut v = json!({
        "id": p.id,
        "name": p.name,
        "category": p.category,
        "category_list": [{"id": p.category_id, "name": p.category}],
        "link": format!("https://www.facebook.com/{handle}"),
        "picture": {"data": {
            "height": 50,
            "is_silhouette": false,
            "url": format!("https://scontent.example/v/t39.30808-1/{}_n.jpg?stp=c0.0.50.50a_cp0_dst-jpg_p50x50&_nc_cat=1", p.id),
            "width": 50,
        }},
        "fan_count": 1_000 + (p.global as u64 * 7_919) % 50_000,
        "followers_count": 1_200 + (p.global as u64 * 7_919) % 60_000,
        "verification_status": if p.global % 4 == 1 { "blue_verified" } else { "not_verified" },
        "created_time": graph_time(&(Utc.with_ymd_and_hms(2019, 3, 1, 12, 0, 0).unwrap()
            + Duration::days(p.global as i64 * 37))),
        "is_published": true,
        "tasks": PAGE_TASKS,
    });
    if !p.sparse {
        let handle = p.username.as_deref().unwrap_or("page");
        v["about"] = json!(format!(
            "{} — we answer on Messenger within an hour.",
            p.name
        ));
        v["description"] = json!(format!("{} is a small business.\nOpen daily 9–18.", p.name));
        v["website"] = json!(format!("https://{handle}.example.com/"));
        v["location"] = json!({
            "city": "Kyiv",
            "country": "Ukraine",
            "latitude": 50.4501,
            "longitude": 30.5234,
            "street": format!("{} Khreshchatyk St.", 10 + p.global),
            "zip": "01001",
        });
        v["single_line_address"] = json!(format!(
            "{} Khreshchatyk St., Kyiv, Ukraine 01001",
            10 + p.global
        ));
        v["phone"] = json!(format!("+380 44 123 {:04}", p.global));
        v["emails"] = json!([format!("hello@{handle}.example.com")]);
        v["email"] = json!(format!("hello@{handle}.example.com"));
        v["username"] = json!(handle);
    }
    v.as_object().unwrap().clone()
}

fn participant(name: &str, id: &str) -> Value {
    json!({"name": name, "email": format!("{id}@facebook.com"), "id": id})
}

fn render_conversation(p: &Page, c: &Conversation) -> Map<String, Value> {
    let snippet: String = c
        .messages
        .last()
        .map(|m| m.text.chars().take(100).collect())
        .unwrap_or_default();
    let v = json!({
        "id": c.id,
        "updated_time": graph_time(&c.updated),
        "participants": {"data": [participant(&c.customer_name, &c.psid), participant(&p.name, &p.id)]},
        "link": format!("/{}/inbox/{}/?section=messages", p.id, c.number),
        "message_count": c.messages.len(),
        "unread_count": 0,
        "snippet": snippet,
        "can_reply": true,
        "is_subscribed": true,
    });
    v.as_object().unwrap().clone()
}

fn render_message(p: &Page, c: &Conversation, m: &Message) -> Map<String, Value> {
    let customer = participant(&c.customer_name, &c.psid);
    let page = participant(&p.name, &p.id);
    let (from, to) = if m.from_page {
        (page, customer)
    } else {
        (customer, page)
    };
    let tags = if m.from_page {
        json!({"data": [{"name": "source:chat"}, {"name": "sent"}]})
    } else {
        json!({"data": [{"name": "inbox"}, {"name": "read"}, {"name": "source:chat"}]})
    };
    let mut v = json!({
        "id": m.id,
        "created_time": graph_time(&m.created),
        "from": from,
        "to": {"data": [to]},
        "message": m.text,
        "tags": tags,
    });
    if let Some(img) = &m.image {
        v["attachments"] = json!({"data": [img.render()]});
    }
    if m.sticker {
        v["sticker"] = json!(STICKER_URL);
    }
    v.as_object().unwrap().clone()
}

#[derive(Clone, Debug)]
struct Field {
    name: String,
    sub: Option<Vec<Field>>,
}

fn default_fields(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field {
            name: n.to_string(),
            sub: None,
        })
        .collect()
}

/// `a,b{c,d},e.limit(5){f}` → fields (modifiers ignored).
fn parse_fields(s: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '{' | '(' => {
                depth += 1;
                cur.push(ch);
            }
            '}' | ')' => {
                depth -= 1;
                cur.push(ch);
            }
            ',' if depth == 0 => {
                push_field(&mut out, &cur);
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    push_field(&mut out, &cur);
    out
}

fn push_field(out: &mut Vec<Field>, raw: &str) {
    let raw = raw.trim();
    if raw.is_empty() {
        return;
    }
    let end = raw.find(['{', '.', '(']).unwrap_or(raw.len());
    let sub = raw.find('{').and_then(|i| {
        raw.rfind('}')
            .filter(|&j| j > i)
            .map(|j| parse_fields(&raw[i + 1..j]))
    });
    out.push(Field {
        name: raw[..end].trim().to_string(),
        sub,
    });
}

/// The requested fields of a node (in request order, `id` added), or Graph's error for a
/// field the node type does not have.
fn select(
    full: &Map<String, Value>,
    fields: &[Field],
    node_type: &str,
    known: &[&str],
) -> Result<Value, Response> {
    let mut out = Map::new();
    for f in fields {
        if !known.contains(&f.name.as_str()) {
            return Err(graph_error(
                &format!(
                    "(#100) Tried accessing nonexisting field ({}) on node type ({node_type})",
                    f.name
                ),
                "OAuthException",
                100,
                None,
            ));
        }
        if let Some(v) = full.get(&f.name) {
            let v = match &f.sub {
                Some(sub) => filter_sub(v, sub),
                None => v.clone(),
            };
            out.insert(f.name.clone(), v);
        }
    }
    if let Some(id) = full.get("id") {
        out.entry("id").or_insert_with(|| id.clone());
    }
    Ok(Value::Object(out))
}

fn filter_sub(v: &Value, sub: &[Field]) -> Value {
    match v {
        Value::Object(m) if m.contains_key("data") => {
            let mut m = m.clone();
            let inner = filter_sub(&m["data"], sub);
            m.insert("data".into(), inner);
            Value::Object(m)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for f in sub {
                if let Some(x) = m.get(&f.name) {
                    let x = match &f.sub {
                        Some(s) => filter_sub(x, s),
                        None => x.clone(),
                    };
                    out.insert(f.name.clone(), x);
                }
            }
            if let Some(id) = m.get("id") {
                out.entry("id").or_insert_with(|| id.clone());
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| filter_sub(x, sub)).collect()),
        other => other.clone(),
    }
}

fn encode_cursor(kind: &str, key: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}:{key}"))
}

fn decode_cursor(kind: &str, cursor: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()?;
    let s = String::from_utf8(bytes).ok()?;
    let (k, key) = s.split_once(':')?;
    (k == kind).then_some(())?;
    key.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Errors and responses
// ---------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&fbtrace_id()) {
        r.headers_mut().insert("x-fb-trace-id", v);
    }
    r
}

fn graph_error(message: &str, kind: &str, code: u32, subcode: Option<u32>) -> Response {
    let mut err = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": fbtrace_id(),
    });
    if let Some(s) = subcode {
        err["error_subcode"] = json!(s);
    }
    let mut r = json_response(StatusCode::BAD_REQUEST, json!({"error": err}));
    if code == 190 {
        let h = format!("OAuth \"Facebook Platform\" \"invalid_token\" \"{message}\"");
        if let Ok(v) = HeaderValue::from_str(&h) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    r
}

fn invalid_token() -> Response {
    graph_error(
        "Invalid OAuth access token - Cannot parse access token",
        "OAuthException",
        190,
        None,
    )
}

fn session_invalidated() -> Response {
    graph_error(
        "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
        "OAuthException",
        190,
        Some(460),
    )
}

fn unsupported(method: &Method, id: &str) -> Response {
    graph_error(
        &format!(
            "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
            method.as_str().to_lowercase()
        ),
        "GraphMethodException",
        100,
        Some(33),
    )
}

fn needs_page_token_190() -> Response {
    graph_error(
        "(#190) This method must be called with a Page Access Token",
        "OAuthException",
        190,
        None,
    )
}

fn needs_page_token_210() -> Response {
    graph_error(
        "(#210) A page access token is required to request this resource.",
        "OAuthException",
        210,
        None,
    )
}

fn param_error(message: &str) -> Response {
    graph_error(message, "OAuthException", 100, None)
}

fn rate_limited(code: u32) -> Response {
    let message = match code {
        4 => "(#4) Application request limit reached".to_string(),
        17 => "(#17) User request limit reached".to_string(),
        32 => "(#32) Page request limit reached".to_string(),
        613 => "(#613) Calls to this api have exceeded the rate limit.".to_string(),
        80001 => "(#80001) There have been too many calls to this Page account. Wait a bit and try again. For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting.".to_string(),
        c => format!("(#{c}) Request limit reached"),
    };
    let body = json!({"error": {
        "message": message,
        "type": "OAuthException",
        "is_transient": true,
        "code": code,
        "fbtrace_id": fbtrace_id(),
    }});
    let mut r = json_response(StatusCode::BAD_REQUEST, body);
    r.headers_mut().insert(
        "x-app-usage",
        HeaderValue::from_static(r#"{"call_count":100,"total_cputime":12,"total_time":34}"#),
    );
    r
}

fn failure_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code.is_server_error() {
        (
            code,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            code.canonical_reason().unwrap_or("Error").to_string(),
        )
            .into_response()
    } else {
        let mut r = graph_error("An unknown error has occurred.", "OAuthException", 1, None);
        *r.status_mut() = code;
        r
    }
}

// ---------------------------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------------------------

enum Route {
    Dialog,
    Token,
    Me,
    Accounts,
    SubscribedApps(String),
    Conversations(String),
    Messages(String),
    Node(String),
    WrongVersion,
    Unrouted(String),
}

enum Caller {
    User(usize),
    Page(String),
}

/// Parsed request parameters: query, then body (which wins).
struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    params: HashMap<String, String>,
    token: Option<String>,
}

impl Req {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

fn parse_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    if body.is_empty() {
        return Vec::new();
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            return m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
        }
    }
    parse_pairs(body)
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn redact(path: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| match k.as_str() {
            "access_token" | "client_secret" | "fb_exchange_token" | "code" | "appsecret_proof" => {
                format!("{k}=REDACTED")
            }
            _ => format!("{k}={v}"),
        })
        .collect();
    format!("{path}?{}", q.join("&"))
}

impl State {
    fn route(&self, method: &Method, path: &str) -> Route {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if segs.first() != Some(&self.config.version.as_str()) {
            return Route::WrongVersion;
        }
        let get = method == Method::GET;
        match (&segs[1..], method.as_str()) {
            (["dialog", "oauth"], "GET") => Route::Dialog,
            (["oauth", "access_token"], "GET" | "POST") => Route::Token,
            (["me"], "GET") => Route::Me,
            (["me", "accounts"], "GET") => Route::Accounts,
            ([id, "subscribed_apps"], "GET" | "POST" | "DELETE") if *id != "me" => {
                Route::SubscribedApps(id.to_string())
            }
            ([id, "conversations"], _) if get && *id != "me" => {
                Route::Conversations(id.to_string())
            }
            ([id, "messages"], _) if get => Route::Messages(id.to_string()),
            ([id], _) if get && !id.is_empty() => Route::Node(id.to_string()),
            ([id, ..], _) => Route::Unrouted(id.to_string()),
            _ => Route::Unrouted(String::new()),
        }
    }

    /// The login dialog as a browser sees it: user 0 is signed in; "Continue" grants every
    /// one of their pages (a code bound to the dialog's `redirect_uri`), "Cancel" declines.
    fn dialog_page(&mut self, uri: &Uri) -> Response {
        let url = format!("{}{}", self.base_url, uri);
        let body = match check_dialog(&self.config, &url) {
            Err(why) => format!("<p id=\"dialog-error\">{}</p>", escape_html(&why)),
            Ok((redirect, q)) => {
                let code = self.issue_code(0, Some(redirect.to_string()));
                let with = |pairs: &[(&str, &str)]| {
                    let mut u = redirect.clone();
                    {
                        let mut p = u.query_pairs_mut();
                        for (k, v) in pairs {
                            p.append_pair(k, v);
                        }
                        if let Some(s) = q.get("state") {
                            p.append_pair("state", s);
                        }
                    }
                    u.set_fragment(Some("_=_"));
                    escape_html(u.as_str())
                };
                let allow = with(&[("code", &code)]);
                let deny = with(&[
                    ("error", "access_denied"),
                    ("error_code", "200"),
                    ("error_description", "Permissions error"),
                    ("error_reason", "user_denied"),
                ]);
                let user = &self.users[0];
                let pages: String = user
                    .page_ids
                    .iter()
                    .filter_map(|id| self.pages.get(id))
                    .map(|p| format!("<li>{}</li>", escape_html(&p.name)))
                    .collect();
                format!(
                    "<h1>Continue as {}?</h1><p>The app asks to manage these Pages and their messages:</p><ul>{pages}</ul>\
                     <p><a id=\"allow\" href=\"{allow}\">Continue</a> <a id=\"cancel\" href=\"{deny}\">Cancel</a></p>",
                    escape_html(&user.name()),
                )
            }
        };
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>Log in with Facebook</title></head><body><p>fake dialog (simulated Facebook, nothing leaves this machine)</p>{body}</body></html>"),
        )
            .into_response()
    }

    fn handle(&mut self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
        let path = uri.path().to_string();
        let query = parse_pairs(uri.query().unwrap_or("").as_bytes());
        let body_pairs = parse_body(headers, body);
        let mut params = HashMap::new();
        for (k, v) in query.iter().chain(body_pairs.iter()) {
            params.insert(k.clone(), v.clone());
        }
        let from_header = header_token(headers);
        let token_in_header = from_header.is_some();
        let token = from_header.or_else(|| params.get("access_token").cloned());
        let route = self.route(method, &path);
        let kind = match &route {
            Route::Dialog => "dialog".to_string(),
            Route::Token => {
                if params.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
                    "exchange".into()
                } else {
                    "token".into()
                }
            }
            Route::Me => "me".into(),
            Route::Accounts => "accounts".into(),
            Route::SubscribedApps(_) => {
                format!("subscribed_apps_{}", method.as_str().to_lowercase())
            }
            Route::Conversations(_) => "conversations".into(),
            Route::Messages(_) => "messages".into(),
            Route::Node(id) if id.starts_with("t_") => "conversation".into(),
            Route::Node(_) => "page".into(),
            Route::WrongVersion | Route::Unrouted(_) => "unexpected".into(),
        };
        *self.counts.entry(kind.clone()).or_default() += 1;
        self.last_requests.insert(
            kind.clone(),
            GraphRequest {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                body: body_pairs,
                token: token.clone(),
                token_in_header,
            },
        );
        if let Route::Dialog = route {
            self.dialog_requests.push(query.into_iter().collect());
            return self.dialog_page(uri);
        }
        self.total += 1;
        if self.fail_next.1 > 0 {
            self.fail_next.1 -= 1;
            return failure_response(self.fail_next.0);
        }
        let req = Req {
            method: method.clone(),
            path,
            query,
            params,
            token,
        };
        match &route {
            Route::WrongVersion => {
                self.unexpected
                    .push(format!("{method} {}", redact(&req.path, &req.query)));
                return graph_error(
                    &format!("Unknown path components: {}", req.path),
                    "OAuthException",
                    2500,
                    None,
                );
            }
            Route::Unrouted(id) => {
                self.unexpected
                    .push(format!("{method} {}", redact(&req.path, &req.query)));
                return unsupported(method, id);
            }
            Route::Token => return self.handle_token(&req),
            _ => {}
        }
        if self.rate_limit_next.1 > 0 {
            self.rate_limit_next.1 -= 1;
            return rate_limited(self.rate_limit_next.0);
        }
        let me = matches!(route, Route::Me | Route::Accounts);
        let caller = match self.authenticate(&req, me) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let result = match &route {
            Route::Me => self.handle_me(&req, &caller),
            Route::Accounts => self.handle_accounts(&req, &caller),
            Route::SubscribedApps(id) => self.handle_subscribed_apps(&req, &caller, id),
            Route::Conversations(id) => self.handle_conversations(&req, &caller, id),
            Route::Messages(id) => self.handle_messages(&req, &caller, id),
            Route::Node(id) => self.handle_node(&req, &caller, id),
            _ => unreachable!(),
        };
        match result {
            Ok(v) => json_response(StatusCode::OK, v),
            Err(r) => r,
        }
    }

    fn authenticate(&self, req: &Req, me: bool) -> Result<Caller, Response> {
        let Some(token) = req.token.as_deref() else {
            return Err(if me {
                graph_error(
                    "An active access token must be used to query information about the current user.",
                    "OAuthException",
                    2500,
                    None,
                )
            } else {
                graph_error(
                    "(#104) An access token is required to request this resource.",
                    "OAuthException",
                    104,
                    None,
                )
            });
        };
        let caller = if let Some(t) = self.user_tokens.get(token) {
            if t.revoked {
                return Err(session_invalidated());
            }
            Caller::User(t.user)
        } else if let Some(t) = self.page_tokens.get(token) {
            if t.revoked {
                return Err(session_invalidated());
            }
            Caller::Page(t.page_id.clone())
        } else {
            return Err(invalid_token());
        };
        match req.param("appsecret_proof") {
            Some(p) if p != hmac_hex(&self.config.app_secret, token.as_bytes()) => {
                return Err(graph_error(
                    "Invalid appsecret_proof provided in the API argument",
                    "GraphMethodException",
                    100,
                    None,
                ))
            }
            None if self.require_proof => {
                return Err(graph_error(
                    "API calls from the server require an appsecret_proof argument",
                    "GraphMethodException",
                    100,
                    None,
                ))
            }
            _ => {}
        }
        Ok(caller)
    }

    fn handle_token(&mut self, req: &Req) -> Response {
        let oauth =
            |msg: &str, code: u32, sub: Option<u32>| graph_error(msg, "OAuthException", code, sub);
        match req.param("client_id") {
            None => return oauth("Missing client_id parameter.", 101, None),
            Some(id) if id != self.config.app_id => {
                return oauth(
                    "Error validating application. Invalid application ID.",
                    101,
                    None,
                )
            }
            _ => {}
        }
        if req.param("client_secret") != Some(self.config.app_secret.as_str()) {
            return oauth("Error validating client secret.", 1, None);
        }
        match req.param("grant_type") {
            Some("fb_exchange_token") => {
                let Some(short) = req.param("fb_exchange_token") else {
                    return oauth("Missing fb_exchange_token parameter.", 100, None);
                };
                let user = match self.user_tokens.get(short) {
                    None => return invalid_token(),
                    Some(t) if t.revoked => return session_invalidated(),
                    Some(t) => t.user,
                };
                self.exchanges += 1;
                let token = self.mint_user_token(user, true);
                json_response(
                    StatusCode::OK,
                    json!({"access_token": token, "token_type": "bearer", "expires_in": LONG_LIVED_EXPIRES_IN}),
                )
            }
            None | Some("authorization_code") => {
                let Some(redirect) = req.param("redirect_uri") else {
                    return oauth("Missing redirect_uri parameter.", 100, None);
                };
                if Url::parse(redirect).is_err() {
                    return oauth(
                        "redirect_uri isn't an absolute URI. Check RFC 3986.",
                        191,
                        None,
                    );
                }
                self.last_redirect_uri = Some(redirect.to_string());
                let Some(code) = req.param("code") else {
                    return oauth("Missing code parameter.", 100, None);
                };
                let Some(c) = self.codes.get_mut(code) else {
                    return oauth("Invalid verification code format.", 100, None);
                };
                if c.used {
                    return oauth("This authorization code has been used.", 100, Some(36009));
                }
                if c.redirect_uri.as_deref().is_some_and(|r| r != redirect) {
                    return oauth(
                        "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
                        100,
                        Some(36008),
                    );
                }
                c.used = true;
                let user = c.user;
                self.code_grants += 1;
                let token = self.mint_user_token(user, false);
                json_response(
                    StatusCode::OK,
                    json!({"access_token": token, "token_type": "bearer", "expires_in": SHORT_LIVED_EXPIRES_IN}),
                )
            }
            Some(other) => oauth(&format!("Unsupported grant_type: {other}"), 100, None),
        }
    }

    fn fields(req: &Req, default: &[&str]) -> Vec<Field> {
        match req.param("fields").map(parse_fields) {
            Some(f) if !f.is_empty() => f,
            _ => default_fields(default),
        }
    }

    fn limit(req: &Req) -> Result<usize, Response> {
        match req.param("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => s
                .parse::<i64>()
                .map(|n| (n.max(1) as usize).min(MAX_LIMIT))
                .map_err(|_| param_error("(#100) Param limit must be an integer")),
        }
    }

    fn handle_me(&self, req: &Req, caller: &Caller) -> Result<Value, Response> {
        match caller {
            Caller::User(u) => select(
                &render_user(&self.users[*u]),
                &Self::fields(req, USER_DEFAULT),
                "User",
                USER_FIELDS,
            ),
            Caller::Page(id) => self.page_node(req, id, Some(id)),
        }
    }

    fn page_node(&self, req: &Req, id: &str, with_token: Option<&str>) -> Result<Value, Response> {
        let page = self.page(id);
        let mut full = render_page(page);
        if with_token.is_some() {
            full.insert("access_token".into(), json!(page.token));
        }
        select(&full, &Self::fields(req, PAGE_DEFAULT), "Page", PAGE_FIELDS)
    }

    fn handle_accounts(&self, req: &Req, caller: &Caller) -> Result<Value, Response> {
        let Caller::User(u) = caller else {
            return Err(param_error(
                "(#100) Tried accessing nonexisting field (accounts) on node type (Page)",
            ));
        };
        let fields = Self::fields(req, ACCOUNT_DEFAULT);
        let limit = Self::limit(req)?.min(self.accounts_page_size);
        let mut items = Vec::new();
        for (i, id) in self.users[*u].page_ids.iter().enumerate() {
            let page = self.page(id);
            let mut full = render_page(page);
            full.insert("access_token".into(), json!(page.token));
            items.push((i as u64, select(&full, &fields, "Page", PAGE_FIELDS)?));
        }
        self.paged(req, items, false, limit, "accounts")
    }

    fn handle_subscribed_apps(
        &mut self,
        req: &Req,
        caller: &Caller,
        id: &str,
    ) -> Result<Value, Response> {
        if !self.pages.contains_key(id) {
            return Err(unsupported(&req.method, id));
        }
        match caller {
            Caller::User(_) => return Err(needs_page_token_210()),
            Caller::Page(p) if p != id => return Err(unsupported(&req.method, id)),
            _ => {}
        }
        if req.method == Method::POST {
            *self.subscribe_posts.entry(id.to_string()).or_default() += 1;
            let Some(raw) = req.param("subscribed_fields") else {
                return Err(param_error(
                    "(#100) The parameter subscribed_fields is required",
                ));
            };
            let fields: Vec<String> = match serde_json::from_str::<Vec<String>>(raw) {
                Ok(list) => list,
                Err(_) => raw
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            };
            if fields.is_empty() {
                return Err(param_error(
                    "(#100) The parameter subscribed_fields is required",
                ));
            }
            for (i, f) in fields.iter().enumerate() {
                if !PAGE_WEBHOOK_FIELDS.contains(&f.as_str()) {
                    return Err(param_error(&format!(
                        "(#100) Param subscribed_fields[{i}] must be one of {{{}}} - got \"{f}\"",
                        PAGE_WEBHOOK_FIELDS.join(", ")
                    )));
                }
            }
            let mut unique: Vec<String> = Vec::new();
            for f in fields {
                if !unique.contains(&f) {
                    unique.push(f);
                }
            }
            self.page_mut(id).subscribed = unique;
            return Ok(json!({"success": true}));
        }
        if req.method == Method::DELETE {
            self.page_mut(id).subscribed.clear();
            return Ok(json!({"success": true}));
        }
        let page = self.page(id);
        let mut data = Vec::new();
        for (i, (name, fields)) in page.other_apps.iter().enumerate() {
            data.push(json!({
                "category": "Business",
                "link": format!("https://{}.example.com/", name.to_lowercase().replace(' ', "")),
                "name": name,
                "id": (900_000_000_000_000u64 + i as u64 * 13).to_string(),
                "subscribed_fields": fields,
            }));
        }
        if !page.subscribed.is_empty() {
            data.push(json!({
                "category": "Business",
                "link": "https://salesbot.example.com/",
                "name": APP_NAME,
                "id": self.config.app_id,
                "subscribed_fields": page.subscribed,
            }));
        }
        Ok(json!({"data": data}))
    }

    fn handle_node(&self, req: &Req, caller: &Caller, id: &str) -> Result<Value, Response> {
        if let Some(page) = self.pages.get(id) {
            return match caller {
                Caller::Page(p) if p == id => self.page_node(req, id, Some(id)),
                Caller::User(u) if *u == page.owner => self.page_node(req, id, Some(id)),
                _ => Err(unsupported(&req.method, id)),
            };
        }
        if let Some(page_id) = self.conv_pages.get(id) {
            let page = self.page(page_id);
            match caller {
                Caller::Page(p) if p == page_id => {}
                Caller::User(_) => return Err(needs_page_token_190()),
                _ => return Err(unsupported(&req.method, id)),
            }
            let conv = page.conversations.iter().find(|c| c.id == id).unwrap();
            return select(
                &render_conversation(page, conv),
                &Self::fields(req, CONVERSATION_DEFAULT),
                "UnifiedThread",
                CONVERSATION_FIELDS,
            );
        }
        Err(unsupported(&req.method, id))
    }

    fn handle_conversations(
        &self,
        req: &Req,
        caller: &Caller,
        id: &str,
    ) -> Result<Value, Response> {
        let Some(page) = self.pages.get(id) else {
            return Err(unsupported(&req.method, id));
        };
        match caller {
            Caller::Page(p) if p == id => {}
            Caller::User(_) => return Err(needs_page_token_190()),
            _ => return Err(unsupported(&req.method, id)),
        }
        let platform = req.param("platform").map(str::to_ascii_lowercase);
        match platform.as_deref() {
            None | Some("messenger") => {}
            Some("instagram") => return Ok(json!({"data": []})),
            Some(other) => {
                return Err(param_error(&format!(
                "(#100) Param platform must be one of {{MESSENGER, INSTAGRAM}} - got \"{other}\""
            )))
            }
        }
        let fields = Self::fields(req, CONVERSATION_DEFAULT);
        let limit = Self::limit(req)?;
        let user_id = req.param("user_id");
        let mut convs: Vec<&Conversation> = page
            .conversations
            .iter()
            .filter(|c| user_id.is_none_or(|u| u == c.psid))
            .collect();
        convs.sort_by_key(|c| std::cmp::Reverse(c.key));
        let mut items = Vec::with_capacity(convs.len());
        for c in convs {
            let v = select(
                &render_conversation(page, c),
                &fields,
                "UnifiedThread",
                CONVERSATION_FIELDS,
            )?;
            items.push((c.key, v));
        }
        self.paged(req, items, true, limit, "conversations")
    }

    fn handle_messages(&self, req: &Req, caller: &Caller, id: &str) -> Result<Value, Response> {
        let Some(page_id) = self.conv_pages.get(id) else {
            return Err(unsupported(&req.method, id));
        };
        match caller {
            Caller::Page(p) if p == page_id => {}
            Caller::User(_) => return Err(needs_page_token_190()),
            _ => return Err(unsupported(&req.method, id)),
        }
        let page = self.page(page_id);
        let conv = page.conversations.iter().find(|c| c.id == id).unwrap();
        let fields = Self::fields(req, MESSAGE_DEFAULT);
        let limit = Self::limit(req)?;
        let mut items = Vec::with_capacity(conv.messages.len());
        for m in conv.messages.iter().rev() {
            let v = select(
                &render_message(page, conv, m),
                &fields,
                "Message",
                MESSAGE_FIELDS,
            )?;
            items.push((m.seq, v));
        }
        self.paged(req, items, true, limit, "messages")
    }

    /// One page of an edge. `items` are in answer order; `desc` says whether their keys
    /// decrease along it. Cursors are opaque (base64) keys.
    fn paged(
        &self,
        req: &Req,
        items: Vec<(u64, Value)>,
        desc: bool,
        limit: usize,
        kind: &str,
    ) -> Result<Value, Response> {
        let cursor = |name: &str| -> Result<Option<u64>, Response> {
            match req.param(name) {
                None => Ok(None),
                Some(c) => decode_cursor(kind, c).map(Some).ok_or_else(|| {
                    param_error(&format!(
                        "(#100) The parameter {name} is not a valid cursor"
                    ))
                }),
            }
        };
        let after = cursor("after")?;
        let before = cursor("before")?;
        let later = |k: u64, c: u64| if desc { k < c } else { k > c };
        let (page, has_next): (Vec<(u64, Value)>, bool) = if let Some(b) = before {
            let prior: Vec<_> = items.into_iter().filter(|(k, _)| later(b, *k)).collect();
            let start = prior.len().saturating_sub(limit);
            (prior.into_iter().skip(start).collect(), true)
        } else {
            let rest: Vec<_> = items
                .into_iter()
                .filter(|(k, _)| after.is_none_or(|a| later(*k, a)))
                .collect();
            let has_next = rest.len() > limit;
            (rest.into_iter().take(limit).collect(), has_next)
        };
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(json!({"data": []}));
        };
        let first = encode_cursor(kind, first.0);
        let last = encode_cursor(kind, last.0);
        let mut paging = json!({"cursors": {"before": first, "after": last}});
        if has_next {
            paging["next"] = json!(self.link(req, limit, "after", &last));
        }
        if after.is_some() || before.is_some() {
            paging["previous"] = json!(self.link(req, limit, "before", &first));
        }
        let data: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
        Ok(json!({"data": data, "paging": paging}))
    }

    /// Absolute paging link: the request's query with `access_token` and the cursor.
    fn link(&self, req: &Req, limit: usize, name: &str, cursor: &str) -> String {
        let mut u = Url::parse(&format!("{}{}", self.base_url, req.path)).unwrap();
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("access_token", req.token.as_deref().unwrap_or_default());
            for (k, v) in &req.query {
                if !matches!(k.as_str(), "access_token" | "after" | "before" | "limit") {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("limit", &limit.to_string());
            q.append_pair(name, cursor);
        }
        u.to_string()
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handler(
    AxState(state): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state).handle(&method, &uri, &headers, &body)
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the fake
// ---------------------------------------------------------------------------------------------

/// The redirect and query of a dialog URL Facebook would accept, or why it would not.
fn check_dialog(
    c: &FakeGraphConfig,
    dialog_url: &str,
) -> Result<(Url, HashMap<String, String>), String> {
    let u = Url::parse(dialog_url).map_err(|e| format!("not a URL: {e}"))?;
    let want = format!("/{}/dialog/oauth", c.version);
    if u.path() != want {
        return Err(format!("dialog path is {}, expected {want}", u.path()));
    }
    let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
    if q.get("client_id") != Some(&c.app_id) {
        return Err("Invalid App ID: client_id does not match".into());
    }
    match q.get("response_type").map(String::as_str) {
        None | Some("code") => {}
        Some(other) => return Err(format!("unsupported response_type {other}")),
    }
    let redirect = q
        .get("redirect_uri")
        .ok_or("missing redirect_uri")?
        .to_string();
    let r = Url::parse(&redirect).map_err(|_| "redirect_uri isn't an absolute URI")?;
    Ok((r, q))
}

/// Escapes text for HTML (the fake's pages show ids, names and URLs).
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIRECT: &str = "https://app.example.com/facebook/callback";

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    /// GET with the token as a Bearer header (like the service); `(status, body)`.
    async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = client().get(url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    fn url_with(fake: &FakeGraph, path: &str, query: &[(&str, &str)]) -> String {
        let mut u = Url::parse(&fake.graph_url(path)).unwrap();
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u.to_string()
    }

    fn dialog_url(fake: &FakeGraph, state: &str) -> String {
        let c = fake.config();
        url_with(
            fake,
            "dialog/oauth",
            &[
                ("client_id", c.app_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("scope", "pages_messaging,pages_show_list"),
                ("response_type", "code"),
                ("state", state),
            ],
        )
    }

    async fn exchange_code(fake: &FakeGraph, code: &str, redirect: &str) -> (u16, Value) {
        let c = fake.config();
        let u = url_with(
            fake,
            "oauth/access_token",
            &[
                ("client_id", c.app_id.as_str()),
                ("redirect_uri", redirect),
                ("client_secret", c.app_secret.as_str()),
                ("code", code),
            ],
        );
        get(&u, None).await
    }

    async fn long_lived(fake: &FakeGraph, short: &str) -> (u16, Value) {
        let c = fake.config();
        let u = url_with(
            fake,
            "oauth/access_token",
            &[
                ("grant_type", "fb_exchange_token"),
                ("client_id", c.app_id.as_str()),
                ("client_secret", c.app_secret.as_str()),
                ("fb_exchange_token", short),
            ],
        );
        get(&u, None).await
    }

    /// Code → short → long-lived user token for a user.
    async fn connect(fake: &FakeGraph, user: usize) -> String {
        let code = fake.issue_code_for(user);
        let (s, short) = exchange_code(fake, &code, REDIRECT).await;
        assert_eq!(s, 200, "{short}");
        let (s, long) = long_lived(fake, short["access_token"].as_str().unwrap()).await;
        assert_eq!(s, 200, "{long}");
        long["access_token"].as_str().unwrap().to_string()
    }

    /// Follows `paging.next` like the service: `access_token` stripped, Bearer header.
    async fn walk(first: &str, token: &str) -> (Vec<Value>, usize) {
        let mut out = Vec::new();
        let mut next = Some(first.to_string());
        let mut requests = 0;
        while let Some(u) = next.take() {
            let (s, v) = get(&u, Some(token)).await;
            assert_eq!(s, 200, "{v}");
            requests += 1;
            out.extend(v["data"].as_array().unwrap().iter().cloned());
            if let Some(n) = v.pointer("/paging/next").and_then(Value::as_str) {
                let n = Url::parse(n).unwrap();
                let q: HashMap<String, String> = n.query_pairs().into_owned().collect();
                assert_eq!(q.get("access_token").map(String::as_str), Some(token));
                let mut clean = n.clone();
                clean.set_query(None);
                clean.query_pairs_mut().extend_pairs(
                    n.query_pairs()
                        .filter(|(k, _)| k != "access_token")
                        .map(|(k, v)| (k.into_owned(), v.into_owned())),
                );
                next = Some(clean.to_string());
            }
            assert!(requests < 100, "paging did not end");
        }
        (out, requests)
    }

    fn error_code(v: &Value) -> (i64, Option<i64>) {
        (
            v["error"]["code"].as_i64().unwrap(),
            v["error"]["error_subcode"].as_i64(),
        )
    }

    #[tokio::test]
    async fn fake_graph_oauth_code_token_and_long_lived() {
        let fake = FakeGraph::start(FakeGraphConfig::default()).await;
        let vars: HashMap<_, _> = fake.vars().into_iter().collect();
        assert_eq!(vars["FACEBOOK_GRAPH_BASE_URL"], fake.base_url());
        assert_eq!(vars["FACEBOOK_GRAPH_VERSION"], "v25.0");
        assert_eq!(vars["FACEBOOK_VERIFY_TOKEN"], VERIFY_TOKEN);

        // The dialog answers HTML and records the query; approve → callback with code + state.
        let dialog = dialog_url(&fake, "st-1");
        let r = client().get(&dialog).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("fake dialog"));
        assert_eq!(fake.dialog_requests()[0]["state"], "st-1");
        assert_eq!(fake.requests("dialog"), 1);
        assert_eq!(fake.total_requests(), 0);
        let callback = Url::parse(&fake.approve(&dialog, 0).unwrap()).unwrap();
        assert!(callback.as_str().starts_with(REDIRECT));
        let q: HashMap<String, String> = callback.query_pairs().into_owned().collect();
        assert_eq!(q["state"], "st-1");
        let denied = fake.deny(&dialog).unwrap();
        assert!(denied.contains("error=access_denied") && denied.contains("state=st-1"));

        // The code is bound to the dialog's redirect_uri, and single use.
        let (s, v) = exchange_code(&fake, &q["code"], "https://evil.example/cb").await;
        assert_eq!((s, error_code(&v)), (400, (100, Some(36008))));
        let (s, short) = exchange_code(&fake, &q["code"], REDIRECT).await;
        assert_eq!(s, 200, "{short}");
        assert_eq!(short["token_type"], "bearer");
        assert_eq!(short["expires_in"], 5400);
        let short = short["access_token"].as_str().unwrap().to_string();
        assert!(short.starts_with("EAA"));
        let (s, v) = exchange_code(&fake, &q["code"], REDIRECT).await;
        assert_eq!((s, error_code(&v)), (400, (100, Some(36009))));
        assert_eq!(v["error"]["type"], "OAuthException");
        assert!(v["error"]["fbtrace_id"].as_str().unwrap().starts_with('A'));
        let (s, v) = exchange_code(&fake, "nope", REDIRECT).await;
        assert_eq!((s, error_code(&v).0), (400, 100));
        let (_, v) = exchange_code(&fake, &fake.issue_code(), "/relative").await;
        assert_eq!(error_code(&v).0, 191);
        let u = url_with(
            &fake,
            "oauth/access_token",
            &[
                ("client_id", fake.config().app_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_secret", "wrong"),
                ("code", &fake.issue_code()),
            ],
        );
        assert_eq!(error_code(&get(&u, None).await.1).0, 1);
        assert_eq!(fake.code_grants(), 1);
        assert_eq!(fake.last_redirect_uri().as_deref(), Some(REDIRECT));

        // Long-lived exchange; the short token stays valid.
        let (s, long) = long_lived(&fake, &short).await;
        assert_eq!(s, 200, "{long}");
        assert_eq!(long["expires_in"], 5_184_000);
        let long = long["access_token"].as_str().unwrap().to_string();
        assert!(long.starts_with("EAAL"));
        assert_eq!(fake.exchanges(), 1);
        assert_eq!(fake.requests("exchange"), 1);
        assert_eq!(fake.requests("token"), 6);
        let (_, v) = long_lived(&fake, "EAAgarbage").await;
        assert_eq!(error_code(&v).0, 190);

        for t in [&short, &long] {
            let (s, me) = get(&url_with(&fake, "me", &[("fields", "id,name")]), Some(t)).await;
            assert_eq!(s, 200, "{me}");
            assert_eq!(me["id"], fake.user_id(0));
            assert_eq!(me["name"], fake.user_name(0));
            assert_eq!(me.as_object().unwrap().len(), 2);
        }
        assert!(fake.last_request("me").unwrap().token_in_header);
        // Query-parameter tokens work too; distinct users are distinct.
        let other = connect(&fake, 1).await;
        let (_, me) = get(
            &url_with(&fake, "me", &[("access_token", other.as_str())]),
            None,
        )
        .await;
        assert_eq!(me["id"], fake.user_id(1));
        assert_ne!(fake.user_id(0), fake.user_id(1));
        assert!(fake
            .page_ids(0)
            .iter()
            .all(|p| !fake.page_ids(1).contains(p)));
        assert_eq!(fake.user_tokens().len(), 4);
        assert!(fake
            .all_tokens()
            .contains(&fake.page_token(&fake.page_ids(1)[0])));
        let (s, v) = get(&url_with(&fake, "me", &[]), None).await;
        assert_eq!((s, error_code(&v).0), (400, 2500));
    }

    #[tokio::test]
    async fn fake_graph_accounts_paging_follows_next() {
        let fake = FakeGraph::start(FakeGraphConfig::default()).await;
        let token = connect(&fake, 0).await;
        let fields = "id,name,category,category_list,about,website,link,picture,fan_count,verification_status,location,phone,email,created_time,access_token";
        let first = url_with(
            &fake,
            "me/accounts",
            &[("fields", fields), ("limit", "100")],
        );
        let (pages, requests) = walk(&first, &token).await;
        assert_eq!(requests, 2, "page size 2 by default");
        assert_eq!(pages.len(), 3);
        let ids: Vec<&str> = pages.iter().map(|p| p["id"].as_str().unwrap()).collect();
        assert_eq!(ids, fake.page_ids(0));
        assert!(ids.iter().all(|id| id.bytes().all(|b| b.is_ascii_digit())));
        for p in &pages {
            assert_eq!(
                p["access_token"],
                fake.page_token(p["id"].as_str().unwrap())
            );
            assert!(p["access_token"].as_str().unwrap().starts_with("EAAP"));
        }
        let full = pages[0].as_object().unwrap();
        assert_eq!(full.len(), 15, "{full:?}");
        assert_eq!(pages[0]["picture"]["data"]["is_silhouette"], false);
        assert_eq!(pages[0]["location"]["country"], "Ukraine");
        assert!(pages[0]["category_list"][0]["id"].is_string());
        // The third page has no website, location, phone… (omitted, not null).
        assert!(pages[2].get("website").is_none());
        assert!(pages[2].get("name").is_some());
        assert_eq!(fake.requests("accounts"), 2);

        fake.set_accounts_page_size(1);
        let (pages, requests) = walk(&first, &token).await;
        assert_eq!((pages.len(), requests), (3, 3));
        fake.set_accounts_page_size(25);
        let (s, v) = get(&first, Some(&token)).await;
        assert_eq!(s, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 3);
        assert!(v["paging"].get("next").is_none());
        assert!(v["paging"]["cursors"]["after"].is_string());

        // Default fields; a page token has no accounts.
        let (_, v) = get(&url_with(&fake, "me/accounts", &[]), Some(&token)).await;
        let keys: Vec<&String> = v["data"][0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "category",
                "category_list",
                "id",
                "name",
                "tasks"
            ]
        );
        let pt = fake.page_token(&fake.page_ids(0)[0]);
        let (_, v) = get(&url_with(&fake, "me/accounts", &[]), Some(&pt)).await;
        assert_eq!(error_code(&v).0, 100);
        // /me with a page token is the page.
        let (_, v) = get(&url_with(&fake, "me", &[]), Some(&pt)).await;
        assert_eq!(v["id"], fake.page_ids(0)[0]);
        assert!(fake.unexpected_requests().is_empty());
    }

    #[tokio::test]
    async fn fake_graph_conversations_and_messages_paging() {
        let fake = FakeGraph::start(FakeGraphConfig::default()).await;
        let page = fake.page_ids(0)[0].clone();
        let token = fake.page_token(&page);
        let first = url_with(
            &fake,
            &format!("{page}/conversations"),
            &[
                ("platform", "messenger"),
                ("fields", "id,updated_time,participants"),
                ("limit", "25"),
            ],
        );
        let (convs, requests) = walk(&first, &token).await;
        assert_eq!((convs.len(), requests), (30, 2));
        let times: Vec<&str> = convs
            .iter()
            .map(|c| c["updated_time"].as_str().unwrap())
            .collect();
        assert_eq!(times[0], BASE_TIME);
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
        let c0 = &convs[0];
        assert!(c0["id"].as_str().unwrap().starts_with("t_"));
        assert_eq!(c0.as_object().unwrap().len(), 3);
        let parts = c0["participants"]["data"].as_array().unwrap();
        assert_eq!(parts[1]["id"], page.as_str());
        assert_eq!(parts[1]["name"], fake.page_name(&page));
        let psid = parts[0]["id"].as_str().unwrap();
        assert_eq!(parts[0]["email"], format!("{psid}@facebook.com"));
        assert_eq!(fake.psids(&page)[0], psid);

        // The long conversation: 60 messages over 3 pages, newest first, alternating.
        let long = fake.long_conversation_psid(&page).unwrap();
        let conv_id = fake.conversation_id(&page, &long).unwrap();
        let murl = url_with(
            &fake,
            &format!("{conv_id}/messages"),
            &[
                (
                    "fields",
                    "id,created_time,from,to,message,attachments,sticker",
                ),
                ("limit", "25"),
            ],
        );
        let (msgs, requests) = walk(&murl, &token).await;
        assert_eq!((msgs.len(), requests), (60, 3));
        assert_eq!(msgs, fake.conversation_messages(&page, &long));
        let times: Vec<&str> = msgs
            .iter()
            .map(|m| m["created_time"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]));
        for w in msgs.windows(2) {
            assert_eq!(w[0]["from"]["id"], w[1]["to"]["data"][0]["id"]);
            assert!(w[0]["id"].as_str().unwrap().starts_with("m_"));
        }
        let images = msgs
            .iter()
            .filter(|m| m.get("attachments").is_some())
            .count();
        assert_eq!(images, 12);
        let img = msgs
            .iter()
            .find(|m| m.get("attachments").is_some())
            .unwrap();
        let a = &img["attachments"]["data"][0];
        assert_eq!(a["mime_type"], "image/jpeg");
        assert!(a["image_data"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://"));
        assert!(msgs.iter().any(|m| m.get("sticker").is_some()));
        // A short conversation: 7 messages, one page, no `next`.
        let short = &fake.psids(&page)[0];
        let cid = fake.conversation_id(&page, short).unwrap();
        let (s, v) = get(
            &url_with(&fake, &format!("{cid}/messages"), &[("limit", "25")]),
            Some(&token),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 7);
        assert!(v["paging"].get("next").is_none());
        assert_eq!(v["data"][0].as_object().unwrap().len(), 2, "default fields");

        // A new message moves its conversation to the top; a new PSID starts a conversation.
        let oldest = fake.psids(&page).last().unwrap().clone();
        let mid = fake.add_message(&page, &oldest, "Is it still available?", false);
        assert_eq!(fake.psids(&page)[0], oldest);
        let msgs = fake.conversation_messages(&page, &oldest);
        assert_eq!(msgs[0]["id"], mid.as_str());
        assert_eq!(msgs[0]["message"], "Is it still available?");
        fake.add_message(&page, "7000000000000001", "hello", false);
        let reply = fake.add_message(&page, "7000000000000001", "hi there", true);
        let (convs, _) = walk(&first, &token).await;
        assert_eq!(convs.len(), 31);
        assert_eq!(
            convs[0]["participants"]["data"][0]["id"],
            "7000000000000001"
        );
        let hook = fake.message_webhook(&page, &reply);
        assert_eq!(hook["entry"][0]["messaging"][0]["message"]["is_echo"], true);
        assert!(fake.signature_256(b"{}").starts_with("sha256="));

        // Page tokens only; user tokens are refused like Graph does.
        let user = connect(&fake, 0).await;
        let (s, v) = get(&first, Some(&user)).await;
        assert_eq!((s, error_code(&v).0), (400, 190));
        let other_page = fake.page_token(&fake.page_ids(0)[1]);
        let (_, v) = get(&first, Some(&other_page)).await;
        assert_eq!(error_code(&v), (100, Some(33)));
        assert_eq!(fake.requests("messages"), 4);
    }

    #[tokio::test]
    async fn fake_graph_page_fields_and_subscriptions() {
        let fake = FakeGraph::start(FakeGraphConfig::default()).await;
        let page = fake.page_ids(0)[0].clone();
        let token = fake.page_token(&page);
        let (s, v) = get(
            &url_with(
                &fake,
                &page,
                &[("fields", "name,picture,location,fan_count")],
            ),
            Some(&token),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["fan_count", "id", "location", "name", "picture"]);
        fake.set_page_name(&page, "Renamed Page");
        let (_, v) = get(&url_with(&fake, &page, &[("fields", "name")]), Some(&token)).await;
        assert_eq!(v["name"], "Renamed Page");
        let (_, v) = get(
            &url_with(&fake, &page, &[("fields", "name,bogus")]),
            Some(&token),
        )
        .await;
        assert_eq!(error_code(&v).0, 100);
        let (_, v) = get(&url_with(&fake, "999", &[]), Some(&token)).await;
        assert_eq!(error_code(&v), (100, Some(33)));

        let subs = fake.graph_url(&format!("{page}/subscribed_apps"));
        let (s, v) = get(&subs, Some(&token)).await;
        assert_eq!((s, v), (200, json!({"data": []})));
        let r = client()
            .post(format!("{subs}?subscribed_fields=name,category,messages"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
        let (_, v) = get(&subs, Some(&token)).await;
        assert_eq!(v["data"][0]["id"], fake.config().app_id);
        assert_eq!(v["data"][0]["name"], APP_NAME);
        assert_eq!(
            v["data"][0]["subscribed_fields"],
            json!(["name", "category", "messages"])
        );
        // Form body, bad field, user token.
        let r = client()
            .post(&subs)
            .bearer_auth(&token)
            .form(&[("subscribed_fields", "messages,nonsense")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(fake.subscribe_posts(&page), 2);
        assert_eq!(
            fake.subscribed_fields(&page),
            ["name", "category", "messages"]
        );
        let user = connect(&fake, 0).await;
        let (_, v) = get(&subs, Some(&user)).await;
        assert_eq!(error_code(&v).0, 210);
        let other = fake.page_ids(0)[1].clone();
        fake.preset_other_app(&other, "Other CRM", &["messages", "feed"]);
        fake.preset_subscribed(&other, &["messages"]);
        let (_, v) = get(
            &fake.graph_url(&format!("{other}/subscribed_apps")),
            Some(&fake.page_token(&other)),
        )
        .await;
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(fake.requests("subscribed_apps_post"), 2);
        assert_eq!(fake.requests("subscribed_apps_get"), 4);
    }

    #[tokio::test]
    async fn fake_graph_revoked_tokens_rate_limits_and_failures() {
        let fake = FakeGraph::start(FakeGraphConfig::default()).await;
        let page = fake.page_ids(0)[0].clone();
        let old = fake.page_token(&page);
        let url = url_with(&fake, &page, &[("fields", "id,name")]);
        assert_eq!(get(&url, Some(&old)).await.0, 200);
        fake.revoke_page_token(&page);
        let r = client().get(&url).bearer_auth(&old).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().contains_key("www-authenticate"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(error_code(&v), (190, Some(460)));
        assert_eq!(v["error"]["type"], "OAuthException");
        let new = fake.page_token(&page);
        assert_ne!(new, old);
        assert_eq!(get(&url, Some(&new)).await.0, 200);
        assert!(fake.all_tokens().contains(&old));
        let (_, v) = get(&url, Some("EAAnot-a-token")).await;
        assert_eq!(error_code(&v), (190, None));
        let (_, v) = get(&url, None).await;
        assert_eq!(error_code(&v).0, 104);

        let user = connect(&fake, 0).await;
        let me = url_with(&fake, "me", &[]);
        assert_eq!(get(&me, Some(&user)).await.0, 200);
        fake.revoke_user_tokens();
        assert_eq!(error_code(&get(&me, Some(&user)).await.1), (190, Some(460)));
        assert_eq!(get(&url, Some(&new)).await.0, 200, "page tokens unaffected");

        // appsecret_proof: checked when sent, required on demand.
        let proof = fake.appsecret_proof(&new);
        let with_proof = url_with(&fake, &page, &[("appsecret_proof", proof.as_str())]);
        assert_eq!(get(&with_proof, Some(&new)).await.0, 200);
        let bad = url_with(&fake, &page, &[("appsecret_proof", "00")]);
        assert_eq!(error_code(&get(&bad, Some(&new)).await.1).0, 100);
        fake.require_appsecret_proof(true);
        assert_eq!(get(&url, Some(&new)).await.0, 400);
        assert_eq!(get(&with_proof, Some(&new)).await.0, 200);
        fake.require_appsecret_proof(false);

        // Rate limits, then server failures.
        fake.reset_counters();
        fake.rate_limit_next(4, 2);
        for _ in 0..2 {
            let r = client().get(&url).bearer_auth(&new).send().await.unwrap();
            assert_eq!(r.status(), 400);
            assert!(r.headers().contains_key("x-app-usage"));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], 4);
            assert_eq!(v["error"]["type"], "OAuthException");
            assert_eq!(
                v["error"]["message"],
                "(#4) Application request limit reached"
            );
        }
        assert_eq!(get(&url, Some(&new)).await.0, 200);
        fake.rate_limit_next(613, 1);
        assert_eq!(error_code(&get(&url, Some(&new)).await.1).0, 613);
        fake.fail_next(503, 1);
        let r = client().get(&url).bearer_auth(&new).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.text().await.unwrap(), "Service Unavailable");
        fake.fail_next(429, 1);
        assert_eq!(get(&url, Some(&new)).await.0, 429);
        assert_eq!(get(&url, Some(&new)).await.0, 200);
        assert_eq!(fake.requests("page"), 7);
        assert_eq!(fake.total_requests(), 7);

        // Wrong version and unknown edges are recorded.
        let r = client()
            .get(format!("{}/v2.0/me", fake.base_url()))
            .bearer_auth(&new)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let (_, v) = get(
            &fake.graph_url(&format!("{page}/feed?access_token=x")),
            None,
        )
        .await;
        assert_eq!(error_code(&v).0, 100);
        let unexpected = fake.unexpected_requests();
        assert_eq!(unexpected.len(), 2, "{unexpected:?}");
        assert_eq!(unexpected[0], "GET /v2.0/me");
        assert!(unexpected[1].ends_with("/feed?access_token=REDACTED"));
    }
}
