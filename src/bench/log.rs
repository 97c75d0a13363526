//! `loghouse bench log`: the storage engine alone, beside the machine's own limit.
//!
//! Rows: append throughput through the group committer (sync=always and sync=never; 100 B,
//! 1 KiB and 64 KiB records; 1, 8 and 64 concurrent appenders), building a large log with
//! direct batched appends, a sequential scan with `read_batch`, random reads by offset, opening
//! the large log after a clean close, after a crash (dropped without close: the active index is
//! left pre-grown, which forces the scan path and the rewrite of the last segment), with every
//! index deleted (a full scan) and after a crash with a full last segment (the rewrite's worst
//! case), and `dd ... conv=fdatasync` in the same directory. Each row is bounded by a record count and a
//! time budget. Peak RSS (VmHWM, reset before each row where the kernel allows) is printed
//! beside each row. It measures; it asserts nothing.
//!
//! `--logs N` measures group commit across partitions instead: N logs through one
//! `SharedCommitter` against one log, `--producers` concurrent producers of 1 KiB records
//! (spread over the logs), sync=always, `--runs` runs of each alternating, medians reported.
//! `--idle-logs N` opens N logs in this process (a node holding N partitions), appends one 1 KiB
//! record to each, and reports the open time, RSS, open files and memory maps, then the same
//! after closing them all and opening them again (a restart).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::io::{StdDisk, SystemClock};
use crate::log::{Committer, CommitterHandle, Log, LogConfig, NewRecord, SyncPolicy};

#[derive(Debug, Clone, clap::Args)]
pub struct LogBenchOptions {
    /// Directory to hold the bench data (a temporary directory is made inside it and removed).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Small sizes and short rows, for CI smoke runs.
    #[arg(long)]
    pub quick: bool,
    /// Only measure group commit across partitions: this many logs through one shared
    /// committer against one log (1 KiB records, sync=always).
    #[arg(long)]
    pub logs: Option<usize>,
    /// Concurrent producers for `--logs`, spread round-robin over the logs.
    #[arg(long, default_value_t = 256)]
    pub producers: usize,
    /// Runs of each side for `--logs`, alternating; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only measure the cost of idle partitions: open this many logs in this process, one
    /// 1 KiB record each; report open time, RSS and open files.
    #[arg(long)]
    pub idle_logs: Option<usize>,
}

impl Default for LogBenchOptions {
    fn default() -> Self {
        LogBenchOptions {
            dir: PathBuf::from("."),
            quick: false,
            logs: None,
            producers: 256,
            runs: 3,
            idle_logs: None,
        }
    }
}

/// Sizes and budgets of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    row_time: Duration,
    row_bytes_max: u64,
    row_records_max: u64,
    big_log_bytes: u64,
    dd_mib: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        match quick {
            true => Plan {
                row_time: Duration::from_millis(50),
                row_bytes_max: 4 << 20,
                row_records_max: 10_000,
                big_log_bytes: 16 << 20,
                dd_mib: 8,
            },
            false => Plan {
                row_time: Duration::from_millis(2500),
                row_bytes_max: 1 << 30,
                row_records_max: 2_000_000,
                big_log_bytes: 1 << 30,
                dd_mib: 256,
            },
        }
    }
}

/// One measured row.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub peak_rss: String,
    pub note: String,
    /// Whether MB/s and records/s mean anything for this row (not for open times).
    pub rates: bool,
}

