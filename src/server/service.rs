//! `log.v1.Log` on top of a `Node`.
//!
//! Consumers only ever see committed records (below `Node::committed_offset`). Following streams
//! read in batches and wait on the committed-offset watch when caught up; they end when the client
//! goes away. Each stream holds a bounded channel, so a slow consumer makes the server wait (HTTP/2
//! flow control), never buffer without bound.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, Stream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::DESCRIBE;
use super::convert::{record_to_proto, status_from_log_error};
use super::node::Node;
use crate::log::{LogError, NewRecord, Record};
use crate::proto::{self, log_server};
use crate::security::Action;

type ResponseStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send + 'static>>;

#[derive(Clone, Debug)]
pub struct LogService {
    node: Node,
}

impl LogService {
    pub fn new(node: Node) -> Self {
        LogService { node }
    }

    /// The one authorization check every RPC starts with (see `server::auth`).
    fn authorize<T>(&self, request: &Request<T>, action: Action) -> Result<(), Status> {
        self.node.guard().authorize(request, action).map(drop)
    }

    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.node.try_acquire_stream().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many open streams on this node (limits.streams_max = {})",
                self.node.config().limits.streams_max
            ))
        })
    }

    /// Reads committed records from `offset`, within the node's limits and the request's.
    fn read_committed(
        &self,
        offset: u64,
        records_max: u32,
        bytes_max: u64,
    ) -> Result<Vec<Record>, Status> {
        let committed = self.node.committed_offset();
        check_readable(self.node.log().lowest_offset(), committed, offset)?;
        if offset == committed {
            return Ok(Vec::new());
        }
        let (records_max, bytes_max) = self.clamp(records_max, bytes_max);
        // Never read past the committed offset (those records are not consumer-visible).
        let records_max = records_max.min((committed - offset) as usize);
        self.node
            .log()
            .read_batch(offset, records_max, bytes_max)
            .map_err(status_from_log_error)
    }

    fn clamp(&self, records_max: u32, bytes_max: u64) -> (usize, usize) {
        let limits = &self.node.config().limits;
        let pick = |asked: u64, limit: u64| if asked == 0 { limit } else { asked.min(limit) };
        (
            pick(records_max.into(), limits.consume_records_max.into()) as usize,
            pick(bytes_max, limits.consume_bytes_max) as usize,
        )
    }

    /// Where a consume that may name a timestamp starts.
    fn start_offset(&self, offset: u64, from_timestamp_ms: Option<i64>) -> Result<u64, Status> {
        match from_timestamp_ms {
            Some(t) => self
                .node
                .log()
                .offset_for_time(t)
                .map_err(status_from_log_error),
            None => Ok(offset),
        }
    }

    fn new_record(&self, record: Option<proto::Record>) -> Result<NewRecord, Status> {
        let record =
            record.ok_or_else(|| Status::invalid_argument("produce request has no record"))?;
        let max = self.node.config().record_bytes_max;
        if record.value.len() as u64 > max as u64 {
            return Err(status_from_log_error(LogError::RecordTooLarge {
                len: record.value.len() as u64,
                max,
            }));
        }
        Ok(client_record(record.value))
    }

    /// Spawns a task that follows the committed tail from `offset`, turning each batch read into
    /// messages with `to_messages`, and returns the stream of those messages.
    fn follow<M, F>(
        &self,
        offset: u64,
        records_max: u32,
        bytes_max: u64,
        message_bytes_max: u64,
        to_messages: F,
    ) -> Result<ResponseStream<M>, Status>
    where
        M: Send + 'static,
        F: Fn(Vec<Record>, u64) -> Vec<M> + Send + 'static,
    {
        let slot = self.stream_slot()?;
        // A start beyond the tail is fine: the stream waits for the log to reach it.
        let lowest = self.node.log().lowest_offset();
        if offset < lowest {
            check_readable(lowest, self.node.committed_offset(), offset)?;
        }
        let limits = &self.node.config().limits;
        let buffered_messages_max = (limits.stream_buffer_bytes_max / message_bytes_max.max(1))
            .clamp(1, limits.stream_buffer_messages_max as u64);
        let (tx, rx) = mpsc::channel(buffered_messages_max as usize);
        let service = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            service
                .follow_loop(offset, records_max, bytes_max, tx, to_messages)
                .await;
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn follow_loop<M, F>(
        &self,
        mut offset: u64,
        records_max: u32,
        bytes_max: u64,
        tx: mpsc::Sender<Result<M, Status>>,
        to_messages: F,
    ) where
        F: Fn(Vec<Record>, u64) -> Vec<M>,
    {
        let mut committed = self.node.watch_committed();
        let stopping = self.node.stopping();
        tokio::pin!(stopping);
        loop {
            if self.node.is_stopping() {
                let _ = tx.send(Err(shutting_down())).await;
                return;
            }
            let high_watermark = *committed.borrow_and_update();
            if offset < high_watermark {
                let records = match self.read_committed(offset, records_max, bytes_max) {
                    Ok(records) => records,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let Some(last) = records.last() else { continue };
                offset = last.offset + 1;
                for message in to_messages(records, high_watermark) {
                    if tx.send(Ok(message)).await.is_err() {
                        return; // the client went away
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = &mut stopping => {}
                changed = committed.changed() => if changed.is_err() { return },
            }
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the node is shutting down; reconnect and resume from the next offset")
}

/// A record as a client sends it: the server assigns offset, term and timestamp; `type` is
/// reserved for the server's own (Raft) records and ignored.
fn client_record(value: Bytes) -> NewRecord {
    NewRecord {
        term: 0,
        kind: 0,
        value,
    }
}

/// OUT_OF_RANGE unless `lowest <= offset <= committed` (the tail itself reads as empty).
fn check_readable(lowest: u64, committed: u64, offset: u64) -> Result<(), Status> {
    if offset < lowest || offset > committed {
        return Err(status_from_log_error(LogError::OffsetOutOfRange {
            offset,
            lowest,
            next: committed,
        }));
    }
    Ok(())
}

#[tonic::async_trait]
impl log_server::Log for LogService {
    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        self.authorize(&request, Action::Produce)?;
        let record = self.new_record(request.into_inner().record)?;
        let range = self.node.append(vec![record]).await?;
        Ok(Response::new(proto::ProduceResponse {
            offset: range.start,
        }))
    }

    async fn consume(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<proto::ConsumeResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let offset = request.into_inner().offset;
        let (lowest, committed) = (
            self.node.log().lowest_offset(),
            self.node.committed_offset(),
        );
        if offset >= committed {
            return Err(status_from_log_error(LogError::OffsetOutOfRange {
                offset,
                lowest,
                next: committed,
            }));
        }
        check_readable(lowest, committed, offset)?;
        let record = self
            .node
            .log()
            .read(offset)
            .map_err(status_from_log_error)?;
        Ok(Response::new(proto::ConsumeResponse {
            record: Some(record_to_proto(record)),
        }))
    }

    type ConsumeStreamStream = ResponseStream<proto::ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let offset = self.start_offset(request.offset, request.from_timestamp_ms)?;
        let record_message_bytes = u64::from(self.node.config().record_bytes_max) + 64;
        let stream = self.follow(offset, 0, 0, record_message_bytes, |records, _| {
            records
                .into_iter()
                .map(|r| proto::ConsumeResponse {
                    record: Some(record_to_proto(r)),
                })
                .collect()
        })?;
        Ok(Response::new(stream))
    }

    type ProduceStreamStream = ResponseStream<proto::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<proto::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        self.authorize(&request, Action::Produce)?;
        let slot = self.stream_slot()?;
        let limits = &self.node.config().limits;
        let (responses_tx, responses_rx) = mpsc::channel(limits.stream_buffer_messages_max);
        // Records (not batches) appended but not yet answered on this stream.
        let in_flight = Arc::new(Semaphore::new(limits.stream_appends_in_flight_max));
        let (pending_tx, pending_rx) = mpsc::channel(limits.stream_appends_in_flight_max);
        tokio::spawn(read_produce_stream(
            self.clone(),
            request.into_inner(),
            in_flight,
            pending_tx,
        ));
        tokio::spawn(async move {
            let _slot = slot;
            answer_produce_stream(pending_rx, responses_tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses_rx))))
    }

    async fn get_servers(
        &self,
        request: Request<proto::GetServersRequest>,
    ) -> Result<Response<proto::GetServersResponse>, Status> {
        self.node.guard().authorize_any(&request, &DESCRIBE)?;
        let servers = self
            .node
            .servers()
            .into_iter()
            .map(|s| proto::Server {
                id: s.id,
                rpc_addr: s.rpc_addr,
                is_leader: s.is_leader,
                is_voter: s.is_voter,
                alive: s.alive,
                term: s.term,
                committed_offset: s.committed_offset,
            })
            .collect();
        Ok(Response::new(proto::GetServersResponse { servers }))
    }

    async fn produce_batch(
        &self,
        request: Request<proto::ProduceBatchRequest>,
    ) -> Result<Response<proto::ProduceBatchResponse>, Status> {
        self.authorize(&request, Action::Produce)?;
        let records = request.into_inner().records;
        let max = self.node.config().limits.batch_records_max;
        if records.is_empty() {
            return Err(Status::invalid_argument("produce batch has no records"));
        }
        if records.len() > max {
            return Err(Status::resource_exhausted(format!(
                "produce batch has {} records; the limit is {max} (limits.batch_records_max)",
                records.len()
            )));
        }
        let records = records
            .into_iter()
            .map(|r| self.new_record(Some(r)))
            .collect::<Result<Vec<_>, _>>()?;
        let range = self.node.append(records).await?;
        let count = (range.end - range.start) as u32;
        Ok(Response::new(proto::ProduceBatchResponse {
            first_offset: range.start,
            count,
        }))
    }

    async fn consume_batch(
        &self,
        request: Request<proto::ConsumeBatchRequest>,
    ) -> Result<Response<proto::ConsumeBatchResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let offset = self.start_offset(request.offset, request.from_timestamp_ms)?;
        let high_watermark = self.node.committed_offset();
        let records = self.read_committed(offset, request.max_records, request.max_bytes)?;
        Ok(Response::new(batch_response(
            records,
            offset,
            high_watermark,
        )))
    }

    type ConsumeBatchStreamStream = ResponseStream<proto::ConsumeBatchResponse>;

    async fn consume_batch_stream(
        &self,
        request: Request<proto::ConsumeBatchRequest>,
    ) -> Result<Response<Self::ConsumeBatchStreamStream>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let offset = self.start_offset(request.offset, request.from_timestamp_ms)?;
        let (_, batch_bytes_max) = self.clamp(request.max_records, request.max_bytes);
        let stream = self.follow(
            offset,
            request.max_records,
            request.max_bytes,
            batch_bytes_max as u64,
            move |records, high_watermark| vec![batch_response(records, offset, high_watermark)],
        )?;
        Ok(Response::new(stream))
    }

    async fn offset_for_time(
        &self,
        request: Request<proto::OffsetForTimeRequest>,
    ) -> Result<Response<proto::OffsetForTimeResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let offset = self.start_offset(0, Some(request.into_inner().timestamp_ms))?;
        Ok(Response::new(proto::OffsetForTimeResponse {
            offset: offset.min(self.node.committed_offset()),
        }))
    }

    async fn get_log_info(
        &self,
        request: Request<proto::GetLogInfoRequest>,
    ) -> Result<Response<proto::GetLogInfoResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let info = self.node.log().info();
        Ok(Response::new(proto::GetLogInfoResponse {
            lowest_offset: info.lowest_offset,
            next_offset: self.node.committed_offset(),
            size_bytes: info.size_bytes,
            segment_count: info.segment_count,
            sync_policy: self.node.log().config().sync.to_string(),
        }))
    }
}

