//! Restarting with other limits loses nothing (issue 15): for each size limit of the engine
//! (record_bytes_max, segment_bytes_max, index_bytes_max), a restart with a lower and with a
//! higher value, after a clean close, after a kill (dropped without close: the page cache
//! keeps every write) and after a power loss (the sim disk crashes: only synced bytes stay),
//! keeps every record written before, readable and unchanged, and new appends follow. The
//! retention limits delete only by their rules: whole oldest segments, never the active one,
//! only while the log is too big or the segment's newest record too old.

mod log_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log_support::{read_all, record, segment_files};
use loghouse::io::{Disk, ManualClock, SimDisk, StdDisk};
use loghouse::log::{Log, LogConfig, NewRecord, Record, INDEX_ENTRY_BYTES};

/// How the log stops before the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// `close()`: sealed, no scan at the next open.
    Close,
    /// Dropped without close, disk untouched: `kill -9` with the page cache kept.
    Kill,
    /// Dropped without close, then the sim disk crashes: a power loss.
    PowerLoss,
}

const STOPS: [Stop; 3] = [Stop::Close, Stop::Kill, Stop::PowerLoss];

/// Limits before the restart: several segments of a few records each.
fn before(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes_max: 4_000,
        index_bytes_max: INDEX_ENTRY_BYTES * 8,
        record_bytes_max: 1_000,
        ..LogConfig::new(dir)
    }
}

/// One restart: a log written under `before`, stopped by `stop`, reopened under `after`.
struct Case {
    name: &'static str,
    after: fn(&Path) -> LogConfig,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "record_bytes_max lower",
            after: |dir| LogConfig {
                record_bytes_max: 100,
                ..before(dir)
            },
        },
        Case {
            name: "record_bytes_max higher",
            after: |dir| LogConfig {
                record_bytes_max: 3_000,
                ..before(dir)
            },
        },
        Case {
            name: "segment_bytes_max lower",
            after: |dir| LogConfig {
                segment_bytes_max: 1_100,
                ..before(dir)
            },
        },
        Case {
            name: "segment_bytes_max higher",
            after: |dir| LogConfig {
                segment_bytes_max: 40_000,
                ..before(dir)
            },
        },
        Case {
            name: "index_bytes_max lower",
            after: |dir| LogConfig {
                index_bytes_max: INDEX_ENTRY_BYTES * 2,
                ..before(dir)
            },
        },
        Case {
            name: "index_bytes_max lowest",
            after: |dir| LogConfig {
                index_bytes_max: 16,
                ..before(dir)
            },
        },
        Case {
            name: "index_bytes_max higher",
            after: |dir| LogConfig {
                index_bytes_max: INDEX_ENTRY_BYTES * 100,
                ..before(dir)
            },
        },
    ]
}

struct Rig {
    sim: SimDisk,
    disk: Arc<dyn Disk>,
    clock: Arc<ManualClock>,
    dir: PathBuf,
}

impl Rig {
    fn new(seed: u64) -> Rig {
        let sim = SimDisk::new(seed);
        Rig {
            disk: Arc::new(sim.clone()),
            sim,
            clock: Arc::new(ManualClock::new(1_000_000)),
            dir: PathBuf::from("/data/log"),
        }
    }

    fn open(&self, config: LogConfig) -> Log {
        Log::open(self.disk.clone(), self.clock.clone(), config).expect("open")
    }

    /// Stops `log` as told. Everything was synced first, so a power loss keeps it all.
    fn stop(&self, log: Log, stop: Stop) {
        log.sync().expect("sync");
        match stop {
            Stop::Close => log.close().expect("close"),
            Stop::Kill => drop(log),
            Stop::PowerLoss => {
                drop(log);
                self.sim.crash();
            }
        }
    }
}

/// Appends `count` records of varied sizes up to `max` bytes (at least one of exactly `max`),
/// one batch of 1..=3 records at a time, the clock moving 10 ms per batch.
fn write(log: &Log, rig: &Rig, count: u64, max: usize) {
    let mut n = 0;
    while n < count {
        let batch: Vec<NewRecord> = (n..(n + 1 + n % 3).min(count))
            .map(|i| {
                record(
                    i,
                    if i == 1 {
                        max
                    } else {
                        (i as usize * 379) % (max + 1)
                    },
                )
            })
            .collect();
        n += batch.len() as u64;
        rig.clock.advance_ms(10);
        log.append(&batch).expect("append");
    }
}

