//! Index entries are checksummed (format 2) and format-1 directories upgrade (issue 15): a
//! flipped bit in an index can neither start a time lookup at the wrong record nor make
//! retention delete a segment early, and a directory written before format 2 (a standalone
//! log, a member's `data/` and `raft/log/`) opens with nothing lost, also when the upgrade is
//! cut short by a power loss at any I/O call.

mod log_support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log_support::{read_all, record, small_config, FaultDisk};
use loghouse::io::{create_dir_durable, Disk, ManualClock, SimDisk, StdDisk};
use loghouse::log::{record as frame, Log, LogConfig, LogError, NewRecord, INDEX_ENTRY_BYTES};

const START_MS: i64 = 1_000_000;

fn open_with(disk: Arc<dyn Disk>, clock: Arc<ManualClock>, config: LogConfig) -> Log {
    Log::open(disk, clock, config).expect("open")
}

/// 30 records, 10 ms apart, 5 per segment (small_config), closed cleanly.
fn timed_log(disk: Arc<dyn Disk>, clock: &Arc<ManualClock>, dir: &Path) {
    let log = open_with(disk, clock.clone(), small_config(dir));
    for n in 0..30 {
        clock.set_ms(START_MS + n as i64 * 10);
        log.append(&[record(n, 20)]).unwrap();
    }
    log.close().unwrap();
}

/// The index file of the segment at `base` (whatever its format's suffix).
fn index_file(files: &[PathBuf], base: u64) -> PathBuf {
    let prefix = format!("{base:020}.");
    files
        .iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.contains("index")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no index for segment {base}"))
}

/// The byte holding bit 17 of entry `entry`'s timestamp: set in START_MS + 20 and + 40
/// (0xF4254, 0xF4268), so flipping it makes the timestamp 131 s earlier.
fn timestamp_bit_17(entry: u64) -> u64 {
    entry * INDEX_ENTRY_BYTES + 8 + 2
}

#[test]
fn a_flipped_index_timestamp_on_disk_is_found_at_open() {
    let sim = SimDisk::new(1);
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = Path::new("/log");
    timed_log(Arc::new(sim.clone()), &clock, dir);
    // A middle entry of the oldest segment (record 2, at START_MS + 20; bit 17 is set there
    // too): open used to check only a segment's last entry, and a time lookup then started at
    // record 3.
    let index = index_file(&sim.files(), 0);
    sim.flip_bit(&index, timestamp_bit_17(2), 1).unwrap();
    clock.set_ms(START_MS + 1_000);
    let config = LogConfig {
        retention_ms_max: Some(1_000 - 35), // keeps the oldest segment: its newest is at 40
        ..small_config(dir)
    };
    let log = open_with(Arc::new(sim), clock, config);
    assert_eq!(log.open_report().indexes_damaged, 1);
    for t in (START_MS - 5..START_MS + 300).step_by(5) {
        let expected = ((t - START_MS + 9).max(0) / 10).min(30) as u64;
        assert_eq!(log.offset_for_time(t).unwrap(), expected, "time {t}");
    }
    assert_eq!(log.apply_retention().unwrap(), 0);
    assert_eq!(log.lowest_offset(), 0);
}

/// Every byte of a sealed index is covered: a flip in any entry or in the seal trailer makes
/// open rebuild that index (and serve the right records).
#[test]
fn a_flip_anywhere_in_a_sealed_index_is_found_at_open() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = Path::new("/log");
    let (sim, records) = {
        let sim = SimDisk::new(5);
        timed_log(Arc::new(sim.clone()), &clock, dir);
        let log = open_with(Arc::new(sim.clone()), clock.clone(), small_config(dir));
        let records = read_all(&log);
        log.close().unwrap();
        (sim, records)
    };
    let index = index_file(&sim.files(), 5);
    let len = sim.file_len_durable(&index).unwrap();
    assert_eq!(len, 6 * INDEX_ENTRY_BYTES, "5 entries and the trailer");
    for position in 0..len {
        let disk = SimDisk::new(6);
        copy_dir(&sim, &disk, dir);
        disk.flip_bit(&index, position, (position % 8) as u8)
            .unwrap();
        let log = open_with(Arc::new(disk), clock.clone(), small_config(dir));
        assert_eq!(log.open_report().segments_scanned, 1, "flip at {position}");
        assert_eq!(read_all(&log), records, "flip at {position}");
    }
}

