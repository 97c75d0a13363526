//! The last segment's tail at open (issue 15): a torn tail is cut, corruption is refused unless
//! the caller asks for a cut (and the report says what went), frames larger than the scan chunk
//! or the configured limit are read whole, and after an unclean stop the kept bytes are written
//! again and synced before the log is used.

mod log_support;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log_support::{read_all, record, segment_files, small_config};
use loghouse::io::{Disk, DiskFile, ManualClock, MapMut, SimDisk, StdDisk};
use loghouse::log::{CorruptTail, FrameId, Log, LogConfig, LogError, Record, TailCut, TailKind};
use parking_lot::Mutex;

fn open(disk: Arc<dyn Disk>, config: LogConfig) -> Result<Log, LogError> {
    Log::open(disk, Arc::new(ManualClock::new(5_000)), config)
}

/// 13 records on real files, the last segment holding several; dropped without close (a kill),
/// so the next open scans the last segment. Returns the records and the last store's path.
fn killed_log(dir: &Path) -> (Vec<Record>, PathBuf) {
    let log = open(Arc::new(StdDisk), small_config(dir)).unwrap();
    for n in 0..13 {
        log.append(&[record(n, 20 + n as usize)]).unwrap();
    }
    log.sync().unwrap();
    let records = read_all(&log);
    drop(log);
    (records, segment_files(dir, ".store").pop().unwrap())
}

/// The first offset of the last segment, from its file name.
fn base_of(store: &Path) -> u64 {
    store.file_name().unwrap().to_str().unwrap()[..20]
        .parse()
        .unwrap()
}

/// Where each record of the last segment starts in its store.
fn positions(records: &[Record], base: u64) -> Vec<u64> {
    let mut at = 0;
    records
        .iter()
        .filter(|r| r.offset >= base)
        .map(|r| {
            let p = at;
            at += 40 + r.value.len() as u64;
            p
        })
        .collect()
}

fn flip(path: &Path, position: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

fn with_cut(dir: &Path) -> LogConfig {
    LogConfig {
        corrupt_tail: CorruptTail::Cut,
        ..small_config(dir)
    }
}

#[test]
fn a_crc_failing_final_frame_is_a_torn_tail_and_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let base = base_of(&store);
    let last = *positions(&records, base).last().unwrap();
    flip(&store, last + 45, 0x04); // inside the last record's value
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    let cut = log.open_report().tail_cut.expect("a cut");
    assert_eq!(
        cut,
        TailCut {
            segment_base: base,
            position: last,
            bytes_dropped: 40 + records[12].value.len() as u64,
            records_dropped: 0,
            kind: TailKind::Torn,
            last_valid_after: None,
            first_dropped: 12,
        }
    );
    assert!(!cut.is_corruption());
    assert_eq!(read_all(&log), records[..12]);
    assert_eq!(log.append(&[record(99, 5)]).unwrap(), 12..13);
}

#[test]
fn a_bad_frame_followed_by_valid_ones_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let base = base_of(&store);
    let at = positions(&records, base);
    assert!(at.len() >= 3, "the last segment holds {} records", at.len());
    let bad = at[1]; // record base + 1; base + 2.. follow it
    flip(&store, bad + 41, 0x80);
    let before = std::fs::read(&store).unwrap();
    let listing = segment_files(dir.path(), "");
    match open(Arc::new(StdDisk), small_config(dir.path())) {
        Err(error @ LogError::CorruptTail { .. }) => {
            let message = error.to_string();
            let LogError::CorruptTail {
                segment,
                reason,
                cut,
            } = error
            else {
                unreachable!()
            };
            assert_eq!((segment, cut.position), (store.clone(), bad));
            assert_eq!(cut.kind, TailKind::Corrupt);
            assert_eq!(cut.first_dropped, base + 1);
            assert_eq!(cut.records_dropped, 12 - base);
            assert_eq!(cut.bytes_dropped, before.len() as u64 - bad);
            assert!(reason.contains("CRC"), "{reason}");
            assert!(reason.contains(&format!("offset {}", 12)), "{reason}");
            assert!(message.contains("corrupt_tail = cut"), "{message}");
            assert!(
                message.contains(&format!("drop {} bytes", cut.bytes_dropped)),
                "{message}"
            );
        }
        other => panic!("expected CorruptTail, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "the store is untouched"
    );
    assert_eq!(
        segment_files(dir.path(), ""),
        listing,
        "no file created or removed"
    );
}

