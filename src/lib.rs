//! Loghouse: a distributed commit log tested by deterministic simulation.
//!
//! See ARCHITECTURE.md for the map of modules and their invariants.

pub mod bench;
pub mod client;
pub mod config;
pub mod io;
pub mod log;
pub mod membership;
pub mod raft;
pub mod server;

/// Types generated from proto/ (only `server/` and `client/` use them).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("log.v1");

    /// The encoded file descriptor set, for gRPC server reflection (absent in madsim-tonic, which
    /// has no reflection service).
    #[cfg(not(madsim))]
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("log_descriptor");
}
