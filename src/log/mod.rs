//! The storage engine: a crash-safe segmented log behind the disk seam.
//!
//! A log is a list of segments; each segment is a store file (framed records, see `record`) and
//! an index file (fixed-width entries, memory-mapped through the disk seam) named by the
//! segment's base offset. Offsets are dense. See ARCHITECTURE.md for the on-disk format and the
//! invariants; `commit` holds the group-commit writer that async callers append through.
//!
//! Invariants (asserted, and checked by the model tests):
//! - log/ never touches the network and never reaches a file except through `io::Disk`.
//! - offsets are dense: the records readable are exactly `lowest_offset()..next_offset()`.
//! - a record that fails its CRC or length check is never returned.
//! - after a failed write or sync the log refuses appends (`LogError::Poisoned`) until reopened.

pub mod commit;
mod config;
mod error;
mod index;
#[allow(clippy::module_inception)]
mod log;
pub mod record;
mod segment;

pub use commit::{Committer, CommitterHandle, PendingAppend};
pub use config::{LogConfig, SyncPolicy};
pub use error::LogError;
pub use log::{Log, LogInfo};
pub use record::{NewRecord, Record};
