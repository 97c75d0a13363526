//! The fault schedule: drawn from the seed before the run starts, applied by the scenario.
//!
//! Every fault but a clock skew and a bit flip lasts a window and is undone at its end; windows
//! may overlap. After the safety phase the scenario undoes whatever is still in force.
//!
//! A cluster (N > 1) also gets faults between its nodes: crashing whichever node leads when the
//! fault applies, partitions (a minority against the majority, or the leader alone: every link
//! clogged both ways), one-way links, and rolling restarts; some crashes last long enough for
//! gossip to see the node down and the leader to demote it. Disk faults (I/O errors, bit flips)
//! only ever hit `Intensity::disk_nodes`, a minority chosen per seed.

use std::fmt;

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Power loss: kill the node, crash its disk (unsynced bytes are lost; with `torn`, the last
    /// unsynced write of each file may survive in part), restart it after `down_ms`.
    Crash {
        node: usize,
        torn: bool,
        down_ms: u64,
    },
    /// Stop running the node's tasks for `ms`.
    Pause { node: usize, ms: u64 },
    /// Drop this share of packets (madsim's links then retry with backoff) for `ms`.
    PacketLoss { percent: u64, ms: u64 },
    /// Raise the send latency to 1..=`max_latency_ms` for `ms`.
    LatencySpike { max_latency_ms: u64, ms: u64 },
    /// Clog the node's links in a direction for `ms`.
    Clog {
        node: usize,
        direction: Direction,
        ms: u64,
    },
    /// Clog the link from the client to the node (or back) for `ms`.
    ClogLink { node: usize, to_node: bool, ms: u64 },
    /// Power loss of the node that leads when this applies (nothing when none does).
    LeaderCrash { torn: bool, down_ms: u64 },
    /// Cut `side` off from the other nodes (every link between the two sides clogged both ways)
    /// for `ms`. The client still reaches every node.
    Partition { side: Vec<usize>, ms: u64 },
    /// Cut the node that leads when this applies off from the other nodes for `ms`.
    LeaderIsolation { ms: u64 },
    /// Clog the link from node `from` to node `to` (one way only) for `ms`.
    OneWay { from: usize, to: usize, ms: u64 },
    /// Power-cycle every node in turn (node 0 first): each is down `down_ms`, then the next goes
    /// down `gap_ms` after it came back.
    RollingRestart { down_ms: u64, gap_ms: u64 },
    /// Set the node's wall clock `skew_ms` off the simulated time (until the next skew).
    ClockSkew { node: usize, skew_ms: i64 },
    /// Fail this share of the node's disk calls for `ms`; the log then refuses writes until it is
    /// reopened, so a crash usually follows.
    IoErrors {
        node: usize,
        per_million: u32,
        ms: u64,
    },
    /// Flip one bit of one of the node's sealed segment files (`pick`, `position` and `bit` are
    /// resolved against the files present when it applies).
    BitFlip {
        node: usize,
        pick: u64,
        position: u64,
        bit: u8,
        index_file: bool,
    },
    /// Config drift: stop the node (`clean`: a process exit, every written byte kept; otherwise
    /// a power loss, torn or not), give it configuration number `config` of the run's drawn
    /// configurations (every limit may be lower or higher than before), start it after
    /// `down_ms`.
    Reconfigure {
        node: usize,
        clean: bool,
        torn: bool,
        down_ms: u64,
        config: usize,
    },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::Pause { .. } => "pause",
            Fault::PacketLoss { .. } => "packet-loss",
            Fault::LatencySpike { .. } => "latency",
            Fault::Clog { .. } => "clog",
            Fault::ClogLink { .. } => "clog-link",
            Fault::LeaderCrash { .. } => "leader-crash",
            Fault::Partition { .. } => "partition",
            Fault::LeaderIsolation { .. } => "leader-isolation",
            Fault::OneWay { .. } => "one-way",
            Fault::RollingRestart { .. } => "rolling-restart",
            Fault::ClockSkew { .. } => "clock-skew",
            Fault::IoErrors { .. } => "io-errors",
            Fault::BitFlip { .. } => "bit-flip",
            Fault::Reconfigure { .. } => "reconfigure",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
}

