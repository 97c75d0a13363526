//! The cluster view published to the rest of the node: every member this node has heard of,
//! keyed by node id, with whether gossip currently considers it alive and since when.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use foca::OwnedNotification;

use super::identity::NodeIdentity;

/// What this node believes about the cluster. Always contains this node itself (alive while it
/// runs; not alive once it has left).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Members by node id (deterministic order).
    pub members: BTreeMap<u64, MemberInfo>,
}

/// One member of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub node_id: u64,
    /// The member's gRPC address (from its latest identity).
    pub rpc_addr: String,
    /// Where the member receives gossip.
    pub gossip_addr: SocketAddr,
    /// `false` once gossip declared the member down or it left; `true` again when it rejoins.
    pub alive: bool,
    /// Alive, but suspected down by some member (SWIM's suspicion: it is declared down unless
    /// it refutes in time). For operators; membership decisions look at `alive` only.
    pub suspect: bool,
    /// When this node saw `alive` take its current value (or first heard of the member). Taken
    /// from `tokio::time`, so the simulator controls it.
    pub since: Instant,
}

impl ClusterView {
    /// A view holding only the local node, alive since `now`.
    pub(crate) fn new(local: &NodeIdentity, now: Instant) -> Self {
        let mut view = ClusterView::default();
        view.members
            .insert(local.node_id, MemberInfo::new(local, true, now));
        view
    }

    /// The member with this node id, if known.
    pub fn get(&self, node_id: u64) -> Option<&MemberInfo> {
        self.members.get(&node_id)
    }

    /// Whether the member is known and alive.
    pub fn is_alive(&self, node_id: u64) -> bool {
        self.get(node_id).is_some_and(|m| m.alive)
    }

    /// The alive members, by node id.
    pub fn alive(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values().filter(|m| m.alive)
    }

    /// Applies one foca notification; `local_node_id` is this node. Returns whether the view
    /// changed. Notifications about the placeholder id are ignored, and so are foca's reports
    /// about other members carrying this node's id (stale identities of our own).
    pub(crate) fn apply(
        &mut self,
        notification: &OwnedNotification<NodeIdentity>,
        local_node_id: u64,
        now: Instant,
    ) -> bool {
        let is_other = |id: &NodeIdentity| {
            id.node_id != NodeIdentity::PLACEHOLDER_NODE_ID && id.node_id != local_node_id
        };
        match notification {
            OwnedNotification::MemberUp(id) if is_other(id) => self.upsert(id, Some(true), now),
            OwnedNotification::MemberDown(id) if is_other(id) => self.upsert(id, Some(false), now),
            // A newer identity of a known member (it renewed, or restarted): take its addresses;
            // liveness changes come as their own MemberUp / MemberDown.
            OwnedNotification::Rename(_, new) if is_other(new) => self.upsert(new, None, now),
            // This node renewed its identity after being declared down: addresses are unchanged,
            // and it never stopped running.
            OwnedNotification::Rejoin(new) if new.node_id == local_node_id => {
                self.upsert(new, Some(true), now)
            }
            // This node's identity is down for good (it left the cluster).
            OwnedNotification::Defunct => self.set_alive(local_node_id, false, now),
            _ => false,
        }
    }

    /// Inserts or updates a member from `id`; `alive: None` keeps the current liveness (a new
    /// entry then starts alive). Returns whether anything changed.
    fn upsert(&mut self, id: &NodeIdentity, alive: Option<bool>, now: Instant) -> bool {
        match self.members.get_mut(&id.node_id) {
            None => {
                let info = MemberInfo::new(id, alive.unwrap_or(true), now);
                self.members.insert(id.node_id, info);
                true
            }
            Some(m) => {
                let mut changed = false;
                if m.rpc_addr != id.rpc_addr {
                    m.rpc_addr.clone_from(&id.rpc_addr);
                    changed = true;
                }
                if m.gossip_addr != id.gossip_addr {
                    m.gossip_addr = id.gossip_addr;
                    changed = true;
                }
                if let Some(alive) = alive {
                    if m.alive != alive {
                        m.alive = alive;
                        m.since = now;
                        changed = true;
                    }
                }
                changed
            }
        }
    }

    /// Marks exactly the alive members in `suspects` as suspect. Returns whether anything
    /// changed.
    pub(crate) fn set_suspects(&mut self, suspects: &[u64]) -> bool {
        let mut changed = false;
        for (id, member) in self.members.iter_mut() {
            let suspect = member.alive && suspects.contains(id);
            if member.suspect != suspect {
                member.suspect = suspect;
                changed = true;
            }
        }
        changed
    }

    fn set_alive(&mut self, node_id: u64, alive: bool, now: Instant) -> bool {
        match self.members.get_mut(&node_id) {
            Some(m) if m.alive != alive => {
                m.alive = alive;
                m.since = now;
                true
            }
            _ => false,
        }
    }
}

