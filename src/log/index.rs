//! The memory-mapped offset index of one segment (format 2: checksummed entries).
//!
//! File `<base offset, 20 digits>.index2`; entry `i` describes offset `base + i` and is 24
//! bytes, little-endian:
//!
//! ```text
//! 0   position      u64  where the record's frame starts in the store
//! 8   timestamp_ms  i64  the record's timestamp (as its frame holds it)
//! 16  crc32c        u32  CRC32C of position, timestamp_ms and the entry's offset (u64, LE)
//! 20  reserved      u32  0
//! ```
//!
//! The offset is in the checksum but not stored: an entry copied to another slot, or a zeroed
//! slot, fails it. A sealed index ends with one 24-byte trailer (`entries u64`, `base u64`,
//! `checksum u32` = CRC32C of every entry's 24 bytes followed by the trailer's first 16,
//! `mark u32` = `SEAL_MARK`, never 0 so no trailer reads as an entry): open checks a sealed
//! index with one CRC over all of it, several GB/s, instead of one per entry. The active segment's index is pre-grown to its capacity,
//! mapped whole and has no trailer; sealing (roll, close) flushes it, truncates it to its
//! entries, appends the trailer and syncs: that trailer is what lets an open trust the index
//! without a scan. Format 1 (`.index`, 16-byte entries without a checksum) is only read to be
//! replaced: the log rebuilds a format-2 index from the store and then removes it.
//!
//! Every entry is checked when read (`get`): a bad one is an `EntryError`, never a wrong
//! answer.

use std::io;
use std::sync::Arc;

use crate::io::{DiskFile, MapMut};
use crate::log::record::{u32_at, u64_at};

/// Bytes per index entry (format 2).
pub const ENTRY_BYTES: u64 = 24;
/// Bytes per entry of a format-1 `.index` file (position u64, timestamp i64; no checksum).
pub const V1_ENTRY_BYTES: u64 = 16;
/// Bytes of the trailer that marks a sealed index.
pub const SEAL_BYTES: u64 = 24;
/// Entries of a new active index; it doubles (file extended, map replaced) as appends fill it,
/// up to the configured `index_bytes_max`. 1,024 entries are 24 KiB.
pub const ACTIVE_ENTRIES_INITIAL: u64 = 1024;

/// The capacity an active index of `entries` entries is mapped with: room for one more entry,
/// doubling from `ACTIVE_ENTRIES_INITIAL`, at most `max` (never fewer than `entries`).
pub fn active_capacity(entries: u64, max: u64) -> u64 {
    let mut capacity = ACTIVE_ENTRIES_INITIAL.max(1);
    while capacity <= entries && capacity < max {
        capacity = capacity.saturating_mul(2);
    }
    capacity.min(max).max(entries)
}

/// The last word of a seal trailer ("LHS2"): nonzero, where an entry holds 0.
const SEAL_MARK: u32 = u32::from_le_bytes(*b"LHS2");

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub position: u64,
    pub timestamp_ms: i64,
}

/// Why an index entry (or a seal trailer) is not to be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("index entry {entry} fails its checksum")]
    BadChecksum { entry: u64 },
    #[error("index entry {entry} has reserved bits set")]
    Reserved { entry: u64 },
    #[error("the seal of an index of {entries} entries does not match them")]
    SealMismatch { entries: u64 },
}

/// 24 bytes on an 8-byte boundary: the CRC crate then takes them as three words (three
/// instructions) instead of a byte at a time up to the first boundary and after the last.
#[repr(C, align(8))]
struct Words([u8; 24]);

/// CRC32C of `position`, `timestamp_ms` and `offset` (little-endian, in that order), in one
/// call over an aligned buffer: open checks every entry, so this runs a million times per GiB
/// of 1 KiB records.
fn entry_crc(position: u64, timestamp_ms: i64, offset: u64) -> u32 {
    let mut words = Words([0; 24]);
    words.0[..8].copy_from_slice(&position.to_le_bytes());
    words.0[8..16].copy_from_slice(&timestamp_ms.to_le_bytes());
    words.0[16..].copy_from_slice(&offset.to_le_bytes());
    crc32c::crc32c(&words.0)
}

