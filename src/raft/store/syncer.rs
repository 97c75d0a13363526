//! The data log's fsync thread: while the writer fsyncs the entry log, this thread fsyncs the
//! data log, so a replicated append costs one fsync's latency rather than two, and no thread is
//! started per append (one lives as long as the store).
//!
//! Requests come one at a time: every append holds the store's writer lock across `sync`. The
//! thread holds only a `Weak` reference to the log, so dropping the store drops the log at once
//! (a reopen in the same process never races a log kept alive by this thread); it ends when
//! the store drops its sender. Under madsim there are no threads: `sync` runs inline.

use std::sync::{Arc, Weak};

#[cfg(not(madsim))]
use parking_lot::Mutex;

use crate::log::{Log, LogError};

pub(super) struct DataSyncer {
    #[cfg(not(madsim))]
    channel: Mutex<Channel>,
    #[cfg(madsim)]
    data: Weak<Log>,
}

#[cfg(not(madsim))]
struct Channel {
    requests: std::sync::mpsc::Sender<()>,
    results: std::sync::mpsc::Receiver<Result<u64, LogError>>,
}

impl DataSyncer {
    /// Starts the thread (in production) for `data`.
    pub(super) fn start(data: &Arc<Log>) -> std::io::Result<DataSyncer> {
        let data = Arc::downgrade(data);
        #[cfg(madsim)]
        return Ok(DataSyncer { data });
        #[cfg(not(madsim))]
        {
            let (requests, requests_rx) = std::sync::mpsc::channel::<()>();
            let (results_tx, results) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("loghouse-data-fsync".into())
                .spawn(move || serve(data, requests_rx, results_tx))?;
            Ok(DataSyncer {
                channel: Mutex::new(Channel { requests, results }),
            })
        }
    }

    /// Fsyncs the data log while `meanwhile` runs on the calling thread; returns both results.
    pub(super) fn sync_while<T>(
        &self,
        meanwhile: impl FnOnce() -> T,
    ) -> (Result<u64, LogError>, T) {
        #[cfg(madsim)]
        {
            let data = self.data.upgrade().expect("the store owns its data log");
            let synced = data.sync();
            (synced, meanwhile())
        }
        #[cfg(not(madsim))]
        {
            let channel = self.channel.lock();
            let gone = || LogError::io("data log fsync thread", std::io::Error::other("gone"));
            if channel.requests.send(()).is_err() {
                return (Err(gone()), meanwhile());
            }
            let other = meanwhile();
            let synced = channel.results.recv().unwrap_or_else(|_| Err(gone()));
            (synced, other)
        }
    }
}

#[cfg(not(madsim))]
fn serve(
    data: Weak<Log>,
    requests: std::sync::mpsc::Receiver<()>,
    results: std::sync::mpsc::Sender<Result<u64, LogError>>,
) {
    while requests.recv().is_ok() {
        let synced = match data.upgrade() {
            Some(log) => log.sync(),
            None => return,
        };
        if results.send(synced).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ManualClock, SimDisk};
    use crate::log::{LogConfig, NewRecord};

    #[test]
    fn syncs_the_data_log_beside_the_caller_and_stops_with_the_store() {
        let disk = SimDisk::new(1);
        let config = LogConfig::new("/d");
        let log = Arc::new(
            Log::open(
                Arc::new(disk.clone()),
                Arc::new(ManualClock::new(0)),
                config,
            )
            .unwrap(),
        );
        let syncer = DataSyncer::start(&log).unwrap();
        for n in 0..3u64 {
            log.append(&[NewRecord::data(vec![n as u8; 10])]).unwrap();
            let (synced, other) = syncer.sync_while(|| n * 2);
            assert_eq!((synced.unwrap(), other), (n + 1, n * 2));
            assert_eq!(log.durable_offset(), n + 1);
        }
        let weak = Arc::downgrade(&log);
        drop(log);
        assert!(
            weak.upgrade().is_none(),
            "the fsync thread kept the log alive"
        );
        let (synced, ()) = syncer.sync_while(|| ());
        assert!(synced.is_err());
    }
}