impl MemberInfo {
    fn new(id: &NodeIdentity, alive: bool, since: Instant) -> Self {
        MemberInfo {
            node_id: id.node_id,
            rpc_addr: id.rpc_addr.clone(),
            gossip_addr: id.gossip_addr,
            alive,
            suspect: false,
            since,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use foca::OwnedNotification as N;

    use super::*;

    const LOCAL: u64 = 1;

    fn id(node_id: u64, bump: u16, rpc: &str) -> NodeIdentity {
        NodeIdentity {
            node_id,
            gossip_addr: format!("127.0.0.1:{}", 7000 + node_id).parse().unwrap(),
            rpc_addr: rpc.into(),
            bump,
        }
    }

    fn start() -> (ClusterView, Instant) {
        let t0 = Instant::now();
        (ClusterView::new(&id(LOCAL, 0, "rpc-1"), t0), t0)
    }

    #[test]
    fn starts_with_the_local_node_alive() {
        let (view, t0) = start();
        assert_eq!(view.members.len(), 1);
        let me = view.get(LOCAL).unwrap();
        assert!(me.alive);
        assert_eq!(me.since, t0);
        assert_eq!(me.rpc_addr, "rpc-1");
    }

    #[test]
    fn up_down_up_flips_alive_and_moves_since() {
        let (mut view, t0) = start();
        let (t1, t2, t3) = (
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(3),
        );
        assert!(view.apply(&N::MemberUp(id(2, 0, "rpc-2")), LOCAL, t1));
        assert!(view.is_alive(2));
        assert_eq!(view.get(2).unwrap().since, t1);
        // A repeated up is not a change and keeps `since`.
        assert!(!view.apply(&N::MemberUp(id(2, 0, "rpc-2")), LOCAL, t2));
        assert_eq!(view.get(2).unwrap().since, t1);

        assert!(view.apply(&N::MemberDown(id(2, 0, "rpc-2")), LOCAL, t2));
        let m = view.get(2).unwrap();
        assert!(!m.alive, "a down member stays in the view, not alive");
        assert_eq!(m.since, t2);

        // It renews (bump 1) and comes back: foca says Rename then MemberUp.
        assert!(!view.apply(&N::Rename(id(2, 0, "rpc-2"), id(2, 1, "rpc-2")), LOCAL, t3));
        assert!(view.apply(&N::MemberUp(id(2, 1, "rpc-2")), LOCAL, t3));
        let m = view.get(2).unwrap();
        assert!(m.alive);
        assert_eq!(m.since, t3);
        assert_eq!(view.members.len(), 2);
    }

    #[test]
    fn rename_takes_new_addresses_but_not_liveness() {
        let (mut view, t0) = start();
        view.apply(&N::MemberUp(id(3, 0, "old")), LOCAL, t0);
        view.apply(&N::MemberDown(id(3, 0, "old")), LOCAL, t0);
        let later = t0 + Duration::from_secs(5);
        assert!(view.apply(&N::Rename(id(3, 0, "old"), id(3, 1, "new")), LOCAL, later));
        let m = view.get(3).unwrap();
        assert_eq!(m.rpc_addr, "new");
        assert!(!m.alive);
        assert_eq!(m.since, t0, "an address change is not a liveness change");
    }

    #[test]
    fn ignores_placeholder_and_own_stale_identities() {
        let (mut view, t0) = start();
        let before = view.clone();
        let placeholder = NodeIdentity::seed_placeholder("127.0.0.1:9".parse().unwrap());
        assert!(!view.apply(&N::MemberUp(placeholder.clone()), LOCAL, t0));
        assert!(!view.apply(&N::MemberDown(placeholder), LOCAL, t0));
        assert!(!view.apply(&N::MemberDown(id(LOCAL, 0, "rpc-1")), LOCAL, t0));
        assert!(!view.apply(&N::MemberUp(id(LOCAL, 9, "evil")), LOCAL, t0));
        assert!(!view.apply(&N::Active, LOCAL, t0));
        assert!(!view.apply(&N::Idle, LOCAL, t0));
        assert_eq!(view, before);
    }

    #[test]
    fn rejoin_keeps_self_alive_and_defunct_marks_self_down() {
        let (mut view, t0) = start();
        assert!(!view.apply(&N::Rejoin(id(LOCAL, 1, "rpc-1")), LOCAL, t0));
        assert!(view.is_alive(LOCAL));
        let t1 = t0 + Duration::from_secs(1);
        assert!(view.apply(&N::Defunct, LOCAL, t1));
        let me = view.get(LOCAL).unwrap();
        assert!(!me.alive);
        assert_eq!(me.since, t1);
    }

    #[test]
    fn suspects_are_alive_members_only() {
        let (mut view, t0) = start();
        view.apply(&N::MemberUp(id(2, 0, "rpc-2")), LOCAL, t0);
        view.apply(&N::MemberUp(id(3, 0, "rpc-3")), LOCAL, t0);
        view.apply(&N::MemberDown(id(3, 0, "rpc-3")), LOCAL, t0);
        assert!(view.set_suspects(&[2, 3]));
        assert!(view.get(2).unwrap().suspect);
        assert!(
            !view.get(3).unwrap().suspect,
            "a down member is down, not suspect"
        );
        assert!(!view.set_suspects(&[2, 3]), "no change the second time");
        assert!(view.set_suspects(&[]));
        assert!(!view.get(2).unwrap().suspect);
    }

    #[test]
    fn down_for_an_unknown_member_is_recorded_not_alive() {
        let (mut view, t0) = start();
        assert!(view.apply(&N::MemberDown(id(4, 0, "rpc-4")), LOCAL, t0));
        assert!(!view.is_alive(4));
        assert_eq!(view.alive().count(), 1);
    }
}
