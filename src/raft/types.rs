//! The openraft type configuration and the application data carried by Raft entries.
//!
//! One Normal entry carries a *batch* of client records (`ProduceBatch`): openraft 0.9 waits for
//! every append's flush before it accepts the next, so batching happens above it (DESIGN.md §3.1).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use openraft::BasicNode;

openraft::declare_raft_types!(
    /// Loghouse's Raft types: u64 node ids, a `BasicNode { addr }` holding the gRPC address.
    pub TypeConfig:
        D = ProduceBatch,
        R = ProduceAck,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = crate::raft::runtime::LoghouseRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A batch of client records, proposed as one Raft entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceBatch {
    pub values: Vec<Bytes>,
    /// Stamped by the leader (Clock seam); every replica stores max(this, its last timestamp), so
    /// timestamps agree across replicas and never decrease after a skewed failover.
    pub timestamp_ms: i64,
    /// Set for idempotent producers: the leader refuses duplicates and gaps.
    pub producer: Option<ProducerSeq>,
}

/// An idempotent producer's identity and the sequence number of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerSeq {
    pub id: u64,
    pub seq: u64,
}

/// What applying a Normal entry answers: where its records landed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceAck {
    pub first_offset: u64,
    pub count: u32,
    /// True when the batch repeated a sequence already applied: nothing new was written, and
    /// `first_offset`/`count` describe the original write.
    pub duplicate: bool,
}