impl IndexEntry {
    /// The entry's 24 bytes, for offset `offset` (which goes into the checksum).
    pub fn encode(&self, offset: u64) -> [u8; ENTRY_BYTES as usize] {
        let mut out = [0; ENTRY_BYTES as usize];
        out[..8].copy_from_slice(&self.position.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        let crc = entry_crc(self.position, self.timestamp_ms, offset);
        out[16..20].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks entry number `entry` (for offset `offset`) at the start of `buf`,
    /// which holds at least `ENTRY_BYTES`.
    pub fn decode(buf: &[u8], entry: u64, offset: u64) -> Result<IndexEntry, EntryError> {
        let position = u64_at(buf, 0);
        let timestamp_ms = u64_at(buf, 8) as i64;
        if u32_at(buf, 16) != entry_crc(position, timestamp_ms, offset) {
            return Err(EntryError::BadChecksum { entry });
        }
        if u32_at(buf, 20) != 0 {
            return Err(EntryError::Reserved { entry });
        }
        Ok(IndexEntry {
            position,
            timestamp_ms,
        })
    }
}

/// The trailer of a sealed index of `entries` entries of segment `base`, whose entries' bytes
/// have CRC32C `entries_crc`.
fn encode_seal(entries: u64, base: u64, entries_crc: u32) -> [u8; SEAL_BYTES as usize] {
    let mut out = [0; SEAL_BYTES as usize];
    out[..8].copy_from_slice(&entries.to_le_bytes());
    out[8..16].copy_from_slice(&base.to_le_bytes());
    let checksum = seal_checksum(entries_crc, entries, base);
    out[16..20].copy_from_slice(&checksum.to_le_bytes());
    out[20..24].copy_from_slice(&SEAL_MARK.to_le_bytes());
    out
}

/// The checksum a seal trailer holds: the CRC32C of the entries' bytes (`entries_crc`) carried
/// on over the trailer's `entries` and `base` fields.
pub fn seal_checksum(entries_crc: u32, entries: u64, base: u64) -> u32 {
    let mut fields = [0u8; 16];
    fields[..8].copy_from_slice(&entries.to_le_bytes());
    fields[8..].copy_from_slice(&base.to_le_bytes());
    crc32c::crc32c_append(entries_crc, &fields)
}

/// What a sealed index file on disk holds, before its entries are believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedFile {
    /// The file ends with a trailer for this many entries of this segment; `checksum` is what
    /// `seal_checksum` must give for them.
    Sealed { entries: u64, checksum: u32 },
    /// No trailer: not sealed (a crash, an index being written) or damaged.
    Unsealed,
}

/// Reads whether `file` (`file_bytes` long) ends with the seal trailer of an index of segment
/// `base` (its checksum is checked by the caller, who reads the entries).
pub fn read_seal(file: &dyn DiskFile, file_bytes: u64, base: u64) -> io::Result<SealedFile> {
    if file_bytes < SEAL_BYTES || file_bytes % ENTRY_BYTES != 0 {
        return Ok(SealedFile::Unsealed);
    }
    let entries = file_bytes / ENTRY_BYTES - 1;
    let mut buf = [0u8; SEAL_BYTES as usize];
    let n = file.read_at(&mut buf, entries * ENTRY_BYTES)?;
    let sealed = n == buf.len()
        && u64_at(&buf, 0) == entries
        && u64_at(&buf, 8) == base
        && u32_at(&buf, 20) == SEAL_MARK;
    Ok(match sealed {
        true => SealedFile::Sealed {
            entries,
            checksum: u32_at(&buf, 16),
        },
        false => SealedFile::Unsealed,
    })
}

/// A segment's index: the file, its map (absent when the index is empty and sealed) and how many
/// entries are in use.
pub struct Index {
    file: Arc<dyn DiskFile>,
    map: Option<Box<dyn MapMut>>,
    /// The offset of entry 0 (it goes into every entry's checksum).
    base: u64,
    entries: u64,
    /// How many entries the map holds.
    capacity: u64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("base", &self.base)
            .field("entries", &self.entries)
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A map of a sealed index's entries, made (with the old map flushed) before the old map is
/// dropped: see `Index::prepare_seal`.
pub struct PreparedSeal {
    map: Option<Box<dyn MapMut>>,
    entries: u64,
    entries_crc: u32,
}

impl PreparedSeal {
    /// The CRC32C of the entries' bytes, for `Index::write_seal`.
    pub fn entries_crc(&self) -> u32 {
        self.entries_crc
    }
}

impl Index {
    /// Maps the first `capacity` entries of `file` (which holds at least that many) with
    /// `entries` in use. Nothing is checked here: `get` checks each entry it reads.
    pub fn map(
        file: Arc<dyn DiskFile>,
        base: u64,
        entries: u64,
        capacity: u64,
    ) -> io::Result<Index> {
        assert!(
            entries <= capacity,
            "{entries} entries > capacity {capacity}"
        );
        let map = match capacity {
            0 => None,
            n => Some(file.map_mut(map_len(n)?)?),
        };
        Ok(Index {
            file,
            map,
            base,
            entries,
            capacity,
        })
    }

