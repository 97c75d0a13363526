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
