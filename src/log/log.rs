//! The segmented log: a list of segments behind a reader-writer lock, changed by one writer at
//! a time.
//!
//! Locks, always taken in this order, never the other way round:
//! 1. `writer` (mutex): serializes everything that changes the log: appends, rolls, retention,
//!    truncations, reset, close. It may be held across disk writes and fsyncs: it only makes
//!    writers wait for writers.
//! 2. `state` (reader-writer lock): the segment list. Readers take it for reading, for the
//!    whole of a read (they read only bytes the list says are written). Writers take it for
//!    writing only for in-memory changes: recording frames already written, swapping a sealed
//!    index's map, adding a created segment or taking removed ones out of the list. No fsync,
//!    msync, file write, resize or unlink happens under the write lock, except in
//!    `truncate_from` and `reset`, which rewrite what readers read and so exclude them. The
//!    active index is msync'd (when sealing) under the read lock, which blocks no reader: every
//!    taker of the write lock holds `writer` first.
//! 3. `poison_cause` (mutex): innermost, held to copy a string.
//!
//! `sync` takes only the read lock, to pick the active store file, and fsyncs with no lock
//! held, so appends go on while an fsync is in flight. Any failed write, fsync or resize
//! poisons the log: later writes are refused until it is reopened, which recovers from what is
//! on disk (and, after an unclean stop, writes the last segment's bytes again and syncs them).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use super::config::RECORD_BYTES_LIMIT;
use super::index::Index;
use super::record::{self, NewRecord, Record};
use super::segment::{self, FileKind, Recovery, Segment, SegmentLimits, TailCut, TailRules};
use super::{LogConfig, LogError};
use crate::io::{Clock, Disk};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    pub lowest_offset: u64,
    pub next_offset: u64,
    /// Bytes in the store files.
    pub size_bytes: u64,
    pub segment_count: u32,
    /// Every offset below this is on disk (fsync'd).
    pub durable_offset: u64,
}

/// What `Log::open` found and did, for logs, operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments whose index was rebuilt by scanning the store.
    pub segments_scanned: u32,
    /// Bytes cut off the last segment (a torn tail, or a corrupt one cut on request): the same
    /// as `tail_cut`'s `bytes_dropped`.
    pub truncated_bytes: u64,
    /// Index files without a store, removed.
    pub orphan_indexes_removed: u32,
    /// Records in sealed segments made unreadable by a bad frame (bit rot): they read as
    /// `Corrupt`; the rest of the log is served.
    pub unreadable_records: u64,
    /// Format-1 indexes replaced: rebuilt from their stores as format 2, then removed.
    pub indexes_upgraded: u32,
    /// Sealed indexes with an entry failing its checksum, rebuilt from their stores.
    pub indexes_damaged: u32,
    /// What was cut off the last segment, if anything.
    pub tail_cut: Option<TailCut>,
    /// Bytes of the last segment written again and synced because open had to scan it (an
    /// unclean stop: a crash, a kill, or a log stopped by a failed write or fsync).
    pub tail_rewritten_bytes: u64,
}

#[derive(Debug)]
pub struct Log {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    config: LogConfig,
    /// The segment limits new segments get and the active one is judged by; changed by
    /// `set_sizes` (a topic's settings altered). Taken alone, never while waiting for another
    /// lock.
    limits: Mutex<SegmentLimits>,
    /// The largest record value `append` accepts (the configured limit, changed by `set_sizes`).
    record_bytes_max: AtomicU32,
    /// Lock 1 (see the module docs).
    writer: Mutex<Writer>,
    /// Lock 2.
    state: RwLock<State>,
    lowest: AtomicU64,
    next: AtomicU64,
    durable: AtomicU64,
    poisoned: AtomicBool,
    /// Lock 3.
    poison_cause: Mutex<Option<String>>,
    open_report: OpenReport,
    /// Successful `sync` calls (each one fsync), for benchmarks and tests.
    syncs: AtomicU64,
}

/// What only writers use.
#[derive(Debug)]
struct Writer {
    /// The newest timestamp given to a record; new ones are clamped to at least this.
    last_timestamp_ms: i64,
}

/// Encode buffers, shared by every log of the process (`ENCODE_BUFFERS`): a log holds one only
/// while it appends, so their memory follows the appends in flight, not the number of logs.
#[derive(Debug, Default)]
struct EncodeBuffers {
    frames: Vec<u8>,
    timestamps: Vec<i64>,
}

/// Idle encode buffers, reused by whichever log appends next.
static ENCODE_BUFFERS: std::sync::Mutex<Vec<EncodeBuffers>> = std::sync::Mutex::new(Vec::new());
/// At most this many idle encode buffers are kept (about the appends in flight at once).
const ENCODE_BUFFERS_KEPT: usize = 8;

