//! Conversions between proto types and the engine's types, and error -> gRPC status mapping.

use tonic::{Code, Status};

use super::topics::TopicError;
use crate::log::{LogError, Record};
use crate::proto::{self, LEADER_ADDR_KEY, LEADER_ID_KEY, WRITES_STOPPED_KEY};
use crate::raft::proposer::ProposeError;

/// Maps a storage error to the gRPC status a client can act on.
pub fn status_from_log_error(error: LogError) -> Status {
    if let LogError::Poisoned { cause } = &error {
        return writes_stopped(cause);
    }
    let code = match &error {
        LogError::OffsetOutOfRange { .. } => Code::OutOfRange,
        LogError::RecordTooLarge { .. } | LogError::BatchEmpty => Code::InvalidArgument,
        LogError::NonContiguous { .. } => Code::FailedPrecondition,
        LogError::Closed | LogError::Io { .. } => Code::Unavailable,
        LogError::Poisoned { .. } => Code::FailedPrecondition,
        LogError::Corrupt { .. } | LogError::CorruptTail { .. } => Code::DataLoss,
        LogError::InvalidConfig(_) => Code::Internal,
    };
    if code == Code::Unavailable || code == Code::DataLoss {
        tracing::error!(%error, "storage error");
    }
    Status::new(code, error.to_string())
}

/// Maps a topic registry error: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
/// RESOURCE_EXHAUSTED (a node limit), FAILED_PRECONDITION (what a cluster member or the default
/// topic cannot do).
pub fn status_from_topic_error(error: TopicError) -> Status {
    let code = match &error {
        TopicError::NotFound { .. } | TopicError::PartitionNotFound { .. } => Code::NotFound,
        TopicError::AlreadyExists { .. } => Code::AlreadyExists,
        TopicError::InvalidName(_)
        | TopicError::InvalidSetting(_)
        | TopicError::PartitionsLowered { .. } => Code::InvalidArgument,
        TopicError::LimitReached { .. } => Code::ResourceExhausted,
        TopicError::DefaultTopic | TopicError::NotReplicated(_) => Code::FailedPrecondition,
        TopicError::Cancelled(_) => Code::Unavailable,
        TopicError::Log(_) => {
            let TopicError::Log(error) = error else {
                unreachable!()
            };
            return status_from_log_error(error);
        }
        TopicError::Catalog(_) => {
            tracing::error!(%error, "topic catalog error");
            Code::Unavailable
        }
    };
    Status::new(code, error.to_string())
}

/// A write refused because the log stopped accepting writes after a failed write or fsync
/// (`LogError::Poisoned`): FAILED_PRECONDITION, not UNAVAILABLE, since no retry succeeds until
/// the node is restarted (and reopening recovers only what was synced). The cause is in the
/// message and in the `loghouse-writes-stopped` metadata.
pub fn writes_stopped(cause: &str) -> Status {
    tracing::error!(cause, "refusing a write: the log stopped accepting writes");
    let mut status = Status::failed_precondition(format!(
        "this node stopped accepting writes after a failed write or fsync ({cause}); what it had \
         not synced is not trusted: restart the node, which recovers from what is on disk"
    ));
    // Header values are visible ASCII: anything else in the cause becomes '?'.
    let value: String = match cause {
        "" => "unknown".into(),
        cause => cause
            .chars()
            .take(WRITES_STOPPED_VALUE_CHARS_MAX)
            .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
            .collect(),
    };
    if let Ok(value) = value.parse() {
        status.metadata_mut().insert(WRITES_STOPPED_KEY, value);
    }
    status
}

/// The cause in `loghouse-writes-stopped` is cut to this many characters (headers are small).
const WRITES_STOPPED_VALUE_CHARS_MAX: usize = 512;

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