#[test]
fn a_corrupt_length_that_runs_past_the_end_is_still_corruption() {
    // A length field damaged into a large (but legal) value makes the frame look incomplete,
    // like a torn write; the valid frames after it say otherwise.
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let at = positions(&records, base_of(&store));
    flip(&store, at[1] + 2, 0x40); // len += 4 MiB
    let err = open(Arc::new(StdDisk), small_config(dir.path())).unwrap_err();
    assert!(
        matches!(&err, LogError::CorruptTail { cut, .. } if cut.position == at[1]),
        "{err}"
    );
}

#[test]
fn an_explicit_cut_drops_the_corruption_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let base = base_of(&store);
    let at = positions(&records, base);
    let store_bytes = std::fs::metadata(&store).unwrap().len();
    flip(&store, at[1] + 41, 0x80);
    let log = open(Arc::new(StdDisk), with_cut(dir.path())).unwrap();
    let report = log.open_report();
    let cut = report.tail_cut.expect("a cut");
    assert_eq!(
        cut,
        TailCut {
            segment_base: base,
            position: at[1],
            bytes_dropped: store_bytes - at[1],
            records_dropped: 12 - (base + 1) + 1,
            kind: TailKind::Corrupt,
            last_valid_after: Some(FrameId {
                offset: 12,
                term: records[12].term,
            }),
            first_dropped: base + 1,
        }
    );
    assert!(cut.is_corruption());
    assert_eq!(report.truncated_bytes, cut.bytes_dropped);
    assert_eq!(std::fs::metadata(&store).unwrap().len(), at[1]);
    assert_eq!(read_all(&log), records[..=base as usize]);
    assert_eq!(log.append(&[record(99, 5)]).unwrap(), base + 1..base + 2);
    log.close().unwrap();
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    assert_eq!(log.open_report().tail_cut, None);
    assert_eq!(log.next_offset(), base + 2);
}

#[test]
fn zeros_then_valid_frames_are_unwritten_space_and_are_cut() {
    // What a power loss can leave when the page cache wrote back a later page before an
    // earlier one: a hole of zeros where a frame starts, then frames never synced.
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let base = base_of(&store);
    let at = positions(&records, base);
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[at[1] as usize..at[2] as usize].fill(0);
    std::fs::write(&store, &bytes).unwrap();
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    let cut = log.open_report().tail_cut.expect("a cut");
    assert_eq!(cut.kind, TailKind::Unwritten);
    assert_eq!(cut.position, at[1]);
    assert_eq!(cut.last_valid_after.map(|f| f.offset), Some(12));
    assert_eq!(read_all(&log), records[..=base as usize]);
}

#[test]
fn garbage_with_nothing_valid_after_it_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let mut bytes = std::fs::read(&store).unwrap();
    let clean = bytes.len() as u64;
    bytes.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&store, &bytes).unwrap();
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    let cut = log.open_report().tail_cut.expect("a cut");
    assert_eq!((cut.kind, cut.position), (TailKind::Torn, clean));
    assert_eq!(read_all(&log), records);
}

