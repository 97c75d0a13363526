//! The topic catalog: which topics exist, durably, and where their partitions live.
//!
//! Layout under the data directory:
//!
//! ```text
//! topics.catalog                    the catalog (a two-slot `io::SlotFile`)
//! log/                              the default topic's partition 0 (earlier versions' one log)
//! topics/<name>/<id>/<partition>/   every other partition (`<id>`: the topic's catalog id)
//! ```
//!
//! Crash safety: the catalog is the only truth. A topic (or a raised partition count) is
//! created by making its partition directories and logs first and committing the catalog
//! last; a topic is deleted by committing the catalog first and removing its files after. So
//! at any crash a topic is either in the catalog with every partition directory made, or not
//! in it, and whatever lies under `topics/` that the catalog does not name (an unfinished
//! creation, an unfinished deletion) is removed by [`Catalog::open`]. Such a directory never
//! held an acknowledged record: nothing is served from a partition before the catalog that
//! names it is on disk. The id in the path keeps a deleted topic's leftovers apart from a new
//! topic of the same name.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{TopicName, TopicSettings};
use crate::io::{Disk, SlotFile};

pub const CATALOG_FILE: &str = "topics.catalog";
pub const TOPICS_DIR: &str = "topics";
/// Where the default topic's partition 0 lives (the one log of earlier versions).
const DEFAULT_PARTITION_0_DIR: &str = "log";
/// One slot of the catalog file: room for 10,000 topics with names of 249 characters.
const CATALOG_SLOT_BYTES: usize = 4 << 20;
/// The default topic's id.
const DEFAULT_TOPIC_ID: u64 = 0;

/// One topic as the catalog holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    /// Unique for the life of the data directory (never reused after a delete).
    pub id: u64,
    pub name: TopicName,
    pub partitions: u32,
    pub settings: TopicSettings,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CatalogState {
    /// The id the next created topic gets (0 before the first write: see `open`).
    next_topic_id: u64,
    topics: Vec<TopicEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("topic catalog: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the topic catalog {} is missing, but {} holds topic directories: refusing to start \
         rather than guess which topics exist (restore the file, or move the directory away)",
        catalog.display(), topics.display()
    )]
    Missing { catalog: PathBuf, topics: PathBuf },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> CatalogError {
    let what = what.into();
    move |source| CatalogError::Io { what, source }
}

/// The durable list of topics. Not thread-safe by itself: the node serializes changes.
#[derive(Debug)]
pub struct Catalog {
    disk: Arc<dyn Disk>,
    data_dir: PathBuf,
    file: SlotFile<CatalogState>,
    state: CatalogState,
}

impl Catalog {
    /// Opens (or creates) the catalog of `data_dir`, with the default topic in it, and removes
    /// every directory under `topics/` it does not name. Returns the directories removed.
    pub fn open(
        disk: Arc<dyn Disk>,
        data_dir: &Path,
    ) -> Result<(Catalog, Vec<PathBuf>), CatalogError> {
        let path = data_dir.join(CATALOG_FILE);
        let topics_dir = data_dir.join(TOPICS_DIR);
        if !disk.exists(&path) && has_entries(disk.as_ref(), &topics_dir) {
            return Err(CatalogError::Missing {
                catalog: path,
                topics: topics_dir,
            });
        }
        let (file, mut state, _) =
            SlotFile::<CatalogState>::open(disk.clone(), &path, CATALOG_SLOT_BYTES)
                .map_err(io_error(format!("open {}", path.display())))?;
        let mut catalog = Catalog {
            disk,
            data_dir: data_dir.to_path_buf(),
            file,
            state: CatalogState::default(),
        };
        if state.next_topic_id == 0 {
            // A new catalog: the default topic (id 0) is its first entry.
            state = CatalogState {
                next_topic_id: DEFAULT_TOPIC_ID + 1,
                topics: vec![TopicEntry {
                    id: DEFAULT_TOPIC_ID,
                    name: TopicName::default_topic(),
                    partitions: 1,
                    settings: TopicSettings::default(),
                }],
            };
            catalog.write(&state)?;
        }
        catalog.state = state;
        catalog.check();
        let removed = catalog.collect_garbage()?;
        Ok((catalog, removed))
    }

