//! `log.v1.Log` on top of a `Node`.
//!
//! Consumers only ever see committed records (below `Node::committed_offset`). Following streams
//! read in batches and wait on the committed-offset watch when caught up; they end when the client
//! goes away. Each stream holds a bounded channel, so a slow consumer makes the server wait (HTTP/2
//! flow control), never buffer without bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, Stream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::field::Empty;
use tracing::Instrument;

use super::admission::{Admission, Admitted};
use super::auth::DESCRIBE;
use super::convert::{record_to_proto, status_from_log_error};
use super::node::Node;
use crate::log::{LogError, NewRecord, Record};
use crate::metrics::{PartitionMetrics, Rpc, DEFAULT_TOPIC};
use crate::proto::{self, log_server};
use crate::raft::store::off_thread;
use crate::security::Action;

type ResponseStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send + 'static>>;

#[derive(Clone, Debug)]
pub struct LogService {
    node: Node,
    /// The counters of the log the service reads and writes (the default topic's partition 0).
    partition: PartitionMetrics,
}

impl LogService {
    pub fn new(node: Node) -> Self {
        let partition = node.metrics().partition(DEFAULT_TOPIC, 0);
        LogService { node, partition }
    }

    /// The one authorization check every RPC starts with (see `server::auth`).
    fn authorize<T>(&self, request: &Request<T>, action: Action) -> Result<(), Status> {
        self.node.guard().authorize(request, action).map(drop)
    }

