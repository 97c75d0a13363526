//! Group commit through `Committer`: dense distinct offsets for concurrent appenders, fewer
//! fsyncs than appends, error isolation, sync failures, the committed watch, shutdown; and
//! across logs through one `SharedCommitter`: one fsync per touched log per round, a failed
//! fsync failing only its own log, policies per log, one log detached while others write.

mod log_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use log_support::{read_all, record, FaultDisk};
use loghouse::io::{ManualClock, StdDisk};
use loghouse::log::{Committer, CommitterHandle, Log, LogConfig, LogError, SyncPolicy};
use loghouse::metrics::LogMetrics;

fn open(disk: &FaultDisk, dir: &std::path::Path, sync: SyncPolicy) -> Arc<Log> {
    let config = LogConfig {
        sync,
        segment_bytes_max: 64 << 10,
        record_bytes_max: 4096,
        ..LogConfig::new(dir)
    };
    Arc::new(
        Log::open(
            Arc::new(disk.clone()),
            Arc::new(ManualClock::new(0)),
            config,
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_dense_distinct_offsets_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Always);
    let committer = Committer::start(log.clone(), 1024);
    let syncs_before = disk.faults.syncs();
    let (tasks, per_task) = (32u64, 20u64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let committer = committer.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..per_task {
                let n = t * 1000 + i;
                let range = committer.append(vec![record(n, 100)]).await.unwrap();
                assert_eq!(range.end - range.start, 1);
                // Acknowledged means durable and visible.
                assert!(committer.log().durable_offset() >= range.end);
                assert!(*committer.committed().borrow() >= range.end);
                got.push((range.start, n));
            }
            got
        }));
    }
    let mut offsets = BTreeSet::new();
    let mut written = Vec::new();
    for h in handles {
        for (offset, n) in h.await.unwrap() {
            assert!(offsets.insert(offset), "offset {offset} given twice");
            written.push((offset, n));
        }
    }
    let appends = tasks * per_task;
    assert_eq!(
        offsets,
        (0..appends).collect::<BTreeSet<_>>(),
        "dense from 0"
    );
    for (offset, n) in written {
        assert_eq!(log.read(offset).unwrap().value, record(n, 100).value);
    }
    let syncs = disk.faults.syncs() - syncs_before;
    assert!(
        syncs >= 1 && syncs < appends,
        "{syncs} fsyncs for {appends} appends"
    );
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Always);
    let committer = Committer::start(log.clone(), 64);
    let too_big = log.config().record_bytes_max as usize + 1;
    // Submit back to back so they are likely grouped; each answer must be its own.
    let a = committer.submit(vec![record(1, 10)]).await.unwrap();
    let b = committer.submit(vec![record(2, too_big)]).await.unwrap();
    let c = committer.submit(vec![]).await.unwrap();
    let d = committer
        .submit(vec![record(3, 10), record(4, 10)])
        .await
        .unwrap();
    assert_eq!(a.await.unwrap(), 0..1);
    assert!(matches!(b.await, Err(LogError::RecordTooLarge { .. })));
    assert!(matches!(c.await, Err(LogError::BatchEmpty)));
    assert_eq!(d.await.unwrap(), 1..3);
    assert_eq!(*committer.committed().borrow(), 3);
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_fsync_fails_every_waiter_and_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Always);
    let committer = Committer::start(log.clone(), 64);
    committer.append(vec![record(0, 10)]).await.unwrap();
    disk.faults.fail_nth_sync(1);
    let pending: Vec<_> = futures_join(&committer, 8).await;
    for result in pending {
        let err = result.unwrap_err();
        assert!(
            matches!(err, LogError::Poisoned { .. } | LogError::Io { .. }),
            "{err}"
        );
    }
    assert_eq!(
        *committer.committed().borrow(),
        1,
        "nothing unsynced becomes visible"
    );
    let err = committer.append(vec![record(9, 10)]).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
}

