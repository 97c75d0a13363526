//! The workload: producers (Produce, ProduceBatch, ProduceStream) and consumers (Consume at random
//! offsets, following ConsumeStream) on the client node, recording every acknowledgement and
//! every read into the history. Every call runs under a timeout: a node that is down, paused or
//! cut off makes calls fail or time out, never hang the workload.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use loghouse::client::{Client, ClientError};
use loghouse::proto;
use tokio::sync::watch;
use tokio::time::timeout;
use tonic::Code;

use crate::cluster::Shared;
use crate::history::{Phase, Produce, ProduceOutcome, Read, ReadOutcome, StreamSession};
use crate::rng::Rng;
use crate::value::{self, ValueId};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const UNARY_TIMEOUT: Duration = Duration::from_secs(2);
const STREAM_PRODUCE_TIMEOUT: Duration = Duration::from_secs(4);
/// A following stream that delivers nothing for this long is closed and reopened.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Most values in one ProduceBatch or ProduceStream call.
const VALUES_PER_CALL_MAX: u64 = 8;
/// After a stream says DATA_LOSS, how many offsets are read one by one to find the damaged one.
const DATA_LOSS_PROBE_MAX: u64 = 64;

/// What every workload task needs.
#[derive(Clone)]
pub struct Ctx {
    pub shared: Arc<Shared>,
    /// Every server node's gRPC address, by node index.
    pub addrs: Vec<String>,
    /// A Raft cluster (N > 1): writes follow the leader (`Client::connect_cluster`), reads and
    /// streams go to any node.
    pub cluster: bool,
    pub stop: watch::Receiver<bool>,
    /// How large values may be (values stay below the nodes' `record_bytes_max`).
    pub records: Arc<RecordLimits>,
}

/// The record sizes producers draw from. Values stay within `current`, the smallest
/// `record_bytes_max` of the nodes' configurations now (the harness lowers and raises it as the
/// config-drift scenario changes them: whichever node leads accepts them); when a run's configs
/// allow more somewhere (`largest`), a few values go up to that, and a leader with a lower limit
/// refuses them (INVALID_ARGUMENT: a clean refusal, see `ProduceOutcome::Refused`).
#[derive(Debug)]
pub struct RecordLimits {
    pub current: std::sync::atomic::AtomicU32,
    pub largest: u32,
}

impl RecordLimits {
    pub fn new(current: u32, largest: u32) -> Arc<RecordLimits> {
        Arc::new(RecordLimits {
            current: current.into(),
            largest: largest.max(current),
        })
    }