/// Frames larger than the 1 MiB scan chunk, and than the configured limit at the next open, at
/// the end of the last segment: a crash (power loss on the sim disk, a kill on real files)
/// keeps them.
#[test]
fn frames_larger_than_the_scan_chunk_survive_a_crash() {
    let sizes = [10usize, 3 << 20, 5, (1 << 20) + 1];
    let write = |disk: Arc<dyn Disk>, dir: &Path| -> Vec<Record> {
        let config = LogConfig {
            record_bytes_max: 4 << 20,
            segment_bytes_max: 64 << 20,
            ..LogConfig::new(dir)
        };
        let log = open(disk, config).unwrap();
        for (n, &size) in sizes.iter().enumerate() {
            log.append(&[record(n as u64, size)]).unwrap();
        }
        // And one over that limit, as a replica takes it.
        log.append_at(4, &record(4, 6 << 20), 0).unwrap();
        log.sync().unwrap();
        read_all(&log)
    };
    let reopen = |disk: Arc<dyn Disk>, dir: &Path, records: &[Record]| {
        let log = open(disk, LogConfig::new(dir)).unwrap(); // record_bytes_max 1 MiB
        assert_eq!(log.open_report().tail_cut, None);
        assert!(log.open_report().segments_scanned >= 1);
        assert_eq!(read_all(&log), records);
    };
    let dir = tempfile::tempdir().unwrap();
    let records = write(Arc::new(StdDisk), dir.path());
    reopen(Arc::new(StdDisk), dir.path(), &records);
    let sim = SimDisk::new(5);
    let records = write(Arc::new(sim.clone()), Path::new("/log"));
    sim.crash();
    reopen(Arc::new(sim), Path::new("/log"), &records);
}

// ---------------------------------------------------------------------------------------------
// Nothing unsynced is trusted: the tail is written again after an unclean stop.

#[test]
fn an_unclean_open_rewrites_and_syncs_the_tail_a_clean_one_does_not() {
    let sim = SimDisk::new(9);
    let dir = Path::new("/log");
    let log = open(Arc::new(sim.clone()), small_config(dir)).unwrap();
    for n in 0..12 {
        log.append(&[record(n, 30)]).unwrap();
    }
    drop(log); // not synced, not closed
    let store = sim
        .files()
        .into_iter()
        .rfind(|p| p.to_string_lossy().ends_with(".store"))
        .unwrap();
    let written_before = sim.stats().bytes_written;
    let log = open(Arc::new(sim.clone()), small_config(dir)).unwrap();
    let live = sim.open(&store, false).unwrap();
    let len = live.len().unwrap();
    assert!(len > 0);
    assert_eq!(log.open_report().tail_rewritten_bytes, len);
    assert!(sim.stats().bytes_written >= written_before + len);
    let mut bytes = vec![0; len as usize];
    live.read_at(&mut bytes, 0).unwrap();
    assert_eq!(sim.durable_bytes(&store).unwrap(), bytes);
    log.close().unwrap();
    let log = open(Arc::new(sim.clone()), small_config(dir)).unwrap();
    assert_eq!(log.open_report().tail_rewritten_bytes, 0);
    assert_eq!(log.open_report().segments_scanned, 0);
}

/// Linux after a failed fsync ("fsyncgate"): the kernel may have dropped the dirty pages that
/// failed, and a later fsync succeeds without writing them. Modelled over the sim disk: a sync
/// that fails remembers the bytes written since the last good one as dropped; until every one
/// of them is written again, later syncs of that file report success and persist nothing (a
/// stricter model than Linux, which persists the other pages).
#[derive(Debug, Clone)]
struct FsyncgateDisk {
    inner: Arc<dyn Disk>,
    files: Arc<Mutex<HashMap<PathBuf, Pages>>>,
    fail_next_sync: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Pages {
    /// Written since the last sync that persisted.
    unsynced: Option<(u64, u64)>,
    /// Dropped by a failed sync and not written again since.
    dropped: Option<(u64, u64)>,
}

fn merge(a: Option<(u64, u64)>, b: (u64, u64)) -> Option<(u64, u64)> {
    Some(a.map_or(b, |(s, e)| (s.min(b.0), e.max(b.1))))
}

impl FsyncgateDisk {
    fn new(inner: Arc<dyn Disk>) -> Self {
        FsyncgateDisk {
            inner,
            files: Arc::default(),
            fail_next_sync: Arc::default(),
        }
    }
}

impl Disk for FsyncgateDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(FsyncgateFile {
            inner: self.inner.open(path, create)?,
            path: path.to_path_buf(),
            disk: self.clone(),
        }))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.files.lock().remove(path);
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

#[derive(Debug)]
struct FsyncgateFile {
    inner: Arc<dyn DiskFile>,
    path: PathBuf,
    disk: FsyncgateDisk,
}

