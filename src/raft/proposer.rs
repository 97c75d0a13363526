//! The leader's write path: client records are queued, merged into `ProduceBatch` entries and
//! proposed in queue order, with a few entries in flight so one fills while another is being
//! fsync'd and replicated. A write is acknowledged once its entry is committed (on a majority's
//! disk), applied by the leader, and held by at least `min_replicas` voters (below).
//!
//! Not idempotent: when leadership changes while an entry is in flight, its producers get
//! `NotLeader`, yet the entry may still be committed by the next leader. Such a retry can
//! therefore write the records twice (at-least-once; README "Durability contract").
//!
//! ## Replication factor (`cluster.min_replicas`)
//!
//! Promise: an acknowledged write's entry is on the disks (fsync'd) of at least `min_replicas`
//! voters (default a majority of `voters_target`: 2 of 3), like Kafka's `min.insync.replicas`.
//! Raft's commit alone does not give that: it means a majority of the voter set *in force*, and
//! a forming cluster's voter set is the bootstrap node alone (issue 15: three members listed, one
//! voter, every write acknowledged from one disk; kill it and no leader can ever be elected).
//!
//! Two steps, both on the leader:
//!
//! 1. **Gate (before proposing, in `submit`).** While the smallest voter set of the leader's
//!    membership (one set; two during a joint change) has fewer than `min_replicas` voters, a
//!    write waits, on the metrics watch, for enough voters, for at most `min_replicas_wait_ms`
//!    (and never past the caller's deadline, `submit_before`); then it fails with
//!    `TooFewVoters` ("1 of 3 voters; need 2 to acknowledge"), UNAVAILABLE, having proposed
//!    nothing. The fast path is one borrow of the metrics, the same one that checks leadership.
//! 2. **Confirmation (after commit and apply, per entry).** The leader's replication progress
//!    (openraft's `RaftMetrics::replication`: the matched log id of every member it replicates
//!    to, itself included) must show, in every voter set of its current membership, at least
//!    `min_replicas` voters whose matched index reaches the entry. Otherwise the entry's waiter
//!    waits for the next metrics until it does, until this node stops leading (`NotLeader`), or
//!    until the commit deadline (`TooFewReplicas`; the write may still be kept). One check per
//!    entry (a batch of records), in the task that already waits for the entry: nothing per
//!    record, and the entries-in-flight window is unchanged.
//!
//! Why a matched index is a copy on disk: openraft 0.9.25 advances the leader's own progress
//! entry only after its log store reports the append flushed (`RaftCore::append_to_log` awaits
//! the `LogFlushed` callback, then `update_local_progress`), and a follower answers
//! AppendEntries only after its own flush (`Engine::handle_append_entries` queues the
//! `Respond` command behind `AppendInputEntries`, which blocks until `LogFlushed`); the leader
//! sets `matched` from that answer. A matched log id at index m is on the leader's log, so by
//! Log Matching the follower holds the leader's entries up to m, ours among them. Learners are
//! in the progress map but in no voter set: they never count (a copy on a learner cannot elect
//! a leader, so it cannot keep a record available when the voters that hold it are gone).
//!
//! Why the gate alone is not enough: it looks at the voter set when the write arrives; the entry
//! commits under whatever voter set is in force when it is replicated, and Raft only promises
//! a majority of that set. The two differ when membership changes in between: with
//! `voters_target` 5 and `min_replicas` 3, the controller may demote two long-down voters
//! (5 -> 3, see `controller`) after the gate passed; the entry then commits on 2 of 3 voters. So
//! safety would rest on every path of another module never leaving a voter set whose majority
//! is below `min_replicas`; the confirmation checks the fact itself (copies on voters' disks),
//! whatever membership did. Counting in the membership current at acknowledgement (not the one
//! at commit) is what matters for the future: those voters elect the next leaders, and a joint
//! configuration must have `min_replicas` holders in each of its sets. A leader that lost its
//! leadership before confirming has no progress to look at: the write gets `NotLeader` (it is
//! committed and kept; a retry may store it twice, as for any write whose answer was lost).
//!
//! With the confirmation in place, the gate only decides when waiting is pointless (fewer voters
//! than `min_replicas` can never confirm) and keeps a forming cluster from committing writes it
//! would then refuse: it counts voters, not a majority of them, so 3 voters with `min_replicas`
//! 3 (after 5 -> 3) still take writes while all three hold them, as Kafka does with
//! `min.insync.replicas` equal to its in-sync set. `min_replicas` is at most a majority of
//! `voters_target`, so a failure Raft tolerates never stops writes of a formed cluster.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

