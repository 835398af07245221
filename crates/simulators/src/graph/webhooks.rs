//! Meta webhooks: the page subscriptions of `/{page}/subscribed_apps`, the Messenger
//! deliveries Meta would send for a message, and their signature.

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use super::api::{Caller, Req};
use super::errors::{needs_page_token_210, param_error, unsupported};
use super::{FakeGraph, State, APP_NAME, PAGE_WEBHOOK_FIELDS, STICKER_URL};
use crate::http::{self, Delivery};
use crate::signing;

impl FakeGraph {
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

    /// Another app (a help desk, Page Inbox) controls the conversation with `psid`, or no
    /// longer does: while it does, its events reach our app only under `standby`.
    pub fn set_routed_elsewhere(&self, page_id: &str, psid: &str, elsewhere: bool) {
        let mut st = self.st();
        let routed = &mut st.page_mut(page_id).routed_elsewhere;
        if elsewhere {
            routed.insert(psid.to_string());
        } else {
            routed.remove(psid);
        }
    }

    /// The Messenger webhook delivery Meta would send for a stored message
    /// (`{"object":"page","entry":[{"id","time","messaging":[…]}]}`), or `None` when our app
    /// is not subscribed to the field that carries it: a customer's message comes on
    /// `messages`, the page's own reply only on `message_echoes`, and any event of a
    /// conversation another app controls only on `standby` (as `entry[].standby[]`).
    pub fn message_webhook(&self, page_id: &str, mid: &str) -> Option<Value> {
        let st = self.st();
        let page = st.page(page_id);
        let (conv, m) = page
            .conversations
            .iter()
            .find_map(|c| c.messages.iter().find(|m| m.id == mid).map(|m| (c, m)))
            .unwrap_or_else(|| panic!("no message {mid} on page {page_id}"));
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
        let field = if m.from_page {
            "message_echoes"
        } else {
            "messages"
        };
        let event = Event {
            psid: &conv.psid,
            from_page: m.from_page,
            ts: m.created.timestamp_millis(),
            key: "message",
            body: message,
        };
        st.messenger_delivery(page_id, field, event)
    }

    /// Message `mid` is edited to `text` by whoever sent it: Graph then returns the new text,
    /// and Meta sends `message_edit` (`{mid, text, num_edit}`) on `message_edits`.
    pub fn edit_message(&self, page_id: &str, mid: &str, text: &str, ts: i64) -> Option<Value> {
        let mut st = self.st();
        let page = st.page_mut(page_id);
        let (psid, from_page) = page
            .conversations
            .iter_mut()
            .find_map(|c| {
                let psid = c.psid.clone();
                c.messages.iter_mut().find(|m| m.id == mid).map(|m| {
                    m.text = text.to_string();
                    (psid, m.from_page)
                })
            })
            .unwrap_or_else(|| panic!("no message {mid} on page {page_id}"));
        let n = page.edit_counts.entry(mid.to_string()).or_insert(0);
        *n += 1;
        let body = json!({"mid": mid, "text": text, "num_edit": *n});
        let event = Event {
            psid: &psid,
            from_page,
            ts,
            key: "message_edit",
            body,
        };
        st.messenger_delivery(page_id, "message_edits", event)
    }

    /// A reaction to message `mid` by the customer or the page (`action`: `react` or
    /// `unreact`), as Meta sends it on `message_reactions`.
    pub fn reaction_webhook(
        &self,
        page_id: &str,
        psid: &str,
        mid: &str,
        (action, by_page): (&str, bool),
        ts: i64,
    ) -> Option<Value> {
        let mut body = json!({"mid": mid, "action": action});
        if action == "react" {
            body["reaction"] = json!("love");
            body["emoji"] = json!("\u{2764}\u{FE0F}");
        }
        let event = Event {
            psid,
            from_page: by_page,
            ts,
            key: "reaction",
            body,
        };
        self.st()
            .messenger_delivery(page_id, "message_reactions", event)
    }

    /// The delivery of a customer's tap on a button (`messaging_postbacks`).
    pub fn postback_webhook(
        &self,
        page_id: &str,
        psid: &str,
        title: &str,
        payload: &str,
        ts: i64,
    ) -> Option<Value> {
        let body = json!({"mid": format!("m_pb_{psid}_{ts}"), "title": title, "payload": payload});
        let event = Event {
            psid,
            from_page: false,
            ts,
            key: "postback",
            body,
        };
        self.st()
            .messenger_delivery(page_id, "messaging_postbacks", event)
    }

