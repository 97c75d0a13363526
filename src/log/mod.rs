//! The storage engine: a crash-safe segmented log behind the disk seam.
//!
//! A log is a list of segments; each segment is a store file (framed records, see `record`) and
//! an index file (fixed-width checksummed entries, memory-mapped through the disk seam) named by
//! the segment's base offset. Offsets are dense. See ARCHITECTURE.md for the on-disk format and
//! the invariants; `commit` holds the group-commit writer that async callers append through (one
//! writer task for every log of a node: `Committer::start_shared`).
//!
//! On disk (all little-endian):
//! - `<base, 20 digits>.store`: frames back to back. A frame is a 40-byte header (`len u32` =
//!   bytes after the crc field, `crc32c u32` over those bytes, `offset u64`, `term u64`,
//!   `timestamp_ms i64`, `kind u32`, `flags u32` = 0) and the value. See `record`. A value is at
//!   most `RECORD_BYTES_LIMIT` (64 MiB), the format's hard limit; the configured
//!   `record_bytes_max` bounds only what clients append.
//! - `<base>.index2` (index format 2): 24-byte entries (`position u64`, `timestamp_ms i64`,
//!   `crc32c u32` over those 16 bytes and the entry's offset, `reserved u32` = 0), entry `i` for
//!   offset `base + i`. The active segment's index is pre-grown in steps (1,024 entries,
//!   doubling up to `max(1, index_bytes_max / 24)`; extended with zeros and mapped anew) and
//!   mapped; a sealed one (rolled, or closed) is truncated to its entries and
//!   ends with a 24-byte seal trailer (`entries u64`, `base u64`, `checksum u32` = CRC32C of
//!   every entry and the trailer's first 16 bytes, `"LHS2"`), then synced. See `index`.
//! - `<base>.index` (index format 1, written before format 2: 16-byte entries, no checksum) is
//!   never trusted: open rebuilds a format-2 index from the store and removes the old file
//!   once the new one and the directory are synced. The store format did not change, so a
//!   directory written by an older version opens with nothing lost.
//! - Timestamps are clamped non-decreasing along the log, so time lookups binary-search.
//!
//! Durability and recovery:
//! - A segment's store is fsync'd and its index sealed before the next segment is created, and
//!   the directory is synced after every creation and removal; so only the last segment can have
//!   a torn tail.
//! - Open trusts an index without a scan only when it is sealed (a valid trailer), its checksum
//!   covers every entry (one bulk CRC), positions and timestamps are ordered, and the last entry's frame header
//!   names the right offset and timestamp and ends exactly at the store's end. Otherwise it scans
//!   the store (1 MiB chunks, a larger frame read whole; length against the hard limit, CRC,
//!   dense offsets) and rebuilds the index, sealed or not.
//! - What follows the last valid frame of the last segment is judged, never assumed: nothing
//!   valid after it is a torn tail (cut); zeros where the bad frame starts, then valid frames,
//!   is unwritten space with unsynced writes after it (cut); a bad frame followed by a valid
//!   frame is corruption: open fails with `CorruptTail` naming the file and position (and what a
//!   cut would drop), unless `LogConfig::corrupt_tail` is `Cut`. Every cut is logged at WARN and
//!   reported in `OpenReport::tail_cut`; `Log::open_before_cut` runs a caller's hook before any
//!   cut is made. A bad frame inside a sealed segment opens it damaged (those offsets
//!   read as `Corrupt`); a gap between segments makes open fail with `Corrupt`.
//! - Whenever open had to scan the last segment (an unclean stop: a crash, a kill, or a log
//!   poisoned by a failed write or fsync, whose close does not seal), it writes the valid bytes
//!   it kept again, in place, and fsyncs them before the log is used: after a failed fsync Linux
//!   may drop dirty pages that still read back fine, so only bytes that reached the disk or were
//!   rewritten and synced are trusted.
//! - An index without a store is removed; files that are not named like segments are ignored.
//!
//! Invariants (asserted, and checked by the model tests):
//! - log/ never touches the network and never reaches a file except through `io::Disk`.
//! - offsets are dense: the records readable are exactly `lowest_offset()..next_offset()`.
//! - a record that fails its CRC or length check is never returned; an index entry that fails
//!   its checksum is never used (time lookups answer `Corrupt`, retention keeps the segment).
//! - after a failed write or sync the log refuses appends (`LogError::Poisoned`) until reopened.
//! - no fsync, msync, resize or unlink is done while holding the lock readers need, except by
//!   `truncate_from` and `reset` (see `log.rs` for the lock order).

pub mod commit;
pub mod config;
mod error;
mod index;
mod limits;
#[allow(clippy::module_inception)]
mod log;
pub mod record;
mod segment;

pub use commit::{Committer, CommitterHandle, PendingAppend, SharedCommitter};
pub use config::{CorruptTail, LogConfig, SyncPolicy, RECORD_BYTES_LIMIT};
pub use error::LogError;
pub use index::ENTRY_BYTES as INDEX_ENTRY_BYTES;
pub use limits::raise_open_file_limit;
pub use log::{Log, LogInfo, OpenReport};
pub use record::{NewRecord, Record};
pub use segment::{FrameId, TailCut, TailKind};

/// The store file of the segment starting at `base` in the log directory `dir`.
pub fn store_path(dir: &std::path::Path, base: u64) -> std::path::PathBuf {
    dir.join(segment::file_name(base, segment::FileKind::Store))
}
