//! The membership controller: on the leader, turns the gossip view into Raft membership changes,
//! one at a time. `next_change` is a pure function of the view, the Raft metrics and the time;
//! `run` applies its answers.
//!
//! Rules, in order: finish a joint configuration left by a crashed leader; update a member whose
//! address changed; add an alive member unknown to Raft as a learner; promote a caught-up,
//! alive learner while there are fewer voters than `voters_target`; demote (to learner) a voter
//! that gossip has seen down for `down_grace_ms` if the remaining voters keep a live majority and
//! the demotion buys something (below); remove a learner down for `remove_after_ms`. One gossip
//! "down" never removes a voter at once.
//!
//! A demotion buys something when a caught-up, alive learner is there to take the voter's place,
//! or when dropping every long-down voter lets the cluster survive more further failures than it
//! does now (5 voters with 2 down: none; 3 voters: one). Otherwise it only makes the
//! configuration even: 3 voters with one down already need both others, and so would 2, but the
//! down one, back, restores the margin at once as a voter, not after a re-promotion; and in a
//! 2-voter configuration the damage of one replica's disk stalls the cluster for good when the
//! entries it lost are left only on a learner (simulation seed 60504 at N = 3).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::sync::watch;

use super::types::{BasicNode, NodeId, Raft};

/// How long the controller waits for one membership change to commit.
const CHANGE_TIMEOUT_MS: u64 = 10_000;

/// A member as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub rpc_addr: String,
    pub alive: bool,
    /// When `alive` last changed.
    pub since: Instant,
}

pub type MemberView = BTreeMap<NodeId, MemberStatus>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Voters the cluster aims for (3 or 5); further members stay learners.
    pub voters_target: usize,
    /// A learner is promoted once its replicated log is this close to the leader's.
    pub learner_lag_max: u64,
    /// A voter must be seen down this long before it is demoted.
    pub down_grace_ms: u64,
    /// A learner down this long is removed from the cluster.
    pub remove_after_ms: u64,
    /// How often the controller looks.
    pub interval_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            voters_target: 3,
            learner_lag_max: 1_000,
            down_grace_ms: 30_000,
            remove_after_ms: 300_000,
            interval_ms: 500,
        }
    }
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    FinishJoint { voters: BTreeSet<NodeId> },
    SetAddress { id: NodeId, rpc_addr: String },
    AddLearner { id: NodeId, rpc_addr: String },
    Promote { id: NodeId },
    Demote { id: NodeId },
    Remove { id: NodeId },
}

/// The next change the leader should make, if any. `started` stands in for `since` of members
/// Raft knows but gossip has never reported.
pub fn next_change(
    view: &MemberView,
    metrics: &RaftMetrics<NodeId, BasicNode>,
    config: &ControllerConfig,
    now: Instant,
    started: Instant,
) -> Option<Change> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let joint = membership.get_joint_config();
    if joint.len() > 1 {
        let voters = joint.last().cloned().unwrap_or_default();
        return Some(Change::FinishJoint { voters });
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    let down_for = |id: &NodeId| -> Option<Duration> {
        match view.get(id) {
            Some(m) if m.alive => None,
            Some(m) => Some(now.saturating_duration_since(m.since)),
            None => Some(now.saturating_duration_since(started)),
        }
    };
    for (id, member) in view.iter().filter(|(_, m)| m.alive) {
        match membership.get_node(id) {
            Some(node) if node.addr != member.rpc_addr => {
                return Some(Change::SetAddress {
                    id: *id,
                    rpc_addr: member.rpc_addr.clone(),
                })
            }
            Some(_) => {}
            None => {
                return Some(Change::AddLearner {
                    id: *id,
                    rpc_addr: member.rpc_addr.clone(),
                })
            }
        }
    }
    let last_index = metrics.last_log_index.unwrap_or(0);
    // Only a learner Raft has actually reached (gossip alone proves nothing about its gRPC
    // address): promoting an unreachable one would stall every commit in the joint config.
    let caught_up = |id: &NodeId| {
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(id).copied().flatten());
        matched.is_some_and(|log_id| log_id.index + config.learner_lag_max >= last_index)
    };
    let replacement = learners
        .iter()
        .find(|id| down_for(id).is_none() && caught_up(id));
    if voters.len() < config.voters_target {
        if let Some(id) = replacement {
            return Some(Change::Promote { id: *id });
        }
    }
    let grace = Duration::from_millis(config.down_grace_ms);
    let alive_voters = voters.iter().filter(|id| down_for(id).is_none()).count();
    let long_down: Vec<NodeId> = (voters.iter().copied())
        .filter(|id| *id != metrics.id && down_for(id).is_some_and(|d| d >= grace))
        .collect();
    // After the demotion, the alive voters must still be a majority of the rest.
    let live_majority_after = voters.len() > 1 && alive_voters * 2 > voters.len() - 1;
    let worth_it = replacement.is_some() || shrinking_helps(voters.len(), long_down.len());
    if let (Some(id), true, true) = (long_down.first(), live_majority_after, worth_it) {
        return Some(Change::Demote { id: *id });
    }
    let remove_after = Duration::from_millis(config.remove_after_ms);
    learners
        .iter()
        .find(|id| down_for(id).is_some_and(|d| d >= remove_after))
        .map(|id| Change::Remove { id: *id })
}

