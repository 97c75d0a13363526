//! Group commit for async appenders, across every log of a node.
//!
//! ONE writer task serves every log attached to a `SharedCommitter` (a node holding many
//! partitions runs one, not one per log). Each round it takes one request from a bounded queue,
//! drains what else is already queued for any log (up to `DRAIN_REQUESTS_MAX` requests /
//! `DRAIN_BYTES_MAX` bytes), then, for each log the round touched, validates each request on
//! its own and appends the valid ones with one write; once EVERY touched log is appended to,
//! it fsyncs each one whose policy is `SyncPolicy::Always` ONCE, all at once, before anyone is
//! answered. Both phases run on the blocking pool (appends on up to `APPEND_PARALLEL_MAX`
//! threads, fsyncs on up to `ROUND_PARALLEL_MAX`): on ext4 and xfs concurrent fsyncs of several
//! files share the journal commit and the device cache flush, and with every append done first
//! the whole round's file-size changes are in the transaction the first fsync commits. A
//! failed write or fsync poisons only its own log: that log's requests get the error, the other
//! logs' requests of the round succeed. Under madsim (no threads) the logs of a round are
//! worked on inline, one after another. No condvars: it runs unchanged under madsim.
//!
//! Policies keep their meaning per log: `Always` acknowledges after the round's fsync of that
//! log; `Never` after the write; `Interval` after the write, and the writer fsyncs the log at
//! most `interval_ms` after its first unsynced append (an idle log is never fsync'd).
//!
//! `committed()` publishes one past the last acknowledged record of a log; consumers must not
//! read beyond it. Under `Always` that is the durable offset; under `Interval`/`Never` it is the
//! appended offset (those policies acknowledge before the fsync and can lose acknowledged
//! records in a power loss: see `SyncPolicy`).
//!
//! `Committer::start(log, depth)` is a shared committer with one log, whose handle's `shutdown`
//! also ends the writer task.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Log, LogError, NewRecord, SyncPolicy};

/// At most this many queued requests are grouped in one round.
const DRAIN_REQUESTS_MAX: usize = 4096;
/// At most this many value bytes are grouped in one round (one request may exceed it alone).
const DRAIN_BYTES_MAX: usize = 64 << 20;
/// At most this many logs of a round are appended to and fsync'd at once (blocking-pool
/// threads). Concurrent fsyncs share journal commits; beyond a few dozen they only queue in the
/// device.
pub const ROUND_PARALLEL_MAX: usize = 64;
/// At most this many logs of a round are appended to at once (writes into the page cache:
/// CPU, not device, bound).
const APPEND_PARALLEL_MAX: usize = 8;

type AppendResult = Result<Range<u64>, LogError>;
type Reply = oneshot::Sender<AppendResult>;
type CloseResult = Result<(), LogError>;
type DoneReply = oneshot::Sender<CloseResult>;

enum Message {
    Append {
        slot: Arc<Slot>,
        records: Vec<NewRecord>,
        reply: Reply,
    },
    /// A handle's shutdown: finish what was queued before it, close its log, detach it.
    Detach { slot: Arc<Slot>, reply: DoneReply },
    /// The committer's shutdown: finish what was queued before it, close every log, end.
    Shutdown { reply: DoneReply },
}

/// One attached log.
#[derive(Debug)]
struct Slot {
    id: u64,
    log: Arc<Log>,
    committed: watch::Sender<u64>,
    /// Set once the log is detached (its handle or the committer shut down): appends to it are
    /// refused with `Closed`.
    detached: AtomicBool,
    /// Detaching this log ends the writer (the one log of `Committer::start`).
    ends_writer: bool,
}

/// The attached logs, for the committer's shutdown.
#[derive(Debug, Default)]
struct Registry {
    slots: BTreeMap<u64, Arc<Slot>>,
    next_id: u64,
    /// The committer shut down: logs attached now are refused.
    closed: bool,
}

