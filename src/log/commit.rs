//! Group commit for async appenders.
//!
//! One writer task owns the appending: it takes one request from a bounded queue, drains what
//! else is already queued (up to `DRAIN_REQUESTS_MAX` requests / `DRAIN_BYTES_MAX` bytes),
//! validates each request on its own, appends the valid ones with one write, and under
//! `SyncPolicy::Always` fsyncs ONCE for the whole group before answering anyone. Appends and the fsync run in `spawn_blocking` so the async runtime never
//! waits on the disk. No OS threads of our own, no condvars: it runs unchanged under madsim.
//!
//! `committed()` publishes one past the last acknowledged record; consumers must not read beyond
//! it. Under `Always` that is the durable offset; under `Interval`/`Never` it is the appended
//! offset (those policies acknowledge before the fsync and can lose acknowledged records in a
//! power loss: see `SyncPolicy`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Log, LogError, NewRecord, SyncPolicy};

/// At most this many queued requests are grouped under one fsync.
const DRAIN_REQUESTS_MAX: usize = 4096;
/// At most this many value bytes are grouped under one fsync (one request may exceed it alone).
const DRAIN_BYTES_MAX: usize = 64 << 20;

type Reply = oneshot::Sender<Result<Range<u64>, LogError>>;

enum Message {
    Append {
        records: Vec<NewRecord>,
        reply: Reply,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// Starts the group-commit writer.
pub struct Committer;

impl Committer {
    /// Spawns the writer task on the current tokio (or madsim) runtime. `queue_depth_max` bounds
    /// the queued requests; appenders wait when it is full.
    pub fn start(log: Arc<Log>, queue_depth_max: usize) -> CommitterHandle {
        let (tx, rx) = mpsc::channel(queue_depth_max.max(1));
        let (committed_tx, committed_rx) = watch::channel(log.durable_offset());
        let writer = Writer {
            log: log.clone(),
            rx,
            committed: committed_tx,
        };
        tokio::spawn(writer.run());
        CommitterHandle {
            inner: Arc::new(Inner {
                tx,
                committed: committed_rx,
                log,
            }),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CommitterHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Message>,
    committed: watch::Receiver<u64>,
    log: Arc<Log>,
}

impl CommitterHandle {
    /// Appends `records` and returns their offsets once they are durable per the log's
    /// `SyncPolicy`. `Closed` after `shutdown`.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Range<u64>, LogError> {
        self.submit(records).await?.await
    }

    /// Queues `records` (waiting for queue space) and returns their pending acknowledgement.
    /// Appends submitted one after another get increasing offsets.
    pub async fn submit(&self, records: Vec<NewRecord>) -> Result<PendingAppend, LogError> {
        let (reply, answer) = oneshot::channel();
        let message = Message::Append { records, reply };
        self.inner
            .tx
            .send(message)
            .await
            .map_err(|_| LogError::Closed)?;
        Ok(PendingAppend(answer))
    }

    /// One past the last acknowledged record.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.inner.log
    }

    /// Finishes the appends queued before it, syncs and closes the log; the writer task ends.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        let message = Message::Shutdown { reply };
        if self.inner.tx.send(message).await.is_err() {
            return Ok(()); // already shut down
        }
        answer.await.unwrap_or(Ok(()))
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

struct Writer {
    log: Arc<Log>,
    rx: mpsc::Receiver<Message>,
    committed: watch::Sender<u64>,
}

/// A drained group: the appends in arrival order and a shutdown request, if one came.
#[derive(Default)]
struct Group {
    appends: Vec<(Vec<NewRecord>, Reply)>,
    shutdown: Option<oneshot::Sender<Result<(), LogError>>>,
}

impl Writer {
    async fn run(mut self) {
        let interval_ms = match self.log.config().sync {
            SyncPolicy::Interval { interval_ms } => Some(interval_ms),
            _ => None,
        };
        let mut ticker = interval_ms.map(|ms| {
            let mut t = tokio::time::interval(Duration::from_millis(ms));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let first = match ticker.as_mut() {
                Some(ticker) => tokio::select! {
                    biased;
                    message = self.rx.recv() => message,
                    _ = ticker.tick() => {
                        // Interval policy: errors poison the log, so appends report them.
                        let _ = run_blocking(self.log.clone(), Log::sync).await;
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            let Some(first) = first else { return };
            let group = self.drain(first);
            if let Some(reply) = self.commit(group).await {
                let result = run_blocking(self.log.clone(), Log::close).await;
                let _ = reply.send(result.and_then(|r| r));
                return;
            }
        }
    }

    /// Takes `first` and whatever is already queued behind it, up to the group limits; stops
    /// after a shutdown request.
    fn drain(&mut self, first: Message) -> Group {
        let mut group = Group::default();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Append { records, reply } => {
                    bytes += records.iter().map(|r| r.value.len()).sum::<usize>();
                    group.appends.push((records, reply));
                }
                Message::Shutdown { reply } => {
                    group.shutdown = Some(reply);
                    break;
                }
            }
            if group.appends.len() < DRAIN_REQUESTS_MAX && bytes < DRAIN_BYTES_MAX {
                next = self.rx.try_recv().ok();
            }
        }
        group
    }

    /// Appends the group, fsyncs once if the policy says so, answers every request and
    /// publishes the committed offset. Returns the shutdown reply if one was in the group.
    async fn commit(&self, group: Group) -> Option<oneshot::Sender<Result<(), LogError>>> {
        let Group { appends, shutdown } = group;
        let (batches, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        let sync_always = self.log.config().sync == SyncPolicy::Always;
        let count = batches.len();
        let results = run_blocking(self.log.clone(), move |log| {
            append_group(log, batches, sync_always)
        })
        .await
        .unwrap_or_else(|e| (0..count).map(|_| Err(shared_error(&e))).collect());
        let committed = match sync_always {
            true => self.log.durable_offset(),
            false => self.log.next_offset(),
        };
        self.committed.send_if_modified(|c| {
            let changed = committed > *c;
            *c = (*c).max(committed);
            changed
        });
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        // Let the appenders just answered run (and queue their next request) before the next
        // group is drained; otherwise they miss it and the appenders split into two groups
        // that take turns, each with its own fsync.
        YieldOnce(false).await;
        shutdown
    }
}

/// A future that is pending once (waking itself at once), then ready: lets other tasks run.
/// Written here because madsim has no `yield_now`.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Validates each batch on its own (one that fails gets its own error; the others still
/// commit), appends all the valid ones with ONE `Log::append` (one write), then fsyncs once if
/// `sync` is set. If the write or the fsync fails, every batch of the group gets the error.
fn append_group(
    log: &Log,
    batches: Vec<Vec<NewRecord>>,
    sync: bool,
) -> Vec<Result<Range<u64>, LogError>> {
    let mut all = Vec::with_capacity(batches.iter().map(Vec::len).sum());
    let mut results: Vec<Result<Range<u64>, LogError>> = Vec::with_capacity(batches.len());
    for batch in batches {
        match log.validate(&batch) {
            Ok(()) => {
                results.push(Ok(all.len() as u64..(all.len() + batch.len()) as u64));
                all.extend(batch);
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if all.is_empty() {
        return results;
    }
    let outcome = log.append(&all).and_then(|range| match sync {
        true => log.sync().map(|_| range),
        false => Ok(range),
    });
    match outcome {
        Ok(range) => {
            for span in results.iter_mut().flatten() {
                *span = range.start + span.start..range.start + span.end;
            }
        }
        Err(e) => {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(shared_error(&e));
            }
        }
    }
    results
}

/// The error each waiter of a failed group gets (`LogError` is not `Clone`: it holds an
/// `io::Error`). A failed write or fsync has poisoned the log, so that is what they are told.
fn shared_error(e: &LogError) -> LogError {
    match e {
        LogError::Closed => LogError::Closed,
        LogError::Poisoned { cause } => LogError::Poisoned {
            cause: cause.clone(),
        },
        other => LogError::Poisoned {
            cause: other.to_string(),
        },
    }
}

/// Runs blocking log work off the async workers (inline under madsim, which has no threads).
/// If the work panicked or was cancelled, the log is poisoned and the error returned.
async fn run_blocking<T, F>(log: Arc<Log>, work: F) -> Result<T, LogError>
where
    F: FnOnce(&Log) -> T + Send + 'static,
    T: Send + 'static,
{
    let log2 = log.clone();
    #[allow(deprecated)] // madsim deprecates spawn_blocking; it runs the closure as a task.
    let handle = tokio::task::spawn_blocking(move || work(&log2));
    handle
        .await
        .map_err(|e| log.poison_with(format!("a log task failed: {e}")))
}
