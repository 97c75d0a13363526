//! One segment: a store file of frames and its index, named by the segment's base offset.
//!
//! Appends write whole frames at the end of the store with one `write_at`. A sealed segment is
//! immutable. Opening a segment (see `recovery`) trusts its index when it is sealed and every
//! entry checks out, and otherwise scans the store, checking every frame's length, CRC and
//! offset, and rebuilds the index. Every frame read from disk is judged by the format's hard
//! limit (`RECORD_BYTES_LIMIT`), never by a configured one.

mod recovery;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::config::RECORD_BYTES_LIMIT;
use super::error::LogError;
use super::index::{self as index_file, EntryError, Index, IndexEntry, PreparedSeal, ENTRY_BYTES};
use super::record::{self, FrameError, NewRecord, Record, HEADER_BYTES};
use crate::io::{Disk, DiskFile, MapMut};

pub use recovery::{FrameId, Recovery, TailCut, TailKind, TailRules};

pub const STORE_SUFFIX: &str = ".store";
/// The index, format 2 (checksummed 24-byte entries, see `index`).
pub const INDEX_SUFFIX: &str = ".index2";
/// The index, format 1 (16-byte entries, no checksum): only read to be replaced.
pub const INDEX_V1_SUFFIX: &str = ".index";
const BASE_DIGITS: usize = 20;

/// Which file of a segment a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Store,
    Index,
    IndexV1,
}

/// `<base, 20 digits>.store`, `.index2` or `.index`.
pub fn file_name(base: u64, kind: FileKind) -> String {
    let suffix = match kind {
        FileKind::Store => STORE_SUFFIX,
        FileKind::Index => INDEX_SUFFIX,
        FileKind::IndexV1 => INDEX_V1_SUFFIX,
    };
    format!("{base:0width$}{suffix}", width = BASE_DIGITS)
}

/// The base offset and kind of a segment file name; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (digits, kind) = [
        (STORE_SUFFIX, FileKind::Store),
        (INDEX_SUFFIX, FileKind::Index),
        (INDEX_V1_SUFFIX, FileKind::IndexV1),
    ]
    .into_iter()
    .find_map(|(suffix, kind)| Some((name.strip_suffix(suffix)?, kind)))?;
    if digits.len() != BASE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

/// Limits a segment needs, copied from the log's config.
#[derive(Debug, Clone, Copy)]
pub struct SegmentLimits {
    pub store_bytes_max: u64,
    pub index_entries_max: u64,
    /// The configured `record_bytes_max` (only for `planted_bugs::open_with_configured_limit`).
    #[cfg(madsim)]
    pub record_bytes_max: u32,
}

#[derive(Debug)]
pub struct Segment {
    base: u64,
    next: u64,
    store_bytes: u64,
    store_path: PathBuf,
    index_path: PathBuf,
    store: Arc<dyn DiskFile>,
    index: Index,
    sealed: bool,
    /// Set when open found a bad frame inside this sealed segment: the records from it to the
    /// segment's end are unreadable (reads say so), the others are served.
    damage: Option<Damage>,
}

/// Where a sealed segment stops being readable.
#[derive(Debug, Clone)]
struct Damage {
    /// The first offset that cannot be read.
    offset: u64,
    /// Where its frame starts in the store.
    position: u64,
    reason: String,
}

/// Where the next append goes: taken under the log's state lock, used outside it.
#[derive(Debug, Clone)]
pub struct AppendTarget {
    pub store: Arc<dyn DiskFile>,
    /// The store's end, where the frames are written.
    pub position: u64,
    /// The offset of the first frame.
    pub next: u64,
}

/// What sealing needs from the disk, taken under the log's state lock, used outside it.
#[derive(Debug, Clone)]
pub struct SealTarget {
    pub store: Arc<dyn DiskFile>,
    pub index: Arc<dyn DiskFile>,
    pub store_path: PathBuf,
    pub index_path: PathBuf,
    pub base: u64,
    pub entries: u64,
}

