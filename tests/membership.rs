//! Gossip membership over real UDP on 127.0.0.1 (port 0): joining, leaving, crash detection,
//! restarts, and robustness against garbage datagrams. (The simulated network is covered by
//! `src/membership/sim_tests.rs`.)
#![cfg(not(madsim))]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foca::{Codec, Header, Message, PostcardCodec};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use loghouse::membership::{
    ClusterView, Membership, MembershipConfig, MembershipError, NodeIdentity, DATAGRAM_BYTES_MAX,
};

/// How long a test waits for a view to get somewhere (over loopback it takes well under a second;
/// the bound is generous because CI machines are shared and noisy: these tests check what
/// happens, not how fast).
const WAIT: Duration = Duration::from_secs(20);
/// The suspicion time used where a test waits for failure detection.
const SUSPECT_MS: u64 = 1_000;
/// Long enough that nothing in a test is declared down by failure detection (well over `WAIT`).
const NEVER_SUSPECT_MS: u64 = 60_000;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn rpc(node_id: u64) -> String {
    format!("10.0.0.{node_id}:50051")
}

fn config(node_id: u64, join: Vec<SocketAddr>, suspect_ms: u64) -> MembershipConfig {
    MembershipConfig {
        node_id,
        gossip_listen: "127.0.0.1:0".parse().unwrap(),
        rpc_addr: rpc(node_id),
        join,
        cluster_size_hint: 3,
        suspect_to_down_after_ms: Some(suspect_ms),
        rng_seed: Some(node_id),
        cluster_key: None,
    }
}

async fn start(node_id: u64, join: Vec<SocketAddr>, suspect_ms: u64) -> Membership {
    Membership::start(config(node_id, join, suspect_ms))
        .await
        .unwrap()
}

/// Waits until `pred` holds for the view. Panics after `timeout` (a bound on waiting for an
/// event, not a speed check) with the last view.
async fn wait_view(
    rx: &mut watch::Receiver<ClusterView>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ClusterView) -> bool,
) {
    let outcome = tokio::time::timeout(timeout, rx.wait_for(|v| pred(v)))
        .await
        .map(|r| r.map(|_| ()));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("view channel closed while waiting for: {what}"),
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for: {what}; view: {:#?}",
            *rx.borrow()
        ),
    }
}

/// All of `ids` alive, with their rpc addresses, and nothing else in the view.
fn exactly_alive(view: &ClusterView, ids: &[u64]) -> bool {
    view.members.len() == ids.len()
        && ids.iter().all(|&id| {
            view.get(id)
                .is_some_and(|m| m.alive && m.node_id == id && m.rpc_addr == rpc(id))
        })
}

/// Starts node 1 alone and nodes 2..=n joining through it; waits until every view has all of
/// them alive.
async fn cluster(n: u64, suspect_ms: u64) -> Vec<Membership> {
    let first = start(1, vec![], suspect_ms).await;
    let seed = first.local_gossip_addr();
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(start(id, vec![seed], suspect_ms).await);
    }
    let ids: Vec<u64> = (1..=n).collect();
    for node in &nodes {
        wait_view(&mut node.view(), WAIT, "all members alive", |v| {
            exactly_alive(v, &ids)
        })
        .await;
    }
    nodes
}

#[tokio::test]
async fn three_nodes_converge_with_rpc_addrs() {
    init_tracing();
    let nodes = cluster(3, NEVER_SUSPECT_MS).await;
    for node in &nodes {
        let view = node.view().borrow().clone();
        for m in view.members.values() {
            // Each member is advertised at the address its socket is bound to.
            let expected = nodes[(m.node_id - 1) as usize].local_gossip_addr();
            assert_eq!(m.gossip_addr, expected, "member {}", m.node_id);
        }
    }
    // Node 3 only ever talked to node 1; node 2 learned of it through gossip.
    assert!(nodes[1].view().borrow().is_alive(3));
}

