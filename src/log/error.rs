//! The storage engine's errors.

use std::path::PathBuf;

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
