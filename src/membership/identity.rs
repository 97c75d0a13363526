//! A node's gossip identity: who it is (node id), where gossip and gRPC reach it, and a `bump`
//! that makes a fresh identity after the cluster declared the old one down.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The identity a node gossips under. foca keys members by [`foca::Identity::addr`], which is the
/// node id, so two identities of one node (different `bump`s) are the same member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The cluster-wide node id (nonzero; 0 only in the seed placeholder, see
    /// [`NodeIdentity::seed_placeholder`]).
    pub node_id: u64,
    /// Where this node receives gossip datagrams.
    pub gossip_addr: SocketAddr,
    /// The node's gRPC address, for clients and Raft.
    pub rpc_addr: String,
    /// Incremented (wrapping) each time the node renews its identity after being declared down.
    pub bump: u16,
}

impl NodeIdentity {
    /// The node id the seed placeholder carries: no real node has it.
    pub const PLACEHOLDER_NODE_ID: u64 = 0;

    /// The identity a joining node announces to when it only knows a seed's address. The
    /// receiving driver rewrites it to its own identity (see `driver.rs`), since foca accepts an
    /// announce only when `dst.addr()` is its own node id.
    pub fn seed_placeholder(gossip_addr: SocketAddr) -> Self {
        NodeIdentity {
            node_id: Self::PLACEHOLDER_NODE_ID,
            gossip_addr,
            rpc_addr: String::new(),
            bump: 0,
        }
    }

    /// Whether `self` is a newer incarnation of the node than `other`: serial-number order on the
    /// wrapping `bump` (newer = ahead by 1..=32767).
    pub fn is_newer_than(&self, other: &Self) -> bool {
        (self.bump.wrapping_sub(other.bump) as i16) > 0
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = u64;

    /// A node declared down renews itself with the next bump and rejoins, with no operator.
    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> u64 {
        self.node_id
    }

    /// The higher bump (wrapping) wins. On equal bumps neither wins, so foca keeps the update it
    /// received last (e.g. a node that restarted with a new rpc address and bump 0).
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.is_newer_than(adversary)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn id(bump: u16) -> NodeIdentity {
        NodeIdentity {
            node_id: 7,
            gossip_addr: "127.0.0.1:7000".parse().unwrap(),
            rpc_addr: "127.0.0.1:50051".into(),
            bump,
        }
    }

    #[test]
    fn renew_bumps_keeps_everything_else_and_wins() {
        let a = id(3);
        let b = a.renew().unwrap();
        assert_eq!(b.bump, 4);
        assert_eq!(
            (b.node_id, b.gossip_addr, &b.rpc_addr),
            (a.node_id, a.gossip_addr, &a.rpc_addr)
        );
        assert_eq!(a.addr(), b.addr());
        assert_ne!(a, b);
        // foca requires the renewed identity to win the conflict against the old one.
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }

    #[test]
    fn renew_wraps_and_still_wins() {
        let a = id(u16::MAX);
        let b = a.renew().unwrap();
        assert_eq!(b.bump, 0);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }

    #[test]
    fn equal_bumps_neither_wins() {
        let a = id(5);
        let mut b = id(5);
        b.rpc_addr = "127.0.0.1:60000".into();
        assert!(!a.win_addr_conflict(&b));
        assert!(!b.win_addr_conflict(&a));
    }

    #[test]
    fn conflict_is_antisymmetric_over_the_whole_range() {
        let base = id(40_000);
        for delta in [1u16, 2, 100, 32_767, 32_768, 32_769, 65_535] {
            let other = id(40_000u16.wrapping_add(delta));
            let (x, y) = (
                other.win_addr_conflict(&base),
                base.win_addr_conflict(&other),
            );
            assert!(!(x && y), "delta {delta}: both win");
            if delta < 32_768 {
                assert!(x && !y, "delta {delta}: the newer bump must win");
            }
        }
    }

    #[test]
    fn placeholder_has_no_real_node_id() {
        let p = NodeIdentity::seed_placeholder("127.0.0.1:1".parse().unwrap());
        assert_eq!(p.addr(), NodeIdentity::PLACEHOLDER_NODE_ID);
    }
}
