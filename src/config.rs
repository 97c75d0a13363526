//! Node configuration: every limit in one place, validated at start-up.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file (`--config`), then
//! `LOGHOUSE_*` environment variables and command-line flags (merged by `main`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::log::{LogConfig, SyncPolicy};

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7400";
pub const DATA_DIR_DEFAULT: &str = "loghouse-data";

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `always` (default), `interval:MS` or `never`.
    pub sync: String,
    pub segment_bytes_max: u64,
    pub index_bytes_max: u64,
    pub record_bytes_max: u32,
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    pub limits: Limits,
}

/// Server-side limits. Requests beyond them get INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message accepted or sent, in bytes.
    pub message_bytes_max: usize,
    /// Most records in one ProduceBatch request.
    pub batch_records_max: usize,
    /// Most records returned by one ConsumeBatch (and the default when a request says 0).
    pub consume_records_max: u32,
    /// Most bytes returned by one ConsumeBatch (and the default when a request says 0).
    pub consume_bytes_max: u64,
    /// Concurrent ConsumeStream/ConsumeBatchStream/ProduceStream calls per node.
    pub streams_max: usize,
    /// Produce requests queued for the group-commit writer before producers wait.
    pub append_queue_depth_max: usize,
    /// Appends in flight per ProduceStream before the server stops reading that stream.
    pub stream_appends_in_flight_max: usize,
    /// Responses buffered per consuming stream before the server waits for the client.
    pub stream_buffer_messages_max: usize,
    /// Bytes of responses buffered per consuming stream (bounds memory with large batches):
    /// a stream buffers at most this much, and at least one message.
    pub stream_buffer_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: 8 * 1024 * 1024,
            batch_records_max: 10_000,
            consume_records_max: 10_000,
            consume_bytes_max: 4 * 1024 * 1024,
            streams_max: 1024,
            append_queue_depth_max: 4096,
            stream_appends_in_flight_max: 256,
            stream_buffer_messages_max: 64,
            stream_buffer_bytes_max: 8 * 1024 * 1024,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        let log = LogConfig::new(DATA_DIR_DEFAULT);
        NodeConfig {
            node_id: "node-0".into(),
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: LISTEN_DEFAULT
                .parse()
                .expect("default listen address parses"),
            sync: log.sync.to_string(),
            segment_bytes_max: log.segment_bytes_max,
            index_bytes_max: log.index_bytes_max,
            record_bytes_max: log.record_bytes_max,
            retention_bytes_max: None,
            retention_ms_max: None,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Reads a TOML file; keys it does not set keep their defaults.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The storage engine's configuration (validated).
    pub fn log_config(&self) -> Result<LogConfig, ConfigError> {
        let sync: SyncPolicy = self.sync.parse().map_err(ConfigError::Invalid)?;
        let config = LogConfig {
            dir: self.data_dir.join("log"),
            segment_bytes_max: self.segment_bytes_max,
            index_bytes_max: self.index_bytes_max,
            record_bytes_max: self.record_bytes_max,
            initial_offset: 0,
            sync,
            retention_bytes_max: self.retention_bytes_max,
            retention_ms_max: self.retention_ms_max,
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }

    /// Checks every setting; the error names the setting and what it accepts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log_config()?;
        self.limits.validate(self.record_bytes_max)?;
        if self.node_id.is_empty() {
            return Err(ConfigError::Invalid("node_id must not be empty".into()));
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self, record_bytes_max: u32) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        // A produce request carries one record plus a few bytes of framing.
        let record_message_bytes = record_bytes_max as usize + 1024;
        if self.message_bytes_max < record_message_bytes || self.message_bytes_max > 256 << 20 {
            return invalid(format!(
                "limits.message_bytes_max = {} must be at least record_bytes_max + 1 KiB ({record_message_bytes}) \
                 and at most 256 MiB",
                self.message_bytes_max
            ));
        }
        let checks: [(&str, u64, u64); 8] = [
            (
                "batch_records_max",
                self.batch_records_max as u64,
                1_000_000,
            ),
            (
                "consume_records_max",
                self.consume_records_max as u64,
                1_000_000,
            ),
            (
                "consume_bytes_max",
                self.consume_bytes_max,
                self.message_bytes_max as u64,
            ),
            ("streams_max", self.streams_max as u64, 1_000_000),
            (
                "append_queue_depth_max",
                self.append_queue_depth_max as u64,
                1_000_000,
            ),
            (
                "stream_appends_in_flight_max",
                self.stream_appends_in_flight_max as u64,
                65_536,
            ),
            (
                "stream_buffer_messages_max",
                self.stream_buffer_messages_max as u64,
                65_536,
            ),
            (
                "stream_buffer_bytes_max",
                self.stream_buffer_bytes_max,
                1 << 30,
            ),
        ];
        for (name, value, max) in checks {
            if value == 0 || value > max {
                return invalid(format!("limits.{name} = {value} must be in 1..={max}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config: NodeConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nstreams_max = 7\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.streams_max, 7);
        assert_eq!(
            config.limits.batch_records_max,
            Limits::default().batch_records_max
        );
        assert_eq!(config.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_key_named() {
        assert!(toml::from_str::<NodeConfig>("listn = \"x\"").is_err());
        let mut config = NodeConfig::default();
        config.limits.streams_max = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.streams_max"), "{err}");
        let config = NodeConfig {
            sync: "sometimes".into(),
            ..NodeConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        let mut config = NodeConfig::default();
        config.limits.message_bytes_max = 1000;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("message_bytes_max"));
    }
}