fn check_same(log: &Log, expected: &[Record], context: &str) {
    let all = read_all(log);
    assert_eq!(all.len(), expected.len(), "{context}: record count");
    for (got, want) in all.iter().zip(expected) {
        assert_eq!(got, want, "{context}: offset {}", want.offset);
    }
}

#[test]
fn restarting_with_lower_or_higher_size_limits_loses_nothing() {
    for case in cases() {
        for stop in STOPS {
            let context = format!("{} after {stop:?}", case.name);
            let rig = Rig::new(7);
            let log = rig.open(before(&rig.dir));
            write(&log, &rig, 40, 1_000);
            assert!(log.info().segment_count >= 4, "{context}: several segments");
            let written = read_all(&log);
            rig.stop(log, stop);

            let after = (case.after)(&rig.dir);
            let log = rig.open(after.clone());
            let report = log.open_report();
            assert_eq!(report.truncated_bytes, 0, "{context}: {report:?}");
            assert_eq!(report.tail_cut, None, "{context}");
            assert_eq!(
                (log.lowest_offset(), log.next_offset()),
                (0, 40),
                "{context}"
            );
            check_same(&log, &written, &context);
            // New appends follow, under the new limits.
            let max = after.record_bytes_max as usize;
            let range = log
                .append(&[record(100, max), record(101, 0), record(102, max / 2)])
                .expect("append after the restart");
            assert_eq!(range, 40..43, "{context}");
            let mut expected = read_all(&log);
            assert_eq!(expected[..40], written[..], "{context}");
            // And the same again: the log written under both settings survives a second stop.
            rig.stop(log, stop);
            let log = rig.open(after.clone());
            check_same(&log, &expected, &format!("{context}, second restart"));
            write_more_and_check(&log, &rig, &mut expected, max, &context);
        }
    }
}

/// Appends enough to roll a few times under the new limits and reads everything back.
fn write_more_and_check(
    log: &Log,
    rig: &Rig,
    expected: &mut Vec<Record>,
    max: usize,
    context: &str,
) {
    let next = log.next_offset();
    for n in 0..12 {
        rig.clock.advance_ms(10);
        log.append(&[record(200 + n, (n as usize * 97) % (max + 1))])
            .expect("append");
    }
    let all = read_all(log);
    assert_eq!(all[..expected.len()], expected[..], "{context}");
    assert_eq!(all.len() as u64, next + 12, "{context}");
    *expected = all;
}

/// The reproduction: five records of 5,000 bytes under the defaults, kill -9, restart
/// with record_bytes_max 1000. Open used to take the first frame for a torn tail and truncate
/// both files to 0 bytes.
#[test]
fn lowering_record_bytes_max_after_a_kill_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let log = Log::open(Arc::new(StdDisk), clock.clone(), LogConfig::new(dir.path())).unwrap();
    for n in 0..5 {
        log.append(&[record(n, 5_000)]).unwrap();
    }
    log.sync().unwrap();
    let written = read_all(&log);
    drop(log); // kill -9
    let store = segment_files(dir.path(), ".store").pop().unwrap();
    let store_bytes = std::fs::metadata(&store).unwrap().len();
    let lower = LogConfig {
        record_bytes_max: 1_000,
        ..LogConfig::new(dir.path())
    };
    let log = Log::open(Arc::new(StdDisk), clock, lower).unwrap();
    assert_eq!(log.next_offset(), 5);
    assert_eq!(log.open_report().truncated_bytes, 0);
    assert_eq!(std::fs::metadata(&store).unwrap().len(), store_bytes);
    assert_eq!(read_all(&log), written);
    // Clients are held to the new limit; a replicated record only to the format's.
    assert!(log.append(&[record(5, 1_001)]).is_err());
    log.append_at(5, &record(5, 5_000), 0).unwrap();
    assert_eq!(log.read(5).unwrap().value.len(), 5_000);
}

