//! Poll runs: a row per run, its jobs found by `run_id`, its summary once they are done.

use rusqlite::params;

use super::types::parse_result;
use super::{
    outcome_from_row, postgres, EventStore, Outcome, RunId, RunKind, RunRecord, RunTrigger,
    OUTCOME_COLUMNS,
};
use crate::store::{now_millis, sqlite_or, StoreError};

impl EventStore {
    pub async fn create_run(
        &self,
        kind: RunKind,
        trigger: RunTrigger,
    ) -> Result<RunId, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::create_run(pg, kind, trigger));
        self.write_durable(move |c| {
            c.execute(
                "INSERT INTO runs (kind, trigger, started_at) VALUES (?1, ?2, ?3)",
                params![kind, trigger, now_millis()],
            )?;
            Ok(RunId(c.last_insert_rowid()))
        })
        .await
    }

    /// Every job of the run, with how it stands.
    pub async fn run_jobs(&self, run: RunId) -> Result<Vec<Outcome>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::run_jobs(pg, run))
            .call(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {OUTCOME_COLUMNS} FROM events WHERE run_id = ?1 ORDER BY id"
                ))?;
                let v = st
                    .query_map([run], outcome_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    /// How many of the run's jobs are still pending or running (cheap: an index count).
    pub async fn run_open_jobs(&self, run: RunId) -> Result<i64, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::run_open_jobs(pg, run))
            .call(move |c| {
                Ok(c.prepare_cached(
                    "SELECT COUNT(*) FROM events
                     WHERE run_id = ?1 AND status IN ('pending', 'running')",
                )?
                .query_row([run], |r| r.get(0))?)
            })
            .await
    }

    pub async fn finish_run(
        &self,
        run: RunId,
        summary: serde_json::Value,
    ) -> Result<(), StoreError> {
        let summary = summary.to_string();
        sqlite_or!(&self.backend, pg => postgres::finish_run(pg, run, summary));
        self.write(move |c| {
            c.execute(
                "UPDATE runs SET finished_at = ?1, summary = ?2 WHERE id = ?3 AND finished_at IS NULL",
                params![now_millis(), summary, run],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn runs(
        &self,
        unfinished_only: bool,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        sqlite_or!(&self.backend, pg => postgres::runs(pg, unfinished_only, limit))
            .call(move |c| {
                let sql = if unfinished_only {
                    "SELECT id, kind, trigger, started_at, finished_at, summary FROM runs
                     WHERE finished_at IS NULL ORDER BY id DESC LIMIT ?1"
                } else {
                    "SELECT id, kind, trigger, started_at, finished_at, summary FROM runs
                     ORDER BY id DESC LIMIT ?1"
                };
                let mut st = c.prepare_cached(sql)?;
                let v = st
                    .query_map([limit as i64], |r| {
                        Ok(RunRecord {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            trigger: r.get(2)?,
                            started_at: r.get(3)?,
                            finished_at: r.get(4)?,
                            summary: parse_result(r.get(5)?),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }
}
