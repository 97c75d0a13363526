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
use super::convert::{record_to_proto, status_from_log_error, status_from_topic_error};
use super::node::Node;
use super::partition::Partition;
use super::topics::Topic;
use crate::log::{LogError, NewRecord, Record};
use crate::metrics::Rpc;
use crate::proto::{self, log_server};
use crate::raft::store::off_thread;
use crate::security::Action;
use crate::topic::TopicSettings;

type ResponseStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send + 'static>>;

#[derive(Clone, Debug)]
pub struct LogService {
    node: Node,
}

impl LogService {
    pub fn new(node: Node) -> Self {
        LogService { node }
    }

    /// The one authorization check every RPC starts with (see `server::auth`): `action` on the
    /// topic the request names ("" is the default topic).
    fn authorize<T>(
        &self,
        request: &Request<T>,
        topic: &str,
        action: Action,
    ) -> Result<String, Status> {
        let topic = if topic.is_empty() {
            crate::topic::DEFAULT_TOPIC
        } else {
            topic
        };
        self.node.guard().authorize_topic(request, topic, &[action])
    }

    /// The topic a request names.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, Status> {
        self.node
            .topics()
            .get(name)
            .map_err(status_from_topic_error)
    }

    /// The partition a consume names.
    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<dyn Partition>, Status> {
        self.topic(topic)?
            .partition(partition)
            .map_err(status_from_topic_error)
    }

    /// Where a produce goes (see `Topic::choose`), and the largest record its topic takes.
    fn target(&self, topic: &str, partition: Option<u32>, key: &[u8]) -> Result<Target, Status> {
        let topic = self.topic(topic)?;
        let (partition_id, partition) = topic
            .choose(partition, key)
            .map_err(status_from_topic_error)?;
        let record_bytes_max = topic
            .settings()
            .effective(self.node.topics().defaults())
            .record_bytes_max;
        Ok(Target {
            partition_id,
            partition,
            record_bytes_max,
        })
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
        partition: &Arc<dyn Partition>,
        offset: u64,
        records_max: u32,
        bytes_max: u64,
    ) -> Result<Vec<Record>, Status> {
        let mut batches = self
            .read_committed_batches(partition, offset, 1, records_max, bytes_max)
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
        partition: &Arc<dyn Partition>,
        offset: u64,
        batches_max: usize,
        records_max: u32,
        bytes_max: u64,
    ) -> Result<Vec<Vec<Record>>, Status> {
        let committed = partition.committed_offset();
        check_readable(partition.log().lowest_offset(), committed, offset)?;
        if offset == committed {
            return Ok(Vec::new());
        }
        let (records_max, bytes_max) = self.clamp(records_max, bytes_max);
        let log = partition.log().clone();
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
        partition: &Arc<dyn Partition>,
        offset: u64,
        from_timestamp_ms: Option<i64>,
    ) -> Result<u64, Status> {
        match from_timestamp_ms {
            Some(t) => {
                let log = partition.log().clone();
                on_disk(move || log.offset_for_time(t)).await
            }
            None => Ok(offset),
        }
    }

    fn new_record(&self, record: Option<proto::Record>, max: u32) -> Result<NewRecord, Status> {
        let record =
            record.ok_or_else(|| Status::invalid_argument("produce request has no record"))?;
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
    #[allow(clippy::too_many_arguments)]
    fn follow<M, F>(
        &self,
        partition: Arc<dyn Partition>,
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
        let lowest = partition.log().lowest_offset();
        if offset < lowest {
            check_readable(lowest, partition.committed_offset(), offset)?;
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
                    .follow_loop(
                        &partition,
                        rpc,
                        offset,
                        records_max,
                        bytes_max,
                        tx,
                        to_messages,
                    )
                    .await;
            }
            .instrument(span),
        );
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn follow_loop<M, F>(
        &self,
        partition: &Arc<dyn Partition>,
        rpc: Rpc,
        mut offset: u64,
        records_max: u32,
        bytes_max: u64,
        tx: mpsc::Sender<Result<M, Status>>,
        to_messages: F,
    ) where
        F: Fn(Vec<Record>, u64) -> Vec<M>,
    {
        let mut committed = partition.watch_committed();
        let mut closed = partition.closed();
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
                    .read_committed_batches(partition, offset, batches_max, records_max, bytes_max)
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
                    partition.metrics().consumed(count, bytes);
                    tracing::debug!(first_offset, records = count, "sent");
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = &mut stopping => {}
                changed = committed.changed() => if changed.is_err() { return },
                _ = until_set(&mut closed) => {
                    // The node is stopping, or the partition's topic was deleted: say which,
                    // rather than follow a partition that will never grow again.
                    let status = match self.node.is_stopping() {
                        true => shutting_down(),
                        false => Status::not_found(
                            "this partition is gone: its topic was deleted",
                        ),
                    };
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    }
}

/// Resolves once `flag` is true (never, if its sender is gone first).
async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            return std::future::pending().await;
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
        self.authorize(&request, &request.get_ref().topic, Action::Produce)?;
        let span = tracing::info_span!("produce", bytes = Empty, offset = Empty);
        let deadline = deadline_of(&request);
        let call = async {
            let request = request.into_inner();
            let target = self.target(&request.topic, request.partition, &request.key)?;
            let record = self.new_record(request.record, target.record_bytes_max)?;
            let bytes = record.value.len() as u64;
            tracing::Span::current().record("bytes", bytes);
            // Held until the record is acknowledged.
            let _room = self.node.admission().request_bytes(bytes).await?;
            let range = target.append(vec![record], deadline).await?;
            tracing::Span::current().record("offset", range.start);
            target.partition.metrics().produced(1, bytes);
            Ok(Response::new(proto::ProduceResponse {
                offset: range.start,
                partition: target.partition_id,
            }))
        };
        self.timed(Rpc::Produce, call).instrument(span).await
    }

    async fn consume(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<proto::ConsumeResponse>, Status> {
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let offset = request.offset;
        let span = tracing::info_span!("consume", offset);
        let call = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let (lowest, committed) = (
                partition.log().lowest_offset(),
                partition.committed_offset(),
            );
            if offset >= committed {
                return Err(status_from_log_error(LogError::OffsetOutOfRange {
                    offset,
                    lowest,
                    next: committed,
                }));
            }
            check_readable(lowest, committed, offset)?;
            let log = partition.log().clone();
            let record = on_disk(move || log.read(offset)).await?;
            (partition.metrics()).consumed(1, record.value.len() as u64);
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
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let setup = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let offset = self
                .start_offset(&partition, request.offset, request.from_timestamp_ms)
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
                partition,
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
        // Authentication here; each message's topic is checked as the stream names it.
        let subject = self
            .node
            .guard()
            .authorize_any(&request, &[Action::Produce, Action::Consume, Action::Admin])
            .inspect_err(|status| self.failed(Rpc::ProduceStream, status))?;
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
        let reader = StreamReader {
            service: self.clone(),
            subject,
            inbound: request.into_inner(),
            carried: None,
        };
        tokio::spawn(read_produce_stream(reader, in_flight, pending_tx).instrument(span));
        let answers = Answers {
            service: self.clone(),
            pending_rx,
            offsets: 0..0,
            partition: 0,
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
        self.authorize(&request, &request.get_ref().topic, Action::Produce)?;
        let deadline = deadline_of(&request);
        let request = request.into_inner();
        let span = tracing::info_span!(
            "produce_batch",
            records = request.records.len(),
            bytes = Empty,
            first_offset = Empty
        );
        let call = async {
            let max = self.node.config().limits.batch_records_max;
            let records = request.records;
            if records.is_empty() {
                return Err(Status::invalid_argument("produce batch has no records"));
            }
            if records.len() > max {
                return Err(Status::resource_exhausted(format!(
                    "produce batch has {} records; the limit is {max} (limits.batch_records_max)",
                    records.len()
                )));
            }
            let target = self.target(&request.topic, request.partition, &request.key)?;
            let records = records
                .into_iter()
                .map(|r| self.new_record(Some(r), target.record_bytes_max))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes: u64 = records.iter().map(|r| r.value.len() as u64).sum();
            tracing::Span::current().record("bytes", bytes);
            // Held until the batch is acknowledged.
            let _room = self.node.admission().request_bytes(bytes).await?;
            let range = target.append(records, deadline).await?;
            tracing::Span::current().record("first_offset", range.start);
            let count = range.end - range.start;
            target.partition.metrics().produced(count, bytes);
            Ok(Response::new(proto::ProduceBatchResponse {
                first_offset: range.start,
                count: count as u32,
                partition: target.partition_id,
            }))
        };
        self.timed(Rpc::ProduceBatch, call).instrument(span).await
    }

    async fn consume_batch(
        &self,
        request: Request<proto::ConsumeBatchRequest>,
    ) -> Result<Response<proto::ConsumeBatchResponse>, Status> {
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let span = tracing::info_span!(
            "consume_batch",
            offset = request.offset,
            records = Empty,
            next_offset = Empty
        );
        let call = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let offset = self
                .start_offset(&partition, request.offset, request.from_timestamp_ms)
                .await?;
            let high_watermark = partition.committed_offset();
            let records = self
                .read_committed(&partition, offset, request.max_records, request.max_bytes)
                .await?;
            (partition.metrics()).consumed(records.len() as u64, value_bytes(&records));
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
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let setup = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let offset = self
                .start_offset(&partition, request.offset, request.from_timestamp_ms)
                .await?;
            let (_, batch_bytes_max) = self.clamp(request.max_records, request.max_bytes);
            let stream = self.follow(
                partition,
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
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let timestamp_ms = request.timestamp_ms;
        let span = tracing::info_span!("offset_for_time", timestamp_ms, offset = Empty);
        let call = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let offset = self.start_offset(&partition, 0, Some(timestamp_ms)).await?;
            let offset = offset.min(partition.committed_offset());
            tracing::Span::current().record("offset", offset);
            Ok(Response::new(proto::OffsetForTimeResponse { offset }))
        };
        self.timed(Rpc::OffsetForTime, call).instrument(span).await
    }

    async fn get_log_info(
        &self,
        request: Request<proto::GetLogInfoRequest>,
    ) -> Result<Response<proto::GetLogInfoResponse>, Status> {
        self.authorize(&request, &request.get_ref().topic, Action::Consume)?;
        let request = request.into_inner();
        let call = async {
            let partition = self.partition(&request.topic, request.partition)?;
            let info = partition.log().info();
            let metrics = self.node.metrics();
            Ok(Response::new(proto::GetLogInfoResponse {
                lowest_offset: info.lowest_offset,
                next_offset: partition.committed_offset(),
                size_bytes: info.size_bytes,
                segment_count: info.segment_count,
                sync_policy: partition.log().config().sync.to_string(),
                fsync_count: metrics.log.fsyncs.get(),
                fsync_seconds_total: metrics.log.fsync_seconds.sum_seconds(),
                produce_records: metrics.produce_records.get(),
                produce_bytes: metrics.produce_bytes.get(),
                consume_records: metrics.consume_records.get(),
                consume_bytes: metrics.consume_bytes.get(),
                writes_stopped: partition.log().poisoned().unwrap_or_default(),
            }))
        };
        self.timed(Rpc::GetLogInfo, call).await
    }

    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        self.authorize(&request, &request.get_ref().name, Action::Admin)?;
        let request = request.into_inner();
        let span = tracing::info_span!("create_topic", topic = %request.name);
        let call = async {
            let settings = settings_from_proto(request.settings.unwrap_or_default());
            let (topic, created) = self
                .node
                .topics()
                .create(&request.name, request.partitions, settings)
                .await
                .map_err(status_from_topic_error)?;
            Ok(Response::new(proto::CreateTopicResponse {
                topic: Some(self.topic_to_proto(&topic)),
                created,
            }))
        };
        self.timed(Rpc::CreateTopic, call).instrument(span).await
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        self.authorize(&request, &request.get_ref().name, Action::Admin)?;
        let name = request.into_inner().name;
        let span = tracing::info_span!("delete_topic", topic = %name);
        let call = async {
            self.node
                .topics()
                .delete(&name)
                .await
                .map_err(status_from_topic_error)?;
            Ok(Response::new(proto::DeleteTopicResponse {}))
        };
        self.timed(Rpc::DeleteTopic, call).instrument(span).await
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        // Every caller may ask; the answer lists the topics it may consume from or administer.
        let guard = self.node.guard();
        let subject = guard.authenticate(&request)?;
        let call = async {
            let visible = [Action::Consume, Action::Admin];
            let topics = (self.node.topics().list().iter())
                .filter(|t| {
                    guard
                        .check_topic(&subject, t.name.as_str(), &visible)
                        .is_ok()
                })
                .map(|t| self.topic_to_proto(t))
                .collect();
            Ok(Response::new(proto::ListTopicsResponse { topics }))
        };
        self.timed(Rpc::ListTopics, call).await
    }

    async fn describe_topic(
        &self,
        request: Request<proto::DescribeTopicRequest>,
    ) -> Result<Response<proto::DescribeTopicResponse>, Status> {
        let name = request.get_ref().name.clone();
        let topic_name = if name.is_empty() {
            crate::topic::DEFAULT_TOPIC
        } else {
            &name
        };
        self.node.guard().authorize_topic(
            &request,
            topic_name,
            &[Action::Consume, Action::Admin],
        )?;
        let call = async {
            let topic = self.topic(&name)?;
            let (replicas, leader) = self.node.placement();
            let partitions = (topic.partitions().iter().enumerate())
                .map(|(p, partition)| {
                    let info = partition.log().info();
                    proto::PartitionInfo {
                        partition: p as u32,
                        lowest_offset: info.lowest_offset,
                        next_offset: partition.committed_offset(),
                        size_bytes: info.size_bytes,
                        segment_count: info.segment_count,
                        replicas: replicas.clone(),
                        leader: leader.clone(),
                        writes_stopped: partition.log().poisoned().unwrap_or_default(),
                    }
                })
                .collect();
            Ok(Response::new(proto::DescribeTopicResponse {
                topic: Some(self.topic_to_proto(&topic)),
                partitions,
            }))
        };
        self.timed(Rpc::DescribeTopic, call).await
    }

    async fn alter_topic(
        &self,
        request: Request<proto::AlterTopicRequest>,
    ) -> Result<Response<proto::AlterTopicResponse>, Status> {
        self.authorize(&request, &request.get_ref().name, Action::Admin)?;
        let request = request.into_inner();
        let span = tracing::info_span!("alter_topic", topic = %request.name);
        let call = async {
            let changes = settings_from_proto(request.settings.unwrap_or_default());
            let topic = self
                .node
                .topics()
                .alter(&request.name, request.partitions, changes)
                .await
                .map_err(status_from_topic_error)?;
            Ok(Response::new(proto::AlterTopicResponse {
                topic: Some(self.topic_to_proto(&topic)),
            }))
        };
        self.timed(Rpc::AlterTopic, call).instrument(span).await
    }
}

