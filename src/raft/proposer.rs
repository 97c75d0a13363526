//! The leader's write path: client records are queued, merged into `ProduceBatch` entries and
//! proposed in queue order, with a few entries in flight so one fills while another is being
//! fsync'd and replicated. A write is acknowledged once its entry is committed (on a majority's
//! disk) and applied by the leader.
//!
//! Not idempotent: when leadership changes while an entry is in flight, its producers get
//! `NotLeader`, yet the entry may still be committed by the next leader. Such a retry can
//! therefore write the records twice (at-least-once; README "Durability contract").

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, Semaphore};

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
    /// A proposed entry not committed within this long is answered with `Timeout`.
    pub commit_timeout_ms: u64,
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
}

impl Proposer {
    pub fn start(raft: Raft, clock: Arc<dyn Clock>, limits: ProposerLimits) -> Proposer {
        assert!(limits.entry_records_max > 0 && limits.entries_in_flight_max > 0);
        let (queue, requests) = mpsc::channel(limits.queue_depth_max.max(1));
        tokio::spawn(propose_loop(raft.clone(), clock, limits, requests));
        Proposer { queue, raft }
    }

    /// Queues `values` (already validated) for the leader's next entry. Refused at once when this
    /// node knows it is not the leader.
    pub async fn submit(&self, values: Vec<Bytes>) -> Result<PendingWrite, ProposeError> {
        assert!(!values.is_empty(), "a write carries at least one record");
        if let Some(not_leader) = self.not_leader() {
            return Err(not_leader);
        }
        let (reply, pending) = oneshot::channel();
        self.queue
            .send(Proposal { values, reply })
            .await
            .map_err(|_| ProposeError::Stopped("the proposer has stopped".into()))?;
        Ok(pending)
    }

    /// `NotLeader` (with the known leader) unless this node is the leader.
    pub fn not_leader(&self) -> Option<ProposeError> {
        // On every write: borrow the metrics, do not clone them.
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
                tokio::spawn(async move {
                    let deadline = std::time::Duration::from_millis(timeout_ms);
                    let result = match tokio::time::timeout(deadline, acked).await {
                        Err(_) => Err(ProposeError::Timeout { timeout_ms }),
                        Ok(Ok(Ok(response))) => Ok(response.data.first_offset),
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
