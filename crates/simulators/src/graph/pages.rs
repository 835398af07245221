//! Facebook users and their pages: generated per user index on first use, rendered with the
//! fields Graph's Page and User nodes have.

use axum::response::Response;
use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Map, Value};

use super::api::{Caller, Req};
use super::conversations::{
    render_conversation, Conversation, CONVERSATION_DEFAULT, CONVERSATION_FIELDS,
};
use super::errors::{needs_page_token_190, param_error, unsupported};
use super::fields::{fields, limit, select};
use super::{graph_time, FakeGraph, State, PAGE_TASKS};

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

pub(super) struct User {
    pub(super) id: String,
    pub(super) first_name: String,
    pub(super) last_name: String,
    pub(super) page_ids: Vec<String>,
}

impl User {
    pub(super) fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }
}

pub(super) struct Page {
    pub(super) id: String,
    pub(super) owner: usize,
    pub(super) global: usize,
    pub(super) name: String,
    pub(super) category_id: &'static str,
    pub(super) category: &'static str,
    pub(super) username: Option<String>,
    pub(super) sparse: bool,
    pub(super) token: String,
    pub(super) subscribed: Vec<String>,
    pub(super) other_apps: Vec<(String, Vec<String>)>,
    pub(super) conversations: Vec<Conversation>,
    pub(super) long_psid: Option<String>,
    /// Conversations another app controls (Conversation Routing): Meta delivers their
    /// events to our app only under `standby`.
    pub(super) routed_elsewhere: std::collections::HashSet<String>,
    /// How many times each message (by mid) was edited.
    pub(super) edit_counts: std::collections::HashMap<String, i64>,
}

impl FakeGraph {
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

    pub fn set_accounts_page_size(&self, n: usize) {
        self.st().accounts_page_size = n.max(1);
    }

    pub fn set_page_name(&self, page_id: &str, name: &str) {
        self.st().page_mut(page_id).name = name.to_string();
    }
}

impl State {
    pub(super) fn ensure_user(&mut self, user: usize) {
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

    /// Page `g` (global index) of user `owner`, with its generated conversations; its id.
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
        let (conversations, long_psid) = self.generate_conversations(&id, g);
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
                routed_elsewhere: Default::default(),
                edit_counts: Default::default(),
            },
        );
        id
    }

    /// `/me`: the user, or the page when called with a page token.
    pub(super) fn handle_me(&self, req: &Req, caller: &Caller) -> Result<Value, Response> {
        match caller {
            Caller::User(u) => select(
                &render_user(&self.users[*u]),
                &fields(req, USER_DEFAULT),
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
        select(&full, &fields(req, PAGE_DEFAULT), "Page", PAGE_FIELDS)
    }

    /// `/me/accounts`: the user's pages with their tokens, `accounts_page_size` at a time.
    pub(super) fn handle_accounts(&self, req: &Req, caller: &Caller) -> Result<Value, Response> {
        let Caller::User(u) = caller else {
            return Err(param_error(
                "(#100) Tried accessing nonexisting field (accounts) on node type (Page)",
            ));
        };
        let fields = fields(req, ACCOUNT_DEFAULT);
        let limit = limit(req)?.min(self.accounts_page_size);
        let mut items = Vec::new();
        for (i, id) in self.users[*u].page_ids.iter().enumerate() {
            let page = self.page(id);
            let mut full = render_page(page);
            full.insert("access_token".into(), json!(page.token));
            items.push((i as u64, select(&full, &fields, "Page", PAGE_FIELDS)?));
        }
        self.paged(req, items, false, limit, "accounts")
    }

    /// `/{id}`: a page (for its token or its owner) or a conversation (for its page).
    pub(super) fn handle_node(
        &self,
        req: &Req,
        caller: &Caller,
        id: &str,
    ) -> Result<Value, Response> {
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
                &fields(req, CONVERSATION_DEFAULT),
                "UnifiedThread",
                CONVERSATION_FIELDS,
            );
        }
        Err(unsupported(&req.method, id))
    }
}

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
