//! The Raft store: openraft's log and state machine over two instances of the segmented log
//! (DESIGN.md §3).
//!
//! - The *data log* (`<data_dir>/data`) holds client records only. Its offsets ARE the client
//!   offsets, dense from 0: consumers read it directly, below the `committed` watch.
//! - The *entry log* (`<data_dir>/raft/log`) holds one small record per Raft entry: offset = Raft
//!   index, term = the entry's term, kind = Normal (1) / Blank (2) / Membership (3), value =
//!   postcard [`EntryMeta`]. A Normal entry's client records are the data-log range
//!   `[data_end - count, data_end)`.
//! - `<data_dir>/raft/meta` (two-slot file, fsync'd writes): vote, purge point, the last applied
//!   membership, the last snapshot's metadata, where the entry log starts when it is empty, and
//!   a pending reset. `<data_dir>/raft/applied`: applied and committed log ids, write-behind
//!   (fsync'd at most once a second; clamped at open).
//!
//! Invariants:
//! - Only this file translates between Raft indexes and client offsets; `log_store.rs` and
//!   `state_machine.rs` are thin trait adapters over it.
//! - Data records are written before their entry record; the two logs are fsync'd concurrently
//!   (either may reach the disk first). At open they are *reconciled*: entry records whose data
//!   is missing are dropped, then data records no entry accounts for are dropped. Neither was
//!   acknowledged (the flush callback fires only after both fsyncs).
//! - `entry_data_end(i)` never decreases with `i`; the data boundary (the data log's next
//!   offset) is the last entry's `data_end`, or `HardState::entry_base.data_end` when the entry
//!   log is physically empty.
//! - Truncation is durable before `truncate` returns (so a crash never resurrects a truncated
//!   entry) and cuts the entry log before the data log: a crash in between leaves orphan data,
//!   dropped at open.
//! - Purge only hides and deletes whole segments at or below the purge point; reads never
//!   return an entry at or below it. A purge past the local log (a snapshot is coming) is only
//!   recorded in memory until the snapshot or the next append makes it real.
//! - A reset (snapshot install past the local log) persists its intent (`pending_reset`) before
//!   touching either log; open finishes it.
//! - All writes are serialized by one lock, in submission order (openraft's "all write-IO must
//!   be serialized"); an I/O failure during a write poisons the store until it is reopened.
//! - Under `--cfg madsim` nothing here spawns threads or blocking tasks; files are reached only
//!   through `io::Disk`.

use std::collections::VecDeque;
use std::io::{self, Cursor};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

mod repair;
mod syncer;

use repair::{RepairFile, TailLoss};
pub use repair::{RepairState, VoteFloor};
use syncer::DataSyncer;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::types::{BasicNode, Entry, LogId, NodeId, ProduceAck, ProduceBatch, ProducerSeq};
use crate::io::SlotFile;
use crate::io::{Clock, Disk};
use crate::log::{CorruptTail, Log, LogConfig, LogError, NewRecord, Record, RECORD_BYTES_LIMIT};

/// Entry-record kinds (the record's `kind` field in the entry log).
pub const KIND_NORMAL: u32 = 1;
pub const KIND_BLANK: u32 = 2;
pub const KIND_MEMBERSHIP: u32 = 3;

/// Slot size of `raft/meta` (it holds up to three memberships).
const META_SLOT_BYTES: usize = 64 * 1024;
/// Slot size of `raft/applied`.
const APPLIED_SLOT_BYTES: usize = 4096;
/// Entry-log segments: entry records are ~100 bytes.
const ENTRY_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
const ENTRY_INDEX_BYTES: u64 = 2 * 1024 * 1024;
/// Bytes asked of one `read_batch` call.
const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// The applied file is fsync'd at most this often (its writes go to the page cache at once).
const APPLIED_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where and how the store keeps its files.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data log (client offsets), in `<data_dir>/data`.
    pub data: LogConfig,
    /// The entry log (Raft indexes), in `<data_dir>/raft/log`, small segments.
    pub entries: LogConfig,
    /// `<data_dir>/raft`: holds `meta` and `applied`.
    pub meta_dir: PathBuf,
    /// Retention limits of the data log. Only the Raft layer may drop replicated records, so the
    /// logs themselves never apply retention (`open` clears their `retention_*`): these feed
    /// [`Store::retention_point`] instead.
    pub retention_bytes_max: Option<u64>,
    pub retention_ms_max: Option<u64>,
    /// Recent entries kept in memory for apply and replication (0 disables the cache).
    pub tail_cache_bytes_max: usize,
    /// `limited_get_log_entries` stops after this many payload bytes (always at least one
    /// entry), so an AppendEntries RPC stays under the gRPC message limit.
    pub read_bytes_max: usize,
}

