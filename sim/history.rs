//! What the workload saw: every produce and its outcome, every read, every consuming stream, the
//! bit flips the fault schedule injected, and the final scan of the log. The checker is a pure
//! function of this.

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

#[derive(Debug, Clone, Default)]
pub struct History {
    pub produces: Vec<Produce>,
    pub reads: Vec<Read>,
    pub sessions: Vec<StreamSession>,
    pub flips: Vec<Flip>,
    pub final_scan: Option<FinalScan>,
    /// Bounds the liveness phase missed, in words.
    pub liveness_failures: Vec<String>,
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
            ProduceOutcome::Maybe { .. } => None,
        })
    }

    /// One past the highest acknowledged offset (0 when nothing was acknowledged).
    pub fn acked_end(&self) -> u64 {
        self.acked()
            .map(|(_, offset)| offset + 1)
            .max()
            .unwrap_or(0)
    }
}
