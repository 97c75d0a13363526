//! Replication: openraft 0.9 over the segmented log (see DESIGN.md in this directory).
//!
//! Invariants: only `store.rs` translates between Raft indexes and client offsets; `raft/`
//! never knows proto types (the gRPC transport lives in `server/`); a write is acknowledged only
//! after its entry is committed on a majority's disk and applied by the leader.

pub mod controller;
pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod runtime;
pub mod state_machine;
pub mod store;
pub mod types;
pub mod vote_guard;

pub use types::{ProduceAck, ProduceBatch, ProducerSeq, TypeConfig};
