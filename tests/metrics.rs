//! The metrics endpoint over real HTTP, beside real gRPC on 127.0.0.1: scraped during a produce
//! load, its counters match exactly what was produced and consumed; on a 3-member cluster its
//! Raft and gossip gauges agree with the cluster's state.

mod member_support;
use member_support::WAIT;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use loghouse::client::Client;
use loghouse::config::NodeConfig;
use loghouse::io::{StdDisk, SystemClock};
use loghouse::proto;
use loghouse::server::{Node, ServerError};

/// One scrape: `series` (name plus labels, as written) to value.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        match self.0.get(series) {
            Some(v) => *v,
            None => panic!("no series {series} in the scrape"),
        }
    }

    fn try_get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    fn rpc_count(&self, rpc: &str) -> f64 {
        self.get(&format!(
            "loghouse_rpc_duration_seconds_count{{rpc=\"{rpc}\"}}"
        ))
    }
}

/// Parses the text format: every sample line is `series value`; `#` lines are checked to be
/// HELP or TYPE.
fn parse(text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} appears twice"
        );
    }
    Scrape(samples)
}

/// A bare HTTP/1.1 GET; returns the status code, the headers and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the endpoint answers and closes the connection")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, head.to_string(), body.to_string())
}

async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let (status, head, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(&body)
}

/// Starts the metrics endpoint for `node` on a fresh port; it stops when the node shuts down.
async fn start_metrics(node: &Node) -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(loghouse::server::serve_metrics(node.clone(), listener));
    (addr, task)
}

