//! Integration tests over real gRPC on 127.0.0.1 (port 0) with temporary data directories.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

use loghouse::client::{Client, ClientError};
use loghouse::config::NodeConfig;
use loghouse::io::{Disk, DiskFile, MapMut, StdDisk, SystemClock};
use loghouse::metrics::Rpc;
use loghouse::proto;
use loghouse::server::{Node, ServerError};

/// A client generated from the original log.v1 proto alone (tests/original/log.proto).
mod original {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/original/log.v1.rs"));
}

const WAIT: Duration = Duration::from_secs(10);

struct TestNode {
    addr: String,
    /// The served node (for its counters).
    node: Node,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestNode {
    async fn start(dir: &Path, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
        Self::start_on(dir, Arc::new(StdDisk), tweak).await
    }

    async fn start_on(
        dir: &Path,
        disk: Arc<dyn Disk>,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let mut config = NodeConfig {
            data_dir: dir.to_owned(),
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let node = Node::open(config, disk, Arc::new(SystemClock), addr.clone()).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(loghouse::server::serve(node.clone(), listener, async {
            let _ = stopped.await;
        }));
        TestNode {
            addr,
            node,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.addr).await.unwrap()
    }

    /// Graceful shutdown; returns what `serve` returned.
    async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops in time")
            .unwrap()
    }
}

fn values(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

fn code(result: Result<impl std::fmt::Debug, tonic::Status>) -> (Code, String) {
    let status = result.expect_err("the call must fail");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn produce_then_consume_roundtrips_through_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let client = node.client().await;

    assert_eq!(client.produce("zero").await.unwrap(), 0);
    assert_eq!(client.produce_batch(values("batch", 3)).await.unwrap(), 1);
    let record = client.consume(0).await.unwrap();
    assert_eq!((record.offset, &record.value[..]), (0, &b"zero"[..]));
    assert!(record.timestamp_ms > 0, "the server stamps the append time");

    let batch = client.consume_batch(1, 10).await.unwrap();
    let got: Vec<_> = batch
        .records
        .iter()
        .map(|r| (r.offset, r.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, values("batch", 3)[0].clone()),
            (2, values("batch", 3)[1].clone()),
            (3, values("batch", 3)[2].clone())
        ]
    );
    assert_eq!((batch.next_offset, batch.high_watermark), (4, 4));

    // ProduceStream answers in order with consecutive offsets.
    let requests = values("stream", 50)
        .into_iter()
        .map(|value| proto::ProduceRequest {
            record: Some(proto::Record {
                value,
                ..Default::default()
            }),
            ..Default::default()
        });
    let mut responses = client
        .raw()
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(response) = responses.next().await {
        offsets.push(response.unwrap().offset);
    }
    assert_eq!(offsets, (4..54).collect::<Vec<_>>());

    // ConsumeStream delivers every record from the offset asked, in order.
    let request = proto::ConsumeRequest {
        offset: 2,
        from_timestamp_ms: None,
        ..Default::default()
    };
    let mut stream = client
        .raw()
        .consume_stream(request)
        .await
        .unwrap()
        .into_inner();
    for expected in 2..54 {
        let record = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .record
            .unwrap();
        assert_eq!(record.offset, expected);
    }

    let info = client.info().await.unwrap();
    assert_eq!(
        (
            info.lowest_offset,
            info.next_offset,
            info.sync_policy.as_str()
        ),
        (0, 54, "always")
    );
    assert!(info.size_bytes > 0 && info.segment_count >= 1);

    let servers = client
        .raw()
        .get_servers(proto::GetServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    assert!(servers[0].is_leader);
    assert_eq!(servers[0].rpc_addr, node.addr);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn following_streams_receive_records_appended_after_they_started() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    client.produce("before").await.unwrap();

    let request = proto::ConsumeRequest {
        offset: 0,
        from_timestamp_ms: None,
        ..Default::default()
    };
    let mut records = client
        .raw()
        .consume_stream(request)
        .await
        .unwrap()
        .into_inner();
    let mut batches = client
        .follow(loghouse::client::Start::Offset(1))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, records.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.record.unwrap().value, Bytes::from("before"));

    for value in values("after", 20) {
        client.produce(value).await.unwrap();
    }
    for (i, expected) in values("after", 20).into_iter().enumerate() {
        let record = tokio::time::timeout(WAIT, records.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .record
            .unwrap();
        assert_eq!((record.offset, record.value), (i as u64 + 1, expected));
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let batch = tokio::time::timeout(WAIT, batches.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(batch.into_iter().map(|r| r.offset));
    }
    assert_eq!(seen, (1..21).collect::<Vec<_>>());

    // A graceful shutdown ends following streams with UNAVAILABLE instead of waiting for them.
    node.stop().await.unwrap();
    let ended = tokio::time::timeout(WAIT, records.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let ended = tokio::time::timeout(WAIT, batches.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(ended.to_string().contains("shutting down"), "{ended}");
}

#[tokio::test]
async fn consume_from_a_timestamp_starts_at_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    client.produce_batch(values("old", 5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new_first = client.produce_batch(values("new", 5)).await.unwrap();
    let new_ts = client.consume(new_first).await.unwrap().timestamp_ms;
    let old_ts = client.consume(new_first - 1).await.unwrap().timestamp_ms;
    assert!(
        old_ts < new_ts,
        "appends 20 ms apart carry different timestamps"
    );

    assert_eq!(client.offset_for_time(new_ts).await.unwrap(), new_first);
    assert_eq!(client.offset_for_time(0).await.unwrap(), 0);
    assert_eq!(
        client.offset_for_time(i64::MAX).await.unwrap(),
        10,
        "after the last record: the tail"
    );
    let mut stream = client
        .follow(loghouse::client::Start::TimestampMs(new_ts))
        .await
        .unwrap();
    let batch = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch[0].offset, new_first);
    drop(stream);
    node.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_right_status_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| {
        c.record_bytes_max = 1024;
        c.limits.message_bytes_max = 64 * 1024;
        c.limits.consume_bytes_max = 32 * 1024;
        c.limits.batch_records_max = 10;
        c.limits.streams_max = 1;
    })
    .await;
    let client = node.client().await;
    let mut raw = client.raw();
    client.produce_batch(values("ok", 3)).await.unwrap();

    let (c, message) = code(
        raw.consume(proto::ConsumeRequest {
            offset: 3,
            from_timestamp_ms: None,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(c, Code::OutOfRange);
    assert!(
        message.contains("[0, 3)"),
        "the message says the valid range: {message}"
    );
    assert_eq!(
        code(
            raw.consume(proto::ConsumeRequest {
                offset: u64::MAX,
                from_timestamp_ms: None,
                ..Default::default()
            })
            .await
        )
        .0,
        Code::OutOfRange
    );
    let far = proto::ConsumeBatchRequest {
        offset: 100,
        ..Default::default()
    };
    assert_eq!(code(raw.consume_batch(far).await).0, Code::OutOfRange);

    assert_eq!(
        code(
            raw.produce(proto::ProduceRequest {
                record: None,
                ..Default::default()
            })
            .await
        )
        .0,
        Code::InvalidArgument
    );
    let big = proto::Record {
        value: Bytes::from(vec![0u8; 2048]),
        ..Default::default()
    };
    let (c, message) = code(
        raw.produce(proto::ProduceRequest {
            record: Some(big.clone()),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(message.contains("1024"), "{message}");
    let mixed = vec![
        proto::Record {
            value: Bytes::from("fine"),
            ..Default::default()
        },
        big,
    ];
    assert_eq!(
        code(
            raw.produce_batch(proto::ProduceBatchRequest {
                records: mixed,
                ..Default::default()
            })
            .await
        )
        .0,
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            raw.produce_batch(proto::ProduceBatchRequest {
                records: vec![],
                ..Default::default()
            })
            .await
        )
        .0,
        Code::InvalidArgument
    );
    let many = (0..11).map(|_| proto::Record::default()).collect();
    assert_eq!(
        code(
            raw.produce_batch(proto::ProduceBatchRequest {
                records: many,
                ..Default::default()
            })
            .await
        )
        .0,
        Code::ResourceExhausted
    );
    let huge = proto::Record {
        value: Bytes::from(vec![0u8; 100 * 1024]),
        ..Default::default()
    };
    // Over limits.message_bytes_max: tonic refuses it while decoding, before the service runs.
    let (c, _) = code(
        raw.produce(proto::ProduceRequest {
            record: Some(huge),
            ..Default::default()
        })
        .await,
    );
    assert!(
        matches!(c, Code::OutOfRange | Code::ResourceExhausted),
        "{c:?}"
    );

    // A ProduceStream acknowledges the records before a bad one, then fails with its status.
    let requests = [
        Bytes::from("s1"),
        Bytes::from("s2"),
        Bytes::from(vec![0u8; 2048]),
    ]
    .into_iter()
    .map(|value| proto::ProduceRequest {
        record: Some(proto::Record {
            value,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut responses = raw
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(responses.next().await.unwrap().unwrap().offset, 3);
    assert_eq!(responses.next().await.unwrap().unwrap().offset, 4);
    assert_eq!(
        responses.next().await.unwrap().unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(
        responses.next().await.is_none(),
        "the stream ends at its error"
    );
    drop(responses);

    // One stream is allowed; the second is refused while the first is open.
    let open = raw
        .consume_stream(proto::ConsumeRequest {
            offset: 0,
            from_timestamp_ms: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let (c, message) = code(
        raw.consume_stream(proto::ConsumeRequest {
            offset: 0,
            from_timestamp_ms: None,
            ..Default::default()
        })
        .await
        .map(|_| ()),
    );
    assert_eq!(c, Code::ResourceExhausted);
    assert!(message.contains("streams_max"), "{message}");
    drop(open);

    assert_eq!(
        client.info().await.unwrap().next_offset,
        5,
        "no failed request appended anything beyond the two good stream records"
    );
    node.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let small_segments = |c: &mut NodeConfig| {
        c.segment_bytes_max = 4096;
        c.record_bytes_max = 1024;
    };
    let node = TestNode::start(dir.path(), small_segments).await;
    let client = node.client().await;
    let mut expected = Vec::new();
    for round in 0..10 {
        let batch = values(&format!("r{round}"), 20);
        client.produce_batch(batch.clone()).await.unwrap();
        expected.extend(batch);
    }
    node.stop().await.unwrap();

    let node = TestNode::start(dir.path(), small_segments).await;
    let client = node.client().await;
    let info = client.info().await.unwrap();
    assert_eq!(info.next_offset, expected.len() as u64);
    assert!(info.segment_count > 1, "small segments rolled");
    let mut got = Vec::new();
    let mut offset = 0;
    while got.len() < expected.len() {
        let batch = client.consume_batch(offset, 0).await.unwrap();
        offset = batch.next_offset;
        got.extend(batch.records.into_iter().map(|r| r.value));
    }
    assert_eq!(got, expected);
    assert_eq!(
        client.produce("next").await.unwrap(),
        expected.len() as u64,
        "offsets continue densely"
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_get_distinct_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let client = node.client().await;
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..25 {
                offsets.push((
                    client.produce(format!("{producer}-{i}")).await.unwrap(),
                    format!("{producer}-{i}"),
                ));
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(
        all.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    for (offset, value) in all.iter().step_by(17) {
        assert_eq!(
            client.consume(*offset).await.unwrap().value,
            Bytes::from(value.clone())
        );
    }
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_built_from_the_original_proto_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let mut client = original::log_client::LogClient::connect(format!("http://{}", node.addr))
        .await
        .unwrap();
    let got = produce_and_consume_original(&mut client, b"hello".to_vec()).await;
    assert_eq!((got.offset, &got.value[..]), (0, &b"hello"[..]));
    let status = client
        .consume(original::ConsumeRequest { offset: 1 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);

    let requests = (0..3).map(|i| original::ProduceRequest {
        record: Some(original::Record {
            value: format!("s{i}").into_bytes(),
            ..Default::default()
        }),
    });
    let mut responses = client
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(r) = responses.next().await {
        offsets.push(r.unwrap().offset);
    }
    assert_eq!(offsets, vec![1, 2, 3]);
    let mut stream = client
        .consume_stream(original::ConsumeRequest { offset: 1 })
        .await
        .unwrap()
        .into_inner();
    let third = tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&third.record.unwrap().value[..], b"s0");
    let servers = client
        .get_servers(original::GetServersRequest {})
        .await
        .unwrap()
        .into_inner()
        .servers;
    assert_eq!(servers.len(), 1);
    drop(stream);

    // A record far larger than tonic's 8 KiB encode buffer, both ways: the server's codec
    // (src/codec.rs) sizes its buffer up front; tonic's stock codec must read the same bytes.
    let value: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let got = produce_and_consume_original(&mut client, value.clone()).await;
    assert_eq!((got.offset, got.value == value), (4, true));
    node.stop().await.unwrap();
}

/// Produces `value` with the original client's unary Produce and reads it back with Consume.
async fn produce_and_consume_original(
    client: &mut original::log_client::LogClient<tonic::transport::Channel>,
    value: Vec<u8>,
) -> original::Record {
    let record = original::Record {
        value,
        offset: 0,
        term: 0,
        r#type: 0,
    };
    let request = original::ProduceRequest {
        record: Some(record),
    };
    let offset = client.produce(request).await.unwrap().into_inner().offset;
    let response = client.consume(original::ConsumeRequest { offset }).await;
    response.unwrap().into_inner().record.unwrap()
}

#[tokio::test]
async fn health_and_reflection_services_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |_| {}).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest {
        service: "log.v1.Log".into(),
    };
    let status = health.check(request).await.unwrap().into_inner().status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = answer else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"log.v1.Log".to_owned()), "{names:?}");
    node.stop().await.unwrap();
}

/// A disk whose syncs fail, or wait, when told to.
#[derive(Debug, Default)]
struct FlakyDisk {
    inner: StdDisk,
    faults: Arc<SyncFaults>,
}

/// What a `FlakyDisk`'s file syncs do: fail while `fail` is set; wait while `hold` is set
/// (counting in `held` the syncs that started waiting).
#[derive(Debug, Default)]
struct SyncFaults {
    fail: AtomicBool,
    hold: AtomicBool,
    held: AtomicU64,
}

#[derive(Debug)]
struct FlakyFile {
    inner: Arc<dyn DiskFile>,
    faults: Arc<SyncFaults>,
}

impl Disk for FlakyDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FlakyFile {
            inner,
            faults: self.faults.clone(),
        }))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

impl DiskFile for FlakyFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.faults.hold.load(Ordering::SeqCst) {
            // The log syncs on the blocking pool: waiting here stalls only the writer.
            self.faults.held.fetch_add(1, Ordering::SeqCst);
            while self.faults.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if self.faults.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.inner.sync_data()
    }
    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>> {
        self.inner.map_mut(len)
    }
}

impl SyncFaults {
    /// Makes syncs wait until the returned guard is dropped (also when a test fails, so the
    /// runtime is not left waiting for a blocked sync forever).
    fn hold_syncs(self: &Arc<Self>) -> HeldSyncs {
        self.hold.store(true, Ordering::SeqCst);
        HeldSyncs(self.clone())
    }
}

struct HeldSyncs(Arc<SyncFaults>);

impl Drop for HeldSyncs {
    fn drop(&mut self) {
        self.0.hold.store(false, Ordering::SeqCst);
    }
}

/// Waits (a generous deadline, no timing assertion) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn record(value: impl Into<Bytes>) -> proto::Record {
    proto::Record {
        value: value.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn after_a_failed_fsync_writes_get_failed_precondition_naming_the_cause_and_no_retries() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FlakyDisk::default());
    let faults = disk.faults.clone();
    let node = TestNode::start_on(dir.path(), disk, |_| {}).await;
    let client = node.client().await;
    client.produce("durable").await.unwrap();
    assert_eq!(client.info().await.unwrap().writes_stopped, "");

    faults.fail.store(true, Ordering::SeqCst);
    let produce_errors = || node.node.metrics().rpc_errors(Rpc::Produce).get();
    let errors_before = produce_errors();
    let error = client.produce("lost").await.unwrap_err();
    let ClientError::Status(status) = &error else {
        panic!("expected a status, got {error}");
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("injected fsync failure")
            && status.message().contains("restart the node"),
        "the message names the cause and the remedy: {}",
        status.message()
    );
    let cause = error
        .writes_stopped()
        .expect("loghouse-writes-stopped metadata");
    assert!(cause.contains("injected fsync failure"), "{cause}");
    assert_eq!(
        produce_errors() - errors_before,
        1,
        "the client gave up after one call instead of retrying for its budget"
    );

    // Still refused once the disk is fine again: nothing unsynced is trusted until a restart.
    faults.fail.store(false, Ordering::SeqCst);
    let mut raw = client.raw();
    let status = raw
        .produce_batch(proto::ProduceBatchRequest {
            records: vec![record("again")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let metadata = status.metadata().get(proto::WRITES_STOPPED_KEY).unwrap();
    assert!(metadata
        .to_str()
        .unwrap()
        .contains("injected fsync failure"));
    let mut answers = raw
        .produce_stream(futures::stream::iter([proto::ProduceRequest {
            record: Some(record("streamed")),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    let status = answers.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let info = client.info().await.unwrap();
    assert!(
        info.writes_stopped.contains("injected fsync failure"),
        "GetLogInfo names the cause: {:?}",
        info.writes_stopped
    );
    assert_eq!(
        client.consume(0).await.unwrap().value,
        Bytes::from("durable"),
        "reads still work"
    );
    assert_eq!(
        info.next_offset, 1,
        "the failed record was never acknowledged or shown"
    );
    let _ = node.stop().await;
}

/// The node-wide byte bound: while the node holds a whole bound's worth of unacknowledged
/// requests, a unary produce waits, then gets RESOURCE_EXHAUSTED naming the limit, and a
/// ProduceStream is not read; once acknowledged, everything goes through in order.
#[tokio::test]
async fn requests_over_the_node_wide_byte_bound_wait_then_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FlakyDisk::default());
    let faults = disk.faults.clone();
    let node = TestNode::start_on(dir.path(), disk, |c| {
        c.record_bytes_max = 1024;
        c.limits.requests_in_flight_bytes_max = 4096;
        c.limits.admission_wait_ms = 200;
    })
    .await;
    let client = node.client().await;
    client.produce("first").await.unwrap();

    // A batch of 4000 bytes is written; its fsync waits: the node holds 4000 of 4096 bytes.
    let holding = faults.hold_syncs();
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .produce_batch(vec![Bytes::from(vec![b'h'; 1000]); 4])
                .await
        })
    };
    eventually("the batch's fsync started", || {
        faults.held.load(Ordering::SeqCst) > 0
    })
    .await;
    let mut raw = client.raw();
    let over = raw.produce(proto::ProduceRequest {
        record: Some(record(vec![b'u'; 1000])),
        ..Default::default()
    });
    let status = tokio::time::timeout(WAIT, over)
        .await
        .expect("answered while the node is full, not held until there is room")
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("limits.requests_in_flight_bytes_max = 4096"),
        "{}",
        status.message()
    );
    // A stream waits for room (it is not refused): its records go through once there is.
    let stream_values: Vec<Bytes> = (0..10u8)
        .map(|i| Bytes::from(vec![b'a' + i; 1000]))
        .collect();
    let requests = stream_values
        .clone()
        .into_iter()
        .map(|value| proto::ProduceRequest {
            record: Some(record(value)),
            ..Default::default()
        });
    let mut answers = client
        .raw()
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    drop(holding);
    assert_eq!(held.await.unwrap().unwrap(), 1);
    let mut offsets = Vec::new();
    while let Some(answer) = tokio::time::timeout(WAIT, answers.next()).await.unwrap() {
        offsets.push(answer.unwrap().offset);
    }
    assert_eq!(offsets, (5..15).collect::<Vec<_>>());
    for (offset, value) in offsets.iter().zip(&stream_values) {
        assert_eq!(&client.consume(*offset).await.unwrap().value, value);
    }
    assert_eq!(client.produce(vec![b'u'; 1000]).await.unwrap(), 15);
    node.stop().await.unwrap();
}

/// With a bound of a few records, concurrent streams and unary producers all get every record
/// acknowledged, each in its own order; a batch larger than the whole bound is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_under_a_tiny_byte_bound_get_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| {
        c.record_bytes_max = 1024;
        c.limits.requests_in_flight_bytes_max = 4096;
        c.limits.admission_wait_ms = 60_000;
    })
    .await;
    let client = node.client().await;
    let status = client
        .raw()
        .produce_batch(proto::ProduceBatchRequest {
            records: (0..5).map(|_| record(vec![b'x'; 1000])).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("more than this node holds for all requests together")
            && status
                .message()
                .contains("limits.requests_in_flight_bytes_max = 4096"),
        "{}",
        status.message()
    );

    let value = |producer: usize, i: usize| {
        let mut value = format!("{producer}-{i}-").into_bytes();
        value.resize(300 + (i * 37) % 700, b'.');
        Bytes::from(value)
    };
    let mut tasks = Vec::new();
    for producer in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let values: Vec<Bytes> = (0..150).map(|i| value(producer, i)).collect();
            let requests = values
                .clone()
                .into_iter()
                .map(|value| proto::ProduceRequest {
                    record: Some(record(value)),
                    ..Default::default()
                });
            let mut answers = client
                .raw()
                .produce_stream(futures::stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            let mut offsets = Vec::new();
            while let Some(answer) = tokio::time::timeout(WAIT, answers.next()).await.unwrap() {
                offsets.push(answer.unwrap().offset);
            }
            values.into_iter().zip(offsets).collect::<Vec<_>>()
        }));
    }
    for producer in 4..6 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..20 {
                let batch: Vec<Bytes> = (0..3).map(|i| value(producer, round * 3 + i)).collect();
                let first = client.produce_batch(batch.clone()).await.unwrap();
                acknowledged.extend((first..).zip(batch).map(|(o, v)| (v, o)));
            }
            acknowledged
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let acknowledged = task.await.unwrap();
        let offsets: Vec<u64> = acknowledged.iter().map(|(_, o)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "each producer's records are acknowledged in its order"
        );
        all.extend(acknowledged);
    }
    assert_eq!(all.len(), 4 * 150 + 2 * 60, "every record was acknowledged");
    all.sort_by_key(|(_, offset)| *offset);
    assert_eq!(
        all.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        (0..all.len() as u64).collect::<Vec<_>>()
    );
    for (value, offset) in all.iter().step_by(7) {
        assert_eq!(&client.consume(*offset).await.unwrap().value, value);
    }
    node.stop().await.unwrap();
}

/// The node-wide call cap: while a call holds the only slot, another waits
/// `admission_wait_ms`, then gets RESOURCE_EXHAUSTED naming the limit.
#[tokio::test]
async fn calls_over_the_node_wide_cap_are_refused_after_a_bounded_wait() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FlakyDisk::default());
    let faults = disk.faults.clone();
    let node = TestNode::start_on(dir.path(), disk, |c| {
        c.limits.calls_in_flight_max = 1;
        c.limits.admission_wait_ms = 100;
    })
    .await;
    let client = node.client().await;
    let holding = faults.hold_syncs();
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.produce("held").await })
    };
    eventually("the produce's fsync started", || {
        faults.held.load(Ordering::SeqCst) > 0
    })
    .await;
    let status = tokio::time::timeout(WAIT, client.info())
        .await
        .expect("answered while the only slot is taken")
        .unwrap_err();
    let ClientError::Status(status) = status else {
        panic!("expected a status");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.calls_in_flight_max = 1"),
        "{}",
        status.message()
    );
    drop(holding);
    assert_eq!(held.await.unwrap().unwrap(), 0);
    assert_eq!(client.info().await.unwrap().next_offset, 1);
    // Streams hold a slot only while they are set up: one open stream leaves room for calls.
    let _stream = client
        .follow(loghouse::client::Start::Offset(0))
        .await
        .unwrap();
    assert_eq!(client.produce("after").await.unwrap(), 1);
    node.stop().await.unwrap();
}

/// A TCP proxy that forwards both ways until `pause` is set, then stops reading and writing
/// while keeping both connections open: a client that vanished without closing anything.
async fn pausable_proxy(to: String, pause: Arc<AtomicBool>) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut pumps = Vec::new();
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(&to).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            pumps.push(tokio::spawn(pump(client_read, server_write, pause.clone())));
            pumps.push(tokio::spawn(pump(server_read, client_write, pause.clone())));
        }
    });
    (addr, task)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    pause: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            biased;
            _ = wait_until(&pause) => break,
            n = from.read(&mut buf) => n.unwrap_or(0),
        };
        if n == 0 || pause.load(Ordering::SeqCst) || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Paused (or closed): hold both halves open and silent.
    std::future::pending::<()>().await;
    drop((from, to));
}

