//! Shared by the tests/log_*.rs files: a `Disk` wrapper that counts and fails I/O, and helpers.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use loghouse::io::{Disk, DiskFile, MapMut};
use loghouse::log::{Log, LogConfig, NewRecord, Record, INDEX_ENTRY_BYTES};

const NEVER: u64 = u64::MAX;

/// Counters and a failure plan shared by a `FaultDisk` and its files.
#[derive(Debug)]
pub struct Faults {
    /// Successful `write_at` calls.
    pub writes: AtomicU64,
    /// Successful `sync_data` calls.
    pub syncs: AtomicU64,
    /// Mutating calls attempted (write_at, set_len, sync_data, map flush, sync_dir, remove,
    /// rename, open with create).
    pub ops: AtomicU64,
    fail_write_at: AtomicU64,
    fail_sync_at: AtomicU64,
    fail_ops_from: AtomicU64,
}

impl Faults {
    fn new() -> Self {
        Faults {
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            fail_write_at: AtomicU64::new(NEVER),
            fail_sync_at: AtomicU64::new(NEVER),
            fail_ops_from: AtomicU64::new(NEVER),
        }
    }

    /// The `n`th `write_at` from now (1-based) fails, once.
    pub fn fail_nth_write(&self, n: u64) {
        let done = self.writes.load(Ordering::SeqCst);
        self.fail_write_at.store(done + n, Ordering::SeqCst);
    }

    /// The `n`th `sync_data` from now (1-based) fails, once.
    pub fn fail_nth_sync(&self, n: u64) {
        let done = self.syncs.load(Ordering::SeqCst);
        self.fail_sync_at.store(done + n, Ordering::SeqCst);
    }

    /// Every mutating call from the `n`th (0-based, counted from creation) on fails: the
    /// machine lost power there.
    pub fn fail_ops_from(&self, n: u64) {
        self.fail_ops_from.store(n, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.fail_write_at.store(NEVER, Ordering::SeqCst);
        self.fail_sync_at.store(NEVER, Ordering::SeqCst);
        self.fail_ops_from.store(NEVER, Ordering::SeqCst);
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn op(&self) -> io::Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_ops_from.load(Ordering::SeqCst) {
            return Err(injected("power lost"));
        }
        Ok(())
    }

    fn write(&self) -> io::Result<()> {
        self.op()?;
        let n = self.writes.load(Ordering::SeqCst) + 1;
        if self
            .fail_write_at
            .compare_exchange(n, NEVER, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(injected("write failed"));
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.op()?;
        let n = self.syncs.load(Ordering::SeqCst) + 1;
        if self
            .fail_sync_at
            .compare_exchange(n, NEVER, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(injected("fsync failed"));
        }
        Ok(())
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected: {what}"))
}

/// A `Disk` that forwards to another and counts or fails calls as told.
#[derive(Debug, Clone)]
pub struct FaultDisk {
    inner: Arc<dyn Disk>,
    pub faults: Arc<Faults>,
}

impl FaultDisk {
    pub fn new(inner: Arc<dyn Disk>) -> Self {
        FaultDisk {
            inner,
            faults: Arc::new(Faults::new()),
        }
    }
}

impl Disk for FaultDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        if create {
            self.faults.op()?;
        }
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FaultFile {
            inner,
            faults: self.faults.clone(),
        }))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        self.inner.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.faults.op()?;
        self.inner.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.faults.op()?;
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: Arc<dyn DiskFile>,
    faults: Arc<Faults>,
}

impl DiskFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.faults.write()?;
        self.inner.write_at(buf, position)?;
        self.faults.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.op()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.sync()?;
        self.inner.sync_data()?;
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>> {
        let inner = self.inner.map_mut(len)?;
        Ok(Box::new(FaultMap {
            inner,
            faults: self.faults.clone(),
        }))
    }
}

struct FaultMap {
    inner: Box<dyn MapMut>,
    faults: Arc<Faults>,
}

impl MapMut for FaultMap {
    fn as_slice(&self) -> &[u8] {
        self.inner.as_slice()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.inner.as_mut_slice()
    }
    fn flush(&self) -> io::Result<()> {
        self.faults.op()?;
        self.inner.flush()
    }
}

/// A config with tiny segments (a few records each: the index holds 5 entries) so tests roll
/// often.
pub fn small_config(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes_max: 400,
        index_bytes_max: INDEX_ENTRY_BYTES * 5,
        record_bytes_max: 200,
        ..LogConfig::new(dir)
    }
}

/// A deterministic value of `len` bytes for record number `n`.
pub fn value(n: u64, len: usize) -> Bytes {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(bytes)
}

pub fn record(n: u64, len: usize) -> NewRecord {
    NewRecord {
        term: n % 3,
        kind: (n % 2) as u32,
        value: value(n, len),
    }
}

/// Every record of the log, read with `read_batch`.
pub fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = log.lowest_offset();
    while offset < log.next_offset() {
        let batch = log.read_batch(offset, 1000, 1 << 20).expect("read_batch");
        assert!(!batch.is_empty(), "read_batch returned nothing at {offset}");
        offset += batch.len() as u64;
        out.extend(batch);
    }
    out
}

/// The store and index file paths in `dir`, sorted.
pub fn segment_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}