/// How much of each fault a schedule holds.
#[derive(Debug, Clone)]
pub struct Intensity {
    /// Mean gap between two faults, in ms.
    pub mean_gap_ms: u64,
    /// Whether bit flips are drawn at all (some seeds run without, so every acknowledged record is
    /// checked there).
    pub bit_flips: bool,
    /// The nodes disk faults (I/O errors, bit flips) may hit: all of a standalone node, a
    /// minority of a cluster (so every acknowledged record stays intact on a majority).
    pub disk_nodes: Vec<usize>,
}

/// Draws a schedule for a safety phase of `duration_ms` on `nodes` nodes, sorted by time.
pub fn plan(rng: &mut Rng, duration_ms: u64, nodes: usize, intensity: &Intensity) -> Vec<Planned> {
    assert!(nodes > 0 && intensity.mean_gap_ms > 0);
    assert!(intensity.disk_nodes.iter().all(|n| *n < nodes));
    let mut out = Vec::new();
    let mut at_ms = rng.below(intensity.mean_gap_ms);
    while at_ms < duration_ms {
        let node = rng.below(nodes as u64) as usize;
        let fault = if nodes == 1 {
            draw(rng, node, intensity)
        } else {
            draw_cluster(rng, node, nodes, intensity)
        };
        let Some(fault) = fault else {
            at_ms += 1 + rng.below(2 * intensity.mean_gap_ms);
            continue;
        };
        if let Fault::IoErrors { node, ms, .. } = fault {
            if rng.percent(70) {
                // Reopen the poisoned log soon after the errors stop.
                let down_ms = rng.between(10, 500);
                let crash = Fault::Crash {
                    node,
                    torn: rng.percent(50),
                    down_ms,
                };
                out.push(Planned {
                    at_ms: at_ms + ms + rng.below(300),
                    fault: crash,
                });
            }
        }
        out.push(Planned { at_ms, fault });
        at_ms += 1 + rng.below(2 * intensity.mean_gap_ms);
    }
    out.sort_by_key(|p| p.at_ms);
    out
}

/// A standalone node's fault (None when it would hit a node outside `disk_nodes`).
fn draw(rng: &mut Rng, node: usize, intensity: &Intensity) -> Option<Fault> {
    let kinds = if intensity.bit_flips { 100 } else { 92 };
    let fault = match rng.below(kinds) {
        0..=19 => Fault::Crash {
            node,
            torn: rng.percent(60),
            down_ms: rng.between(1, 2_000),
        },
        20..=29 => Fault::Pause {
            node,
            ms: rng.between(10, 3_000),
        },
        30..=39 => Fault::PacketLoss {
            percent: rng.between(1, 50),
            ms: rng.between(100, 3_000),
        },
        40..=49 => Fault::LatencySpike {
            max_latency_ms: rng.between(20, 1_000),
            ms: rng.between(100, 3_000),
        },
        50..=57 => {
            let direction = [Direction::In, Direction::Out, Direction::Both][rng.below(3) as usize];
            Fault::Clog {
                node,
                direction,
                ms: rng.between(10, 3_000),
            }
        }
        58..=65 => Fault::ClogLink {
            node,
            to_node: rng.percent(50),
            ms: rng.between(10, 3_000),
        },
        66..=77 => Fault::ClockSkew {
            node,
            skew_ms: rng.between(0, 20_000) as i64 - 10_000,
        },
        78..=91 => Fault::IoErrors {
            node,
            per_million: rng.between(1_000, 200_000) as u32,
            ms: rng.between(10, 1_000),
        },
        _ => Fault::BitFlip {
            node,
            pick: rng.next_u64(),
            position: rng.next_u64(),
            bit: rng.below(8) as u8,
            index_file: rng.percent(25),
        },
    };
    disk_fault_allowed(&fault, intensity).then_some(fault)
}