use super::types::{NodeId, ProduceBatch, Raft};
use crate::io::Clock;

/// Why a write was not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows of (id, gRPC address).
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The node is shutting down or Raft stopped (a storage failure stops it for good).
    #[error("replication stopped: {0}")]
    Stopped(String),
    /// The entry was proposed but not committed in time (e.g. the leader is cut off from the
    /// other voters). It may still commit later: a retry can store the records twice.
    #[error("not committed within {timeout_ms} ms (the write may still commit)")]
    Timeout { timeout_ms: u64 },
    /// The cluster has fewer voters than `min_replicas` (it is forming, or lost members), and
    /// did not get enough within the wait. Nothing was proposed.
    #[error(
        "{voters} of {voters_target} voters; need {needed} to acknowledge (cluster.min_replicas); \
         waited {waited_ms} ms for the cluster to form"
    )]
    TooFewVoters {
        voters: usize,
        voters_target: usize,
        needed: usize,
        waited_ms: u64,
    },
    /// The entry committed, but fewer than `min_replicas` voters confirmed holding it in time.
    /// It is kept (and becomes readable): a retry can store the records twice.
    #[error(
        "the write reached {holders} of {voters} voters; need {needed} to acknowledge \
         (cluster.min_replicas; the write may still be kept)"
    )]
    TooFewReplicas {
        holders: usize,
        voters: usize,
        needed: usize,
    },
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => "; no leader is known yet".to_string(),
    }
}

/// Limits of the proposer, validated by the node's config.
#[derive(Clone, Copy, Debug)]
pub struct ProposerLimits {
    /// Records merged into one entry at most.
    pub entry_records_max: usize,
    /// Value bytes merged into one entry at most (a single larger request still goes alone).
    pub entry_bytes_max: usize,
    /// Entries proposed and not yet acknowledged.
    pub entries_in_flight_max: usize,
    /// Write requests queued before `submit` waits.
    pub queue_depth_max: usize,
    /// A proposed entry not committed within this long is answered with `Timeout` (and one not
    /// confirmed on `min_replicas` voters by then with `TooFewReplicas`).
    pub commit_timeout_ms: u64,
    /// Voters that must hold an entry before its writes are acknowledged (module docs).
    pub min_replicas: usize,
    /// How long a write waits for the cluster to have `min_replicas` voters.
    pub min_replicas_wait_ms: u64,
    /// The voters the cluster aims for (for messages).
    pub voters_target: usize,
}

type Reply = oneshot::Sender<Result<Range<u64>, ProposeError>>;

struct Proposal {
    values: Vec<Bytes>,
    reply: Reply,
}

/// A pending write: resolves to the offsets of its records once committed.
pub type PendingWrite = oneshot::Receiver<Result<Range<u64>, ProposeError>>;

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
    raft: Raft,
    limits: ProposerLimits,
}

impl Proposer {
    pub fn start(raft: Raft, clock: Arc<dyn Clock>, limits: ProposerLimits) -> Proposer {
        assert!(limits.entry_records_max > 0 && limits.entries_in_flight_max > 0);
        #[cfg(madsim)]
        let limits = match crate::planted_bugs::no_min_replicas() {
            true => ProposerLimits {
                min_replicas: 1,
                ..limits
            },
            false => limits,
        };
        let (queue, requests) = mpsc::channel(limits.queue_depth_max.max(1));
        tokio::spawn(propose_loop(raft.clone(), clock, limits, requests));
        Proposer {
            queue,
            raft,
            limits,
        }
    }

    /// Queues `values` (already validated) for the leader's next entry. Refused at once when this
    /// node knows it is not the leader; waits (up to `min_replicas_wait_ms`) while the cluster
    /// has fewer than `min_replicas` voters.
    pub async fn submit(&self, values: Vec<Bytes>) -> Result<PendingWrite, ProposeError> {
        self.submit_before(values, None).await
    }