/// `offset_if_empty` is where an empty response tells the client to ask again.
fn batch_response(
    records: Vec<Record>,
    offset_if_empty: u64,
    high_watermark: u64,
) -> proto::ConsumeBatchResponse {
    let next_offset = records.last().map_or(offset_if_empty, |r| r.offset + 1);
    proto::ConsumeBatchResponse {
        records: records.into_iter().map(record_to_proto).collect(),
        next_offset,
        high_watermark,
    }
}

/// Records that one ProduceStream append takes from messages that have already arrived.
const STREAM_APPEND_RECORDS_MAX: usize = 256;

/// An append queued by a ProduceStream, holding its records' in-flight permits.
type Pending = Result<(super::node::PendingWrite, OwnedSemaphorePermit), Status>;

/// How a ProduceStream's inbound side ends.
enum StreamEnd {
    Finished,
    Failed(Status),
}

/// Reads a ProduceStream and queues its records for the writer, in stream order: each append
/// takes the next message plus whatever messages have already arrived (up to
/// `STREAM_APPEND_RECORDS_MAX`), so a busy stream costs one queue entry per batch, not per record.
/// Hands the pending acknowledgements, in order, to `answer_produce_stream`.
async fn read_produce_stream(
    service: LogService,
    mut inbound: Streaming<proto::ProduceRequest>,
    in_flight: Arc<Semaphore>,
    pending_tx: mpsc::Sender<Pending>,
) {
    let batch_records_max =
        STREAM_APPEND_RECORDS_MAX.min(service.node.config().limits.stream_appends_in_flight_max);
    let stopping = service.node.stopping();
    tokio::pin!(stopping);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut stopping => Err(shutting_down()),
            message = inbound.message() => message,
        };
        let mut records = Vec::new();
        let mut end = service.take_message(first, &mut records);
        while end.is_none() && records.len() < batch_records_max {
            match inbound.message().now_or_never() {
                Some(message) => end = service.take_message(message, &mut records),
                None => break,
            }
        }
        if !records.is_empty() {
            // Wait until the stream has room for these records before queueing them.
            let permits = records.len() as u32;
            let Ok(permit) = in_flight.clone().acquire_many_owned(permits).await else {
                return;
            };
            let pending = service.node.submit(records).await;
            let failed = pending.is_err();
            let pending = pending.map(|p| (p, permit));
            if pending_tx.send(pending).await.is_err() || failed {
                return;
            }
        }
        match end {
            None => {}
            Some(StreamEnd::Finished) => return,
            Some(StreamEnd::Failed(status)) => {
                let _ = pending_tx.send(Err(status)).await;
                return;
            }
        }
    }
}

