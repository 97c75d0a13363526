//! One replica: the Raft instance over the store, the proposer and the membership controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{Config, ServerState, SnapshotPolicy, Vote};
use tokio::sync::watch;

use super::controller::{self, ControllerConfig, MemberView};
use super::network::{NetworkFactory, RaftTransport};
use super::proposer::{Proposer, ProposerLimits};
use super::store::VoteFloor;
use super::store::{Store, StoreConfig, StoreError};
use super::types::{BasicNode, NodeId, Raft};
use super::vote_guard::{VoteGuard, PROBE_TERM};
use crate::io::{Clock, Disk};

/// Raft timing, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
        }
    }
}

pub struct RaftNodeConfig {
    pub node_id: NodeId,
    pub rpc_addr: String,
    pub store: StoreConfig,
    pub timing: RaftTiming,
    pub proposer: ProposerLimits,
    pub controller: ControllerConfig,
    /// Entries per AppendEntries RPC at most (each entry is a batch of records).
    pub payload_entries_max: u64,
    /// How often retention looks for entries to drop (when the store has retention limits).
    pub retention_check_ms: u64,
    /// Start a new cluster of this one node if this node has no Raft state yet.
    pub bootstrap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    #[error("opening the replicated log failed: {0}")]
    Store(#[from] StoreError),
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// A running replica, cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    node_id: NodeId,
    raft: Raft,
    store: Store,
    proposer: Proposer,
    vote_guard: Arc<VoteGuard>,
}

impl RaftNode {
    /// Opens the store, starts Raft (bootstrapping a one-node cluster if asked and pristine),
    /// the proposer, and the controller fed by `members`.
    pub async fn start(
        config: RaftNodeConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn RaftTransport>,
        members: watch::Receiver<MemberView>,
    ) -> Result<RaftNode, RaftNodeError> {
        let raft_config = raft_config(&config)?;
        let retention =
            config.store.retention_bytes_max.is_some() || config.store.retention_ms_max.is_some();
        let store = Store::open(disk, clock.clone(), config.store)?;
        let prober = NetworkFactory::new(config.node_id, transport.clone());
        let network = NetworkFactory::new(config.node_id, transport);
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            store.log_store(),
            store.state_machine(),
        )
        .await
        .map_err(|e| RaftNodeError::Fatal(e.to_string()))?;
        if config.bootstrap && !is_initialized(&raft).await? {
            let node = BasicNode::new(config.rpc_addr.clone());
            let members = BTreeMap::from([(config.node_id, node)]);
            if let Err(error) = raft.initialize(members).await {
                tracing::warn!(%error, "bootstrap skipped");
            }
        }
        let proposer = Proposer::start(raft.clone(), clock, config.proposer);
        let vote_guard = Arc::new(VoteGuard::new(store.vote_floor(), {
            let store = store.clone();
            Box::new(move || store.last_log_id())
        }));
        tokio::spawn(probe_voters(
            raft.clone(),
            vote_guard.clone(),
            prober,
            members.clone(),
            config.timing,
        ));
        tokio::spawn(controller::run(raft.clone(), members, config.controller));
        tokio::spawn(follow_vote_floor(raft.clone(), store.vote_floor()));
        tokio::spawn(break_election_ties(
            raft.clone(),
            store.vote_floor(),
            config.timing,
        ));
        if retention {
            let interval = Duration::from_millis(config.retention_check_ms);
            tokio::spawn(retention_loop(raft.clone(), store.clone(), interval));
        }
        Ok(RaftNode {
            node_id: config.node_id,
            raft,
            store,
            proposer,
            vote_guard,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// The votes this replica may grant (see `vote_guard`), for its Raft service.
    pub fn vote_guard(&self) -> &Arc<VoteGuard> {
        &self.vote_guard
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The leader this node knows of: (id, gRPC address).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        super::proposer::known_leader(&self.raft.metrics().borrow())
    }

    /// Completes when Raft stops on its own (a storage failure, damage found: see
    /// `store::repair`), with the reason; never after a `shutdown`.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut metrics = self.raft.metrics();
        async move {
            let reason = match metrics.wait_for(|m| m.running_state.is_err()).await {
                Ok(m) => m.running_state.as_ref().err().map(|e| e.to_string()),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                None => std::future::pending().await,
            }
        }
    }

    /// Stops Raft and closes the store (its logs are synced on close).
    pub async fn shutdown(&self) -> Result<(), RaftNodeError> {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        self.store.close()?;
        Ok(())
    }
}

/// Applies retention on this replica: every `interval`, build a (logical)
/// snapshot and purge the entries whose records all lie below the retention cut. openraft
/// delays a purge while replication still needs the entries.
async fn retention_loop(raft: Raft, store: Store, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let point = match store.retention_point() {
            Ok(Some(point)) => point,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "retention: cannot compute the cut");
                continue;
            }
        };
        let purged = async {
            raft.trigger().snapshot().await?;
            // openraft never purges past the newest snapshot: wait for this one (bounded).
            let mut built = raft.metrics();
            let wait = tokio::time::timeout(
                interval,
                built.wait_for(|m| m.snapshot.is_some_and(|s| s.index >= point.index)),
            );
            let _ = wait.await;
            raft.trigger().purge_log(point.index).await
        };
        if let Err(error) = purged.await {
            tracing::info!(%error, "retention stops: raft stopped");
            return;
        }
    }
}

