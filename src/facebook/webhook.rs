//! A Meta webhook delivery taken into the queue (`POST /facebook/webhook`; its signature and
//! object are checked in `routes::facebook`): fanned out into jobs, recorded durably,
//! acknowledged.

use super::jobs::FacebookDelivery;
use crate::jobs::{IntakeError, Job};
use crate::state::AppState;
use crate::store::events::NewEvent;

/// Counts a delivery refused, by reason.
pub fn reject(reason: &'static str) {
    metrics::counter!("webhooks_rejected_total", "source" => "facebook", "reason" => reason)
        .increment(1);
}

/// The delivery itself as a job, exactly as received.
fn raw_delivery(body: &[u8]) -> Result<NewEvent, IntakeError> {
    let raw = String::from_utf8(body.to_vec())
        .ok()
        .and_then(|s| serde_json::value::RawValue::from_string(s).ok())
        .ok_or_else(|| IntakeError::Refused("body is not JSON".into()))?;
    Ok(FacebookDelivery(raw).to_event())
}

/// Fans a signed page delivery out into one job per conversation and page, all recorded
/// durably in one commit before the 200 (a redelivery's jobs have the same dedupe keys:
/// no-ops). A delivery with parts that cannot become jobs is also kept raw: its job records
/// the reasons (failing when nothing in it was usable), so operators see them.
pub async fn accept(state: &AppState, body: &[u8]) -> Result<(), IntakeError> {
    let jobs = match super::process::fan_out(body) {
        Ok(f) if f.rejected.is_empty() => f.events,
        Ok(f) => {
            reject("invalid_items");
            let mut jobs = f.events;
            jobs.push(raw_delivery(body)?);
            jobs
        }
        Err(_) => vec![raw_delivery(body)?],
    };
    if jobs.is_empty() {
        // Only receipts and the like, which are not conversation entries: nothing to do and
        // nothing worth a row (a busy page sends more receipts than messages).
        metrics::counter!("webhooks_received_total", "source" => "facebook").increment(1);
        return Ok(());
    }
    state.events.enqueue_together(jobs).await?;
    metrics::counter!("webhooks_received_total", "source" => "facebook").increment(1);
    Ok(())
}