impl LogService {
    /// Adds a received message's record to `records`, or says how the stream ends.
    fn take_message(
        &self,
        message: Result<Option<proto::ProduceRequest>, Status>,
        records: &mut Vec<NewRecord>,
    ) -> Option<StreamEnd> {
        match message {
            Ok(Some(request)) => match self.new_record(request.record) {
                Ok(record) => {
                    records.push(record);
                    None
                }
                Err(status) => Some(StreamEnd::Failed(status)),
            },
            Ok(None) => Some(StreamEnd::Finished),
            Err(status) => Some(StreamEnd::Failed(status)),
        }
    }
}

async fn answer_produce_stream(
    mut pending_rx: mpsc::Receiver<Pending>,
    responses_tx: mpsc::Sender<Result<proto::ProduceResponse, Status>>,
) {
    while let Some(pending) = pending_rx.recv().await {
        // The permit is released once this batch is answered.
        let (acknowledged, _permit) = match pending {
            Ok((pending, permit)) => (pending.await, Some(permit)),
            Err(status) => (Err(status), None),
        };
        let offsets = match acknowledged {
            Ok(offsets) => offsets,
            Err(status) => {
                let _ = responses_tx.send(Err(status)).await;
                return;
            }
        };
        for offset in offsets {
            if responses_tx
                .send(Ok(proto::ProduceResponse { offset }))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
