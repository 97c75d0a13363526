//! Group commit through `Committer`: dense distinct offsets for concurrent appenders, fewer
//! fsyncs than appends, error isolation, sync failures, the committed watch, shutdown.

mod log_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use log_support::{read_all, record, FaultDisk};
use loghouse::io::{ManualClock, StdDisk};
use loghouse::log::{Committer, Log, LogConfig, LogError, SyncPolicy};

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
