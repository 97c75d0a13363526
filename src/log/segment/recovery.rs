//! Opening a segment: trusting its index or rebuilding it from the store, and judging what
//! follows the last valid frame of the last segment.
//!
//! Rules (see also `log/mod.rs`):
//! - An index is trusted without a scan only when it is sealed (ends with a trailer), the
//!   trailer's checksum covers every entry (one bulk CRC; when it fails, the entry that fails
//!   its own checksum is named), positions start at 0 and increase by at least a header,
//!   timestamps never decrease, and the last entry's frame header names the right offset and
//!   timestamp and ends exactly at the store's end. Anything else (no index, a format-1 index,
//!   an unsealed one after a crash, a bad entry) rebuilds it by scanning the store.
//! - The scan reads frames of any size up to the format's hard limit whole, growing its buffer
//!   past the chunk size when a frame needs it.
//! - In the last segment, what follows the last valid frame is judged (`TailKind`): nothing
//!   valid after it is a torn tail (cut); zeroed space, then valid frames, is unwritten space
//!   (cut: see `TailKind::Unwritten`); a bad frame followed by a valid frame (length, CRC, and
//!   an offset above the bad one's) is corruption: open refuses (`CorruptTail::Refuse`) or,
//!   when told to, cuts it (`CorruptTail::Cut`). Every cut is logged at WARN. A sealed segment
//!   is never cut: a bad frame makes it open damaged.

use std::path::Path;
use std::sync::Arc;

use super::{file_name, open_file, Damage, FileKind, Segment, SegmentLimits};
use crate::io::{Disk, DiskFile};
use crate::log::config::{CorruptTail, RECORD_BYTES_LIMIT};
use crate::log::error::LogError;
use crate::log::index::{
    active_capacity, read_seal, seal_checksum, EntryError, Index, IndexEntry, SealedFile,
    ENTRY_BYTES,
};
use crate::log::record::{self, FrameError, HEADER_BYTES};
use crate::log::record::{u32_at, u64_at};

/// The chunk size of recovery scans (a frame larger than this is read whole all the same).
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// The page size the unwritten-space rule assumes (the page cache writes back whole pages).
const PAGE_BYTES: u64 = 4096;

/// A record's offset and term, as its (valid) frame holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameId {
    pub offset: u64,
    pub term: u64,
}

/// What the bytes after the last segment's last valid frame were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailKind {
    /// An incomplete or bad frame with no valid frame after it: a write cut short.
    Torn,
    /// Zeros where the first bad frame starts (up to the next page boundary or the next valid
    /// frame), then valid frames: space that never reached the disk (out-of-order writeback, or
    /// pages dropped after a failed fsync) with later writes that did. No frame starts with
    /// zeros (its length field is at least 32), and an fsync covers every earlier write, so the
    /// valid frames after such a hole were never synced: never acknowledged under
    /// `SyncPolicy::Always`, never acknowledged to a Raft leader.
    Unwritten,
    /// A bad frame followed by valid ones: damage to bytes that may have been synced. Cut only
    /// under `CorruptTail::Cut`.
    Corrupt,
}

/// What open cut off the end of the last segment's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCut {
    /// The segment (its base offset).
    pub segment_base: u64,
    /// Where the cut starts in its store: the end of the last valid frame before the damage.
    pub position: u64,
    pub bytes_dropped: u64,
    /// Whole, valid records dropped as far as known: 0 for a torn tail (its last frame was
    /// never whole); otherwise every offset from the first bad frame's to `last_valid_after`'s.
    pub records_dropped: u64,
    pub kind: TailKind,
    /// The last valid frame found after the damage (`Unwritten`, `Corrupt`): a Raft member keeps
    /// its vote floor at least at its term.
    pub last_valid_after: Option<FrameId>,
    /// The first offset dropped: the log's next offset once cut.
    pub first_dropped: u64,
}