async fn wait_until(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_vanished_client_has_its_stream_reaped_after_the_keepalive_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| {
        c.limits.streams_max = 1;
        c.limits.http2_keepalive_interval_ms = 200;
        c.limits.http2_keepalive_timeout_ms = 1_000;
    })
    .await;
    let direct = node.client().await;
    direct.produce("first").await.unwrap();
    let pause = Arc::new(AtomicBool::new(false));
    let (proxy_addr, proxy) = pausable_proxy(node.addr.clone(), pause.clone()).await;
    let proxied = Client::connect(&proxy_addr).await.unwrap();
    let mut stream = proxied
        .follow(loghouse::client::Start::Offset(0))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap()[0].value, Bytes::from("first"));
    let refused = direct
        .follow(loghouse::client::Start::Offset(0))
        .await
        .map(drop)
        .unwrap_err();
    assert!(refused.to_string().contains("streams_max"), "{refused}");

    // The proxied client goes silent, its connection still open.
    pause.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reopened = loop {
        match direct.follow(loghouse::client::Start::Offset(0)).await {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(error.to_string().contains("streams_max"), "{error}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the silent client's stream was never reaped"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let first = tokio::time::timeout(WAIT, reopened.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap()[0].value, Bytes::from("first"));
    drop(reopened);
    proxy.abort();
    drop((stream, proxied));
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_produce_stream_with_a_tiny_in_flight_limit_still_answers_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| c.limits.stream_appends_in_flight_max = 2).await;
    produce_stream_answers_in_order(&node, values("tiny", 300)).await;
    node.stop().await.unwrap();
}

#[tokio::test]
async fn a_produce_stream_with_a_byte_window_smaller_than_a_record_still_answers_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| {
        c.limits.stream_appends_in_flight_bytes_max = 100;
    })
    .await;
    // Records of 6-8 bytes share the window; the 1 KiB ones each wait for it to empty.
    let mut records = values("small", 200);
    records.extend((0..20).map(|i| Bytes::from(vec![b'a' + i; 1024])));
    records.extend(values("after", 50));
    produce_stream_answers_in_order(&node, records.clone()).await;
    let client = node.client().await;
    for (offset, value) in records.iter().enumerate() {
        assert_eq!(&client.consume(offset as u64).await.unwrap().value, value);
    }
    node.stop().await.unwrap();
}

