//! Starting a cluster member: gossip membership, then the replicated node fed by its view.

use std::sync::Arc;

use tokio::sync::watch;

use super::node::{Node, NodeError};
use super::raft_rpc::GrpcRaftTransport;
use crate::config::{ConfigError, NodeConfig};
use crate::io::{Clock, Disk};
use crate::membership::{ClusterView, Membership, MembershipConfig, MembershipError};
use crate::raft::controller::{ControllerConfig, MemberStatus, MemberView};
use crate::raft::node::{RaftNodeConfig, RaftTiming};
use crate::raft::proposer::ProposerLimits;
use crate::raft::store::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("gossip: {0}")]
    Membership(#[from] MembershipError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A running cluster member: the node and its gossip membership.
pub struct Member {
    pub node: Node,
    pub membership: Membership,
}

/// Starts gossip on `config.cluster.gossip_listen`, then the replicated node. `rpc_addr` is
/// the address this node's gRPC is reachable at (advertised to the other members).
pub async fn start_member(
    config: NodeConfig,
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    rpc_addr: String,
) -> Result<Member, MemberError> {
    config.validate()?;
    let cluster = config
        .cluster
        .clone()
        .ok_or_else(|| ConfigError::Invalid("a cluster member needs a [cluster] section".into()))?;
    let node_id = config.raft_node_id()?;
    let rpc_addr = cluster.advertise_rpc.clone().unwrap_or(rpc_addr);
    check_advertised(&rpc_addr, cluster.gossip_listen)?;
    let membership = Membership::start(MembershipConfig {
        node_id,
        gossip_listen: cluster.gossip_listen,
        rpc_addr: rpc_addr.clone(),
        join: cluster.join.clone(),
        cluster_size_hint: cluster.voters_target as u32,
        suspect_to_down_after_ms: None,
        rng_seed: None,
        cluster_key: config.secrets.gossip_key.clone(),
    })
    .await?;
    let members = member_view(membership.view());
    let raft_config = RaftNodeConfig {
        node_id,
        rpc_addr,
        store: StoreConfig {
            read_bytes_max: cluster.replicate_bytes_max,
            ..StoreConfig::new(&config.data_dir, config.log_config()?)
        },
        timing: RaftTiming {
            heartbeat_ms: cluster.heartbeat_ms,
            election_timeout_min_ms: cluster.election_timeout_min_ms,
            election_timeout_max_ms: cluster.election_timeout_max_ms,
        },
        proposer: ProposerLimits {
            entry_records_max: cluster.entry_records_max,
            entry_bytes_max: cluster.entry_bytes_max,
            entries_in_flight_max: cluster.entries_in_flight_max,
            queue_depth_max: config.limits.append_queue_depth_max,
            commit_timeout_ms: cluster.commit_timeout_ms,
            min_replicas: cluster.min_replicas(),
            min_replicas_wait_ms: cluster.min_replicas_wait_ms,
            voters_target: cluster.voters_target,
        },
        controller: ControllerConfig {
            voters_target: cluster.voters_target,
            min_replicas: cluster.min_replicas(),
            down_grace_ms: cluster.down_grace_ms,
            remove_after_ms: cluster.remove_after_ms,
            ..ControllerConfig::default()
        },
        payload_entries_max: cluster.payload_entries_max,
        retention_check_ms: config.retention_check_ms,
        bootstrap: cluster.bootstrap || cluster.join.is_empty(),
    };
    let message_bytes_max = crate::config::RAFT_MESSAGE_BYTES_MAX;
    let peer_tls = config.secrets.peer_client_tls();
    let transport = Arc::new(GrpcRaftTransport::new(message_bytes_max).with_tls(peer_tls));
    let node = Node::open_replicated(
        config,
        raft_config,
        disk,
        clock,
        transport,
        members,
        membership.view(),
    )
    .await?;
    Ok(Member { node, membership })
}

/// The gRPC address a member advertises must reach it from the other members: not a wildcard,
/// and not loopback unless gossip is on loopback too (every member would otherwise call itself).
fn check_advertised(rpc_addr: &str, gossip: std::net::SocketAddr) -> Result<(), ConfigError> {
    let Ok(addr) = rpc_addr.parse::<std::net::SocketAddr>() else {
        return Ok(()); // a host name: resolved by the others
    };
    let invalid = |why: &str| {
        Err(ConfigError::Invalid(format!(
            "this member would advertise gRPC address {rpc_addr}, {why}; set cluster.advertise_rpc \
             (--advertise-rpc) to the address the other members reach it at"
        )))
    };
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return invalid("which is a wildcard");
    }
    if addr.ip().is_loopback() && !gossip.ip().is_loopback() {
        return invalid("which is loopback while gossip is not");
    }
    Ok(())
}

/// Follows the gossip view as the controller's `MemberView` (the raft module does not know the
/// membership module's types).
fn member_view(mut view: watch::Receiver<ClusterView>) -> watch::Receiver<MemberView> {
    let (sender, receiver) = watch::channel(to_member_view(&view.borrow_and_update()));
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let members = to_member_view(&view.borrow_and_update());
            if sender.is_closed() {
                return;
            }
            // Gossip also publishes changes the controller does not see (a member suspected);
            // pass on only what changes its input.
            sender.send_if_modified(|current| {
                let changed = *current != members;
                if changed {
                    *current = members;
                }
                changed
            });
        }
    });
    receiver
}

fn to_member_view(view: &ClusterView) -> MemberView {
    view.members
        .iter()
        .map(|(id, m)| {
            let status = MemberStatus {
                rpc_addr: m.rpc_addr.clone(),
                alive: m.alive,
                since: m.since,
            };
            (*id, status)
        })
        .collect()
}
