//! The Facebook callback's answer: what became of each page the merchant granted, and the
//! SPEC §4 JSON it is written as ("Facebook callback JSON": `user_uuid`, `pages` as Graph
//! listed them without tokens, and `webhook_test`, `polling_test`, `upload_status` as lists of
//! `{page_id, type?, result}`).

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::connect::Step;
use crate::ids::MerchantId;

#[derive(Debug, Clone)]
pub struct FacebookConnected {
    pub user_uuid: MerchantId,
    /// Every page the merchant granted, in Graph's order.
    pub pages: Vec<GrantedPage>,
}

#[derive(Debug, Clone)]
pub struct GrantedPage {
    /// The page as Graph listed it, without its token (the answer's `pages.data` entry).
    pub listed: Value,
    /// Its id as listed (empty when Graph gave none).
    pub id: String,
    pub name: Option<String>,
    pub outcome: PageOutcome,
}

#[derive(Debug, Clone)]
pub enum PageOutcome {
    /// Not stored (no valid id or token, connected to another account, being deleted): why.
    Refused(Step),
    /// Stored, and the checks of its set-up.
    SetUp(Box<PageChecks>),
}

/// A stored page's set-up, step by step.
#[derive(Debug, Clone)]
pub struct PageChecks {
    /// The webhook self-tests: a metadata change and a message.
    pub metadata_webhook: Step,
    pub message_webhook: Step,
    /// The page's metadata read and written, and its initial conversation poll.
    pub metadata_poll: Step,
    pub conversations_poll: Step,
    /// Subscribed, set up and verified in the object store (the answer's `upload_status`).
    pub upload: Step,
}

/// One entry of the answer's per-page lists.
#[derive(Serialize)]
struct PageStep<'a> {
    page_id: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    result: &'a Step,
}

#[derive(Serialize)]
struct Listing<'a> {
    data: Vec<&'a Value>,
    /// Every page is listed: nothing to page through.
    paging: NoPaging,
}

#[derive(Serialize)]
struct NoPaging {}

#[derive(Serialize)]
struct Answer<'a> {
    user_uuid: MerchantId,
    pages: Listing<'a>,
    webhook_test: Vec<PageStep<'a>>,
    polling_test: Vec<PageStep<'a>>,
    upload_status: Vec<PageStep<'a>>,
}

fn step<'a>(page: &'a GrantedPage, kind: Option<&'static str>, result: &'a Step) -> PageStep<'a> {
    PageStep {
        page_id: &page.id,
        kind,
        result,
    }
}

impl Serialize for FacebookConnected {
    /// The refused pages' results come first in `upload_status`, as they are known first.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut answer = Answer {
            user_uuid: self.user_uuid,
            pages: Listing {
                data: self.pages.iter().map(|p| &p.listed).collect(),
                paging: NoPaging {},
            },
            webhook_test: Vec::new(),
            polling_test: Vec::new(),
            upload_status: Vec::new(),
        };
        for p in &self.pages {
            if let PageOutcome::Refused(why) = &p.outcome {
                answer.upload_status.push(step(p, None, why));
            }
        }
        for p in &self.pages {
            let PageOutcome::SetUp(c) = &p.outcome else {
                continue;
            };
            answer.webhook_test.extend([
                step(p, Some("metadata"), &c.metadata_webhook),
                step(p, Some("messages"), &c.message_webhook),
            ]);
            answer.polling_test.extend([
                step(p, Some("metadata"), &c.metadata_poll),
                step(p, Some("conversations"), &c.conversations_poll),
            ]);
            answer.upload_status.push(step(p, None, &c.upload));
        }
        answer.serialize(s)
    }
}
