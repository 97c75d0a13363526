//! Topics: named logs split into partitions, and the catalog that says which exist.
//!
//! A topic has a [`TopicName`], a partition count fixed at creation (raised later, never
//! lowered) and [`TopicSettings`] overriding the node's defaults. Each partition is one
//! `log::Log`. The default topic ([`DEFAULT_TOPIC`], one partition) always exists: every request
//! naming no topic addresses it, and its partition 0 is the `log/` directory where earlier
//! versions kept their one log, so an existing data directory opens with nothing lost.
//!
//! This module knows files (through `io::Disk`) and nothing of gRPC, Raft or the service.

mod catalog;
mod name;
mod partitioner;

pub use catalog::{Catalog, CatalogError, TopicEntry, CATALOG_FILE, TOPICS_DIR};
pub use name::{TopicName, TopicNameError, DEFAULT_TOPIC, TOPIC_NAME_CHARS_MAX};
pub use partitioner::{murmur2, partition_for_key};

use serde::{Deserialize, Serialize};

/// A topic's own settings: `None` takes the node's default. For the retention limits,
/// `Some(0)` means "no limit" (whatever the node's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    pub segment_bytes_max: Option<u64>,
    pub record_bytes_max: Option<u32>,
}

/// The node's defaults, which a topic's settings override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeDefaults {
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    pub segment_bytes_max: u64,
    pub record_bytes_max: u32,
}

/// The settings in force for a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveSettings {
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    pub segment_bytes_max: u64,
    pub record_bytes_max: u32,
}

impl TopicSettings {
    /// These settings with every field `changes` sets replaced.
    pub fn merged(&self, changes: &TopicSettings) -> TopicSettings {
        TopicSettings {
            retention_bytes_max: changes.retention_bytes_max.or(self.retention_bytes_max),
            retention_ms_max: changes.retention_ms_max.or(self.retention_ms_max),
            segment_bytes_max: changes.segment_bytes_max.or(self.segment_bytes_max),
            record_bytes_max: changes.record_bytes_max.or(self.record_bytes_max),
        }
    }

    pub fn effective(&self, defaults: &NodeDefaults) -> EffectiveSettings {
        let retention = |own: Option<u64>, default: Option<u64>| match own {
            Some(0) => None,
            Some(limit) => Some(limit),
            None => default,
        };
        EffectiveSettings {
            retention_bytes_max: retention(self.retention_bytes_max, defaults.retention_bytes_max),
            retention_ms_max: retention(self.retention_ms_max, defaults.retention_ms_max),
            segment_bytes_max: self.segment_bytes_max.unwrap_or(defaults.segment_bytes_max),
            record_bytes_max: self.record_bytes_max.unwrap_or(defaults.record_bytes_max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_overrides_the_node_and_zero_retention_means_none() {
        let defaults = NodeDefaults {
            retention_bytes_max: Some(1 << 30),
            retention_ms_max: None,
            segment_bytes_max: 64 << 20,
            record_bytes_max: 1 << 20,
        };
        assert_eq!(
            TopicSettings::default().effective(&defaults),
            EffectiveSettings {
                retention_bytes_max: Some(1 << 30),
                retention_ms_max: None,
                segment_bytes_max: 64 << 20,
                record_bytes_max: 1 << 20,
            }
        );
        let own = TopicSettings {
            retention_bytes_max: Some(0),
            retention_ms_max: Some(60_000),
            segment_bytes_max: None,
            record_bytes_max: Some(4096),
        };
        let effective = own.effective(&defaults);
        assert_eq!(effective.retention_bytes_max, None);
        assert_eq!(effective.retention_ms_max, Some(60_000));
        assert_eq!(effective.record_bytes_max, 4096);
        let changed = own.merged(&TopicSettings {
            record_bytes_max: Some(8192),
            ..Default::default()
        });
        assert_eq!(changed.record_bytes_max, Some(8192));
        assert_eq!(changed.retention_ms_max, Some(60_000));
    }
}
