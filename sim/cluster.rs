//! The simulated cluster: N madsim nodes, each with its own simulated disk and skewed clock,
//! running the real server (`loghouse::server::serve`) on madsim's network, plus one client node
//! the workload runs on.
//!
//! N = 1 is a standalone node (`Node::open`, no Raft, no gossip). N > 1 is a Raft cluster: node
//! i (Raft id i + 1) is `10.0.0.(i+1)`, gRPC on 7400, gossip (UDP) on 7500; it starts with
//! `server::start_member` inside its madsim node's init task (so a kill drops Raft, gossip and
//! the server together), node 0 bootstraps the cluster, and every node joins through all the
//! others' gossip addresses (so a restarted node finds the cluster whoever is up; the formation
//! scenario gives each a subset, and starts the nodes one at a time: `Cluster::build`'s
//! `deferred`).
//!
//! A node's disk, clock and configuration live here, outside the madsim node, so they survive a
//! kill: a restart runs the node's init task again, which reopens (recovers) the log from
//! whatever the disk kept, with the configuration the node has then (config drift changes it).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loghouse::config::NodeConfig;
use loghouse::io::{Clock, Disk, SimDisk, SimDiskFaults};
use loghouse::raft::types::{BasicNode, NodeId};
use loghouse::server::supervisor::{supervise, RestartPolicy, Stop};
use loghouse::server::{Node, ServerError};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use openraft::{RaftMetrics, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::history::{History, RaftSample};
use crate::trace::Trace;
use crate::workload::RecordLimits;

/// The port every node serves gRPC on.
pub const RPC_PORT: u16 = 7400;
/// The port every cluster member gossips on (UDP).
pub const GOSSIP_PORT: u16 = 7500;

pub type Metrics = watch::Receiver<RaftMetrics<NodeId, BasicNode>>;
/// How long a node that failed to open its log waits before trying again.
const REOPEN_DELAY: Duration = Duration::from_millis(200);

/// What every task of the harness records into: the history and the trace.
#[derive(Debug)]
pub struct Shared {
    pub history: Mutex<History>,
    /// The last error of each node whose log does not open (cleared when it opens).
    pub open_errors: Mutex<BTreeMap<usize, String>>,
    /// The Raft metrics of each cluster member that is running (removed at power off).
    pub metrics: Mutex<BTreeMap<usize, Metrics>>,
    trace: Mutex<Trace>,
}

impl Shared {
    pub fn new(print_trace: bool) -> Arc<Shared> {
        Arc::new(Shared {
            history: Mutex::new(History::default()),
            open_errors: Mutex::new(BTreeMap::new()),
            metrics: Mutex::new(BTreeMap::new()),
            trace: Mutex::new(Trace::new(print_trace)),
        })
    }

    /// Records an event, stamped with the simulated time, into the trace.
    pub fn event(&self, event: impl AsRef<str>) {
        let now_ns = madsim::time::TimeHandle::current().elapsed().as_nanos();
        self.trace.lock().record(now_ns, event.as_ref());
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.lock().hash()
    }

    pub fn trace_events(&self) -> u64 {
        self.trace.lock().events()
    }
}

/// A node's wall clock: madsim's simulated wall time plus a skew the fault schedule sets.
#[derive(Debug, Default)]
pub struct SkewedClock {
    skew_ms: AtomicI64,
}

impl SkewedClock {
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::Relaxed);
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        let now = madsim::time::TimeHandle::current().now_time();
        let since_epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
            + self.skew_ms.load(Ordering::Relaxed)
    }
}

/// One server node.
pub struct SimNode {
    pub addr: SocketAddr,
    pub disk: SimDisk,
    pub clock: Arc<SkewedClock>,
    /// The configuration the node's next (re)start runs with: the config-drift scenario changes
    /// it between two lives of the node (its data directory and addresses never change).
    pub config: Arc<Mutex<NodeConfig>>,
    pub handle: NodeHandle,
    pub up: bool,
    /// The share of disk calls that fail, per million (set by the fault schedule).
    pub io_error_per_million: u32,
}

impl SimNode {
    /// The directory the node keeps its client records' segments in: the log of a standalone
    /// node, the data log of a cluster member (its Raft entry log is elsewhere).
    pub fn log_dir(&self) -> PathBuf {
        let config = self.config.lock().clone();
        let log = config.log_config().expect("the sim's node config is valid");
        match config.cluster {
            None => log.dir,
            Some(_) => {
                loghouse::raft::store::StoreConfig::new(&config.data_dir, log)
                    .data
                    .dir
            }
        }
    }