fn disk_fault_allowed(fault: &Fault, intensity: &Intensity) -> bool {
    match fault {
        Fault::IoErrors { node, .. } | Fault::BitFlip { node, .. } => {
            intensity.disk_nodes.contains(node)
        }
        _ => true,
    }
}

/// A random proper subset of `0..nodes` of size `1..=max_size`.
fn subset(rng: &mut Rng, nodes: usize, max_size: usize) -> Vec<usize> {
    let size = rng.between(1, max_size.max(1) as u64) as usize;
    let mut all: Vec<usize> = (0..nodes).collect();
    for i in 0..size {
        let j = i + rng.below((nodes - i) as u64) as usize;
        all.swap(i, j);
    }
    let mut side = all[..size].to_vec();
    side.sort_unstable();
    side
}

/// A cluster's fault; disk faults land on `disk_nodes` only (None when there are none).
fn draw_cluster(rng: &mut Rng, node: usize, nodes: usize, intensity: &Intensity) -> Option<Fault> {
    let kinds = if intensity.bit_flips { 100 } else { 94 };
    let disk_node = |rng: &mut Rng| -> Option<usize> {
        let n = intensity.disk_nodes.len() as u64;
        (n > 0).then(|| intensity.disk_nodes[rng.below(n) as usize])
    };
    let down_ms = |rng: &mut Rng| {
        // Most crashes are short; some last past gossip's failure detection and the leader's
        // down grace, so the node may be demoted (when a learner replaces it or the margin
        // grows: see `controller`) and comes back as a learner.
        if rng.percent(20) {
            rng.between(2_000, 20_000)
        } else {
            rng.between(1, 2_000)
        }
    };
    let fault = match rng.below(kinds) {
        0..=11 => Fault::Crash {
            node,
            torn: rng.percent(60),
            down_ms: down_ms(rng),
        },
        12..=21 => Fault::LeaderCrash {
            torn: rng.percent(60),
            down_ms: down_ms(rng),
        },
        22..=27 => Fault::Pause {
            node,
            ms: rng.between(10, 3_000),
        },
        28..=33 => Fault::PacketLoss {
            percent: rng.between(1, 30),
            ms: rng.between(100, 3_000),
        },
        34..=39 => Fault::LatencySpike {
            max_latency_ms: rng.between(20, 1_000),
            ms: rng.between(100, 3_000),
        },
        40..=44 => {
            let direction = [Direction::In, Direction::Out, Direction::Both][rng.below(3) as usize];
            Fault::Clog {
                node,
                direction,
                ms: rng.between(10, 3_000),
            }
        }
        45..=48 => Fault::ClogLink {
            node,
            to_node: rng.percent(50),
            ms: rng.between(10, 3_000),
        },
        49..=57 => Fault::Partition {
            side: subset(rng, nodes, (nodes - 1) / 2),
            ms: rng.between(100, 8_000),
        },
        58..=63 => Fault::LeaderIsolation {
            ms: rng.between(100, 8_000),
        },
        64..=70 => {
            let to = (node + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
            Fault::OneWay {
                from: node,
                to,
                ms: rng.between(100, 8_000),
            }
        }
        71..=73 => Fault::RollingRestart {
            down_ms: rng.between(1, 2_000),
            gap_ms: rng.between(0, 3_000),
        },
        74..=81 => Fault::ClockSkew {
            node,
            skew_ms: rng.between(0, 20_000) as i64 - 10_000,
        },
        82..=93 => Fault::IoErrors {
            node: disk_node(rng)?,
            per_million: rng.between(1_000, 200_000) as u32,
            ms: rng.between(10, 1_000),
        },
        _ => Fault::BitFlip {
            node: disk_node(rng)?,
            pick: rng.next_u64(),
            position: rng.next_u64(),
            bit: rng.below(8) as u8,
            index_file: rng.percent(25),
        },
    };
    Some(fault)
}
