//! One segment: a store file of frames and its index, named by the segment's base offset.
//!
//! Appends write whole frames at the end of the store with one `write_at`. A sealed segment is
//! immutable. Opening a segment trusts its index when it looks cleanly closed (see
//! `trusted_entries`) and otherwise scans the store in large chunks, checking every frame's length,
//! CRC and offset, and rebuilds the index.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::LogError;
use super::index::{Index, IndexEntry, ENTRY_BYTES};
use super::record::{self, FrameError, NewRecord, Record, HEADER_BYTES};
use crate::io::{Disk, DiskFile};

pub const STORE_SUFFIX: &str = ".store";
pub const INDEX_SUFFIX: &str = ".index";
const BASE_DIGITS: usize = 20;
/// The chunk size of recovery scans.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Which file of a segment a name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Store,
    Index,
}

/// `<base, 20 digits>.store` or `.index`.
pub fn file_name(base: u64, kind: FileKind) -> String {
    let suffix = match kind {
        FileKind::Store => STORE_SUFFIX,
        FileKind::Index => INDEX_SUFFIX,
    };
    format!("{base:0width$}{suffix}", width = BASE_DIGITS)
}

/// The base offset and kind of a segment file name; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (digits, kind) = if let Some(d) = name.strip_suffix(STORE_SUFFIX) {
        (d, FileKind::Store)
    } else {
        (name.strip_suffix(INDEX_SUFFIX)?, FileKind::Index)
    };
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

