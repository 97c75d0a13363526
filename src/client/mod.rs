//! A Rust client for Loghouse, used by the CLI, the benchmark and the tests.
//!
//! It talks to one node, or to a cluster: discovery through GetServers, writes to the leader
//! (following redirects and leader changes), reads optionally spread over the followers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{self, log_client::LogClient, LEADER_ADDR_KEY, WRITES_STOPPED_KEY};

pub use crate::proto::{DescribeTopicResponse, PartitionInfo, Record, Topic, TopicSettings};
pub use crate::security::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server's answer: shown as `CODE_NAME: message` (`PERMISSION_DENIED: nobody is not
    /// permitted to consume on *`). Not a `source`: the text already says all of it.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status(status)
    }
}

/// The canonical name of a gRPC status code, as in the gRPC spec (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ClientError {
    /// The gRPC status code, when the server answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// The cause, when a node refused a write because its log stopped accepting writes after a
    /// failed write or fsync (FAILED_PRECONDITION with `loghouse-writes-stopped` metadata):
    /// retrying does not help, the node must be restarted.
    pub fn writes_stopped(&self) -> Option<&str> {
        match self {
            ClientError::Status(status) => writes_stopped(status),
            _ => None,
        }
    }
}

/// `--ca-cert`, `--cert`, `--key`: how the CLI (and anything else with paths) reaches a TLS
/// node. No `--ca-cert`: plaintext.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM CA certificate the server's certificate must chain to; turns TLS (https) on.
    #[arg(long, env = "LOGHOUSE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for a node that requires one (mutual TLS); its CN is your ACL
    /// subject.
    #[arg(long, env = "LOGHOUSE_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "LOGHOUSE_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

impl TlsOptions {
    /// Reads the files; `None` without a CA (plaintext).
    pub fn load(&self) -> Result<Option<ClientTls>, ClientError> {
        let Some(ca) = &self.ca_cert else {
            if self.cert.is_some() {
                return Err(ClientError::Tls("--cert needs --ca-cert".into()));
            }
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        let tls = ClientTls {
            ca_pem: read(ca)?,
            identity,
        };
        #[cfg(not(madsim))]
        tls.check().map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Some(tls))
    }
}

/// Information about the log, as the server reports it.
pub type LogInfo = proto::GetLogInfoResponse;

/// A client of a node or a cluster.
///
/// Writes go to the leader: a follower's UNAVAILABLE answer names the leader
/// (`loghouse-leader-addr`), and the client retries there; after a transport error it asks the
/// members it knows (GetServers) who leads now. Reads go to the node the client was connected to
/// unless `spread_reads` is on, in which case they rotate over the alive followers.
///
/// Delivery is at-least-once: a write that gets UNAVAILABLE (not the leader, no leader yet, the
/// connection lost) is retried for up to 10 s, so a write whose node (or leader) stored it but
/// failed before answering is stored twice, on a standalone node too. Writes that get an answer
/// are never duplicated. A node whose log stopped accepting writes after a failed write or
/// fsync answers FAILED_PRECONDITION (`ClientError::writes_stopped` gives the cause): that is
/// returned at once, since only restarting the node helps.
#[derive(Clone, Debug)]
pub struct Client {
    inner: LogClient<Channel>,
    cluster: Arc<Mutex<ClusterState>>,
}

#[derive(Debug, Default)]
struct ClusterState {
    /// Address -> channel, for every member used.
    channels: BTreeMap<String, LogClient<Channel>>,
    /// Every member address seen (the seed, and each GetServers answer), to rediscover from.
    known: BTreeSet<String>,
    leader: Option<String>,
    /// Alive non-leaders, for spread reads.
    followers: Vec<String>,
    next_follower: usize,
    spread_reads: bool,
    /// How every member is reached (None: plaintext).
    tls: Option<ClientTls>,
}

/// The largest message the client sends or accepts: one record of the format's largest size,
/// with framing (a response carries at least one record, however large).
const MESSAGE_BYTES_MAX: usize = crate::log::RECORD_BYTES_LIMIT as usize + 1024 * 1024;

