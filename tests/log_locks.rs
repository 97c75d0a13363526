//! No fsync while holding the lock readers need (issue 15): while a roll or a retention pass is
//! stuck in an fsync, an msync or a directory sync, readers complete their reads.
//!
//! `GateDisk` blocks every durability call (`sync_data`, a map's `flush`, `sync_dir`) while it
//! is armed, one call at a time, until the test lets it go. The test walks a roll and a
//! retention pass through each of their durability calls and, at each one, runs a reader
//! thread to completion. The reader is given a generous deadline only to turn a deadlock into
//! a failure instead of a hang; nothing is timed.

mod log_support;

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log_support::{read_all, record, small_config};
use loghouse::io::{Disk, DiskFile, ManualClock, MapMut, SimDisk};
use loghouse::log::{Log, LogConfig, Record};
use parking_lot::{Condvar, Mutex};

/// How long a reader may take before the test calls it stuck (a deadlock detector only).
const STUCK: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: bool,
    /// Numbers the blocked calls.
    calls: u64,
    /// The call blocked now, if any: its number and what it is.
    blocked: Option<(u64, String)>,
    /// Calls up to this number may go on.
    released: u64,
}

impl Gate {
    /// Called by the disk before a durability call: while armed, blocks until released.
    fn pass(&self, what: String) {
        let mut state = self.state.lock();
        if !state.armed {
            return;
        }
        state.calls += 1;
        let call = state.calls;
        state.blocked = Some((call, what));
        self.changed.notify_all();
        while state.released < call {
            self.changed.wait(&mut state);
        }
        state.blocked = None;
    }

    /// Waits for a call after `after` to block; `None` once `writer_done` says the writer
    /// finished.
    fn wait_blocked(&self, after: u64, writer_done: &dyn Fn() -> bool) -> Option<(u64, String)> {
        let mut state = self.state.lock();
        loop {
            if let Some((call, what)) = state.blocked.clone().filter(|(c, _)| *c > after) {
                return Some((call, what));
            }
            if writer_done() {
                return None;
            }
            self.changed.wait_for(&mut state, Duration::from_millis(20));
        }
    }

    fn release(&self, call: u64) {
        let mut state = self.state.lock();
        state.released = state.released.max(call);
        self.changed.notify_all();
    }

    fn arm(&self, armed: bool) {
        let mut state = self.state.lock();
        state.armed = armed;
        if !armed {
            state.released = u64::MAX;
            self.changed.notify_all();
        }
    }
}

#[derive(Debug, Clone)]
struct GateDisk {
    inner: Arc<dyn Disk>,
    gate: Arc<Gate>,
}

impl Disk for GateDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(GateFile {
            inner: self.inner.open(path, create)?,
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            gate: self.gate.clone(),
        }))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.gate.pass(format!("sync_dir {}", path.display()));
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
}

#[derive(Debug)]
struct GateFile {
    inner: Arc<dyn DiskFile>,
    name: String,
    gate: Arc<Gate>,
}

impl DiskFile for GateFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        self.inner.read_at(buf, position)
    }
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.inner.write_at(buf, position)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass(format!("sync_data {}", self.name));
        self.inner.sync_data()
    }
    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>> {
        Ok(Box::new(GateMap {
            inner: self.inner.map_mut(len)?,
            name: self.name.clone(),
            gate: self.gate.clone(),
        }))
    }
}

struct GateMap {
    inner: Box<dyn MapMut>,
    name: String,
    gate: Arc<Gate>,
}

impl MapMut for GateMap {
    fn as_slice(&self) -> &[u8] {
        self.inner.as_slice()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.inner.as_mut_slice()
    }
    fn flush(&self) -> io::Result<()> {
        self.gate.pass(format!("msync {}", self.name));
        self.inner.flush()
    }
}

/// What a reader must be able to do at any time: read every record, look one up by time, and
/// ask for the log's shape.
fn read_everything(log: &Log, expected: &[Record]) {
    let lowest = log.lowest_offset();
    let all = read_all(log);
    assert_eq!(
        all[..],
        expected[lowest as usize..expected.len().min(all.len() + lowest as usize)]
    );
    assert_eq!(log.read(lowest).unwrap(), expected[lowest as usize]);
    log.offset_for_time(0).unwrap();
    let _ = log.info();
    let _ = log.retention_cut(Some(1), None);
}

