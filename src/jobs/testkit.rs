//! A built-in event kind for tests and benchmarks (feature `testkit`, never in release builds).
//!
//! `POST /_testkit/webhook` takes the same path as a platform webhook: HMAC-SHA256 check of the
//! raw body (base64 in `X-Testkit-Hmac-Sha256`, keyed with `STATE_TOKEN_SECRET`), durable
//! insert, 200. The handler sleeps `delay_ms`, writes `_testkit/<id>.json` and, when
//! `TESTKIT_LOG` is set, appends `<id>` to that file: one line per processing.

use std::io::Write;
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
    pub log: Option<std::path::PathBuf>,
}

#[async_trait::async_trait]
impl Handler for TestkitHandler {
    async fn handle(&self, events: Vec<Event>) -> Result<Vec<NewEvent>, JobError> {
        for ev in events {
            let d: Delivery = serde_json::from_slice(&ev.payload)
                .map_err(|e| JobError::Permanent(e.to_string()))?;
            let id = GraphId::parse(&d.id).map_err(|e| JobError::Permanent(e.to_string()))?;
            tokio::time::sleep(Duration::from_millis(d.delay_ms)).await;
            self.objects
                .put_json_if_changed(&testkit_key(&id), &json!({"id": id.as_str()}))
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            if let Some(path) = &self.log {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| JobError::Retry(e.to_string()))?;
                writeln!(f, "{id}").map_err(|e| JobError::Retry(e.to_string()))?;
            }
        }
        Ok(vec![])
    }
}
