//! The segmented log: a list of segments behind a reader-writer lock.
//!
//! Appends, rolls and truncations take the lock for writing; reads take it for reading (so
//! readers run beside each other and see whole appends). `sync` holds the lock only to pick the
//! active store file and the next offset, and fsyncs outside it, so appends go on while an fsync
//! is in flight. Any failed write, fsync or resize poisons the log: later writes are refused
//! until it is reopened, which recovers from what is on disk.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use super::index::ENTRY_BYTES;
use super::record::{self, NewRecord, Record};
use super::segment::{self, FileKind, Recovery, Segment, SegmentLimits};
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

/// What `Log::open` found, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments whose index was rebuilt by scanning the store.
    pub segments_scanned: u32,
    /// Bytes of torn or corrupt tail cut off the last segment.
    pub truncated_bytes: u64,
    /// Index files without a store, removed.
    pub orphan_indexes_removed: u32,
    /// Records in sealed segments made unreadable by a bad frame (bit rot): they read as
    /// `Corrupt`; the rest of the log is served.
    pub unreadable_records: u64,
}

#[derive(Debug)]
pub struct Log {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    config: LogConfig,
    limits: SegmentLimits,
    state: RwLock<State>,
    lowest: AtomicU64,
    next: AtomicU64,
    durable: AtomicU64,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    open_report: OpenReport,
    /// Successful `sync` calls (each one fsync), for benchmarks and tests.
    syncs: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Ordered by base offset, dense: each segment's `next` is the following one's base. Never
    /// empty while open; the last one is the active segment.
    segments: Vec<Segment>,
    closed: bool,
    /// The newest timestamp given to a record; new ones are clamped to at least this.
    last_timestamp_ms: i64,
    /// Bumped by every truncate_from, so a sync that raced one does not publish a stale offset.
    truncations: u64,
    /// Reused encode buffer.
    frames: Vec<u8>,
    timestamps: Vec<i64>,
}