    /// Runs one unary call (or a stream's setup), observing its latency and counting its error.
    async fn timed<T>(
        &self,
        rpc: Rpc,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        self.node.metrics().rpc_seconds(rpc).observe(elapsed);
        match &result {
            // At debug level every call is one event, carrying its span's fields (offsets).
            Ok(_) => tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "{} ok", rpc.name()),
            Err(status) => self.failed(rpc, status),
        }
        result
    }

    /// Counts (and logs, at debug) a call or stream batch that ended in `status`.
    fn failed(&self, rpc: Rpc, status: &Status) {
        self.node.metrics().rpc_errors(rpc).inc();
        tracing::debug!(code = ?status.code(), message = status.message(), "{} failed", rpc.name());
    }

    fn stream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.node.try_acquire_stream().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many open streams on this node (limits.streams_max = {})",
                self.node.config().limits.streams_max
            ))
        })
    }

    /// Reads committed records from `offset`, within the node's limits and the request's (on
    /// the blocking pool: see `on_disk`).
    async fn read_committed(
        &self,
        offset: u64,
        records_max: u32,
        bytes_max: u64,
    ) -> Result<Vec<Record>, Status> {
        let mut batches = self
            .read_committed_batches(offset, 1, records_max, bytes_max)
            .await?;
        Ok(batches.pop().unwrap_or_default())
    }

    /// Up to `batches_max` consecutive batches of committed records from `offset`, each within
    /// the node's limits and the request's, read in one trip to the blocking pool: a following
    /// stream that is behind reads as many batches as its buffer has room for, so it pays the
    /// hop once per several batches. A read that fails after the first batch ends the list
    /// early (the stream meets that error on its next read).
    async fn read_committed_batches(
        &self,
        offset: u64,
        batches_max: usize,
        records_max: u32,
        bytes_max: u64,
    ) -> Result<Vec<Vec<Record>>, Status> {
        let committed = self.node.committed_offset();
        check_readable(self.node.log().lowest_offset(), committed, offset)?;
        if offset == committed {
            return Ok(Vec::new());
        }
        let (records_max, bytes_max) = self.clamp(records_max, bytes_max);
        let log = self.node.log().clone();
        on_disk(move || {
            let mut batches = Vec::with_capacity(batches_max);
            let mut offset = offset;
            while offset < committed && batches.len() < batches_max.max(1) {
                // Never read past the committed offset (not consumer-visible yet).
                let records_max = records_max.min((committed - offset) as usize);
                match log.read_batch(offset, records_max, bytes_max) {
                    Ok(batch) => {
                        offset = batch.last().map_or(committed, |r| r.offset + 1);
                        batches.push(batch);
                    }
                    Err(error) if batches.is_empty() => return Err(error),
                    Err(_) => break,
                }
            }
            Ok(batches)
        })
        .await
    }

    fn clamp(&self, records_max: u32, bytes_max: u64) -> (usize, usize) {
        let limits = &self.node.config().limits;
        let pick = |asked: u64, limit: u64| if asked == 0 { limit } else { asked.min(limit) };
        (
            pick(records_max.into(), limits.consume_records_max.into()) as usize,
            pick(bytes_max, limits.consume_bytes_max) as usize,
        )
    }

    /// Where a consume that may name a timestamp starts (a time lookup reads the index and
    /// store files: on the blocking pool).
    async fn start_offset(
        &self,
        offset: u64,
        from_timestamp_ms: Option<i64>,
    ) -> Result<u64, Status> {
        match from_timestamp_ms {
            Some(t) => {
                let log = self.node.log().clone();
                on_disk(move || log.offset_for_time(t)).await
            }
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
        rpc: Rpc,
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
        let span = match rpc {
            Rpc::ConsumeBatchStream => {
                tracing::info_span!("consume_batch_stream", from_offset = offset)
            }
            _ => tracing::info_span!("consume_stream", from_offset = offset),
        };
        tokio::spawn(
            async move {
                let _slot = slot;
                service
                    .follow_loop(rpc, offset, records_max, bytes_max, tx, to_messages)
                    .await;
            }
            .instrument(span),
        );
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn follow_loop<M, F>(
        &self,
        rpc: Rpc,
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
                // A batch stream sends one message per batch: it waits for room for a few in
                // its buffer, then reads that many in one trip to the blocking pool (the hop is
                // paid once per several batches; the stream holds no more than its buffer).
                let mut slots = None;
                let batches_max = match rpc {
                    Rpc::ConsumeBatchStream => {
                        let room = FOLLOW_READS_PER_HOP_MAX.min(tx.max_capacity());
                        let Ok(reserved) = tx.reserve_many(room).await else {
                            return; // the client went away
                        };
                        slots = Some(reserved);
                        room
                    }
                    _ => 1,
                };
                let started = Instant::now();
                let read = self
                    .read_committed_batches(offset, batches_max, records_max, bytes_max)
                    .await;
                let batches = match read {
                    Ok(batches) => batches,
                    Err(status) => {
                        self.failed(rpc, &status);
                        drop(slots);
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                for records in batches {
                    let Some(last) = records.last() else { continue };
                    let first_offset = offset;
                    offset = last.offset + 1;
                    let (count, bytes) = (records.len() as u64, value_bytes(&records));
                    let messages = to_messages(records, high_watermark);
                    let metrics = self.node.metrics();
                    metrics.rpc_seconds(rpc).observe(started.elapsed());
                    for message in messages {
                        match slots.as_mut().and_then(Iterator::next) {
                            Some(slot) => slot.send(Ok(message)),
                            None if tx.send(Ok(message)).await.is_ok() => {}
                            None => return, // the client went away
                        }
                    }
                    self.partition.consumed(count, bytes);
                    tracing::debug!(first_offset, records = count, "sent");
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

/// Batches a following ConsumeBatchStream reads in one trip to the blocking pool, at most.
const FOLLOW_READS_PER_HOP_MAX: usize = 8;

/// Runs `read` (disk work on the log: reads, time lookups) on the blocking pool, so a slow
/// disk or a page fault never stalls the async workers that serve every RPC; inline under
/// madsim, which has no threads. A panic in `read` resumes in the caller.
async fn on_disk<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, Status> {
    match off_thread(move || Ok(read())).await {
        Ok(result) => result.map_err(status_from_log_error),
        // The blocking task was cancelled: the runtime is shutting down.
        Err(error) => Err(Status::unavailable(format!(
            "the read did not run: {error}"
        ))),
    }
}

/// Value bytes of `records` (what the byte counters count).
fn value_bytes(records: &[Record]) -> u64 {
    records.iter().map(|r| r.value.len() as u64).sum()
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
        let span = tracing::info_span!("produce", bytes = Empty, offset = Empty);
        let deadline = deadline_of(&request);
        let call = async {
            let record = self.new_record(request.into_inner().record)?;
            let bytes = record.value.len() as u64;
            tracing::Span::current().record("bytes", bytes);
            // Held until the record is acknowledged.
            let _room = self.node.admission().request_bytes(bytes).await?;
            let range = self.node.append_before(vec![record], deadline).await?;
            tracing::Span::current().record("offset", range.start);
            self.partition.produced(1, bytes);
            Ok(Response::new(proto::ProduceResponse {
                offset: range.start,
                ..Default::default()
            }))
        };
        self.timed(Rpc::Produce, call).instrument(span).await
    }

    async fn consume(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<proto::ConsumeResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let offset = request.into_inner().offset;
        let span = tracing::info_span!("consume", offset);
        let call = async {
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
            let log = self.node.log().clone();
            let record = on_disk(move || log.read(offset)).await?;
            self.partition.consumed(1, record.value.len() as u64);
            Ok(Response::new(proto::ConsumeResponse {
                record: Some(record_to_proto(record)),
            }))
        };
        self.timed(Rpc::Consume, call).instrument(span).await
    }

    type ConsumeStreamStream = ResponseStream<proto::ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let setup = async {
            let offset = self
                .start_offset(request.offset, request.from_timestamp_ms)
                .await?;
            let record_message_bytes = u64::from(self.node.config().record_bytes_max) + 64;
            let to_messages = |records: Vec<Record>, _| {
                records
                    .into_iter()
                    .map(|r| proto::ConsumeResponse {
                        record: Some(record_to_proto(r)),
                    })
                    .collect()
            };
            let stream = self.follow(
                Rpc::ConsumeStream,
                offset,
                0,
                0,
                record_message_bytes,
                to_messages,
            )?;
            Ok(Response::new(stream))
        };
        // The stream's batches are timed as they go; a failed start counts as an error.
        setup
            .await
            .inspect_err(|status| self.failed(Rpc::ConsumeStream, status))
    }

    type ProduceStreamStream = ResponseStream<proto::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<proto::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        self.authorize(&request, Action::Produce)?;
        let slot = self
            .stream_slot()
            .inspect_err(|status| self.failed(Rpc::ProduceStream, status))?;
        let limits = &self.node.config().limits;
        let in_flight = StreamWindow::new(
            limits.stream_appends_in_flight_max,
            limits.stream_appends_in_flight_bytes_max,
            self.node.admission().clone(),
        );
        let (pending_tx, pending_rx) = mpsc::channel(limits.stream_appends_in_flight_max);
        let span = tracing::info_span!("produce_stream");
        tokio::spawn(
            read_produce_stream(self.clone(), request.into_inner(), in_flight, pending_tx)
                .instrument(span),
        );
        let answers = Answers {
            service: self.clone(),
            pending_rx,
            offsets: 0..0,
            ended: false,
            _slot: slot,
        };
        Ok(Response::new(Box::pin(answers.into_stream())))
    }

    async fn get_servers(
        &self,
        request: Request<proto::GetServersRequest>,
    ) -> Result<Response<proto::GetServersResponse>, Status> {
        self.node.guard().authorize_any(&request, &DESCRIBE)?;
        let call = async {
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
                    commit_index: s.commit_index,
                    applied_index: s.applied_index,
                    replication_lag: s.replication_lag,
                    suspect: s.suspect,
                })
                .collect();
            Ok(Response::new(proto::GetServersResponse { servers }))
        };
        self.timed(Rpc::GetServers, call).await
    }

    async fn produce_batch(
        &self,
        request: Request<proto::ProduceBatchRequest>,
    ) -> Result<Response<proto::ProduceBatchResponse>, Status> {
        self.authorize(&request, Action::Produce)?;
        let deadline = deadline_of(&request);
        let records = request.into_inner().records;
        let span = tracing::info_span!(
            "produce_batch",
            records = records.len(),
            bytes = Empty,
            first_offset = Empty
        );
        let call = async {
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
            let bytes: u64 = records.iter().map(|r| r.value.len() as u64).sum();
            tracing::Span::current().record("bytes", bytes);
            // Held until the batch is acknowledged.
            let _room = self.node.admission().request_bytes(bytes).await?;
            let range = self.node.append_before(records, deadline).await?;
            tracing::Span::current().record("first_offset", range.start);
            let count = range.end - range.start;
            self.partition.produced(count, bytes);
            Ok(Response::new(proto::ProduceBatchResponse {
                first_offset: range.start,
                count: count as u32,
                ..Default::default()
            }))
        };
        self.timed(Rpc::ProduceBatch, call).instrument(span).await
    }

    async fn consume_batch(
        &self,
        request: Request<proto::ConsumeBatchRequest>,
    ) -> Result<Response<proto::ConsumeBatchResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let span = tracing::info_span!(
            "consume_batch",
            offset = request.offset,
            records = Empty,
            next_offset = Empty
        );
        let call = async {
            let offset = self
                .start_offset(request.offset, request.from_timestamp_ms)
                .await?;
            let high_watermark = self.node.committed_offset();
            let records = self
                .read_committed(offset, request.max_records, request.max_bytes)
                .await?;
            self.partition
                .consumed(records.len() as u64, value_bytes(&records));
            let response = batch_response(records, offset, high_watermark);
            let span = tracing::Span::current();
            span.record("records", response.records.len());
            span.record("next_offset", response.next_offset);
            Ok(Response::new(response))
        };
        self.timed(Rpc::ConsumeBatch, call).instrument(span).await
    }

    type ConsumeBatchStreamStream = ResponseStream<proto::ConsumeBatchResponse>;

    async fn consume_batch_stream(
        &self,
        request: Request<proto::ConsumeBatchRequest>,
    ) -> Result<Response<Self::ConsumeBatchStreamStream>, Status> {
        self.authorize(&request, Action::Consume)?;
        let request = request.into_inner();
        let setup = async {
            let offset = self
                .start_offset(request.offset, request.from_timestamp_ms)
                .await?;
            let (_, batch_bytes_max) = self.clamp(request.max_records, request.max_bytes);
            let stream = self.follow(
                Rpc::ConsumeBatchStream,
                offset,
                request.max_records,
                request.max_bytes,
                batch_bytes_max as u64,
                move |records, high_watermark| {
                    vec![batch_response(records, offset, high_watermark)]
                },
            )?;
            Ok(Response::new(stream))
        };
        setup
            .await
            .inspect_err(|status| self.failed(Rpc::ConsumeBatchStream, status))
    }

    async fn offset_for_time(
        &self,
        request: Request<proto::OffsetForTimeRequest>,
    ) -> Result<Response<proto::OffsetForTimeResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let timestamp_ms = request.into_inner().timestamp_ms;
        let span = tracing::info_span!("offset_for_time", timestamp_ms, offset = Empty);
        let call = async {
            let offset = self.start_offset(0, Some(timestamp_ms)).await?;
            let offset = offset.min(self.node.committed_offset());
            tracing::Span::current().record("offset", offset);
            Ok(Response::new(proto::OffsetForTimeResponse { offset }))
        };
        self.timed(Rpc::OffsetForTime, call).instrument(span).await
    }

    async fn get_log_info(
        &self,
        request: Request<proto::GetLogInfoRequest>,
    ) -> Result<Response<proto::GetLogInfoResponse>, Status> {
        self.authorize(&request, Action::Consume)?;
        let call = async {
            let info = self.node.log().info();
            let metrics = self.node.metrics();
            Ok(Response::new(proto::GetLogInfoResponse {
                lowest_offset: info.lowest_offset,
                next_offset: self.node.committed_offset(),
                size_bytes: info.size_bytes,
                segment_count: info.segment_count,
                sync_policy: self.node.log().config().sync.to_string(),
                fsync_count: metrics.log.fsyncs.get(),
                fsync_seconds_total: metrics.log.fsync_seconds.sum_seconds(),
                produce_records: metrics.produce_records.get(),
                produce_bytes: metrics.produce_bytes.get(),
                consume_records: metrics.consume_records.get(),
                consume_bytes: metrics.consume_bytes.get(),
                writes_stopped: self.node.log().poisoned().unwrap_or_default(),
            }))
        };
        self.timed(Rpc::GetLogInfo, call).await
    }

    async fn create_topic(
        &self,
        _request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        Err(Status::unimplemented("topics: in progress"))
    }

    async fn delete_topic(
        &self,
        _request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        Err(Status::unimplemented("topics: in progress"))
    }

    async fn list_topics(
        &self,
        _request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        Err(Status::unimplemented("topics: in progress"))
    }

    async fn describe_topic(
        &self,
        _request: Request<proto::DescribeTopicRequest>,
    ) -> Result<Response<proto::DescribeTopicResponse>, Status> {
        Err(Status::unimplemented("topics: in progress"))
    }

    async fn alter_topic(
        &self,
        _request: Request<proto::AlterTopicRequest>,
    ) -> Result<Response<proto::AlterTopicResponse>, Status> {
        Err(Status::unimplemented("topics: in progress"))
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
type Pending = Result<StreamAppend, Status>;

struct StreamAppend {
    write: super::node::PendingWrite,
    _permit: WindowPermit,
    /// When the batch's first message was read (its latency runs from there to the answer).
    started: Instant,
    bytes: u64,
}

/// A ProduceStream's window: the records and value bytes read but not yet acknowledged. The
/// server stops reading the stream while it is full, or while the node holds
/// `limits.requests_in_flight_bytes_max` of requests, so the client's HTTP/2 flow control holds
/// the rest of its messages.
struct StreamWindow {
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    bytes_max: u64,
    /// The node-wide bound the window's bytes also count against.
    admission: Arc<Admission>,
}

/// A place in a `StreamWindow` (and its bytes under the node-wide bound), released when the
/// log has acknowledged the append.
struct WindowPermit {
    _records: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
    _node_bytes: Admitted,
}

impl StreamWindow {
    fn new(records_max: usize, bytes_max: u64, admission: Arc<Admission>) -> Self {
        assert!(records_max > 0 && bytes_max > 0 && bytes_max <= u64::from(u32::MAX));
        StreamWindow {
            records: Arc::new(Semaphore::new(records_max)),
            bytes: Arc::new(Semaphore::new(bytes_max as usize)),
            bytes_max,
            admission,
        }
    }

    /// Waits for room for `records` holding `bytes`, in the stream's window, then under the
    /// node-wide bound. A batch larger than the whole window (or bound) waits for it to empty,
    /// then takes all of it. `None` once the window is closed.
    async fn acquire(&self, records: usize, bytes: u64) -> Option<WindowPermit> {
        let records = u32::try_from(records).ok()?;
        let window_bytes = bytes.min(self.bytes_max) as u32;
        let records = self
            .records
            .clone()
            .acquire_many_owned(records)
            .await
            .ok()?;
        let window_bytes = self
            .bytes
            .clone()
            .acquire_many_owned(window_bytes)
            .await
            .ok()?;
        Some(WindowPermit {
            _records: records,
            _bytes: window_bytes,
            _node_bytes: self.admission.stream_bytes(bytes).await,
        })
    }
}

/// How a ProduceStream's inbound side ends.
enum StreamEnd {
    Finished,
    Failed(Status),
}

/// Reads a ProduceStream and queues its records for the writer, in stream order: each append
/// takes the next message plus whatever messages have already arrived (up to
/// `STREAM_APPEND_RECORDS_MAX`), so a busy stream costs one queue entry per batch, not per record.
/// Hands the pending acknowledgements, in order, to the stream's `Answers`.
async fn read_produce_stream(
    service: LogService,
    mut inbound: Streaming<proto::ProduceRequest>,
    in_flight: StreamWindow,
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
        let started = Instant::now();
        let (mut records, mut bytes) = (Vec::new(), 0);
        let mut end = service.take_message(first, &mut records, &mut bytes);
        while end.is_none() && records.len() < batch_records_max && bytes < in_flight.bytes_max {
            match inbound.message().now_or_never() {
                Some(message) => end = service.take_message(message, &mut records, &mut bytes),
                None => break,
            }
        }
        if !records.is_empty() {
            // Wait until the stream has room for these records before queueing them.
            let Some(permit) = in_flight.acquire(records.len(), bytes).await else {
                return;
            };
            let pending = service.node.submit(records).await;
            let failed = pending.is_err();
            let pending = pending.map(|write| StreamAppend {
                write,
                _permit: permit,
                started,
                bytes,
            });
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
        bytes: &mut u64,
    ) -> Option<StreamEnd> {
        match message {
            Ok(Some(request)) => match self.new_record(request.record) {
                Ok(record) => {
                    *bytes += record.value.len() as u64;
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

/// The answering side of a ProduceStream: one response per record, in order, each sent once
/// its append is acknowledged. It is the response stream itself (polled by the transport as the
/// client makes room), so answers cost no task or channel of their own.
struct Answers {
    service: LogService,
    pending_rx: mpsc::Receiver<Pending>,
    /// Offsets acknowledged and not yet answered.
    offsets: std::ops::Range<u64>,
    /// Set after an error: the stream ends once it has been sent.
    ended: bool,
    _slot: OwnedSemaphorePermit,
}

impl Answers {
    fn into_stream(self) -> impl Stream<Item = Result<proto::ProduceResponse, Status>> + Send {
        futures::stream::unfold(self, |mut answers| async move {
            let item = answers.next().await?;
            Some((item, answers))
        })
    }

    async fn next(&mut self) -> Option<Result<proto::ProduceResponse, Status>> {
        loop {
            if let Some(offset) = self.offsets.next() {
                return Some(Ok(proto::ProduceResponse {
                    offset,
                    ..Default::default()
                }));
            }
            if self.ended {
                return None;
            }
            // The batch's window permits are released when `append` drops, here, once the log
            // has acknowledged it: what is left to answer is a range of offsets.
            let acknowledged = match self.pending_rx.recv().await? {
                Ok(mut append) => (&mut append.write).await.map(|offsets| (offsets, append)),
                Err(status) => Err(status),
            };
            match acknowledged {
                Ok((offsets, append)) => {
                    self.acknowledged(&offsets, &append);
                    self.offsets = offsets;
                }
                Err(status) => {
                    self.service.failed(Rpc::ProduceStream, &status);
                    self.ended = true;
                    return Some(Err(status));
                }
            }
        }
    }

    fn acknowledged(&self, offsets: &std::ops::Range<u64>, append: &StreamAppend) {
        let records = offsets.end - offsets.start;
        let metrics = self.service.node.metrics();
        metrics
            .rpc_seconds(Rpc::ProduceStream)
            .observe(append.started.elapsed());
        self.service.partition.produced(records, append.bytes);
        tracing::debug!(first_offset = offsets.start, records, "acknowledged");
    }
}

/// The call's deadline, from its `grpc-timeout` header (gRPC over HTTP/2: an integer of at most
/// 8 digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`), measured from when the call arrived.
/// None when absent or malformed (a bad header is not worth failing the call for).
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    grpc_timeout(text).map(|timeout| Instant::now() + timeout)
}

fn grpc_timeout(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_timeout;
    use std::time::Duration;

    #[test]
    fn grpc_timeout_headers() {
        assert_eq!(grpc_timeout("10S"), Some(Duration::from_secs(10)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "10", "10s", "x5S", "123456789S", "-1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