fn value(i: usize, len: usize) -> Bytes {
    let mut v = format!("{i:08}").into_bytes();
    v.resize(len, b'x');
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scraped_counters_match_the_produce_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: dir.path().to_owned(),
        // Small segments, so the load spans several.
        segment_bytes_max: 64 * 1024,
        record_bytes_max: 1024,
        ..NodeConfig::default()
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap().to_string();
    let node = Node::open(
        config,
        Arc::new(StdDisk),
        Arc::new(SystemClock),
        addr.clone(),
    )
    .unwrap();
    let (metrics_addr, metrics_task) = start_metrics(&node).await;
    let (stop, server) = member_support::serve(node.clone(), grpc);

    // Before any load: every counter is there, at zero.
    let before = scrape(metrics_addr).await;
    assert_eq!(before.get("loghouse_produce_records_total"), 0.0);
    assert_eq!(
        before.get("loghouse_partition_produce_records_total{topic=\"default\",partition=\"0\"}"),
        0.0,
        "the partition's series exist from the start"
    );
    assert_eq!(before.rpc_count("Produce"), 0.0);
    assert_eq!(
        before.try_get("loghouse_raft_term"),
        None,
        "standalone: no Raft gauges"
    );

    // The load, all at once: 8 tasks x 25 Produce of 100 bytes, 4 tasks x 5 ProduceBatch of
    // 50 x 200 bytes, one ProduceStream of 300 x 64 bytes.
    const PRODUCERS: usize = 8;
    const PRODUCES: usize = 25;
    const BATCHERS: usize = 4;
    const BATCHES: usize = 5;
    const BATCH: usize = 50;
    const STREAMED: usize = 300;
    let records = PRODUCERS * PRODUCES + BATCHERS * BATCHES * BATCH + STREAMED;
    let bytes = PRODUCERS * PRODUCES * 100 + BATCHERS * BATCHES * BATCH * 200 + STREAMED * 64;
    let mut load = Vec::new();
    for p in 0..PRODUCERS {
        let client = Client::connect(&addr).await.unwrap();
        load.push(tokio::spawn(async move {
            for i in 0..PRODUCES {
                client.produce(value(p * 1000 + i, 100)).await.unwrap();
            }
        }));
    }
    for b in 0..BATCHERS {
        let client = Client::connect(&addr).await.unwrap();
        load.push(tokio::spawn(async move {
            for i in 0..BATCHES {
                let batch = (0..BATCH).map(|j| value(b * 1000 + i * 100 + j, 200));
                client.produce_batch(batch.collect()).await.unwrap();
            }
        }));
    }
    let client = Client::connect(&addr).await.unwrap();
    load.push(tokio::spawn(async move {
        let requests = (0..STREAMED).map(|i| proto::ProduceRequest {
            record: Some(proto::Record {
                value: value(i, 64),
                ..Default::default()
            }),
            ..Default::default()
        });
        let responses = client
            .raw()
            .produce_stream(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let answered: Vec<_> = responses.collect().await;
        assert_eq!(answered.len(), STREAMED);
        assert!(answered.iter().all(Result::is_ok));
    }));

    // Scrape while the load runs: always well-formed, counters never go back or overshoot.
    let mut scrapes = 0;
    let mut last_seen = 0.0;
    while !load.iter().all(JoinHandle::is_finished) {
        let s = scrape(metrics_addr).await;
        let produced = s.get("loghouse_produce_records_total");
        assert!(produced >= last_seen && produced <= records as f64);
        last_seen = produced;
        scrapes += 1;
    }
    for task in load {
        task.await.unwrap();
    }
    assert!(scrapes >= 1);

    let s = scrape(metrics_addr).await;
    assert_eq!(s.get("loghouse_produce_records_total"), records as f64);
    assert_eq!(s.get("loghouse_produce_bytes_total"), bytes as f64);
    assert_eq!(s.rpc_count("Produce"), (PRODUCERS * PRODUCES) as f64);
    assert_eq!(s.rpc_count("ProduceBatch"), (BATCHERS * BATCHES) as f64);
    // ProduceStream is timed per append batch: at least one, at most one per record.
    let stream_batches = s.rpc_count("ProduceStream");
    assert!((1.0..=STREAMED as f64).contains(&stream_batches));
    assert_eq!(
        s.get("loghouse_rpc_duration_seconds_bucket{rpc=\"Produce\",le=\"+Inf\"}"),
        s.rpc_count("Produce")
    );
    assert_eq!(s.get("loghouse_rpc_errors_total{rpc=\"Produce\"}"), 0.0);
    let fsyncs = s.get("loghouse_fsync_total");
    assert!(fsyncs > 0.0);
    assert_eq!(s.get("loghouse_fsync_duration_seconds_count"), fsyncs);
    assert!(s.get("loghouse_fsync_duration_seconds_sum") > 0.0);
    let info = node.log().info();
    assert!(info.segment_count > 1, "the load spans several segments");
    assert_eq!(
        s.get("loghouse_log_segments"),
        f64::from(info.segment_count)
    );
    assert_eq!(s.get("loghouse_log_bytes"), info.size_bytes as f64);
    assert_eq!(s.get("loghouse_log_next_offset"), records as f64);
    assert_eq!(s.get("loghouse_log_committed_offset"), records as f64);
    assert_eq!(s.get("loghouse_log_lowest_offset"), 0.0);
    // The same figures per partition: the default topic's partition 0 is the node's one log.
    let default = |name: &str| s.get(&format!("{name}{{topic=\"default\",partition=\"0\"}}"));
    assert_eq!(
        default("loghouse_partition_produce_records_total"),
        records as f64
    );
    assert_eq!(
        default("loghouse_partition_produce_bytes_total"),
        bytes as f64
    );
    assert_eq!(default("loghouse_partition_consume_records_total"), 0.0);
    assert_eq!(
        default("loghouse_partition_segments"),
        f64::from(info.segment_count)
    );
    assert_eq!(
        default("loghouse_partition_size_bytes"),
        info.size_bytes as f64
    );
    assert_eq!(default("loghouse_partition_next_offset"), records as f64);
    assert_eq!(
        default("loghouse_partition_committed_offset"),
        records as f64
    );
    assert_eq!(default("loghouse_partition_lowest_offset"), 0.0);

    // Consume everything with ConsumeBatch, plus three single Consumes and one that fails.
    let client = Client::connect(&addr).await.unwrap();
    let (mut offset, mut consumed, mut consumed_bytes, mut calls) = (0u64, 0usize, 0usize, 0);
    while offset < records as u64 {
        let batch = client.consume_batch(offset, 0).await.unwrap();
        calls += 1;
        consumed += batch.records.len();
        consumed_bytes += batch.records.iter().map(|r| r.value.len()).sum::<usize>();
        offset = batch.next_offset;
    }
    assert_eq!((consumed, consumed_bytes), (records, bytes));
    for offset in [0, 1, 2] {
        client.consume(offset).await.unwrap();
    }
    assert!(client.consume(records as u64 + 10).await.is_err());
    let s = scrape(metrics_addr).await;
    assert_eq!(
        s.get("loghouse_consume_records_total"),
        (records + 3) as f64
    );
    let first_three: usize = (0..3)
        .map(|o| node.log().read(o).unwrap().value.len())
        .sum();
    assert_eq!(
        s.get("loghouse_consume_bytes_total"),
        (bytes + first_three) as f64
    );
    assert_eq!(
        s.get("loghouse_partition_consume_records_total{topic=\"default\",partition=\"0\"}"),
        (records + 3) as f64
    );
    assert_eq!(
        s.get("loghouse_partition_consume_bytes_total{topic=\"default\",partition=\"0\"}"),
        (bytes + first_three) as f64
    );
    assert_eq!(s.rpc_count("ConsumeBatch"), calls as f64);
    assert_eq!(s.rpc_count("Consume"), 4.0);
    assert_eq!(s.get("loghouse_rpc_errors_total{rpc=\"Consume\"}"), 1.0);

    // `loghouse info` shows the same figures.
    let info = client.info().await.unwrap();
    assert_eq!(info.produce_records, records as u64);
    assert_eq!(info.produce_bytes, bytes as u64);
    assert_eq!(info.consume_records, (records + 3) as u64);
    assert!(info.fsync_count as f64 >= fsyncs);
    assert_eq!(
        f64::from(info.segment_count),
        s.get("loghouse_log_segments")
    );

    // Only /metrics and /healthz.
    assert_eq!(http_get(metrics_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(metrics_addr, "/other").await.0, 404);

    // The endpoint stops with the node.
    let _ = stop.send(());
    tokio::time::timeout(WAIT, server)
        .await
        .expect("the node stops")
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, metrics_task)
        .await
        .expect("the metrics endpoint stops with the node")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(metrics_addr).await.is_err());
}

