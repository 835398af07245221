//! Poll runs: a row per run, its jobs found by `run_id`, its summary once they are done.

use super::{EventStore, Outcome, RunId, RunKind, RunRecord, RunTrigger};
use crate::store::{now_millis, StoreError};

impl EventStore {
    pub async fn create_run(
        &self,
        kind: RunKind,
        trigger: RunTrigger,
    ) -> Result<RunId, StoreError> {
        self.db.create_run(kind, trigger, now_millis()).await
    }

    /// Every job of the run, with how it stands.
    pub async fn run_jobs(&self, run: RunId) -> Result<Vec<Outcome>, StoreError> {
        let jobs = self.db.run_jobs(run).await?;
        Ok(jobs.into_iter().map(Outcome::from).collect())
    }

    /// How many of the run's jobs are still pending or running (cheap: an index count).
    pub async fn run_open_jobs(&self, run: RunId) -> Result<i64, StoreError> {
        self.db.run_open_jobs(run).await
    }

    pub async fn finish_run(
        &self,
        run: RunId,
        summary: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.db
            .finish_run(run, summary.to_string(), now_millis())
            .await
    }

    pub async fn runs(
        &self,
        unfinished_only: bool,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let runs = self.db.runs(unfinished_only, limit).await?;
        Ok(runs.into_iter().map(RunRecord::from).collect())
    }
}