    fn check(&self) {
        let state = &self.state;
        assert!(state.topics.iter().any(|t| t.name.is_default()));
        assert!(state
            .topics
            .iter()
            .all(|t| t.partitions > 0 && t.id < state.next_topic_id));
    }

    pub fn topics(&self) -> &[TopicEntry] {
        &self.state.topics
    }

    pub fn get(&self, name: &TopicName) -> Option<&TopicEntry> {
        self.state.topics.iter().find(|t| &t.name == name)
    }

    /// The id `insert` gives the next topic.
    pub fn next_topic_id(&self) -> u64 {
        self.state.next_topic_id
    }

    /// Where partition `partition` of `topic` lives.
    pub fn partition_dir(&self, topic: &TopicEntry, partition: u32) -> PathBuf {
        if topic.id == DEFAULT_TOPIC_ID && partition == 0 {
            return self.data_dir.join(DEFAULT_PARTITION_0_DIR);
        }
        self.topic_dir(&topic.name, topic.id)
            .join(partition.to_string())
    }

    fn topic_dir(&self, name: &TopicName, id: u64) -> PathBuf {
        self.data_dir
            .join(TOPICS_DIR)
            .join(name.as_str())
            .join(id.to_string())
    }

    /// Adds a topic whose partitions' directories are made, with id `next_topic_id()`;
    /// durable on return.
    pub fn insert(&mut self, topic: TopicEntry) -> Result<(), CatalogError> {
        assert_eq!(
            topic.id, self.state.next_topic_id,
            "ids are handed out in order"
        );
        assert!(self.get(&topic.name).is_none(), "one topic per name");
        let mut state = self.state.clone();
        state.next_topic_id += 1;
        state.topics.push(topic);
        self.commit(state)
    }

    /// Replaces the entry of the same id (new settings, or more partitions whose directories
    /// are made); durable on return.
    pub fn update(&mut self, topic: TopicEntry) -> Result<(), CatalogError> {
        let mut state = self.state.clone();
        let entry = (state.topics.iter_mut())
            .find(|t| t.id == topic.id)
            .expect("updating a topic in the catalog");
        assert!(
            topic.partitions >= entry.partitions,
            "partitions are never removed"
        );
        assert_eq!(topic.name, entry.name);
        *entry = topic;
        self.commit(state)
    }

    /// Removes a topic (never the default one); durable on return. Its files are removed by
    /// `remove_files` (or, after a crash, by the next `open`).
    pub fn remove(&mut self, name: &TopicName) -> Result<TopicEntry, CatalogError> {
        assert!(!name.is_default(), "the default topic is never deleted");
        let mut state = self.state.clone();
        let at = (state.topics.iter())
            .position(|t| &t.name == name)
            .expect("removing a topic in the catalog");
        let removed = state.topics.remove(at);
        #[cfg(madsim)]
        if crate::planted_bugs::unsynced_topic_delete() {
            let path = self.file.path().to_path_buf();
            (self.file.write(&state, false))
                .map_err(io_error(format!("write {}", path.display())))?;
            self.state = state;
            return Ok(removed);
        }
        self.commit(state)?;
        Ok(removed)
    }

    /// Removes a deleted topic's directories (it is no longer in the catalog).
    pub fn remove_files(&self, topic: &TopicEntry) -> Result<(), CatalogError> {
        assert!(self.state.topics.iter().all(|t| t.id != topic.id));
        let dir = self.topic_dir(&topic.name, topic.id);
        if self.disk.exists(&dir) {
            remove_tree(self.disk.as_ref(), &dir)
                .map_err(io_error(format!("remove {}", dir.display())))?;
        }
        self.remove_empty_name_dir(&topic.name)
    }

    fn commit(&mut self, state: CatalogState) -> Result<(), CatalogError> {
        self.write(&state)?;
        self.state = state;
        self.check();
        Ok(())
    }