impl TailCut {
    /// Whether the cut dropped corruption (valid frames after damage that was not unwritten
    /// space): only done under `CorruptTail::Cut`.
    pub fn is_corruption(&self) -> bool {
        self.kind == TailKind::Corrupt
    }
}

/// What open does with the last segment's tail: whether corruption may be cut, and what must
/// happen before any cut is made (a caller that records a cut durably first, so that a crash
/// right after the cut cannot make it forget what the log lost).
pub struct TailRules<'a> {
    pub corrupt: CorruptTail,
    pub before_cut: &'a mut dyn FnMut(&TailCut) -> std::io::Result<()>,
}

/// What opening a segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The index was trusted as it was (and every entry checked).
    Clean,
    /// The store was scanned and the index rebuilt. `index_damaged`: a sealed index had an
    /// entry failing its checksum. `cut`: what was cut off the store (last segment only).
    Rebuilt {
        index_damaged: bool,
        cut: Option<TailCut>,
    },
    /// A sealed segment had a bad frame: the records before it are served, the ones from it to
    /// the segment's end answer `Corrupt`. Nothing was cut (a sealed segment was fsync'd, so the
    /// damage is the medium's, not a torn write's).
    Damaged { unreadable_records: u64 },
}

/// Whether a sealed index on disk can be used as it is.
enum IndexCheck {
    Trusted(Index),
    /// No valid seal trailer (a crash, a missing or format-1 index).
    Unsealed,
    BadEntry(EntryError),
    /// Sealed and checksummed, but it does not describe the store (stale or damaged store).
    Inconsistent,
}

/// The valid prefix of a store.
struct Scan {
    entries: Vec<IndexEntry>,
    valid_bytes: u64,
    /// Why the scan stopped before the store's end (`None`: it did not).
    bad: Option<FrameError>,
}

/// The valid frames found past a bad one: where the first starts, and the last one.
#[derive(Debug, Clone, Copy)]
struct Later {
    first_position: u64,
    last: FrameId,
    last_position: u64,
}

impl Segment {
    /// Opens an existing segment, recovering it if its index cannot be trusted. `next_base` is
    /// the following segment's base offset, `None` for the last segment: that one is active (its
    /// index is grown to the full size and mapped for appends), and only it may have its tail
    /// cut. `index_v1`: a format-1 index is on disk, so the index is rebuilt from the store
    /// (the caller removes the old file once the new one is durable).
    pub fn open(
        disk: &dyn Disk,
        dir: &Path,
        base: u64,
        limits: SegmentLimits,
        next_base: Option<u64>,
        index_v1: bool,
        tail: &mut TailRules<'_>,
    ) -> Result<(Segment, Recovery), LogError> {
        let store_path = dir.join(file_name(base, FileKind::Store));
        let index_path = dir.join(file_name(base, FileKind::Index));
        let store = open_file(disk, &store_path, false)?;
        let store_bytes = store
            .len()
            .map_err(|e| LogError::io(format!("stat {}", store_path.display()), e))?;
        let index_file = match disk.exists(&index_path) {
            true => Some(open_file(disk, &index_path, false)?),
            false => None,
        };
        let mut segment = Segment {
            base,
            next: base,
            store_bytes,
            store_path,
            index_path,
            // A placeholder (no map, no file access): every path below replaces it.
            index: Index::map(store.clone(), base, 0, 0)
                .map_err(|e| LogError::io("map an empty index", e))?,
            store,
            sealed: next_base.is_some(),
            damage: None,
        };
        let check = match (&index_file, index_v1) {
            (Some(file), false) => segment.check_index(file)?,
            _ => IndexCheck::Unsealed,
        };
        let recovery = match check {
            IndexCheck::Trusted(index) => {
                segment.install_trusted(index, limits)?;
                Recovery::Clean
            }
            other => {
                segment.log_rebuild(&other, index_v1);
                let damaged = matches!(other, IndexCheck::BadEntry(_));
                segment.rebuild(disk, limits, next_base, tail, damaged)?
            }
        };
        Ok((segment, recovery))
    }