/// Copies every file of `dir` from one sim disk to another (durably).
fn copy_dir(from: &SimDisk, to: &SimDisk, dir: &Path) {
    to.create_dir_all(dir).unwrap();
    for name in names(from, dir) {
        let path = dir.join(&name);
        let source = from.open(&path, false).unwrap();
        let mut bytes = vec![0u8; source.len().unwrap() as usize];
        source.read_at(&mut bytes, 0).unwrap();
        let target = to.open(&path, true).unwrap();
        target.write_at(&bytes, 0).unwrap();
        target.sync_data().unwrap();
    }
    to.sync_dir(dir).unwrap();
}

#[test]
fn a_flipped_index_timestamp_under_a_live_map_is_an_error_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    timed_log(Arc::new(StdDisk), &clock, dir.path());
    clock.set_ms(START_MS + 1_000);
    let config = LogConfig {
        retention_ms_max: Some(1_000 - 35),
        ..small_config(dir.path())
    };
    let log = open_with(Arc::new(StdDisk), clock, config);
    assert_eq!(log.offset_for_time(START_MS + 40).unwrap(), 4);
    // Bit rot in the page cache of the (mapped, sealed) index of the oldest segment.
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let index = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(index_file(&files, 0))
        .unwrap();
    let at = timestamp_bit_17(4);
    let mut byte = [0u8];
    index.read_exact_at(&mut byte, at).unwrap();
    index.write_all_at(&[byte[0] ^ 0x02], at).unwrap();
    // Once answered 5 (the next segment's first record): the flipped entry said 4 was older.
    match log.offset_for_time(START_MS + 40) {
        Err(LogError::Corrupt { reason, .. }) => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Once dropped the segment (its newest record looked 131 s old).
    assert_eq!(log.apply_retention().unwrap(), 0);
    assert_eq!(log.lowest_offset(), 0);
    // Reading records 3 and 4 goes through the same entry (where 4 starts, where 3 ends): an
    // error too, until a reopen rebuilds the index from the store.
    assert_eq!(log.read(2).unwrap().timestamp_ms, START_MS + 20);
    assert!(matches!(log.read(3), Err(LogError::Corrupt { .. })));
    assert!(matches!(log.read(4), Err(LogError::Corrupt { .. })));
    drop(log);
    let log = open_with(
        Arc::new(StdDisk),
        Arc::new(ManualClock::new(START_MS + 1_000)),
        small_config(dir.path()),
    );
    assert_eq!(log.open_report().indexes_damaged, 1);
    assert_eq!(log.read(4).unwrap().timestamp_ms, START_MS + 40);
    assert_eq!(log.offset_for_time(START_MS + 40).unwrap(), 4);
}

// ---------------------------------------------------------------------------------------------
// Format-1 directories.

/// A log directory as the engine wrote it before format 2 (index format 1: 16-byte entries,
/// position u64 and timestamp i64, no checksum; sealed indexes cut to their entries, the
/// active one pre-grown with zeros): `segments` are (base, records with
/// their timestamps); the last is sealed when `closed`, else its index is pre-grown to
/// `index_bytes_max` (a crash). Everything is synced.
fn write_v1_log(
    disk: &dyn Disk,
    dir: &Path,
    segments: &[(u64, Vec<(NewRecord, i64)>)],
    index_bytes_max: u64,
    closed: bool,
) {
    // The fixture must be durable itself: under SimDisk a directory entry whose parent was not
    // synced vanishes at the next crash.
    create_dir_durable(disk, dir).unwrap();
    for (i, (base, records)) in segments.iter().enumerate() {
        let (mut store, mut index) = (Vec::new(), Vec::new());
        for (n, (r, ts)) in records.iter().enumerate() {
            index.extend_from_slice(&(store.len() as u64).to_le_bytes());
            index.extend_from_slice(&ts.to_le_bytes());
            frame::encode(&mut store, base + n as u64, *ts, r);
        }
        let last = i + 1 == segments.len();
        if last && !closed {
            index.resize(index_bytes_max as usize, 0);
        }
        for (suffix, bytes) in [("store", &store), ("index", &index)] {
            let file = disk
                .open(&dir.join(format!("{base:020}.{suffix}")), true)
                .unwrap();
            file.write_at(bytes, 0).unwrap();
            file.sync_data().unwrap();
        }
    }
    disk.sync_dir(dir).unwrap();
}

