//! `loghouse bench cluster`: a local cluster of real processes. First the produce/consume load
//! of `bench grpc` against the leader (each member's peak RSS after it), then leader failover:
//! kill -9 the leader under a steady produce load, time the gap to the next acknowledged
//! produce, restart the killed member and time its catch-up; at the end every acknowledged
//! record is read back from every member and compared. It reports; it asserts nothing except
//! that no acknowledged record is lost (a lost or changed record makes it fail).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use parking_lot::Mutex;

use super::grpc::GrpcBenchOptions;
use super::local_cluster::{LocalCluster, LocalClusterSpec};
use crate::client::Client;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterBenchOptions {
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Leader kills in the failover phase (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// Skip the throughput phase.
    #[arg(long)]
    pub no_load: bool,
    /// Parent of the members' data directories [default: a temporary directory]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 17400)]
    pub base_port: u16,
    #[arg(long, default_value_t = 17500)]
    pub gossip_base_port: u16,
    /// Records per ProduceBatch in the failover phase.
    #[arg(long, default_value_t = 16)]
    pub failover_batch_records: usize,
    /// A TOML config file every member reads (`serve --config`), e.g. with a `[cluster]` table.
    #[arg(long)]
    pub member_config: Option<PathBuf>,
    /// The `loghouse` binary to start [default: this one] (tests set it).
    #[arg(skip)]
    pub exe: Option<PathBuf>,
    /// The load phase's settings (as `bench grpc`; members always fsync, `--sync` is ignored).
    #[command(flatten)]
    pub load: GrpcBenchOptions,
}

/// Every acknowledged batch: first offset -> values.
type Acked = Arc<Mutex<BTreeMap<u64, Vec<Bytes>>>>;

const FORM_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(options: ClusterBenchOptions) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = options
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let spec = LocalClusterSpec {
        exe: match &options.exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe().context("cannot find the loghouse binary")?,
        },
        nodes: options.nodes,
        dir,
        base_port: options.base_port,
        gossip_base_port: options.gossip_base_port,
        extra_args: match &options.member_config {
            Some(path) => vec!["--config".into(), path.display().to_string()],
            None => Vec::new(),
        },
        metrics_base_port: None,
    };
    let mut cluster = LocalCluster::start(spec)?;
    let formed = Instant::now();
    let leader = wait_for_voters(&cluster, options.nodes as usize).await?;
    println!(
        "{} members formed in {:.1} s; leader is node {leader}",
        options.nodes,
        formed.elapsed().as_secs_f64()
    );
    if !options.no_load {
        let mut load = options.load.clone();
        load.addr = Some(cluster.rpc_addr(leader));
        load.server_pid = cluster.pid(leader);
        super::grpc::run(load).await?;
        for id in 1..=options.nodes {
            let rss = cluster.pid(id).and_then(super::peak_rss_of);
            println!(
                "node {id} peak RSS: {}",
                rss.unwrap_or_else(|| "n/a".into())
            );
        }
    }
    if options.kills > 0 {
        failover(&mut cluster, &options).await?;
    }
    cluster.stop();
    Ok(())
}