impl Row {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs every row and prints one table.
pub fn run(options: LogBenchOptions) -> anyhow::Result<()> {
    if let Some(count) = options.idle_logs {
        return idle_logs_run(&options, count);
    }
    if let Some(logs) = options.logs {
        return shared_run(&options, logs);
    }
    let rows = measure(&options)?;
    print_table(&options, &rows);
    Ok(())
}

/// A temporary directory in `options.dir` (the disk measured) and a 2-worker runtime.
fn scratch(
    options: &LogBenchOptions,
) -> anyhow::Result<(tempfile::TempDir, tokio::runtime::Runtime)> {
    let root = tempfile::Builder::new()
        .prefix(".loghouse-bench-log-")
        .tempdir_in(&options.dir)
        .with_context(|| {
            format!(
                "creating a temporary directory in {}",
                options.dir.display()
            )
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok((root, runtime))
}

/// Runs every row and returns them.
pub fn measure(options: &LogBenchOptions) -> anyhow::Result<Vec<Row>> {
    let plan = Plan::new(options.quick);
    let (root, runtime) = scratch(options)?;
    let mut rows = vec![dd_row(root.path(), plan)?];
    for (policy, name) in [(SyncPolicy::Always, "always"), (SyncPolicy::Never, "never")] {
        for record_bytes in [100usize, 1024, 64 << 10] {
            for appenders in [1usize, 8, 64] {
                let dir = root
                    .path()
                    .join(format!("append-{name}-{record_bytes}-{appenders}"));
                let label = format!(
                    "append sync={name} {} x {appenders}",
                    size_label(record_bytes)
                );
                let row = measured(label, || {
                    runtime.block_on(append_row(&dir, policy, record_bytes, appenders, plan))
                })?;
                std::fs::remove_dir_all(&dir).ok();
                rows.push(row);
            }
        }
    }
    rows.extend(big_log_rows(&root.path().join("big"), plan)?);
    Ok(rows)
}

/// Runs `work` with the peak-RSS counter reset and names the row.
fn measured(name: String, work: impl FnOnce() -> anyhow::Result<Row>) -> anyhow::Result<Row> {
    // Resets VmHWM; not every kernel or container allows it, and the number is then the
    // process's peak so far.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut row = work()?;
    row.name = name;
    row.peak_rss = super::peak_rss_of_self().unwrap_or_else(|| "n/a".into());
    Ok(row)
}

fn config(dir: &Path, sync: SyncPolicy) -> LogConfig {
    LogConfig {
        sync,
        record_bytes_max: 1 << 20,
        ..LogConfig::new(dir)
    }
}

async fn append_row(
    dir: &Path,
    sync: SyncPolicy,
    record_bytes: usize,
    appenders: usize,
    plan: Plan,
) -> anyhow::Result<Row> {
    let log = Arc::new(Log::open(
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        config(dir, sync),
    )?);
    let committer = Committer::start(log.clone(), 4096);
    let value = Bytes::from(pseudo_random_bytes(record_bytes, 7));
    let records_max = plan
        .row_records_max
        .min(plan.row_bytes_max / record_bytes as u64)
        .max(appenders as u64);
    let per_appender = records_max / appenders as u64;
    let syncs_before = log.sync_count();
    let start = Instant::now();
    let deadline = start + plan.row_time;
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let committer = committer.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                committer
                    .append(vec![NewRecord::data(value.clone())])
                    .await?;
                done += 1;
                if done >= per_appender || Instant::now() >= deadline {
                    return anyhow::Ok(done);
                }
            }
        }));
    }
    let mut records = 0;
    for task in tasks {
        records += task.await??;
    }
    let elapsed = start.elapsed();
    let syncs_note = match sync {
        SyncPolicy::Always => format!(
            "{:.1} records/fsync",
            records as f64 / log.sync_count().saturating_sub(syncs_before).max(1) as f64
        ),
        _ => String::new(),
    };
    committer.shutdown().await?;
    Ok(Row {
        name: String::new(),
        records,
        bytes: records * record_bytes as u64,
        elapsed,
        peak_rss: String::new(),
        rates: true,
        note: syncs_note,
    })
}

/// `--logs N`: N logs through one shared committer against one log, alternating, and the
/// medians.
fn shared_run(options: &LogBenchOptions, logs: usize) -> anyhow::Result<()> {
    let rows = shared_measure(options, logs)?;
    println!(
        "loghouse bench log --logs {logs} --producers {}{} (dir {}): 1 KiB records, sync=always",
        options.producers,
        if options.quick { " --quick" } else { "" },
        options.dir.display()
    );
    println!(
        "{:<40} {:>10} {:>12} {:>10}  note",
        "row", "records", "records/s", "peak RSS"
    );
    for row in &rows {
        println!(
            "{:<40} {:>10} {:>12.0} {:>10}  {}",
            row.name,
            row.records,
            row.records_per_s(),
            row.peak_rss,
            row.note
        );
    }
    let median = |prefix: &str| {
        let mut rates: Vec<f64> = (rows.iter())
            .filter(|r| r.name.starts_with(prefix))
            .map(Row::records_per_s)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(0.0)
    };
    let (one, many) = (median("1 log "), median(&format!("{logs} logs ")));
    let ratio = many / one.max(1e-9);
    println!("median 1 log: {one:.0} records/s; median {logs} logs: {many:.0} records/s");
    println!(
        "target {logs} logs >= 80% of 1 log: {:.0}% ({})",
        ratio * 100.0,
        met(ratio >= 0.8)
    );
    Ok(())
}

