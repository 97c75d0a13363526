//! TODO(log helper): the memory-mapped index.

/// Bytes per index entry.
pub const ENTRY_BYTES: u64 = 16;
