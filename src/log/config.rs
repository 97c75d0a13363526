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

/// Configuration of one log. `LogConfig::new(dir)` gives production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory holding the segment files.
    pub dir: PathBuf,
    /// A segment's store file rolls once it holds this many bytes.
    pub segment_bytes_max: u64,
    /// A segment's index file is pre-grown to this size; the segment rolls once it is full.
    pub index_bytes_max: u64,
    /// The largest record value accepted, in bytes.
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
}

pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
pub const INDEX_BYTES_MAX_DEFAULT: u64 = 10 * 1024 * 1024;
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 1024 * 1024;
/// Hard upper bound on `record_bytes_max` (frames carry a u32 length).
pub const RECORD_BYTES_LIMIT: u32 = 64 * 1024 * 1024;

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
        }
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
        let entry = super::index::ENTRY_BYTES;
        if self.index_bytes_max < entry
            || self.index_bytes_max % entry != 0
            || self.index_bytes_max > 1 << 30
        {
            return invalid(format!(
                "index_bytes_max = {} must be a multiple of {entry} between {entry} and 1 GiB",
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
