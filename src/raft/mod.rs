//! Replication: openraft 0.9 over the segmented log (see DESIGN.md in this directory).

pub mod runtime;
pub mod types;

pub use types::{ProduceAck, ProduceBatch, ProducerSeq, TypeConfig};