    fn check_index(&self, file: &Arc<dyn DiskFile>) -> Result<IndexCheck, LogError> {
        let context = |e| LogError::io(format!("read {}", self.index_path.display()), e);
        let file_bytes = file.len().map_err(context)?;
        let sealed = read_seal(file.as_ref(), file_bytes, self.base).map_err(context)?;
        let SealedFile::Sealed { entries, checksum } = sealed else {
            return Ok(IndexCheck::Unsealed);
        };
        let walk = walk_entries(file.as_ref(), entries).map_err(context)?;
        if seal_checksum(walk.entries_crc, entries, self.base) != checksum {
            let bad = first_bad_entry(file.as_ref(), self.base, entries).map_err(context)?;
            return Ok(IndexCheck::BadEntry(
                bad.unwrap_or(EntryError::SealMismatch { entries }),
            ));
        }
        let Some(last) = walk.ordered_last else {
            return Ok(IndexCheck::Inconsistent);
        };
        let consistent = match last {
            None => self.store_bytes == 0,
            Some(last) => self.last_frame_matches(last, entries)?,
        };
        if !consistent {
            return Ok(IndexCheck::Inconsistent);
        }
        let index = Index::map(file.clone(), self.base, entries, entries).map_err(context)?;
        Ok(IndexCheck::Trusted(index))
    }

    /// Whether the frame header at `last.position` holds the segment's last record (entry
    /// `entries - 1`), with `last`'s timestamp, and ends exactly at the store's end.
    fn last_frame_matches(&self, last: IndexEntry, entries: u64) -> Result<bool, LogError> {
        if last.position.saturating_add(HEADER_BYTES as u64) > self.store_bytes {
            return Ok(false);
        }
        let mut header = [0u8; HEADER_BYTES];
        let n = self
            .store
            .read_at(&mut header, last.position)
            .map_err(|e| LogError::io(format!("read {}", self.store_path.display()), e))?;
        Ok(record::peek_header(&header[..n]).is_some_and(|h| {
            h.offset == self.base + entries - 1
                && h.timestamp_ms == last.timestamp_ms
                && last.position + h.frame_bytes as u64 == self.store_bytes
        }))
    }

    /// Uses a trusted index; the last segment's is grown back (see `active_capacity`) for
    /// appends.
    fn install_trusted(&mut self, index: Index, limits: SegmentLimits) -> Result<(), LogError> {
        let entries = index.len();
        self.index = index;
        if !self.sealed {
            let capacity = active_capacity(entries, limits.index_entries_max);
            self.index
                .unseal(capacity)
                .map_err(|e| LogError::io(format!("map {}", self.index_path.display()), e))?;
        }
        self.next = self.base + entries;
        Ok(())
    }

    fn log_rebuild(&self, check: &IndexCheck, index_v1: bool) {
        let index = self.index_path.display();
        match check {
            _ if index_v1 => tracing::info!(
                %index,
                "rebuilding a format-1 index (no checksums) from its store as format 2"
            ),
            IndexCheck::BadEntry(error) => tracing::warn!(
                %index, %error, "a sealed index fails its checks: rebuilding it from its store"
            ),
            IndexCheck::Inconsistent if self.sealed => tracing::warn!(
                %index,
                "a sealed index does not match its store: rebuilding it from the store"
            ),
            IndexCheck::Unsealed if self.sealed => tracing::warn!(
                %index, "a sealed segment's index is missing or unsealed: rebuilding it"
            ),
            _ => tracing::info!(
                %index, "the last segment was not closed cleanly: scanning its store"
            ),
        }
    }

