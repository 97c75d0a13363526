//! What the workload saw: every produce and its outcome, every read, every consuming stream, the
//! bit flips the fault schedule injected, the final scan of the log and, in a cluster, what each
//! node's Raft said about terms and leaders and each replica's log after the run. The checker is
//! a pure function of this.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::value::ValueId;

/// Which phase an operation ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Faults on.
    Safety,
    /// Faults off: everything acknowledged must become readable within a bound.
    Liveness,
}

/// The outcome of producing one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceOutcome {
    /// The client got an offset back: the value must be at that offset forever.
    Acked { offset: u64 },
    /// An error status or a timeout: the value may be in the log (at most once) or not at all.
    Maybe { reason: String },
    /// INVALID_ARGUMENT (the record is over the leader's `record_bytes_max`, or the batch over
    /// `limits.batch_records_max`): a clean refusal. On a standalone node the value must never
    /// be stored; in a cluster an earlier attempt of the same call (the client retries an
    /// unknown outcome on the next leader, whose limits may differ) may have been, so it counts
    /// as `Maybe` there.
    Refused { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produce {
    pub id: ValueId,
    pub phase: Phase,
    pub outcome: ProduceOutcome,
}

/// A value as read back: its id, or why it does not decode.
pub type Decoded = Result<ValueId, String>;

/// The outcome of reading one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Value(Decoded),
    /// The server said DATA_LOSS (a record failed its checks).
    DataLoss,
    /// Any other error (out of range, unavailable, timeout): says nothing about the offset.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub node: usize,
    pub offset: u64,
    pub outcome: ReadOutcome,
}

/// One consuming stream from `start`: what it delivered, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSession {
    pub consumer: u32,
    pub node: usize,
    pub start: u64,
    pub delivered: Vec<(u64, Decoded)>,
    /// How it ended (error status, idle, stopped).
    pub end: String,
}

/// A bit flipped in a sealed segment of `node`: offsets in `offsets` may read as DATA_LOSS there.
/// `offsets` is None when the harness could not tell which offsets the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub node: usize,
    pub offsets: Option<Range<u64>>,
}

/// A read of the whole log after the liveness phase.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FinalScan {
    pub node: usize,
    pub lowest_offset: u64,
    /// One past the last committed offset, as the node reported it.
    pub next_offset: u64,
    pub entries: BTreeMap<u64, ReadOutcome>,
    /// The append time of each record read, ms since the epoch (the node's skewed clock).
    pub timestamps_ms: BTreeMap<u64, i64>,
}

/// What one node's Raft reported (its metrics), each time its term, role or known leader changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSample {
    /// The harness's index of the node.
    pub node: usize,
    /// Its Raft node id.
    pub id: u64,
    pub term: u64,
    /// Its state was Leader.
    pub leader: bool,
    /// The leader it knows of in `term` (openraft reports one only once the vote is committed).
    pub current_leader: Option<u64>,
}

/// One record as a replica stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Record {
        id: Decoded,
        /// FNV-1a of the value's bytes: replicas must agree byte for byte.
        digest: u64,
        term: u64,
        timestamp_ms: i64,
    },
    /// The replica answered DATA_LOSS for it.
    DataLoss,
}

/// One replica's whole log, read after the liveness phase (ConsumeBatch on that node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaScan {
    pub node: usize,
    pub lowest_offset: u64,
    /// One past its last committed offset, as it reported when the scan started.
    pub committed: u64,
    /// Offsets in `[lowest_offset, committed)` read back; a missing one could not be read.
    pub entries: BTreeMap<u64, Stored>,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    /// Server nodes in the run (1: a standalone node; more: a Raft cluster).
    pub nodes: usize,
    /// Produces are at-least-once (a cluster client retries a write whose outcome it does not
    /// know on the next leader): a value may then be stored more than once, but an acknowledged
    /// value's extra copies can only precede its acknowledged offset.
    pub at_least_once: bool,
    pub produces: Vec<Produce>,
    pub reads: Vec<Read>,
    pub sessions: Vec<StreamSession>,
    pub flips: Vec<Flip>,
    pub final_scan: Option<FinalScan>,
    /// Every change of a node's (term, role, known leader), in a cluster.
    pub raft_samples: Vec<RaftSample>,
    /// Every replica's log after the liveness phase, in a cluster.
    pub replicas: Vec<ReplicaScan>,
    /// Bounds the liveness phase missed, in words.
    pub liveness_failures: Vec<String>,
    /// Nodes that ran with a retention limit at some time (config drift): their logs may have
    /// dropped their oldest segments, so offsets below a scan's lowest offset are excused there.
    pub retention_nodes: std::collections::BTreeSet<usize>,
    /// The named topics' workload (standalone only), in the order it happened.
    pub topics: Vec<TopicEvent>,
}

