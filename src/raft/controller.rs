//! The membership controller: on the leader, turns the gossip view into Raft membership changes,
//! one at a time. `next_change` is a pure function of the view, the Raft metrics and the time;
//! `run` applies its answers, as soon as its inputs change (not on a slow tick).
//!
//! Rules, in order: finish a joint configuration left by a crashed leader; update a member whose
//! address changed; add every alive member unknown to Raft as a learner (all in one change);
//! promote caught-up, alive learners that Raft has reached while there are fewer voters than
//! `voters_target` (several in one change, keeping the voter count odd: below); demote (to
//! learner) a voter that gossip has seen down for `down_grace_ms` if the remaining voters keep a
//! live majority and the demotion buys something (below); remove a learner down for
//! `remove_after_ms`. One gossip "down" never removes a voter at once.
//!
//! Formation. A forming cluster has one voter (the bootstrap node) and takes no writes until it
//! has `min_replicas` (see `proposer`), so it promotes as soon as learners are ready, and several
//! at once: 1 -> 3 voters in one joint change when two learners are ready. It avoids an even
//! voter count: 2 voters tolerate no more failures than 1 and stall when either dies (voters
//! {1, 2}: kill 1 and nothing is elected until it returns), 4 no more than 3. So it promotes one
//! learner fewer when that makes the count odd, and promotes into an even count only when the
//! cluster needs it to take writes (fewer voters than `min_replicas`: a 2-member cluster), the
//! learner has been alive for `settle_ms`, and no other member that could make the count odd is
//! on its way (alive for less than `settle_ms`, not yet ready). A learner Raft has not reached
//! (no matched log id) is never promoted: gossip alone proves nothing about its gRPC address,
//! and an unreachable voter would stall every commit of the joint configuration.
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
use tokio::time::Instant as TokioInstant;

use super::types::{BasicNode, NodeId, Raft};