/// Starts group-commit writers.
pub struct Committer;

impl Committer {
    /// A writer for one log: `start_shared(queue_depth_max)` with `log` attached. The handle's
    /// `shutdown` closes the log and ends the writer task.
    pub fn start(log: Arc<Log>, queue_depth_max: usize) -> CommitterHandle {
        Committer::start_shared(queue_depth_max).attach_inner(log, true)
    }

    /// Spawns one writer task for many logs on the current tokio (or madsim) runtime; logs are
    /// attached with `SharedCommitter::attach`. `queue_depth_max` bounds the queued requests of
    /// all logs together; appenders wait when it is full.
    pub fn start_shared(queue_depth_max: usize) -> SharedCommitter {
        let (tx, rx) = mpsc::channel(queue_depth_max.max(1));
        let registry = Arc::new(Mutex::new(Registry::default()));
        let writer = Writer {
            rx,
            registry: registry.clone(),
            due: BTreeMap::new(),
            pending_sync: HashSet::new(),
        };
        tokio::spawn(writer.run());
        SharedCommitter {
            inner: Arc::new(Shared { tx, registry }),
        }
    }
}

/// The node-wide group-commit writer: one task, many logs. Cloning shares it.
#[derive(Clone, Debug)]
pub struct SharedCommitter {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Message>,
    registry: Arc<Mutex<Registry>>,
}

impl SharedCommitter {
    /// Attaches `log` (attach a log once): appends through the handle are grouped with every
    /// other attached log's. After `shutdown` the handle refuses appends with `Closed`.
    pub fn attach(&self, log: Arc<Log>) -> CommitterHandle {
        self.attach_inner(log, false)
    }

    fn attach_inner(&self, log: Arc<Log>, ends_writer: bool) -> CommitterHandle {
        let (committed_tx, committed_rx) = watch::channel(log.durable_offset());
        let mut registry = self.inner.registry.lock();
        let id = registry.next_id;
        registry.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            log,
            committed: committed_tx,
            detached: AtomicBool::new(registry.closed),
            ends_writer,
        });
        if !registry.closed {
            registry.slots.insert(id, slot.clone());
        }
        drop(registry);
        CommitterHandle {
            inner: Arc::new(Inner {
                tx: self.inner.tx.clone(),
                committed: committed_rx,
                slot,
            }),
        }
    }

    /// How many logs are attached.
    pub fn attached(&self) -> usize {
        self.inner.registry.lock().slots.len()
    }

    /// Finishes the appends queued before it, then syncs and closes every attached log (in
    /// parallel) and ends the writer task. Returns the first close error. Later appends through
    /// any handle get `Closed`; calling it again is fine.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        if self
            .inner
            .tx
            .send(Message::Shutdown { reply })
            .await
            .is_err()
        {
            return Ok(()); // already shut down
        }
        answer.await.unwrap_or(Ok(()))
    }
}

