//! One simulated run: build the cluster, run the workload under the fault schedule (safety), heal
//! and restart everything and check that every acknowledged record becomes readable within a
//! bound (liveness), then hand the history to the checker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loghouse::client::Client;
use loghouse::config::NodeConfig;
use loghouse::io::{Disk, SimDisk};
use madsim::rand::RngCore;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::checker::{self, Violation};
use crate::cluster::{Cluster, Shared};
use crate::faults::{self, Direction, Fault, Intensity, Planned};
use crate::history::{FinalScan, Flip, Phase, ReadOutcome};
use crate::rng::Rng;
use crate::value;
use crate::workload::{self, Ctx, Producer};

/// Every acknowledged record must be readable this long after the faults stop.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// Values each liveness producer gets acknowledged.
const LIVENESS_VALUES_PER_PRODUCER: usize = 4;
/// Producer ids of the liveness phase start here (safety producers count from 0).
const LIVENESS_PRODUCER_BASE: u32 = 1000;
const RECORD_BYTES_MAX: u32 = 1024;
/// Bytes of one index entry (see the storage engine's index format).
const INDEX_ENTRY_BYTES: u64 = 16;
const SCAN_BATCH_RECORDS: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// After the liveness produces, cut the last byte off the newest segment's store file (as a
    /// storage bug that loses an acknowledged record would): the checker must catch it.
    DropAck,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub bug: Option<Bug>,
    pub print_trace: bool,
}

/// What a run found.
pub struct Outcome {
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub sim_elapsed: Duration,
    pub summary: String,
}

/// The shape of a run, drawn from the seed.
#[derive(Debug, Clone)]
struct Params {
    segment_bytes_max: u64,
    index_entries: u64,
    producers: u32,
    readers: u32,
    followers: u32,
    safety_ms: u64,
    intensity: Intensity,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        Params {
            segment_bytes_max: [1_100, 2_048, 4_096][rng.below(3) as usize],
            index_entries: [4, 16, 64][rng.below(3) as usize],
            producers: rng.between(1, 4) as u32,
            readers: rng.between(1, 2) as u32,
            followers: rng.between(1, 2) as u32,
            safety_ms: rng.between(15_000, 45_000),
            intensity: Intensity {
                mean_gap_ms: rng.between(200, 1_000),
                bit_flips: rng.percent(50),
            },
        }
    }

    fn node_config(&self, index: usize) -> NodeConfig {
        NodeConfig {
            node_id: format!("node-{index}"),
            data_dir: PathBuf::from("/data"),
            sync: "always".into(),
            segment_bytes_max: self.segment_bytes_max,
            index_bytes_max: self.index_entries * INDEX_ENTRY_BYTES,
            record_bytes_max: RECORD_BYTES_MAX,
            ..NodeConfig::default()
        }
    }
}

pub async fn run(options: Options) -> Outcome {
    let started = Instant::now();
    let mut rng = Rng::new(madsim::rand::thread_rng().next_u64());
    let params = Params::draw(&mut rng);
    println!(
        "params: segment_bytes_max={} index_entries={} producers={} readers={} followers={} safety_ms={} mean_fault_gap_ms={} bit_flips={}",
        params.segment_bytes_max, params.index_entries, params.producers, params.readers,
        params.followers, params.safety_ms, params.intensity.mean_gap_ms, params.intensity.bit_flips
    );
    let shared = Shared::new(options.print_trace);
    let configs = (0..options.nodes).map(|i| params.node_config(i)).collect();
    let disk_seeds = (0..options.nodes).map(|_| rng.next_u64()).collect();
    let handle = madsim::runtime::Handle::current();
    let mut cluster = Cluster::build(&handle, configs, disk_seeds, shared.clone());

    let schedule = faults::plan(&mut rng, params.safety_ms, options.nodes, &params.intensity);
    println!("faults: {}", count_kinds(&schedule));
    safety_phase(&mut cluster, &params, schedule, &mut rng).await;
    liveness_phase(&mut cluster, &params, options.bug, &mut rng).await;

    let history = shared.history.lock().clone();
    let violations = checker::check(&history);
    let acked = history.acked().count();
    let summary = format!(
        "produced={} acked={} reads={} streams={} flips={} log_end={}",
        history.produces.len(),
        acked,
        history.reads.len(),
        history.sessions.len(),
        history.flips.len(),
        history.final_scan.as_ref().map_or(0, |s| s.next_offset),
    );
    Outcome {
        violations,
        trace_hash: shared.trace_hash(),
        trace_events: shared.trace_events(),
        sim_elapsed: started.elapsed(),
        summary,
    }
}