/// `count` records from offset `first`, split into segments of `per_segment`, 7 ms apart.
fn v1_segments(first: u64, count: u64, per_segment: u64) -> Vec<(u64, Vec<(NewRecord, i64)>)> {
    let mut out: Vec<(u64, Vec<(NewRecord, i64)>)> = Vec::new();
    for offset in first..first + count {
        if (offset - first) % per_segment == 0 {
            out.push((offset, Vec::new()));
        }
        let ts = START_MS + offset as i64 * 7;
        let value_len = (offset as usize * 53) % 300;
        out.last_mut()
            .unwrap()
            .1
            .push((record(offset, value_len), ts));
    }
    out
}

fn names(disk: &dyn Disk, dir: &Path) -> Vec<String> {
    let mut names = disk.list_dir(dir).unwrap();
    names.sort();
    names
}

/// Opens a format-1 directory, checks every record and the upgrade, reopens after a clean
/// close (no scan: the new indexes are trusted) and appends.
fn check_upgrade(disk: Arc<dyn Disk>, config: LogConfig, v1: &[(u64, Vec<(NewRecord, i64)>)]) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = config.dir.clone();
    let log = open_with(disk.clone(), clock.clone(), config.clone());
    let report = log.open_report();
    assert_eq!(report.indexes_upgraded as usize, v1.len(), "{report:?}");
    assert_eq!(report.tail_cut, None);
    let expected: Vec<(u64, i64, NewRecord)> = v1
        .iter()
        .flat_map(|(base, records)| {
            (records.iter().enumerate()).map(move |(i, (r, ts))| (base + i as u64, *ts, r.clone()))
        })
        .collect();
    let check = |log: &Log| {
        let all = read_all(log);
        assert_eq!(all.len(), expected.len());
        for (got, (offset, ts, want)) in all.iter().zip(&expected) {
            assert_eq!(
                (got.offset, got.timestamp_ms, got.term, got.kind, &got.value),
                (*offset, *ts, want.term, want.kind, &want.value)
            );
        }
        let (first, ts, _) = &expected[expected.len() / 2];
        assert_eq!(log.offset_for_time(*ts).unwrap(), *first);
    };
    check(&log);
    let after = names(disk.as_ref(), &dir);
    assert!(after.iter().all(|n| !n.ends_with(".index")), "{after:?}");
    assert_eq!(
        after.iter().filter(|n| n.ends_with(".index2")).count(),
        v1.len()
    );
    log.close().unwrap();
    let log = open_with(disk, clock, config);
    assert_eq!(log.open_report().segments_scanned, 0);
    assert_eq!(log.open_report().indexes_upgraded, 0);
    check(&log);
    let next = log.next_offset();
    assert_eq!(log.append(&[record(9, 10)]).unwrap(), next..next + 1);
}

#[test]
fn a_standalone_format_1_directory_opens_with_nothing_lost() {
    for closed in [true, false] {
        let sim = SimDisk::new(2);
        let config = LogConfig::new("/data/log");
        // What today's main writes with a 10 MiB index_bytes_max.
        let v1 = v1_segments(0, 45, 9);
        write_v1_log(&sim, &config.dir, &v1, config.index_bytes_max, closed);
        check_upgrade(Arc::new(sim), config, &v1);
    }
}

#[test]
fn a_members_format_1_logs_open_with_nothing_lost() {
    // A member keeps two logs of the same engine: data/ (client offsets) and raft/log/ (Raft
    // indexes, 8 MiB segments, 2 MiB indexes).
    for closed in [true, false] {
        let sim = SimDisk::new(3);
        let data = LogConfig::new("/node/data");
        let entries = LogConfig {
            segment_bytes_max: 8 << 20,
            index_bytes_max: 2 << 20,
            ..LogConfig::new("/node/raft/log")
        };
        let data_v1 = v1_segments(0, 40, 10);
        let entries_v1 = v1_segments(1, 12, 12);
        write_v1_log(&sim, &data.dir, &data_v1, data.index_bytes_max, closed);
        write_v1_log(
            &sim,
            &entries.dir,
            &entries_v1,
            entries.index_bytes_max,
            closed,
        );
        check_upgrade(Arc::new(sim.clone()), data, &data_v1);
        check_upgrade(Arc::new(sim), entries, &entries_v1);
    }
}