impl StoreConfig {
    /// The layout under `data_dir`: `data` keeps its limits but moves to `<data_dir>/data`, and
    /// its retention limits move to `retention_*`. Both logs cut a corrupt tail at open
    /// (`CorruptTail::Cut`): a member gets those entries back from its peers, and the store
    /// records the loss first (see `store::repair`).
    pub fn new(data_dir: &Path, data: LogConfig) -> Self {
        let mut data = data;
        data.dir = data_dir.join("data");
        data.corrupt_tail = CorruptTail::Cut;
        let (retention_bytes_max, retention_ms_max) = (
            data.retention_bytes_max.take(),
            data.retention_ms_max.take(),
        );
        let meta_dir = data_dir.join("raft");
        let mut entries = LogConfig::new(meta_dir.join("log"));
        entries.segment_bytes_max = ENTRY_SEGMENT_BYTES;
        entries.index_bytes_max = ENTRY_INDEX_BYTES;
        entries.sync = data.sync;
        entries.metrics = data.metrics.clone();
        entries.corrupt_tail = CorruptTail::Cut;
        StoreConfig {
            data,
            entries,
            meta_dir,
            retention_bytes_max,
            retention_ms_max,
            tail_cache_bytes_max: 32 * 1024 * 1024,
            read_bytes_max: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data log: {0}")]
    Data(#[source] LogError),
    #[error("entry log: {0}")]
    Entries(#[source] LogError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("raft store is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid raft store request: {0}")]
    Invalid(String),
    #[error("the raft store refuses writes after an earlier failure ({0}); reopen it")]
    Poisoned(String),
    #[error("the raft store is closed")]
    Closed,
    /// Repairing damage needs the logs opened again (see `store::repair`).
    #[error("repairing damage needs the logs reopened: {0}")]
    Reopen(String),
    #[error("entry {index} is damaged ({source}); the replica drops its log from there when it restarts")]
    Damaged {
        index: u64,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What one entry record holds. `first_offset = data_end - count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The data log's next offset after this entry's records.
    pub data_end: u64,
    /// Client records of this entry (0 for Blank and Membership).
    pub count: u32,
    /// The batch's timestamp as proposed (the stored records carry it clamped).
    pub timestamp_ms: i64,
    pub producer: Option<ProducerSeq>,
    pub membership: Option<Membership<NodeId, BasicNode>>,
}

/// The entry log's start when it holds no record: its next index, and the data log's boundary
/// there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBase {
    pub index: u64,
    pub data_end: u64,
}

/// A reset of both logs in progress: the entry log restarts at `base.index`, the data log at
/// `base.data_end`. Data below `keep_data_below` is known committed here, so a data log ending
/// exactly at (or past) `base.data_end` within it is cut instead of wiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReset {
    pub base: EntryBase,
    pub keep_data_below: u64,
}

/// The purge point and the data boundary right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub log_id: LogId,
    pub data_end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data_end: u64,
}

/// The body of a (logical) snapshot: the log is the state machine, so only where the client
/// offsets stand at the snapshot's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub data_end: u64,
}

/// `raft/meta`: every write is fsync'd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub vote: Option<Vote<NodeId>>,
    pub purged: Option<Purged>,
    pub entry_base: EntryBase,
    /// The last applied membership.
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub snapshot: Option<StoredSnapshot>,
    pub pending_reset: Option<PendingReset>,
}

/// `raft/applied`: write-behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub applied: Option<LogId>,
    /// The data boundary at `applied`: one past the last applied client offset.
    pub data_end: u64,
    pub committed: Option<LogId>,
}

/// The state machine's view, changed together under one lock.
#[derive(Debug, Clone)]
struct SmState {
    applied: AppliedState,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// Positions read by every reader.
#[derive(Debug, Clone, Copy)]
struct Positions {
    /// The logical purge point (may be ahead of `HardState::purged`: see `purge`).
    purged: Option<Purged>,
    /// The last entry record in the entry log (physically; it may be purged logically).
    last: Option<(LogId, u64)>,
}

impl Positions {
    fn purged_index(&self) -> Option<u64> {
        self.purged.map(|p| p.log_id.index)
    }

    /// The first index reads may return.
    fn first_readable(&self) -> u64 {
        self.purged_index().map_or(0, |i| i + 1)
    }

    fn last_log_id(&self) -> Option<LogId> {
        match (self.last, self.purged) {
            (Some((last, _)), Some(p)) if last.index <= p.log_id.index => Some(p.log_id),
            (Some((last, _)), _) => Some(last),
            (None, p) => p.map(|p| p.log_id),
        }
    }
}

struct MetaFile {
    file: SlotFile<HardState>,
    state: HardState,
}

impl MetaFile {
    /// Applies `change` and persists the result (fsync) before it becomes visible.
    fn update(&mut self, change: impl FnOnce(&mut HardState)) -> Result<(), StoreError> {
        let mut next = self.state.clone();
        change(&mut next);
        self.file
            .write(&next, true)
            .map_err(|e| StoreError::io(format!("write {}", self.file.path().display()), e))?;
        self.state = next;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppliedSync {
    Never,
    /// When the last fsync is at least `APPLIED_SYNC_INTERVAL` old.
    IfDue,
    Now,
}

struct AppliedFile {
    file: SlotFile<AppliedState>,
    last_sync: Option<tokio::time::Instant>,
    dirty: bool,
}

impl AppliedFile {
    /// Writes `state` (page cache), then fsyncs as `sync` says.
    fn write(&mut self, state: &AppliedState, sync: AppliedSync) -> Result<(), StoreError> {
        if let Err(e) = self.file.write(state, false) {
            let context = format!("write {}", self.file.path().display());
            return Err(StoreError::io(context, e));
        }
        self.dirty = true;
        if sync == AppliedSync::Never {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if sync == AppliedSync::Now
            || self
                .last_sync
                .is_none_or(|t| now.duration_since(t) >= APPLIED_SYNC_INTERVAL)
        {
            self.sync()?;
            self.last_sync = Some(now);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.file
                .sync()
                .map_err(|e| StoreError::io(format!("sync {}", self.file.path().display()), e))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// A recent entry and its record, for apply and replication without a disk read.
struct Cached {
    entry: Entry,
    meta: EntryMeta,
    bytes: usize,
}

#[derive(Default)]
struct TailCache {
    entries: VecDeque<Cached>,
    bytes: usize,
    bytes_max: usize,
}

impl TailCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|c| c.entry.log_id.index)
    }

    fn get(&self, index: u64) -> Option<&Cached> {
        let first = self.first_index()?;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }

    fn push(&mut self, entry: &Entry, meta: &EntryMeta) {
        if self.bytes_max == 0 {
            return;
        }
        let contiguous = self
            .entries
            .back()
            .is_none_or(|c| c.entry.log_id.index + 1 == entry.log_id.index);
        if !contiguous {
            self.clear();
        }
        let bytes = payload_bytes(entry);
        self.entries.push_back(Cached {
            entry: entry.clone(),
            meta: meta.clone(),
            bytes,
        });
        self.bytes += bytes;
        while self.bytes > self.bytes_max {
            let Some(c) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= c.bytes;
        }
    }

    /// Drops the entries at `index` and after.
    fn truncate_from(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|c| c.entry.log_id.index >= index)
        {
            let c = self.entries.pop_back().expect("checked");
            self.bytes -= c.bytes;
        }
    }

    /// Drops the entries at `index` and before.
    fn purge_upto(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|c| c.entry.log_id.index <= index)
        {
            let c = self.entries.pop_front().expect("checked");
            self.bytes -= c.bytes;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Payload bytes of an entry, as `limited_get_log_entries` and the cache count them.
fn payload_bytes(entry: &Entry) -> usize {
    const OVERHEAD: usize = 64;
    match &entry.payload {
        EntryPayload::Normal(b) => OVERHEAD + b.values.iter().map(|v| v.len() + 8).sum::<usize>(),
        _ => OVERHEAD,
    }
}

/// The Raft store. Cheap to clone: every clone shares one store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.config.meta_dir)
            .field("positions", &*self.inner.pos.lock())
            .finish()
    }
}

pub(crate) struct Inner {
    config: StoreConfig,
    data: Arc<Log>,
    /// Fsyncs `data` on its own thread while an append fsyncs `entries`.
    data_syncer: DataSyncer,
    entries: Log,
    /// Serializes every write (append, truncate, purge, vote, reset) in submission order; holds
    /// the poison cause.
    writer: Mutex<Option<String>>,
    /// Readers hold it shared; truncate and reset (which rewrite indexes readers may be
    /// reading) hold it exclusively. Appends only add records after the ones readers see.
    rewrite: RwLock<()>,
    pos: Mutex<Positions>,
    meta: Mutex<MetaFile>,
    sm: Mutex<SmState>,
    applied_file: Mutex<AppliedFile>,
    cache: Mutex<TailCache>,
    hwm: watch::Sender<u64>,
    closed: AtomicBool,
    /// `raft/repair`: damage to repair at the next open, and the vote floor.
    repair: Mutex<RepairFile>,
    /// The vote floor, for the node and its Raft service.
    floor: watch::Sender<Option<VoteFloor>>,
}

impl Store {
    /// Opens (or creates) the store: both logs recover their own torn tails (and cut a corrupt
    /// one, recording the loss first: see `store::repair`), a pending reset is finished, the
    /// logs are reconciled, and the persisted applied and committed log ids are clamped to the
    /// log that survived.
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        match Store::open_once(disk.clone(), clock.clone(), config.clone()) {
            Err(StoreError::Reopen(why)) => {
                tracing::warn!(%why, "opening the raft store again to finish a repair");
                Store::open_once(disk, clock, config)
            }
            result => result,
        }
    }

    fn open_once(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let mut config = config;
        for c in [&mut config.data, &mut config.entries] {
            c.retention_bytes_max = None;
            c.retention_ms_max = None;
        }
        let meta_path = config.meta_dir.join("meta");
        let (file, state, _) =
            SlotFile::<HardState>::open(disk.clone(), &meta_path, META_SLOT_BYTES)
                .map_err(|e| StoreError::io(format!("open {}", meta_path.display()), e))?;
        let meta = MetaFile { file, state };
        let mut repair = RepairFile::open(&disk, &config.meta_dir.join("repair"))?;
        // A tail cut at open loses entries like damage found by a read: it is recorded in
        // `raft/repair` before the cut is made (see `repair::TailLoss`). The entry log opens
        // first: what a data-log cut costs is counted in entries.
        let entries = {
            let loss = TailLoss::new(&meta.state, None);
            Log::open_before_cut(
                disk.clone(),
                clock.clone(),
                config.entries.clone(),
                &mut |cut| loss.record(&mut repair, cut),
            )
            .map_err(StoreError::Entries)?
        };
        let data = {
            let loss = TailLoss::new(&meta.state, Some(&entries));
            Log::open_before_cut(disk.clone(), clock, config.data.clone(), &mut |cut| {
                loss.record(&mut repair, cut)
            })
            .map_err(StoreError::Data)?
        };
        let (applied_file, applied) = open_applied(&disk, &config.meta_dir.join("applied"))?;
        let cache = TailCache {
            bytes_max: config.tail_cache_bytes_max,
            ..TailCache::default()
        };
        let (hwm, _) = watch::channel(0);
        let (floor, _) = watch::channel(repair.state.vote_floor.clone());
        let data = Arc::new(data);
        let data_syncer = DataSyncer::start(&data)
            .map_err(|e| StoreError::io("start the data log's fsync thread", e))?;
        let inner = Inner {
            config,
            data,
            data_syncer,
            entries,
            writer: Mutex::new(None),
            rewrite: RwLock::new(()),
            pos: Mutex::new(Positions {
                purged: None,
                last: None,
            }),
            meta: Mutex::new(meta),
            sm: Mutex::new(SmState {
                applied,
                membership: StoredMembership::default(),
            }),
            applied_file: Mutex::new(applied_file),
            cache: Mutex::new(cache),
            hwm,
            closed: AtomicBool::new(false),
            repair: Mutex::new(repair),
            floor,
        };
        // Damage met while recovering is recorded (see `repair`): recovering again repairs it.
        let mut attempts = 0;
        while let Err(error) = inner.recover() {
            attempts += 1;
            if !matches!(error, StoreError::Damaged { .. }) || attempts > 3 {
                return Err(error);
            }
        }
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// openraft's log storage (`RaftLogStorage` + `RaftLogReader`).
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.inner.clone())
    }

    /// openraft's state machine (`RaftStateMachine`).
    pub fn state_machine(&self) -> StateMachine {
        StateMachine::new(self.inner.clone())
    }

    /// The data log: offsets are client offsets. Consumers read below `committed()`.
    pub fn data_log(&self) -> &Arc<Log> {
        &self.inner.data
    }

    /// One past the last applied client offset: consumers may read below it.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.inner.hwm.subscribe()
    }

    pub fn committed_offset(&self) -> u64 {
        *self.inner.hwm.borrow()
    }

    /// The last log id in the log (or the purge point when it holds no entry).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.inner.pos.lock().last_log_id()
    }

    /// The vote floor (see `store::repair`): while it is set, this replica stands for no
    /// election and grants no vote to a candidate whose last log id is below it.
    pub fn vote_floor(&self) -> watch::Receiver<Option<VoteFloor>> {
        self.inner.floor.subscribe()
    }

    /// The last committed log id this replica knows of (persisted with the applied state).
    pub fn committed_log_id(&self) -> Option<LogId> {
        self.inner.committed_log_id()
    }

    /// The last applied log id.
    pub fn applied(&self) -> Option<LogId> {
        self.inner.sm.lock().applied.applied
    }

    /// Where the data log's retention limits would cut, as the last entry that may be purged
    /// whole: the newest applied entry whose records all lie below the cut. `None` when nothing
    /// would go. The caller builds a snapshot (`raft.trigger().snapshot()`) and then purges up
    /// to it (`raft.trigger().purge_log(index)`).
    pub fn retention_point(&self) -> Result<Option<LogId>, StoreError> {
        self.inner.retention_point()
    }

    /// Syncs the applied state and closes both logs; later calls fail with `Closed`.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }

    #[doc(hidden)]
    /// The persisted hard state, for tests.
    pub fn hard_state(&self) -> HardState {
        self.inner.meta.lock().state.clone()
    }

    #[doc(hidden)]
    /// The entry log, for tests.
    pub fn entry_log(&self) -> &Log {
        &self.inner.entries
    }
}

/// Opens `raft/applied`, replacing it with the default when neither slot is valid: it is only a
/// hint (a lower applied means more re-applying), unlike `raft/meta`.
fn open_applied(
    disk: &Arc<dyn Disk>,
    path: &Path,
) -> Result<(AppliedFile, AppliedState), StoreError> {
    let context = || format!("open {}", path.display());
    let (file, state) = match SlotFile::<AppliedState>::open(disk.clone(), path, APPLIED_SLOT_BYTES)
    {
        Ok((file, state, _)) => (file, state),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(path = %path.display(), "applied state unreadable; starting from the snapshot");
            disk.remove_file(path)
                .map_err(|e| StoreError::io(context(), e))?;
            let (file, state, _) =
                SlotFile::<AppliedState>::open(disk.clone(), path, APPLIED_SLOT_BYTES)
                    .map_err(|e| StoreError::io(context(), e))?;
            (file, state)
        }
        Err(e) => return Err(StoreError::io(context(), e)),
    };
    let file = AppliedFile {
        file,
        last_sync: None,
        dirty: false,
    };
    Ok((file, state))
}

fn entry_log_err(e: LogError) -> StoreError {
    StoreError::Entries(e)
}

fn data_log_err(e: LogError) -> StoreError {
    StoreError::Data(e)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn decode_meta(record: &Record) -> Result<EntryMeta, StoreError> {
    postcard::from_bytes(&record.value).map_err(|e| {
        StoreError::Corrupt(format!(
            "entry record {} does not decode: {e}",
            record.offset
        ))
    })
}

impl Inner {
    // ---- open ----

    fn recover(&self) -> Result<(), StoreError> {
        let pending = self.meta.lock().state.pending_reset;
        if let Some(pending) = pending {
            tracing::info!(?pending, "finishing a log reset interrupted by a crash");
            self.finish_reset(pending)?;
            self.meta.lock().update(|h| h.pending_reset = None)?;
        }
        let repairing = self.repair_at_open()?;
        self.reconcile()?;
        if repairing {
            self.finish_repair()?;
        }
        let hard = self.meta.lock().state.clone();
        let last = self.read_last()?;
        let pos = Positions {
            purged: hard.purged,
            last,
        };
        *self.pos.lock() = pos;

        // Clamp the write-behind applied/committed to what survived: a persisted log id past
        // the durable log makes openraft re-apply entries that do not exist (DESIGN.md §11.4).
        let last_log_id = pos.last_log_id();
        let mut sm = self.sm.lock();
        let file = sm.applied;
        let mut applied = file.applied;
        for candidate in [
            hard.snapshot.as_ref().and_then(|s| s.meta.last_log_id),
            hard.purged.map(|p| p.log_id),
        ] {
            if candidate.map(|c| c.index) > applied.map(|a| a.index) {
                applied = candidate;
            }
        }
        let clamp = |id: Option<LogId>| match (id, last_log_id) {
            (Some(id), Some(last)) if id.index > last.index => Some(last),
            (Some(_), None) => None,
            (id, _) => id,
        };
        applied = clamp(applied);
        let committed = clamp(file.committed);
        let data_end = match applied {
            None => self.data.lowest_offset(),
            Some(a) if Some(a) == file.applied => file.data_end,
            Some(a) => self.data_end_at(a.index, &hard)?,
        };
        sm.applied = AppliedState {
            applied,
            data_end,
            committed,
        };
        sm.membership = hard.membership.clone();
        drop(sm);
        self.hwm.send_replace(data_end);
        self.clear_floor_if_reached()
    }

    /// Drops entry records whose data did not survive, then data records no entry accounts for.
    fn reconcile(&self) -> Result<(), StoreError> {
        let boundary = loop {
            let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
            if lowest == next {
                let base = self.meta.lock().state.entry_base;
                if base.index != next {
                    return Err(StoreError::Corrupt(format!(
                        "the entry log is empty at {next} but the store expects it to start at {}",
                        base.index
                    )));
                }
                break base.data_end;
            }
            let (_, meta) = self.entry_meta(next - 1)?;
            if meta.data_end <= self.data.next_offset() {
                break meta.data_end;
            }
            tracing::warn!(
                index = next - 1,
                data_end = meta.data_end,
                data_next = self.data.next_offset(),
                "dropping an unacknowledged entry whose records did not survive"
            );
            let first = meta.data_end - u64::from(meta.count);
            if next - 1 == lowest {
                self.meta.lock().update(|h| {
                    h.entry_base = EntryBase {
                        index: lowest,
                        data_end: first,
                    }
                })?;
            }
            self.entries
                .truncate_from(next - 1)
                .map_err(entry_log_err)?;
        };
        let data_next = self.data.next_offset();
        if data_next > boundary {
            tracing::warn!(
                boundary,
                data_next,
                "dropping unacknowledged client records without an entry"
            );
            if boundary < self.data.lowest_offset() {
                self.data.reset(boundary).map_err(data_log_err)?;
            } else {
                self.data.truncate_from(boundary).map_err(data_log_err)?;
            }
        } else if data_next < boundary {
            return Err(StoreError::Corrupt(format!(
                "the data log ends at {data_next} but the entry log accounts for records up to {boundary}"
            )));
        }
        Ok(())
    }

    /// The last entry record's log id and data end.
    fn read_last(&self) -> Result<Option<(LogId, u64)>, StoreError> {
        let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
        if lowest == next {
            return Ok(None);
        }
        let (id, meta) = self.entry_meta(next - 1)?;
        Ok(Some((id, meta.data_end)))
    }

    /// The data boundary right after entry `index`, from its record, or from the purge point,
    /// snapshot or entry base that ends there.
    fn data_end_at(&self, index: u64, hard: &HardState) -> Result<u64, StoreError> {
        if index >= self.entries.lowest_offset() && index < self.entries.next_offset() {
            return Ok(self.entry_meta(index)?.1.data_end);
        }
        if let Some(p) = hard.purged.filter(|p| p.log_id.index == index) {
            return Ok(p.data_end);
        }
        if let Some(s) = hard
            .snapshot
            .as_ref()
            .filter(|s| s.meta.last_log_id.map(|l| l.index) == Some(index))
        {
            return Ok(s.data_end);
        }
        if index + 1 == hard.entry_base.index {
            return Ok(hard.entry_base.data_end);
        }
        Err(StoreError::Corrupt(format!(
            "no record of where client offsets stand at index {index}"
        )))
    }

    // ---- reads ----

    /// The entry record at `index` (physically present), from the cache or the entry log.
    fn entry_meta(&self, index: u64) -> Result<(LogId, EntryMeta), StoreError> {
        if let Some(c) = self.cache.lock().get(index) {
            return Ok((c.entry.log_id, c.meta.clone()));
        }
        let read = || {
            let record = self.entries.read(index).map_err(entry_log_err)?;
            Ok((log_id(record.term, record.offset), decode_meta(&record)?))
        };
        read().map_err(|e| self.damaged(index, e))
    }

    /// Entries in `[start, end)` that are present (neither purged nor past the end), stopping
    /// early once `bytes_max` payload bytes are collected (at least one entry).
    pub(crate) fn read_entries(
        &self,
        start: u64,
        end: u64,
        bytes_max: Option<usize>,
    ) -> Result<Vec<Entry>, StoreError> {
        let _shared = self.rewrite.read();
        let first_readable = self.pos.lock().first_readable();
        let start = start.max(first_readable).max(self.entries.lowest_offset());
        let end = end.min(self.entries.next_offset());
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let full = |bytes: usize, n: usize| bytes_max.is_some_and(|max| n > 0 && bytes >= max);
        let mut index = start;
        while index < end && !full(bytes, out.len()) {
            // From the cache while it has the index.
            {
                let cache = self.cache.lock();
                while index < end && !full(bytes, out.len()) {
                    let Some(c) = cache.get(index) else { break };
                    bytes += c.bytes;
                    out.push(c.entry.clone());
                    index += 1;
                }
            }
            if index >= end || full(bytes, out.len()) {
                break;
            }
            // From disk up to where the cache starts.
            let stop = match self.cache.lock().first_index() {
                Some(first) if first > index => first.min(end),
                _ => end,
            };
            let records = self
                .entries
                .read_batch(index, (stop - index) as usize, READ_CHUNK_BYTES)
                .map_err(|e| self.damaged(index, entry_log_err(e)))?;
            for record in records {
                if record.offset >= stop || full(bytes, out.len()) {
                    break;
                }
                let entry = self
                    .rebuild(&record)
                    .map_err(|e| self.damaged(record.offset, e))?;
                bytes += payload_bytes(&entry);
                out.push(entry);
                index = record.offset + 1;
            }
        }
        Ok(out)
    }

    /// Rebuilds the entry of an entry record, reading its client records from the data log.
    fn rebuild(&self, record: &Record) -> Result<Entry, StoreError> {
        let meta = decode_meta(record)?;
        let payload = match record.kind {
            KIND_NORMAL => {
                let range = meta.data_end - u64::from(meta.count)..meta.data_end;
                EntryPayload::Normal(ProduceBatch {
                    values: self.read_data(range)?,
                    timestamp_ms: meta.timestamp_ms,
                    producer: meta.producer,
                })
            }
            KIND_BLANK => EntryPayload::Blank,
            KIND_MEMBERSHIP => EntryPayload::Membership(meta.membership.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "membership entry {} has no membership",
                    record.offset
                ))
            })?),
            kind => {
                return Err(StoreError::Corrupt(format!(
                    "entry record {} has unknown kind {kind}",
                    record.offset
                )))
            }
        };
        Ok(Entry {
            log_id: log_id(record.term, record.offset),
            payload,
        })
    }

    fn read_data(&self, range: Range<u64>) -> Result<Vec<Bytes>, StoreError> {
        let mut values = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let records = self
                .data
                .read_batch(at, (range.end - at) as usize, READ_CHUNK_BYTES)
                .map_err(data_log_err)?;
            for r in records {
                if r.offset >= range.end {
                    break;
                }
                values.push(r.value);
                at = r.offset + 1;
            }
        }
        Ok(values)
    }

    pub(crate) fn read_bytes_max(&self) -> usize {
        self.config.read_bytes_max
    }

    pub(crate) fn log_state(&self) -> (Option<LogId>, Option<LogId>) {
        let pos = self.pos.lock();
        (pos.purged.map(|p| p.log_id), pos.last_log_id())
    }

    pub(crate) fn vote(&self) -> Option<Vote<NodeId>> {
        self.meta.lock().state.vote
    }

    pub(crate) fn committed_log_id(&self) -> Option<LogId> {
        self.sm.lock().applied.committed
    }

    // ---- writes (callers run them off the async threads in production) ----

    fn check_writable(&self, poison: &Option<String>) -> Result<(), StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        match poison {
            Some(cause) => Err(StoreError::Poisoned(cause.clone())),
            None => Ok(()),
        }
    }

    /// Runs a write under the writer lock; a failure poisons the store.
    fn write<T>(&self, op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut poison = self.writer.lock();
        self.check_writable(&poison)?;
        let result = op();
        if let Err(e) = &result {
            if !matches!(e, StoreError::Invalid(_)) {
                tracing::error!(error = %e, "raft store write failed; refusing writes until reopened");
                *poison = Some(e.to_string());
            }
        }
        result
    }

    /// Writes `entries` to both logs (readable when this returns), then fsyncs both (at the
    /// same time in production: either order is safe, reconcile at open handles both).
    pub(crate) fn append(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        self.write(|| {
            self.validate_append(&entries)?;
            for entry in &entries {
                self.append_one(entry)?;
            }
            // Blank and Membership entries add no client record: no data fsync then.
            let data_unsynced = self.data.durable_offset() < self.data.next_offset();
            self.sync_both(data_unsynced)?;
            self.clear_floor_if_reached()
        })
    }

    /// Fsyncs the entry log, and the data log too when `data_unsynced`: the data log on its
    /// fsync thread meanwhile (either order is safe: reconcile at open handles both).
    fn sync_both(&self, data_unsynced: bool) -> Result<(), StoreError> {
        if !data_unsynced {
            return self.entries.sync().map(drop).map_err(entry_log_err);
        }
        let (data_synced, entries_synced) = self.data_syncer.sync_while(|| self.entries.sync());
        data_synced.map_err(data_log_err)?;
        entries_synced.map(drop).map_err(entry_log_err)
    }

    /// Replicated entries are bounded by the format's hard limit only: the configured
    /// `record_bytes_max` bounds client produces on the node that accepts them (the service
    /// checks it), and a follower restarted with a lower limit must still take what its leader
    /// accepted.
    fn validate_append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let max = u64::from(RECORD_BYTES_LIMIT);
        for entry in entries {
            if let EntryPayload::Normal(batch) = &entry.payload {
                if let Some(v) = batch.values.iter().find(|v| v.len() as u64 > max) {
                    return Err(StoreError::Invalid(format!(
                        "entry {} holds a record of {} bytes; the format's limit is {max}",
                        entry.log_id.index,
                        v.len()
                    )));
                }
                if u32::try_from(batch.values.len()).is_err() {
                    return Err(StoreError::Invalid("batch too large".into()));
                }
            }
        }
        for pair in entries.windows(2) {
            if pair[0].log_id.index + 1 != pair[1].log_id.index {
                return Err(StoreError::Invalid(format!(
                    "append of non-consecutive entries {} and {}",
                    pair[0].log_id.index, pair[1].log_id.index
                )));
            }
        }
        Ok(())
    }

    fn append_one(&self, entry: &Entry) -> Result<(), StoreError> {
        let index = entry.log_id.index;
        let next = self.entries.next_offset();
        if index != next {
            let pos = *self.pos.lock();
            let logically_empty = pos
                .last
                .is_none_or(|(last, _)| Some(last.index) <= pos.purged_index());
            if !logically_empty {
                return Err(StoreError::Invalid(format!(
                    "append at index {index}, but the log's next index is {next}"
                )));
            }
            // The first entry after a purge past the log (or into a fresh store at a later
            // index): restart the entry log there; the data log goes on. (openraft's suite also
            // appends at or below the purge point; such entries stay hidden from reads.)
            let data_next = self.data.next_offset();
            let purged = pos.purged;
            self.reset_logs(
                PendingReset {
                    base: EntryBase {
                        index,
                        data_end: data_next,
                    },
                    keep_data_below: data_next,
                },
                |h| h.purged = purged,
            )?;
        }
        let boundary = self.data_boundary();
        if self.data.next_offset() != boundary {
            return Err(StoreError::Corrupt(format!(
                "the data log ends at {} but the entry log at {boundary}",
                self.data.next_offset()
            )));
        }
        let term = entry.log_id.leader_id.term;
        let (kind, meta) = match &entry.payload {
            EntryPayload::Normal(batch) => {
                if !batch.values.is_empty() {
                    let records: Vec<NewRecord> = batch
                        .values
                        .iter()
                        .map(|v| NewRecord {
                            term,
                            kind: 0,
                            value: v.clone(),
                        })
                        .collect();
                    self.data
                        .append_batch_at(boundary, &records, batch.timestamp_ms)
                        .map_err(data_log_err)?;
                }
                let meta = EntryMeta {
                    data_end: boundary + batch.values.len() as u64,
                    count: batch.values.len() as u32,
                    timestamp_ms: batch.timestamp_ms,
                    producer: batch.producer,
                    membership: None,
                };
                (KIND_NORMAL, meta)
            }
            EntryPayload::Blank => (KIND_BLANK, control_meta(boundary, None)),
            EntryPayload::Membership(m) => {
                (KIND_MEMBERSHIP, control_meta(boundary, Some(m.clone())))
            }
        };
        let value = postcard::to_allocvec(&meta)
            .map_err(|e| StoreError::Invalid(format!("entry {index} does not encode: {e}")))?;
        let record = NewRecord {
            term,
            kind,
            value: value.into(),
        };
        self.entries
            .append_at(index, &record, meta.timestamp_ms)
            .map_err(entry_log_err)?;
        self.pos.lock().last = Some((entry.log_id, meta.data_end));
        self.cache.lock().push(entry, &meta);
        Ok(())
    }

    /// The data log's expected next offset: the last entry's `data_end`, or the entry base's.
    fn data_boundary(&self) -> u64 {
        match self.pos.lock().last {
            Some((_, data_end)) => data_end,
            None => self.meta.lock().state.entry_base.data_end,
        }
    }

    pub(crate) fn save_vote(&self, vote: &Vote<NodeId>) -> Result<(), StoreError> {
        self.write(|| self.meta.lock().update(|h| h.vote = Some(*vote)))
    }

    /// Drops the entries at `index` and after, and their client records, durably.
    pub(crate) fn truncate(&self, index: u64) -> Result<(), StoreError> {
        self.write(|| {
            let _exclusive = self.rewrite.write();
            let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
            if index >= next {
                return Ok(());
            }
            let index = index.max(lowest);
            let (_, meta) = self.entry_meta(index)?;
            let first = meta.data_end - u64::from(meta.count);
            if index == lowest {
                self.meta.lock().update(|h| {
                    h.entry_base = EntryBase {
                        index,
                        data_end: first,
                    }
                })?;
            }
            // The entry log first, so no entry ever points at records already cut. A crash in
            // between leaves orphan records, which open drops; either way the log comes back as
            // a prefix of the one before this (unacknowledged) truncate.
            self.entries.truncate_from(index).map_err(entry_log_err)?;
            self.cache.lock().truncate_from(index);
            if first < self.data.lowest_offset() {
                self.data.reset(first).map_err(data_log_err)?;
            } else if first < self.data.next_offset() {
                self.data.truncate_from(first).map_err(data_log_err)?;
            }
            let last = self.read_last()?;
            self.pos.lock().last = last;
            Ok(())
        })
    }

    /// Purges the entries up to `purged.index` inclusive: persists the purge point, then deletes
    /// the whole segments of both logs below it.
    pub(crate) fn purge(&self, upto: LogId) -> Result<(), StoreError> {
        self.write(|| {
            let index = upto.index;
            let pos = *self.pos.lock();
            if pos.purged_index().is_some_and(|p| p >= index) {
                return Ok(());
            }
            let (lowest, next) = (self.entries.lowest_offset(), self.entries.next_offset());
            if index >= next {
                // Past the local log: a snapshot covering it is being installed (the engine
                // purges before the state machine installs it). Deleting the log now and then
                // crashing before the install would leave nothing to re-apply from, so only
                // hide the entries; the install (or the next append) resets the logs for real.
                self.pos.lock().purged = Some(Purged {
                    log_id: upto,
                    data_end: self.data.next_offset(),
                });
                self.cache.lock().clear();
                return Ok(());
            }
            let data_end = if index >= lowest {
                self.entry_meta(index)?.1.data_end
            } else {
                let (_, meta) = self.entry_meta(lowest)?;
                meta.data_end - u64::from(meta.count)
            };
            let purged = Purged {
                log_id: upto,
                data_end,
            };
            self.meta.lock().update(|h| h.purged = Some(purged))?;
            self.pos.lock().purged = Some(purged);
            self.cache.lock().purge_upto(index);
            self.entries
                .truncate_before(index + 1)
                .map_err(entry_log_err)?;
            self.data.truncate_before(data_end).map_err(data_log_err)?;
            Ok(())
        })
    }

    /// Restarts both logs at `reset.base` after persisting the intent and `change` (caller holds
    /// the writer lock).
    fn reset_logs(
        &self,
        reset: PendingReset,
        change: impl FnOnce(&mut HardState),
    ) -> Result<(), StoreError> {
        let _exclusive = self.rewrite.write();
        self.meta.lock().update(|h| {
            change(h);
            h.entry_base = reset.base;
            h.pending_reset = Some(reset);
        })?;
        self.finish_reset(reset)?;
        let hard = {
            let mut meta = self.meta.lock();
            meta.update(|h| h.pending_reset = None)?;
            meta.state.clone()
        };
        *self.pos.lock() = Positions {
            purged: hard.purged,
            last: None,
        };
        Ok(())
    }

    /// Brings both logs to `reset` (idempotent: open calls it again after a crash).
    fn finish_reset(&self, reset: PendingReset) -> Result<(), StoreError> {
        let PendingReset {
            base,
            keep_data_below,
        } = reset;
        self.cache.lock().clear();
        if self.entries.lowest_offset() != base.index || self.entries.next_offset() != base.index {
            self.entries.reset(base.index).map_err(entry_log_err)?;
        }
        let d = base.data_end;
        let keep =
            self.data.lowest_offset() <= d && d <= self.data.next_offset() && d <= keep_data_below;
        if keep {
            if d < self.data.next_offset() {
                self.data.truncate_from(d).map_err(data_log_err)?;
            }
            self.data.truncate_before(d).map_err(data_log_err)?;
        } else {
            self.data.reset(d).map_err(data_log_err)?;
        }
        Ok(())
    }

    pub(crate) fn save_committed(&self, committed: Option<LogId>) -> Result<(), StoreError> {
        let state = {
            let mut sm = self.sm.lock();
            sm.applied.committed = committed;
            sm.applied
        };
        self.applied_file.lock().write(&state, AppliedSync::Never)
    }

    // ---- state machine ----

    pub(crate) fn applied_state(&self) -> (Option<LogId>, StoredMembership<NodeId, BasicNode>) {
        let sm = self.sm.lock();
        (sm.applied.applied, sm.membership.clone())
    }

    /// Where an entry's client records end: from its record when the log holds it (the normal
    /// case: openraft applies what it read from the log), else following the applied boundary.
    fn applied_data_end(
        &self,
        entry: &Entry,
        applied_end: u64,
        count: u32,
    ) -> Result<u64, StoreError> {
        let index = entry.log_id.index;
        let present = {
            let _shared = self.rewrite.read();
            let pos = *self.pos.lock();
            index >= pos.first_readable()
                && index >= self.entries.lowest_offset()
                && index < self.entries.next_offset()
        };
        if present {
            let (id, meta) = self.entry_meta(index)?;
            if id == entry.log_id {
                if meta.count != count {
                    return Err(StoreError::Corrupt(format!(
                        "entry {index} holds {count} records but its record says {}",
                        meta.count
                    )));
                }
                return Ok(meta.data_end);
            }
        }
        Ok(applied_end + u64::from(count))
    }

    /// Applies committed entries: moves the applied point and the `committed` watch, answers
    /// where each batch landed. A membership is persisted (fsync) before it counts as applied.
    pub(crate) fn apply(&self, entries: Vec<Entry>) -> Result<Vec<ProduceAck>, StoreError> {
        let (mut applied, mut membership) = {
            let sm = self.sm.lock();
            (sm.applied, None)
        };
        let mut acks = Vec::with_capacity(entries.len());
        for entry in &entries {
            let count = match &entry.payload {
                EntryPayload::Normal(batch) => batch.values.len() as u32,
                _ => 0,
            };
            let data_end = self.applied_data_end(entry, applied.data_end, count)?;
            acks.push(ProduceAck {
                first_offset: data_end - u64::from(count),
                count,
                duplicate: false,
            });
            if let EntryPayload::Membership(m) = &entry.payload {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
            }
            applied.applied = Some(entry.log_id);
            applied.data_end = data_end;
        }
        if entries.is_empty() {
            return Ok(acks);
        }
        if let Some(m) = &membership {
            self.meta.lock().update(|h| h.membership = m.clone())?;
        }
        {
            let mut sm = self.sm.lock();
            applied.committed = sm.applied.committed.max(applied.applied);
            sm.applied = applied;
            if let Some(m) = membership {
                sm.membership = m;
            }
        }
        self.applied_file
            .lock()
            .write(&applied, AppliedSync::IfDue)?;
        self.hwm.send_replace(applied.data_end);
        Ok(acks)
    }

    /// The snapshot of the applied state (logical: metadata and the data boundary), persisted.
    pub(crate) fn build_snapshot(
        &self,
    ) -> Result<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>), StoreError> {
        let (applied, membership) = {
            let sm = self.sm.lock();
            (sm.applied, sm.membership.clone())
        };
        let snapshot_id = match applied.applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "none".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data_end: applied.data_end,
        };
        self.meta.lock().update(|h| h.snapshot = Some(stored))?;
        Ok((meta, encode_body(applied.data_end)))
    }

    pub(crate) fn current_snapshot(&self) -> Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)> {
        let meta = self.meta.lock();
        meta.state
            .snapshot
            .as_ref()
            .map(|s| (s.meta.clone(), encode_body(s.data_end)))
    }

    /// Installs a snapshot received from the leader. When the entry log holds its last entry,
    /// only the applied point moves (the engine purges the log separately). Otherwise the
    /// snapshot jumps past the local log: both logs restart after it (the intent persisted
    /// first), and this node serves client offsets from the snapshot's boundary on.
    pub(crate) fn install_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let body: SnapshotBody = postcard::from_bytes(body)
            .map_err(|e| StoreError::Invalid(format!("snapshot body does not decode: {e}")))?;
        let last = meta
            .last_log_id
            .ok_or_else(|| StoreError::Invalid("snapshot without a last log id".into()))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data_end: body.data_end,
        };
        let membership = meta.last_membership.clone();
        self.write(|| {
            let present = {
                let pos = *self.pos.lock();
                if pos.purged_index().is_some_and(|p| p > last.index) {
                    return Err(StoreError::Invalid(format!(
                        "snapshot at {last} is behind the purge point {:?}",
                        pos.purged
                    )));
                }
                last.index >= pos.first_readable()
                    && last.index >= self.entries.lowest_offset()
                    && last.index < self.entries.next_offset()
            };
            let local = if present {
                Some(self.entry_meta(last.index)?)
            } else {
                None
            };
            match local {
                Some((id, local)) if id == last => {
                    if local.data_end != body.data_end {
                        return Err(StoreError::Corrupt(format!(
                            "snapshot at {last} ends client offsets at {} but the local entry at {}",
                            body.data_end, local.data_end
                        )));
                    }
                    self.meta.lock().update(|h| {
                        h.snapshot = Some(stored.clone());
                        h.membership = membership.clone();
                    })?;
                }
                _ => {
                    let keep_data_below = self.sm.lock().applied.data_end;
                    let purged = Purged {
                        log_id: last,
                        data_end: body.data_end,
                    };
                    self.reset_logs(
                        PendingReset {
                            base: EntryBase {
                                index: last.index + 1,
                                data_end: body.data_end,
                            },
                            keep_data_below,
                        },
                        |h| {
                            h.snapshot = Some(stored.clone());
                            h.membership = membership.clone();
                            h.purged = Some(purged);
                        },
                    )?;
                }
            }
            Ok(())
        })?;
        let applied = {
            let mut sm = self.sm.lock();
            sm.applied = AppliedState {
                applied: Some(last),
                data_end: body.data_end,
                committed: sm.applied.committed.max(Some(last)),
            };
            sm.membership = membership;
            sm.applied
        };
        self.applied_file.lock().write(&applied, AppliedSync::Now)?;
        self.hwm.send_replace(body.data_end);
        self.clear_floor_if_reached()
    }

    // ---- retention, close ----

    fn retention_point(&self) -> Result<Option<LogId>, StoreError> {
        let cut = self.data.retention_cut(
            self.config.retention_bytes_max,
            self.config.retention_ms_max,
        );
        let _shared = self.rewrite.read();
        let pos = *self.pos.lock();
        let applied = self.sm.lock().applied.applied;
        let Some(applied) = applied else {
            return Ok(None);
        };
        let lo = pos.first_readable().max(self.entries.lowest_offset());
        let hi = self.entries.next_offset().min(applied.index + 1);
        // The last index in [lo, hi) whose data_end <= cut (data_end never decreases).
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let mid = a + (b - a) / 2;
            if self.entry_meta(mid)?.1.data_end <= cut {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        if a == lo {
            return Ok(None);
        }
        Ok(Some(self.entry_meta(a - 1)?.0))
    }

    fn close(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock();
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let synced = self.applied_file.lock().sync();
        let entries = self.entries.close().map_err(entry_log_err);
        let data = self.data.close().map_err(data_log_err);
        synced.and(entries).and(data)
    }
}

fn control_meta(boundary: u64, membership: Option<Membership<NodeId, BasicNode>>) -> EntryMeta {
    EntryMeta {
        data_end: boundary,
        count: 0,
        timestamp_ms: i64::MIN,
        producer: None,
        membership,
    }
}

fn encode_body(data_end: u64) -> Vec<u8> {
    postcard::to_allocvec(&SnapshotBody { data_end }).expect("a u64 encodes")
}

/// The snapshot data openraft moves around: the encoded body.
pub(crate) fn snapshot_data(body: Vec<u8>) -> Box<Cursor<Vec<u8>>> {
    Box::new(Cursor::new(body))
}

/// Runs a blocking store operation (writes and fsyncs) off the async worker threads: through
/// `spawn_blocking` in production, inline under madsim (no threads in the simulation; its
/// `spawn_blocking` would only run the closure as a task anyway).
pub(crate) async fn off_thread<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    #[cfg(madsim)]
    {
        f()
    }
    #[cfg(not(madsim))]
    {
        match tokio::task::spawn_blocking(f).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::io(
                "raft store task",
                io::Error::other(e.to_string()),
            )),
        }
    }
}