/// Elections stay off while the store has a vote floor (a repaired replica must not lead or
/// vote itself in with a log shorter than the one it had: see `store::repair`).
async fn follow_vote_floor(raft: Raft, mut floor: watch::Receiver<Option<VoteFloor>>) {
    let mut metrics = raft.metrics();
    loop {
        let repairing = floor.borrow_and_update().is_some();
        raft.runtime_config().elect(!repairing);
        tokio::select! {
            biased;
            changed = floor.changed() => if changed.is_err() { return },
            _ = metrics.wait_for(|m| m.running_state.is_err()) => return,
        }
    }
}

/// While this replica has a vote floor, asks each voter that has not reported its log for it (a
/// probe: see `vote_guard`), once per `election_timeout_max_ms`, until Raft stops.
async fn probe_voters(
    raft: Raft,
    guard: Arc<VoteGuard>,
    mut network: NetworkFactory,
    members: watch::Receiver<MemberView>,
    timing: RaftTiming,
) {
    let period = Duration::from_millis(timing.election_timeout_max_ms);
    let metrics = raft.metrics();
    loop {
        tokio::time::sleep(period).await;
        let now = metrics.borrow().clone();
        if now.running_state.is_err() || metrics.has_changed().is_err() {
            return;
        }
        let membership = now.membership_config.membership();
        for id in guard.unreported(now.id, membership.voter_ids()) {
            let addr = (membership.get_node(&id).map(|n| n.addr.clone()))
                .or_else(|| members.borrow().get(&id).map(|m| m.rpc_addr.clone()));
            let Some(addr) = addr else { continue };
            let mut client = network.new_client(id, &BasicNode::new(addr)).await;
            let probe = VoteRequest::new(Vote::new(PROBE_TERM, now.id), None);
            if let Ok(answer) = client.vote(probe, RPCOption::new(period)).await {
                guard.report(id, answer.last_log_id);
            }
        }
    }
}

/// openraft 0.9 draws a node's election timeout once, when its Raft starts. Two voters that
/// drew nearly the same one (say after restarting together) can then split every vote, round
/// after round, for ever (simulation seed 10109 at N = 3). So: while no leader is known for two
/// `election_timeout_max_ms`, start an election after a delay that differs per node and term.
async fn break_election_ties(
    raft: Raft,
    floor: watch::Receiver<Option<VoteFloor>>,
    timing: RaftTiming,
) {
    let period = Duration::from_millis(timing.election_timeout_max_ms);
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(period).await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let membership = metrics.membership_config.membership();
        let is_voter = membership.voter_ids().any(|id| id == metrics.id);
        if metrics.current_leader.is_some() || !is_voter || floor.borrow().is_some() {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < 2 * period {
            continue;
        }
        let delay_ms = tie_break_delay_ms(metrics.id, metrics.current_term, timing);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let still_leaderless = raft.metrics().borrow().current_leader.is_none();
        if still_leaderless && floor.borrow().is_none() && raft.trigger().elect().await.is_err() {
            return;
        }
        leaderless_since = None;
    }
}

/// A delay in `[0, election_timeout_max_ms)` that differs between nodes and terms (a fixed-key
/// hash: deterministic, so simulations replay).
fn tie_break_delay_ms(id: NodeId, term: u64, timing: RaftTiming) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (id, term).hash(&mut hasher);
    hasher.finish() % timing.election_timeout_max_ms.max(1)
}

async fn is_initialized(raft: &Raft) -> Result<bool, RaftNodeError> {
    raft.is_initialized()
        .await
        .map_err(|e| RaftNodeError::Fatal(e.to_string()))
}

/// openraft's config: no automatic snapshots or purges (they would delete client records; only
/// retention may drop data), heartbeats and elections from `timing`.
fn raft_config(config: &RaftNodeConfig) -> Result<Config, RaftNodeError> {
    let timing = config.timing;
    let raft_config = Config {
        cluster_name: "loghouse".to_string(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        max_payload_entries: config.payload_entries_max,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Config::default()
    };
    raft_config
        .validate()
        .map_err(|e| RaftNodeError::Config(e.to_string()))
}