    /// `submit`, waiting for voters no later than `deadline` (e.g. the request's gRPC deadline)
    /// either.
    pub async fn submit_before(
        &self,
        values: Vec<Bytes>,
        deadline: Option<Instant>,
    ) -> Result<PendingWrite, ProposeError> {
        assert!(!values.is_empty(), "a write carries at least one record");
        let gate = {
            // On every write: borrow the metrics, do not clone them.
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            gate(&metrics, self.limits.min_replicas)
        };
        match gate {
            Gate::Open => {}
            Gate::NotLeader(leader) => return Err(ProposeError::NotLeader { leader }),
            Gate::TooFewVoters(_) => self.wait_for_voters(deadline).await?,
        }
        let (reply, pending) = oneshot::channel();
        self.queue
            .send(Proposal { values, reply })
            .await
            .map_err(|_| ProposeError::Stopped("the proposer has stopped".into()))?;
        Ok(pending)
    }

    /// Waits until this leader has `min_replicas` voters (gate step of the module docs).
    async fn wait_for_voters(&self, deadline: Option<Instant>) -> Result<(), ProposeError> {
        let started = Instant::now();
        let wait = Duration::from_millis(self.limits.min_replicas_wait_ms);
        let until = deadline.map_or(started + wait, |d| d.min(started + wait));
        let mut metrics = self.raft.metrics();
        loop {
            let voters = match gate(&metrics.borrow_and_update(), self.limits.min_replicas) {
                Gate::Open => return Ok(()),
                Gate::NotLeader(leader) => return Err(ProposeError::NotLeader { leader }),
                Gate::TooFewVoters(voters) => voters,
            };
            tokio::select! {
                biased;
                changed = metrics.changed() => if changed.is_err() {
                    return Err(ProposeError::Stopped("raft stopped".into()));
                },
                () = tokio::time::sleep_until(until) => {
                    return Err(ProposeError::TooFewVoters {
                        voters,
                        voters_target: self.limits.voters_target,
                        needed: self.limits.min_replicas,
                        waited_ms: started.elapsed().as_millis() as u64,
                    });
                }
            }
        }
    }

    /// `NotLeader` (with the known leader) unless this node is the leader.
    pub fn not_leader(&self) -> Option<ProposeError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state == ServerState::Leader {
            return None;
        }
        Some(ProposeError::NotLeader {
            leader: known_leader(&metrics),
        })
    }
}

/// Whether a write may be proposed now.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Gate {
    Open,
    NotLeader(Option<(NodeId, String)>),
    /// The leader's smallest voter set has this many voters, fewer than `min_replicas`.
    TooFewVoters(usize),
}

fn gate(metrics: &RaftMetrics<NodeId, BasicNode>, min_replicas: usize) -> Gate {
    if metrics.state != ServerState::Leader {
        return Gate::NotLeader(known_leader(metrics));
    }
    let membership = metrics.membership_config.membership();
    let voters = (membership.get_joint_config().iter())
        .map(|set| set.len())
        .min()
        .unwrap_or(0);
    if voters < min_replicas {
        Gate::TooFewVoters(voters)
    } else {
        Gate::Open
    }
}

/// How many voters hold the entry at `index`, by the leader's replication progress.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Replicas {
    /// At least `min_replicas` in every voter set.
    Enough,
    /// This node does not lead (it has no replication progress).
    NotLeader(Option<(NodeId, String)>),
    /// Fewer: the smallest count over the voter sets, and that set's size.
    Short { holders: usize, voters: usize },
}

fn replicas(metrics: &RaftMetrics<NodeId, BasicNode>, index: u64, min_replicas: usize) -> Replicas {
    let progress = match (&metrics.state, &metrics.replication) {
        (ServerState::Leader, Some(progress)) => progress,
        _ => return Replicas::NotLeader(known_leader(metrics)),
    };
    let holds = |id: &NodeId| {
        (progress.get(id).copied().flatten()).is_some_and(|matched| matched.index >= index)
    };
    let membership = metrics.membership_config.membership();
    let shortest = (membership.get_joint_config().iter())
        .map(|set| (set.iter().filter(|id| holds(id)).count(), set.len()))
        .min();
    match shortest {
        Some((holders, _)) if holders >= min_replicas => Replicas::Enough,
        Some((holders, voters)) => Replicas::Short { holders, voters },
        None => Replicas::Short {
            holders: 0,
            voters: 0,
        },
    }
}