    fn write(&mut self, state: &CatalogState) -> Result<(), CatalogError> {
        let path = self.file.path().to_path_buf();
        self.file
            .write(state, true)
            .map_err(io_error(format!("write {}", path.display())))
    }

    /// Removes what lies under `topics/` that the catalog does not name.
    fn collect_garbage(&self) -> Result<Vec<PathBuf>, CatalogError> {
        let topics_dir = self.data_dir.join(TOPICS_DIR);
        let mut removed = Vec::new();
        for name in list(self.disk.as_ref(), &topics_dir)? {
            let name_dir = topics_dir.join(&name);
            for id in list(self.disk.as_ref(), &name_dir)? {
                let topic = self
                    .state
                    .topics
                    .iter()
                    .find(|t| t.name.as_str() == name && t.id.to_string() == id);
                let id_dir = name_dir.join(&id);
                let Some(topic) = topic else {
                    removed.push(id_dir);
                    continue;
                };
                for partition in list(self.disk.as_ref(), &id_dir)? {
                    let kept = partition
                        .parse::<u32>()
                        .is_ok_and(|p| p < topic.partitions && p.to_string() == partition);
                    if !kept {
                        removed.push(id_dir.join(partition));
                    }
                }
            }
        }
        for dir in &removed {
            tracing::warn!(dir = %dir.display(), "removing a topic directory the catalog does not name (a creation or deletion cut short)");
            remove_tree(self.disk.as_ref(), dir)
                .map_err(io_error(format!("remove {}", dir.display())))?;
        }
        for name in list(self.disk.as_ref(), &topics_dir)? {
            if let Ok(name) = TopicName::new(&name) {
                self.remove_empty_name_dir(&name)?;
            }
        }
        Ok(removed)
    }

    /// Removes `topics/<name>` once no topic of that name has files under it.
    fn remove_empty_name_dir(&self, name: &TopicName) -> Result<(), CatalogError> {
        let topics_dir = self.data_dir.join(TOPICS_DIR);
        let dir = topics_dir.join(name.as_str());
        if self.disk.exists(&dir) && list(self.disk.as_ref(), &dir)?.is_empty() {
            self.disk
                .remove_dir(&dir)
                .and_then(|()| self.disk.sync_dir(&topics_dir))
                .map_err(io_error(format!("remove {}", dir.display())))?;
        }
        Ok(())
    }
}

fn list(disk: &dyn Disk, dir: &Path) -> Result<Vec<String>, CatalogError> {
    if !disk.exists(dir) {
        return Ok(Vec::new());
    }
    let mut names = disk
        .list_dir(dir)
        .map_err(io_error(format!("list {}", dir.display())))?;
    names.sort();
    Ok(names)
}

fn has_entries(disk: &dyn Disk, dir: &Path) -> bool {
    disk.exists(dir) && disk.list_dir(dir).is_ok_and(|names| !names.is_empty())
}

