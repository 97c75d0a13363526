//! The workload: producers (Produce, ProduceBatch, ProduceStream) and consumers (Consume at random
//! offsets, following ConsumeStream) on the client node, recording every acknowledgement and
//! every read into the history. Every call runs under a timeout: a node that is down, paused or
//! cut off makes calls fail or time out, never hang the workload.

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
    pub node: usize,
    pub addr: String,
    pub stop: watch::Receiver<bool>,
    /// Padding of a value is drawn from 0..=pad_max (values stay below record_bytes_max).
    pub pad_max: u16,
}

impl Ctx {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Connects, retrying until it works or the workload stops.
    async fn connect(&self) -> Option<Client> {
        while !self.stopped() {
            match timeout(CONNECT_TIMEOUT, Client::connect(&self.addr)).await {
                Ok(Ok(client)) => return Some(client),
                Ok(Err(_)) | Err(_) => tokio::time::sleep(RETRY_DELAY).await,
            }
        }
        None
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

/// A producer: values `ValueId { producer, seq }` for seq = 0, 1, ...
pub struct Producer {
    pub ctx: Ctx,
    pub id: u32,
    pub rng: Rng,
    next_seq: u64,
}

impl Producer {
    pub fn new(ctx: Ctx, id: u32, rng: Rng) -> Self {
        Producer {
            ctx,
            id,
            rng,
            next_seq: 0,
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
                let pad = if self.rng.percent(20) {
                    self.rng.below(u64::from(self.ctx.pad_max) + 1)
                } else {
                    self.rng.below(u64::from(self.ctx.pad_max / 8) + 1)
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
                Err(reason) => ProduceOutcome::Maybe {
                    reason: reason.clone(),
                },
            };
            self.record(phase, *id, outcome);
        }
    }

    /// The safety-phase loop: a random mix of the three produce calls until told to stop.
    pub async fn run(mut self) {
        let Some(client) = self.ctx.connect().await else {
            return;
        };
        while !self.ctx.stopped() {
            let acked = match self.rng.below(10) {
                0..=4 => self.produce_one(&client, Phase::Safety).await.is_ok(),
                5..=7 => self.produce_batch(&client).await,
                _ => self.produce_stream(&client).await,
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

    /// One Produce call; returns the offset when acknowledged.
    pub async fn produce_one(&mut self, client: &Client, phase: Phase) -> Result<u64, String> {
        let values = self.next_values(1);
        let (id, bytes) = values[0].clone();
        let result = match timeout(UNARY_TIMEOUT, client.produce(bytes)).await {
            Ok(Ok(offset)) => Ok(offset),
            Ok(Err(error)) => Err(status_text(&error)),
            Err(_) => Err("timeout".to_owned()),
        };
        let outcome = match &result {
            Ok(offset) => ProduceOutcome::Acked { offset: *offset },
            Err(reason) => ProduceOutcome::Maybe {
                reason: reason.clone(),
            },
        };
        self.record(phase, id, outcome);
        result
    }

    /// One ProduceBatch call; returns whether it was acknowledged.
    async fn produce_batch(&mut self, client: &Client) -> bool {
        let count = self.rng.between(1, VALUES_PER_CALL_MAX);
        let values = self.next_values(count);
        let bytes = values.iter().map(|(_, b)| b.clone()).collect();
        let result = match timeout(UNARY_TIMEOUT, client.produce_batch(bytes)).await {
            Ok(Ok(first)) => Ok(first),
            Ok(Err(error)) => Err(status_text(&error)),
            Err(_) => Err("timeout".to_owned()),
        };
        let acked = result.is_ok();
        self.record_all(Phase::Safety, &values, result);
        acked
    }

    /// Sends a few values on one ProduceStream; the i-th answer acknowledges the i-th value.
    /// Returns whether every value was acknowledged.
    async fn produce_stream(&mut self, client: &Client) -> bool {
        let count = self.rng.between(1, VALUES_PER_CALL_MAX);
        let values = self.next_values(count);
        let requests: Vec<proto::ProduceRequest> = (values.iter())
            .map(|(_, bytes)| proto::ProduceRequest {
                record: Some(proto::Record {
                    value: bytes.clone(),
                    ..Default::default()
                }),
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
            Ok(Err(status)) => format!("{:?}", status.code()),
            Err(_) => "timeout".to_owned(),
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

/// Unary Consume at random offsets around what has been acknowledged.
pub async fn reader(ctx: Ctx, mut rng: Rng) {
    let Some(client) = ctx.connect().await else {
        return;
    };
    while !ctx.stopped() {
        let acked_end = ctx.shared.history.lock().acked_end();
        let offset = rng.below(acked_end + 2);
        read_one(&ctx, &client, offset).await;
        tokio::time::sleep(Duration::from_millis(rng.below(50))).await;
    }
}

/// Consumes one offset and records what came back.
pub async fn read_one(ctx: &Ctx, client: &Client, offset: u64) -> ReadOutcome {
    let answer = timeout(UNARY_TIMEOUT, client.consume(offset)).await;
    if let Ok(Err(error)) = &answer {
        if is_data_loss(error) {
            ctx.shared.event(format!("consume {offset}: {error}"));
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
    ctx.shared.event(format!("consume {offset}: {outcome:?}"));
    ctx.shared.history.lock().reads.push(Read {
        node: ctx.node,
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
/// where it got to whenever it ends.
pub async fn follower(ctx: Ctx, consumer: u32, start: u64) {
    let Some(client) = ctx.connect().await else {
        return;
    };
    let mut next = start;
    while !ctx.stopped() {
        let (reached, end) = follow_once(&ctx, &client, consumer, next, None).await;
        next = reached;
        match end {
            StreamEnd::DataLoss(at) => next = skip_data_loss(&ctx, &client, at).await,
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
    consumer: u32,
    start: u64,
    until: Option<u64>,
) -> (u64, StreamEnd) {
    let request = proto::ConsumeRequest {
        offset: start,
        from_timestamp_ms: None,
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
        node: ctx.node,
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
        "consumer {consumer} stream from {start}: {} records (digest {:016x}), ended: {}",
        session.delivered.len(),
        value::fnv1a(delivered.as_bytes()),
        session.end
    ));
    ctx.shared.history.lock().sessions.push(session);
    (next, end)
}

/// A stream said DATA_LOSS somewhere from `from`: read one by one to find the damaged record(s)
/// and return the offset after the first one found (or `from` when none is, to stream again).
async fn skip_data_loss(ctx: &Ctx, client: &Client, from: u64) -> u64 {
    for offset in from..from + DATA_LOSS_PROBE_MAX {
        match read_one(ctx, client, offset).await {
            ReadOutcome::DataLoss => return offset + 1,
            ReadOutcome::Value(_) => {}
            ReadOutcome::Error(_) => return offset,
        }
    }
    from + DATA_LOSS_PROBE_MAX
}

/// The liveness follower: streams from 0 until `until`, reopening as needed, before `deadline`.
pub async fn follow_to(
    ctx: &Ctx,
    client: &Client,
    consumer: u32,
    until: u64,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let mut next = 0;
    while next < until {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "a stream from offset 0 reached only offset {next} of {until}"
            ));
        }
        let (reached, end) = follow_once(ctx, client, consumer, next, Some(until)).await;
        next = reached;
        match end {
            StreamEnd::DataLoss(at) => next = skip_data_loss(ctx, client, at).await,
            StreamEnd::Other(_) => tokio::time::sleep(RETRY_DELAY).await,
            StreamEnd::Reached => {}
        }
    }
    Ok(())
}