    /// Scans the store from the start, keeps the longest prefix of valid frames with dense
    /// offsets, judges the rest (the last segment only: see `cut_tail`) and rebuilds the index.
    fn rebuild(
        &mut self,
        disk: &dyn Disk,
        limits: SegmentLimits,
        next_base: Option<u64>,
        tail: &mut TailRules<'_>,
        index_damaged: bool,
    ) -> Result<Recovery, LogError> {
        let frame_limit = RECORD_BYTES_LIMIT;
        #[cfg(madsim)]
        let frame_limit = match crate::planted_bugs::open_with_configured_limit() {
            true => limits.record_bytes_max,
            false => frame_limit,
        };
        let scan = self.scan(frame_limit)?;
        let short = scan.valid_bytes < self.store_bytes;
        if let (Some(next_base), true) = (next_base, short) {
            return self.open_damaged(disk, scan, next_base);
        }
        let cut = match short {
            true => Some(self.cut_tail(&scan, tail)?),
            false => None,
        };
        let count = scan.entries.len() as u64;
        let capacity = match self.sealed {
            true => count,
            false => active_capacity(count, limits.index_entries_max),
        };
        self.rebuild_index(disk, &scan.entries, capacity)?;
        self.next = self.base + count;
        Ok(Recovery::Rebuilt { index_damaged, cut })
    }

    /// Writes a new index of `entries` (sealed if the segment is).
    fn rebuild_index(
        &mut self,
        disk: &dyn Disk,
        entries: &[IndexEntry],
        capacity: u64,
    ) -> Result<(), LogError> {
        let context = |e| LogError::io(format!("rebuild {}", self.index_path.display()), e);
        let file = open_file(disk, &self.index_path, true)?;
        self.index = Index::rebuild(file, self.base, entries, capacity).map_err(context)?;
        if self.sealed {
            self.index.seal().map_err(context)?;
        }
        Ok(())
    }

    /// The bytes after the last valid frame of the last segment (see `TailKind`): cut, unless
    /// they are corruption and `tail.corrupt` says refuse. `tail.before_cut` runs first.
    fn cut_tail(&mut self, scan: &Scan, tail: &mut TailRules<'_>) -> Result<TailCut, LogError> {
        let expected = self.base + scan.entries.len() as u64;
        let position = scan.valid_bytes;
        let reason = scan
            .bad
            .as_ref()
            .map_or_else(|| "bad frame".to_owned(), FrameError::to_string);
        let later = self.find_valid_after(position, expected)?;
        let kind = match later {
            None => TailKind::Torn,
            Some(l) if self.zeros_until_page_end(position, l.first_position)? => {
                TailKind::Unwritten
            }
            Some(_) => TailKind::Corrupt,
        };
        let cut = TailCut {
            segment_base: self.base,
            position,
            bytes_dropped: self.store_bytes - position,
            records_dropped: later.map_or(0, |l| l.last.offset - expected + 1),
            kind,
            last_valid_after: later.map(|l| l.last),
            first_dropped: expected,
        };
        if let (Some(later), TailKind::Corrupt, CorruptTail::Refuse) = (later, kind, tail.corrupt) {
            return Err(LogError::CorruptTail {
                segment: self.store_path.clone(),
                reason: refusal(&reason, later),
                cut: Box::new(cut),
            });
        }
        let context = || format!("truncate {}", self.store_path.display());
        (tail.before_cut)(&cut).map_err(|e| {
            LogError::io(format!("before cutting {}", self.store_path.display()), e)
        })?;
        self.store
            .set_len(position)
            .map_err(|e| LogError::io(context(), e))?;
        self.store
            .sync_data()
            .map_err(|e| LogError::io(context(), e))?;
        self.store_bytes = position;
        self.warn_cut(&cut, &reason);
        Ok(cut)
    }

