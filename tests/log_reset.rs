//! `Log::reset` (restart a log empty at any offset, durably), `Log::append_batch_at` and
//! `Log::retention_cut`: the additions the Raft store needs.

mod log_support;

use std::path::Path;
use std::sync::Arc;

use log_support::{read_all, record, small_config, FaultDisk};
use loghouse::io::{Disk, ManualClock, SimDisk, StdDisk};
use loghouse::log::{Log, LogConfig, LogError, NewRecord, INDEX_ENTRY_BYTES};

fn open(disk: Arc<dyn Disk>, config: LogConfig) -> Result<Log, LogError> {
    Log::open(disk, Arc::new(ManualClock::new(5_000)), config)
}

fn fill(log: &Log, count: u64) {
    let next = log.next_offset();
    for n in next..next + count {
        log.append(&[record(n, (n as usize * 31) % 90)]).unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn reset_restarts_the_log_empty_at_any_offset_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    fill(&log, 40);
    assert!(log.info().segment_count > 2);
    // Forward past the end, then backward below it: both work.
    for target in [1_000, 7] {
        log.reset(target).unwrap();
        let info = log.info();
        assert_eq!(
            (info.lowest_offset, info.next_offset, info.segment_count),
            (target, target, 1)
        );
        assert_eq!(info.durable_offset, target);
        assert!(matches!(
            log.read(target),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.append(&[record(1, 10)]).unwrap(), target..target + 1);
        log.sync().unwrap();
    }
    let records = read_all(&log);
    log.close().unwrap();
    let log = open(Arc::new(StdDisk), small_config(dir.path())).unwrap();
    assert_eq!((log.lowest_offset(), log.next_offset()), (7, 8));
    assert_eq!(read_all(&log), records);
}

#[test]
fn a_crash_anywhere_in_a_reset_leaves_a_log_that_opens_and_a_second_reset_finishes_it() {
    let dir = Path::new("/log");
    // Count the mutating operations of a reset.
    let counting = FaultDisk::new(Arc::new(SimDisk::new(0)));
    let log = open(Arc::new(counting.clone()), small_config(dir)).unwrap();
    fill(&log, 30);
    let before = counting
        .faults
        .ops
        .load(std::sync::atomic::Ordering::SeqCst);
    log.reset(500).unwrap();
    let ops = counting
        .faults
        .ops
        .load(std::sync::atomic::Ordering::SeqCst)
        - before;
    assert!(ops > 4);
    for n in 0..=ops {
        let sim = SimDisk::new(n);
        let faulty = FaultDisk::new(Arc::new(sim.clone()));
        let log = open(Arc::new(faulty.clone()), small_config(dir)).unwrap();
        fill(&log, 30);
        let original = read_all(&log);
        let base = faulty.faults.ops.load(std::sync::atomic::Ordering::SeqCst);
        faulty.faults.fail_ops_from(base + n);
        let result = log.reset(500);
        if result.is_err() {
            // Poisoned: writes are refused until reopened.
            assert!(matches!(
                log.append(&[record(0, 1)]),
                Err(LogError::Poisoned { .. })
            ));
        }
        drop(log);
        sim.crash();
        let log = open(Arc::new(sim.clone()), small_config(dir))
            .unwrap_or_else(|e| panic!("crash at op {n}: open failed: {e}"));
        // What survived is a dense suffix of the old log (empty once every old segment is gone).
        let survived = read_all(&log);
        assert!(
            original.ends_with(&survived),
            "crash at op {n}: {} records survived from {}",
            survived.len(),
            log.lowest_offset()
        );
        log.reset(500).unwrap();
        assert_eq!((log.lowest_offset(), log.next_offset()), (500, 500));
        log.append(&[record(9, 9)]).unwrap();
        log.sync().unwrap();
        drop(log);
        sim.crash();
        let log = open(Arc::new(sim), small_config(dir)).unwrap();
        assert_eq!((log.lowest_offset(), log.next_offset()), (500, 501));
    }
}

#[test]
fn append_batch_at_checks_the_offset_and_clamps_the_timestamp() {
    let log = open(Arc::new(SimDisk::new(1)), small_config(Path::new("/log"))).unwrap();
    let batch: Vec<NewRecord> = (0..5)
        .map(|n| NewRecord {
            term: 3,
            kind: 0,
            value: format!("r{n}").into(),
        })
        .collect();
    assert_eq!(log.append_batch_at(0, &batch, 100).unwrap(), 0..5);
    assert!(matches!(
        log.append_batch_at(3, &batch, 100),
        Err(LogError::NonContiguous {
            expected: 5,
            got: 3
        })
    ));
    assert!(matches!(
        log.append_batch_at(5, &[], 100),
        Err(LogError::BatchEmpty)
    ));
    // An older timestamp (a skewed leader) is clamped to the newest so far.
    assert_eq!(log.append_batch_at(5, &batch[..2], 50).unwrap(), 5..7);
    let records = read_all(&log);
    assert!(records.iter().all(|r| r.timestamp_ms == 100 && r.term == 3));
    assert_eq!(records[6].value, "r1");
}

/// A replica that truncates an uncommitted suffix stamped by a leader with a fast clock must
/// stamp what replaces it the way a replica that never had the suffix does, and the way it
/// would itself after a reopen (found by the cluster simulation: replicas disagreed on
/// timestamps).
#[test]
fn truncate_from_lowers_the_timestamp_floor_to_the_newest_record_kept() {
    let batch = |n: usize| -> Vec<NewRecord> {
        (0..n)
            .map(|i| NewRecord {
                term: 1,
                kind: 0,
                value: format!("v{i}").into(),
            })
            .collect()
    };
    let dir = Path::new("/log");
    let disk = SimDisk::new(2);
    let truncated = open(Arc::new(disk.clone()), small_config(dir)).unwrap();
    let clean = open(Arc::new(SimDisk::new(3)), small_config(dir)).unwrap();
    for log in [&truncated, &clean] {
        log.append_batch_at(0, &batch(3), 100).unwrap();
    }
    // The suffix from a fast-clocked leader, on one replica only, then cut (across a segment).
    truncated.append_batch_at(3, &batch(20), 9_000).unwrap();
    assert!(truncated.info().segment_count > 1);
    truncated.truncate_from(3).unwrap();
    for log in [&truncated, &clean] {
        log.append_batch_at(3, &batch(2), 200).unwrap();
        log.sync().unwrap();
    }
    let times = |log: &Log| -> Vec<i64> { read_all(log).iter().map(|r| r.timestamp_ms).collect() };
    assert_eq!(times(&truncated), vec![100, 100, 100, 200, 200]);
    assert_eq!(times(&truncated), times(&clean));
    // And reopening agrees with the floor it kept.
    truncated.close().unwrap();
    let reopened = open(Arc::new(disk), small_config(dir)).unwrap();
    reopened.append_batch_at(5, &batch(1), 150).unwrap();
    assert_eq!(read_all(&reopened).last().unwrap().timestamp_ms, 200);
}

/// The floor a truncation leaves comes from the kept record's frame (CRC-covered): a flipped
/// bit in an index entry's timestamp once made a repaired replica stamp every record it got back
/// 2^21 ms late (simulation seed 70904). Entries are checksummed now: open finds the flipped
/// entry and rebuilds the index from the store, and the floor is right.
#[test]
fn truncate_from_takes_the_floor_from_the_frame_not_a_damaged_index_entry() {
    let dir = Path::new("/log");
    let disk = SimDisk::new(2);
    let log = open(Arc::new(disk.clone()), small_config(dir)).unwrap();
    let records: Vec<NewRecord> = (0..3).map(|i| record(i, 10)).collect();
    log.append_batch_at(0, &records, 100).unwrap();
    log.close().unwrap();
    // Entries are 24 bytes: position u64, timestamp i64, crc32c, reserved; flip bit 21 of
    // record 1's timestamp.
    let index = dir.join(format!("{:020}.index2", 0));
    disk.flip_bit(&index, INDEX_ENTRY_BYTES + 8 + 2, 5).unwrap();
    let log = open(Arc::new(disk), small_config(dir)).unwrap();
    assert_eq!(log.open_report().indexes_damaged, 1);
    log.truncate_from(2).unwrap();
    log.check_tail().unwrap();
    log.append_batch_at(2, &[record(2, 10)], 50).unwrap();
    let times: Vec<i64> = read_all(&log).iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(times, vec![100, 100, 100]);
}

#[test]
fn retention_cut_says_where_retention_would_cut_without_deleting() {
    let clock = Arc::new(ManualClock::new(5_000));
    let log = Log::open(
        Arc::new(SimDisk::new(2)),
        clock.clone(),
        small_config(Path::new("/log")),
    )
    .unwrap();
    fill(&log, 40);
    let info = log.info();
    assert!(info.segment_count > 3);
    assert_eq!(log.retention_cut(None, None), 0);
    // Keep at most half the bytes: the cut is a segment base, and nothing is deleted.
    let cut = log.retention_cut(Some(info.size_bytes / 2), None);
    assert!(cut > 0 && cut < info.next_offset);
    assert_eq!(log.info(), info);
    assert!(log.read(cut).is_ok());
    // The same cut apply_retention would make.
    let mut config = small_config(Path::new("/log2"));
    config.retention_bytes_max = Some(info.size_bytes / 2);
    let other = Log::open(Arc::new(SimDisk::new(2)), clock.clone(), config).unwrap();
    fill(&other, 40);
    other.apply_retention().unwrap();
    assert_eq!(other.lowest_offset(), cut);
    // By age: every sealed segment is older than 1 ms once time moves on, so the cut is the
    // active segment's base, as with a zero byte budget.
    clock.advance_ms(10);
    let active_base = log.retention_cut(Some(0), None);
    assert!(active_base > cut);
    assert_eq!(log.retention_cut(None, Some(1)), active_base);
}
