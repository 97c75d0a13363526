//! The simulated cluster: N madsim nodes, each with its own simulated disk and skewed clock,
//! running the real server (`loghouse::server::serve`) on madsim's network, plus one client node
//! the workload runs on.
//!
//! A node's disk and clock live here, outside the madsim node, so they survive a kill: a restart
//! runs the node's init task again, which reopens (recovers) the log from whatever the disk kept.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loghouse::config::NodeConfig;
use loghouse::io::{Clock, Disk, SimDisk, SimDiskFaults};
use loghouse::server::Node;
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use parking_lot::Mutex;

use crate::history::History;
use crate::trace::Trace;

/// The port every node serves gRPC on.
pub const RPC_PORT: u16 = 7400;
/// How long a node that failed to open its log waits before trying again.
const REOPEN_DELAY: Duration = Duration::from_millis(200);

/// What every task of the harness records into: the history and the trace.
#[derive(Debug)]
pub struct Shared {
    pub history: Mutex<History>,
    /// The last error of each node whose log does not open (cleared when it opens).
    pub open_errors: Mutex<BTreeMap<usize, String>>,
    trace: Mutex<Trace>,
}

impl Shared {
    pub fn new(print_trace: bool) -> Arc<Shared> {
        Arc::new(Shared {
            history: Mutex::new(History::default()),
            open_errors: Mutex::new(BTreeMap::new()),
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
    pub config: NodeConfig,
    pub handle: NodeHandle,
    pub up: bool,
    /// The share of disk calls that fail, per million (set by the fault schedule).
    pub io_error_per_million: u32,
}

impl SimNode {
    /// The directory the node's log keeps its segments in.
    pub fn log_dir(&self) -> PathBuf {
        self.config
            .log_config()
            .expect("the sim's node config is valid")
            .dir
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
}

pub fn node_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + index as u8))
}

impl Cluster {
    /// Creates `configs.len()` server nodes (started at once) and the client node.
    pub fn build(
        handle: &Handle,
        configs: Vec<NodeConfig>,
        disk_seeds: Vec<u64>,
        shared: Arc<Shared>,
    ) -> Cluster {
        let nodes = (configs.into_iter().zip(disk_seeds).enumerate())
            .map(|(index, (config, disk_seed))| {
                start_node(handle, index, config, disk_seed, shared.clone())
            })
            .collect();
        let client_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
        let client = handle.create_node().name("client").ip(client_ip).build();
        Cluster {
            nodes,
            client,
            handle: handle.clone(),
            shared,
        }
    }

    pub fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].addr
    }

    /// Power loss: kill the node, then crash its disk (`torn`: tear the last unsynced writes).
    /// Returns false (and does nothing) when the node is already down.
    pub fn power_off(&mut self, node: usize, torn: bool) -> bool {
        let sim_node = &mut self.nodes[node];
        if !sim_node.up {
            return false;
        }
        self.handle.kill(sim_node.handle.id());
        sim_node.set_disk_faults(torn);
        sim_node.disk.crash();
        sim_node.set_disk_faults(false);
        sim_node.up = false;
        self.shared
            .event(format!("node {node} power off (torn={torn})"));
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
    pub fn heal_network(&self) {
        let net = self.net();
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
    let addr = SocketAddr::new(ip, RPC_PORT);
    let disk = SimDisk::new(disk_seed);
    let clock = Arc::new(SkewedClock::default());
    let init = {
        let (disk, clock, config) = (disk.clone(), clock.clone(), config.clone());
        move || {
            run_node(
                index,
                addr,
                config.clone(),
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