    /// Sizes `file` to `capacity` entries (zeros past the first `entries.len()`), writes
    /// `entries` through the map and flushes it (nothing to flush when there are none: an
    /// unsealed index is never trusted, so its zeros need not be durable): a rebuilt or new
    /// (unsealed) index.
    pub fn rebuild(
        file: Arc<dyn DiskFile>,
        base: u64,
        entries: &[IndexEntry],
        capacity: u64,
    ) -> io::Result<Index> {
        let count = entries.len() as u64;
        assert!(count <= capacity, "{count} entries > capacity {capacity}");
        file.set_len(0)?;
        file.set_len(capacity * ENTRY_BYTES)?;
        let mut index = Index::map(file, base, 0, capacity)?;
        for entry in entries {
            index.push(*entry);
        }
        if !entries.is_empty() {
            index.flush()?;
        }
        Ok(index)
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// The capacity to grow to so that `more` entries fit (doubling, at most `max`), or `None`
    /// when they fit already.
    pub fn grown_capacity(&self, more: u64, max: u64) -> Option<u64> {
        let needed = self.entries + more;
        if needed <= self.capacity {
            return None;
        }
        let mut capacity = self.capacity.max(1);
        while capacity < needed {
            capacity = capacity.saturating_mul(2);
        }
        Some(capacity.min(max).max(needed))
    }

    /// Growing, step 1 (`&self`, so readers go on: the map still covers only the old entries):
    /// extends the file with zeros to `capacity` entries.
    pub fn extend_file(&self, capacity: u64) -> io::Result<()> {
        if capacity * ENTRY_BYTES > self.file.len()? {
            self.file.set_len(capacity * ENTRY_BYTES)?;
        }
        Ok(())
    }

    /// Growing, step 2 (no disk I/O): drops the map (a simulated map writes back then) and maps
    /// the whole, extended file.
    pub fn remap(&mut self) -> io::Result<()> {
        self.map = None;
        self.capacity = 0;
        self.remap_or(Ok(()))
    }

    pub fn file(&self) -> &Arc<dyn DiskFile> {
        &self.file
    }

    /// Entry `i`, checked; `Ok(None)` past the entries in use.
    pub fn get(&self, i: u64) -> Result<Option<IndexEntry>, EntryError> {
        // No map (a resize failed and the file could not be mapped again): the log is
        // poisoned, and reads of these entries say they are missing.
        let Some(map) = self.map.as_ref().filter(|_| i < self.entries) else {
            return Ok(None);
        };
        let start = (i * ENTRY_BYTES) as usize;
        match map.as_slice().get(start..start + ENTRY_BYTES as usize) {
            Some(bytes) => IndexEntry::decode(bytes, i, self.base + i).map(Some),
            None => Ok(None),
        }
    }

    pub fn last(&self) -> Result<Option<IndexEntry>, EntryError> {
        match self.entries.checked_sub(1) {
            Some(i) => self.get(i),
            None => Ok(None),
        }
    }

    /// The first entry number in `0..len()` whose timestamp is >= `timestamp_ms` (timestamps
    /// are non-decreasing), or `len()`. Every entry it looks at is checked.
    pub fn first_at_or_after(&self, timestamp_ms: i64) -> Result<u64, EntryError> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)? {
                Some(e) if e.timestamp_ms < timestamp_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Appends an entry. The caller checks `is_full` first.
    pub fn push(&mut self, entry: IndexEntry) {
        assert!(self.entries < self.capacity, "index is full");
        let start = (self.entries * ENTRY_BYTES) as usize;
        let bytes = entry.encode(self.base + self.entries);
        let map = self.map.as_mut().expect("a non-empty capacity is mapped");
        map.as_mut_slice()[start..start + ENTRY_BYTES as usize].copy_from_slice(&bytes);
        self.entries += 1;
    }

    /// Keeps the first `entries` entries and zeroes the rest.
    pub fn truncate(&mut self, entries: u64) {
        if entries >= self.entries {
            return;
        }
        if let Some(map) = self.map.as_mut() {
            let from = (entries * ENTRY_BYTES) as usize;
            let to = (self.entries * ENTRY_BYTES) as usize;
            map.as_mut_slice()[from..to].fill(0);
        }
        self.entries = entries;
    }

    /// Makes the entries written so far durable (msync).
    pub fn flush(&self) -> io::Result<()> {
        match &self.map {
            Some(map) => map.flush(),
            None => Ok(()),
        }
    }

    /// Sealing, step 1 (needs only `&self`, so readers go on): flushes the map and maps just
    /// the entries in use, a second map of the same file.
    pub fn prepare_seal(&self) -> io::Result<PreparedSeal> {
        self.flush()?;
        let used = (self.entries * ENTRY_BYTES) as usize;
        let entries_crc = match &self.map {
            Some(map) => crc32c::crc32c(&map.as_slice()[..used]),
            None => crc32c::crc32c(&[]),
        };
        let map = match self.entries {
            0 => None,
            n => Some(self.file.map_mut(map_len(n)?)?),
        };
        Ok(PreparedSeal {
            map,
            entries: self.entries,
            entries_crc,
        })
    }

    /// Sealing, step 2 (in memory): swaps in the short map and returns the old one, for the
    /// caller to drop before step 3 (`write_seal`).
    pub fn install_seal(&mut self, prepared: PreparedSeal) -> Option<Box<dyn MapMut>> {
        assert_eq!(
            prepared.entries, self.entries,
            "entries changed while sealing"
        );
        self.capacity = self.entries;
        std::mem::replace(&mut self.map, prepared.map)
    }

    /// Sealing, step 3 (disk only, no lock needed): truncates `file` to `entries` entries,
    /// appends the seal trailer and syncs. No map may cover the bytes past the entries.
    pub fn write_seal(
        file: &dyn DiskFile,
        base: u64,
        entries: u64,
        entries_crc: u32,
    ) -> io::Result<()> {
        file.set_len(entries * ENTRY_BYTES)?;
        let trailer = encode_seal(entries, base, entries_crc);
        file.write_at(&trailer, entries * ENTRY_BYTES)?;
        file.sync_data()
    }

    /// All three sealing steps at once (when nobody else can read the index).
    pub fn seal(&mut self) -> io::Result<()> {
        let prepared = self.prepare_seal()?;
        let entries_crc = prepared.entries_crc();
        drop(self.install_seal(prepared));
        Index::write_seal(self.file.as_ref(), self.base, self.entries, entries_crc)
    }

    /// Grows a sealed index back to `capacity` entries (dropping its trailer) so it can take
    /// appends again.
    pub fn unseal(&mut self, capacity: u64) -> io::Result<()> {
        let capacity = capacity.max(self.entries);
        self.map = None;
        self.capacity = 0;
        let result = self
            .file
            .set_len(self.entries * ENTRY_BYTES)
            .and_then(|()| self.file.set_len(capacity * ENTRY_BYTES));
        self.remap_or(result)
    }

    /// Maps the file as it now is (whether or not `resized` succeeded), so the entries stay
    /// readable after a failed resize; then returns `resized`'s error, if any.
    fn remap_or(&mut self, resized: io::Result<()>) -> io::Result<()> {
        let capacity = (self.file.len()? / ENTRY_BYTES).max(self.entries);
        *self = Index::map(self.file.clone(), self.base, self.entries, capacity)?;
        resized
    }
}

fn map_len(entries: u64) -> io::Result<usize> {
    usize::try_from(entries * ENTRY_BYTES)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "index too large to map"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Disk, StdDisk};
    use proptest::prelude::*;

