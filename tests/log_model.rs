//! Model test: random operation sequences against the log and a plain Vec, with segments small
//! enough that rolls are frequent. `run_model` takes any `Disk` so it runs on real files and on
//! the simulated disk alike.

mod log_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use loghouse::io::{Disk, ManualClock, SimDisk, StdDisk};
use loghouse::log::{Log, LogConfig, LogError, NewRecord, INDEX_ENTRY_BYTES};
use proptest::prelude::*;

#[derive(Debug, Clone)]
pub enum Op {
    /// Append a batch of records with these value lengths.
    Append(Vec<usize>),
    /// Read the record at `lowest + pick % (len + 2)` (so sometimes past the end).
    Read(u64),
    ReadBatch {
        pick: u64,
        max_records: usize,
        max_bytes: usize,
    },
    /// Replication path: append_at the next offset with this term and timestamp step.
    AppendAt {
        len: usize,
        term: u64,
    },
    Sync,
    /// Truncate from `lowest + pick % (len + 1)`.
    TruncateFrom(u64),
    /// Truncate before `lowest + pick % (len + 2)`.
    TruncateBefore(u64),
    OffsetForTime(u64),
    AdvanceClock(i64),
    CloseReopen,
    /// Drop the log without closing it (a process crash), then reopen.
    DropReopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..120, 1..5).prop_map(Op::Append),
        3 => any::<u64>().prop_map(Op::Read),
        3 => (any::<u64>(), 0usize..6, 0usize..400).prop_map(|(pick, max_records, max_bytes)| {
            Op::ReadBatch { pick, max_records, max_bytes }
        }),
        2 => (0usize..120, 0u64..5).prop_map(|(len, term)| Op::AppendAt { len, term }),
        1 => Just(Op::Sync),
        1 => any::<u64>().prop_map(Op::TruncateFrom),
        1 => any::<u64>().prop_map(Op::TruncateBefore),
        1 => any::<u64>().prop_map(Op::OffsetForTime),
        2 => (-5i64..20).prop_map(Op::AdvanceClock),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::DropReopen),
    ]
}

/// The model: the records `lowest..lowest + records.len()` as (term, kind, timestamp, value).
struct Model {
    lowest: u64,
    records: Vec<(u64, u32, i64, Bytes)>,
    last_timestamp_ms: i64,
}

impl Model {
    fn next(&self) -> u64 {
        self.lowest + self.records.len() as u64
    }
    /// A reopened log, or one whose tail was truncated, clamps new timestamps to its newest
    /// record's (truncated ones are gone): the floor is a function of the records, so Raft
    /// replicas that truncated different suffixes stamp the same records alike.
    fn reopened(&mut self) {
        self.last_timestamp_ms = self.records.last().map_or(i64::MIN, |r| r.2);
    }
    fn pick(&self, pick: u64, extra: u64) -> u64 {
        self.lowest + pick % (self.records.len() as u64 + extra)
    }
}

fn config(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes_max: 400,
        index_bytes_max: INDEX_ENTRY_BYTES * 4,
        record_bytes_max: 150,
        initial_offset: 1000,
        ..LogConfig::new(dir)
    }
}

/// Runs `ops` against a log in `root` on `disk` and a model, checking every result.
pub fn run_model(disk: Arc<dyn Disk>, root: &Path, ops: &[Op]) {
    let dir: PathBuf = root.join("model-log");
    let clock = Arc::new(ManualClock::new(1_000));
    let open = || Log::open(disk.clone(), clock.clone(), config(&dir)).expect("open");
    let mut log = open();
    let mut model = Model {
        lowest: 1000,
        records: Vec::new(),
        last_timestamp_ms: i64::MIN,
    };
    let mut n = 0u64;
    for op in ops {
        match op {
            Op::Append(lens) => {
                let batch: Vec<NewRecord> = lens
                    .iter()
                    .map(|&len| {
                        n += 1;
                        log_support::record(n, len)
                    })
                    .collect();
                let range = log.append(&batch).expect("append");
                assert_eq!(range, model.next()..model.next() + batch.len() as u64);
                let ts = clock_ts(&clock, &model);
                for r in batch {
                    model.records.push((r.term, r.kind, ts, r.value));
                }
                model.last_timestamp_ms = ts;
            }
            Op::AppendAt { len, term } => {
                n += 1;
                let r = NewRecord {
                    term: *term,
                    ..log_support::record(n, *len)
                };
                let wrong = log.append_at(model.next() + 1, &r, 5);
                assert!(
                    matches!(wrong, Err(LogError::NonContiguous { .. })),
                    "{wrong:?}"
                );
                let ts = 990 + n as i64 % 30;
                log.append_at(model.next(), &r, ts).expect("append_at");
                let ts = ts.max(model.last_timestamp_ms);
                model.records.push((r.term, r.kind, ts, r.value));
                model.last_timestamp_ms = ts;
            }
            Op::Read(pick) => {
                let offset = model.pick(*pick, 2);
                check_read(&log, &model, offset);
            }
            Op::ReadBatch {
                pick,
                max_records,
                max_bytes,
            } => {
                let offset = model.pick(*pick, 2);
                check_read_batch(&log, &model, offset, *max_records, *max_bytes);
            }
            Op::Sync => {
                assert_eq!(log.sync().expect("sync"), model.next());
            }
            Op::TruncateFrom(pick) => {
                let offset = model.pick(*pick, 1);
                log.truncate_from(offset).expect("truncate_from");
                if offset < model.next() {
                    model.records.truncate((offset - model.lowest) as usize);
                    model.reopened();
                }
                assert!(log.durable_offset() <= offset.max(model.next()));
            }
            Op::TruncateBefore(pick) => {
                let offset = model.pick(*pick, 2);
                let before = model.lowest;
                log.truncate_before(offset).expect("truncate_before");
                let lowest = log.lowest_offset();
                assert!(lowest >= before && lowest <= before.max(offset.min(model.next())));
                model.records.drain(..(lowest - before) as usize);
                model.lowest = lowest;
            }
            Op::OffsetForTime(pick) => {
                let t = 990 + (*pick % 200) as i64;
                let expected = model
                    .records
                    .iter()
                    .position(|r| r.2 >= t)
                    .map_or(model.next(), |i| model.lowest + i as u64);
                assert_eq!(log.offset_for_time(t).unwrap(), expected, "time {t}");
            }
            Op::AdvanceClock(ms) => clock.advance_ms(*ms),
            Op::CloseReopen => {
                log.close().expect("close");
                assert!(matches!(log.read(model.lowest), Err(LogError::Closed)));
                log = open();
                assert_eq!(
                    log.open_report().segments_scanned,
                    0,
                    "clean close needs no scan"
                );
                model.reopened();
            }
            Op::DropReopen => {
                drop(log);
                log = open();
                assert_eq!(log.open_report().truncated_bytes, 0);
                model.reopened();
            }
        }
        check_all(&log, &model);
    }
    log.close().expect("close");
}

