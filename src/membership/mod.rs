//! Gossip membership and failure detection: foca (SWIM) over a datagram socket.
//!
//! Each node runs one [`Membership`]: a driver task that owns a `foca::Foca`, feeds it the
//! datagrams received on the gossip socket and the timer events it scheduled, and carries out
//! what it asks for (sends, timers, notifications). The result is a [`ClusterView`] published on
//! a `tokio::sync::watch`: every member this node has heard of, keyed by node id, alive or not,
//! and since when. The Raft controller and `GetServers` read it (src/raft/DESIGN.md §8).
//!
//! The same code runs over UDP in production and over madsim's simulated network under
//! `cfg(madsim)`, where `tokio::net`, `tokio::time` and `tokio::spawn` are madsim's.
//!
//! Invariants:
//! - membership/ never touches Raft or the log; it only publishes the view. Acting on it (adding
//!   learners, removing voters after a grace period) is the controller's job.
//! - The view always contains this node; it is alive until the node leaves.
//! - A member that foca declares down, or that left, stays in the view with `alive: false` (and
//!   `since` updated), so a controller can apply a grace period; rejoining flips it back.
//! - Members are keyed by node id: a node's identity changes (its `bump`) each time it renews
//!   after being declared down, e.g. after every healed partition.
//! - Nothing received from the network can panic the node: foreign or corrupted datagrams fail
//!   the frame check, and foca's errors are logged and dropped. Inbound memory is bounded
//!   ([`DATAGRAM_BYTES_MAX`], [`INBOUND_QUEUE_DATAGRAMS_MAX`]).
//! - Deterministic under madsim: time, spawn and the socket are madsim's, foca's RNG is seeded
//!   from `rng_seed` or madsim's RNG (never the OS), timers live in a `BTreeMap`, and the
//!   driver's `select!` is `biased`.

mod driver;
mod identity;
#[cfg(all(test, madsim))]
mod sim_tests;
mod transport;
mod view;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, PostcardCodec};
use rand10::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use identity::NodeIdentity;
pub use view::{ClusterView, MemberInfo};

use driver::{Command, Driver};

/// The largest packet foca produces and accepts (`Config::max_packet_size`): below a typical
/// 1500-byte MTU with room for IP/UDP headers and our frame (RFC 8085).
pub const GOSSIP_PACKET_BYTES_MAX: usize = 1400;
/// The largest datagram on the wire: a foca packet plus the frame header.
pub const DATAGRAM_BYTES_MAX: usize = GOSSIP_PACKET_BYTES_MAX + transport::FRAME_HEADER_BYTES_MAX;
/// Received datagrams waiting for the driver; more are dropped (as UDP would).
pub const INBOUND_QUEUE_DATAGRAMS_MAX: usize = 256;
/// How often a node re-announces itself to the seeds it does not know as live members.
pub const JOIN_RETRY_INTERVAL_MS: u64 = 1_000;
/// Pause after a failed `recv_from`, so a failing socket does not spin.
pub const RECV_ERROR_BACKOFF_MS: u64 = 50;
/// Longest `rpc_addr` carried in the identity (it rides in every packet header).
pub const RPC_ADDR_BYTES_MAX: usize = 255;
/// Upper bound for `suspect_to_down_after_ms` (a sanity check against unit mistakes).
pub const SUSPECT_TO_DOWN_MS_MAX: u64 = 600_000;

/// How to start a node's gossip.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's id; nonzero.
    pub node_id: u64,
    /// Where to bind the gossip socket; port 0 picks a free port. The bound address is what the
    /// node advertises, so the IP must be one peers can reach (not `0.0.0.0` / `::`).
    pub gossip_listen: SocketAddr,
    /// The node's gRPC address, carried in its identity.
    pub rpc_addr: String,
    /// Gossip addresses of seed nodes to join through; empty = start alone. This node's own
    /// address is skipped.
    pub join: Vec<SocketAddr>,
    /// Expected cluster size, for `foca::Config::new_lan` (retransmissions, suspicion time).
    pub cluster_size_hint: u32,
    /// How long a suspect member has to refute before it is declared down; `None` = new_lan's
    /// (4 s up to 10 nodes). Raise it on lossy networks.
    pub suspect_to_down_after_ms: Option<u64>,
    /// Seed for foca's RNG (probe order, gossip targets). `None`: random in production, drawn
    /// from madsim's seeded RNG in simulation.
    pub rng_seed: Option<u64>,
    /// The shared cluster key: every datagram is authenticated with it (HMAC-SHA256), and
    /// datagrams without a valid tag are dropped. `None`: unauthenticated (checksummed) frames.
    /// All members must agree.
    pub cluster_key: Option<crate::security::GossipKey>,
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid membership config: {0}")]
    InvalidConfig(String),
    #[error("cannot bind the gossip socket to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the local address of the gossip socket bound to {addr}: {source}")]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running gossip member. Dropping it stops the driver without leaving (to the cluster it