/// Appends to one log through a (possibly shared) committer. Cloning shares it.
#[derive(Clone, Debug)]
pub struct CommitterHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Message>,
    committed: watch::Receiver<u64>,
    slot: Arc<Slot>,
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
        if self.inner.slot.detached.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let message = Message::Append {
            slot: self.inner.slot.clone(),
            records,
            reply,
        };
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
        &self.inner.slot.log
    }

    /// Finishes the appends to this log queued before it, syncs and closes the log and detaches
    /// it; the other logs of a shared committer go on (for a deleted topic). With
    /// `Committer::start`, the writer task ends too.
    pub async fn shutdown(&self) -> Result<(), LogError> {
        let slot = &self.inner.slot;
        if slot.detached.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let message = Message::Detach {
            slot: slot.clone(),
            reply,
        };
        if self.inner.tx.send(message).await.is_err() {
            return Ok(()); // the committer shut down
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
    rx: mpsc::Receiver<Message>,
    registry: Arc<Mutex<Registry>>,
    /// `Interval` logs with unsynced appends, by when they must be fsync'd.
    due: BTreeMap<(Instant, u64), Arc<Slot>>,
    /// The ids in `due`.
    pending_sync: HashSet<u64>,
}

/// A drained group: the appends in arrival order and the detach or shutdown that ended it.
#[derive(Default)]
struct Group {
    appends: Vec<(Arc<Slot>, Vec<NewRecord>, Reply)>,
    control: Option<Control>,
}

enum Control {
    Detach(Arc<Slot>, DoneReply),
    Shutdown(DoneReply),
}

/// One log's share of a round, worked on by blocking-pool threads.
struct LogRound {
    slot: Arc<Slot>,
    /// Taken by `append`.
    batches: Mutex<Vec<Vec<NewRecord>>>,
    /// Fsync even without appends: an `Interval` log whose time is up.
    sync_due: bool,
    /// Set by `append`: one result per batch (then changed by a failed `sync`). Unset if the
    /// append panicked.
    results: Mutex<Option<Vec<AppendResult>>>,
    /// Set by `append`: the log needs its fsync before anyone is answered.
    sync_needed: AtomicBool,
    /// Set by `sync` once that fsync is done (succeeded or failed, as `results` say).
    synced: AtomicBool,
}

/// Gathers a round's work by log.
#[derive(Default)]
struct RoundBuilder {
    rounds: Vec<LogRound>,
    replies: Vec<Vec<Reply>>,
    by_id: HashMap<u64, usize>,
}

impl RoundBuilder {
    /// The index of `slot`'s share of the round, added if new.
    fn round_of(&mut self, slot: &Arc<Slot>) -> usize {
        if let Some(&i) = self.by_id.get(&slot.id) {
            return i;
        }
        self.rounds.push(LogRound {
            slot: slot.clone(),
            batches: Mutex::new(Vec::new()),
            sync_due: false,
            results: Mutex::new(None),
            sync_needed: AtomicBool::new(false),
            synced: AtomicBool::new(false),
        });
        self.replies.push(Vec::new());
        self.by_id.insert(slot.id, self.rounds.len() - 1);
        self.rounds.len() - 1
    }
}

impl Writer {
    async fn run(mut self) {
        loop {
            let next_due = self.due.keys().next().map(|(at, _)| *at);
            let first = match next_due {
                Some(at) => tokio::select! {
                    biased;
                    message = self.rx.recv() => message.map(Some),
                    _ = tokio::time::sleep_until(at) => Some(None),
                },
                None => self.rx.recv().await.map(Some),
            };
            let group = match first {
                None => return, // every sender is gone
                Some(None) => Group::default(),
                Some(Some(message)) => self.drain(message),
            };
            match self.commit(group).await {
                None => {}
                Some(Control::Detach(slot, reply)) => {
                    let ends_writer = slot.ends_writer;
                    let _ = reply.send(self.detach(slot).await);
                    if ends_writer {
                        self.registry.lock().closed = true;
                        return;
                    }
                }
                Some(Control::Shutdown(reply)) => {
                    let _ = reply.send(self.close_all().await);
                    return;
                }
            }
        }
    }

    /// Takes `first` and whatever is already queued behind it, up to the group limits; stops
    /// after a detach or shutdown request.
    fn drain(&mut self, first: Message) -> Group {
        let mut group = Group::default();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Append {
                    slot,
                    records,
                    reply,
                } => {
                    bytes += records.iter().map(|r| r.value.len()).sum::<usize>();
                    group.appends.push((slot, records, reply));
                }
                Message::Detach { slot, reply } => {
                    group.control = Some(Control::Detach(slot, reply));
                    break;
                }
                Message::Shutdown { reply } => {
                    group.control = Some(Control::Shutdown(reply));
                    break;
                }
            }
            if group.appends.len() < DRAIN_REQUESTS_MAX && bytes < DRAIN_BYTES_MAX {
                next = self.rx.try_recv().ok();
            }
        }
        group
    }

    /// Appends the group to its logs and fsyncs each touched log once if its policy says so
    /// (the logs in parallel), also fsyncs the `Interval` logs that are due, answers every
    /// request and publishes each log's committed offset. Returns the group's control request.
    async fn commit(&mut self, group: Group) -> Option<Control> {
        let Group { appends, control } = group;
        let mut builder = RoundBuilder::default();
        for (slot, records, reply) in appends {
            if slot.detached.load(Ordering::SeqCst) {
                let _ = reply.send(Err(LogError::Closed));
                continue;
            }
            let i = builder.round_of(&slot);
            builder.rounds[i].batches.get_mut().push(records);
            builder.replies[i].push(reply);
        }
        let now = Instant::now();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let slot = entry.remove();
            self.pending_sync.remove(&slot.id);
            if !slot.detached.load(Ordering::SeqCst) {
                let i = builder.round_of(&slot);
                builder.rounds[i].sync_due = true;
            }
        }
        let RoundBuilder {
            rounds, replies, ..
        } = builder;
        if rounds.is_empty() {
            return control;
        }
        let rounds = Arc::new(rounds);
        if rounds.len() == 1 {
            for_each_parallel(rounds.clone(), 1, LogRound::run).await;
        } else {
            // Every append first, then the fsyncs, all at once: the appends' metadata changes
            // (file sizes) are then in the journal transaction that the first fsync commits,
            // and the other fsyncs find it committed or join its commit.
            for_each_parallel(rounds.clone(), APPEND_PARALLEL_MAX, LogRound::append).await;
            let syncs = (rounds.iter())
                .filter(|r| r.sync_needed.load(Ordering::SeqCst))
                .count();
            if syncs > 0 {
                for_each_parallel(rounds.clone(), syncs, LogRound::sync).await;
            }
        }
        let now = Instant::now();
        for (round, replies) in rounds.iter().zip(replies) {
            let log = &round.slot.log;
            let unfinished =
                round.sync_needed.load(Ordering::SeqCst) && !round.synced.load(Ordering::SeqCst);
            let results = round.results.lock().take().filter(|_| !unfinished);
            let results = results.unwrap_or_else(|| {
                let e = log.poison_with("a log task failed".into());
                replies.iter().map(|_| Err(shared_error(&e))).collect()
            });
            let committed = match log.config().sync {
                SyncPolicy::Always => log.durable_offset(),
                _ => log.next_offset(),
            };
            round.slot.committed.send_if_modified(|c| {
                let changed = committed > *c;
                *c = (*c).max(committed);
                changed
            });
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
            if let SyncPolicy::Interval { interval_ms } = log.config().sync {
                if log.next_offset() > log.durable_offset()
                    && log.poisoned().is_none()
                    && self.pending_sync.insert(round.slot.id)
                {
                    let at = now + Duration::from_millis(interval_ms);
                    self.due.insert((at, round.slot.id), round.slot.clone());
                }
            }
        }
        // Let the appenders just answered run (and queue their next request) before the next
        // group is drained; otherwise they miss it and the appenders split into two groups
        // that take turns, each with its own fsync.
        YieldOnce(false).await;
        control
    }

    /// Closes a detached log (its earlier appends are done) and forgets it.
    async fn detach(&mut self, slot: Arc<Slot>) -> Result<(), LogError> {
        if slot.detached.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.registry.lock().slots.remove(&slot.id);
        if self.pending_sync.remove(&slot.id) {
            self.due.retain(|(_, id), _| *id != slot.id);
        }
        let log = slot.log.clone();
        off_thread(move || log.close())
            .await
            .unwrap_or_else(|| Err(slot.log.poison_with("closing the log panicked".into())))
    }

    /// Closes every attached log, in parallel, and refuses later attachments.
    async fn close_all(&mut self) -> Result<(), LogError> {
        let slots: Vec<Arc<Slot>> = {
            let mut registry = self.registry.lock();
            registry.closed = true;
            std::mem::take(&mut registry.slots).into_values().collect()
        };
        let closes: Vec<(Arc<Log>, Mutex<Option<CloseResult>>)> = slots
            .iter()
            .filter(|slot| !slot.detached.swap(true, Ordering::SeqCst))
            .map(|slot| (slot.log.clone(), Mutex::new(None)))
            .collect();
        let closes = Arc::new(closes);
        for_each_parallel(closes.clone(), ROUND_PARALLEL_MAX, |(log, result)| {
            *result.lock() = Some(log.close());
        })
        .await;
        let mut first_error = Ok(());
        for (log, result) in closes.iter() {
            let result = result.lock().take();
            let result =
                result.unwrap_or_else(|| Err(log.poison_with("closing the log panicked".into())));
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    }
}

