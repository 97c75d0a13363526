//! Crash and corruption tests: torn tails, bit flips, lost or stale indexes on real files, and
//! crash-at-every-step runs written against any `Disk` plus a function that crashes it.

mod log_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log_support::{read_all, record, segment_files, small_config, FaultDisk};
use loghouse::io::{Disk, ManualClock, SimDisk, SimDiskFaults, StdDisk};
use loghouse::log::{Log, LogConfig, LogError, Record};

fn open(disk: Arc<dyn Disk>, config: LogConfig) -> Result<Log, LogError> {
    Log::open(disk, Arc::new(ManualClock::new(5_000)), config)
}

fn open_std(dir: &Path) -> Log {
    open(Arc::new(StdDisk), small_config(dir)).expect("open")
}

/// A log of `count` records (value lengths vary) on real files, closed cleanly unless `close`
/// is false (then dropped: a process crash).
fn write_log(dir: &Path, count: u64, close: bool) -> Vec<Record> {
    let log = open_std(dir);
    for n in 0..count {
        log.append(&[record(n, (n as usize * 37) % 90)]).unwrap();
    }
    log.sync().unwrap();
    let records = read_all(&log);
    if close {
        log.close().unwrap();
    }
    records
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn half_a_frame_at_the_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 20, true);
    let last_store = segment_files(dir.path(), ".store").pop().unwrap();
    let clean_len = file_len(&last_store);
    // Half of a real frame: what a torn write leaves.
    let mut frame = Vec::new();
    loghouse::log::record::encode(&mut frame, 20, 5_000, &record(20, 50));
    append_bytes(&last_store, &frame[..frame.len() / 2]);
    let log = open_std(dir.path());
    assert_eq!(log.open_report().truncated_bytes, (frame.len() / 2) as u64);
    assert_eq!(file_len(&last_store), clean_len);
    assert_eq!(read_all(&log), records);
    assert_eq!(log.append(&[record(99, 10)]).unwrap(), 20..21);
    assert_eq!(log.read(20).unwrap().value, record(99, 10).value);
}

#[test]
fn garbage_after_a_crash_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 13, false);
    let last_store = segment_files(dir.path(), ".store").pop().unwrap();
    append_bytes(&last_store, &[0xAB; 77]);
    let log = open_std(dir.path());
    assert_eq!(log.open_report().truncated_bytes, 77);
    assert!(log.open_report().segments_scanned >= 1);
    assert_eq!(read_all(&log), records);
}

#[test]
fn a_bit_flip_in_a_sealed_segment_fails_that_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 20, true);
    let first_store = segment_files(dir.path(), ".store").remove(0);
    // Flip a bit inside the value of the second record of the first segment.
    assert!(!records[1].value.is_empty());
    let position = (40 + records[0].value.len()) as u64; // start of record 1's frame
    let mut bytes = std::fs::read(&first_store).unwrap();
    bytes[position as usize + 40] ^= 0x10;
    std::fs::write(&first_store, &bytes).unwrap();

    let log = open_std(dir.path());
    assert_eq!(
        log.open_report().segments_scanned,
        0,
        "a sealed segment's index is trusted"
    );
    match log.read(1) {
        Err(LogError::Corrupt {
            segment,
            position: p,
            reason,
        }) => {
            assert_eq!(segment, first_store);
            assert_eq!(p, position);
            assert!(reason.contains("CRC"), "{reason}");
            let message = LogError::Corrupt {
                segment,
                position: p,
                reason,
            }
            .to_string();
            assert!(message.contains("00000000000000000000.store"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        log.read_batch(0, 10, 1 << 20),
        Err(LogError::Corrupt { .. })
    ));
    assert_eq!(log.read(0).unwrap(), records[0]);
    for r in &records[2..] {
        assert_eq!(&log.read(r.offset).unwrap(), r);
    }
}

#[test]
fn deleted_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 25, true);
    let indexes = segment_files(dir.path(), ".index2");
    assert!(indexes.len() >= 3);
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::remove_file(indexes.last().unwrap()).unwrap();
    let log = open_std(dir.path());
    assert_eq!(log.open_report().segments_scanned, 2);
    assert_eq!(log.open_report().truncated_bytes, 0);
    assert_eq!(read_all(&log), records);
    log.close().unwrap();
    // The rebuilt indexes were left clean.
    let log = open_std(dir.path());
    assert_eq!(log.open_report().segments_scanned, 0);
    assert_eq!(read_all(&log), records);
}

