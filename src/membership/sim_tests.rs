//! Membership under madsim: five nodes join through one seed, a killed node is seen down, a
//! restarted node (same identity, bump 0) renews itself and is seen alive again, and the same
//! seed replays the same run (`Runtime::check_determinism`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, Runtime};
use madsim::Config;
use tokio::sync::watch;

use super::*;

const NODES: u64 = 5;
const GOSSIP_PORT: u16 = 7946;
/// Simulated time a phase may take before the test fails.
const PHASE_LIMIT: Duration = Duration::from_secs(60);

type Views = Arc<Mutex<BTreeMap<u64, watch::Receiver<ClusterView>>>>;

fn ip(id: u64) -> IpAddr {
    Ipv4Addr::new(10, 0, 1, id as u8).into()
}

fn gossip(id: u64) -> SocketAddr {
    (ip(id), GOSSIP_PORT).into()
}

/// Polls until `pred` holds for the views of `observers`; returns the simulated time it took.
async fn wait_until(
    views: &Views,
    observers: &[u64],
    what: &str,
    pred: impl Fn(&ClusterView) -> bool,
) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        let done = {
            let views = views.lock().unwrap();
            observers
                .iter()
                .all(|id| views.get(id).is_some_and(|v| pred(&v.borrow())))
        };
        if done {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PHASE_LIMIT,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The scenario; returns the simulated durations of its phases (a replay fingerprint).
async fn scenario() -> Vec<Duration> {
    let handle = Handle::current();
    let views: Views = Arc::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=NODES {
        let views = views.clone();
        let node = handle
            .create_node()
            .name(format!("gossip-{id}"))
            .ip(ip(id))
            .init(move || {
                let views = views.clone();
                async move {
                    let membership = Membership::start(MembershipConfig {
                        node_id: id,
                        gossip_listen: gossip(id),
                        rpc_addr: format!("{}:50051", ip(id)),
                        join: if id == 1 { vec![] } else { vec![gossip(1)] },
                        cluster_size_hint: NODES as u32,
                        suspect_to_down_after_ms: None,
                        rng_seed: None,
                        cluster_key: None,
                    })
                    .await
                    .unwrap();
                    views.lock().unwrap().insert(id, membership.view());
                    std::future::pending::<()>().await;
                    drop(membership);
                }
            })
            .build();
        nodes.insert(id, node);
    }
    let all: Vec<u64> = (1..=NODES).collect();
    let survivors: Vec<u64> = (1..NODES).collect();
    let all_alive = |v: &ClusterView| {
        v.members.len() == NODES as usize
            && v.members
                .values()
                .all(|m| m.alive && m.rpc_addr == format!("{}:50051", ip(m.node_id)))
    };

    let joined = wait_until(&views, &all, "all joined", all_alive).await;
    handle.kill(nodes[&NODES].id());
    // Its last view (all alive) must not count once it restarts.
    views.lock().unwrap().remove(&NODES);
    let down = wait_until(&views, &survivors, "the killed node down", |v| {
        v.get(NODES).is_some_and(|m| !m.alive) && survivors.iter().all(|&id| v.is_alive(id))
    })
    .await;
    handle.restart(nodes[&NODES].id());
    let back = wait_until(&views, &all, "the restarted node back", all_alive).await;
    let phases = vec![joined, down, back];
    eprintln!("simulated: joined {joined:?}, killed node down after {down:?}, restarted node back after {back:?}");
    phases
}

#[test]
fn join_detect_restart_and_replay() {
    let phases = Runtime::check_determinism(7, Config::default(), || async { scenario().await });
    // new_lan with 5 nodes: 1 s probes and 4 s suspicion before a down.
    assert!(phases[1] >= Duration::from_secs(4), "{phases:?}");
    let other_seed = Runtime::with_seed_and_config(8, Config::default()).block_on(scenario());
    eprintln!("seed 7: {phases:?}, seed 8: {other_seed:?}");
}
