//! `GET /metrics`: Prometheus text format. Counters and histograms are recorded where things
//! happen (webhook intake, uploads, polls, jobs); queue gauges are read at scrape time.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::AppError;
use crate::state::AppState;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later calls (tests start many apps) reuse it.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let secs = [
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &secs)
            .expect("bucket list is not empty")
            .install_recorder()
            .unwrap_or_else(|_| {
                // Another recorder is already installed (only possible in tests embedding us):
                // keep a private one so rendering still works.
                PrometheusBuilder::new().build_recorder().handle()
            })
    })
}

pub async fn render(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let handle = install();
    let q = state.events.stats().await?;
    metrics::gauge!("queue_depth", "status" => "pending").set(q.pending as f64);
    metrics::gauge!("queue_depth", "status" => "running").set(q.running as f64);
    metrics::gauge!("queue_failed_events").set(q.failed as f64);
    metrics::gauge!("queue_dead_letter_events").set(q.dead_lettered as f64);
    metrics::gauge!("queue_oldest_pending_age_seconds")
        .set(q.oldest_pending_age_ms as f64 / 1000.0);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}