#[test]
fn an_index_pre_grown_with_zeros_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 25, true);
    let config = small_config(dir.path());
    for index in segment_files(dir.path(), ".index2") {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&index)
            .unwrap();
        f.set_len(0).unwrap();
        f.set_len(config.index_bytes_max).unwrap();
    }
    let log = open_std(dir.path());
    assert_eq!(read_all(&log), records);
    assert_eq!(
        log.open_report().segments_scanned,
        segment_files(dir.path(), ".store").len() as u32
    );
}

#[test]
fn a_stale_index_from_a_crash_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 23, false);
    let log = open_std(dir.path());
    assert_eq!(
        log.open_report().segments_scanned,
        1,
        "only the active segment"
    );
    assert_eq!(read_all(&log), records);
}

#[test]
fn an_active_store_shorter_than_its_index_claims_is_cut_to_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 22, true);
    let last_store = segment_files(dir.path(), ".store").pop().unwrap();
    let len = file_len(&last_store);
    assert!(len > 10);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last_store)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let log = open_std(dir.path());
    assert_eq!(log.next_offset(), 21);
    let last = records.last().unwrap();
    assert_eq!(
        log.open_report().truncated_bytes,
        (40 + last.value.len() - 3) as u64
    );
    assert_eq!(read_all(&log), records[..21]);
}

#[test]
fn a_damaged_sealed_segment_serves_its_good_records_and_names_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 22, true);
    let first_store = segment_files(dir.path(), ".store").remove(0);
    let len = file_len(&first_store);
    // Lose the last byte of the first (sealed) segment: its last record is now unreadable.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&first_store)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let log = open_std(dir.path());
    assert_eq!(log.open_report().unreadable_records, 1);
    assert_eq!(
        log.next_offset(),
        22,
        "offsets stay dense: nothing is renumbered"
    );
    let second_base = segment_files(dir.path(), ".store")[1]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()[..20]
        .parse::<u64>()
        .unwrap();
    let lost = second_base - 1;
    match log.read(lost) {
        Err(LogError::Corrupt {
            segment, reason, ..
        }) => {
            assert_eq!(segment, first_store);
            assert!(reason.contains("unreadable"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    for record in records.iter().filter(|r| r.offset != lost) {
        assert_eq!(&log.read(record.offset).unwrap(), record);
    }
    let batch = log.read_batch(0, 1000, 1 << 20).unwrap();
    assert_eq!(
        batch,
        records[..lost as usize],
        "a batch stops before the damage"
    );
    // Appends go on after the damage, and the damage is found again at the next open.
    log.append(&[record(22, 5)]).unwrap();
    log.close().unwrap();
    let log = open_std(dir.path());
    assert_eq!(
        (log.open_report().unreadable_records, log.next_offset()),
        (1, 23)
    );
}

#[test]
fn a_missing_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 22, true);
    let stores = segment_files(dir.path(), ".store");
    std::fs::remove_file(&stores[1]).unwrap();
    let err = open(Arc::new(StdDisk), small_config(dir.path())).unwrap_err();
    assert!(err.to_string().contains("records are missing"), "{err}");
}

#[test]
fn orphan_indexes_are_removed_and_other_files_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path(), 7, true);
    let orphan = dir.path().join("00000000000000099999.index");
    std::fs::write(&orphan, [0u8; 32]).unwrap();
    std::fs::write(dir.path().join("README"), "hello").unwrap();
    std::fs::write(dir.path().join("00000000000000000001.store.tmp"), "x").unwrap();
    let log = open_std(dir.path());
    assert_eq!(log.open_report().orphan_indexes_removed, 1);
    assert!(!orphan.exists());
    assert!(dir.path().join("README").exists());
    assert_eq!(read_all(&log), records);
}

#[test]
fn a_clean_close_opens_without_a_scan_even_with_a_full_index() {
    for count in [0, 1, 4, 5, 6, 10, 11] {
        let dir = tempfile::tempdir().unwrap();
        // Equal-sized small records: the 5-entry index fills before the store does.
        let log = open_std(dir.path());
        for n in 0..count {
            log.append(&[record(n, 3)]).unwrap();
        }
        log.close().unwrap();
        let log = open_std(dir.path());
        assert_eq!(log.open_report().segments_scanned, 0, "{count} records");
        assert_eq!(log.next_offset(), count);
    }
}

#[test]
fn records_larger_than_the_scan_chunk_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        record_bytes_max: 3 << 20,
        segment_bytes_max: 16 << 20,
        ..LogConfig::new(dir.path())
    };
    let log = open(Arc::new(StdDisk), config.clone()).unwrap();
    let sizes = [700_000usize, 1 << 20, 2_500_000, 10, (1 << 20) - 40];
    for (n, &size) in sizes.iter().enumerate() {
        log.append(&[record(n as u64, size)]).unwrap();
    }
    let records = read_all(&log);
    drop(log);
    let log = open(Arc::new(StdDisk), config).unwrap();
    assert_eq!(log.open_report().segments_scanned, 1);
    assert_eq!(log.open_report().truncated_bytes, 0);
    assert_eq!(read_all(&log), records);
}

