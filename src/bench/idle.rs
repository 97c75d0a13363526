//! `loghouse bench idle`: what an idle standalone node holding many partitions costs: the time
//! `Node::open` takes, its resident memory and open files, and the CPU it uses at rest. The
//! node is filled in this process, then opened and measured in a child process of its own, so
//! the figures are the node's alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::config::NodeConfig;
use crate::io::{StdDisk, SystemClock};
use crate::log::NewRecord;
use crate::server::Node;
use crate::topic::TopicSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct IdleBenchOptions {
    /// Topics (`idle-0`, ...), each with `--partitions`.
    #[arg(long, default_value_t = 10)]
    pub topics: u32,
    #[arg(long, default_value_t = 100)]
    pub partitions: u32,
    /// Records of 1 KiB written to each partition before it is measured.
    #[arg(long, default_value_t = 10)]
    pub records: u32,
    /// How long the opened node is watched at rest.
    #[arg(long, default_value_t = 10)]
    pub rest_seconds: u64,
    /// (internal) open the node in this data directory and measure it.
    #[arg(long, hide = true)]
    pub measure: Option<PathBuf>,
}

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_owned(),
        ..NodeConfig::default()
    }
}

fn open(dir: &Path) -> anyhow::Result<Node> {
    let node = Node::open(
        config(dir),
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        "127.0.0.1:0".into(),
    )?;
    Ok(node)
}

pub async fn run(options: IdleBenchOptions) -> anyhow::Result<()> {
    if let Some(dir) = &options.measure {
        return measure(dir, options.rest_seconds).await;
    }
    let raised = crate::log::raise_open_file_limit().context("raising the open-file limit")?;
    let dir = tempfile::Builder::new()
        .prefix(".loghouse-bench-")
        .tempdir_in(".")
        .context("creating a temporary data dir")?;
    fill(dir.path(), &options).await?;
    let total = options.topics * options.partitions;
    println!(
        "loghouse bench idle: {} topics x {} partitions = {total} partitions, {} records of 1 KiB \
         each, open-file limit {raised}",
        options.topics, options.partitions, options.records
    );
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "idle", "--rest-seconds"])
        .arg(options.rest_seconds.to_string())
        .arg("--measure")
        .arg(dir.path())
        .output()
        .context("running the measuring child")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    anyhow::ensure!(
        output.status.success(),
        "the measuring child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

async fn fill(dir: &Path, options: &IdleBenchOptions) -> anyhow::Result<()> {
    let node = open(dir)?;
    let value = Bytes::from(vec![b'x'; 1024]);
    for t in 0..options.topics {
        let name = format!("idle-{t}");
        let settings = TopicSettings::default();
        let (topic, _) = node
            .topics()
            .create(&name, options.partitions, settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for partition in topic.partitions() {
            let records = vec![NewRecord::data(value.clone()); options.records as usize];
            let pending = partition.submit(records, None).await?;
            pending.await?;
        }
    }
    node.shutdown().await?;
    Ok(())
}

async fn measure(dir: &Path, rest_seconds: u64) -> anyhow::Result<()> {
    crate::log::raise_open_file_limit().context("raising the open-file limit")?;
    let rss_before = rss_kib().unwrap_or(0);
    let started = Instant::now();
    let node = open(dir)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let partitions = node.topics().all_partitions().len();
    let rss_open = rss_kib().unwrap_or(0);
    let cpu_start = super::cpu_seconds_of(None).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(rest_seconds)).await;
    let cpu_rest = super::cpu_seconds_of(None).unwrap_or(0.0) - cpu_start;
    let rss_rest = rss_kib().unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    println!("partitions opened        {partitions}");
    println!("open time                {open_ms:.0} ms");
    println!(
        "RSS                      {:.1} MiB after open, {:.1} MiB after {rest_seconds} s at rest \
         (process before open: {:.1} MiB)",
        rss_open as f64 / 1024.0,
        rss_rest as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    println!("open files               {fds}");
    println!(
        "CPU at rest              {:.3} s over {rest_seconds} s ({:.2}% of a core)",
        cpu_rest,
        cpu_rest * 100.0 / rest_seconds as f64
    );
    node.shutdown().await?;
    Ok(())
}

/// Current resident memory of this process, KiB (VmRSS).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