/// Value bytes per batch that `follow` asks for. Batches that fit in the CPU's caches are
/// decoded while still warm; multi-megabyte ones are not (measured in README, "Benchmarks").
pub const FOLLOW_BATCH_BYTES: u64 = 256 * 1024;
/// Attempts for one write before its last error is returned.
/// How long a write keeps being retried (through leader elections) before its last error is
/// returned.
const WRITE_RETRY_BUDGET_MS: u64 = 10_000;
/// One write call without an answer this long counts as UNAVAILABLE (a cut-off leader answers
/// after its own commit timeout, 5 s by default; this is the backstop for a silent one).
const CALL_TIMEOUT_MS: u64 = 8_000;
/// How long rediscovery waits for one member's GetServers.
const DISCOVERY_TIMEOUT_MS: u64 = 1_000;
/// Wait before the first retry; doubled each time up to `RETRY_BACKOFF_MAX_MS` (small enough
/// that a write resumes soon after an election ends).
const RETRY_BACKOFF_MS: u64 = 25;
const RETRY_BACKOFF_MAX_MS: u64 = 100;

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`), in plaintext.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, None).await
    }

    /// Connects to `addr`; with `tls`, over TLS (`https`), verifying the server with its CA
    /// and presenting its certificate, if any. Every member the client uses later is reached
    /// the same way.
    pub async fn connect_with(addr: &str, tls: Option<&ClientTls>) -> Result<Client, ClientError> {
        let channel =
            endpoint(addr, tls)?
                .connect()
                .await
                .map_err(|source| ClientError::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
        let inner = log_client(channel);
        let mut cluster = ClusterState {
            tls: tls.cloned(),
            ..ClusterState::default()
        };
        cluster.channels.insert(plain(addr), inner.clone());
        cluster.known.insert(plain(addr));
        cluster.leader = Some(plain(addr));
        Ok(Client {
            inner,
            cluster: Arc::new(Mutex::new(cluster)),
        })
    }

    /// Connects to `addr`, then learns the cluster's members and leader (GetServers). Reads are
    /// spread over the followers (see `spread_reads`).
    pub async fn connect_cluster(addr: &str) -> Result<Client, ClientError> {
        Client::connect_cluster_with(addr, None).await
    }

    /// `connect_cluster`, with TLS as in `connect_with`.
    pub async fn connect_cluster_with(
        addr: &str,
        tls: Option<&ClientTls>,
    ) -> Result<Client, ClientError> {
        let client = Client::connect_with(addr, tls).await?;
        client.refresh(client.inner.clone()).await?;
        client.spread_reads(true);
        Ok(client)
    }

    /// Rotate consumes over the alive followers (the leader when there are none).
    pub fn spread_reads(&self, on: bool) {
        self.cluster.lock().spread_reads = on;
    }

    /// The members, as the first node that answers reports them.
    pub async fn servers(&self) -> Result<Vec<proto::Server>, ClientError> {
        let response = self
            .inner
            .clone()
            .get_servers(proto::GetServersRequest {})
            .await?;
        Ok(response.into_inner().servers)
    }

    /// Asks `via` for the members and remembers the leader and the followers.
    async fn refresh(&self, mut via: LogClient<Channel>) -> Result<(), ClientError> {
        let servers = via
            .get_servers(proto::GetServersRequest {})
            .await?
            .into_inner()
            .servers;
        let mut cluster = self.cluster.lock();
        let addrs = servers.iter().filter(|s| !s.rpc_addr.is_empty());
        cluster.known.extend(addrs.map(|s| plain(&s.rpc_addr)));
        cluster.leader = servers
            .iter()
            .find(|s| s.is_leader)
            .map(|s| plain(&s.rpc_addr));
        cluster.followers = servers
            .iter()
            .filter(|s| !s.is_leader && s.alive && !s.rpc_addr.is_empty())
            .map(|s| plain(&s.rpc_addr))
            .collect();
        Ok(())
    }

    /// A (lazily connected) client for the member at `addr`.
    fn member(&self, addr: &str) -> Result<LogClient<Channel>, ClientError> {
        let mut cluster = self.cluster.lock();
        if let Some(client) = cluster.channels.get(addr) {
            return Ok(client.clone());
        }
        let client = log_client(endpoint(addr, cluster.tls.as_ref())?.connect_lazy());
        cluster.channels.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    fn leader(&self) -> Result<LogClient<Channel>, ClientError> {
        let leader = self.cluster.lock().leader.clone();
        match leader {
            Some(addr) => self.member(&addr),
            None => Ok(self.inner.clone()),
        }
    }

    /// Runs a read on the next follower (when reads are spread); a follower that lags
    /// (OUT_OF_RANGE past its committed offset), cannot be reached, or holds a damaged copy
    /// (DATA_LOSS) is retried on the leader.
    async fn on_reader<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(LogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (reader, is_follower) = self.reader()?;
        match call(reader).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status)
                if is_follower
                    && matches!(
                        status.code(),
                        tonic::Code::OutOfRange | tonic::Code::Unavailable | tonic::Code::DataLoss
                    ) =>
            {
                Ok(call(self.leader()?).await?.into_inner())
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Where the next read goes, and whether that is a follower.
    fn reader(&self) -> Result<(LogClient<Channel>, bool), ClientError> {
        let addr = {
            let mut cluster = self.cluster.lock();
            if !cluster.spread_reads || cluster.followers.is_empty() {
                None
            } else {
                cluster.next_follower = (cluster.next_follower + 1) % cluster.followers.len();
                Some(cluster.followers[cluster.next_follower].clone())
            }
        };
        match addr {
            Some(addr) => Ok((self.member(&addr)?, true)),
            None => Ok((self.inner.clone(), false)),
        }
    }

    /// Runs `call` on the leader, following redirects and leader changes (see the type's docs
    /// for what a retry may duplicate).
    async fn on_leader<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(LogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff_ms = RETRY_BACKOFF_MS;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WRITE_RETRY_BUDGET_MS);
        loop {
            let deadline_call = Duration::from_millis(CALL_TIMEOUT_MS);
            let status = match tokio::time::timeout(deadline_call, call(self.leader()?)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::unavailable(format!(
                    "no answer within {CALL_TIMEOUT_MS} ms (the write may still commit)"
                )),
            };
            // Only UNAVAILABLE is retried (leader changes, lost connections); a node whose
            // writes stopped says so with its own code, and is never retried even if a proxy
            // or an older server turned that into UNAVAILABLE.
            if status.code() != tonic::Code::Unavailable
                || writes_stopped(&status).is_some()
                || tokio::time::Instant::now() >= deadline
            {
                return Err(status.into());
            }
            match leader_hint(&status) {
                Some(addr) => self.cluster.lock().leader = Some(addr),
                None => {
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MAX_MS);
                    self.rediscover().await;
                }
            }
        }
    }

    /// Asks every known member, in turn, who leads now.
    async fn rediscover(&self) {
        let known: Vec<String> = self.cluster.lock().known.iter().cloned().collect();
        for addr in known {
            let Ok(client) = self.member(&addr) else {
                continue;
            };
            let asked = Duration::from_millis(DISCOVERY_TIMEOUT_MS);
            let refreshed = tokio::time::timeout(asked, self.refresh(client)).await;
            if matches!(refreshed, Ok(Ok(()))) && self.cluster.lock().leader.is_some() {
                return;
            }
        }
    }

    /// The generated client, for RPCs this wrapper does not cover.
    pub fn raw(&self) -> LogClient<Channel> {
        self.inner.clone()
    }

    /// Appends one record to the default topic; returns its offset.
    pub async fn produce(&self, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        Ok(self.produce_to(&ProduceTo::default(), value).await?.offset)
    }

    /// Appends one record to `to`'s topic, in the partition it chooses (see `ProduceTo`).
    pub async fn produce_to(
        &self,
        to: &ProduceTo,
        value: impl Into<Bytes>,
    ) -> Result<Produced, ClientError> {
        let record = Some(data_record(value.into()));
        let response = self
            .on_leader(|mut c| {
                let request = proto::ProduceRequest {
                    record: record.clone(),
                    topic: to.topic.clone(),
                    partition: to.partition,
                    key: to.key.clone(),
                };
                async move { c.produce(request).await }
            })
            .await?;
        Ok(Produced {
            partition: response.partition,
            offset: response.offset,
        })
    }

    /// Appends `values` as one batch to the default topic; returns the first offset (the rest
    /// follow densely).
    pub async fn produce_batch(&self, values: Vec<Bytes>) -> Result<u64, ClientError> {
        Ok(self
            .produce_batch_to(&ProduceTo::default(), values)
            .await?
            .first_offset)
    }

    /// Appends `values` as one batch to one partition of `to`'s topic (every record of a batch
    /// goes to the same partition).
    pub async fn produce_batch_to(
        &self,
        to: &ProduceTo,
        values: Vec<Bytes>,
    ) -> Result<ProducedBatch, ClientError> {
        let records: Vec<proto::Record> = values.into_iter().map(data_record).collect();
        let response = self
            .on_leader(|mut c| {
                let request = proto::ProduceBatchRequest {
                    records: records.clone(),
                    topic: to.topic.clone(),
                    partition: to.partition,
                    key: to.key.clone(),
                };
                async move { c.produce_batch(request).await }
            })
            .await?;
        Ok(ProducedBatch {
            partition: response.partition,
            first_offset: response.first_offset,
            count: response.count,
        })
    }

    /// The record at `offset` of the default topic.
    pub async fn consume(&self, offset: u64) -> Result<Record, ClientError> {
        self.consume_at(&TopicPartition::default(), offset).await
    }

    /// The record at `offset` of one partition.
    pub async fn consume_at(
        &self,
        at: &TopicPartition,
        offset: u64,
    ) -> Result<Record, ClientError> {
        let request = proto::ConsumeRequest {
            offset,
            from_timestamp_ms: None,
            topic: at.topic.clone(),
            partition: at.partition,
        };
        let response = self
            .on_reader(|mut c| {
                let request = request.clone();
                async move { c.consume(request).await }
            })
            .await?;
        response
            .record
            .ok_or_else(|| tonic::Status::internal("consume response has no record").into())
    }

    /// Up to `max_records` committed records from `offset` (0 = the server's default) of the
    /// default topic.
    pub async fn consume_batch(
        &self,
        offset: u64,
        max_records: u32,
    ) -> Result<proto::ConsumeBatchResponse, ClientError> {
        self.consume_batch_at(&TopicPartition::default(), offset, max_records)
            .await
    }

    /// `consume_batch` on one partition.
    pub async fn consume_batch_at(
        &self,
        at: &TopicPartition,
        offset: u64,
        max_records: u32,
    ) -> Result<proto::ConsumeBatchResponse, ClientError> {
        let request = proto::ConsumeBatchRequest {
            offset,
            max_records,
            max_bytes: 0,
            from_timestamp_ms: None,
            topic: at.topic.clone(),
            partition: at.partition,
        };
        self.on_reader(|mut c| {
            let request = request.clone();
            async move { c.consume_batch(request).await }
        })
        .await
    }

    /// Every committed record of the default topic from `start`, then new ones as they
    /// commit; never ends by itself. Batches hold up to `FOLLOW_BATCH_BYTES` of values.
    pub async fn follow(
        &self,
        start: Start,
    ) -> Result<impl Stream<Item = Result<Vec<Record>, ClientError>>, ClientError> {
        self.follow_with(start, FOLLOW_BATCH_BYTES).await
    }

    /// `follow` with batches of up to `batch_bytes_max` value bytes (0: the server's limit). A
    /// batch always holds at least one record.
    pub async fn follow_with(
        &self,
        start: Start,
        batch_bytes_max: u64,
    ) -> Result<impl Stream<Item = Result<Vec<Record>, ClientError>>, ClientError> {
        self.follow_at(&TopicPartition::default(), start, batch_bytes_max)
            .await
    }

    /// `follow_with` on one partition of a topic.
    pub async fn follow_at(
        &self,
        at: &TopicPartition,
        start: Start,
        batch_bytes_max: u64,
    ) -> Result<impl Stream<Item = Result<Vec<Record>, ClientError>>, ClientError> {
        let (offset, from_timestamp_ms) = start.split();
        let request = proto::ConsumeBatchRequest {
            offset,
            max_records: 0,
            max_bytes: batch_bytes_max,
            from_timestamp_ms,
            topic: at.topic.clone(),
            partition: at.partition,
        };
        let stream = self.raw().consume_batch_stream(request).await?.into_inner();
        Ok(stream.map(|message| message.map(|m| m.records).map_err(ClientError::from)))
    }

    /// The default topic's offsets and size, and the node's counters.
    pub async fn info(&self) -> Result<LogInfo, ClientError> {
        self.info_at(&TopicPartition::default()).await
    }

    /// One partition's offsets and size, and the node's counters.
    pub async fn info_at(&self, at: &TopicPartition) -> Result<LogInfo, ClientError> {
        Ok(self
            .raw()
            .get_log_info(proto::GetLogInfoRequest {
                topic: at.topic.clone(),
                partition: at.partition,
            })
            .await?
            .into_inner())
    }

    /// The first offset of the default topic appended at or after `timestamp_ms`.
    pub async fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, ClientError> {
        self.offset_for_time_at(&TopicPartition::default(), timestamp_ms)
            .await
    }

    /// `offset_for_time` on one partition.
    pub async fn offset_for_time_at(
        &self,
        at: &TopicPartition,
        timestamp_ms: i64,
    ) -> Result<u64, ClientError> {
        let response = self
            .raw()
            .offset_for_time(proto::OffsetForTimeRequest {
                timestamp_ms,
                topic: at.topic.clone(),
                partition: at.partition,
            })
            .await?;
        Ok(response.into_inner().offset)
    }

    // --- topics (admin); changes go to the leader, like writes ---

    /// Creates a topic with `partitions` partitions (0 means 1) and its own `settings` (absent
    /// fields take the node's). Idempotent: an identical existing topic answers `created`
    /// false; a different one of the same name is ALREADY_EXISTS.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<proto::CreateTopicResponse, ClientError> {
        self.on_leader(|mut c| {
            let request = proto::CreateTopicRequest {
                name: name.to_owned(),
                partitions,
                settings: Some(settings),
            };
            async move { c.create_topic(request).await }
        })
        .await
    }

    /// Deletes a topic and every record in it.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.on_leader(|mut c| {
            let request = proto::DeleteTopicRequest {
                name: name.to_owned(),
            };
            async move { c.delete_topic(request).await }
        })
        .await?;
        Ok(())
    }

    /// The topics the caller may see.
    pub async fn list_topics(&self) -> Result<Vec<Topic>, ClientError> {
        let response = self
            .raw()
            .list_topics(proto::ListTopicsRequest {})
            .await?
            .into_inner();
        Ok(response.topics)
    }

    /// A topic's settings and, per partition, its offsets and size.
    pub async fn describe_topic(
        &self,
        name: &str,
    ) -> Result<proto::DescribeTopicResponse, ClientError> {
        let request = proto::DescribeTopicRequest {
            name: name.to_owned(),
        };
        Ok(self.raw().describe_topic(request).await?.into_inner())
    }

    /// Raises a topic's partition count (never lowers it) and/or changes the settings given
    /// (absent fields stay as they are).
    pub async fn alter_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        settings: TopicSettings,
    ) -> Result<Option<Topic>, ClientError> {
        let response = self
            .on_leader(|mut c| {
                let request = proto::AlterTopicRequest {
                    name: name.to_owned(),
                    partitions,
                    settings: Some(settings),
                };
                async move { c.alter_topic(request).await }
            })
            .await?;
        Ok(response.topic)
    }
}

/// Where a produce goes: a topic ("" is the default topic) and, within it, `partition` when
/// set, else the partition `key` hashes to (when not empty), else one the node picks round
/// robin. `ProduceTo::default()` is the default topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceTo {
    pub topic: String,
    pub partition: Option<u32>,
    /// Chooses the partition only (Kafka's murmur2, `partition_for_key`); not stored.
    pub key: Bytes,
}

impl ProduceTo {
    pub fn topic(topic: impl Into<String>) -> ProduceTo {
        ProduceTo {
            topic: topic.into(),
            ..ProduceTo::default()
        }
    }

    pub fn partition(mut self, partition: u32) -> ProduceTo {
        self.partition = Some(partition);
        self
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> ProduceTo {
        self.key = key.into();
        self
    }
}

/// One partition of a topic, for reads. `TopicPartition::default()` is the default topic's only
/// partition (what the original API reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// Where one produced record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub offset: u64,
}

/// Where a produced batch went: `count` records from `first_offset` in `partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    pub partition: u32,
    pub first_offset: u64,
    pub count: u32,
}

