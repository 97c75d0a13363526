//! THROWAWAY FAKE (sim harness testing only; never commit): group commit.
#![allow(clippy::all)]
use std::ops::Range;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Log, LogError, NewRecord};

type Reply = oneshot::Sender<Result<Range<u64>, LogError>>;

enum Msg {
    Append(Vec<NewRecord>, Reply),
    Shutdown(oneshot::Sender<Result<(), LogError>>),
}

pub struct Committer;

impl Committer {
    pub fn start(log: Arc<Log>, queue_depth_max: usize) -> CommitterHandle {
        let (tx, rx) = mpsc::channel(queue_depth_max);
        let (committed_tx, committed) = watch::channel(log.next_offset());
        tokio::spawn(writer(log.clone(), rx, committed_tx));
        CommitterHandle { log, tx, committed }
    }
}

async fn writer(log: Arc<Log>, mut rx: mpsc::Receiver<Msg>, committed: watch::Sender<u64>) {
    while let Some(msg) = rx.recv().await {
        let mut batch = vec![msg];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let mut done = vec![];
        let mut shutdown = None;
        for m in batch {
            match m {
                Msg::Append(records, reply) => done.push((log.append(&records), reply)),
                Msg::Shutdown(s) => shutdown = Some(s),
            }
        }
        let synced = log.sync();
        for (res, reply) in done {
            let res = match (&synced, res) {
                (Ok(_), r) => r,
                (Err(e), Ok(_)) => Err(LogError::Poisoned {
                    cause: e.to_string(),
                }),
                (Err(_), Err(e)) => Err(e),
            };
            let _ = reply.send(res);
        }
        if let Ok(n) = synced {
            committed.send_replace(n);
        }
        if let Some(s) = shutdown {
            let _ = s.send(log.close());
            return;
        }
    }
}

#[derive(Clone, Debug)]
pub struct CommitterHandle {
    log: Arc<Log>,
    tx: mpsc::Sender<Msg>,
    committed: watch::Receiver<u64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl CommitterHandle {
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Range<u64>, LogError> {
        self.submit(records).await?.await
    }
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Shutdown(tx))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.unwrap_or(Err(LogError::Closed))
    }
    pub async fn submit(&self, records: Vec<NewRecord>) -> Result<PendingAppend, LogError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Append(records, tx))
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(PendingAppend(rx))
    }
}

/// An append queued for the writer; resolves once it is acknowledged per the sync policy.
pub struct PendingAppend(pub(crate) oneshot::Receiver<Result<Range<u64>, LogError>>);

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