/// The rows of `--logs N`: `runs` runs of 1 log and of N logs, alternating.
pub fn shared_measure(options: &LogBenchOptions, logs: usize) -> anyhow::Result<Vec<Row>> {
    let plan = Plan::new(options.quick);
    let (root, runtime) = scratch(options)?;
    let mut rows = Vec::new();
    for run in 0..options.runs.max(1) {
        for count in [1, logs.max(1)] {
            let dir = root.path().join(format!("shared-{count}-{run}"));
            let label = format!(
                "{count} log{} run {}",
                if count == 1 { "" } else { "s" },
                run + 1
            );
            let row = measured(label, || {
                runtime.block_on(shared_append_row(&dir, count, options.producers, plan))
            })?;
            std::fs::remove_dir_all(&dir).ok();
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `producers` producers of 1 KiB records, producer `p` to log `p % logs`, all through one
/// shared committer, sync=always.
async fn shared_append_row(
    dir: &Path,
    logs: usize,
    producers: usize,
    plan: Plan,
) -> anyhow::Result<Row> {
    let record_bytes = 1024usize;
    let committer = Committer::start_shared(4096.max(producers));
    let mut handles: Vec<CommitterHandle> = Vec::with_capacity(logs);
    for i in 0..logs {
        let log = Log::open(
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            config(&dir.join(format!("p{i}")), SyncPolicy::Always),
        )?;
        handles.push(committer.attach(Arc::new(log)));
    }
    let value = Bytes::from(pseudo_random_bytes(record_bytes, 7));
    let producers = producers.max(1);
    let records_max = (plan.row_records_max)
        .min(plan.row_bytes_max / record_bytes as u64)
        .max(producers as u64);
    let per_producer = records_max / producers as u64;
    let syncs_before: u64 = handles.iter().map(|h| h.log().sync_count()).sum();
    let start = Instant::now();
    let deadline = start + plan.row_time;
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let handle = handles[p % logs].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                handle.append(vec![NewRecord::data(value.clone())]).await?;
                done += 1;
                if done >= per_producer || Instant::now() >= deadline {
                    return anyhow::Ok(done);
                }
            }
        }));
    }
    let mut records = 0;
    for task in tasks {
        records += task.await??;
    }
    let elapsed = start.elapsed();
    let syncs: u64 = handles.iter().map(|h| h.log().sync_count()).sum::<u64>() - syncs_before;
    committer.shutdown().await?;
    Ok(Row {
        name: String::new(),
        records,
        bytes: records * record_bytes as u64,
        elapsed,
        peak_rss: String::new(),
        rates: true,
        note: format!(
            "{:.0} fsyncs/s, {:.1} records/fsync",
            syncs as f64 / elapsed.as_secs_f64().max(1e-9),
            records as f64 / syncs.max(1) as f64
        ),
    })
}

/// What /proc says about this process's memory and files.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessCost {
    rss_kib: u64,
    rss_anon_kib: u64,
    rss_file_kib: u64,
    virtual_kib: u64,
    fds: usize,
    maps: usize,
}

impl ProcessCost {
    fn now() -> ProcessCost {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            (status.lines())
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let count = |path: &str| std::fs::read_dir(path).map_or(0, |d| d.count());
        let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
        ProcessCost {
            rss_kib: field("VmRSS:"),
            rss_anon_kib: field("RssAnon:"),
            rss_file_kib: field("RssFile:"),
            virtual_kib: field("VmSize:"),
            fds: count("/proc/self/fd"),
            maps,
        }
    }

    fn print(&self, what: &str, elapsed: Option<Duration>) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{what:<34} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>7} {:>7}",
            elapsed.map_or("-".into(), fmt_ms),
            mib(self.rss_kib),
            mib(self.rss_anon_kib),
            mib(self.rss_file_kib),
            mib(self.virtual_kib),
            self.fds,
            self.maps
        );
    }
}

