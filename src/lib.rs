//! Loghouse: a distributed commit log tested by deterministic simulation.
//!
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod bench;
pub mod client;
#[cfg(not(madsim))]
pub mod codec;
pub mod config;
pub mod io;
pub mod log;
pub mod membership;
pub mod metrics;
/// Switches that bring back old bugs, for the simulation's `--bug` checks (madsim builds only).
#[cfg(madsim)]
pub mod planted_bugs;
pub mod raft;
pub mod security;
pub mod server;
pub mod topic;

/// Types generated from proto/ (only `server/` and `client/` use them).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("log.v1");

    /// The encoded file descriptor set, for gRPC server reflection (absent in madsim-tonic, which
    /// has no reflection service).
    #[cfg(not(madsim))]
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("log_descriptor");

    /// On a follower's UNAVAILABLE answer to a write: the leader's node id and gRPC address.
    pub const LEADER_ID_KEY: &str = "loghouse-leader-id";
    pub const LEADER_ADDR_KEY: &str = "loghouse-leader-addr";
    /// On a FAILED_PRECONDITION answer to a write from a node whose log stopped accepting
    /// writes after a failed write or fsync: the cause. Retrying does not help; the node must
    /// be restarted.
    pub const WRITES_STOPPED_KEY: &str = "loghouse-writes-stopped";

    /// The members-only Raft transport (payloads are postcard-encoded openraft messages).
    pub mod raft {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("raft.v1");
    }
}