// ---------------------------------------------------------------------------------------------
// Crash at every step.

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<usize>),
    Sync,
    /// truncate_from(next - n)
    TruncateFromBack(u64),
    /// truncate_before(lowest + n)
    TruncateBefore(u64),
    CloseReopen,
}

fn workload() -> Vec<Step> {
    use Step::*;
    vec![
        Append(vec![10, 50]),
        Append(vec![100]),
        Sync,
        Append(vec![0, 0, 0, 150]),
        Append(vec![30; 5]),
        Sync,
        TruncateFromBack(3),
        Append(vec![60, 60]),
        CloseReopen,
        Append(vec![120, 10]),
        Sync,
        TruncateBefore(4),
        Append(vec![5; 8]),
        Sync,
        Append(vec![199]),
        TruncateFromBack(1),
        Append(vec![40]),
    ]
}

/// The log as the model sees it: every record since offset 0 (values), and the lowest offset.
#[derive(Debug, Clone, Default)]
struct Version {
    lowest: u64,
    values: Vec<bytes::Bytes>,
}

/// Runs `step`, updating `model`. Errors are returned (the caller decides whether they count).
fn run_step(
    log: &mut Log,
    reopen: &dyn Fn() -> Result<Log, LogError>,
    model: &mut Version,
    step: &Step,
    n: &mut u64,
) -> Result<(), LogError> {
    match step {
        Step::Append(lens) => {
            let batch: Vec<_> = lens
                .iter()
                .map(|&len| {
                    *n += 1;
                    record(*n, len)
                })
                .collect();
            let range = log.append(&batch)?;
            assert_eq!(range.start, model.values.len() as u64);
            model.values.extend(batch.into_iter().map(|r| r.value));
        }
        Step::Sync => {
            log.sync()?;
        }
        Step::TruncateFromBack(back) => {
            let offset = (model.values.len() as u64)
                .saturating_sub(*back)
                .max(model.lowest);
            log.truncate_from(offset)?;
            model.values.truncate(offset as usize);
        }
        Step::TruncateBefore(forward) => {
            log.truncate_before(model.lowest + forward)?;
            model.lowest = log.lowest_offset();
        }
        Step::CloseReopen => {
            log.close()?;
            *log = reopen()?;
        }
    }
    Ok(())
}

/// Checks a log reopened after a crash: its records are those of `version` (a prefix of it, from
/// a lowest offset in `lowest_range`), and it holds everything below `durable`.
fn check_recovered(log: &Log, version: &Version, lowest_range: (u64, u64), durable: u64) {
    let (lowest, next) = (log.lowest_offset(), log.next_offset());
    assert!(
        lowest >= lowest_range.0 && lowest <= lowest_range.1,
        "lowest {lowest} not in {lowest_range:?}"
    );
    assert!(
        next >= durable,
        "lost synced records: next {next} < durable {durable}"
    );
    assert!(
        next <= version.values.len() as u64,
        "next {next} beyond what was written ({})",
        version.values.len()
    );
    for r in read_all(log) {
        assert_eq!(
            r.value, version.values[r.offset as usize],
            "offset {}",
            r.offset
        );
    }
}

/// For each k, runs the first k steps of the workload in a fresh directory under `root`, crashes
/// (drops the log without closing it, then calls `crash`), reopens and checks that the log is a
/// prefix of what was written that holds everything synced, then that it takes appends.
/// Run on real files (crash = nothing: a process crash) and on the sim disk (crash = power loss).
pub fn crash_at_every_step(disk: Arc<dyn Disk>, root: &Path, crash: &dyn Fn()) {
    let steps = workload();
    for k in 0..=steps.len() {
        let dir = root.join(format!("step-{k}"));
        let reopen = || open(disk.clone(), small_config(&dir));
        let mut log = reopen().expect("open");
        let mut model = Version::default();
        let mut n = 0;
        for step in &steps[..k] {
            run_step(&mut log, &reopen, &mut model, step, &mut n).expect("step");
        }
        let durable = log.durable_offset();
        drop(log);
        crash();
        let log = reopen().expect("reopen after crash");
        check_recovered(&log, &model, (model.lowest, model.lowest), durable);
        let next = log.next_offset();
        assert_eq!(log.append(&[record(1000, 20)]).unwrap(), next..next + 1);
        log.close().unwrap();
    }
}