async fn futures_join(
    committer: &loghouse::log::CommitterHandle,
    count: u64,
) -> Vec<Result<std::ops::Range<u64>, LogError>> {
    let mut pending = Vec::new();
    for n in 0..count {
        pending.push(committer.submit(vec![record(n, 10)]).await.unwrap());
    }
    let mut out = Vec::new();
    for p in pending {
        out.push(p.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_queued_work_and_closes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Never);
    let committer = Committer::start(log.clone(), 64);
    let pending = committer.submit(vec![record(0, 10)]).await.unwrap();
    committer.shutdown().await.unwrap();
    assert_eq!(pending.await.unwrap(), 0..1);
    assert!(matches!(
        committer.append(vec![record(1, 1)]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(log.read(0), Err(LogError::Closed)));
    committer.shutdown().await.unwrap();
    let reopened = Log::open(
        Arc::new(StdDisk),
        Arc::new(ManualClock::new(0)),
        LogConfig::new(dir.path()),
    )
    .unwrap();
    assert_eq!(reopened.open_report().segments_scanned, 0, "closed cleanly");
    assert_eq!(read_all(&reopened).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_acknowledges_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Never);
    let committer = Committer::start(log.clone(), 64);
    let syncs = disk.faults.syncs();
    for n in 0..20 {
        assert_eq!(
            committer.append(vec![record(n, 10)]).await.unwrap(),
            n..n + 1
        );
    }
    assert_eq!(disk.faults.syncs(), syncs);
    assert_eq!(*committer.committed().borrow(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_syncs_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Interval { interval_ms: 5 });
    let committer = Committer::start(log.clone(), 64);
    let range = committer.append(vec![record(0, 10)]).await.unwrap();
    assert_eq!(*committer.committed().borrow(), range.end);
    // The timer makes it durable eventually (bounded wait; no timing is asserted).
    for _ in 0..2000 {
        if log.durable_offset() >= range.end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        log.durable_offset() >= range.end,
        "the interval fsync never ran"
    );
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_watch_wakes_waiters() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultDisk::new(Arc::new(StdDisk));
    let log = open(&disk, dir.path(), SyncPolicy::Always);
    let committer = Committer::start(log, 64);
    let mut watch = committer.committed();
    assert_eq!(*watch.borrow_and_update(), 0);
    let waiter = tokio::spawn(async move {
        while *watch.borrow_and_update() < 3 {
            watch.changed().await.unwrap();
        }
        *watch.borrow()
    });
    committer
        .append(vec![record(0, 1), record(1, 1), record(2, 1)])
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap(), 3);
}

/// Opens `count` logs in subdirectories of `dir`, each on its own `FaultDisk` and with its own
/// `LogMetrics`, attached to `committer`.
fn open_many(
    committer: &loghouse::log::SharedCommitter,
    dir: &std::path::Path,
    count: usize,
    sync: SyncPolicy,
) -> Vec<(FaultDisk, Arc<LogMetrics>, CommitterHandle)> {
    (0..count)
        .map(|i| {
            let disk = FaultDisk::new(Arc::new(StdDisk));
            let metrics = Arc::new(LogMetrics::default());
            let config = LogConfig {
                sync,
                metrics: Some(metrics.clone()),
                segment_bytes_max: 64 << 10,
                record_bytes_max: 4096,
                ..LogConfig::new(dir.join(format!("log-{i}")))
            };
            let log = Log::open(
                Arc::new(disk.clone()),
                Arc::new(ManualClock::new(0)),
                config,
            )
            .unwrap();
            (disk, metrics, committer.attach(Arc::new(log)))
        })
        .collect()
}

/// On a current-thread runtime the writer cannot run until the test awaits something pending,
/// so requests submitted back to back to many logs land in ONE round: each touched log is
/// fsync'd exactly once for all of its requests, and an untouched log not at all.
#[tokio::test(flavor = "current_thread")]
async fn one_round_fsyncs_each_touched_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(1024);
    let logs = open_many(&committer, dir.path(), 17, SyncPolicy::Always);
    assert_eq!(committer.attached(), 17);
    let (touched, idle) = logs.split_at(16);
    let before: Vec<u64> = logs.iter().map(|(_, m, _)| m.fsyncs.get()).collect();
    let mut pending = Vec::new();
    for round in 0..4u64 {
        for (i, (_, _, handle)) in touched.iter().enumerate() {
            let n = i as u64 * 100 + round;
            pending.push((i, round, handle.submit(vec![record(n, 100)]).await.unwrap()));
        }
    }
    for (i, round, answer) in pending {
        assert_eq!(answer.await.unwrap(), round..round + 1, "log {i}");
    }
    for (i, (_, metrics, handle)) in touched.iter().enumerate() {
        assert_eq!(
            metrics.fsyncs.get() - before[i],
            1,
            "log {i}: one fsync per round"
        );
        assert_eq!(*handle.committed().borrow(), 4);
        assert_eq!(handle.log().durable_offset(), 4);
        for round in 0..4u64 {
            let n = i as u64 * 100 + round;
            assert_eq!(
                handle.log().read(round).unwrap().value,
                record(n, 100).value
            );
        }
    }
    assert_eq!(
        idle[0].1.fsyncs.get(),
        before[16],
        "an untouched log is not fsync'd"
    );
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_logs_share_one_writer_and_fewer_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(1024);
    let logs = open_many(&committer, dir.path(), 8, SyncPolicy::Always);
    let per_task = 20u64;
    let mut tasks = Vec::new();
    for (i, (_, _, handle)) in logs.iter().enumerate() {
        for t in 0..4u64 {
            let handle = handle.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for k in 0..per_task {
                    let n = (i as u64) << 32 | t << 16 | k;
                    let range = handle.append(vec![record(n, 100)]).await.unwrap();
                    assert!(handle.log().durable_offset() >= range.end);
                    assert!(*handle.committed().borrow() >= range.end);
                    got.push((i, range.start, n));
                }
                got
            }));
        }
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.unwrap());
    }
    for (i, (_, metrics, _)) in logs.iter().enumerate() {
        let mine: BTreeSet<u64> = written.iter().filter(|w| w.0 == i).map(|w| w.1).collect();
        assert_eq!(mine, (0..4 * per_task).collect(), "log {i}: dense from 0");
        assert!(metrics.fsyncs.get() <= 4 * per_task + 1, "log {i}");
    }
    for (i, offset, n) in written {
        let log = logs[i].2.log();
        assert_eq!(log.read(offset).unwrap().value, record(n, 100).value);
    }
    let syncs: u64 = logs.iter().map(|(_, m, _)| m.fsyncs.get()).sum();
    assert!(
        syncs < 8 * 4 * per_task,
        "{syncs} fsyncs for {} appends",
        8 * 4 * per_task
    );
    committer.shutdown().await.unwrap();
    for (_, _, handle) in &logs {
        assert!(matches!(handle.log().read(0), Err(LogError::Closed)));
        assert!(matches!(
            handle.append(vec![record(0, 1)]).await,
            Err(LogError::Closed)
        ));
    }
    assert_eq!(committer.attached(), 0);
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_fsync_fails_only_its_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(1024);
    let logs = open_many(&committer, dir.path(), 4, SyncPolicy::Always);
    for (_, _, handle) in &logs {
        handle.append(vec![record(0, 10)]).await.unwrap();
    }
    logs[1].0.faults.fail_nth_sync(1);
    let mut pending = Vec::new();
    for n in 1..4u64 {
        for (i, (_, _, handle)) in logs.iter().enumerate() {
            pending.push((i, n, handle.submit(vec![record(n, 10)]).await.unwrap()));
        }
    }
    for (i, n, answer) in pending {
        match i {
            1 => {
                let err = answer.await.unwrap_err();
                assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
            }
            _ => assert_eq!(answer.await.unwrap(), n..n + 1, "log {i}"),
        }
    }
    assert_eq!(
        *logs[1].2.committed().borrow(),
        1,
        "nothing unsynced is visible"
    );
    assert!(logs[1].2.log().poisoned().is_some());
    for i in [0, 2, 3] {
        let handle = &logs[i].2;
        assert_eq!(*handle.committed().borrow(), 4);
        assert!(handle.log().poisoned().is_none());
        assert_eq!(handle.append(vec![record(4, 10)]).await.unwrap(), 4..5);
    }
    let err = logs[1].2.append(vec![record(9, 10)]).await.unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    // The poisoned log's close fails (it is not sealed: open recovers it); the others close.
    assert!(committer.shutdown().await.is_err());
    for i in [0, 2, 3] {
        let reopened = Log::open(
            Arc::new(StdDisk),
            Arc::new(ManualClock::new(0)),
            LogConfig::new(dir.path().join(format!("log-{i}"))),
        )
        .unwrap();
        assert_eq!(
            reopened.open_report().segments_scanned,
            0,
            "log {i} closed cleanly"
        );
        assert_eq!(read_all(&reopened).len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_shuts_down_while_the_others_write() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(256);
    let logs = open_many(&committer, dir.path(), 4, SyncPolicy::Always);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (_, _, handle) in logs.iter().skip(1) {
        let (handle, stop) = (handle.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || n < 50 {
                assert_eq!(handle.append(vec![record(n, 50)]).await.unwrap(), n..n + 1);
                n += 1;
            }
            n
        }));
    }
    let doomed = logs[0].2.clone();
    let mut queued = Vec::new();
    for n in 0..10u64 {
        doomed.append(vec![record(n, 50)]).await.unwrap();
        queued.push(doomed.submit(vec![record(100 + n, 50)]).await.unwrap());
    }
    doomed.shutdown().await.unwrap();
    for (k, answer) in queued.into_iter().enumerate() {
        let range = answer.await.unwrap();
        assert_eq!(
            range.end - range.start,
            1,
            "queued append {k} finished before the close"
        );
    }
    assert!(matches!(doomed.log().read(0), Err(LogError::Closed)));
    assert!(matches!(
        doomed.append(vec![record(1, 1)]).await,
        Err(LogError::Closed)
    ));
    doomed.shutdown().await.unwrap();
    assert_eq!(committer.attached(), 3);
    let reopened = Log::open(
        Arc::new(StdDisk),
        Arc::new(ManualClock::new(0)),
        LogConfig::new(dir.path().join("log-0")),
    )
    .unwrap();
    assert_eq!(reopened.open_report().segments_scanned, 0, "closed cleanly");
    assert_eq!(read_all(&reopened).len(), 20);
    drop(reopened);
    // The others kept writing after the detach.
    let counts: Vec<u64> = logs
        .iter()
        .skip(1)
        .map(|l| l.2.log().next_offset())
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for (writer, before) in writers.into_iter().zip(counts) {
        let n = writer.await.unwrap();
        assert!(n >= before, "{n} < {before}");
    }
    for (_, _, handle) in logs.iter().skip(1) {
        assert!(handle.log().next_offset() >= 50);
    }
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_keep_their_meaning_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(256);
    let always = open_many(&committer, &dir.path().join("a"), 1, SyncPolicy::Always);
    let never = open_many(&committer, &dir.path().join("n"), 1, SyncPolicy::Never);
    let interval = open_many(
        &committer,
        &dir.path().join("i"),
        1,
        SyncPolicy::Interval { interval_ms: 5 },
    );
    let idle = open_many(
        &committer,
        &dir.path().join("idle"),
        1,
        SyncPolicy::Interval { interval_ms: 1 },
    );
    let before: Vec<u64> = [&always, &never, &interval, &idle]
        .iter()
        .map(|l| l[0].1.fsyncs.get())
        .collect();
    for n in 0..10u64 {
        let a = always[0].2.submit(vec![record(n, 10)]).await.unwrap();
        let b = never[0].2.submit(vec![record(n, 10)]).await.unwrap();
        let c = interval[0].2.submit(vec![record(n, 10)]).await.unwrap();
        assert_eq!(a.await.unwrap(), n..n + 1);
        assert!(always[0].2.log().durable_offset() > n);
        assert_eq!(b.await.unwrap(), n..n + 1);
        assert_eq!(c.await.unwrap(), n..n + 1);
        assert_eq!(
            *interval[0].2.committed().borrow(),
            n + 1,
            "acknowledged before the fsync"
        );
    }
    assert!(always[0].1.fsyncs.get() > before[0]);
    assert_eq!(never[0].1.fsyncs.get(), before[1], "never fsyncs");
    // The interval log is fsync'd by the timer (bounded wait; no timing is asserted).
    for _ in 0..2000 {
        if interval[0].2.log().durable_offset() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        interval[0].2.log().durable_offset(),
        10,
        "the interval fsync never ran"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        idle[0].1.fsyncs.get(),
        before[3],
        "an idle log is not fsync'd"
    );
    let interval_syncs = interval[0].1.fsyncs.get();
    assert!(interval_syncs - before[2] <= 10, "{interval_syncs}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        interval[0].1.fsyncs.get(),
        interval_syncs,
        "nothing new, no fsync"
    );
    committer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_after_shutdown_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let committer = Committer::start_shared(8);
    committer.shutdown().await.unwrap();
    let logs = open_many(&committer, dir.path(), 1, SyncPolicy::Always);
    assert!(matches!(
        logs[0].2.append(vec![record(0, 1)]).await,
        Err(LogError::Closed)
    ));
    assert_eq!(committer.attached(), 0);
}
