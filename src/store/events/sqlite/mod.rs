//! The queue in `events.db`. Every write goes through the one writer thread (`writer`): the
//! intake's inserts with group commit, the claim, outcomes and leases (`queue`) and the
//! shared statements that change rows. Reads run on a second connection of their own.

mod queue;
mod writer;

use std::path::Path;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row};

use super::rows::{ClaimReq, Found, Outcomes, Recorded, StatusCounts, StoredOutcome, StoredRun};
use super::{
    sql, EnqueueError, Enqueued, EventDb, EventId, EventRow, NewEvent, Pool, RunId, RunKind,
    RunTrigger, Tracked,
};
use crate::store::sqlite::{numbered, Db};
use crate::store::{DbKind, StoreError};
use writer::{insert_event, Writer};

pub(super) struct SqliteEvents {
    /// The reading connection (also the store's `backend()`).
    read: Db,
    writer: Writer,
}

impl SqliteEvents {
    /// Opens `path` twice (reads, and the writer thread's connection); returns the store's
    /// backend and its reading `Db`.
    pub fn open(path: &Path) -> Result<(SqliteEvents, Db), StoreError> {
        let read = Db::open(path, DbKind::Events)?;
        let writer = Writer::start(path)?;
        let db = SqliteEvents {
            read: read.clone(),
            writer,
        };
        Ok((db, read))
    }

    /// Runs a shared statement on the writer (bookkeeping: see `writer::Durability`); the
    /// rows it changed.
    async fn write(&self, sql: &'static str, values: Values) -> Result<usize, StoreError> {
        self.writer
            .write(move |c| Ok(execute(c, sql, &values)?))
            .await
    }

    /// The same for new work or deletions that must survive a power loss.
    async fn write_durable(&self, sql: &'static str, values: Values) -> Result<usize, StoreError> {
        self.writer
            .write_durable(move |c| Ok(execute(c, sql, &values)?))
            .await
    }

    /// Every row a shared query returns, read on the reading connection.
    async fn all<T: Send + 'static>(
        &self,
        sql: &'static str,
        values: Values,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.read
            .call(move |c| {
                let refs = refs(&values);
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map(numbered(&refs).as_slice(), row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// The one row a shared query returns (or none).
    async fn optional<T: Send + 'static>(
        &self,
        sql: &'static str,
        values: Values,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.read
            .call(move |c| {
                let refs = refs(&values);
                let mut st = c.prepare_cached(sql)?;
                Ok(st.query_row(numbered(&refs).as_slice(), row).optional()?)
            })
            .await
    }

    /// The one row a shared query always returns (a count).
    async fn one<T: Send + 'static>(
        &self,
        sql: &'static str,
        values: Values,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.optional(sql, values, row)
            .await?
            .ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }
}

/// A shared statement's values, bound to `$1`, `$2`, … in order (sent to another thread).
type Values = Vec<Box<dyn ToSql + Send>>;

fn v<T: ToSql + Send + 'static>(value: T) -> Box<dyn ToSql + Send> {
    Box::new(value)
}

fn refs(values: &Values) -> Vec<&dyn ToSql> {
    values.iter().map(|v| v.as_ref() as &dyn ToSql).collect()
}

/// Binds `values` to `$1`, `$2`, … by name (see `store::sqlite::numbered`).
fn execute(c: &Connection, sql: &str, values: &Values) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?
        .execute(numbered(&refs(values)).as_slice())
}

/// Binds generated texts' values (`sql::open_groups`, `sql::in_groups`), which may be more
/// than `numbered`'s 32, by name all the same.
fn by_name<R>(
    values: &[&dyn ToSql],
    f: impl FnOnce(&[(&str, &dyn ToSql)]) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let names: Vec<String> = (1..=values.len()).map(|i| format!("${i}")).collect();
    let params: Vec<(&str, &dyn ToSql)> = names
        .iter()
        .map(String::as_str)
        .zip(values.iter().copied())
        .collect();
    f(&params)
}

fn strings(values: &[String]) -> Vec<&dyn ToSql> {
    values.iter().map(|v| v as &dyn ToSql).collect()
}

/// `sql::ROWS` and `sql::RECENT_FAILURES`.
fn event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        dedupe_key: r.get(2)?,
        group_key: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        last_error: r.get(6)?,
        run_id: r.get(7)?,
    })
}

