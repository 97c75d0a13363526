//! Storage-engine configuration and its validation.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::error::LogError;
use crate::metrics::LogMetrics;

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// An append is acknowledged only after its bytes are fsync'd. Concurrent appenders share one
    /// fsync (group commit). The default.
    #[default]
    Always,
    /// Acknowledge after the write; fsync at most every `interval_ms`. A crash (power loss) can
    /// lose the acknowledged records of the last interval.
    Interval { interval_ms: u64 },
    /// Never fsync (the OS writes back when it likes). For benchmarks and tests only: a power loss
    /// can lose any acknowledged record not yet written back.
    Never,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::Interval { interval_ms } => write!(f, "interval:{interval_ms}"),
            SyncPolicy::Never => write!(f, "never"),
        }
    }
}

impl FromStr for SyncPolicy {
    type Err = String;

    /// Parses `always`, `never` or `interval:MS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "never" => Ok(SyncPolicy::Never),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(interval_ms)) if interval_ms > 0 => Ok(SyncPolicy::Interval { interval_ms }),
                _ => Err(format!(
                    "invalid sync policy {s:?}: expected `always`, `never` or `interval:MS` with MS > 0"
                )),
            },
        }
    }
}

/// What `Log::open` does when the last segment's tail is corrupt rather than torn: a bad frame
/// followed by valid ones (a torn write leaves nothing valid after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptTail {
    /// Refuse to open (`LogError::CorruptTail` naming the segment and position): an operator
    /// decides. The default.
    #[default]
    Refuse,
    /// Cut it (logged at WARN, reported in `OpenReport::tail_cut`), like a torn tail. For a
    /// replica that gets the records back from its peers, or an operator who chose to.
    Cut,
}

impl fmt::Display for CorruptTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptTail::Refuse => write!(f, "refuse"),
            CorruptTail::Cut => write!(f, "cut"),
        }
    }
}

impl FromStr for CorruptTail {
    type Err = String;

    /// Parses `refuse` or `cut`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(CorruptTail::Refuse),
            "cut" => Ok(CorruptTail::Cut),
            _ => Err(format!(
                "invalid corrupt tail policy {s:?}: expected `refuse` or `cut`"
            )),
        }
    }
}

/// Configuration of one log. `LogConfig::new(dir)` gives production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory holding the segment files.
    pub dir: PathBuf,
    /// A segment's store file rolls once it holds this many bytes.
    pub segment_bytes_max: u64,
    /// A segment's index file grows (doubling from 1,024 entries) to at most this size: it
    /// holds `max(1, index_bytes_max / 24)` entries (24-byte entries), and the segment rolls
    /// once it is full.
    pub index_bytes_max: u64,
    /// The largest record value a client may append (`append`, `validate`), in bytes. Records
    /// read from disk and replicated appends (`append_at`, `append_batch_at`) are bounded by the
    /// format's limit, `RECORD_BYTES_LIMIT`, only: lowering this never hides what is stored.
    pub record_bytes_max: u32,
    /// The offset of the first record of a new, empty log.
    pub initial_offset: u64,
    pub sync: SyncPolicy,
    /// Drop the oldest segments while the log holds more than this many bytes (None: keep all).
    pub retention_bytes_max: Option<u64>,
    /// Drop segments whose newest record is older than this (None: keep all).
    pub retention_ms_max: Option<u64>,
    /// Where the log counts its fsyncs and their latency (None: not counted). How the figures
    /// are exported is not the log's business.
    pub metrics: Option<Arc<LogMetrics>>,
    /// What open does with a corrupt (not torn) tail of the last segment.
    pub corrupt_tail: CorruptTail,
}

pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
pub const INDEX_BYTES_MAX_DEFAULT: u64 = 10 * 1024 * 1024;
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;
/// The format's hard limit on a record's value, in bytes: every frame read from disk is judged
/// by it (never by the configured `record_bytes_max`, which may have changed since the frame
/// was written), and `record_bytes_max` may not exceed it.
pub const RECORD_BYTES_LIMIT: u32 = 64 * 1024 * 1024;
/// The smallest `index_bytes_max` accepted (one format-1 entry, the smallest ever accepted):
/// below one 24-byte entry, a segment still gets one.
pub const INDEX_BYTES_MIN: u64 = super::index::V1_ENTRY_BYTES;

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            index_bytes_max: INDEX_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            initial_offset: 0,
            sync: SyncPolicy::Always,
            retention_bytes_max: None,
            retention_ms_max: None,
            metrics: None,
            corrupt_tail: CorruptTail::Refuse,
        }
    }

    /// Index entries per segment: `index_bytes_max / 24`, at least one.
    pub fn index_entries_max(&self) -> u64 {
        (self.index_bytes_max / super::index::ENTRY_BYTES).max(1)
    }

    /// Checks every limit; the error names the setting and the accepted range.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |msg: String| Err(LogError::InvalidConfig(msg));
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_BYTES_LIMIT {
            return invalid(format!(
                "record_bytes_max = {} must be in 1..={RECORD_BYTES_LIMIT}",
                self.record_bytes_max
            ));
        }
        let frame_max = super::record::frame_len(self.record_bytes_max as usize) as u64;
        if self.segment_bytes_max < frame_max || self.segment_bytes_max > u32::MAX as u64 * 4 {
            return invalid(format!(
                "segment_bytes_max = {} must be at least one largest record frame ({frame_max} bytes) \
                 and at most 16 GiB",
                self.segment_bytes_max
            ));
        }
        if self.index_bytes_max < INDEX_BYTES_MIN || self.index_bytes_max > 1 << 30 {
            return invalid(format!(
                "index_bytes_max = {} must be between {INDEX_BYTES_MIN} and 1 GiB (24 bytes per \
                 entry, at least one entry)",
                self.index_bytes_max
            ));
        }
        if let SyncPolicy::Interval { interval_ms: 0 } = self.sync {
            return invalid("sync interval must be > 0 ms".into());
        }
        if self.retention_bytes_max == Some(0) || self.retention_ms_max == Some(0) {
            return invalid("retention limits must be > 0 (omit them to keep everything)".into());
        }
        Ok(())
    }
}
