//! The `Partition` seam: what the service needs of one partition, whether its writes go through
//! the node's group-commit writer (a standalone node) or through Raft (a cluster member).

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::convert::{status_from_log_error, status_from_propose_error};
use super::node::{NodeError, PendingWrite};
use crate::log::{CommitterHandle, Log, NewRecord};
use crate::metrics::PartitionMetrics;
use crate::raft::node::RaftNode;
use crate::raft::proposer::ProposeError;

/// One partition as the service sees it.
///
/// Contract: `submit` resolves (through its `PendingWrite`) only once the records are
/// acknowledged (durable on this node, or committed on a majority); the committed offset only
/// grows, and every offset below it reads back from `log` (until retention drops it).
#[tonic::async_trait]
pub trait Partition: Send + Sync + std::fmt::Debug + 'static {
    /// Queues `records` (already validated against the limits). Waits while the write queue
    /// is full; refused at once (UNAVAILABLE naming the leader) on a Raft follower. A member
    /// waits for enough voters no later than `deadline`.
    async fn submit(
        &self,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<PendingWrite, Status>;

    /// The log consumers read, below the committed offset.
    fn log(&self) -> &Arc<Log>;

    /// One past the last committed (acknowledged, consumer-visible) offset.
    fn watch_committed(&self) -> watch::Receiver<u64>;

    fn committed_offset(&self) -> u64 {
        *self.watch_committed().borrow()
    }

    /// Its produce and consume counters (labelled by topic and partition).
    fn metrics(&self) -> &PartitionMetrics;

    /// Becomes true once the partition is shut down (its topic deleted, or the node stopping):
    /// following streams end then.
    fn closed(&self) -> watch::Receiver<bool>;

    /// Finishes what is queued, syncs and closes the log.
    async fn shutdown(&self) -> Result<(), NodeError>;
}

/// A standalone node's partition: appends go through the node's group-commit writer.
#[derive(Debug)]
pub struct LocalPartition {
    writer: CommitterHandle,
    committed: watch::Receiver<u64>,
    metrics: PartitionMetrics,
    closed: watch::Sender<bool>,
}

impl LocalPartition {
    pub fn new(writer: CommitterHandle, metrics: PartitionMetrics) -> LocalPartition {
        let committed = writer.committed();
        LocalPartition {
            writer,
            committed,
            metrics,
            closed: watch::Sender::new(false),
        }
    }
}

#[tonic::async_trait]
impl Partition for LocalPartition {
    async fn submit(
        &self,
        records: Vec<NewRecord>,
        _deadline: Option<Instant>,
    ) -> Result<PendingWrite, Status> {
        let pending = self
            .writer
            .submit(records)
            .await
            .map_err(status_from_log_error)?;
        Ok(Box::pin(async move {
            pending.await.map_err(status_from_log_error)
        }))
    }

    fn log(&self) -> &Arc<Log> {
        self.writer.log()
    }

    fn watch_committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn metrics(&self) -> &PartitionMetrics {
        &self.metrics
    }

    fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    async fn shutdown(&self) -> Result<(), NodeError> {
        let closed = self.writer.shutdown().await;
        self.closed.send_replace(true);
        Ok(closed?)
    }
}

/// A cluster member's partition: its replicated log, written through Raft on the leader.
pub struct ReplicatedPartition {
    raft: RaftNode,
    log: Arc<Log>,
    committed: watch::Receiver<u64>,
    metrics: PartitionMetrics,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for ReplicatedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedPartition")
            .field("log", &self.log.config().dir)
            .finish()
    }
}

impl ReplicatedPartition {
    pub fn new(raft: RaftNode, metrics: PartitionMetrics) -> ReplicatedPartition {
        let log = raft.store().data_log().clone();
        let committed = raft.store().committed();
        ReplicatedPartition {
            raft,
            log,
            committed,
            metrics,
            closed: watch::Sender::new(false),
        }
    }

    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }
}

#[tonic::async_trait]
impl Partition for ReplicatedPartition {
    async fn submit(
        &self,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<PendingWrite, Status> {
        let values = records.into_iter().map(|r| r.value).collect();
        let pending = self
            .raft
            .proposer()
            .submit_before(values, deadline)
            .await
            .map_err(status_from_propose_error)?;
        Ok(Box::pin(async move {
            match pending.await {
                Ok(result) => result.map_err(status_from_propose_error),
                Err(_) => Err(status_from_propose_error(ProposeError::Stopped(
                    "the write was dropped".into(),
                ))),
            }
        }))
    }

    fn log(&self) -> &Arc<Log> {
        &self.log
    }

    fn watch_committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    fn metrics(&self) -> &PartitionMetrics {
        &self.metrics
    }

    fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    async fn shutdown(&self) -> Result<(), NodeError> {
        let stopped = self.raft.shutdown().await;
        self.closed.send_replace(true);
        Ok(stopped?)
    }
}
