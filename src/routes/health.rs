//! `/`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::config::AppEnv;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::tokens::{AccountStatus, AccountSummary};

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// How long a ready answer is reused. `/readyz` is unauthenticated and each check is a
/// round trip to every database and a HeadBucket: without this, anyone polling it fast makes
/// us hammer the dependencies (and pay for the requests). Load balancers poll every few
/// seconds, so a dependency that goes away is still noticed within one of their intervals.
const READY_CACHED_FOR: Duration = Duration::from_secs(3);
/// How long a not-ready answer is reused: shorter, so that a dependency that has recovered
/// puts the instance back in rotation within a second, while a flood during an outage still
/// costs one check per second.
const NOT_READY_CACHED_FOR: Duration = Duration::from_secs(1);

/// The last readiness answer, per router (never a static: tests run many apps in one
/// process, and each must check its own dependencies).
#[derive(Clone)]
pub struct ReadyState {
    pub app: AppState,
    last: Arc<tokio::sync::Mutex<Option<Checked>>>,
}

struct Checked {
    at: Instant,
    ready: bool,
    checks: serde_json::Map<String, Value>,
}

impl Checked {
    fn fresh(&self) -> bool {
        let ttl = if self.ready {
            READY_CACHED_FOR
        } else {
            NOT_READY_CACHED_FOR
        };
        self.at.elapsed() < ttl
    }
}

impl ReadyState {
    pub fn new(app: AppState) -> ReadyState {
        ReadyState {
            app,
            last: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }
}

/// Ready when every database answers and the object store is reachable (an answer at most
/// `READY_CACHED_FOR` old, see there).
pub async fn readyz(State(ready): State<ReadyState>) -> impl IntoResponse {
    // Held across the check: concurrent requests wait for the one check and share it.
    let mut last = ready.last.lock().await;
    let checked = match last.take().filter(Checked::fresh) {
        Some(c) => c,
        None => {
            let (ready, checks) = check(&ready.app).await;
            Checked {
                at: Instant::now(),
                ready,
                checks,
            }
        }
    };
    let status = if checked.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if checked.ready { "ready" } else { "not_ready" },
        "checks": checked.checks,
    });
    *last = Some(checked);
    (status, Json(body))
}

/// Asks every database and the object store: whether all answered, and each one's result.
async fn check(state: &AppState) -> (bool, serde_json::Map<String, Value>) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut record = |name: &str, r: Result<(), String>| {
        checks.insert(
            name.to_string(),
            match r {
                Ok(()) => json!("ok"),
                Err(e) => {
                    ready = false;
                    tracing::warn!(check = name, error = %e, "readiness check failed");
                    json!("failed")
                }
            },
        );
    };
    record(
        "tokens_db",
        state.tokens.ping().await.map_err(|e| e.to_string()),
    );
    record(
        "sessions_db",
        state.sessions.ping().await.map_err(|e| e.to_string()),
    );
    record(
        "events_db",
        state.events.ping().await.map_err(|e| e.to_string()),
    );
    record(
        "object_store",
        state.objects.check_ready().await.map_err(|e| e.to_string()),
    );
    (ready, checks)
}

fn account_report(list: &[AccountSummary]) -> Value {
    let count = |s: AccountStatus| list.iter().filter(|a| a.status == s).count();
    let needs: Vec<Value> = list
        .iter()
        .filter(|a| a.status == AccountStatus::NeedsReauth)
        .map(|a| json!({"id": a.id, "reason": a.reason}))
        .collect();
    json!({
        "active": count(AccountStatus::Active),
        "uninstalled": count(AccountStatus::Uninstalled),
        "deleting": count(AccountStatus::Deleting),
        "needs_reauth": needs,
    })
}

/// How many of the latest page moves `/` lists.
const MOVES_SHOWN: usize = 50;

/// What is configured and how things stand, without secrets or merchant identities.
pub async fn index(
    State(state): State<AppState>,
    wants: crate::web::Wants,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, AppError> {
    if wants.html() {
        return crate::web::operator::dashboard(&state, &headers).await;
    }
    Ok(status_json(&state).await?.into_response())
}

async fn status_json(state: &AppState) -> Result<Json<Value>, AppError> {
    let cfg = &state.config;
    let shops = state.tokens.shop_summaries().await?;
    let pages = state.tokens.page_summaries().await?;
    // Pages moved to another merchant by the user who connected them: until there is a
    // merchant account page, the old owner's side of a move is reported here (no merchant ids).
    let moved: Vec<Value> = state
        .tokens
        .page_moves(MOVES_SHOWN)
        .await?
        .into_iter()
        .map(|m| {
            json!({
                "id": m.page_id,
                "moved_at": m.moved_at,
                "old_copy": if m.cleaned_at.is_some() { "deleted" } else { "pending" },
                "objects_deleted": m.objects_deleted,
            })
        })
        .collect();
    let queue = state.events.stats().await?;
    Ok(Json(json!({
        "service": "salesbot-sync",
        "version": env!("CARGO_PKG_VERSION"),
        "environment": if cfg.app_env == AppEnv::Production { "production" } else { "development" },
        "storage": cfg.storage.backend_name(),
        "integrations": {
            "shopify": {
                "configured": cfg.shopify.is_some(),
                "login": "/shopify/{shop}/login",
                "shops": account_report(&shops),
            },
            "facebook": {
                "configured": cfg.facebook.is_some(),
                "login": "/facebook/login",
                "pages": account_report(&pages),
                "moved": moved,
            },
        },
        "queue": queue,
    })))
}