impl DiskFile for FsyncgateFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_at(buf, position)?;
        let end = position + buf.len() as u64;
        let mut files = self.disk.files.lock();
        let pages = files.entry(self.path.clone()).or_default();
        pages.unsynced = merge(pages.unsynced, (position, end));
        if let Some((start, stop)) = pages.dropped {
            if position <= start && end > start {
                pages.dropped = (end < stop).then_some((end, stop));
            }
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut files = self.disk.files.lock();
        let pages = files.entry(self.path.clone()).or_default();
        if self.disk.fail_next_sync.swap(false, Ordering::SeqCst) {
            if let Some(range) = pages.unsynced.take() {
                pages.dropped = merge(pages.dropped, range);
            }
            return Err(io::Error::other(
                "injected: fsync failed, dirty pages dropped",
            ));
        }
        if pages.dropped.is_some() {
            return Ok(()); // the lie
        }
        pages.unsynced = None;
        self.inner.sync_data()
    }
    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>> {
        self.inner.map_mut(len)
    }
}

#[test]
fn after_a_failed_fsync_a_restart_makes_the_tail_durable_before_using_it() {
    let sim = SimDisk::new(4);
    let disk = FsyncgateDisk::new(Arc::new(sim.clone()));
    let dir = Path::new("/log");
    let config = LogConfig {
        segment_bytes_max: 100_000,
        ..small_config(dir)
    };
    let log = open(Arc::new(disk.clone()), config.clone()).unwrap();
    log.append(&[record(0, 50), record(1, 50)]).unwrap();
    log.sync().unwrap();
    log.append(&[record(2, 50), record(3, 50)]).unwrap();
    disk.fail_next_sync.store(true, Ordering::SeqCst);
    assert!(log.sync().is_err());
    assert!(matches!(
        log.append(&[record(9, 1)]),
        Err(LogError::Poisoned { .. })
    ));
    drop(log); // the process restarts the log in place (no crash): records 2 and 3 read back
    let log = open(Arc::new(disk.clone()), config.clone()).unwrap();
    assert_eq!(log.next_offset(), 4, "the page cache still holds 2 and 3");
    let store = dir.join(format!("{:020}.store", 0));
    let mut live = vec![0; log.info().size_bytes as usize];
    sim.open(&store, false)
        .unwrap()
        .read_at(&mut live, 0)
        .unwrap();
    assert_eq!(
        sim.durable_bytes(&store).unwrap(),
        live,
        "what the log now serves is on disk"
    );
    // Acknowledged after the restart, then a power loss: nothing served may be lost.
    log.append(&[record(4, 50)]).unwrap();
    log.sync().unwrap();
    let served = read_all(&log);
    drop(log);
    sim.crash();
    let log = open(Arc::new(sim), config).unwrap();
    assert_eq!(read_all(&log), served);
}

#[test]
fn the_before_cut_hook_runs_before_the_cut_and_its_failure_leaves_the_store_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let (records, store) = killed_log(dir.path());
    let at = positions(&records, base_of(&store));
    flip(&store, at[1] + 41, 0x80);
    let before = std::fs::read(&store).unwrap();
    let clock = || Arc::new(ManualClock::new(5_000));
    let failed = Log::open_before_cut(
        Arc::new(StdDisk),
        clock(),
        with_cut(dir.path()),
        &mut |_| Err(io::Error::other("cannot record it")),
    )
    .unwrap_err();
    assert!(failed.to_string().contains("cannot record it"), "{failed}");
    assert_eq!(std::fs::read(&store).unwrap(), before, "nothing was cut");
    let mut seen = Vec::new();
    let log = Log::open_before_cut(
        Arc::new(StdDisk),
        clock(),
        with_cut(dir.path()),
        &mut |cut| {
            // The store still holds every byte when the hook runs.
            seen.push((*cut, std::fs::metadata(&store).unwrap().len()));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(
        seen,
        vec![(log.open_report().tail_cut.unwrap(), before.len() as u64)]
    );
    assert_eq!(std::fs::metadata(&store).unwrap().len(), at[1]);
}