/// Sends `values` on one ProduceStream and checks that the answers are offsets 0.. in order.
async fn produce_stream_answers_in_order(node: &TestNode, values: Vec<Bytes>) {
    let client = node.client().await;
    let count = values.len() as u64;
    let requests = values.into_iter().map(|value| proto::ProduceRequest {
        record: Some(proto::Record {
            value,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut responses = client
        .raw()
        .produce_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(response) = tokio::time::timeout(WAIT, responses.next()).await.unwrap() {
        offsets.push(response.unwrap().offset);
    }
    assert_eq!(offsets, (0..count).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stalled_consumer_holds_the_server_to_its_buffer_then_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), |c| c.limits.stream_buffer_messages_max = 2).await;
    let client = node.client().await;
    client.produce("first").await.unwrap();
    // 100 records (~100 KiB) a message; read one, then stop reading.
    let mut batches = client
        .follow_with(loghouse::client::Start::Offset(0), 100 * 1024)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, batches.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap()[0].value, Bytes::from("first"));
    // 40 MiB behind the stalled reader.
    let value = Bytes::from(vec![b'v'; 1024]);
    for _ in 0..40 {
        client
            .produce_batch(vec![value.clone(); 1000])
            .await
            .unwrap();
    }
    // Another reader reads the whole log with ConsumeBatch calls (counted before they answer),
    // which gives an unbounded sender the same server time to read and send it all.
    let mut read = 0;
    while read < 40_001 {
        let batch = client.consume_batch(read, 0).await.unwrap();
        read = batch.next_offset;
    }
    let sent = client.info().await.unwrap().consume_records - 40_001;
    assert!(
        sent < 20_000,
        "the server read and sent {sent} of 40,001 records to a consumer that stopped reading: \
         2 buffered messages and the HTTP/2 windows hold a few thousand"
    );
    let mut next = 1;
    while next < 40_001 {
        let batch = tokio::time::timeout(WAIT, batches.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for record in batch {
            assert_eq!((record.offset, record.value.len()), (next, 1024));
            next += 1;
        }
    }
    node.stop().await.unwrap();
}
