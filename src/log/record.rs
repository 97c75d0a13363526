//! Records and their on-disk frame.
//!
//! TODO(log helper): frame layout, encode/decode with CRC32C.

use bytes::Bytes;

/// A stored record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub term: u64,
    /// The record's type (the wire's `Record.type`): 0 for client data; Raft uses others.
    pub kind: u32,
    /// Append time, ms since the Unix epoch (non-decreasing along the log).
    pub timestamp_ms: i64,
    pub value: Bytes,
}

/// A record to append: the log assigns its offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub term: u64,
    pub kind: u32,
    pub value: Bytes,
}

impl NewRecord {
    /// A client data record (term 0, kind 0).
    pub fn data(value: impl Into<Bytes>) -> Self {
        NewRecord {
            term: 0,
            kind: 0,
            value: value.into(),
        }
    }
}

/// The frame header's length in bytes.
pub const HEADER_BYTES: usize = 32;

/// The length of the frame holding a value of `value_len` bytes.
pub const fn frame_len(value_len: usize) -> usize {
    HEADER_BYTES + value_len
}