impl LogRound {
    /// Appends the round's batches to the log with one write (no fsync). Blocking.
    fn append(&self) {
        let log = &self.slot.log;
        let batches = std::mem::take(&mut *self.batches.lock());
        let (results, appended) = append_group(log, batches);
        let needed = self.sync_due || (appended && log.config().sync == SyncPolicy::Always);
        *self.results.lock() = Some(results);
        self.sync_needed.store(needed, Ordering::SeqCst);
    }

    /// Fsyncs the log once if `append` said it must; a failure fails the round's appends to
    /// it (the log is poisoned). Blocking.
    fn sync(&self) {
        if !self.sync_needed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.slot.log.sync() {
            if let Some(results) = self.results.lock().as_mut() {
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(shared_error(&e));
                }
            }
        }
        self.synced.store(true, Ordering::SeqCst);
    }

    /// `append`, then `sync`: a round of one log.
    fn run(&self) {
        self.append();
        self.sync();
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
/// commit) and appends all the valid ones with ONE `Log::append` (one write). If the write
/// fails, every valid batch gets the error. Returns the results and whether anything was
/// appended.
fn append_group(
    log: &Log,
    batches: Vec<Vec<NewRecord>>,
) -> (Vec<Result<Range<u64>, LogError>>, bool) {
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
        return (results, false);
    }
    match log.append(&all) {
        Ok(range) => {
            for span in results.iter_mut().flatten() {
                *span = range.start + span.start..range.start + span.end;
            }
            (results, true)
        }
        Err(e) => {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(shared_error(&e));
            }
            (results, false)
        }
    }
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

