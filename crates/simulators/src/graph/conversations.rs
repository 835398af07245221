//! Messenger conversations of the pages: generated with each page, extended by tests and the
//! demo (`add_message`), rendered with the fields of Graph's thread and message nodes.

use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use super::api::{Caller, Req};
use super::errors::{needs_page_token_190, param_error, unsupported};
use super::fields::{default_fields, fields, limit, select};
use super::pages::Page;
use super::{
    base_time, graph_time, FakeGraph, State, LONG_CONVERSATION_INDEX, LONG_CONVERSATION_MESSAGES,
    STICKER_URL,
};
use crate::ids::fnv;

pub(super) const CONVERSATION_FIELDS: &[&str] = &[
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
pub(super) const CONVERSATION_DEFAULT: &[&str] = &["id", "updated_time"];
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

pub(super) struct Conversation {
    pub(super) id: String,
    pub(super) number: u64,
    pub(super) psid: String,
    pub(super) customer_name: String,
    /// Sort key: higher = more recently updated.
    pub(super) key: u64,
    pub(super) updated: DateTime<Utc>,
    /// Chronological.
    pub(super) messages: Vec<Message>,
}

pub(super) struct Message {
    pub(super) id: String,
    pub(super) seq: u64,
    pub(super) created: DateTime<Utc>,
    pub(super) from_page: bool,
    pub(super) text: String,
    pub(super) image: Option<Image>,
    pub(super) sticker: bool,
}

pub(super) struct Image {
    pub(super) id: u64,
    pub(super) size: u64,
    pub(super) width: u32,
    pub(super) height: u32,
}

impl Image {
    pub(super) fn url(&self) -> String {
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

/// A Messenger message id (`m_` and 40 URL-safe base64 characters).
fn new_mid() -> String {
    let mut buf = [0u8; 30];
    rand::thread_rng().fill(&mut buf[..]);
    format!(
        "m_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    )
}

impl FakeGraph {
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
}

impl State {
    /// The generated conversations of page `g` (global index), and the PSID of its long one.
    pub(super) fn generate_conversations(
        &mut self,
        page_id: &str,
        g: usize,
    ) -> (Vec<Conversation>, Option<String>) {
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
            let conv = self.generate_conversation(g, k, psid, m);
            self.conv_pages.insert(conv.id.clone(), page_id.to_string());
            conversations.push(conv);
        }
        (conversations, long_psid)
    }

    /// Conversation `k` (0 = most recent) of page `g` with `m` messages, the newest `2k` hours
    /// (and `g` minutes) before `BASE_TIME`, five minutes apart.
    fn generate_conversation(
        &mut self,
        g: usize,
        k: usize,
        psid: String,
        m: usize,
    ) -> Conversation {
        let newest = base_time() - Duration::hours(2 * k as i64) - Duration::minutes(g as i64);
        let messages = (0..m)
            .map(|j| {
                let seq = self.next_seq();
                let created = newest - Duration::minutes(5 * (m - 1 - j) as i64);
                generated_message(seq, k, j, created)
            })
            .collect();
        let key = self.next_seq();
        let number = 10_000_000_000_000_000u64 + g as u64 * 1_000_000 + k as u64 + 1;
        Conversation {
            id: format!("t_{number}"),
            number,
            psid,
            customer_name: CUSTOMER_NAMES[(g + k) % CUSTOMER_NAMES.len()].to_string(),
            key,
            updated: newest,
            messages,
        }
    }

    /// Appends a message (creating the conversation if `psid` is new) and moves the
    /// conversation to the top; the message id.
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

    /// `/{page}/conversations`: most recently updated first, Messenger only (Instagram has
    /// none here), optionally one customer's (`user_id`).
    pub(super) fn handle_conversations(
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
        let fields = fields(req, CONVERSATION_DEFAULT);
        let limit = limit(req)?;
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

    /// `/{conversation}/messages`: newest first.
    pub(super) fn handle_messages(
        &self,
        req: &Req,
        caller: &Caller,
        id: &str,
    ) -> Result<Value, Response> {
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
        let fields = fields(req, MESSAGE_DEFAULT);
        let limit = limit(req)?;
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
}

/// Message `j` (chronological) of conversation `k`: the customer and the page take turns; every
/// fifth has an image (every tenth without text), every thirteenth without one is a sticker.
fn generated_message(seq: u64, k: usize, j: usize, created: DateTime<Utc>) -> Message {
    let from_page = j % 2 == 1;
    let image = (j % 5 == 4).then(|| Image {
        id: 1_000_000_000_000_000 + seq,
        size: 20_000 + (seq * 7_919) % 180_000,
        width: if j.is_multiple_of(2) { 960 } else { 1080 },
        height: if j.is_multiple_of(2) { 1280 } else { 1080 },
    });
    let sticker = image.is_none() && j % 13 == 12;
    let text = if sticker || (image.is_some() && j % 10 == 9) {
        String::new()
    } else if from_page {
        PAGE_LINES[(k + j) % PAGE_LINES.len()].to_string()
    } else {
        CUSTOMER_LINES[(k + j) % CUSTOMER_LINES.len()].to_string()
    };
    Message {
        id: new_mid(),
        seq,
        created,
        from_page,
        text,
        image,
        sticker,
    }
}

fn participant(name: &str, id: &str) -> Value {
    json!({"name": name, "email": format!("{id}@facebook.com"), "id": id})
}

pub(super) fn render_conversation(p: &Page, c: &Conversation) -> Map<String, Value> {
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

pub(super) fn render_message(p: &Page, c: &Conversation, m: &Message) -> Map<String, Value> {
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
