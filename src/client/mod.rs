//! A Rust client for Loghouse, used by the CLI, the benchmark and the tests.
//!
//! Single-node for now: it talks to one address. (The cluster issue adds discovery through
//! GetServers, produce-to-leader and consume-from-followers.)

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::proto::{self, log_client::LogClient};

pub use crate::proto::Record;

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
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// Information about the log, as the server reports it.
pub type LogInfo = proto::GetLogInfoResponse;

#[derive(Clone, Debug)]
pub struct Client {
    inner: LogClient<Channel>,
}

/// The largest message the client sends or accepts.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        let inner = LogClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        Ok(Client { inner })
    }

    /// The generated client, for RPCs this wrapper does not cover.
    pub fn raw(&self) -> LogClient<Channel> {
        self.inner.clone()
    }

    pub async fn produce(&self, value: impl Into<Bytes>) -> Result<u64, ClientError> {
        let record = Some(data_record(value.into()));
        let response = self.raw().produce(proto::ProduceRequest { record }).await?;
        Ok(response.into_inner().offset)
    }

    /// Appends `values` as one batch; returns the first offset (the rest follow densely).
    pub async fn produce_batch(&self, values: Vec<Bytes>) -> Result<u64, ClientError> {
        let records = values.into_iter().map(data_record).collect();
        let response = self
            .raw()
            .produce_batch(proto::ProduceBatchRequest { records })
            .await?;
        Ok(response.into_inner().first_offset)
    }

    pub async fn consume(&self, offset: u64) -> Result<Record, ClientError> {
        let response = self
            .raw()
            .consume(proto::ConsumeRequest {
                offset,
                from_timestamp_ms: None,
            })
            .await?;
        response
            .into_inner()
            .record
            .ok_or_else(|| tonic::Status::internal("consume response has no record").into())
    }

    /// Up to `max_records` committed records from `offset` (0 = the server's default).
    pub async fn consume_batch(
        &self,
        offset: u64,
        max_records: u32,
    ) -> Result<proto::ConsumeBatchResponse, ClientError> {
        let request = proto::ConsumeBatchRequest {
            offset,
            max_records,
            max_bytes: 0,
            from_timestamp_ms: None,
        };
        Ok(self.raw().consume_batch(request).await?.into_inner())
    }

    /// Every committed record from `start`, then new ones as they commit; never ends by itself.
    pub async fn follow(
        &self,
        start: Start,
    ) -> Result<impl Stream<Item = Result<Vec<Record>, ClientError>>, ClientError> {
        let (offset, from_timestamp_ms) = start.split();
        let request = proto::ConsumeBatchRequest {
            offset,
            max_records: 0,
            max_bytes: 0,
            from_timestamp_ms,
        };
        let stream = self.raw().consume_batch_stream(request).await?.into_inner();
        Ok(stream.map(|message| message.map(|m| m.records).map_err(ClientError::from)))
    }

    pub async fn info(&self) -> Result<LogInfo, ClientError> {
        Ok(self
            .raw()
            .get_log_info(proto::GetLogInfoRequest {})
            .await?
            .into_inner())
    }

    pub async fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, ClientError> {
        let response = self
            .raw()
            .offset_for_time(proto::OffsetForTimeRequest { timestamp_ms })
            .await?;
        Ok(response.into_inner().offset)
    }
}

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

fn data_record(value: Bytes) -> proto::Record {
    proto::Record {
        value,
        ..Default::default()
    }
}