/// The partition a non-empty key goes to (Kafka's murmur2 partitioner), the very function
/// the node uses; `partition_for_key(key, count)` needs `count > 0`.
pub use crate::topic::partition_for_key;

/// Where a consume starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Offset(u64),
    /// The first record appended at or after this time (ms since the Unix epoch).
    TimestampMs(i64),
}

impl Start {
    fn split(self) -> (u64, Option<i64>) {
        match self {
            Start::Offset(offset) => (offset, None),
            Start::TimestampMs(t) => (0, Some(t)),
        }
    }
}

/// The cause a node gives for refusing writes after a failed write or fsync.
fn writes_stopped(status: &tonic::Status) -> Option<&str> {
    status.metadata().get(WRITES_STOPPED_KEY)?.to_str().ok()
}

/// The leader's address from a follower's UNAVAILABLE answer.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(LEADER_ADDR_KEY)?;
    value.to_str().ok().map(plain)
}

/// `host:port` without a scheme (the key under which a member's channel is kept).
fn plain(addr: &str) -> String {
    addr.split_once("://")
        .map_or(addr, |(_, rest)| rest)
        .to_owned()
}

/// The endpoint for `addr`: `https` with TLS (the host must be a name or IP address in the
/// server's certificate), `http` without.
fn endpoint(addr: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    // madsim-tonic has no TLS: plain http there.
    let tls = tls.filter(|_| cfg!(not(madsim)));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = match addr.split_once("://") {
        Some((_, rest)) if tls.is_some() => format!("https://{rest}"),
        Some(_) => addr.to_owned(),
        None => format!("{scheme}://{addr}"),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    #[cfg(not(madsim))]
    let endpoint = endpoint.max_frame_size(crate::codec::HTTP2_FRAME_BYTES_MAX);
    #[cfg(not(madsim))]
    if let Some(tls) = tls {
        return endpoint
            .tls_config(tls.client_config())
            .map_err(|e| ClientError::Tls(e.to_string()));
    }
    Ok(endpoint)
}

fn log_client(channel: Channel) -> LogClient<Channel> {
    LogClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

fn data_record(value: Bytes) -> proto::Record {
    proto::Record {
        value,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_show_the_canonical_code_name_and_the_message() {
        let error = ClientError::from(tonic::Status::permission_denied(
            "nobody is not permitted to consume on *",
        ));
        assert_eq!(
            error.to_string(),
            "PERMISSION_DENIED: nobody is not permitted to consume on *"
        );
        assert!(std::error::Error::source(&error).is_none());
        assert_eq!(code_name(tonic::Code::OutOfRange), "OUT_OF_RANGE");
    }
}
