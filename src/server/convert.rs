//! Conversions between proto types and the engine's types, and error -> gRPC status mapping.

use tonic::{Code, Status};

use crate::log::{LogError, Record};
use crate::proto::{self, LEADER_ADDR_KEY, LEADER_ID_KEY};
use crate::raft::proposer::ProposeError;

/// Maps a storage error to the gRPC status a client can act on.
pub fn status_from_log_error(error: LogError) -> Status {
    let code = match &error {
        LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
        LogError::RecordTooLarge { .. } | LogError::BatchEmpty => Code::InvalidArgument,
        LogError::NonContiguous { .. } => Code::FailedPrecondition,
        LogError::Poisoned { .. } | LogError::Closed | LogError::Io { .. } => Code::Unavailable,
        LogError::Corrupt { .. } => Code::DataLoss,
        LogError::InvalidConfig(_) => Code::Internal,
    };
    if code == Code::Unavailable || code == Code::DataLoss {
        tracing::error!(%error, "storage error");
    }
    Status::new(code, error.to_string())
}

pub fn record_to_proto(record: Record) -> proto::Record {
    proto::Record {
        value: record.value,
        offset: record.offset,
        term: record.term,
        r#type: record.kind,
        timestamp_ms: record.timestamp_ms,
    }
}

/// A write refused by replication: UNAVAILABLE, naming the leader (message and metadata) when
/// one is known, so a client can retry there.
pub fn status_from_propose_error(error: ProposeError) -> Status {
    let mut status = Status::unavailable(error.to_string());
    if let ProposeError::NotLeader {
        leader: Some((id, addr)),
    } = &error
    {
        let metadata = status.metadata_mut();
        if let Ok(value) = id.to_string().parse() {
            metadata.insert(LEADER_ID_KEY, value);
        }
        if let Ok(value) = addr.parse() {
            metadata.insert(LEADER_ADDR_KEY, value);
        }
    }
    status
}