struct TestMember {
    addr: String,
    node: Node,
    metrics: std::net::SocketAddr,
    gossip: std::net::SocketAddr,
    _membership: loghouse::membership::Membership,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<Result<(), ServerError>>,
}

impl TestMember {
    async fn start(dir: &Path, id: u64, join: Vec<std::net::SocketAddr>) -> TestMember {
        let member_support::Started {
            listener,
            addr,
            gossip,
            member,
        } = member_support::start(dir, id, join, |_| {}).await;
        let (metrics, _) = start_metrics(&member.node).await;
        let (stop, task) = member_support::serve(member.node.clone(), listener);
        TestMember {
            addr,
            node: member.node,
            metrics,
            gossip,
            _membership: member.membership,
            _stop: stop,
            _task: task,
        }
    }
}

/// Scrapes every member until `check` holds for the scrapes, or `WAIT` passes.
async fn scrapes_until(
    members: &[TestMember],
    what: &str,
    check: impl Fn(&[Scrape]) -> bool,
) -> Vec<Scrape> {
    member_support::poll_until(what, || async {
        let mut scrapes = Vec::new();
        for m in members {
            scrapes.push(scrape(m.metrics).await);
        }
        if check(&scrapes) {
            Ok(scrapes)
        } else {
            Err(scrapes)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_gauges_agree_with_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestMember::start(dir.path(), 1, vec![]).await;
    let seed = vec![first.gossip];
    let second = TestMember::start(dir.path(), 2, seed.clone()).await;
    let third = TestMember::start(dir.path(), 3, seed).await;
    let members = vec![first, second, third];
    scrapes_until(&members, "3 voters, all up", |s| {
        s.iter()
            .all(|s| s.try_get("loghouse_gossip_members{state=\"up\"}") == Some(3.0))
            && s.iter()
                .map(|s| s.get("loghouse_raft_is_leader"))
                .sum::<f64>()
                == 1.0
    })
    .await;
    member_support::wait_for_voters(&members[0].addr, 3).await;

    // Load through the cluster client (it finds the leader).
    let client = Client::connect_cluster(&members[1].addr).await.unwrap();
    let (batches, batch) = (10, 20);
    for i in 0..batches {
        let values = (0..batch).map(|j| value(i * 100 + j, 50)).collect();
        client.produce_batch(values).await.unwrap();
    }
    let records = (batches * batch) as f64;

    let scrapes = scrapes_until(&members, "every member to commit and apply it all", |s| {
        let commit = s[0].get("loghouse_raft_commit_index");
        s.iter().all(|s| {
            s.get("loghouse_log_committed_offset") == records
                && s.get("loghouse_raft_commit_index") == commit
                && s.get("loghouse_raft_applied_index") == commit
        }) && s.iter().any(|s| {
            s.get("loghouse_raft_is_leader") == 1.0
                && s.get("loghouse_raft_last_log_index") == commit
        })
    })
    .await;
    let leaders: Vec<_> = scrapes
        .iter()
        .filter(|s| s.get("loghouse_raft_is_leader") == 1.0)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let leader = leaders[0];
    let term = leader.get("loghouse_raft_term");
    let leader_id = leader.get("loghouse_raft_leader_id");
    assert!(term >= 1.0 && leader_id >= 1.0);
    for s in &scrapes {
        assert_eq!(s.get("loghouse_raft_term"), term);
        assert_eq!(s.get("loghouse_raft_leader_id"), leader_id);
        assert!(s.get("loghouse_raft_commit_index") >= batches as f64);
        assert_eq!(s.get("loghouse_gossip_members{state=\"up\"}"), 3.0);
        assert_eq!(s.get("loghouse_gossip_members{state=\"down\"}"), 0.0);
        // Every replica fsyncs what it stores.
        assert!(s.get("loghouse_fsync_total") > 0.0);
    }
    // Only the leader acknowledges producers.
    assert_eq!(leader.get("loghouse_produce_records_total"), records);
    let produced: f64 = scrapes
        .iter()
        .map(|s| s.get("loghouse_produce_records_total"))
        .sum();
    assert_eq!(produced, records);
    assert_eq!(
        leader.get("loghouse_partition_produce_records_total{topic=\"default\",partition=\"0\"}"),
        records
    );
    for s in &scrapes {
        assert_eq!(
            s.get("loghouse_partition_committed_offset{topic=\"default\",partition=\"0\"}"),
            records
        );
    }

    // The leader reports each follower's lag; caught up, it is 0 (openraft's replication
    // metrics follow the acknowledgements, so wait for them).
    let leader_index = scrapes
        .iter()
        .position(|s| s.get("loghouse_raft_is_leader") == 1.0)
        .unwrap();
    let leader_member = &members[leader_index];
    let followers: Vec<u64> = (1..=3)
        .filter(|id| id.to_string() != leader_member.node.config().node_id)
        .collect();
    let lag_series =
        |id: u64| format!("loghouse_raft_replication_lag_entries{{follower=\"{id}\"}}");
    scrapes_until(
        std::slice::from_ref(leader_member),
        "followers caught up",
        |s| {
            followers
                .iter()
                .all(|id| s[0].try_get(&lag_series(*id)) == Some(0.0))
        },
    )
    .await;

    // `cluster status` reads the same figures through GetServers.
    let servers = Client::connect(&leader_member.addr)
        .await
        .unwrap()
        .servers()
        .await
        .unwrap();
    for server in &servers {
        assert_eq!(server.replication_lag, Some(0), "{server:?}");
        assert!(server.alive && !server.suspect, "{server:?}");
        if server.is_leader {
            assert_eq!(
                server.commit_index as f64,
                leader.get("loghouse_raft_commit_index")
            );
            assert_eq!(server.applied_index, server.commit_index);
        }
    }
}
