//! Topics from the node's side, over real gRPC against an in-process node: durability across
//! restarts, the upgrade from a one-log data directory, the ACL's topic objects, the node's
//! limits and the status codes, a topic's own settings in force.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

use loghouse::client::{Client, ClientError, ProduceTo, TopicPartition, TopicSettings};
use loghouse::config::NodeConfig;
use loghouse::io::{StdDisk, SystemClock};
use loghouse::log::{Log, LogConfig, NewRecord};
use loghouse::security::{AclText, Secrets};
use loghouse::server::{Node, ServerError};

const MODEL: &str = include_str!("../examples/acl/model.conf");

struct Served {
    addr: String,
    node: Node,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Served {
    async fn start(dir: &Path, tweak: impl FnOnce(&mut NodeConfig)) -> Served {
        let mut config = NodeConfig {
            data_dir: dir.to_owned(),
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = Node::open(
            config,
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            addr.clone(),
        )
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(loghouse::server::serve(node.clone(), listener, async {
            let _ = stopped.await;
        }));
        Served {
            addr,
            node,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.addr).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the node stops in time")
            .unwrap()
            .unwrap();
    }
}

fn status(result: Result<impl std::fmt::Debug, ClientError>) -> (Code, String) {
    match result {
        Err(ClientError::Status(status)) => (status.code(), status.message().to_owned()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

async fn values_of(client: &Client, topic: &str, partition: u32) -> Vec<Bytes> {
    let info = client
        .describe_topic(topic)
        .await
        .unwrap()
        .partitions
        .into_iter()
        .find(|p| p.partition == partition)
        .unwrap();
    let at = TopicPartition::new(topic, partition);
    let mut out = Vec::new();
    for offset in info.lowest_offset..info.next_offset {
        out.push(client.consume_at(&at, offset).await.unwrap().value);
    }
    out
}

#[tokio::test]
async fn topics_and_their_records_survive_a_restart_and_a_deleted_one_stays_gone() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    client
        .create_topic("orders", 3, TopicSettings::default())
        .await
        .unwrap();
    client
        .create_topic("doomed", 2, TopicSettings::default())
        .await
        .unwrap();
    for p in 0..3 {
        let to = ProduceTo::topic("orders").partition(p);
        for i in 0..5 {
            client
                .produce_to(&to, value(&format!("o{p}-{i}")))
                .await
                .unwrap();
        }
    }
    client
        .produce_to(&ProduceTo::topic("doomed"), value("bye"))
        .await
        .unwrap();
    client.produce(value("plain")).await.unwrap();
    client.delete_topic("doomed").await.unwrap();
    let (code, message) = status(client.describe_topic("doomed").await);
    assert_eq!(code, Code::NotFound);
    assert!(
        message.contains("default") && message.contains("orders"),
        "{message}"
    );
    node.stop().await;

    let node = Served::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    let names: Vec<String> = (client.list_topics().await.unwrap().into_iter())
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["default", "orders"]);
    for p in 0..3 {
        let expected: Vec<Bytes> = (0..5).map(|i| value(&format!("o{p}-{i}"))).collect();
        assert_eq!(values_of(&client, "orders", p).await, expected);
    }
    assert_eq!(client.consume(0).await.unwrap().value, value("plain"));
    assert!(!dir.path().join("topics/doomed").exists());
    // A stream following a topic that is deleted ends with NOT_FOUND, not as if complete.
    client
        .create_topic("brief", 1, TopicSettings::default())
        .await
        .unwrap();
    let at = TopicPartition::new("brief", 0);
    let start = loghouse::client::Start::Offset(0);
    let mut following = Box::pin(client.follow_at(&at, start, 0).await.unwrap());
    client.delete_topic("brief").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), following.next())
        .await
        .expect("the stream ends");
    match ended {
        Some(Err(ClientError::Status(status))) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}")
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    // A topic of a deleted one's name starts empty.
    client
        .create_topic("doomed", 1, TopicSettings::default())
        .await
        .unwrap();
    assert!(values_of(&client, "doomed", 0).await.is_empty());
    node.stop().await;
}

#[tokio::test]
async fn a_one_log_data_directory_opens_as_the_default_topic_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    // What every version before topics wrote: one log in `<data_dir>/log`, no catalog.
    {
        let log = Log::open(
            Arc::new(StdDisk),
            Arc::new(SystemClock),
            LogConfig::new(dir.path().join("log")),
        )
        .unwrap();
        let records: Vec<NewRecord> = (0..100)
            .map(|i| NewRecord {
                term: 0,
                kind: 0,
                value: value(&format!("old-{i}")),
            })
            .collect();
        log.append(&records).unwrap();
        log.close().unwrap();
    }
    let node = Served::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    let described = client.describe_topic("").await.unwrap();
    assert_eq!(described.topic.unwrap().name, "default");
    assert_eq!(described.partitions[0].next_offset, 100);
    for i in [0u64, 57, 99] {
        assert_eq!(
            client.consume(i).await.unwrap().value,
            value(&format!("old-{i}"))
        );
    }
    assert_eq!(client.produce(value("new")).await.unwrap(), 100);
    assert!(dir.path().join("topics.catalog").exists());
    node.stop().await;
}

