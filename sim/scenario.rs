//! One simulated run: build the cluster, run the workload under the fault schedule (safety), heal
//! and restart everything and check that every acknowledged record becomes readable within a
//! bound (liveness) and, in a cluster, that every replica converges to the same log; then hand
//! the history to the checker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use loghouse::client::{Client, ClientError};
use loghouse::config::{ClusterConfig, NodeConfig};
use loghouse::io::{Disk, SimDisk};
use loghouse::proto;
use madsim::rand::RngCore;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::checker::{self, Violation};
use crate::cluster::{self, Cluster, Shared};
use crate::faults::{self, Direction, Fault, Intensity, Planned};
use crate::history::{FinalScan, Flip, Phase, ReadOutcome, ReplicaScan, Stored};
use crate::rng::Rng;
use crate::topics::TopicWorker;
use crate::value;
use crate::workload::{self, Ctx, Producer};

/// Every acknowledged record must be readable this long after the faults stop.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// A cluster must have formed (one leader, every node a member, `voters_target` voters) this
/// long after it starts, before any fault.
const FORMATION_BOUND: Duration = Duration::from_secs(30);
/// What the formation scenario adds to `FORMATION_BOUND`: foca's periodic announce period
/// (`Config::new_lan`: 30 s). A node that joined through a seed cut off from the leader's side
/// is known there only once its update reaches it; gossip stops spreading an update after a few
/// rounds, so that can take until the next periodic announce (seed 103 at N = 3 took 29 s).
const FORMATION_GOSSIP_SLACK: Duration = Duration::from_secs(30);
/// In a cluster, every replica must report the same committed offset, and be read whole, this
/// long after the liveness checks.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);
/// Values each liveness producer gets acknowledged.
const LIVENESS_VALUES_PER_PRODUCER: usize = 4;
/// Producer ids of the liveness phase start here (safety producers count from 0).
const LIVENESS_PRODUCER_BASE: u32 = 1000;
const RECORD_BYTES_MAX: u32 = 1024;
/// Bytes of one index entry (the storage engine's index format).
const INDEX_ENTRY_BYTES: u64 = loghouse::log::INDEX_ENTRY_BYTES;
/// Producer ids of the formation-under-load scenario's producers start here.
const FORMATION_PRODUCER_BASE: u32 = 500;
/// The scenario (and what only the new scenarios draw) comes from a stream of its own, so a
/// seed that runs the standard scenario draws exactly what it drew before scenarios existed.
const SCENARIO_STREAM: u64 = 0x5ce7_a210_d21f_7c0d;
/// The named-topic workload (standalone) draws from a stream of its own too, so the rest of a
/// seed draws what it drew before it existed.
const TOPICS_STREAM: u64 = 0x7091_c5ee_d5a1_17e3;
const SCAN_BATCH_RECORDS: u32 = 256;
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const POLL_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// After the liveness produces, cut the last byte off the newest segment's store file (as a
    /// storage bug that loses an acknowledged record would): the checker must catch it. In a
    /// cluster this is done on every node (losing it on a minority is what replication repairs).
    DropAck,
    /// `loghouse::planted_bugs::no_min_replicas`: acknowledge once Raft commits on a majority
    /// of the voters in force (a forming cluster's bootstrap node alone). The formation
    /// scenario must catch it.
    NoMinReplicas,
    /// `loghouse::planted_bugs::open_with_configured_limit`: the log's open judges frames by
    /// the configured `record_bytes_max`. The config-drift scenario must catch it.
    OpenWithConfiguredLimit,
    /// `loghouse::planted_bugs::unsynced_topic_delete`: DeleteTopic's catalog write is not
    /// fsync'd, so a power loss may bring a deleted topic back. The standalone topic workload
    /// must catch it (deleted-topic-reappeared).
    UnsyncedTopicDelete,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::DropAck,
        Bug::NoMinReplicas,
        Bug::OpenWithConfiguredLimit,
        Bug::UnsyncedTopicDelete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::DropAck => "drop-ack",
            Bug::NoMinReplicas => "no-min-replicas",
            Bug::OpenWithConfiguredLimit => "open-with-configured-limit",
            Bug::UnsyncedTopicDelete => "unsynced-topic-delete",
        }
    }
}