/// An encode buffer larger than this is released after the append that grew it.
const FRAMES_BUFFER_KEEP_BYTES: usize = 16 << 20;

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
    /// Opens (or creates) the log in `config.dir`, recovering from a crash: a torn or corrupt
    /// tail of the last segment is cut off and stale indexes are rebuilt.
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Result<Log, LogError> {
        config.validate()?;
        let limits = SegmentLimits {
            store_bytes_max: config.segment_bytes_max,
            index_entries_max: config.index_bytes_max / ENTRY_BYTES,
            record_bytes_max: config.record_bytes_max,
        };
        let dir = config.dir.clone();
        crate::io::create_dir_durable(disk.as_ref(), &dir)
            .map_err(|e| LogError::io(format!("create {}", dir.display()), e))?;
        let (bases, orphans) = list_segments(disk.as_ref(), &dir)?;
        let mut report = OpenReport {
            orphan_indexes_removed: orphans,
            ..OpenReport::default()
        };
        let segments = if bases.is_empty() {
            vec![Segment::create(
                disk.as_ref(),
                &dir,
                config.initial_offset,
                limits,
            )?]
        } else {
            open_segments(disk.as_ref(), &dir, &bases, limits, &mut report)?
        };
        let active = segments.last().expect("at least one segment");
        active.sync()?;
        disk.sync_dir(&dir)
            .map_err(|e| LogError::io(format!("sync {}", dir.display()), e))?;
        let last_timestamp_ms = newest_timestamp_ms(&segments);
        let state = State {
            segments,
            closed: false,
            last_timestamp_ms,
            truncations: 0,
            frames: Vec::new(),
            timestamps: Vec::new(),
        };
        let (lowest, next) = (state.lowest(), state.next());
        Ok(Log {
            disk,
            clock,
            config,
            limits,
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

    /// Appends `records` (all or none pass validation first) and returns their offsets. Does not
    /// sync: call `sync` (or append through a `Committer`) for durability.
    pub fn append(&self, records: &[NewRecord]) -> Result<Range<u64>, LogError> {
        self.validate(records)?;
        let mut state = self.write_state()?;
        let timestamp_ms = self.clock.now_ms().max(state.last_timestamp_ms);
        self.append_locked(&mut state, records, timestamp_ms)
    }

    /// Appends one record at `offset`, which must be the log's next offset, with the leader's
    /// term (in `record`) and timestamp (clamped so timestamps never decrease): for replication.
    pub fn append_at(
        &self,
        offset: u64,
        record: &NewRecord,
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        let records = std::slice::from_ref(record);
        self.validate(records)?;
        let mut state = self.write_state()?;
        let next = state.next();
        if offset != next {
            return Err(LogError::NonContiguous {
                expected: next,
                got: offset,
            });
        }
        let timestamp_ms = timestamp_ms.max(state.last_timestamp_ms);
        self.append_locked(&mut state, records, timestamp_ms)
            .map(|_| ())
    }

    /// Appends `records` at `first`, which must be the log's next offset, all with one
    /// timestamp (clamped so timestamps never decrease): a replicated batch in one write per
    /// segment. Returns their offsets.
    pub fn append_batch_at(
        &self,
        first: u64,
        records: &[NewRecord],
        timestamp_ms: i64,
    ) -> Result<Range<u64>, LogError> {
        self.validate(records)?;
        let mut state = self.write_state()?;
        let next = state.next();
        if first != next {
            return Err(LogError::NonContiguous {
                expected: next,
                got: first,
            });
        }
        let timestamp_ms = timestamp_ms.max(state.last_timestamp_ms);
        self.append_locked(&mut state, records, timestamp_ms)
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
        let state = self.read_state()?;
        state.active().check_tail(self.config.record_bytes_max)
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
        let (max_records, record_bytes_max) = (max_records.max(1), self.config.record_bytes_max);
        let i = state.segments.partition_point(|s| s.base() <= offset) - 1;
        let mut records =
            state.segments[i].read(offset, max_records, max_bytes, record_bytes_max)?;
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
            let Ok(more) = segment.read(
                segment.base(),
                max_records - records.len(),
                room,
                record_bytes_max,
            ) else {
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
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let state = self.read_state()?;
        let i = state
            .segments
            .partition_point(|s| s.last_timestamp_ms().is_some_and(|t| t < timestamp_ms));
        Ok(match state.segments.get(i) {
            Some(segment) => segment.first_at_or_after(timestamp_ms),
            None => state.next(),
        })
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
        let mut state = self.write_state()?;
        while state.segments.len() > 1 && state.segments[0].next() <= offset {
            self.remove_oldest(&mut state)?;
        }
        Ok(())
    }

    /// Keeps the offsets <= `offset`: `truncate_from(offset + 1)`.
    pub fn truncate_after(&self, offset: u64) -> Result<(), LogError> {
        self.truncate_from(offset.saturating_add(1))
    }

    /// Drops the records at `offset` and after (an uncommitted suffix, for Raft), durably:
    /// later segments are removed newest first, the directory synced after each removal, then
    /// the segment holding `offset` is cut and synced. `offset` must be in `lowest..=next`.
    pub fn truncate_from(&self, offset: u64) -> Result<(), LogError> {
        let mut state = self.write_state()?;
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
        let result = state.active_mut().truncate_from(offset, self.limits);
        // The clamp floor goes back to the newest record kept, as `open` would compute it: a
        // replica that truncated a suffix stamped by a leader with a fast clock must stamp what
        // replaces it as every other replica does (timestamps agree across replicas). The floor
        // comes from the kept record's frame, whose CRC covers it, not from its index entry,
        // which no CRC covers (a flipped bit there made a replica diverge: seed 70904).
        state.last_timestamp_ms = newest_timestamp_ms(&state.segments);
        let result = result.and_then(|()| {
            let frame = (state.active()).frame_last_timestamp_ms(self.config.record_bytes_max)?;
            state.last_timestamp_ms = frame.unwrap_or(state.last_timestamp_ms);
            Ok(())
        });
        self.publish(&state);
        result.map_err(|e| self.poison(e))
    }

    /// Drops every record and restarts the log, empty, at `next_offset` (so `lowest_offset()` =
    /// `next_offset()` = `next_offset`), durably: the segments are removed oldest first, the
    /// directory synced after each removal (a crash leaves a dense suffix, which opens), then a
    /// fresh segment is created at `next_offset` and the directory synced. For Raft, when a
    /// snapshot moves a replica past its whole log. A crash part-way leaves a log that opens but
    /// may start anywhere at or below `next_offset`: the caller persists its intent and calls
    /// `reset` again after reopening. Any failure poisons the log.
    pub fn reset(&self, next_offset: u64) -> Result<(), LogError> {
        let mut state = self.write_state()?;
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
            self.limits,
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
        let now_ms = self.clock.now_ms();
        let mut total: u64 = state.segments.iter().map(Segment::store_bytes).sum();
        let mut keep = 0;
        while keep + 1 < state.segments.len()
            && expired(&state.segments[keep], total, bytes_max, ms_max, now_ms)
        {
            total -= state.segments[keep].store_bytes();
            keep += 1;
        }
        state.segments[keep].base()
    }

    /// Drops the oldest segments (never the active one) while the log is larger than
    /// `retention_bytes_max` or their newest record is older than `retention_ms_max`. Returns
    /// how many were dropped.
    pub fn apply_retention(&self) -> Result<u32, LogError> {
        let mut state = self.write_state()?;
        let now_ms = self.clock.now_ms();
        let mut dropped = 0;
        while state.segments.len() > 1 && self.expired(&state, now_ms) {
            self.remove_oldest(&mut state)?;
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Syncs, seals the active segment (index trimmed) and closes the files: the next open needs
    /// no scan. Later calls return `Closed`; closing twice is fine.
    pub fn close(&self) -> Result<(), LogError> {
        let mut state = self.state.write();
        if state.closed {
            return Ok(());
        }
        let result = self.close_locked(&mut state);
        state.closed = true;
        state.segments.clear();
        result
    }

    fn close_locked(&self, state: &mut State) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        let active = state.active();
        if active.is_full(self.limits) && !active.is_empty() {
            self.roll(state)?;
        }
        state.active_mut().seal().map_err(|e| self.poison(e))?;
        self.durable.fetch_max(state.next(), Ordering::SeqCst);
        Ok(())
    }

    /// Checks a batch against the limits without appending it: `BatchEmpty`, `RecordTooLarge`.
    pub fn validate(&self, records: &[NewRecord]) -> Result<(), LogError> {
        if records.is_empty() {
            return Err(LogError::BatchEmpty);
        }
        let max = self.config.record_bytes_max;
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

    /// Writes `records` into the active segment, rolling as needed: one write per segment.
    fn append_locked(
        &self,
        state: &mut State,
        records: &[NewRecord],
        timestamp_ms: i64,
    ) -> Result<Range<u64>, LogError> {
        let first = state.next();
        let mut rest = records;
        while !rest.is_empty() {
            let mut count = state.active().fits(rest, self.limits);
            if count == 0 {
                self.roll(state)?;
                count = state.active().fits(rest, self.limits);
                assert!(count > 0, "an empty segment takes any valid record");
            }
            self.write_frames(state, &rest[..count], timestamp_ms)?;
            rest = &rest[count..];
        }
        state.last_timestamp_ms = timestamp_ms;
        self.publish(state);
        Ok(first..state.next())
    }

    fn write_frames(
        &self,
        state: &mut State,
        records: &[NewRecord],
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        let State {
            segments,
            frames,
            timestamps,
            ..
        } = state;
        let active = segments.last_mut().expect("an open log has a segment");
        frames.clear();
        timestamps.clear();
        for (i, r) in records.iter().enumerate() {
            record::encode(frames, active.next() + i as u64, timestamp_ms, r);
            timestamps.push(timestamp_ms);
        }
        let result = active.append_frames(frames, timestamps, self.config.record_bytes_max);
        if frames.capacity() > FRAMES_BUFFER_KEEP_BYTES {
            *frames = Vec::new();
        }
        result.map_err(|e| self.poison(e))
    }

    /// Seals the active segment (store synced, index trimmed) and starts a new one at the next
    /// offset, then syncs the directory.
    fn roll(&self, state: &mut State) -> Result<(), LogError> {
        let result = self.roll_inner(state);
        result.map_err(|e| self.poison(e))
    }

    fn roll_inner(&self, state: &mut State) -> Result<(), LogError> {
        let next = state.next();
        state.active_mut().seal()?;
        let segment = Segment::create(self.disk.as_ref(), &self.config.dir, next, self.limits)?;
        state.segments.push(segment);
        self.sync_dir()?;
        self.durable.fetch_max(next, Ordering::SeqCst);
        Ok(())
    }

    fn remove_oldest(&self, state: &mut State) -> Result<(), LogError> {
        let segment = state.segments.remove(0);
        let result = self.remove_segment_files(&segment);
        self.publish(state);
        result
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

    fn expired(&self, state: &State, now_ms: i64) -> bool {
        let total = state.segments.iter().map(Segment::store_bytes).sum::<u64>();
        expired(
            &state.segments[0],
            total,
            self.config.retention_bytes_max,
            self.config.retention_ms_max,
            now_ms,
        )
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        let dir = &self.config.dir;
        self.disk
            .sync_dir(dir)
            .map_err(|e| LogError::io(format!("sync {}", dir.display()), e))
    }

    fn publish(&self, state: &State) {
        self.lowest.store(state.lowest(), Ordering::SeqCst);
        self.next.store(state.next(), Ordering::SeqCst);
    }

    fn read_state(&self) -> Result<parking_lot::RwLockReadGuard<'_, State>, LogError> {
        let state = self.state.read();
        if state.closed {
            return Err(LogError::Closed);
        }
        Ok(state)
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>, LogError> {
        let state = self.state.write();
        if state.closed {
            return Err(LogError::Closed);
        }
        self.check_not_poisoned()?;
        Ok(state)
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

/// Whether retention drops `oldest` from a log of `total_bytes`: too big, or its newest record
/// too old.
fn expired(
    oldest: &Segment,
    total_bytes: u64,
    bytes_max: Option<u64>,
    ms_max: Option<u64>,
    now_ms: i64,
) -> bool {
    let too_big = bytes_max.is_some_and(|max| total_bytes > max);
    let too_old = ms_max.is_some_and(|max| {
        let newest = oldest.last_timestamp_ms().unwrap_or(i64::MAX);
        newest < now_ms.saturating_sub(i64::try_from(max).unwrap_or(i64::MAX))
    });
    too_big || too_old
}

fn frame_bytes(record: &Record) -> usize {
    record::frame_len(record.value.len())
}

/// The base offsets of the segments with a store file, ascending; removes index files that have
/// no store (returning how many).
fn list_segments(disk: &dyn Disk, dir: &std::path::Path) -> Result<(Vec<u64>, u32), LogError> {
    let names = disk
        .list_dir(dir)
        .map_err(|e| LogError::io(format!("list {}", dir.display()), e))?;
    let mut found: BTreeMap<u64, (bool, bool)> = BTreeMap::new();
    for name in &names {
        if let Some((base, kind)) = segment::parse_file_name(name) {
            let entry = found.entry(base).or_default();
            match kind {
                FileKind::Store => entry.0 = true,
                FileKind::Index => entry.1 = true,
            }
        }
    }
    let mut orphans = 0;
    for (&base, _) in found.iter().filter(|(_, (store, _))| !store) {
        let path = dir.join(segment::file_name(base, FileKind::Index));
        disk.remove_file(&path)
            .map_err(|e| LogError::io(format!("remove {}", path.display()), e))?;
        orphans += 1;
    }
    let bases = found
        .into_iter()
        .filter(|(_, (store, _))| *store)
        .map(|(base, _)| base)
        .collect();
    Ok((bases, orphans))
}

/// Opens every segment (the last one active) and checks that their offsets are dense.
fn open_segments(
    disk: &dyn Disk,
    dir: &std::path::Path,
    bases: &[u64],
    limits: SegmentLimits,
    report: &mut OpenReport,
) -> Result<Vec<Segment>, LogError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let (segment, recovery) = Segment::open(disk, dir, base, limits, next_base)?;
        match recovery {
            Recovery::Clean => {}
            Recovery::Rebuilt { truncated_bytes } => {
                report.segments_scanned += 1;
                report.truncated_bytes += truncated_bytes;
            }
            Recovery::Damaged { unreadable_records } => {
                report.segments_scanned += 1;
                report.unreadable_records += unreadable_records;
            }
        }
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
    Ok(segments)
}

/// The timestamp of the newest record in `segments` (i64::MIN when they hold none): the floor new
/// timestamps are clamped to.
fn newest_timestamp_ms(segments: &[Segment]) -> i64 {
    segments
        .iter()
        .rev()
        .find_map(Segment::last_timestamp_ms)
        .unwrap_or(i64::MIN)
}