fn count_kinds(schedule: &[Planned]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for planned in schedule {
        *counts.entry(planned.fault.kind()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!("{} planned ({})", schedule.len(), parts.join(" "))
}

fn ctx(cluster: &Cluster, node: usize, stop: watch::Receiver<bool>) -> Ctx {
    Ctx {
        shared: cluster.shared.clone(),
        node,
        addr: cluster.addr(node).to_string(),
        stop,
        pad_max: (RECORD_BYTES_MAX as usize - value::encoded_len(0)) as u16,
    }
}

async fn safety_phase(
    cluster: &mut Cluster,
    params: &Params,
    schedule: Vec<Planned>,
    rng: &mut Rng,
) {
    cluster.shared.event("safety phase starts");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for p in 0..params.producers {
        let producer = Producer::new(ctx(cluster, 0, stop_rx.clone()), p, rng.fork());
        tasks.push(cluster.client.spawn(producer.run()));
    }
    for _ in 0..params.readers {
        tasks.push(cluster.client.spawn(workload::reader(
            ctx(cluster, 0, stop_rx.clone()),
            rng.fork(),
        )));
    }
    for f in 0..params.followers {
        tasks.push(cluster.client.spawn(workload::follower(
            ctx(cluster, 0, stop_rx.clone()),
            f,
            0,
        )));
    }
    let started = Instant::now();
    for (at_ms, action) in timeline(schedule) {
        tokio::time::sleep_until(started + Duration::from_millis(at_ms)).await;
        apply(cluster, action);
    }
    tokio::time::sleep_until(started + Duration::from_millis(params.safety_ms)).await;
    cluster.shared.event("safety phase ends: healing");
    heal(cluster);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
}

/// One step of the fault timeline.
#[derive(Debug, Clone)]
enum Action {
    Start(Fault),
    /// The end of a fault's window.
    End(Fault),
}

/// Turns the schedule into a list of (time, action), sorted by time (ties keep plan order).
fn timeline(schedule: Vec<Planned>) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    for planned in schedule {
        let window_ms = match planned.fault {
            Fault::Crash { down_ms, .. } => Some(down_ms),
            Fault::Pause { ms, .. }
            | Fault::PacketLoss { ms, .. }
            | Fault::LatencySpike { ms, .. }
            | Fault::Clog { ms, .. }
            | Fault::ClogLink { ms, .. }
            | Fault::IoErrors { ms, .. } => Some(ms),
            Fault::ClockSkew { .. } | Fault::BitFlip { .. } => None,
        };
        if let Some(ms) = window_ms {
            out.push((planned.at_ms + ms, Action::End(planned.fault.clone())));
        }
        out.push((planned.at_ms, Action::Start(planned.fault)));
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

fn apply(cluster: &mut Cluster, action: Action) {
    cluster.shared.event(format!("fault {action:?}"));
    let net = cluster.net();
    let client = cluster.client.id();
    match action {
        Action::Start(Fault::Crash { node, torn, .. }) => {
            cluster.power_off(node, torn);
        }
        Action::End(Fault::Crash { node, .. }) => cluster.power_on(node),
        Action::Start(Fault::Pause { node, .. }) => cluster.pause(node),
        Action::End(Fault::Pause { node, .. }) => cluster.resume(node),
        Action::Start(Fault::PacketLoss { percent, .. }) => {
            net.update_config(|c| c.packet_loss_rate = percent as f64 / 100.0)
        }
        Action::End(Fault::PacketLoss { .. }) => net.update_config(|c| c.packet_loss_rate = 0.0),
        Action::Start(Fault::LatencySpike { max_latency_ms, .. }) => net.update_config(|c| {
            c.send_latency = Duration::from_millis(1)..Duration::from_millis(max_latency_ms)
        }),
        Action::End(Fault::LatencySpike { .. }) => {
            net.update_config(|c| c.send_latency = madsim::net::Config::default().send_latency)
        }
        Action::Start(Fault::Clog {
            node, direction, ..
        }) => {
            let id = cluster.nodes[node].handle.id();
            match direction {
                Direction::In => net.clog_node_in(id),
                Direction::Out => net.clog_node_out(id),
                Direction::Both => net.clog_node(id),
            }
        }
        Action::End(Fault::Clog { node, .. }) => net.unclog_node(cluster.nodes[node].handle.id()),
        Action::Start(Fault::ClogLink { node, to_node, .. }) => {
            let id = cluster.nodes[node].handle.id();
            if to_node {
                net.clog_link(client, id)
            } else {
                net.clog_link(id, client)
            }
        }
        Action::End(Fault::ClogLink { node, .. }) => {
            let id = cluster.nodes[node].handle.id();
            net.unclog_link(client, id);
            net.unclog_link(id, client);
        }
        Action::Start(Fault::ClockSkew { node, skew_ms }) => {
            cluster.nodes[node].clock.set_skew_ms(skew_ms)
        }
        Action::Start(Fault::IoErrors {
            node, per_million, ..
        }) => set_io_errors(cluster, node, per_million),
        Action::End(Fault::IoErrors { node, .. }) => set_io_errors(cluster, node, 0),
        Action::Start(Fault::BitFlip {
            node,
            pick,
            position,
            bit,
            index_file,
        }) => flip_bit(cluster, node, pick, position, bit, index_file),
        Action::End(Fault::ClockSkew { .. }) | Action::End(Fault::BitFlip { .. }) => {}
    }
}

fn set_io_errors(cluster: &mut Cluster, node: usize, per_million: u32) {
    let sim_node = &mut cluster.nodes[node];
    sim_node.io_error_per_million = per_million;
    sim_node.set_disk_faults(false);
}

/// Undoes every fault still in force: network, pauses, disk errors; powers on nodes that are down.
fn heal(cluster: &mut Cluster) {
    cluster.heal_network();
    for node in 0..cluster.nodes.len() {
        set_io_errors(cluster, node, 0);
        cluster.power_on(node);
    }
}

/// A segment's files, from the log directory's listing: `<base offset>.<kind>`.
#[derive(Debug)]
struct SegmentFiles {
    base: u64,
    store: Option<PathBuf>,
    index: Option<PathBuf>,
}

/// The segments in `dir` (as listed now), by base offset.
fn segments(disk: &dyn Disk, dir: &Path) -> Vec<SegmentFiles> {
    segments_named(dir, disk.list_dir(dir).unwrap_or_default())
}

/// The segments in `dir` that would survive a crash now (the disk's durable namespace). Only
/// these tell which segments are sealed on disk: a segment whose successor exists only in the
/// live namespace is still the last one after a crash, and recovery may treat damage in its last
/// record as a torn tail.
fn segments_durable(disk: &SimDisk, dir: &Path) -> Vec<SegmentFiles> {
    let names = (disk.files_durable().iter())
        .filter(|path| path.parent() == Some(dir))
        .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
        .collect();
    segments_named(dir, names)
}

/// Groups file names into segments by base offset. A file whose name starts with a number is a
/// segment file; one whose extension mentions "index" or "idx" is its index, any other its store.
fn segments_named(dir: &Path, mut names: Vec<String>) -> Vec<SegmentFiles> {
    names.sort();
    let mut out: Vec<SegmentFiles> = Vec::new();
    for name in names {
        let (stem, extension) = name.split_once('.').unwrap_or((&name, ""));
        let Ok(base) = stem.parse::<u64>() else {
            continue;
        };
        let position = match out.iter().position(|s| s.base == base) {
            Some(position) => position,
            None => {
                out.push(SegmentFiles {
                    base,
                    store: None,
                    index: None,
                });
                out.len() - 1
            }
        };
        let path = Some(dir.join(&name));
        if extension.contains("index") || extension.contains("idx") {
            out[position].index = path;
        } else {
            out[position].store = path;
        }
    }
    out.sort_by_key(|s| s.base);
    out
}

/// Flips a bit in a segment sealed on disk (any but the newest durable one) and records which
/// offsets it may damage.
fn flip_bit(cluster: &Cluster, node: usize, pick: u64, position: u64, bit: u8, index_file: bool) {
    let sim_node = &cluster.nodes[node];
    let segments = segments_durable(&sim_node.disk, &sim_node.log_dir());
    if segments.len() < 2 {
        cluster.shared.event(format!(
            "bit flip on node {node} skipped: no sealed segment"
        ));
        return;
    }
    let chosen = (pick % (segments.len() as u64 - 1)) as usize;
    let file = if index_file {
        &segments[chosen].index
    } else {
        &segments[chosen].store
    };
    let Some(path) = file else {
        cluster
            .shared
            .event(format!("bit flip on node {node} skipped: no such file"));
        return;
    };
    let len = sim_node.disk.file_len_durable(path).unwrap_or(0);
    if len == 0 {
        cluster.shared.event(format!(
            "bit flip on node {node} skipped: {} is empty",
            path.display()
        ));
        return;
    }
    let position = position % len;
    match sim_node.disk.flip_bit(path, position, bit) {
        Ok(()) => {
            let offsets = segments[chosen].base..segments[chosen + 1].base;
            cluster.shared.event(format!(
                "bit flip on node {node}: {} position {position} bit {bit} (offsets {offsets:?})",
                path.display()
            ));
            cluster.shared.history.lock().flips.push(Flip {
                node,
                offsets: Some(offsets),
            });
        }
        Err(error) => cluster
            .shared
            .event(format!("bit flip on node {node} failed: {error}")),
    }
}

async fn liveness_phase(cluster: &mut Cluster, params: &Params, bug: Option<Bug>, rng: &mut Rng) {
    cluster
        .shared
        .event("liveness phase starts: restarting every node");
    for node in 0..cluster.nodes.len() {
        cluster.power_off(node, rng.percent(50));
        cluster.power_on(node);
    }
    let deadline = Instant::now() + LIVENESS_BOUND;
    let (_stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for p in 0..params.producers {
        let producer = Producer::new(
            ctx(cluster, 0, stop_rx.clone()),
            LIVENESS_PRODUCER_BASE + p,
            rng.fork(),
        );
        tasks.push(cluster.client.spawn(liveness_produce(producer, deadline)));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Ok(Err(failure)) = task.await {
            failures.push(failure);
        }
    }
    if bug == Some(Bug::DropAck) {
        drop_last_record(cluster);
    }
    let check = cluster.client.spawn(check_readable(
        ctx(cluster, 0, stop_rx.clone()),
        params.followers,
        deadline,
    ));
    match check.await {
        Ok(found) => failures.extend(found),
        Err(error) => failures.push(format!("the liveness check task failed: {error}")),
    }
    for (node, error) in cluster.shared.open_errors.lock().iter() {
        failures.push(format!("node {node} does not open its log: {error}"));
    }
    let mut history = cluster.shared.history.lock();
    history.liveness_failures.extend(failures);
}

/// Gets `LIVENESS_VALUES_PER_PRODUCER` values acknowledged before `deadline`, retrying.
async fn liveness_produce(mut producer: Producer, deadline: Instant) -> Result<(), String> {
    let id = producer.id;
    let client = connect_by(&producer.ctx.addr, deadline).await?;
    let mut acked = 0;
    while acked < LIVENESS_VALUES_PER_PRODUCER {
        if Instant::now() >= deadline {
            return Err(format!("producer {id} got {acked} of {LIVENESS_VALUES_PER_PRODUCER} values acknowledged within {LIVENESS_BOUND:?} of the faults stopping"));
        }
        match producer.produce_one(&client, Phase::Liveness).await {
            Ok(_) => acked += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

async fn connect_by(addr: &str, deadline: Instant) -> Result<Client, String> {
    loop {
        match timeout(Duration::from_secs(1), Client::connect(addr)).await {
            Ok(Ok(client)) => return Ok(client),
            _ if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to {addr} within the liveness bound"
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The `--bug drop-ack` injection: power off node 0, cut the last byte off its newest non-empty
/// store file (durably), power it on. The last acknowledged record is then torn and dropped.
fn drop_last_record(cluster: &mut Cluster) {
    cluster.power_off(0, false);
    let node = &cluster.nodes[0];
    let cut = segments(&node.disk, &node.log_dir())
        .iter()
        .rev()
        .filter_map(|s| s.store.clone())
        .find_map(|path| {
            let file = node.disk.open(&path, false).ok()?;
            let len = file.len().ok().filter(|len| *len > 0)?;
            file.set_len(len - 1).and_then(|()| file.sync_data()).ok()?;
            Some((path, len))
        });
    match cut {
        Some((path, len)) => cluster.shared.event(format!(
            "BUG drop-ack: cut {} from {len} to {} bytes",
            path.display(),
            len - 1
        )),
        None => cluster
            .shared
            .event("BUG drop-ack: found no store file to cut"),
    }
    cluster.power_on(0);
}

/// The liveness checks after the liveness produces: a stream from 0 reaches the log's end, and a
/// scan reads every offset, both before `deadline`. Returns the bounds missed.
async fn check_readable(ctx: Ctx, followers: u32, deadline: Instant) -> Vec<String> {
    let mut failures = Vec::new();
    let client = match connect_by(&ctx.addr, deadline).await {
        Ok(client) => client,
        Err(failure) => return vec![failure],
    };
    let (lowest, end) = match log_bounds(&client, deadline).await {
        Ok(bounds) => bounds,
        Err(failure) => return vec![failure],
    };
    ctx.shared
        .event(format!("liveness: the log holds [{lowest}, {end})"));
    if let Err(failure) = workload::follow_to(&ctx, &client, followers, end, deadline).await {
        failures.push(failure);
    }
    let scan = final_scan(&ctx, &client, lowest, end, deadline).await;
    if let Some(stopped_at) = scan.1 {
        failures.push(format!(
            "the final scan read only up to offset {stopped_at} of {end} within {LIVENESS_BOUND:?}"
        ));
    }
    ctx.shared.history.lock().final_scan = Some(scan.0);
    failures
}

async fn log_bounds(client: &Client, deadline: Instant) -> Result<(u64, u64), String> {
    loop {
        match timeout(Duration::from_secs(2), client.info()).await {
            Ok(Ok(info)) => return Ok((info.lowest_offset, info.next_offset)),
            _ if Instant::now() >= deadline => {
                return Err("GetLogInfo did not answer within the liveness bound".into())
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads every offset in [lowest, end) with ConsumeBatch (falling back to Consume one by one
/// around DATA_LOSS). Returns the scan and, when the deadline passed first, where it stopped.
async fn final_scan(
    ctx: &Ctx,
    client: &Client,
    lowest: u64,
    end: u64,
    deadline: Instant,
) -> (FinalScan, Option<u64>) {
    let mut scan = FinalScan {
        node: ctx.node,
        lowest_offset: lowest,
        next_offset: end,
        ..FinalScan::default()
    };
    let mut offset = lowest;
    while offset < end {
        if Instant::now() >= deadline {
            return (scan, Some(offset));
        }
        match timeout(
            Duration::from_secs(2),
            client.consume_batch(offset, SCAN_BATCH_RECORDS),
        )
        .await
        {
            Ok(Ok(response)) if !response.records.is_empty() => {
                for record in response.records {
                    offset = record.offset + 1;
                    scan.timestamps_ms
                        .insert(record.offset, record.timestamp_ms);
                    scan.entries.insert(
                        record.offset,
                        ReadOutcome::Value(value::decode(&record.value)),
                    );
                }
            }
            Ok(Err(loghouse::client::ClientError::Status(status)))
                if status.code() == tonic::Code::DataLoss =>
            {
                match workload::read_one(ctx, client, offset).await {
                    outcome @ (ReadOutcome::DataLoss | ReadOutcome::Value(_)) => {
                        scan.entries.insert(offset, outcome);
                        offset += 1;
                    }
                    ReadOutcome::Error(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    ctx.shared
        .event(format!("final scan: {} entries", scan.entries.len()));
    (scan, None)
}
