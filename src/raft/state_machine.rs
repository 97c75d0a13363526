//! openraft's `RaftStateMachine` over the store: thin adapters (see `store.rs`).
//!
//! The log IS the state machine: applying an entry only moves the applied point and the
//! `committed` watch (one past the last applied client offset) and answers where the batch
//! landed. Snapshots are logical: metadata plus the data boundary at the snapshot's index
//! (DESIGN.md §3.5).

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use super::store::{off_thread, snapshot_data, Inner, StoreError};
use super::types::{BasicNode, Entry, LogId, NodeId, ProduceAck, StorageError, TypeConfig};

/// The state-machine side of the store, handed to `Raft::new`.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

/// Builds the (logical) snapshot of the applied state.
#[derive(Clone)]
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
}

impl StateMachine {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        StateMachine { inner }
    }
}

fn storage_error(
    e: StoreError,
    kind: impl FnOnce(AnyError) -> StorageIOError<NodeId>,
) -> StorageError {
    StorageError::IO {
        source: kind(AnyError::new(&e)),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let inner = self.inner.clone();
        let (meta, body) = off_thread(move || inner.build_snapshot())
            .await
            .map_err(|e| storage_error(e, |e| StorageIOError::write_snapshot(None, e)))?;
        Ok(Snapshot {
            meta,
            snapshot: snapshot_data(body),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok(self.inner.applied_state())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProduceAck>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let last = entries.last().map(|e| e.log_id);
        let inner = self.inner.clone();
        off_thread(move || inner.apply(entries))
            .await
            .map_err(|e| match last {
                Some(last) => storage_error(e, |e| StorageIOError::apply(last, e)),
                None => storage_error(e, StorageIOError::write_state_machine),
            })
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            inner: self.inner.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(snapshot_data(Vec::new()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let body = snapshot.into_inner();
        let signature = meta.signature();
        let (inner, meta) = (self.inner.clone(), meta.clone());
        off_thread(move || inner.install_snapshot(&meta, &body))
            .await
            .map_err(|e| storage_error(e, |e| StorageIOError::write_snapshot(Some(signature), e)))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.inner.current_snapshot().map(|(meta, body)| Snapshot {
            meta,
            snapshot: snapshot_data(body),
        }))
    }
}