/// `--idle-logs N`: the cost of N open, idle partitions in one process.
fn idle_logs_run(options: &LogBenchOptions, count: usize) -> anyhow::Result<()> {
    let limit = crate::log::raise_open_file_limit()?;
    let (root, runtime) = scratch(options)?;
    println!(
        "loghouse bench log --idle-logs {count} (dir {}; open-file limit {limit}; default log \
         config, sync=always)",
        options.dir.display()
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
        "step", "ms", "RSS MiB", "anon", "file", "virt MiB", "fds", "maps"
    );
    ProcessCost::now().print("before", None);
    let open_all = || -> anyhow::Result<Vec<Arc<Log>>> {
        (0..count)
            .map(|i| {
                let config = config(&root.path().join(format!("p{i:05}")), SyncPolicy::Always);
                Ok(Arc::new(Log::open(
                    Arc::new(StdDisk),
                    Arc::new(SystemClock),
                    config,
                )?))
            })
            .collect()
    };
    let start = Instant::now();
    let logs = open_all()?;
    ProcessCost::now().print(&format!("open {count} new logs"), Some(start.elapsed()));
    let value = Bytes::from(pseudo_random_bytes(1024, 5));
    let start = Instant::now();
    runtime.block_on(async {
        let committer = Committer::start_shared(4096);
        let handles: Vec<CommitterHandle> = logs
            .iter()
            .map(|log| committer.attach(log.clone()))
            .collect();
        let appends = handles
            .iter()
            .map(|h| h.append(vec![NewRecord::data(value.clone())]));
        for result in futures::future::join_all(appends).await {
            result?;
        }
        ProcessCost::now().print("one 1 KiB record each (shared)", Some(start.elapsed()));
        let start = Instant::now();
        committer.shutdown().await?;
        ProcessCost::now().print("close all", Some(start.elapsed()));
        anyhow::Ok(())
    })?;
    drop(logs);
    ProcessCost::now().print("dropped", None);
    let start = Instant::now();
    let logs = open_all()?;
    ProcessCost::now().print(
        &format!("reopen {count} logs (restart)"),
        Some(start.elapsed()),
    );
    drop(logs);
    Ok(())
}

/// Builds a large log with direct batched appends, then scans it, reads at random and opens it
/// after a clean close, after a crash and with every index deleted.
fn big_log_rows(dir: &Path, plan: Plan) -> anyhow::Result<Vec<Row>> {
    let record_bytes = 1024usize;
    let frame_bytes = crate::log::record::frame_len(record_bytes) as u64;
    let total_records = plan.big_log_bytes / frame_bytes;
    let mut rows = Vec::new();
    let open = || -> anyhow::Result<Log> {
        Ok(Log::open(
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            config(dir, SyncPolicy::Never),
        )?)
    };
    let log = open()?;
    rows.push(measured(
        format!(
            "build {} log: append batches of 1000, sync once",
            mib(plan.big_log_bytes)
        ),
        || build_log(&log, total_records, record_bytes),
    )?);
    rows.push(measured(
        "sequential scan (read_batch, 1 MiB)".into(),
        || scan_row(&log),
    )?);
    rows.push(measured("random read by offset (1 KiB)".into(), || {
        random_read_row(&log, plan)
    })?);
    log.close()?;
    rows.push(measured("open after clean close".into(), || {
        open_row(&open)
    })?);
    // open_row dropped the log without closing it: a crash. The active index stays pre-grown.
    rows.push(measured(
        "open after crash (active index pre-grown)".into(),
        || open_row(&open),
    )?);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("index" | "index2")
        ) {
            std::fs::remove_file(path)?;
        }
    }
    rows.push(measured(
        "open with every index deleted (full scan)".into(),
        || open_row(&open),
    )?);
    // The worst case of the tail rewrite after an unclean stop: a full last segment.
    let log = open()?;
    fill_last_segment(&log, record_bytes, plan)?;
    drop(log);
    rows.push(measured(
        "open after crash, last segment full (rewritten)".into(),
        || open_row(&open),
    )?);
    Ok(rows)
}

/// Appends 1 KiB records until the last segment is one record short of full (at most
/// `plan.big_log_bytes` more), then syncs.
fn fill_last_segment(log: &Log, record_bytes: usize, plan: Plan) -> anyhow::Result<()> {
    let frame_bytes = crate::log::record::frame_len(record_bytes) as u64;
    let per_segment = log.config().segment_bytes_max / frame_bytes;
    let in_last = (log.next_offset() - log.lowest_offset()) % per_segment;
    let mut missing = (per_segment - in_last)
        .saturating_sub(1)
        .min(plan.big_log_bytes / frame_bytes);
    let value = Bytes::from(pseudo_random_bytes(record_bytes, 13));
    let batch: Vec<NewRecord> = (0..1000).map(|_| NewRecord::data(value.clone())).collect();
    while missing > 0 {
        let n = missing.min(batch.len() as u64) as usize;
        log.append(&batch[..n])?;
        missing -= n as u64;
    }
    log.sync()?;
    Ok(())
}

