//! A node: the log, how writes reach it (a local group-commit writer, or Raft replication), and
//! the limits the service enforces.

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::Status;

use super::admission::Admission;
use super::auth::Guard;
use super::convert::{status_from_log_error, status_from_propose_error};
use crate::config::{ConfigError, NodeConfig};
use crate::io::{Clock, Disk};
use crate::log::{Committer, CommitterHandle, Log, LogError, NewRecord, TailCut};
use crate::membership::ClusterView;
use crate::metrics::NodeMetrics;
use crate::raft::controller::MemberView;
use crate::raft::node::{RaftNode, RaftNodeConfig, RaftNodeError};
use crate::raft::proposer::ProposeError;
use crate::raft::store::off_thread;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the log failed: {0}")]
    Log(#[from] LogError),
    /// A standalone node's log ends in corruption (a bad frame followed by valid ones): it does
    /// not start; `loghouse repair` cuts it when an operator decides to.
    #[error(
        "the log has a corrupt tail: a bad record in {} at position {}: {reason}. The node did \
         not start. Run `loghouse repair --data-dir {}` to cut it, dropping {} bytes ({} records, \
         offsets {} to {}) and keeping the offsets below {}",
        segment.display(), cut.position, data_dir.display(), cut.bytes_dropped,
        cut.records_dropped, cut.first_dropped,
        cut.first_dropped + cut.records_dropped.max(1) - 1, cut.first_dropped
    )]
    CorruptTail {
        data_dir: PathBuf,
        segment: PathBuf,
        reason: String,
        cut: Box<TailCut>,
    },
    #[error(transparent)]
    Raft(#[from] RaftNodeError),
    #[error(transparent)]
    Acl(#[from] crate::security::AclError),
}

/// A write on its way: resolves to the records' offsets once they are acknowledged (durable
/// locally, or committed on a majority).
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<Range<u64>, Status>> + Send>>;

/// One member as `GetServers` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: String,
    pub rpc_addr: String,
    pub is_leader: bool,
    pub is_voter: bool,
    pub alive: bool,
    pub term: u64,
    pub committed_offset: u64,
    /// Raft commit and applied indexes, for the answering node only (0 for the others and on a
    /// standalone node).
    pub commit_index: u64,
    pub applied_index: u64,
    /// Entries this member's log is behind the leader's, known (and reported) by the leader only.
    pub replication_lag: Option<u64>,
    /// Alive, but suspected down by gossip.
    pub suspect: bool,
}

/// Gossip's opinion of the members, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipCounts {
    /// Alive and not suspected.
    pub up: u64,
    /// Alive, but some member suspects it is down.
    pub suspect: u64,
    /// Declared down (or left).
    pub down: u64,
}

/// This replica's Raft figures (from openraft's metrics and the store), read when asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub node_id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// On the leader: (follower id, entries behind the leader's last log index), every other
    /// member of the membership config.
    pub replication_lag: Vec<(u64, u64)>,
}

/// How writes reach the log.
enum Writer {
    /// One node: appends go through the group-commit writer.
    Standalone(CommitterHandle),
    /// A cluster member: writes go through Raft (accepted on the leader only).
    Replicated {
        raft: RaftNode,
        members: watch::Receiver<MemberView>,
        gossip: watch::Receiver<ClusterView>,
    },
}

/// A running node's state, cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.inner.config.node_id)
            .field("rpc_addr", &self.inner.rpc_addr)
            .finish()
    }
}

struct NodeInner {
    config: NodeConfig,
    writer: Writer,
    log: Arc<Log>,
    committed: watch::Receiver<u64>,
    streams: Arc<Semaphore>,
    /// Set once the node stops serving: long-lived streams end so the server can drain.
    stopping: watch::Sender<bool>,
    /// The address clients should use to reach this node (GetServers).
    rpc_addr: String,
    /// Who may do what (every RPC asks it first).
    guard: Arc<Guard>,
    metrics: Arc<NodeMetrics>,
    /// The node-wide bounds on calls and on request bytes held.
    admission: Arc<Admission>,
}

impl Node {
    /// Opens (and recovers) a standalone node's log and starts the writer. Must run inside a
    /// tokio runtime.
    pub fn open(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        rpc_addr: String,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let guard = Arc::new(Guard::new(&config)?);
        let metrics = Arc::new(NodeMetrics::default());
        let mut log_config = config.log_config()?;
        log_config.metrics = Some(metrics.log.clone());
        let log = Log::open(disk, clock, log_config).map_err(|e| match e {
            LogError::CorruptTail {
                segment,
                reason,
                cut,
            } => NodeError::CorruptTail {
                data_dir: config.data_dir.clone(),
                segment,
                reason,
                cut,
            },
            other => NodeError::Log(other),
        })?;
        let log = Arc::new(log);
        let committer = Committer::start(log.clone(), config.limits.append_queue_depth_max);
        if config.retention_bytes_max.is_some() || config.retention_ms_max.is_some() {
            let interval = Duration::from_millis(config.retention_check_ms);
            tokio::spawn(retention_loop(log.clone(), interval));
        }
        let committed = committer.committed();
        Ok(Node::assemble(
            config,
            Writer::Standalone(committer),
            log,
            committed,
            rpc_addr,
            guard,
            metrics,
        ))
    }