    /// Sets the disk's I/O error rate (kept across calls) and whether a crash now tears writes.
    pub fn set_disk_faults(&self, torn_write_on_crash: bool) {
        self.disk.set_faults(SimDiskFaults {
            io_error_per_million: self.io_error_per_million,
            torn_write_on_crash,
        });
    }
}

pub struct Cluster {
    pub nodes: Vec<SimNode>,
    pub client: NodeHandle,
    handle: Handle,
    pub shared: Arc<Shared>,
    /// The record sizes the workload draws (config drift moves them).
    pub records: Arc<RecordLimits>,
    /// The configurations the config-drift scenario drew, by number (`Fault::Reconfigure`).
    pub drift_configs: Vec<NodeConfig>,
    /// How many faults currently want each (from, to) link between nodes clogged.
    link_clogs: BTreeMap<(usize, usize), u32>,
}

pub fn node_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + index as u8))
}

pub fn rpc_addr(index: usize) -> SocketAddr {
    SocketAddr::new(node_ip(index), RPC_PORT)
}

pub fn gossip_addr(index: usize) -> SocketAddr {
    SocketAddr::new(node_ip(index), GOSSIP_PORT)
}

impl Cluster {
    /// Creates `configs.len()` server nodes and the client node. The nodes `deferred` names are
    /// created down (never started: their disks are empty) and start at their first `power_on`;
    /// the others start at once.
    pub fn build(
        handle: &Handle,
        configs: Vec<NodeConfig>,
        disk_seeds: Vec<u64>,
        deferred: &[usize],
        shared: Arc<Shared>,
    ) -> Cluster {
        let smallest_record = (configs.iter().map(|c| c.record_bytes_max).min()).unwrap_or(1);
        let nodes = (configs.into_iter().zip(disk_seeds).enumerate())
            .map(|(index, (config, disk_seed))| {
                let mut node = start_node(handle, index, config, disk_seed, shared.clone());
                if deferred.contains(&index) {
                    handle.kill(node.handle.id());
                    node.up = false;
                }
                node
            })
            .collect();
        let client_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
        let client = handle.create_node().name("client").ip(client_ip).build();
        Cluster {
            nodes,
            client,
            handle: handle.clone(),
            shared,
            records: RecordLimits::new(smallest_record, smallest_record),
            drift_configs: Vec::new(),
            link_clogs: BTreeMap::new(),
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// The node that leads (state Leader, the highest term among the running nodes' metrics).
    pub fn leader(&self) -> Option<usize> {
        let metrics = self.shared.metrics.lock();
        (metrics.iter())
            .filter(|(node, _)| self.nodes[**node].up)
            .filter_map(|(node, m)| {
                let m = m.borrow();
                (m.state == ServerState::Leader && m.running_state.is_ok())
                    .then_some((m.current_term, *node))
            })
            .max()
            .map(|(_, node)| node)
    }

    /// Clogs the one-way link `from` -> `to` between two nodes (counted: it opens again once
    /// every fault that clogged it has ended).
    pub fn clog_link(&mut self, from: usize, to: usize) {
        let count = self.link_clogs.entry((from, to)).or_default();
        *count += 1;
        if *count == 1 {
            let (a, b) = (self.nodes[from].handle.id(), self.nodes[to].handle.id());
            NetSim::current().clog_link(a, b);
        }
    }

    pub fn unclog_link(&mut self, from: usize, to: usize) {
        let Some(count) = self.link_clogs.get_mut(&(from, to)) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.link_clogs.remove(&(from, to));
            let (a, b) = (self.nodes[from].handle.id(), self.nodes[to].handle.id());
            NetSim::current().unclog_link(a, b);
        }
    }

    /// Clogs every link between `side` and the other nodes, both ways. Returns the links.
    pub fn partition(&mut self, side: &[usize]) -> Vec<(usize, usize)> {
        let mut links = Vec::new();
        for a in side.iter().copied() {
            for b in (0..self.nodes.len()).filter(|b| !side.contains(b)) {
                links.extend([(a, b), (b, a)]);
            }
        }
        for (from, to) in &links {
            self.clog_link(*from, *to);
        }
        links
    }

    /// Power loss: kill the node, then crash its disk (`torn`: tear the last unsynced writes).
    /// Returns false (and does nothing) when the node is already down.
    pub fn power_off(&mut self, node: usize, torn: bool) -> bool {
        let sim_node = &mut self.nodes[node];
        if !sim_node.up {
            return false;
        }
        self.handle.kill(sim_node.handle.id());
        self.shared.metrics.lock().remove(&node);
        sim_node.set_disk_faults(torn);
        sim_node.disk.crash();
        sim_node.set_disk_faults(false);
        sim_node.up = false;
        self.shared
            .event(format!("node {node} power off (torn={torn})"));
        true
    }

    /// Process crash, or a stop with nothing left to write: kill the node but keep every byte it
    /// wrote (the OS still holds what was not synced), so the next start reopens a log whose
    /// last segment was not closed. Returns false (and does nothing) when the node is down.
    pub fn process_kill(&mut self, node: usize) -> bool {
        let sim_node = &mut self.nodes[node];
        if !sim_node.up {
            return false;
        }
        self.handle.kill(sim_node.handle.id());
        self.shared.metrics.lock().remove(&node);
        sim_node.up = false;
        self.shared.event(format!("node {node} process killed"));
        true
    }

    /// Starts a node that is down (its init task reopens the log). Does nothing when it is up.
    pub fn power_on(&mut self, node: usize) {
        let sim_node = &mut self.nodes[node];
        if sim_node.up {
            return;
        }
        self.handle.restart(sim_node.handle.id());
        sim_node.up = true;
        self.shared.event(format!("node {node} power on"));
    }

    pub fn pause(&self, node: usize) {
        self.handle.pause(self.nodes[node].handle.id());
    }

    pub fn resume(&self, node: usize) {
        self.handle.resume(self.nodes[node].handle.id());
    }

    pub fn net(&self) -> Arc<NetSim> {
        NetSim::current()
    }

    /// Undoes every network fault and pause (not crashes, skews or disk faults).
    pub fn heal_network(&mut self) {
        let net = self.net();
        for (from, to) in std::mem::take(&mut self.link_clogs).into_keys() {
            net.unclog_link(self.nodes[from].handle.id(), self.nodes[to].handle.id());
        }
        net.update_config(|config| *config = madsim::net::Config::default());
        for node in &self.nodes {
            net.unclog_node(node.handle.id());
            net.unclog_link(self.client.id(), node.handle.id());
            net.unclog_link(node.handle.id(), self.client.id());
            self.handle.resume(node.handle.id());
        }
        net.unclog_node(self.client.id());
    }
}

fn start_node(
    handle: &Handle,
    index: usize,
    config: NodeConfig,
    disk_seed: u64,
    shared: Arc<Shared>,
) -> SimNode {
    let ip = node_ip(index);
    let addr = rpc_addr(index);
    let disk = SimDisk::new(disk_seed);
    let clock = Arc::new(SkewedClock::default());
    let config = Arc::new(Mutex::new(config));
    let init = {
        let (disk, clock, config) = (disk.clone(), clock.clone(), config.clone());
        move || {
            run_node(
                index,
                addr,
                config.lock().clone(),
                disk.clone(),
                clock.clone(),
                shared.clone(),
            )
        }
    };
    let handle = handle
        .create_node()
        .name(format!("node-{index}"))
        .ip(ip)
        .init(init)
        .build();
    SimNode {
        addr,
        disk,
        clock,
        config,
        handle,
        up: true,
        io_error_per_million: 0,
    }
}

/// A node's main task: open (recover) the log, retrying while the disk fails, then serve.
async fn run_node(
    index: usize,
    addr: SocketAddr,
    config: NodeConfig,
    disk: SimDisk,
    clock: Arc<SkewedClock>,
    shared: Arc<Shared>,
) {
    if config.cluster.is_some() {
        run_member(index, addr, config, disk, clock, shared).await
    } else {
        run_standalone(index, addr, config, disk, clock, shared).await
    }
}

/// A cluster member: start gossip and Raft over the recovered store (retrying while that
/// fails), publish its Raft metrics, then serve; start again when Raft stops on its own (as
/// `loghouse serve` does: the store repairs damage when it reopens).
async fn run_member(
    index: usize,
    addr: SocketAddr,
    config: NodeConfig,
    disk: SimDisk,
    clock: Arc<SkewedClock>,
    shared: Arc<Shared>,
) {
    let life = || serve_member(index, addr, &config, &disk, &clock, &shared);
    if let Err(Stop::RaftStopped(reason)) = supervise(RestartPolicy::default(), life).await {
        shared.event(format!("node {index} gave up: {reason}"));
    }
}

/// One life of a member, as the production supervisor (`server::supervisor`) sees it.
async fn serve_member(
    index: usize,
    addr: SocketAddr,
    config: &NodeConfig,
    disk: &SimDisk,
    clock: &Arc<SkewedClock>,
    shared: &Arc<Shared>,
) -> Result<(), Stop<()>> {
    let member = loop {
        let disk: Arc<dyn Disk> = Arc::new(disk.clone());
        match loghouse::server::start_member(config.clone(), disk, clock.clone(), addr.to_string())
            .await
        {
            Ok(member) => break member,
            Err(error) => {
                shared.event(format!("node {index} start failed: {error}"));
                shared.open_errors.lock().insert(index, error.to_string());
                tokio::time::sleep(REOPEN_DELAY).await;
            }
        }
    };
    shared.open_errors.lock().remove(&index);
    let node = member.node.clone();
    let raft = node.raft().expect("a member has Raft").raft().clone();
    let info = node.log().info();
    shared.event(format!(
        "node {index} started: data log [{}, {}) in {} segments, committed {}",
        info.lowest_offset,
        info.next_offset,
        info.segment_count,
        node.committed_offset()
    ));
    shared.metrics.lock().insert(index, raft.metrics());
    tokio::spawn(watch_metrics(index, raft.metrics(), shared.clone()));
    // Gossip runs as long as this task does (a kill drops both).
    let membership = member.membership;
    match loghouse::server::serve(node, addr, std::future::pending()).await {
        Err(ServerError::RaftStopped(reason)) => {
            shared.event(format!("node {index} restarts: raft stopped: {reason}"));
            membership.shutdown().await;
            Err(Stop::RaftStopped(reason))
        }
        Err(error) => {
            shared.event(format!("node {index} serve failed: {error}"));
            Err(Stop::Failed(()))
        }
        Ok(()) => Ok(()),
    }
}

/// Records every change of the node's term, role, known leader or voters (history and trace),
/// and when its Raft stops.
async fn watch_metrics(index: usize, mut metrics: Metrics, shared: Arc<Shared>) {
    let mut last: Option<(RaftSample, String)> = None;
    let mut stopped = false;
    loop {
        let (sample, described, fatal) = {
            let m = metrics.borrow_and_update();
            let sample = RaftSample {
                node: index,
                id: m.id,
                term: m.current_term,
                leader: m.state == ServerState::Leader,
                current_leader: m.current_leader,
            };
            let membership = m.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let learners: Vec<u64> = membership.learner_ids().collect();
            let described = format!(
                "term {} {:?} leader {:?} voters {voters:?} learners {learners:?}",
                m.current_term, m.state, m.current_leader
            );
            let fatal = m.running_state.as_ref().err().map(|e| e.to_string());
            (sample, described, fatal)
        };
        if last.as_ref().is_none_or(|(_, d)| *d != described) {
            shared.event(format!("node {index} raft: {described}"));
            if last.as_ref().is_none_or(|(s, _)| *s != sample) {
                shared.history.lock().raft_samples.push(sample.clone());
            }
            last = Some((sample, described));
        }
        if let (Some(fatal), false) = (fatal, stopped) {
            shared.event(format!("node {index} raft stopped: {fatal}"));
            stopped = true;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A standalone node: open (recover) the log, retrying while the disk fails, then serve.
async fn run_standalone(
    index: usize,
    addr: SocketAddr,
    config: NodeConfig,
    disk: SimDisk,
    clock: Arc<SkewedClock>,
    shared: Arc<Shared>,
) {
    let node = loop {
        let disk: Arc<dyn Disk> = Arc::new(disk.clone());
        match Node::open(config.clone(), disk, clock.clone(), addr.to_string()) {
            Ok(node) => break node,
            Err(error) => {
                shared.event(format!("node {index} open failed: {error}"));
                shared.open_errors.lock().insert(index, error.to_string());
                tokio::time::sleep(REOPEN_DELAY).await;
            }
        }
    };
    shared.open_errors.lock().remove(&index);
    let info = node.log().info();
    shared.event(format!(
        "node {index} opened: offsets [{}, {}) in {} segments",
        info.lowest_offset, info.next_offset, info.segment_count
    ));
    if let Err(error) = loghouse::server::serve(node, addr, std::future::pending()).await {
        shared.event(format!("node {index} serve failed: {error}"));
    }
}
