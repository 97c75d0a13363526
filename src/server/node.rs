//! A node: the log, its group-commit writer, and the limits the service enforces.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::{ConfigError, NodeConfig};
use crate::io::{Clock, Disk};
use crate::log::{Committer, CommitterHandle, Log, LogError};

/// How often the retention task looks for segments to drop.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the log failed: {0}")]
    Log(#[from] LogError),
}

/// A running node's state, cheap to clone.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<NodeInner>,
}

#[derive(Debug)]
struct NodeInner {
    config: NodeConfig,
    committer: CommitterHandle,
    streams: Arc<Semaphore>,
    /// Set once the node stops serving: long-lived streams end so the server can drain.
    stopping: watch::Sender<bool>,
    /// The address clients should use to reach this node (GetServers).
    rpc_addr: String,
}

impl Node {
    /// Opens (and recovers) the log and starts the writer. Must run inside a tokio runtime.
    pub fn open(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        rpc_addr: String,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let log_config = config.log_config()?;
        let log = Arc::new(Log::open(disk, clock, log_config)?);
        let committer = Committer::start(log, config.limits.append_queue_depth_max);
        if config.retention_bytes_max.is_some() || config.retention_ms_max.is_some() {
            tokio::spawn(retention_loop(committer.clone()));
        }
        let streams = Arc::new(Semaphore::new(config.limits.streams_max));
        let (stopping, _) = watch::channel(false);
        Ok(Node {
            inner: Arc::new(NodeInner {
                config,
                committer,
                streams,
                stopping,
                rpc_addr,
            }),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn log(&self) -> &Arc<Log> {
        self.inner.committer.log()
    }

    pub fn committer(&self) -> &CommitterHandle {
        &self.inner.committer
    }

    pub fn rpc_addr(&self) -> &str {
        &self.inner.rpc_addr
    }

    /// One past the last committed (acknowledged, consumer-visible) offset.
    pub fn committed_offset(&self) -> u64 {
        *self.inner.committer.committed().borrow()
    }

    pub fn watch_committed(&self) -> watch::Receiver<u64> {
        self.inner.committer.committed()
    }

    /// A slot for one long-lived stream, or None when `limits.streams_max` are open.
    pub fn try_acquire_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }

    /// Tells every long-lived stream to end (with UNAVAILABLE), so a graceful shutdown does not
    /// wait for clients that follow the tail forever.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Resolves once `begin_shutdown` has been called.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.inner.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// Finishes queued appends, syncs and closes the log.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        self.inner.committer.shutdown().await
    }
}

async fn retention_loop(committer: CommitterHandle) {
    let mut ticks = tokio::time::interval(RETENTION_CHECK_INTERVAL);
    loop {
        ticks.tick().await;
        match committer.log().apply_retention() {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "retention dropped segments"),
            Err(LogError::Closed) => return,
            Err(error) => tracing::warn!(%error, "retention failed"),
        }
    }
}