#[tokio::test]
async fn bad_names_limits_and_unknown_partitions_get_clear_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), |c| {
        c.limits.topics_max = 3;
        c.limits.partitions_max = 6;
    })
    .await;
    let client = node.client().await;
    let none = TopicSettings::default();
    for bad in ["a b", "x/y", "..", &"n".repeat(250)] {
        assert_eq!(
            status(client.create_topic(bad, 1, none).await).0,
            Code::InvalidArgument,
            "{bad}"
        );
    }
    client.create_topic("a", 2, none).await.unwrap();
    let (code, message) = status(client.create_topic("b", 4, none).await);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("limits.partitions_max"), "{message}");
    client.create_topic("b", 1, none).await.unwrap();
    let (code, message) = status(client.create_topic("c", 1, none).await);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("limits.topics_max"), "{message}");
    let (code, message) = status(client.alter_topic("a", Some(1), none).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("never lowered"), "{message}");
    let (code, message) = status(client.consume_at(&TopicPartition::new("a", 2), 0).await);
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("partitions 0 to 1"), "{message}");
    let (code, _) = status(
        client
            .produce_to(&ProduceTo::topic("nope"), value("x"))
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert_eq!(
        status(client.delete_topic("default").await).0,
        Code::FailedPrecondition
    );
    let bad_setting = TopicSettings {
        segment_bytes_max: Some(1),
        ..none
    };
    assert_eq!(
        status(client.create_topic("d", 1, bad_setting).await).0,
        Code::InvalidArgument
    );
    // Nothing refused changed anything.
    let names: Vec<String> = (client.list_topics().await.unwrap().into_iter())
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b", "default"]);
    node.stop().await;
}

#[tokio::test]
async fn a_topics_own_record_limit_and_retention_are_in_force_and_can_change() {
    let dir = tempfile::tempdir().unwrap();
    let node = Served::start(dir.path(), |c| c.retention_check_ms = 50).await;
    let client = node.client().await;
    let small = TopicSettings {
        record_bytes_max: Some(100),
        ..TopicSettings::default()
    };
    client.create_topic("small", 1, small).await.unwrap();
    let to = ProduceTo::topic("small");
    let big = Bytes::from(vec![7u8; 200]);
    assert_eq!(
        status(client.produce_to(&to, big.clone()).await).0,
        Code::InvalidArgument
    );
    // The default topic keeps the node's limit.
    client.produce(big.clone()).await.unwrap();
    let raised = TopicSettings {
        record_bytes_max: Some(1000),
        ..TopicSettings::default()
    };
    client.alter_topic("small", None, raised).await.unwrap();
    client.produce_to(&to, big.clone()).await.unwrap();

    // Retention set later, with small segments, drops old segments of that topic only.
    let retained = TopicSettings {
        segment_bytes_max: Some(4096),
        retention_bytes_max: Some(8192),
        ..TopicSettings::default()
    };
    client.alter_topic("small", None, retained).await.unwrap();
    for _ in 0..100 {
        client.produce_to(&to, big.clone()).await.unwrap();
    }
    // Retention runs every 50 ms, during the produces too: wait for a pass after the last one.
    let (mut lowest, mut size) = (0, u64::MAX);
    for _ in 0..100 {
        let described = client.describe_topic("small").await.unwrap();
        (lowest, size) = (
            described.partitions[0].lowest_offset,
            described.partitions[0].size_bytes,
        );
        if lowest > 0 && size <= 8192 + 4096 + 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lowest > 0, "retention dropped the topic's oldest segments");
    assert!(size <= 8192 + 4096 + 1024, "retention keeps ~8 KiB: {size}");
    assert_eq!(client.consume(0).await.unwrap().value, big);
    let effective = (client.describe_topic("small").await.unwrap().topic)
        .unwrap()
        .effective
        .unwrap();
    assert_eq!(effective.record_bytes_max, Some(1000));
    assert_eq!(effective.retention_bytes_max, Some(8192));
    node.stop().await;
}