/// Waits until at least `min_replicas` voters of each voter set hold the entry at `index`
/// (confirmation step of the module docs), at most until `deadline`.
async fn confirm(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    index: u64,
    min_replicas: usize,
    deadline: Instant,
) -> Result<(), ProposeError> {
    loop {
        let (holders, voters) = match replicas(&metrics.borrow_and_update(), index, min_replicas) {
            Replicas::Enough => return Ok(()),
            Replicas::NotLeader(leader) => return Err(ProposeError::NotLeader { leader }),
            Replicas::Short { holders, voters } => (holders, voters),
        };
        tokio::select! {
            biased;
            changed = metrics.changed() => if changed.is_err() {
                return Err(ProposeError::Stopped("raft stopped".into()));
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(ProposeError::TooFewReplicas { holders, voters, needed: min_replicas });
            }
        }
    }
}

/// The leader `metrics` name, with its gRPC address: (id, address).
pub fn known_leader(
    metrics: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
) -> Option<(NodeId, String)> {
    let id = metrics.current_leader?;
    let node = metrics.membership_config.membership().get_node(&id)?;
    Some((id, node.addr.clone()))
}

/// Takes the next request and every one already queued behind it (within the entry limits),
/// proposes them as one entry, and hands the acknowledgement to a waiter task.
async fn propose_loop(
    raft: Raft,
    clock: Arc<dyn Clock>,
    limits: ProposerLimits,
    mut requests: mpsc::Receiver<Proposal>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.entries_in_flight_max));
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match requests.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        carried = fill_batch(&mut batch, &mut requests, &limits);
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut values = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        for proposal in batch {
            replies.push((proposal.reply, proposal.values.len()));
            values.extend(proposal.values);
        }
        let entry = ProduceBatch {
            values,
            timestamp_ms: clock.now_ms(),
            producer: None,
        };
        match raft.client_write_ff(entry).await {
            Ok(acked) => {
                let timeout_ms = limits.commit_timeout_ms;
                let min_replicas = limits.min_replicas;
                let metrics = raft.metrics();
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                    // (madsim's tokio has no `timeout_at`.)
                    let commit_wait = deadline.saturating_duration_since(Instant::now());
                    let result = match tokio::time::timeout(commit_wait, acked).await {
                        Err(_) => Err(ProposeError::Timeout { timeout_ms }),
                        Ok(Ok(Ok(response))) => {
                            let index = response.log_id.index;
                            confirm(metrics, index, min_replicas, deadline)
                                .await
                                .map(|()| response.data.first_offset)
                        }
                        Ok(Ok(Err(error))) => Err(from_client_write_error(error)),
                        Ok(Err(_)) => Err(ProposeError::Stopped("raft dropped the write".into())),
                    };
                    answer(replies, result);
                    drop(permit);
                });
            }
            Err(fatal) => answer(replies, Err(ProposeError::Stopped(fatal.to_string()))),
        }
    }
}

/// Moves queued requests into `batch` while they fit; returns the first one that does not.
fn fill_batch(
    batch: &mut Vec<Proposal>,
    requests: &mut mpsc::Receiver<Proposal>,
    limits: &ProposerLimits,
) -> Option<Proposal> {
    let mut records: usize = batch.iter().map(|p| p.values.len()).sum();
    let mut bytes: usize = batch.iter().flat_map(|p| &p.values).map(Bytes::len).sum();
    while let Ok(next) = requests.try_recv() {
        let next_bytes: usize = next.values.iter().map(Bytes::len).sum();
        if records + next.values.len() > limits.entry_records_max
            || bytes + next_bytes > limits.entry_bytes_max
        {
            return Some(next);
        }
        records += next.values.len();
        bytes += next_bytes;
        batch.push(next);
    }
    None
}

/// Splits an entry's first offset into each request's range, in order.
fn answer(replies: Vec<(Reply, usize)>, first_offset: Result<u64, ProposeError>) {
    let mut next = first_offset.clone().unwrap_or(0);
    for (reply, count) in replies {
        let range = next..next + count as u64;
        next = range.end;
        let _ = reply.send(first_offset.clone().map(|_| range));
    }
}

