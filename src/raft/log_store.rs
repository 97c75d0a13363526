//! openraft's `RaftLogStorage` and `RaftLogReader` over the store: thin adapters. Everything
//! that touches files, and all translation between Raft indexes and client offsets, lives in
//! `store.rs`.
//!
//! Writes (append, vote, truncate, purge) run off the async threads (`store::off_thread`) and
//! are serialized inside the store in submission order. `append` returns once the entries are
//! readable *and* durable, and fires the flush callback just before returning: openraft 0.9
//! waits for that callback before it sends the next append anyway (DESIGN.md §3.1).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};

use super::store::{off_thread, Inner, StoreError};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The log side of the store, handed to `Raft::new`.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl LogStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        LogStore { inner }
    }
}

fn storage_error(e: StoreError, kind: fn(AnyError) -> StorageIOError<NodeId>) -> StorageError {
    StorageError::IO {
        source: kind(AnyError::new(&e)),
    }
}

fn read_error(e: StoreError) -> StorageError {
    storage_error(e, StorageIOError::read_logs)
}

/// `[start, end)` of a range of indexes.
fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

async fn read_range<RB: RangeBounds<u64>>(
    inner: &Inner,
    range: RB,
) -> Result<Vec<Entry>, StorageError> {
    let (start, end) = bounds(&range);
    inner.read_entries(start, end, None).map_err(read_error)
}

async fn read_limited(inner: &Inner, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
    let max = inner.read_bytes_max();
    inner
        .read_entries(start, end, Some(max))
        .map_err(read_error)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_range(&self.inner, range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        read_limited(&self.inner, start, end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    /// Replication tasks read through a clone of the store itself.
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged_log_id, last_log_id) = self.inner.log_state();
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let (inner, vote) = (self.inner.clone(), *vote);
        off_thread(move || inner.save_vote(&vote))
            .await
            .map_err(|e| storage_error(e, StorageIOError::write_vote))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.inner.vote())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.inner
            .save_committed(committed)
            .map_err(|e| storage_error(e, StorageIOError::write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.committed_log_id())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let inner = self.inner.clone();
        match off_thread(move || inner.append(entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(storage_error(e, StorageIOError::write_logs))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        off_thread(move || inner.truncate(log_id.index))
            .await
            .map_err(|e| storage_error(e, StorageIOError::write_logs))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        off_thread(move || inner.purge(log_id))
            .await
            .map_err(|e| storage_error(e, StorageIOError::write_logs))
    }
}