    /// Whether the store holds only zeros from `position` to the next page boundary after it
    /// or to `until`, whichever comes first.
    fn zeros_until_page_end(&self, position: u64, until: u64) -> Result<bool, LogError> {
        let page_end = (position / PAGE_BYTES + 1) * PAGE_BYTES;
        let end = until.min(page_end).min(self.store_bytes);
        let mut buf = vec![0u8; (end - position) as usize];
        let n = self.read_at(&mut buf, position)?;
        Ok(n == buf.len() && buf.iter().all(|&b| b == 0))
    }

    fn warn_cut(&self, cut: &TailCut, reason: &str) {
        let file = self.store_path.display();
        let TailCut {
            position,
            bytes_dropped,
            records_dropped,
            ..
        } = *cut;
        let (last_offset, last_term) = cut
            .last_valid_after
            .map_or((None, None), |l| (Some(l.offset), Some(l.term)));
        match cut.kind {
            TailKind::Torn => tracing::warn!(
                %file, position, bytes_dropped, records_dropped, %reason,
                "cut a torn tail off the last segment (no valid frame after it)"
            ),
            TailKind::Unwritten => tracing::warn!(
                %file, position, bytes_dropped, records_dropped, %reason, last_offset, last_term,
                "cut unwritten space (zeros) and the unsynced frames after it off the last segment"
            ),
            TailKind::Corrupt => tracing::warn!(
                %file, position, bytes_dropped, records_dropped, %reason, last_offset, last_term,
                "cut a CORRUPT tail off the last segment, as configured (corrupt_tail = cut): \
                 valid records followed the damage and are dropped"
            ),
        }
    }

    /// A sealed segment with a bad frame at `scan.valid_bytes`: index the valid prefix and mark
    /// the rest, up to `next_base`, unreadable. The store is left as it is.
    fn open_damaged(
        &mut self,
        disk: &dyn Disk,
        scan: Scan,
        next_base: u64,
    ) -> Result<Recovery, LogError> {
        let count = scan.entries.len() as u64;
        let readable_next = self.base + count;
        if next_base < readable_next {
            return Err(self.corrupt(
                scan.valid_bytes,
                format!("holds records past the next segment's base offset {next_base}"),
            ));
        }
        self.rebuild_index(disk, &scan.entries, count)?;
        self.next = next_base;
        let reason = scan
            .bad
            .map_or_else(|| "bad frame".to_owned(), |e| e.to_string());
        tracing::warn!(
            file = %self.store_path.display(), position = scan.valid_bytes,
            unreadable_records = next_base - readable_next, %reason,
            "a sealed segment is damaged: its records from here on will read as corrupt"
        );
        self.damage = Some(Damage {
            offset: readable_next,
            position: scan.valid_bytes,
            reason,
        });
        Ok(Recovery::Damaged {
            unreadable_records: next_base - readable_next,
        })
    }

    /// Reads the store in large chunks (growing the buffer for a frame larger than a chunk)
    /// and returns the index entries of the valid frames with dense offsets, the length of that
    /// prefix and, if it stopped before the end, why.
    fn scan(&self, frame_limit: u32) -> Result<Scan, LogError> {
        let mut entries = Vec::new();
        let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
        let mut position = 0u64;
        let stop = |entries, at: u64, bad| {
            Ok(Scan {
                entries,
                valid_bytes: at,
                bad,
            })
        };
        loop {
            let n = self.read_at(&mut buf, position)?;
            if n == 0 {
                return stop(entries, position, None);
            }
            let mut at = 0;
            while at < n {
                let expected = self.base + entries.len() as u64;
                match record::check(&buf[at..n], frame_limit) {
                    Ok(h) if h.offset == expected => {
                        entries.push(IndexEntry {
                            position: position + at as u64,
                            timestamp_ms: h.timestamp_ms,
                        });
                        at += h.frame_bytes;
                    }
                    Ok(h) => {
                        let err = FrameError::WrongOffset {
                            found: h.offset,
                            expected,
                        };
                        return stop(entries, position + at as u64, Some(err));
                    }
                    Err(FrameError::Incomplete { needed, .. })
                        if position + at as u64 + needed <= self.store_bytes
                            && (at > 0 || needed as usize > buf.len()) =>
                    {
                        // The frame is on disk but not in the buffer: read again from its
                        // start, with room for all of it.
                        buf.resize(buf.len().max(needed as usize), 0);
                        break;
                    }
                    Err(e) => return stop(entries, position + at as u64, Some(e)),
                }
            }
            position += at as u64;
        }
    }