/// Waits until a member reports `voters` voters and a leader; returns the leader's id.
async fn wait_for_voters(cluster: &LocalCluster, voters: usize) -> anyhow::Result<u16> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        for id in 1..=cluster.spec.nodes {
            if let Some(leader) = leader_with_voters(cluster, id, voters).await {
                return Ok(leader);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cluster did not form in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn leader_with_voters(cluster: &LocalCluster, via: u16, voters: usize) -> Option<u16> {
    let client = Client::connect(&cluster.rpc_addr(via)).await.ok()?;
    let servers = client.servers().await.ok()?;
    if servers.iter().filter(|s| s.is_voter && s.alive).count() < voters {
        return None;
    }
    let leader = servers.iter().find(|s| s.is_leader)?;
    leader.id.parse().ok()
}

async fn failover(cluster: &mut LocalCluster, options: &ClusterBenchOptions) -> anyhow::Result<()> {
    let acked: Acked = Arc::default();
    let last_ack = Arc::new(Mutex::new(Instant::now()));
    let producer = tokio::spawn(produce_forever(
        cluster.rpc_addr(1),
        options.failover_batch_records,
        acked.clone(),
        last_ack.clone(),
    ));
    let mut failover_ms = Vec::new();
    let mut catch_up_ms = Vec::new();
    for kill in 0..options.kills {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = wait_for_voters(cluster, options.nodes as usize).await?;
        cluster.kill(leader)?;
        let killed = Instant::now();
        while *last_ack.lock() <= killed {
            anyhow::ensure!(
                killed.elapsed() < FORM_TIMEOUT,
                "no produce acknowledged within {FORM_TIMEOUT:?} of kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failover_ms.push(killed.elapsed().as_secs_f64() * 1e3);
        cluster.restart(leader)?;
        let restarted = Instant::now();
        wait_caught_up(cluster, leader).await?;
        catch_up_ms.push(restarted.elapsed().as_secs_f64() * 1e3);
        println!(
            "kill {kill}: node {leader}; next ack after {:.0} ms; restarted node caught up in {:.0} ms",
            failover_ms.last().unwrap(),
            catch_up_ms.last().unwrap()
        );
    }
    producer.abort();
    let records: usize = acked.lock().values().map(Vec::len).sum();
    println!(
        "failover over {} kills: median {:.0} ms, p90 {:.0} ms, max {:.0} ms; catch-up median {:.0} ms",
        failover_ms.len(),
        percentile(&mut failover_ms, 0.5),
        percentile(&mut failover_ms, 0.9),
        percentile(&mut failover_ms, 1.0),
        percentile(&mut catch_up_ms, 0.5)
    );
    let acked = acked.lock().clone();
    verify(cluster, &acked).await?;
    println!("every one of {records} acknowledged records reads back identically on every member");
    Ok(())
}

/// Produces batches of unique values through the cluster client, recording every acknowledged
/// batch; failures (during a failover) are retried after a short pause.
async fn produce_forever(addr: String, batch: usize, acked: Acked, last_ack: Arc<Mutex<Instant>>) {
    let mut sequence = 0u64;
    let mut client = None;
    loop {
        if client.is_none() {
            client = Client::connect_cluster(&addr).await.ok();
        }
        let Some(c) = &client else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let values: Vec<Bytes> = (0..batch)
            .map(|i| Bytes::from(format!("{sequence}-{i}")))
            .collect();
        sequence += 1;
        match c.produce_batch(values.clone()).await {
            Ok(first) => {
                acked.lock().insert(first, values);
                *last_ack.lock() = Instant::now();
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Waits until member `id` has committed as far as the leader had when it restarted.
async fn wait_caught_up(cluster: &LocalCluster, id: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let target = loop {
        let leader = wait_for_voters(cluster, 1).await?;
        if let Ok(client) = Client::connect(&cluster.rpc_addr(leader)).await {
            if let Ok(info) = client.info().await {
                break info.next_offset;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader answered");
    };
    loop {
        if let Ok(client) = Client::connect(&cluster.rpc_addr(id)).await {
            if client.info().await.is_ok_and(|i| i.next_offset >= target) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {id} did not catch up in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every member's log and checks each acknowledged batch is there, unchanged.
async fn verify(cluster: &LocalCluster, acked: &BTreeMap<u64, Vec<Bytes>>) -> anyhow::Result<()> {
    let end = acked
        .iter()
        .next_back()
        .map_or(0, |(first, values)| first + values.len() as u64);
    for id in 1..=cluster.spec.nodes {
        let client = Client::connect(&cluster.rpc_addr(id)).await?;
        let deadline = Instant::now() + FORM_TIMEOUT;
        while client.info().await?.next_offset < end {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {id} never reached offset {end}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut log = Vec::with_capacity(end as usize);
        while (log.len() as u64) < end {
            let batch = client.consume_batch(log.len() as u64, 0).await?;
            anyhow::ensure!(
                !batch.records.is_empty(),
                "node {id}: empty read below {end}"
            );
            log.extend(batch.records.into_iter().map(|r| r.value));
        }
        for (first, values) in acked {
            let stored = &log[*first as usize..*first as usize + values.len()];
            anyhow::ensure!(
                stored == values.as_slice(),
                "node {id}: the batch acknowledged at offset {first} differs (lost or changed)"
            );
        }
    }
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}