    #[test]
    fn entries_are_position_timestamp_crc_reserved() {
        let e = IndexEntry {
            position: 0x0102,
            timestamp_ms: -1,
        };
        let b = e.encode(7);
        assert_eq!(&b[..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &[0xff; 8]);
        let covered = [&b[..16], &7u64.to_le_bytes()[..]].concat();
        assert_eq!(u32_at(&b, 16), crc32c::crc32c(&covered));
        assert_eq!(&b[20..], &[0; 4]);
        assert_eq!(IndexEntry::decode(&b, 0, 7), Ok(e));
    }

    #[test]
    fn every_single_bit_flip_and_a_wrong_slot_are_detected() {
        let good = IndexEntry {
            position: 4242,
            timestamp_ms: 1_700_000_000_000,
        }
        .encode(10);
        for bit in 0..good.len() * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(IndexEntry::decode(&bad, 3, 10).is_err(), "bit {bit}");
        }
        assert_eq!(
            IndexEntry::decode(&good, 4, 11),
            Err(EntryError::BadChecksum { entry: 4 })
        );
        assert!(IndexEntry::decode(&[0; 24], 0, 0).is_err(), "a zeroed slot");
    }

    #[test]
    fn a_seal_trailer_is_never_an_entry() {
        let seal = encode_seal(3, 0, 77);
        assert_eq!(u32_at(&seal, 16), seal_checksum(77, 3, 0));
        assert_ne!(seal_checksum(77, 3, 0), seal_checksum(77, 3, 1));
        for i in 0..8 {
            assert!(IndexEntry::decode(&seal, 3, i).is_err());
        }
    }