/// A power loss at every I/O call of the upgrade: the directory still opens afterwards with
/// every record, and ends up upgraded.
#[test]
fn an_upgrade_cut_short_anywhere_opens_with_nothing_lost() {
    let dir = Path::new("/data/log");
    let config = LogConfig::new(dir);
    let v1 = v1_segments(0, 30, 8);
    let fresh = |seed| {
        let sim = SimDisk::new(seed);
        write_v1_log(&sim, dir, &v1, config.index_bytes_max, false);
        sim
    };
    let total_ops = {
        let disk = FaultDisk::new(Arc::new(fresh(0)));
        open_with(
            Arc::new(disk.clone()),
            Arc::new(ManualClock::new(0)),
            config.clone(),
        );
        disk.faults.ops.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert!(total_ops > 10, "the upgrade makes {total_ops} I/O calls");
    for fail_from in 0..total_ops {
        let sim = fresh(fail_from);
        let disk = FaultDisk::new(Arc::new(sim.clone()));
        disk.faults.fail_ops_from(fail_from);
        let clock = Arc::new(ManualClock::new(0));
        let first = Log::open(Arc::new(disk), clock.clone(), config.clone());
        assert!(
            first.is_err(),
            "I/O call {fail_from} failed, yet open succeeded"
        );
        sim.crash();
        let log = Log::open(Arc::new(sim.clone()), clock, config.clone())
            .unwrap_or_else(|e| panic!("reopen after power loss at I/O call {fail_from}: {e}"));
        assert_eq!(
            read_all(&log).len(),
            30,
            "power loss at I/O call {fail_from}"
        );
        let left = names(&sim, dir);
        assert!(left.iter().all(|n| !n.ends_with(".index")), "{left:?}");
    }
}

/// The active index starts small and doubles as appends fill it (issue 16: a node holding many
/// partitions maps 24 KiB per idle one, not `index_bytes_max`), on the real disk and the
/// simulated one; growing keeps every entry, a clean reopen trusts the sealed index, a crash
/// with the index grown part-way reopens through a scan with nothing lost, and the segment
/// still rolls at `index_bytes_max`.
#[test]
fn the_active_index_grows_in_steps() {
    let std_dir = tempfile::tempdir().unwrap();
    let sim = SimDisk::new(7);
    let disks: [(Arc<dyn Disk>, PathBuf); 2] = [
        (Arc::new(StdDisk), std_dir.path().join("log")),
        (Arc::new(sim.clone()), PathBuf::from("/data/log")),
    ];
    for (disk, dir) in disks {
        let clock = Arc::new(ManualClock::new(START_MS));
        let config = LogConfig {
            index_bytes_max: INDEX_ENTRY_BYTES * 5000,
            ..LogConfig::new(&dir)
        };
        let index_len = |disk: &Arc<dyn Disk>| {
            let file = disk
                .open(&dir.join(format!("{:020}.index2", 0)), false)
                .unwrap();
            file.len().unwrap()
        };
        let log = open_with(disk.clone(), clock.clone(), config.clone());
        assert_eq!(
            index_len(&disk),
            1024 * INDEX_ENTRY_BYTES,
            "starts at 1,024 entries"
        );
        let mut n = 0u64;
        for batch in [1usize, 1022, 1, 1, 700, 1500, 3] {
            let records: Vec<NewRecord> = (0..batch as u64).map(|i| record(n + i, 10)).collect();
            assert_eq!(log.append(&records).unwrap(), n..n + batch as u64);
            n += batch as u64;
        }
        assert_eq!(n, 3228);
        assert_eq!(index_len(&disk), 4096 * INDEX_ENTRY_BYTES, "doubled twice");
        assert_eq!(log.offset_for_time(START_MS).unwrap(), 0);
        assert_eq!(read_all(&log).len(), 3228);
        log.close().unwrap();
        let log = open_with(disk.clone(), clock.clone(), config.clone());
        assert_eq!(log.open_report().segments_scanned, 0, "closed cleanly");
        assert_eq!(
            index_len(&disk),
            4096 * INDEX_ENTRY_BYTES,
            "reopened with room"
        );
        let records: Vec<NewRecord> = (0..1000).map(|i| record(n + i, 10)).collect();
        log.append(&records).unwrap();
        n += 1000;
        assert_eq!(
            index_len(&disk),
            5000 * INDEX_ENTRY_BYTES,
            "capped at index_bytes_max"
        );
        log.sync().unwrap();
        drop(log); // a crash: the grown index is not sealed
        let log = open_with(disk.clone(), clock.clone(), config.clone());
        assert_eq!(log.open_report().segments_scanned, 1, "unsealed: scanned");
        let all = read_all(&log);
        assert_eq!(all.len() as u64, n);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.value, record(i as u64, 10).value, "record {i}");
        }
        // 5,000 entries fill the segment: the next append rolls.
        let records: Vec<NewRecord> = (0..(5000 - n + 1)).map(|i| record(n + i, 10)).collect();
        log.append(&records).unwrap();
        assert_eq!(log.info().segment_count, 2);
        log.close().unwrap();
    }
}