/// looks like a crash); [`Membership::leave`] says goodbye first.
#[derive(Debug)]
pub struct Membership {
    node_id: u64,
    local_gossip_addr: SocketAddr,
    view: watch::Receiver<ClusterView>,
    commands: mpsc::Sender<Command>,
    driver: JoinHandle<()>,
}

impl Membership {
    /// Binds the gossip socket, spawns the driver (`tokio::spawn`) and announces this node to
    /// the seeds (again every [`JOIN_RETRY_INTERVAL_MS`] to each seed it does not know as a
    /// live member).
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        let foca_config = config.foca_config()?;
        config.validate()?;
        let listen = config.gossip_listen;
        let sock = UdpSocket::bind(listen)
            .await
            .map_err(|source| MembershipError::Bind {
                addr: listen,
                source,
            })?;
        let local = sock
            .local_addr()
            .map_err(|source| MembershipError::LocalAddr {
                addr: listen,
                source,
            })?;

        let identity = NodeIdentity {
            node_id: config.node_id,
            gossip_addr: local,
            rpc_addr: config.rpc_addr.clone(),
            bump: 0,
        };
        let mut seeds: Vec<SocketAddr> = Vec::new();
        for seed in &config.join {
            if *seed != local && !seeds.contains(seed) {
                seeds.push(*seed);
            }
        }
        let rng = rand10::rngs::StdRng::seed_from_u64(rng_seed(config.rng_seed));
        let foca = Foca::new(identity.clone(), foca_config, rng, PostcardCodec);