impl EncodeBuffers {
    fn take() -> EncodeBuffers {
        let pool = ENCODE_BUFFERS.lock();
        pool.map(|mut p| p.pop()).ok().flatten().unwrap_or_default()
    }

    /// Returns the buffers to the pool, unless they grew past `FRAMES_BUFFER_KEEP_BYTES` or the
    /// pool is full (then they are freed).
    fn give_back(mut self) {
        if self.frames.capacity() > FRAMES_BUFFER_KEEP_BYTES {
            return;
        }
        self.frames.clear();
        self.timestamps.clear();
        if let Ok(mut pool) = ENCODE_BUFFERS.lock() {
            if pool.len() < ENCODE_BUFFERS_KEPT {
                pool.push(self);
            }
        }
    }
}

#[derive(Debug)]
struct State {
    /// Ordered by base offset, dense: each segment's `next` is the following one's base. Never
    /// empty while open; the last one is the active segment.
    segments: Vec<Segment>,
    closed: bool,
    /// Bumped by every truncate_from, so a sync that raced one does not publish a stale offset.
    truncations: u64,
}

/// An encode buffer larger than this is freed after the append that grew it.
const FRAMES_BUFFER_KEEP_BYTES: usize = 4 << 20;

impl State {
    fn active(&self) -> &Segment {
        self.segments.last().expect("an open log has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("an open log has a segment")
    }
    fn lowest(&self) -> u64 {
        self.segments.first().map_or(0, Segment::base)
    }
    fn next(&self) -> u64 {
        self.segments.last().map_or(0, Segment::next)
    }
}

impl Log {
    /// Opens (or creates) the log in `config.dir`, recovering from a crash: a torn tail of the
    /// last segment is cut off (a corrupt one refused unless `config.corrupt_tail` says cut),
    /// untrusted or format-1 indexes are rebuilt, and after an unclean stop the last segment's
    /// bytes are written again and synced before the log is used.
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Result<Log, LogError> {
        Log::open_before_cut(disk, clock, config, &mut |_| Ok(()))
    }