    pub fn set_current(&self, current: u32) {
        self.current
            .store(current, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The outcome of a produce call that got no offset back.
fn failed(reason: &str) -> ProduceOutcome {
    if reason == "InvalidArgument" {
        ProduceOutcome::Refused {
            reason: reason.to_owned(),
        }
    } else {
        ProduceOutcome::Maybe {
            reason: reason.to_owned(),
        }
    }
}

impl Ctx {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn nodes(&self) -> usize {
        self.addrs.len()
    }

    /// One attempt to connect to `node`.
    pub async fn connect_once(&self, node: usize) -> Option<Client> {
        match timeout(CONNECT_TIMEOUT, Client::connect(&self.addrs[node])).await {
            Ok(Ok(client)) => Some(client),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// One attempt to connect a writer: to the standalone node, or to the cluster through a
    /// random node (which tells the client who leads).
    async fn connect_writer(&self, rng: &mut Rng) -> Result<Client, String> {
        if !self.cluster {
            return self
                .connect_once(0)
                .await
                .ok_or_else(|| "connect failed".into());
        }
        let node = rng.below(self.nodes() as u64) as usize;
        match timeout(UNARY_TIMEOUT, Client::connect_cluster(&self.addrs[node])).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(format!("connect via node {node}: {}", status_text(&error))),
            Err(_) => Err(format!("connect via node {node}: timeout")),
        }
    }

    /// A node to read from: any node in a cluster.
    fn pick_node(&self, rng: &mut Rng) -> usize {
        rng.below(self.nodes() as u64) as usize
    }
}

/// Lazily connected clients, one per node.
#[derive(Default)]
pub struct Clients {
    by_node: BTreeMap<usize, Client>,
}

impl Clients {
    /// The client of `node`, connecting (one attempt) when there is none yet.
    pub async fn get(&mut self, ctx: &Ctx, node: usize) -> Option<Client> {
        if let Some(client) = self.by_node.get(&node) {
            return Some(client.clone());
        }
        let client = ctx.connect_once(node).await?;
        self.by_node.insert(node, client.clone());
        Some(client)
    }
}

fn status_text(error: &ClientError) -> String {
    match error {
        ClientError::Status(status) => format!("{:?}", status.code()),
        other => other.to_string(),
    }
}

fn is_data_loss(error: &ClientError) -> bool {
    matches!(error, ClientError::Status(status) if status.code() == Code::DataLoss)
}

fn data_record(value: Bytes) -> proto::Record {
    proto::Record {
        value,
        ..Default::default()
    }
}

/// The leader's address a follower named in its UNAVAILABLE answer to a write.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    let value = status.metadata().get(loghouse::proto::LEADER_ADDR_KEY)?;
    value.to_str().ok().map(str::to_owned)
}

/// A producer: values `ValueId { producer, seq }` for seq = 0, 1, ...
pub struct Producer {
    pub ctx: Ctx,
    pub id: u32,
    pub rng: Rng,
    next_seq: u64,
    /// The client for Produce and ProduceBatch. In a cluster its own calls follow the leader
    /// (retrying on UNAVAILABLE: at-least-once); on a standalone node the producer makes one raw
    /// call per write, so a failed write is appended at most once, as the engine promises.
    client: Option<Client>,
    /// In a cluster, ProduceStream goes to this node (the last leader a follower named, or a
    /// random node), since the client's leader-following covers unary calls only.
    stream_to: Option<(String, Client)>,
    stream_hint: Option<String>,
}

impl Producer {
    pub fn new(ctx: Ctx, id: u32, rng: Rng) -> Self {
        Producer {
            ctx,
            id,
            rng,
            next_seq: 0,
            client: None,
            stream_to: None,
            stream_hint: None,
        }
    }

    /// The writer client, connecting (one attempt) when there is none.
    async fn writer(&mut self) -> Result<Client, String> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = self.ctx.connect_writer(&mut self.rng).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// After a call timed out in a cluster: the client's leader may be cut off or paused, and
    /// the client only moves on after an error it gets back, so start over from a random node.
    fn timed_out(&mut self) {
        if self.ctx.cluster {
            self.client = None;
        }
    }

    /// The client ProduceStream uses: the writer's own connection on a standalone node.
    async fn stream_client(&mut self) -> Result<Client, String> {
        if !self.ctx.cluster {
            return self.writer().await;
        }
        if let Some((_, client)) = &self.stream_to {
            return Ok(client.clone());
        }
        let addr = match self.stream_hint.take() {
            Some(addr) => addr,
            None => self.ctx.addrs[self.ctx.pick_node(&mut self.rng)].clone(),
        };
        match timeout(CONNECT_TIMEOUT, Client::connect(&addr)).await {
            Ok(Ok(client)) => {
                self.stream_to = Some((addr, client.clone()));
                Ok(client)
            }
            _ => Err(format!("connect to {addr} failed")),
        }
    }

    fn next_values(&mut self, count: u64) -> Vec<(ValueId, Bytes)> {
        (0..count)
            .map(|_| {
                let id = ValueId {
                    producer: self.id,
                    seq: self.next_seq,
                };
                self.next_seq += 1;
                // Mostly small values, some close to the limit, so segments roll often.
                let records = &self.ctx.records;
                let mut limit = records.current.load(std::sync::atomic::Ordering::Relaxed);
                if records.largest > limit && self.rng.percent(5) {
                    limit = records.largest;
                }
                let pad_max = (limit as usize - value::encoded_len(0)) as u16;
                let pad = if self.rng.percent(20) {
                    self.rng.below(u64::from(pad_max) + 1)
                } else {
                    self.rng.below(u64::from(pad_max / 8) + 1)
                };
                (id, Bytes::from(value::encode(id, pad as u16)))
            })
            .collect()
    }

    fn record(&self, phase: Phase, id: ValueId, outcome: ProduceOutcome) {
        self.ctx.shared.event(format!("produce {id}: {outcome:?}"));
        self.ctx
            .shared
            .history
            .lock()
            .produces
            .push(Produce { id, phase, outcome });
    }

    fn record_all(&self, phase: Phase, values: &[(ValueId, Bytes)], result: Result<u64, String>) {
        for (i, (id, _)) in values.iter().enumerate() {
            let outcome = match &result {
                Ok(first) => ProduceOutcome::Acked {
                    offset: first + i as u64,
                },
                Err(reason) => failed(reason),
            };
            self.record(phase, *id, outcome);
        }
    }

    /// The safety-phase loop: a random mix of the three produce calls until told to stop.
    pub async fn run(mut self) {
        while !self.ctx.stopped() {
            let acked = match self.rng.below(10) {
                0..=4 => self.produce_one(Phase::Safety).await.is_ok(),
                5..=7 => self.produce_batch().await,
                _ => self.produce_stream().await,
            };
            // Back off after a failure, so a node that is down does not get a storm of calls.
            let pause_ms = if acked {
                self.rng.below(30)
            } else {
                self.rng.between(50, 300)
            };
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }

    /// One Produce call; returns the offset when acknowledged. (No value is drawn, and nothing
    /// recorded, when there is no connection to send it on.)
    pub async fn produce_one(&mut self, phase: Phase) -> Result<u64, String> {
        let client = self.writer().await?;
        let values = self.next_values(1);
        let (id, bytes) = values[0].clone();
        let call = async {
            if self.ctx.cluster {
                return client.produce(bytes).await;
            }
            let record = Some(data_record(bytes));
            let response = client
                .raw()
                .produce(proto::ProduceRequest {
                    record,
                    ..Default::default()
                })
                .await?;
            Ok(response.into_inner().offset)
        };
        let result = match timeout(UNARY_TIMEOUT, call).await {
            Ok(Ok(offset)) => Ok(offset),
            Ok(Err(error)) => Err(status_text(&error)),
            Err(_) => {
                self.timed_out();
                Err("timeout".to_owned())
            }
        };
        let outcome = match &result {
            Ok(offset) => ProduceOutcome::Acked { offset: *offset },
            Err(reason) => failed(reason),
        };
        self.record(phase, id, outcome);
        result
    }

    /// One ProduceBatch call; returns whether it was acknowledged.
    async fn produce_batch(&mut self) -> bool {
        let Ok(client) = self.writer().await else {
            return false;
        };
        let count = self.rng.between(1, VALUES_PER_CALL_MAX);
        let values = self.next_values(count);
        let bytes: Vec<Bytes> = values.iter().map(|(_, b)| b.clone()).collect();
        let call = async {
            if self.ctx.cluster {
                return client.produce_batch(bytes).await;
            }
            let records = bytes.into_iter().map(data_record).collect();
            let request = proto::ProduceBatchRequest {
                records,
                ..Default::default()
            };
            let response = client.raw().produce_batch(request).await?;
            Ok(response.into_inner().first_offset)
        };
        let result = match timeout(UNARY_TIMEOUT, call).await {
            Ok(Ok(first)) => Ok(first),
            Ok(Err(error)) => Err(status_text(&error)),
            Err(_) => {
                self.timed_out();
                Err("timeout".to_owned())
            }
        };
        let acked = result.is_ok();
        self.record_all(Phase::Safety, &values, result);
        acked
    }

    /// Sends a few values on one ProduceStream; the i-th answer acknowledges the i-th value.
    /// Returns whether every value was acknowledged.
    async fn produce_stream(&mut self) -> bool {
        let Ok(client) = self.stream_client().await else {
            return false;
        };
        let count = self.rng.between(1, VALUES_PER_CALL_MAX);
        let values = self.next_values(count);
        let requests: Vec<proto::ProduceRequest> = (values.iter())
            .map(|(_, bytes)| proto::ProduceRequest {
                record: Some(proto::Record {
                    value: bytes.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut offsets: Vec<u64> = Vec::new();
        let call = async {
            let mut responses = client
                .raw()
                .produce_stream(futures::stream::iter(requests))
                .await?
                .into_inner();
            while let Some(response) = responses.message().await? {
                offsets.push(response.offset);
                if offsets.len() == values.len() {
                    break;
                }
            }
            Ok::<(), tonic::Status>(())
        };
        let ending = match timeout(STREAM_PRODUCE_TIMEOUT, call).await {
            Ok(Ok(())) => "stream ended early".to_owned(),
            Ok(Err(status)) => {
                if status.code() == Code::Unavailable {
                    // A follower names the leader: stream there next time.
                    self.stream_hint = leader_hint(&status);
                    self.stream_to = None;
                }
                format!("{:?}", status.code())
            }
            Err(_) => {
                self.stream_to = None;
                "timeout".to_owned()
            }
        };
        for (i, (id, _)) in values.iter().enumerate() {
            let outcome = match offsets.get(i) {
                Some(offset) => ProduceOutcome::Acked { offset: *offset },
                None => ProduceOutcome::Maybe {
                    reason: ending.clone(),
                },
            };
            self.record(Phase::Safety, *id, outcome);
        }
        offsets.len() == values.len()
    }
}

/// Unary Consume at random offsets around what has been acknowledged, on random nodes.
pub async fn reader(ctx: Ctx, mut rng: Rng) {
    let mut clients = Clients::default();
    while !ctx.stopped() {
        let node = ctx.pick_node(&mut rng);
        let Some(client) = clients.get(&ctx, node).await else {
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        };
        let acked_end = ctx.shared.history.lock().acked_end();
        let offset = rng.below(acked_end + 2);
        read_one(&ctx, &client, node, offset).await;
        tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    }
}

/// Consumes one offset on `node` and records what came back.
pub async fn read_one(ctx: &Ctx, client: &Client, node: usize, offset: u64) -> ReadOutcome {
    let answer = timeout(UNARY_TIMEOUT, client.consume(offset)).await;
    if let Ok(Err(error)) = &answer {
        if is_data_loss(error) {
            ctx.shared
                .event(format!("consume {offset} on node {node}: {error}"));
        }
    }
    let outcome = match answer {
        Ok(Ok(record)) if record.offset != offset => ReadOutcome::Value(Err(format!(
            "asked for offset {offset}, got a record saying offset {}",
            record.offset
        ))),
        Ok(Ok(record)) => ReadOutcome::Value(value::decode(&record.value)),
        Ok(Err(error)) if is_data_loss(&error) => ReadOutcome::DataLoss,
        Ok(Err(error)) => ReadOutcome::Error(status_text(&error)),
        Err(_) => ReadOutcome::Error("timeout".into()),
    };
    ctx.shared
        .event(format!("consume {offset} on node {node}: {outcome:?}"));
    ctx.shared.history.lock().reads.push(Read {
        node,
        offset,
        outcome: outcome.clone(),
    });
    outcome
}

/// How a following stream ended.
enum StreamEnd {
    /// Reached `until` (when one was given).
    Reached,
    /// DATA_LOSS at or after this offset.
    DataLoss(u64),
    /// Anything else; reopen from where it got to.
    Other(String),
}

/// A consumer that follows the log with ConsumeStream from offset 0, reopening the stream from
/// where it got to whenever it ends (on a random node each time, in a cluster).
pub async fn follower(ctx: Ctx, consumer: u32, start: u64, mut rng: Rng) {
    let mut clients = Clients::default();
    let mut next = start;
    while !ctx.stopped() {
        let node = ctx.pick_node(&mut rng);
        let Some(client) = clients.get(&ctx, node).await else {
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        };
        let (reached, end) = follow_once(&ctx, &client, node, consumer, next, None).await;
        next = reached;
        match end {
            StreamEnd::DataLoss(at) => next = skip_data_loss(&ctx, &client, node, at).await,
            StreamEnd::Other(_) => tokio::time::sleep(RETRY_DELAY).await,
            StreamEnd::Reached => {}
        }
    }
}

/// Follows until the stream ends, the workload stops, or `until` is reached. Records the session;
/// returns the offset to continue from and how it ended.
async fn follow_once(
    ctx: &Ctx,
    client: &Client,
    node: usize,
    consumer: u32,
    start: u64,
    until: Option<u64>,
) -> (u64, StreamEnd) {
    let request = proto::ConsumeRequest {
        offset: start,
        from_timestamp_ms: None,
        ..Default::default()
    };
    let mut raw = client.raw();
    let mut stream = match timeout(UNARY_TIMEOUT, raw.consume_stream(request)).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) if status.code() == Code::DataLoss => {
            return (start, StreamEnd::DataLoss(start))
        }
        Ok(Err(status)) => {
            return (
                start,
                StreamEnd::Other(format!("open: {:?}", status.code())),
            )
        }
        Err(_) => return (start, StreamEnd::Other("open: timeout".into())),
    };
    let mut session = StreamSession {
        consumer,
        node,
        start,
        delivered: Vec::new(),
        end: String::new(),
    };
    let mut next = start;
    let end = loop {
        if until.is_some_and(|until| next >= until) {
            break StreamEnd::Reached;
        }
        if until.is_none() && ctx.stopped() {
            break StreamEnd::Other("stopped".into());
        }
        match timeout(STREAM_IDLE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(response))) => {
                let Some(record) = response.record else {
                    break StreamEnd::Other("a response without a record".into());
                };
                session
                    .delivered
                    .push((record.offset, value::decode(&record.value)));
                next = record.offset + 1;
            }
            Ok(Ok(None)) => break StreamEnd::Other("closed".into()),
            Ok(Err(status)) if status.code() == Code::DataLoss => break StreamEnd::DataLoss(next),
            Ok(Err(status)) => break StreamEnd::Other(format!("{:?}", status.code())),
            Err(_) => break StreamEnd::Other("idle".into()),
        }
    };
    session.end = match &end {
        StreamEnd::Reached => "reached".into(),
        StreamEnd::DataLoss(at) => format!("DATA_LOSS at or after {at}"),
        StreamEnd::Other(reason) => reason.clone(),
    };
    let delivered = format!("{:?}", session.delivered);
    ctx.shared.event(format!(
        "consumer {consumer} stream from {start} on node {node}: {} records (digest {:016x}), ended: {}",
        session.delivered.len(),
        value::fnv1a(delivered.as_bytes()),
        session.end
    ));
    ctx.shared.history.lock().sessions.push(session);
    (next, end)
}

/// A stream said DATA_LOSS somewhere from `from`: read one by one to find the damaged record(s)
/// and return the offset after the first one found (or `from` when none is, to stream again).
async fn skip_data_loss(ctx: &Ctx, client: &Client, node: usize, from: u64) -> u64 {
    for offset in from..from + DATA_LOSS_PROBE_MAX {
        match read_one(ctx, client, node, offset).await {
            ReadOutcome::DataLoss => return offset + 1,
            ReadOutcome::Value(_) => {}
            ReadOutcome::Error(_) => return offset,
        }
    }
    from + DATA_LOSS_PROBE_MAX
}

/// The liveness follower: streams from `from` (the log's lowest offset: 0 unless retention
/// dropped a prefix) until `until` on `node`, reopening as needed, before `deadline`.
pub async fn follow_to(
    ctx: &Ctx,
    client: &Client,
    node: usize,
    consumer: u32,
    (from, until): (u64, u64),
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut next = from;
    while next < until {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "a stream from offset {from} reached only offset {next} of {until}"
            ));
        }
        let (reached, end) = follow_once(ctx, client, node, consumer, next, Some(until)).await;
        next = reached;
        match end {
            StreamEnd::DataLoss(at) => next = skip_data_loss(ctx, client, node, at).await,
            StreamEnd::Other(_) => tokio::time::sleep(RETRY_DELAY).await,
            StreamEnd::Reached => {}
        }
    }
    Ok(())
}
