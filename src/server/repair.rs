//! `loghouse repair`: an operator's explicit cut of a standalone node's corrupt log tail.
//!
//! A standalone node refuses to open a log whose last segment ends in corruption (a bad frame
//! followed by valid ones: bytes that may have been acknowledged), naming the segment, the
//! position and what a cut would drop (`NodeError::CorruptTail`). This opens that log once with
//! `CorruptTail::Cut`, closes it cleanly, and reports what went. A cluster member's data
//! directory is refused: a member cuts such a tail itself when it starts and gets the entries
//! back from its peers (`raft::store::repair`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{ConfigError, NodeConfig};
use crate::io::{Clock, Disk};
use crate::log::{CorruptTail, Log, LogError, TailCut};

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(
        "{} is a cluster member's data directory (it holds {}): a member repairs its own log \
         when it starts, cutting a damaged tail and getting those entries back from its peers. \
         Start it with `loghouse serve` as usual; `loghouse repair` is for standalone nodes",
        data_dir.display(), raft_dir.display()
    )]
    Member {
        data_dir: PathBuf,
        raft_dir: PathBuf,
    },
    #[error(
        "no log in {}: expected {} (is --data-dir the node's data directory?)",
        data_dir.display(), log_dir.display()
    )]
    NoLog { data_dir: PathBuf, log_dir: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] crate::topic::CatalogError),
    #[error("topic \"{topic}\" has no partition {partition} in {} (its catalog lists: {listed})", data_dir.display())]
    NoPartition {
        data_dir: PathBuf,
        topic: String,
        partition: u32,
        listed: String,
    },
    #[error("cannot repair the log in {}: {source}", log_dir.display())]
    Log {
        log_dir: PathBuf,
        #[source]
        source: LogError,
    },
}

/// What `repair_standalone` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The log's directory (`<data_dir>/log`).
    pub log_dir: PathBuf,
    /// What was cut off the last segment (None: its tail was whole), and that segment's store.
    pub cut: Option<(PathBuf, TailCut)>,
    /// The offsets the log holds now: `lowest_offset..next_offset`.
    pub lowest_offset: u64,
    pub next_offset: u64,
}

/// Where partition `p` of `topic` lives, by the catalog of `data_dir`.
fn partition_dir(
    disk: Arc<dyn Disk>,
    data_dir: &Path,
    topic: &str,
    p: u32,
) -> Result<PathBuf, RepairError> {
    let (catalog, _) = crate::topic::Catalog::open(disk, data_dir)?;
    let entry = (catalog.topics().iter()).find(|t| t.name.as_str() == topic && p < t.partitions);
    match entry {
        Some(entry) => Ok(catalog.partition_dir(entry, p)),
        None => Err(RepairError::NoPartition {
            data_dir: data_dir.to_owned(),
            topic: topic.to_owned(),
            partition: p,
            listed: (catalog.topics().iter())
                .map(|t| format!("{} ({} partitions)", t.name, t.partitions))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Opens a standalone node's log under `data_dir` with `CorruptTail::Cut` (which also cuts a
/// torn tail, as any open does), then closes it cleanly: the default topic's partition 0, or
/// `partition` (a topic's name and a partition number, found in the topic catalog). The node
/// must not be running.
pub fn repair_standalone(
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    data_dir: &Path,
    partition: Option<(&str, u32)>,
) -> Result<Repaired, RepairError> {
    let raft_dir = data_dir.join("raft");
    if disk.exists(&raft_dir) {
        return Err(RepairError::Member {
            data_dir: data_dir.to_owned(),
            raft_dir,
        });
    }
    let config = NodeConfig {
        data_dir: data_dir.to_owned(),
        ..NodeConfig::default()
    };
    let mut log_config = config.log_config()?;
    if let Some((topic, p)) = partition {
        log_config.dir = partition_dir(disk.clone(), data_dir, topic, p)?;
    }
    let log_dir = log_config.dir.clone();
    if !disk.exists(&log_dir) {
        return Err(RepairError::NoLog {
            data_dir: data_dir.to_owned(),
            log_dir,
        });
    }
    log_config.corrupt_tail = CorruptTail::Cut;
    let failed = |source| RepairError::Log {
        log_dir: log_dir.clone(),
        source,
    };
    let log = Log::open(disk, clock, log_config).map_err(failed)?;
    let cut = (log.open_report().tail_cut)
        .map(|cut| (crate::log::store_path(&log_dir, cut.segment_base), cut));
    let (lowest_offset, next_offset) = (log.lowest_offset(), log.next_offset());
    log.close().map_err(failed)?;
    Ok(Repaired {
        log_dir,
        cut,
        lowest_offset,
        next_offset,
    })
}