    /// The valid frames (length within the hard limit, CRC, an offset above `expected`) at or
    /// after `start`, if any. The offset field is checked first, so a large garbage tail costs a
    /// comparison per byte, not a CRC. A valid frame is skipped whole.
    fn find_valid_after(&self, start: u64, expected: u64) -> Result<Option<Later>, LogError> {
        let end = self.store_bytes;
        let offsets_max = end / HEADER_BYTES as u64 + 1;
        let mut window = Window::default();
        let mut later: Option<Later> = None;
        let mut q = start;
        while q + HEADER_BYTES as u64 <= end {
            let header = window.header_at(self, q)?;
            let offset = u64_at(header, 8);
            let plausible =
                offset > expected && offset - expected <= offsets_max && u32_at(header, 36) == 0; // flags
            let frame_bytes = 8 + u64::from(u32_at(header, 0));
            if plausible && q + frame_bytes <= end {
                if let Some(id) = self.valid_frame_at(q, frame_bytes, offset)? {
                    later = Some(match later {
                        None => Later {
                            first_position: q,
                            last: id,
                            last_position: q,
                        },
                        Some(l) if id.offset > l.last.offset => Later {
                            last: id,
                            last_position: q,
                            ..l
                        },
                        Some(l) => l,
                    });
                    q += frame_bytes;
                    continue;
                }
            }
            q += 1;
        }
        Ok(later)
    }

    /// The frame at `position` if it is valid (length, CRC, flags) and holds `offset`.
    fn valid_frame_at(
        &self,
        position: u64,
        frame_bytes: u64,
        offset: u64,
    ) -> Result<Option<FrameId>, LogError> {
        let limit = record::frame_len(RECORD_BYTES_LIMIT as usize) as u64;
        if frame_bytes > limit || frame_bytes < HEADER_BYTES as u64 {
            return Ok(None);
        }
        let mut buf = vec![0u8; frame_bytes as usize];
        let n = self.read_at(&mut buf, position)?;
        Ok(match record::check(&buf[..n], RECORD_BYTES_LIMIT) {
            Ok(h) if h.offset == offset => Some(FrameId {
                offset,
                term: h.term,
            }),
            _ => None,
        })
    }

    /// Writes the store's bytes again, in place, and syncs them: after an unclean stop, only
    /// bytes that reached the disk or were written again and synced are to be trusted (after a
    /// failed fsync, Linux may have dropped dirty pages that still read back fine). Returns the
    /// bytes rewritten.
    pub fn rewrite_store(&self) -> Result<u64, LogError> {
        let mut buf = vec![0u8; SCAN_CHUNK_BYTES.min(self.store_bytes as usize)];
        let mut position = 0;
        while position < self.store_bytes {
            let len = (self.store_bytes - position).min(buf.len() as u64) as usize;
            let n = self.read_at(&mut buf[..len], position)?;
            if n < len {
                return Err(self.corrupt(position + n as u64, "store ends early".into()));
            }
            self.store
                .write_at(&buf[..len], position)
                .map_err(|e| LogError::io(format!("rewrite {}", self.store_path.display()), e))?;
            position += len as u64;
        }
        self.sync()?;
        Ok(self.store_bytes)
    }

    fn read_at(&self, buf: &mut [u8], position: u64) -> Result<usize, LogError> {
        self.store
            .read_at(buf, position)
            .map_err(|e| LogError::io(format!("scan {}", self.store_path.display()), e))
    }
}