/// A replicated record larger than this node's segments (the leader's limits may be larger):
/// it gets a segment of its own, and the log reopens with it after every kind of stop.
#[test]
fn a_replicated_record_larger_than_a_segment_is_taken_and_kept() {
    for stop in STOPS {
        let rig = Rig::new(3);
        let log = rig.open(before(&rig.dir));
        write(&log, &rig, 5, 1_000);
        let big = record(50, 10_000); // > segment_bytes_max and record_bytes_max
        log.append_batch_at(5, &[big.clone(), record(51, 10)], 0)
            .unwrap();
        let written = read_all(&log);
        assert_eq!(written[5].value, big.value);
        rig.stop(log, stop);
        let log = rig.open(before(&rig.dir));
        assert_eq!(log.open_report().tail_cut, None, "{stop:?}");
        check_same(&log, &written, &format!("{stop:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Retention limits: changed across a restart, they delete by their rules only.

/// The clock when retention runs.
const NOW_MS: i64 = 1_010_000;

/// Segment bases and their store sizes, from the sim disk's file names.
fn segments(rig: &Rig) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = rig
        .sim
        .files()
        .iter()
        .filter(|p| p.starts_with(&rig.dir) && p.to_string_lossy().ends_with(".store"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let base = name[..20].parse().unwrap();
            let mut len = 0;
            if let Ok(file) = rig.disk.open(p, false) {
                len = file.len().unwrap();
            }
            (base, len)
        })
        .collect();
    out.sort();
    out
}

/// A log written under `before`, stopped, reopened with a retention limit; nothing goes before
/// `apply_retention`, then exactly what the rule says.
fn retention_case(stop: Stop, drops: bool, limit: impl Fn(&mut LogConfig, &Rig, &[(u64, u64)])) {
    let rig = Rig::new(11);
    let log = rig.open(before(&rig.dir));
    write(&log, &rig, 60, 1_000);
    let written = read_all(&log);
    rig.stop(log, stop);
    let on_disk = segments(&rig);
    assert!(on_disk.len() >= 5);
    let mut config = before(&rig.dir);
    limit(&mut config, &rig, &on_disk);
    let log = rig.open(config.clone());
    check_same(&log, &written, &format!("{stop:?}: before retention"));
    log.apply_retention().unwrap();
    let lowest = log.lowest_offset();
    let kept = read_all(&log);
    assert_eq!(
        kept[..],
        written[lowest as usize..],
        "{stop:?}: a suffix is kept"
    );
    let cut = on_disk.iter().position(|(base, _)| *base == lowest);
    let cut = cut.unwrap_or_else(|| panic!("{stop:?}: lowest {lowest} is not a segment base"));
    assert!(cut < on_disk.len(), "the active segment stays");
    assert_eq!(cut > 0, drops, "{stop:?}: dropped {cut} segments");
    // Every dropped segment was expired when dropped; the first kept one is not (or is the last).
    let newest_ts = |i: usize| -> i64 {
        let end = on_disk.get(i + 1).map_or(60, |(b, _)| *b);
        written[end as usize - 1].timestamp_ms
    };
    let mut total: u64 = on_disk.iter().map(|(_, len)| len).sum();
    for i in 0..=cut {
        let expired = config.retention_bytes_max.is_some_and(|max| total > max)
            || config
                .retention_ms_max
                .is_some_and(|max| newest_ts(i) < NOW_MS - max as i64);
        let last = i + 1 == on_disk.len();
        match i < cut {
            true => assert!(expired, "{stop:?}: segment {i} dropped but not expired"),
            false => assert!(!expired || last, "{stop:?}: segment {i} kept but expired"),
        }
        total -= on_disk[i].1;
    }
}

#[test]
fn restarting_with_a_retention_bytes_limit_deletes_by_its_rule_only() {
    for stop in STOPS {
        // Lower than the log: some segments go. Higher: none.
        for (keep_segments, drops) in [(2usize, true), (100, false)] {
            retention_case(stop, drops, |config, _, on_disk| {
                let n = keep_segments.min(on_disk.len());
                let tail: u64 = on_disk[on_disk.len() - n..].iter().map(|(_, l)| l).sum();
                config.retention_bytes_max = Some(tail + 1);
            });
        }
    }
}

#[test]
fn restarting_with_a_retention_age_limit_deletes_by_its_rule_only() {
    for stop in STOPS {
        // The log spans about 1_000_000..1_000_300 ms; now is 1_010_000. A cutoff inside the
        // log drops some segments; one before it drops none.
        for (max_ms, drops) in [(10_000 - 150, true), (1_000_000, false)] {
            retention_case(stop, drops, |config, rig, _| {
                rig.clock.set_ms(NOW_MS);
                config.retention_ms_max = Some(max_ms);
            });
        }
    }
}