fn build_log(log: &Log, total_records: u64, record_bytes: usize) -> anyhow::Result<Row> {
    let value = Bytes::from(pseudo_random_bytes(record_bytes, 11));
    let batch: Vec<NewRecord> = (0..1000).map(|_| NewRecord::data(value.clone())).collect();
    let start = Instant::now();
    let mut records = 0;
    while records < total_records {
        let n = (total_records - records).min(batch.len() as u64) as usize;
        log.append(&batch[..n])?;
        records += n as u64;
    }
    log.sync()?;
    Ok(Row {
        name: String::new(),
        records,
        bytes: records * record_bytes as u64,
        elapsed: start.elapsed(),
        peak_rss: String::new(),
        rates: true,
        note: format!("{} segments", log.info().segment_count),
    })
}

fn scan_row(log: &Log) -> anyhow::Result<Row> {
    let start = Instant::now();
    let (mut offset, next) = (log.lowest_offset(), log.next_offset());
    let (mut records, mut bytes) = (0u64, 0u64);
    while offset < next {
        let batch = log.read_batch(offset, 100_000, 1 << 20)?;
        records += batch.len() as u64;
        bytes += batch.iter().map(|r| r.value.len() as u64).sum::<u64>();
        offset += batch.len() as u64;
    }
    Ok(Row {
        name: String::new(),
        records,
        bytes,
        elapsed: start.elapsed(),
        peak_rss: String::new(),
        rates: true,
        note: "page cache warm; CRC checked".into(),
    })
}

fn random_read_row(log: &Log, plan: Plan) -> anyhow::Result<Row> {
    let (lowest, next) = (log.lowest_offset(), log.next_offset());
    let span = next - lowest;
    let mut rng = SplitMix64(42);
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < plan.row_records_max && start.elapsed() < plan.row_time {
        for _ in 0..256 {
            let record = log.read(lowest + rng.next() % span)?;
            bytes += record.value.len() as u64;
            records += 1;
        }
    }
    Ok(Row {
        name: String::new(),
        records,
        bytes,
        elapsed: start.elapsed(),
        peak_rss: String::new(),
        rates: true,
        note: "page cache warm".into(),
    })
}

/// Times one open (the log is then dropped without closing: a crash for the next open).
fn open_row(open: &dyn Fn() -> anyhow::Result<Log>) -> anyhow::Result<Row> {
    let start = Instant::now();
    let log = open()?;
    let elapsed = start.elapsed();
    let report = log.open_report();
    let info = log.info();
    Ok(Row {
        name: String::new(),
        records: info.next_offset - info.lowest_offset,
        bytes: info.size_bytes,
        elapsed,
        peak_rss: String::new(),
        rates: false,
        note: format!(
            "{} ms; {} of {} segments scanned; {:.1} MiB of tail rewritten",
            fmt_ms(elapsed),
            report.segments_scanned,
            info.segment_count,
            report.tail_rewritten_bytes as f64 / f64::from(1 << 20)
        ),
    })
}

