//! TODO(log helper): the segmented log.
use std::ops::Range;
use std::sync::Arc;

use super::{LogConfig, LogError, NewRecord, Record};
use crate::io::{Clock, Disk};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    pub lowest_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    pub segment_count: u32,
    pub durable_offset: u64,
}

#[derive(Debug)]
pub struct Log {}

#[allow(unused_variables)]
impl Log {
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Result<Log, LogError> {
        todo!()
    }
    pub fn config(&self) -> &LogConfig {
        todo!()
    }
    pub fn append(&self, records: &[NewRecord]) -> Result<Range<u64>, LogError> {
        todo!()
    }
    pub fn append_at(
        &self,
        offset: u64,
        record: &NewRecord,
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        todo!()
    }
    pub fn sync(&self) -> Result<u64, LogError> {
        todo!()
    }
    pub fn read(&self, offset: u64) -> Result<Record, LogError> {
        todo!()
    }
    pub fn read_batch(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        todo!()
    }
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        todo!()
    }
    pub fn lowest_offset(&self) -> u64 {
        todo!()
    }
    pub fn next_offset(&self) -> u64 {
        todo!()
    }
    pub fn info(&self) -> LogInfo {
        todo!()
    }
    pub fn truncate_before(&self, offset: u64) -> Result<(), LogError> {
        todo!()
    }
    pub fn truncate_from(&self, offset: u64) -> Result<(), LogError> {
        todo!()
    }
    pub fn apply_retention(&self) -> Result<u32, LogError> {
        todo!()
    }
    pub fn close(&self) -> Result<(), LogError> {
        todo!()
    }
}