fn from_client_write_error(error: ClientWriteError<NodeId, openraft::BasicNode>) -> ProposeError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => ProposeError::NotLeader {
            leader: forward
                .leader_id
                .zip(forward.leader_node.map(|node| node.addr)),
        },
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Stopped(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    /// Node 1's metrics as leader of `sets` (one voter set, or two in a joint change) plus
    /// `learners`, with each member's matched index.
    fn leader(
        sets: &[&[NodeId]],
        learners: &[NodeId],
        matched: &[(NodeId, u64)],
    ) -> RaftMetrics<NodeId, BasicNode> {
        let configs: Vec<BTreeSet<NodeId>> = sets
            .iter()
            .map(|set| set.iter().copied().collect())
            .collect();
        let nodes: BTreeMap<NodeId, BasicNode> = (configs.iter().flatten().chain(learners))
            .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:7400"))))
            .collect();
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_leader = Some(1);
        m.membership_config =
            Arc::new(StoredMembership::new(None, Membership::new(configs, nodes)));
        m.replication = Some(
            (matched.iter())
                .map(|(id, index)| (*id, Some(LogId::new(CommittedLeaderId::new(1, 0), *index))))
                .collect(),
        );
        m
    }

    #[test]
    fn the_gate_opens_once_the_smallest_voter_set_has_min_replicas_voters() {
        let forming = leader(&[&[1]], &[2, 3], &[]);
        assert_eq!(gate(&forming, 2), Gate::TooFewVoters(1));
        assert_eq!(gate(&forming, 1), Gate::Open, "voters_target 1");
        let joint = leader(&[&[1], &[1, 2, 3]], &[], &[]);
        assert_eq!(
            gate(&joint, 2),
            Gate::TooFewVoters(1),
            "each set of a joint change"
        );
        assert_eq!(gate(&leader(&[&[1, 2, 3]], &[], &[]), 2), Gate::Open);
        assert_eq!(
            gate(&leader(&[&[1, 2, 3]], &[], &[]), 3),
            Gate::Open,
            "voters are counted, not a majority of them: three can all hold an entry"
        );
        let mut follower = leader(&[&[1, 2, 3]], &[], &[]);
        follower.state = ServerState::Follower;
        follower.current_leader = Some(2);
        assert_eq!(
            gate(&follower, 2),
            Gate::NotLeader(Some((2, "10.0.0.2:7400".into())))
        );
    }

    #[test]
    fn an_entry_is_confirmed_by_min_replicas_voters_that_reached_it_never_by_learners() {
        let m = leader(&[&[1, 2, 3]], &[4], &[(1, 10), (2, 10), (3, 9), (4, 10)]);
        assert_eq!(replicas(&m, 10, 2), Replicas::Enough);
        assert_eq!(
            replicas(&m, 10, 3),
            Replicas::Short {
                holders: 2,
                voters: 3
            },
            "node 3 matched only up to 9; learner 4 does not count"
        );
        assert_eq!(replicas(&m, 9, 3), Replicas::Enough);
        // The forming cluster: one voter, learners that hold everything.
        let forming = leader(&[&[1]], &[2, 3], &[(1, 5), (2, 5), (3, 5)]);
        assert_eq!(
            replicas(&forming, 5, 2),
            Replicas::Short {
                holders: 1,
                voters: 1
            }
        );
        assert_eq!(replicas(&forming, 5, 1), Replicas::Enough);
        // A joint change needs the holders in each of its sets.
        let joint = leader(&[&[1], &[1, 2, 3]], &[], &[(1, 7), (2, 7), (3, 7)]);
        assert_eq!(
            replicas(&joint, 7, 2),
            Replicas::Short {
                holders: 1,
                voters: 1
            }
        );
        // 5 voters shrunk to 3 while the entry was in flight: committed on 2 of 3 is not enough
        // for min_replicas 3.
        let shrunk = leader(&[&[1, 2, 3]], &[4, 5], &[(1, 8), (2, 8), (3, 2)]);
        assert_eq!(
            replicas(&shrunk, 8, 3),
            Replicas::Short {
                holders: 2,
                voters: 3
            }
        );
        let mut deposed = m.clone();
        deposed.state = ServerState::Follower;
        deposed.replication = None;
        deposed.current_leader = None;
        assert_eq!(replicas(&deposed, 10, 2), Replicas::NotLeader(None));
    }

    #[tokio::test]
    async fn confirmation_waits_for_the_metrics_that_show_enough_holders() {
        let (publish, metrics) = watch::channel(leader(&[&[1, 2, 3]], &[], &[(1, 4), (2, 3)]));
        let deadline = Instant::now() + Duration::from_secs(60);
        let waiting = tokio::spawn(confirm(metrics.clone(), 4, 2, deadline));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        publish.send_replace(leader(&[&[1, 2, 3]], &[], &[(1, 4), (2, 3), (3, 4)]));
        assert_eq!(waiting.await.unwrap(), Ok(()));

        // Never enough: refused at the deadline, saying how many hold it.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            confirm(metrics.clone(), 5, 2, soon).await,
            Err(ProposeError::TooFewReplicas {
                holders: 0,
                voters: 3,
                needed: 2
            })
        );
        // Leadership lost before the confirmation: not acknowledged.
        let mut deposed = leader(&[&[1, 2, 3]], &[], &[]);
        deposed.state = ServerState::Follower;
        deposed.replication = None;
        deposed.current_leader = Some(3);
        publish.send_replace(deposed);
        assert_eq!(
            confirm(metrics, 4, 2, deadline).await,
            Err(ProposeError::NotLeader {
                leader: Some((3, "10.0.0.3:7400".into()))
            })
        );
    }

    #[test]
    fn the_refusals_say_why() {
        let forming = ProposeError::TooFewVoters {
            voters: 1,
            voters_target: 3,
            needed: 2,
            waited_ms: 10_000,
        };
        assert!(
            forming
                .to_string()
                .starts_with("1 of 3 voters; need 2 to acknowledge"),
            "{forming}"
        );
        let short = ProposeError::TooFewReplicas {
            holders: 1,
            voters: 3,
            needed: 2,
        };
        assert!(short.to_string().contains("may still be kept"), "{short}");
    }

    fn proposal(records: usize, bytes_each: usize) -> (Proposal, PendingWrite) {
        let (reply, pending) = oneshot::channel();
        let values = vec![Bytes::from(vec![0u8; bytes_each]); records];
        (Proposal { values, reply }, pending)
    }

    const LIMITS: ProposerLimits = ProposerLimits {
        entry_records_max: 10,
        entry_bytes_max: 1_000,
        entries_in_flight_max: 1,
        queue_depth_max: 16,
        commit_timeout_ms: 1_000,
        min_replicas: 2,
        min_replicas_wait_ms: 10_000,
        voters_target: 3,
    };

    #[test]
    fn a_batch_takes_queued_requests_until_one_does_not_fit_and_carries_that_one() {
        let (tx, mut rx) = mpsc::channel(16);
        let (first, _p0) = proposal(4, 10);
        for (records, bytes) in [(3, 10), (3, 10), (1, 10)] {
            tx.try_send(proposal(records, bytes).0).unwrap();
        }
        let mut batch = vec![first];
        let carried = fill_batch(&mut batch, &mut rx, &LIMITS).expect("the 4th does not fit");
        assert_eq!(batch.iter().map(|p| p.values.len()).sum::<usize>(), 10);
        assert_eq!(
            carried.values.len(),
            1,
            "the request that did not fit is kept, not lost"
        );
    }

    #[test]
    fn the_byte_limit_cuts_a_batch_too() {
        let (tx, mut rx) = mpsc::channel(16);
        let (first, _p0) = proposal(1, 600);
        tx.try_send(proposal(1, 600).0).unwrap();
        let mut batch = vec![first];
        assert!(fill_batch(&mut batch, &mut rx, &LIMITS).is_some());
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn each_request_gets_its_own_dense_range_of_the_entry() {
        let (a, mut pa) = proposal(2, 1);
        let (b, mut pb) = proposal(3, 1);
        answer(vec![(a.reply, 2), (b.reply, 3)], Ok(40));
        assert_eq!(pa.try_recv().unwrap(), Ok(40..42));
        assert_eq!(pb.try_recv().unwrap(), Ok(42..45));
        let (c, mut pc) = proposal(1, 1);
        let refused = ProposeError::NotLeader {
            leader: Some((2, "h:1".into())),
        };
        answer(vec![(c.reply, 1)], Err(refused.clone()));
        assert_eq!(pc.try_recv().unwrap(), Err(refused));
    }
}