/// What opening a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The index was trusted as it was.
    Clean,
    /// The store was scanned and the index rebuilt; `truncated_bytes` of torn or corrupt tail
    /// were cut off the store.
    Rebuilt { truncated_bytes: u64 },
    /// A sealed segment had a bad frame: the records before it are served, the ones from it to
    /// the segment's end answer `Corrupt`. Nothing was cut (a sealed segment was fsync'd, so the
    /// damage is the medium's, not a torn write's).
    Damaged { unreadable_records: u64 },
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
        let index_file = open_file(disk, &index_path, true)?;
        let index = Index::rebuild(index_file, &[], limits.index_entries_max)
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

    /// Opens an existing segment, recovering it if its index cannot be trusted. `next_base` is
    /// the following segment's base offset, `None` for the last segment: that one is active (its
    /// index is grown to the full size and mapped for appends), and only it may have a torn tail
    /// cut off.
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        base: u64,
        limits: SegmentLimits,
        next_base: Option<u64>,
    ) -> Result<(Segment, Recovery), LogError> {
        let active = next_base.is_none();
        let store_path = dir.join(file_name(base, FileKind::Store));
        let index_path = dir.join(file_name(base, FileKind::Index));
        let store = open_file(disk, &store_path, false)?;
        let store_bytes = store
            .len()
            .map_err(|e| LogError::io(format!("stat {}", store_path.display()), e))?;
        let index_file = open_file(disk, &index_path, true)?;
        let index_bytes = index_file
            .len()
            .map_err(|e| LogError::io(format!("stat {}", index_path.display()), e))?;
        let mut segment = Segment {
            base,
            next: base,
            store_bytes,
            store_path,
            index_path,
            store,
            index: Index::map(index_file.clone(), 0, 0)
                .map_err(|e| LogError::io("map an empty index", e))?,
            sealed: !active,
            damage: None,
        };
        let clean = segment.trusted_entries(&index_file, index_bytes, limits, active)?;
        let recovery = match clean {
            Some(entries) => {
                segment.map_trusted(index_file, entries, limits, active)?;
                Recovery::Clean
            }
            None => segment.rebuild(index_file, limits, next_base)?,
        };
        Ok((segment, recovery))
    }

    /// `Some(entries)` when the index on disk can be used as it is: a whole number of entries,
    /// shorter than the pre-grown size if this is the last segment (so it was truncated by a
    /// seal), the first entry at position 0 and the last entry's frame header naming the right
    /// offset and timestamp and ending exactly at the store's end.
    fn trusted_entries(
        &self,
        index_file: &Arc<dyn DiskFile>,
        index_bytes: u64,
        limits: SegmentLimits,
        active: bool,
    ) -> Result<Option<u64>, LogError> {
        let max_bytes = limits.index_entries_max * ENTRY_BYTES;
        if index_bytes % ENTRY_BYTES != 0 || (active && index_bytes >= max_bytes) {
            return Ok(None);
        }
        let entries = index_bytes / ENTRY_BYTES;
        if entries == 0 {
            return Ok((self.store_bytes == 0).then_some(0));
        }
        let read_entry = |i: u64| -> Result<IndexEntry, LogError> {
            let mut buf = [0u8; ENTRY_BYTES as usize];
            read_exact_at(
                index_file.as_ref(),
                &mut buf,
                i * ENTRY_BYTES,
                &self.index_path,
            )?;
            Ok(IndexEntry::decode(&buf))
        };
        let (first, last) = (read_entry(0)?, read_entry(entries - 1)?);
        if first.position != 0 || last.position >= self.store_bytes {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_BYTES];
        let n = self
            .store
            .read_at(&mut header, last.position)
            .map_err(|e| LogError::io(format!("read {}", self.store_path.display()), e))?;
        let consistent = record::peek_header(&header[..n]).is_some_and(|h| {
            h.offset == self.base + entries - 1
                && h.timestamp_ms == last.timestamp_ms
                && last.position + h.frame_bytes as u64 == self.store_bytes
        });
        Ok(consistent.then_some(entries))
    }

    fn map_trusted(
        &mut self,
        index_file: Arc<dyn DiskFile>,
        entries: u64,
        limits: SegmentLimits,
        active: bool,
    ) -> Result<(), LogError> {
        let context = || format!("map {}", self.index_path.display());
        self.index =
            Index::map(index_file, entries, entries).map_err(|e| LogError::io(context(), e))?;
        if active {
            self.index
                .unseal(limits.index_entries_max)
                .map_err(|e| LogError::io(context(), e))?;
        }
        self.next = self.base + entries;
        Ok(())
    }

    /// Scans the store from the start, keeps the longest prefix of valid frames with dense
    /// offsets, cuts the rest off (active segment only) and rebuilds the index.
    fn rebuild(
        &mut self,
        index_file: Arc<dyn DiskFile>,
        limits: SegmentLimits,
        next_base: Option<u64>,
    ) -> Result<Recovery, LogError> {
        let active = next_base.is_none();
        let (entries, valid_bytes, bad) = self.scan(limits.record_bytes_max)?;
        let truncated_bytes = self.store_bytes - valid_bytes;
        if let (Some(next_base), true) = (next_base, truncated_bytes > 0) {
            return self.open_damaged(index_file, entries, valid_bytes, bad, next_base);
        }
        if truncated_bytes > 0 {
            let context = || format!("truncate {}", self.store_path.display());
            self.store
                .set_len(valid_bytes)
                .map_err(|e| LogError::io(context(), e))?;
            self.store
                .sync_data()
                .map_err(|e| LogError::io(context(), e))?;
            self.store_bytes = valid_bytes;
        }
        let count = entries.len() as u64;
        let capacity = if active {
            limits.index_entries_max.max(count)
        } else {
            count
        };
        self.index = Index::rebuild(index_file, &entries, capacity)
            .map_err(|e| LogError::io(format!("rebuild {}", self.index_path.display()), e))?;
        if !active {
            self.index
                .seal()
                .map_err(|e| LogError::io(format!("seal {}", self.index_path.display()), e))?;
        }
        self.next = self.base + count;
        Ok(Recovery::Rebuilt { truncated_bytes })
    }

    /// A sealed segment with a bad frame at `valid_bytes`: index the valid prefix and mark the
    /// rest, up to `next_base`, unreadable. The store is left as it is.
    fn open_damaged(
        &mut self,
        index_file: Arc<dyn DiskFile>,
        entries: Vec<IndexEntry>,
        valid_bytes: u64,
        bad: Option<FrameError>,
        next_base: u64,
    ) -> Result<Recovery, LogError> {
        let readable_next = self.base + entries.len() as u64;
        if next_base < readable_next {
            return Err(self.corrupt(
                valid_bytes,
                format!("holds records past the next segment's base offset {next_base}"),
            ));
        }
        let count = entries.len() as u64;
        self.index = Index::rebuild(index_file, &entries, count)
            .and_then(|mut index| index.seal().map(|()| index))
            .map_err(|e| LogError::io(format!("rebuild {}", self.index_path.display()), e))?;
        self.next = next_base;
        let reason = bad.map_or_else(|| "bad frame".to_owned(), |e| e.to_string());
        self.damage = Some(Damage {
            offset: readable_next,
            position: valid_bytes,
            reason,
        });
        Ok(Recovery::Damaged {
            unreadable_records: next_base - readable_next,
        })
    }

    /// One past the last offset that can be read, and where its frame ends.
    fn readable_end(&self) -> (u64, u64) {
        match &self.damage {
            Some(d) => (d.offset, d.position),
            None => (self.next, self.store_bytes),
        }
    }

    /// Reads the store in large chunks and returns the index entries of the valid frames, the
    /// length of the valid prefix and, if it stopped before the end, why.
    fn scan(
        &self,
        record_bytes_max: u32,
    ) -> Result<(Vec<IndexEntry>, u64, Option<FrameError>), LogError> {
        let mut entries = Vec::new();
        let chunk_bytes = SCAN_CHUNK_BYTES.max(record::frame_len(record_bytes_max as usize));
        let mut buf = vec![0u8; chunk_bytes];
        let mut position = 0u64;
        loop {
            let n = self
                .store
                .read_at(&mut buf, position)
                .map_err(|e| LogError::io(format!("scan {}", self.store_path.display()), e))?;
            if n == 0 {
                return Ok((entries, position, None));
            }
            let mut at = 0;
            while at < n {
                match record::check(&buf[at..n], record_bytes_max) {
                    Ok(h) if h.offset == self.base + entries.len() as u64 => {
                        entries.push(IndexEntry {
                            position: position + at as u64,
                            timestamp_ms: h.timestamp_ms,
                        });
                        at += h.frame_bytes;
                    }
                    Ok(h) => {
                        let err = FrameError::WrongOffset {
                            found: h.offset,
                            expected: self.base + entries.len() as u64,
                        };
                        return Ok((entries, position + at as u64, Some(err)));
                    }
                    Err(FrameError::Incomplete { .. }) if n == buf.len() && at > 0 => break,
                    Err(e) => return Ok((entries, position + at as u64, Some(e))),
                }
            }
            position += at as u64;
        }
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

    /// The newest record's timestamp, if any.
    pub fn last_timestamp_ms(&self) -> Option<i64> {
        self.index.last().map(|e| e.timestamp_ms)
    }

    pub fn first_at_or_after(&self, timestamp_ms: i64) -> u64 {
        self.base + self.index.first_at_or_after(timestamp_ms)
    }

    /// How many of `records` (a prefix) fit in this segment; 0 when the first does not.
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
            if bytes > limits.store_bytes_max {
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
            || self.index.is_full()
            || self.store_bytes + HEADER_BYTES as u64 > limits.store_bytes_max
    }

    /// Writes `frames` (already encoded, holding `timestamps.len()` frames starting at offset
    /// `self.next`) at the end of the store in one write, after checking every frame's length
    /// and CRC once more; then records them in the index. On error nothing in memory changes.
    pub fn append_frames(
        &mut self,
        frames: &[u8],
        timestamps: &[i64],
        record_bytes_max: u32,
    ) -> Result<(), LogError> {
        assert!(!self.sealed, "append to a sealed segment");
        let positions = frame_positions(frames, self.next, timestamps.len(), record_bytes_max);
        assert!(
            positions.len() == timestamps.len(),
            "encoded frames fail their own check"
        );
        self.store
            .write_at(frames, self.store_bytes)
            .map_err(|e| LogError::io(format!("write {}", self.store_path.display()), e))?;
        for (rel, ts) in positions.iter().zip(timestamps) {
            self.index.push(IndexEntry {
                position: self.store_bytes + *rel as u64,
                timestamp_ms: *ts,
            });
        }
        self.store_bytes += frames.len() as u64;
        self.next += timestamps.len() as u64;
        Ok(())
    }

    /// Reads up to `max_records` consecutive records from `offset` (which this segment holds)
    /// with one read, stopping before `max_bytes` except that the first record is always
    /// returned.
    pub fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
        record_bytes_max: u32,
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
            let frame_end = match self.index.get(first + count + 1) {
                Some(e) if first + count + 1 < readable_next - self.base => e.position,
                _ => readable_bytes,
            };
            if frame_end <= end || frame_end > readable_bytes {
                return Err(self.corrupt(
                    end,
                    format!("index entry {} is out of order", first + count + 1),
                ));
            }
            if count > 0 && frame_end - start > max_bytes as u64 {
                break;
            }
            end = frame_end;
            count += 1;
        }
        let buf = self.read_range(start, end)?;
        self.decode_all(buf, start, offset, count as usize, record_bytes_max)
    }

    /// Checks that the last record reads back whole (length, CRC, offset), that its frame
    /// ends exactly where the store does and that its index entry has its timestamp: after a
    /// truncation whose cut point came from the index, a damaged index entry shows up here
    /// instead of as a hole, garbage or a wrong timestamp floor later.
    pub fn check_tail(&self, record_bytes_max: u32) -> Result<(), LogError> {
        let Some((timestamp_ms, entry)) = self.read_tail(record_bytes_max)? else {
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
    /// segment is empty; the frame is checked as `check_tail` checks it, the index entry's
    /// timestamp is not.
    pub fn frame_last_timestamp_ms(&self, record_bytes_max: u32) -> Result<Option<i64>, LogError> {
        Ok(self
            .read_tail(record_bytes_max)?
            .map(|(timestamp_ms, _)| timestamp_ms))
    }

    /// The last record's timestamp from its frame and its index entry, once the frame reads
    /// back whole, holds that record and ends where the store does.
    fn read_tail(&self, record_bytes_max: u32) -> Result<Option<(i64, IndexEntry)>, LogError> {
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
        let (record, frame_bytes) = record::decode(&buf, record_bytes_max)
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
        record_bytes_max: u32,
    ) -> Result<Vec<Record>, LogError> {
        let mut records = Vec::with_capacity(count);
        let mut position = start;
        for i in 0..count as u64 {
            let (rec, n) = record::decode(&buf, record_bytes_max)
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
        self.index.get(i).ok_or_else(|| LogError::Corrupt {
            segment: self.index_path.clone(),
            position: i * ENTRY_BYTES,
            reason: format!("index entry {i} is missing"),
        })
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

    /// Syncs the store and seals the index (flushed, truncated to its entries, synced): the
    /// segment becomes immutable and its files open without a scan.
    pub fn seal(&mut self) -> Result<(), LogError> {
        if self.sealed {
            return Ok(());
        }
        self.sync()?;
        self.index
            .seal()
            .map_err(|e| LogError::io(format!("seal {}", self.index_path.display()), e))?;
        self.sealed = true;
        Ok(())
    }

    /// Drops the records at `offset` and after (`offset` in `base..=next`), syncs the store and
    /// makes the segment active again if it was sealed.
    pub fn truncate_from(&mut self, offset: u64, limits: SegmentLimits) -> Result<(), LogError> {
        assert!(self.base <= offset && offset <= self.next);
        if self.sealed {
            self.index
                .unseal(limits.index_entries_max)
                .map_err(|e| LogError::io(format!("grow {}", self.index_path.display()), e))?;
            self.sealed = false;
        }
        let keep = offset - self.base;
        let cut_at = match self.index.get(keep) {
            Some(e) => e.position,
            None => self.store_bytes,
        };
        if cut_at > self.store_bytes {
            // A damaged index entry: cutting there would grow the file instead.
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

/// The start of each frame in `frames`, checking each one (length, CRC, expected offset).
/// Stops at the first frame that fails, so a short result means a bad buffer.
fn frame_positions(frames: &[u8], first_offset: u64, count: usize, max: u32) -> Vec<usize> {
    let mut positions = Vec::with_capacity(count);
    let mut at = 0;
    while at < frames.len() {
        match record::check(&frames[at..], max) {
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

fn read_exact_at(
    file: &dyn DiskFile,
    buf: &mut [u8],
    position: u64,
    path: &Path,
) -> Result<(), LogError> {
    let n = file
        .read_at(buf, position)
        .map_err(|e| LogError::io(format!("read {}", path.display()), e))?;
    if n < buf.len() {
        return Err(LogError::Corrupt {
            segment: path.to_path_buf(),
            position: position + n as u64,
            reason: "file ends early".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_and_parse_back() {
        assert_eq!(file_name(42, FileKind::Store), "00000000000000000042.store");
        assert_eq!(
            file_name(u64::MAX, FileKind::Index),
            "18446744073709551615.index"
        );
        assert_eq!(
            parse_file_name("00000000000000000042.store"),
            Some((42, FileKind::Store))
        );
        assert_eq!(
            parse_file_name("18446744073709551615.index"),
            Some((u64::MAX, FileKind::Index))
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
            "00000000000000000042.log",
            "",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }
}