/// The timestamp the log gives an append now: the clock, clamped to be non-decreasing.
fn clock_ts(clock: &ManualClock, model: &Model) -> i64 {
    use loghouse::io::Clock;
    clock.now_ms().max(model.last_timestamp_ms)
}

fn check_read(log: &Log, model: &Model, offset: u64) {
    match log.read(offset) {
        Ok(r) => {
            let (term, kind, ts, value) = &model.records[(offset - model.lowest) as usize];
            assert_eq!(
                (r.offset, r.term, r.kind, r.timestamp_ms),
                (offset, *term, *kind, *ts)
            );
            assert_eq!(&r.value, value);
        }
        Err(LogError::OffsetOutOfRange {
            offset: o,
            lowest,
            next,
        }) => {
            assert!(offset >= model.next(), "{offset} should be readable");
            assert_eq!((o, lowest, next), (offset, model.lowest, model.next()));
        }
        Err(e) => panic!("read {offset}: {e}"),
    }
}

fn check_read_batch(log: &Log, model: &Model, offset: u64, max_records: usize, max_bytes: usize) {
    match log.read_batch(offset, max_records, max_bytes) {
        Ok(batch) => {
            assert!(!batch.is_empty() && batch.len() <= max_records.max(1));
            let frames: usize = batch.iter().map(|r| 40 + r.value.len()).sum();
            assert!(
                batch.len() == 1 || frames <= max_bytes,
                "batch over its byte budget"
            );
            // A batch is as long as its limits allow, across segment boundaries too.
            let end = offset + batch.len() as u64;
            if batch.len() < max_records.max(1) && end < model.next() {
                let following = &model.records[(end - model.lowest) as usize].3;
                assert!(
                    frames + 40 + following.len() > max_bytes,
                    "batch from {offset} stopped at {end} with room left"
                );
            }
            for (i, r) in batch.iter().enumerate() {
                let want = &model.records[(offset - model.lowest) as usize + i];
                assert_eq!(r.offset, offset + i as u64);
                assert_eq!(
                    (r.term, r.kind, r.timestamp_ms, &r.value),
                    (want.0, want.1, want.2, &want.3)
                );
            }
        }
        Err(LogError::OffsetOutOfRange { .. }) => assert!(offset >= model.next()),
        Err(e) => panic!("read_batch {offset}: {e}"),
    }
}

fn check_all(log: &Log, model: &Model) {
    assert_eq!(log.lowest_offset(), model.lowest);
    assert_eq!(log.next_offset(), model.next());
    let info = log.info();
    assert_eq!(
        (info.lowest_offset, info.next_offset),
        (model.lowest, model.next())
    );
    assert!(info.durable_offset <= info.next_offset);
    let all = log_support::read_all(log);
    assert_eq!(all.len(), model.records.len());
    for (r, want) in all.iter().zip(&model.records) {
        assert_eq!(
            (r.term, r.kind, r.timestamp_ms, &r.value),
            (want.0, want.1, want.2, &want.3)
        );
    }
    if model.lowest > 0 {
        let below = log.read(model.lowest - 1);
        assert!(
            matches!(below, Err(LogError::OffsetOutOfRange { .. })),
            "{below:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn model_on_std_disk(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        run_model(Arc::new(StdDisk), dir.path(), &ops);
    }

    #[test]
    fn model_on_sim_disk(ops in proptest::collection::vec(op_strategy(), 1..60), seed: u64) {
        run_model(Arc::new(SimDisk::new(seed)), Path::new("/data"), &ops);
    }
}