#[tokio::test]
async fn a_node_that_leaves_is_seen_not_alive() {
    init_tracing();
    // Failure detection would take a minute, longer than `WAIT`: only the leave message can
    // make node 3 not alive within it.
    let mut nodes = cluster(3, NEVER_SUSPECT_MS).await;
    let leaving = nodes.pop().unwrap();
    let mut own_view = leaving.view();
    let left_at = Instant::now();
    leaving.leave().await;
    assert!(
        !own_view.borrow_and_update().is_alive(3),
        "the leaver's last view shows itself not alive"
    );
    for node in &nodes {
        wait_view(&mut node.view(), WAIT, "node 3 not alive", |v| {
            v.get(3).is_some_and(|m| !m.alive) && v.is_alive(1) && v.is_alive(2)
        })
        .await;
    }
    let view = nodes[0].view().borrow().clone();
    let m = view.get(3).expect("a member that left stays in the view");
    assert!(m.since >= left_at, "since moved to when it left");
}

#[tokio::test]
async fn a_crashed_node_is_seen_down_after_the_suspicion_timeout() {
    init_tracing();
    let mut nodes = cluster(3, SUSPECT_MS).await;
    let crashed = nodes.pop().unwrap();
    drop(crashed); // no leave: the others must detect it
                   // A crash is not a leave: nobody declares node 3 down before suspecting it first.
    for node in &nodes {
        assert!(
            node.view().borrow().is_alive(3),
            "node 3 declared down at once"
        );
    }
    // SWIM suspects before it declares down: the view shows node 3 alive but suspect (what the
    // `loghouse_gossip_members{state="suspect"}` metric counts) for the suspicion timeout.
    wait_view(&mut nodes[0].view(), WAIT, "node 3 suspected", |v| {
        v.get(3).is_some_and(|m| m.alive && m.suspect)
    })
    .await;
    for node in &nodes {
        wait_view(&mut node.view(), WAIT, "node 3 down", |v| {
            v.get(3).is_some_and(|m| !m.alive && !m.suspect)
        })
        .await;
    }
    // The survivors still see each other alive.
    for node in &nodes {
        let view = node.view().borrow().clone();
        assert!(view.is_alive(1) && view.is_alive(2), "{view:#?}");
    }
}

#[tokio::test]
async fn a_restarted_node_is_alive_again_with_its_new_addresses() {
    init_tracing();
    let mut nodes = cluster(3, SUSPECT_MS).await;
    let seed = nodes[0].local_gossip_addr();
    let old = nodes.pop().unwrap();
    let gossip_addr = old.local_gossip_addr();
    // shutdown() returns once the socket is closed, so the restart can bind the same address.
    old.shutdown().await;
    for node in &nodes {
        wait_view(&mut node.view(), WAIT, "node 3 down", |v| {
            v.get(3).is_some_and(|m| !m.alive)
        })
        .await;
    }
    // Same node id and gossip address, a new rpc address, joining through node 1 again.
    let mut cfg = config(3, vec![seed], SUSPECT_MS);
    cfg.gossip_listen = gossip_addr;
    cfg.rpc_addr = "10.0.0.33:50051".into();
    let restarted = Membership::start(cfg).await.unwrap();
    assert_eq!(restarted.local_gossip_addr(), gossip_addr);
    for node in &nodes {
        let took = wait_view(&mut node.view(), WAIT, "node 3 back", |v| {
            v.get(3).is_some_and(|m| {
                m.alive && m.rpc_addr == "10.0.0.33:50051" && m.gossip_addr == gossip_addr
            })
        })
        .await;
        eprintln!("node {} saw the restart after {took:?}", node.node_id());
    }
    wait_view(
        &mut restarted.view(),
        WAIT,
        "restarted node sees all",
        |v| v.is_alive(1) && v.is_alive(2) && v.is_alive(3),
    )
    .await;
}

#[tokio::test]
async fn a_node_started_before_its_seed_joins_when_the_seed_comes_up() {
    init_tracing();
    // Reserve a port for the seed, then free it for the seed to bind later.
    let seed_addr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let early = start(2, vec![seed_addr], NEVER_SUSPECT_MS).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut cfg = config(1, vec![], NEVER_SUSPECT_MS);
    cfg.gossip_listen = seed_addr;
    let seed = Membership::start(cfg).await.unwrap();
    for node in [&early, &seed] {
        let took = wait_view(&mut node.view(), WAIT, "both alive", |v| {
            exactly_alive(v, &[1, 2])
        })
        .await;
        eprintln!(
            "node {} converged {took:?} after the seed started",
            node.node_id()
        );
    }
}