/// Whether `voters` of which `down` are long down would survive more further failures without
/// the down ones than they do now.
fn shrinking_helps(voters: usize, down: usize) -> bool {
    let tolerated = |voters: usize, down: usize| (voters as i64 - 1) / 2 - down as i64;
    down > 0 && tolerated(voters - down, 0) > tolerated(voters, down)
}

/// Applies `next_change` every `interval_ms` while this node leads; ends when the view's sender
/// is dropped or Raft stops.
pub async fn run(raft: Raft, mut view: watch::Receiver<MemberView>, config: ControllerConfig) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(config.interval_ms));
    loop {
        ticks.tick().await;
        if view.has_changed().is_err() {
            return;
        }
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let members = view.borrow_and_update().clone();
        let Some(change) = next_change(&members, &metrics, &config, Instant::now(), started) else {
            continue;
        };
        tracing::info!(?change, "membership change");
        // A change that cannot commit (no quorum) must not stop the controller for good.
        let deadline = Duration::from_millis(CHANGE_TIMEOUT_MS);
        match tokio::time::timeout(deadline, apply(&raft, change.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(?change, %error, "membership change failed; will retry")
            }
            Err(_) => tracing::warn!(?change, "membership change not committed in time"),
        }
    }
}

async fn apply(raft: &Raft, change: Change) -> Result<(), String> {
    let result = match change {
        Change::FinishJoint { voters } => {
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
                .await
        }
        Change::SetAddress { id, rpc_addr } => {
            let nodes = BTreeMap::from([(id, BasicNode::new(rpc_addr))]);
            raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
        }
        Change::AddLearner { id, rpc_addr } => {
            raft.add_learner(id, BasicNode::new(rpc_addr), false).await
        }
        Change::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
        }
        Change::Demote { id } => {
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                .await
        }
        Change::Remove { id } => {
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
        }
    };
    result.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, Membership, StoredMembership};
    use std::sync::Arc;

    const LEADER: NodeId = 1;

    fn addr(id: NodeId) -> String {
        format!("10.0.0.{id}:7400")
    }

    /// A leader's metrics with `voters` (plus `learners`) and each follower's matched index.
    fn metrics(
        voters: &[NodeId],
        learners: &[NodeId],
        matched: &[(NodeId, u64)],
        last: u64,
    ) -> RaftMetrics<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, BasicNode::new(addr(*id))))
            .collect();
        let membership = Membership::new(vec![voters.iter().copied().collect()], nodes);
        let mut m = RaftMetrics::new_initial(LEADER);
        m.state = ServerState::Leader;
        m.current_leader = Some(LEADER);
        m.last_log_index = Some(last);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m.replication = Some(
            matched
                .iter()
                .map(|(id, index)| {
                    (
                        *id,
                        Some(LogId::new(openraft::CommittedLeaderId::new(1, 0), *index)),
                    )
                })
                .collect(),
        );
        m
    }

    fn view(now: Instant, members: &[(NodeId, bool, u64)]) -> MemberView {
        members
            .iter()
            .map(|(id, alive, for_ms)| {
                let status = MemberStatus {
                    rpc_addr: addr(*id),
                    alive: *alive,
                    since: now - Duration::from_millis(*for_ms),
                };
                (*id, status)
            })
            .collect()
    }

    fn decide(
        view: &MemberView,
        metrics: &RaftMetrics<NodeId, BasicNode>,
        now: Instant,
    ) -> Option<Change> {
        let config = ControllerConfig {
            down_grace_ms: 30_000,
            remove_after_ms: 300_000,
            ..ControllerConfig::default()
        };
        next_change(view, metrics, &config, now, now - Duration::from_secs(3600))
    }

    #[test]
    fn only_the_leader_changes_membership() {
        let now = Instant::now();
        let mut m = metrics(&[1], &[], &[], 10);
        m.state = ServerState::Follower;
        assert_eq!(
            decide(&view(now, &[(1, true, 0), (2, true, 0)]), &m, now),
            None
        );
    }

    #[test]
    fn a_new_alive_member_joins_as_learner_then_is_promoted_once_caught_up() {
        let now = Instant::now();
        let members = view(now, &[(1, true, 0), (2, true, 0)]);
        let change = decide(&members, &metrics(&[1], &[], &[], 10), now);
        assert_eq!(
            change,
            Some(Change::AddLearner {
                id: 2,
                rpc_addr: addr(2)
            })
        );
        let lagging = metrics(&[1], &[2], &[(2, 0)], 5_000);
        assert_eq!(
            decide(&members, &lagging, now),
            None,
            "a lagging learner waits"
        );
        let caught_up = metrics(&[1], &[2], &[(2, 4_990)], 5_000);
        assert_eq!(
            decide(&members, &caught_up, now),
            Some(Change::Promote { id: 2 })
        );
        let never_reached = metrics(&[1], &[2], &[], 3);
        assert_eq!(
            decide(&members, &never_reached, now),
            None,
            "gossip alone does not promote"
        );
    }

    #[test]
    fn learners_beyond_the_voter_target_stay_learners() {
        let now = Instant::now();
        let members = view(
            now,
            &[(1, true, 0), (2, true, 0), (3, true, 0), (4, true, 0)],
        );
        let m = metrics(&[1, 2, 3], &[4], &[(2, 10), (3, 10), (4, 10)], 10);
        assert_eq!(decide(&members, &m, now), None);
    }

    #[test]
    fn a_down_voter_is_demoted_only_after_the_grace_period_and_with_a_live_majority() {
        let now = Instant::now();
        let m = metrics(&[1, 2, 3], &[4], &[(2, 10), (3, 10), (4, 10)], 10);
        let briefly_down = [(1, true, 0), (2, true, 0), (3, false, 29_000), (4, true, 0)];
        assert_eq!(decide(&view(now, &briefly_down), &m, now), None);
        let long_down = [(1, true, 0), (2, true, 0), (3, false, 31_000), (4, true, 0)];
        assert_eq!(
            decide(&view(now, &long_down), &m, now),
            Some(Change::Demote { id: 3 })
        );
        // Two of three voters down: demoting one would leave no live majority of the rest.
        let two_down = [
            (1, true, 0),
            (2, false, 31_000),
            (3, false, 31_000),
            (4, true, 0),
        ];
        assert_eq!(decide(&view(now, &two_down), &m, now), None);
    }

    #[test]
    fn a_down_voter_is_demoted_only_when_a_learner_replaces_it_or_the_margin_grows() {
        let now = Instant::now();
        // 3 voters, one down, no learner: 2 voters would tolerate no more failures than 3 do.
        let m = metrics(&[1, 2, 3], &[], &[(2, 10), (3, 10)], 10);
        let members = view(now, &[(1, true, 0), (2, true, 0), (3, false, 31_000)]);
        assert_eq!(decide(&members, &m, now), None);
        // A learner that lags is no replacement.
        let m = metrics(&[1, 2, 3], &[4], &[(2, 5_000), (3, 10), (4, 10)], 5_000);
        let members = [(1, true, 0), (2, true, 0), (3, false, 31_000), (4, true, 0)];
        assert_eq!(decide(&view(now, &members), &m, now), None);
        // 5 voters, two down: 3 voters tolerate one failure, 5 with two down none.
        let m = metrics(
            &[1, 2, 3, 4, 5],
            &[],
            &[(2, 10), (3, 10), (4, 10), (5, 10)],
            10,
        );
        let two_down = [
            (1, true, 0),
            (2, true, 0),
            (3, true, 0),
            (4, false, 31_000),
            (5, false, 31_000),
        ];
        assert_eq!(
            decide(&view(now, &two_down), &m, now),
            Some(Change::Demote { id: 4 })
        );
        // 5 voters, one down: 4 voters tolerate one failure, as 5 with one down do.
        let one_down = [
            (1, true, 0),
            (2, true, 0),
            (3, true, 0),
            (4, true, 0),
            (5, false, 31_000),
        ];
        assert_eq!(decide(&view(now, &one_down), &m, now), None);
        assert!(shrinking_helps(4, 1));
        assert!(!shrinking_helps(3, 1));
        assert!(!shrinking_helps(3, 0));
    }

    #[test]
    fn a_member_raft_knows_but_gossip_never_saw_counts_as_down_since_start() {
        let now = Instant::now();
        let m = metrics(&[1, 2, 3], &[4], &[(2, 10), (3, 10), (4, 10)], 10);
        let members = view(now, &[(1, true, 0), (2, true, 0), (4, true, 0)]);
        assert_eq!(decide(&members, &m, now), Some(Change::Demote { id: 3 }));
    }

    #[test]
    fn a_long_down_learner_is_removed_and_a_moved_member_gets_its_new_address() {
        let now = Instant::now();
        let m = metrics(&[1, 2, 3], &[4], &[(2, 10), (3, 10)], 10);
        let members = view(
            now,
            &[
                (1, true, 0),
                (2, true, 0),
                (3, true, 0),
                (4, false, 301_000),
            ],
        );
        assert_eq!(decide(&members, &m, now), Some(Change::Remove { id: 4 }));
        let mut moved = view(now, &[(1, true, 0), (2, true, 0), (3, true, 0)]);
        moved.get_mut(&3).unwrap().rpc_addr = "10.0.0.9:7400".into();
        assert_eq!(
            decide(&moved, &metrics(&[1, 2, 3], &[], &[], 10), now),
            Some(Change::SetAddress {
                id: 3,
                rpc_addr: "10.0.0.9:7400".into()
            })
        );
    }
}