/// Runs `work` on every item, on up to `workers` (at most `ROUND_PARALLEL_MAX`) blocking-pool
/// threads at once, and returns when all are done. An item whose work panicked is left as the
/// work left it (the caller sees its result unset); the other items are still worked on.
/// Under madsim (no threads) the items are worked on inline, one after another.
async fn for_each_parallel<T: Send + Sync + 'static>(
    items: Arc<Vec<T>>,
    workers: usize,
    work: fn(&T),
) {
    let work_on = move |item: &T| {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(item)));
    };
    #[cfg(madsim)]
    {
        let _ = workers;
        items.iter().for_each(work_on);
    }
    #[cfg(not(madsim))]
    {
        use std::sync::atomic::AtomicUsize;
        let cursor = Arc::new(AtomicUsize::new(0));
        let workers = items.len().min(workers).clamp(1, ROUND_PARALLEL_MAX);
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (items, cursor) = (items.clone(), cursor.clone());
                tokio::task::spawn_blocking(move || {
                    while let Some(item) = items.get(cursor.fetch_add(1, Ordering::Relaxed)) {
                        work_on(item);
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Runs blocking work off the async workers (inline under madsim, which has no threads).
/// `None` if it panicked.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    #[cfg(madsim)]
    {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok()
    }
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(work).await.ok()
    }
}
