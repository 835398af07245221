//! Ticks on SQLite: one process owns the database files (the queue lock), so it owns every
//! tick, and there is no one to tell.

use async_trait::async_trait;

use super::TickDb;
use crate::store::StoreError;

pub(super) struct SqliteTicks;

#[async_trait]
impl TickDb for SqliteTicks {
    async fn claim(
        &self,
        _job: &str,
        _tick_at: i64,
        _instance: &str,
        _now: i64,
        _forget_before: i64,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn fired(&self, _job: &str) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(Vec::new())
    }
}