impl Segment {
    /// Creates the files of a new, empty, active segment. The caller syncs the directory.
    pub fn create(
        disk: &dyn Disk,
        dir: &Path,
        base: u64,
        limits: SegmentLimits,
    ) -> Result<Segment, LogError> {
        let store_path = dir.join(file_name(base, FileKind::Store));
        let index_path = dir.join(file_name(base, FileKind::Index));
        let store = open_file(disk, &store_path, true)?;
        store
            .set_len(0)
            .map_err(|e| LogError::io(format!("truncate {}", store_path.display()), e))?;
        let file = open_file(disk, &index_path, true)?;
        let capacity = index_file::active_capacity(0, limits.index_entries_max);
        let index = Index::rebuild(file, base, &[], capacity)
            .map_err(|e| LogError::io(format!("create {}", index_path.display()), e))?;
        Ok(Segment {
            base,
            next: base,
            store_bytes: 0,
            store_path,
            index_path,
            store,
            index,
            sealed: false,
            damage: None,
        })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn is_empty(&self) -> bool {
        self.next == self.base
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    pub fn store_bytes(&self) -> u64 {
        self.store_bytes
    }

    pub fn store_path(&self) -> &Path {
        &self.store_path
    }

    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    pub fn store_file(&self) -> &Arc<dyn DiskFile> {
        &self.store
    }

    /// The newest record's timestamp from its checked index entry, if any.
    pub fn last_timestamp_ms(&self) -> Result<Option<i64>, LogError> {
        let last = self.index.last().map_err(|e| self.bad_entry(e))?;
        Ok(last.map(|e| e.timestamp_ms))
    }

    /// The first offset of this segment whose timestamp is >= `timestamp_ms` (or `next`),
    /// from checked index entries.
    pub fn first_at_or_after(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let i = (self.index)
            .first_at_or_after(timestamp_ms)
            .map_err(|e| self.bad_entry(e))?;
        Ok(self.base + i)
    }

    /// How many of `records` (a prefix) fit in this segment; 0 when the first does not. An
    /// empty active segment takes one record of any size (a replicated record may be larger
    /// than this node's segment: it is bounded by the format's limit only).
    pub fn fits(&self, records: &[NewRecord], limits: SegmentLimits) -> usize {
        if self.sealed {
            return 0;
        }
        let room_entries = limits.index_entries_max.saturating_sub(self.index.len());
        let mut bytes = self.store_bytes;
        let mut count = 0;
        for r in records
            .iter()
            .take(room_entries.min(usize::MAX as u64) as usize)
        {
            bytes += record::frame_len(r.value.len()) as u64;
            if bytes > limits.store_bytes_max && !(count == 0 && self.store_bytes == 0) {
                break;
            }
            count += 1;
        }
        count
    }

    /// Whether the segment can take no record at all (the index is full, or even an empty
    /// record would overflow the store).
    pub fn is_full(&self, limits: SegmentLimits) -> bool {
        self.sealed
            || self.index.len() >= limits.index_entries_max
            || self.store_bytes + HEADER_BYTES as u64 > limits.store_bytes_max
    }

    /// The capacity the active index must grow to before `more` entries are pushed (see
    /// `grow_index`), or `None` when they fit.
    pub fn index_growth(&self, more: u64, limits: SegmentLimits) -> Option<u64> {
        assert!(!self.sealed, "append to a sealed segment");
        self.index.grown_capacity(more, limits.index_entries_max)
    }

    /// Growing the active index, step 1 (`&self`: readers go on): extends its file.
    pub fn extend_index(&self, capacity: u64) -> Result<(), LogError> {
        (self.index.extend_file(capacity))
            .map_err(|e| LogError::io(format!("grow {}", self.index_path.display()), e))
    }

    /// Growing the active index, step 2 (a new map, no disk I/O): maps the extended file.
    pub fn remap_index(&mut self) -> Result<(), LogError> {
        (self.index.remap())
            .map_err(|e| LogError::io(format!("map {}", self.index_path.display()), e))
    }

    /// Where the next frames go (the caller writes them, then calls `commit_frames`).
    pub fn append_target(&self) -> AppendTarget {
        assert!(!self.sealed, "append to a sealed segment");
        AppendTarget {
            store: self.store.clone(),
            position: self.store_bytes,
            next: self.next,
        }
    }

    /// Records frames already written at `position` (the store's end): `positions` are their
    /// starts relative to it, `timestamps` theirs, `bytes` their total length.
    pub fn commit_frames(
        &mut self,
        position: u64,
        positions: &[usize],
        timestamps: &[i64],
        bytes: usize,
    ) {
        assert!(!self.sealed, "append to a sealed segment");
        assert_eq!(
            position, self.store_bytes,
            "frames written past the store's end"
        );
        assert_eq!(positions.len(), timestamps.len());
        for (rel, ts) in positions.iter().zip(timestamps) {
            self.index.push(IndexEntry {
                position: position + *rel as u64,
                timestamp_ms: *ts,
            });
        }
        self.store_bytes += bytes as u64;
        self.next += timestamps.len() as u64;
    }

    /// Reads up to `max_records` consecutive records from `offset` (which this segment holds)
    /// with one read, stopping before `max_bytes` except that the first record is always
    /// returned.
    pub fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let (readable_next, readable_bytes) = self.readable_end();
        if let Some(damage) = self.damage.as_ref().filter(|_| offset >= readable_next) {
            return Err(self.corrupt(
                damage.position,
                format!(
                    "record {offset} is unreadable: the segment is damaged from offset {} ({})",
                    damage.offset, damage.reason
                ),
            ));
        }
        let first = offset - self.base;
        let start = self.entry(first)?.position;
        let mut end = start;
        let mut count = 0u64;
        let available = (readable_next - offset).min(max_records.max(1) as u64);
        while count < available {
            let following = first + count + 1;
            let frame_end = match self.index.get(following).map_err(|e| self.bad_entry(e))? {
                Some(e) if following < readable_next - self.base => e.position,
                _ => readable_bytes,
            };
            if frame_end <= end || frame_end > readable_bytes {
                return Err(self.corrupt(end, format!("index entry {following} is out of order")));
            }
            if count > 0 && frame_end - start > max_bytes as u64 {
                break;
            }
            end = frame_end;
            count += 1;
        }
        let buf = self.read_range(start, end)?;
        self.decode_all(buf, start, offset, count as usize)
    }

    /// Checks that the last record reads back whole (length, CRC, offset), that its frame
    /// ends exactly where the store does and that its index entry has its timestamp: after a
    /// truncation whose cut point came from the index, a damaged index entry shows up here
    /// instead of as a hole, garbage or a wrong timestamp floor later.
    pub fn check_tail(&self) -> Result<(), LogError> {
        let Some((timestamp_ms, entry)) = self.read_tail()? else {
            return Ok(());
        };
        if timestamp_ms != entry.timestamp_ms {
            return Err(self.corrupt(
                entry.position,
                format!(
                    "the index gives record {} timestamp {} but its frame holds {timestamp_ms}",
                    self.next - 1,
                    entry.timestamp_ms
                ),
            ));
        }
        Ok(())
    }

    /// The last record's timestamp as its frame (whose CRC covers it) holds it, `None` when the
    /// segment is empty; the frame is checked as `check_tail` checks it.
    pub fn frame_last_timestamp_ms(&self) -> Result<Option<i64>, LogError> {
        Ok(self.read_tail()?.map(|(timestamp_ms, _)| timestamp_ms))
    }

    /// The last record's timestamp from its frame and its index entry, once the frame reads
    /// back whole, holds that record and ends where the store does.
    fn read_tail(&self) -> Result<Option<(i64, IndexEntry)>, LogError> {
        if let Some(damage) = self.damage.as_ref().filter(|d| d.offset < self.next) {
            return Err(self.corrupt(damage.position, damage.reason.clone()));
        }
        if self.next == self.base {
            if self.store_bytes != 0 {
                return Err(self.corrupt(0, "an empty segment has bytes in its store".into()));
            }
            return Ok(None);
        }
        let last = self.next - 1;
        let entry = self.entry(last - self.base)?;
        let start = entry.position;
        if start >= self.store_bytes {
            return Err(self.corrupt(
                start,
                format!("index entry of record {last} is past the store's end"),
            ));
        }
        let buf = self.read_range(start, self.store_bytes)?;
        let (record, frame_bytes) = record::decode(&buf, RECORD_BYTES_LIMIT)
            .map_err(|e| self.corrupt(start, e.to_string()))?;
        if record.offset != last || frame_bytes != buf.len() {
            return Err(self.corrupt(
                start,
                format!(
                    "the last frame holds record {} of {frame_bytes} bytes, expected record {last} of {} bytes",
                    record.offset,
                    buf.len()
                ),
            ));
        }
        Ok(Some((record.timestamp_ms, entry)))
    }

    fn read_range(&self, start: u64, end: u64) -> Result<Bytes, LogError> {
        let len = usize::try_from(end - start)
            .map_err(|_| self.corrupt(start, "read range too large".into()))?;
        let mut buf = BytesMut::zeroed(len);
        let n = self
            .store
            .read_at(&mut buf, start)
            .map_err(|e| LogError::io(format!("read {}", self.store_path.display()), e))?;
        if n < len {
            return Err(self.corrupt(
                start + n as u64,
                format!(
                    "store ends at {} but the index expects {end}",
                    start + n as u64
                ),
            ));
        }
        Ok(buf.freeze())
    }

    fn decode_all(
        &self,
        mut buf: Bytes,
        start: u64,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut records = Vec::with_capacity(count);
        let mut position = start;
        for i in 0..count as u64 {
            let (rec, n) = record::decode(&buf, RECORD_BYTES_LIMIT)
                .map_err(|e| self.corrupt(position, e.to_string()))?;
            if rec.offset != offset + i {
                let err = FrameError::WrongOffset {
                    found: rec.offset,
                    expected: offset + i,
                };
                return Err(self.corrupt(position, err.to_string()));
            }
            records.push(rec);
            buf = buf.slice(n..);
            position += n as u64;
        }
        Ok(records)
    }

    fn entry(&self, i: u64) -> Result<IndexEntry, LogError> {
        match self.index.get(i) {
            Ok(Some(entry)) => Ok(entry),
            Ok(None) => Err(LogError::Corrupt {
                segment: self.index_path.clone(),
                position: i * ENTRY_BYTES,
                reason: format!("index entry {i} is missing"),
            }),
            Err(e) => Err(self.bad_entry(e)),
        }
    }

    /// A bad index entry: `Corrupt`, naming the index file and the entry's position.
    fn bad_entry(&self, error: EntryError) -> LogError {
        let entry = match error {
            EntryError::BadChecksum { entry } | EntryError::Reserved { entry } => entry,
            EntryError::SealMismatch { entries } => entries,
        };
        LogError::Corrupt {
            segment: self.index_path.clone(),
            position: entry * ENTRY_BYTES,
            reason: error.to_string(),
        }
    }

    fn corrupt(&self, position: u64, reason: String) -> LogError {
        LogError::Corrupt {
            segment: self.store_path.clone(),
            position,
            reason,
        }
    }

    /// Makes the store's bytes durable.
    pub fn sync(&self) -> Result<(), LogError> {
        self.store
            .sync_data()
            .map_err(|e| LogError::io(format!("sync {}", self.store_path.display()), e))
    }

    /// One past the last offset that can be read, and where its frame ends.
    fn readable_end(&self) -> (u64, u64) {
        match &self.damage {
            Some(d) => (d.offset, d.position),
            None => (self.next, self.store_bytes),
        }
    }

    /// What sealing this (active) segment needs, for the steps done outside the log's lock.
    pub fn seal_target(&self) -> SealTarget {
        SealTarget {
            store: self.store.clone(),
            index: self.index.file().clone(),
            store_path: self.store_path.clone(),
            index_path: self.index_path.clone(),
            base: self.base,
            entries: self.index.len(),
        }
    }

    /// Sealing, step 1 (`&self`: readers go on): see `Index::prepare_seal`.
    pub fn prepare_seal(&self) -> Result<PreparedSeal, LogError> {
        (self.index.prepare_seal())
            .map_err(|e| LogError::io(format!("flush {}", self.index_path.display()), e))
    }

    /// Sealing, step 2 (in memory): the segment takes no more appends; returns the index's old
    /// map, for the caller to drop before `Index::write_seal`.
    pub fn install_seal(&mut self, prepared: PreparedSeal) -> Option<Box<dyn MapMut>> {
        self.sealed = true;
        self.index.install_seal(prepared)
    }

    /// Drops the records at `offset` and after (`offset` in `base..=next`), syncs the store and
    /// makes the segment active again if it was sealed.
    pub fn truncate_from(&mut self, offset: u64, limits: SegmentLimits) -> Result<(), LogError> {
        assert!(self.base <= offset && offset <= self.next);
        if self.sealed {
            let capacity = index_file::active_capacity(self.index.len(), limits.index_entries_max);
            self.index
                .unseal(capacity)
                .map_err(|e| LogError::io(format!("grow {}", self.index_path.display()), e))?;
            self.sealed = false;
        }
        let keep = offset - self.base;
        let cut_at = match self.index.get(keep).map_err(|e| self.bad_entry(e))? {
            Some(e) => e.position,
            None => self.store_bytes,
        };
        if cut_at > self.store_bytes {
            // Cutting there would grow the file instead.
            return Err(self.corrupt(
                cut_at,
                format!(
                    "index entry {keep} points past the store's end ({})",
                    self.store_bytes
                ),
            ));
        }
        let context = || format!("truncate {}", self.store_path.display());
        self.store
            .set_len(cut_at)
            .map_err(|e| LogError::io(context(), e))?;
        self.store
            .sync_data()
            .map_err(|e| LogError::io(context(), e))?;
        self.index.truncate(keep);
        self.store_bytes = cut_at;
        self.next = offset;
        Ok(())
    }
}

/// The start of each frame in `frames`, checking each one (length against the format's limit,
/// CRC, expected offset). Stops at the first frame that fails, so a short result means a bad
/// buffer.
pub fn frame_positions(frames: &[u8], first_offset: u64, count: usize) -> Vec<usize> {
    let mut positions = Vec::with_capacity(count);
    let mut at = 0;
    while at < frames.len() {
        match record::check(&frames[at..], RECORD_BYTES_LIMIT) {
            Ok(h) if h.offset == first_offset + positions.len() as u64 => {
                positions.push(at);
                at += h.frame_bytes;
            }
            _ => break,
        }
    }
    if at != frames.len() {
        positions.clear();
    }
    positions
}

fn open_file(disk: &dyn Disk, path: &Path, create: bool) -> Result<Arc<dyn DiskFile>, LogError> {
    disk.open(path, create)
        .map_err(|e| LogError::io(format!("open {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_and_parse_back() {
        assert_eq!(file_name(42, FileKind::Store), "00000000000000000042.store");
        assert_eq!(
            file_name(u64::MAX, FileKind::Index),
            "18446744073709551615.index2"
        );
        assert_eq!(
            parse_file_name("00000000000000000042.store"),
            Some((42, FileKind::Store))
        );
        assert_eq!(
            parse_file_name("18446744073709551615.index2"),
            Some((u64::MAX, FileKind::Index))
        );
        assert_eq!(
            parse_file_name("00000000000000000007.index"),
            Some((7, FileKind::IndexV1))
        );
    }

    #[test]
    fn other_names_are_ignored() {
        for name in [
            "42.store",
            "0000000000000000042.store",
            "000000000000000000042.store",
            "00000000000000000042.store.tmp",
            "0000000000000000004a.store",
            "+0000000000000000042.index",
            "99999999999999999999.index",
            "00000000000000000042.index3",
            "00000000000000000042.index22",
            "00000000000000000042.log",
            "",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }
}
