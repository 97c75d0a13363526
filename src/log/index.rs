//! The memory-mapped offset index of one segment.
//!
//! File `<base offset, 20 digits>.index`; entry `i` describes offset `base + i` and is 16 bytes,
//! little-endian: `position u64` (of the record's frame in the store), `timestamp_ms i64`.
//! The active segment's index is pre-grown to `index_bytes_max` and mapped whole; sealing (roll,
//! close) flushes it and truncates the file to the entries in use, which is what lets a clean
//! open skip the scan.

use std::io;
use std::sync::Arc;

use crate::io::{DiskFile, MapMut};

/// Bytes per index entry.
pub const ENTRY_BYTES: u64 = 16;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub position: u64,
    pub timestamp_ms: i64,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; ENTRY_BYTES as usize] {
        let mut out = [0; ENTRY_BYTES as usize];
        out[..8].copy_from_slice(&self.position.to_le_bytes());
        out[8..].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        out
    }

    /// Decodes the entry at the start of `buf`, which holds at least `ENTRY_BYTES`.
    pub fn decode(buf: &[u8]) -> IndexEntry {
        let mut position = [0; 8];
        let mut timestamp = [0; 8];
        position.copy_from_slice(&buf[..8]);
        timestamp.copy_from_slice(&buf[8..16]);
        IndexEntry {
            position: u64::from_le_bytes(position),
            timestamp_ms: i64::from_le_bytes(timestamp),
        }
    }
}

/// A segment's index: the file, its map (absent when the index is empty and sealed) and how many
/// entries are in use.
pub struct Index {
    file: Arc<dyn DiskFile>,
    map: Option<Box<dyn MapMut>>,
    entries: u64,
    /// How many entries the map holds (the file's length in entries).
    capacity: u64,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("entries", &self.entries)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Index {
    /// Maps `file` (which already holds `capacity` entries' worth of bytes) with `entries` in use.
    pub fn map(file: Arc<dyn DiskFile>, entries: u64, capacity: u64) -> io::Result<Index> {
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
            entries,
            capacity,
        })
    }

    /// Sizes `file` to `capacity` entries (zeros past the first `entries.len()`), writes `entries`
    /// through the map and flushes it: a rebuilt or new index.
    pub fn rebuild(
        file: Arc<dyn DiskFile>,
        entries: &[IndexEntry],
        capacity: u64,
    ) -> io::Result<Index> {
        let count = entries.len() as u64;
        assert!(count <= capacity, "{count} entries > capacity {capacity}");
        file.set_len(0)?;
        file.set_len(capacity * ENTRY_BYTES)?;
        let mut index = Index::map(file, 0, capacity)?;
        for entry in entries {
            index.push(*entry);
        }
        index.flush()?;
        Ok(index)
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// Entry `i`, or `None` past the entries in use.
    pub fn get(&self, i: u64) -> Option<IndexEntry> {
        if i >= self.entries {
            return None;
        }
        let slice = self.map.as_ref()?.as_slice();
        let start = usize::try_from(i * ENTRY_BYTES).ok()?;
        slice
            .get(start..start + ENTRY_BYTES as usize)
            .map(IndexEntry::decode)
    }

    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.checked_sub(1).and_then(|i| self.get(i))
    }

    /// The first entry number in `0..len()` whose timestamp is >= `timestamp_ms` (timestamps
    /// are non-decreasing), or `len()`.
    pub fn first_at_or_after(&self, timestamp_ms: i64) -> u64 {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(e) if e.timestamp_ms < timestamp_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// Appends an entry. The caller checks `is_full` first.
    pub fn push(&mut self, entry: IndexEntry) {
        assert!(self.entries < self.capacity, "index is full");
        let start = (self.entries * ENTRY_BYTES) as usize;
        let map = self.map.as_mut().expect("a non-empty capacity is mapped");
        map.as_mut_slice()[start..start + ENTRY_BYTES as usize].copy_from_slice(&entry.encode());
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

    /// Flushes, unmaps, truncates the file to the entries in use, syncs it and maps that much
    /// again: the index of a sealed segment, which a later open trusts without a scan.
    pub fn seal(&mut self) -> io::Result<()> {
        self.flush()?;
        self.map = None;
        self.capacity = 0;
        let result = self
            .file
            .set_len(self.entries * ENTRY_BYTES)
            .and_then(|()| self.file.sync_data());
        self.remap_or(result)
    }

    /// Grows a sealed index back to `capacity` entries so it can take appends again.
    pub fn unseal(&mut self, capacity: u64) -> io::Result<()> {
        let capacity = capacity.max(self.entries);
        self.map = None;
        self.capacity = 0;
        let result = self.file.set_len(capacity * ENTRY_BYTES);
        self.remap_or(result)
    }

    /// Maps the file as it now is (whether or not `resized` succeeded), so the entries stay
    /// readable after a failed resize or sync; then returns `resized`'s error, if any.
    fn remap_or(&mut self, resized: io::Result<()>) -> io::Result<()> {
        let capacity = (self.file.len()? / ENTRY_BYTES).max(self.entries);
        *self = Index::map(self.file.clone(), self.entries, capacity)?;
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
    fn entries_are_little_endian_position_then_timestamp() {
        let e = IndexEntry {
            position: 0x0102,
            timestamp_ms: -1,
        };
        let b = e.encode();
        assert_eq!(&b[..8], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..], &[0xff; 8]);
    }

    #[test]
    fn push_get_truncate_seal_unseal() {
        let dir = tempfile::tempdir().unwrap();
        let file = StdDisk.open(&dir.path().join("i"), true).unwrap();
        let mut index = Index::rebuild(file.clone(), &[], 4).unwrap();
        assert_eq!(file.len().unwrap(), 64);
        for i in 0..4 {
            assert!(!index.is_full());
            index.push(IndexEntry {
                position: i * 10,
                timestamp_ms: i as i64 * 2,
            });
        }
        assert!(index.is_full());
        assert_eq!(index.get(2).unwrap().position, 20);
        assert_eq!(index.get(4), None);
        assert_eq!(index.first_at_or_after(3), 2);
        assert_eq!(index.first_at_or_after(100), 4);
        index.truncate(3);
        assert_eq!(index.last().unwrap().position, 20);
        index.seal().unwrap();
        assert_eq!(file.len().unwrap(), 48);
        assert_eq!(index.get(1).unwrap().timestamp_ms, 2);
        assert!(index.is_full());
        index.unseal(8).unwrap();
        assert_eq!(file.len().unwrap(), 128);
        assert!(!index.is_full());
        assert_eq!(index.get(2).unwrap().position, 20);
    }

    proptest! {
        #[test]
        fn entry_roundtrip(position: u64, timestamp_ms: i64) {
            let e = IndexEntry { position, timestamp_ms };
            prop_assert_eq!(IndexEntry::decode(&e.encode()), e);
        }
    }
}