impl History {
    /// Whether a bit flip on `node` may have damaged `offset`.
    pub fn flipped(&self, node: usize, offset: u64) -> bool {
        self.flips.iter().any(|f| {
            f.node == node
                && f.offsets
                    .as_ref()
                    .is_none_or(|range| range.contains(&offset))
        })
    }

    pub fn acked(&self) -> impl Iterator<Item = (ValueId, u64)> + '_ {
        self.produces.iter().filter_map(|p| match p.outcome {
            ProduceOutcome::Acked { offset } => Some((p.id, offset)),
            ProduceOutcome::Maybe { .. } | ProduceOutcome::Refused { .. } => None,
        })
    }

    /// The values a produce call was refused (INVALID_ARGUMENT).
    pub fn refused(&self) -> impl Iterator<Item = ValueId> + '_ {
        (self.produces.iter())
            .filter(|p| matches!(p.outcome, ProduceOutcome::Refused { .. }))
            .map(|p| p.id)
    }

    /// Whether `offset` is below `lowest` on a node that ran with retention (it may have been
    /// dropped by retention's rules).
    pub fn retained_away(&self, node: usize, lowest: u64, offset: u64) -> bool {
        offset < lowest && self.retention_nodes.contains(&node)
    }

    /// One past the highest acknowledged offset (0 when nothing was acknowledged).
    pub fn acked_end(&self) -> u64 {
        self.acked()
            .map(|(_, offset)| offset + 1)
            .max()
            .unwrap_or(0)
    }
}

/// One incarnation of a named topic: the harness numbers each CreateTopic it decides on (its
/// retries share the number). A re-created topic is a new incarnation and starts empty.
pub type Incarnation = u64;

/// How an admin call (create, delete, alter) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// Answered OK (for a delete also NOT_FOUND: the topic is gone either way).
    Acked,
    /// An error or a timeout: it may or may not have happened.
    Maybe(String),
    /// A clean refusal (e.g. INVALID_ARGUMENT): nothing happened.
    Refused(String),
}

/// The outcome of one produce call to a named topic (one value or a batch, one partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicProduceOutcome {
    /// The values are at `first..first + values.len()` of `partition`.
    Acked {
        partition: u32,
        first: u64,
    },
    Maybe(String),
    Refused(String),
}

/// What a read of a named topic's partition returned (the node is the standalone node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRead {
    pub name: String,
    pub incarnation: Incarnation,
    pub partition: u32,
    pub offset: u64,
    pub outcome: ReadOutcome,
}

/// One partition of a named topic, read whole after the liveness phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicScan {
    pub name: String,
    pub incarnation: Incarnation,
    pub partition: u32,
    pub lowest_offset: u64,
    /// One past the last offset, as DescribeTopic reported it.
    pub next_offset: u64,
    pub entries: BTreeMap<u64, ReadOutcome>,
}

/// The named-topic workload's events, in the order they happened (one task runs them all, one
/// at a time, so the order is real time's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicEvent {
    Create {
        name: String,
        incarnation: Incarnation,
        partitions: u32,
        outcome: AdminOutcome,
    },
    Delete {
        name: String,
        outcome: AdminOutcome,
    },
    /// Raise the partition count to `partitions`.
    Alter {
        name: String,
        partitions: u32,
        outcome: AdminOutcome,
    },
    /// DescribeTopic answered: None for NOT_FOUND, else the topic's partition count and how
    /// many partitions it described.
    Describe {
        name: String,
        found: Option<(u32, u32)>,
    },
    /// ListTopics answered: every named topic and its partition count.
    List {
        topics: BTreeMap<String, u32>,
    },
    Produce {
        name: String,
        /// The incarnation the workload believed in force (it resolves every unknown outcome
        /// before it produces again).
        incarnation: Incarnation,
        /// The key sent (empty: none).
        key: Vec<u8>,
        /// The partition the call named, if any.
        partition: Option<u32>,
        values: Vec<ValueId>,
        outcome: TopicProduceOutcome,
    },
    Read(TopicRead),
    Scan(TopicScan),
}
