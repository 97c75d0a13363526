//! The storage engine: a crash-safe segmented log behind the disk seam.
//!
//! A log is a list of segments; each segment is a store file (framed records, see `record`) and
//! an index file (fixed-width entries, memory-mapped through the disk seam) named by the
//! segment's base offset. Offsets are dense. See ARCHITECTURE.md for the on-disk format and the
//! invariants; `commit` holds the group-commit writer that async callers append through.
//!
//! On disk (all little-endian):
//! - `<base, 20 digits>.store`: frames back to back. A frame is a 40-byte header (`len u32` =
//!   bytes after the crc field, `crc32c u32` over those bytes, `offset u64`, `term u64`,
//!   `timestamp_ms i64`, `kind u32`, `flags u32` = 0) and the value. See `record`.
//! - `<base>.index`: 16-byte entries (`position u64`, `timestamp_ms i64`), entry `i` for offset
//!   `base + i`. The active segment's index is pre-grown to `index_bytes_max` and mapped; a
//!   sealed one (rolled, or closed) is truncated to its entries and synced.
//! - Timestamps are clamped non-decreasing along the log, so time lookups binary-search.
//!
//! Durability and recovery:
//! - A segment's store is fsync'd and its index sealed before the next segment is created, and
//!   the directory is synced after every creation and removal; so only the last segment can have
//!   a torn tail.
//! - Open trusts an index without a scan when it is a whole number of entries, shorter than the
//!   pre-grown size if it is the last segment, starts at position 0, and its last entry's frame
//!   header names the right offset and timestamp and ends exactly at the store's end. Otherwise
//!   it scans the store in 1 MiB chunks (length, CRC, dense offsets), cuts the last segment's
//!   store at the first bad frame and rebuilds the index. A bad frame inside a sealed segment,
//!   or a gap between segments, makes open fail with `Corrupt` instead of guessing.
//! - An index without a store is removed; files that are not named like segments are ignored.
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
pub use log::{Log, LogInfo, OpenReport};
pub use record::{NewRecord, Record};