/// Which scenario a run plays, drawn from the seed (or forced with `--scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every node starts at once, knowing every other; the cluster forms before any load or
    /// fault; then the safety phase's faults.
    Standard,
    /// Formation under load (N > 1): nodes start one at a time, each joining a few of those
    /// already up; producers write from the start; the leader crashes or is cut off while the
    /// cluster forms, and the bootstrap node (alone a voter at first) takes disk faults.
    Formation,
    /// Config drift: nodes restart (after a power loss or a clean stop) with every limit of
    /// their configuration changed, lower or higher; a node crashes at its first boot.
    Drift,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Standard, Kind::Formation, Kind::Drift];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Standard => "standard",
            Kind::Formation => "formation",
            Kind::Drift => "drift",
        }
    }

    /// Standalone: 70% standard, 30% drift. Cluster: 50% standard, 30% formation, 20% drift.
    fn draw(rng: &mut Rng, nodes: usize) -> Kind {
        let roll = rng.below(10);
        match (nodes, roll) {
            (1, 0..=6) | (_, 0..=4) => Kind::Standard,
            (1, _) | (_, 8..=9) => Kind::Drift,
            _ => Kind::Formation,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub bug: Option<Bug>,
    /// Play this scenario whatever the seed draws (`--scenario`).
    pub scenario: Option<Kind>,
    /// Config drift changes cluster members' `record_bytes_max` too (on by default;
    /// `--no-drift-cluster-record-limit` keeps it). Members whose limits differ must work:
    /// replicated entries are bounded by the format's hard limit only (seeds 13, 92 and 124 at
    /// N = 3 failed while a follower checked them against its own limit).
    pub drift_cluster_record_limit: bool,
    pub print_trace: bool,
    /// Draw bit flips in a cluster too (on by default; `--no-bit-flips` turns them off, for
    /// seeds recorded before replicas repaired damage, see sim/README.md).
    pub cluster_bit_flips: bool,
    /// Run the named-topic workload on a standalone node (on by default; `--no-topics` runs
    /// the default topic only, as before topics existed).
    pub topics: bool,
}

/// What a run found.
pub struct Outcome {
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub sim_elapsed: Duration,
    pub summary: String,
}

/// Raft timing of a cluster run (heartbeat, election timeout min and max, ms).
const TIMINGS: [(u64, u64, u64); 2] = [(100, 500, 1_000), (50, 300, 600)];

/// The shape of a run, drawn from the seed.
#[derive(Debug, Clone)]
struct Params {
    nodes: usize,
    segment_bytes_max: u64,
    index_entries: u64,
    producers: u32,
    readers: u32,
    followers: u32,
    safety_ms: u64,
    intensity: Intensity,
    /// Cluster only: voters the controller aims for, and the Raft timing.
    voters_target: usize,
    timing: (u64, u64, u64),
}

impl Params {
    fn draw(rng: &mut Rng, nodes: usize, cluster_bit_flips: bool) -> Params {
        let mut params = Params {
            nodes,
            segment_bytes_max: [1_100, 2_048, 4_096][rng.below(3) as usize],
            index_entries: [4, 16, 64][rng.below(3) as usize],
            producers: rng.between(1, 4) as u32,
            readers: rng.between(1, 2) as u32,
            followers: rng.between(1, 2) as u32,
            safety_ms: rng.between(15_000, 45_000),
            intensity: Intensity {
                mean_gap_ms: rng.between(200, 1_000),
                bit_flips: rng.percent(50),
                disk_nodes: vec![0],
            },
            voters_target: 1,
            timing: TIMINGS[0],
        };
        if nodes > 1 {
            // Bit flips unless turned off (see `Options::cluster_bit_flips`).
            params.intensity.bit_flips &= cluster_bit_flips;
            // Faults further apart than on one node: a fault costs a cluster an election, a
            // gossip round or a catch-up, and the workload needs time between them.
            params.intensity.mean_gap_ms = rng.between(300, 1_500);
            // A minority takes the disk faults; five nodes sometimes keep two as learners.
            let mut order: Vec<usize> = (0..nodes).collect();
            for i in 0..nodes {
                let j = i + rng.below((nodes - i) as u64) as usize;
                order.swap(i, j);
            }
            let mut disk_nodes = order[..(nodes - 1) / 2].to_vec();
            disk_nodes.sort_unstable();
            params.intensity.disk_nodes = disk_nodes;
            params.voters_target = if nodes >= 5 && rng.percent(30) {
                3
            } else {
                nodes.min(7)
            };
            // A minority of the voters too: with three voters among five nodes, disk faults on
            // two could damage a majority of the voters (Raft then cannot keep every record).
            let faulty_max = (params.voters_target - 1) / 2;
            params.intensity.disk_nodes.truncate(faulty_max);
            params.timing = TIMINGS[rng.below(TIMINGS.len() as u64) as usize];
        }
        params
    }

    fn node_config(&self, index: usize) -> NodeConfig {
        let mut config = NodeConfig {
            node_id: format!("node-{index}"),
            data_dir: PathBuf::from("/data"),
            sync: "always".into(),
            segment_bytes_max: self.segment_bytes_max,
            index_bytes_max: self.index_entries * INDEX_ENTRY_BYTES,
            record_bytes_max: RECORD_BYTES_MAX,
            ..NodeConfig::default()
        };
        config.secrets.acl = Some(crate::security::acl());
        if self.nodes > 1 {
            let (heartbeat_ms, election_timeout_min_ms, election_timeout_max_ms) = self.timing;
            config.node_id = (index + 1).to_string();
            config.listen = cluster::rpc_addr(index);
            config.cluster = Some(ClusterConfig {
                gossip_listen: cluster::gossip_addr(index),
                join: (0..self.nodes)
                    .filter(|i| *i != index)
                    .map(cluster::gossip_addr)
                    .collect::<Vec<SocketAddr>>(),
                bootstrap: index == 0,
                voters_target: self.voters_target,
                // Gossip sees a crashed node down after ~5-9 s (4 s suspicion): a voter down
                // ~10 s or more may be demoted (see `controller`), a learner down ~25 s or more
                // removed.
                down_grace_ms: 5_000,
                remove_after_ms: 20_000,
                heartbeat_ms,
                election_timeout_min_ms,
                election_timeout_max_ms,
                ..ClusterConfig::default()
            });
        }
        config
    }
}

pub async fn run(options: Options) -> Outcome {
    let started = Instant::now();
    let base = madsim::rand::thread_rng().next_u64();
    let mut rng = Rng::new(base);
    let mut srng = Rng::new(base ^ SCENARIO_STREAM);
    let nodes = options.nodes;
    let drawn = Kind::draw(&mut srng, nodes);
    let kind = match options.scenario.unwrap_or(drawn) {
        Kind::Formation if nodes == 1 => Kind::Standard,
        kind => kind,
    };
    loghouse::planted_bugs::set_no_min_replicas(options.bug == Some(Bug::NoMinReplicas));
    loghouse::planted_bugs::set_open_with_configured_limit(
        options.bug == Some(Bug::OpenWithConfiguredLimit),
    );
    loghouse::planted_bugs::set_unsynced_topic_delete(
        options.bug == Some(Bug::UnsyncedTopicDelete),
    );
    println!("scenario: {}", kind.name());
    let mut params = Params::draw(&mut rng, nodes, options.cluster_bit_flips);
    if kind == Kind::Formation {
        // The bootstrap node is alone a voter while the others join: it takes the disk faults
        // (one node: a minority of the voters).
        params.intensity.disk_nodes = vec![0];
    }
    println!(
        "params: segment_bytes_max={} index_entries={} producers={} readers={} followers={} safety_ms={} mean_fault_gap_ms={} bit_flips={} disk_fault_nodes={:?}",
        params.segment_bytes_max, params.index_entries, params.producers, params.readers,
        params.followers, params.safety_ms, params.intensity.mean_gap_ms, params.intensity.bit_flips,
        params.intensity.disk_nodes,
    );
    if nodes > 1 {
        println!(
            "cluster: nodes={nodes} voters_target={} heartbeat_ms={} election_timeout_ms={}..{}",
            params.voters_target, params.timing.0, params.timing.1, params.timing.2
        );
    }
    let shared = Shared::new(options.print_trace);
    {
        let mut history = shared.history.lock();
        history.nodes = nodes;
        history.at_least_once = nodes > 1;
    }
    let mut configs: Vec<NodeConfig> = (0..nodes).map(|i| params.node_config(i)).collect();
    let disk_seeds = (0..nodes).map(|_| rng.next_u64()).collect();
    let handle = madsim::runtime::Handle::current();
    // What the scenario does before the safety phase (node starts, faults while forming).
    let mut early: Vec<(u64, usize, Action)> = Vec::new();
    let mut deferred = Vec::new();
    let mut drift = None;
    match kind {
        Kind::Standard => {}
        Kind::Formation => {
            let plan = FormationPlan::draw(&mut srng, &params);
            println!("formation: {}", plan.describe());
            for (node, join) in plan.joins.iter().enumerate() {
                if let Some(cluster_config) = &mut configs[node].cluster {
                    cluster_config.join = join.iter().copied().map(cluster::gossip_addr).collect();
                }
            }
            deferred = plan
                .starts
                .iter()
                .filter(|(_, at)| *at > 0)
                .map(|(n, _)| *n)
                .collect();
            early = plan.events;
        }
        Kind::Drift => {
            let record = nodes == 1 || options.drift_cluster_record_limit;
            let mut plan = DriftPlan::draw(&mut srng, &params, &configs, record);
            println!("drift: {}", plan.describe());
            early = timeline(std::mem::take(&mut plan.early), nodes);
            drift = Some(plan);
        }
    }
    let mut cluster = Cluster::build(&handle, configs, disk_seeds, &deferred, shared.clone());

    let mut schedule = faults::plan(&mut rng, params.safety_ms, nodes, &params.intensity);
    if let Some(plan) = drift {
        cluster.records = workload::RecordLimits::new(RECORD_BYTES_MAX, plan.largest_record());
        schedule.extend(plan.faults);
        schedule.sort_by_key(|p| p.at_ms);
        cluster.drift_configs = plan.configs;
    }
    println!("faults: {}", count_kinds(&schedule));
    if nodes > 1 {
        formation(&mut cluster, &params, early, kind, &mut rng).await;
    } else {
        run_timeline(&mut cluster, early).await;
    }
    let topics_rng = (nodes == 1 && options.topics).then(|| Rng::new(base ^ TOPICS_STREAM));
    let topics = safety_phase(&mut cluster, &params, schedule, &mut rng, topics_rng).await;
    liveness_phase(&mut cluster, &params, options.bug, &mut rng, topics).await;

    let history = shared.history.lock().clone();
    let mut violations = checker::check(&history);
    let acked = history.acked().count();
    let leaders: std::collections::BTreeSet<u64> = (history.raft_samples.iter())
        .filter(|s| s.leader)
        .map(|s| s.term)
        .collect();
    violations.extend(crate::security::check(
        acked,
        nodes > 1 && !leaders.is_empty(),
    ));
    // Values stored more than once (at-least-once retries in a cluster).
    let mut copies = std::collections::BTreeMap::<value::ValueId, u32>::new();
    for outcome in (history.final_scan.iter()).flat_map(|s| s.entries.values()) {
        if let ReadOutcome::Value(Ok(id)) = outcome {
            *copies.entry(*id).or_default() += 1;
        }
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let summary = format!(
        "produced={} acked={} reads={} streams={} flips={} log_end={} duplicated={duplicated} led_terms={} replicas={} topic_events={}",
        history.produces.len(),
        acked,
        history.reads.len(),
        history.sessions.len(),
        history.flips.len(),
        history.final_scan.as_ref().map_or(0, |s| s.next_offset),
        leaders.len(),
        history.replicas.len(),
        history.topics.len(),
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

/// Applies `events` (time from now, resolution key, action) at their times.
async fn run_timeline(cluster: &mut Cluster, events: Vec<(u64, usize, Action)>) {
    let started = Instant::now();
    let mut resolved = BTreeMap::new();
    for (at_ms, fault, action) in events {
        tokio::time::sleep_until(started + Duration::from_millis(at_ms)).await;
        apply(cluster, fault, action, &mut resolved);
    }
}

/// Waits until the cluster has formed: a leader whose membership holds every node, with
/// `voters_target` voters (node 0 bootstraps alone; the leader's controller adds the others as
/// learners as gossip finds them, then promotes them). Not forming in time (`FORMATION_BOUND`
/// after the last of `events`) is a liveness failure. Meanwhile `events` apply at their times
/// (the formation scenario's node starts and faults; nothing in the standard scenario); in the
/// formation scenario, producers write from the start.
async fn formation(
    cluster: &mut Cluster,
    params: &Params,
    events: Vec<(u64, usize, Action)>,
    kind: Kind,
    rng: &mut Rng,
) {
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut producers = Vec::new();
    if kind == Kind::Formation {
        for p in 0..params.producers {
            let id = FORMATION_PRODUCER_BASE + p;
            let producer = Producer::new(ctx(cluster, stop_rx.clone()), id, rng.fork());
            producers.push(cluster.client.spawn(producer.run()));
        }
    }
    let last_event_ms = events.last().map_or(0, |(at, _, _)| *at);
    let bound_from = started + Duration::from_millis(last_event_ms);
    let bound = match kind {
        Kind::Formation => FORMATION_BOUND + FORMATION_GOSSIP_SLACK,
        _ => FORMATION_BOUND,
    };
    let mut events = events.into_iter().peekable();
    let mut resolved = BTreeMap::new();
    loop {
        while let Some((at_ms, _, _)) = events.peek() {
            if started + Duration::from_millis(*at_ms) > Instant::now() {
                break;
            }
            let (_, fault, action) = events.next().expect("peeked");
            apply(cluster, fault, action, &mut resolved);
        }
        if events.peek().is_some() {
            let (at_ms, _, _) = events.peek().expect("peeked");
            let next = started + Duration::from_millis(*at_ms);
            tokio::time::sleep_until(next.min(Instant::now() + POLL_DELAY)).await;
            continue;
        }
        let formed = cluster.leader().and_then(|leader| {
            let metrics = cluster.shared.metrics.lock().get(&leader)?.borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters = membership.voter_ids().count();
            let members = membership.nodes().count();
            (voters == params.voters_target && members == params.nodes).then_some(leader)
        });
        if let Some(leader) = formed {
            cluster.shared.event(format!(
                "cluster formed: node {leader} leads {} voters of {} members",
                params.voters_target, params.nodes
            ));
            break;
        }
        if bound_from.elapsed() >= bound {
            let failure = format!(
                "the cluster did not form ({} voters of {} members) within {bound:?}",
                params.voters_target, params.nodes
            );
            cluster.shared.event(&failure);
            cluster
                .shared
                .history
                .lock()
                .liveness_failures
                .push(failure);
            break;
        }
        tokio::time::sleep(POLL_DELAY).await;
    }
    let _ = stop_tx.send(true);
    for task in producers {
        let _ = task.await;
    }
}

fn ctx(cluster: &Cluster, stop: watch::Receiver<bool>) -> Ctx {
    Ctx {
        shared: cluster.shared.clone(),
        addrs: cluster.addrs(),
        cluster: cluster.nodes.len() > 1,
        stop,
        records: cluster.records.clone(),
    }
}

async fn safety_phase(
    cluster: &mut Cluster,
    params: &Params,
    schedule: Vec<Planned>,
    rng: &mut Rng,
    topics_rng: Option<Rng>,
) -> Option<TopicWorker> {
    cluster.shared.event("safety phase starts");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let topics = topics_rng.map(|topics_rng| {
        let worker = TopicWorker::new(ctx(cluster, stop_rx.clone()), topics_rng);
        cluster.client.spawn(worker.run())
    });
    for p in 0..params.producers {
        let producer = Producer::new(ctx(cluster, stop_rx.clone()), p, rng.fork());
        tasks.push(cluster.client.spawn(producer.run()));
    }
    for _ in 0..params.readers {
        tasks.push(
            cluster
                .client
                .spawn(workload::reader(ctx(cluster, stop_rx.clone()), rng.fork())),
        );
    }
    for f in 0..params.followers {
        tasks.push(cluster.client.spawn(workload::follower(
            ctx(cluster, stop_rx.clone()),
            f,
            0,
            rng.fork(),
        )));
    }
    let started = Instant::now();
    let mut resolved = BTreeMap::new();
    for (at_ms, fault, action) in timeline(schedule, cluster.nodes.len()) {
        tokio::time::sleep_until(started + Duration::from_millis(at_ms)).await;
        apply(cluster, fault, action, &mut resolved);
    }
    tokio::time::sleep_until(started + Duration::from_millis(params.safety_ms)).await;
    cluster.shared.event("safety phase ends: healing");
    heal(cluster);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    match topics {
        Some(task) => task.await.ok(),
        None => None,
    }
}

/// One step of the fault timeline.
#[derive(Debug, Clone)]
enum Action {
    Start(Fault),
    /// The end of a fault's window.
    End(Fault),
    /// The first start of a node created down (formation scenario).
    Boot(usize),
}

/// What a fault that picks its target when it starts picked (to undo exactly that at its end).
enum Resolved {
    Node(usize),
    Links(Vec<(usize, usize)>),
}

/// Turns the schedule into a list of (time, which planned fault, action), sorted by time (ties
/// keep plan order). A rolling restart becomes one crash per node.
fn timeline(schedule: Vec<Planned>, nodes: usize) -> Vec<(u64, usize, Action)> {
    let mut out = Vec::new();
    for (index, planned) in schedule.into_iter().enumerate() {
        let window_ms = match planned.fault {
            Fault::Crash { down_ms, .. }
            | Fault::LeaderCrash { down_ms, .. }
            | Fault::Reconfigure { down_ms, .. } => Some(down_ms),
            Fault::Pause { ms, .. }
            | Fault::PacketLoss { ms, .. }
            | Fault::LatencySpike { ms, .. }
            | Fault::Clog { ms, .. }
            | Fault::ClogLink { ms, .. }
            | Fault::Partition { ms, .. }
            | Fault::LeaderIsolation { ms }
            | Fault::OneWay { ms, .. }
            | Fault::IoErrors { ms, .. } => Some(ms),
            Fault::ClockSkew { .. } | Fault::BitFlip { .. } => None,
            Fault::RollingRestart { down_ms, gap_ms } => {
                let mut at_ms = planned.at_ms;
                for node in 0..nodes {
                    let crash = Fault::Crash {
                        node,
                        torn: false,
                        down_ms,
                    };
                    out.push((at_ms, index, Action::Start(crash.clone())));
                    out.push((at_ms + down_ms, index, Action::End(crash)));
                    at_ms += down_ms + gap_ms;
                }
                continue;
            }
        };
        if let Some(ms) = window_ms {
            out.push((
                planned.at_ms + ms,
                index,
                Action::End(planned.fault.clone()),
            ));
        }
        out.push((planned.at_ms, index, Action::Start(planned.fault)));
    }
    out.sort_by_key(|(at, _, _)| *at);
    out
}

fn apply(
    cluster: &mut Cluster,
    index: usize,
    action: Action,
    resolved: &mut BTreeMap<usize, Resolved>,
) {
    cluster.shared.event(format!("fault {action:?}"));
    let net = cluster.net();
    let client = cluster.client.id();
    match action {
        Action::Boot(node) => cluster.power_on(node),
        Action::Start(Fault::Reconfigure {
            node,
            clean,
            torn,
            config,
            ..
        }) => reconfigure(cluster, node, clean, torn, config),
        Action::End(Fault::Reconfigure { node, .. }) => cluster.power_on(node),
        Action::Start(Fault::Crash { node, torn, .. }) => {
            cluster.power_off(node, torn);
        }
        Action::End(Fault::Crash { node, .. }) => cluster.power_on(node),
        Action::Start(Fault::LeaderCrash { torn, .. }) => match cluster.leader() {
            Some(leader) => {
                cluster.shared.event(format!("the leader is node {leader}"));
                cluster.power_off(leader, torn);
                resolved.insert(index, Resolved::Node(leader));
            }
            None => cluster.shared.event("no node leads: nothing to crash"),
        },
        Action::End(Fault::LeaderCrash { .. }) => {
            if let Some(Resolved::Node(node)) = resolved.remove(&index) {
                cluster.power_on(node);
            }
        }
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
        Action::Start(Fault::Partition { side, .. }) => {
            let links = cluster.partition(&side);
            resolved.insert(index, Resolved::Links(links));
        }
        Action::Start(Fault::LeaderIsolation { .. }) => match cluster.leader() {
            Some(leader) => {
                cluster.shared.event(format!("the leader is node {leader}"));
                let links = cluster.partition(&[leader]);
                resolved.insert(index, Resolved::Links(links));
            }
            None => cluster.shared.event("no node leads: nothing to isolate"),
        },
        Action::End(Fault::Partition { .. }) | Action::End(Fault::LeaderIsolation { .. }) => {
            if let Some(Resolved::Links(links)) = resolved.remove(&index) {
                for (from, to) in links {
                    cluster.unclog_link(from, to);
                }
            }
        }
        Action::Start(Fault::OneWay { from, to, .. }) => cluster.clog_link(from, to),
        Action::End(Fault::OneWay { from, to, .. }) => cluster.unclog_link(from, to),
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
        Action::End(Fault::ClockSkew { .. })
        | Action::End(Fault::BitFlip { .. })
        | Action::Start(Fault::RollingRestart { .. })
        | Action::End(Fault::RollingRestart { .. }) => {}
    }
}

/// Stops `node` (a clean stop: a process kill that keeps every written byte; or a power loss)
/// and gives it drawn configuration number `config` for its next start. The workload's record
/// size follows the smallest `record_bytes_max` now configured anywhere.
fn reconfigure(cluster: &mut Cluster, node: usize, clean: bool, torn: bool, config: usize) {
    let new = cluster.drift_configs[config].clone();
    let old = cluster.nodes[node].config.lock().clone();
    cluster.shared.event(format!(
        "node {node} reconfigured: {}",
        describe_drift(&old, &new)
    ));
    if new.retention_bytes_max.is_some() || new.retention_ms_max.is_some() {
        cluster.shared.history.lock().retention_nodes.insert(node);
    }
    *cluster.nodes[node].config.lock() = new;
    let smallest = (cluster.nodes.iter())
        .map(|n| n.config.lock().record_bytes_max)
        .min()
        .unwrap_or(RECORD_BYTES_MAX);
    cluster.records.set_current(smallest);
    if clean {
        cluster.process_kill(node);
    } else {
        cluster.power_off(node, torn);
    }
    // A node that was already down starts with the new configuration at the window's end.
}

/// The settings that differ between two configurations, as `name: old -> new`.
fn describe_drift(old: &NodeConfig, new: &NodeConfig) -> String {
    // Every limit as (name, value), from the configs' Debug forms ("Limits { a: 1, b: 2 }").
    let fields = |c: &NodeConfig| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("record_bytes_max".into(), c.record_bytes_max.to_string());
        out.insert("segment_bytes_max".into(), c.segment_bytes_max.to_string());
        out.insert("index_bytes_max".into(), c.index_bytes_max.to_string());
        out.insert(
            "retention_bytes_max".into(),
            format!("{:?}", c.retention_bytes_max),
        );
        out.insert(
            "retention_ms_max".into(),
            format!("{:?}", c.retention_ms_max),
        );
        out.insert(
            "retention_check_ms".into(),
            c.retention_check_ms.to_string(),
        );
        let mut debug = vec![format!("{:?}", c.limits)];
        debug.extend(c.cluster.as_ref().map(|cl| format!("{cl:?}")));
        for text in debug {
            let inner = text.split_once(" { ").map_or("", |(_, rest)| rest);
            for pair in inner.trim_end_matches(" }").split(", ") {
                if let Some((name, value)) = pair.split_once(": ") {
                    out.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        out
    };
    let (before, after) = (fields(old), fields(new));
    let changed: Vec<String> = (after.iter())
        .filter(|(name, value)| before.get(*name) != Some(value))
        .map(|(name, value)| {
            let was = before.get(name).map_or("?", String::as_str);
            format!("{name}: {was} -> {value}")
        })
        .collect();
    changed.join("; ")
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

async fn liveness_phase(
    cluster: &mut Cluster,
    params: &Params,
    bug: Option<Bug>,
    rng: &mut Rng,
    topics: Option<TopicWorker>,
) {
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
            ctx(cluster, stop_rx.clone()),
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
        // A standalone node's own loss; in a cluster, every replica's (a minority's loss is
        // repaired by replication, as it should be).
        let nodes: Vec<usize> = (0..cluster.nodes.len()).collect();
        drop_last_record(cluster, &nodes);
    }
    let scan_node = rng.below(cluster.nodes.len() as u64) as usize;
    let check = cluster.client.spawn(check_readable(
        ctx(cluster, stop_rx.clone()),
        scan_node,
        params.followers,
        deadline,
    ));
    match check.await {
        Ok(found) => failures.extend(found),
        Err(error) => failures.push(format!("the liveness check task failed: {error}")),
    }
    if let Some(worker) = topics {
        let finish = cluster
            .client
            .spawn(worker.finish(Instant::now() + LIVENESS_BOUND));
        match finish.await {
            Ok(found) => failures.extend(found),
            Err(error) => failures.push(format!("the topics' final check task failed: {error}")),
        }
    }
    if cluster.nodes.len() > 1 {
        let converge = cluster.client.spawn(converge(
            ctx(cluster, stop_rx.clone()),
            Instant::now() + CONVERGENCE_BOUND,
        ));
        match converge.await {
            Ok(found) => failures.extend(found),
            Err(error) => failures.push(format!("the convergence task failed: {error}")),
        }
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
    let mut acked = 0;
    while acked < LIVENESS_VALUES_PER_PRODUCER {
        if Instant::now() >= deadline {
            return Err(format!("producer {id} got {acked} of {LIVENESS_VALUES_PER_PRODUCER} values acknowledged within {LIVENESS_BOUND:?} of the faults stopping"));
        }
        match producer.produce_one(Phase::Liveness).await {
            Ok(_) => acked += 1,
            Err(_) => tokio::time::sleep(POLL_DELAY).await,
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
            _ => tokio::time::sleep(POLL_DELAY).await,
        }
    }
}

/// The `--bug drop-ack` injection: power off `nodes`, cut the last byte off each one's newest
/// non-empty store file (durably), power them on. The last acknowledged record is then torn and
/// dropped.
fn drop_last_record(cluster: &mut Cluster, nodes: &[usize]) {
    for node in nodes {
        cluster.power_off(*node, false);
    }
    for node in nodes {
        let sim_node = &cluster.nodes[*node];
        let cut = segments(&sim_node.disk, &sim_node.log_dir())
            .iter()
            .rev()
            .filter_map(|s| s.store.clone())
            .find_map(|path| {
                let file = sim_node.disk.open(&path, false).ok()?;
                let len = file.len().ok().filter(|len| *len > 0)?;
                file.set_len(len - 1).and_then(|()| file.sync_data()).ok()?;
                Some((path, len))
            });
        match cut {
            Some((path, len)) => cluster.shared.event(format!(
                "BUG drop-ack: node {node}: cut {} from {len} to {} bytes",
                path.display(),
                len - 1
            )),
            None => cluster.shared.event(format!(
                "BUG drop-ack: node {node}: found no store file to cut"
            )),
        }
    }
    for node in nodes {
        cluster.power_on(*node);
    }
}

/// The liveness checks after the liveness produces, on `node`: its committed offset reaches the
/// last acknowledged one, a stream from 0 reaches the log's end, and a scan reads every offset,
/// all before `deadline`. Returns the bounds missed.
async fn check_readable(ctx: Ctx, node: usize, followers: u32, deadline: Instant) -> Vec<String> {
    let mut failures = Vec::new();
    let client = match connect_by(&ctx.addrs[node], deadline).await {
        Ok(client) => client,
        Err(failure) => return vec![failure],
    };
    let acked_end = ctx.shared.history.lock().acked_end();
    let (lowest, end) = match log_bounds(&client, acked_end, deadline).await {
        Ok(bounds) => bounds,
        // Still scan what it has, so the checker can name what is missing.
        Err((failure, Some(bounds))) => {
            failures.push(format!("node {node}: {failure}"));
            bounds
        }
        Err((failure, None)) => return vec![format!("node {node}: {failure}")],
    };
    // The scan gets a bound of its own when the committed offset took the whole one.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(5));
    ctx.shared
        .event(format!("liveness: node {node} holds [{lowest}, {end})"));
    let bounds = (lowest, end);
    if let Err(failure) =
        workload::follow_to(&ctx, &client, node, followers, bounds, deadline).await
    {
        failures.push(failure);
    }
    let (entries, stopped_at, lowest) = scan(&ctx, &client, node, lowest, end, deadline).await;
    if let Some(stopped_at) = stopped_at {
        failures.push(format!(
            "the final scan of node {node} read only up to offset {stopped_at} of {end} within {LIVENESS_BOUND:?}"
        ));
    }
    let mut final_scan = FinalScan {
        node,
        lowest_offset: lowest,
        next_offset: end,
        ..FinalScan::default()
    };
    for (offset, item) in entries {
        let outcome = match item {
            Scanned::Record(record) => {
                final_scan.timestamps_ms.insert(offset, record.timestamp_ms);
                ReadOutcome::Value(value::decode(&record.value))
            }
            Scanned::DataLoss => ReadOutcome::DataLoss,
        };
        final_scan.entries.insert(offset, outcome);
    }
    ctx.shared.history.lock().final_scan = Some(final_scan);
    failures
}

/// The node's log bounds (its committed offset as the end), once the end reaches `at_least`
/// (a follower learns the commit point a heartbeat after the leader).
/// The bounds it had, when the end never reached `at_least`.
type BoundsMissed = (String, Option<(u64, u64)>);

async fn log_bounds(
    client: &Client,
    at_least: u64,
    deadline: Instant,
) -> Result<(u64, u64), BoundsMissed> {
    let mut last = None;
    loop {
        match timeout(CALL_TIMEOUT, client.info()).await {
            Ok(Ok(info)) if info.next_offset >= at_least => {
                return Ok((info.lowest_offset, info.next_offset))
            }
            Ok(Ok(info)) => last = Some((info.lowest_offset, info.next_offset)),
            _ => {}
        }
        if Instant::now() >= deadline {
            let failure = match last {
                Some((_, end)) => format!("its committed offset stayed at {end}, below the last acknowledged {at_least}, within the liveness bound"),
                None => "GetLogInfo did not answer within the liveness bound".into(),
            };
            return Err((failure, last));
        }
        tokio::time::sleep(POLL_DELAY).await;
    }
}

/// What a scan read at one offset.
enum Scanned {
    Record(proto::Record),
    DataLoss,
}

fn is_data_loss(error: &ClientError) -> bool {
    matches!(error, ClientError::Status(status) if status.code() == tonic::Code::DataLoss)
}

/// Reads every offset in [lowest, end) of `node` with ConsumeBatch (falling back to Consume one
/// by one around DATA_LOSS). Returns what it read, when the deadline passed first where it
/// stopped, and the node's lowest offset (retention may have raised it during the scan: the
/// scan then goes on from there).
async fn scan(
    ctx: &Ctx,
    client: &Client,
    node: usize,
    mut lowest: u64,
    end: u64,
    deadline: Instant,
) -> (BTreeMap<u64, Scanned>, Option<u64>, u64) {
    let mut entries = BTreeMap::new();
    let mut offset = lowest;
    while offset < end {
        if Instant::now() >= deadline {
            return (entries, Some(offset), lowest);
        }
        match timeout(
            CALL_TIMEOUT,
            client.consume_batch(offset, SCAN_BATCH_RECORDS),
        )
        .await
        {
            Ok(Ok(response)) if !response.records.is_empty() => {
                let from = offset;
                for record in response.records {
                    if record.offset >= end {
                        break;
                    }
                    offset = record.offset + 1;
                    entries.insert(record.offset, Scanned::Record(record));
                }
                if offset <= from {
                    // Nothing new (a misbehaving server): let simulated time pass.
                    tokio::time::sleep(POLL_DELAY).await;
                }
            }
            Ok(Err(error)) if is_data_loss(&error) => {
                match timeout(CALL_TIMEOUT, client.consume(offset)).await {
                    Ok(Ok(record)) if record.offset == offset => {
                        entries.insert(offset, Scanned::Record(record));
                        offset += 1;
                    }
                    Ok(Err(error)) if is_data_loss(&error) => {
                        ctx.shared
                            .event(format!("scan of node {node}: DATA_LOSS at {offset}"));
                        entries.insert(offset, Scanned::DataLoss);
                        offset += 1;
                    }
                    _ => tokio::time::sleep(POLL_DELAY).await,
                }
            }
            Ok(Err(ClientError::Status(status))) if status.code() == tonic::Code::OutOfRange => {
                // Below the lowest offset (retention dropped a segment since): go on from it.
                match timeout(CALL_TIMEOUT, client.info()).await {
                    Ok(Ok(info)) if info.lowest_offset > offset => {
                        ctx.shared.event(format!(
                            "scan of node {node}: its lowest offset is now {}",
                            info.lowest_offset
                        ));
                        lowest = info.lowest_offset;
                        offset = lowest;
                    }
                    _ => tokio::time::sleep(POLL_DELAY).await,
                }
            }
            _ => tokio::time::sleep(POLL_DELAY).await,
        }
    }
    ctx.shared.event(format!(
        "scan of node {node}: {} entries in [{lowest}, {end})",
        entries.len()
    ));
    (entries, None, lowest)
}

/// In a cluster, after the liveness checks: waits until every node reports the same committed
/// offset (at least the last acknowledged one), then reads every node's whole log into the
/// history's replica scans. Returns the bounds missed.
async fn converge(ctx: Ctx, deadline: Instant) -> Vec<String> {
    let nodes = ctx.nodes();
    let mut clients = workload::Clients::default();
    let acked_end = ctx.shared.history.lock().acked_end();
    let mut failures = Vec::new();
    let mut reported: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    loop {
        for node in 0..nodes {
            if let Some(client) = clients.get(&ctx, node).await {
                if let Ok(Ok(info)) = timeout(CALL_TIMEOUT, client.info()).await {
                    reported.insert(node, (info.lowest_offset, info.next_offset));
                }
            }
        }
        let ends: std::collections::BTreeSet<u64> = reported.values().map(|(_, e)| *e).collect();
        let agreed = reported.len() == nodes && ends.len() == 1;
        if agreed && ends.first().is_some_and(|end| *end >= acked_end) {
            break;
        }
        if Instant::now() >= deadline {
            let each: Vec<String> = (reported.iter())
                .map(|(node, (_, end))| format!("node {node}: {end}"))
                .collect();
            failures.push(format!(
                "the replicas did not converge within {CONVERGENCE_BOUND:?}: committed offsets {} (of {nodes} nodes; last acknowledged {acked_end})",
                each.join(", ")
            ));
            break;
        }
        tokio::time::sleep(POLL_DELAY).await;
    }
    ctx.shared.event(format!("converged: {reported:?}"));
    let scan_deadline = Instant::now() + CONVERGENCE_BOUND;
    for (node, (lowest, committed)) in reported {
        let Some(client) = clients.get(&ctx, node).await else {
            continue;
        };
        let (entries, stopped_at, lowest) =
            scan(&ctx, &client, node, lowest, committed, scan_deadline).await;
        if let Some(stopped_at) = stopped_at {
            failures.push(format!(
                "the replica scan of node {node} read only up to offset {stopped_at} of {committed}"
            ));
        }
        let entries = (entries.into_iter())
            .map(|(offset, item)| {
                let stored = match item {
                    Scanned::Record(record) => Stored::Record {
                        id: value::decode(&record.value),
                        digest: value::fnv1a(&record.value),
                        term: record.term,
                        timestamp_ms: record.timestamp_ms,
                    },
                    Scanned::DataLoss => Stored::DataLoss,
                };
                (offset, stored)
            })
            .collect();
        ctx.shared.history.lock().replicas.push(ReplicaScan {
            node,
            lowest_offset: lowest,
            committed,
            entries,
        });
    }
    failures
}

/// The formation-under-load scenario's plan (N > 1): node 0 starts (and bootstraps) alone,
/// the others one at a time after seeded delays, each joining through the gossip addresses of a
/// seeded non-empty subset of the nodes started before it. Faults while the cluster forms: a
/// node crashed right after its first start (its data directory just created), the leader
/// crashed (restarted later) or cut off, and bit flips on node 0 (alone a voter at first).
struct FormationPlan {
    /// (node, first start in ms), in start order.
    starts: Vec<(usize, u64)>,
    /// For each node, the nodes it joins through.
    joins: Vec<Vec<usize>>,
    events: Vec<(u64, usize, Action)>,
}

impl FormationPlan {
    fn draw(rng: &mut Rng, params: &Params) -> FormationPlan {
        let nodes = params.nodes;
        let mut order: Vec<usize> = (1..nodes).collect();
        for i in 0..order.len() {
            let j = i + rng.below((order.len() - i) as u64) as usize;
            order.swap(i, j);
        }
        let mut starts = vec![(0, 0)];
        let mut joins = vec![Vec::new(); nodes];
        let mut at = 0;
        for (k, node) in order.into_iter().enumerate() {
            // Node 0 alone first for a while: it takes writes (or, correctly, holds them).
            at += if k == 0 {
                rng.between(1_000, 6_000)
            } else {
                rng.between(0, 4_000)
            };
            let mut before: Vec<usize> = starts.iter().map(|(n, _)| *n).collect();
            let size = rng.between(1, before.len() as u64) as usize;
            for i in 0..size {
                let j = i + rng.below((before.len() - i) as u64) as usize;
                before.swap(i, j);
            }
            before.truncate(size);
            before.sort_unstable();
            joins[node] = before;
            starts.push((node, at));
        }
        let last_start = at;
        let first_join = starts.get(1).map_or(0, |(_, at)| *at);
        let mut faults = Vec::new();
        for (node, start) in &starts {
            if rng.percent(40) {
                faults.push(Planned {
                    at_ms: start + rng.between(0, 40),
                    fault: Fault::Crash {
                        node: *node,
                        torn: rng.percent(50),
                        down_ms: rng.between(1, 1_000),
                    },
                });
            }
        }
        for _ in 0..rng.between(1, 3) {
            let at_ms = rng.between(200, last_start + 3_000);
            let fault = if rng.percent(60) {
                Fault::LeaderCrash {
                    torn: rng.percent(50),
                    down_ms: rng.between(300, 8_000),
                }
            } else {
                Fault::LeaderIsolation {
                    ms: rng.between(500, 6_000),
                }
            };
            faults.push(Planned { at_ms, fault });
        }
        if params.intensity.bit_flips {
            for _ in 0..rng.between(2, 6) {
                faults.push(Planned {
                    at_ms: rng.between(300, first_join + 1_500),
                    fault: Fault::BitFlip {
                        node: 0,
                        pick: rng.next_u64(),
                        position: rng.next_u64(),
                        bit: rng.below(8) as u8,
                        index_file: false,
                    },
                });
            }
        }
        faults.sort_by_key(|p| p.at_ms);
        let mut events: Vec<(u64, usize, Action)> = (starts.iter().skip(1))
            .map(|(node, at)| (*at, usize::MAX, Action::Boot(*node)))
            .collect();
        events.extend(timeline(faults, nodes));
        events.sort_by_key(|(at, _, _)| *at);
        FormationPlan {
            starts,
            joins,
            events,
        }
    }

    fn describe(&self) -> String {
        let starts: Vec<String> = (self.starts.iter())
            .map(|(node, at)| format!("node {node} at {at} ms joining {:?}", self.joins[*node]))
            .collect();
        format!("{}; {} events", starts.join(", "), self.events.len())
    }
}

/// The config-drift scenario's plan: a node crashed at its first boot, and 2-6 restarts of
/// seeded nodes during the safety phase, each with a new configuration drawn from the node's
/// last one.
struct DriftPlan {
    configs: Vec<NodeConfig>,
    faults: Vec<Planned>,
    early: Vec<Planned>,
}

impl DriftPlan {
    /// `record`: `record_bytes_max` drifts too.
    fn draw(rng: &mut Rng, params: &Params, configs: &[NodeConfig], record: bool) -> DriftPlan {
        let nodes = params.nodes;
        let mut current = configs.to_vec();
        let mut times: Vec<u64> = (0..rng.between(2, 6))
            .map(|_| rng.below(params.safety_ms))
            .collect();
        times.sort_unstable();
        let mut drawn = Vec::new();
        let mut faults = Vec::new();
        for at_ms in times {
            let node = rng.below(nodes as u64) as usize;
            let new = drift_config(rng, &current[node], record);
            current[node] = new.clone();
            drawn.push(new);
            let fault = Fault::Reconfigure {
                node,
                clean: rng.percent(40),
                torn: rng.percent(50),
                down_ms: rng.between(1, 3_000),
                config: drawn.len() - 1,
            };
            faults.push(Planned { at_ms, fault });
        }
        let early = vec![Planned {
            at_ms: rng.between(0, 40),
            fault: Fault::Crash {
                node: rng.below(nodes as u64) as usize,
                torn: rng.percent(50),
                down_ms: rng.between(1, 500),
            },
        }];
        DriftPlan {
            configs: drawn,
            faults,
            early,
        }
    }

    /// The largest `record_bytes_max` any configuration of the run has.
    fn largest_record(&self) -> u32 {
        (self.configs.iter().map(|c| c.record_bytes_max))
            .max()
            .unwrap_or(RECORD_BYTES_MAX)
            .max(RECORD_BYTES_MAX)
    }

    fn describe(&self) -> String {
        let each: Vec<String> = (self.faults.iter())
            .map(|p| format!("{} at {} ms", p.fault, p.at_ms))
            .collect();
        format!(
            "{} restarts ({}); early {}",
            self.faults.len(),
            each.join(", "),
            self.early
                .iter()
                .map(|p| format!("{} at {} ms", p.fault, p.at_ms))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A configuration drawn from `from`: each limit kept or changed (lower or higher) at random,
/// drawn again until the whole passes `NodeConfig::validate` (`from` itself after 32 tries).
/// Retention only on a standalone node (see sim/README.md); `record_bytes_max` only with
/// `record`.
fn drift_config(rng: &mut Rng, from: &NodeConfig, record: bool) -> NodeConfig {
    for _ in 0..32 {
        let mut c = from.clone();
        let drawn = [256, 512, 1_024, 2_048, 4_096][rng.below(5) as usize];
        if rng.percent(60) && record {
            c.record_bytes_max = drawn;
        }
        let record = u64::from(c.record_bytes_max);
        if rng.percent(60) {
            c.segment_bytes_max = rng.between(record + 64, (4 * record).max(8_192));
        }
        if rng.percent(50) {
            c.index_bytes_max = [1, 2, 4, 16, 64][rng.below(5) as usize] * INDEX_ENTRY_BYTES;
        }
        if c.cluster.is_none() {
            if rng.percent(40) {
                c.retention_bytes_max = rng.percent(60).then(|| rng.between(4_096, 65_536));
            }
            if rng.percent(30) {
                c.retention_ms_max = rng.percent(50).then(|| rng.between(5_000, 60_000));
            }
            if rng.percent(50) {
                c.retention_check_ms = rng.between(100, 5_000);
            }
        }
        let l = &mut c.limits;
        let maybe = |rng: &mut Rng, lo: u64, hi: u64| rng.percent(30).then(|| rng.between(lo, hi));
        if let Some(v) = maybe(rng, 1, 64) {
            l.batch_records_max = v as usize;
        }
        if let Some(v) = maybe(rng, 1, 1_000) {
            l.consume_records_max = v as u32;
        }
        if let Some(v) = maybe(rng, record, 1 << 20) {
            l.consume_bytes_max = v;
        }
        if let Some(v) = maybe(rng, 1, 64) {
            l.stream_appends_in_flight_max = v as usize;
        }
        if let Some(v) = maybe(rng, record, 1 << 20) {
            l.stream_appends_in_flight_bytes_max = v;
        }
        if let Some(v) = maybe(rng, 1, 64) {
            l.stream_buffer_messages_max = v as usize;
        }
        if let Some(v) = maybe(rng, record, 1 << 20) {
            l.stream_buffer_bytes_max = v;
        }
        if let Some(v) = maybe(rng, 1, 256) {
            l.append_queue_depth_max = v as usize;
        }
        if let Some(v) = maybe(rng, 16, 256) {
            l.streams_max = v as usize;
        }
        if let Some(v) = maybe(rng, 16, 1_024) {
            l.calls_in_flight_max = v as usize;
        }
        if let Some(v) = maybe(rng, 0, 1_000) {
            l.admission_wait_ms = v;
        }
        if let Some(v) = maybe(rng, record, 1 << 20) {
            l.requests_in_flight_bytes_max = v;
        }
        if let Some(v) = maybe(rng, 64 << 10, 8 << 20) {
            l.message_bytes_max = v as usize;
        }
        if let Some(cl) = &mut c.cluster {
            if let Some(v) = maybe(rng, 1, 256) {
                cl.entry_records_max = v as usize;
            }
            if let Some(v) = maybe(rng, 1_024, 1 << 20) {
                cl.entry_bytes_max = v as usize;
            }
            if let Some(v) = maybe(rng, 1, 8) {
                cl.entries_in_flight_max = v as usize;
            }
            if let Some(v) = maybe(rng, 1, 32) {
                cl.payload_entries_max = v;
            }
            if let Some(v) = maybe(rng, 4_096, 2 << 20) {
                cl.replicate_bytes_max = v as usize;
            }
            let floor = cl.election_timeout_max_ms;
            if let Some(v) = maybe(rng, floor, floor.max(8_000)) {
                cl.commit_timeout_ms = v;
            }
        }
        if c.validate().is_ok() {
            return c;
        }
    }
    from.clone()
}