    /// The delivery of a customer entering from a click-to-Messenger ad for `product_id`
    /// (`messaging_referrals`, `source: ADS`, with `ads_context_data`).
    pub fn ad_referral_webhook(
        &self,
        page_id: &str,
        psid: &str,
        ad_id: &str,
        product_id: &str,
        ts: i64,
    ) -> Option<Value> {
        let body = json!({
            "ref": "spring_sale",
            "source": "ADS",
            "type": "OPEN_THREAD",
            "ad_id": ad_id,
            "ads_context_data": {
                "ad_title": "Spring sale",
                "photo_url": "https://scontent.example/ad.jpg",
                "product_id": product_id,
            },
        });
        let event = Event {
            psid,
            from_page: false,
            ts,
            key: "referral",
            body,
        };
        self.st()
            .messenger_delivery(page_id, "messaging_referrals", event)
    }

    /// Delivers a webhook `body` to the app's callback `url`, signed as Meta signs it
    /// (`X-Hub-Signature-256`); returns the HTTP status.
    pub async fn emit_webhook(&self, url: &str, body: &Value) -> Result<u16, String> {
        let bytes = body.to_string().into_bytes();
        let delivery = Delivery {
            uri: url.to_string(),
            headers: vec![
                ("Content-Type", "application/json".to_string()),
                ("X-Hub-Signature-256", self.signature_256(&bytes)),
            ],
            body: bytes,
        };
        http::deliver(&http::client(Duration::from_secs(10)), delivery).await
    }

    /// `X-Hub-Signature-256` value for a webhook body: `sha256=hex(HMAC-SHA256(app_secret, body))`.
    pub fn signature_256(&self, body: &[u8]) -> String {
        signing::meta_signature_256(&self.config().app_secret, body)
    }
}

/// One Messenger event of a conversation, before it is wrapped in a delivery.
struct Event<'a> {
    psid: &'a str,
    from_page: bool,
    ts: i64,
    /// `message`, `postback`, `referral`, …
    key: &'static str,
    body: Value,
}

impl State {
    /// A delivery of `event` as Meta sends it on `field`, or `None` when our app is not
    /// subscribed to what carries it (`standby` instead of `field` for a conversation
    /// another app controls).
    fn messenger_delivery(&self, page_id: &str, field: &str, event: Event<'_>) -> Option<Value> {
        let page = self.page(page_id);
        let standby = page.routed_elsewhere.contains(event.psid);
        let field = if standby { "standby" } else { field };
        if !page.subscribed.iter().any(|f| f == field) {
            return None;
        }
        let (sender, recipient) = if event.from_page {
            (page.id.as_str(), event.psid)
        } else {
            (event.psid, page.id.as_str())
        };
        let mut item = json!({
            "sender": {"id": sender},
            "recipient": {"id": recipient},
            "timestamp": event.ts,
        });
        item[event.key] = event.body;
        let list = if standby { "standby" } else { "messaging" };
        Some(json!({
            "object": "page",
            "entry": [{"id": page.id, "time": event.ts, list: [item]}],
        }))
    }

    /// `/{page}/subscribed_apps` with the page's own token: `POST` subscribes our app with
    /// `subscribed_fields`, `DELETE` unsubscribes it, `GET` lists every app subscribed.
    pub(super) fn handle_subscribed_apps(
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
            return self.subscribe(req, id);
        }
        if req.method == Method::DELETE {
            self.page_mut(id).subscribed.clear();
            return Ok(json!({"success": true}));
        }
        Ok(self.subscribed_apps(id))
    }

    fn subscribe(&mut self, req: &Req, id: &str) -> Result<Value, Response> {
        *self.subscribe_posts.entry(id.to_string()).or_default() += 1;
        let Some(raw) = req.param("subscribed_fields") else {
            return Err(param_error(
                "(#100) The parameter subscribed_fields is required",
            ));
        };
        // Graph takes a JSON array or a comma-separated list.
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
        Ok(json!({"success": true}))
    }

    /// Other apps first, then ours when subscribed.
    fn subscribed_apps(&self, id: &str) -> Value {
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
        json!({"data": data})
    }
}