    /// Opens a cluster member: its replicated log and Raft. `members` is the gossip view the
    /// leader turns into membership changes; `gossip` is the view it comes from (for metrics).
    pub async fn open_replicated(
        config: NodeConfig,
        mut raft_config: RaftNodeConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn crate::raft::network::RaftTransport>,
        members: watch::Receiver<MemberView>,
        gossip: watch::Receiver<ClusterView>,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let guard = Arc::new(Guard::new(&config)?);
        let metrics = Arc::new(NodeMetrics::default());
        // Both logs (data and Raft entries) count their fsyncs into the same figures.
        raft_config.store.data.metrics = Some(metrics.log.clone());
        raft_config.store.entries.metrics = Some(metrics.log.clone());
        let rpc_addr = raft_config.rpc_addr.clone();
        let raft = RaftNode::start(raft_config, disk, clock, transport, members.clone()).await?;
        let log = raft.store().data_log().clone();
        let committed = raft.store().committed();
        Ok(Node::assemble(
            config,
            Writer::Replicated {
                raft,
                members,
                gossip,
            },
            log,
            committed,
            rpc_addr,
            guard,
            metrics,
        ))
    }

    fn assemble(
        config: NodeConfig,
        writer: Writer,
        log: Arc<Log>,
        committed: watch::Receiver<u64>,
        rpc_addr: String,
        guard: Arc<Guard>,
        metrics: Arc<NodeMetrics>,
    ) -> Node {
        let streams = Arc::new(Semaphore::new(config.limits.streams_max));
        let admission = Arc::new(Admission::new(&config.limits));
        let (stopping, _) = watch::channel(false);
        Node {
            inner: Arc::new(NodeInner {
                config,
                writer,
                log,
                committed,
                streams,
                stopping,
                rpc_addr,
                guard,
                metrics,
                admission,
            }),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Authentication and authorization for this node's RPCs.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    /// The log consumers read (the client-offset log, on every replica).
    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    /// The Raft replica, for a cluster member.
    pub fn raft(&self) -> Option<&RaftNode> {
        match &self.inner.writer {
            Writer::Standalone(_) => None,
            Writer::Replicated { raft, .. } => Some(raft),
        }
    }

    /// The node-wide bounds on calls and on the request bytes the node holds.
    pub(crate) fn admission(&self) -> &Arc<Admission> {
        &self.inner.admission
    }

    /// The node's request and storage counters.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.inner.metrics
    }

    pub fn rpc_addr(&self) -> &str {
        &self.inner.rpc_addr
    }

    /// One past the last committed (acknowledged, consumer-visible) offset.
    pub fn committed_offset(&self) -> u64 {
        *self.inner.committed.borrow()
    }

    pub fn watch_committed(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Queues `records` (already validated against the limits) for the log. Waits while the
    /// write queue is full; refused at once (UNAVAILABLE naming the leader) on a follower.
    pub async fn submit(&self, records: Vec<NewRecord>) -> Result<PendingWrite, Status> {
        self.submit_before(records, None).await
    }

    /// `submit`, where a member waits for enough voters (`cluster.min_replicas`) no later than
    /// `deadline` (the call's gRPC deadline).
    pub async fn submit_before(
        &self,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<PendingWrite, Status> {
        match &self.inner.writer {
            Writer::Standalone(committer) => {
                let pending = committer
                    .submit(records)
                    .await
                    .map_err(status_from_log_error)?;
                Ok(Box::pin(async move {
                    pending.await.map_err(status_from_log_error)
                }))
            }
            Writer::Replicated { raft, .. } => {
                let values = records.into_iter().map(|r| r.value).collect();
                let pending = raft
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
        }
    }

    /// `submit_before`, then wait for the acknowledgement.
    pub async fn append_before(
        &self,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<Range<u64>, Status> {
        self.submit_before(records, deadline).await?.await
    }

    /// Every member this node knows of, with what it knows about each.
    pub fn servers(&self) -> Vec<ServerInfo> {
        let committed_offset = self.committed_offset();
        let (raft, members, gossip) = match &self.inner.writer {
            Writer::Standalone(_) => {
                return vec![ServerInfo {
                    id: self.inner.config.node_id.clone(),
                    rpc_addr: self.inner.rpc_addr.clone(),
                    is_leader: true,
                    is_voter: true,
                    alive: true,
                    term: 0,
                    committed_offset,
                    commit_index: 0,
                    applied_index: 0,
                    replication_lag: None,
                    suspect: false,
                }]
            }
            Writer::Replicated {
                raft,
                members,
                gossip,
            } => (raft, members.borrow().clone(), gossip.borrow().clone()),
        };
        let status = self.raft_status().unwrap_or_default();
        let metrics = raft.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut ids: std::collections::BTreeSet<u64> = members.keys().copied().collect();
        ids.extend(membership.nodes().map(|(id, _)| *id));
        ids.into_iter()
            .map(|id| {
                let rpc_addr = members
                    .get(&id)
                    .map(|m| m.rpc_addr.clone())
                    .or_else(|| membership.get_node(&id).map(|n| n.addr.clone()));
                ServerInfo {
                    id: id.to_string(),
                    rpc_addr: rpc_addr.unwrap_or_default(),
                    is_leader: metrics.current_leader == Some(id),
                    is_voter: voters.contains(&id),
                    alive: members.get(&id).is_some_and(|m| m.alive),
                    term: metrics.current_term,
                    committed_offset: if id == metrics.id {
                        committed_offset
                    } else {
                        0
                    },
                    commit_index: if id == metrics.id {
                        status.commit_index
                    } else {
                        0
                    },
                    applied_index: if id == metrics.id {
                        status.applied_index
                    } else {
                        0
                    },
                    replication_lag: status
                        .replication_lag
                        .iter()
                        .find(|(follower, _)| *follower == id)
                        .map(|(_, lag)| *lag)
                        .or((status.is_leader && id == metrics.id).then_some(0)),
                    suspect: gossip.get(id).is_some_and(|m| m.alive && m.suspect),
                }
            })
            .collect()
    }

    /// This replica's Raft figures; None on a standalone node.
    pub fn raft_status(&self) -> Option<RaftStatus> {
        let Writer::Replicated { raft, .. } = &self.inner.writer else {
            return None;
        };
        let (node_id, term, leader, is_leader, last_log_index, applied, replication) = {
            let m = raft.raft().metrics();
            let m = m.borrow();
            (
                m.id,
                m.current_term,
                m.current_leader,
                m.state == openraft::ServerState::Leader,
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
                m.replication.clone(),
            )
        };
        let replication_lag = replication
            .into_iter()
            .flatten()
            .filter(|(id, _)| *id != node_id)
            .map(|(id, matched)| {
                let matched = matched.map_or(0, |l| l.index);
                (id, last_log_index.saturating_sub(matched))
            })
            .collect();
        Some(RaftStatus {
            node_id,
            term,
            leader,
            is_leader,
            last_log_index,
            commit_index: raft.store().committed_log_id().map_or(0, |l| l.index),
            applied_index: applied,
            replication_lag,
        })
    }

    /// Gossip's view of the members, counted; None on a standalone node.
    pub fn gossip_counts(&self) -> Option<GossipCounts> {
        let Writer::Replicated { gossip, .. } = &self.inner.writer else {
            return None;
        };
        let view = gossip.borrow();
        let mut counts = GossipCounts::default();
        for member in view.members.values() {
            match (member.alive, member.suspect) {
                (true, false) => counts.up += 1,
                (true, true) => counts.suspect += 1,
                (false, _) => counts.down += 1,
            }
        }
        Some(counts)
    }

    /// A slot for one long-lived stream, or None when `limits.streams_max` are open.
    pub fn try_acquire_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }

    /// Tells every long-lived stream to end (with UNAVAILABLE), so a graceful shutdown does not
    /// wait for clients that follow the tail forever.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Resolves once `begin_shutdown` has been called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.inner.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Finishes queued appends, syncs and closes the log (stops Raft first on a member).
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        match &self.inner.writer {
            Writer::Standalone(committer) => committer.shutdown().await?,
            Writer::Replicated { raft, .. } => raft.shutdown().await?,
        }
        Ok(())
    }
}

/// Applies the standalone log's retention every `interval`. Dropping segments removes files
/// and syncs the directory: that runs on the blocking pool (inline under madsim), never on an
/// async worker.
async fn retention_loop(log: Arc<Log>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let log = log.clone();
        let applied = match off_thread(move || Ok(log.apply_retention())).await {
            Ok(applied) => applied,
            Err(error) => {
                tracing::warn!(%error, "retention did not run");
                continue;
            }
        };
        match applied {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped segments"),
            Err(LogError::Closed) => return,
            Err(error) => tracing::warn!(%error, "retention failed"),
        }
    }
}