/// Removes `dir` and everything under it, then syncs its parent: the removal is durable on
/// return. (A crash part way leaves a directory the catalog does not name: removed at open.)
fn remove_tree(disk: &dyn Disk, dir: &Path) -> io::Result<()> {
    for name in disk.list_dir(dir)? {
        let path = dir.join(name);
        match disk.list_dir(&path) {
            Ok(_) => remove_tree(disk, &path)?,
            Err(_) => disk.remove_file(&path)?,
        }
    }
    disk.sync_dir(dir)?;
    disk.remove_dir(dir)?;
    disk.sync_dir(dir.parent().unwrap_or(Path::new("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;

    fn entry(catalog: &Catalog, name: &str, partitions: u32) -> TopicEntry {
        TopicEntry {
            id: catalog.next_topic_id(),
            name: TopicName::new(name).unwrap(),
            partitions,
            settings: TopicSettings::default(),
        }
    }

    fn make_dirs(disk: &SimDisk, catalog: &Catalog, topic: &TopicEntry) {
        for p in 0..topic.partitions {
            let dir = catalog.partition_dir(topic, p);
            crate::io::create_dir_durable(disk, &dir).unwrap();
            disk.open(&dir.join("00000000000000000000.store"), true)
                .unwrap();
            disk.sync_dir(&dir).unwrap();
        }
    }

    #[test]
    fn a_new_catalog_holds_the_default_topic_at_the_old_log_dir() {
        let disk = Arc::new(SimDisk::new(1));
        let (catalog, removed) = Catalog::open(disk.clone(), Path::new("/data")).unwrap();
        assert!(removed.is_empty());
        let default = &catalog.topics()[0];
        assert!(default.name.is_default());
        assert_eq!(default.partitions, 1);
        assert_eq!(catalog.partition_dir(default, 0), Path::new("/data/log"));
        assert_eq!(
            catalog.partition_dir(default, 1),
            Path::new("/data/topics/default/0/1")
        );
        disk.crash();
        let (again, _) = Catalog::open(disk, Path::new("/data")).unwrap();
        assert_eq!(again.topics(), catalog.topics());
    }

    #[test]
    fn topics_survive_a_crash_once_inserted_and_never_come_back_once_removed() {
        let disk = Arc::new(SimDisk::new(2));
        let data = Path::new("/data");
        let (mut catalog, _) = Catalog::open(disk.clone(), data).unwrap();
        let orders = entry(&catalog, "orders", 3);
        make_dirs(&disk, &catalog, &orders);
        catalog.insert(orders.clone()).unwrap();
        disk.crash();
        let (mut catalog, removed) = Catalog::open(disk.clone(), data).unwrap();
        assert!(removed.is_empty());
        assert_eq!(catalog.get(&orders.name), Some(&orders));

        let removed_entry = catalog.remove(&orders.name).unwrap();
        disk.crash(); // before the files went
        let (catalog, removed) = Catalog::open(disk.clone(), data).unwrap();
        assert!(catalog.get(&orders.name).is_none());
        assert_eq!(removed, vec![PathBuf::from("/data/topics/orders/1")]);
        assert!(!disk.exists(&catalog.partition_dir(&removed_entry, 0)));
        assert!(!disk.exists(Path::new("/data/topics/orders")));
    }

    #[test]
    fn a_creation_cut_short_leaves_nothing_and_ids_stay_apart() {
        let disk = Arc::new(SimDisk::new(3));
        let data = Path::new("/data");
        let (catalog, _) = Catalog::open(disk.clone(), data).unwrap();
        let half = entry(&catalog, "orders", 2);
        make_dirs(&disk, &catalog, &half);
        disk.crash(); // before the catalog named it
        let (mut catalog, removed) = Catalog::open(disk.clone(), data).unwrap();
        assert_eq!(removed, vec![PathBuf::from("/data/topics/orders/1")]);
        assert!(catalog.get(&half.name).is_none());

        // Raising the partition count: directories first, catalog last.
        let mut orders = entry(&catalog, "orders", 1);
        make_dirs(&disk, &catalog, &orders);
        catalog.insert(orders.clone()).unwrap();
        orders.partitions = 3;
        make_dirs(&disk, &catalog, &orders);
        disk.crash();
        let (catalog, removed) = Catalog::open(disk.clone(), data).unwrap();
        assert_eq!(catalog.get(&orders.name).unwrap().partitions, 1);
        assert_eq!(
            removed,
            vec![
                PathBuf::from("/data/topics/orders/1/1"),
                PathBuf::from("/data/topics/orders/1/2")
            ]
        );
    }

    #[test]
    fn a_missing_catalog_with_topic_directories_is_refused() {
        let disk = Arc::new(SimDisk::new(4));
        let data = Path::new("/data");
        let (mut catalog, _) = Catalog::open(disk.clone(), data).unwrap();
        let orders = entry(&catalog, "orders", 1);
        make_dirs(&disk, &catalog, &orders);
        catalog.insert(orders).unwrap();
        disk.remove_file(&data.join(CATALOG_FILE)).unwrap();
        let refused = Catalog::open(disk.clone(), data).unwrap_err();
        assert!(matches!(refused, CatalogError::Missing { .. }), "{refused}");
        assert!(disk.exists(Path::new("/data/topics/orders/1/0")));
    }
}
