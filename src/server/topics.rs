//! The node's topics: each topic's partitions, opened from the catalog at start-up, and the
//! admin operations (create, alter, delete) that change them.
//!
//! Locks: `admin` (async, held for a whole admin operation, so they run one at a time), then
//! `catalog`, then `live` (a `Topic`'s own locks after it). Readers (every produce and consume)
//! take only `live` and a topic's `partitions`, briefly, for reading.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::node::NodeError;
use super::partition::{LocalPartition, Partition};
use crate::config::NodeConfig;
use crate::io::{Clock, Disk};
use crate::log::{Committer, Log, LogConfig, LogError, SharedCommitter};
use crate::metrics::NodeMetrics;
use crate::raft::store::off_thread;
use crate::topic::{
    partition_for_key, Catalog, CatalogError, EffectiveSettings, NodeDefaults, TopicEntry,
    TopicName, TopicNameError, TopicSettings,
};

/// Names listed in a NOT_FOUND message, at most.
const NAMES_IN_MESSAGE_MAX: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {name:?} does not exist; topics: {existing}")]
    NotFound { name: String, existing: String },
    #[error("topic \"{topic}\" has no partition {partition}: it has partitions 0 to {}", count - 1)]
    PartitionNotFound {
        topic: TopicName,
        partition: u32,
        count: u32,
    },
    #[error("topic \"{name}\" already exists with other settings ({existing})")]
    AlreadyExists { name: TopicName, existing: String },
    #[error("{0}")]
    InvalidName(#[from] TopicNameError),
    #[error("invalid topic setting: {0}")]
    InvalidSetting(String),
    #[error("topic \"{topic}\" has {current} partitions: a partition count can be raised, never lowered (asked for {asked})")]
    PartitionsLowered {
        topic: TopicName,
        current: u32,
        asked: u32,
    },
    #[error("{what}: the node's limit is {limit} (limits.{setting})")]
    LimitReached {
        what: String,
        limit: u32,
        setting: &'static str,
    },
    #[error("the default topic cannot be deleted")]
    DefaultTopic,
    #[error("{0}: a cluster member serves only the default topic until replicated topics are built (each partition its own Raft group)")]
    NotReplicated(&'static str),
    #[error("the node is shutting down: {0}")]
    Cancelled(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// One topic: its partitions and settings.
#[derive(Debug)]
pub struct Topic {
    pub id: u64,
    pub name: TopicName,
    settings: RwLock<TopicSettings>,
    partitions: RwLock<Vec<Arc<dyn Partition>>>,
    /// Spreads produces that name neither partition nor key.
    round_robin: AtomicU64,
}

impl Topic {
    fn new(entry: &TopicEntry, partitions: Vec<Arc<dyn Partition>>) -> Topic {
        assert_eq!(partitions.len(), entry.partitions as usize);
        Topic {
            id: entry.id,
            name: entry.name.clone(),
            settings: RwLock::new(entry.settings.clone()),
            partitions: RwLock::new(partitions),
            round_robin: AtomicU64::new(0),
        }
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.read().len() as u32
    }

    /// The topic's own settings (what it overrides).
    pub fn settings(&self) -> TopicSettings {
        self.settings.read().clone()
    }

    pub fn partitions(&self) -> Vec<Arc<dyn Partition>> {
        self.partitions.read().clone()
    }

    pub fn partition(&self, partition: u32) -> Result<Arc<dyn Partition>, TopicError> {
        let partitions = self.partitions.read();
        partitions
            .get(partition as usize)
            .cloned()
            .ok_or(TopicError::PartitionNotFound {
                topic: self.name.clone(),
                partition,
                count: partitions.len() as u32,
            })
    }

    /// Where a produce goes: `partition` when given; else the key's partition when `key` is
    /// not empty; else the next one round robin.
    pub fn choose(
        &self,
        partition: Option<u32>,
        key: &[u8],
    ) -> Result<(u32, Arc<dyn Partition>), TopicError> {
        let count = self.partition_count();
        let chosen = match partition {
            Some(p) => p,
            None if !key.is_empty() => partition_for_key(key, count),
            None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(count)) as u32,
        };
        Ok((chosen, self.partition(chosen)?))
    }

    fn entry(&self) -> TopicEntry {
        TopicEntry {
            id: self.id,
            name: self.name.clone(),
            partitions: self.partition_count(),
            settings: self.settings(),
        }
    }
}

/// How to open a partition's log and writer.
#[derive(Debug, Clone)]
struct Opener {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    /// The node's log config (dir and the topic's settings replaced per partition).
    base: LogConfig,
    /// The node's one group-commit writer: every partition's appends share its fsync rounds.
    committer: SharedCommitter,
    metrics: Arc<NodeMetrics>,
}

impl Opener {
    /// Opens (and recovers) one partition's log. It serves nothing until `serve` attaches it:
    /// a creation that fails after this just drops the logs it opened (the catalog never named
    /// them; the next start removes their files), so a retry never meets a second open copy.
    fn open_log(
        &self,
        catalog: &Catalog,
        entry: &TopicEntry,
        partition: u32,
        settings: &EffectiveSettings,
    ) -> Result<Log, LogError> {
        let config = LogConfig {
            dir: catalog.partition_dir(entry, partition),
            segment_bytes_max: settings.segment_bytes_max,
            record_bytes_max: settings.record_bytes_max,
            retention_bytes_max: settings.retention_bytes_max,
            retention_ms_max: settings.retention_ms_max,
            ..self.base.clone()
        };
        Log::open(self.disk.clone(), self.clock.clone(), config)
    }

    /// Attaches an opened log to the node's writer: from here on it is a partition.
    fn serve(&self, name: &TopicName, partition: u32, log: Log) -> Arc<dyn Partition> {
        let writer = self.committer.attach(Arc::new(log));
        let metrics = self.metrics.partition(name.as_str(), partition);
        Arc::new(LocalPartition::new(writer, metrics))
    }

    /// `serve` for the logs of partitions `first..` of `name`, in order.
    fn serve_all(&self, name: &TopicName, first: u32, logs: Vec<Log>) -> Vec<Arc<dyn Partition>> {
        (first..)
            .zip(logs)
            .map(|(p, log)| self.serve(name, p, log))
            .collect()
    }
}

/// A partition and the retention limits (bytes, age in ms) in force for it.
pub type RetentionTarget = (Arc<dyn Partition>, Option<u64>, Option<u64>);

/// Every topic of a node.
#[derive(Debug)]
pub struct Topics {
    defaults: NodeDefaults,
    config: NodeConfig,
    /// None on a cluster member (one replicated default partition, no catalog).
    store: Option<(Opener, Arc<Mutex<Catalog>>)>,
    admin: tokio::sync::Mutex<()>,
    live: RwLock<BTreeMap<TopicName, Arc<Topic>>>,
}

impl Topics {
    /// A standalone node's topics: the catalog and every partition's log, opened (and
    /// recovered). Must run inside a tokio runtime.
    pub fn open(
        config: &NodeConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        base: LogConfig,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Topics, NodeError> {
        let (catalog, _) = Catalog::open(disk.clone(), &config.data_dir)?;
        let opener = Opener {
            disk,
            clock,
            base,
            committer: Committer::start_shared(config.limits.append_queue_depth_max),
            metrics,
        };
        let defaults = node_defaults(config);
        let wanted: Vec<(&TopicEntry, u32)> = (catalog.topics().iter())
            .flat_map(|entry| (0..entry.partitions).map(move |p| (entry, p)))
            .collect();
        let mut opened = open_all(&wanted, |&(entry, p)| {
            let settings = entry.settings.effective(&defaults);
            opener.open_log(&catalog, entry, p, &settings).map_err(|e| {
                let dir = catalog.partition_dir(entry, p);
                NodeError::partition(config, entry.name.as_str(), p, dir, e)
            })
        })?
        .into_iter();
        let mut live = BTreeMap::new();
        for entry in catalog.topics() {
            let logs = opened.by_ref().take(entry.partitions as usize).collect();
            let partitions = opener.serve_all(&entry.name, 0, logs);
            live.insert(entry.name.clone(), Arc::new(Topic::new(entry, partitions)));
        }
        Ok(Topics {
            defaults,
            config: config.clone(),
            store: Some((opener, Arc::new(Mutex::new(catalog)))),
            admin: tokio::sync::Mutex::new(()),
            live: RwLock::new(live),
        })
    }

    /// A cluster member's topics: the default topic, one replicated partition.
    pub fn replicated(config: &NodeConfig, partition: Arc<dyn Partition>) -> Topics {
        let entry = TopicEntry {
            id: 0,
            name: TopicName::default_topic(),
            partitions: 1,
            settings: TopicSettings::default(),
        };
        let topic = Arc::new(Topic::new(&entry, vec![partition]));
        Topics {
            defaults: node_defaults(config),
            config: config.clone(),
            store: None,
            admin: tokio::sync::Mutex::new(()),
            live: RwLock::new(BTreeMap::from([(entry.name, topic)])),
        }
    }

    pub fn defaults(&self) -> &NodeDefaults {
        &self.defaults
    }

    /// The topic a request names ("" is the default topic).
    pub fn get(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let name = TopicName::from_request(name)?;
        let live = self.live.read();
        live.get(&name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound {
                name: name.to_string(),
                existing: names_of(&live),
            })
    }

    /// The default topic's partition 0 (a cluster member's one replicated log).
    pub fn default_partition(&self) -> Arc<dyn Partition> {
        self.get("")
            .and_then(|t| t.partition(0))
            .expect("the default topic always has partition 0")
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.live.read().values().cloned().collect()
    }

    /// Every partition, with its topic's name and its number.
    pub fn all_partitions(&self) -> Vec<(TopicName, u32, Arc<dyn Partition>)> {
        let mut all = Vec::new();
        for topic in self.list() {
            for (p, partition) in topic.partitions().into_iter().enumerate() {
                all.push((topic.name.clone(), p as u32, partition));
            }
        }
        all
    }

    fn partition_total(&self) -> u64 {
        self.live
            .read()
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum()
    }

    /// Creates a topic (idempotent when one of the same name has the same partition count and
    /// settings: then returns it with `false`).
    pub async fn create(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<(Arc<Topic>, bool), TopicError> {
        let name = TopicName::new(name)?;
        let partitions = partitions.max(1);
        let _admin = self.admin.lock().await;
        if let Ok(existing) = self.get(name.as_str()) {
            let entry = existing.entry();
            if entry.partitions == partitions && entry.settings == settings {
                return Ok((existing, false));
            }
            return Err(TopicError::AlreadyExists {
                existing: describe_entry(&entry),
                name,
            });
        }
        let (opener, catalog) = self
            .store
            .as_ref()
            .ok_or(TopicError::NotReplicated("creating a topic"))?;
        let effective = self.check_settings(&settings)?;
        self.check_room(1, u64::from(partitions))?;
        let (opener, catalog) = (opener.clone(), catalog.clone());
        let entry = TopicEntry {
            id: catalog.lock().next_topic_id(),
            name: name.clone(),
            partitions,
            settings,
        };
        let made = entry.clone();
        let opened = blocking(move || {
            let mut catalog = catalog.lock();
            let numbers: Vec<u32> = (0..made.partitions).collect();
            let logs = open_all(&numbers, |&p| {
                opener.open_log(&catalog, &made, p, &effective)
            })?;
            let name = made.name.clone();
            catalog.insert(made)?;
            Ok(opener.serve_all(&name, 0, logs))
        })
        .await?;
        let topic = Arc::new(Topic::new(&entry, opened));
        self.live.write().insert(name, topic.clone());
        tracing::info!(topic = %entry.name, id = entry.id, partitions, "topic created");
        Ok((topic, true))
    }

    /// Raises a topic's partition count and/or changes its settings.
    pub async fn alter(
        &self,
        name: &str,
        partitions: Option<u32>,
        changes: TopicSettings,
    ) -> Result<Arc<Topic>, TopicError> {
        let _admin = self.admin.lock().await;
        let topic = self.get(name)?;
        let (opener, catalog) = self
            .store
            .as_ref()
            .ok_or(TopicError::NotReplicated("changing a topic"))?;
        let mut entry = topic.entry();
        let current = entry.partitions;
        let asked = partitions.unwrap_or(current);
        if asked < current {
            return Err(TopicError::PartitionsLowered {
                topic: topic.name.clone(),
                current,
                asked,
            });
        }
        self.check_room(0, u64::from(asked - current))?;
        entry.settings = entry.settings.merged(&changes);
        entry.partitions = asked;
        let effective = self.check_settings(&entry.settings)?;
        let (opener, catalog) = (opener.clone(), catalog.clone());
        let made = entry.clone();
        let (added, logs) = (current..asked, topic.partitions());
        let opened = blocking(move || {
            let mut catalog = catalog.lock();
            let numbers: Vec<u32> = added.collect();
            let added = open_all(&numbers, |&p| {
                opener.open_log(&catalog, &made, p, &effective)
            })?;
            let (name, first) = (made.name.clone(), made.partitions - added.len() as u32);
            catalog.update(made)?;
            // Checked by `check_settings` already; the catalog is the truth if this failed.
            for partition in &logs {
                partition
                    .log()
                    .set_sizes(effective.segment_bytes_max, effective.record_bytes_max)?;
            }
            Ok(opener.serve_all(&name, first, added))
        })
        .await?;
        *topic.settings.write() = entry.settings.clone();
        topic.partitions.write().extend(opened);
        tracing::info!(topic = %topic.name, partitions = asked, "topic altered");
        Ok(topic)
    }

    /// Deletes a topic: it is gone from the catalog (durably) before its partitions stop and
    /// their files are removed.
    pub async fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _admin = self.admin.lock().await;
        let topic = self.get(name)?;
        if topic.name.is_default() {
            return Err(TopicError::DefaultTopic);
        }
        let (opener, catalog) = self
            .store
            .as_ref()
            .ok_or(TopicError::NotReplicated("deleting a topic"))?;
        let catalog = catalog.clone();
        let name = topic.name.clone();
        let entry = blocking({
            let catalog = catalog.clone();
            move || Ok(catalog.lock().remove(&name)?)
        })
        .await?;
        self.live.write().remove(&topic.name);
        for (p, partition) in topic.partitions().into_iter().enumerate() {
            if let Err(error) = partition.shutdown().await {
                tracing::warn!(%error, topic = %topic.name, "closing a deleted partition");
            }
            opener
                .metrics
                .forget_partition(topic.name.as_str(), p as u32);
        }
        blocking(move || Ok(catalog.lock().remove_files(&entry)?)).await?;
        tracing::info!(topic = %topic.name, "topic deleted");
        Ok(())
    }

    /// The settings in force for `settings`, or why they cannot be.
    fn check_settings(&self, settings: &TopicSettings) -> Result<EffectiveSettings, TopicError> {
        let effective = settings.effective(&self.defaults);
        let config = NodeConfig {
            segment_bytes_max: effective.segment_bytes_max,
            record_bytes_max: effective.record_bytes_max,
            retention_bytes_max: effective.retention_bytes_max,
            retention_ms_max: effective.retention_ms_max,
            ..self.config.clone()
        };
        config
            .validate()
            .map_err(|e| TopicError::InvalidSetting(e.to_string()))?;
        Ok(effective)
    }

    /// Whether `topics` more topics and `partitions` more partitions fit the node's limits.
    fn check_room(&self, topics: usize, partitions: u64) -> Result<(), TopicError> {
        let limits = &self.config.limits;
        let topic_count = self.live.read().len();
        if topic_count + topics > limits.topics_max as usize {
            return Err(TopicError::LimitReached {
                what: format!("the node holds {topic_count} topics"),
                limit: limits.topics_max,
                setting: "topics_max",
            });
        }
        let partition_count = self.partition_total();
        if partition_count + partitions > u64::from(limits.partitions_max) {
            return Err(TopicError::LimitReached {
                what: format!(
                    "the node holds {partition_count} partitions and {partitions} more were asked for"
                ),
                limit: limits.partitions_max,
                setting: "partitions_max",
            });
        }
        Ok(())
    }

    /// The retention limits in force for each partition now (a topic's settings may change).
    pub fn retention_targets(&self) -> Vec<RetentionTarget> {
        let mut targets = Vec::new();
        for topic in self.list() {
            let effective = topic.settings().effective(&self.defaults);
            if effective.retention_bytes_max.is_none() && effective.retention_ms_max.is_none() {
                continue;
            }
            for partition in topic.partitions() {
                targets.push((
                    partition,
                    effective.retention_bytes_max,
                    effective.retention_ms_max,
                ));
            }
        }
        targets
    }

    /// Finishes queued appends, syncs and closes every partition; the first error is returned
    /// after every partition was asked.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        if let Some((opener, _)) = &self.store {
            // Finishes every partition's queued appends, then syncs and closes them together.
            return Ok(opener.committer.shutdown().await?);
        }
        let mut result = Ok(());
        for (topic, p, partition) in self.all_partitions() {
            if let Err(error) = partition.shutdown().await {
                tracing::warn!(%error, %topic, partition = p, "closing a partition failed");
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        result
    }
}

/// Partitions opened at once at start-up: each open recovers and fsyncs a log, so a node of
/// thousands of partitions opens them side by side (the disk takes many fsyncs at once).
const OPEN_PARALLEL_MAX: usize = 16;

/// `open` applied to every item, in order, `OPEN_PARALLEL_MAX` at a time on scoped threads (one
/// after another under madsim, which has no threads); the first error wins.
fn open_all<T: Sync, R: Send, E: Send>(
    items: &[T],
    open: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    if cfg!(madsim) || items.len() < 2 {
        return items.iter().map(open).collect();
    }
    let chunk = items.len().div_ceil(OPEN_PARALLEL_MAX);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (items.chunks(chunk))
            .map(|part| scope.spawn(|| part.iter().map(&open).collect::<Result<Vec<R>, E>>()))
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for worker in workers {
            match worker.join() {
                Ok(part) => all.extend(part?),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(all)
    })
}

/// Runs `work` (file system work: opening logs, the catalog) on the blocking pool (inline
/// under madsim).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TopicError> + Send + 'static,
) -> Result<T, TopicError> {
    match off_thread(move || Ok(work())).await {
        Ok(result) => result,
        Err(error) => Err(TopicError::Cancelled(error.to_string())),
    }
}

fn node_defaults(config: &NodeConfig) -> NodeDefaults {
    NodeDefaults {
        retention_bytes_max: config.retention_bytes_max,
        retention_ms_max: config.retention_ms_max,
        segment_bytes_max: config.segment_bytes_max,
        record_bytes_max: config.record_bytes_max,
    }
}

fn names_of(live: &BTreeMap<TopicName, Arc<Topic>>) -> String {
    let mut names: Vec<&str> = live.keys().map(TopicName::as_str).collect();
    if names.len() > NAMES_IN_MESSAGE_MAX {
        let more = names.len() - NAMES_IN_MESSAGE_MAX;
        names.truncate(NAMES_IN_MESSAGE_MAX);
        return format!("{} and {more} more", names.join(", "));
    }
    names.join(", ")
}

fn describe_entry(entry: &TopicEntry) -> String {
    let s = &entry.settings;
    let mut text = format!("{} partitions", entry.partitions);
    let own = [
        ("retention_bytes_max", s.retention_bytes_max),
        ("retention_ms_max", s.retention_ms_max),
        ("segment_bytes_max", s.segment_bytes_max),
        ("record_bytes_max", s.record_bytes_max.map(u64::from)),
    ];
    for (name, value) in own {
        if let Some(value) = value {
            text.push_str(&format!(", {name} = {value}"));
        }
    }
    text
}