/// How long the controller waits for one membership change to commit.
const CHANGE_TIMEOUT_MS: u64 = 10_000;
/// After its inputs change, the controller waits this long before it looks, so that a burst of
/// changes (every replicated entry changes the metrics) costs one look, not one per change.
const SETTLE_INPUTS_MS: u64 = 20;

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
    /// How often the controller looks when nothing changes (for the rules that depend on time).
    pub interval_ms: u64,
    /// Voters a write needs (`cluster.min_replicas`): an even voter count is formed only to
    /// reach it.
    pub min_replicas: usize,
    /// Before promoting into an even voter count, the learner must have been alive this long,
    /// and members alive for less are waited for (they may make the count odd).
    pub settle_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            voters_target: 3,
            learner_lag_max: 1_000,
            down_grace_ms: 30_000,
            remove_after_ms: 300_000,
            interval_ms: 500,
            min_replicas: 2,
            settle_ms: 5_000,
        }
    }
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    FinishJoint {
        voters: BTreeSet<NodeId>,
    },
    SetAddress {
        id: NodeId,
        rpc_addr: String,
    },
    /// New members as learners: id -> gRPC address.
    AddLearners {
        nodes: BTreeMap<NodeId, String>,
    },
    /// Learners to voters, in one (joint) change.
    Promote {
        ids: BTreeSet<NodeId>,
    },
    Demote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
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
    let mut unknown = BTreeMap::new();
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
                unknown.insert(*id, member.rpc_addr.clone());
            }
        }
    }
    if !unknown.is_empty() {
        return Some(Change::AddLearners { nodes: unknown });
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
    let ready: Vec<NodeId> = (learners.iter().copied())
        .filter(|id| down_for(id).is_none() && caught_up(id))
        .collect();
    let replacement = ready.first();
    let promote = promotion(view, &voters, &ready, config, now);
    if !promote.is_empty() {
        return Some(Change::Promote { ids: promote });
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

/// The ready learners (alive, reached, caught up; by id) to promote now: as many as fit under
/// `voters_target`, one fewer if that keeps the voter count odd; into an even count only when
/// the cluster needs it for writes and nobody else is on the way (module docs).
fn promotion(
    view: &MemberView,
    voters: &BTreeSet<NodeId>,
    ready: &[NodeId],
    config: &ControllerConfig,
    now: Instant,
) -> BTreeSet<NodeId> {
    let room = config.voters_target.saturating_sub(voters.len());
    let mut count = ready.len().min(room);
    if count > 0 && (voters.len() + count) % 2 == 0 {
        if count > 1 {
            count -= 1;
        } else {
            let settle = Duration::from_millis(config.settle_ms);
            let alive_for = |id: &NodeId| {
                (view.get(id))
                    .filter(|m| m.alive)
                    .map(|m| now.saturating_duration_since(m.since))
            };
            let settled = alive_for(&ready[0]).is_some_and(|d| d >= settle);
            let on_the_way = view.keys().any(|id| {
                !voters.contains(id)
                    && !ready.contains(id)
                    && alive_for(id).is_some_and(|d| d < settle)
            });
            if voters.len() >= config.min_replicas || !settled || on_the_way {
                count = 0;
            }
        }
    }
    ready[..count].iter().copied().collect()
}

/// Whether `voters` of which `down` are long down would survive more further failures without
/// the down ones than they do now.
fn shrinking_helps(voters: usize, down: usize) -> bool {
    let tolerated = |voters: usize, down: usize| (voters as i64 - 1) / 2 - down as i64;
    down > 0 && tolerated(voters - down, 0) > tolerated(voters, down)
}

/// Applies `next_change` whenever its inputs change (the gossip view, the Raft metrics; at most
/// once per `SETTLE_INPUTS_MS`) and at least every `interval_ms`, at once again after each
/// change; ends when the view's sender is dropped or Raft stops.
pub async fn run(raft: Raft, mut view: watch::Receiver<MemberView>, config: ControllerConfig) {
    let started = Instant::now();
    let mut metrics = raft.metrics();
    let interval = Duration::from_millis(config.interval_ms);
    loop {
        if view.has_changed().is_err() {
            return;
        }
        let now_metrics = metrics.borrow_and_update().clone();
        if now_metrics.running_state.is_err() {
            return;
        }
        let members = view.borrow_and_update().clone();
        let change = next_change(&members, &now_metrics, &config, Instant::now(), started);
        let Some(change) = change else {
            // Nothing to do until something changes (or time makes a rule apply).
            let woken = tokio::select! {
                biased;
                changed = view.changed() => changed.is_ok(),
                changed = metrics.changed() => changed.is_ok(),
                () = tokio::time::sleep(interval) => true,
            };
            if !woken {
                return;
            }
            let settle = Duration::from_millis(SETTLE_INPUTS_MS);
            tokio::time::sleep_until(TokioInstant::now() + settle).await;
            continue;
        };
        tracing::info!(?change, "membership change");
        // A change that cannot commit (no quorum) must not stop the controller for good.
        let deadline = Duration::from_millis(CHANGE_TIMEOUT_MS);
        match tokio::time::timeout(deadline, apply(&raft, change.clone())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(?change, %error, "membership change failed; will retry");
                tokio::time::sleep(interval).await;
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
        Change::AddLearners { nodes } => {
            let nodes = (nodes.into_iter())
                .map(|(id, addr)| (id, BasicNode::new(addr)))
                .collect();
            raft.change_membership(ChangeMembers::AddNodes(nodes), true)
                .await
        }
        Change::Promote { ids } => {
            raft.change_membership(ChangeMembers::AddVoterIds(ids), true)
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
    fn new_alive_members_join_as_learners_together_then_are_promoted_together_once_caught_up() {
        let now = Instant::now();
        let members = view(now, &[(1, true, 0), (2, true, 0), (3, true, 0)]);
        let change = decide(&members, &metrics(&[1], &[], &[], 10), now);
        assert_eq!(
            change,
            Some(Change::AddLearners {
                nodes: BTreeMap::from([(2, addr(2)), (3, addr(3))])
            }),
            "every new member in one change"
        );
        let lagging = metrics(&[1], &[2, 3], &[(2, 0), (3, 0)], 5_000);
        assert_eq!(
            decide(&members, &lagging, now),
            None,
            "lagging learners wait"
        );
        let caught_up = metrics(&[1], &[2, 3], &[(2, 4_990), (3, 5_000)], 5_000);
        assert_eq!(
            decide(&members, &caught_up, now),
            Some(Change::Promote {
                ids: BTreeSet::from([2, 3])
            }),
            "1 -> 3 voters in one change, never through 2"
        );
        let never_reached = metrics(&[1], &[2, 3], &[], 3);
        assert_eq!(
            decide(&members, &never_reached, now),
            None,
            "gossip alone does not promote"
        );
    }

    #[test]
    fn a_forming_cluster_waits_for_a_member_on_its_way_rather_than_have_two_voters() {
        let now = Instant::now();
        // Node 2 is ready; node 3 is alive but Raft has not reached it yet (or it is not yet a
        // learner): promoting 2 alone would make {1, 2}, which stalls when either dies.
        let m = metrics(&[1], &[2, 3], &[(2, 10)], 10);
        let members = view(now, &[(1, true, 60_000), (2, true, 60_000), (3, true, 100)]);
        assert_eq!(decide(&members, &m, now), None);
        let members = view(now, &[(1, true, 60_000), (2, true, 60_000), (4, true, 100)]);
        let m4 = metrics(&[1], &[2], &[(2, 10)], 10);
        assert_eq!(
            decide(&members, &m4, now),
            Some(Change::AddLearners {
                nodes: BTreeMap::from([(4, addr(4))])
            })
        );
        // A member that has been alive for the settle time and is still not ready is not
        // waited for any longer: the cluster needs a second voter to take writes.
        let members = view(
            now,
            &[(1, true, 60_000), (2, true, 60_000), (3, true, 6_000)],
        );
        assert_eq!(
            decide(&members, &m, now),
            Some(Change::Promote {
                ids: BTreeSet::from([2])
            })
        );
    }

    #[test]
    fn an_even_voter_count_is_formed_only_when_writes_need_it_and_nobody_else_comes() {
        let now = Instant::now();
        let m = metrics(&[1], &[2], &[(2, 10)], 10);
        // A two-member cluster: the second voter is needed for min_replicas = 2, once node 2 has
        // been alive for the settle time (a third member may still be starting).
        let fresh = view(now, &[(1, true, 60_000), (2, true, 1_000)]);
        assert_eq!(decide(&fresh, &m, now), None);
        let settled = view(now, &[(1, true, 60_000), (2, true, 5_000)]);
        assert_eq!(
            decide(&settled, &m, now),
            Some(Change::Promote {
                ids: BTreeSet::from([2])
            })
        );
        // With min_replicas = 1 one voter takes writes: 2 would tolerate no more failures.
        let config = ControllerConfig {
            min_replicas: 1,
            ..ControllerConfig::default()
        };
        let started = now - Duration::from_secs(3600);
        assert_eq!(next_change(&settled, &m, &config, now, started), None);
        // An even count left by a demotion goes odd again at once.
        let m = metrics(&[1, 2], &[3], &[(2, 10), (3, 10)], 10);
        let members = view(now, &[(1, true, 60_000), (2, true, 60_000), (3, true, 0)]);
        assert_eq!(
            decide(&members, &m, now),
            Some(Change::Promote {
                ids: BTreeSet::from([3])
            })
        );
    }

    #[test]
    fn five_voters_form_through_three_and_never_four() {
        let now = Instant::now();
        let config = ControllerConfig {
            voters_target: 5,
            min_replicas: 3,
            ..ControllerConfig::default()
        };
        let started = now - Duration::from_secs(3600);
        let all = |alive_for: u64| {
            view(
                now,
                &[
                    (1, true, 60_000),
                    (2, true, 60_000),
                    (3, true, 60_000),
                    (4, true, 60_000),
                    (5, true, alive_for),
                ],
            )
        };
        let m = metrics(&[1], &[2, 3, 4, 5], &[(2, 10), (3, 10), (4, 10)], 10);
        assert_eq!(
            next_change(&all(100), &m, &config, now, started),
            Some(Change::Promote {
                ids: BTreeSet::from([2, 3])
            }),
            "three of the four ready: 1 -> 3"
        );
        let m = metrics(&[1, 2, 3], &[4, 5], &[(2, 10), (3, 10), (4, 10)], 10);
        assert_eq!(next_change(&all(100), &m, &config, now, started), None);
        assert_eq!(
            next_change(&all(60_000), &m, &config, now, started),
            None,
            "3 voters already take writes (min_replicas 3): 4 would add nothing"
        );
        let m = metrics(
            &[1, 2, 3],
            &[4, 5],
            &[(2, 10), (3, 10), (4, 10), (5, 10)],
            10,
        );
        assert_eq!(
            next_change(&all(100), &m, &config, now, started),
            Some(Change::Promote {
                ids: BTreeSet::from([4, 5])
            })
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