        let view = ClusterView::new(&identity, driver::now_std());
        let (view_tx, view_rx) = watch::channel(view.clone());
        let sock = Arc::new(sock);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_DATAGRAMS_MAX);
        let receiver = tokio::spawn(driver::receive_loop(
            sock.clone(),
            inbound_tx,
            config.node_id,
        ));
        let (commands, commands_rx) = mpsc::channel(1);
        let framer = transport::Framer::new(config.cluster_key.as_ref());
        let driver = Driver::new(foca, sock, seeds, view, view_tx, receiver, framer);
        let driver = tokio::spawn(driver.run(commands_rx, inbound_rx));
        tracing::info!(node_id = config.node_id, gossip_addr = %local, join = ?config.join, "gossip membership started");
        Ok(Membership {
            node_id: config.node_id,
            local_gossip_addr: local,
            view: view_rx,
            commands,
            driver,
        })
    }

    /// The cluster view, updated on every membership change.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// The address the gossip socket is bound to (and that this node advertises).
    pub fn local_gossip_addr(&self) -> SocketAddr {
        self.local_gossip_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Leaves the cluster: declares this node down to a few members (so the others see it not
    /// alive without waiting for failure detection), sends those datagrams, then stops the
    /// driver. The last view published shows this node not alive.
    pub async fn leave(self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.commands.send(Command::Leave(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        drop(self.commands);
        let _ = self.driver.await;
    }

    /// Stops the driver without leaving (like dropping the handle) and waits until it has
    /// stopped and released the socket.
    pub async fn shutdown(self) {
        drop(self.commands);
        let _ = self.driver.await;
    }
}

impl MembershipConfig {
    fn validate(&self) -> Result<(), MembershipError> {
        let invalid = |msg: String| Err(MembershipError::InvalidConfig(msg));
        if self.node_id == NodeIdentity::PLACEHOLDER_NODE_ID {
            return invalid("node_id must be nonzero".into());
        }
        if self.gossip_listen.ip().is_unspecified() {
            return invalid(format!(
                "gossip_listen {} has an unspecified IP, but the bound address is what peers \
                 are told to send to: bind to an address they can reach",
                self.gossip_listen
            ));
        }
        if self.rpc_addr.is_empty() || self.rpc_addr.len() > RPC_ADDR_BYTES_MAX {
            return invalid(format!(
                "rpc_addr must be 1..={RPC_ADDR_BYTES_MAX} bytes, got {}",
                self.rpc_addr.len()
            ));
        }
        if let Some(seed) = self
            .join
            .iter()
            .find(|s| s.ip().is_unspecified() || s.port() == 0)
        {
            return invalid(format!(
                "join address {seed} is not a peer address (unspecified IP or port 0)"
            ));
        }
        Ok(())
    }

    /// foca's configuration: `new_lan` for the cluster size, our packet size limit, and the
    /// suspicion override.
    fn foca_config(&self) -> Result<foca::Config, MembershipError> {
        let invalid = |msg: String| Err(MembershipError::InvalidConfig(msg));
        let Some(size) = NonZeroU32::new(self.cluster_size_hint) else {
            return invalid("cluster_size_hint must be at least 1".into());
        };
        let mut config = foca::Config::new_lan(size);
        config.max_packet_size =
            NonZeroUsize::new(GOSSIP_PACKET_BYTES_MAX).expect("nonzero constant");
        if let Some(ms) = self.suspect_to_down_after_ms {
            if ms == 0 || ms > SUSPECT_TO_DOWN_MS_MAX {
                return invalid(format!(
                    "suspect_to_down_after_ms must be 1..={SUSPECT_TO_DOWN_MS_MAX}, got {ms}"
                ));
            }
            config.suspect_to_down_after = Duration::from_millis(ms);
        }
        Ok(config)
    }
}

/// The seed for foca's RNG. In simulation an unset seed comes from madsim's RNG, so runs replay.
fn rng_seed(explicit: Option<u64>) -> u64 {
    if let Some(seed) = explicit {
        return seed;
    }
    #[cfg(madsim)]
    {
        madsim::rand::random::<u64>()
    }
    #[cfg(not(madsim))]
    {
        // std's RandomState is seeded from the OS: random enough for probe order.
        use std::hash::BuildHasher;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::collections::hash_map::RandomState::new().hash_one(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MembershipConfig {
        MembershipConfig {
            node_id: 1,
            gossip_listen: "127.0.0.1:0".parse().unwrap(),
            rpc_addr: "127.0.0.1:50051".into(),
            join: vec![],
            cluster_size_hint: 3,
            suspect_to_down_after_ms: None,
            rng_seed: Some(1),
            cluster_key: None,
        }
    }

    fn invalid(c: MembershipConfig) -> String {
        match c.foca_config().and_then(|_| c.validate()) {
            Err(MembershipError::InvalidConfig(msg)) => msg,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_valid_config_and_applies_the_overrides() {
        let mut c = config();
        c.validate().unwrap();
        let f = c.foca_config().unwrap();
        assert_eq!(f.max_packet_size.get(), GOSSIP_PACKET_BYTES_MAX);
        assert_eq!(
            f.suspect_to_down_after,
            Duration::from_secs(4),
            "new_lan default"
        );
        c.suspect_to_down_after_ms = Some(1500);
        assert_eq!(
            c.foca_config().unwrap().suspect_to_down_after,
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn rejects_invalid_configs_with_a_reason() {
        assert!(invalid(MembershipConfig {
            node_id: 0,
            ..config()
        })
        .contains("node_id"));
        assert!(invalid(MembershipConfig {
            gossip_listen: "0.0.0.0:7000".parse().unwrap(),
            ..config()
        })
        .contains("unspecified"));
        assert!(invalid(MembershipConfig {
            rpc_addr: String::new(),
            ..config()
        })
        .contains("rpc_addr"));
        assert!(invalid(MembershipConfig {
            rpc_addr: "x".repeat(RPC_ADDR_BYTES_MAX + 1),
            ..config()
        })
        .contains("rpc_addr"));
        assert!(invalid(MembershipConfig {
            join: vec!["127.0.0.1:0".parse().unwrap()],
            ..config()
        })
        .contains("join"));
        assert!(invalid(MembershipConfig {
            cluster_size_hint: 0,
            ..config()
        })
        .contains("cluster_size_hint"));
        assert!(invalid(MembershipConfig {
            suspect_to_down_after_ms: Some(0),
            ..config()
        })
        .contains("suspect_to_down_after_ms"));
    }
}