/// Runs `write` on its own thread with the gate armed and, at every durability call it makes,
/// checks that a reader thread completes `read_everything`. Returns the calls seen.
fn readers_pass_every_blocked_call(
    log: &Arc<Log>,
    gate: &Arc<Gate>,
    expected: &[Record],
    write: impl FnOnce(&Log) + Send + 'static,
) -> Vec<String> {
    gate.arm(true);
    let writer_log = log.clone();
    let writer = thread::spawn(move || write(&writer_log));
    let mut seen = Vec::new();
    let mut last = 0;
    while let Some((call, what)) = gate.wait_blocked(last, &|| writer.is_finished()) {
        let (done_tx, done_rx) = mpsc::channel();
        let (reader_log, expected) = (log.clone(), expected.to_vec());
        let reader = thread::spawn(move || {
            read_everything(&reader_log, &expected);
            let _ = done_tx.send(());
        });
        let finished = done_rx.recv_timeout(STUCK).is_ok();
        if !finished {
            gate.arm(false); // let the writer go, so the reader ends too
        }
        gate.release(call);
        reader.join().expect("the reader panicked");
        assert!(
            finished,
            "a reader was stuck while the writer was in {what}"
        );
        seen.push(what);
        last = call;
    }
    gate.arm(false);
    writer.join().expect("the writer panicked");
    eprintln!("blocked calls: {seen:?}");
    seen
}

fn open(disk: GateDisk, config: LogConfig) -> Arc<Log> {
    Arc::new(Log::open(Arc::new(disk), Arc::new(ManualClock::new(0)), config).unwrap())
}

#[test]
fn a_roll_stalls_no_reader() {
    let gate = Arc::new(Gate::default());
    let disk = GateDisk {
        inner: Arc::new(SimDisk::new(1)),
        gate: gate.clone(),
    };
    let log = open(disk, small_config(Path::new("/log")));
    for n in 0..5 {
        log.append(&[record(n, 30)]).unwrap(); // fills the 5-entry index
    }
    let expected = read_all(&log);
    let seen = readers_pass_every_blocked_call(&log, &gate, &expected, |log| {
        log.append(&[record(5, 30)]).unwrap(); // rolls
    });
    // The roll's calls: the old store's fsync, the old index's msync and its sync once trimmed
    // and sealed, the new index's msync, the directory sync.
    let joined = seen.join(", ");
    for what in [
        "sync_data 00000000000000000000.store",
        "msync 00000000000000000000.index2",
    ] {
        assert!(joined.contains(what), "{what} not in {joined}");
    }
    assert!(joined.contains("sync_dir"), "{joined}");
    assert_eq!(log.info().segment_count, 2);
    assert_eq!(log.read(5).unwrap().value, record(5, 30).value);
}

#[test]
fn retention_stalls_no_reader() {
    let gate = Arc::new(Gate::default());
    let disk = GateDisk {
        inner: Arc::new(SimDisk::new(2)),
        gate: gate.clone(),
    };
    let config = LogConfig {
        retention_bytes_max: Some(300),
        ..small_config(Path::new("/log"))
    };
    let log = open(disk, config);
    for n in 0..24 {
        log.append(&[record(n, 30)]).unwrap();
    }
    let expected = read_all(&log);
    let seen = readers_pass_every_blocked_call(&log, &gate, &expected, |log| {
        assert!(log.apply_retention().unwrap() >= 3);
    });
    assert!(
        seen.len() >= 3,
        "one directory sync per removed segment: {seen:?}"
    );
    assert!(log.lowest_offset() >= 15);
}

#[test]
fn close_seals_without_stalling_readers_until_it_is_closed() {
    let gate = Arc::new(Gate::default());
    let disk = GateDisk {
        inner: Arc::new(SimDisk::new(3)),
        gate: gate.clone(),
    };
    let log = open(disk, small_config(Path::new("/log")));
    for n in 0..3 {
        log.append(&[record(n, 30)]).unwrap();
    }
    let expected = read_all(&log);
    let seen = readers_pass_every_blocked_call(&log, &gate, &expected, |log| {
        log.close().unwrap();
    });
    assert!(!seen.is_empty());
}