#[tokio::test]
async fn the_acl_object_is_the_topic_and_star_still_grants_every_topic() {
    let dir = tempfile::tempdir().unwrap();
    // Without TLS every caller is "anonymous": the policy is what differs between nodes.
    let acl = |policy: &str| {
        let policy = policy.to_owned();
        move |c: &mut NodeConfig| {
            c.secrets = Secrets {
                acl: Some(AclText {
                    model: MODEL.into(),
                    policy,
                }),
                ..Secrets::default()
            }
        }
    };
    let setup = Served::start(dir.path(), |_| {}).await;
    let client = setup.client().await;
    for name in ["orders", "audit"] {
        client
            .create_topic(name, 1, TopicSettings::default())
            .await
            .unwrap();
    }
    setup.stop().await;

    let node = Served::start(
        dir.path(),
        acl("p, anonymous, orders, produce\np, anonymous, orders, consume\n"),
    )
    .await;
    let client = node.client().await;
    client
        .produce_to(&ProduceTo::topic("orders"), value("ok"))
        .await
        .unwrap();
    let (code, message) = status(
        client
            .produce_to(&ProduceTo::topic("audit"), value("no"))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("audit"), "{message}");
    let (code, message) = status(client.produce(value("no")).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(
        message.ends_with("on *"),
        "the default topic's refusal names *: {message}"
    );
    assert_eq!(
        status(
            client
                .create_topic("new", 1, TopicSettings::default())
                .await
        )
        .0,
        Code::PermissionDenied,
        "creating needs admin"
    );
    let names: Vec<String> = (client.list_topics().await.unwrap().into_iter())
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        ["orders"],
        "a caller lists what it may consume or admin"
    );
    node.stop().await;

    let node = Served::start(
        dir.path(),
        acl("p, anonymous, *, admin\np, anonymous, *, produce\n"),
    )
    .await;
    let client = node.client().await;
    client
        .produce_to(&ProduceTo::topic("audit"), value("ok"))
        .await
        .unwrap();
    client
        .create_topic("new", 1, TopicSettings::default())
        .await
        .unwrap();
    client.delete_topic("new").await.unwrap();
    assert_eq!(client.list_topics().await.unwrap().len(), 3);
    assert!(node.node.topics().get("new").is_err());
    node.stop().await;
}

#[tokio::test]
async fn a_creation_that_fails_part_way_can_be_retried_and_loses_nothing() {
    use loghouse::io::{SimDisk, SimDiskFaults};
    use loghouse::log::NewRecord;
    let disk = Arc::new(SimDisk::new(7));
    let config = NodeConfig {
        data_dir: "/data".into(),
        ..NodeConfig::default()
    };
    let open = || {
        Node::open(
            config.clone(),
            disk.clone(),
            Arc::new(SystemClock),
            "127.0.0.1:0".into(),
        )
        .unwrap()
    };
    let node = open();
    // One disk call in 50 fails: creations fail part way (some partitions' logs opened).
    disk.set_faults(SimDiskFaults {
        io_error_per_million: 20_000,
        ..SimDiskFaults::default()
    });
    let mut failed = 0;
    loop {
        match node.topics().create("flaky", 8, Default::default()).await {
            Ok(_) => break,
            Err(error) => {
                failed += 1;
                eprintln!("create failed: {error}");
            }
        }
        assert!(failed < 200, "a creation gets through eventually");
    }
    disk.set_faults(SimDiskFaults::default());
    assert!(failed > 0, "some creations failed part way");
    let topic = node.topics().get("flaky").unwrap();
    for (p, partition) in topic.partitions().into_iter().enumerate() {
        let records = vec![NewRecord::data(Bytes::from(format!("p{p}")))];
        partition
            .submit(records, None)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    node.shutdown().await.unwrap();
    drop(node);

    let node = open();
    let topic = node.topics().get("flaky").unwrap();
    assert_eq!(topic.partition_count(), 8);
    for (p, partition) in topic.partitions().into_iter().enumerate() {
        assert_eq!(partition.committed_offset(), 1, "partition {p}");
        assert_eq!(partition.log().read(0).unwrap().value, format!("p{p}"));
    }
    node.shutdown().await.unwrap();
}