#[test]
fn crash_at_every_step_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    crash_at_every_step(Arc::new(StdDisk), dir.path(), &|| {});
}

#[test]
fn crash_at_every_step_on_the_sim_disk() {
    for seed in 0..4 {
        let sim = SimDisk::new(seed);
        sim.set_faults(SimDiskFaults {
            torn_write_on_crash: seed % 2 == 1,
            ..SimDiskFaults::default()
        });
        let crash_disk = sim.clone();
        crash_at_every_step(Arc::new(sim), Path::new("/data"), &move || {
            crash_disk.crash()
        });
    }
}

/// Power loss at every single I/O call: every mutating call from the Nth on fails (as if the
/// machine stopped there), then the sim disk crashes (torn writes on), and the log reopens.
#[test]
fn power_loss_at_every_io_call() {
    let steps = workload();
    let total_ops = {
        let sim = SimDisk::new(0);
        let disk = FaultDisk::new(Arc::new(sim));
        run_until_error(Arc::new(disk.clone()), &steps);
        disk.faults.ops.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert!(total_ops > 50, "the workload makes {total_ops} I/O calls");
    for fail_from in 0..=total_ops {
        let sim = SimDisk::new(fail_from);
        sim.set_faults(SimDiskFaults {
            torn_write_on_crash: true,
            ..SimDiskFaults::default()
        });
        let disk = FaultDisk::new(Arc::new(sim.clone()));
        disk.faults.fail_ops_from(fail_from);
        let outcome = run_until_error(Arc::new(disk.clone()), &steps);
        disk.faults.clear();
        sim.crash();
        let log = open(Arc::new(sim.clone()), small_config(&data_dir()))
            .unwrap_or_else(|e| panic!("reopen after power loss at I/O call {fail_from}: {e}"));
        let candidate = match outcome.failed_step {
            Some(Step::TruncateFromBack(_)) => &outcome.before,
            _ => &outcome.after,
        };
        let lowest_range = (
            outcome.before.lowest,
            outcome.after.lowest.max(outcome.before.lowest),
        );
        check_recovered(&log, candidate, lowest_range, outcome.durable);
        let next = log.next_offset();
        assert_eq!(log.append(&[record(1000, 20)]).unwrap(), next..next + 1);
        log.close().unwrap();
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from("/data")
}

struct Outcome {
    /// The model before and after the step that failed (equal if none failed).
    before: Version,
    after: Version,
    failed_step: Option<Step>,
    durable: u64,
}

/// Runs the workload until a call fails; returns the model around the failing step.
fn run_until_error(disk: Arc<dyn Disk>, steps: &[Step]) -> Outcome {
    let reopen = || open(disk.clone(), small_config(&data_dir()));
    let mut model = Version::default();
    let mut log = match reopen() {
        Ok(log) => log,
        Err(_) => {
            return Outcome {
                before: model.clone(),
                after: model,
                failed_step: None,
                durable: 0,
            }
        }
    };
    let mut n = 0;
    for step in steps {
        let before = model.clone();
        // The model of a failed step is what it would have been had the step succeeded.
        let mut after = model.clone();
        let result = run_step(&mut log, &reopen, &mut model, step, &mut n);
        if let Err(e) = result {
            let mut n2 = n;
            simulate(&mut after, step, &mut n2, &before);
            let durable = log.durable_offset();
            let _ = e;
            return Outcome {
                before,
                after,
                failed_step: Some(step.clone()),
                durable,
            };
        }
    }
    let durable = log.durable_offset();
    Outcome {
        before: model.clone(),
        after: model,
        failed_step: None,
        durable,
    }
}

/// What `step` would do to the model (for a step that failed part-way).
fn simulate(model: &mut Version, step: &Step, n: &mut u64, before: &Version) {
    match step {
        Step::Append(lens) => {
            // `run_step` already advanced `n` past this batch's record numbers.
            let first = *n - lens.len() as u64;
            for (i, &len) in lens.iter().enumerate() {
                model.values.push(record(first + 1 + i as u64, len).value);
            }
        }
        Step::TruncateFromBack(back) => {
            let offset = (before.values.len() as u64)
                .saturating_sub(*back)
                .max(before.lowest);
            model.values.truncate(offset as usize);
        }
        Step::TruncateBefore(forward) => {
            // The log drops whole segments only; the model cannot know where their bounds are,
            // so allow any lowest up to the requested offset.
            model.lowest = (before.lowest + forward).min(before.values.len() as u64);
        }
        Step::Sync | Step::CloseReopen => {}
    }
}