/// `sql::OUTCOME`, `sql::OUTCOME_OF_KEY` and `sql::RUN_JOBS`.
fn outcome(r: &Row<'_>) -> rusqlite::Result<StoredOutcome> {
    Ok(StoredOutcome {
        id: r.get(0)?,
        kind: r.get(1)?,
        group_key: r.get(2)?,
        status: r.get(3)?,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        result: r.get(6)?,
    })
}

fn run(r: &Row<'_>) -> rusqlite::Result<StoredRun> {
    Ok(StoredRun {
        id: r.get(0)?,
        kind: r.get(1)?,
        trigger: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        summary: r.get(5)?,
    })
}

fn tracked(r: &Row<'_>) -> rusqlite::Result<Tracked> {
    Ok(Tracked {
        target: r.get(0)?,
        event_id: r.get(1)?,
        run_id: r.get(2)?,
        done: r.get(3)?,
        total: r.get(4)?,
        started_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

#[async_trait]
impl EventDb for SqliteEvents {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read.ping().await
    }

    async fn enqueue_together(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        self.writer.insert(events, now).await
    }

    async fn enqueue_all(
        &self,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.writer
            .write_durable(move |c| {
                let tx = c.transaction()?;
                let out = events
                    .iter()
                    .map(|e| insert_event(&tx, e, now))
                    .collect::<Result<Vec<_>, _>>()?;
                tx.commit()?;
                Ok(out)
            })
            .await
    }

    /// One process owns `events.db`: the in-process wake-ups are all there is.
    fn announce(&self, _pools: &[Pool], _finished: bool) {}

    async fn claim(&self, req: ClaimReq) -> Result<Found, StoreError> {
        self.writer.write(move |c| queue::claim(c, &req)).await
    }

    async fn record(&self, out: Outcomes) -> Result<Recorded, StoreError> {
        self.writer.write(move |c| queue::record(c, &out)).await
    }

    async fn extend_lease(
        &self,
        ids: Vec<EventId>,
        worker: String,
        until: i64,
    ) -> Result<usize, StoreError> {
        self.writer
            .write(move |c| queue::extend_lease(c, &ids, &worker, until))
            .await
    }

    async fn reclaim_expired(&self, now: i64) -> Result<usize, StoreError> {
        self.writer
            .write(move |c| queue::reclaim_expired(c, now))
            .await
    }

    async fn recover_orphans(&self, _now: i64) -> Result<usize, StoreError> {
        self.writer.write(queue::recover_orphans).await
    }

    async fn requeue_failed(&self, now: i64) -> Result<usize, StoreError> {
        self.write_durable(sql::REQUEUE_FAILED, vec![v(now)]).await
    }

    async fn prune_finished(
        &self,
        done_before: i64,
        given_up_before: i64,
    ) -> Result<usize, StoreError> {
        self.writer
            .write(move |c| {
                let tx = c.transaction()?;
                let mut n = 0;
                for (sql, cutoff) in [
                    (sql::PRUNE_DONE, done_before),
                    (sql::PRUNE_GIVEN_UP, given_up_before),
                    (sql::PRUNE_RUNS, given_up_before),
                ] {
                    n += execute(&tx, sql, &vec![v(cutoff)])?;
                }
                tx.commit()?;
                Ok(n)
            })
            .await
    }

    async fn status_counts(&self, now: i64) -> Result<StatusCounts, StoreError> {
        let by_status = self
            .all(sql::STATUS_COUNTS, vec![], |r| Ok((r.get(0)?, r.get(1)?)))
            .await?;
        let oldest_due = self
            .one(sql::OLDEST_DUE, vec![v(now)], |r| r.get(0))
            .await?;
        Ok(StatusCounts {
            by_status,
            oldest_due,
        })
    }

    async fn activity(&self, now: i64) -> Result<(i64, Option<i64>), StoreError> {
        self.one(sql::ACTIVITY, vec![v(now)], |r| Ok((r.get(0)?, r.get(1)?)))
            .await
    }

    async fn recent_failures(&self, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        self.all(sql::RECENT_FAILURES, vec![v(limit)], event_row)
            .await
    }

    async fn rows(&self) -> Result<Vec<EventRow>, StoreError> {
        self.all(sql::ROWS, vec![], event_row).await
    }

    async fn outcome(&self, id: EventId) -> Result<Option<StoredOutcome>, StoreError> {
        self.optional(sql::OUTCOME, vec![v(id)], outcome).await
    }

    async fn outcome_of_key(&self, key: String) -> Result<Option<StoredOutcome>, StoreError> {
        self.optional(sql::OUTCOME_OF_KEY, vec![v(key)], outcome)
            .await
    }

    async fn open_groups(&self, kinds: Vec<&'static str>) -> Result<Vec<String>, StoreError> {
        self.read
            .call(move |c| {
                let mut st = c.prepare(&sql::open_groups(kinds.len()))?;
                let values: Vec<&dyn ToSql> = kinds.iter().map(|k| k as &dyn ToSql).collect();
                let groups = by_name(&values, |p| {
                    st.query_map(p, |r| r.get(0))?
                        .collect::<Result<Vec<_>, _>>()
                })?;
                Ok(groups)
            })
            .await
    }

    async fn running_of_kind(&self, kind: &'static str) -> Result<i64, StoreError> {
        self.one(sql::RUNNING_OF_KIND, vec![v(kind)], |r| r.get(0))
            .await
    }

    async fn running_in_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<i64, StoreError> {
        self.read
            .call(move |c| {
                let (text, values) = sql::running_in_groups(&exact, &prefixes);
                let mut st = c.prepare(&text)?;
                Ok(by_name(&strings(&values), |p| {
                    st.query_row(p, |r| r.get(0))
                })?)
            })
            .await
    }

    async fn purge_groups(
        &self,
        exact: Vec<String>,
        prefixes: Vec<String>,
    ) -> Result<usize, StoreError> {
        self.writer
            .write_durable(move |c| {
                let (text, values) = sql::purge_groups(&exact, &prefixes);
                let mut st = c.prepare(&text)?;
                Ok(by_name(&strings(&values), |p| st.execute(p))?)
            })
            .await
    }

    async fn unfinished_payloads(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(EventId, Vec<u8>)>, StoreError> {
        self.all(sql::UNFINISHED_PAYLOADS, vec![v(kind)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    async fn set_payload(&self, id: EventId, payload: Vec<u8>) -> Result<bool, StoreError> {
        let n = self
            .write_durable(sql::SET_PAYLOAD, vec![v(payload), v(id)])
            .await?;
        Ok(n == 1)
    }

    async fn delete_event(&self, id: EventId) -> Result<bool, StoreError> {
        Ok(self.write_durable(sql::DELETE_EVENT, vec![v(id)]).await? == 1)
    }

    async fn create_run(
        &self,
        kind: RunKind,
        trigger: RunTrigger,
        now: i64,
    ) -> Result<RunId, StoreError> {
        self.writer
            .write_durable(move |c| {
                Ok(c.prepare_cached(sql::CREATE_RUN)?
                    .query_row(numbered(&[&kind, &trigger, &now]).as_slice(), |r| r.get(0))?)
            })
            .await
    }

    async fn run_jobs(&self, run: RunId) -> Result<Vec<StoredOutcome>, StoreError> {
        self.all(sql::RUN_JOBS, vec![v(run)], outcome).await
    }

    async fn run_open_jobs(&self, run: RunId) -> Result<i64, StoreError> {
        self.one(sql::RUN_OPEN_JOBS, vec![v(run)], |r| r.get(0))
            .await
    }

    async fn finish_run(&self, run: RunId, summary: String, now: i64) -> Result<(), StoreError> {
        let values = vec![v(now), v(summary), v(run)];
        self.write(sql::FINISH_RUN, values).await?;
        Ok(())
    }

    async fn runs(&self, unfinished_only: bool, limit: i64) -> Result<Vec<StoredRun>, StoreError> {
        self.all(sql::RUNS, vec![v(unfinished_only), v(limit)], run)
            .await
    }

    async fn run_group_progress(
        &self,
        run: RunId,
        lo: String,
        hi: String,
    ) -> Result<(i64, i64), StoreError> {
        let values = vec![v(run), v(lo), v(hi)];
        self.one(sql::RUN_GROUP_PROGRESS, values, |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    async fn track(
        &self,
        target: String,
        event: EventId,
        run: Option<RunId>,
        now: i64,
    ) -> Result<(), StoreError> {
        let values = vec![v(target), v(event), v(run), v(now)];
        self.write(sql::TRACK, values).await?;
        Ok(())
    }

    async fn report_progress(
        &self,
        event: EventId,
        done: i64,
        total: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let values = vec![v(event), v(done), v(total), v(now)];
        self.write(sql::REPORT_PROGRESS, values).await?;
        Ok(())
    }

    async fn tracked(&self, target: String) -> Result<Option<Tracked>, StoreError> {
        self.optional(sql::TRACKED, vec![v(target)], tracked).await
    }

    async fn untrack(&self, target: String) -> Result<(), StoreError> {
        self.write(sql::UNTRACK, vec![v(target)]).await?;
        Ok(())
    }
}
