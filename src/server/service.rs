//! `log.v1.Log` on top of a `Node`.
//!
//! Consumers only ever see committed records (below `Node::committed_offset`). Following streams
//! read in batches and wait on the committed-offset watch when caught up; they end when the client
//! goes away. Each stream holds a bounded channel, so a slow consumer makes the server wait (HTTP/2
//! flow control), never buffer without bound.

use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{record_to_proto, status_from_log_error};
use super::node::Node;
use crate::log::{LogError, NewRecord, Record};
use crate::proto::{self, log_server};

type ResponseStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send + 'static>>;

#[derive(Clone, Debug)]
pub struct LogService {
    node: Node,
}

impl LogService {
    pub fn new(node: Node) -> Self {
        LogService { node }
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
        let mut records = self
            .node
            .log()
            .read_batch(offset, records_max, bytes_max)
            .map_err(status_from_log_error)?;
        records.retain(|r| r.offset < committed);
        Ok(records)
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
        to_messages: F,
    ) -> Result<ResponseStream<M>, Status>
    where
        M: Send + 'static,
        F: Fn(Vec<Record>, u64) -> Vec<M> + Send + 'static,
    {
        let slot = self.stream_slot()?;
        if offset < self.node.log().lowest_offset() {
            check_readable(
                self.node.log().lowest_offset(),
                self.node.committed_offset(),
                offset,
            )?;
        }
        let (tx, rx) = mpsc::channel(self.node.config().limits.stream_buffer_messages_max);
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

fn first_offset(range: &Range<u64>) -> u64 {
    range.start
}

#[tonic::async_trait]
impl log_server::Log for LogService {
    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        let record = self.new_record(request.into_inner().record)?;
        let range = self
            .node
            .committer()
            .append(vec![record])
            .await
            .map_err(status_from_log_error)?;
        Ok(Response::new(proto::ProduceResponse {
            offset: first_offset(&range),
        }))
    }

    async fn consume(
        &self,
        request: Request<proto::ConsumeRequest>,
    ) -> Result<Response<proto::ConsumeResponse>, Status> {
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
        let request = request.into_inner();
        let offset = self.start_offset(request.offset, request.from_timestamp_ms)?;
        let stream = self.follow(offset, 0, 0, |records, _| {
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
        let slot = self.stream_slot()?;
        let limits = &self.node.config().limits;
        let (responses_tx, responses_rx) = mpsc::channel(limits.stream_buffer_messages_max);
        let (pending_tx, pending_rx) = mpsc::channel(limits.stream_appends_in_flight_max);
        tokio::spawn(read_produce_stream(
            self.clone(),
            request.into_inner(),
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
        _request: Request<proto::GetServersRequest>,
    ) -> Result<Response<proto::GetServersResponse>, Status> {
        let server = proto::Server {
            id: self.node.config().node_id.clone(),
            rpc_addr: self.node.rpc_addr().to_owned(),
            is_leader: true,
        };
        Ok(Response::new(proto::GetServersResponse {
            servers: vec![server],
        }))
    }

    async fn produce_batch(
        &self,
        request: Request<proto::ProduceBatchRequest>,
    ) -> Result<Response<proto::ProduceBatchResponse>, Status> {
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
        let range = self
            .node
            .committer()
            .append(records)
            .await
            .map_err(status_from_log_error)?;
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
        let request = request.into_inner();
        let offset = self.start_offset(request.offset, request.from_timestamp_ms)?;
        let stream = self.follow(
            offset,
            request.max_records,
            request.max_bytes,
            move |records, high_watermark| vec![batch_response(records, offset, high_watermark)],
        )?;
        Ok(Response::new(stream))
    }

    async fn offset_for_time(
        &self,
        request: Request<proto::OffsetForTimeRequest>,
    ) -> Result<Response<proto::OffsetForTimeResponse>, Status> {
        let offset = self.start_offset(0, Some(request.into_inner().timestamp_ms))?;
        Ok(Response::new(proto::OffsetForTimeResponse {
            offset: offset.min(self.node.committed_offset()),
        }))
    }

    async fn get_log_info(
        &self,
        _request: Request<proto::GetLogInfoRequest>,
    ) -> Result<Response<proto::GetLogInfoResponse>, Status> {
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

/// Reads a ProduceStream and queues each record for the writer, in stream order; hands the
/// pending acknowledgements, in the same order, to `answer_produce_stream`.
async fn read_produce_stream(
    service: LogService,
    mut inbound: Streaming<proto::ProduceRequest>,
    pending_tx: mpsc::Sender<Result<crate::log::PendingAppend, Status>>,
) {
    let stopping = service.node.stopping();
    tokio::pin!(stopping);
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stopping => Err(shutting_down()),
            message = inbound.message() => message,
        };
        let request = match message {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(status) => {
                let _ = pending_tx.send(Err(status)).await;
                return;
            }
        };
        let pending = match service.new_record(request.record) {
            Ok(record) => service
                .node
                .committer()
                .submit(vec![record])
                .await
                .map_err(status_from_log_error),
            Err(status) => Err(status),
        };
        let failed = pending.is_err();
        if pending_tx.send(pending).await.is_err() || failed {
            return;
        }
    }
}

async fn answer_produce_stream(
    mut pending_rx: mpsc::Receiver<Result<crate::log::PendingAppend, Status>>,
    responses_tx: mpsc::Sender<Result<proto::ProduceResponse, Status>>,
) {
    while let Some(pending) = pending_rx.recv().await {
        let response = match pending {
            Ok(pending) => pending.await.map_err(status_from_log_error),
            Err(status) => Err(status),
        };
        let failed = response.is_err();
        let message = response.map(|range| proto::ProduceResponse {
            offset: first_offset(&range),
        });
        if responses_tx.send(message).await.is_err() || failed {
            return;
        }
    }
}