/// `dd if=<random file> of=<dir>/dd.out bs=1M count=N conv=fdatasync`, parsed from its stderr.
fn dd_row(dir: &Path, plan: Plan) -> anyhow::Result<Row> {
    let source = dir.join("dd.in");
    std::fs::write(
        &source,
        pseudo_random_bytes((plan.dd_mib << 20) as usize, 3),
    )?;
    let target = dir.join("dd.out");
    let output = std::process::Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", &format!("count={}", plan.dd_mib), "conv=fdatasync"])
        .output()
        .context("running dd")?;
    anyhow::ensure!(output.status.success(), "dd failed: {:?}", output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (bytes, seconds) =
        parse_dd(&stderr).with_context(|| format!("cannot parse dd's output: {stderr:?}"))?;
    std::fs::remove_file(&source).ok();
    std::fs::remove_file(&target).ok();
    Ok(Row {
        name: format!("machine: dd bs=1M count={} conv=fdatasync", plan.dd_mib),
        records: 0,
        bytes,
        elapsed: Duration::from_secs_f64(seconds),
        peak_rss: "-".into(),
        rates: true,
        note: "same directory".into(),
    })
}

/// Bytes and seconds from dd's summary line: `N bytes (...) copied, S s, R MB/s`.
fn parse_dd(stderr: &str) -> Option<(u64, f64)> {
    let line = stderr.lines().rev().find(|l| l.contains("copied"))?;
    let bytes = line.split_whitespace().next()?.parse().ok()?;
    let after = line.split("copied,").nth(1)?;
    let seconds = after.split_whitespace().next()?.parse().ok()?;
    Some((bytes, seconds))
}

fn print_table(options: &LogBenchOptions, rows: &[Row]) {
    println!(
        "loghouse bench log{} (dir {})",
        if options.quick { " --quick" } else { "" },
        options.dir.display()
    );
    println!(
        "{:<52} {:>10} {:>10} {:>12} {:>10}  note",
        "row", "records", "MB/s", "records/s", "peak RSS"
    );
    for row in rows {
        let (mb_per_s, records_per_s) = match (row.rates, row.records) {
            (false, _) => ("-".to_string(), "-".to_string()),
            (true, 0) => (format!("{:.1}", row.mb_per_s()), "-".to_string()),
            (true, _) => (
                format!("{:.1}", row.mb_per_s()),
                format!("{:.0}", row.records_per_s()),
            ),
        };
        println!(
            "{:<52} {:>10} {:>10} {:>12} {:>10}  {}",
            row.name, row.records, mb_per_s, records_per_s, row.peak_rss, row.note
        );
    }
    print_targets(rows);
}

fn print_targets(rows: &[Row]) {
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    let (Some(dd), Some(always)) = (find("machine: dd"), find("append sync=always 1 KiB x 64"))
    else {
        return;
    };
    let ratio = always.mb_per_s() / dd.mb_per_s();
    println!(
        "target sync=always 1 KiB x 64 >= 70% of dd: {:.0}% ({})",
        ratio * 100.0,
        met(ratio >= 0.7)
    );
    if let Some(scan) = find("sequential scan") {
        let gb = scan.mb_per_s() / 1000.0;
        println!(
            "target sequential scan >= 2 GB/s: {gb:.2} GB/s ({})",
            met(gb >= 2.0)
        );
    }
    for (prefix, limit_ms) in [
        ("open after crash", 1000.0),
        ("open with every", 1000.0),
        ("open after clean", 50.0),
    ] {
        if let Some(row) = find(prefix) {
            let ms = row.elapsed.as_secs_f64() * 1000.0;
            println!(
                "target {prefix} <= {limit_ms} ms: {ms:.1} ms ({})",
                met(ms <= limit_ms)
            );
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn size_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} B"),
    }
}

fn mib(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b => format!("{} MiB", b >> 20),
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Deterministic filler bytes (incompressible enough for a disk benchmark).
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dd_output_is_parsed() {
        let stderr = "256+0 records in\n256+0 records out\n\
                      268435456 bytes (268 MB, 256 MiB) copied, 0.725 s, 370 MB/s\n";
        assert_eq!(parse_dd(stderr), Some((268_435_456, 0.725)));
        assert_eq!(parse_dd("garbage"), None);
    }

    /// The full run: `cargo test --release --lib -- --ignored bench_log`.
    #[test]
    #[ignore]
    fn bench_log_full() {
        run(LogBenchOptions::default()).unwrap();
    }

    /// The quick run (what CI smoke runs use) measures every row.
    #[test]
    fn bench_log_quick() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogBenchOptions {
            dir: dir.path().to_owned(),
            quick: true,
            ..LogBenchOptions::default()
        };
        let rows = measure(&options).unwrap();
        assert_eq!(rows.len(), 1 + 18 + 7);
        assert!(rows.iter().all(|r| r.bytes > 0), "{rows:?}");
        print_table(&options, &rows);
    }

    /// The quick run of `--logs 4`: both sides, every run.
    #[test]
    fn bench_log_shared_quick() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogBenchOptions {
            dir: dir.path().to_owned(),
            quick: true,
            producers: 8,
            runs: 1,
            ..LogBenchOptions::default()
        };
        let rows = shared_measure(&options, 4).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.records > 0), "{rows:?}");
    }
}