impl LogService {
    fn topic_to_proto(&self, topic: &Topic) -> proto::Topic {
        let own = topic.settings();
        let effective = own.effective(self.node.topics().defaults());
        proto::Topic {
            name: topic.name.to_string(),
            partitions: topic.partition_count(),
            settings: Some(settings_to_proto(&own)),
            effective: Some(proto::TopicSettings {
                retention_bytes_max: Some(effective.retention_bytes_max.unwrap_or(0)),
                retention_ms_max: Some(effective.retention_ms_max.unwrap_or(0)),
                segment_bytes_max: Some(effective.segment_bytes_max),
                record_bytes_max: Some(effective.record_bytes_max),
            }),
        }
    }
}

fn settings_from_proto(settings: proto::TopicSettings) -> TopicSettings {
    TopicSettings {
        retention_bytes_max: settings.retention_bytes_max,
        retention_ms_max: settings.retention_ms_max,
        segment_bytes_max: settings.segment_bytes_max,
        record_bytes_max: settings.record_bytes_max,
    }
}

fn settings_to_proto(settings: &TopicSettings) -> proto::TopicSettings {
    proto::TopicSettings {
        retention_bytes_max: settings.retention_bytes_max,
        retention_ms_max: settings.retention_ms_max,
        segment_bytes_max: settings.segment_bytes_max,
        record_bytes_max: settings.record_bytes_max,
    }
}