    /// `open`, calling `before_cut` with what will be cut off the last segment before the cut is
    /// made (its error fails the open and leaves the store as it is): for a caller that must
    /// record durably what the log loses (a Raft member raising its vote floor), since a crash
    /// right after the cut would leave no trace of it.
    pub fn open_before_cut(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
        before_cut: &mut dyn FnMut(&TailCut) -> std::io::Result<()>,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let mut tail = TailRules {
            corrupt: config.corrupt_tail,
            before_cut,
        };
        let limits = SegmentLimits {
            store_bytes_max: config.segment_bytes_max,
            index_entries_max: config.index_entries_max(),
            #[cfg(madsim)]
            record_bytes_max: config.record_bytes_max,
        };
        let dir = config.dir.clone();
        crate::io::create_dir_durable(disk.as_ref(), &dir)
            .map_err(|e| LogError::io(format!("create {}", dir.display()), e))?;
        let listing = list_segments(disk.as_ref(), &dir)?;
        let mut report = OpenReport {
            orphan_indexes_removed: listing.orphans,
            ..OpenReport::default()
        };
        let (segments, last_scanned) = if listing.segments.is_empty() {
            let segment = Segment::create(disk.as_ref(), &dir, config.initial_offset, limits)?;
            (vec![segment], false)
        } else {
            open_segments(
                disk.as_ref(),
                &config,
                &listing,
                limits,
                &mut tail,
                &mut report,
            )?
        };
        let active = segments.last().expect("at least one segment");
        if last_scanned {
            report.tail_rewritten_bytes = active.rewrite_store()?;
            tracing::info!(
                file = %active.store_path().display(), bytes = report.tail_rewritten_bytes,
                "rewrote and synced the last segment after an unclean stop"
            );
        }
        active.sync()?;
        sync_dir(disk.as_ref(), &dir)?;
        report.indexes_upgraded = remove_v1_indexes(disk.as_ref(), &dir, &listing)?;
        let writer = Writer {
            last_timestamp_ms: newest_timestamp_ms(&segments)?,
        };
        let state = State {
            segments,
            closed: false,
            truncations: 0,
        };
        let (lowest, next) = (state.lowest(), state.next());
        Ok(Log {
            disk,
            clock,
            record_bytes_max: AtomicU32::new(config.record_bytes_max),
            config,
            limits: Mutex::new(limits),
            writer: Mutex::new(writer),
            state: RwLock::new(state),
            lowest: AtomicU64::new(lowest),
            next: AtomicU64::new(next),
            durable: AtomicU64::new(next),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            open_report: report,
            syncs: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// What recovery did when this log was opened.
    pub fn open_report(&self) -> OpenReport {
        self.open_report
    }

    /// Appends `records` (all or none pass validation first, against the configured
    /// `record_bytes_max`) and returns their offsets. Does not sync: call `sync` (or append
    /// through a `Committer`) for durability.
    pub fn append(&self, records: &[NewRecord]) -> Result<Range<u64>, LogError> {
        self.validate(records)?;
        let mut writer = self.lock_writer()?;
        let timestamp_ms = self.clock.now_ms().max(writer.last_timestamp_ms);
        self.append_locked(&mut writer, records, timestamp_ms)
    }

    /// Appends one record at `offset`, which must be the log's next offset, with the leader's
    /// term (in `record`) and timestamp (clamped so timestamps never decrease): for replication.
    /// Bounded by the format's limit only (`RECORD_BYTES_LIMIT`): the leader checked its own.
    pub fn append_at(
        &self,
        offset: u64,
        record: &NewRecord,
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        self.append_batch_at(offset, std::slice::from_ref(record), timestamp_ms)
            .map(|_| ())
    }

    /// Appends `records` at `first`, which must be the log's next offset, all with one
    /// timestamp (clamped so timestamps never decrease): a replicated batch in one write per
    /// segment. Bounded by the format's limit only. Returns their offsets.
    pub fn append_batch_at(
        &self,
        first: u64,
        records: &[NewRecord],
        timestamp_ms: i64,
    ) -> Result<Range<u64>, LogError> {
        check_sizes(records, RECORD_BYTES_LIMIT)?;
        let mut writer = self.lock_writer()?;
        let next = self.state.read().next();
        if first != next {
            return Err(LogError::NonContiguous {
                expected: next,
                got: first,
            });
        }
        let timestamp_ms = timestamp_ms.max(writer.last_timestamp_ms);
        self.append_locked(&mut writer, records, timestamp_ms)
    }

    /// Fsyncs the active store and returns the durable next offset: every record below it is
    /// on disk. Concurrent appends go on while the fsync runs.
    pub fn sync(&self) -> Result<u64, LogError> {
        let (file, path, next, truncations) = {
            let state = self.read_state()?;
            self.check_not_poisoned()?;
            let active = state.active();
            (
                active.store_file().clone(),
                active.store_path().to_path_buf(),
                state.next(),
                state.truncations,
            )
        };
        // Monotonic time through tokio::time: madsim's simulated clock in the simulation.
        let started = self
            .config
            .metrics
            .as_ref()
            .map(|_| tokio::time::Instant::now());
        if let Err(e) = file.sync_data() {
            return Err(self.poison(LogError::io(format!("sync {}", path.display()), e)));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let (Some(metrics), Some(started)) = (&self.config.metrics, started) {
            metrics.fsyncs.inc();
            metrics.fsync_seconds.observe(started.elapsed());
        }
        let state = self.state.read();
        if state.truncations == truncations {
            self.durable.fetch_max(next, Ordering::SeqCst);
        }
        Ok(self.durable.load(Ordering::SeqCst))
    }

    /// Checks the log's last record (see `Segment::check_tail`): for callers that cut the log
    /// at a point they cannot otherwise verify (repairing a replica after damage).
    pub fn check_tail(&self) -> Result<(), LogError> {
        self.read_state()?.active().check_tail()
    }

    pub fn read(&self, offset: u64) -> Result<Record, LogError> {
        let mut records = self.read_batch(offset, 1, 0)?;
        Ok(records
            .pop()
            .expect("read_batch returns at least one record"))
    }

    /// Consecutive records from `offset`: at most `max_records`, stopping before `max_bytes` of
    /// frames, but always at least one. Fills from the following segments too; a later segment
    /// that cannot be read ends the batch early (the caller meets its error when it reads that
    /// offset itself).
    pub fn read_batch(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let state = self.read_state()?;
        let (lowest, next) = (state.lowest(), state.next());
        if offset < lowest || offset >= next {
            return Err(LogError::OffsetOutOfRange {
                offset,
                lowest,
                next,
            });
        }
        let max_records = max_records.max(1);
        let i = state.segments.partition_point(|s| s.base() <= offset) - 1;
        let mut records = state.segments[i].read(offset, max_records, max_bytes)?;
        let mut bytes: usize = records.iter().map(frame_bytes).sum();
        for segment in &state.segments[i + 1..] {
            let contiguous = records
                .last()
                .is_some_and(|r| r.offset + 1 == segment.base());
            if !contiguous
                || records.len() >= max_records
                || bytes >= max_bytes
                || segment.is_empty()
            {
                break;
            }
            let room = max_bytes - bytes;
            let Ok(more) = segment.read(segment.base(), max_records - records.len(), room) else {
                break;
            };
            // A segment read returns its first record even when it alone exceeds `room`.
            if more.first().is_some_and(|r| frame_bytes(r) > room) {
                break;
            }
            bytes += more.iter().map(frame_bytes).sum::<usize>();
            records.extend(more);
        }
        Ok(records)
    }

    /// The first offset whose timestamp is >= `timestamp_ms`, or the next offset if none is.
    /// Only checked index entries are used: a damaged one is a `Corrupt` error.
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let state = self.read_state()?;
        let segments = &state.segments;
        let (mut lo, mut hi) = (0, segments.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match segments[mid].last_timestamp_ms()? {
                Some(t) if t < timestamp_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        match segments.get(lo) {
            Some(segment) => segment.first_at_or_after(timestamp_ms),
            None => Ok(state.next()),
        }
    }

    pub fn lowest_offset(&self) -> u64 {
        self.lowest.load(Ordering::SeqCst)
    }

    pub fn next_offset(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// How many `sync` calls have fsync'd since open (group commit shares one among many
    /// appends).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Every offset below this is on disk.
    pub fn durable_offset(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    pub fn info(&self) -> LogInfo {
        let state = self.state.read();
        LogInfo {
            lowest_offset: self.lowest_offset(),
            next_offset: self.next_offset(),
            size_bytes: state.segments.iter().map(Segment::store_bytes).sum(),
            segment_count: state.segments.len() as u32,
            durable_offset: self.durable_offset(),
        }
    }

    /// Removes the segments whose records are all below `offset` (never the active segment).
    pub fn truncate_before(&self, offset: u64) -> Result<(), LogError> {
        let _writer = self.lock_writer()?;
        let count = {
            let state = self.state.read();
            let sealed = &state.segments[..state.segments.len() - 1];
            sealed.iter().take_while(|s| s.next() <= offset).count()
        };
        self.remove_oldest(count)
    }

    /// Keeps the offsets <= `offset`: `truncate_from(offset + 1)`.
    pub fn truncate_after(&self, offset: u64) -> Result<(), LogError> {
        self.truncate_from(offset.saturating_add(1))
    }

    /// Drops the records at `offset` and after (an uncommitted suffix, for Raft), durably:
    /// later segments are removed newest first, the directory synced after each removal, then
    /// the segment holding `offset` is cut and synced. `offset` must be in `lowest..=next`.
    /// Readers wait for it (it rewrites what they read).
    pub fn truncate_from(&self, offset: u64) -> Result<(), LogError> {
        let mut writer = self.lock_writer()?;
        let mut state = self.state.write();
        let (lowest, next) = (state.lowest(), state.next());
        if offset < lowest || offset > next {
            return Err(LogError::OffsetOutOfRange {
                offset,
                lowest,
                next,
            });
        }
        if offset == next {
            return Ok(());
        }
        state.truncations += 1;
        self.durable.fetch_min(offset, Ordering::SeqCst);
        while state.active().base() > offset {
            let segment = state.segments.pop().expect("more than one segment");
            self.remove_segment_files(&segment)?;
        }
        // The clamp floor goes back to the newest record kept, as `open` would compute it: a
        // replica that truncated a suffix stamped by a leader with a fast clock must stamp what
        // replaces it as every other replica does (timestamps agree across replicas). It comes
        // from the kept record's frame, whose CRC covers it (a flipped bit in an index entry
        // made a replica diverge once: seed 70904; entries are checksummed now too).
        let result = (state.active_mut().truncate_from(offset, self.limits()))
            .and_then(|()| floor_after_truncation(&state));
        self.publish(&state);
        match result {
            Ok(floor) => {
                writer.last_timestamp_ms = floor;
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Drops every record and restarts the log, empty, at `next_offset` (so `lowest_offset()` =
    /// `next_offset()` = `next_offset`), durably: the segments are removed oldest first, the
    /// directory synced after each removal (a crash leaves a dense suffix, which opens), then a
    /// fresh segment is created at `next_offset` and the directory synced. For Raft, when a
    /// snapshot moves a replica past its whole log. A crash part-way leaves a log that opens but
    /// may start anywhere at or below `next_offset`: the caller persists its intent and calls
    /// `reset` again after reopening. Any failure poisons the log. Readers wait for it.
    pub fn reset(&self, next_offset: u64) -> Result<(), LogError> {
        let _writer = self.lock_writer()?;
        let mut state = self.state.write();
        state.truncations += 1;
        let result = self.reset_locked(&mut state, next_offset);
        self.publish(&state);
        self.durable.store(state.next(), Ordering::SeqCst);
        result.map_err(|e| self.poison(e))
    }

    fn reset_locked(&self, state: &mut State, next_offset: u64) -> Result<(), LogError> {
        while !state.segments.is_empty() {
            let segment = state.segments.remove(0);
            // Poisoned below on error, so nothing uses the (possibly empty) segment list again.
            self.remove_segment_files(&segment)?;
        }
        let segment = Segment::create(
            self.disk.as_ref(),
            &self.config.dir,
            next_offset,
            self.limits(),
        )?;
        segment.sync()?;
        state.segments.push(segment);
        self.sync_dir()
    }

    /// The offset retention would keep from, without deleting anything: the base of the oldest
    /// segment that `apply_retention` with these limits would keep (the lowest offset when
    /// nothing would go). The Raft layer uses it to choose how far to purge, since it alone may
    /// drop replicated records.
    pub fn retention_cut(&self, bytes_max: Option<u64>, ms_max: Option<u64>) -> u64 {
        let state = self.state.read();
        if state.closed || state.segments.is_empty() {
            return self.lowest_offset();
        }
        let keep = expired_count(&state.segments, bytes_max, ms_max, self.clock.now_ms());
        state.segments[keep].base()
    }

    /// Drops the oldest segments (never the active one) while the log is larger than
    /// `retention_bytes_max` or their newest record is older than `retention_ms_max` (by its
    /// checked index entry: a segment whose newest timestamp cannot be verified is kept).
    /// Returns how many were dropped. Readers go on while the files are removed.
    pub fn apply_retention(&self) -> Result<u32, LogError> {
        self.apply_retention_with(
            self.config.retention_bytes_max,
            self.config.retention_ms_max,
        )
    }

    /// `apply_retention` with these limits instead of the configured ones (a topic's settings,
    /// which may change while the log is open).
    pub fn apply_retention_with(
        &self,
        bytes_max: Option<u64>,
        ms_max: Option<u64>,
    ) -> Result<u32, LogError> {
        let _writer = self.lock_writer()?;
        let count = {
            let state = self.state.read();
            expired_count(&state.segments, bytes_max, ms_max, self.clock.now_ms())
        };
        self.remove_oldest(count)?;
        Ok(count as u32)
    }

    /// Syncs, seals the active segment (index trimmed and sealed) and closes the files: the next
    /// open needs no scan. Later calls return `Closed`; closing twice is fine.
    pub fn close(&self) -> Result<(), LogError> {
        let _writer = self.writer.lock();
        if self.state.read().closed {
            return Ok(());
        }
        let result = self.close_locked();
        let segments = {
            let mut state = self.state.write();
            state.closed = true;
            std::mem::take(&mut state.segments)
        };
        drop(segments);
        result
    }

    fn close_locked(&self) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        let roll_first = {
            let state = self.state.read();
            state.active().is_full(self.limits()) && !state.active().is_empty()
        };
        if roll_first {
            self.roll()?;
        }
        let next = self.seal_active().map_err(|e| self.poison(e))?;
        self.durable.fetch_max(next, Ordering::SeqCst);
        Ok(())
    }

    /// Checks a batch against the configured limits without appending it: `BatchEmpty`,
    /// `RecordTooLarge` (over `record_bytes_max`). For client appends.
    pub fn validate(&self, records: &[NewRecord]) -> Result<(), LogError> {
        check_sizes(records, self.record_bytes_max.load(Ordering::Relaxed))
    }

    /// Changes the segment size (from the next segment the log starts, and for when the active
    /// one rolls) and the largest record `append` accepts, checked as `LogConfig::validate`
    /// checks them. Records already stored are never judged by it.
    pub fn set_sizes(&self, segment_bytes_max: u64, record_bytes_max: u32) -> Result<(), LogError> {
        let config = LogConfig {
            segment_bytes_max,
            record_bytes_max,
            ..self.config.clone()
        };
        config.validate()?;
        let mut limits = self.limits.lock();
        limits.store_bytes_max = segment_bytes_max;
        #[cfg(madsim)]
        {
            limits.record_bytes_max = record_bytes_max;
        }
        drop(limits);
        self.record_bytes_max
            .store(record_bytes_max, Ordering::Relaxed);
        Ok(())
    }

    /// The current segment limits.
    fn limits(&self) -> SegmentLimits {
        *self.limits.lock()
    }

    /// Writes `records` into the active segment, rolling as needed: one write per segment.
    fn append_locked(
        &self,
        writer: &mut Writer,
        records: &[NewRecord],
        timestamp_ms: i64,
    ) -> Result<Range<u64>, LogError> {
        let first = self.state.read().next();
        let mut rest = records;
        while !rest.is_empty() {
            let count = self.room_for(rest)?;
            self.grow_index(count)?;
            self.write_frames(&rest[..count], timestamp_ms)?;
            rest = &rest[count..];
        }
        writer.last_timestamp_ms = timestamp_ms;
        Ok(first..self.next_offset())
    }

    /// Grows the active index (doubling) if `more` entries do not fit in its map: extends the
    /// file under the read lock (readers go on), then maps it anew under the write lock (no
    /// disk I/O there). A failure poisons the log.
    fn grow_index(&self, more: usize) -> Result<(), LogError> {
        let capacity = {
            let state = self.state.read();
            let Some(capacity) = state.active().index_growth(more as u64, self.limits()) else {
                return Ok(());
            };
            state
                .active()
                .extend_index(capacity)
                .map_err(|e| self.poison(e))?;
            capacity
        };
        let result = self.state.write().active_mut().remap_index();
        tracing::trace!(dir = %self.config.dir.display(), capacity, "grew the active index");
        result.map_err(|e| self.poison(e))
    }

    /// How many of `records` the active segment takes, rolling first if it takes none.
    fn room_for(&self, records: &[NewRecord]) -> Result<usize, LogError> {
        let count = self.state.read().active().fits(records, self.limits());
        if count > 0 {
            return Ok(count);
        }
        self.roll()?;
        let count = self.state.read().active().fits(records, self.limits());
        assert!(count > 0, "an empty segment takes any valid record");
        Ok(count)
    }

    /// Encodes `records`, writes them at the end of the active store with no lock held, then
    /// records them (index entries, sizes) under the write lock.
    fn write_frames(&self, records: &[NewRecord], timestamp_ms: i64) -> Result<(), LogError> {
        let target = self.state.read().active().append_target();
        let mut buffers = EncodeBuffers::take();
        let EncodeBuffers { frames, timestamps } = &mut buffers;
        for (i, r) in records.iter().enumerate() {
            record::encode(frames, target.next + i as u64, timestamp_ms, r);
            timestamps.push(timestamp_ms);
        }
        let positions = segment::frame_positions(frames, target.next, records.len());
        assert!(
            positions.len() == records.len(),
            "encoded frames fail their own check"
        );
        let written = target.store.write_at(frames, target.position);
        let bytes = frames.len();
        if let Err(e) = written {
            buffers.give_back();
            let path = self
                .state
                .read()
                .active()
                .store_path()
                .display()
                .to_string();
            return Err(self.poison(LogError::io(format!("write {path}"), e)));
        }
        let mut state = self.state.write();
        let active = state.active_mut();
        active.commit_frames(target.position, &positions, &buffers.timestamps, bytes);
        self.publish(&state);
        drop(state);
        buffers.give_back();
        Ok(())
    }

    /// Seals the active segment (store synced, index sealed) and starts a new one at the next
    /// offset, then syncs the directory. No fsync under the state lock.
    fn roll(&self) -> Result<(), LogError> {
        self.roll_inner().map_err(|e| self.poison(e))
    }

    fn roll_inner(&self) -> Result<(), LogError> {
        let next = self.seal_active()?;
        let segment = Segment::create(self.disk.as_ref(), &self.config.dir, next, self.limits())?;
        self.sync_dir()?;
        self.state.write().segments.push(segment);
        Ok(())
    }

    /// Seals the active segment, holding the state lock only for in-memory steps: fsyncs the
    /// store (no lock), flushes the index and maps its entries anew (read lock), swaps the map
    /// and marks the segment sealed (write lock), then trims the index file, appends its seal
    /// trailer and syncs it (no lock). Returns the segment's next offset, now durable.
    fn seal_active(&self) -> Result<u64, LogError> {
        let (target, next) = {
            let state = self.state.read();
            if state.active().is_sealed() {
                return Ok(state.next());
            }
            (state.active().seal_target(), state.next())
        };
        let sync_context = || format!("sync {}", target.store_path.display());
        (target.store.sync_data()).map_err(|e| LogError::io(sync_context(), e))?;
        self.durable.fetch_max(next, Ordering::SeqCst);
        let prepared = self.state.read().active().prepare_seal()?;
        let entries_crc = prepared.entries_crc();
        let old_map = self.state.write().active_mut().install_seal(prepared);
        drop(old_map);
        Index::write_seal(
            target.index.as_ref(),
            target.base,
            target.entries,
            entries_crc,
        )
        .map_err(|e| LogError::io(format!("seal {}", target.index_path.display()), e))?;
        Ok(next)
    }

    /// Takes the `count` oldest segments out of the list (write lock, in memory), then removes
    /// their files, oldest first, syncing the directory after each (no lock).
    fn remove_oldest(&self, count: usize) -> Result<(), LogError> {
        if count == 0 {
            return Ok(());
        }
        let removed: Vec<Segment> = {
            let mut state = self.state.write();
            assert!(count < state.segments.len(), "the active segment stays");
            let removed = state.segments.drain(..count).collect();
            self.publish(&state);
            removed
        };
        removed
            .iter()
            .try_for_each(|segment| self.remove_segment_files(segment))
    }

    /// Removes a segment's store, then its index (an index without a store is dropped at open),
    /// and syncs the directory.
    fn remove_segment_files(&self, segment: &Segment) -> Result<(), LogError> {
        let result = (|| {
            for path in [segment.store_path(), segment.index_path()] {
                self.disk
                    .remove_file(path)
                    .map_err(|e| LogError::io(format!("remove {}", path.display()), e))?;
            }
            self.sync_dir()
        })();
        result.map_err(|e| self.poison(e))
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        sync_dir(self.disk.as_ref(), &self.config.dir)
    }

    fn publish(&self, state: &State) {
        self.lowest.store(state.lowest(), Ordering::SeqCst);
        self.next.store(state.next(), Ordering::SeqCst);
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>, LogError> {
        let state = self.state.read();
        if state.closed {
            return Err(LogError::Closed);
        }
        Ok(state)
    }

    /// Takes the writer lock of an open, unpoisoned log.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, LogError> {
        let writer = self.writer.lock();
        if self.state.read().closed {
            return Err(LogError::Closed);
        }
        self.check_not_poisoned()?;
        Ok(writer)
    }

    fn check_not_poisoned(&self) -> Result<(), LogError> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        let cause = self.poison_cause.lock().clone().unwrap_or_default();
        Err(LogError::Poisoned { cause })
    }

    /// Why the log stopped accepting writes (its first failed write or fsync), or None while it
    /// accepts them.
    pub fn poisoned(&self) -> Option<String> {
        let poisoned = self.poisoned.load(Ordering::SeqCst);
        poisoned.then(|| self.poison_cause.lock().clone().unwrap_or_default())
    }

    /// Poisons the log from outside (the committer, when a log task panicked).
    pub(crate) fn poison_with(&self, cause: String) -> LogError {
        self.poison(LogError::Poisoned { cause })
    }

    /// Records the first failure that poisons the log and hands the error back.
    fn poison(&self, err: LogError) -> LogError {
        let mut cause = self.poison_cause.lock();
        if cause.is_none() {
            *cause = Some(err.to_string());
        }
        self.poisoned.store(true, Ordering::SeqCst);
        err
    }
}

/// `BatchEmpty`, or `RecordTooLarge` for the first value over `max` bytes.
fn check_sizes(records: &[NewRecord], max: u32) -> Result<(), LogError> {
    if records.is_empty() {
        return Err(LogError::BatchEmpty);
    }
    match records
        .iter()
        .find(|r| r.value.len() as u64 > u64::from(max))
    {
        Some(r) => Err(LogError::RecordTooLarge {
            len: r.value.len() as u64,
            max,
        }),
        None => Ok(()),
    }
}

/// How many of the oldest `segments` retention drops (never the last): while the log is too
/// big, or the oldest's newest record too old.
fn expired_count(
    segments: &[Segment],
    bytes_max: Option<u64>,
    ms_max: Option<u64>,
    now_ms: i64,
) -> usize {
    let mut total: u64 = segments.iter().map(Segment::store_bytes).sum();
    let mut count = 0;
    while count + 1 < segments.len() && expired(&segments[count], total, bytes_max, ms_max, now_ms)
    {
        total -= segments[count].store_bytes();
        count += 1;
    }
    count
}

/// Whether retention drops `oldest` from a log of `total_bytes`: too big, or its newest record
/// too old by its checked index entry (one that fails its check keeps the segment).
fn expired(
    oldest: &Segment,
    total_bytes: u64,
    bytes_max: Option<u64>,
    ms_max: Option<u64>,
    now_ms: i64,
) -> bool {
    if bytes_max.is_some_and(|max| total_bytes > max) {
        return true;
    }
    let Some(max) = ms_max else {
        return false;
    };
    let cutoff = now_ms.saturating_sub(i64::try_from(max).unwrap_or(i64::MAX));
    match oldest.last_timestamp_ms() {
        Ok(newest) => newest.unwrap_or(i64::MAX) < cutoff,
        Err(error) => {
            tracing::warn!(%error, "retention keeps a segment whose newest timestamp fails its check");
            false
        }
    }
}

fn frame_bytes(record: &Record) -> usize {
    record::frame_len(record.value.len())
}

fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), LogError> {
    disk.sync_dir(dir)
        .map_err(|e| LogError::io(format!("sync {}", dir.display()), e))
}

/// The segment files found in a log's directory.
#[derive(Debug, Default)]
struct Listing {
    /// Base offsets of the segments with a store, ascending, and whether each has a format-1
    /// index.
    segments: Vec<(u64, bool)>,
    /// Index files without a store, removed.
    orphans: u32,
}

/// Lists the segments with a store file; removes index files (either format) without one.
fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Listing, LogError> {
    let names = disk
        .list_dir(dir)
        .map_err(|e| LogError::io(format!("list {}", dir.display()), e))?;
    let mut found: BTreeMap<u64, Vec<FileKind>> = BTreeMap::new();
    for (base, kind) in names.iter().filter_map(|n| segment::parse_file_name(n)) {
        found.entry(base).or_default().push(kind);
    }
    let mut listing = Listing::default();
    for (base, kinds) in found {
        if kinds.contains(&FileKind::Store) {
            listing
                .segments
                .push((base, kinds.contains(&FileKind::IndexV1)));
            continue;
        }
        for kind in kinds {
            let path = dir.join(segment::file_name(base, kind));
            disk.remove_file(&path)
                .map_err(|e| LogError::io(format!("remove {}", path.display()), e))?;
            listing.orphans += 1;
        }
    }
    Ok(listing)
}

/// Removes the format-1 indexes of `listing` (their format-2 replacements are durable: the
/// caller synced them and the directory) and syncs the directory. Returns how many.
fn remove_v1_indexes(disk: &dyn Disk, dir: &Path, listing: &Listing) -> Result<u32, LogError> {
    let v1: Vec<PathBuf> = (listing.segments.iter())
        .filter(|(_, v1)| *v1)
        .map(|(base, _)| dir.join(segment::file_name(*base, FileKind::IndexV1)))
        .collect();
    for path in &v1 {
        disk.remove_file(path)
            .map_err(|e| LogError::io(format!("remove {}", path.display()), e))?;
    }
    if !v1.is_empty() {
        sync_dir(disk, dir)?;
        tracing::info!(dir = %dir.display(), indexes = v1.len(), "upgraded indexes to format 2");
    }
    Ok(v1.len() as u32)
}

/// Opens every segment (the last one active) and checks that their offsets are dense. Returns
/// them and whether the last one had to be scanned (an unclean stop).
fn open_segments(
    disk: &dyn Disk,
    config: &LogConfig,
    listing: &Listing,
    limits: SegmentLimits,
    tail: &mut TailRules<'_>,
    report: &mut OpenReport,
) -> Result<(Vec<Segment>, bool), LogError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(listing.segments.len());
    let mut last_scanned = false;
    for (i, &(base, index_v1)) in listing.segments.iter().enumerate() {
        let next_base = listing.segments.get(i + 1).map(|(b, _)| *b);
        let (segment, recovery) =
            Segment::open(disk, &config.dir, base, limits, next_base, index_v1, tail)?;
        last_scanned = recovery != Recovery::Clean;
        count_recovery(report, recovery);
        if let Some(prev) = segments.last() {
            if prev.next() != base {
                return Err(LogError::Corrupt {
                    segment: prev.store_path().to_path_buf(),
                    position: prev.store_bytes(),
                    reason: format!(
                        "segment ends at offset {} but the next segment starts at {base}: \
                         records are missing",
                        prev.next()
                    ),
                });
            }
        }
        segments.push(segment);
    }
    Ok((segments, last_scanned))
}

fn count_recovery(report: &mut OpenReport, recovery: Recovery) {
    match recovery {
        Recovery::Clean => {}
        Recovery::Rebuilt { index_damaged, cut } => {
            report.segments_scanned += 1;
            report.indexes_damaged += u32::from(index_damaged);
            if let Some(cut) = cut {
                report.truncated_bytes += cut.bytes_dropped;
                report.tail_cut = Some(cut);
            }
        }
        Recovery::Damaged { unreadable_records } => {
            report.segments_scanned += 1;
            report.unreadable_records += unreadable_records;
        }
    }
}

/// The timestamp of the newest record in `segments` (i64::MIN when they hold none), from
/// checked index entries: the floor new timestamps are clamped to.
fn newest_timestamp_ms(segments: &[Segment]) -> Result<i64, LogError> {
    for segment in segments.iter().rev() {
        if let Some(ts) = segment.last_timestamp_ms()? {
            return Ok(ts);
        }
    }
    Ok(i64::MIN)
}

/// The clamp floor after a truncation: the last kept record's timestamp from its frame (CRC
/// covered), or the newest checked index entry before it when the active segment is empty.
fn floor_after_truncation(state: &State) -> Result<i64, LogError> {
    match state.active().frame_last_timestamp_ms()? {
        Some(ts) => Ok(ts),
        None => newest_timestamp_ms(&state.segments),
    }
}
