//! A 3-member cluster in one process, over real gRPC and real UDP gossip on 127.0.0.1: formation
//! through gossip, produce through any member, identical replicas, leader failover.

mod member_support;
use member_support::eventually;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use loghouse::client::{Client, ClientError};
use loghouse::config::{ClusterConfig, NodeConfig};
use loghouse::io::{StdDisk, SystemClock};
use loghouse::server::{start_member, Node, ServerError};

struct TestMember {
    id: u64,
    addr: String,
    gossip: std::net::SocketAddr,
    node: Node,
    membership: Option<loghouse::membership::Membership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestMember {
    async fn start(dir: &Path, id: u64, join: Vec<std::net::SocketAddr>) -> TestMember {
        Self::start_with(dir, id, join, |_| {}).await
    }

    async fn start_with(
        dir: &Path,
        id: u64,
        join: Vec<std::net::SocketAddr>,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> TestMember {
        let member_support::Started {
            listener,
            addr,
            gossip,
            member,
        } = member_support::start(dir, id, join, tweak).await;
        let (stop, task) = member_support::serve(member.node.clone(), listener);
        TestMember {
            id,
            addr,
            gossip,
            node: member.node,
            membership: Some(member.membership),
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving, Raft and gossip at once, without a graceful leave (as a crash would).
    async fn kill(mut self) {
        self.task.abort();
        let _ = self.node.raft().unwrap().raft().shutdown().await;
        drop(self.membership.take());
        drop(self.stop.take());
    }

    fn is_leader(&self) -> bool {
        self.node.raft().unwrap().is_leader()
    }
}

async fn start_three(dir: &Path) -> Vec<TestMember> {
    start_three_with(dir, |_| {}).await
}

async fn start_three_with(dir: &Path, tweak: impl Fn(&mut NodeConfig)) -> Vec<TestMember> {
    let first = TestMember::start_with(dir, 1, vec![], &tweak).await;
    eventually("node 1 to lead", || first.is_leader()).await;
    let seed = vec![first.gossip];
    let second = TestMember::start_with(dir, 2, seed.clone(), &tweak).await;
    let third = TestMember::start_with(dir, 3, seed, &tweak).await;
    let members = vec![first, second, third];
    // Formed: every member lists three alive voters (a follower learns the last membership
    // change a heartbeat after the leader, and gossip among the joiners a round later).
    for member in &members {
        member_support::poll_until("every member to list 3 alive voters", || async {
            let client = Client::connect(&member.addr)
                .await
                .map_err(|e| e.to_string())?;
            let servers = client.servers().await.map_err(|e| e.to_string())?;
            let alive_voters = servers.iter().filter(|s| s.alive && s.is_voter).count();
            (alive_voters == 3)
                .then_some(())
                .ok_or(format!("{servers:?}"))
        })
        .await;
    }
    members
}

fn values(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

async fn read_all(addr: &str, next: u64) -> Vec<Bytes> {
    let client = Client::connect(addr).await.unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < next {
        let batch = client.consume_batch(out.len() as u64, 0).await.unwrap();
        assert!(!batch.records.is_empty(), "{addr} has records up to {next}");
        out.extend(batch.records.into_iter().map(|r| r.value));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_form_replicate_and_survive_the_leader_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = start_three(dir.path()).await;
    // Produce through a follower: the client follows the redirect to the leader.
    let follower = members.iter().find(|m| !m.is_leader()).unwrap();
    let client = Client::connect_cluster(&follower.addr).await.unwrap();
    let mut expected = Vec::new();
    for chunk in values("a", 300).chunks(30) {
        let first = client.produce_batch(chunk.to_vec()).await.unwrap();
        assert_eq!(first, expected.len() as u64, "offsets are dense");
        expected.extend_from_slice(chunk);
    }
    for m in &members {
        let node = m.node.clone();
        eventually("every replica commits", || node.committed_offset() == 300).await;
        assert_eq!(
            read_all(&m.addr, 300).await,
            expected,
            "replica {} is identical",
            m.id
        );
    }

    // The cluster client spreads reads over the followers; each read answers the acked value.
    for offset in (0..300).step_by(7) {
        let record = client.consume(offset).await.unwrap();
        assert_eq!(record.value, expected[offset as usize]);
    }

    let leader_at = members.iter().position(|m| m.is_leader()).unwrap();
    let old_leader = members.remove(leader_at);
    let old_id = old_leader.id;
    old_leader.kill().await;
    let survivors = &members;
    eventually("a new leader", || survivors.iter().any(|m| m.is_leader())).await;
    let client = Client::connect_cluster(&members[0].addr).await.unwrap();
    let more = values("b", 50);
    let first = client.produce_batch(more.clone()).await.unwrap();
    assert_eq!(
        first, 300,
        "no acknowledged record lost, offsets stay dense"
    );
    expected.extend(more);
    for m in &members {
        let node = m.node.clone();
        eventually("survivors commit", || node.committed_offset() == 350).await;
        assert_eq!(read_all(&m.addr, 350).await, expected);
    }

    // The crashed member comes back with its disk and catches up.
    let seed = vec![members[0].gossip];
    let back = TestMember::start(dir.path(), old_id, seed).await;
    let node = back.node.clone();
    eventually("the old leader catches up", || {
        node.committed_offset() == 350
    })
    .await;
    assert_eq!(read_all(&back.addr, 350).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_refuses_writes_naming_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_three(dir.path()).await;
    let leader = members.iter().find(|m| m.is_leader()).unwrap();
    let follower = members.iter().find(|m| !m.is_leader()).unwrap();
    let mut raw = Client::connect(&follower.addr).await.unwrap().raw();
    let record = loghouse::proto::Record {
        value: Bytes::from_static(b"x"),
        ..Default::default()
    };
    let status = raw
        .produce(loghouse::proto::ProduceRequest {
            record: Some(record),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let hint = status
        .metadata()
        .get(loghouse::proto::LEADER_ADDR_KEY)
        .unwrap();
    assert_eq!(hint.to_str().unwrap(), leader.addr);
    assert!(
        status.message().contains(&leader.addr),
        "{}",
        status.message()
    );
    let servers = Client::connect(&follower.addr)
        .await
        .unwrap()
        .servers()
        .await
        .unwrap();
    assert_eq!(servers.len(), 3);
    assert_eq!(servers.iter().filter(|s| s.is_leader).count(), 1);
    assert!(servers.iter().all(|s| s.alive && s.is_voter));

    // Until partitions are replicated, a member serves the default topic only, and says so.
    let client = Client::connect_cluster(&leader.addr).await.unwrap();
    let refused = client
        .create_topic("orders", 3, Default::default())
        .await
        .unwrap_err();
    let ClientError::Status(status) = refused else {
        panic!("expected a status, got {refused:?}");
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("default topic"),
        "{}",
        status.message()
    );
    let described = client.describe_topic("").await.unwrap();
    assert_eq!(described.partitions.len(), 1);
    assert_eq!(described.partitions[0].replicas.len(), 3);
    assert_eq!(described.partitions[0].leader, leader.id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_drops_old_records_on_every_member_and_keeps_the_rest_identical() {
    let dir = tempfile::tempdir().unwrap();
    let members = start_three_with(dir.path(), |config| {
        config.segment_bytes_max = 4 * 1024;
        config.record_bytes_max = 1024;
        config.retention_bytes_max = Some(16 * 1024);
        config.retention_check_ms = 100;
    })
    .await;
    let client = Client::connect_cluster(&members[0].addr).await.unwrap();
    let expected: Vec<Bytes> = (0..600)
        .map(|i| Bytes::from(format!("{i:0>100}")))
        .collect();
    for chunk in expected.chunks(20) {
        client.produce_batch(chunk.to_vec()).await.unwrap();
    }
    for m in &members {
        let node = m.node.clone();
        eventually("every replica commits", || node.committed_offset() == 600).await;
        eventually("retention cuts every replica", || {
            node.log().lowest_offset() > 0
        })
        .await;
        let member = Client::connect(&m.addr).await.unwrap();
        let lowest = node.log().lowest_offset();
        assert!(lowest < 600, "retention keeps the newest records");
        let status = member.consume(0).await.unwrap_err();
        assert!(
            matches!(status, loghouse::client::ClientError::Status(s) if s.code() == tonic::Code::OutOfRange)
        );
        // Retention may still be cutting: read the lowest record once the cut holds still.
        let mut lowest = lowest;
        let record = loop {
            match member.consume(lowest).await {
                Ok(record) => break record,
                Err(_) if node.log().lowest_offset() > lowest => {
                    lowest = node.log().lowest_offset()
                }
                Err(error) => panic!("member {} offset {lowest}: {error}", m.id),
            }
        };
        assert_eq!(record.value, expected[lowest as usize], "member {}", m.id);
        let record = member.consume(599).await.unwrap();
        assert_eq!(record.value, expected[599], "member {}", m.id);
    }
    // Writes go on after the purge, at the next dense offset.
    assert_eq!(
        client.produce(Bytes::from_static(b"after")).await.unwrap(),
        600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_refuses_raft_messages_meant_for_another_node_and_garbage() {
    use loghouse::proto::raft::{raft_client::RaftClient, RaftMessage};
    let dir = tempfile::tempdir().unwrap();
    let member = TestMember::start(dir.path(), 1, vec![]).await;
    eventually("node 1 to lead", || member.is_leader()).await;
    let mut raft = RaftClient::connect(format!("http://{}", member.addr))
        .await
        .unwrap();
    let wrong = RaftMessage {
        payload: Bytes::from_static(b"whatever"),
        target_id: 2,
    };
    let status = raft.vote(wrong).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("not node 2"),
        "{}",
        status.message()
    );
    let garbage = RaftMessage {
        payload: Bytes::from_static(b"\xff\xff\xff\xff garbage"),
        target_id: 1,
    };
    let status = raft.append_entries(garbage).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(member.is_leader(), "bad input changes nothing");
}

#[tokio::test]
async fn a_member_refuses_to_advertise_an_address_the_others_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let config = |advertise: &str, gossip: &str| NodeConfig {
        node_id: "1".into(),
        data_dir: dir.path().join("n"),
        cluster: Some(ClusterConfig {
            gossip_listen: gossip.parse().unwrap(),
            advertise_rpc: Some(advertise.into()),
            ..ClusterConfig::default()
        }),
        ..NodeConfig::default()
    };
    for (advertise, gossip) in [
        ("0.0.0.0:7400", "10.1.1.1:7500"),
        ("127.0.0.1:7400", "10.1.1.1:7500"),
    ] {
        let error = start_member(
            config(advertise, gossip),
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            "ignored".into(),
        )
        .await
        .err()
        .expect("refused");
        assert!(error.to_string().contains("advertise"), "{error}");
    }
    let mut relaxed = config("127.0.0.1:7400", "127.0.0.1:0");
    relaxed.sync = "never".into();
    let error = relaxed.validate().unwrap_err().to_string();
    assert!(error.contains("always fsync"), "{error}");
}

/// A follower restarted with every size and batching limit lowered (issue 15) still takes the
/// entries its leader made under the defaults (a 2.7 MiB batch, larger than any of its own
/// limits now), keeps them, and serves their records; the leader bounds new produces by its
/// own limits. Replicated appends and responses are bounded by the hard limits only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_restarted_with_lower_limits_takes_and_serves_entries_made_under_higher_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = start_three(dir.path()).await;
    let at = members.iter().position(|m| !m.is_leader()).unwrap();
    let follower = members.remove(at);
    let follower_id = follower.id;
    follower.kill().await;

    // One ProduceBatch of three 900 KiB records: one Raft entry of about 2.7 MiB.
    let big: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(vec![b'a' + i; 900 * 1024]))
        .collect();
    let client = Client::connect_cluster(&members[0].addr).await.unwrap();
    assert_eq!(client.produce_batch(big.clone()).await.unwrap(), 0);

    let lower = |config: &mut NodeConfig| {
        config.record_bytes_max = 16 * 1024;
        config.segment_bytes_max = 64 * 1024;
        config.index_bytes_max = 1024;
        config.limits.message_bytes_max = 32 * 1024;
        config.limits.consume_bytes_max = 32 * 1024;
        config.limits.batch_records_max = 4;
        config.limits.stream_appends_in_flight_bytes_max = 32 * 1024;
        config.limits.stream_buffer_bytes_max = 32 * 1024;
        let cluster = config.cluster.as_mut().unwrap();
        cluster.entry_bytes_max = 16 * 1024;
        cluster.entry_records_max = 4;
        cluster.replicate_bytes_max = 16 * 1024;
        cluster.payload_entries_max = 2;
    };
    let seed = vec![members[0].gossip];
    let back = TestMember::start_with(dir.path(), follower_id, seed, lower).await;
    let node = back.node.clone();
    eventually("the restarted follower catches up", || {
        node.committed_offset() == 3
    })
    .await;
    // Its own (lowered) limits do not hide what it holds: each record is served whole.
    let member = Client::connect(&back.addr).await.unwrap();
    for (offset, value) in big.iter().enumerate() {
        assert_eq!(&member.consume(offset as u64).await.unwrap().value, value);
    }
    assert_eq!(read_all(&back.addr, 3).await, big);
    // New writes are bounded by the leader's limits (the defaults): a 900 KiB record is still
    // accepted there, and replicated to the lowered follower.
    assert_eq!(client.produce(big[0].clone()).await.unwrap(), 3);
    eventually("the follower takes the next entry", || {
        node.committed_offset() == 4
    })
    .await;
    assert_eq!(member.consume(3).await.unwrap().value, big[0]);
}
