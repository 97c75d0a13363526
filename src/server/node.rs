//! A node: the log, how writes reach it (a local group-commit writer, or Raft replication), and
//! the limits the service enforces.

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::admission::Admission;
use super::auth::Guard;
use super::partition::{Partition, ReplicatedPartition};
use super::topics::Topics;
use crate::config::{ConfigError, NodeConfig};
use crate::io::{Clock, Disk};
use crate::log::{Log, LogError, TailCut};
use crate::membership::ClusterView;
use crate::metrics::NodeMetrics;
use crate::raft::controller::MemberView;
use crate::raft::node::{RaftNode, RaftNodeConfig, RaftNodeError};
use crate::raft::store::off_thread;
use crate::topic::CatalogError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the log failed: {0}")]
    Log(#[from] LogError),
    /// A standalone node's log ends in corruption (a bad frame followed by valid ones): it does
    /// not start; `loghouse repair` cuts it when an operator decides to.
    #[error(
        "the log{} has a corrupt tail: a bad record in {} at position {}: {reason}. The node \
         did not start. Run `loghouse repair --data-dir {}{}` to cut it, dropping {} bytes ({} \
         records, offsets {} to {}) and keeping the offsets below {}",
        partition_named(partition), segment.display(), cut.position, data_dir.display(),
        repair_args(partition), cut.bytes_dropped,
        cut.records_dropped, cut.first_dropped,
        cut.first_dropped + cut.records_dropped.max(1) - 1, cut.first_dropped
    )]
    CorruptTail {
        data_dir: PathBuf,
        /// The topic and partition, unless it is the default topic's partition 0.
        partition: Option<(String, u32)>,
        segment: PathBuf,
        reason: String,
        cut: Box<TailCut>,
    },
    #[error(transparent)]
    Raft(#[from] RaftNodeError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A partition other than the default topic's partition 0 failed to open.
    #[error("opening partition {partition} of topic {topic} failed: {source}")]
    Partition {
        topic: String,
        partition_dir: PathBuf,
        partition: u32,
        #[source]
        source: Box<NodeError>,
    },
    #[error(transparent)]
    Acl(#[from] crate::security::AclError),
}

impl NodeError {
    /// Why partition `partition` of `topic`, in `dir`, did not open. A standalone node's
    /// corrupt tail names the repair command.
    pub(crate) fn partition(
        config: &NodeConfig,
        topic: &str,
        partition: u32,
        dir: PathBuf,
        error: LogError,
    ) -> NodeError {
        let named = (topic != crate::topic::DEFAULT_TOPIC || partition != 0)
            .then(|| (topic.to_owned(), partition));
        let error = match error {
            LogError::CorruptTail {
                segment,
                reason,
                cut,
            } => {
                return NodeError::CorruptTail {
                    data_dir: config.data_dir.clone(),
                    partition: named,
                    segment,
                    reason,
                    cut,
                }
            }
            other => NodeError::Log(other),
        };
        if named.is_none() {
            return error;
        }
        NodeError::Partition {
            topic: topic.to_owned(),
            partition_dir: dir,
            partition,
            source: Box::new(error),
        }
    }
}

fn partition_named(partition: &Option<(String, u32)>) -> String {
    match partition {
        Some((topic, p)) => format!(" of topic \"{topic}\" partition {p}"),
        None => String::new(),
    }
}

fn repair_args(partition: &Option<(String, u32)>) -> String {
    match partition {
        Some((topic, p)) => format!(" --topic {topic} --partition {p}"),
        None => String::new(),
    }
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

/// A cluster member's Raft and gossip views (None on a standalone node).
struct Cluster {
    raft: RaftNode,
    members: watch::Receiver<MemberView>,
    gossip: watch::Receiver<ClusterView>,
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
    /// Every topic and its partitions (a member: the default topic, replicated).
    topics: Topics,
    cluster: Option<Cluster>,
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
        let topics = Topics::open(&config, disk, clock, log_config, metrics.clone())?;
        // Any topic may set retention, now or later: the loop always runs.
        let interval = Duration::from_millis(config.retention_check_ms);
        let node = Node::assemble(config, topics, None, rpc_addr, guard, metrics);
        tokio::spawn(retention_loop(Arc::downgrade(&node.inner), interval));
        Ok(node)
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
        let partition_metrics = metrics.partition(crate::topic::DEFAULT_TOPIC, 0);
        let partition = ReplicatedPartition::new(raft.clone(), partition_metrics);
        let topics = Topics::replicated(&config, Arc::new(partition));
        let cluster = Cluster {
            raft,
            members,
            gossip,
        };
        Ok(Node::assemble(
            config,
            topics,
            Some(cluster),
            rpc_addr,
            guard,
            metrics,
        ))
    }

    fn assemble(
        config: NodeConfig,
        topics: Topics,
        cluster: Option<Cluster>,
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
                topics,
                cluster,
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

    /// Every topic of this node.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The default topic's partition 0: a cluster member's one replicated log.
    pub fn default_partition(&self) -> Arc<dyn Partition> {
        self.inner.topics.default_partition()
    }

    /// The log of the default topic's partition 0 (on a member: the client-offset log every
    /// replica serves).
    pub fn log(&self) -> Arc<Log> {
        self.default_partition().log().clone()
    }

    /// The Raft replica, for a cluster member.
    pub fn raft(&self) -> Option<&RaftNode> {
        self.inner.cluster.as_ref().map(|c| &c.raft)
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

    /// One past the last committed offset of the default topic's partition 0.
    pub fn committed_offset(&self) -> u64 {
        self.default_partition().committed_offset()
    }

    /// Every member this node knows of, with what it knows about each.
    pub fn servers(&self) -> Vec<ServerInfo> {
        let committed_offset = self.committed_offset();
        let (raft, members, gossip) = match &self.inner.cluster {
            None => {
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
            Some(Cluster {
                raft,
                members,
                gossip,
            }) => (raft, members.borrow().clone(), gossip.borrow().clone()),
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

    /// The members holding a replica of this node's partitions, and the one leading them ("" if
    /// none is known): this node itself on a standalone node; the Raft voters and learners on a
    /// member (every partition a member serves is in its one Raft group).
    pub fn placement(&self) -> (Vec<String>, String) {
        let Some(raft) = self.raft() else {
            let id = self.inner.config.node_id.clone();
            return (vec![id.clone()], id);
        };
        let metrics = raft.raft().metrics().borrow().clone();
        let replicas = (metrics.membership_config.membership().nodes())
            .map(|(id, _)| id.to_string())
            .collect();
        let leader = metrics
            .current_leader
            .map(|id| id.to_string())
            .unwrap_or_default();
        (replicas, leader)
    }

    /// This replica's Raft figures; None on a standalone node.
    pub fn raft_status(&self) -> Option<RaftStatus> {
        let raft = self.raft()?;
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
        let gossip = &self.inner.cluster.as_ref()?.gossip;
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
        self.inner.topics.shutdown().await
    }
}

/// Applies every standalone partition's retention (its topic's settings, read each pass) every
/// `interval`, until the node is gone. Dropping segments removes files and syncs the directory:
/// that runs on the blocking pool (inline under madsim), never on an async worker.
async fn retention_loop(node: std::sync::Weak<NodeInner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let Some(node) = node.upgrade() else { return };
        let targets = node.topics.retention_targets();
        drop(node);
        let applied = off_thread(move || {
            let mut dropped = 0u32;
            for (partition, bytes_max, ms_max) in targets {
                match partition.log().apply_retention_with(bytes_max, ms_max) {
                    Ok(n) => dropped += n,
                    Err(LogError::Closed) => {}
                    Err(error) => tracing::warn!(%error, "retention failed"),
                }
            }
            Ok(dropped)
        })
        .await;
        match applied {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped segments"),
            Err(error) => tracing::warn!(%error, "retention did not run"),
        }
    }
}