/// A produce's destination, resolved.
struct Target {
    partition_id: u32,
    partition: Arc<dyn Partition>,
    /// The topic's `record_bytes_max` in force.
    record_bytes_max: u32,
}

impl Target {
    async fn append(
        &self,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<std::ops::Range<u64>, Status> {
        self.partition.submit(records, deadline).await?.await
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
    partition: u32,
    metrics: crate::metrics::PartitionMetrics,
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

/// A ProduceStream's inbound side, with the message that starts the next append when it
/// names another destination than the append being gathered.
struct StreamReader {
    service: LogService,
    /// Who opened the stream: each topic a message names is checked for them.
    subject: String,
    inbound: Streaming<proto::ProduceRequest>,
    carried: Option<proto::ProduceRequest>,
}

/// Where a ProduceStream message asks its record to go: consecutive messages with the same
/// destination share one append (and so one partition: "sticky" batches when they name
/// neither partition nor key).
fn destination(request: &proto::ProduceRequest) -> (&str, Option<u32>, &[u8]) {
    (&request.topic, request.partition, &request.key)
}

impl StreamReader {
    /// The next message: the one carried over, or the stream's next.
    async fn next(&mut self, stopping: &mut (impl Future<Output = ()> + Unpin)) -> Next {
        if let Some(carried) = self.carried.take() {
            return Next::Message(carried);
        }
        let message = tokio::select! {
            biased;
            _ = stopping => Err(shutting_down()),
            message = self.inbound.message() => message,
        };
        Next::from(message)
    }

    /// Gathers one append: the first message plus those already arrived for the same
    /// destination, up to the bounds.
    fn gather(
        &mut self,
        first: proto::ProduceRequest,
        records_max: usize,
        bytes_max: u64,
    ) -> Result<Gathered, Status> {
        let service = &self.service;
        let topic = if first.topic.is_empty() {
            crate::topic::DEFAULT_TOPIC
        } else {
            &first.topic
        };
        service
            .node
            .guard()
            .check_topic(&self.subject, topic, &[Action::Produce])?;
        let target = service.target(&first.topic, first.partition, &first.key)?;
        let mut gathered = Gathered {
            records: vec![service.new_record(first.record.clone(), target.record_bytes_max)?],
            bytes: 0,
            target,
            end: None,
        };
        gathered.bytes = gathered.records[0].value.len() as u64;
        while gathered.records.len() < records_max && gathered.bytes < bytes_max {
            let Some(message) = self.inbound.message().now_or_never() else {
                break;
            };
            match Next::from(message) {
                Next::Message(m) if destination(&m) == destination(&first) => {
                    // A bad record ends the stream after the good ones before it are appended.
                    match service.new_record(m.record, gathered.target.record_bytes_max) {
                        Ok(record) => {
                            gathered.bytes += record.value.len() as u64;
                            gathered.records.push(record);
                        }
                        Err(status) => {
                            gathered.end = Some(StreamEnd::Failed(status));
                            break;
                        }
                    }
                }
                Next::Message(m) => {
                    self.carried = Some(m);
                    break;
                }
                Next::End(end) => {
                    gathered.end = Some(end);
                    break;
                }
            }
        }
        Ok(gathered)
    }
}

enum Next {
    Message(proto::ProduceRequest),
    End(StreamEnd),
}

impl From<Result<Option<proto::ProduceRequest>, Status>> for Next {
    fn from(message: Result<Option<proto::ProduceRequest>, Status>) -> Next {
        match message {
            Ok(Some(request)) => Next::Message(request),
            Ok(None) => Next::End(StreamEnd::Finished),
            Err(status) => Next::End(StreamEnd::Failed(status)),
        }
    }
}

/// One append of a ProduceStream, gathered.
struct Gathered {
    records: Vec<NewRecord>,
    bytes: u64,
    target: Target,
    /// How the stream ended while gathering, if it did.
    end: Option<StreamEnd>,
}

/// Reads a ProduceStream and queues its records for their partitions, in stream order: each
/// append takes the next message plus the messages already arrived for the same destination
/// (up to `STREAM_APPEND_RECORDS_MAX`), so a busy stream costs one queue entry per batch, not
/// per record. Hands the pending acknowledgements, in order, to the stream's `Answers`.
async fn read_produce_stream(
    mut reader: StreamReader,
    in_flight: StreamWindow,
    pending_tx: mpsc::Sender<Pending>,
) {
    let limits = &reader.service.node.config().limits;
    let batch_records_max = STREAM_APPEND_RECORDS_MAX.min(limits.stream_appends_in_flight_max);
    let stopping = reader.service.node.stopping();
    tokio::pin!(stopping);
    loop {
        let first = match reader.next(&mut stopping).await {
            Next::Message(message) => message,
            Next::End(StreamEnd::Finished) => return,
            Next::End(StreamEnd::Failed(status)) => {
                let _ = pending_tx.send(Err(status)).await;
                return;
            }
        };
        let started = Instant::now();
        let gathered = match reader.gather(first, batch_records_max, in_flight.bytes_max) {
            Ok(gathered) => gathered,
            Err(status) => {
                let _ = pending_tx.send(Err(status)).await;
                return;
            }
        };
        // Wait until the stream has room for these records before queueing them.
        let Some(permit) = in_flight
            .acquire(gathered.records.len(), gathered.bytes)
            .await
        else {
            return;
        };
        let partition = gathered.target.partition_id;
        let metrics = gathered.target.partition.metrics().clone();
        let pending = gathered
            .target
            .partition
            .submit(gathered.records, None)
            .await;
        let failed = pending.is_err();
        let pending = pending.map(|write| StreamAppend {
            write,
            _permit: permit,
            started,
            bytes: gathered.bytes,
            partition,
            metrics,
        });
        if pending_tx.send(pending).await.is_err() || failed {
            return;
        }
        match gathered.end {
            None => {}
            Some(StreamEnd::Finished) => return,
            Some(StreamEnd::Failed(status)) => {
                let _ = pending_tx.send(Err(status)).await;
                return;
            }
        }
    }
}

/// The answering side of a ProduceStream: one response per record, in order, each sent once
/// its append is acknowledged. It is the response stream itself (polled by the transport as the
/// client makes room), so answers cost no task or channel of their own.
struct Answers {
    service: LogService,
    pending_rx: mpsc::Receiver<Pending>,
    /// Offsets acknowledged and not yet answered, and their partition.
    offsets: std::ops::Range<u64>,
    partition: u32,
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
                    partition: self.partition,
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
                    self.partition = append.partition;
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
        append.metrics.produced(records, append.bytes);
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
