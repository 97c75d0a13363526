//! TODO(log helper): group commit for async appenders.
use std::ops::Range;
use std::sync::Arc;

use super::{Log, LogError, NewRecord};

pub struct Committer;

impl Committer {
    pub fn start(log: Arc<Log>, queue_depth_max: usize) -> CommitterHandle {
        let _ = (log, queue_depth_max);
        todo!()
    }
}

#[derive(Clone, Debug)]
pub struct CommitterHandle {}

#[allow(unused_variables)]
impl CommitterHandle {
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Range<u64>, LogError> {
        todo!()
    }
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        todo!()
    }
    pub fn log(&self) -> &Arc<Log> {
        todo!()
    }
    pub async fn shutdown(&self) -> Result<(), LogError> {
        todo!()
    }
}

/// An append queued for the writer; resolves once it is acknowledged per the sync policy.
pub struct PendingAppend(pub(crate) tokio::sync::oneshot::Receiver<Result<Range<u64>, LogError>>);

impl std::future::Future for PendingAppend {
    type Output = Result<Range<u64>, LogError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(LogError::Closed)))
    }
}

#[allow(unused_variables)]
impl CommitterHandle {
    /// Queues `records` (waiting for queue space) and returns their pending acknowledgement.
    /// Appends submitted one after another get increasing offsets.
    pub async fn submit(&self, records: Vec<NewRecord>) -> Result<PendingAppend, LogError> {
        todo!()
    }
}
