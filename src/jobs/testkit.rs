//! A built-in event kind for tests and benchmarks (feature `testkit`, never in release builds).
//!
//! `POST /_testkit/webhook` takes the same path as a platform webhook: HMAC-SHA256 check of the
//! raw body (base64 in `X-Testkit-Hmac-Sha256`, keyed with `STATE_TOKEN_SECRET`), durable
//! insert, 200. The handler sleeps `delay_ms`, writes `_testkit/<id>.json` (idempotent) and
//! records its effect as a follow-up event of kind `testkit_effect` with a unique dedupe key.
//! The follow-up commits in the same transaction that marks the delivery done, so counting
//! effect rows counts completed processings exactly: a run cut off by a crash leaves none.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Handler, JobError};
use crate::crypto::secret_bytes;
use crate::error::AppError;
use crate::objects::keys::{testkit as testkit_key, GraphId};
use crate::objects::ObjectStore;
use crate::state::AppState;
use crate::store::events::{Event, NewEvent};

pub const EVENT_KIND: &str = "testkit";
pub const EFFECT_KIND: &str = "testkit_effect";

#[derive(Deserialize)]
struct Delivery {
    id: String,
    #[serde(default)]
    delay_ms: u64,
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let sig = headers
        .get("x-testkit-hmac-sha256")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AppError::Unauthorized("missing signature".into()))?;
    if !crate::shopify::signature::verify_webhook(
        secret_bytes(&state.config.state_token_secret),
        &body,
        sig,
    ) {
        return Err(AppError::Unauthorized("invalid signature".into()));
    }
    let d: Delivery =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let id = GraphId::parse(&d.id).map_err(|e| AppError::BadRequest(e.to_string()))?;
    state
        .events
        .enqueue(NewEvent::new(
            EVENT_KIND,
            format!("testkit:{id}"),
            format!("testkit:{id}"),
            body.to_vec(),
        ))
        .await?;
    Ok(Json(json!({"status": "success"})))
}

pub struct TestkitHandler {
    pub objects: ObjectStore,
}

/// Effect rows need no processing; this handler just completes them.
pub struct EffectHandler;

#[async_trait::async_trait]
impl Handler for EffectHandler {
    async fn handle(&self, _events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        Ok(vec![])
    }
}

#[async_trait::async_trait]
impl Handler for TestkitHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        let mut effects = Vec::with_capacity(events.len());
        for ev in events {
            let d: Delivery = serde_json::from_slice(&ev.payload)
                .map_err(|e| JobError::Permanent(e.to_string()))?;
            let id = GraphId::parse(&d.id).map_err(|e| JobError::Permanent(e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
            self.objects
                .put_json_if_changed(&testkit_key(&id), &json!({"id": id.as_str()}))
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            effects.push(NewEvent::new(
                EFFECT_KIND,
                format!("{EFFECT_KIND}:{id}:{}", crate::config::random_token(12)),
                EFFECT_KIND,
                id.as_str().as_bytes().to_vec(),
            ));
        }
        Ok(effects)
    }
}