#[tokio::test]
async fn garbage_datagrams_neither_crash_a_node_nor_change_its_view() {
    init_tracing();
    let nodes = cluster(2, NEVER_SUSPECT_MS).await;
    let target = nodes[0].local_gossip_addr();
    let before = nodes[0].view().borrow().clone();

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        b"LHg1".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0xff; DATAGRAM_BYTES_MAX + 100], // oversized
        vec![0; DATAGRAM_BYTES_MAX],
    ];
    // Pseudo-random junk, with and without a valid frame around it (so foca itself has to
    // reject what the frame check lets through).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in (1..1_400).step_by(7) {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        datagrams.push(frame(&junk));
        let mut bad_crc = frame(&junk);
        bad_crc[4] ^= 1;
        datagrams.push(bad_crc);
        datagrams.push(junk);
    }
    // Well-formed frames and headers that foca itself must reject, from a node (99) that must
    // not end up in the view: an announce with trailing bytes, and a ping addressed to node 1
    // whose update list is junk.
    let stranger = NodeIdentity {
        node_id: 99,
        gossip_addr: attacker.local_addr().unwrap(),
        rpc_addr: "10.0.0.99:50051".into(),
        bump: 0,
    };
    let me = NodeIdentity {
        node_id: 1,
        gossip_addr: target,
        rpc_addr: rpc(1),
        bump: 0,
    };
    let announce = Header {
        src: stranger.clone(),
        src_incarnation: 0,
        dst: NodeIdentity::seed_placeholder(target),
        message: Message::Announce,
    };
    let ping = Header {
        src: stranger,
        src_incarnation: 0,
        dst: me,
        message: Message::Ping(1),
    };
    for (header, trailer) in [
        (&announce, &[0u8][..]),
        (&announce, &[1, 2, 3][..]),
        (&ping, &[0][..]),
        (&ping, &[0, 5, 0xff, 0xff, 0xff][..]),
    ] {
        let mut packet = Vec::new();
        PostcardCodec.encode_header(header, &mut packet).unwrap();
        packet.extend_from_slice(trailer);
        datagrams.push(frame(&packet));
    }
    // Paced, so that they reach the driver instead of overflowing the socket buffer.
    for chunk in datagrams.chunks(8) {
        for d in chunk {
            attacker.send_to(d, target).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Give the driver time to chew through them (and a probe period or two to pass).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        *nodes[0].view().borrow(),
        before,
        "garbage changed the view"
    );

    // The node still works: a new node joins through it.
    let late = start(3, vec![target], NEVER_SUSPECT_MS).await;
    for node in nodes.iter().chain([&late]) {
        wait_view(&mut node.view(), WAIT, "all alive after garbage", |v| {
            exactly_alive(v, &[1, 2, 3])
        })
        .await;
    }
}

/// The gossip frame: "LHg1", crc32c of the payload (little endian), the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = b"LHg1".to_vec();
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn bad_configs_are_clear_errors() {
    let err = Membership::start(config(0, vec![], SUSPECT_MS))
        .await
        .unwrap_err();
    assert!(matches!(err, MembershipError::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("node_id"), "{err}");

    // An address already in use.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cfg = config(1, vec![], SUSPECT_MS);
    cfg.gossip_listen = addr;
    let err = Membership::start(cfg).await.unwrap_err();
    assert!(matches!(err, MembershipError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");

    // An address that is not on this machine (TEST-NET-1).
    let mut cfg = config(1, vec![], SUSPECT_MS);
    cfg.gossip_listen = "192.0.2.1:7946".parse().unwrap();
    let err = Membership::start(cfg).await.unwrap_err();
    assert!(err.to_string().contains("192.0.2.1:7946"), "{err}");

    // The wildcard address cannot be advertised to peers.
    let mut cfg = config(1, vec![], SUSPECT_MS);
    cfg.gossip_listen = "0.0.0.0:0".parse().unwrap();
    let err = Membership::start(cfg).await.unwrap_err();
    assert!(err.to_string().contains("unspecified"), "{err}");
}