/// The message of a refused corruption.
fn refusal(reason: &str, later: Later) -> String {
    format!(
        "{reason}, but valid records follow it (the last one found: offset {}, term {}, at \
         position {}): this is corruption, not a torn write, so the log was not opened and the \
         store was left as it is",
        later.last.offset, later.last.term, later.last_position,
    )
}

/// What reading a sealed index's entries found.
struct Walk {
    /// The CRC32C of all the entries' bytes.
    entries_crc: u32,
    /// `Some(last entry)` (`Some(None)`: no entries) when positions start at 0 and grow by at
    /// least a header and timestamps never decrease; `None` otherwise.
    ordered_last: Option<Option<IndexEntry>>,
}

/// Reads every entry of a sealed index (`entries` of them) with positional reads of about
/// 1 MiB: one CRC over all their bytes (checked against the seal's, so each entry's own
/// checksum need not be computed: a bulk CRC runs at several GB/s) and the order of positions
/// and timestamps. Reads, not the map: the map's pages are touched only when used, so a clean
/// open does not pull every index into the process's memory.
fn walk_entries(file: &dyn DiskFile, entries: u64) -> std::io::Result<Walk> {
    let per_read = (SCAN_CHUNK_BYTES as u64 / ENTRY_BYTES).min(entries.max(1));
    let mut buf = vec![0u8; (per_read * ENTRY_BYTES) as usize];
    let mut crc = crc32c::crc32c(&[]);
    let mut ordered = true;
    let mut previous: Option<IndexEntry> = None;
    let mut i = 0;
    while i < entries {
        let count = per_read.min(entries - i);
        let len = (count * ENTRY_BYTES) as usize;
        let n = file.read_at(&mut buf[..len], i * ENTRY_BYTES)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        for chunk in buf[..n].chunks_exact(ENTRY_BYTES as usize) {
            let entry = IndexEntry {
                position: u64_at(chunk, 0),
                timestamp_ms: u64_at(chunk, 8) as i64,
            };
            ordered &= match previous {
                None => entry.position == 0,
                Some(p) => {
                    entry.position >= p.position.saturating_add(HEADER_BYTES as u64)
                        && entry.timestamp_ms >= p.timestamp_ms
                }
            };
            previous = Some(entry);
        }
        if n < len {
            break; // shorter than its trailer says: the checksum cannot match
        }
        i += count;
    }
    Ok(Walk {
        entries_crc: crc,
        ordered_last: ordered.then_some(previous),
    })
}

/// The first entry failing its own checksum (to say which, once the seal's did not match).
fn first_bad_entry(
    file: &dyn DiskFile,
    base: u64,
    entries: u64,
) -> std::io::Result<Option<EntryError>> {
    let mut buf = [0u8; ENTRY_BYTES as usize];
    for i in 0..entries {
        if file.read_at(&mut buf, i * ENTRY_BYTES)? < buf.len() {
            return Ok(None);
        }
        if let Err(e) = IndexEntry::decode(&buf, i, base + i) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// A sliding read window over the store for `find_valid_after`.
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    start: u64,
    len: usize,
}

impl Window {
    /// The `HEADER_BYTES` at `position` (the caller checked they are within the store).
    fn header_at(&mut self, segment: &Segment, position: u64) -> Result<&[u8], LogError> {
        let end = position + HEADER_BYTES as u64;
        if position < self.start || end > self.start + self.len as u64 {
            self.buf.resize(SCAN_CHUNK_BYTES, 0);
            self.start = position;
            self.len = segment.read_at(&mut self.buf, position)?;
            if self.len < HEADER_BYTES {
                return Err(segment.corrupt(position + self.len as u64, "store ends early".into()));
            }
        }
        let at = (position - self.start) as usize;
        Ok(&self.buf[at..at + HEADER_BYTES])
    }
}