    #[test]
    fn push_get_truncate_seal_unseal() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdDisk.open(&dir.path().join("i"), true).unwrap();
        let mut index = Index::rebuild(file.clone(), 100, &[], 4).unwrap();
        assert_eq!(file.len().unwrap(), 96);
        assert_eq!(
            read_seal(file.as_ref(), 96, 100).unwrap(),
            SealedFile::Unsealed
        );
        for i in 0..4 {
            assert!(!index.is_full());
            index.push(IndexEntry {
                position: i * 10,
                timestamp_ms: i as i64 * 2,
            });
        }
        assert!(index.is_full());
        assert_eq!(index.get(2).unwrap().unwrap().position, 20);
        assert_eq!(index.get(4), Ok(None));
        assert_eq!(index.first_at_or_after(3), Ok(2));
        assert_eq!(index.first_at_or_after(100), Ok(4));
        index.truncate(3);
        assert_eq!(index.last().unwrap().unwrap().position, 20);
        index.seal().unwrap();
        assert_eq!(file.len().unwrap(), 3 * 24 + 24);
        let sealed = read_seal(file.as_ref(), 96, 100).unwrap();
        let mut entries = vec![0u8; 72];
        file.read_at(&mut entries, 0).unwrap();
        let checksum = seal_checksum(crc32c::crc32c(&entries), 3, 100);
        assert_eq!(
            sealed,
            SealedFile::Sealed {
                entries: 3,
                checksum
            }
        );
        assert_eq!(
            read_seal(file.as_ref(), 96, 0).unwrap(),
            SealedFile::Unsealed
        );
        assert_eq!(index.get(1).unwrap().unwrap().timestamp_ms, 2);
        assert!(index.is_full());
        index.unseal(8).unwrap();
        assert_eq!(file.len().unwrap(), 8 * 24);
        assert!(!index.is_full());
        assert_eq!(index.get(2).unwrap().unwrap().position, 20);
        assert_eq!(
            read_seal(file.as_ref(), 192, 100).unwrap(),
            SealedFile::Unsealed
        );
    }

    proptest! {
        #[test]
        fn entry_roundtrip(position: u64, timestamp_ms: i64, offset: u64) {
            let e = IndexEntry { position, timestamp_ms };
            prop_assert_eq!(IndexEntry::decode(&e.encode(offset), 0, offset), Ok(e));
        }
    }
}
