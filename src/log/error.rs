//! The storage engine's errors.

use std::path::PathBuf;

use super::segment::TailCut;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is out of range: the log holds offsets [{lowest}, {next})")]
    OffsetOutOfRange { offset: u64, lowest: u64, next: u64 },
    #[error("record of {len} bytes is larger than the limit of {max} bytes")]
    RecordTooLarge { len: u64, max: u32 },
    #[error("an append needs at least one record")]
    BatchEmpty,
    #[error("corrupt record in {} at position {position}: {reason}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        reason: String,
    },
    /// Open found a bad frame followed by valid ones at the end of the last segment (corruption,
    /// not a torn write) and `LogConfig::corrupt_tail` says refuse: nothing was changed. `cut`
    /// says what cutting it would drop.
    #[error(
        "corrupt record in {} at position {}: {reason}. Cutting it would drop {} bytes from \
         position {} (records {} to {}); to do that, open the log with corrupt_tail = cut",
        segment.display(), cut.position, cut.bytes_dropped, cut.position, cut.first_dropped,
        cut.first_dropped + cut.records_dropped.max(1) - 1
    )]
    CorruptTail {
        segment: PathBuf,
        reason: String,
        cut: Box<TailCut>,
    },
    #[error("the log refuses writes after an earlier failure ({cause}); reopen it")]
    Poisoned { cause: String },
    #[error("append at offset {got} does not follow the log's next offset {expected}")]
    NonContiguous { expected: u64, got: u64 },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    #[error("the log is closed")]
    Closed,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    /// Wraps an I/O error with what was being done, e.g. `io("sync /data/00000.store", e)`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            source,
        }
    }
}
